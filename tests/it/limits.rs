//! The serving limits, through real TCP sockets: header, body and idle timeouts close what
//! stalls while long-polls and event streams go on; the connection cap makes clients wait,
//! not fail; the body-memory budget answers 503 before a body is read.
//!
//! Timeouts are short (1 s) so the tests are quick, but nothing asserts a speed: a closed
//! connection is awaited with the suite's generous deadline.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use taskd::api::MEMORY_PER_BODY_BYTE;

use crate::helpers::{DEADLINE, TestApp, expect_problem, patch_queue, spawn_app_with, wait_for};

const SHORT: Duration = Duration::from_secs(1);

async fn connect(app: &TestApp) -> TcpStream {
    let address = app.base.trim_start_matches("http://");
    TcpStream::connect(address).await.expect("connect")
}

/// Reads until the server closes the connection; fails the test past the deadline.
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let read = async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .expect("the server closes the connection in time");
    String::from_utf8_lossy(&received).into_owned()
}

/// Reads one whole response (head and a `Content-Length` body) from a kept-alive connection.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let read = async {
        let mut buffer = [0u8; 4096];
        loop {
            let n = stream.read(&mut buffer).await.expect("read");
            assert!(n > 0, "the connection closed mid-response");
            received.extend_from_slice(&buffer[..n]);
            let text = String::from_utf8_lossy(&received);
            if let Some(end) = text.find("\r\n\r\n") {
                let length: usize =
                    header(&text, "content-length").map_or(0, |v| v.parse().unwrap());
                if received.len() >= end + 4 + length {
                    return;
                }
            }
        }
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .expect("a response in time");
    String::from_utf8_lossy(&received).into_owned()
}

/// A header's value in a raw response, by its lower-case name.
fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    response.split("\r\n").find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

fn status(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("a status line in {response:?}"))
}

fn problem_body(response: &str) -> Value {
    let (_, body) = response.split_once("\r\n\r\n").expect("a body");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("a JSON problem ({e}): {response}"))
}

/// A head dripped a byte at a time never completes; the connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_head_is_closed() {
    let app = spawn_app_with(|config| config.header_timeout = SHORT).await;
    let mut stream = connect(&app).await;
    let (mut reader, mut writer) = stream.split();
    // A byte every 200 ms: each is progress, none completes the head.
    let drip = async {
        let mut next: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Drip: ";
        while writer.write_all(next).await.is_ok() {
            next = b"x";
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let closed = async {
        let mut buffer = [0u8; 1024];
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(DEADLINE, async {
        tokio::select! {
            () = drip => {}, // A write fails once the server has closed.
            () = closed => {},
        }
    })
    .await
    .expect("the server closes the slowloris connection in time");
}

/// A submit whose body never completes answers 408 problem+json, though `POST /v1/tasks`
/// is exempt from the request timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_completes_gets_408() {
    let app = spawn_app_with(|config| config.body_timeout = SHORT).await;
    let mut stream = connect(&app).await;
    stream
        .write_all(
            b"POST /v1/tasks HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"kind\":",
        )
        .await
        .unwrap();
    let response = read_until_closed(&mut stream).await;
    assert_eq!(status(&response), 408, "{response}");
    assert_eq!(
        header(&response, "content-type"),
        Some("application/problem+json")
    );
    assert_eq!(problem_body(&response)["code"], "body_timeout");
}

/// A keep-alive connection with nothing in flight is closed after the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    let app = spawn_app_with(|config| config.idle_timeout = SHORT).await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let response = read_response(&mut stream).await;
    assert_eq!(status(&response), 200, "{response}");
    // Kept alive after its answer, then closed for idling.
    let rest = read_until_closed(&mut stream).await;
    assert_eq!(rest, "", "nothing more is sent");
}

/// A long-poll that outlasts the idle and header timeouts is not idle: it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_outlasts_the_idle_timeout() {
    let app = spawn_app_with(|config| {
        config.idle_timeout = SHORT;
        config.header_timeout = SHORT;
    })
    .await;
    let task = app
        .submit(json!({"kind": "sleep", "input": {"ms": 3000}}))
        .await;
    let id = task["id"].as_str().unwrap();
    let done = app.task_waiting(id, 30).await;
    assert_eq!(done["state"], "succeeded");
}

/// An event stream that outlasts the idle and header timeouts is not idle: it delivers
/// to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_outlasts_the_idle_timeout() {
    let app = spawn_app_with(|config| {
        config.idle_timeout = SHORT;
        config.header_timeout = SHORT;
    })
    .await;
    let task = app
        .submit(json!({"kind": "sleep", "input": {"ms": 3000}}))
        .await;
    let id = task["id"].as_str().unwrap();
    let response = app.get(&format!("/v1/tasks/{id}/events")).await;
    assert_eq!(response.status(), StatusCode::OK);
    // The stream ends after the task's terminal event.
    let stream = tokio::time::timeout(DEADLINE, response.text())
        .await
        .expect("the stream ends in time")
        .expect("the stream is read to its end");
    assert!(stream.contains("\"succeeded\""), "{stream}");
}

