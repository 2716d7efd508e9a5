//! The domain: what a task is, the names it carries, and the states it moves through.
//!
//! Nothing here knows HTTP or SQL. Types carry their guarantees: once a string became a
//! [`QueueName`] or a [`Kind`], nobody checks it again.

mod id;
mod names;
mod state;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use id::{TaskId, TaskIdError};
pub use names::{Kind, NameError, QueueName};
pub use state::{TaskState, Transition};

/// Milliseconds since the Unix epoch: how the store keeps every instant.
pub type Millis = i64;

/// The current wall-clock time in milliseconds.
pub fn now_millis() -> Millis {
    Utc::now().timestamp_millis()
}

/// A submission that passed the edge: names are valid, the input is JSON.
/// Whether the kind exists and the input fits it is the engine's question.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    pub queue: QueueName,
    pub kind: Kind,
    pub input: Value,
}

/// Why an attempt failed, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskError {
    /// A stable, machine-readable kind of failure (`handler_error`, `panic`, `fail`, ...).
    #[serde(rename = "type")]
    pub error_type: String,
    pub message: String,
}

/// A task as stored and as served: the future keyed by its id.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Task {
    pub id: TaskId,
    pub queue: QueueName,
    pub kind: Kind,
    pub input: Value,
    pub state: TaskState,
    /// How many times the task was started; the running attempt's number while running.
    pub attempt: u32,
    /// Set once a cancel was asked of a running task; the attempt then ends `cancelled`.
    pub cancel_requested: bool,
    pub result: Option<Value>,
    pub error: Option<TaskError>,
    #[serde(with = "rfc3339")]
    pub created_at: Millis,
    #[serde(with = "rfc3339_opt")]
    pub started_at: Option<Millis>,
    #[serde(with = "rfc3339_opt")]
    pub finished_at: Option<Millis>,
    /// The lease of the running attempt; never served.
    #[serde(skip)]
    pub lease: Option<Lease>,
}

/// Proof of ownership of one running attempt. Every write that ends the attempt names it,
/// so a stale owner can never overwrite the outcome of the current one (fencing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub token: String,
    pub expires_at: Millis,
}

/// How an attempt ended, as the executor reports it to the store.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded(Value),
    Failed(TaskError),
    Cancelled,
}

impl Outcome {
    /// The terminal state this outcome leads to.
    pub fn state(&self) -> TaskState {
        match self {
            Outcome::Succeeded(_) => TaskState::Succeeded,
            Outcome::Failed(_) => TaskState::Failed,
            Outcome::Cancelled => TaskState::Cancelled,
        }
    }
}

fn to_datetime(ms: Millis) -> DateTime<Utc> {
    // Every stored instant came from `now_millis`, well inside chrono's range.
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

mod rfc3339 {
    use super::{Millis, to_datetime};
    use chrono::SecondsFormat;
    use serde::Serializer;

    pub fn serialize<S: Serializer>(ms: &Millis, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&to_datetime(*ms).to_rfc3339_opts(SecondsFormat::Millis, true))
    }
}

mod rfc3339_opt {
    use super::Millis;
    use serde::Serializer;

    pub fn serialize<S: Serializer>(ms: &Option<Millis>, s: S) -> Result<S::Ok, S::Error> {
        match ms {
            Some(ms) => super::rfc3339::serialize(ms, s),
            None => s.serialize_none(),
        }
    }
}

/// Where a deserialization error points, as a dotted path below `prefix`: the path serde
/// reports, plus — for a missing field, which serde reports at the parent — the field its
/// message names.
pub fn error_field(prefix: &str, path: &str, message: &str) -> String {
    let named = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    let mut parts: Vec<&str> = Vec::new();
    if !prefix.is_empty() {
        parts.push(prefix);
    }
    if path != "." && !path.is_empty() {
        parts.push(path);
    }
    if let Some(name) = named {
        parts.push(name);
    }
    if parts.is_empty() {
        "body".to_owned()
    } else {
        parts.join(".")
    }
}

#[cfg(test)]
mod tests {
    use super::error_field;

    #[test]
    fn error_fields_name_the_field() {
        assert_eq!(error_field("input", ".", "missing field `ms`"), "input.ms");
        assert_eq!(error_field("input", "ms", "invalid type"), "input.ms");
        assert_eq!(
            error_field("", "bogus", "unknown field `bogus`, expected"),
            "bogus"
        );
        assert_eq!(error_field("", ".", "invalid type: sequence"), "body");
        assert_eq!(error_field("input", ".", "invalid type: null"), "input");
    }
}
