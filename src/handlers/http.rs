//! `http`: performs one HTTP request and records the answer — any HTTP service becomes a
//! worker. The request goes through the shared outbound client, so the `--allow-outbound`
//! list applies (a refused host gets no packet and fails the task at once).
//!
//! How an answer ends the attempt: 1xx–3xx succeed (redirects are not followed; the answer
//! is the result); 5xx, 408 and 429 fail retryably, as do timeouts and connection errors;
//! any other 4xx fails for good.
//!
//! A traced task's request carries the attempt's W3C `traceparent` (and `tracestate`), so
//! the service it calls joins the trace; an input that sets `traceparent` itself keeps its own.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Response, StatusCode, Url};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Handler, HandlerError, InvalidInput, TaskContext};
use crate::outbound::{Outbound, OutboundError};

/// The timeout of a request that sets none.
const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// The longest `timeout_ms` accepted: one hour.
const MAX_TIMEOUT_MS: u64 = 3_600_000;
/// How much of a response body is kept; the rest is dropped and `truncated` says so.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// The longest URL accepted.
const MAX_URL: usize = 8192;

/// The `http` kind.
pub struct Http {
    outbound: Outbound,
}

impl Http {
    pub fn new(outbound: Outbound) -> Http {
        Http { outbound }
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpInput {
    /// The method (default `GET`).
    #[serde(default = "get")]
    pub method: String,
    /// An `http` or `https` URL; its host must be in the outbound allow-list.
    pub url: String,
    /// Request headers, by name.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The request body: a string is sent as it is (`text/plain` unless a header says
    /// otherwise), any other JSON value as JSON (`application/json`).
    pub body: Option<Value>,
    /// How long the request may take, the answer included (1 to 3,600,000; default 30,000).
    pub timeout_ms: Option<u64>,
    /// Headers whose values are secrets besides `authorization`, `proxy-authorization` and
    /// `cookie`: sent as given, shown as `"[redacted]"` in every read of the task.
    #[serde(default)]
    pub secret_headers: Vec<String>,
}

/// What a secret header's value reads as.
pub const REDACTED: &str = "[redacted]";

/// Headers whose values are always secrets.
const SECRET_HEADERS: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];

/// Replaces the values of secret headers in a stored `http` input with [`REDACTED`].
fn redact_headers(input: &mut Value) {
    let listed: Vec<String> = input
        .get("secret_headers")
        .and_then(Value::as_array)
        .map(|names| {
            names
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_ascii_lowercase)
                .collect()
        })
        .unwrap_or_default();
    let Some(headers) = input.get_mut("headers").and_then(Value::as_object_mut) else {
        return;
    };
    for (name, value) in headers.iter_mut() {
        let name = name.to_ascii_lowercase();
        if SECRET_HEADERS.contains(&name.as_str()) || listed.contains(&name) {
            *value = Value::String(REDACTED.to_owned());
        }
    }
}

fn get() -> String {
    "GET".to_owned()
}

/// What a valid input asks for, parsed.
struct Request {
    method: Method,
    url: Url,
    headers: HeaderMap,
    timeout: Duration,
}

fn parse(input: &HttpInput) -> Result<Request, InvalidInput> {
    let method = Method::from_bytes(input.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| InvalidInput::field("method", "not an HTTP method"))?;
    if input.url.len() > MAX_URL {
        return Err(InvalidInput::field(
            "url",
            format!("at most {MAX_URL} characters"),
        ));
    }
    let url = Url::parse(&input.url)
        .map_err(|e| InvalidInput::field("url", format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(InvalidInput::field(
            "url",
            "must be an http(s) URL with a host",
        ));
    }
    let mut headers = HeaderMap::new();
    for (name, value) in &input.headers {
        let field = format!("headers.{name}");
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| InvalidInput {
            field: format!("input.{field}"),
            message: "not a valid header name".to_owned(),
        })?;
        let value = HeaderValue::from_str(value).map_err(|_| InvalidInput {
            field: format!("input.{field}"),
            message: "not a valid header value".to_owned(),
        })?;
        headers.append(header, value);
    }
    let timeout_ms = input.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
    if !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
        return Err(InvalidInput::field(
            "timeout_ms",
            format!("must be from 1 to {MAX_TIMEOUT_MS}"),
        ));
    }
    Ok(Request {
        method,
        url,
        headers,
        timeout: Duration::from_millis(timeout_ms),
    })
}

