//! The SQLite queue queries: settings (the `queues` table) and what each queue holds (the
//! trigger-kept `queue_counts`, plus two indexed reads for age and throughput).

use rusqlite::{Connection, OptionalExtension, params};

use crate::store::sql;
use crate::store::{QueueInfo, QueuePatch, RateLimit, StoreError};
use crate::task::{Callback, QueueName, now_millis};

/// A queue's stored settings.
#[derive(Default)]
struct Settings {
    paused: bool,
    concurrency: Option<u32>,
    max_queued: Option<u64>,
    callback: Option<Callback>,
    remote: bool,
    rate: Option<RateLimit>,
}

/// A stored rate limit: both columns or neither.
pub(super) fn rate_of(limit: Option<i64>, per_ms: Option<i64>) -> Option<RateLimit> {
    Some(RateLimit {
        limit: limit? as u32,
        per_ms: per_ms? as u64,
    })
}

fn settings(conn: &Connection, name: &QueueName) -> Result<Settings, StoreError> {
    let settings = conn
        .prepare_cached(
            "SELECT paused, concurrency, max_queued, callback_url, callback_secret, remote, \
                 rate_limit, rate_per_ms \
             FROM queues WHERE name = ?1",
        )?
        .query_row([name.as_str()], |row| {
            let concurrency: Option<i64> = row.get(1)?;
            let max_queued: Option<i64> = row.get(2)?;
            let url: Option<String> = row.get(3)?;
            let secret: Option<String> = row.get(4)?;
            Ok(Settings {
                paused: row.get(0)?,
                concurrency: concurrency.map(|c| c as u32),
                max_queued: max_queued.map(|m| m as u64),
                callback: url.map(|url| Callback { url, secret }),
                remote: row.get(5)?,
                rate: rate_of(row.get(6)?, row.get(7)?),
            })
        })
        .optional()?;
    Ok(settings.unwrap_or_default())
}

pub fn queue_get(conn: &Connection, name: QueueName) -> Result<QueueInfo, StoreError> {
    let Settings {
        paused,
        concurrency,
        max_queued,
        callback,
        remote,
        rate,
    } = settings(conn, &name)?;
    let counts = sql::state_counts(count_rows(
        conn,
        "SELECT state, n FROM queue_counts WHERE queue = ?1",
        &name,
    )?);
    let oldest_queued_at: Option<i64> = conn
        .prepare_cached("SELECT MIN(created_at) FROM tasks WHERE queue = ?1 AND state = 'queued'")?
        .query_row([name.as_str()], |row| row.get(0))?;
    let finished_last_minute: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM tasks WHERE finished_at >= ?2 AND queue = ?1")?
        .query_row(params![name.as_str(), now_millis() - 60_000], |row| {
            row.get(0)
        })?;
    let callbacks = sql::callback_counts(count_rows(
        conn,
        "SELECT callback_status, COUNT(*) FROM tasks \
         WHERE queue = ?1 AND callback_status IS NOT NULL GROUP BY callback_status",
        &name,
    )?);
    Ok(QueueInfo {
        name,
        paused,
        concurrency,
        max_queued,
        callback,
        callbacks,
        remote,
        rate,
        counts,
        oldest_queued_at,
        finished_last_minute: finished_last_minute as u64,
    })
}

pub fn remote_queues(conn: &Connection) -> Result<Vec<QueueName>, StoreError> {
    let names: Vec<String> = conn
        .prepare_cached("SELECT name FROM queues WHERE remote ORDER BY name")?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(names
        .into_iter()
        .filter_map(|name| QueueName::parse(name).ok())
        .collect())
}

pub fn queue_list(conn: &Connection) -> Result<Vec<QueueInfo>, StoreError> {
    let names: Vec<String> = conn
        .prepare_cached(
            "SELECT queue FROM queue_counts WHERE n > 0 UNION SELECT name FROM queues ORDER BY 1",
        )?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    names
        .into_iter()
        .filter_map(|name| QueueName::parse(name).ok())
        .map(|name| queue_get(conn, name))
        .collect()
}

pub fn queue_update(
    conn: &Connection,
    name: QueueName,
    patch: QueuePatch,
) -> Result<QueueInfo, StoreError> {
    let current = settings(conn, &name)?;
    let paused = patch.paused.unwrap_or(current.paused);
    let concurrency = patch.concurrency.unwrap_or(current.concurrency);
    let max_queued = patch.max_queued.unwrap_or(current.max_queued);
    let callback = patch.callback.unwrap_or(current.callback);
    let remote = patch.remote.unwrap_or(current.remote);
    let rate = patch.rate.unwrap_or(current.rate);
    conn.prepare_cached(
        "INSERT INTO queues (name, paused, concurrency, max_queued, callback_url, \
             callback_secret, updated_at, remote, rate_limit, rate_per_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
         ON CONFLICT (name) DO UPDATE SET paused = ?2, concurrency = ?3, max_queued = ?4, \
             callback_url = ?5, callback_secret = ?6, updated_at = ?7, remote = ?8, \
             rate_limit = ?9, rate_per_ms = ?10",
    )?
    .execute(params![
        name.as_str(),
        paused,
        concurrency,
        max_queued.map(|m| m as i64),
        callback.as_ref().map(|c| c.url.as_str()),
        callback.as_ref().and_then(|c| c.secret.as_deref()),
        now_millis(),
        remote,
        rate.map(|r| r.limit),
        rate.map(|r| r.per_ms as i64),
    ])?;
    queue_get(conn, name)
}

/// The `(name, count)` rows a per-queue count answers.
fn count_rows(
    conn: &Connection,
    sql: &str,
    queue: &QueueName,
) -> Result<Vec<(String, i64)>, StoreError> {
    let mut statement = conn.prepare_cached(sql)?;
    let rows = statement.query_map([queue.as_str()], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
