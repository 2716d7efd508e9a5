//! The SQLite task queries, named `task_<verb>`, and the mapping from a row to a [`Task`]
//! (claims are in `claims.rs`, ends of attempts in `ends.rs`). Every state change is guarded
//! by the state it expects (and the lease, for a running task); the transition itself is
//! decided in `task/`.

use std::sync::Arc;

use rusqlite::types::{ToSql, Type, Value as SqlValue};
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::ends;
pub(super) use crate::store::sql::to_json;
use crate::store::sql::{self, Dialect, state_guard};
use crate::store::{CancelResult, Changed, StoreError, TaskFilter};
use crate::task::{
    AfterPolicy, AttemptEnd, Backoff, Callback, Kind, Lease, Millis, Move, QueueName, Task, TaskId,
    TraceContext, expire_attempt, lose_attempt,
};

/// The columns every query that returns tasks selects, in the order `task_from_row` reads.
pub const COLUMNS: &str = "id, queue, kind, input, state, priority, attempt, max_attempts, \
     backoff_base_ms, backoff_cap_ms, timeout_ms, run_at, labels, cancel_requested, result, \
     error, errors, idempotency_key, lease, lease_expires_at, created_at, started_at, finished_at, \
     progress, callback_url, callback_secret, callback_status, traceparent, tracestate, parents, \
     after_policy, input_from";

fn conversion_error(error: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, Type::Text, Box::new(error))
}

/// Parsed from the row's own bytes: no copy of the text first (seven JSON columns a row).
fn json_column<T: DeserializeOwned>(row: &Row<'_>, column: usize) -> rusqlite::Result<Option<T>> {
    let text: Option<&str> = row.get_ref(column)?.as_str_or_null()?;
    text.map(|text| serde_json::from_str(text).map_err(conversion_error))
        .transpose()
}

/// Reads a row of `COLUMNS`, by position: looking columns up by name showed in profiles.
fn task_from_row(row: &Row<'_>) -> rusqlite::Result<Task> {
    // Parsed where they lie, like the JSON columns.
    let id = row.get_ref(0)?.as_str()?;
    let queue: String = row.get(1)?;
    let kind: String = row.get(2)?;
    let state = row.get_ref(4)?.as_str()?;
    let lease_token: Option<String> = row.get(18)?;
    let lease_expires_at: Option<Millis> = row.get(19)?;
    let timeout_ms: Option<i64> = row.get(10)?;
    let callback_url: Option<String> = row.get(24)?;
    let callback_secret: Option<String> = row.get(25)?;
    let traceparent: Option<String> = row.get(27)?;
    let after_policy: Option<String> = row.get(30)?;
    let input_from: Option<String> = row.get(31)?;
    Ok(Task {
        id: id.parse().map_err(conversion_error)?,
        queue: QueueName::parse(queue).map_err(conversion_error)?,
        kind: Kind::parse(kind).map_err(conversion_error)?,
        input: json_column(row, 3)?.unwrap_or_default(),
        state: state.parse().map_err(conversion_error)?,
        priority: row.get(5)?,
        attempt: row.get(6)?,
        max_attempts: row.get(7)?,
        backoff: Backoff {
            base_ms: row.get::<_, i64>(8)? as u64,
            cap_ms: row.get::<_, i64>(9)? as u64,
        },
        timeout_ms: timeout_ms.map(|ms| ms as u64),
        run_at: row.get(11)?,
        labels: json_column(row, 12)?.unwrap_or_default(),
        cancel_requested: row.get(13)?,
        result: json_column(row, 14)?,
        error: json_column(row, 15)?,
        errors: json_column(row, 16)?.unwrap_or_default(),
        progress: json_column(row, 23)?,
        callback: callback_url.map(|url| Callback {
            url,
            secret: callback_secret,
        }),
        callback_status: row.get(26)?,
        after: json_column(row, 29)?.unwrap_or_default(),
        after_policy: after_policy
            .map(|p| AfterPolicy::parse(&p).ok_or_else(|| conversion_error(BadPolicy(p))))
            .transpose()?,
        input_from: input_from
            .map(|id| id.parse().map_err(conversion_error))
            .transpose()?,
        idempotency_key: row.get(17)?,
        lease: lease_token
            .zip(lease_expires_at)
            .map(|(token, expires_at)| Lease { token, expires_at }),
        created_at: row.get(20)?,
        started_at: row.get(21)?,
        finished_at: row.get(22)?,
        trace: TraceContext::from_stored(traceparent.as_deref(), row.get(28)?),
    })
}

