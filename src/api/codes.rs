//! The table of error codes: every stable `code` a problem document can carry, with its HTTP
//! status and what it means, written once (meilisearch's error-code table is the model).
//! [`super::error`] decides which code an error is; everything else — the status, the
//! `type` URI, the spec check — is derived from this table.

use axum::http::StatusCode;

macro_rules! error_codes {
    ($( $variant:ident => $code:literal, $status:ident, $doc:literal; )*) => {
        /// A stable, machine-readable error code; clients branch on it, never on `detail`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $( #[doc = $doc] $variant, )*
        }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &[ErrorCode] = &[ $( ErrorCode::$variant, )* ];

            /// The code on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $( ErrorCode::$variant => $code, )* }
            }

            /// The HTTP status every answer with this code has.
            pub fn status(self) -> StatusCode {
                match self { $( ErrorCode::$variant => StatusCode::$status, )* }
            }

            /// What the code means, in a line.
            pub fn doc(self) -> &'static str {
                match self { $( ErrorCode::$variant => $doc, )* }
            }
        }
    };
}

error_codes! {
    // The request itself.
    MalformedJson => "malformed_json", BAD_REQUEST, "The body is not valid JSON.";
    InvalidTaskId => "invalid_task_id", BAD_REQUEST, "The `{id}` of the path is not a UUID.";
    InvalidPath => "invalid_path", BAD_REQUEST, "A path parameter (a queue name) is not valid.";
    InvalidHeader => "invalid_header", BAD_REQUEST, "A header (`Idempotency-Key`, `Last-Event-ID`, `Prefer`) is not valid.";
    InvalidQuery => "invalid_query", BAD_REQUEST, "A query parameter is malformed, out of range or unknown.";
    Unauthenticated => "unauthenticated", UNAUTHORIZED, "No key, or an unknown, expired or revoked one.";
    MissingScope => "missing_scope", FORBIDDEN, "The key lacks the scope the route needs.";
    QueueForbidden => "queue_forbidden", FORBIDDEN, "The key is limited to other queues than the one named.";
    RouteNotFound => "route_not_found", NOT_FOUND, "No route matches the path.";
    MethodNotAllowed => "method_not_allowed", METHOD_NOT_ALLOWED, "The path does not take this method.";
    RequestTimeout => "request_timeout", REQUEST_TIMEOUT, "The request took longer than the request timeout.";
    BodyTimeout => "body_timeout", REQUEST_TIMEOUT, "The body did not arrive whole within the body timeout.";
    PayloadTooLarge => "payload_too_large", PAYLOAD_TOO_LARGE, "The body is larger than the body limit.";
    UnsupportedMediaType => "unsupported_media_type", UNSUPPORTED_MEDIA_TYPE, "The body is not JSON by its content type.";
    HostNotAllowed => "host_not_allowed", MISDIRECTED_REQUEST, "The `Host` is not one the server answers to.";
    InvalidRequest => "invalid_request", UNPROCESSABLE_ENTITY, "A field of the body has the wrong shape or value.";
    UnknownKind => "unknown_kind", UNPROCESSABLE_ENTITY, "No handler is registered for the kind.";
    InvalidInput => "invalid_input", UNPROCESSABLE_ENTITY, "The input does not fit its kind's schema.";
    IdempotencyKeyReused => "idempotency_key_reused", UNPROCESSABLE_ENTITY, "The `Idempotency-Key` was used with a different request.";
    UnknownParent => "unknown_parent", UNPROCESSABLE_ENTITY, "A parent named in `after` or `input_from` does not exist (or lies in a queue the key cannot see).";
    // The task or the queue.
    TaskNotFound => "task_not_found", NOT_FOUND, "No task has this id (never existed, deleted, or past retention).";
    ScheduleNotFound => "schedule_not_found", NOT_FOUND, "No schedule has this name (or its queue is outside the key's).";
    TaskFinished => "task_finished", CONFLICT, "The task had already finished; nothing changed.";
    TaskNotRetryable => "task_not_retryable", CONFLICT, "Only a failed or cancelled task can be retried.";
    TaskNotFinished => "task_not_finished", CONFLICT, "Only a finished task can be deleted.";
    TaskHasDependents => "task_has_dependents", CONFLICT, "Waiting tasks name the task as a parent (`after`); it cannot be deleted until they settle.";
    TaskFailed => "task_failed", CONFLICT, "The task failed: it has no result (its error is in the detail).";
    TaskCancelled => "task_cancelled", CONFLICT, "The task was cancelled: it has no result.";
    LeaseLost => "lease_lost", CONFLICT, "The lease is not the task's current one; stop working on it.";
    QueueNotRemote => "queue_not_remote", CONFLICT, "The queue is not marked remote.";
    QueueFull => "queue_full", TOO_MANY_REQUESTS, "The queue holds its limit of waiting tasks.";
    TooManyWaiters => "too_many_waiters", TOO_MANY_REQUESTS, "Too many long-polls wait at once.";
    // The server.
    Internal => "internal", INTERNAL_SERVER_ERROR, "The server failed; the cause is logged, never returned.";
    NotReady => "not_ready", SERVICE_UNAVAILABLE, "The server is not ready yet.";
    Starting => "starting", SERVICE_UNAVAILABLE, "The server is starting: its database is being opened, migrated and recovered.";
    Draining => "draining", SERVICE_UNAVAILABLE, "The server is shutting down.";
    Unavailable => "unavailable", SERVICE_UNAVAILABLE, "The store is closed.";
    StorageFull => "storage_full", INSUFFICIENT_STORAGE, "The database is out of space; nothing was stored.";
    BodyMemoryFull => "body_memory_full", SERVICE_UNAVAILABLE, "The bodies being read take the body-memory budget; try again shortly.";
}

