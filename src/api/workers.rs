//! The remote worker protocol: lease (long-poll), heartbeat, complete, fail. Each call after
//! the lease names it; a stale lease answers 409 `lease_lost` and changes nothing.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{Json, TaskIdPath};
use super::{AppState, Route};
use crate::access::Scope;
use crate::task::{
    Kind, ParentOutcome, Progress, QueueName, Task, TaskError, now_millis, rfc3339_string,
};
use crate::traces::Tracer;

const MAX_TASKS: usize = 100;
const MIN_LEASE_MS: u64 = 1_000;
const MAX_LEASE_MS: u64 = 3_600_000;
const MAX_WAIT_MS: u64 = 60_000;

pub(super) fn routes() -> Vec<Route> {
    vec![
        Route::post("/v1/queues/{name}/lease", axum::routing::post(lease))
            .scope(Scope::Work)
            .long_poll(),
        Route::post("/v1/tasks/{id}/heartbeat", axum::routing::post(heartbeat)).scope(Scope::Work),
        Route::post("/v1/tasks/{id}/complete", axum::routing::post(complete)).scope(Scope::Work),
        Route::post("/v1/tasks/{id}/fail", axum::routing::post(fail)).scope(Scope::Work),
    ]
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidField {
        field: field.to_owned(),
        message: message.into(),
    }
}

fn within(field: &str, value: u64, min: u64, max: u64) -> Result<u64, ApiError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(invalid(
            field,
            format!("must be a whole number from {min} to {max}, got {value}"),
        ))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseRequest {
    worker_id: String,
    kinds: Option<Vec<String>>,
    #[serde(default = "one")]
    max_tasks: usize,
    #[serde(default = "default_lease_ms")]
    lease_ms: u64,
    #[serde(default)]
    wait_ms: u64,
}

fn one() -> usize {
    1
}

fn default_lease_ms() -> u64 {
    30_000
}

/// A leased task as served (`LeasedTask`): the task, plus what the worker needs to hold it.
#[derive(Debug, Serialize)]
struct LeasedTask {
    #[serde(flatten)]
    task: Task,
    lease: String,
    lease_expires_at: String,
    /// The attempt's W3C trace context, for the worker's own spans and requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    traceparent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tracestate: Option<String>,
    /// The outcomes of its parents (`after`), in order; empty without.
    parents: Vec<ParentOutcome>,
}

impl LeasedTask {
    /// `None` for a task without a lease, which a lease never hands out.
    fn new((task, parents): (Task, Vec<ParentOutcome>), tracer: &Tracer) -> Option<LeasedTask> {
        let lease = task.lease.clone()?;
        let trace = tracer.attempt_context(&task);
        Some(LeasedTask {
            task,
            lease: lease.token,
            lease_expires_at: rfc3339_string(lease.expires_at),
            traceparent: trace.as_ref().map(|t| t.parent.to_string()),
            tracestate: trace.and_then(|t| t.state),
            parents,
        })
    }
}

/// The answer of a lease that got tasks (`LeaseResponse`).
#[derive(Debug, Serialize)]
struct LeaseResponse {
    tasks: Vec<LeasedTask>,
}

/// The answer of a heartbeat (`HeartbeatResponse`).
#[derive(Debug, Serialize)]
struct HeartbeatResponse {
    cancel_requested: bool,
    lease_expires_at: String,
}

async fn lease(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(request): Json<LeaseRequest>,
) -> Result<Response, ApiError> {
    let queue =
        QueueName::parse(name).map_err(|e| ApiError::InvalidPath(format!("queue name: {e}")))?;
    if request.worker_id.is_empty() || request.worker_id.len() > 128 {
        return Err(invalid("worker_id", "1 to 128 characters"));
    }
    let max_tasks = within("max_tasks", request.max_tasks as u64, 1, MAX_TASKS as u64)? as usize;
    let lease_ms = within("lease_ms", request.lease_ms, MIN_LEASE_MS, MAX_LEASE_MS)?;
    let wait_ms = within("wait_ms", request.wait_ms, 0, MAX_WAIT_MS)?;
    if request.kinds.as_ref().is_some_and(Vec::is_empty) {
        return Err(invalid(
            "kinds",
            "leave it out for every kind, or name at least one",
        ));
    }
    let kinds = request
        .kinds
        .map(|kinds| {
            kinds
                .into_iter()
                .enumerate()
                .map(|(i, kind)| {
                    Kind::parse(kind).map_err(|e| invalid(&format!("kinds[{i}]"), e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let tasks = state
        .engine
        .lease(
            queue,
            kinds,
            max_tasks,
            Duration::from_millis(lease_ms),
            // Within the contract's 60 s, and cut to `--max-wait` like every long-poll, so a
            // proxy's read timeout above --max-wait covers it.
            Duration::from_millis(wait_ms).min(state.config.max_wait),
            &caller.queues,
        )
        .await?;
    tracing::debug!(worker = %request.worker_id, leased = tasks.len(), "lease");
    if tasks.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let tracer = state.engine.tracer();
    let tasks = tasks
        .into_iter()
        .filter_map(|task| LeasedTask::new(task, tracer))
        .collect();
    Ok(axum::Json(LeaseResponse { tasks }).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProgressReport {
    percent: f64,
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeartbeatRequest {
    lease: String,
    /// How long from now the lease should last (default 30 s).
    #[serde(default = "default_lease_ms")]
    lease_ms: u64,
    progress: Option<ProgressReport>,
}

async fn heartbeat(
    State(state): State<AppState>,
    caller: Caller,
    TaskIdPath(id): TaskIdPath,
    Json(request): Json<HeartbeatRequest>,
) -> Result<axum::Json<HeartbeatResponse>, ApiError> {
    let lease_ms = within("lease_ms", request.lease_ms, MIN_LEASE_MS, MAX_LEASE_MS)?;
    let progress = request
        .progress
        .map(|p| {
            if !(p.percent.is_finite() && (0.0..=100.0).contains(&p.percent)) {
                return Err(invalid(
                    "progress.percent",
                    format!("must be a number from 0 to 100, got {}", p.percent),
                ));
            }
            Ok(Progress {
                percent: Progress::tidy_percent(p.percent),
                message: p.message,
                at: now_millis(),
            })
        })
        .transpose()?;
    let beat = state
        .engine
        .heartbeat(
            id,
            &request.lease,
            Duration::from_millis(lease_ms),
            progress,
            &caller.queues,
        )
        .await?;
    Ok(axum::Json(HeartbeatResponse {
        cancel_requested: beat.cancel_requested,
        lease_expires_at: rfc3339_string(beat.lease_expires_at),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompleteRequest {
    lease: String,
    #[serde(default)]
    result: Value,
}

async fn complete(
    State(state): State<AppState>,
    caller: Caller,
    TaskIdPath(id): TaskIdPath,
    Json(request): Json<CompleteRequest>,
) -> Result<axum::Json<Task>, ApiError> {
    Ok(axum::Json(
        state
            .engine
            .complete(id, &request.lease, request.result, &caller.queues)
            .await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FailRequest {
    lease: String,
    error: TaskError,
    #[serde(default = "yes")]
    retryable: bool,
}

fn yes() -> bool {
    true
}

async fn fail(
    State(state): State<AppState>,
    caller: Caller,
    TaskIdPath(id): TaskIdPath,
    Json(request): Json<FailRequest>,
) -> Result<axum::Json<Task>, ApiError> {
    Ok(axum::Json(
        state
            .engine
            .fail(
                id,
                &request.lease,
                request.error,
                request.retryable,
                &caller.queues,
            )
            .await?,
    ))
}
