//! The moves of existing tasks: ending, renewing, releasing and losing attempts, cancel,
//! promote, retry, delete, purge. Every move is a guarded `UPDATE` (or `DELETE`) whose `WHERE`
//! names the state it expects, and the lease for a running task: zero rows means another node
//! (or a newer attempt) got there first. Where `task/` decides the new state, the row is read
//! `FOR UPDATE` first so nothing changes it between the decision and the write.
//!
//! A write to running attempts found by id is guarded by their leases alone: a lease is set
//! exactly while its task runs (a CHECK of migration 0001), so `lease = $lease` is the state
//! guard of `Move::Finish` and the lease in one comparison (`held_guard`). Spelled with
//! `state = 'running'` besides, it let the planner, counting few running tasks, read every
//! `running` entry of an index in a bitmap scan instead of probing the key for the ids: every
//! dead row version a claim left since the last vacuum, which a bitmap scan never marks
//! (docs/benchmarks.md, "PostgreSQL drain: where the time goes").

use std::collections::{HashMap, HashSet};

use sqlx::{Acquire, PgConnection};

use super::deps;
use super::rows::{COLUMNS, fetch_task, fetch_tasks, task_get, to_json};
use crate::store::sql::state_guard;
use crate::store::{CancelResult, Changed, EndedAttempt, StoreError};
use crate::task::{
    AttemptEnd, Millis, Move, Outcome, Task, TaskId, TaskState, end_attempt, expire_attempt,
    lose_attempt, now_millis,
};

/// Ends many running attempts in one transaction and answers in order: `None` where the
/// lease is no longer current (or the task appears twice: its first end counts).
///
/// Successes, nearly every end of a drain, take one guarded `UPDATE` that returns the ended
/// rows ([`succeed_held`]). Every other end, and a success the quick write left alone (its
/// cancel was requested meanwhile, or its lease is gone), is decided on the row as read under
/// its lock ([`end_held`]).
pub async fn task_finish_many(
    conn: &mut PgConnection,
    attempts: Vec<EndedAttempt>,
) -> Result<Vec<Option<Task>>, StoreError> {
    if attempts.is_empty() {
        return Ok(Vec::new());
    }
    let order: Vec<TaskId> = attempts.iter().map(|a| a.id).collect();
    let mut seen = HashSet::with_capacity(attempts.len());
    let (successes, others): (Vec<EndedAttempt>, Vec<EndedAttempt>) = attempts
        .into_iter()
        .filter(|attempt| seen.insert(attempt.id))
        .partition(|attempt| matches!(attempt.outcome, Outcome::Succeeded(_)));
    let mut tx = conn.begin().await?;
    let (mut ended, left) = succeed_held(&mut tx, successes).await?;
    ended.extend(end_held(&mut tx, left.into_iter().chain(others).collect()).await?);
    deps::after_ends(&mut tx, &ended, now_millis()).await?;
    tx.commit().await?;
    let mut ended: HashMap<TaskId, Task> = ended.into_iter().map(|t| (t.id, t)).collect();
    Ok(order.iter().map(|id| ended.remove(id)).collect())
}

/// Ends successful attempts in one statement, without reading the rows first: for a running
/// task with no cancel requested, `end_attempt` of a success writes the state `succeeded`,
/// the result and the end time, and leaves the rest as it is — so the guard (state, lease,
/// no cancel requested) is all the decision needs, and the row lock the `UPDATE` takes is
/// the only one. Answers the ended tasks as they are now, and the attempts it did not end.
async fn succeed_held(
    conn: &mut PgConnection,
    successes: Vec<EndedAttempt>,
) -> Result<(Vec<Task>, Vec<EndedAttempt>), StoreError> {
    if successes.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut ids = Vec::with_capacity(successes.len());
    let mut leases = Vec::with_capacity(successes.len());
    let mut results = Vec::with_capacity(successes.len());
    let mut finished_ats = Vec::with_capacity(successes.len());
    for attempt in &successes {
        let Outcome::Succeeded(result) = &attempt.outcome else {
            continue;
        };
        ids.push(attempt.id.to_string());
        leases.push(attempt.lease.clone());
        results.push(result.to_string());
        finished_ats.push(attempt.ended_at);
    }
    // The unnested columns have names of their own: `COLUMNS` names the task's.
    let sql = format!(
        "UPDATE tasks SET state = '{succeeded}', result = ended.end_result, \
             finished_at = ended.end_at, lease = NULL, lease_expires_at = NULL \
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[]) \
             AS ended (end_id, end_lease, end_result, end_at) \
         WHERE tasks.id = ended.end_id AND {held} \
             AND NOT tasks.cancel_requested \
         RETURNING {COLUMNS}",
        succeeded = TaskState::Succeeded.as_str(),
        held = held_guard("tasks.lease", "ended.end_lease"),
    );
    let query = sqlx::query(&sql)
        .bind(ids)
        .bind(leases)
        .bind(results)
        .bind(finished_ats);
    let ended = fetch_tasks(conn, query).await?;
    let done: HashSet<TaskId> = ended.iter().map(|task| task.id).collect();
    let left = successes
        .into_iter()
        .filter(|attempt| !done.contains(&attempt.id))
        .collect();
    Ok((ended, left))
}

