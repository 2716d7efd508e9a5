//! The client subcommands (`taskd submit`, `get`, `wait`, `watch`, `bulk`…) as a user runs
//! them: the real binary as a child process, against a real server, over HTTP. Exit codes,
//! `--json` output, the server's problem+json in error messages, plain lines into a pipe and
//! progress bars under a pseudo-terminal, and a bulk run that survives being killed.

use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::helpers::{DEADLINE, TestApp, patch_queue, spawn_app, wait_for};

/// What one run of the CLI left behind.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Each stdout line as JSON (the `--json` output).
    #[track_caller]
    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect()
    }
}

/// The CLI pointed at `app`, with no key and no stray `TASKD_*` settings.
fn cli(app: &TestApp, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_taskd"));
    command
        .args(args)
        .env("TASKD_URL", &app.base)
        .env_remove("TASKD_API_KEY")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs the CLI to its end (within the deadline).
async fn taskd(app: &TestApp, args: &[&str]) -> Run {
    let output = tokio::time::timeout(DEADLINE, cli(app, args).output())
        .await
        .expect("the CLI ends in time")
        .expect("the CLI runs");
    Run {
        code: output.status.code().expect("an exit code, not a signal"),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
    }
}

/// `submit --wait --json` answers the finished task; plain `submit` prints the id, which
/// `get` and `result` then show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_get_and_result() {
    let app = spawn_app().await;
    let run = taskd(
        &app,
        &[
            "submit",
            "echo",
            "--input",
            r#"{"a":1}"#,
            "--label",
            "team=ops",
            "--wait",
            "--json",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let task = &run.json_lines()[0];
    assert_eq!(task["state"], "succeeded");
    assert_eq!(task["result"], json!({"a": 1}));
    assert_eq!(task["labels"], json!({"team": "ops"}));

    let run = taskd(&app, &["submit", "echo", "--input", "[1,2]"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let id = run.stdout.trim().to_owned();
    app.wait_terminal(&id).await;
    let run = taskd(&app, &["get", &id]).await;
    assert_eq!(run.code, 0);
    assert!(
        run.stdout.contains("succeeded") && run.stdout.contains(&id),
        "{}",
        run.stdout
    );
    let run = taskd(&app, &["get", &id, "--json"]).await;
    assert_eq!(run.json_lines()[0]["id"], id.as_str());
    let run = taskd(&app, &["result", &id, "--json"]).await;
    assert_eq!((run.code, run.json_lines()[0].clone()), (0, json!([1, 2])));
}

/// `wait` exits 0 when every task succeeded, 1 when one failed, 124 when its timeout ran out
/// first; `result` of a failed task exits 1 with the task's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_exit_codes() {
    let app = spawn_app().await;
    let ok = app.submit(json!({"kind": "echo"})).await;
    let failing = app
        .submit(json!({"kind": "fail", "max_attempts": 1, "input": {"message": "boom"}}))
        .await;
    patch_queue(&app, "held", json!({"paused": true})).await;
    let held = app.submit(json!({"kind": "echo", "queue": "held"})).await;
    let [ok, failing, held] = [&ok, &failing, &held].map(|t| t["id"].as_str().unwrap().to_owned());

    let run = taskd(&app, &["wait", &ok]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = taskd(&app, &["wait", &ok, &failing]).await;
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("failed"), "{}", run.stdout);
    let run = taskd(&app, &["wait", &ok, &held, "--timeout", "0.5", "--json"]).await;
    assert_eq!(run.code, 124, "{}", run.stderr);
    assert_eq!(run.json_lines()[1]["state"], "queued");
    let run = taskd(
        &app,
        &["submit", "echo", "--queue", "held", "--wait", "0.5"],
    )
    .await;
    assert_eq!(run.code, 124, "{}", run.stderr);

    let run = taskd(&app, &["result", &failing]).await;
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("boom"), "{}", run.stderr);
    let run = taskd(&app, &["result", &held]).await;
    assert_eq!(run.code, 124, "not finished: {}", run.stderr);
}

/// `list` filters by label and follows cursors with `--all`; `--json` prints each page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_and_pages() {
    let app = spawn_app().await;
    for i in 0..3 {
        app.submit(json!({"kind": "echo", "input": i, "labels": {"batch": "x"}}))
            .await;
    }
    app.submit(json!({"kind": "echo"})).await;
    let run = taskd(
        &app,
        &[
            "list", "--label", "batch=x", "--limit", "2", "--all", "--json",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let pages = run.json_lines();
    assert_eq!(pages.len(), 2, "two pages of 2 and 1");
    let listed: usize = pages
        .iter()
        .map(|page| page["tasks"].as_array().unwrap().len())
        .sum();
    assert_eq!(listed, 3);

    let run = taskd(&app, &["list", "--label", "batch=x", "--limit", "2"]).await;
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines.len() == 3,
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("--cursor"),
        "a hint at the next page: {}",
        run.stderr
    );
}

/// `cancel` and `retry` move tasks and print them; an unknown id exits 2 with the server's
/// problem; `queue --pause/--resume` and `queues` show and change a queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_retry_and_queues() {
    let app = spawn_app().await;
    let run = taskd(&app, &["queue", "held", "--pause", "--json"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json_lines()[0]["paused"], true);
    let task = app.submit(json!({"kind": "echo", "queue": "held"})).await;
    let id = task["id"].as_str().unwrap();

    let run = taskd(&app, &["cancel", id, "--json"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json_lines()[0]["state"], "cancelled");
    let run = taskd(&app, &["retry", id]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("queued"), "{}", run.stdout);
    let missing = "0190a6c1-0000-7000-8000-000000000000";
    let run = taskd(&app, &["cancel", missing, id]).await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("task_not_found"), "{}", run.stderr);
    assert!(
        run.stdout.contains("cancelled"),
        "the other id was still cancelled"
    );

    let run = taskd(&app, &["queues"]).await;
    let held = run.stdout.lines().find(|l| l.starts_with("held")).unwrap();
    assert!(held.contains("true"), "paused: {}", run.stdout);
    let run = taskd(
        &app,
        &["queue", "held", "--resume", "--concurrency", "2", "--json"],
    )
    .await;
    let queue = &run.json_lines()[0];
    assert_eq!(
        (queue["paused"].clone(), queue["concurrency"].clone()),
        (json!(false), json!(2))
    );
}

/// Errors show the server's problem+json (title, code, detail, field errors), and an
/// unreachable server is named by its URL; a usage error exits 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_show_the_problem_not_rust_types() {
    let app = spawn_app().await;
    let run = taskd(&app, &["get", "0190a6c1-0000-7000-8000-000000000000"]).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains(
            "Not Found (404 task_not_found): task 0190a6c1-0000-7000-8000-000000000000 not found"
        ),
        "{}",
        run.stderr
    );
    let run = taskd(&app, &["submit", "sleep", "--input", r#"{"ms":"soon"}"#]).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("(422 invalid_input): `input.ms`: must be a whole number"),
        "{}",
        run.stderr
    );
    let run = taskd(&app, &["submit", "echo", "--input", "{not json"]).await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("is not JSON"), "{}", run.stderr);
    let run = taskd(&app, &["get", "x", "--url", "http://127.0.0.1:1"]).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("cannot reach the taskd server at http://127.0.0.1:1"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("reqwest"), "{}", run.stderr);
    let run = taskd(&app, &["wait"]).await;
    assert_eq!(run.code, 2, "clap's usage error");

    // A refused bulk line is named by its line in the file, not its index in the batch.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.ndjson");
    std::fs::write(&file, "{\"kind\":\"echo\"}\n\n{\"kind\":\"nope\"}\n").unwrap();
    let run = taskd(&app, &["bulk", file.to_str().unwrap(), "--batch-size", "1"]).await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("line 3 was refused"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("\n  item 0: kind: no kind `nope` is registered"),
        "{}",
        run.stderr
    );
    std::fs::write(&file, "{\"kind\":\"echo\"}\n[1]\n").unwrap();
    let run = taskd(&app, &["bulk", file.to_str().unwrap()]).await;
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("line 2: expected a JSON object"),
        "{}",
        run.stderr
    );
}

