//! Task semantics: retries with backoff, timeouts, delays, priorities, labels, idempotency,
//! `Prefer: wait`, and that all of it survives a restart.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, expect_problem, millis, spawn_app, spawn_app_with, wait_for};

/// A short backoff so retries happen within a test's patience.
fn quick() -> Value {
    json!({"base_ms": 20, "cap_ms": 100})
}

/// `fail {times: 2}` fails twice, then succeeds on attempt 3 with two recorded errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_retried_until_it_succeeds() {
    let app = spawn_app().await;
    let task = app
        .submit(
            json!({"kind": "fail", "input": {"times": 2, "message": "flaky"}, "backoff": quick()}),
        )
        .await;
    assert_eq!(task["max_attempts"], 3);
    let done = app.wait_terminal(task["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempt"], 3);
    let errors = done["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0]["attempt"], 1);
    assert_eq!(errors[1]["attempt"], 2);
    assert_eq!(errors[0]["type"], "fail");
    assert_eq!(errors[0]["message"], "flaky");
    assert!(errors[0]["at"].is_string());
    assert!(done["error"].is_null());
}

/// With `max_attempts: 1` a failure is final at once; a non-retryable error too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_attempts_left_or_a_final_error_fails_at_once() {
    let app = spawn_app().await;
    let once = app.submit(json!({"kind": "fail", "max_attempts": 1})).await;
    let final_error = app
        .submit(json!({"kind": "fail", "input": {"retryable": false}, "backoff": quick()}))
        .await;
    for task in [once, final_error] {
        let done = app.wait_terminal(task["id"].as_str().unwrap()).await;
        assert_eq!(done["state"], "failed");
        assert_eq!(done["attempt"], 1);
        assert_eq!(done["errors"].as_array().unwrap().len(), 1);
        assert_eq!(done["error"]["type"], "fail");
    }
}

/// A 2 s sleep with `timeout_ms: 300` is stopped and fails with `timeout`, retried while it
/// has attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_past_its_timeout_fails_with_timeout() {
    let app = spawn_app().await;
    let task = app
        .submit(
            json!({"kind": "sleep", "input": {"ms": 2000}, "timeout_ms": 300,
                       "max_attempts": 2, "backoff": quick()}),
        )
        .await;
    let done = app.wait_terminal(task["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "failed");
    assert_eq!(done["error"]["type"], "timeout");
    assert_eq!(done["attempt"], 2, "timeouts are retryable");
    let started = millis(&done, "started_at");
    let finished = millis(&done, "finished_at");
    assert!(
        finished - started < 2000,
        "the attempt was stopped, not waited out"
    );
}

/// A delayed task is `scheduled`, then runs no earlier than its time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_task_waits_in_scheduled() {
    let app = spawn_app().await;
    let task = app
        .submit(json!({"kind": "echo", "input": 1, "delay_ms": 400}))
        .await;
    assert_eq!(task["state"], "scheduled");
    assert!(task["run_at"].is_string());
    let run_at = millis(&task, "run_at");
    let done = app.wait_terminal(task["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded");
    assert!(millis(&done, "started_at") >= run_at);
    assert!(done["run_at"].is_null());

    let at = chrono::Utc::now() + chrono::Duration::milliseconds(300);
    let task = app
        .submit(json!({"kind": "echo", "run_at": at.to_rfc3339()}))
        .await;
    assert_eq!(task["state"], "scheduled");
    let done = app.wait_terminal(task["id"].as_str().unwrap()).await;
    assert!(millis(&done, "started_at") >= at.timestamp_millis());
}

/// Bad options are 422 and name the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_options_are_422() {
    let app = spawn_app().await;
    let cases = [
        (json!({"kind": "echo", "max_attempts": 0}), "max_attempts"),
        (json!({"kind": "echo", "timeout_ms": 0}), "timeout_ms"),
        (json!({"kind": "echo", "run_at": "tomorrow"}), "run_at"),
        (
            json!({"kind": "echo", "run_at": "2030-01-01T00:00:00Z", "delay_ms": 5}),
            "run_at",
        ),
        (
            json!({"kind": "echo", "backoff": {"base_ms": 10, "cap_ms": 5}}),
            "backoff.base_ms",
        ),
        (
            json!({"kind": "echo", "labels": {"a:b": "c"}}),
            "labels.a:b",
        ),
        (json!({"kind": "echo", "labels": {"a": 1}}), "labels.a"),
        (json!({"kind": "echo", "priority": "high"}), "priority"),
    ];
    for (body, field) in cases {
        let response = app.post_json("/v1/tasks", &body).await;
        let problem = expect_problem(response, 422, "invalid_request").await;
        assert_eq!(problem["errors"][0]["field"], field, "{body}");
    }
}

/// Labels are kept and filter the listing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_filter_the_listing() {
    let app = spawn_app().await;
    let a = app
        .submit(json!({"kind": "echo", "labels": {"team": "core", "env": "prod"}}))
        .await;
    app.submit(json!({"kind": "echo", "labels": {"team": "web"}}))
        .await;
    assert_eq!(a["labels"]["team"], "core");
    let page: Value = app
        .get("/v1/tasks?label=team:core")
        .await
        .json()
        .await
        .unwrap();
    let tasks = page["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["id"], a["id"]);
    expect_problem(
        app.get("/v1/tasks?label=nocolon").await,
        400,
        "invalid_query",
    )
    .await;
}

