//! Live events over real Server-Sent Events streams: order, filters, resume after a
//! disconnect and a restart, `reset` for a gap, and shutdown with many open streams.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::backend::{Backend, TestDatabase};
use crate::helpers::{
    DEADLINE, TestApp, park_echo_tasks, patch_queue, spawn_app, spawn_app_on, spawn_app_with,
};

/// One received SSE event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: Value,
}

/// A reader of one SSE response.
pub struct SseStream {
    response: reqwest::Response,
    parser: taskd::cli::sse::SseParser,
    /// Events read but not yet handed out.
    pending: std::collections::VecDeque<taskd::cli::sse::SseEvent>,
}

impl SseStream {
    async fn open(app: &TestApp, path: &str, last_event_id: Option<&str>) -> SseStream {
        let mut request = app.client.get(app.url(path));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        SseStream::from_response(request.send().await.unwrap())
    }

    /// Reads the stream of an answered request (which must be a 200 event stream).
    pub fn from_response(response: reqwest::Response) -> SseStream {
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        assert_eq!(response.headers()["x-accel-buffering"], "no");
        SseStream {
            response,
            parser: Default::default(),
            pending: Default::default(),
        }
    }

    /// The next event; `None` when the stream ended. Fails the test past the deadline.
    pub async fn next(&mut self) -> Option<SseEvent> {
        tokio::time::timeout(DEADLINE, self.next_inner())
            .await
            .expect("an event or the end of the stream in time")
    }

    async fn next_inner(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                let data = serde_json::from_str(&event.data).unwrap();
                crate::contract::check_stream_event(&event.event, event.id.as_deref(), &data);
                return Some(SseEvent {
                    id: event.id,
                    event: event.event,
                    data,
                });
            }
            let chunk = self.response.chunk().await.ok()??;
            self.pending.extend(self.parser.push(&chunk));
        }
    }

    /// Every event until the stream ends.
    async fn collect(mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}

fn seq(event: &SseEvent) -> i64 {
    event.data["seq"].as_i64().unwrap()
}

/// A task's stream starts with its current state, then every change in order (progress
/// included), and ends after the terminal event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_stream_shows_every_change_then_ends() {
    let app = spawn_app().await;
    patch_queue(&app, "watched", json!({"paused": true})).await;
    let task = app
        .submit(json!({"kind": "sleep", "input": {"ms": 600}, "queue": "watched"}))
        .await;
    let id = task["id"].as_str().unwrap().to_owned();
    let mut stream = SseStream::open(&app, &format!("/v1/tasks/{id}/events"), None).await;
    let first = stream.next().await.unwrap();
    assert_eq!(first.event, "task");
    assert_eq!(first.data["state"], "queued");
    assert_eq!(first.data["task_id"], id.as_str());
    patch_queue(&app, "watched", json!({"paused": false})).await;
    let rest = stream.collect().await;
    let states: Vec<&str> = rest
        .iter()
        .map(|e| e.data["state"].as_str().unwrap())
        .collect();
    assert_eq!(states.first(), Some(&"running"));
    assert_eq!(states.last(), Some(&"succeeded"));
    assert!(
        rest.iter()
            .any(|e| e.data["progress"]["percent"].is_number()),
        "sleep reports progress: {states:?}"
    );
    let seqs: Vec<i64> = rest.iter().map(seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
    for event in &rest {
        assert_eq!(event.id.as_deref(), Some(seq(event).to_string().as_str()));
    }
    // A finished task's stream is its final state, then the end.
    let done = SseStream::open(&app, &format!("/v1/tasks/{id}/events"), None)
        .await
        .collect()
        .await;
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].data["state"], "succeeded");
}

/// With a hundred task streams open on tasks that end together, each stream gets its own
/// task's changes only, all of them, in order, and ends after its terminal event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_task_streams_each_get_their_own_changes_in_order() {
    let app = spawn_app_with(|config| config.workers = 16).await;
    let ids = park_echo_tasks(&app, "streams", 100).await;
    let mut streams = Vec::new();
    for id in ids {
        let mut stream = SseStream::open(&app, &format!("/v1/tasks/{id}/events"), None).await;
        // Its current state first: the stream is live from here on.
        let first = stream.next().await.unwrap();
        assert_eq!(first.data["state"], "queued");
        streams.push((id, stream));
    }
    patch_queue(&app, "streams", json!({"paused": false})).await;
    for (id, stream) in streams {
        let events = stream.collect().await;
        assert!(events.iter().all(|e| e.event == "task"), "{events:?}");
        assert!(events.iter().all(|e| e.data["task_id"] == id.as_str()));
        let states: Vec<&str> = events
            .iter()
            .map(|e| e.data["state"].as_str().unwrap())
            .collect();
        assert_eq!(states, ["running", "succeeded"], "{id}");
        let seqs: Vec<i64> = events.iter().map(seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
    }
}

