//! The domain: what a task is, the names it carries, and the states it moves through.
//!
//! Nothing here knows HTTP or SQL. Types carry their guarantees: once a string became a
//! [`QueueName`] or a [`Kind`], nobody checks it again.

mod deps;
mod id;
mod lifecycle;
mod moves;
mod names;
mod schedule;
mod state;
mod trace;
mod wording;

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use deps::{AfterPolicy, MAX_PARENTS, ParentOutcome, ParentRef, Settled, settle};
pub use id::{TaskId, TaskIdError};
pub use lifecycle::{
    AttemptEnd, attempt_deadline, end_attempt, expire_attempt, lose_attempt, timeout_error,
};
pub use moves::Move;
pub use names::{Kind, NameError, QueueName, ScheduleName};
pub use schedule::{CatchUp, Cron, CronError, Overlap, Schedule, TaskTemplate};
pub use state::{TaskState, Transition};
pub use trace::{MAX_TRACESTATE, TraceContext, TraceParent, new_span_id, parse_tracestate};
pub use wording::plain_serde_message;

/// Milliseconds since the Unix epoch: how the store keeps every instant.
pub type Millis = i64;

/// The current wall-clock time in milliseconds: the one clock every backoff, timeout, lease
/// and schedule reads.
///
/// It is the system's wall clock moved by how far tokio's clock is from the monotonic one.
/// In a running server the two agree, so this is plain wall time; in a test runtime whose time
/// is paused (`#[tokio::test(start_paused = true)]`, `tokio::time::advance`), wall time moves
/// exactly as the test moves tokio's clock, so no test sleeps to see time pass. Code off the
/// runtime (the SQLite writer thread) reads the plain wall clock: callers there are handed
/// `now` instead.
pub fn now_millis() -> Millis {
    Utc::now().timestamp_millis() + clock_ahead_millis()
}

/// How far `now_millis` is ahead of the wall clock: 0 in a running server, what a test moved
/// tokio's clock by in a paused one. Read on the runtime and handed to code off it, it lets
/// that code read the time when it acts ([`now_millis_ahead`]) rather than when it was asked.
pub fn clock_ahead_millis() -> i64 {
    let monotonic = std::time::Instant::now();
    let driven = tokio::time::Instant::now().into_std();
    match driven.checked_duration_since(monotonic) {
        Some(ahead) => ahead.as_millis() as i64,
        None => -(monotonic.duration_since(driven).as_millis() as i64),
    }
}

/// `now_millis` off the runtime, given [`clock_ahead_millis`] read on it.
pub fn now_millis_ahead(ahead: i64) -> Millis {
    Utc::now().timestamp_millis() + ahead
}

/// A submission that passed the edge: names are valid, the input is JSON, the options are in
/// range. Whether the kind exists and the input fits it is the engine's question.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    /// The id to store it under; `None`: a new one when it is stored. Set by a submit that
    /// waits for the task, to subscribe to its end before storing it.
    pub id: Option<TaskId>,
    pub queue: QueueName,
    pub kind: Kind,
    /// Shared, not copied, by the task it becomes and the answer that echoes it: an input may
    /// be as large as a request body (`--max-body-bytes`).
    pub input: Arc<Value>,
    /// Higher runs first within a queue; FIFO among equals.
    pub priority: i32,
    pub max_attempts: u32,
    pub backoff: Backoff,
    /// How long one attempt may run; `None`: no limit.
    pub timeout_ms: Option<u64>,
    /// Not before this instant: the task starts `scheduled`.
    pub run_at: Option<Millis>,
    pub labels: Labels,
    pub idempotency: Option<Idempotency>,
    /// Where to POST the finished task; `None`: the queue's default callback, if any.
    pub callback: Option<Callback>,
    /// The trace its attempts join (W3C Trace Context); `None`: not traced.
    pub trace: Option<TraceContext>,
    /// The parents it waits for; empty: none, it starts at once.
    pub after: Vec<ParentRef>,
    pub after_policy: AfterPolicy,
    /// The parent whose result becomes its input when it is released.
    pub input_from: Option<ParentRef>,
}

