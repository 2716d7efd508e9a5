//! `/v1/tasks`: submit, look up, await, fetch the result, cancel, list.
//! Each handler turns HTTP into one engine call and the answer back into HTTP.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::auth::Caller;
use super::cursor::{Cursor, Filters};
use super::error::{ApiError, NoResult};
use super::extract::{Json, Query, TaskIdPath};
use super::proxy::Links;
use super::submit::{self, SubmitRequest};
use super::{AppState, Route};
use crate::access::{QueueScope, Scope};
use crate::engine::Cancelled;
use crate::store::TaskFilter;
use crate::task::{Kind, QueueName, Task, TaskId, TaskState, TraceContext, now_millis};

/// The page size of a listing when none is asked for, and the largest one allowed.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;

pub(super) fn routes() -> Vec<Route> {
    vec![
        Route::post("/v1/tasks", axum::routing::post(submit))
            .scope(Scope::Submit)
            .long_poll(),
        Route::post("/v1/tasks/batch", axum::routing::post(submit_batch)).scope(Scope::Submit),
        Route::get("/v1/tasks", axum::routing::get(list))
            .scope(Scope::Read)
            .query(&[
                "state", "kind", "queue", "label", "parent", "limit", "cursor",
            ]),
        Route::get("/v1/tasks/{id}", axum::routing::get(get_task))
            .scope(Scope::Read)
            .query(&["wait"])
            .long_poll(),
        Route::delete("/v1/tasks/{id}", axum::routing::delete(delete_task)).scope(Scope::Manage),
        Route::get("/v1/tasks/{id}/result", axum::routing::get(result)).scope(Scope::Read),
        Route::post("/v1/tasks/{id}/cancel", axum::routing::post(cancel)).scope(Scope::Manage),
        Route::post("/v1/tasks/{id}/retry", axum::routing::post(retry)).scope(Scope::Manage),
    ]
}

/// A `label=key:value` filter (of a listing or the firehose) as its key and value.
pub(super) fn label_filter(label: &str) -> Result<(String, String), &'static str> {
    label
        .split_once(':')
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .ok_or("expected key:value")
}

/// The most tasks one batch may hold.
const MAX_BATCH: usize = 1000;

/// The task's URL as the client reaches it (behind a proxy: with its prefix, or origin).
fn location(links: &Links, id: TaskId) -> HeaderValue {
    // A hyphenated UUID, a checked prefix and a checked origin make a valid header value.
    HeaderValue::from_str(&links.url(&format!("/v1/tasks/{id}")))
        .unwrap_or(HeaderValue::from_static("/"))
}

fn seconds(duration: Duration) -> HeaderValue {
    HeaderValue::from(duration.as_secs().max(1))
}

/// How long until a scheduled task is due (zero for any other).
fn until_due(task: &Task) -> Duration {
    let ms = task.run_at.map_or(0, |at| (at - now_millis()).max(0));
    Duration::from_millis(ms as u64)
}

async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    links: Links,
    headers: HeaderMap,
    Json(request): Json<SubmitRequest>,
) -> Result<Response, ApiError> {
    let span = submit::trace(state.engine.tracer(), &headers, "/v1/tasks");
    let answer = submit_one(&state, &caller, &links, &headers, request, span.context()).await;
    submit::end_trace(span, answer)
}

/// A submit of one task, stored under `trace`; answers with the task's id beside.
async fn submit_one(
    state: &AppState,
    caller: &Caller,
    links: &Links,
    headers: &HeaderMap,
    request: SubmitRequest,
    trace: Option<TraceContext>,
) -> Result<(Response, Vec<TaskId>), ApiError> {
    let idempotency = submit::idempotency(headers, &request)?;
    let mut task = request.parse(state.config.default_backoff)?;
    task.idempotency = idempotency;
    task.trace = trace;
    let wait = submit::preferred_wait(headers, state.config.max_wait);
    // Subscribed before the insert, so an end that comes before the answer is heard of, and
    // no read of the task is needed after it. Too many waiters: the plain 202 below.
    let waiter = wait.and_then(|_| {
        let id = TaskId::new();
        task.id = Some(id);
        state.engine.waiter(id).ok()
    });
    let inserted = state.engine.submit(task, &caller.queues).await?;
    let ids = vec![inserted.task.id];
    if inserted.replayed {
        let id = inserted.task.id;
        let mut response = (StatusCode::OK, axum::Json(inserted.task)).into_response();
        let headers = response.headers_mut();
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
        headers.insert(header::LOCATION, location(links, id));
        return Ok((response, ids));
    }
    let mut task = inserted.task;
    if let (Some(wait), Some(waiter)) = (wait, waiter) {
        // The task is stored: whatever the wait does, the answer must carry it. One that is
        // terminal as stored (a child whose parent failed) has nothing to wait for.
        let now = if task.state.is_terminal() {
            Ok(task.clone())
        } else {
            state
                .engine
                .wait_with(waiter, task.id, wait, &caller.queues)
                .await
        };
        if let Ok(now) = now {
            if now.state.is_terminal() {
                let applied = format!("wait={}", wait.as_secs_f64());
                let mut response = (StatusCode::OK, axum::Json(now)).into_response();
                let headers = response.headers_mut();
                headers.insert(header::LOCATION, location(links, task.id));
                if let Ok(applied) = HeaderValue::from_str(&applied) {
                    headers.insert("preference-applied", applied);
                }
                return Ok((response, ids));
            }
            task = now;
        }
    }
    // A delayed task starts no sooner than its time; then the queue ahead of it counts.
    let retry_after = until_due(&task)
        + state
            .engine
            .estimate_wait(&task.queue, inserted.waiting_before);
    let response = (
        StatusCode::ACCEPTED,
        [
            (header::LOCATION, location(links, task.id)),
            (header::RETRY_AFTER, seconds(retry_after)),
        ],
        axum::Json(task),
    )
        .into_response();
    Ok((response, ids))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    tasks: Vec<SubmitRequest>,
}

