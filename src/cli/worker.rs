//! `taskd worker --url … --queue … -- COMMAND [ARGS…]`: a ready remote worker. It leases
//! tasks from a remote queue, runs COMMAND once per task with the task's input (JSON) on
//! stdin, and completes the task with the JSON COMMAND prints on stdout (or, if stdout is
//! not JSON, with it as a string). A non-zero exit fails the attempt (retryable). While the
//! command runs the worker heartbeats; a requested cancel or a lost lease kills it, and so
//! does the task's `timeout_ms` (the attempt then fails with `timeout`, retryable, as a local
//! handler's would).
//!
//! Environment of COMMAND: `TASKD_TASK_ID`, `TASKD_ATTEMPT`, `TASKD_KIND`, `TASKD_QUEUE`;
//! for a traced task also `TRACEPARENT` (the attempt's W3C context) and `TRACESTATE`, the
//! names OpenTelemetry reads a parent context from in a process's environment.

use std::process::Stdio;
use std::time::Duration;

use clap::Args;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::task::timeout_error;

/// The most bytes of stderr quoted in a failure message.
const STDERR_TAIL: usize = 2048;
/// How long the worker keeps retrying an unreachable server before it gives up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(300);
const RETRY_PAUSE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Args)]
pub struct WorkerConfig {
    /// The taskd server to lease from.
    #[arg(long, env = "TASKD_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// An API key with the `work` scope, sent as `Authorization: Bearer`; never printed.
    #[arg(long, env = "TASKD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The remote queue to serve.
    #[arg(long, env = "TASKD_QUEUE")]
    pub queue: String,
    /// Only tasks of these kinds (comma-separated); default: every kind.
    #[arg(long, env = "TASKD_KINDS", value_delimiter = ',')]
    pub kinds: Vec<String>,
    /// How many tasks this worker runs at once.
    #[arg(long, env = "TASKD_WORKER_CONCURRENCY", default_value_t = 1)]
    pub concurrency: usize,
    /// How long each lease lasts; renewed every third of it while the command runs.
    #[arg(long, env = "TASKD_WORKER_LEASE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub lease: Duration,
    /// This worker's name in the server's logs; default: `taskd-worker-<process id>`.
    #[arg(long, env = "TASKD_WORKER_ID")]
    pub worker_id: Option<String>,
    /// The command to run per task, and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Why the worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot reach {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("the API key holds characters a header cannot carry")]
    BadKey,
    #[error("cannot make an HTTP client: {0}")]
    Client(String),
    #[error("the server refused the lease: {status} {body}")]
    Refused { status: StatusCode, body: String },
}

struct Leased {
    id: String,
    lease: String,
    input: Value,
    attempt: u64,
    kind: String,
    /// How long the command may run; `None`: no limit.
    timeout_ms: Option<u64>,
    /// `TRACEPARENT` and `TRACESTATE` for the command, as the lease gave them.
    trace: Vec<(&'static str, String)>,
}

/// The HTTP client every request goes through, carrying the key (marked sensitive, so no
/// debug output shows it) when there is one.
fn client(api_key: Option<&str>) -> Result<Client, WorkerError> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = api_key {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|_| WorkerError::BadKey)?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Client::builder()
        .default_headers(headers)
        .build()
        .map_err(|source| WorkerError::Client(source.to_string()))
}

/// Runs until `shutdown` fires; running commands finish first.
pub async fn run(config: WorkerConfig, shutdown: CancellationToken) -> Result<(), WorkerError> {
    let client = client(config.api_key.as_deref())?;
    let worker_id = config
        .worker_id
        .clone()
        .unwrap_or_else(|| format!("taskd-worker-{}", std::process::id()));
    tracing::info!(
        url = %config.url,
        queue = %config.queue,
        command = ?config.command,
        concurrency = config.concurrency.max(1),
        worker_id = %worker_id,
        "taskd worker started"
    );
    let mut loops = tokio::task::JoinSet::new();
    for slot in 0..config.concurrency.max(1) {
        let (client, config, shutdown) = (client.clone(), config.clone(), shutdown.clone());
        let worker_id = format!("{worker_id}/{slot}");
        loops.spawn(async move { serve(&client, &config, &worker_id, &shutdown).await });
    }
    let mut outcome = Ok(());
    while let Some(joined) = loops.join_next().await {
        if let Ok(Err(error)) = joined {
            shutdown.cancel();
            outcome = Err(error);
        }
    }
    outcome
}

