//! The bounded pool: never more tasks running than workers, and CPU-bound work off the
//! threads that serve HTTP.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{max_overlap, spawn_app_with};

/// With --workers 5, ten one-second sleeps run five at a time: the largest number of
/// overlapping [started_at, finished_at) intervals is exactly five.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_workers_run_ten_sleeps_five_at_a_time() {
    let app = spawn_app_with(|config| config.workers = 5).await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        let task = app
            .submit(json!({"kind": "sleep", "input": {"ms": 1000}}))
            .await;
        ids.push(task["id"].as_str().unwrap().to_owned());
    }
    let mut done = Vec::new();
    for id in &ids {
        let task = app.wait_terminal(id).await;
        assert_eq!(task["state"], "succeeded");
        done.push(task);
    }
    assert_eq!(
        max_overlap(&done),
        5,
        "at most five at once, and the pool was used in full"
    );
}

/// While every worker and the CPU pool are busy hashing, the API still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_bound_tasks_leave_the_api_responsive() {
    let app = spawn_app_with(|config| {
        config.workers = 4;
        config.cpu_threads = Some(1);
    })
    .await;
    let mut ids = Vec::new();
    for n in 0..4 {
        let task = app
            .submit(
                json!({"kind": "sha256", "input": {"data": format!("{n}"), "rounds": 10_000_000}}),
            )
            .await;
        ids.push(task["id"].as_str().unwrap().to_owned());
    }
    app.wait_state(&ids[0], "running").await;
    // Were the hashing on the async threads, this request could not be served in time.
    let health = app
        .client
        .get(app.url("/healthz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("the API answers while the pool hashes");
    assert_eq!(health.status(), StatusCode::OK);
    let task: Value = app
        .get(&format!("/v1/tasks/{}", ids[3]))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(task["kind"], "sha256");
    for id in &ids {
        let response = app
            .client
            .post(app.url(&format!("/v1/tasks/{id}/cancel")))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success() || response.status() == StatusCode::CONFLICT);
    }
}