/// An `after_policy` no version of taskd writes.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not an after_policy")]
struct BadPolicy(String);

fn corrupt(error: rusqlite::Error) -> StoreError {
    match error {
        rusqlite::Error::FromSqlConversionFailure(..) => StoreError::Corrupt(error.to_string()),
        other => StoreError::from(other),
    }
}

/// Runs a statement that returns task rows and collects them.
pub fn query_tasks(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Task>, StoreError> {
    let mut statement = conn.prepare_cached(sql)?;
    let rows = statement.query_map(params, task_from_row)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(corrupt)
}

pub(super) fn query_task(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Option<Task>, StoreError> {
    let mut statement = conn.prepare_cached(sql)?;
    statement
        .query_row(params, task_from_row)
        .optional()
        .map_err(corrupt)
}

/// What admitting a task to `queue` needs to know, in one read: how many tasks wait there
/// (queued or scheduled), how many may, and the queue's default callback.
#[derive(Clone)]
pub struct Admission {
    pub waiting: u64,
    pub limit: u64,
    pub callback: Option<Callback>,
}

pub fn admission(
    conn: &Connection,
    queue: &QueueName,
    default_max: u64,
) -> Result<Admission, StoreError> {
    let (waiting, limit, url, secret): (i64, Option<i64>, Option<String>, Option<String>) = conn
        .prepare_cached(
            "SELECT (SELECT IFNULL(SUM(n), 0) FROM queue_counts \
                     WHERE queue = ?1 AND state IN ('waiting', 'queued', 'scheduled')), \
                    q.max_queued, q.callback_url, q.callback_secret \
             FROM (SELECT 1) LEFT JOIN queues q ON q.name = ?1",
        )?
        .query_row([queue.as_str()], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })?;
    Ok(Admission {
        waiting: waiting as u64,
        limit: limit.map_or(default_max, |l| l as u64),
        callback: url.map(|url| Callback { url, secret }),
    })
}

/// The task that first used an idempotency key, and the digest of its request.
pub fn task_by_key(conn: &Connection, key: &str) -> Result<Option<(Task, String)>, StoreError> {
    // The digest comes right after the task's columns.
    let hash_column = COLUMNS.split(',').count();
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS}, request_hash FROM tasks WHERE idempotency_key = ?1"
    ))?
    .query_row([key], |row| {
        Ok((task_from_row(row)?, row.get(hash_column)?))
    })
    .optional()
    .map_err(corrupt)
}

/// How many values one row of [`INSERT_COLUMNS`] has.
const INSERT_VALUES: usize = 24;

/// A new task's row: its values in the column order of [`INSERT_COLUMNS`], but for the
/// input, which becomes text only when its statement runs ([`task_insert_rows`]).
pub struct InsertRow {
    /// Every column but `input` (the fourth).
    values: [SqlValue; INSERT_VALUES - 1],
    input: Arc<Value>,
}

impl InsertRow {
    /// The statement's parameters for this row, with `input` as its text.
    fn params<'a>(&'a self, input: &'a SqlValue) -> impl Iterator<Item = &'a dyn ToSql> {
        let (before, after) = self.values.split_at(3);
        let value = |v: &'a SqlValue| v as &'a dyn ToSql;
        before
            .iter()
            .map(value)
            .chain(std::iter::once(input as &dyn ToSql))
            .chain(after.iter().map(value))
    }
}

const INSERT_COLUMNS: &str = "INSERT INTO tasks (id, queue, kind, input, state, priority, \
     max_attempts, backoff_base_ms, backoff_cap_ms, timeout_ms, run_at, labels, idempotency_key, \
     request_hash, created_at, callback_url, callback_secret, traceparent, tracestate, parents, \
     after_policy, input_from, error, finished_at) VALUES ";

/// `items` in consecutive chunks of the largest power of two that fits, at most `most` (a
/// power of two): at most one chunk of each size below `most`, so a statement per size is
/// prepared once and any batch takes few statements.
pub fn power_of_two_chunks<T>(items: &[T], most: usize) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (chunk, after) = rest.split_at(most.min(1 << rest.len().ilog2()));
        rest = after;
        Some(chunk)
    })
}