async fn serve(
    client: &Client,
    config: &WorkerConfig,
    worker_id: &str,
    shutdown: &CancellationToken,
) -> Result<(), WorkerError> {
    let base = config.url.trim_end_matches('/');
    let mut unreachable_since: Option<std::time::Instant> = None;
    while !shutdown.is_cancelled() {
        let mut request = json!({
            "worker_id": worker_id,
            "max_tasks": 1,
            "lease_ms": config.lease.as_millis() as u64,
            "wait_ms": 30_000,
        });
        if !config.kinds.is_empty() {
            request["kinds"] = json!(config.kinds);
        }
        let url = format!("{base}/v1/queues/{}/lease", config.queue);
        let response = tokio::select! {
            response = client.post(&url).json(&request).send() => response,
            () = shutdown.cancelled() => return Ok(()),
        };
        let response = match response {
            Ok(response) => {
                unreachable_since = None;
                response
            }
            // A restarting server is normal: retry with backoff, give up after a while.
            Err(source) => {
                let since = *unreachable_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > GIVE_UP_AFTER {
                    return Err(WorkerError::Unreachable { url, source });
                }
                tracing::warn!(%source, "cannot reach the server; retrying");
                tokio::select! {
                    () = tokio::time::sleep(RETRY_PAUSE) => continue,
                    () = shutdown.cancelled() => return Ok(()),
                }
            }
        };
        match response.status() {
            StatusCode::NO_CONTENT => continue,
            StatusCode::OK => {}
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            status => {
                let body = response.text().await.unwrap_or_default();
                return Err(WorkerError::Refused { status, body });
            }
        }
        let body: Value = response.json().await.unwrap_or_default();
        for task in body["tasks"].as_array().into_iter().flatten() {
            let leased = Leased {
                id: task["id"].as_str().unwrap_or_default().to_owned(),
                lease: task["lease"].as_str().unwrap_or_default().to_owned(),
                input: task["input"].clone(),
                attempt: task["attempt"].as_u64().unwrap_or(0),
                kind: task["kind"].as_str().unwrap_or_default().to_owned(),
                timeout_ms: task["timeout_ms"].as_u64(),
                trace: [("TRACEPARENT", "traceparent"), ("TRACESTATE", "tracestate")]
                    .into_iter()
                    .filter_map(|(var, field)| Some((var, task[field].as_str()?.to_owned())))
                    .collect(),
            };
            execute(client, base, config, leased).await;
        }
    }
    Ok(())
}

