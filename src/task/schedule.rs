//! Schedules: a cron expression in a time zone that submits a task at each of its slots.
//!
//! Pure domain, no store and no clock: [`Cron`] answers which instants are slots, and
//! [`Schedule::slot_to_fire`] decides, given the time it is handed, which slot (if any) fires
//! now and where the schedule's next slot lies. The engine's maintainer asks; the store keeps.
//!
//! A slot fires at most once, whichever node fires it: the fired task's idempotency key is
//! [`Schedule::slot_key`], so two nodes firing one slot store one task.

use chrono::{DateTime, TimeZone, Utc};
use croner::parser::{CronParser, Seconds};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Backoff, Kind, Labels, Millis, NewTask, QueueName, ScheduleName, TaskId, TaskState};

/// How late a slot may still fire under `catch_up: "none"`: a slot missed by more than this
/// (the server was down, or busy) is skipped. Wide enough for a maintainer pass on a loaded
/// machine, far below any useful period of a schedule that cares.
pub const ON_TIME_GRACE_MS: Millis = 10_000;

/// How far the search for a slot looks: a cron that matches no instant within it (Feb 30)
/// is refused when written.
const HORIZON_YEARS: i32 = 10;
/// 2000-01-01T00:00:00Z: where the search for a first slot starts when a cron is checked.
const REFERENCE: Millis = 946_684_800_000;

/// A parsed cron expression with its time zone.
#[derive(Debug, Clone)]
pub struct Cron {
    cron: croner::Cron,
    zone: chrono_tz::Tz,
}

/// Why a cron or a time zone was refused; the field and the value, in plain words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("`{expression}` is not a cron expression ({why})")]
    Expression { expression: String, why: String },
    #[error("`{0}` is not an IANA time zone (such as `UTC` or `Europe/Paris`)")]
    Zone(String),
    #[error("`{0}` matches no instant in the next {HORIZON_YEARS} years")]
    Never(String),
}

impl Cron {
    /// Five fields (minute hour day month weekday) or six with seconds first; `timezone` is
    /// an IANA name in which the fields are read.
    pub fn parse(expression: &str, timezone: &str) -> Result<Cron, CronError> {
        let zone: chrono_tz::Tz = timezone
            .parse()
            .map_err(|_| CronError::Zone(timezone.to_owned()))?;
        let fields = expression.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(CronError::Expression {
                expression: expression.to_owned(),
                why: format!("it has {fields} fields; give 5, or 6 with seconds first"),
            });
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(expression)
            .map_err(|error| CronError::Expression {
                expression: expression.to_owned(),
                why: error.to_string(),
            })?;
        let parsed = Cron { cron, zone };
        // From a fixed instant, not the clock: whether a cron ever matches does not depend
        // on when it is asked.
        if parsed.after(REFERENCE).is_none() {
            return Err(CronError::Never(expression.to_owned()));
        }
        Ok(parsed)
    }

    /// The first slot strictly after `at`.
    pub fn after(&self, at: Millis) -> Option<Millis> {
        let start = self.zone.from_utc_datetime(&millis_utc(at)?.naive_utc());
        let next = self.cron.find_next_occurrence(&start, false).ok()?;
        let limit = start.with_timezone(&Utc) + chrono::Duration::days(366 * HORIZON_YEARS as i64);
        (next.with_timezone(&Utc) <= limit).then(|| next.timestamp_millis())
    }

    /// The last slot at or before `at`.
    pub fn at_or_before(&self, at: Millis) -> Option<Millis> {
        let start = self.zone.from_utc_datetime(&millis_utc(at)?.naive_utc());
        let previous = self.cron.find_previous_occurrence(&start, true).ok()?;
        Some(previous.timestamp_millis())
    }

    /// The next `n` slots after `at`.
    pub fn upcoming(&self, at: Millis, n: usize) -> Vec<Millis> {
        let mut slots = Vec::with_capacity(n);
        let mut from = at;
        while slots.len() < n {
            let Some(next) = self.after(from) else { break };
            slots.push(next);
            from = next;
        }
        slots
    }
}

fn millis_utc(at: Millis) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(at)
}

/// Whether a slot fires while the schedule's previous run is unfinished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// The slot is skipped (the default): one run at a time.
    #[default]
    Skip,
    /// The slot fires anyway.
    Allow,
}