/// Ends attempts as decided on their rows: one read of the rows still held under their
/// leases (locked, in id order, so two batches never wait on each other in a circle),
/// `end_attempt` for each at its `ended_at`, and one guarded write for all.
async fn end_held(
    conn: &mut PgConnection,
    attempts: Vec<EndedAttempt>,
) -> Result<Vec<Task>, StoreError> {
    if attempts.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = attempts.iter().map(|a| a.id.to_string()).collect();
    let leases: Vec<String> = attempts.iter().map(|a| a.lease.clone()).collect();
    let sql = format!(
        "SELECT {COLUMNS} FROM tasks \
         WHERE (id, lease) IN (SELECT * FROM unnest($1::uuid[], $2::text[])) \
         ORDER BY id FOR UPDATE",
    );
    let query = sqlx::query(&sql).bind(&ids).bind(&leases);
    let mut held: HashMap<TaskId, Task> = fetch_tasks(&mut *conn, query)
        .await?
        .into_iter()
        .map(|task| (task.id, task))
        .collect();
    let mut ends: Vec<(Task, String, AttemptEnd)> = Vec::with_capacity(held.len());
    for attempt in attempts {
        if let Some(task) = held.remove(&attempt.id) {
            let end = end_attempt(&task, attempt.outcome, attempt.ended_at, fastrand::f64());
            ends.push((task, attempt.lease, end));
        }
    }
    write_ends(conn, ends).await
}

/// Writes the ends of running attempts in one statement, each guarded by its lease, and
/// returns the tasks as they are now: `task` (as read under the row lock) with the end
/// applied, and the `callback_status` the trigger may have set (the one column not written
/// here), so that no row is read back whole.
async fn write_ends(
    conn: &mut PgConnection,
    ends: Vec<(Task, String, AttemptEnd)>,
) -> Result<Vec<Task>, StoreError> {
    if ends.is_empty() {
        return Ok(Vec::new());
    }
    let mut columns = EndColumns::default();
    for (task, lease, end) in &ends {
        columns.ids.push(task.id.to_string());
        columns.leases.push(lease.clone());
        columns.states.push(end.state.as_str().to_owned());
        columns
            .results
            .push(end.result.as_ref().map(|r| r.to_string()));
        columns.errors.push(end.error.as_ref().map(to_json));
        columns.histories.push(to_json(&end.errors));
        columns.run_ats.push(end.run_at);
        columns.finished_ats.push(end.finished_at);
    }
    let sql = format!(
        "UPDATE tasks SET state = ended.state, result = ended.result, error = ended.error, \
             errors = ended.errors, run_at = ended.run_at, finished_at = ended.finished_at, \
             lease = NULL, lease_expires_at = NULL \
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                     $7::bigint[], $8::bigint[]) \
             AS ended (id, lease, state, result, error, errors, run_at, finished_at) \
         WHERE tasks.id = ended.id AND {held} \
         RETURNING tasks.id::text, tasks.callback_status",
        held = held_guard("tasks.lease", "ended.lease"),
    );
    let written: Vec<(String, Option<String>)> = sqlx::query_as(&sql)
        .bind(columns.ids)
        .bind(columns.leases)
        .bind(columns.states)
        .bind(columns.results)
        .bind(columns.errors)
        .bind(columns.histories)
        .bind(columns.run_ats)
        .bind(columns.finished_ats)
        .fetch_all(conn)
        .await?;
    let mut written: HashMap<String, Option<String>> = written.into_iter().collect();
    Ok(ends
        .into_iter()
        .filter_map(|(task, _, end)| {
            let callback_status = written.remove(&task.id.to_string())?;
            Some(Task {
                state: end.state,
                result: end.result,
                error: end.error,
                errors: end.errors,
                run_at: end.run_at,
                finished_at: end.finished_at,
                lease: None,
                callback_status,
                ..task
            })
        })
        .collect())
}

