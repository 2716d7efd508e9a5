//! Claims: moving queued tasks to running under a fresh lease, for the local pool
//! (`task_claim`, fair across queues) and for remote workers (`task_claim_queue`, one queue).
//!
//! Every claim is one guarded UPDATE per queue: only rows still `queued` move, so a claim
//! never takes a task twice, and the per-queue counts (kept by triggers) say how many each
//! queue may start before any row is read. A rate-limited queue's room is also capped by
//! its log of recent starts (`queue_starts`, migration 0008), and every start it makes is
//! logged in the same job: the one writer makes check and record one step.

use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use super::counts::counted;
use super::rows::{COLUMNS, query_tasks};
use crate::store::sql::{self, state_guard};
use crate::store::{RateLimit, StoreError, fair_shares};
use crate::task::{Kind, Lease, Millis, Move, QueueName, Task, TaskState};

/// A queue with waiting tasks, as the claim sees it.
struct Candidate {
    queue: String,
    /// How many it may start now: waiting tasks, capped by its concurrency and its rate.
    room: u64,
    rate: Option<RateLimit>,
}

fn claim_candidates(conn: &Connection, now: Millis) -> Result<Vec<Candidate>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT c.queue, c.n, IFNULL(r.n, 0), q.concurrency, q.rate_limit, q.rate_per_ms \
         FROM queue_counts c \
         LEFT JOIN queue_counts r ON r.queue = c.queue AND r.state = 'running' \
         LEFT JOIN queues q ON q.name = c.queue \
         WHERE c.state = 'queued' AND c.n > 0 AND IFNULL(q.paused, 0) = 0 \
           AND IFNULL(q.remote, 0) = 0",
    )?;
    let rows = statement.query_map([], |row| {
        let waiting: i64 = row.get(1)?;
        let running: i64 = row.get(2)?;
        let concurrency: Option<i64> = row.get(3)?;
        Ok(Candidate {
            queue: row.get(0)?,
            room: sql::claim_room(waiting, running, concurrency),
            rate: super::queues::rate_of(row.get(4)?, row.get(5)?),
        })
    })?;
    let mut candidates = rows.collect::<Result<Vec<_>, _>>()?;
    for candidate in candidates.iter_mut() {
        if let Some(rate) = candidate.rate {
            let room = rate_room(conn, &candidate.queue, rate, now)?;
            candidate.room = candidate.room.min(room);
        }
    }
    Ok(candidates.into_iter().filter(|c| c.room > 0).collect())
}

/// How many attempts a rate-limited queue may start at `now`: its limit less the starts of
/// its log inside the window.
fn rate_room(
    conn: &Connection,
    queue: &str,
    rate: RateLimit,
    now: Millis,
) -> Result<u64, StoreError> {
    let started: i64 = conn
        .prepare_cached("SELECT count(*) FROM queue_starts WHERE queue = ?1 AND started_at > ?2")?
        .query_row(params![queue, now - rate.per_ms as i64], |row| row.get(0))?;
    Ok(sql::rate_room(rate.limit.into(), started))
}

/// Logs `count` starts of a rate-limited queue at `now` and forgets those out of the window.
fn log_starts(
    conn: &Connection,
    queue: &str,
    rate: RateLimit,
    count: usize,
    now: Millis,
) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM queue_starts WHERE queue = ?1 AND started_at <= ?2")?
        .execute(params![queue, now - rate.per_ms as i64])?;
    let mut insert =
        conn.prepare_cached("INSERT INTO queue_starts (queue, started_at) VALUES (?1, ?2)")?;
    for _ in 0..count {
        insert.execute(params![queue, now])?;
    }
    Ok(())
}

