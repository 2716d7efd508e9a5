//! Test helpers: a real server on an ephemeral port with its own database, and waits with
//! deadlines (never sleep-and-hope).

use std::future::Future;
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::Value;
use taskd::config::ServeConfig;
use taskd::handlers::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, TestDatabase};

/// How long any wait in a test may take before the test fails. Generous: a loaded 2-core
/// machine is slow, and a deadline only bounds how long a broken test hangs.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub struct TestApp {
    pub base: String,
    /// Every answer it receives is held against openapi.yaml (see `contract`).
    pub client: CheckedClient,
    pub database_url: String,
    shutdown: CancellationToken,
    server: Option<JoinHandle<()>>,
    // Keeps the database (a SQLite file's directory, a PostgreSQL database) for the test.
    _database: Option<TestDatabase>,
}

/// A server with test-friendly defaults on a fresh database: a SQLite file, or a PostgreSQL
/// database with `TASKD_TEST_BACKEND=postgres` (see `backend`).
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A server whose configuration `adjust` changed first.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut ServeConfig)) -> TestApp {
    let database = TestDatabase::fresh(Backend::from_env()).await;
    let mut app = spawn_app_on(&database.url, adjust).await;
    app._database = Some(database);
    app
}

/// A server on an existing database (a restart), configured by `adjust`. It is bound first,
/// so `adjust` finds the server's own address in `config.listen`.
pub async fn spawn_app_on(database_url: &str, adjust: impl FnOnce(&mut ServeConfig)) -> TestApp {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mut config = ServeConfig::defaults().expect("the TASKD_* environment parses");
    config.listen = listener.local_addr().expect("address");
    config.database.url = database_url.to_owned();
    config.workers = 4;
    config.shutdown_grace = Duration::from_secs(5);
    adjust(&mut config);
    let database_url = config.database.url.clone();
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let readyz = format!("{base}{}/readyz", config.base_path.as_str());
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let server = tokio::spawn(async move {
        taskd::app::run(listener, config, Registry::builtin(), async move {
            stop.cancelled().await
        })
        .await
        .expect("the server runs");
    });
    let app = TestApp {
        base,
        client: CheckedClient(Client::new()),
        database_url,
        shutdown,
        server: Some(server),
        _database: None,
    };
    app.started(&readyz).await;
    app
}

impl TestApp {
    /// Waits until the server is past start-up (the socket answers from the start, 503
    /// `starting` until the store is open; see `startup.rs`).
    async fn started(&self, readyz: &str) {
        wait_for("the server to start", || async {
            if self.server.as_ref().is_none_or(JoinHandle::is_finished) {
                panic!("the server stopped while starting");
            }
            past_startup(readyz).await.then_some(())
        })
        .await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST")
    }

    /// Submits a task and returns the 202's body.
    pub async fn submit(&self, body: Value) -> Value {
        let response = self.post_json("/v1/tasks", &body).await;
        assert_eq!(response.status(), StatusCode::ACCEPTED, "submit {body}");
        response.json().await.expect("a task")
    }

    pub async fn task(&self, id: &str) -> Value {
        let response = self.get(&format!("/v1/tasks/{id}")).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("a task")
    }

    /// Long-polls until the task is terminal; fails the test past the deadline.
    pub async fn wait_terminal(&self, id: &str) -> Value {
        wait_for("a terminal state", || async {
            let task = self.task_waiting(id, 10).await;
            is_terminal(&task).then_some(task)
        })
        .await
    }

    pub async fn task_waiting(&self, id: &str, secs: u32) -> Value {
        let response = self.get(&format!("/v1/tasks/{id}?wait={secs}")).await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.expect("a task")
    }

    /// Polls until the task is in `state`.
    pub async fn wait_state(&self, id: &str, state: &str) -> Value {
        wait_for(state, || async {
            let task = self.task(id).await;
            (task["state"] == state).then_some(task)
        })
        .await
    }

