//! Backpressure: a full queue refuses with 429 and Retry-After, and writes nothing.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{expect_problem, spawn_app_with};

/// With --max-queued 3, the fourth waiting task is refused; a cancel makes room again;
/// other queues are not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_and_stores_nothing() {
    let app = spawn_app_with(|config| {
        config.workers = 1;
        config.max_queued = 3;
    })
    .await;
    let blocker = app
        .submit(json!({"kind": "sleep", "input": {"ms": 60_000}}))
        .await;
    let blocker = blocker["id"].as_str().unwrap().to_owned();
    app.wait_state(&blocker, "running").await;
    let mut waiting = Vec::new();
    for _ in 0..3 {
        let task = app.submit(json!({"kind": "echo"})).await;
        waiting.push(task["id"].as_str().unwrap().to_owned());
    }
    let refused = app.post_json("/v1/tasks", &json!({"kind": "echo"})).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    expect_problem(refused, 429, "queue_full").await;

    let page: Value = app.get("/v1/tasks?limit=500").await.json().await.unwrap();
    assert_eq!(
        page["tasks"].as_array().unwrap().len(),
        4,
        "the refused task left no row"
    );

    // Another queue has its own room.
    app.submit(json!({"kind": "echo", "queue": "elsewhere"}))
        .await;
    // A cancel frees a place.
    let response = app
        .client
        .post(app.url(&format!("/v1/tasks/{}/cancel", waiting[0])))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    app.submit(json!({"kind": "echo"})).await;
}
