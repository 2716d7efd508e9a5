//! Worker programs against a real server: `taskd worker` running a command per task, several
//! of them sharing a queue, the Python example, and the embedding example.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, max_overlap, spawn_app};
use crate::workers::make_remote;

/// A child process, killed when dropped.
pub(crate) struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn taskd_worker(app: &TestApp, queue: &str, command: &[&str]) -> Process {
    let child = Command::new(env!("CARGO_BIN_EXE_taskd"))
        .args([
            "worker", "--url", &app.base, "--queue", queue, "--lease", "3s", "--",
        ])
        .args(command)
        .env("TASKD_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("taskd worker starts");
    Process(child)
}

/// `taskd worker` runs a shell command per task: input on stdin, JSON stdout as the
/// result, a non-zero exit as a failed attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taskd_worker_runs_a_command_per_task() {
    let app = spawn_app().await;
    make_remote(&app, "shell").await;
    make_remote(&app, "broken").await;
    let _ok = taskd_worker(
        &app,
        "shell",
        &[
            "sh",
            "-c",
            "read input; printf '{\"got\": %s, \"attempt\": %s}' \"$input\" \"$TASKD_ATTEMPT\"",
        ],
    );
    let _broken = taskd_worker(&app, "broken", &["sh", "-c", "echo oops >&2; exit 3"]);
    let mut ids = Vec::new();
    for n in 0..3 {
        let task = app
            .submit(json!({"kind": "shell", "input": {"n": n}, "queue": "shell"}))
            .await;
        ids.push(task["id"].as_str().unwrap().to_owned());
    }
    for (n, id) in ids.iter().enumerate() {
        let done = app.wait_terminal(id).await;
        assert_eq!(done["state"], "succeeded", "{done}");
        assert_eq!(done["result"], json!({"got": {"n": n}, "attempt": 1}));
    }
    let failing = app
        .submit(json!({"kind": "shell", "queue": "broken", "max_attempts": 1}))
        .await;
    let done = app.wait_terminal(failing["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "failed");
    assert_eq!(done["error"]["type"], "exit_status");
    assert!(done["error"]["message"].as_str().unwrap().contains("oops"));
}

/// `taskd worker` stops a command that outlives the task's `timeout_ms`: each attempt fails
/// with a retryable `timeout`, and the worker goes on to the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taskd_worker_times_out_a_command() {
    let app = spawn_app().await;
    make_remote(&app, "slow").await;
    let _worker = taskd_worker(&app, "slow", &["sleep", "600"]);
    let task = app
        .submit(
            json!({"kind": "sleep", "queue": "slow", "timeout_ms": 300, "max_attempts": 2,
                       "backoff": {"base_ms": 10, "cap_ms": 10}}),
        )
        .await;
    let done = app.wait_terminal(task["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["attempt"], 2, "timeouts are retryable");
    assert_eq!(done["error"]["type"], "timeout");
    let types: Vec<&Value> = done["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["type"])
        .collect();
    assert_eq!(types, [&json!("timeout"), &json!("timeout")]);
}

/// Five `taskd worker` processes drain ten one-second tasks five at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_worker_processes_share_a_queue() {
    let app = spawn_app().await;
    make_remote(&app, "pool").await;
    let _workers: Vec<Process> = (0..5)
        .map(|_| taskd_worker(&app, "pool", &["sh", "-c", "sleep 1; echo '\"done\"'"]))
        .collect();
    let mut ids = Vec::new();
    for _ in 0..10 {
        let task = app.submit(json!({"kind": "nap", "queue": "pool"})).await;
        ids.push(task["id"].as_str().unwrap().to_owned());
    }
    let mut done = Vec::new();
    for id in &ids {
        let task = app.wait_terminal(id).await;
        assert_eq!(task["result"], "done");
        done.push(task);
    }
    let most = max_overlap(&done);
    assert!(most <= 5, "five workers run at most five at once: {most}");
    assert!(most >= 2, "the workers run side by side: {most}");
}

/// The Python example (standard library only) serves a remote queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_is_a_worker() {
    let app = spawn_app().await;
    make_remote(&app, "py").await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/worker.py");
    let _python = Process(
        Command::new("python3")
            .arg(script)
            .args(["--url", &app.base, "--queue", "py"])
            .spawn()
            .expect("python3 runs"),
    );
    let sum = app
        .submit(json!({"kind": "sum", "input": {"numbers": [1, 2, 3.5]}, "queue": "py"}))
        .await;
    let echo = app
        .submit(json!({"kind": "echo", "input": "hi", "queue": "py"}))
        .await;
    let sum = app.wait_terminal(sum["id"].as_str().unwrap()).await;
    assert_eq!(sum["result"], json!({"sum": 6.5, "worker": "python"}));
    let echo = app.wait_terminal(echo["id"].as_str().unwrap()).await;
    assert_eq!(echo["result"], json!({"echo": "hi", "worker": "python"}));
}

/// The embedding example compiles (cargo builds examples for tests) and serves its own
/// kind, `resize`, through the same API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_example_serves_a_custom_kind() {
    // Tests run from target/<profile>/deps; examples are built into target/<profile>/examples.
    let deps = std::env::current_exe().unwrap();
    let binary = deps
        .parent()
        .and_then(|d| d.parent())
        .map(|profile| profile.join("examples").join("embedded"))
        .unwrap();
    if !binary.exists() {
        // `cargo test` builds examples; a filtered `cargo test --test it` does not.
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--example", "embedded"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(status.success(), "the embedded example builds");
    }
    assert!(binary.exists(), "{} is built", binary.display());
    let mut child = Command::new(binary)
        .env("TASKD_LISTEN", "127.0.0.1:0")
        .env("TASKD_DATABASE", "sqlite::memory:")
        .env("TASKD_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _child = Process(child);
    let base = line
        .trim()
        .strip_prefix("embedded taskd listening on ")
        .unwrap()
        .to_owned();
    // Bound is not started: 503 `starting` until its store is open.
    let readyz = format!("{base}/readyz");
    crate::helpers::wait_for("the embedded taskd to start", || async {
        crate::helpers::past_startup(&readyz).await.then_some(())
    })
    .await;
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{base}/v1/tasks"))
        .header("prefer", "wait=20")
        .json(&json!({"kind": "resize", "input": {"width": 640, "height": 480}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let task: Value = response.json().await.unwrap();
    assert_eq!(task["result"]["pixels"], 307_200);
    let kinds: Value = client
        .get(format!("{base}/v1/kinds"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: HashSet<&str> = kinds["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kind"].as_str().unwrap())
        .collect();
    assert!(names.contains("resize") && names.contains("echo"));
    let bad = client
        .post(format!("{base}/v1/tasks"))
        .json(&json!({"kind": "resize", "input": {"width": "wide"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

/// With keys in force, `taskd worker --api-key` leases with a `work` key and finishes the
/// queue's tasks: the key goes with every request it makes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taskd_worker_sends_its_api_key() {
    let app = spawn_app().await;
    make_remote(&app, "keyed").await;
    let admin = crate::auth::keyed(&crate::auth::key(&app, "admin", "admin", "").await);
    let work = crate::auth::key(&app, "worker", "work", "keyed").await;
    // A server that had no key notices the first within its key cache's lifetime.
    crate::helpers::wait_for("keys to be in force", || async {
        (app.get("/v1/queues").await.status() == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    let child = Command::new(env!("CARGO_BIN_EXE_taskd"))
        .args([
            "worker", "--url", &app.base, "--queue", "keyed", "--lease", "3s",
        ])
        .args(["--api-key", &work, "--", "sh", "-c", "cat"])
        .env("TASKD_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("taskd worker starts");
    let _worker = Process(child);
    let submitted: Value = admin
        .post(app.url("/v1/tasks"))
        .json(&json!({"kind": "copy", "queue": "keyed", "input": {"n": 7}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = submitted["id"].as_str().unwrap().to_owned();
    let url = app.url(&format!("/v1/tasks/{id}?wait=5"));
    let done: Value = crate::helpers::wait_for("the keyed worker to finish the task", || async {
        let now: Value = admin
            .get(url.clone())
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (now["state"] != "queued" && now["state"] != "running").then_some(now)
    })
    .await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"], json!({"n": 7}));
}
