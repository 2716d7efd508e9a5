//! Dependencies over HTTP: `after`, `after_policy`, `input_from`, the joins `all` and `any`,
//! cancel and delete around waiting tasks, bad inputs, the lease answer's `parents`, and a
//! waiting child released on a restarted server.

use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{TestApp, expect_problem, patch_queue, spawn_app};
use crate::workers::make_remote;

/// Submits a batch; asserts 202 and returns its tasks.
async fn batch(app: &TestApp, tasks: Value) -> Vec<Value> {
    let response = app
        .post_json("/v1/tasks/batch", &json!({ "tasks": tasks }))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await.unwrap();
    body["tasks"].as_array().unwrap().clone()
}

fn id(task: &Value) -> String {
    task["id"].as_str().unwrap().to_owned()
}

fn hex_sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// A three-stage pipeline without a client in the middle: each stage hashes the digest of
/// the one before (`input_from`), so the last digest is sha256 of sha256 of sha256.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_passes_each_result_on() {
    let app = spawn_app().await;
    let tasks = batch(
        &app,
        json!([
            {"kind": "sha256", "input": {"data": "abc"}},
            {"kind": "sha256", "after": ["$0"], "input_from": "$0"},
            {"kind": "sha256", "after": ["$1"], "input_from": "$1"},
        ]),
    )
    .await;
    assert_eq!(tasks[1]["state"], "waiting");
    assert_eq!(tasks[1]["after"], json!([tasks[0]["id"]]));
    assert_eq!(tasks[1]["after_policy"], "all_succeeded");
    assert_eq!(tasks[2]["input_from"], tasks[1]["id"]);
    let last = app.wait_terminal(&id(&tasks[2])).await;
    assert_eq!(last["state"], "succeeded", "{last}");
    let want = hex_sha256(&hex_sha256(&hex_sha256("abc")));
    assert_eq!(last["result"]["digest"], want);
    let middle = app.task(&id(&tasks[1])).await;
    assert_eq!(
        middle["input"]["digest"],
        hex_sha256("abc"),
        "the input it ran with"
    );
}

/// A fan-out of 100 hashes joined by `all`: one wait on the join's id awaits them all, and
/// its result holds their results in `after` order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_joins_a_fan_out_of_a_hundred() {
    let app = spawn_app().await;
    let mut items: Vec<Value> = (0..100)
        .map(|n| json!({"kind": "sha256", "input": {"data": format!("item {n}")}}))
        .collect();
    let parents: Vec<String> = (0..100).map(|n| format!("${n}")).collect();
    items.push(json!({"kind": "all", "after": parents}));
    let tasks = batch(&app, Value::Array(items)).await;
    let join = app.wait_terminal(&id(&tasks[100])).await;
    assert_eq!(join["state"], "succeeded", "{join}");
    let results = join["result"].as_array().unwrap();
    assert_eq!(results.len(), 100);
    for (n, result) in results.iter().enumerate() {
        assert_eq!(
            result["digest"],
            hex_sha256(&format!("item {n}")),
            "item {n}"
        );
    }
}

/// `any` over three tasks of which two fail: it answers with the one that succeeded; `any`
/// over parents that all fail is cancelled as `dependency_failed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_takes_the_one_that_succeeded() {
    let app = spawn_app().await;
    let fail = json!({"kind": "fail", "input": {"retryable": false}});
    let tasks = batch(
        &app,
        json!([fail, fail, {"kind": "echo", "input": "mirror"},
               {"kind": "any", "after": ["$0", "$1", "$2"]}]),
    )
    .await;
    assert_eq!(tasks[3]["after_policy"], "any_succeeded");
    let any = app.wait_terminal(&id(&tasks[3])).await;
    assert_eq!(any["state"], "succeeded", "{any}");
    assert_eq!(
        any["result"],
        json!({"id": tasks[2]["id"], "result": "mirror"})
    );

    let tasks = batch(
        &app,
        json!([fail, fail, {"kind": "any", "after": ["$0", "$1"]}]),
    )
    .await;
    let any = app.wait_terminal(&id(&tasks[2])).await;
    assert_eq!(any["state"], "cancelled");
    assert_eq!(any["error"]["type"], "dependency_failed");
}