#[async_trait]
impl Handler for Http {
    type Input = HttpInput;

    fn description(&self) -> &'static str {
        "Performs an HTTP request (allow-listed hosts only); the result is {status, headers, body}."
    }

    fn check(&self, input: &HttpInput) -> Result<(), InvalidInput> {
        parse(input).map(|_| ())
    }

    fn redact(&self, input: &mut Value) {
        redact_headers(input);
    }

    async fn run(&self, input: HttpInput, ctx: TaskContext) -> Result<Value, HandlerError> {
        let mut request =
            parse(&input).map_err(|e| HandlerError::permanent("invalid_input", e.to_string()))?;
        // The attempt's trace goes onward, unless the input sets its own trace headers.
        if let Some(trace) = ctx.trace()
            && !request.headers.contains_key("traceparent")
        {
            for (name, value) in trace.headers() {
                if let Ok(value) = HeaderValue::from_str(&value) {
                    request.headers.insert(name, value);
                }
            }
        }
        let what = format!("{} {}", request.method, request.url);
        let mut builder = self
            .outbound
            .request(request.method, request.url)
            .timeout(request.timeout);
        let has_content_type = request.headers.contains_key(CONTENT_TYPE);
        builder = match input.body {
            None => builder,
            Some(Value::String(text)) if has_content_type => builder.body(text),
            Some(Value::String(text)) => builder
                .header(CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(text),
            Some(json) if has_content_type => builder.body(json.to_string()),
            Some(json) => builder.json(&json),
        };
        let exchange = async {
            let response = self
                .outbound
                .send(builder.headers(request.headers))
                .await
                .map_err(|error| failed(&what, error))?;
            let status = response.status();
            let answer = read(response).await.map_err(|error| failed(&what, error))?;
            judge(&what, status, answer)
        };
        tokio::select! {
            outcome = exchange => outcome,
            () = ctx.cancelled() => Err(HandlerError::cancelled()),
        }
    }
}

/// A request that got no (complete) answer.
fn failed(what: &str, error: OutboundError) -> HandlerError {
    match error {
        OutboundError::Refused(refused) => {
            HandlerError::permanent("outbound_refused", format!("{what}: {refused}"))
        }
        OutboundError::Timeout => HandlerError::new("timeout", format!("{what}: timed out")),
        OutboundError::Failed(error) => {
            HandlerError::new("http_request", format!("{what}: {error}"))
        }
    }
}

/// Whether the answer is the result or a failure, and which kind.
fn judge(what: &str, status: StatusCode, answer: Value) -> Result<Value, HandlerError> {
    if !(status.is_client_error() || status.is_server_error()) {
        return Ok(answer);
    }
    let mut message = format!("{what} answered {status}");
    if let Some(body) = answer["body"].as_str().filter(|b| !b.is_empty()) {
        let excerpt: String = body.chars().take(200).collect();
        message.push_str(&format!(": {excerpt}"));
    } else if !answer["body"].is_null() {
        let excerpt: String = answer["body"].to_string().chars().take(200).collect();
        message.push_str(&format!(": {excerpt}"));
    }
    let retryable = status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS;
    let error = HandlerError::new("http_status", message);
    Err(HandlerError { retryable, ..error })
}