/// The columns of `write_ends`, one array each.
#[derive(Default)]
struct EndColumns {
    ids: Vec<String>,
    leases: Vec<String>,
    states: Vec<String>,
    results: Vec<Option<String>>,
    errors: Vec<Option<String>>,
    histories: Vec<String>,
    run_ats: Vec<Option<i64>>,
    finished_ats: Vec<Option<i64>>,
}

/// The guard of a write to a running attempt under `lease` (see the module's note): the
/// task is running (`Move::Finish` starts only there, tested below) and holds this lease.
pub(super) fn held_guard(column: &str, lease: &str) -> String {
    format!("{column} = {lease}")
}

pub async fn task_renew(
    conn: &mut PgConnection,
    leases: &[(TaskId, String)],
    lease_expires_at: Millis,
) -> Result<u64, StoreError> {
    let ids: Vec<String> = leases.iter().map(|(id, _)| id.to_string()).collect();
    let tokens: Vec<String> = leases.iter().map(|(_, lease)| lease.clone()).collect();
    // Rows another transaction holds are skipped, not waited for: most are ends being
    // recorded (an attempt that ended is renewed until its end commits), and an UPDATE that
    // waited for them while they waited for a row it held deadlocked, failing the ends. A
    // skipped lease is renewed at the next renewal, a third of a lease later.
    let sql = format!(
        "UPDATE tasks SET lease_expires_at = $3 WHERE id IN ( \
             SELECT tasks.id FROM tasks \
             JOIN unnest($1::uuid[], $2::text[]) AS held (id, lease) ON tasks.id = held.id \
             WHERE {running} FOR UPDATE OF tasks SKIP LOCKED)",
        running = held_guard("tasks.lease", "held.lease"),
    );
    let renewed = sqlx::query(&sql)
        .bind(ids)
        .bind(tokens)
        .bind(lease_expires_at)
        .execute(conn)
        .await?;
    Ok(renewed.rows_affected())
}

/// One lease renewed for its worker's heartbeat: unlike `task_renew`, this waits for a row
/// another transaction holds (one row lock, so it cannot close a cycle), and then decides on
/// the row as that transaction left it. Skipping would answer a live lease "lost" while a
/// cancel request or a rescue that does not take it held the row.
pub async fn task_renew_one(
    conn: &mut PgConnection,
    id: TaskId,
    lease: &str,
    lease_expires_at: Millis,
) -> Result<bool, StoreError> {
    let sql = format!(
        "UPDATE tasks SET lease_expires_at = $3 WHERE id = $1::uuid AND {running}",
        running = held_guard("lease", "$2"),
    );
    let renewed = sqlx::query(&sql)
        .bind(id.to_string())
        .bind(lease)
        .bind(lease_expires_at)
        .execute(conn)
        .await?;
    Ok(renewed.rows_affected() == 1)
}