/// `watch ID` into a pipe prints a plain line per change, sees the task finish and exits 0;
/// `watch --queue` follows a queue's new tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_plain_lines_into_a_pipe() {
    let app = spawn_app().await;
    patch_queue(&app, "held", json!({"paused": true})).await;
    let task = app.submit(json!({"kind": "echo", "queue": "held"})).await;
    let id = task["id"].as_str().unwrap();
    let mut child = cli(&app, &["watch", id])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = next_line(&mut lines).await;
    assert!(first.contains(id) && first.contains("queued"), "{first}");
    patch_queue(&app, "held", json!({"paused": false})).await;
    let mut seen = vec![first];
    while let Some(line) = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .unwrap()
        .unwrap()
    {
        seen.push(line);
    }
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0), "{seen:?}");
    assert!(seen.last().unwrap().contains("succeeded"), "{seen:?}");
    assert!(
        seen.iter().all(|l| !l.contains('\u{1b}')),
        "no terminal codes: {seen:?}"
    );

    let mut child = cli(&app, &["watch", "--queue", "watched"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The stream opens some time after the spawn: submit until one of its tasks shows up.
    let started = std::time::Instant::now();
    let line = loop {
        app.submit(json!({"kind": "echo", "queue": "watched"}))
            .await;
        let read = tokio::time::timeout(std::time::Duration::from_millis(200), lines.next_line());
        if let Ok(line) = read.await {
            break line.unwrap().expect("watch --queue runs until stopped");
        }
        assert!(started.elapsed() < DEADLINE, "no line from watch --queue");
    };
    assert!(line.contains("echo"), "{line}");
    child.kill().await.unwrap();
}

async fn next_line(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> String {
    tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .expect("a line in time")
        .unwrap()
        .expect("a line before the end")
}

/// `completions` prints a script for each shell.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_for_each_shell() {
    let app = spawn_app().await;
    for shell in ["bash", "zsh", "fish"] {
        let run = taskd(&app, &["completions", shell]).await;
        assert_eq!(run.code, 0, "{shell}: {}", run.stderr);
        assert!(
            run.stdout.contains("submit") && run.stdout.contains("bulk"),
            "{shell}"
        );
    }
}

/// Under a pseudo-terminal (`script`), `bulk` draws a progress bar and `watch` a bar for
/// a running task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bars_are_drawn_on_a_terminal() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tasks.ndjson");
    std::fs::write(&file, "{\"kind\":\"echo\"}\n".repeat(50)).unwrap();
    let bulk = format!("{} bulk {}", env!("CARGO_BIN_EXE_taskd"), file.display());
    let run = under_pty(&app, &bulk).await;
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(run.stdout.contains('█'), "a full bar: {}", run.stdout);
    assert!(
        run.stdout.contains("50 tasks: 50 submitted"),
        "{}",
        run.stdout
    );

    // A long task, watched until its bar shows progress, then cancelled: however slowly the
    // watch starts, the task is still running when it connects.
    let task = app
        .submit(json!({"kind": "sleep", "input": {"ms": 60_000}}))
        .await;
    let id = task["id"].as_str().unwrap();
    let watch = format!("{} watch {id}", env!("CARGO_BIN_EXE_taskd"));
    let mut child = pty(&app, &watch).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let bar_drawn = |seen: &[u8]| String::from_utf8_lossy(seen).contains(BAR_CHARS);
    while !bar_drawn(&seen) {
        let mut chunk = [0u8; 4096];
        let read = tokio::time::timeout(DEADLINE, stdout.read(&mut chunk)).await;
        let n = read.expect("a bar in time").unwrap();
        assert!(
            n > 0,
            "watch ended first: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&chunk[..n]);
    }
    app.post_json(&format!("/v1/tasks/{id}/cancel"), &json!({}))
        .await;
    stdout.read_to_end(&mut seen).await.unwrap();
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(1), "a cancelled task exits 1");
    assert!(String::from_utf8_lossy(&seen).contains("cancelled"));
}