impl NewTask {
    /// A task with every option at its default.
    pub fn new(queue: QueueName, kind: Kind, input: Value) -> NewTask {
        NewTask {
            id: None,
            queue,
            kind,
            input: Arc::new(input),
            priority: 0,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff: Backoff::default(),
            timeout_ms: None,
            run_at: None,
            labels: Labels::new(),
            idempotency: None,
            callback: None,
            trace: None,
            after: Vec::new(),
            after_policy: AfterPolicy::default(),
            input_from: None,
        }
    }
}

impl NewTask {
    /// The task this submission becomes when stored at `now`: `scheduled` if its time is
    /// still to come, else `queued`; `default_callback` (its queue's) if it brings none.
    /// Also returns the digest of its idempotent request, which is stored but never served.
    pub fn into_task(
        self,
        now: Millis,
        default_callback: Option<Callback>,
    ) -> (Task, Option<String>) {
        let run_at = self.run_at.filter(|at| *at > now);
        let task = Task {
            id: self.id.unwrap_or_default(),
            state: if run_at.is_some() {
                TaskState::Scheduled
            } else {
                TaskState::Queued
            },
            queue: self.queue,
            kind: self.kind,
            input: self.input,
            priority: self.priority,
            attempt: 0,
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            timeout_ms: self.timeout_ms,
            run_at,
            labels: self.labels,
            cancel_requested: false,
            result: None,
            error: None,
            errors: Vec::new(),
            progress: None,
            callback: self.callback.or(default_callback),
            callback_status: None,
            after: Vec::new(),
            after_policy: None,
            input_from: None,
            idempotency_key: self.idempotency.as_ref().map(|i| i.key.clone()),
            created_at: now,
            started_at: None,
            finished_at: None,
            lease: None,
            trace: self.trace,
        };
        (task, self.idempotency.map(|i| i.request_hash))
    }
}

/// How many attempts a task gets when the submit does not say.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// String labels, filterable in listings.
pub type Labels = std::collections::BTreeMap<String, String>;

/// An `Idempotency-Key` and a digest of the request it came with: a repeat with the same key
/// and digest replays the first task; the same key with another digest is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    pub key: String,
    pub request_hash: String,
}

/// Exponential backoff between attempts: `min(cap, base · 2^(attempt−1))`, then jittered
/// into its upper half so that retries of many tasks failing together spread out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    pub base_ms: u64,
    pub cap_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base_ms: 1_000,
            cap_ms: 3_600_000,
        }
    }
}

impl Backoff {
    /// The delay after failed attempt number `attempt` (1-based); `jitter` is in [0, 1].
    pub fn delay_ms(&self, attempt: u32, jitter: f64) -> u64 {
        let exponent = attempt.saturating_sub(1).min(62);
        let full = self
            .base_ms
            .saturating_mul(1u64 << exponent)
            .min(self.cap_ms);
        let jitter = jitter.clamp(0.0, 1.0);
        full / 2 + ((full / 2) as f64 * jitter) as u64
    }
}

/// Why an attempt failed, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskError {
    /// A stable, machine-readable kind of failure (`handler_error`, `timeout`, `panic`, ...).
    #[serde(rename = "type")]
    pub error_type: String,
    pub message: String,
}

/// A completion webhook: the finished task is POSTed to `url`, signed with `secret` per the
/// Standard Webhooks convention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Callback {
    pub url: String,
    /// `whsec_` + base64 key bytes (or any string, used as the key as is). Never served.
    #[serde(skip_serializing)]
    pub secret: Option<String>,
}

/// How far a running attempt got, as its handler last reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// 0 to 100.
    pub percent: f64,
    pub message: Option<String>,
    #[serde(with = "rfc3339")]
    pub at: Millis,
}

