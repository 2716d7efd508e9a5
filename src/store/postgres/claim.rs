//! `task_claim`: moves up to `limit` queued tasks to running, fairly across queues.
//!
//! Several nodes claim at once. Rows are taken with `FOR UPDATE SKIP LOCKED`, so a node never
//! waits for another's claim and never takes a row another is taking; a skipped row is left
//! for the next claim. A queue's `concurrency` holds exactly across nodes: before it counts
//! what runs there, the claim takes that queue's advisory lock (in name order, so claims never
//! wait in a circle) and keeps it until commit, so the next claimer counts this one's tasks.
//! Queues without a limit take no lock, and when no candidate queue has one, the claim runs
//! without a transaction: each queue's share is one `UPDATE`, atomic by itself.

use sqlx::{Acquire, PgConnection, Row};
use uuid::Uuid;

use super::rows::{COLUMNS, fetch_tasks};
use crate::store::sql::{self, state_guard};
use crate::store::{StoreError, fair_shares};
use crate::task::{Kind, Millis, Move, QueueName, Task, now_millis};

/// The first key of the advisory locks that guard one queue's concurrency ("cnc").
const CONCURRENCY_LOCK: i32 = 0x636e63;

/// A queue with waiting tasks, as the claim sees it.
#[derive(Debug)]
struct Candidate {
    queue: String,
    waiting: i64,
    running: i64,
    concurrency: Option<i64>,
}

impl Candidate {
    /// How many it may start now: waiting tasks, capped by its concurrency.
    fn room(&self) -> u64 {
        sql::claim_room(self.waiting, self.running, self.concurrency)
    }
}

async fn claim_candidates(conn: &mut PgConnection) -> Result<Vec<Candidate>, StoreError> {
    let rows = sqlx::query(
        "SELECT c.queue, \
             COALESCE(sum(c.n) FILTER (WHERE c.state = 'queued'), 0)::bigint AS waiting, \
             COALESCE(sum(c.n) FILTER (WHERE c.state = 'running'), 0)::bigint AS running, \
             q.concurrency::bigint AS concurrency \
         FROM queue_counts c LEFT JOIN queues q ON q.name = c.queue \
         WHERE c.state IN ('queued', 'running') AND NOT COALESCE(q.paused, false) \
           AND NOT COALESCE(q.remote, false) \
         GROUP BY c.queue, q.concurrency \
         HAVING COALESCE(sum(c.n) FILTER (WHERE c.state = 'queued'), 0) > 0 \
         ORDER BY c.queue",
    )
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Candidate {
                queue: row.try_get("queue")?,
                waiting: row.try_get("waiting")?,
                running: row.try_get("running")?,
                concurrency: row.try_get("concurrency")?,
            })
        })
        .collect()
}

/// Locks a limited queue's concurrency for this transaction and counts what runs there now,
/// including what other nodes claimed and committed a moment ago.
async fn running_now(conn: &mut PgConnection, queue: &str) -> Result<i64, StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(CONCURRENCY_LOCK)
        .bind(queue)
        .execute(&mut *conn)
        .await?;
    Ok(sqlx::query_scalar(
        "SELECT COALESCE(sum(n), 0)::bigint FROM queue_counts \
         WHERE queue = $1 AND state = 'running'",
    )
    .bind(queue)
    .fetch_one(conn)
    .await?)
}