/// The firehose forwards only what its filter asks for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_firehose_filters_by_queue_and_state() {
    let app = spawn_app().await;
    let mut stream = SseStream::open(&app, "/v1/events?queue=a&state=succeeded", None).await;
    let other = app.submit(json!({"kind": "echo", "queue": "b"})).await;
    app.wait_terminal(other["id"].as_str().unwrap()).await;
    let mine = app.submit(json!({"kind": "echo", "queue": "a"})).await;
    let event = stream.next().await.unwrap();
    assert_eq!(event.data["task_id"], mine["id"]);
    assert_eq!(event.data["queue"], "a");
    assert_eq!(event.data["state"], "succeeded");
}

/// `label=key:value` narrows the firehose to the events of tasks with that label.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_firehose_filters_by_label() {
    let app = spawn_app().await;
    let mut stream = SseStream::open(&app, "/v1/events?label=group:1&state=succeeded", None).await;
    for group in ["2", "1:x"] {
        let other = app
            .submit(json!({"kind": "echo", "labels": {"group": group}}))
            .await;
        app.wait_terminal(other["id"].as_str().unwrap()).await;
    }
    let unlabelled = app.submit(json!({"kind": "echo"})).await;
    app.wait_terminal(unlabelled["id"].as_str().unwrap()).await;
    let mine = app
        .submit(json!({"kind": "echo", "labels": {"group": "1", "other": "y"}}))
        .await;
    let event = stream.next().await.unwrap();
    assert_eq!(event.data["task_id"], mine["id"], "{:?}", event.data);
    assert_eq!(event.data["state"], "succeeded");
    for query in ["label=group", "bogus=1", "label=group:1&label=group:2"] {
        let response = app.get(&format!("/v1/events?{query}")).await;
        crate::helpers::expect_problem(response, 400, "invalid_query").await;
    }
}

/// A client that reconnects with Last-Event-ID — even to a restarted server — gets every
/// event after that id, with no gap and no repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_resume_after_last_event_id_across_a_restart() {
    let app = spawn_app().await;
    let mut stream = SseStream::open(&app, "/v1/events", None).await;
    let first = app.submit(json!({"kind": "echo", "input": 1})).await;
    let seen = stream.next().await.unwrap();
    assert_eq!(seen.data["task_id"], first["id"]);
    let resume_from = seen.id.clone().unwrap();
    drop(stream);

    let app = app.restart(|_| {}).await;
    let second = app.submit(json!({"kind": "echo", "input": 2})).await;
    app.wait_terminal(second["id"].as_str().unwrap()).await;
    app.wait_terminal(first["id"].as_str().unwrap()).await;

    let mut resumed = SseStream::open(&app, "/v1/events", Some(&resume_from)).await;
    let mut seqs = Vec::new();
    let mut second_done = false;
    while !second_done {
        let event = resumed.next().await.unwrap();
        assert_eq!(event.event, "task");
        second_done = event.data["task_id"] == second["id"] && event.data["state"] == "succeeded";
        seqs.push(seq(&event));
    }
    let from: i64 = resume_from.parse().unwrap();
    let expected: Vec<i64> = (from + 1..=from + seqs.len() as i64).collect();
    assert_eq!(seqs, expected, "every event after {from}, once, in order");

    // The task stream resumes too.
    let id = second["id"].as_str().unwrap();
    let all = SseStream::open(&app, &format!("/v1/tasks/{id}/events"), Some("0"))
        .await
        .collect()
        .await;
    let states: Vec<&str> = all
        .iter()
        .map(|e| e.data["state"].as_str().unwrap())
        .collect();
    assert_eq!(states.first(), Some(&"queued"));
    assert_eq!(states.last(), Some(&"succeeded"));
}

/// A resume from before the oldest retained event gets an explicit `reset`, not a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_past_retention_gets_a_reset() {
    let app = spawn_app_with(|config| config.retention = Duration::from_millis(100)).await;
    let gone = app.submit(json!({"kind": "echo"})).await;
    let gone = gone["id"].as_str().unwrap().to_owned();
    app.wait_terminal(&gone).await;
    crate::helpers::wait_for("retention to delete the task", || async {
        (app.get(&format!("/v1/tasks/{gone}")).await.status() == StatusCode::NOT_FOUND)
            .then_some(())
    })
    .await;
    let kept = app
        .submit(json!({"kind": "echo", "delay_ms": 60_000}))
        .await;
    let mut stream = SseStream::open(&app, "/v1/events", Some("0")).await;
    let reset = stream.next().await.unwrap();
    assert_eq!(reset.event, "reset");
    assert_eq!(reset.data["reason"], "expired");
    assert!(reset.data["oldest_seq"].as_i64().unwrap() > 1);
    let next = stream.next().await.unwrap();
    assert_eq!(next.data["task_id"], kept["id"]);
}