impl Progress {
    /// A reported percent as it is recorded: within 0–100 (not a number: 0) and rounded to
    /// two decimals, so that `1.9999999999999996e-7` — a handler's float arithmetic —
    /// is kept as `0`, and `33.33333333333333` as `33.33`.
    pub fn tidy_percent(percent: f64) -> f64 {
        if !percent.is_finite() {
            return 0.0;
        }
        // `+ 0.0` turns a rounded -0.0 into 0.0.
        ((percent.clamp(0.0, 100.0) * 100.0).round() / 100.0) + 0.0
    }
}

/// One entry of the event log: a state change or a progress report of one task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskEvent {
    /// Monotonic per database; the SSE event id and resume point.
    pub seq: i64,
    pub task_id: TaskId,
    pub queue: QueueName,
    pub kind: Kind,
    pub state: TaskState,
    pub attempt: u32,
    pub progress: Option<Progress>,
    #[serde(with = "rfc3339")]
    pub at: Millis,
}

/// One failed attempt in a task's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptError {
    pub attempt: u32,
    #[serde(rename = "type")]
    pub error_type: String,
    pub message: String,
    #[serde(with = "rfc3339")]
    pub at: Millis,
}

/// A task as stored and as served: the future keyed by its id.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Task {
    pub id: TaskId,
    pub queue: QueueName,
    pub kind: Kind,
    /// Shared by the clones of a task (waiters, events, answers); see [`NewTask::input`].
    pub input: Arc<Value>,
    pub state: TaskState,
    pub priority: i32,
    /// How many times the task was started; the running attempt's number while running.
    pub attempt: u32,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub timeout_ms: Option<u64>,
    /// When a scheduled task becomes due.
    #[serde(with = "rfc3339_opt")]
    pub run_at: Option<Millis>,
    pub labels: Labels,
    /// Set once a cancel was asked of a running task; the attempt then ends `cancelled`.
    pub cancel_requested: bool,
    pub result: Option<Value>,
    /// The final error, once failed.
    pub error: Option<TaskError>,
    /// Every failed attempt, oldest first; kept across retries.
    pub errors: Vec<AttemptError>,
    /// The last progress report of the current (or last) attempt.
    pub progress: Option<Progress>,
    /// The completion webhook (its secret is never served).
    pub callback: Option<Callback>,
    /// `pending`, `delivered` or `failed` once the task ended with a callback.
    pub callback_status: Option<String>,
    /// The parents it waited (or waits) for, in the order named; empty: none.
    pub after: Vec<TaskId>,
    /// Set when it has parents.
    pub after_policy: Option<AfterPolicy>,
    /// The parent whose result became its input.
    pub input_from: Option<TaskId>,
    #[serde(skip)]
    pub idempotency_key: Option<String>,
    #[serde(with = "rfc3339")]
    pub created_at: Millis,
    #[serde(with = "rfc3339_opt")]
    pub started_at: Option<Millis>,
    #[serde(with = "rfc3339_opt")]
    pub finished_at: Option<Millis>,
    /// The lease of the running attempt; never served.
    #[serde(skip)]
    pub lease: Option<Lease>,
    /// The span its attempts are children of, and the caller's `tracestate`.
    #[serde(skip)]
    pub trace: Option<TraceContext>,
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
    /// `retryable: false` ends the task at once, whatever attempts are left.
    Failed {
        error: TaskError,
        retryable: bool,
    },
    Cancelled,
}

/// An instant as RFC 3339 with milliseconds, UTC — the form every served time takes.
pub fn rfc3339_string(ms: Millis) -> String {
    with_rfc3339(ms, str::to_owned)
}

