//! Cancellation: a queued task ends at once; a running one is asked to stop and ends
//! cancelled; a finished one cannot be cancelled.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, expect_problem, spawn_app_with};

async fn cancel(app: &TestApp, id: &str) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/v1/tasks/{id}/cancel")))
        .send()
        .await
        .unwrap()
}

/// A queued task is cancelled at once (200), its waiters resolve, and it never runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_task_is_cancelled_at_once() {
    let app = spawn_app_with(|config| config.workers = 1).await;
    let blocker = app
        .submit(json!({"kind": "sleep", "input": {"ms": 60_000}}))
        .await;
    let blocker = blocker["id"].as_str().unwrap().to_owned();
    app.wait_state(&blocker, "running").await;
    let queued = app.submit(json!({"kind": "echo"})).await;
    let id = queued["id"].as_str().unwrap().to_owned();

    let waiter = {
        let client = app.client.clone();
        let url = app.url(&format!("/v1/tasks/{id}?wait=30"));
        tokio::spawn(async move {
            let task: Value = client.get(url).send().await.unwrap().json().await.unwrap();
            task
        })
    };
    let response = cancel(&app, &id).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["state"], "cancelled");
    assert!(body["finished_at"].is_string());
    let seen = waiter.await.unwrap();
    assert_eq!(seen["state"], "cancelled");
    assert_eq!(seen["attempt"], 0, "it never ran");
    let result = app.get(&format!("/v1/tasks/{id}/result")).await;
    expect_problem(result, 409, "task_cancelled").await;
    cancel(&app, &blocker).await;
}

/// A running sleep sees its cancellation and ends cancelled long before its hour is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_task_is_stopped_and_ends_cancelled() {
    let app = spawn_app_with(|config| config.workers = 1).await;
    let task = app
        .submit(json!({"kind": "sleep", "input": {"ms": 3_600_000}}))
        .await;
    let id = task["id"].as_str().unwrap().to_owned();
    app.wait_state(&id, "running").await;
    let response = cancel(&app, &id).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["cancel_requested"], true);
    // The wait is bounded by the helper's deadline; an ignored cancel would blow it.
    let done = app.wait_terminal(&id).await;
    assert_eq!(done["state"], "cancelled");
    assert!(done["error"].is_null() && done["result"].is_null());
    // The worker is free again.
    let next = app.submit(json!({"kind": "echo"})).await;
    let next = app.wait_terminal(next["id"].as_str().unwrap()).await;
    assert_eq!(next["state"], "succeeded");
}

/// Cancelling a finished task is 409 and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_finished_task_is_409() {
    let app = spawn_app_with(|_| {}).await;
    let task = app.submit(json!({"kind": "echo", "input": 1})).await;
    let id = task["id"].as_str().unwrap();
    app.wait_terminal(id).await;
    expect_problem(cancel(&app, id).await, 409, "task_finished").await;
    let again = app.task(id).await;
    assert_eq!(again["state"], "succeeded");
    assert_eq!(again["result"], 1);
}
