//! Bad input gets a clear problem+json answer with the right status and a stable code —
//! never a panic, never a stored row.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, expect_problem, spawn_app, spawn_app_with};

async fn post_raw(
    app: &TestApp,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    app.client
        .post(app.url("/v1/tasks"))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn task_count(app: &TestApp) -> usize {
    let page: Value = app.get("/v1/tasks?limit=500").await.json().await.unwrap();
    page["tasks"].as_array().unwrap().len()
}

/// Malformed JSON is 400 `malformed_json`; trailing garbage too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_400() {
    let app = spawn_app().await;
    for body in ["{\"kind\":", "not json", "{\"kind\":\"echo\"} trailing", ""] {
        let response = post_raw(&app, "application/json", body).await;
        expect_problem(response, 400, "malformed_json").await;
    }
    assert_eq!(task_count(&app).await, 0);
}

/// A body that is not JSON by its content type is 415.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_content_type_is_415() {
    let app = spawn_app().await;
    let response = post_raw(&app, "text/plain", "{\"kind\":\"echo\"}").await;
    expect_problem(response, 415, "unsupported_media_type").await;
    let response = app
        .client
        .post(app.url("/v1/tasks"))
        .body("{\"kind\":\"echo\"}")
        .send()
        .await
        .unwrap();
    expect_problem(response, 415, "unsupported_media_type").await;
}

/// Shape errors are 422 and name the field: missing kind, wrong types, unknown fields,
/// bad names, unknown kinds, inputs that do not fit their kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_submissions_are_422_and_name_the_field() {
    let app = spawn_app().await;
    let cases = [
        (json!({"input": {}}), "invalid_request", "kind"),
        (json!({"kind": 5}), "invalid_request", "kind"),
        (
            json!({"kind": "echo", "bogus": 1}),
            "invalid_request",
            "bogus",
        ),
        (json!({"kind": "no such kind"}), "invalid_request", "kind"),
        (
            json!({"kind": "echo", "queue": "a/b"}),
            "invalid_request",
            "queue",
        ),
        (json!({"kind": "teleport"}), "unknown_kind", "kind"),
        (
            json!({"kind": "sleep", "input": {}}),
            "invalid_input",
            "input.ms",
        ),
        (
            json!({"kind": "sleep", "input": {"ms": "x"}}),
            "invalid_input",
            "input.ms",
        ),
        (
            json!({"kind": "sleep", "input": {"ms": -1}}),
            "invalid_input",
            "input.ms",
        ),
        (
            json!({"kind": "sleep", "input": {"ms": 99_999_999}}),
            "invalid_input",
            "input.ms",
        ),
        (
            json!({"kind": "sha256", "input": {"data": "x", "rounds": 0}}),
            "invalid_input",
            "input.rounds",
        ),
        (
            json!({"kind": "sha256", "input": {"data": "x", "extra": 1}}),
            "invalid_input",
            "input.extra",
        ),
        (json!([1, 2]), "invalid_request", "body"),
    ];
    for (body, code, field) in cases {
        let response = app.post_json("/v1/tasks", &body).await;
        let problem = expect_problem(response, 422, code).await;
        assert_eq!(problem["errors"][0]["field"], field, "{body} -> {problem}");
        assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    assert_eq!(task_count(&app).await, 0, "no refused task was stored");
}

/// A body over --max-body-bytes is 413, with or without a Content-Length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_is_413() {
    let app = spawn_app_with(|config| config.max_body_bytes = 1024).await;
    let big = json!({"kind": "echo", "input": {"blob": "x".repeat(4096)}}).to_string();
    let response = post_raw(&app, "application/json", big.clone()).await;
    expect_problem(response, 413, "payload_too_large").await;
    // Chunked: no Content-Length, so the limit bites while reading.
    let stream = futures::stream::iter(vec![Ok::<_, std::io::Error>(big)]);
    let response = post_raw(&app, "application/json", reqwest::Body::wrap_stream(stream)).await;
    expect_problem(response, 413, "payload_too_large").await;
    assert_eq!(task_count(&app).await, 0);
}

