//! The API's one error type: every failure a client can see, its status and its stable code,
//! rendered as RFC 9457 `application/problem+json`. Internal causes are logged, not returned.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::access::Scope;
use crate::engine::EngineError;
use crate::store::StoreError;
use crate::task::TaskState;

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
    #[error("the task ended {0} and has no result")]
    NoResult(TaskState),
    #[error("the server is not ready")]
    NotReady,
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

fn engine_status(error: &EngineError) -> StatusCode {
    match error {
        EngineError::NotFound(_) => StatusCode::NOT_FOUND,
        EngineError::UnknownKind(_)
        | EngineError::InvalidInput(_)
        | EngineError::IdempotencyConflict(_) => StatusCode::UNPROCESSABLE_ENTITY,
        EngineError::InvalidItem { error, .. } => engine_status(error),
        EngineError::QueueFull { .. } | EngineError::TooManyWaiters => {
            StatusCode::TOO_MANY_REQUESTS
        }
        EngineError::WrongState { .. } | EngineError::NotRemote(_) => StatusCode::CONFLICT,
        EngineError::QueueForbidden(_) => StatusCode::FORBIDDEN,
        EngineError::Draining | EngineError::Store(StoreError::Closed) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        EngineError::Store(StoreError::StorageFull(_)) => StatusCode::INSUFFICIENT_STORAGE,
        EngineError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn engine_code(error: &EngineError) -> &'static str {
    match error {
        EngineError::NotFound(_) => "task_not_found",
        EngineError::UnknownKind(_) => "unknown_kind",
        EngineError::InvalidInput(_) => "invalid_input",
        EngineError::InvalidItem { error, .. } => engine_code(error),
        EngineError::IdempotencyConflict(_) => "idempotency_key_reused",
        EngineError::QueueFull { .. } => "queue_full",
        EngineError::TooManyWaiters => "too_many_waiters",
        EngineError::WrongState { code, .. } => code,
        EngineError::NotRemote(_) => "queue_not_remote",
        EngineError::QueueForbidden(_) => "queue_forbidden",
        EngineError::Draining => "draining",
        EngineError::Store(StoreError::Closed) => "unavailable",
        EngineError::Store(StoreError::StorageFull(_)) => "storage_full",
        EngineError::Store(_) => "internal",
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
        EngineError::QueueForbidden(queue) => Some((
            "queue".to_owned(),
            format!("this key may not use queue `{queue}`"),
        )),
        _ => None,
    }
}

impl ApiError {
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Engine(error) => engine_status(error),
            ApiError::MalformedJson(_)
            | ApiError::InvalidTaskId(_)
            | ApiError::InvalidPath(_)
            | ApiError::InvalidHeader(_)
            | ApiError::InvalidQuery(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidBatchItem { error, .. } => error.status_code(),
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::InvalidField { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NoResult(_) => StatusCode::CONFLICT,
            ApiError::NotReady | ApiError::BodyMemoryFull => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::RouteNotFound => StatusCode::NOT_FOUND,
            ApiError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            ApiError::MissingScope { .. } => StatusCode::FORBIDDEN,
            ApiError::HostNotAllowed(_) => StatusCode::MISDIRECTED_REQUEST,
        }
    }

    /// The stable, machine-readable code clients branch on.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Engine(error) => engine_code(error),
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::InvalidField { .. } => "invalid_request",
            ApiError::InvalidTaskId(_) => "invalid_task_id",
            ApiError::InvalidPath(_) => "invalid_path",
            ApiError::InvalidHeader(_) => "invalid_header",
            ApiError::InvalidBatchItem { error, .. } => error.code(),
            ApiError::InvalidQuery(_) => "invalid_query",
            ApiError::NoResult(TaskState::Cancelled) => "task_cancelled",
            ApiError::NoResult(_) => "task_failed",
            ApiError::NotReady => "not_ready",
            ApiError::BodyTimeout(_) => "body_timeout",
            ApiError::BodyMemoryFull => "body_memory_full",
            ApiError::RouteNotFound => "route_not_found",
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::MissingScope { .. } => "missing_scope",
            ApiError::HostNotAllowed(_) => "host_not_allowed",
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
            | ApiError::BodyMemoryFull => Some(Duration::from_secs(1)),
            ApiError::Engine(EngineError::Store(StoreError::StorageFull(_))) => {
                Some(STORAGE_FULL_RETRY)
            }
            _ => None,
        }
    }
}

/// A problem document with the given status, code and detail.
pub fn problem(status: StatusCode, code: &str, detail: &str) -> Value {
    json!({
        "type": format!("https://taskd.dev/problems/{code}"),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "code": code,
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
        let mut body = problem(status, self.code(), &detail);
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