/// The most rows one multi-row INSERT takes (24 values each, far below SQLite's limit).
const INSERT_CHUNK: usize = 32;
/// The most input text one multi-row INSERT carries; a chunk with more goes row by row.
const INSERT_CHUNK_BYTES: usize = 256 * 1024;

/// A new task as the values of one row; `request_hash` goes with an idempotency key.
pub fn insert_row(task: &Task, request_hash: Option<String>) -> InsertRow {
    let text = |s: &str| SqlValue::Text(s.to_owned());
    let optional_text = |s: Option<&str>| s.map_or(SqlValue::Null, text);
    let optional_int = |n: Option<i64>| n.map_or(SqlValue::Null, SqlValue::Integer);
    let values = [
        SqlValue::Text(task.id.to_string()),
        text(task.queue.as_str()),
        text(task.kind.as_str()),
        text(task.state.as_str()),
        SqlValue::Integer(i64::from(task.priority)),
        SqlValue::Integer(i64::from(task.max_attempts)),
        SqlValue::Integer(task.backoff.base_ms as i64),
        SqlValue::Integer(task.backoff.cap_ms as i64),
        optional_int(task.timeout_ms.map(|ms| ms as i64)),
        optional_int(task.run_at),
        SqlValue::Text(to_json(&task.labels)),
        optional_text(task.idempotency_key.as_deref()),
        optional_text(request_hash.as_deref()),
        SqlValue::Integer(task.created_at),
        optional_text(task.callback.as_ref().map(|c| c.url.as_str())),
        optional_text(task.callback.as_ref().and_then(|c| c.secret.as_deref())),
        task.trace
            .as_ref()
            .map_or(SqlValue::Null, |t| SqlValue::Text(t.parent.to_string())),
        optional_text(task.trace.as_ref().and_then(|t| t.state.as_deref())),
        // A task with parents: they, its policy, and (cancelled at once when a parent had
        // already failed) its error and end.
        match task.after.is_empty() {
            true => SqlValue::Null,
            false => SqlValue::Text(to_json(&task.after)),
        },
        optional_text(task.after_policy.map(|p| p.as_str())),
        task.input_from
            .map_or(SqlValue::Null, |id| SqlValue::Text(id.to_string())),
        task.error
            .as_ref()
            .map_or(SqlValue::Null, |e| SqlValue::Text(to_json(e))),
        optional_int(task.finished_at),
    ];
    InsertRow {
        values,
        input: Arc::clone(&task.input),
    }
}

/// Writes new tasks, in order, in [`power_of_two_chunks`] of at most 32 rows, one multi-row
/// statement each. Each statement that writes through the triggers
/// journals the pages it changes first (its statement journal), so a row alone in its
/// statement copied a dozen pages; twelve submits in one commit went row by row.
///
/// Inputs become text here, a chunk at a time, not when the rows are planned: a group commit
/// of a hundred 1 MB inputs held all their texts (and SQLite its copy of each chunk's) at
/// once. A chunk of large inputs goes row by row, so that only one large text and SQLite's
/// copy of it exist at a time.
pub fn task_insert_rows(conn: &Connection, rows: &[InsertRow]) -> Result<(), StoreError> {
    let values = |n: usize| {
        let row = format!("({})", vec!["?"; INSERT_VALUES].join(", "));
        format!("{INSERT_COLUMNS}{}", vec![row; n].join(", "))
    };
    for chunk in power_of_two_chunks(rows, INSERT_CHUNK) {
        let mut inputs = Vec::with_capacity(chunk.len());
        let mut bytes = 0;
        for row in chunk {
            if bytes > INSERT_CHUNK_BYTES {
                break;
            }
            let input = to_json(&*row.input);
            bytes += input.len();
            inputs.push(SqlValue::Text(input));
        }
        if bytes <= INSERT_CHUNK_BYTES {
            let params = chunk
                .iter()
                .zip(&inputs)
                .flat_map(|(row, input)| row.params(input));
            conn.prepare_cached(&values(chunk.len()))?
                .execute(rusqlite::params_from_iter(params))?;
            continue;
        }
        let mut single = conn.prepare_cached(&values(1))?;
        let mut made = inputs.into_iter();
        for row in chunk {
            let input = made
                .next()
                .unwrap_or_else(|| SqlValue::Text(to_json(&*row.input)));
            single.execute(rusqlite::params_from_iter(row.params(&input)))?;
        }
    }
    Ok(())
}

