//! What both stores write alike, parameterised by [`Dialect`]: the state guard of every move
//! (rendered from `task::Move`, never listed by hand), the listing's filter, a queue's room
//! for a claim, the columns of a webhook try and the counts a queue reports.
//!
//! Each dialect file still owns its statements; this module only renders the pieces they
//! share, so a rule changes in one place. No connection or driver type here.

use std::collections::BTreeMap;

use super::{CallbackCounts, DeliveryOutcome, TaskFilter};
use crate::access::QueueScope;
use crate::task::{Millis, Move, TaskState};

/// How a database spells what differs between the two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// `?1`, ids as text, labels read with `json_extract`.
    Sqlite,
    /// `$1`, ids as `uuid`, labels matched as stored text (see [`label_needle`]).
    Postgres,
}

impl Dialect {
    pub(crate) fn placeholder(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres => format!("${n}"),
        }
    }

    /// A placeholder that holds a task id as text, as the id column compares.
    fn id(self, placeholder: String) -> String {
        match self {
            Dialect::Sqlite => placeholder,
            Dialect::Postgres => format!("{placeholder}::uuid"),
        }
    }
}

/// The guard of `to_do`: `column IN ('queued', 'scheduled')`, or `column = 'running'` for
/// one state. `column` is how the statement names the state (`state`, `tasks.state`, or
/// SQLite's `+state` that keeps an index out of the plan).
pub(crate) fn state_guard(column: &str, to_do: Move) -> String {
    match to_do.from_states() {
        [one] => format!("{column} = '{one}'"),
        states => {
            let quoted: Vec<String> = states.iter().map(|s| format!("'{s}'")).collect();
            format!("{column} IN ({})", quoted.join(", "))
        }
    }
}

/// A statement and its text parameters, numbered in order.
#[derive(Debug, Default)]
pub(crate) struct Bound {
    pub sql: String,
    pub values: Vec<String>,
}

impl Bound {
    /// Keeps `value` and answers its placeholder.
    fn bind(&mut self, dialect: Dialect, value: String) -> String {
        self.values.push(value);
        dialect.placeholder(self.values.len())
    }
}

/// `SELECT columns FROM tasks` narrowed by `filter`, newest first. Only the filters given
/// become conditions, so the database can pick the matching index.
pub(crate) fn task_list(dialect: Dialect, columns: &str, filter: &TaskFilter) -> Bound {
    let mut bound = Bound::default();
    let mut conditions: Vec<String> = Vec::new();
    if let Some(state) = filter.state {
        // Written out, not bound, so the database can match it against a partial index:
        // running tasks are in `tasks_lease` only, every other state in `tasks_state`
        // (migration 0011), whose predicate SQLite sees only when the query names it.
        conditions.push(format!("state = '{}'", state.as_str()));
        conditions.push(match state {
            TaskState::Running => "lease_expires_at IS NOT NULL".to_owned(),
            _ => "state <> 'running'".to_owned(),
        });
    }
    if let Some(kind) = &filter.kind {
        conditions.push(format!("kind = {}", bound.bind(dialect, kind.to_string())));
    }
    if let Some(queue) = &filter.queue {
        conditions.push(format!(
            "queue = {}",
            bound.bind(dialect, queue.to_string())
        ));
    }
    if let Some(scope) = queue_scope(&filter.queues, |v| bound.bind(dialect, v)) {
        conditions.push(scope);
    }
    if let Some((key, value)) = &filter.label {
        conditions.push(match dialect {
            // The key is quoted as a JSON path member, so any characters in it are safe.
            Dialect::Sqlite => {
                let path = bound.bind(dialect, format!("$.{}", to_json(key)));
                let value = bound.bind(dialect, value.clone());
                format!("json_extract(labels, {path}) = {value}")
            }
            Dialect::Postgres => {
                let needle = bound.bind(dialect, label_needle(key, value));
                format!(
                    "(strpos(labels, '{{' || {needle}) > 0 OR strpos(labels, ',' || {needle}) > 0)"
                )
            }
        });
    }
    if let Some(parent) = filter.parent {
        // `parents` is the JSON array of the ids the task named, each quoted: an id's quoted
        // text matches only itself. Not indexed: the scan stops at the page's size.
        let needle = bound.bind(dialect, format!("\"{parent}\""));
        conditions.push(match dialect {
            Dialect::Sqlite => format!("instr(parents, {needle}) > 0"),
            Dialect::Postgres => format!("strpos(parents, {needle}) > 0"),
        });
    }
    if let Some(before) = filter.before {
        let id = dialect.id(bound.bind(dialect, before.to_string()));
        conditions.push(format!("id < {id}"));
    }
    // SQLite, without statistics, would rather walk the key backwards for the newest running
    // tasks than sort the few of them: told to, it reads `tasks_lease`.
    let index = match (dialect, filter.state) {
        (Dialect::Sqlite, Some(TaskState::Running)) => " INDEXED BY tasks_lease",
        _ => "",
    };
    bound.sql = format!("SELECT {columns} FROM tasks{index}");
    if !conditions.is_empty() {
        bound.sql.push_str(" WHERE ");
        bound.sql.push_str(&conditions.join(" AND "));
    }
    bound
        .sql
        .push_str(&format!(" ORDER BY id DESC LIMIT {}", filter.limit));
    bound
}