/// A reader that stalls while tens of thousands of events pass falls behind the hub's
/// buffer: it is told so with `reset` (reason `lagged`) and resumed from the log, so when it
/// reads again it gets every event, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_gets_reset_and_resumes_from_the_log() {
    let app = spawn_app_with(|config| config.workers = 8).await;
    let mut stream = SseStream::open(&app, "/v1/events", None).await;
    // 20,000 tasks make 60,000 events (about 17 MB of stream): more than the hub's buffer
    // and the sockets' buffers together can hold for a reader that does not read.
    for round in 0..20 {
        let tasks: Vec<Value> = (0..1000)
            .map(|n| json!({"kind": "echo", "input": round * 1000 + n}))
            .collect();
        let response = app
            .post_json("/v1/tasks/batch", &json!({ "tasks": tasks }))
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    // Every task done (not only the last: workers finish in any order), so the log holds
    // all 60,000 events; a larger deadline, for a slow backend on a loaded machine.
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let queue: Value = app.get("/v1/queues/default").await.json().await.unwrap();
        if queue["counts"]["succeeded"] == 20_000 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "20,000 echo tasks finish"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut previous = 0;
    let mut count = 0;
    let mut resets = 0;
    while count < 60_000 {
        let event = stream.next().await.unwrap();
        if event.event == "reset" {
            assert_eq!(event.data["reason"], "lagged");
            assert_eq!(event.data["resume_after"], previous);
            resets += 1;
            continue;
        }
        let seq = seq(&event);
        assert!(
            previous == 0 || seq == previous + 1,
            "gap after {previous}: {seq}"
        );
        previous = seq;
        count += 1;
    }
    assert!(resets >= 1, "the reader lagged and was told so");
}

/// Shutdown with 100 open streams completes: the streams end, the server stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_open_streams() {
    let mut app = spawn_app_with(|config| config.shutdown_grace = Duration::from_secs(2)).await;
    let mut streams = Vec::new();
    for n in 0..100 {
        let path = if n % 2 == 0 {
            "/v1/events".to_owned()
        } else {
            "/v1/events?queue=x".to_owned()
        };
        streams.push(SseStream::open(&app, &path, None).await);
    }
    app.begin_stop();
    tokio::time::timeout(Duration::from_secs(10), app.join())
        .await
        .expect("shutdown does not hang on open streams");
    for stream in streams {
        assert!(stream.collect().await.is_empty());
    }
}

/// Two nodes on one PostgreSQL database: a task's stream on node A shows the changes node B
/// makes (B leases and completes the task as a remote worker's server), then ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_on_one_node_sees_changes_made_on_another() {
    let database = TestDatabase::fresh(Backend::Postgres).await;
    let a = spawn_app_on(&database.url, |_| {}).await;
    patch_queue(&a, "far", json!({"remote": true})).await;
    let b = spawn_app_on(&database.url, |_| {}).await;
    let task = a.submit(json!({"kind": "anything", "queue": "far"})).await;
    let id = task["id"].as_str().unwrap().to_owned();
    let mut stream = SseStream::open(&a, &format!("/v1/tasks/{id}/events"), None).await;
    assert_eq!(stream.next().await.unwrap().data["state"], "queued");

    let leased = b
        .post_json(
            "/v1/queues/far/lease",
            &json!({"worker_id": "w", "max_tasks": 1, "wait_ms": 10_000}),
        )
        .await;
    assert_eq!(leased.status(), StatusCode::OK);
    let leased: Value = leased.json().await.unwrap();
    assert_eq!(leased["tasks"][0]["id"], id.as_str());
    let token = leased["tasks"][0]["lease"].as_str().unwrap();
    let done = b
        .post_json(
            &format!("/v1/tasks/{id}/complete"),
            &json!({"lease": token, "result": 7}),
        )
        .await;
    assert_eq!(done.status(), StatusCode::OK);

    let states: Vec<Value> = stream
        .collect()
        .await
        .into_iter()
        .map(|event| event.data["state"].clone())
        .collect();
    assert_eq!(states, [json!("running"), json!("succeeded")]);
}

/// A worker whose task is awaited (here by the task's own stream) takes its next task only
/// once that task's end is committed: with one worker, the firehose shows each task start
/// after the one before it ended, never two running at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_awaited_tasks_worker_starts_nothing_before_its_end_is_committed() {
    let app = spawn_app_with(|config| config.workers = 1).await;
    let ids = park_echo_tasks(&app, "awaited", 8).await;
    let mut streams = Vec::new();
    for id in &ids {
        let mut stream = SseStream::open(&app, &format!("/v1/tasks/{id}/events"), None).await;
        // Its first event is the current state: the stream is subscribed from here on.
        assert_eq!(stream.next().await.unwrap().data["state"], "queued");
        streams.push(stream);
    }
    let mut firehose = SseStream::open(&app, "/v1/events?queue=awaited", None).await;
    patch_queue(&app, "awaited", json!({"paused": false})).await;
    let mut running: Option<Value> = None;
    let mut ended = 0;
    while ended < ids.len() {
        let event = firehose.next().await.expect("an event");
        match event.data["state"].as_str().unwrap() {
            "running" => {
                assert_eq!(running, None, "a task started before the one running ended");
                running = Some(event.data["task_id"].clone());
            }
            "succeeded" => {
                assert_eq!(running.take(), Some(event.data["task_id"].clone()));
                ended += 1;
            }
            other => panic!("unexpected event {other}"),
        }
    }
    for stream in streams {
        assert_eq!(
            stream.collect().await.last().unwrap().data["state"],
            "succeeded"
        );
    }
}
