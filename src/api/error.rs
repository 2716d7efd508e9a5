//! The API's one error type: every failure a client can see, its status and its stable code,
//! rendered as RFC 9457 `application/problem+json`. Internal causes are logged, not returned.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::codes::ErrorCode;
use crate::access::Scope;
use crate::engine::{EngineError, StateRule};
use crate::store::StoreError;
use crate::task::{TaskError, TaskId, TaskState};

pub const PROBLEM_JSON: &str = "application/problem+json";

/// The `Retry-After` of a write refused for space: no estimate exists of when an operator
/// frees some, so a pace that keeps a waiting client's retries cheap.
const STORAGE_FULL_RETRY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the body must be JSON (content-type: application/json)")]
    UnsupportedMediaType,
    #[error("the body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("`{field}`: {message}")]
    InvalidField { field: String, message: String },
    #[error("{0}")]
    InvalidTaskId(String),
    #[error("{0}")]
    InvalidPath(String),
    #[error("{0}")]
    InvalidHeader(String),
    /// One item of a batch is invalid; nothing of the batch was stored.
    #[error("tasks[{index}]: {error}")]
    InvalidBatchItem { index: usize, error: Box<ApiError> },
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// `/result` of a task that ended without one.
    #[error("{0}")]
    NoResult(Box<NoResult>),
    #[error("the server is not ready")]
    NotReady,
    /// Before the store is open, migrated and recovered.
    #[error("the server is starting: its database is being opened and migrated; try again shortly")]
    Starting,
    /// The body did not arrive whole within `--body-timeout`.
    #[error("the body did not arrive within {}", humantime::format_duration(*.0))]
    BodyTimeout(Duration),
    /// The bodies being read already take `--max-body-memory`.
    #[error("too many request bodies are being read; try again shortly")]
    BodyMemoryFull,
    #[error("no route for this path")]
    RouteNotFound,
    /// No key, or one that is unknown, expired or revoked (401).
    #[error("{0}")]
    Unauthenticated(String),
    /// A valid key without the route's scope (403).
    #[error("the API key `{key}` lacks the `{scope}` scope this route needs")]
    MissingScope { key: String, scope: Scope },
    /// The `Host` is not one this server answers to (421).
    #[error("this server does not answer to the host `{0}` (see --allowed-hosts)")]
    HostNotAllowed(String),
}

/// The code of an engine error: the one place engine outcomes meet the table of codes.
fn engine_code(error: &EngineError) -> ErrorCode {
    match error {
        EngineError::NotFound(_) => ErrorCode::TaskNotFound,
        EngineError::UnknownKind(_) => ErrorCode::UnknownKind,
        EngineError::InvalidInput(_) => ErrorCode::InvalidInput,
        EngineError::InvalidItem { error, .. } => engine_code(error),
        EngineError::IdempotencyConflict(_) => ErrorCode::IdempotencyKeyReused,
        EngineError::UnknownParent { .. } => ErrorCode::UnknownParent,
        EngineError::QueueFull { .. } => ErrorCode::QueueFull,
        EngineError::TooManyWaiters => ErrorCode::TooManyWaiters,
        EngineError::ScheduleNotFound(_) => ErrorCode::ScheduleNotFound,
        EngineError::InvalidSchedule(_) => ErrorCode::InvalidRequest,
        EngineError::WrongState { rule, .. } => match rule {
            StateRule::CancelFinished => ErrorCode::TaskFinished,
            StateRule::RetryNotEnded => ErrorCode::TaskNotRetryable,
            StateRule::DeleteNotFinished => ErrorCode::TaskNotFinished,
            StateRule::DeleteHasDependents => ErrorCode::TaskHasDependents,
            StateRule::LeaseLost => ErrorCode::LeaseLost,
        },
        EngineError::NotRemote(_) => ErrorCode::QueueNotRemote,
        EngineError::QueueForbidden(_) => ErrorCode::QueueForbidden,
        EngineError::Draining => ErrorCode::Draining,
        EngineError::Store(StoreError::Closed) => ErrorCode::Unavailable,
        EngineError::Store(StoreError::StorageFull(_)) => ErrorCode::StorageFull,
        EngineError::Store(_) => ErrorCode::Internal,
    }
}

/// The field at fault in an engine error, for 422s.
fn engine_field(error: &EngineError) -> Option<(String, String)> {
    match error {
        EngineError::InvalidInput(invalid) => {
            Some((invalid.field.clone(), invalid.message.clone()))
        }
        EngineError::UnknownKind(kind) => {
            Some(("kind".to_owned(), format!("no kind `{kind}` is registered")))
        }
        EngineError::InvalidItem { error, .. } => engine_field(error),
        EngineError::UnknownParent { field, id } => {
            Some((field.clone(), format!("no task has the id {id}")))
        }
        EngineError::InvalidSchedule(why) => Some(("cron".to_owned(), why.clone())),
        EngineError::QueueForbidden(queue) => Some((
            "queue".to_owned(),
            format!("this key may not use queue `{queue}`"),
        )),
        _ => None,
    }
}

/// A task that ended without a result, and why: a failed task says its error.
#[derive(Debug)]
pub struct NoResult {
    pub id: TaskId,
    pub state: TaskState,
    pub error: Option<TaskError>,
}

