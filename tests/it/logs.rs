//! Logs as an operator reads them: `--log-format json` writes one JSON object per line, with
//! a line per request (request id, method, route template, status, latency) and one per
//! attempt end (task, queue, kind, attempt, outcome, duration); text written to a pipe
//! carries no colour codes.

use std::io::{BufRead, BufReader};
use std::process::ChildStderr;

use serde_json::{Value, json};

use crate::backend::{Backend, TestDatabase};
use crate::child::Server;

/// Every line the server wrote, once it has stopped (SIGTERM: lines are written by a log
/// thread of their own, and what it still holds is flushed at exit; a SIGKILL may lose the
/// last few).
fn lines_after_stop(server: Server, stderr: ChildStderr) -> Vec<String> {
    server.stop();
    BufReader::new(stderr)
        .lines()
        .map(|line| line.expect("a UTF-8 log line"))
        .collect()
}

/// With `--log-format json`, a submit that waits for its task leaves a request line and an
/// attempt line, both JSON with their fields; no task id or raw path stands in `route`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_have_a_line_per_request_and_per_attempt() {
    let database = TestDatabase::fresh(Backend::from_env()).await;
    let (server, stderr) = Server::start_logging(&database.url, &["--log-format", "json"]);
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{}/v1/tasks", server.base))
        .header("prefer", "wait=10")
        .json(&json!({ "kind": "echo", "input": { "n": 1 }, "queue": "logged" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let task: Value = response.json().await.unwrap();
    let id = task["id"].as_str().unwrap().to_owned();
    let status = client
        .get(format!("{}/v1/tasks/{id}", server.base))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);

    let lines = lines_after_stop(server, stderr);
    let objects: Vec<Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let submit = objects
        .iter()
        .find(|o| o["message"] == "request" && o["request_id"] == request_id.as_str())
        .unwrap_or_else(|| panic!("no request line for {request_id}: {lines:#?}"));
    assert_eq!(submit["method"], "POST");
    assert_eq!(submit["route"], "/v1/tasks");
    assert_eq!(submit["status"], 200);
    assert!(submit["latency_ms"].as_f64().is_some(), "{submit}");
    let read = objects
        .iter()
        // The harness's own GETs of /readyz (waiting for start-up) come first.
        .find(|o| o["message"] == "request" && o["method"] == "GET" && o["route"] != "/readyz")
        .expect("a line for the GET");
    assert_eq!(read["route"], "/v1/tasks/{id}");
    let attempt = objects
        .iter()
        .find(|o| o["message"] == "attempt ended" && o["task"] == id.as_str())
        .unwrap_or_else(|| panic!("no attempt line: {lines:#?}"));
    assert_eq!(attempt["queue"], "logged");
    assert_eq!(attempt["kind"], "echo");
    assert_eq!(attempt["attempt"], 1);
    assert_eq!(attempt["outcome"], "succeeded");
    assert!(attempt["duration_ms"].as_i64().is_some(), "{attempt}");
}

/// Text logs written to a pipe (a file, a journal) carry no ANSI colour codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_into_a_pipe_have_no_colour() {
    let database = TestDatabase::fresh(Backend::from_env()).await;
    let (server, stderr) = Server::start_logging(&database.url, &[]);
    let status = reqwest::get(format!("{}/healthz", server.base))
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let lines = lines_after_stop(server, stderr);
    assert!(
        lines.iter().any(|line| line.contains("/healthz")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().all(|line| !line.contains('\u{1b}')),
        "{lines:#?}"
    );
}
