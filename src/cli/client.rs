//! The HTTP side of the client subcommands (`taskd submit`, `get`, `list`, `watch`, `bulk`…):
//! where the server is, the API key, and how an answer that is not a success becomes a message
//! a person can act on (the server's problem+json `title`, `detail` and field errors; for a
//! server that cannot be reached, its URL and the cause). It speaks only the public HTTP API,
//! like any other client.

use std::fmt;
use std::time::Duration;

use clap::Args;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::Value;

/// How long connecting may take; requests themselves have no overall limit (long-polls last
/// up to a minute and event streams for ever).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The options every client subcommand takes.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// The taskd server (the default is where `taskd serve` listens by default).
    #[arg(long, env = "TASKD_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// An API key, sent as `Authorization: Bearer`; never printed.
    #[arg(long, env = "TASKD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Print the server's JSON, one compact document per line, instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Why a client command could not do what it was asked.
#[derive(Debug)]
pub enum CliError {
    /// No answer at all: refused, unresolvable, reset.
    Unreachable { url: String, cause: String },
    /// The server answered with an error; its problem+json, read.
    Problem(Problem),
    /// Bad local input: a file that cannot be read, an `--input` that is not JSON.
    Input(String),
}

/// The parts of an RFC 9457 answer worth showing.
#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub title: String,
    /// The stable machine-readable `code` (`task_not_found`).
    pub code: Option<String>,
    pub detail: Option<String>,
    /// `(field, message)` of each entry of `errors`, with the batch index where there is one.
    pub errors: Vec<(String, String, Option<u64>)>,
    /// The server's `Retry-After`, on 429 and 503.
    pub retry_after: Option<Duration>,
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Unreachable { url, cause } => {
                write!(f, "cannot reach the taskd server at {url}: {cause}")
            }
            CliError::Input(message) => f.write_str(message),
            CliError::Problem(problem) => {
                write!(f, "{} ({}", problem.title, problem.status.as_u16())?;
                match &problem.code {
                    Some(code) => write!(f, " {code})")?,
                    None => f.write_str(")")?,
                }
                if let Some(detail) = &problem.detail {
                    write!(f, ": {detail}")?;
                }
                // A field error the detail already says is not said twice.
                let said = |message: &str| {
                    problem
                        .detail
                        .as_deref()
                        .is_some_and(|detail| detail.contains(message))
                };
                for (field, message, index) in &problem.errors {
                    if said(message) {
                        continue;
                    }
                    match index {
                        Some(index) => write!(f, "\n  item {index}: {field}: {message}")?,
                        None => write!(f, "\n  {field}: {message}")?,
                    }
                }
                Ok(())
            }
        }
    }
}

/// A success answer: its status, headers and JSON body (`Null` when there is none).
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

/// A client of one taskd server.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    api_key: Option<String>,
}

impl Client {
    pub fn new(connection: &Connection) -> Result<Client, CliError> {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| CliError::Input(format!("cannot set up HTTP: {e}")))?;
        Ok(Client {
            http,
            base: connection.url.trim_end_matches('/').to_owned(),
            api_key: connection.api_key.clone(),
        })
    }

    /// The full URL of an API path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request to `path`, carrying the key.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, self.url(path));
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// Sends a request; a 2xx answer comes back, anything else as [`CliError`].
    pub async fn send(&self, request: RequestBuilder) -> Result<Answer, CliError> {
        let response = self.open(request).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.map_err(|e| self.unreachable(&e))?;
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        if status.is_success() || status == StatusCode::NOT_MODIFIED {
            Ok(Answer {
                status,
                headers,
                body,
            })
        } else {
            Err(CliError::Problem(problem(status, &headers, &body)))
        }
    }

    /// Sends a request and hands back the open response of a 2xx answer (for streams).
    pub async fn open(&self, request: RequestBuilder) -> Result<reqwest::Response, CliError> {
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let headers = response.headers().clone();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        Err(CliError::Problem(problem(status, &headers, &body)))
    }

    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        Ok(self.send(self.request(Method::GET, path)).await?.body)
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        Ok(self
            .send(self.request(Method::POST, path).json(body))
            .await?
            .body)
    }

    /// The error of a request that got no answer, with the innermost cause ("Connection
    /// refused"), which is what a person needs, rather than reqwest's outer wrapping.
    fn unreachable(&self, error: &reqwest::Error) -> CliError {
        let mut cause: &dyn std::error::Error = error;
        while let Some(inner) = cause.source() {
            cause = inner;
        }
        CliError::Unreachable {
            url: self.base.clone(),
            cause: cause.to_string(),
        }
    }
}

/// Reads an error answer: problem+json when the server sent it, else the status and text.
fn problem(status: StatusCode, headers: &HeaderMap, body: &Value) -> Problem {
    let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::to_owned);
    let errors = body
        .get("errors")
        .and_then(Value::as_array)
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    let field = e.get("field").and_then(Value::as_str).unwrap_or("");
                    let message = e.get("message").and_then(Value::as_str).unwrap_or("");
                    let index = e.get("index").and_then(Value::as_u64);
                    (field.to_owned(), message.to_owned(), index)
                })
                .collect()
        })
        .unwrap_or_default();
    let retry_after = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    Problem {
        status,
        title: text("title").unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("error answer")
                .to_owned()
        }),
        code: text("code"),
        detail: text("detail").or_else(|| body.as_str().map(str::to_owned)),
        errors,
        retry_after,
    }
}
