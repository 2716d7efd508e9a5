//! Our own extractors, so that every rejection shares the problem+json shape and says exactly
//! what is wrong: malformed JSON (400) versus JSON of the wrong shape (422, naming the field),
//! and a string holding U+0000 anywhere (422, naming the field: see [`super::nul`]).

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use http_body::Body as _;
use http_body_util::{BodyExt as _, LengthLimitError};
use serde::de::DeserializeOwned;

use super::body::{self, BodyShare, MEMORY_PER_BODY_BYTE};
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

    async fn from_request(request: Request, _state: &S) -> Result<Self, ApiError> {
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
        let share = request.extensions().get::<BodyShare>().cloned();
        let bytes = read_body(request.into_body(), limit).await?;
        // The share taken for the body's bytes may not cover what parsing it makes.
        if share.is_some_and(|share| !share.cover(parsed_memory(&bytes))) {
            return Err(ApiError::BodyMemoryFull);
        }
        // serde reads a struct from an array too (by position); a body must be an object.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            return Err(ApiError::InvalidField {
                field: "body".to_owned(),
                message: "must be a JSON object".to_owned(),
            });
        }
        super::nul::refuse_nul(&bytes)?;
        parse_json(&bytes).map(Json)
    }
}

/// Reads a body whole into one buffer of its announced size (growing as it comes when it
/// announces none; the limit layer has already refused a larger announcement). axum's
/// `Bytes` extractor collects the frames and then copies them into one buffer: twice the
/// body at the end of every read.
async fn read_body(mut body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let announced = body.size_hint().exact().map_or(0, |n| n as usize);
    let mut bytes = Vec::with_capacity(announced.min(limit));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            let error = error.into_inner();
            if is_over_limit(&*error) {
                ApiError::PayloadTooLarge(limit)
            } else if let Some(after) = body::timed_out(&*error) {
                ApiError::BodyTimeout(after)
            } else {
                ApiError::MalformedJson(format!("Failed to buffer the request body: {error}"))
            }
        })?;
        if let Ok(data) = frame.into_data() {
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes)
}

/// Whether a body failed for going over `--max-body-bytes` (the limit layer's error).
fn is_over_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.is::<LengthLimitError>() {
            return true;
        }
        cause = error.source();
    }
    false
}

/// The memory a request holds for a JSON body of these bytes, parsed: its share for the
/// bytes ([`MEMORY_PER_BODY_BYTE`]), and [`PARSED_BYTES_PER_VALUE`] for each value in it
/// (counted by the commas, colons and brackets outside strings). For text-like bodies the
/// second part is nothing; for `[0,0,0,…]` it is everything.
fn parsed_memory(bytes: &[u8]) -> u64 {
    let (mut values, mut in_string, mut escaped) = (1u64, false, false);
    for &byte in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
        } else {
            match byte {
                b'"' => in_string = true,
                b',' | b':' | b'[' | b'{' => values += 1,
                _ => {}
            }
        }
    }
    (bytes.len() as u64).saturating_mul(MEMORY_PER_BODY_BYTE)
        + values.saturating_mul(PARSED_BYTES_PER_VALUE)
}

/// What one parsed JSON value takes beyond its text, at most: a `serde_json::Value` is 32
/// bytes, and an array's buffer may have twice the room it uses; an object's entry is a key
/// and a value in a B-tree node.
const PARSED_BYTES_PER_VALUE: u64 = 64;

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

    /// Values are counted outside strings only, escaped quotes included.
    #[test]
    fn parsed_memory_counts_values_not_text() {
        let values = |body: &[u8]| {
            (parsed_memory(body) - body.len() as u64 * MEMORY_PER_BODY_BYTE)
                / PARSED_BYTES_PER_VALUE
        };
        assert_eq!(values(br#"[0,0,0]"#), 4);
        assert_eq!(values(br#"{"a":"x,y:[{"}"#), 3);
        assert_eq!(values(br#"{"a":"\",[{:"}"#), 3);
        assert_eq!(values(br#""#), 1);
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