/// Opens a connection and completes one request on it, so the server has surely accepted
/// it; the connection then stays open, silent.
async fn held_connection(app: &TestApp) -> TcpStream {
    let mut stream = connect(app).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(status(&read_response(&mut stream).await), 200);
    stream
}

/// With the cap reached, existing connections are still served and a new client waits;
/// once the held connections close, it is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_connections_a_client_waits_and_is_then_served() {
    let app = spawn_app_with(|config| config.max_connections = Some(4)).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(held_connection(&app).await);
    }
    let mut late = connect(&app).await;
    late.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let late = tokio::spawn(async move { read_response(&mut late).await });
    // An existing client is served while the cap holds the new one back.
    held[0]
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(status(&read_response(&mut held[0]).await), 200);
    assert!(
        !late.is_finished(),
        "the fifth client was served over the cap"
    );
    drop(held);
    let response = late.await.expect("the late client");
    assert_eq!(status(&response), 200, "{response}");
}

/// The body budget of these tests: room for 64 KiB of bodies, each counted with the memory
/// that its request takes besides its bytes.
const BODY_BUDGET: usize = 64 * 1024 * MEMORY_PER_BODY_BYTE as usize;

/// With the body budget taken by a body still arriving, a request whose Content-Length
/// does not fit gets 503 with Retry-After; a small one goes through; once the slow body
/// is gone, the large one fits again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_body_memory_budget_a_request_gets_503() {
    let app = spawn_app_with(|config| config.max_body_memory = BODY_BUDGET).await;
    // A body of 40 KiB (of the 64) that arrives only in part. `Expect: 100-continue` makes
    // the server say when it starts reading the body: by then the share is reserved.
    let mut slow = connect(&app).await;
    slow.write_all(
        b"POST /v1/tasks HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
          Content-Length: 40960\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buffer = [0u8; 64];
    let n = tokio::time::timeout(DEADLINE, slow.read(&mut buffer))
        .await
        .expect("an interim answer in time")
        .unwrap();
    let interim = String::from_utf8_lossy(&buffer[..n]);
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    slow.write_all(b"{\"kind\": \"echo\", \"input\": \"")
        .await
        .unwrap();

    let large = json!({"kind": "echo", "input": {"filler": "x".repeat(30 * 1024)}});
    let refused = app.post_json("/v1/tasks", &large).await;
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    // Its body unread, the refused request's connection closes: the answer says so.
    assert_eq!(refused.headers()["connection"], "close");
    expect_problem(refused, 503, "body_memory_full").await;

    app.submit(json!({"kind": "echo", "input": {"small": true}}))
        .await;

    drop(slow);
    wait_for("the slow body's share to return", || async {
        let response = app.post_json("/v1/tasks", &large).await;
        (response.status() == StatusCode::ACCEPTED).then_some(())
    })
    .await;
}

/// A request keeps its share of the body budget until its answer is sent, not only while
/// its body is read: a submit waiting with `Prefer: wait` for its task (in a paused queue)
/// holds it, so a large submit meanwhile gets 503, and fits once the first one is answered.
/// A body is counted as parsed too: in the room left, 10 KiB of text fit, 10 KiB of numbers
/// (`[0,0,…]`, 32 bytes or more each once parsed) do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_holds_its_body_memory_until_it_is_answered() {
    let app = spawn_app_with(|config| config.max_body_memory = BODY_BUDGET).await;
    patch_queue(&app, "held", json!({"paused": true})).await;
    let waiting =
        json!({"kind": "echo", "queue": "held", "input": {"filler": "x".repeat(40 * 1024)}});
    let request = app
        .client
        .post(app.url("/v1/tasks"))
        .header("prefer", "wait=60")
        .json(&waiting);
    let answer = tokio::spawn(async move { request.send().await.expect("the waiting submit") });
    wait_for("the waiting submit to be stored", || async {
        let listed: Value = app.get("/v1/tasks?queue=held").await.json().await.unwrap();
        (listed["tasks"].as_array().map_or(0, Vec::len) == 1).then_some(())
    })
    .await;

    let large = json!({"kind": "echo", "input": {"filler": "x".repeat(30 * 1024)}});
    expect_problem(
        app.post_json("/v1/tasks", &large).await,
        503,
        "body_memory_full",
    )
    .await;
    // 10 KiB fit in what is left as text, but not as 5,000 numbers once parsed.
    app.submit(json!({"kind": "echo", "input": "x".repeat(10 * 1024)}))
        .await;
    let numbers = json!({"kind": "echo", "input": vec![0; 5 * 1024]});
    expect_problem(
        app.post_json("/v1/tasks", &numbers).await,
        503,
        "body_memory_full",
    )
    .await;

    patch_queue(&app, "held", json!({"paused": false})).await;
    let answered = answer.await.expect("the waiting submit's task");
    assert_eq!(answered.status(), StatusCode::OK, "answered once finished");
    app.submit(large).await;
}