/// Hands `ms` as [`rfc3339_string`]'s text to `f`, from a buffer on the stack for years 0 to
/// 9999 (every instant taskd stores), from chrono's formatter beyond.
fn with_rfc3339<R>(ms: Millis, f: impl FnOnce(&str) -> R) -> R {
    let mut text = [0; RFC3339_LEN];
    match write_rfc3339(ms, &mut text) {
        Some(text) => f(text),
        None => f(&to_datetime(ms).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
    }
}

/// `2026-12-01T09:57:37.912Z`: the length of every instant of years 0 to 9999.
const RFC3339_LEN: usize = 24;

/// Writes `ms` as [`rfc3339_string`] does, into `out` rather than a new string (a served task
/// has three instants; chrono's formatter allocates and goes through `fmt` for each). `None`
/// outside years 0 to 9999, whose text is longer: chrono writes those.
fn write_rfc3339(ms: Millis, out: &mut [u8; RFC3339_LEN]) -> Option<&str> {
    const MS_PER_DAY: i64 = 86_400_000;
    let (days, in_day) = (ms.div_euclid(MS_PER_DAY), ms.rem_euclid(MS_PER_DAY));
    // Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's `civil_from_days`):
    // eras of 400 years, each year starting on 1 March so that the leap day comes last.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        return None;
    }
    let fields = [
        (0, 4, year),
        (5, 2, month),
        (8, 2, day),
        (11, 2, in_day / 3_600_000),
        (14, 2, in_day / 60_000 % 60),
        (17, 2, in_day / 1000 % 60),
        (20, 3, in_day % 1000),
    ];
    for (at, width, mut value) in fields {
        for place in out[at..at + width].iter_mut().rev() {
            *place = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    for (at, separator) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')] {
        out[at] = separator;
    }
    out[19] = b'.';
    out[23] = b'Z';
    std::str::from_utf8(out).ok()
}

fn to_datetime(ms: Millis) -> DateTime<Utc> {
    // Every stored instant came from `now_millis`, well inside chrono's range.
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

mod rfc3339 {
    use super::Millis;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &Millis, s: S) -> Result<S::Ok, S::Error> {
        super::with_rfc3339(*ms, |text| s.serialize_str(text))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Millis, D::Error> {
        let text = String::deserialize(d)?;
        chrono::DateTime::parse_from_rfc3339(&text)
            .map(|at| at.timestamp_millis())
            .map_err(serde::de::Error::custom)
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
    fn percents_are_recorded_without_float_noise() {
        use super::Progress;
        assert_eq!(Progress::tidy_percent(1.999_999_999_999_999_6e-7), 0.0);
        assert_eq!(Progress::tidy_percent(100.0 / 3.0), 33.33);
        assert_eq!(Progress::tidy_percent(49.999_999_999_999_99), 50.0);
        assert_eq!(Progress::tidy_percent(150.0), 100.0);
        assert_eq!(Progress::tidy_percent(f64::NAN), 0.0);
        assert_eq!(Progress::tidy_percent(-0.001).to_string(), "0");
    }

    #[test]
    fn instants_are_written_as_chrono_writes_them() {
        use chrono::{SecondsFormat, TimeZone, Utc};
        let chrono = |ms| {
            Utc.timestamp_millis_opt(ms)
                .single()
                .unwrap()
                .to_rfc3339_opts(SecondsFormat::Millis, true)
        };
        // Around the epoch, leap days and centuries, the ends of years 0 and 9999, now.
        let mut instants = vec![
            0,
            -1,
            1,
            951_782_400_000,
            951_868_799_999,
            4_107_542_400_000,
            -62_167_219_200_000,
            253_402_300_799_999,
            1_796_118_457_912,
        ];
        let mut ms: i64 = -62_167_219_200_000;
        while ms < 253_402_300_799_999 {
            instants.push(ms);
            ms += 7_919_999_999_999 / 9_973 + 86_399_999;
        }
        for ms in instants {
            assert_eq!(super::rfc3339_string(ms), chrono(ms), "{ms}");
        }
        // Beyond year 9999 or before year 0, chrono's longer text.
        for ms in [253_402_300_800_000, -62_167_219_200_001] {
            assert_eq!(super::rfc3339_string(ms), chrono(ms), "{ms}");
        }
    }

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
