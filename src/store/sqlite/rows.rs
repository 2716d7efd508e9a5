//! The SQLite task queries, named `task_<verb>`, and the mapping from a row to a [`Task`].

use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, params};
use uuid::Uuid;

use crate::store::{CancelResult, StoreError, TaskFilter};
use crate::task::{
    Kind, Lease, Millis, NewTask, Outcome, QueueName, Task, TaskError, TaskId, TaskState,
    now_millis,
};

/// The columns every query that returns tasks selects, in the order `task_from_row` reads.
const COLUMNS: &str = "id, queue, kind, input, state, attempt, cancel_requested, result, error, \
                       lease, lease_expires_at, created_at, started_at, finished_at";

fn conversion_error(
    column: usize,
    error: impl std::error::Error + Send + Sync + 'static,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, Type::Text, Box::new(error))
}

fn json_column(row: &Row<'_>, column: usize) -> rusqlite::Result<Option<serde_json::Value>> {
    let text: Option<String> = row.get(column)?;
    text.map(|text| serde_json::from_str(&text).map_err(|e| conversion_error(column, e)))
        .transpose()
}

fn task_from_row(row: &Row<'_>) -> rusqlite::Result<Task> {
    let id: String = row.get(0)?;
    let queue: String = row.get(1)?;
    let kind: String = row.get(2)?;
    let state: String = row.get(4)?;
    let error = json_column(row, 8)?
        .map(serde_json::from_value::<TaskError>)
        .transpose()
        .map_err(|e| conversion_error(8, e))?;
    let lease_token: Option<String> = row.get(9)?;
    let lease_expires_at: Option<Millis> = row.get(10)?;
    Ok(Task {
        id: id.parse().map_err(|e| conversion_error(0, e))?,
        queue: QueueName::parse(queue).map_err(|e| conversion_error(1, e))?,
        kind: Kind::parse(kind).map_err(|e| conversion_error(2, e))?,
        input: json_column(row, 3)?.unwrap_or_default(),
        state: state.parse().map_err(|e| conversion_error(4, e))?,
        attempt: row.get(5)?,
        cancel_requested: row.get(6)?,
        result: json_column(row, 7)?,
        error,
        lease: lease_token
            .zip(lease_expires_at)
            .map(|(token, expires_at)| Lease { token, expires_at }),
        created_at: row.get(11)?,
        started_at: row.get(12)?,
        finished_at: row.get(13)?,
    })
}

fn corrupt(error: rusqlite::Error) -> StoreError {
    match error {
        rusqlite::Error::FromSqlConversionFailure(..) => StoreError::Corrupt(error.to_string()),
        other => StoreError::from(other),
    }
}

