//! What an insert reads before it decides, inside its transaction: the admission count of a
//! queue (under the queue's advisory lock), the tasks already stored under idempotency keys,
//! and the queues' default callbacks.

use std::collections::{BTreeSet, HashMap};

use sqlx::PgConnection;

use super::rows::{COLUMNS, task_from_row};
use crate::store::StoreError;
use crate::task::{Callback, QueueName, Task};

/// The first key of the advisory locks that guard one queue's admission ("adm").
const ADMISSION_LOCK: i32 = 0x61646d;

/// A key's first task and the digest of the request that stored it, by key.
pub type Keyed = HashMap<String, (String, Task)>;

/// Tasks already stored under these keys, with the digest of the request that stored them.
pub async fn by_keys(conn: &mut PgConnection, keys: Vec<String>) -> Result<Keyed, StoreError> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "SELECT {COLUMNS}, request_hash FROM tasks WHERE idempotency_key = ANY($1::text[])"
    );
    let rows = sqlx::query(&sql).bind(keys).fetch_all(conn).await?;
    let mut found = HashMap::new();
    for row in &rows {
        let task = task_from_row(row)?;
        let hash: String = sqlx::Row::try_get(row, "request_hash")?;
        if let Some(key) = task.idempotency_key.clone() {
            found.insert(key, (hash, task));
        }
    }
    Ok(found)
}

/// The default callbacks of these queues, where they have one, by queue name.
pub async fn queue_callbacks(
    conn: &mut PgConnection,
    queues: &BTreeSet<QueueName>,
) -> Result<HashMap<String, Callback>, StoreError> {
    let names: Vec<&str> = queues.iter().map(QueueName::as_str).collect();
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT name, callback_url, callback_secret FROM queues \
         WHERE name = ANY($1::text[]) AND callback_url IS NOT NULL",
    )
    .bind(names)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, url, secret)| (name, Callback { url, secret }))
        .collect())
}

/// Locks `queue`'s admission for this transaction; returns (waiting tasks, its own limit).
pub async fn admit(
    conn: &mut PgConnection,
    queue: &QueueName,
) -> Result<(u64, Option<u64>), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(ADMISSION_LOCK)
        .bind(queue.as_str())
        .execute(&mut *conn)
        .await?;
    // A new statement, so a new snapshot: it sees what the previous holder committed.
    let (waiting, limit): (i64, Option<i64>) = sqlx::query_as(
        "SELECT (SELECT COALESCE(sum(n), 0)::bigint FROM queue_counts \
                 WHERE queue = $1 AND state IN ('waiting', 'queued', 'scheduled')), \
                (SELECT max_queued FROM queues WHERE name = $1)",
    )
    .bind(queue.as_str())
    .fetch_one(conn)
    .await?;
    Ok((waiting.max(0) as u64, limit.map(|l| l as u64)))
}