/// What a bar of `taskd watch` or `bulk` is drawn with (whole and partial cells).
const BAR_CHARS: &[char] = &['█', '▉', '▊', '▋', '▌', '▍', '▎', '▏'];

/// A command line under `script`, which gives it a pseudo-terminal (of 120 columns: one
/// made without a terminal on stdin has no size); its output is what the terminal received.
fn pty(app: &TestApp, command_line: &str) -> Command {
    let command_line = format!("stty cols 120 rows 40; exec {command_line}");
    let mut command = Command::new("script");
    command
        .args(["-qec", &command_line, "/dev/null"])
        .env("TASKD_URL", &app.base)
        .env("TERM", "xterm-256color")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs a command line under a pseudo-terminal to its end.
async fn under_pty(app: &TestApp, command_line: &str) -> Run {
    let output = tokio::time::timeout(DEADLINE, pty(app, command_line).output())
        .await
        .expect("script ends in time")
        .expect("`script` (util-linux) is installed");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `bulk` of 10,000 lines, killed half-way and run again, leaves exactly 10,000 tasks: the
/// queue is paused and limited to 5,000 waiting tasks, so the first run stores ten batches
/// and then waits on 429s until it is killed; the second run replays those and stores the
/// rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_survives_an_interruption() {
    let app = spawn_app().await;
    patch_queue(&app, "bulk", json!({"paused": true, "max_queued": 5000})).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tasks.ndjson");
    let lines: String = (0..10_000)
        .map(|i| format!("{{\"kind\":\"echo\",\"queue\":\"bulk\",\"input\":{i}}}\n"))
        .collect();
    std::fs::write(&file, lines).unwrap();
    let file = file.to_str().unwrap();

    let mut first: Child = cli(&app, &["bulk", file])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("half of the tasks stored", || async {
        (queued(&app).await >= 5000).then_some(())
    })
    .await;
    first.kill().await.unwrap();
    assert_eq!(queued(&app).await, 5000, "the first run stopped half-way");

    patch_queue(&app, "bulk", json!({"max_queued": null})).await;
    let run = taskd(&app, &["bulk", file, "--json"]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let summary = &run.json_lines()[0];
    assert_eq!(summary["submitted"], 5000, "{summary}");
    assert_eq!(summary["replayed"], 5000, "{summary}");
    assert_eq!(queued(&app).await, 10_000);

    // Another file (one line more) is another run: its keys do not meet the first file's.
    let mut lines = std::fs::read_to_string(file).unwrap();
    lines.push_str("{\"kind\":\"echo\",\"queue\":\"bulk\",\"input\":10000}\n");
    let other = dir.path().join("more.ndjson");
    std::fs::write(&other, lines).unwrap();
    let run = taskd(&app, &["bulk", other.to_str().unwrap(), "--json"]).await;
    assert_eq!(run.json_lines()[0]["submitted"], 10_001);
}

/// How many tasks wait in the `bulk` queue.
async fn queued(app: &TestApp) -> u64 {
    let queue: Value = app.get("/v1/queues/bulk").await.json().await.unwrap();
    queue["counts"]["queued"].as_u64().unwrap_or(0)
}

/// The API key goes as a bearer token from `--api-key` or `TASKD_API_KEY`, and is never
/// printed: not in errors, not in `--help`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_is_sent_and_never_printed() {
    let app = spawn_app().await;
    let secret = crate::auth::key(&app, "reader", "read", "*").await;
    let run = taskd(&app, &["list"]).await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("401"), "{}", run.stderr);
    let run = taskd(&app, &["list", "--api-key", &secret]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = taskd(&app, &["submit", "echo", "--api-key", &secret]).await;
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("403"), "{}", run.stderr);
    let output = cli(&app, &["submit", "--help"])
        .env("TASKD_API_KEY", &secret)
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    let printed = format!(
        "{run_out}{run_err}{help}",
        run_out = run.stdout,
        run_err = run.stderr,
        help = String::from_utf8_lossy(&output.stdout)
    );
    assert!(
        printed.contains("TASKD_API_KEY"),
        "the help names the variable"
    );
    assert!(
        !printed.contains(&secret),
        "the secret was printed: {printed}"
    );
}