impl ErrorCode {
    /// The code of a bare error status a layer answered (axum's 405, the body limit's 413,
    /// the timeout's 408, a caught panic's 500). Any other status keeps its own number and
    /// is `internal` (5xx) or `invalid_request` (4xx): none is known to reach here.
    pub fn of_layer_status(status: StatusCode) -> ErrorCode {
        match status {
            StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
            StatusCode::REQUEST_TIMEOUT => ErrorCode::RequestTimeout,
            status if status.is_server_error() => ErrorCode::Internal,
            _ => ErrorCode::InvalidRequest,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Codes are unique, snake_case, and each status is an error status.
    #[test]
    fn the_table_is_well_formed() {
        let mut seen = BTreeSet::new();
        for code in ErrorCode::ALL {
            let text = code.as_str();
            assert!(seen.insert(text), "`{text}` appears twice");
            assert!(
                text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "`{text}` is not snake_case"
            );
            assert!(
                code.status().is_client_error() || code.status().is_server_error(),
                "`{text}` has the non-error status {}",
                code.status()
            );
            assert!(!code.doc().is_empty());
        }
    }

    /// The bare statuses the layers answer map back to their own rows.
    #[test]
    fn layer_statuses_map_back() {
        for (status, code) in [
            (StatusCode::METHOD_NOT_ALLOWED, ErrorCode::MethodNotAllowed),
            (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge),
            (StatusCode::REQUEST_TIMEOUT, ErrorCode::RequestTimeout),
            (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
            (StatusCode::BAD_GATEWAY, ErrorCode::Internal),
        ] {
            assert_eq!(ErrorCode::of_layer_status(status), code);
        }
    }

    /// Every problem `code` enum in openapi.yaml names codes of the table, and every code of
    /// the table is documented by at least one of them: the spec and the table agree.
    #[test]
    fn the_contract_documents_exactly_the_table() {
        let spec: serde_json::Value =
            serde_yaml_ng::from_str(include_str!("../../openapi.yaml")).expect("openapi parses");
        let mut documented = BTreeSet::new();
        collect_code_enums(&spec, &mut documented);
        let table: BTreeSet<String> = ErrorCode::ALL
            .iter()
            .map(|code| code.as_str().to_owned())
            .collect();
        let unknown: Vec<_> = documented.difference(&table).collect();
        assert!(
            unknown.is_empty(),
            "codes in openapi.yaml not in the table: {unknown:?}"
        );
        let undocumented: Vec<_> = table.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "codes of the table no response of openapi.yaml names: {undocumented:?}"
        );
    }

    /// Gathers the values of every `code: {enum: […]}` below `value`.
    fn collect_code_enums(value: &serde_json::Value, into: &mut BTreeSet<String>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(values) = map
                    .get("code")
                    .and_then(|code| code.get("enum"))
                    .and_then(|values| values.as_array())
                {
                    into.extend(values.iter().filter_map(|v| v.as_str().map(str::to_owned)));
                }
                map.values()
                    .for_each(|child| collect_code_enums(child, into));
            }
            serde_json::Value::Array(items) => {
                items
                    .iter()
                    .for_each(|child| collect_code_enums(child, into));
            }
            _ => {}
        }
    }
}