pub async fn task_cancel(conn: &mut PgConnection, id: TaskId) -> Result<CancelResult, StoreError> {
    // One statement decides, under the row's lock: a waiting task ends cancelled, a running
    // one is asked to stop. (Two statements could miss a task released in between.)
    let sql = format!(
        "UPDATE tasks SET \
             state = CASE WHEN {stoppable} THEN state ELSE 'cancelled' END, \
             run_at = CASE WHEN {stoppable} THEN run_at END, \
             finished_at = CASE WHEN {stoppable} THEN finished_at ELSE $2 END, \
             cancel_requested = cancel_requested OR {stoppable} \
         WHERE id = $1::uuid AND ({cancellable} OR {stoppable}) RETURNING {COLUMNS}",
        stoppable = state_guard("state", Move::RequestCancel),
        cancellable = state_guard("state", Move::Cancel),
    );
    // A finished task retried between the update and the read is tried again, a few times.
    for _ in 0..3 {
        let now = now_millis();
        let mut tx = conn.begin().await?;
        let query = sqlx::query(&sql).bind(id.to_string()).bind(now);
        match fetch_task(&mut tx, query).await? {
            Some(task) if task.state == TaskState::Running => {
                tx.commit().await?;
                return Ok(CancelResult::Requested(task));
            }
            Some(task) => {
                // It may have been waiting: it waits for nobody now; its own waiting
                // children settle with it.
                deps::forget_edges(&mut tx, &[id]).await?;
                deps::after_ends(&mut tx, std::slice::from_ref(&task), now).await?;
                tx.commit().await?;
                return Ok(CancelResult::Cancelled(task));
            }
            None => tx.rollback().await?,
        }
        match task_get(conn, id).await? {
            Some(task) if task.state.is_terminal() => return Ok(CancelResult::Finished(task)),
            Some(_) => continue,
            None => return Ok(CancelResult::NotFound),
        }
    }
    Err(StoreError::backend(format!(
        "task {id} kept moving during a cancel"
    )))
}

pub async fn task_release(
    conn: &mut PgConnection,
    id: TaskId,
    lease: &str,
) -> Result<Option<Task>, StoreError> {
    let now = now_millis();
    let mut tx = conn.begin().await?;
    let sql = format!(
        "UPDATE tasks SET \
             state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'queued' END, \
             finished_at = CASE WHEN cancel_requested THEN $1 END, \
             lease = NULL, lease_expires_at = NULL, attempt = attempt - 1 \
         WHERE id = $2::uuid AND {releasable} AND lease = $3 RETURNING {COLUMNS}",
        releasable = state_guard("state", Move::Release),
    );
    let query = sqlx::query(&sql).bind(now).bind(id.to_string()).bind(lease);
    let released = fetch_task(&mut tx, query).await?;
    // Released with its cancel requested, it ended: its waiting children settle.
    deps::after_ends(&mut tx, released.as_slice(), now).await?;
    tx.commit().await?;
    Ok(released)
}

/// Every running task whose lease expired before `expired_before` ends its attempt: lost, or
/// timed out if its lease was cut at its deadline (`task::expire_attempt`). For `None`, every
/// running task loses its attempt. Rows another node is moving right now are skipped: that
/// node is finishing or rescuing them.
pub async fn task_lose_running(
    conn: &mut PgConnection,
    expired_before: Option<Millis>,
) -> Result<Vec<Task>, StoreError> {
    let mut tx = conn.begin().await?;
    // No bound: every running task (each has an expiry, `i64::MAX` is above all); one
    // comparison either way, so the rescue can read `tasks_lease` (migration 0009).
    let sql = format!(
        "SELECT {COLUMNS} FROM tasks \
         WHERE {lost} AND lease_expires_at < COALESCE($1::bigint, 9223372036854775807) \
         FOR UPDATE SKIP LOCKED",
        lost = state_guard("state", Move::Recover),
    );
    let lost = fetch_tasks(&mut tx, sqlx::query(&sql).bind(expired_before)).await?;
    let now = expired_before.unwrap_or_else(now_millis);
    let ends = lost
        .into_iter()
        .filter_map(|task| {
            let lease = task.lease.as_ref()?.token.clone();
            let end = match expired_before {
                Some(_) => expire_attempt(&task, now, fastrand::f64()),
                None => lose_attempt(&task, now),
            };
            Some((task, lease, end))
        })
        .collect();
    let mut moved = write_ends(&mut tx, ends).await?;
    deps::after_ends(&mut tx, &moved, now).await?;
    tx.commit().await?;
    moved.sort_by_key(|task| task.id);
    Ok(moved)
}