/// Which missed slots fire after the server was down (or the schedule paused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// The latest missed slot fires, however late; earlier ones are skipped (the default).
    #[default]
    Latest,
    /// A slot fires only within [`ON_TIME_GRACE_MS`] of its time.
    None,
}

impl Overlap {
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Allow => "allow",
        }
    }

    pub fn parse(text: &str) -> Option<Overlap> {
        [Overlap::Skip, Overlap::Allow]
            .into_iter()
            .find(|o| o.as_str() == text)
    }
}

impl CatchUp {
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::Latest => "latest",
            CatchUp::None => "none",
        }
    }

    pub fn parse(text: &str) -> Option<CatchUp> {
        [CatchUp::Latest, CatchUp::None]
            .into_iter()
            .find(|c| c.as_str() == text)
    }
}

/// The task a schedule submits at each slot: the options of a submit that make sense for a
/// repeated task (no `run_at`: the slot is the time; no callback: its secret would be
/// shown with the schedule, so the queue's default callback applies).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskTemplate {
    pub queue: QueueName,
    pub kind: Kind,
    pub input: Value,
    pub priority: i32,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub timeout_ms: Option<u64>,
    pub labels: Labels,
}

impl TaskTemplate {
    /// The template of a parsed submission (its `run_at`, idempotency and callback dropped).
    pub fn of(task: NewTask) -> TaskTemplate {
        TaskTemplate {
            queue: task.queue,
            kind: task.kind,
            input: std::sync::Arc::unwrap_or_clone(task.input),
            priority: task.priority,
            max_attempts: task.max_attempts,
            backoff: task.backoff,
            timeout_ms: task.timeout_ms,
            labels: task.labels,
        }
    }
}

/// A stored schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub name: ScheduleName,
    /// As written; `cron()` parses it.
    pub cron: String,
    pub timezone: String,
    pub task: TaskTemplate,
    pub overlap: Overlap,
    pub catch_up: CatchUp,
    pub paused: bool,
    /// The next slot not yet fired or skipped.
    pub next_at: Millis,
    /// The task of the latest fired slot, and that slot.
    pub last_task: Option<TaskId>,
    pub last_slot_at: Option<Millis>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// What a maintainer pass does with one due schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firing {
    /// The slot to fire now, if any.
    pub slot: Option<Millis>,
    /// The schedule's next slot after this pass.
    pub next_at: Millis,
}

/// The labels every fired task carries: `schedule=NAME` and `schedule_slot=SLOT` (RFC 3339).
pub const SCHEDULE_LABEL: &str = "schedule";
pub const SLOT_LABEL: &str = "schedule_slot";

impl Schedule {
    pub fn cron(&self) -> Result<Cron, CronError> {
        Cron::parse(&self.cron, &self.timezone)
    }

    /// Which slot fires at `now`, given the schedule is due (`next_at <= now`): the latest
    /// slot at or before `now` (the ones before it were missed: skipped), unless `catch_up`
    /// is `none` and that slot is older than the grace. `None` if no later slot exists.
    pub fn slot_to_fire(&self, cron: &Cron, now: Millis) -> Option<Firing> {
        let latest = cron
            .at_or_before(now)
            .unwrap_or(self.next_at)
            .max(self.next_at);
        let on_time = now - latest <= ON_TIME_GRACE_MS;
        let slot = match self.catch_up {
            CatchUp::Latest => Some(latest),
            CatchUp::None => on_time.then_some(latest),
        };
        let next_at = cron.after(now.max(latest))?;
        Some(Firing { slot, next_at })
    }

    /// Whether a slot is skipped because the previous run is unfinished.
    pub fn skips_for(&self, last_state: Option<TaskState>) -> bool {
        self.overlap == Overlap::Skip && last_state.is_some_and(|state| !state.is_terminal())
    }

    /// The idempotency key of the task fired for `slot`: one task per slot, on any node.
    pub fn slot_key(&self, slot: Millis) -> String {
        format!("schedule:{}:{}", self.name, super::rfc3339_string(slot))
    }

