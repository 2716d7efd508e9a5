//! Our own extractors, so that every rejection shares the problem+json shape and says exactly
//! what is wrong: malformed JSON (400) versus JSON of the wrong shape (422, naming the field),
//! and a string holding U+0000 anywhere (422, naming the field: see [`super::nul`]).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use super::body::{self, BodyReservation};
use super::error::ApiError;
use crate::task::TaskId;

/// A JSON body. Requires a JSON content type; names the offending field on a shape error.
pub struct Json<T>(pub T);

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        if !is_json(content_type) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let limit = request
            .extensions()
            .get::<BodyLimit>()
            .map_or(usize::MAX, |limit| limit.0);
        // This body's share of --max-body-memory (body.rs): given back once it is parsed.
        let reservation = request.extensions().get::<BodyReservation>().cloned();
        let mut request = request;
        request.extensions_mut().remove::<BodyReservation>();
        let bytes =
            Bytes::from_request(request, state)
                .await
                .map_err(|rejection: BytesRejection| {
                    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                        ApiError::PayloadTooLarge(limit)
                    } else if let Some(after) = body::timed_out(&rejection) {
                        ApiError::BodyTimeout(after)
                    } else {
                        ApiError::MalformedJson(rejection.body_text())
                    }
                })?;
        // serde reads a struct from an array too (by position); a body must be an object.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            return Err(ApiError::InvalidField {
                field: "body".to_owned(),
                message: "must be a JSON object".to_owned(),
            });
        }
        super::nul::refuse_nul(&bytes)?;
        let parsed = parse_json(&bytes).map(Json);
        drop(bytes);
        drop(reservation);
        parsed
    }
}

/// Parses a JSON document: a syntax error is 400, a shape error 422 with the field's path.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_data() {
            let message = inner.to_string();
            ApiError::InvalidField {
                field: crate::task::error_field("", &path, &message),
                message: crate::task::plain_serde_message(&message),
            }
        } else {
            ApiError::MalformedJson(super::plain::syntax_message(&inner))
        }
    })?;
    deserializer
        .end()
        .map_err(|error| ApiError::MalformedJson(super::plain::syntax_message(&error)))?;
    Ok(value)
}

/// The body limit in force, put into request extensions by the router so a 413 can say it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// The `{id}` of a task route, parsed: a non-UUID is 400, not 404.
pub struct TaskIdPath(pub TaskId);

impl<S: Send + Sync> FromRequestParts<S> for TaskIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|rejection| ApiError::InvalidTaskId(rejection.body_text()))?;
        raw.parse()
            .map(TaskIdPath)
            .map_err(|error: crate::task::TaskIdError| ApiError::InvalidTaskId(error.to_string()))
    }
}

/// A query string, deserialized; any mismatch is 400 `invalid_query`.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let _ = state;
        super::plain::parse_query(parts.uri.query().unwrap_or_default()).map(Query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("application/merge-patch+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json(""));
    }

    #[test]
    fn syntax_is_400_and_shape_is_422() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Body {
            n: u32,
        }
        assert!(matches!(
            parse_json::<Body>(b"{\"n\":"),
            Err(ApiError::MalformedJson(_))
        ));
        let Err(ApiError::InvalidField { field, .. }) = parse_json::<Body>(b"{\"n\":\"x\"}") else {
            panic!("a shape error")
        };
        assert_eq!(field, "n");
        assert!(matches!(
            parse_json::<Body>(b"{\"n\":1} x"),
            Err(ApiError::MalformedJson(_))
        ));
    }
}
