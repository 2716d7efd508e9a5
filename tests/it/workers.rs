//! Remote workers: the lease protocol over HTTP, fencing, lease expiry, timeouts, many
//! concurrent workers. The worker programs (`taskd worker`, the examples) are in
//! `worker_processes.rs`.

use std::collections::HashMap;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, expect_problem, millis, patch_queue, spawn_app, wait_for};

pub(crate) async fn make_remote(app: &TestApp, queue: &str) {
    let body = patch_queue(app, queue, json!({"remote": true})).await;
    assert_eq!(body["remote"], true);
}

async fn lease(app: &TestApp, queue: &str, body: Value) -> reqwest::Response {
    app.post_json(&format!("/v1/queues/{queue}/lease"), &body)
        .await
}

pub(crate) async fn lease_one(app: &TestApp, queue: &str, worker: &str, lease_ms: u64) -> Value {
    let response = lease(
        app,
        queue,
        json!({"worker_id": worker, "max_tasks": 1, "lease_ms": lease_ms, "wait_ms": 10_000}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    body["tasks"][0].clone()
}

/// Lease, heartbeat and complete through HTTP; a remote queue takes any kind, which local
/// workers never run; a non-remote queue cannot be leased from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_protocol_runs_a_task_end_to_end() {
    let app = spawn_app().await;
    make_remote(&app, "far").await;
    let task = app
        .submit(json!({"kind": "resize", "input": {"w": 2}, "queue": "far"}))
        .await;
    let id = task["id"].as_str().unwrap().to_owned();
    let leased = lease_one(&app, "far", "w1", 30_000).await;
    assert_eq!(leased["id"], id.as_str());
    assert_eq!(leased["state"], "running");
    assert_eq!(leased["attempt"], 1);
    assert_eq!(leased["input"], json!({"w": 2}));
    let token = leased["lease"].as_str().unwrap().to_owned();
    assert!(leased["lease_expires_at"].is_string());

    let beat = app
        .post_json(
            &format!("/v1/tasks/{id}/heartbeat"),
            &json!({"lease": token, "progress": {"percent": 40, "message": "half"}}),
        )
        .await;
    assert_eq!(beat.status(), StatusCode::OK);
    let beat: Value = beat.json().await.unwrap();
    assert_eq!(beat["cancel_requested"], false);
    assert_eq!(app.task(&id).await["progress"]["percent"], 40.0);

    let done = app
        .post_json(
            &format!("/v1/tasks/{id}/complete"),
            &json!({"lease": token, "result": {"ok": true}}),
        )
        .await;
    assert_eq!(done.status(), StatusCode::OK);
    let task = app.task(&id).await;
    assert_eq!(task["state"], "succeeded");
    assert_eq!(task["result"], json!({"ok": true}));

    // Nothing waits: a lease with no wait answers 204.
    let empty = lease(&app, "far", json!({"worker_id": "w1", "wait_ms": 0})).await;
    assert_eq!(empty.status(), StatusCode::NO_CONTENT);
    let refused = lease(&app, "default", json!({"worker_id": "w1"})).await;
    expect_problem(refused, 409, "queue_not_remote").await;
    let bad = lease(&app, "far", json!({"worker_id": "w1", "max_tasks": 0})).await;
    expect_problem(bad, 422, "invalid_request").await;
}

/// A failure reported under the lease is retried like a local one; a heartbeat tells the
/// worker about a cancel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_failures_retry_and_cancels_reach_the_worker() {
    let app = spawn_app().await;
    make_remote(&app, "far").await;
    let task = app
        .submit(json!({"kind": "x", "queue": "far", "backoff": {"base_ms": 10, "cap_ms": 10}}))
        .await;
    let id = task["id"].as_str().unwrap().to_owned();
    let first = lease_one(&app, "far", "w1", 30_000).await;
    let failed = app
        .post_json(
            &format!("/v1/tasks/{id}/fail"),
            &json!({"lease": first["lease"], "error": {"type": "boom", "message": "no"}, "retryable": true}),
        )
        .await;
    assert_eq!(failed.status(), StatusCode::OK);
    let second = lease_one(&app, "far", "w1", 30_000).await;
    assert_eq!(second["attempt"], 2);
    app.post_json(&format!("/v1/tasks/{id}/cancel"), &json!({}))
        .await;
    let beat: Value = app
        .post_json(
            &format!("/v1/tasks/{id}/heartbeat"),
            &json!({"lease": second["lease"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(beat["cancel_requested"], true);
    app.post_json(
        &format!("/v1/tasks/{id}/fail"),
        &json!({"lease": second["lease"], "error": {"type": "cancelled", "message": "stopped"}}),
    )
    .await;
    let task = app.task(&id).await;
    assert_eq!(task["state"], "cancelled");
    assert_eq!(task["errors"][0]["type"], "boom");
}

/// A stale or wrong lease gets 409 and changes nothing; an expired lease re-delivers the
/// task to a second worker as attempt 2, and the first worker can no longer finish it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_and_lease_expiry() {
    let app = spawn_app().await;
    make_remote(&app, "far").await;
    let task = app.submit(json!({"kind": "x", "queue": "far"})).await;
    let id = task["id"].as_str().unwrap().to_owned();
    let first = lease_one(&app, "far", "slow", 1_000).await;
    let wrong = app
        .post_json(
            &format!("/v1/tasks/{id}/complete"),
            &json!({"lease": "not-the-lease", "result": 1}),
        )
        .await;
    expect_problem(wrong, 409, "lease_lost").await;
    assert_eq!(app.task(&id).await["state"], "running");

    // The first worker goes silent; its lease expires and the task comes back.
    let second = lease_one(&app, "far", "fast", 30_000).await;
    assert_eq!(second["id"], id.as_str());
    assert_eq!(second["attempt"], 2);
    let stale = app
        .post_json(
            &format!("/v1/tasks/{id}/complete"),
            &json!({"lease": first["lease"], "result": "stale"}),
        )
        .await;
    expect_problem(stale, 409, "lease_lost").await;
    let beat = app
        .post_json(
            &format!("/v1/tasks/{id}/heartbeat"),
            &json!({"lease": first["lease"]}),
        )
        .await;
    expect_problem(beat, 409, "lease_lost").await;
    let done = app
        .post_json(
            &format!("/v1/tasks/{id}/complete"),
            &json!({"lease": second["lease"], "result": "fresh"}),
        )
        .await;
    assert_eq!(done.status(), StatusCode::OK);
    let task = app.task(&id).await;
    assert_eq!(task["result"], "fresh");
    assert_eq!(task["errors"][0]["type"], "lease_expired");
}

/// Heartbeats under `token` (each asking for a 30 s lease) until one answers 409, as a worker
/// that never finishes would; every accepted heartbeat's lease ends by `deadline`.
async fn heartbeat_until_lost(app: &TestApp, id: &str, token: &str, deadline: i64) {
    let path = format!("/v1/tasks/{id}/heartbeat");
    let body = json!({"lease": token, "lease_ms": 30_000});
    wait_for("the lease to be lost", || async {
        let beat = app.post_json(&path, &body).await;
        if beat.status() == StatusCode::CONFLICT {
            return Some(());
        }
        assert_eq!(beat.status(), StatusCode::OK);
        let beat: Value = beat.json().await.unwrap();
        assert!(millis(&beat, "lease_expires_at") <= deadline, "{beat}");
        None
    })
    .await;
}

/// A remote attempt that outlives its `timeout_ms` ends as a local one does, however the
/// worker heartbeats: a retryable `timeout` in `errors`, then attempt 2, then `failed`; the
/// old lease answers 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_attempt_past_its_timeout_fails_with_timeout() {
    let app = spawn_app().await;
    make_remote(&app, "far").await;
    let task = app
        .submit(
            json!({"kind": "x", "queue": "far", "timeout_ms": 300, "max_attempts": 2,
                       "backoff": {"base_ms": 10, "cap_ms": 10}}),
        )
        .await;
    let id = task["id"].as_str().unwrap().to_owned();
    for attempt in 1..=2 {
        let leased = lease_one(&app, "far", "stuck", 30_000).await;
        assert_eq!(
            (&leased["id"], &leased["attempt"]),
            (&json!(id), &json!(attempt))
        );
        let deadline = millis(&leased, "started_at") + 300;
        assert_eq!(millis(&leased, "lease_expires_at"), deadline, "{leased}");
        let token = leased["lease"].as_str().unwrap();
        heartbeat_until_lost(&app, &id, token, deadline).await;

        let task = app.task(&id).await;
        let error = &task["errors"][attempt - 1];
        assert_eq!(error["attempt"], attempt, "{task}");
        assert_eq!(error["type"], "timeout", "{task}");
        assert_eq!(error["message"], "the attempt ran longer than 300 ms");
        let late = app
            .post_json(
                &format!("/v1/tasks/{id}/complete"),
                &json!({"lease": token, "result": "late"}),
            )
            .await;
        expect_problem(late, 409, "lease_lost").await;
    }
    let task = app.wait_terminal(&id).await;
    assert_eq!(task["state"], "failed");
    assert_eq!(task["error"]["type"], "timeout");
    assert_eq!(task["errors"].as_array().unwrap().len(), 2);
}

/// 32 concurrent workers on 2,000 tasks: each task is leased exactly once (one attempt
/// each, no overlap) and every one completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_workers_lease_each_task_once() {
    let app = spawn_app().await;
    make_remote(&app, "many").await;
    for _ in 0..2 {
        let tasks: Vec<Value> = (0..1000)
            .map(|n| json!({"kind": "job", "input": n, "queue": "many"}))
            .collect();
        let response = app
            .post_json("/v1/tasks/batch", &json!({ "tasks": tasks }))
            .await;
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }
    let workers: Vec<_> = (0..32)
        .map(|n| {
            let client = app.client.clone();
            let base = app.base.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                loop {
                    let response = client
                        .post(format!("{base}/v1/queues/many/lease"))
                        .json(&json!({"worker_id": format!("w{n}"), "max_tasks": 10, "wait_ms": 0}))
                        .send()
                        .await
                        .unwrap();
                    if response.status() == StatusCode::NO_CONTENT {
                        return seen;
                    }
                    let body: Value = response.json().await.unwrap();
                    for task in body["tasks"].as_array().unwrap() {
                        let id = task["id"].as_str().unwrap().to_owned();
                        let done = client
                            .post(format!("{base}/v1/tasks/{id}/complete"))
                            .json(&json!({"lease": task["lease"], "result": n}))
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(done.status(), StatusCode::OK);
                        seen.push((id, task["attempt"].as_u64().unwrap()));
                    }
                }
            })
        })
        .collect();
    let mut leases: HashMap<String, usize> = HashMap::new();
    for worker in workers {
        for (id, attempt) in worker.await.unwrap() {
            assert_eq!(attempt, 1);
            *leases.entry(id).or_default() += 1;
        }
    }
    assert_eq!(leases.len(), 2000);
    assert!(leases.values().all(|&n| n == 1), "a task was leased twice");
    let queue: Value = app.get("/v1/queues/many").await.json().await.unwrap();
    assert_eq!(queue["counts"]["succeeded"], 2000);
}