pub fn task_get(conn: &Connection, id: TaskId) -> Result<Option<Task>, StoreError> {
    query_task(
        conn,
        &format!("SELECT {COLUMNS} FROM tasks WHERE id = ?1"),
        [id.to_string()],
    )
}

pub fn task_get_many(conn: &Connection, ids: &[TaskId]) -> Result<Vec<Task>, StoreError> {
    query_tasks(
        conn,
        &format!("SELECT {COLUMNS} FROM tasks WHERE id IN (SELECT value FROM json_each(?1))"),
        [to_json(&ids)],
    )
}

pub fn task_list(conn: &Connection, filter: &TaskFilter) -> Result<Vec<Task>, StoreError> {
    let list = sql::task_list(Dialect::Sqlite, COLUMNS, filter);
    query_tasks(conn, &list.sql, rusqlite::params_from_iter(list.values))
}

pub fn task_renew(
    conn: &Connection,
    leases: &[(TaskId, String)],
    lease_expires_at: Millis,
) -> Result<u64, StoreError> {
    let mut statement = conn.prepare_cached(&format!(
        "UPDATE tasks SET lease_expires_at = ?3 WHERE id = ?1 AND {held} AND lease = ?2",
        held = state_guard("state", Move::Finish),
    ))?;
    let mut renewed = 0;
    for (id, lease) in leases {
        renewed += statement.execute(params![id.to_string(), lease, lease_expires_at])? as u64;
    }
    Ok(renewed)
}

pub fn task_cancel(conn: &Connection, id: TaskId, now: Millis) -> Result<CancelResult, StoreError> {
    let id_text = id.to_string();
    let cancelled = query_task(
        conn,
        &format!(
            "UPDATE tasks SET state = 'cancelled', run_at = NULL, finished_at = ?2 \
             WHERE id = ?1 AND {cancellable} RETURNING {COLUMNS}",
            cancellable = state_guard("state", Move::Cancel),
        ),
        params![id_text, now],
    )?;
    if let Some(task) = cancelled {
        return Ok(CancelResult::Cancelled(task));
    }
    let requested = query_task(
        conn,
        &format!(
            "UPDATE tasks SET cancel_requested = 1 \
             WHERE id = ?1 AND {stoppable} RETURNING {COLUMNS}",
            stoppable = state_guard("state", Move::RequestCancel),
        ),
        [&id_text],
    )?;
    if let Some(task) = requested {
        return Ok(CancelResult::Requested(task));
    }
    Ok(match task_get(conn, id)? {
        Some(task) => CancelResult::Finished(task),
        None => CancelResult::NotFound,
    })
}

pub fn task_release(
    conn: &Connection,
    id: TaskId,
    lease: &str,
    now: Millis,
) -> Result<Option<Task>, StoreError> {
    query_task(
        conn,
        &format!(
            "UPDATE tasks SET \
                 state = CASE cancel_requested WHEN 1 THEN 'cancelled' ELSE 'queued' END, \
                 finished_at = CASE cancel_requested WHEN 1 THEN ?1 END, \
                 lease = NULL, lease_expires_at = NULL, attempt = attempt - 1 \
             WHERE id = ?2 AND {releasable} AND lease = ?3 RETURNING {COLUMNS}",
            releasable = state_guard("state", Move::Release),
        ),
        params![now, id.to_string(), lease],
    )
}

/// Every running task matched by `condition` (with `?1` = now) ends its attempt as `end`
/// decides.
fn end_running(
    conn: &Connection,
    condition: &str,
    now: Millis,
    end: impl Fn(&Task) -> AttemptEnd,
) -> Result<Vec<Task>, StoreError> {
    let lost = query_tasks(
        conn,
        &format!(
            "SELECT {COLUMNS} FROM tasks WHERE {lost} AND {condition}",
            lost = state_guard("state", Move::Recover),
        ),
        [now],
    )?;
    let mut moved = Vec::with_capacity(lost.len());
    for task in lost {
        let Some(lease) = task.lease.as_ref().map(|l| l.token.clone()) else {
            continue;
        };
        let end = end(&task);
        moved.extend(ends::write_end(conn, task.id, &lease, end)?);
    }
    Ok(moved)
}

