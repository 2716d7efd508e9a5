//! The PostgreSQL queue queries: settings (the `queues` table), what each queue holds (the
//! trigger-kept `queue_counts`, summed; see the migration for why it holds changes rather than
//! totals), and the fold that keeps that table short.

use sqlx::{Acquire, PgConnection};

use crate::store::sql;
use crate::store::{QueueInfo, QueuePatch, RateLimit, StoreError};
use crate::task::{Callback, QueueName, now_millis};

pub async fn queue_get(conn: &mut PgConnection, name: QueueName) -> Result<QueueInfo, StoreError> {
    type Settings = (
        bool,
        Option<i32>,
        Option<i64>,
        Option<String>,
        Option<String>,
        bool,
        Option<i32>,
        Option<i64>,
    );
    let settings: Option<Settings> = sqlx::query_as(
        "SELECT paused, concurrency, max_queued, callback_url, callback_secret, remote, \
             rate_limit, rate_per_ms \
         FROM queues WHERE name = $1",
    )
    .bind(name.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    let (paused, concurrency, max_queued, callback_url, callback_secret, remote, limit, per_ms) =
        settings.unwrap_or_default();
    let rate = limit.zip(per_ms).map(|(limit, per_ms)| RateLimit {
        limit: limit as u32,
        per_ms: per_ms as u64,
    });
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT state, sum(n)::bigint AS n FROM queue_counts WHERE queue = $1 GROUP BY state",
    )
    .bind(name.as_str())
    .fetch_all(&mut *conn)
    .await?;
    let counts = sql::state_counts(rows);
    let (oldest_queued_at, finished_last_minute): (Option<i64>, i64) = sqlx::query_as(
        "SELECT (SELECT min(created_at) FROM tasks WHERE queue = $1 AND state = 'queued'), \
                (SELECT count(*) FROM tasks WHERE finished_at >= $2 AND queue = $1)",
    )
    .bind(name.as_str())
    .bind(now_millis() - 60_000)
    .fetch_one(&mut *conn)
    .await?;
    // Every task whose callback status is set has exactly one delivery in the same state
    // (the trigger and `delivery_tried` write both), and deliveries are few: count those.
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT d.state, count(*) FROM webhook_deliveries d JOIN tasks t ON t.id = d.task_id \
         WHERE t.queue = $1 GROUP BY d.state",
    )
    .bind(name.as_str())
    .fetch_all(&mut *conn)
    .await?;
    let callbacks = sql::callback_counts(rows);
    Ok(QueueInfo {
        name,
        paused,
        concurrency: concurrency.map(|c| c as u32),
        max_queued: max_queued.map(|m| m as u64),
        callback: callback_url.map(|url| Callback {
            url,
            secret: callback_secret,
        }),
        callbacks,
        remote,
        rate,
        counts,
        oldest_queued_at,
        finished_last_minute: finished_last_minute as u64,
    })
}

pub async fn remote_queues(conn: &mut PgConnection) -> Result<Vec<QueueName>, StoreError> {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT name FROM queues WHERE remote ORDER BY name")
            .fetch_all(&mut *conn)
            .await?;
    Ok(names
        .into_iter()
        .filter_map(|name| QueueName::parse(name).ok())
        .collect())
}

pub async fn queue_list(conn: &mut PgConnection) -> Result<Vec<QueueInfo>, StoreError> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT queue FROM queue_counts GROUP BY queue, state HAVING sum(n) > 0 \
         UNION SELECT name FROM queues ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut queues = Vec::with_capacity(names.len());
    for name in names {
        if let Ok(name) = QueueName::parse(name) {
            queues.push(queue_get(conn, name).await?);
        }
    }
    Ok(queues)
}

pub async fn queue_update(
    conn: &mut PgConnection,
    name: QueueName,
    patch: QueuePatch,
) -> Result<QueueInfo, StoreError> {
    // One statement applies the patch to whatever is stored when it runs, so two nodes
    // changing different settings at once both stick.
    let callback = patch.callback.clone().flatten();
    sqlx::query(
        "INSERT INTO queues (name, paused, concurrency, max_queued, callback_url, \
             callback_secret, remote, updated_at, rate_limit, rate_per_ms) \
         VALUES ($1, COALESCE($2, false), $4, $6, $8, $9, COALESCE($10, false), $11, $13, $14) \
         ON CONFLICT (name) DO UPDATE SET \
             paused = COALESCE($2, queues.paused), \
             concurrency = CASE WHEN $3 THEN $4 ELSE queues.concurrency END, \
             max_queued = CASE WHEN $5 THEN $6 ELSE queues.max_queued END, \
             callback_url = CASE WHEN $7 THEN $8 ELSE queues.callback_url END, \
             callback_secret = CASE WHEN $7 THEN $9 ELSE queues.callback_secret END, \
             remote = COALESCE($10, queues.remote), \
             rate_limit = CASE WHEN $12 THEN $13 ELSE queues.rate_limit END, \
             rate_per_ms = CASE WHEN $12 THEN $14 ELSE queues.rate_per_ms END, \
             updated_at = $11",
    )
    .bind(name.as_str())
    .bind(patch.paused)
    .bind(patch.concurrency.is_some())
    .bind(patch.concurrency.flatten().map(|c| c as i32))
    .bind(patch.max_queued.is_some())
    .bind(patch.max_queued.flatten().map(|m| m as i64))
    .bind(patch.callback.is_some())
    .bind(callback.as_ref().map(|c| c.url.clone()))
    .bind(callback.and_then(|c| c.secret))
    .bind(patch.remote)
    .bind(now_millis())
    .bind(patch.rate.is_some())
    .bind(patch.rate.flatten().map(|r| r.limit as i32))
    .bind(patch.rate.flatten().map(|r| r.per_ms as i64))
    .execute(&mut *conn)
    .await?;
    queue_get(conn, name).await
}

/// The advisory lock key that lets one node fold at a time ("taskd" + 2 in ASCII).
const FOLD_LOCK: i64 = 0x7461_736b_6402;

/// Replaces the count changes of every (queue, state) that has several rows by one row with
/// their sum (none when it is zero). Safe beside writers: the delete takes only the rows this
/// statement's snapshot sees, and the sum of exactly those rows is inserted in the same
/// transaction, so every change is counted once. One node folds at a time (two folds could
/// lock the same rows in opposite orders); the others skip their turn.
pub async fn fold_counts(conn: &mut PgConnection) -> Result<u64, StoreError> {
    let mut tx = conn.begin().await?;
    let ours: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(FOLD_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    if !ours {
        return Ok(0);
    }
    let folded = sqlx::query(
        "WITH gone AS ( \
             DELETE FROM queue_counts WHERE (queue, state) IN ( \
                 SELECT queue, state FROM queue_counts GROUP BY queue, state \
                 HAVING count(*) > 1) \
             RETURNING queue, state, n) \
         INSERT INTO queue_counts (queue, state, n) \
         SELECT queue, state, sum(n) FROM gone GROUP BY queue, state HAVING sum(n) <> 0",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(folded.rows_affected())
}