/// A child submitted with `Prefer: wait` after its parent failed is cancelled as it is
/// stored: the answer says so at once (200), rather than waiting for an end that was never
/// to come. The client's deadline is far below the wait asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_stored_cancelled_answers_a_wait_at_once() {
    let app = spawn_app().await;
    let parent = app
        .submit(json!({"kind": "fail", "input": {"retryable": false}}))
        .await;
    let parent = app.wait_terminal(&id(&parent)).await;
    assert_eq!(parent["state"], "failed");
    let response = app
        .client
        .post(app.url("/v1/tasks"))
        .header("prefer", "wait=60")
        .timeout(std::time::Duration::from_secs(20))
        .json(&json!({"kind": "echo", "after": [parent["id"]]}))
        .send()
        .await
        .expect("an answer before the client's deadline");
    assert_eq!(response.status(), StatusCode::OK);
    let child: Value = response.json().await.unwrap();
    assert_eq!(child["state"], "cancelled", "{child}");
    assert_eq!(child["error"]["type"], "dependency_failed");
}

/// A failure cascades two levels down under `all_succeeded`, while an `all_finished` child
/// of the same parent runs anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_cascades_two_levels() {
    let app = spawn_app().await;
    let tasks = batch(
        &app,
        json!([
            {"kind": "fail", "input": {"retryable": false}},
            {"kind": "echo", "after": ["$0"]},
            {"kind": "echo", "after": ["$1"]},
            {"kind": "echo", "input": "ran", "after": ["$0"], "after_policy": "all_finished"},
        ]),
    )
    .await;
    for task in &tasks[1..3] {
        let ended = app.wait_terminal(&id(task)).await;
        assert_eq!(ended["state"], "cancelled", "{ended}");
        assert_eq!(ended["error"]["type"], "dependency_failed");
    }
    let ran = app.wait_terminal(&id(&tasks[3])).await;
    assert_eq!(
        (ran["state"].clone(), ran["result"].clone()),
        (json!("succeeded"), json!("ran"))
    );
}

/// Cancelling a running parent cancels its waiting descendants; a waiting task can be
/// cancelled itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_cascades_to_waiting_descendants() {
    let app = spawn_app().await;
    let tasks = batch(
        &app,
        json!([
            {"kind": "sleep", "input": {"ms": 60_000}},
            {"kind": "echo", "after": ["$0"]},
            {"kind": "echo", "after": ["$1"]},
        ]),
    )
    .await;
    app.wait_state(&id(&tasks[0]), "running").await;
    let response = app
        .post_json(&format!("/v1/tasks/{}/cancel", id(&tasks[0])), &json!({}))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    for task in &tasks[1..] {
        let ended = app.wait_terminal(&id(task)).await;
        assert_eq!(ended["state"], "cancelled");
        assert_eq!(ended["error"]["type"], "dependency_failed");
    }

    let parent = app
        .submit(json!({"kind": "sleep", "input": {"ms": 60_000}}))
        .await;
    let child = app
        .submit(json!({"kind": "echo", "after": [id(&parent)]}))
        .await;
    assert_eq!(child["state"], "waiting");
    let response = app
        .post_json(&format!("/v1/tasks/{}/cancel", id(&child)), &json!({}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["state"], "cancelled");
    assert!(
        body["error"].is_null(),
        "cancelled by a client, not by a parent"
    );
}

