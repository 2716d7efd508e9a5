//! Queues: pause and resume, per-queue concurrency, fairness between queues, stats.

use serde_json::{Value, json};

use crate::helpers::{expect_problem, max_overlap, millis, patch_queue, spawn_app_with};

/// A paused queue accepts tasks but starts none until resumed; other queues go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_queue_accepts_but_does_not_start() {
    let app = spawn_app_with(|_| {}).await;
    let queue = patch_queue(&app, "held", json!({"paused": true})).await;
    assert_eq!(queue["paused"], true);
    let held = app.submit(json!({"kind": "echo", "queue": "held"})).await;
    let held = held["id"].as_str().unwrap().to_owned();
    // Work on another queue runs; the dispatcher has looked at the held queue meanwhile.
    for _ in 0..3 {
        let other = app.submit(json!({"kind": "echo", "queue": "free"})).await;
        app.wait_terminal(other["id"].as_str().unwrap()).await;
    }
    assert_eq!(app.task(&held).await["state"], "queued");
    let stats: Value = app.get("/v1/queues/held").await.json().await.unwrap();
    assert_eq!(stats["counts"]["queued"], 1);
    assert!(stats["oldest_queued_age_ms"].as_i64().unwrap() >= 0);

    patch_queue(&app, "held", json!({"paused": false})).await;
    let done = app.wait_terminal(&held).await;
    assert_eq!(done["state"], "succeeded");
}

/// With `concurrency: 2` a queue never runs more than two at once, inside a larger pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_queue_concurrency_holds() {
    let app = spawn_app_with(|config| config.workers = 8).await;
    patch_queue(&app, "narrow", json!({"concurrency": 2})).await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        let task = app
            .submit(json!({"kind": "sleep", "input": {"ms": 300}, "queue": "narrow"}))
            .await;
        ids.push(task["id"].as_str().unwrap().to_owned());
    }
    let mut done = Vec::new();
    for id in &ids {
        done.push(app.wait_terminal(id).await);
    }
    assert_eq!(max_overlap(&done), 2);
    let stats: Value = app.get("/v1/queues/narrow").await.json().await.unwrap();
    assert_eq!(stats["counts"]["succeeded"], 6);
    assert_eq!(stats["finished_last_minute"], 6);
    // `null` clears the limit.
    let cleared = patch_queue(&app, "narrow", json!({"concurrency": null})).await;
    assert!(cleared["concurrency"].is_null());
}

/// One busy queue cannot starve another: with one worker and a long backlog in `busy`, a
/// task submitted later to `quiet` starts before the backlog is through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_queue_does_not_starve_another() {
    let app = spawn_app_with(|config| config.workers = 1).await;
    let mut backlog = Vec::new();
    for _ in 0..20 {
        let task = app
            .submit(json!({"kind": "sleep", "input": {"ms": 30}, "queue": "busy"}))
            .await;
        backlog.push(task["id"].as_str().unwrap().to_owned());
    }
    let quiet = app.submit(json!({"kind": "echo", "queue": "quiet"})).await;
    let quiet = app.wait_terminal(quiet["id"].as_str().unwrap()).await;
    let mut last_busy_start = 0;
    for id in &backlog {
        let done = app.wait_terminal(id).await;
        last_busy_start = last_busy_start.max(millis(&done, "started_at"));
    }
    assert!(millis(&quiet, "started_at") < last_busy_start);
}

/// The queue listing shows every queue in use, with counts per state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_are_listed_with_counts() {
    let app = spawn_app_with(|_| {}).await;
    let task = app.submit(json!({"kind": "echo", "queue": "alpha"})).await;
    app.wait_terminal(task["id"].as_str().unwrap()).await;
    patch_queue(&app, "beta", json!({"max_queued": 5})).await;
    let body: Value = app.get("/v1/queues").await.json().await.unwrap();
    let names: Vec<&str> = body["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["alpha", "beta"]);
    assert_eq!(body["queues"][0]["counts"]["succeeded"], 1);
    assert_eq!(body["queues"][1]["max_queued"], 5);
    expect_problem(app.get("/v1/queues/bad%20name").await, 400, "invalid_path").await;
    let response = app
        .client
        .patch(app.url("/v1/queues/x"))
        .json(&json!({"paused": "yes"}))
        .send()
        .await
        .unwrap();
    expect_problem(response, 422, "invalid_request").await;
}

/// A queue's own `max_queued` overrides the server's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_limit_overrides_the_server_default() {
    let app = spawn_app_with(|_| {}).await;
    patch_queue(&app, "tiny", json!({"paused": true, "max_queued": 1})).await;
    app.submit(json!({"kind": "echo", "queue": "tiny"})).await;
    let refused = app
        .post_json("/v1/tasks", &json!({"kind": "echo", "queue": "tiny"}))
        .await;
    expect_problem(refused, 429, "queue_full").await;
}
