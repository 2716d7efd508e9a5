//! A full disk: writes refused for space answer 507 `storage_full` with Retry-After,
//! `/readyz` is 503 until a write succeeds again, and a server started on a full store comes
//! up and serves reads. The full disk is real SQLite: a `max_page_count` cap on the file
//! makes SQLite refuse a write that needs a new page exactly as a full disk does
//! (SQLITE_FULL), on every run, with no mount and no root. (A full tmpfs, and PostgreSQL's
//! disk_full, are in bench/chaos.)

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::backend::{Backend, TestDatabase};
use crate::helpers::{expect_problem, spawn_app_on};

/// Bigger than a page, so each task takes pages of its own (overflow pages).
fn big() -> Value {
    json!("x".repeat(8_000))
}

/// Fill the capped store until a submit is refused, check the answers while full, free
/// pages by deleting finished tasks, and see writes and readiness come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_store_answers_507_and_recovers_when_space_is_back() {
    let database = TestDatabase::fresh(Backend::Sqlite).await;
    let app = spawn_app_on(&database.url, |_| {}).await;
    let mut finished = Vec::new();
    for _ in 0..20 {
        let task = app.submit(json!({"kind": "echo", "input": big()})).await;
        finished.push(task["id"].as_str().unwrap().to_owned());
    }
    for id in &finished {
        app.wait_terminal(id).await;
    }
    let mut app = app;
    app.stop().await;

    // A cap below the file's size holds it at its size: the store starts full.
    let capped = format!("{}?max_page_count=1", database.url);
    let app = spawn_app_on(&capped, |_| {}).await;
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    assert_eq!(
        app.get(&format!("/v1/tasks/{}", finished[0]))
            .await
            .status(),
        StatusCode::OK
    );
    // Scheduled far ahead: nothing runs, so only the submits write.
    let later = json!({"kind": "echo", "input": big(), "delay_ms": 3_600_000});
    let mut refused = None;
    for _ in 0..200 {
        let response = app.post_json("/v1/tasks", &later).await;
        if response.status() != StatusCode::ACCEPTED {
            refused = Some(response);
            break;
        }
    }
    let response = refused.expect("a capped store fills up");
    let retry_after = response.headers().get("retry-after").cloned();
    let problem = expect_problem(response, 507, "storage_full").await;
    assert!(retry_after.is_some(), "507 carries Retry-After: {problem}");
    let ready = app.get("/readyz").await;
    expect_problem(ready, 503, "not_ready").await;
    // Reads and health still work.
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    assert_eq!(
        app.get(&format!("/v1/tasks/{}", finished[1]))
            .await
            .status(),
        StatusCode::OK
    );

    // Space is back: deleting finished tasks frees their pages for new rows.
    for id in &finished {
        let deleted = app
            .client
            .delete(app.url(&format!("/v1/tasks/{id}")))
            .send()
            .await;
        assert_eq!(deleted.unwrap().status(), StatusCode::NO_CONTENT);
    }
    let response = app.post_json("/v1/tasks", &later).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);
}
