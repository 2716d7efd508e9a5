//! Claims: moving queued tasks to running under a fresh lease, for the local pool
//! (`task_claim`, fair across queues) and for remote workers (`task_claim_queue`, one queue).
//!
//! Every claim is one guarded UPDATE per queue: only rows still `queued` move, so a claim
//! never takes a task twice, and the per-queue counts (kept by triggers) say how many each
//! queue may start before any row is read.

use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use super::rows::{COLUMNS, query_tasks};
use crate::store::sql::{self, state_guard};
use crate::store::{StoreError, fair_shares};
use crate::task::{Kind, Lease, Millis, Move, QueueName, Task};

/// A queue with waiting tasks, as the claim sees it.
struct Candidate {
    queue: String,
    /// How many it may start now: waiting tasks, capped by its concurrency.
    room: u64,
}

fn claim_candidates(conn: &Connection) -> Result<Vec<Candidate>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT c.queue, c.n, IFNULL(r.n, 0), q.concurrency \
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
        })
    })?;
    Ok(rows
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|c| c.room > 0)
        .collect())
}

pub fn task_claim(
    conn: &Connection,
    limit: usize,
    lease_expires_at: Millis,
    now: Millis,
) -> Result<Vec<Task>, StoreError> {
    let candidates = claim_candidates(conn)?;
    let rooms: Vec<u64> = candidates.iter().map(|c| c.room).collect();
    let shares = fair_shares(&rooms, limit);
    let lease = new_lease(lease_expires_at);
    let mut claimed = Vec::new();
    for (candidate, take) in candidates.iter().zip(shares) {
        if take > 0 {
            claimed.extend(claim_from(
                conn,
                &candidate.queue,
                None,
                take,
                &lease,
                now,
                false,
            )?);
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
    let paused: bool = conn
        .prepare_cached("SELECT paused FROM queues WHERE name = ?1")?
        .query_row([queue.as_str()], |row| row.get(0))
        .optional()?
        .unwrap_or(false);
    if paused {
        return Ok(Vec::new());
    }
    claim_from(
        conn,
        queue.as_str(),
        kinds,
        limit as u64,
        &new_lease(lease_expires_at),
        now,
        true,
    )
}

/// A fresh lease token, expiring at `expires_at`.
fn new_lease(expires_at: Millis) -> Lease {
    Lease {
        token: Uuid::new_v4().to_string(),
        expires_at,
    }
}

/// Moves the first `take` queued tasks of `queue` (priority, then FIFO) to running under
/// `lease` from `started_at`, counting the attempt. A `remote` lease never outlives the attempt's deadline
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
}