    /// Signals shutdown and waits for the server to stop.
    pub async fn stop(&mut self) {
        self.begin_stop();
        self.join().await;
    }

    /// Signals shutdown without waiting for it.
    pub fn begin_stop(&self) {
        self.shutdown.cancel();
    }

    /// Waits for the server to stop.
    pub async fn join(&mut self) {
        if let Some(server) = self.server.take() {
            tokio::time::timeout(DEADLINE, server)
                .await
                .expect("the server stops in time")
                .expect("the server task ends cleanly");
        }
    }
}

impl TestApp {
    /// Takes the database this server keeps, so it outlives the server (a restart by hand).
    pub fn take_database(&mut self) -> Option<TestDatabase> {
        self._database.take()
    }

    /// Stops this server and starts another on the same database, which stays.
    pub async fn restart(mut self, adjust: impl FnOnce(&mut ServeConfig)) -> TestApp {
        self.stop().await;
        let mut next = spawn_app_on(&self.database_url, adjust).await;
        next._database = self._database.take();
        next
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A `reqwest::Client` whose every answer is checked against the contract before the test
/// sees it: its status and content type are documented for the operation, and a JSON body
/// fits the documented schema. An event stream is handed over unread.
#[derive(Clone)]
pub struct CheckedClient(pub Client);

impl CheckedClient {
    pub fn get(&self, url: impl AsRef<str>) -> CheckedRequest {
        self.request(Method::GET, url)
    }

    pub fn post(&self, url: impl AsRef<str>) -> CheckedRequest {
        self.request(Method::POST, url)
    }

    pub fn patch(&self, url: impl AsRef<str>) -> CheckedRequest {
        self.request(Method::PATCH, url)
    }

    pub fn put(&self, url: impl AsRef<str>) -> CheckedRequest {
        self.request(Method::PUT, url)
    }

    pub fn delete(&self, url: impl AsRef<str>) -> CheckedRequest {
        self.request(Method::DELETE, url)
    }

    pub fn request(&self, method: Method, url: impl AsRef<str>) -> CheckedRequest {
        CheckedRequest {
            method: method.clone(),
            inner: self.0.request(method, url.as_ref()),
        }
    }
}

/// A request of a [`CheckedClient`]; `send` checks the answer.
pub struct CheckedRequest {
    method: Method,
    inner: reqwest::RequestBuilder,
}

impl CheckedRequest {
    pub fn header<K, V>(self, key: K, value: V) -> CheckedRequest
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<axum::http::Error>,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<axum::http::Error>,
    {
        self.map(|inner| inner.header(key, value))
    }

    pub fn json<T: serde::Serialize + ?Sized>(self, body: &T) -> CheckedRequest {
        self.map(|inner| inner.json(body))
    }

    pub fn body(self, body: impl Into<reqwest::Body>) -> CheckedRequest {
        self.map(|inner| inner.body(body))
    }

    pub fn timeout(self, timeout: Duration) -> CheckedRequest {
        self.map(|inner| inner.timeout(timeout))
    }

    fn map(self, f: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder) -> Self {
        CheckedRequest {
            method: self.method,
            inner: f(self.inner),
        }
    }

    /// Sends the request; a non-stream answer is read whole, checked, and handed back as a
    /// response with the same status, headers and body.
    pub async fn send(self) -> reqwest::Result<Response> {
        let response = self.inner.send().await?;
        let media_type = media_type(response.headers());
        if media_type == "text/event-stream" {
            return Ok(response);
        }
        let (status, url, headers) = (
            response.status(),
            response.url().clone(),
            response.headers().clone(),
        );
        let body = response.bytes().await?;
        crate::contract::check_answer(self.method.as_str(), url.path(), status, &media_type, &body);
        let mut rebuilt = axum::http::Response::new(body);
        *rebuilt.status_mut() = status;
        *rebuilt.headers_mut() = headers;
        Ok(Response::from(rebuilt))
    }
}

/// The media type of a response, without parameters.
pub fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map_or("", str::trim)
        .to_owned()
}

pub fn is_terminal(task: &Value) -> bool {
    matches!(
        task["state"].as_str(),
        Some("succeeded" | "failed" | "cancelled")
    )
}

/// Whether the server whose `/readyz` is at `readyz` is past start-up: it answers, and not
/// 503 `starting` (it may be not ready for another reason, such as a full disk).
pub async fn past_startup(readyz: &str) -> bool {
    let Ok(response) = Client::new().get(readyz).send().await else {
        return false;
    };
    let starting = response.status() == StatusCode::SERVICE_UNAVAILABLE
        && response
            .json::<Value>()
            .await
            .is_ok_and(|problem| problem["code"] == "starting");
    !starting
}

/// Retries `probe` until it yields a value; panics with `what` past the deadline.
pub async fn wait_for<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts a problem+json answer with this status and code; returns the document.
#[track_caller]
pub fn assert_problem(status: StatusCode, content_type: &str, body: &Value, want: (u16, &str)) {
    assert_eq!(status.as_u16(), want.0, "status; body {body}");
    assert_eq!(content_type, "application/problem+json", "content type");
    assert_eq!(body["code"], want.1, "code; body {body}");
    assert_eq!(body["status"], want.0, "status field");
}

/// Reads a response as a problem, checking status, content type and code.
pub async fn expect_problem(response: Response, status: u16, code: &str) -> Value {
    let got = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body: Value = response.json().await.expect("a JSON problem");
    assert_problem(got, &content_type, &body, (status, code));
    body
}

/// Changes a queue's settings; asserts 200 and returns the queue.
pub async fn patch_queue(app: &TestApp, name: &str, body: Value) -> Value {
    let response = app
        .client
        .patch(app.url(&format!("/v1/queues/{name}")))
        .json(&body)
        .send()
        .await
        .expect("PATCH");
    assert_eq!(response.status(), StatusCode::OK, "PATCH /v1/queues/{name}");
    response.json().await.expect("a queue")
}

/// Pauses `queue` and submits `count` echo tasks into it in one batch: tasks that wait until
/// the queue is resumed. Returns their ids, in order.
pub async fn park_echo_tasks(app: &TestApp, queue: &str, count: usize) -> Vec<String> {
    patch_queue(app, queue, serde_json::json!({"paused": true})).await;
    let tasks: Vec<Value> = (0..count)
        .map(|n| serde_json::json!({"kind": "echo", "input": n, "queue": queue}))
        .collect();
    let response = app
        .post_json("/v1/tasks/batch", &serde_json::json!({ "tasks": tasks }))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let batch: Value = response.json().await.expect("a batch");
    batch["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|task| task["id"].as_str().expect("an id").to_owned())
        .collect()
}

/// The most `[started_at, finished_at)` intervals of these tasks that overlap at one instant:
/// how many ran at once, at most.
pub fn max_overlap(tasks: &[Value]) -> usize {
    let intervals: Vec<(i64, i64)> = tasks
        .iter()
        .map(|task| (millis(task, "started_at"), millis(task, "finished_at")))
        .collect();
    intervals
        .iter()
        .map(|&(start, _)| {
            intervals
                .iter()
                .filter(|&&(s, f)| s <= start && start < f)
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// Parses an RFC 3339 timestamp field into milliseconds since the epoch.
pub fn millis(task: &Value, field: &str) -> i64 {
    let text = task[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {task}"));
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{field}: {e}"))
        .timestamp_millis()
}

/// Sends SIGTERM to `child` and waits for it to exit, at most [`DEADLINE`]; `false` if it is
/// still running then (the caller decides: insist with SIGKILL, or fail).
pub fn terminate(child: &mut std::process::Child) -> bool {
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill(2) on our own child's pid, which is not reaped before the wait below.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let start = Instant::now();
    while matches!(child.try_wait(), Ok(None)) {
        if start.elapsed() > DEADLINE {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}