/// Runs a statement that returns task rows and collects them.
fn query_tasks(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Task>, StoreError> {
    let mut statement = conn.prepare_cached(sql)?;
    let rows = statement.query_map(params, task_from_row)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(corrupt)
}

fn query_task(
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

pub fn task_insert(conn: &Connection, new: NewTask, max_queued: u64) -> Result<Task, StoreError> {
    let waiting: i64 = conn
        .prepare_cached("SELECT n FROM queue_counts WHERE queue = ?1 AND state = 'queued'")?
        .query_row([new.queue.as_str()], |row| row.get(0))
        .optional()?
        .unwrap_or(0);
    if waiting as u64 >= max_queued {
        return Err(StoreError::QueueFull {
            queue: new.queue,
            limit: max_queued,
        });
    }
    let task = Task {
        id: TaskId::new(),
        queue: new.queue,
        kind: new.kind,
        input: new.input,
        state: TaskState::Queued,
        attempt: 0,
        cancel_requested: false,
        result: None,
        error: None,
        created_at: now_millis(),
        started_at: None,
        finished_at: None,
        lease: None,
    };
    conn.prepare_cached(
        "INSERT INTO tasks (id, queue, kind, input, state, created_at) \
         VALUES (?1, ?2, ?3, ?4, 'queued', ?5)",
    )?
    .execute(params![
        task.id.to_string(),
        task.queue.as_str(),
        task.kind.as_str(),
        task.input.to_string(),
        task.created_at,
    ])?;
    Ok(task)
}

pub fn task_get(conn: &Connection, id: TaskId) -> Result<Option<Task>, StoreError> {
    query_task(
        conn,
        &format!("SELECT {COLUMNS} FROM tasks WHERE id = ?1"),
        [id.to_string()],
    )
}

pub fn task_list(conn: &Connection, filter: &TaskFilter) -> Result<Vec<Task>, StoreError> {
    // Only the filters given become conditions, so SQLite can pick the matching index.
    let mut conditions = Vec::new();
    let mut values: Vec<String> = Vec::new();
    let mut add = |column: &str, op: &str, value: String| {
        values.push(value);
        conditions.push(format!("{column} {op} ?{}", values.len()));
    };
    if let Some(state) = filter.state {
        add("state", "=", state.as_str().to_owned());
    }
    if let Some(kind) = &filter.kind {
        add("kind", "=", kind.to_string());
    }
    if let Some(queue) = &filter.queue {
        add("queue", "=", queue.to_string());
    }
    if let Some(before) = filter.before {
        add("id", "<", before.to_string());
    }
    let mut sql = format!("SELECT {COLUMNS} FROM tasks");
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql.push_str(&format!(" ORDER BY id DESC LIMIT {}", filter.limit));
    query_tasks(conn, &sql, rusqlite::params_from_iter(values))
}

pub fn task_claim(
    conn: &Connection,
    limit: usize,
    lease_expires_at: Millis,
) -> Result<Vec<Task>, StoreError> {
    let lease = Uuid::new_v4().to_string();
    query_tasks(
        conn,
        &format!(
            "UPDATE tasks SET state = 'running', attempt = attempt + 1, lease = ?1, \
                 lease_expires_at = ?2, started_at = ?3 \
             WHERE id IN (SELECT id FROM tasks WHERE state = 'queued' \
                          ORDER BY priority DESC, id LIMIT ?4) \
             RETURNING {COLUMNS}"
        ),
        params![lease, lease_expires_at, now_millis(), limit as i64],
    )
}

pub fn task_finish(
    conn: &Connection,
    id: TaskId,
    lease: &str,
    outcome: Outcome,
) -> Result<Option<Task>, StoreError> {
    let state = outcome.state();
    let (result, error) = match outcome {
        Outcome::Succeeded(value) => (Some(value.to_string()), None),
        Outcome::Failed(error) => (
            None,
            Some(serde_json::to_string(&error).unwrap_or_default()),
        ),
        Outcome::Cancelled => (None, None),
    };
    query_task(
        conn,
        &format!(
            // A cancel requested while the attempt ran wins over its outcome.
            "UPDATE tasks SET \
                 state = CASE cancel_requested WHEN 1 THEN 'cancelled' ELSE ?3 END, \
                 result = CASE cancel_requested WHEN 1 THEN NULL ELSE ?4 END, \
                 error = CASE cancel_requested WHEN 1 THEN NULL ELSE ?5 END, \
                 lease = NULL, lease_expires_at = NULL, finished_at = ?6 \
             WHERE id = ?1 AND state = 'running' AND lease = ?2 \
             RETURNING {COLUMNS}"
        ),
        params![
            id.to_string(),
            lease,
            state.as_str(),
            result,
            error,
            now_millis()
        ],
    )
}

pub fn task_cancel(conn: &Connection, id: TaskId) -> Result<CancelResult, StoreError> {
    let id_text = id.to_string();
    let cancelled = query_task(
        conn,
        &format!(
            "UPDATE tasks SET state = 'cancelled', finished_at = ?2 \
             WHERE id = ?1 AND state = 'queued' RETURNING {COLUMNS}"
        ),
        params![id_text, now_millis()],
    )?;
    if let Some(task) = cancelled {
        return Ok(CancelResult::Cancelled(task));
    }
    let requested = query_task(
        conn,
        &format!(
            "UPDATE tasks SET cancel_requested = 1 \
             WHERE id = ?1 AND state = 'running' RETURNING {COLUMNS}"
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

/// The `SET` list that takes a running task off its worker: back to queued, or to cancelled
/// when a cancel was requested meanwhile. `?1` is the current time.
const UNCLAIM: &str = "state = CASE cancel_requested WHEN 1 THEN 'cancelled' ELSE 'queued' END, \
                       finished_at = CASE cancel_requested WHEN 1 THEN ?1 END, \
                       lease = NULL, lease_expires_at = NULL";

pub fn task_release(
    conn: &Connection,
    id: TaskId,
    lease: &str,
) -> Result<Option<Task>, StoreError> {
    query_task(
        conn,
        &format!(
            "UPDATE tasks SET {UNCLAIM}, attempt = attempt - 1 \
             WHERE id = ?2 AND state = 'running' AND lease = ?3 RETURNING {COLUMNS}"
        ),
        params![now_millis(), id.to_string(), lease],
    )
}

pub fn task_recover_running(conn: &Connection) -> Result<u64, StoreError> {
    let moved = conn
        .prepare_cached(&format!(
            "UPDATE tasks SET {UNCLAIM} WHERE state = 'running'"
        ))?
        .execute([now_millis()])?;
    Ok(moved as u64)
}