/// Moves the first `take` queued tasks of `queue` (of these kinds, if given; priority, then
/// FIFO) to running under `lease`, counting the attempt. Rows another node is taking are
/// skipped, never waited for. A `remote` lease never outlives the attempt's deadline
/// (`started_at + timeout_ms`), so its expiry enforces the timeout; the local pool enforces
/// its own and renews its leases regardless.
async fn claim_from(
    conn: &mut PgConnection,
    queue: &str,
    kinds: Option<&[Kind]>,
    take: u64,
    lease: &str,
    lease_expires_at: Millis,
    remote: bool,
) -> Result<Vec<Task>, StoreError> {
    let sql = format!(
        "UPDATE tasks SET state = 'running', attempt = attempt + 1, lease = $1, \
             lease_expires_at = CASE WHEN $7 AND timeout_ms IS NOT NULL \
                 THEN LEAST($2, $3 + timeout_ms) ELSE $2 END, \
             started_at = $3, progress = NULL \
         WHERE id = ANY(ARRAY(SELECT id FROM tasks \
                              WHERE {claimable} AND queue = $4 \
                                  AND ($6::text[] IS NULL OR kind = ANY($6::text[])) \
                              ORDER BY priority DESC, id LIMIT $5 \
                              FOR UPDATE SKIP LOCKED)) \
             AND {claimable} \
         RETURNING {COLUMNS}",
        claimable = state_guard("state", Move::Claim),
    );
    let kinds: Option<Vec<String>> =
        kinds.map(|kinds| kinds.iter().map(|k| k.to_string()).collect());
    let query = sqlx::query(&sql)
        .bind(lease)
        .bind(lease_expires_at)
        .bind(now_millis())
        .bind(queue)
        .bind(take as i64)
        .bind(kinds)
        .bind(remote);
    fetch_tasks(conn, query).await
}

/// In the claim order: by queue, then highest priority first, then oldest.
fn in_claim_order(claimed: &mut [Task]) {
    claimed.sort_by(|a, b| {
        (a.queue.as_str(), std::cmp::Reverse(a.priority), a.id).cmp(&(
            b.queue.as_str(),
            std::cmp::Reverse(b.priority),
            b.id,
        ))
    });
}

/// Leases up to `limit` queued tasks of one queue (of these kinds, if given) to a remote
/// worker; a paused queue leases nothing. (A queue's `concurrency` limits local claims only,
/// as in the SQLite store.)
pub async fn task_claim_queue(
    conn: &mut PgConnection,
    queue: &QueueName,
    kinds: Option<&[Kind]>,
    limit: usize,
    lease_expires_at: Millis,
) -> Result<Vec<Task>, StoreError> {
    let paused: Option<bool> = sqlx::query_scalar("SELECT paused FROM queues WHERE name = $1")
        .bind(queue.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    if paused.unwrap_or(false) || limit == 0 {
        return Ok(Vec::new());
    }
    let lease = Uuid::new_v4().to_string();
    let mut claimed = claim_from(
        conn,
        queue.as_str(),
        kinds,
        limit as u64,
        &lease,
        lease_expires_at,
        true,
    )
    .await?;
    in_claim_order(&mut claimed);
    Ok(claimed)
}

pub async fn task_claim(
    conn: &mut PgConnection,
    limit: usize,
    lease_expires_at: Millis,
) -> Result<Vec<Task>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let candidates = claim_candidates(conn).await?;
    if candidates.iter().any(|c| c.concurrency.is_some()) {
        // The concurrency locks hold until commit: count and claim in one transaction.
        let mut tx = conn.begin().await?;
        let claimed = claim_shares(&mut tx, candidates, limit, lease_expires_at).await?;
        tx.commit().await?;
        Ok(claimed)
    } else {
        // Each queue's claim is one statement, atomic by itself: no transaction (and its two
        // round trips) needed.
        claim_shares(conn, candidates, limit, lease_expires_at).await
    }
}

/// Shares `limit` between the candidates (recounting what runs in limited queues, under
/// their locks) and claims each queue's share.
async fn claim_shares(
    conn: &mut PgConnection,
    mut candidates: Vec<Candidate>,
    limit: usize,
    lease_expires_at: Millis,
) -> Result<Vec<Task>, StoreError> {
    // Candidates come in name order: the lock order.
    for candidate in candidates.iter_mut() {
        if candidate.concurrency.is_some() {
            candidate.running = running_now(conn, &candidate.queue).await?;
        }
    }
    let rooms: Vec<u64> = candidates.iter().map(Candidate::room).collect();
    let shares = fair_shares(&rooms, limit);
    let lease = Uuid::new_v4().to_string();
    let mut claimed = Vec::new();
    for (candidate, take) in candidates.iter().zip(shares) {
        if take > 0 {
            let queue = &candidate.queue;
            claimed.extend(
                claim_from(conn, queue, None, take, &lease, lease_expires_at, false).await?,
            );
        }
    }
    in_claim_order(&mut claimed);
    Ok(claimed)
}
