//! Graceful shutdown: readiness and submits answer 503 while running tasks get their grace;
//! what does not finish in time goes back to its queue with the attempt not counted.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{expect_problem, spawn_app_with, wait_for};

/// Reads a task straight from the database the stopped server used.
async fn stored(database_url: &str, id: &str) -> taskd::task::Task {
    let store = taskd::store::open(database_url).await.unwrap();
    store
        .get(id.parse().unwrap())
        .await
        .unwrap()
        .expect("the task is stored")
}

/// During the grace period /readyz and submits answer 503, reads still work, and a task
/// that finishes within the grace is recorded as succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_refuses_work_and_lets_running_tasks_finish() {
    let mut app = spawn_app_with(|config| config.shutdown_grace = Duration::from_secs(20)).await;
    let task = app
        .submit(json!({"kind": "sleep", "input": {"ms": 1500}}))
        .await;
    let id = task["id"].as_str().unwrap().to_owned();
    app.wait_state(&id, "running").await;
    app.begin_stop();
    wait_for("readyz to report draining", || async {
        let response = app.get("/readyz").await;
        (response.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(response)
    })
    .await;
    let refused = app.post_json("/v1/tasks", &json!({"kind": "echo"})).await;
    assert!(refused.headers().contains_key("retry-after"));
    expect_problem(refused, 503, "draining").await;
    // A long-poll does not hold the shutdown up: it answers with the current state.
    let now: Value = app
        .get(&format!("/v1/tasks/{id}?wait=60"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(now["id"], id.as_str());
    app.join().await;
    let task = stored(&app.database_url, &id).await;
    assert_eq!(task.state, taskd::task::TaskState::Succeeded);
}

/// A task still running when the grace ends is stopped and re-queued, attempt not counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_past_the_grace_go_back_to_the_queue() {
    let mut app = spawn_app_with(|config| config.shutdown_grace = Duration::from_millis(200)).await;
    let task = app
        .submit(json!({"kind": "sleep", "input": {"ms": 3_600_000}}))
        .await;
    let id = task["id"].as_str().unwrap().to_owned();
    app.wait_state(&id, "running").await;
    app.stop().await;
    let task = stored(&app.database_url, &id).await;
    assert_eq!(task.state, taskd::task::TaskState::Queued);
    assert_eq!(task.attempt, 0, "the interrupted attempt is not counted");
    assert!(task.lease.is_none());
}