/// A finished task that a waiting task still needs cannot be deleted (409
/// `task_has_dependents`); once the child settles, it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_needed_parent_is_a_conflict() {
    let app = spawn_app().await;
    let done = app.submit(json!({"kind": "echo", "input": 1})).await;
    app.wait_terminal(&id(&done)).await;
    let slow = app
        .submit(json!({"kind": "sleep", "input": {"ms": 60_000}}))
        .await;
    let child = app
        .submit(json!({"kind": "echo", "after": [id(&done), id(&slow)]}))
        .await;
    assert_eq!(child["state"], "waiting");
    let delete = |task: &str| {
        app.client
            .delete(app.url(&format!("/v1/tasks/{task}")))
            .send()
    };
    let refused = delete(&id(&done)).await.unwrap();
    let problem = expect_problem(refused, 409, "task_has_dependents").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("parent"),
        "{problem}"
    );
    let response = app
        .post_json(&format!("/v1/tasks/{}/cancel", id(&child)), &json!({}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let deleted = delete(&id(&done)).await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
}

/// Bad parents are refused before anything is stored, naming the field and the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parents_are_refused() {
    let app = spawn_app().await;
    let parent = app.submit(json!({"kind": "echo"})).await;
    let unknown = "0190b3c2-7d4e-7a3b-9c1d-2e3f4a5b6c7d";
    let cases = [
        (
            json!({"kind": "echo", "after": [unknown]}),
            "unknown_parent",
            "after[0]",
            unknown,
        ),
        (
            json!({"kind": "echo", "after": ["$0"]}),
            "invalid_request",
            "after[0]",
            "single",
        ),
        (
            json!({"kind": "echo", "after": ["nope"]}),
            "invalid_request",
            "after[0]",
            "nope",
        ),
        (
            json!({"kind": "echo", "after": [id(&parent), id(&parent)]}),
            "invalid_request",
            "after[1]",
            "again",
        ),
        (
            json!({"kind": "echo", "after": [id(&parent)], "input_from": unknown}),
            "invalid_request",
            "input_from",
            unknown,
        ),
        (
            json!({"kind": "echo", "after_policy": "all_finished"}),
            "invalid_request",
            "after_policy",
            "after",
        ),
        (
            json!({"kind": "echo", "after": [id(&parent)], "delay_ms": 5}),
            "invalid_request",
            "delay_ms",
            "after",
        ),
        (
            json!({"kind": "echo", "after": [id(&parent)], "after_policy": "most"}),
            "invalid_request",
            "after_policy",
            "any_succeeded",
        ),
    ];
    for (body, code, field, said) in cases {
        let response = app.post_json("/v1/tasks", &body).await;
        let problem = expect_problem(response, 422, code).await;
        assert_eq!(problem["errors"][0]["field"], field, "{body}: {problem}");
        let message = problem["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(said), "{body}: {message}");
    }
    let too_many: Vec<String> = (0..1001).map(|_| id(&parent)).collect();
    let response = app
        .post_json("/v1/tasks", &json!({"kind": "all", "after": too_many}))
        .await;
    let problem = expect_problem(response, 422, "invalid_request").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("at most 1000 parents"),
        "{problem}"
    );

    // In a batch, `$N` names an earlier item only: never itself, never a later one.
    for (after, said) in [("$1", "item 1 may only"), ("$2", "names item 2")] {
        let body = json!({"tasks": [{"kind": "echo"}, {"kind": "echo", "after": [after]}, {"kind": "echo"}]});
        let response = app.post_json("/v1/tasks/batch", &body).await;
        let problem = expect_problem(response, 422, "invalid_request").await;
        assert_eq!(problem["errors"][0]["index"], 1, "{problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(said),
            "{problem}"
        );
    }
    let listed: Value = app.get("/v1/tasks?limit=500").await.json().await.unwrap();
    assert_eq!(
        listed["tasks"].as_array().unwrap().len(),
        1,
        "nothing else was stored"
    );
}