async fn submit_batch(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Json(request): Json<BatchRequest>,
) -> Result<Response, ApiError> {
    let span = submit::trace(state.engine.tracer(), &headers, "/v1/tasks/batch");
    let answer = submit_many(&state, &caller, request, span.context()).await;
    submit::end_trace(span, answer)
}

/// A batch, every task of it stored under `trace` (the headers are the whole request's).
async fn submit_many(
    state: &AppState,
    caller: &Caller,
    request: BatchRequest,
    trace: Option<TraceContext>,
) -> Result<(Response, Vec<TaskId>), ApiError> {
    if request.tasks.is_empty() || request.tasks.len() > MAX_BATCH {
        return Err(ApiError::InvalidField {
            field: "tasks".to_owned(),
            message: format!("a batch holds 1 to {MAX_BATCH} tasks"),
        });
    }
    let mut tasks = Vec::with_capacity(request.tasks.len());
    for (index, item) in request.tasks.into_iter().enumerate() {
        let in_item = |error| ApiError::InvalidBatchItem {
            index,
            error: Box::new(error),
        };
        let idempotency = submit::item_idempotency(&item).map_err(in_item)?;
        let mut task = item
            .parse_item(state.config.default_backoff, Some(index))
            .map_err(in_item)?;
        task.idempotency = idempotency;
        task.trace = trace.clone();
        tasks.push(task);
    }
    let inserted = state.engine.submit_batch(tasks, &caller.queues).await?;
    // Items whose key was used before answer with the task first stored under it.
    let replayed = inserted.iter().filter(|i| i.replayed).count();
    let tasks: Vec<Task> = inserted.into_iter().map(|i| i.task).collect();
    let ids = tasks.iter().map(|task| task.id).collect();
    let response = (
        StatusCode::ACCEPTED,
        axum::Json(json!({ "tasks": tasks, "replayed": replayed })),
    )
        .into_response();
    Ok((response, ids))
}

#[derive(Debug, Deserialize)]
struct WaitQuery {
    /// Seconds to wait for the task to finish; more than `--max-wait` waits that long.
    wait: Option<f64>,
}

async fn get_task(
    State(state): State<AppState>,
    caller: Caller,
    TaskIdPath(id): TaskIdPath,
    headers: HeaderMap,
    Query(query): Query<WaitQuery>,
) -> Result<Response, ApiError> {
    // Copied out, and the headers dropped, before the wait: their values share one buffer
    // with the request head as hyper read it (kilobytes), which a parked long-poll would
    // otherwise hold for as long as it waits.
    let validators = if_none_match(&headers);
    drop(headers);
    // Like `Prefer: wait` (and Google's and Consul's long-polls), a longer wait is cut to
    // the server's limit rather than refused: the client gets the task either way.
    let max = state.config.max_wait;
    let wait = match query.wait {
        Some(secs) if secs.is_finite() && secs >= 0.0 => {
            Duration::from_secs_f64(secs.min(max.as_secs_f64()))
        }
        Some(secs) => {
            return Err(ApiError::InvalidQuery(format!(
                "`wait`: must be a number of seconds, 0 or more (longer than {} waits that \
                 long), got {secs}",
                humantime::format_duration(max)
            )));
        }
        None => Duration::ZERO,
    };
    let task = state.engine.wait(id, wait, &caller.queues).await?;
    let body = serde_json::to_vec(&task).unwrap_or_default();
    // A strong validator of the representation: equal bytes, equal tag.
    let digest = Sha256::digest(&body);
    let etag = format!("\"{}\"", hex::encode(&digest[..12]));
    let unchanged = validators.iter().flat_map(|v| v.split(',')).any(|tag| {
        let tag = tag.trim();
        tag == "*" || tag.trim_start_matches("W/") == etag
    });
    let etag = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\""));
    if unchanged {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    Ok((
        [
            (header::ETAG, etag),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
        ],
        body,
    )
        .into_response())
}

