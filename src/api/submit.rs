//! Submissions: the JSON body of `POST /v1/tasks` (and of each batch item), the
//! `Idempotency-Key`, `Prefer`, `traceparent` and `tracestate` headers, parsed once into a
//! [`NewTask`].

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::response::Response;
use chrono::DateTime;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use super::parents;
use super::plain::Number;
use crate::task::{
    AfterPolicy, Backoff, Callback, DEFAULT_MAX_ATTEMPTS, Idempotency, Kind, Labels, NewTask,
    QueueName, TaskId, TaskTemplate, now_millis,
};
use crate::traces::{SubmitSpan, Tracer};

/// Limits on what one submission may ask for.
const MAX_ATTEMPTS: u32 = 100;
const MAX_TIMEOUT_MS: u64 = 24 * 3_600_000;
const MAX_DELAY_MS: u64 = 366 * 24 * 3_600_000;
const MAX_LABELS: usize = 32;
const MAX_LABEL_KEY: usize = 64;
const MAX_LABEL_VALUE: usize = 256;
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The body of `POST /v1/tasks`: every field but `kind` is optional.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    kind: String,
    #[serde(default = "empty_object")]
    input: Value,
    queue: Option<String>,
    priority: Option<i32>,
    max_attempts: Option<Number>,
    backoff: Option<BackoffRequest>,
    timeout_ms: Option<Number>,
    run_at: Option<String>,
    delay_ms: Option<Number>,
    labels: Option<BTreeMap<String, String>>,
    /// Where to POST the finished task; absent: the queue's default callback, if any.
    callback: Option<CallbackRequest>,
    /// The body's twin of the `Idempotency-Key` header, and the only way to give a key to a
    /// batch item. Not part of the digest the key is bound to, so a key given either way
    /// replays the same request.
    #[serde(default, skip_serializing)]
    idempotency_key: Option<String>,
    /// The parents to wait for: task ids, or (in a batch) `"$N"` for an earlier item.
    after: Option<Vec<String>>,
    /// When it may run once its parents settle; default `all_succeeded` (`any_succeeded`
    /// for the `any` kind).
    after_policy: Option<AfterPolicy>,
    /// The parent (an id or `"$N"`, among `after`) whose result becomes the input.
    input_from: Option<String>,
}

/// A completion webhook as a client gives it: `{url, secret?}`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackRequest {
    url: String,
    secret: Option<String>,
}

/// The longest callback URL and secret accepted.
const MAX_CALLBACK_URL: usize = 2048;
const MAX_CALLBACK_SECRET: usize = 512;