impl std::fmt::Display for NoResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "task {} {} and has no result",
            self.id,
            self.state.described()
        )?;
        match &self.error {
            Some(error) => write!(f, "; its error ({}): {}", error.error_type, error.message),
            None => Ok(()),
        }
    }
}

impl ApiError {
    /// The status, derived from the code's row in the table.
    pub fn status_code(&self) -> StatusCode {
        self.code().status()
    }

    /// The stable, machine-readable code clients branch on.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::Engine(error) => engine_code(error),
            ApiError::MalformedJson(_) => ErrorCode::MalformedJson,
            ApiError::UnsupportedMediaType => ErrorCode::UnsupportedMediaType,
            ApiError::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            ApiError::InvalidField { .. } => ErrorCode::InvalidRequest,
            ApiError::InvalidTaskId(_) => ErrorCode::InvalidTaskId,
            ApiError::InvalidPath(_) => ErrorCode::InvalidPath,
            ApiError::InvalidHeader(_) => ErrorCode::InvalidHeader,
            ApiError::InvalidBatchItem { error, .. } => error.code(),
            ApiError::InvalidQuery(_) => ErrorCode::InvalidQuery,
            ApiError::NoResult(ended) if ended.state == TaskState::Cancelled => {
                ErrorCode::TaskCancelled
            }
            ApiError::NoResult(_) => ErrorCode::TaskFailed,
            ApiError::NotReady => ErrorCode::NotReady,
            ApiError::Starting => ErrorCode::Starting,
            ApiError::BodyTimeout(_) => ErrorCode::BodyTimeout,
            ApiError::BodyMemoryFull => ErrorCode::BodyMemoryFull,
            ApiError::RouteNotFound => ErrorCode::RouteNotFound,
            ApiError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            ApiError::MissingScope { .. } => ErrorCode::MissingScope,
            ApiError::HostNotAllowed(_) => ErrorCode::HostNotAllowed,
        }
    }

    /// The field at fault, for 422s.
    fn field(&self) -> Option<(String, String)> {
        match self {
            ApiError::InvalidField { field, message } => Some((field.clone(), message.clone())),
            ApiError::InvalidBatchItem { error, .. } => error.field(),
            ApiError::Engine(error) => engine_field(error),
            _ => None,
        }
    }

    /// Which batch item is at fault.
    fn index(&self) -> Option<usize> {
        match self {
            ApiError::InvalidBatchItem { index, .. } => Some(*index),
            ApiError::Engine(EngineError::InvalidItem { index, .. }) => Some(*index),
            _ => None,
        }
    }

    /// The `WWW-Authenticate` challenge of a 401 or a scope's 403 (RFC 6750).
    fn challenge(&self) -> Option<HeaderValue> {
        match self {
            ApiError::Unauthenticated(_) => {
                Some(HeaderValue::from_static("Bearer realm=\"taskd\""))
            }
            ApiError::MissingScope { scope, .. } => HeaderValue::from_str(&format!(
                "Bearer realm=\"taskd\", error=\"insufficient_scope\", scope=\"{scope}\""
            ))
            .ok(),
            _ => None,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Engine(EngineError::QueueFull { retry_after, .. }) => Some(*retry_after),
            ApiError::Engine(
                EngineError::TooManyWaiters
                | EngineError::Draining
                | EngineError::Store(StoreError::Closed),
            )
            | ApiError::NotReady
            | ApiError::Starting
            | ApiError::BodyMemoryFull => Some(Duration::from_secs(1)),
            ApiError::Engine(EngineError::Store(StoreError::StorageFull(_))) => {
                Some(STORAGE_FULL_RETRY)
            }
            _ => None,
        }
    }
}

/// A problem document with the given code (and its status) and detail.
pub fn problem(code: ErrorCode, detail: &str) -> Value {
    problem_with_status(code.status(), code, detail)
}

/// A problem document that keeps a status a layer answered (see
/// [`ErrorCode::of_layer_status`]).
pub fn problem_with_status(status: StatusCode, code: ErrorCode, detail: &str) -> Value {
    json!({
        "type": format!("https://taskd.dev/problems/{code}"),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "code": code.as_str(),
        "detail": detail,
    })
}

/// Renders a problem document as a response with the problem+json content type.
pub fn problem_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let detail = match &self {
            // Said once (and then counted) by the store's space watch, not once per request.
            ApiError::Engine(EngineError::Store(StoreError::StorageFull(_))) => {
                "the server's storage is full: nothing was stored; retry later".to_owned()
            }
            ApiError::Engine(EngineError::Store(error)) => {
                // The cause goes to the log; the client gets no internals.
                tracing::error!(%error, "store failure");
                "the server could not complete the request".to_owned()
            }
            other => other.to_string(),
        };
        let mut body = problem(self.code(), &detail);
        if let Some((field, message)) = self.field() {
            let mut error = json!({ "field": field, "message": message });
            if let Some(index) = self.index() {
                error["index"] = json!(index);
            }
            body["errors"] = json!([error]);
        }
        let mut response = problem_response(status, &body);
        if let Some(challenge) = self.challenge() {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        if let Some(after) = self.retry_after() {
            let seconds = after.as_secs().max(1);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
