//! `/v1/tasks`: submit, look up, await, fetch the result, cancel, list.
//! Each handler turns HTTP into one engine call and the answer back into HTTP.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::ApiError;
use super::extract::{Json, Query, TaskIdPath};
use super::{AppState, Route};
use crate::engine::Cancelled;
use crate::store::TaskFilter;
use crate::task::{Kind, NewTask, QueueName, Task, TaskId, TaskState};

/// The longest a `?wait=` long-poll may last, in seconds.
pub const MAX_WAIT_SECS: f64 = 60.0;
/// The page size of a listing when none is asked for, and the largest one allowed.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;

pub(super) fn routes() -> Vec<Route> {
    vec![
        Route::post("/v1/tasks", axum::routing::post(submit)),
        Route::get("/v1/tasks", axum::routing::get(list)),
        Route::get("/v1/tasks/{id}", axum::routing::get(get_task)).long_poll(),
        Route::get("/v1/tasks/{id}/result", axum::routing::get(result)),
        Route::post("/v1/tasks/{id}/cancel", axum::routing::post(cancel)),
    ]
}

/// The body of `POST /v1/tasks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitRequest {
    kind: String,
    #[serde(default = "empty_object")]
    input: Value,
    queue: Option<String>,
}

fn empty_object() -> Value {
    json!({})
}

impl SubmitRequest {
    fn parse(self) -> Result<NewTask, ApiError> {
        let invalid = |field: &str| {
            let field = field.to_owned();
            move |error: crate::task::NameError| ApiError::InvalidField {
                field,
                message: error.to_string(),
            }
        };
        Ok(NewTask {
            kind: Kind::parse(self.kind).map_err(invalid("kind"))?,
            queue: match self.queue {
                Some(queue) => QueueName::parse(queue).map_err(invalid("queue"))?,
                None => QueueName::default(),
            },
            input: self.input,
        })
    }
}

fn location(id: TaskId) -> HeaderValue {
    // A hyphenated UUID is always a valid header value.
    HeaderValue::from_str(&format!("/v1/tasks/{id}")).unwrap_or(HeaderValue::from_static("/"))
}

async fn submit(
    State(state): State<AppState>,
    Json(request): Json<SubmitRequest>,
) -> Result<Response, ApiError> {
    let task = state.engine.submit(request.parse()?).await?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location(task.id))],
        axum::Json(task),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
struct WaitQuery {
    /// Seconds to wait for the task to finish, 0 to 60.
    wait: Option<f64>,
}

async fn get_task(
    State(state): State<AppState>,
    TaskIdPath(id): TaskIdPath,
    Query(query): Query<WaitQuery>,
) -> Result<axum::Json<Task>, ApiError> {
    let wait = match query.wait {
        Some(secs) if secs.is_finite() && (0.0..=MAX_WAIT_SECS).contains(&secs) => {
            Duration::from_secs_f64(secs)
        }
        Some(_) => {
            return Err(ApiError::InvalidQuery(format!(
                "wait must be a number of seconds from 0 to {MAX_WAIT_SECS}"
            )));
        }
        None => Duration::ZERO,
    };
    Ok(axum::Json(state.engine.wait(id, wait).await?))
}

async fn result(
    State(state): State<AppState>,
    TaskIdPath(id): TaskIdPath,
) -> Result<Response, ApiError> {
    let task = state.engine.get(id).await?;
    match task.state {
        TaskState::Succeeded => Ok(axum::Json(task.result.unwrap_or_default()).into_response()),
        TaskState::Failed | TaskState::Cancelled => Err(ApiError::NoResult(task.state)),
        TaskState::Queued | TaskState::Running => Ok((
            StatusCode::ACCEPTED,
            [(header::RETRY_AFTER, HeaderValue::from_static("1"))],
            axum::Json(task),
        )
            .into_response()),
    }
}

async fn cancel(
    State(state): State<AppState>,
    TaskIdPath(id): TaskIdPath,
) -> Result<Response, ApiError> {
    Ok(match state.engine.cancel(id).await? {
        Cancelled::Now(task) => (StatusCode::OK, axum::Json(task)).into_response(),
        Cancelled::Requested(task) => (StatusCode::ACCEPTED, axum::Json(task)).into_response(),
    })
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    state: Option<String>,
    kind: Option<String>,
    queue: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

impl ListQuery {
    fn parse(self) -> Result<TaskFilter, ApiError> {
        let invalid = |name: &str, error: &dyn std::fmt::Display| {
            ApiError::InvalidQuery(format!("{name}: {error}"))
        };
        let limit = self.limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(invalid("limit", &format!("must be from 1 to {MAX_PAGE}")));
        }
        Ok(TaskFilter {
            state: self
                .state
                .map(|s| s.parse::<TaskState>())
                .transpose()
                .map_err(|e| invalid("state", &e))?,
            kind: self
                .kind
                .map(Kind::parse)
                .transpose()
                .map_err(|e| invalid("kind", &e))?,
            queue: self
                .queue
                .map(QueueName::parse)
                .transpose()
                .map_err(|e| invalid("queue", &e))?,
            before: self
                .cursor
                .map(|c| c.parse::<TaskId>())
                .transpose()
                .map_err(|e| invalid("cursor", &e))?,
            limit,
        })
    }
}

async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let filter = query.parse()?;
    let limit = filter.limit;
    let tasks = state.engine.list(filter).await?;
    // A full page may have a next one; its cursor is the last id of this page.
    let next_cursor = (tasks.len() == limit)
        .then(|| tasks.last().map(|task| task.id.to_string()))
        .flatten();
    Ok(axum::Json(
        json!({ "tasks": tasks, "next_cursor": next_cursor }),
    ))
}
