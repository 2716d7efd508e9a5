//! The PostgreSQL observer queries: the event log (written by triggers, numbered as they
//! insert, read up to the horizon below which nothing is left to commit; see migration 0010), progress reports, and completion webhook
//! deliveries (created by a trigger when a task with a callback ends).

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use super::attempts::held_guard;
use super::rows::{COLUMNS, fetch_task};
use crate::store::sql::DeliveryColumns;
use crate::store::{Delivery, DeliveryOutcome, EventFilter, StoreError};
use crate::task::{Kind, Millis, Progress, QueueName, TaskEvent, TaskId};

/// How long a delivery handed to one node is hidden from the others: longer than a try may
/// take (`--webhook-timeout`, 10 s by default), so two nodes do not POST the same delivery at
/// once; if the node stops or dies meanwhile, the delivery is due again after it.
const DELIVERY_HOLD_MS: i64 = 15_000;

fn event_from_row(row: &PgRow) -> Result<TaskEvent, StoreError> {
    fn bad(error: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt(format!("event: {error}"))
    }
    let task_id: String = row.try_get("task_id")?;
    let queue: String = row.try_get("queue")?;
    let kind: String = row.try_get("kind")?;
    let state: String = row.try_get("state")?;
    let progress: Option<String> = row.try_get("progress")?;
    Ok(TaskEvent {
        seq: row.try_get("seq")?,
        task_id: task_id.parse().map_err(bad)?,
        queue: QueueName::parse(queue).map_err(bad)?,
        kind: Kind::parse(kind).map_err(bad)?,
        state: state.parse().map_err(bad)?,
        attempt: row.try_get::<i32, _>("attempt")? as u32,
        progress: progress
            .map(|p| serde_json::from_str(&p).map_err(bad))
            .transpose()?,
        at: row.try_get("at")?,
    })
}

/// The first key of the advisory locks event writers hold until they commit ("evnt"; the
/// second key is the writer's pid; migration 0010).
const EVENT_WRITERS_LOCK: i32 = 0x65766e74;

/// The highest `seq` a read may return (migration 0010): the sequence's last value, once
/// every writer that held its lock when it was read has ended. Each wait is a statement of
/// its own, so this reader holds at most the key it waits for, and only until the writer
/// ends. A read bounded by it, in a later statement, returns every event up to it.
async fn horizon(conn: &mut PgConnection) -> Result<i64, StoreError> {
    let (horizon, writers): (i64, Vec<i32>) =
        sqlx::query_as("SELECT horizon, writers FROM taskd_events_writers()")
            .fetch_one(&mut *conn)
            .await?;
    for writer in writers {
        sqlx::query("SELECT pg_advisory_xact_lock_shared($1, $2)")
            .bind(EVENT_WRITERS_LOCK)
            .bind(writer)
            .execute(&mut *conn)
            .await?;
    }
    Ok(horizon)
}

pub async fn events_after(
    conn: &mut PgConnection,
    after: i64,
    filter: &EventFilter,
    limit: usize,
) -> Result<Vec<TaskEvent>, StoreError> {
    let horizon = horizon(conn).await?;
    if horizon <= after {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "SELECT seq, task_id::text AS task_id, queue, kind, state, attempt, progress, at \
         FROM task_events \
         WHERE seq > $1 AND seq <= $4 AND ($2::uuid IS NULL OR task_id = $2::uuid) \
         ORDER BY seq LIMIT $3",
    )
    .bind(after)
    .bind(filter.task.map(|id| id.to_string()))
    .bind(limit as i64)
    .bind(horizon)
    .fetch_all(conn)
    .await?;
    rows.iter().map(event_from_row).collect()
}

pub async fn event_bounds(conn: &mut PgConnection) -> Result<Option<(i64, i64)>, StoreError> {
    let horizon = horizon(conn).await?;
    let (oldest, newest): (Option<i64>, Option<i64>) =
        sqlx::query_as("SELECT min(seq), max(seq) FROM task_events WHERE seq <= $1")
            .bind(horizon)
            .fetch_one(conn)
            .await?;
    Ok(oldest.zip(newest))
}

pub async fn record_progress(
    conn: &mut PgConnection,
    updates: &[(TaskId, String, Progress)],
) -> Result<u64, StoreError> {
    let ids: Vec<String> = updates.iter().map(|(id, _, _)| id.to_string()).collect();
    let leases: Vec<String> = updates.iter().map(|(_, lease, _)| lease.clone()).collect();
    let reports: Vec<String> = updates
        .iter()
        .map(|(_, _, progress)| serde_json::to_string(progress).unwrap_or_default())
        .collect();
    let sql = format!(
        "UPDATE tasks SET progress = report.progress \
         FROM unnest($1::uuid[], $2::text[], $3::text[]) AS report (id, lease, progress) \
         WHERE tasks.id = report.id AND {held}",
        held = held_guard("tasks.lease", "report.lease"),
    );
    let recorded = sqlx::query(&sql)
        .bind(ids)
        .bind(leases)
        .bind(reports)
        .execute(conn)
        .await?;
    Ok(recorded.rows_affected())
}

/// Hands out up to `limit` due deliveries and hides them from the other nodes for a while
/// (`DELIVERY_HOLD_MS`), so that several nodes polling the same table do not all POST each
/// one; `delivery_tried` then records the try and when the next is due.
pub async fn deliveries_due(
    conn: &mut PgConnection,
    now: Millis,
    limit: usize,
) -> Result<Vec<Delivery>, StoreError> {
    let due: Vec<(String, String, String, Option<String>, i32)> = sqlx::query_as(
        "UPDATE webhook_deliveries SET next_at = $1 + $3 \
         WHERE id = ANY(ARRAY(SELECT id FROM webhook_deliveries \
                              WHERE state = 'pending' AND next_at <= $1 \
                              ORDER BY next_at LIMIT $2 FOR UPDATE SKIP LOCKED)) \
         RETURNING id, task_id::text, url, secret, attempts",
    )
    .bind(now)
    .bind(limit as i64)
    .bind(DELIVERY_HOLD_MS)
    .fetch_all(&mut *conn)
    .await?;
    let sql = format!("SELECT {COLUMNS} FROM tasks WHERE id = $1::uuid");
    let mut deliveries = Vec::with_capacity(due.len());
    for (id, task_id, url, secret, attempts) in due {
        if let Some(task) = fetch_task(conn, sqlx::query(&sql).bind(task_id)).await? {
            deliveries.push(Delivery {
                id,
                task,
                url,
                secret,
                attempts: attempts as u32,
            });
        }
    }
    Ok(deliveries)
}

pub async fn delivery_tried(
    conn: &mut PgConnection,
    id: &str,
    outcome: &DeliveryOutcome,
) -> Result<(), StoreError> {
    let tried = DeliveryColumns::of(outcome);
    // One statement: the delivery and its task's `callback_status` change together.
    sqlx::query(
        "WITH tried AS ( \
             UPDATE webhook_deliveries SET state = $2, attempts = attempts + 1, \
                 last_status = $3, last_error = $4, next_at = COALESCE($5, next_at) \
             WHERE id = $1 AND state = 'pending' RETURNING task_id) \
         UPDATE tasks SET callback_status = $2 FROM tried WHERE tasks.id = tried.task_id",
    )
    .bind(id)
    .bind(tried.state)
    .bind(tried.status.map(i32::from))
    .bind(tried.error)
    .bind(tried.next_at)
    .execute(conn)
    .await?;
    Ok(())
}