/// Runs the command for one task, heartbeating, and reports how it ended.
async fn execute(client: &Client, base: &str, config: &WorkerConfig, task: Leased) {
    let Some((program, args)) = config.command.split_first() else {
        return;
    };
    let spawned = Command::new(program)
        .args(args)
        .env("TASKD_TASK_ID", &task.id)
        .env("TASKD_ATTEMPT", task.attempt.to_string())
        .env("TASKD_KIND", &task.kind)
        .env("TASKD_QUEUE", &config.queue)
        .envs(task.trace.iter().map(|(var, value)| (*var, value)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group, so a cancel stops whatever the command started too.
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(error) => {
            let message = format!("cannot start `{program}`: {error}");
            report(client, base, &task, Err(("spawn_failed", message))).await;
            return;
        }
    };
    let group = child.id();
    if let Some(mut stdin) = child.stdin.take() {
        let input = task.input.to_string();
        // Written beside the wait, so a command that writes before it reads cannot deadlock;
        // one that does not read its input closes stdin early, which is its business.
        tokio::spawn(async move {
            let _ = stdin.write_all(input.as_bytes()).await;
        });
    }
    let beat_every = (config.lease / 3).max(Duration::from_millis(100));
    let output = child.wait_with_output();
    tokio::pin!(output);
    // Counted from the start of the command; the server also ends the attempt once it runs
    // past `started_at + timeout_ms`, whichever comes first.
    let time_limit = task.timeout_ms;
    let out_of_time = async move {
        match time_limit {
            Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(out_of_time);
    let finished = loop {
        tokio::select! {
            output = &mut output => break output,
            () = &mut out_of_time => {
                kill_group(group);
                let error = timeout_error(time_limit.unwrap_or_default());
                report(client, base, &task, Err(("timeout", error.message))).await;
                return;
            }
            () = tokio::time::sleep(beat_every) => {
                match heartbeat(client, base, config, &task).await {
                    Beat::Fine => {}
                    Beat::CancelRequested => {
                        kill_group(group);
                        report(client, base, &task, Err(("cancelled", "cancel requested".into()))).await;
                        return;
                    }
                    Beat::LeaseLost => {
                        kill_group(group);
                        return;
                    }
                }
            }
        }
    };
    let outcome = match finished {
        Ok(output) if output.status.success() => {
            let stdout = String::from_utf8_lossy(&output.stdout);
            Ok(serde_json::from_str(&stdout).unwrap_or_else(|_| json!(stdout.trim())))
        }
        Ok(output) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: String = stderr
                .chars()
                .rev()
                .take(STDERR_TAIL)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            Err(("exit_status", format!("{}: {}", output.status, tail.trim())))
        }
        Err(error) => Err(("io", error.to_string())),
    };
    report(client, base, &task, outcome).await;
}

/// Stops the command and everything it started (its process group).
fn kill_group(group: Option<u32>) {
    if let Some(pid) = group.and_then(|pid| i32::try_from(pid).ok()) {
        // SAFETY: killpg only sends a signal; a stale group id at worst reaches nothing.
        unsafe {
            libc::killpg(pid, libc::SIGKILL);
        }
    }
}

enum Beat {
    Fine,
    CancelRequested,
    LeaseLost,
}

async fn heartbeat(client: &Client, base: &str, config: &WorkerConfig, task: &Leased) -> Beat {
    let response = client
        .post(format!("{base}/v1/tasks/{}/heartbeat", task.id))
        .json(&json!({"lease": task.lease, "lease_ms": config.lease.as_millis() as u64}))
        .send()
        .await;
    match response {
        Ok(response) if response.status() == StatusCode::CONFLICT => Beat::LeaseLost,
        Ok(response) if response.status().is_success() => {
            let body: Value = response.json().await.unwrap_or_default();
            if body["cancel_requested"] == true {
                Beat::CancelRequested
            } else {
                Beat::Fine
            }
        }
        // A missed heartbeat is not fatal: the lease outlives two of them.
        _ => Beat::Fine,
    }
}

async fn report(
    client: &Client,
    base: &str,
    task: &Leased,
    outcome: Result<Value, (&str, String)>,
) {
    let (path, body) = match outcome {
        Ok(result) => ("complete", json!({"lease": task.lease, "result": result})),
        Err((error_type, message)) => (
            "fail",
            json!({"lease": task.lease, "error": {"type": error_type, "message": message},
                   "retryable": true}),
        ),
    };
    let url = format!("{base}/v1/tasks/{}/{path}", task.id);
    match client.post(&url).json(&body).send().await {
        Ok(response) if response.status().is_success() => {}
        Ok(response) => {
            tracing::warn!(id = %task.id, status = %response.status(), "report refused")
        }
        Err(error) => tracing::warn!(id = %task.id, %error, "cannot report; the lease will expire"),
    }
}
