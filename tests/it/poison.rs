//! Poison isolation at the edge: a string holding U+0000 anywhere in a JSON body is a 422
//! naming the field, on every backend and every JSON route, and a client sending them does
//! not fail the well-behaved clients submitting beside it.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, expect_problem, spawn_app};

#[track_caller]
fn assert_names(problem: &Value, field: &str) {
    let error = &problem["errors"][0];
    assert_eq!(error["field"], field, "{problem}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("U+0000"), "the rule is named: {problem}");
}

async fn send(app: &TestApp, method: reqwest::Method, path: &str, body: &Value) -> Value {
    let response = app
        .client
        .request(method, app.url(path))
        .json(body)
        .send()
        .await
        .expect("a request");
    expect_problem(response, 422, "invalid_request").await
}

/// A NUL in a submit, a batch item's input, a queue PATCH, a key, or a worker's result is
/// 422 naming the field; nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_anywhere_is_422_naming_the_field() {
    let app = spawn_app().await;
    let post = reqwest::Method::POST;
    let secret =
        json!({"kind": "echo", "callback": {"url": "http://127.0.0.1:9/h", "secret": "a\u{0}"}});
    assert_names(
        &send(&app, post.clone(), "/v1/tasks", &secret).await,
        "callback.secret",
    );
    let batch = json!({"tasks": [
        {"kind": "echo"}, {"kind": "echo"}, {"kind": "echo"},
        {"kind": "echo", "input": {"name": "x\u{0}y"}},
    ]});
    assert_names(
        &send(&app, post.clone(), "/v1/tasks/batch", &batch).await,
        "tasks[3].input.name",
    );
    let key = json!({"kind": "echo", "labels": {"team\u{0}": "a"}});
    assert_names(
        &send(&app, post.clone(), "/v1/tasks", &key).await,
        "labels.\"team\\u0000\"",
    );
    let patch = json!({"callback": {"url": "http://127.0.0.1:9/h", "secret": "\u{0}"}});
    let problem = send(&app, reqwest::Method::PATCH, "/v1/queues/q", &patch).await;
    assert_names(&problem, "callback.secret");
    let page: Value = app.get("/v1/tasks").await.json().await.unwrap();
    assert_eq!(page["tasks"], json!([]), "nothing was stored");
}

/// Twenty clients submit while one sends NUL secrets: each bad submit is refused alone,
/// every good one is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_sender_does_not_fail_other_clients() {
    let app = spawn_app().await;
    let bad =
        json!({"kind": "echo", "callback": {"url": "http://127.0.0.1:9/h", "secret": "\u{0}"}});
    let good = json!({"kind": "echo", "input": "fine"});
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..21 {
        let (app_client, url) = (app.client.clone(), app.url("/v1/tasks"));
        let body = if client == 0 {
            bad.clone()
        } else {
            good.clone()
        };
        clients.spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..10 {
                let response = app_client.post(&url).json(&body).send().await.unwrap();
                statuses.push(response.status());
            }
            (client, statuses)
        });
    }
    while let Some(finished) = clients.join_next().await {
        let (client, statuses) = finished.unwrap();
        let expected = if client == 0 {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::ACCEPTED
        };
        assert!(
            statuses.iter().all(|s| *s == expected),
            "client {client}: {statuses:?}"
        );
    }
}