    /// The task fired for `slot`, labelled with its schedule and slot, idempotent by the slot. The
    /// digest binds the key to the template, so a replay on another node of the same slot
    /// matches, and a template changed in between is a conflict, not a second task.
    pub fn task_for(&self, slot: Millis) -> NewTask {
        let t = self.task.clone();
        let mut labels = t.labels;
        labels.insert(SCHEDULE_LABEL.to_owned(), self.name.to_string());
        labels.insert(SLOT_LABEL.to_owned(), super::rfc3339_string(slot));
        let digest = {
            use sha2::{Digest, Sha256};
            let template = serde_json::to_vec(&self.task).unwrap_or_default();
            hex::encode(Sha256::digest(&template))
        };
        NewTask {
            priority: t.priority,
            max_attempts: t.max_attempts,
            backoff: t.backoff,
            timeout_ms: t.timeout_ms,
            labels,
            idempotency: Some(super::Idempotency {
                key: self.slot_key(slot),
                request_hash: digest,
            }),
            ..NewTask::new(t.queue, t.kind, t.input)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Millis {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_millis()
    }

    fn schedule(cron: &str, catch_up: CatchUp, next_at: Millis) -> Schedule {
        Schedule {
            name: ScheduleName::parse("s").unwrap(),
            cron: cron.to_owned(),
            timezone: "UTC".to_owned(),
            task: TaskTemplate::of(NewTask::new(
                QueueName::default(),
                Kind::parse("echo").unwrap(),
                Value::Null,
            )),
            overlap: Overlap::Skip,
            catch_up,
            paused: false,
            next_at,
            last_task: None,
            last_slot_at: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    /// Five and six fields parse, seconds first; a bad field, count or zone is refused.
    #[test]
    fn crons_and_zones_are_checked() {
        let every_two = Cron::parse("*/2 * * * * *", "UTC").unwrap();
        assert_eq!(
            every_two.after(at("2030-01-01T00:00:00.500Z")),
            Some(at("2030-01-01T00:00:02Z"))
        );
        let daily = Cron::parse("0 9 * * *", "Europe/Paris").unwrap();
        assert_eq!(
            daily.after(at("2030-01-01T00:00:00Z")),
            Some(at("2030-01-01T08:00:00Z"))
        );
        assert!(matches!(
            Cron::parse("61 * * * *", "UTC"),
            Err(CronError::Expression { .. })
        ));
        assert!(matches!(
            Cron::parse("* * *", "UTC"),
            Err(CronError::Expression { .. })
        ));
        assert!(matches!(
            Cron::parse("* * * * *", "Mars/Olympus"),
            Err(CronError::Zone(zone)) if zone == "Mars/Olympus"
        ));
        assert!(Cron::parse("0 0 30 2 *", "UTC").is_err());
    }

    /// After downtime the latest missed slot fires and the next lies ahead; with
    /// `catch_up: none` a late slot is skipped.
    #[test]
    fn missed_slots_collapse_to_the_latest() {
        let cron = Cron::parse("0 * * * *", "UTC").unwrap();
        let next_at = at("2030-01-01T01:00:00Z");
        let now = at("2030-01-01T05:30:00Z");
        let latest = schedule("0 * * * *", CatchUp::Latest, next_at);
        assert_eq!(
            latest.slot_to_fire(&cron, now),
            Some(Firing {
                slot: Some(at("2030-01-01T05:00:00Z")),
                next_at: at("2030-01-01T06:00:00Z"),
            })
        );
        let none = schedule("0 * * * *", CatchUp::None, next_at);
        assert_eq!(none.slot_to_fire(&cron, now).unwrap().slot, None);
        let on_time = now - 30 * 60_000 + 1_000;
        assert_eq!(
            none.slot_to_fire(&cron, on_time).unwrap().slot,
            Some(at("2030-01-01T05:00:00Z"))
        );
    }

    /// One slot, one key; the fired task is labelled with its schedule.
    #[test]
    fn a_slot_has_one_key() {
        let s = schedule("* * * * *", CatchUp::Latest, 0);
        let task = s.task_for(at("2030-01-01T00:01:00Z"));
        let key = task.idempotency.unwrap().key;
        assert_eq!(key, "schedule:s:2030-01-01T00:01:00.000Z");
        assert_eq!(task.labels.get("schedule").map(String::as_str), Some("s"));
    }
}