/// The `If-None-Match` values of a request, as owned text.
fn if_none_match(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .collect()
}

async fn result(
    State(state): State<AppState>,
    caller: Caller,
    TaskIdPath(id): TaskIdPath,
) -> Result<Response, ApiError> {
    let task = state.engine.get(id, &caller.queues).await?;
    match task.state {
        TaskState::Succeeded => Ok(axum::Json(task.result.unwrap_or_default()).into_response()),
        TaskState::Failed | TaskState::Cancelled => Err(ApiError::NoResult(Box::new(NoResult {
            id: task.id,
            state: task.state,
            error: task.error,
        }))),
        TaskState::Waiting | TaskState::Scheduled | TaskState::Queued | TaskState::Running => {
            // A scheduled task has nothing to show before its time; anything else may end
            // any moment (a waiting one once its parents do).
            let retry_after = seconds(until_due(&task));
            Ok((
                StatusCode::ACCEPTED,
                [(header::RETRY_AFTER, retry_after)],
                axum::Json(task),
            )
                .into_response())
        }
    }
}

async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    TaskIdPath(id): TaskIdPath,
) -> Result<Response, ApiError> {
    Ok(match state.engine.cancel(id, &caller.queues).await? {
        Cancelled::Now(task) => (StatusCode::OK, axum::Json(task)).into_response(),
        Cancelled::Requested(task) => (StatusCode::ACCEPTED, axum::Json(task)).into_response(),
    })
}

async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    TaskIdPath(id): TaskIdPath,
) -> Result<axum::Json<Task>, ApiError> {
    Ok(axum::Json(state.engine.retry(id, &caller.queues).await?))
}

async fn delete_task(
    State(state): State<AppState>,
    caller: Caller,
    TaskIdPath(id): TaskIdPath,
) -> Result<StatusCode, ApiError> {
    state.engine.delete(id, &caller.queues).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    /// `key:value`
    label: Option<String>,
    /// A task id: only its children.
    parent: Option<String>,
    state: Option<String>,
    kind: Option<String>,
    queue: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

impl ListQuery {
    /// The filter to list with, and the filters to carry in the next page's cursor.
    fn parse(self) -> Result<(TaskFilter, Filters), ApiError> {
        let invalid = |name: &str, error: &dyn std::fmt::Display| {
            ApiError::InvalidQuery(format!("{name}: {error}"))
        };
        let limit = self.limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(invalid(
                "limit",
                &format!("must be a whole number from 1 to {MAX_PAGE}, got {limit}"),
            ));
        }
        let asked = Filters {
            state: self.state,
            kind: self.kind,
            queue: self.queue,
            label: self.label,
            parent: self.parent,
        };
        let (filters, before) = match self.cursor {
            None => (asked, None),
            Some(cursor) => {
                let cursor = Cursor::decode(&cursor).map_err(|e| invalid("cursor", &e))?;
                let before = cursor
                    .before
                    .parse::<TaskId>()
                    .map_err(|e| invalid("cursor", &e))?;
                let filters = asked
                    .continue_from(cursor.filters)
                    .map_err(|e| invalid("cursor", &e))?;
                (filters, Some(before))
            }
        };
        let filter = TaskFilter {
            state: filters
                .state
                .clone()
                .map(|s| s.parse::<TaskState>())
                .transpose()
                .map_err(|e| invalid("state", &e))?,
            kind: filters
                .kind
                .clone()
                .map(Kind::parse)
                .transpose()
                .map_err(|e| invalid("kind", &e))?,
            queue: filters
                .queue
                .clone()
                .map(QueueName::parse)
                .transpose()
                .map_err(|e| invalid("queue", &e))?,
            label: filters
                .label
                .as_deref()
                .map(label_filter)
                .transpose()
                .map_err(|e| invalid("label", &e))?,
            parent: filters
                .parent
                .as_deref()
                .map(str::parse::<TaskId>)
                .transpose()
                .map_err(|e| invalid("parent", &e))?,
            before,
            limit,
            // The engine narrows it to the caller's queues.
            queues: QueueScope::All,
        };
        Ok((filter, filters))
    }
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let (filter, filters) = query.parse()?;
    let limit = filter.limit;
    let tasks = state.engine.list(filter, &caller.queues).await?;
    // A full page may have a next one; its cursor is the last id of this page, with the
    // filters, so the next page lists the same tasks.
    let next_cursor = (tasks.len() == limit)
        .then(|| {
            tasks.last().map(|task| {
                Cursor {
                    before: task.id.to_string(),
                    filters,
                }
                .encode()
            })
        })
        .flatten();
    Ok(axum::Json(
        json!({ "tasks": tasks, "next_cursor": next_cursor }),
    ))
}