/// `SELECT columns FROM schedules`, by name after `after`, of the queues in `queues`.
pub(crate) fn schedule_list(
    dialect: Dialect,
    columns: &str,
    after: Option<String>,
    limit: usize,
    queues: &QueueScope,
) -> Bound {
    let mut bound = Bound::default();
    let mut conditions: Vec<String> = Vec::new();
    if let Some(scope) = queue_scope(queues, |v| bound.bind(dialect, v)) {
        conditions.push(scope);
    }
    if let Some(after) = after {
        conditions.push(format!("name > {}", bound.bind(dialect, after)));
    }
    bound.sql = format!("SELECT {columns} FROM schedules");
    if !conditions.is_empty() {
        bound.sql.push_str(" WHERE ");
        bound.sql.push_str(&conditions.join(" AND "));
    }
    bound.sql.push_str(&format!(" ORDER BY name LIMIT {limit}"));
    bound
}

/// The condition that keeps a listing inside `queues`, `None` when it is every queue. A
/// prefix's length is our own number, written in as a literal.
fn queue_scope(queues: &QueueScope, mut bind: impl FnMut(String) -> String) -> Option<String> {
    let QueueScope::Only(patterns) = queues else {
        return None;
    };
    if patterns
        .iter()
        .any(|p| p.is_wildcard() && p.prefix().is_empty())
    {
        return None;
    }
    let alternatives: Vec<String> = patterns
        .iter()
        .map(|pattern| {
            let prefix = pattern.prefix();
            let value = bind(prefix.to_owned());
            if pattern.is_wildcard() {
                format!("substr(queue, 1, {}) = {value}", prefix.len())
            } else {
                format!("queue = {value}")
            }
        })
        .collect();
    // No pattern at all matches nothing.
    Some(if alternatives.is_empty() {
        "FALSE".to_owned()
    } else {
        format!("({})", alternatives.join(" OR "))
    })
}

/// The text a label `key: value` is stored as inside the labels column: `"key":"value"`.
///
/// PostgreSQL matches that text after a `{` or a `,` instead of casting the column to jsonb,
/// which would fail for every row whose labels hold "\u0000" (text keeps it; jsonb refuses).
/// It is exact: labels are always written by `to_json` from a map (compact, one form per
/// string), and a `{` or `,` followed by `"` can only stand outside a string.
fn label_needle(key: &str, value: &str) -> String {
    format!("{}:{}", to_json(&key), to_json(&value))
}

/// JSON text of our own plain data, as both stores keep it.
pub(crate) fn to_json(value: &impl serde::Serialize) -> String {
    // Serializing our own plain data (maps of strings, JSON values) cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

/// How many attempts a rate-limited queue may start now, with `started` of its log inside
/// the window.
pub(crate) fn rate_room(limit: i64, started: i64) -> u64 {
    (limit - started).max(0) as u64
}

/// How many tasks a queue may start now: its waiting tasks, capped by its concurrency less
/// what runs there.
pub(crate) fn claim_room(waiting: i64, running: i64, concurrency: Option<i64>) -> u64 {
    let room = match concurrency {
        Some(limit) => waiting.min((limit - running).max(0)),
        None => waiting,
    };
    room.max(0) as u64
}

/// The columns a webhook try writes: the delivery's state, the answer's status, the error
/// and when to try next.
pub(crate) struct DeliveryColumns<'a> {
    pub state: &'static str,
    pub status: Option<u16>,
    pub error: Option<&'a str>,
    pub next_at: Option<Millis>,
}

impl<'a> DeliveryColumns<'a> {
    pub(crate) fn of(outcome: &'a DeliveryOutcome) -> Self {
        let (state, status, error, next_at) = match outcome {
            DeliveryOutcome::Delivered { status } => ("delivered", Some(*status), None, None),
            DeliveryOutcome::Retry {
                status,
                error,
                next_at,
            } => ("pending", *status, Some(error.as_str()), Some(*next_at)),
            DeliveryOutcome::GaveUp { status, error } => {
                ("failed", *status, Some(error.as_str()), None)
            }
        };
        DeliveryColumns {
            state,
            status,
            error,
            next_at,
        }
    }
}