impl CallbackRequest {
    /// The callback, if its URL is an absolute http(s) URL and its secret usable as an HMAC
    /// key. Whether the host may be reached is decided when it is called (the allow-list may
    /// change in between); `field` prefixes the names in errors.
    pub fn parse(self, field: &str) -> Result<Callback, ApiError> {
        let url_field = format!("{field}.url");
        if self.url.len() > MAX_CALLBACK_URL {
            return Err(invalid(
                &url_field,
                format!("at most {MAX_CALLBACK_URL} characters"),
            ));
        }
        let url = url::Url::parse(&self.url)
            .map_err(|e| invalid(&url_field, format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(invalid(
                &url_field,
                "must be an http or https URL with a host",
            ));
        }
        if let Some(secret) = &self.secret {
            let secret_field = format!("{field}.secret");
            if secret.is_empty() || secret.len() > MAX_CALLBACK_SECRET {
                return Err(invalid(
                    &secret_field,
                    format!("1 to {MAX_CALLBACK_SECRET} characters"),
                ));
            }
            if let Some(key) = secret.strip_prefix("whsec_") {
                use base64::Engine as _;
                let decoded = base64::engine::general_purpose::STANDARD.decode(key);
                if decoded.map_or(true, |key| key.is_empty()) {
                    return Err(invalid(
                        &secret_field,
                        "after `whsec_` comes the key in base64",
                    ));
                }
            }
        }
        Ok(Callback {
            url: url.to_string(),
            secret: self.secret,
        })
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct BackoffRequest {
    base_ms: Option<u64>,
    cap_ms: Option<u64>,
}

fn empty_object() -> Value {
    json!({})
}

pub(super) fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidField {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// A whole number within `min..=max` (all the limits here are far below `i64::MAX`).
fn in_range(
    field: &str,
    value: Option<Number>,
    min: u64,
    max: u64,
) -> Result<Option<u64>, ApiError> {
    value
        .map(|n| n.whole_in(min as i64, max as i64).map(|n| n as u64))
        .transpose()
        .map_err(|message| invalid(field, message))
}

impl SubmitRequest {
    /// The task this request asks for. `default_backoff` applies where it sets none.
    pub fn parse(self, default_backoff: Backoff) -> Result<NewTask, ApiError> {
        self.parse_item(default_backoff, None)
    }

    /// The task this request asks for as item `item` of a batch (`None`: a single submit),
    /// which decides the `"$N"` parents it may name.
    pub fn parse_item(
        self,
        default_backoff: Backoff,
        item: Option<usize>,
    ) -> Result<NewTask, ApiError> {
        let dependencies = parents::parse(
            &self.kind,
            self.after,
            self.after_policy,
            self.input_from,
            item,
        )?;
        if dependencies.is_some() && (self.run_at.is_some() || self.delay_ms.is_some()) {
            let field = if self.run_at.is_some() {
                "run_at"
            } else {
                "delay_ms"
            };
            return Err(invalid(
                field,
                "a task with parents (`after`) starts when they settle: give one or the other",
            ));
        }
        let name_error = |field: &'static str| {
            move |error: crate::task::NameError| invalid(field, error.to_string())
        };
        let kind = Kind::parse(self.kind).map_err(name_error("kind"))?;
        let queue = match self.queue {
            Some(queue) => QueueName::parse(queue).map_err(name_error("queue"))?,
            None => QueueName::default(),
        };
        let max_attempts =
            in_range("max_attempts", self.max_attempts, 1, MAX_ATTEMPTS.into())?.map(|n| n as u32);
        let timeout_ms = in_range("timeout_ms", self.timeout_ms, 1, MAX_TIMEOUT_MS)?;
        let delay_ms = in_range("delay_ms", self.delay_ms, 0, MAX_DELAY_MS)?;
        let run_at = match (self.run_at, delay_ms) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "run_at",
                    "give either `run_at` or `delay_ms`, not both",
                ));
            }
            (Some(text), None) => Some(
                DateTime::parse_from_rfc3339(&text)
                    .map_err(|_| {
                        invalid(
                            "run_at",
                            format!(
                                "must be an RFC 3339 time such as 2025-01-01T12:00:00Z, got `{text}`"
                            ),
                        )
                    })?
                    .timestamp_millis(),
            ),
            (None, Some(delay)) => Some(now_millis() + delay as i64),
            (None, None) => None,
        };
        let backoff = match self.backoff {
            None => default_backoff,
            Some(requested) => {
                // A cap alone lowers the default base to it; a base alone raises the cap.
                let cap_ms = requested
                    .cap_ms
                    .unwrap_or(default_backoff.cap_ms.max(requested.base_ms.unwrap_or(0)));
                let base_ms = requested
                    .base_ms
                    .unwrap_or(default_backoff.base_ms.min(cap_ms));
                if base_ms > cap_ms {
                    return Err(invalid("backoff.base_ms", "must not exceed backoff.cap_ms"));
                }
                if cap_ms > MAX_DELAY_MS {
                    return Err(invalid(
                        "backoff.cap_ms",
                        format!("must be a whole number from 0 to {MAX_DELAY_MS}, got {cap_ms}"),
                    ));
                }
                Backoff { base_ms, cap_ms }
            }
        };
        Ok(NewTask {
            priority: self.priority.unwrap_or(0),
            max_attempts: max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS),
            backoff,
            timeout_ms,
            run_at,
            labels: parse_labels(self.labels.unwrap_or_default())?,
            idempotency: None,
            callback: self.callback.map(|c| c.parse("callback")).transpose()?,
            after: dependencies
                .as_ref()
                .map_or_else(Vec::new, |d| d.after.clone()),
            after_policy: dependencies
                .as_ref()
                .map_or_else(AfterPolicy::default, |d| d.policy),
            input_from: dependencies.and_then(|d| d.input_from),
            ..NewTask::new(queue, kind, self.input)
        })
    }
}

impl SubmitRequest {
    /// The task of a schedule: a submission without the options a repeated task cannot
    /// take (`run_at`, `delay_ms`: the slot is its time; `callback`: its secret would be
    /// served with the schedule). Errors name fields below `task.`.
    pub fn parse_template(mut self, default_backoff: Backoff) -> Result<TaskTemplate, ApiError> {
        let refused = [
            ("run_at", self.run_at.take().is_some()),
            ("delay_ms", self.delay_ms.take().is_some()),
            ("callback", self.callback.take().is_some()),
        ];
        if let Some((field, _)) = refused.iter().find(|(_, given)| *given) {
            let why = match *field {
                "callback" => {
                    "a schedule's task takes its queue's default callback; set it with PATCH /v1/queues/{name}"
                }
                _ => "a schedule's task runs at each slot of its cron; leave this out",
            };
            return Err(invalid(&format!("task.{field}"), why));
        }
        match self.parse(default_backoff) {
            Ok(task) => Ok(TaskTemplate::of(task)),
            Err(ApiError::InvalidField { field, message }) => Err(ApiError::InvalidField {
                field: format!("task.{field}"),
                message,
            }),
            Err(other) => Err(other),
        }
    }
}

