//! Task management: retry, delete, retention, batches, ETags.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{expect_problem, patch_queue, spawn_app, spawn_app_with, wait_for};

/// A failed task can be retried: attempts reset, history kept; other states are 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_and_cancelled_tasks_can_be_retried() {
    let app = spawn_app().await;
    let task = app.submit(json!({"kind": "fail", "max_attempts": 1})).await;
    let id = task["id"].as_str().unwrap().to_owned();
    app.wait_terminal(&id).await;
    let response = app
        .post_json(&format!("/v1/tasks/{id}/retry"), &json!({}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let retried: Value = response.json().await.unwrap();
    assert_eq!(retried["state"], "queued");
    assert_eq!(retried["attempt"], 0);
    wait_for("the retry to fail again", || async {
        let task = app.task(&id).await;
        (task["state"] == "failed" && task["errors"].as_array().unwrap().len() == 2).then_some(())
    })
    .await;

    let done = app.submit(json!({"kind": "echo"})).await;
    let done_id = done["id"].as_str().unwrap();
    app.wait_terminal(done_id).await;
    let response = app
        .post_json(&format!("/v1/tasks/{done_id}/retry"), &json!({}))
        .await;
    expect_problem(response, 409, "task_not_retryable").await;
}

/// A finished task can be deleted (then 404); a waiting one cannot (409).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_tasks_can_be_deleted() {
    let app = spawn_app().await;
    let task = app.submit(json!({"kind": "echo"})).await;
    let id = task["id"].as_str().unwrap();
    app.wait_terminal(id).await;
    let response = app
        .client
        .delete(app.url(&format!("/v1/tasks/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    expect_problem(
        app.get(&format!("/v1/tasks/{id}")).await,
        404,
        "task_not_found",
    )
    .await;
    let response = app
        .client
        .delete(app.url(&format!("/v1/tasks/{id}")))
        .send()
        .await
        .unwrap();
    expect_problem(response, 404, "task_not_found").await;

    let waiting = app
        .submit(json!({"kind": "echo", "delay_ms": 60_000}))
        .await;
    let waiting = waiting["id"].as_str().unwrap();
    let response = app
        .client
        .delete(app.url(&format!("/v1/tasks/{waiting}")))
        .send()
        .await
        .unwrap();
    expect_problem(response, 409, "task_not_finished").await;
}

/// Finished tasks past `--retention` are deleted by the maintainer and answer 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_finished_tasks() {
    let app = spawn_app_with(|config| config.retention = Duration::from_millis(200)).await;
    let task = app.submit(json!({"kind": "echo"})).await;
    let id = task["id"].as_str().unwrap().to_owned();
    app.wait_terminal(&id).await;
    wait_for("retention to delete the task", || async {
        (app.get(&format!("/v1/tasks/{id}")).await.status() == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
}

/// A batch is stored all at once; one invalid item refuses the whole batch and names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_all_or_nothing() {
    let app = spawn_app().await;
    let response = app
        .post_json(
            "/v1/tasks/batch",
            &json!({"tasks": [{"kind": "echo", "input": 1}, {"kind": "echo", "input": 2},
                              {"kind": "sleep", "input": {"ms": 1}}]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await.unwrap();
    let tasks = body["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 3);
    for task in tasks {
        app.wait_terminal(task["id"].as_str().unwrap()).await;
    }

    let response = app
        .post_json(
            "/v1/tasks/batch",
            &json!({"tasks": [{"kind": "echo"}, {"kind": "sleep", "input": {"ms": "x"}}]}),
        )
        .await;
    let problem = expect_problem(response, 422, "invalid_input").await;
    assert_eq!(problem["errors"][0]["index"], 1);
    assert_eq!(problem["errors"][0]["field"], "input.ms");
    let response = app
        .post_json(
            "/v1/tasks/batch",
            &json!({"tasks": [{"kind": "echo"}, {"kind": "nope"}]}),
        )
        .await;
    let problem = expect_problem(response, 422, "unknown_kind").await;
    assert_eq!(problem["errors"][0]["index"], 1);
    let response = app
        .post_json("/v1/tasks/batch", &json!({"tasks": []}))
        .await;
    expect_problem(response, 422, "invalid_request").await;
    let page: Value = app.get("/v1/tasks?limit=500").await.json().await.unwrap();
    assert_eq!(
        page["tasks"].as_array().unwrap().len(),
        3,
        "refused batches left nothing"
    );
}

/// A large batch (stored with multi-row statements) keeps every task's fields and its order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_batch_keeps_every_field_and_the_order() {
    let app = spawn_app().await;
    patch_queue(&app, "bulk", json!({"paused": true})).await;
    let items: Vec<Value> = (0..75)
        .map(|n| {
            json!({"kind": "echo", "queue": "bulk", "input": {"n": n, "s": "\u{e9}\"x"},
                   "priority": n % 7, "labels": {"n": n.to_string()},
                   "max_attempts": 1 + n % 4, "timeout_ms": 1000 + n})
        })
        .collect();
    let response = app
        .post_json("/v1/tasks/batch", &json!({ "tasks": items }))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await.unwrap();
    let answered = body["tasks"].as_array().unwrap();
    assert_eq!(answered.len(), 75);
    for (n, task) in answered.iter().enumerate() {
        let stored = app.task(task["id"].as_str().unwrap()).await;
        assert_eq!(stored["input"], items[n]["input"]);
        assert_eq!(stored["priority"], items[n]["priority"]);
        assert_eq!(stored["labels"], items[n]["labels"]);
        assert_eq!(stored["max_attempts"], items[n]["max_attempts"]);
        assert_eq!(stored["timeout_ms"], items[n]["timeout_ms"]);
        assert_eq!(stored["state"], "queued");
    }
    let ids: Vec<&str> = answered.iter().map(|t| t["id"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted, "ids follow the order of the batch");
    let queue: Value = app.get("/v1/queues/bulk").await.json().await.unwrap();
    assert_eq!(queue["counts"]["queued"], 75);
}

/// A batch that would overfill a queue is refused whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_respects_the_queue_limit() {
    let app = spawn_app_with(|config| config.max_queued = 2).await;
    let response = app
        .post_json(
            "/v1/tasks/batch",
            &json!({"tasks": [{"kind": "echo", "delay_ms": 60000}, {"kind": "echo", "delay_ms": 60000},
                              {"kind": "echo", "delay_ms": 60000}]}),
        )
        .await;
    expect_problem(response, 429, "queue_full").await;
    let page: Value = app.get("/v1/tasks").await.json().await.unwrap();
    assert!(page["tasks"].as_array().unwrap().is_empty());
}

/// `GET /v1/tasks/{id}` carries an ETag; `If-None-Match` answers 304 until the task changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etags_answer_304_while_nothing_changed() {
    let app = spawn_app_with(|config| config.workers = 1).await;
    let task = app
        .submit(json!({"kind": "echo", "delay_ms": 60_000}))
        .await;
    let id = task["id"].as_str().unwrap();
    let first = app.get(&format!("/v1/tasks/{id}")).await;
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let again = app
        .client
        .get(app.url(&format!("/v1/tasks/{id}")))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    app.post_json(&format!("/v1/tasks/{id}/cancel"), &json!({}))
        .await;
    let changed = app
        .client
        .get(app.url(&format!("/v1/tasks/{id}")))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), StatusCode::OK);
    assert_ne!(changed.headers()["etag"].to_str().unwrap(), etag);
}

/// A batch item's `idempotency_key` stores it once: a re-sent batch answers with the first
/// tasks and counts them as `replayed`; a bad key names the item; a body key that differs
/// from the header is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_items_carry_idempotency_keys() {
    let app = spawn_app().await;
    let items = |n: u32| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"kind": "echo", "input": i, "idempotency_key": format!("line-{i}")}))
            .collect()
    };
    let first = app
        .post_json("/v1/tasks/batch", &json!({ "tasks": items(2) }))
        .await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first: Value = first.json().await.unwrap();
    assert_eq!(first["replayed"], 0);
    // Re-sent after an "interruption", with one more line.
    let again = app
        .post_json("/v1/tasks/batch", &json!({ "tasks": items(3) }))
        .await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["replayed"], 2, "{again}");
    for i in 0..2 {
        assert_eq!(again["tasks"][i]["id"], first["tasks"][i]["id"]);
    }
    let page: Value = app.get("/v1/tasks").await.json().await.unwrap();
    assert_eq!(
        page["tasks"].as_array().unwrap().len(),
        3,
        "stored once each"
    );

    // The same key with another item: refused, nothing stored.
    let changed = app
        .post_json(
            "/v1/tasks/batch",
            &json!({"tasks": [{"kind": "echo", "input": 99, "idempotency_key": "line-0"}]}),
        )
        .await;
    expect_problem(changed, 422, "idempotency_key_reused").await;
    let empty_key = app
        .post_json(
            "/v1/tasks/batch",
            &json!({"tasks": [{"kind": "echo"}, {"kind": "echo", "idempotency_key": ""}]}),
        )
        .await;
    let body = expect_problem(empty_key, 422, "invalid_request").await;
    assert_eq!(body["errors"][0]["index"], 1);
    assert_eq!(body["errors"][0]["field"], "idempotency_key");

    // On a single submit the body key is the header's twin; a differing pair is refused.
    let response = app
        .client
        .post(app.url("/v1/tasks"))
        .header("idempotency-key", "one")
        .json(&json!({"kind": "echo", "idempotency_key": "two"}))
        .send()
        .await
        .unwrap();
    let body = expect_problem(response, 422, "invalid_request").await;
    assert_eq!(body["errors"][0]["field"], "idempotency_key");
    let by_body = app
        .post_json(
            "/v1/tasks",
            &json!({"kind": "echo", "idempotency_key": "three"}),
        )
        .await;
    assert_eq!(by_body.status(), StatusCode::ACCEPTED);
    let by_header = app
        .client
        .post(app.url("/v1/tasks"))
        .header("idempotency-key", "three")
        .json(&json!({"kind": "echo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        by_header.status(),
        StatusCode::OK,
        "a replay, however the key came"
    );
}
