//! The SQLite observer queries: the event log (written by triggers), progress reports, and
//! completion webhook deliveries (created by a trigger when a task with a callback ends).

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::rows::{COLUMNS, query_tasks};
use crate::store::sql::{DeliveryColumns, state_guard};
use crate::store::{Delivery, DeliveryOutcome, EventFilter, StoreError};
use crate::task::{Kind, Millis, Move, Progress, QueueName, TaskEvent, TaskId};

fn event_from_row(row: &Row<'_>) -> rusqlite::Result<TaskEvent> {
    fn bad(error: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(error))
    }
    let task_id: String = row.get(1)?;
    let queue: String = row.get(2)?;
    let kind: String = row.get(3)?;
    let state: String = row.get(4)?;
    let progress: Option<String> = row.get(6)?;
    Ok(TaskEvent {
        seq: row.get(0)?,
        task_id: task_id.parse().map_err(bad)?,
        queue: QueueName::parse(queue).map_err(bad)?,
        kind: Kind::parse(kind).map_err(bad)?,
        state: state.parse().map_err(bad)?,
        attempt: row.get(5)?,
        progress: progress
            .map(|p| serde_json::from_str(&p).map_err(bad))
            .transpose()?,
        at: row.get(7)?,
    })
}

pub fn events_after(
    conn: &Connection,
    after: i64,
    filter: &EventFilter,
    limit: usize,
) -> Result<Vec<TaskEvent>, StoreError> {
    const SELECT: &str = "SELECT seq, task_id, queue, kind, state, attempt, progress, at \
                          FROM task_events";
    let events = match filter.task {
        Some(task) => conn
            .prepare_cached(&format!(
                "{SELECT} WHERE task_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
            ))?
            .query_map(
                params![task.to_string(), after, limit as i64],
                event_from_row,
            )?
            .collect::<Result<Vec<_>, _>>(),
        None => conn
            .prepare_cached(&format!("{SELECT} WHERE seq > ?1 ORDER BY seq LIMIT ?2"))?
            .query_map(params![after, limit as i64], event_from_row)?
            .collect::<Result<Vec<_>, _>>(),
    };
    events.map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub fn event_bounds(conn: &Connection) -> Result<Option<(i64, i64)>, StoreError> {
    let bounds: (Option<i64>, Option<i64>) = conn
        // Two subqueries: SQLite answers a lone MIN or MAX from the key's b-tree in one step,
        // but both in one SELECT scan the whole table.
        .prepare_cached(
            "SELECT (SELECT MIN(seq) FROM task_events), (SELECT MAX(seq) FROM task_events)",
        )?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(bounds.0.zip(bounds.1))
}

pub fn record_progress(
    conn: &Connection,
    updates: &[(TaskId, String, Progress)],
) -> Result<u64, StoreError> {
    let mut statement = conn.prepare_cached(&format!(
        "UPDATE tasks SET progress = ?3 WHERE id = ?1 AND {held} AND lease = ?2",
        held = state_guard("state", Move::Finish),
    ))?;
    let mut recorded = 0;
    for (id, lease, progress) in updates {
        let progress = serde_json::to_string(progress).unwrap_or_default();
        recorded += statement.execute(params![id.to_string(), lease, progress])? as u64;
    }
    Ok(recorded)
}

pub fn deliveries_due(
    conn: &Connection,
    now: Millis,
    limit: usize,
) -> Result<Vec<Delivery>, StoreError> {
    let due: Vec<(String, String, String, Option<String>, u32)> = conn
        .prepare_cached(
            "SELECT id, task_id, url, secret, attempts FROM webhook_deliveries \
             WHERE state = 'pending' AND next_at <= ?1 ORDER BY next_at LIMIT ?2",
        )?
        .query_map(params![now, limit as i64], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    let mut deliveries = Vec::with_capacity(due.len());
    for (id, task_id, url, secret, attempts) in due {
        let task = query_tasks(
            conn,
            &format!("SELECT {COLUMNS} FROM tasks WHERE id = ?1"),
            [&task_id],
        )?
        .pop();
        if let Some(task) = task {
            deliveries.push(Delivery {
                id,
                task,
                url,
                secret,
                attempts,
            });
        }
    }
    Ok(deliveries)
}

pub fn delivery_tried(
    conn: &Connection,
    id: &str,
    outcome: &DeliveryOutcome,
) -> Result<(), StoreError> {
    let tried = DeliveryColumns::of(outcome);
    let task_id: Option<String> = conn
        .prepare_cached(
            "UPDATE webhook_deliveries SET state = ?2, attempts = attempts + 1, \
                 last_status = ?3, last_error = ?4, next_at = IFNULL(?5, next_at) \
             WHERE id = ?1 AND state = 'pending' RETURNING task_id",
        )?
        .query_row(
            params![id, tried.state, tried.status, tried.error, tried.next_at],
            |row| row.get(0),
        )
        .optional()?;
    if let Some(task_id) = task_id {
        conn.prepare_cached("UPDATE tasks SET callback_status = ?2 WHERE id = ?1")?
            .execute(params![task_id, tried.state])?;
    }
    Ok(())
}