/// Ids: a non-UUID is 400, an unknown UUID is 404, on every task route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_unknown_ids() {
    let app = spawn_app().await;
    let unknown = "01936f3e-0000-7000-8000-000000000000";
    for path in ["/v1/tasks/{}", "/v1/tasks/{}/result", "/v1/tasks/{}?wait=1"] {
        let response = app.get(&path.replace("{}", "not-a-uuid")).await;
        expect_problem(response, 400, "invalid_task_id").await;
        let response = app.get(&path.replace("{}", unknown)).await;
        expect_problem(response, 404, "task_not_found").await;
    }
    let response = app
        .post_json(&format!("/v1/tasks/{unknown}/cancel"), &json!({}))
        .await;
    expect_problem(response, 404, "task_not_found").await;
    let response = app.post_json("/v1/tasks/xyz/cancel", &json!({})).await;
    expect_problem(response, 400, "invalid_task_id").await;
}

/// Bad query parameters are 400 `invalid_query`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_parameters_are_400() {
    let app = spawn_app().await;
    let task = app.submit(json!({"kind": "echo"})).await;
    let id = task["id"].as_str().unwrap();
    for path in [
        format!("/v1/tasks/{id}?wait=-1"),
        format!("/v1/tasks/{id}?wait=soon"),
        "/v1/tasks?state=sleeping".to_owned(),
        "/v1/tasks?limit=0".to_owned(),
        "/v1/tasks?limit=501".to_owned(),
        "/v1/tasks?limit=x".to_owned(),
        "/v1/tasks?cursor=nope".to_owned(),
        "/v1/tasks?queue=a%20b".to_owned(),
    ] {
        let response = app.get(&path).await;
        expect_problem(response, 400, "invalid_query").await;
    }
}

/// Unknown routes are 404 and wrong methods 405 (with Allow), both as problems.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods() {
    let app = spawn_app().await;
    expect_problem(app.get("/v2/nothing").await, 404, "route_not_found").await;
    let response = app
        .client
        .delete(app.url("/v1/kinds"))
        .send()
        .await
        .unwrap();
    assert!(response.headers().contains_key("allow"));
    expect_problem(response, 405, "method_not_allowed").await;
    let response = app.client.put(app.url("/v1/tasks")).send().await.unwrap();
    expect_problem(response, 405, "method_not_allowed").await;
}

/// Hostile bytes never panic the server: it answers each with a problem and stays healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_do_not_break_the_server() {
    let app = spawn_app().await;
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let bodies: Vec<Vec<u8>> = vec![
        deep.into_bytes(),
        vec![0xff, 0xfe, 0x00, 0x7b],
        b"{\"kind\":\"echo\",\"input\":\"\\ud800\"}".to_vec(),
        b"{\"kind\":\"echo\",\"kind\":\"echo\"}".to_vec(),
        b"{\"kind\":\"echo\",\"input\":1e999}".to_vec(),
    ];
    for body in bodies {
        let response = post_raw(&app, "application/json", body).await;
        let status = response.status();
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::UNPROCESSABLE_ENTITY,
            "{status}"
        );
    }
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
}

/// The detail of a problem, after checking its status and code.
async fn detail_of(response: reqwest::Response, status: u16, code: &str) -> String {
    let problem = expect_problem(response, status, code).await;
    problem["detail"].as_str().unwrap_or_default().to_owned()
}

