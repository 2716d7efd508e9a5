//! The SQLite queue queries: settings (the `queues` table) and what each queue holds (the
//! trigger-kept `queue_counts`, plus two indexed reads for age and throughput).

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};

use crate::store::{QueueInfo, QueuePatch, StoreError};
use crate::task::{QueueName, TaskState, now_millis};

/// A queue's stored settings: (paused, concurrency, max_queued).
type Settings = (bool, Option<u32>, Option<u64>);

fn settings(conn: &Connection, name: &QueueName) -> Result<Settings, StoreError> {
    let row: Option<(bool, Option<i64>, Option<i64>)> = conn
        .prepare_cached("SELECT paused, concurrency, max_queued FROM queues WHERE name = ?1")?
        .query_row([name.as_str()], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .optional()?;
    Ok(
        row.map_or((false, None, None), |(paused, concurrency, max_queued)| {
            (
                paused,
                concurrency.map(|c| c as u32),
                max_queued.map(|m| m as u64),
            )
        }),
    )
}

pub fn queue_get(conn: &Connection, name: QueueName) -> Result<QueueInfo, StoreError> {
    let (paused, concurrency, max_queued) = settings(conn, &name)?;
    let mut counts: BTreeMap<TaskState, u64> = TaskState::ALL.iter().map(|s| (*s, 0)).collect();
    let mut statement =
        conn.prepare_cached("SELECT state, n FROM queue_counts WHERE queue = ?1")?;
    let rows = statement.query_map([name.as_str()], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
    })?;
    for row in rows {
        let (state, n) = row?;
        if let Ok(state) = state.parse::<TaskState>() {
            counts.insert(state, n as u64);
        }
    }
    let oldest_queued_at: Option<i64> = conn
        .prepare_cached("SELECT MIN(created_at) FROM tasks WHERE queue = ?1 AND state = 'queued'")?
        .query_row([name.as_str()], |row| row.get(0))?;
    let finished_last_minute: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM tasks WHERE finished_at >= ?2 AND queue = ?1")?
        .query_row(params![name.as_str(), now_millis() - 60_000], |row| {
            row.get(0)
        })?;
    Ok(QueueInfo {
        name,
        paused,
        concurrency,
        max_queued,
        counts,
        oldest_queued_at,
        finished_last_minute: finished_last_minute as u64,
    })
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
    let (paused, concurrency, max_queued) = settings(conn, &name)?;
    let paused = patch.paused.unwrap_or(paused);
    let concurrency = patch.concurrency.unwrap_or(concurrency);
    let max_queued = patch.max_queued.unwrap_or(max_queued);
    conn.prepare_cached(
        "INSERT INTO queues (name, paused, concurrency, max_queued, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (name) DO UPDATE SET paused = ?2, concurrency = ?3, max_queued = ?4, \
             updated_at = ?5",
    )?
    .execute(params![
        name.as_str(),
        paused,
        concurrency,
        max_queued.map(|m| m as i64),
        now_millis()
    ])?;
    queue_get(conn, name)
}
