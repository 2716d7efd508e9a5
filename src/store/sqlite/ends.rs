//! Ending attempts: the writes that take a running task to its next state once its attempt
//! is over (`task_finish_many`, the local pool's batches and a remote worker's single end).
//!
//! Every write is guarded by `state = 'running'` and the attempt's lease: an attempt whose
//! lease is gone (expired and rescued, or released) ends nothing, and its caller hears so.

use std::collections::{HashMap, HashSet};

use rusqlite::{Connection, params, params_from_iter};

use super::counts::counted;
use super::rows::{COLUMNS, power_of_two_chunks, query_task, query_tasks, to_json};
use crate::store::sql::state_guard;
use crate::store::{EndedAttempt, StoreError};
use crate::task::{AttemptEnd, Move, Outcome, Task, TaskId, TaskState, end_attempt};

/// The most successes one UPDATE takes; a batch goes in [`power_of_two_chunks`].
const SUCCESS_CHUNK: usize = 32;

/// Ends running attempts, in the order given: each answer is the ended task, or `None` when
/// the attempt's lease was gone (or the task appeared earlier in the batch: its first end
/// counts).
///
/// Successes (most ends) take a path without a read: a success changes nothing that depends
/// on the row, so a guarded UPDATE alone writes it. The guard also asks for no cancel
/// request; a success it refuses (cancel requested, or lease gone) and every other outcome
/// go the way that reads the row first and lets `task::end_attempt` decide.
pub fn task_finish_many(
    conn: &Connection,
    attempts: Vec<EndedAttempt>,
) -> Result<Vec<Option<Task>>, StoreError> {
    let order: Vec<TaskId> = attempts.iter().map(|a| a.id).collect();
    let mut successes = Vec::new();
    let mut rest = Vec::new();
    // A task listed twice ends by its first end; the repeat answers `None` (one UPDATE of
    // several successes of one task would keep any one of them).
    let mut seen = HashSet::with_capacity(attempts.len());
    for attempt in attempts.into_iter().filter(|a| seen.insert(a.id)) {
        match &attempt.outcome {
            Outcome::Succeeded(value) => {
                let result = value.to_string();
                successes.push((attempt, result));
            }
            _ => rest.push(attempt),
        }
    }
    let mut ended = finish_successes(conn, &successes)?;
    rest.extend(
        successes
            .into_iter()
            .map(|(attempt, _)| attempt)
            .filter(|a| !ended.contains_key(&a.id)),
    );
    ended.extend(finish_read_first(conn, rest)?);
    Ok(order.iter().map(|id| ended.remove(id)).collect())
}

/// The successes' path: what `end_attempt` writes for a success without a cancel request
/// (state, result, finished_at; the lease cleared), as guarded UPDATEs of up to
/// `SUCCESS_CHUNK` rows each, each counted once (`counts.rs`). Each success comes with its
/// result as JSON text. The ended tasks, by id; a refused one is missing.
fn finish_successes(
    conn: &Connection,
    successes: &[(EndedAttempt, String)],
) -> Result<HashMap<TaskId, Task>, StoreError> {
    let values = |(attempt, result): &(EndedAttempt, String)| -> [rusqlite::types::Value; 4] {
        [
            attempt.id.to_string().into(),
            attempt.lease.clone().into(),
            result.clone().into(),
            attempt.ended_at.into(),
        ]
    };
    // One form for every size, a single row included: (id, lease, result, ended_at) rows.
    let sql = |rows: usize| {
        format!(
            "UPDATE tasks SET state = 'succeeded', result = e.column3, finished_at = e.column4, \
                 lease = NULL, lease_expires_at = NULL \
             FROM (VALUES {}) AS e \
             WHERE tasks.id = e.column1 AND {held} \
               AND tasks.lease = e.column2 AND tasks.cancel_requested = 0 \
             RETURNING {COLUMNS}",
            vec!["(?, ?, ?, ?)"; rows].join(", "),
            held = state_guard("+tasks.state", Move::Finish),
        )
    };
    let mut ended = HashMap::with_capacity(successes.len());
    for chunk in power_of_two_chunks(successes, SUCCESS_CHUNK) {
        let params = params_from_iter(chunk.iter().flat_map(values));
        let moved = counted(conn, TaskState::Running, || {
            query_tasks(conn, &sql(chunk.len()), params)
        })?;
        ended.extend(moved.into_iter().map(|task| (task.id, task)));
    }
    Ok(ended)
}

