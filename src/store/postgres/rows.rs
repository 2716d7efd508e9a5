//! The mapping from a PostgreSQL row to a [`Task`], and the reads: `task_get`, `task_list`.
//!
//! Ids are `uuid` in the table and text on the wire of this module (`$1::uuid`, `id::text`),
//! so the task module's `TaskId` stays free of sqlx. JSON columns are text (see the migration).

use serde::de::DeserializeOwned;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::query::Query;
use sqlx::{PgConnection, Postgres, Row};

pub(crate) use crate::store::sql::to_json;
use crate::store::sql::{self, Dialect};
use crate::store::{StoreError, TaskFilter};
use crate::task::{
    AfterPolicy, Backoff, Callback, Kind, Lease, Millis, QueueName, Task, TaskId, TraceContext,
};

/// The columns every query that returns tasks selects first, in the order `task_from_row`
/// reads them (by position; the same order as SQLite's, a test holds them alike).
pub const COLUMNS: &str = "id::text AS id, queue, kind, input, state, priority, attempt, \
     max_attempts, backoff_base_ms, backoff_cap_ms, timeout_ms, run_at, labels, \
     cancel_requested, result, error, errors, idempotency_key, lease, lease_expires_at, \
     created_at, started_at, finished_at, progress, callback_url, callback_secret, \
     callback_status, traceparent, tracestate, parents, after_policy, \
     input_from::text AS input_from";

fn corrupt(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {error}"))
}

/// The JSON column at `index` of a row of [`COLUMNS`], named `column` in messages.
fn json_column<T: DeserializeOwned>(
    row: &PgRow,
    index: usize,
    column: &str,
) -> Result<Option<T>, StoreError> {
    let text: Option<&str> = row.try_get_unchecked(index)?;
    text.map(|text| serde_json::from_str(text).map_err(|e| corrupt(column, e)))
        .transpose()
}

/// Reads a row of [`COLUMNS`] by position, as SQLite's does: by name, each of the 32 columns
/// cost a hash lookup (sqlx keeps a map of the statement's column names). Unchecked: the
/// columns' types are the migrations' and `COLUMNS` fixes which one comes where, so asking
/// sqlx to compare each value's type with the Rust type's list of compatible ones (a quarter
/// of a drain's decoding, counted) checks nothing the schema does not; a value of another
/// type still fails to decode where its bytes do not fit.
pub fn task_from_row(row: &PgRow) -> Result<Task, StoreError> {
    let id: String = row.try_get_unchecked(0)?;
    let queue: String = row.try_get_unchecked(1)?;
    let kind: String = row.try_get_unchecked(2)?;
    let state: String = row.try_get_unchecked(4)?;
    let lease_token: Option<String> = row.try_get_unchecked(18)?;
    let lease_expires_at: Option<Millis> = row.try_get_unchecked(19)?;
    let timeout_ms: Option<i64> = row.try_get_unchecked(10)?;
    let callback_url: Option<String> = row.try_get_unchecked(24)?;
    let callback_secret: Option<String> = row.try_get_unchecked(25)?;
    let traceparent: Option<String> = row.try_get_unchecked(27)?;
    let after_policy: Option<String> = row.try_get_unchecked(30)?;
    let input_from: Option<String> = row.try_get_unchecked(31)?;
    Ok(Task {
        id: id.parse().map_err(|e| corrupt("id", e))?,
        queue: QueueName::parse(queue).map_err(|e| corrupt("queue", e))?,
        kind: Kind::parse(kind).map_err(|e| corrupt("kind", e))?,
        input: json_column(row, 3, "input")?.unwrap_or_default(),
        state: state.parse().map_err(|e| corrupt("state", e))?,
        priority: row.try_get_unchecked(5)?,
        attempt: row.try_get_unchecked::<i32, _>(6)? as u32,
        max_attempts: row.try_get_unchecked::<i32, _>(7)? as u32,
        backoff: Backoff {
            base_ms: row.try_get_unchecked::<i64, _>(8)? as u64,
            cap_ms: row.try_get_unchecked::<i64, _>(9)? as u64,
        },
        timeout_ms: timeout_ms.map(|ms| ms as u64),
        run_at: row.try_get_unchecked(11)?,
        labels: json_column(row, 12, "labels")?.unwrap_or_default(),
        cancel_requested: row.try_get_unchecked(13)?,
        result: json_column(row, 14, "result")?,
        error: json_column(row, 15, "error")?,
        errors: json_column(row, 16, "errors")?.unwrap_or_default(),
        progress: json_column(row, 23, "progress")?,
        callback: callback_url.map(|url| Callback {
            url,
            secret: callback_secret,
        }),
        callback_status: row.try_get_unchecked(26)?,
        after: json_column(row, 29, "parents")?.unwrap_or_default(),
        after_policy: after_policy
            .map(|p| AfterPolicy::parse(&p).ok_or_else(|| corrupt("after_policy", p)))
            .transpose()?,
        input_from: input_from
            .map(|id| id.parse().map_err(|e| corrupt("input_from", e)))
            .transpose()?,
        idempotency_key: row.try_get_unchecked(17)?,
        lease: lease_token
            .zip(lease_expires_at)
            .map(|(token, expires_at)| Lease { token, expires_at }),
        created_at: row.try_get_unchecked(20)?,
        started_at: row.try_get_unchecked(21)?,
        finished_at: row.try_get_unchecked(22)?,
        trace: TraceContext::from_stored(traceparent.as_deref(), row.try_get_unchecked(28)?),
    })
}

/// Runs a statement that returns task rows and collects them.
pub async fn fetch_tasks(
    conn: &mut PgConnection,
    query: Query<'_, Postgres, PgArguments>,
) -> Result<Vec<Task>, StoreError> {
    query
        .fetch_all(conn)
        .await?
        .iter()
        .map(task_from_row)
        .collect()
}

/// Runs a statement that returns at most one task row.
pub async fn fetch_task(
    conn: &mut PgConnection,
    query: Query<'_, Postgres, PgArguments>,
) -> Result<Option<Task>, StoreError> {
    query
        .fetch_optional(conn)
        .await?
        .as_ref()
        .map(task_from_row)
        .transpose()
}

pub async fn task_get(conn: &mut PgConnection, id: TaskId) -> Result<Option<Task>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM tasks WHERE id = $1::uuid");
    fetch_task(conn, sqlx::query(&sql).bind(id.to_string())).await
}

pub async fn task_get_many(
    conn: &mut PgConnection,
    ids: &[TaskId],
) -> Result<Vec<Task>, StoreError> {
    let ids: Vec<String> = ids.iter().map(TaskId::to_string).collect();
    let sql = format!("SELECT {COLUMNS} FROM tasks WHERE id = ANY($1::uuid[])");
    fetch_tasks(conn, sqlx::query(&sql).bind(ids)).await
}

pub async fn task_list(
    conn: &mut PgConnection,
    filter: &TaskFilter,
) -> Result<Vec<Task>, StoreError> {
    let list = sql::task_list(Dialect::Postgres, COLUMNS, filter);
    let query = list
        .values
        .into_iter()
        .fold(sqlx::query(&list.sql), |query, value| query.bind(value));
    fetch_tasks(conn, query).await
}
