//! Dependencies in SQLite: a new child's parents read when it is inserted, its edges written,
//! and the waiting children of tasks that ended settled — inside the writer's transaction
//! that ended them, so a parent's end and its children's release commit together or not at
//! all. The rule is `task::settle`'s; the shared steps are `store::parents`'.

use std::collections::HashMap;

use rusqlite::{Connection, params};

use super::rows::{self, COLUMNS, query_task, query_tasks, to_json};
use crate::store::parents;
use crate::store::sql::state_guard;
use crate::store::{Inserted, StoreError};
use crate::task::{Millis, Move, NewTask, ParentOutcome, Task, TaskId, settle};

/// Gives a new task its parents and its first state (`Task::start_after`), reading the
/// parents that are not items of this call.
pub fn start_after(
    conn: &Connection,
    task: &mut Task,
    new: &NewTask,
    earlier: &[Inserted],
    now: Millis,
) -> Result<(), StoreError> {
    let (after, input_from) = parents::resolve(new, earlier)?;
    let mut found = parents::earlier_outcomes(earlier);
    let stored: Vec<TaskId> = after
        .iter()
        .filter(|id| !found.contains_key(id))
        .copied()
        .collect();
    found.extend(read_outcomes(conn, &stored)?);
    let outcomes = parents::new_outcomes(&after, &found)?;
    task.start_after(after, new.after_policy, input_from, &outcomes, now);
    Ok(())
}

fn read_outcomes(
    conn: &Connection,
    ids: &[TaskId],
) -> Result<HashMap<TaskId, ParentOutcome>, StoreError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let tasks = rows::task_get_many(conn, ids)?;
    Ok(tasks.iter().map(|t| (t.id, ParentOutcome::of(t))).collect())
}

/// Writes the (parent, child) rows of new waiting tasks.
pub fn insert_edges(conn: &Connection, edges: &[(TaskId, TaskId)]) -> Result<(), StoreError> {
    if edges.is_empty() {
        return Ok(());
    }
    conn.prepare_cached(
        "INSERT INTO task_parents (parent_id, child_id) \
         SELECT value ->> 0, value ->> 1 FROM json_each(?1)",
    )?
    .execute([to_json(&edges)])?;
    Ok(())
}

/// Forgets who a task waited for: it left `waiting`.
pub fn forget_edges(conn: &Connection, child: TaskId) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM task_parents WHERE child_id = ?1")?
        .execute([child.to_string()])?;
    Ok(())
}

/// The ids of those of `tasks` that ended (are in a terminal state), for [`after_ends`]:
/// ids, so that a job ending a batch of tasks need not copy them to settle their children.
pub fn terminal<'a>(tasks: impl IntoIterator<Item = &'a Task>) -> Vec<TaskId> {
    tasks
        .into_iter()
        .filter(|t| t.state.is_terminal())
        .map(|t| t.id)
        .collect()
}

/// Settles the waiting children of the tasks whose ids are `ended` (see [`terminal`]), and
/// the children of every child that ends so in turn. Returns the settled children as they
/// are now.
pub fn after_ends(
    conn: &Connection,
    mut ended: Vec<TaskId>,
    now: Millis,
) -> Result<Vec<Task>, StoreError> {
    let mut settled = Vec::new();
    while !ended.is_empty() {
        let children = query_tasks(
            conn,
            &format!(
                "SELECT {COLUMNS} FROM tasks WHERE id IN \
                     (SELECT child_id FROM task_parents \
                      WHERE parent_id IN (SELECT value FROM json_each(?1))) \
                   AND {waiting}",
                waiting = state_guard("state", Move::Unblock),
            ),
            [to_json(&ended)],
        )?;
        let found = read_outcomes(conn, &parents::parent_ids(&children))?;
        ended.clear();
        for child in children {
            let Some(decided) = settle(&child, &parents::outcomes(&child, &found)) else {
                continue;
            };
            let mut next = child.clone();
            next.apply_settled(decided, now);
            let Some(written) = write_settled(conn, &next)? else {
                continue;
            };
            forget_edges(conn, written.id)?;
            if written.state.is_terminal() {
                ended.push(written.id);
            }
            settled.push(written);
        }
    }
    Ok(settled)
}

/// Writes a waiting child's new state, only if it is still waiting.
fn write_settled(conn: &Connection, next: &Task) -> Result<Option<Task>, StoreError> {
    query_task(
        conn,
        &format!(
            "UPDATE tasks SET state = ?2, input = ?3, error = ?4, finished_at = ?5 \
             WHERE id = ?1 AND {waiting} RETURNING {COLUMNS}",
            waiting = state_guard("state", Move::Unblock),
        ),
        params![
            next.id.to_string(),
            next.state.as_str(),
            next.input.to_string(),
            next.error.as_ref().map(to_json),
            next.finished_at,
        ],
    )
}