pub fn task_recover_running(conn: &Connection, now: Millis) -> Result<Vec<Task>, StoreError> {
    end_running(conn, "?1 = ?1", now, |task| lose_attempt(task, now))
}

/// Attempts whose lease expired: lost, or timed out if the lease was cut at their deadline.
pub fn task_rescue_expired(conn: &Connection, now: Millis) -> Result<Vec<Task>, StoreError> {
    end_running(conn, "lease_expires_at < ?1", now, |task| {
        expire_attempt(task, now, fastrand::f64())
    })
}

pub fn task_promote_due(conn: &Connection, now: Millis) -> Result<u64, StoreError> {
    let promoted = conn
        .prepare_cached(&format!(
            "UPDATE tasks SET state = 'queued', run_at = NULL WHERE {due} AND run_at <= ?1",
            due = state_guard("state", Move::Promote),
        ))?
        .execute([now])?;
    Ok(promoted as u64)
}

pub fn task_next_due(conn: &Connection) -> Result<Option<Millis>, StoreError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT MIN(run_at) FROM tasks WHERE {due}",
            due = state_guard("state", Move::Promote),
        ))?
        .query_row([], |row| row.get(0))?)
}

pub fn task_retry(conn: &Connection, id: TaskId) -> Result<Changed, StoreError> {
    let retried = query_task(
        conn,
        &format!(
            "UPDATE tasks SET state = 'queued', attempt = 0, error = NULL, result = NULL, \
                 cancel_requested = 0, finished_at = NULL \
             WHERE id = ?1 AND {retryable} RETURNING {COLUMNS}",
            retryable = state_guard("state", Move::Retry),
        ),
        [id.to_string()],
    )?;
    if retried.is_some() {
        return Ok(Changed::Done(retried));
    }
    Ok(match task_get(conn, id)? {
        Some(task) => Changed::WrongState(task),
        None => Changed::NotFound,
    })
}

pub fn task_delete(conn: &Connection, id: TaskId) -> Result<Changed, StoreError> {
    // A finished task that waiting tasks name as a parent stays: they need its outcome.
    let deleted = conn
        .prepare_cached(&format!(
            "DELETE FROM tasks WHERE id = ?1 AND {deletable} \
               AND NOT EXISTS (SELECT 1 FROM task_parents WHERE parent_id = ?1)",
            deletable = state_guard("state", Move::Delete),
        ))?
        .execute([id.to_string()])?;
    if deleted > 0 {
        return Ok(Changed::Done(None));
    }
    Ok(match task_get(conn, id)? {
        Some(task) if task.state.is_terminal() => Changed::HasDependents(task),
        Some(task) => Changed::WrongState(task),
        None => Changed::NotFound,
    })
}

pub fn task_purge_finished(
    conn: &Connection,
    before: Millis,
    limit: usize,
) -> Result<u64, StoreError> {
    let deleted = conn
        .prepare_cached(
            "DELETE FROM tasks WHERE id IN \
             (SELECT id FROM tasks WHERE finished_at < ?1 \
                AND id NOT IN (SELECT parent_id FROM task_parents) LIMIT ?2)",
        )?
        .execute(params![before, limit as i64])?;
    Ok(deleted as u64)
}

#[cfg(test)]
mod tests {
    use super::power_of_two_chunks;

    /// 45 items: 32, 8, 4, 1; none: no chunk.
    #[test]
    fn chunks_are_the_largest_powers_of_two_that_fit() {
        let items: Vec<u32> = (0..45).collect();
        let sizes: Vec<usize> = power_of_two_chunks(&items, 32).map(<[u32]>::len).collect();
        assert_eq!(sizes, [32, 8, 4, 1]);
        let flat: Vec<u32> = power_of_two_chunks(&items, 32).flatten().copied().collect();
        assert_eq!(flat, items, "in order, each once");
        assert_eq!(power_of_two_chunks::<u32>(&[], 32).count(), 0);
    }
}