/// The answer as a result: `{status, headers, body}`, the body parsed as JSON when the
/// answer says it is JSON, else text; at most [`MAX_RESPONSE_BYTES`] of it.
async fn read(mut response: Response) -> Result<Value, OutboundError> {
    let status = response.status().as_u16();
    let mut headers = serde_json::Map::new();
    for name in response.headers().keys() {
        let values: Vec<String> = response
            .headers()
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        headers.insert(name.as_str().to_owned(), Value::String(values.join(", ")));
    }
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|essence| {
            let essence = essence.trim().to_ascii_lowercase();
            essence == "application/json" || essence.ends_with("+json")
        })
        .unwrap_or(false);
    let mut bytes: Vec<u8> = Vec::new();
    let mut truncated = false;
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_RESPONSE_BYTES - bytes.len();
        if chunk.len() > room {
            bytes.extend_from_slice(&chunk[..room]);
            truncated = true;
            break;
        }
        bytes.extend_from_slice(&chunk);
    }
    let body = if bytes.is_empty() {
        Value::Null
    } else if let Some(json) = is_json
        .then(|| serde_json::from_slice::<Value>(&bytes).ok())
        .flatten()
    {
        json
    } else {
        Value::String(String::from_utf8_lossy(&bytes).into_owned())
    };
    let mut result = json!({"status": status, "headers": headers, "body": body});
    if truncated {
        result["truncated"] = Value::Bool(true);
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_headers_read_as_redacted() {
        let mut input = json!({
            "url": "http://example.com",
            "headers": {"Authorization": "Bearer s", "Cookie": "c", "X-Api-Key": "k", "Accept": "a"},
            "secret_headers": ["x-api-key"],
        });
        redact_headers(&mut input);
        assert_eq!(input["headers"]["Authorization"], REDACTED);
        assert_eq!(input["headers"]["Cookie"], REDACTED);
        assert_eq!(input["headers"]["X-Api-Key"], REDACTED);
        assert_eq!(input["headers"]["Accept"], "a");
    }

    fn input(value: Value) -> HttpInput {
        serde_json::from_value(value).expect("an http input")
    }

    #[test]
    fn inputs_are_checked_at_submit() {
        let ok = parse(&input(json!({"url": "http://127.0.0.1:8/x"}))).unwrap();
        assert_eq!(ok.method, Method::GET);
        assert_eq!(ok.timeout, Duration::from_millis(DEFAULT_TIMEOUT_MS));
        let post = parse(&input(
            json!({"method": "post", "url": "https://h/", "headers": {"x-a": "1"}}),
        ));
        assert_eq!(post.unwrap().method, Method::POST);
        for (bad, field) in [
            (json!({"url": "ftp://h/"}), "input.url"),
            (json!({"url": "not a url"}), "input.url"),
            (json!({"url": "http://h/", "method": "G T"}), "input.method"),
            (
                json!({"url": "http://h/", "headers": {"a b": "1"}}),
                "input.headers.a b",
            ),
            (
                json!({"url": "http://h/", "headers": {"a": "x\ny"}}),
                "input.headers.a",
            ),
            (
                json!({"url": "http://h/", "timeout_ms": 0}),
                "input.timeout_ms",
            ),
        ] {
            let error = parse(&input(bad.clone()))
                .err()
                .unwrap_or_else(|| panic!("{bad} is refused"));
            assert_eq!(error.field, field, "{bad}");
        }
    }

    #[test]
    fn answers_are_judged_by_status() {
        let answer = json!({"status": 0, "headers": {}, "body": "boom"});
        assert!(judge("GET x", StatusCode::OK, answer.clone()).is_ok());
        assert!(judge("GET x", StatusCode::FOUND, answer.clone()).is_ok());
        let server = judge("GET x", StatusCode::BAD_GATEWAY, answer.clone()).unwrap_err();
        assert!(server.retryable);
        assert!(server.message.contains("502") && server.message.contains("boom"));
        assert!(
            !judge("GET x", StatusCode::NOT_FOUND, answer.clone())
                .unwrap_err()
                .retryable
        );
        assert!(
            judge("GET x", StatusCode::TOO_MANY_REQUESTS, answer)
                .unwrap_err()
                .retryable
        );
    }
}
