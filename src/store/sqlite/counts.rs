//! Queue counts for the statements that move many tasks at once: a claim, a batch of
//! successes. The row trigger `tasks_count_update` writes `queue_counts` twice for every row
//! a statement moves; while `counts_by_statement.active` is 1 it stands aside (migration
//! 0013), and [`counted`] writes what the statement moved, one change per queue and state.

use std::collections::BTreeMap;

use rusqlite::{Connection, params};

use crate::store::StoreError;
use crate::task::{Task, TaskState};

/// Runs `statement`, which moves tasks out of `from` and returns them as they now are, with
/// the row trigger aside, then counts the moves itself. The flag is cleared whether the
/// statement worked or not; the writer runs each job in a savepoint, so a failure after
/// it was set rolls back with the job.
pub fn counted(
    conn: &Connection,
    from: TaskState,
    statement: impl FnOnce() -> Result<Vec<Task>, StoreError>,
) -> Result<Vec<Task>, StoreError> {
    set_active(conn, true)?;
    let moved = statement();
    set_active(conn, false)?;
    let moved = moved?;
    count_moves(conn, from, &moved)?;
    Ok(moved)
}

fn set_active(conn: &Connection, active: bool) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE counts_by_statement SET active = ?1")?
        .execute([active])?;
    Ok(())
}

/// Takes each task of `moved` off `from`'s count and onto its state's, per queue: one
/// write per queue and state.
fn count_moves(conn: &Connection, from: TaskState, moved: &[Task]) -> Result<(), StoreError> {
    let mut changes: BTreeMap<(&str, TaskState), i64> = BTreeMap::new();
    for task in moved.iter().filter(|task| task.state != from) {
        *changes.entry((task.queue.as_str(), from)).or_default() -= 1;
        *changes
            .entry((task.queue.as_str(), task.state))
            .or_default() += 1;
    }
    // A count goes down only where the tasks were, so its row exists; the count a task
    // moves to may not have one yet (an upsert's new row must pass `n >= 0`, so a fall
    // cannot take that path).
    let mut fall =
        conn.prepare_cached("UPDATE queue_counts SET n = n + ?3 WHERE queue = ?1 AND state = ?2")?;
    let mut rise = conn.prepare_cached(
        "INSERT INTO queue_counts (queue, state, n) VALUES (?1, ?2, ?3) \
         ON CONFLICT (queue, state) DO UPDATE SET n = n + ?3",
    )?;
    for ((queue, state), change) in changes {
        let statement = if change < 0 { &mut fall } else { &mut rise };
        if change != 0 {
            statement.execute(params![queue, state.as_str(), change])?;
        }
    }
    Ok(())
}