/// A queue's tasks per webhook state, from `(callback_status, count)` rows.
pub(crate) fn callback_counts(rows: impl IntoIterator<Item = (String, i64)>) -> CallbackCounts {
    let mut counts = CallbackCounts::default();
    for (status, n) in rows {
        let n = n.max(0) as u64;
        match status.as_str() {
            "pending" => counts.pending += n,
            "delivered" => counts.delivered += n,
            "failed" => counts.failed += n,
            _ => {}
        }
    }
    counts
}

/// A queue's tasks per state, every state present, from `(state, count)` rows.
pub(crate) fn state_counts(
    rows: impl IntoIterator<Item = (String, i64)>,
) -> BTreeMap<TaskState, u64> {
    let mut counts: BTreeMap<TaskState, u64> = TaskState::ALL.iter().map(|s| (*s, 0)).collect();
    for (state, n) in rows {
        if let Ok(state) = state.parse::<TaskState>() {
            *counts.entry(state).or_default() += n.max(0) as u64;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The states a rendered guard names, read back from its SQL text.
    fn guarded_states(guard: &str) -> Vec<TaskState> {
        TaskState::ALL
            .into_iter()
            .filter(|s| guard.contains(&format!("'{s}'")))
            .collect()
    }

    /// Every rendered guard admits exactly the states the state machine lets its move start
    /// from: the SQL of both stores is held to `TaskState::apply`.
    #[test]
    fn guards_agree_with_the_state_machine() {
        for to_do in Move::ALL {
            let guard = state_guard("state", to_do);
            let legal: Vec<TaskState> = TaskState::ALL
                .into_iter()
                .filter(|&s| to_do.starts_from(s))
                .collect();
            assert!(!legal.is_empty(), "{to_do:?} starts from nowhere");
            assert_eq!(guarded_states(&guard), legal, "{to_do:?}: {guard}");
        }
        assert_eq!(state_guard("+state", Move::Finish), "+state = 'running'");
        assert_eq!(
            state_guard("state", Move::Retry),
            "state IN ('failed', 'cancelled')"
        );
    }

    #[test]
    fn a_listing_numbers_its_placeholders_per_dialect() {
        let filter = TaskFilter {
            state: Some(TaskState::Queued),
            label: Some(("a".into(), "b".into())),
            before: Some(crate::task::TaskId::new()),
            limit: 5,
            ..TaskFilter::default()
        };
        let sqlite = task_list(Dialect::Sqlite, "id", &filter);
        assert!(
            sqlite.sql.contains("json_extract(labels, ?1) = ?2"),
            "{}",
            sqlite.sql
        );
        assert!(sqlite.sql.ends_with("id < ?3 ORDER BY id DESC LIMIT 5"));
        let postgres = task_list(Dialect::Postgres, "id", &filter);
        assert!(postgres.sql.contains("id < $2::uuid"), "{}", postgres.sql);
        assert_eq!(postgres.values.len(), 2);
        assert_eq!(sqlite.values.len(), 3);
    }

    /// A listing by state names the predicate of the partial index that holds that state
    /// (migration 0011): `tasks_lease` for running tasks, `tasks_state` for every other.
    #[test]
    fn a_listing_by_state_names_its_partial_index() {
        let by = |state, dialect| {
            let filter = TaskFilter {
                state: Some(state),
                limit: 5,
                ..TaskFilter::default()
            };
            task_list(dialect, "id", &filter)
        };
        for dialect in [Dialect::Sqlite, Dialect::Postgres] {
            for state in TaskState::ALL {
                let list = by(state, dialect);
                let wanted = match state {
                    TaskState::Running => "state = 'running' AND lease_expires_at IS NOT NULL",
                    _ => &format!("state = '{}' AND state <> 'running'", state.as_str()),
                };
                assert!(list.sql.contains(wanted), "{state:?}: {}", list.sql);
                assert!(list.values.is_empty(), "{state:?}: {:?}", list.values);
            }
        }
        let running = by(TaskState::Running, Dialect::Sqlite).sql;
        assert!(running.starts_with("SELECT id FROM tasks INDEXED BY tasks_lease WHERE"));
        assert!(
            !by(TaskState::Running, Dialect::Postgres)
                .sql
                .contains("INDEXED")
        );
    }

    #[test]
    fn label_needles_are_the_stored_text() {
        let labels: crate::task::Labels = [("a\"b".to_owned(), "x\0y".to_owned())]
            .into_iter()
            .collect();
        let stored = to_json(&labels);
        assert!(stored.contains(&format!("{{{}", label_needle("a\"b", "x\0y"))));
        assert!(!stored.contains(&label_needle("a\"b", "x")));
    }

    #[test]
    fn room_is_waiting_capped_by_free_concurrency() {
        assert_eq!(claim_room(5, 0, None), 5);
        assert_eq!(claim_room(5, 2, Some(4)), 2);
        assert_eq!(claim_room(5, 6, Some(4)), 0);
    }
}