pub async fn task_promote_due(conn: &mut PgConnection, now: Millis) -> Result<u64, StoreError> {
    // Several nodes promote at once; each takes the rows the others are not taking.
    let sql = format!(
        "UPDATE tasks SET state = 'queued', run_at = NULL \
         WHERE id = ANY(ARRAY(SELECT id FROM tasks WHERE {due} AND run_at <= $1 \
                              FOR UPDATE SKIP LOCKED)) \
             AND {due}",
        due = state_guard("state", Move::Promote),
    );
    let promoted = sqlx::query(&sql).bind(now).execute(conn).await?;
    Ok(promoted.rows_affected())
}

pub async fn task_next_due(conn: &mut PgConnection) -> Result<Option<Millis>, StoreError> {
    let sql = format!(
        "SELECT min(run_at) FROM tasks WHERE {due}",
        due = state_guard("state", Move::Promote),
    );
    Ok(sqlx::query_scalar(&sql).fetch_one(conn).await?)
}

pub async fn task_retry(conn: &mut PgConnection, id: TaskId) -> Result<Changed, StoreError> {
    let sql = format!(
        "UPDATE tasks SET state = 'queued', attempt = 0, error = NULL, result = NULL, \
             cancel_requested = false, finished_at = NULL \
         WHERE id = $1::uuid AND {retryable} RETURNING {COLUMNS}",
        retryable = state_guard("state", Move::Retry),
    );
    let retried = fetch_task(conn, sqlx::query(&sql).bind(id.to_string())).await?;
    if retried.is_some() {
        return Ok(Changed::Done(retried));
    }
    Ok(match task_get(conn, id).await? {
        Some(task) => Changed::WrongState(task),
        None => Changed::NotFound,
    })
}

pub async fn task_delete(conn: &mut PgConnection, id: TaskId) -> Result<Changed, StoreError> {
    let sql = format!(
        "DELETE FROM tasks WHERE id = $1::uuid AND {deletable} \
           AND NOT EXISTS (SELECT 1 FROM task_parents WHERE parent_id = $1::uuid)",
        deletable = state_guard("state", Move::Delete),
    );
    let deleted = sqlx::query(&sql)
        .bind(id.to_string())
        .execute(&mut *conn)
        .await?;
    if deleted.rows_affected() > 0 {
        return Ok(Changed::Done(None));
    }
    Ok(match task_get(conn, id).await? {
        // Finished, yet kept: waiting tasks name it as a parent.
        Some(task) if task.state.is_terminal() => Changed::HasDependents(task),
        Some(task) => Changed::WrongState(task),
        None => Changed::NotFound,
    })
}

/// Deletes up to `$2` finished tasks that ended before `$1` and that no waiting task needs.
///
/// Every node runs it every second (the maintainer's housekeeping), mostly to find nothing.
/// `ORDER BY finished_at` makes the planner walk the `tasks_finished` index from its oldest
/// entry, which stops at once when nothing is old enough. Without it, the planner read the
/// whole table whenever its statistics said many rows were old, or said nothing (it then
/// guesses a third): in a drain of 100,000 tasks on a fresh database, four purges read all
/// 100,000 rows each to delete none. Public for the test that holds its plan.
pub const PURGE_FINISHED: &str = "DELETE FROM tasks WHERE id = ANY(ARRAY( \
         SELECT id FROM tasks WHERE finished_at < $1 \
             AND NOT EXISTS (SELECT 1 FROM task_parents WHERE parent_id = tasks.id) \
         ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED))";

pub async fn task_purge_finished(
    conn: &mut PgConnection,
    before: Millis,
    limit: usize,
) -> Result<u64, StoreError> {
    // Every node purges; SKIP LOCKED keeps them from queueing behind each other's deletes.
    let deleted = sqlx::query(PURGE_FINISHED)
        .bind(before)
        .bind(limit as i64)
        .execute(conn)
        .await?;
    Ok(deleted.rows_affected())
}

#[cfg(test)]
mod tests {
    use crate::task::{Move, TaskState};

    /// `held_guard` stands for the state guard of an end: an attempt ends only from
    /// `running`, the one state in which a task holds a lease.
    #[test]
    fn a_lease_guard_is_the_state_guard_of_an_end() {
        assert_eq!(Move::Finish.from_states(), &[TaskState::Running]);
        assert_eq!(super::held_guard("tasks.lease", "$1"), "tasks.lease = $1");
    }
}
