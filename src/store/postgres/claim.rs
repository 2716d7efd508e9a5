//! `task_claim`: moves up to `limit` queued tasks to running, fairly across queues.
//!
//! Several nodes claim at once. Rows are taken with `FOR UPDATE SKIP LOCKED`, so a node never
//! waits for another's claim and never takes a row another is taking; a skipped row is left
//! for the next claim. A queue's `concurrency` holds exactly across nodes: before it counts
//! what runs there, the claim takes that queue's advisory lock (in name order, so claims never
//! wait in a circle) and keeps it until commit, so the next claimer counts this one's tasks.
//! Queues without a limit take no lock, and when no candidate queue has one, the claim runs
//! without a transaction: each queue's share is one `UPDATE`, atomic by itself.
//!
//! A rate-limited queue (migration 0008) is claimed under the same lock: the claim counts the
//! queue's log of starts inside the window, starts at most the rest of the limit and logs its
//! starts before commit, so the next node's claim counts them.

use sqlx::{Acquire, PgConnection, Row};
use uuid::Uuid;

use super::rows::{COLUMNS, fetch_tasks};
use crate::store::sql::{self, state_guard};
use crate::store::{RateLimit, StoreError, fair_shares};
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
    rate: Option<RateLimit>,
    /// How many more its rate lets start now (counted under its lock); `None`: no rate.
    rate_room: Option<u64>,
}

impl Candidate {
    /// How many it may start now: waiting tasks, capped by its concurrency and its rate.
    fn room(&self) -> u64 {
        let room = sql::claim_room(self.waiting, self.running, self.concurrency);
        self.rate_room.map_or(room, |rate_room| room.min(rate_room))
    }

    /// Whether claiming from it needs its lock and a transaction.
    fn limited(&self) -> bool {
        self.concurrency.is_some() || self.rate.is_some()
    }
}

fn rate_of(limit: Option<i64>, per_ms: Option<i64>) -> Option<RateLimit> {
    Some(RateLimit {
        limit: limit? as u32,
        per_ms: per_ms? as u64,
    })
}

async fn claim_candidates(conn: &mut PgConnection) -> Result<Vec<Candidate>, StoreError> {
    let rows = sqlx::query(
        "SELECT c.queue, \
             COALESCE(sum(c.n) FILTER (WHERE c.state = 'queued'), 0)::bigint AS waiting, \
             COALESCE(sum(c.n) FILTER (WHERE c.state = 'running'), 0)::bigint AS running, \
             q.concurrency::bigint AS concurrency, \
             q.rate_limit::bigint AS rate_limit, q.rate_per_ms AS rate_per_ms \
         FROM queue_counts c LEFT JOIN queues q ON q.name = c.queue \
         WHERE c.state IN ('queued', 'running') AND NOT COALESCE(q.paused, false) \
           AND NOT COALESCE(q.remote, false) \
         GROUP BY c.queue, q.concurrency, q.rate_limit, q.rate_per_ms \
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
                rate: rate_of(row.try_get("rate_limit")?, row.try_get("rate_per_ms")?),
                rate_room: None,
            })
        })
        .collect()
}

/// Locks a limited queue (its concurrency and its rate) for this transaction, so the next
/// claimer counts what this one starts.
async fn lock_queue(conn: &mut PgConnection, queue: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(CONCURRENCY_LOCK)
        .bind(queue)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// How many attempts a rate-limited queue may start at `now` (under its lock): its limit
/// less the starts of its log inside the window.
async fn rate_room(
    conn: &mut PgConnection,
    queue: &str,
    rate: RateLimit,
    now: Millis,
) -> Result<u64, StoreError> {
    let started: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM queue_starts WHERE queue = $1 AND started_at > $2",
    )
    .bind(queue)
    .bind(now - rate.per_ms as i64)
    .fetch_one(conn)
    .await?;
    Ok(sql::rate_room(rate.limit.into(), started))
}

/// Logs `count` starts of a rate-limited queue at `now` and forgets those out of the window.
async fn log_starts(
    conn: &mut PgConnection,
    queue: &str,
    rate: RateLimit,
    count: usize,
    now: Millis,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM queue_starts WHERE queue = $1 AND started_at <= $2")
        .bind(queue)
        .bind(now - rate.per_ms as i64)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO queue_starts (queue, started_at) SELECT $1, $2 FROM generate_series(1, $3)",
    )
    .bind(queue)
    .bind(now)
    .bind(count as i32)
    .execute(conn)
    .await?;
    Ok(())
}