/// Messages name the field, the rule and the value in plain words, with no Rust or serde
/// wording (`expected u32`, `invalid float literal`, `premature end of input`, `line 1`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_name_field_rule_and_value_in_plain_words() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({"kind": "echo", "max_attempts": -1}),
            "`max_attempts`: must be a whole number from 1 to 100, got -1",
        ),
        (
            json!({"kind": "echo", "max_attempts": 1.5}),
            "`max_attempts`: must be a whole number from 1 to 100, got 1.5",
        ),
        (
            json!({"kind": "echo", "run_at": "2025-"}),
            "`run_at`: must be an RFC 3339 time such as 2025-01-01T12:00:00Z, got `2025-`",
        ),
        (
            json!({"kind": "echo", "priority": "high"}),
            "`priority`: must be a whole number from -2147483648 to 2147483647, got the string \"high\"",
        ),
        (json!({"input": {}}), "`kind`: is required"),
        (
            json!({"kind": "sleep", "input": {"ms": -5}}),
            "`input.ms`: must be a whole number, 0 or more, got -5",
        ),
    ];
    for (body, want) in cases {
        let response = app.post_json("/v1/tasks", &body).await;
        let status = response.status().as_u16();
        let problem: Value = response.json().await.unwrap();
        assert_eq!(status, 422, "{body} -> {problem}");
        assert_eq!(problem["detail"], want, "{body}");
    }
    let response = post_raw(&app, "application/json", "{\"kind\":").await;
    assert_eq!(
        detail_of(response, 400, "malformed_json").await,
        "the body is not valid JSON: it ends too early, inside a value (line 1, column 8)"
    );
}

/// A query parameter that does not parse names itself, its rule and the value given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_messages_are_plain() {
    let app = spawn_app().await;
    let task = app.submit(json!({"kind": "echo"})).await;
    let id = task["id"].as_str().unwrap();
    let cases = [
        (
            format!("/v1/tasks/{id}?wait=soon"),
            "invalid query: `wait`: must be a number, got `soon`",
        ),
        (
            format!("/v1/tasks/{id}?wait=-2"),
            "invalid query: `wait`: must be a number of seconds, 0 or more (longer than 1m \
             waits that long), got -2",
        ),
        (
            "/v1/tasks?limit=x".to_owned(),
            "invalid query: `limit`: must be a whole number, got `x`",
        ),
        (
            "/v1/tasks?limit=501".to_owned(),
            "invalid query: limit: must be a whole number from 1 to 500, got 501",
        ),
    ];
    for (path, want) in cases {
        assert_eq!(
            detail_of(app.get(&path).await, 400, "invalid_query").await,
            want
        );
    }
}

/// A 413 says the limit, whether the layer (by Content-Length) or the reader refused it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_says_the_limit() {
    let app = spawn_app_with(|config| config.max_body_bytes = 1024).await;
    let big = json!({"kind": "echo", "input": {"blob": "x".repeat(4096)}}).to_string();
    let response = post_raw(&app, "application/json", big.clone()).await;
    let want = "the body is larger than the limit of 1024 bytes";
    assert_eq!(detail_of(response, 413, "payload_too_large").await, want);
    let stream = futures::stream::iter(vec![Ok::<_, std::io::Error>(big)]);
    let response = post_raw(&app, "application/json", reqwest::Body::wrap_stream(stream)).await;
    assert_eq!(detail_of(response, 413, "payload_too_large").await, want);
}

/// `/result` of a failed task says its error; a wrong-state answer reads as a sentence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_tasks_say_why_in_words() {
    let app = spawn_app().await;
    let failed = app
        .submit(json!({"kind": "fail", "input": {"message": "disk on fire"}, "max_attempts": 1}))
        .await;
    let id = failed["id"].as_str().unwrap();
    app.wait_terminal(id).await;
    let detail = detail_of(
        app.get(&format!("/v1/tasks/{id}/result")).await,
        409,
        "task_failed",
    )
    .await;
    assert!(
        detail.starts_with(&format!("task {id} has failed and has no result")),
        "{detail}"
    );
    assert!(detail.contains("disk on fire"), "{detail}");

    let done = app.submit(json!({"kind": "echo", "input": {}})).await;
    let id = done["id"].as_str().unwrap();
    app.wait_terminal(id).await;
    let response = app
        .post_json(&format!("/v1/tasks/{id}/retry"), &json!({}))
        .await;
    assert_eq!(
        detail_of(response, 409, "task_not_retryable").await,
        format!("task {id} has succeeded: only a failed or cancelled task can be retried")
    );
}
