//! The `http` kind against a local server: a success records `{status, headers, body}`; a
//! 4xx fails at once; a 5xx is retried; the allow-list, timeouts and cancellation hold.
//! Outbound is deny-by-default, so each test allows its receiver by name and port.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};
use crate::receiver::{Receiver, Reply};

/// A server that may reach `receiver` (and nothing else).
async fn spawn_app_reaching(receiver: &Receiver) -> TestApp {
    spawn_app_with(|config| config.allow_outbound = receiver.allow()).await
}

/// Submits an `http` task with fast retries; returns its id.
async fn submit_http(app: &TestApp, input: Value, max_attempts: u32) -> String {
    let task = app
        .submit(
            json!({"kind": "http", "input": input, "max_attempts": max_attempts,
                       "backoff": {"base_ms": 10, "cap_ms": 50}}),
        )
        .await;
    task["id"].as_str().unwrap().to_owned()
}

/// A request that gets a 2xx succeeds; the result holds the status, the headers and the body
/// (parsed, since the answer is JSON). A JSON body goes out as JSON, with the given headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_succeeds_with_the_answer_as_result() {
    let receiver = Receiver::start().await;
    receiver.script([Reply::Json(201, json!({"created": 7}))]);
    let app = spawn_app_reaching(&receiver).await;
    let id = submit_http(
        &app,
        json!({"method": "post", "url": receiver.url("/things"),
               "headers": {"x-request": "abc"}, "body": {"name": "widget"}}),
        3,
    )
    .await;
    let done = app.wait_terminal(&id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"]["status"], 201);
    assert_eq!(done["result"]["body"], json!({"created": 7}));
    assert_eq!(
        done["result"]["headers"]["content-type"],
        "application/json"
    );

    let request = receiver.received().remove(0);
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/things");
    assert_eq!(request.header("x-request"), "abc");
    assert_eq!(request.header("content-type"), "application/json");
    assert_eq!(request.json(), json!({"name": "widget"}));

    // A text answer stays text; a string body goes out as it is.
    receiver.script([Reply::Text(200, "plain words")]);
    let id = submit_http(&app, json!({"url": receiver.url("/t"), "body": "raw"}), 1).await;
    let done = app.wait_terminal(&id).await;
    assert_eq!(done["result"]["body"], "plain words");
    let request = receiver.received().remove(1);
    assert_eq!(request.method, "GET");
    assert_eq!(&request.body[..], b"raw");
}

/// A 4xx is the caller's fault: the task fails on its first attempt, not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4xx_fails_at_once() {
    let receiver = Receiver::start().await;
    receiver.script([Reply::Text(404, "no such thing")]);
    let app = spawn_app_reaching(&receiver).await;
    let id = submit_http(&app, json!({"url": receiver.url("/missing")}), 3).await;
    let done = app.wait_terminal(&id).await;
    assert_eq!(done["state"], "failed");
    assert_eq!(done["attempt"], 1);
    assert_eq!(done["error"]["type"], "http_status");
    let message = done["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("404") && message.contains("no such thing"),
        "{message}"
    );
    assert_eq!(receiver.received().len(), 1);
}

/// A 5xx may pass: the task is retried until its attempts run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_is_retried() {
    let receiver = Receiver::start().await;
    receiver.script([
        Reply::Text(500, "a"),
        Reply::Text(502, "b"),
        Reply::Text(503, "c"),
    ]);
    let app = spawn_app_reaching(&receiver).await;
    let id = submit_http(&app, json!({"url": receiver.url("/flaky")}), 3).await;
    let done = app.wait_terminal(&id).await;
    assert_eq!(done["state"], "failed");
    assert_eq!(done["attempt"], 3);
    assert_eq!(done["errors"].as_array().unwrap().len(), 3);
    assert_eq!(receiver.received().len(), 3);

    // And one that recovers succeeds on the attempt that got a 2xx.
    receiver.script([Reply::Text(500, "once")]);
    let id = submit_http(&app, json!({"url": receiver.url("/flaky")}), 3).await;
    let done = app.wait_terminal(&id).await;
    assert_eq!(done["state"], "succeeded");
    assert_eq!(done["attempt"], 2);
}

/// A host outside the allow-list is refused before any connection, and for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_host_fails_without_a_connection() {
    let receiver = Receiver::start().await;
    let app = spawn_app_with(|config| {
        config.allow_outbound = "api.example.invalid".parse().unwrap();
    })
    .await;
    let id = submit_http(&app, json!({"url": receiver.url("/x")}), 3).await;
    let done = app.wait_terminal(&id).await;
    assert_eq!(done["state"], "failed");
    assert_eq!(done["attempt"], 1);
    assert_eq!(done["error"]["type"], "outbound_refused");
    assert_eq!(receiver.connections(), 0);
}

/// A request without an answer times out (retryably); a cancel stops a running request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_cancels_end_a_hanging_request() {
    let receiver = Receiver::start().await;
    receiver.script([Reply::Hang, Reply::Hang]);
    let app = spawn_app_reaching(&receiver).await;
    let id = submit_http(
        &app,
        json!({"url": receiver.url("/h"), "timeout_ms": 200}),
        1,
    )
    .await;
    let done = app.wait_terminal(&id).await;
    assert_eq!(done["state"], "failed");
    assert_eq!(done["error"]["type"], "timeout");

    let id = submit_http(&app, json!({"url": receiver.url("/h")}), 1).await;
    receiver.wait_received(2).await;
    let response = app
        .post_json(&format!("/v1/tasks/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(response.status(), 202);
    let done = app.wait_terminal(&id).await;
    assert_eq!(done["state"], "cancelled");
}

/// Inputs are checked at submit: a bad URL or method answers 422 naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_are_refused_at_submit() {
    let app = spawn_app().await;
    for (input, field) in [
        (json!({"url": "file:///etc/passwd"}), "input.url"),
        (
            json!({"url": "http://h/", "method": "NOT A METHOD"}),
            "input.method",
        ),
        (json!({"method": "GET"}), "input.url"),
    ] {
        let response = app
            .post_json("/v1/tasks", &json!({"kind": "http", "input": input}))
            .await;
        assert_eq!(response.status(), 422, "{input}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], field, "{input}");
    }
}