fn parse_labels(labels: BTreeMap<String, String>) -> Result<Labels, ApiError> {
    if labels.len() > MAX_LABELS {
        return Err(invalid("labels", format!("at most {MAX_LABELS} labels")));
    }
    for (key, value) in &labels {
        if key.is_empty() || key.len() > MAX_LABEL_KEY || key.contains(':') {
            return Err(invalid(
                &format!("labels.{key}"),
                format!("a label key has 1 to {MAX_LABEL_KEY} characters and no ':'"),
            ));
        }
        if value.len() > MAX_LABEL_VALUE {
            return Err(invalid(
                &format!("labels.{key}"),
                format!("a label value has at most {MAX_LABEL_VALUE} characters"),
            ));
        }
    }
    Ok(labels)
}

/// The idempotency key of a request (the `Idempotency-Key` header, or the body's
/// `idempotency_key`; both must then agree), bound to a digest of the request it came with.
pub fn idempotency(
    headers: &HeaderMap,
    request: &SubmitRequest,
) -> Result<Option<Idempotency>, ApiError> {
    let header = match headers.get("idempotency-key") {
        None => None,
        Some(key) => Some(key.to_str().ok().filter(|k| valid_key(k)).ok_or_else(|| {
            ApiError::InvalidHeader(format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
            ))
        })?),
    };
    if let (Some(header), Some(body)) = (header, &request.idempotency_key)
        && header != body
    {
        return Err(invalid(
            "idempotency_key",
            "differs from the Idempotency-Key header; give one or the other",
        ));
    }
    match header {
        Some(key) => Ok(Some(bind_key(key, request))),
        None => item_idempotency(request),
    }
}

/// The idempotency key a batch item carries in its body, bound to a digest of the item.
pub fn item_idempotency(request: &SubmitRequest) -> Result<Option<Idempotency>, ApiError> {
    let Some(key) = &request.idempotency_key else {
        return Ok(None);
    };
    if !valid_key(key) {
        return Err(invalid(
            "idempotency_key",
            format!("must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
        ));
    }
    Ok(Some(bind_key(key, request)))
}

/// What a header value may hold: visible ASCII and spaces.
fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_IDEMPOTENCY_KEY
        && key.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
}

fn bind_key(key: &str, request: &SubmitRequest) -> Idempotency {
    // serde_json maps are sorted, so equal requests serialize to equal bytes.
    let canonical = serde_json::to_vec(request).unwrap_or_default();
    Idempotency {
        key: key.to_owned(),
        request_hash: hex::encode(Sha256::digest(&canonical)),
    }
}

/// Opens the span of a submit on `route`, under the request's W3C `traceparent` and
/// `tracestate`. A malformed `traceparent` — or several — is ignored, never refused (the
/// specification's rule): the submit starts a new trace.
pub fn trace(tracer: &Tracer, headers: &HeaderMap, route: &'static str) -> SubmitSpan {
    let single = |name: &str| {
        let mut values = headers.get_all(name).iter();
        match (values.next(), values.next()) {
            (Some(value), None) => value.to_str().ok(),
            _ => None,
        }
    };
    tracer.submit(single("traceparent"), single("tracestate"), route)
}

/// Ends a submit's span with its answer's status and the tasks it stored; gives the answer.
pub fn end_trace(
    span: SubmitSpan,
    answer: Result<(Response, Vec<TaskId>), ApiError>,
) -> Result<Response, ApiError> {
    match answer {
        Ok((response, ids)) => {
            span.end(response.status().as_u16(), &ids);
            Ok(response)
        }
        Err(error) => {
            span.end(error.status_code().as_u16(), &[]);
            Err(error)
        }
    }
}

/// The `wait=N` preference of a `Prefer` header (RFC 7240), capped at `max`.
pub fn preferred_wait(headers: &HeaderMap, max: Duration) -> Option<Duration> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split([',', ';']))
        .filter_map(|preference| {
            let (name, value) = preference.split_once('=')?;
            (name.trim().eq_ignore_ascii_case("wait")).then(|| value.trim().trim_matches('"'))
        })
        .find_map(|secs| secs.parse::<f64>().ok())
        .filter(|secs| secs.is_finite() && *secs > 0.0)
        .map(|secs| Duration::from_secs_f64(secs.min(max.as_secs_f64())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn prefer_wait_is_read_and_capped() {
        let minute = Duration::from_secs(60);
        let mut headers = HeaderMap::new();
        assert_eq!(preferred_wait(&headers, minute), None);
        headers.insert("prefer", HeaderValue::from_static("respond-async, wait=5"));
        assert_eq!(
            preferred_wait(&headers, minute),
            Some(Duration::from_secs(5))
        );
        headers.insert("prefer", HeaderValue::from_static("wait=600"));
        assert_eq!(
            preferred_wait(&headers, minute),
            Some(Duration::from_secs(60))
        );
        headers.insert("prefer", HeaderValue::from_static("wait=soon"));
        assert_eq!(preferred_wait(&headers, minute), None);
    }
}