/// Ends attempts whose end depends on the row (attempts left, backoff, errors so far, a
/// cancel request) in two statements, one read and one write, however many there are.
/// Statement by statement, each attempt cost two statements and a statement journal each,
/// which profiles showed to be most of a drain's time.
fn finish_read_first(
    conn: &Connection,
    attempts: Vec<EndedAttempt>,
) -> Result<HashMap<TaskId, Task>, StoreError> {
    if attempts.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<String> = attempts.iter().map(|a| a.id.to_string()).collect();
    let running: HashMap<TaskId, Task> = query_tasks(
        conn,
        &format!(
            "SELECT {COLUMNS} FROM tasks \
             WHERE id IN (SELECT value FROM json_each(?1)) AND {held}",
            held = state_guard("+state", Move::Finish),
        ),
        [to_json(&ids)],
    )?
    .into_iter()
    .map(|task| (task.id, task))
    .collect();
    // Each end as a JSON object; the UPDATE reads them back with `->>`. In both statements
    // `+state` keeps SQLite from walking the state index and probing the list for every
    // running task: the list leads, the primary key finds each row.
    let mut ends = Vec::with_capacity(attempts.len());
    for attempt in attempts {
        let Some(task) = running.get(&attempt.id) else {
            continue;
        };
        if task.lease.as_ref().map(|l| l.token.as_str()) != Some(attempt.lease.as_str()) {
            continue;
        }
        let end = end_attempt(task, attempt.outcome, attempt.ended_at, fastrand::f64());
        ends.push(serde_json::json!({
            "id": attempt.id.to_string(),
            "lease": attempt.lease,
            "state": end.state.as_str(),
            "result": end.result.map(|r| r.to_string()),
            "error": end.error.map(|e| to_json(&e)),
            "errors": to_json(&end.errors),
            "run_at": end.run_at,
            "finished_at": end.finished_at,
        }));
    }
    let ended = query_tasks(
        conn,
        &format!(
            "UPDATE tasks SET state = e.state, result = e.result, error = e.error, \
                 errors = e.errors, run_at = e.run_at, finished_at = e.finished_at, \
                 lease = NULL, lease_expires_at = NULL \
             FROM (SELECT value ->> 'id' AS end_id, value ->> 'lease' AS end_lease, \
                          value ->> 'state' AS state, value ->> 'result' AS result, \
                          value ->> 'error' AS error, value ->> 'errors' AS errors, \
                          value ->> 'run_at' AS run_at, value ->> 'finished_at' AS finished_at \
                   FROM json_each(?1)) AS e \
             WHERE tasks.id = e.end_id AND {held} AND tasks.lease = e.end_lease \
             RETURNING {COLUMNS}",
            held = state_guard("+tasks.state", Move::Finish),
        ),
        [serde_json::Value::Array(ends).to_string()],
    )?
    .into_iter()
    .map(|task| (task.id, task))
    .collect();
    Ok(ended)
}

/// Writes the end of a running attempt, guarded by its lease.
pub(super) fn write_end(
    conn: &Connection,
    id: TaskId,
    lease: &str,
    end: AttemptEnd,
) -> Result<Option<Task>, StoreError> {
    query_task(
        conn,
        &format!(
            "UPDATE tasks SET state = ?3, result = ?4, error = ?5, errors = ?6, run_at = ?7, \
                 finished_at = ?8, lease = NULL, lease_expires_at = NULL \
             WHERE id = ?1 AND {held} AND lease = ?2 RETURNING {COLUMNS}",
            held = state_guard("state", Move::Finish),
        ),
        params![
            id.to_string(),
            lease,
            end.state.as_str(),
            end.result.map(|r| r.to_string()),
            end.error.map(|e| to_json(&e)),
            to_json(&end.errors),
            end.run_at,
            end.finished_at,
        ],
    )
}