/// A remote worker's lease carries the parents' outcomes, in `after` order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_carries_the_parents() {
    let app = spawn_app().await;
    make_remote(&app, "far").await;
    let tasks = batch(
        &app,
        json!([
            {"kind": "echo", "input": {"n": 1}},
            {"kind": "fail", "input": {"retryable": false}},
            {"kind": "report", "queue": "far", "after": ["$0", "$1"], "after_policy": "all_finished"},
        ]),
    )
    .await;
    let response = app
        .post_json(
            "/v1/queues/far/lease",
            &json!({"worker_id": "w", "max_tasks": 1, "lease_ms": 30_000, "wait_ms": 20_000}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let leased = &body["tasks"][0];
    assert_eq!(leased["id"], tasks[2]["id"]);
    let parents = leased["parents"].as_array().unwrap();
    assert_eq!(parents[0]["id"], tasks[0]["id"]);
    assert_eq!(parents[0]["state"], "succeeded");
    assert_eq!(parents[0]["result"], json!({"n": 1}));
    assert_eq!(parents[1]["state"], "failed");
    assert_eq!(parents[1]["error"]["type"], "fail");
}

/// A child waiting when the server stopped is released on the restarted server once its
/// parent completes there: the dependency is in the database, not in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_child_survives_a_restart() {
    let app = spawn_app().await;
    patch_queue(&app, "held", json!({"paused": true})).await;
    let parent = app
        .submit(json!({"kind": "echo", "queue": "held", "input": 7}))
        .await;
    let child = app
        .submit(json!({"kind": "echo", "after": [id(&parent)], "input_from": id(&parent)}))
        .await;
    assert_eq!(child["state"], "waiting");
    let app = app.restart(|_| {}).await;
    assert_eq!(app.task(&id(&child)).await["state"], "waiting");
    patch_queue(&app, "held", json!({"paused": false})).await;
    let ended = app.wait_terminal(&id(&child)).await;
    assert_eq!(ended["state"], "succeeded", "{ended}");
    assert_eq!(ended["result"], 7);
    let queue: Value = app.get("/v1/queues/default").await.json().await.unwrap();
    assert_eq!(queue["counts"]["waiting"], 0);
}

/// A child's event stream starts `waiting`, then shows its release and its run like any
/// other change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_show_the_waiting_state() {
    let app = spawn_app().await;
    patch_queue(&app, "held", json!({"paused": true})).await;
    let parent = app.submit(json!({"kind": "echo", "queue": "held"})).await;
    let child = app
        .submit(json!({"kind": "echo", "after": [id(&parent)]}))
        .await;
    let response = app
        .client
        .get(app.url(&format!("/v1/tasks/{}/events", id(&child))))
        .send()
        .await
        .unwrap();
    let mut stream = crate::events::SseStream::from_response(response);
    let first = stream.next().await.unwrap();
    assert_eq!(first.data["state"], "waiting");
    patch_queue(&app, "held", json!({"paused": false})).await;
    let mut states = Vec::new();
    while let Some(event) = stream.next().await {
        states.push(event.data["state"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        states.first().map(String::as_str),
        Some("queued"),
        "{states:?}"
    );
    assert_eq!(
        states.last().map(String::as_str),
        Some("succeeded"),
        "{states:?}"
    );
}

/// `GET /v1/tasks?parent=ID` lists the tasks that name ID in `after`, whatever their state,
/// newest first and paged; the cursor keeps the filter; a task naming another parent is
/// not among them; a parent that is not an id is 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parents_children_are_listed() {
    let app = spawn_app().await;
    let tasks = batch(
        &app,
        json!([
            {"kind": "echo", "input": "parent"},
            {"kind": "echo", "input": "other"},
            {"kind": "echo", "after": ["$0"]},
            {"kind": "echo", "after": ["$1", "$0"], "after_policy": "all_finished"},
            {"kind": "echo", "after": ["$1"]},
            {"kind": "echo", "after": ["$0"]},
        ]),
    )
    .await;
    let parent = id(&tasks[0]);
    let first = listing(&app, &format!("/v1/tasks?parent={parent}&limit=2")).await;
    let ids = |page: &Value| -> Vec<String> {
        page["tasks"].as_array().unwrap().iter().map(id).collect()
    };
    assert_eq!(ids(&first), [id(&tasks[5]), id(&tasks[3])], "{first}");
    let cursor = first["next_cursor"].as_str().expect("a second page");
    let second = listing(&app, &format!("/v1/tasks?cursor={cursor}")).await;
    assert_eq!(ids(&second), [id(&tasks[2])], "{second}");
    assert!(second["next_cursor"].is_null(), "{second}");
    // A task with no children, and a parent that is not an id.
    let leaf = listing(&app, &format!("/v1/tasks?parent={}", id(&tasks[5]))).await;
    assert_eq!(leaf["tasks"], json!([]));
    let problem =
        expect_problem(app.get("/v1/tasks?parent=nope").await, 400, "invalid_query").await;
    assert!(
        problem["detail"].as_str().unwrap().contains("parent"),
        "{problem}"
    );
}

/// `GET path` as JSON, asserting 200.
async fn listing(app: &TestApp, path: &str) -> Value {
    let response = app.get(path).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response.json().await.unwrap()
}
