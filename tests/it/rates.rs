//! Queue rate limits over HTTP: `PATCH /v1/queues/{name}` sets and removes one, GET shows it,
//! bad values are 422 naming the field, and a limited queue never starts more than its limit
//! in any window (a property of the recorded start times, not a timing target).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, expect_problem, millis, patch_queue, spawn_app, wait_for};

/// The most of these start times that fall in one window `[s, s + window)`.
fn most_in_a_window(starts: &[i64], window: i64) -> usize {
    starts
        .iter()
        .map(|&s| starts.iter().filter(|&&t| s <= t && t < s + window).count())
        .max()
        .unwrap_or(0)
}

async fn patch(app: &TestApp, body: Value) -> reqwest::Response {
    app.client
        .patch(app.url("/v1/queues/limited"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// A rate is shown once set and gone once `null`; a limit or window out of range is 422
/// naming `rate.limit` or `rate.per_ms`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_set_shown_and_removed() {
    let app = spawn_app().await;
    let set = patch_queue(
        &app,
        "limited",
        json!({"rate": {"limit": 5, "per_ms": 1000}}),
    )
    .await;
    assert_eq!(set["rate"], json!({"limit": 5, "per_ms": 1000}));
    let listed: Value = app.get("/v1/queues").await.json().await.unwrap();
    let queue = listed["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "limited")
        .unwrap()
        .clone();
    assert_eq!(queue["rate"]["limit"], 5);
    let kept = patch_queue(&app, "limited", json!({"paused": false})).await;
    assert_eq!(kept["rate"]["per_ms"], 1000);
    let cleared = patch_queue(&app, "limited", json!({"rate": null})).await;
    assert_eq!(cleared["rate"], Value::Null);

    for (body, field) in [
        (json!({"rate": {"limit": 0, "per_ms": 1000}}), "rate.limit"),
        (
            json!({"rate": {"limit": 100001, "per_ms": 1000}}),
            "rate.limit",
        ),
        (json!({"rate": {"limit": 5, "per_ms": 0}}), "rate.per_ms"),
        (
            json!({"rate": {"limit": 5, "per_ms": 86_400_001u64}}),
            "rate.per_ms",
        ),
    ] {
        let problem = expect_problem(patch(&app, body).await, 422, "invalid_request").await;
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let missing = patch(&app, json!({"rate": {"limit": 5}})).await;
    assert_eq!(missing.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

/// A queue limited to 5 starts per second runs 20 tasks with no second holding more than
/// 5 starts, so the run spans at least 3 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_queue_starts_at_most_its_limit_per_window() {
    let app = spawn_app().await;
    patch_queue(
        &app,
        "limited",
        json!({"rate": {"limit": 5, "per_ms": 1000}}),
    )
    .await;
    let tasks: Vec<Value> = (0..20)
        .map(|i| json!({"queue": "limited", "kind": "echo", "input": i}))
        .collect();
    let batch = app
        .post_json("/v1/tasks/batch", &json!({ "tasks": tasks }))
        .await;
    assert_eq!(batch.status(), StatusCode::ACCEPTED);
    let finished = wait_for("20 tasks to succeed", || async {
        let page: Value = app
            .get("/v1/tasks?queue=limited&state=succeeded&limit=100")
            .await
            .json()
            .await
            .unwrap();
        let tasks = page["tasks"].as_array().unwrap().clone();
        (tasks.len() == 20).then_some(tasks)
    })
    .await;
    let mut starts: Vec<i64> = finished.iter().map(|t| millis(t, "started_at")).collect();
    starts.sort_unstable();
    assert!(most_in_a_window(&starts, 1000) <= 5, "{starts:?}");
    assert!(starts[19] - starts[0] >= 3000, "{starts:?}");
}
