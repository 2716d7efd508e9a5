//! `GET /metrics`: the page is valid Prometheus text (checked by `promtool`), its counters
//! move as tasks run, it needs the `read` scope, and `--metrics-listen` serves it without keys.
//!
//! Counters are process-wide and the tests of this binary share one process, so each test
//! uses a queue of its own (exact counts) or asserts that a shared series grew.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use reqwest::StatusCode;
use serde_json::json;
use taskd::access::QueueScope;
use taskd::engine::{NewKey, create_key};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

/// The page, scraped without a key (no key exists: the server serves open on loopback).
async fn scrape(app: &TestApp) -> String {
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    response.text().await.unwrap()
}

/// The sum of the samples of `name` whose labels include every one of `labels`; 0 if none.
pub(crate) fn sample(page: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            let wanted = metric == name
                && labels
                    .iter()
                    .all(|(key, value)| rest.contains(&format!("{key}=\"{value}\"")));
            wanted.then(|| value.parse::<f64>().expect("a number"))
        })
        .sum()
}

/// Runs `promtool ARGS` with `stdin` as its input. Without promtool the test fails: CI
/// installs it (`.ci/run`), and so must a developer (`apt-get install prometheus`).
pub fn promtool(args: &[&str], stdin: &str) -> Output {
    let child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) => panic!(
            "promtool is needed to check metrics and could not be started ({error}): \
             install it with `apt-get install -y prometheus`"
        ),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Fails unless `promtool check metrics` accepts the page.
#[track_caller]
fn assert_promtool_accepts(page: &str) {
    let output = promtool(&["check", "metrics"], page);
    assert!(
        output.status.success(),
        "promtool rejects the page: {}{}\n--- page ---\n{page}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

/// Echo tasks run: the page parses as Prometheus text, the submitted, started and succeeded
/// counters of their queue count them, the request counter by route template grew, and the
/// queue's depth gauges are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_as_tasks_run_and_the_page_parses() {
    let app = spawn_app().await;
    let queue = "metrics-counters";
    // The first scrape comes after the tasks ran: this server's depth gauges are read then
    // and kept for 5 s.
    let submits_route = [
        ("method", "POST"),
        ("route", "/v1/tasks"),
        ("status", "202"),
    ];
    let mut ids = Vec::new();
    for n in 0..3 {
        let task = app
            .submit(json!({"kind": "echo", "input": {"n": n}, "queue": queue}))
            .await;
        ids.push(task["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        assert_eq!(app.wait_terminal(id).await["state"], "succeeded");
    }
    let page = scrape(&app).await;
    assert_promtool_accepts(&page);
    let mine = [("queue", queue), ("kind", "echo")];
    assert_eq!(sample(&page, "taskd_tasks_submitted_total", &mine), 3.0);
    assert_eq!(sample(&page, "taskd_attempts_started_total", &mine), 3.0);
    let succeeded = [("queue", queue), ("outcome", "succeeded")];
    assert_eq!(sample(&page, "taskd_attempts_ended_total", &succeeded), 3.0);
    assert_eq!(
        sample(&page, "taskd_attempt_run_seconds_count", &succeeded),
        3.0
    );
    assert_eq!(
        sample(
            &page,
            "taskd_task_queue_wait_seconds_count",
            &[("queue", queue)]
        ),
        3.0
    );
    // Process-wide, and other tests submit too: at least this test's three.
    let submits = sample(&page, "taskd_http_requests_total", &submits_route);
    assert!(submits >= 3.0, "POST /v1/tasks counted {submits}");
    // The route template, never the raw path.
    assert!(page.contains(r#"route="/v1/tasks/{id}""#), "{page}");
    assert!(!page.contains(&ids[0]), "a task id in a label");
    assert!(
        page.contains(&format!(
            r#"taskd_tasks{{queue="{queue}",state="queued"}} 0"#
        )),
        "{page}"
    );
    assert!(page.contains("taskd_open_connections"), "{page}");
}

/// Each way an attempt ends is counted under its outcome: retried, then succeeded; failed;
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_are_counted_by_outcome() {
    let app = spawn_app().await;
    let queue = "metrics-outcomes";
    let quick = json!({"base_ms": 20, "cap_ms": 100});
    let submissions = [
        json!({"kind": "fail", "input": {"times": 2}, "backoff": quick, "queue": queue}),
        json!({"kind": "fail", "max_attempts": 1, "queue": queue}),
        json!({"kind": "sleep", "input": {"ms": 60_000}, "timeout_ms": 100,
               "max_attempts": 1, "queue": queue}),
    ];
    for body in submissions {
        let task = app.submit(body).await;
        app.wait_terminal(task["id"].as_str().unwrap()).await;
    }
    let page = scrape(&app).await;
    let ended = |outcome| {
        sample(
            &page,
            "taskd_attempts_ended_total",
            &[("queue", queue), ("outcome", outcome)],
        )
    };
    assert_eq!(ended("retried"), 2.0, "{page}");
    assert_eq!(ended("succeeded"), 1.0, "{page}");
    assert_eq!(ended("failed"), 1.0, "{page}");
    assert_eq!(ended("timeout"), 1.0, "{page}");
    let finished = sample(&page, "taskd_task_total_seconds_count", &[("queue", queue)]);
    assert_eq!(finished, 3.0, "{page}");
}

/// Creates a key with `scopes` in the app's database; returns its secret.
async fn key(app: &TestApp, scopes: &str) -> String {
    // The server answers once it has migrated: only then does the keys table exist.
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    let store = taskd::store::open(&app.database_url).await.unwrap();
    let new = NewKey {
        name: format!("metrics-{scopes}"),
        scopes: scopes.parse().unwrap(),
        queues: QueueScope::All,
        expires_at: None,
    };
    create_key(store.as_ref(), new).await.unwrap().0
}

/// Once a key exists, `/metrics` answers 401 without one and serves a `read` key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_read_scope() {
    let app = spawn_app().await;
    let secret = key(&app, "read").await;
    assert_eq!(app.get("/metrics").await.status(), StatusCode::UNAUTHORIZED);
    let response = app
        .client
        .get(app.url("/metrics"))
        .header("authorization", format!("Bearer {secret}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.text().await.unwrap().contains("taskd_"));
}

/// `--metrics-listen` serves the page on its own address, without a key even when keys exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_serves_without_keys() {
    // A free port: bound, read, released (a tiny race with other binds, as any test port).
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let app = spawn_app_with(|config| config.metrics_listen = Some(address)).await;
    key(&app, "admin").await;
    assert_eq!(app.get("/metrics").await.status(), StatusCode::UNAUTHORIZED);
    let response = reqwest::get(format!("http://{address}/metrics"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let page = response.text().await.unwrap();
    assert!(page.contains("# TYPE taskd_tasks gauge"), "{page}");
}