async fn submit_with_key(app: &TestApp, key: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/tasks"))
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Fifty concurrent submits with one Idempotency-Key create exactly one task; the repeats
/// answer 200 with it and `Idempotent-Replayed: true`; another body with the key is 422.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_creates_one_task() {
    let app = spawn_app().await;
    let body = json!({"kind": "echo", "input": {"order": 42}});
    let responses: Vec<_> = (0..50)
        .map(|_| {
            let client = app.client.clone();
            let url = app.url("/v1/tasks");
            let body = body.clone();
            tokio::spawn(async move {
                let response = client
                    .post(url)
                    .header("idempotency-key", "order-42")
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let replayed = response.headers().get("idempotent-replayed").is_some();
                let status = response.status();
                let task: Value = response.json().await.unwrap();
                (status, replayed, task["id"].as_str().unwrap().to_owned())
            })
        })
        .collect();
    let mut created = 0;
    let mut ids = std::collections::HashSet::new();
    for response in responses {
        let (status, replayed, id) = response.await.unwrap();
        match status {
            StatusCode::ACCEPTED => created += 1,
            StatusCode::OK => assert!(replayed),
            other => panic!("unexpected {other}"),
        }
        ids.insert(id);
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1);
    let page: Value = app.get("/v1/tasks").await.json().await.unwrap();
    assert_eq!(page["tasks"].as_array().unwrap().len(), 1);

    let other = json!({"kind": "echo", "input": {"order": 43}});
    let response = submit_with_key(&app, "order-42", &other).await;
    expect_problem(response, 422, "idempotency_key_reused").await;
}

/// `Prefer: wait=N` answers 200 with the finished task when it finishes in time, else 202.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_wait_returns_the_finished_task() {
    let app = spawn_app().await;
    let response = app
        .client
        .post(app.url("/v1/tasks"))
        .header("prefer", "wait=10")
        .json(&json!({"kind": "echo", "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["preference-applied"], "wait=10");
    let task: Value = response.json().await.unwrap();
    assert_eq!(task["state"], "succeeded");
    assert_eq!(task["result"], "hi");

    let response = app
        .client
        .post(app.url("/v1/tasks"))
        .header("prefer", "wait=0.2")
        .json(&json!({"kind": "sleep", "input": {"ms": 60_000}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert!(response.headers().get("preference-applied").is_none());
    assert!(response.headers().contains_key("retry-after"));
}

/// Schedules, attempts, idempotency keys and queue settings survive a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_survives_a_restart() {
    let app = spawn_app().await;
    let scheduled = app.submit(json!({"kind": "echo", "delay_ms": 1500})).await;
    let keyed = submit_with_key(&app, "k1", &json!({"kind": "echo"})).await;
    assert_eq!(keyed.status(), StatusCode::ACCEPTED);
    let keyed: Value = keyed.json().await.unwrap();
    let response = app
        .client
        .patch(app.url("/v1/queues/held"))
        .json(&json!({"paused": true, "concurrency": 3, "max_queued": 7}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let retried = app
        .submit(json!({"kind": "fail", "input": {"times": 1}, "backoff": {"base_ms": 1500, "cap_ms": 1500}}))
        .await;
    let retried_id = retried["id"].as_str().unwrap().to_owned();
    wait_for("the first attempt to fail", || async {
        let task = app.task(&retried_id).await;
        (task["state"] == "scheduled" && task["attempt"] == 1).then_some(())
    })
    .await;

    let app = app.restart(|_| {}).await;
    let queue: Value = app.get("/v1/queues/held").await.json().await.unwrap();
    assert_eq!(queue["paused"], true);
    assert_eq!(queue["concurrency"], 3);
    assert_eq!(queue["max_queued"], 7);
    let replay = submit_with_key(&app, "k1", &json!({"kind": "echo"})).await;
    assert_eq!(replay.status(), StatusCode::OK);
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(replay["id"], keyed["id"]);
    let done = app.wait_terminal(scheduled["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded");
    let done = app.wait_terminal(&retried_id).await;
    assert_eq!(done["state"], "succeeded");
    assert_eq!(done["attempt"], 2);
    assert_eq!(done["errors"].as_array().unwrap().len(), 1);
}

/// Priorities: higher first, FIFO among equals — seen in a paused-then-resumed queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priorities_order_a_resumed_queue() {
    let app = spawn_app_with(|config| config.workers = 1).await;
    let pause = app
        .client
        .patch(app.url("/v1/queues/ordered"))
        .json(&json!({"paused": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(pause.status(), StatusCode::OK);
    let mut ids = Vec::new();
    for (n, priority) in [0, 5, 1, 5, 0].into_iter().enumerate() {
        let task = app
            .submit(
                json!({"kind": "sleep", "input": {"ms": 20 + n}, "queue": "ordered",
                           "priority": priority}),
            )
            .await;
        ids.push(task["id"].as_str().unwrap().to_owned());
    }
    let resume = app
        .client
        .patch(app.url("/v1/queues/ordered"))
        .json(&json!({"paused": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(resume.status(), StatusCode::OK);
    // One worker, sleeps of 20 ms and more: start times are distinct and ordered.
    let mut started = Vec::new();
    for (n, id) in ids.iter().enumerate() {
        let done = app.wait_terminal(id).await;
        started.push((millis(&done, "started_at"), n));
    }
    started.sort();
    let order: Vec<usize> = started.iter().map(|(_, n)| *n).collect();
    assert_eq!(order, vec![1, 3, 2, 0, 4]);
}