pub fn task_claim(
    conn: &Connection,
    limit: usize,
    lease_expires_at: Millis,
    now: Millis,
) -> Result<Vec<Task>, StoreError> {
    let candidates = claim_candidates(conn, now)?;
    let rooms: Vec<u64> = candidates.iter().map(|c| c.room).collect();
    let shares = fair_shares(&rooms, limit);
    let lease = new_lease(lease_expires_at);
    let mut claimed = Vec::new();
    for (candidate, take) in candidates.iter().zip(shares) {
        if take > 0 {
            let tasks = claim_from(conn, &candidate.queue, None, take, &lease, now, false)?;
            if let Some(rate) = candidate.rate {
                log_starts(conn, &candidate.queue, rate, tasks.len(), now)?;
            }
            claimed.extend(tasks);
        }
    }
    Ok(claimed)
}

/// Leases up to `limit` queued tasks of one queue (optionally only these kinds); a paused
/// queue leases nothing.
pub fn task_claim_queue(
    conn: &Connection,
    queue: &QueueName,
    kinds: Option<&[Kind]>,
    limit: usize,
    lease_expires_at: Millis,
    now: Millis,
) -> Result<Vec<Task>, StoreError> {
    let settings: Option<(bool, Option<i64>, Option<i64>)> = conn
        .prepare_cached("SELECT paused, rate_limit, rate_per_ms FROM queues WHERE name = ?1")?
        .query_row([queue.as_str()], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .optional()?;
    let (paused, limit_, per_ms) = settings.unwrap_or((false, None, None));
    if paused {
        return Ok(Vec::new());
    }
    let rate = super::queues::rate_of(limit_, per_ms);
    let take = match rate {
        Some(rate) => rate_room(conn, queue.as_str(), rate, now)?.min(limit as u64),
        None => limit as u64,
    };
    if take == 0 {
        return Ok(Vec::new());
    }
    let lease = new_lease(lease_expires_at);
    let tasks = claim_from(conn, queue.as_str(), kinds, take, &lease, now, true)?;
    if let Some(rate) = rate {
        log_starts(conn, queue.as_str(), rate, tasks.len(), now)?;
    }
    Ok(tasks)
}

/// A fresh lease token, expiring at `expires_at`.
fn new_lease(expires_at: Millis) -> Lease {
    Lease {
        token: Uuid::new_v4().to_string(),
        expires_at,
    }
}

/// Moves the first `take` queued tasks of `queue` (priority, then FIFO) to running under
/// `lease` from `started_at`, counting the attempt (and the queue's counts, once per
/// statement: `counts.rs`). A `remote` lease never outlives the attempt's deadline
/// (`started_at + timeout_ms`), so its expiry enforces the timeout; the local pool enforces
/// its own and renews its leases regardless.
fn claim_from(
    conn: &Connection,
    queue: &str,
    kinds: Option<&[Kind]>,
    take: u64,
    lease: &Lease,
    started_at: Millis,
    remote: bool,
) -> Result<Vec<Task>, StoreError> {
    // Kinds are validated names (letters, digits, `_-.`), so quoting them inline is safe.
    let kind_filter = kinds.map_or(String::new(), |kinds| {
        let list: Vec<String> = kinds.iter().map(|k| format!("'{k}'")).collect();
        format!("AND kind IN ({})", list.join(", "))
    });
    counted(conn, TaskState::Queued, || {
        query_tasks(
            conn,
            &format!(
                "UPDATE tasks SET state = 'running', attempt = attempt + 1, lease = ?1, \
                     lease_expires_at = CASE WHEN ?6 AND timeout_ms IS NOT NULL \
                         THEN MIN(?2, ?3 + timeout_ms) ELSE ?2 END, \
                     started_at = ?3, progress = NULL \
                 WHERE id IN (SELECT id FROM tasks INDEXED BY tasks_claim \
                              WHERE {claimable} AND queue = ?4 {kind_filter} \
                              ORDER BY priority DESC, id LIMIT ?5) \
                 RETURNING {COLUMNS}",
                claimable = state_guard("state", Move::Claim),
            ),
            params![
                lease.token,
                lease.expires_at,
                started_at,
                queue,
                take as i64,
                remote
            ],
        )
    })
}