/// Counts what runs in a queue now (under its lock), including what other nodes claimed and
/// committed a moment ago.
async fn running_now(conn: &mut PgConnection, queue: &str) -> Result<i64, StoreError> {
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
/// skipped, never waited for. The rows are updated where the locking read found them (by
/// `ctid`, which cannot move while this statement holds their locks): looked up again by id,
/// each cost a second index search, an eighth to a fifth of a 2,048-task claim
/// (docs/benchmarks.md). A row another transaction changed after this statement began is not
/// taken by it (its new version is not where the statement looks): it stays queued for the
/// next claim, as a skipped one does. A `remote` lease never outlives the attempt's deadline
/// (`started_at + timeout_ms`), so its expiry enforces the timeout; the local pool enforces
/// its own and renews its leases regardless.
// One statement's parameters, each its own: a struct would only rename them.
#[allow(clippy::too_many_arguments)]
async fn claim_from(
    conn: &mut PgConnection,
    queue: &str,
    kinds: Option<&[Kind]>,
    take: u64,
    lease: &str,
    lease_expires_at: Millis,
    remote: bool,
    now: Millis,
) -> Result<Vec<Task>, StoreError> {
    let sql = format!(
        "UPDATE tasks SET state = 'running', attempt = attempt + 1, lease = $1, \
             lease_expires_at = CASE WHEN $7 AND timeout_ms IS NOT NULL \
                 THEN LEAST($2, $3 + timeout_ms) ELSE $2 END, \
             started_at = $3, progress = NULL \
         WHERE ctid = ANY(ARRAY(SELECT ctid FROM tasks \
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
        .bind(now)
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
    type Settings = (bool, Option<i64>, Option<i64>);
    let settings: Option<Settings> = sqlx::query_as(
        "SELECT paused, rate_limit::bigint, rate_per_ms FROM queues WHERE name = $1",
    )
    .bind(queue.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    let (paused, rate_limit, rate_per_ms) = settings.unwrap_or((false, None, None));
    if paused || limit == 0 {
        return Ok(Vec::new());
    }
    let lease = Uuid::new_v4().to_string();
    let now = now_millis();
    let Some(rate) = rate_of(rate_limit, rate_per_ms) else {
        let mut claimed = claim_from(
            conn,
            queue.as_str(),
            kinds,
            limit as u64,
            &lease,
            lease_expires_at,
            true,
            now,
        )
        .await?;
        in_claim_order(&mut claimed);
        return Ok(claimed);
    };
    // Counted, claimed and logged under the queue's lock, in one transaction.
    let mut tx = conn.begin().await?;
    lock_queue(&mut tx, queue.as_str()).await?;
    let take = rate_room(&mut tx, queue.as_str(), rate, now)
        .await?
        .min(limit as u64);
    let mut claimed = Vec::new();
    if take > 0 {
        claimed = claim_from(
            &mut tx,
            queue.as_str(),
            kinds,
            take,
            &lease,
            lease_expires_at,
            true,
            now,
        )
        .await?;
        log_starts(&mut tx, queue.as_str(), rate, claimed.len(), now).await?;
    }
    tx.commit().await?;
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
    if candidates.iter().any(Candidate::limited) {
        // The queues' locks hold until commit: count and claim in one transaction.
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
    let now = now_millis();
    // Candidates come in name order: the lock order.
    for candidate in candidates.iter_mut() {
        if candidate.limited() {
            lock_queue(conn, &candidate.queue).await?;
        }
        if candidate.concurrency.is_some() {
            candidate.running = running_now(conn, &candidate.queue).await?;
        }
        if let Some(rate) = candidate.rate {
            candidate.rate_room = Some(rate_room(conn, &candidate.queue, rate, now).await?);
        }
    }
    let rooms: Vec<u64> = candidates.iter().map(Candidate::room).collect();
    let shares = fair_shares(&rooms, limit);
    let lease = Uuid::new_v4().to_string();
    let mut claimed = Vec::new();
    for (candidate, take) in candidates.iter().zip(shares) {
        if take > 0 {
            let queue = &candidate.queue;
            let tasks = claim_from(
                conn,
                queue,
                None,
                take,
                &lease,
                lease_expires_at,
                false,
                now,
            )
            .await?;
            if let Some(rate) = candidate.rate {
                log_starts(conn, queue, rate, tasks.len(), now).await?;
            }
            claimed.extend(tasks);
        }
    }
    in_claim_order(&mut claimed);
    Ok(claimed)
}
