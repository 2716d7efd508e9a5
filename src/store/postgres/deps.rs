//! Dependencies in PostgreSQL: a new child's parents read (and held) when it is inserted,
//! its edges written, and the waiting children of tasks that ended settled — inside the
//! transaction that ended them. The rule is `task::settle`'s; the shared steps are
//! `store::parents`'.
//!
//! Two nodes may end two parents of one child at once. Each locks the child (`FOR UPDATE`)
//! before it reads the parents, so the second reads them only after the first committed and
//! sees both ends: a child is never left waiting for parents that all ended. An insert holds
//! its stored parents `FOR SHARE` until it commits, so a parent cannot end unseen between the
//! read that finds it unsettled and the commit of the edge that its end will follow.

use std::collections::HashMap;

use sqlx::PgConnection;

use super::rows::{self, COLUMNS, fetch_task, fetch_tasks, to_json};
use crate::store::StoreError;
use crate::store::parents;
use crate::store::sql::state_guard;
use crate::task::{Millis, Move, ParentOutcome, Task, TaskId};

fn texts(ids: &[TaskId]) -> Vec<String> {
    ids.iter().map(TaskId::to_string).collect()
}

/// The outcomes of stored parents, held `FOR SHARE` (in id order) until the transaction
/// ends, for an insert.
pub async fn hold_parents(
    conn: &mut PgConnection,
    ids: &[TaskId],
) -> Result<HashMap<TaskId, ParentOutcome>, StoreError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let sql =
        format!("SELECT {COLUMNS} FROM tasks WHERE id = ANY($1::uuid[]) ORDER BY id FOR SHARE");
    let tasks = fetch_tasks(conn, sqlx::query(&sql).bind(texts(ids))).await?;
    Ok(tasks.iter().map(|t| (t.id, ParentOutcome::of(t))).collect())
}

async fn read_outcomes(
    conn: &mut PgConnection,
    ids: &[TaskId],
) -> Result<HashMap<TaskId, ParentOutcome>, StoreError> {
    let tasks = rows::task_get_many(conn, ids).await?;
    Ok(tasks.iter().map(|t| (t.id, ParentOutcome::of(t))).collect())
}

/// Writes the (parent, child) rows of new waiting tasks.
pub async fn insert_edges(
    conn: &mut PgConnection,
    edges: &[(TaskId, TaskId)],
) -> Result<(), StoreError> {
    if edges.is_empty() {
        return Ok(());
    }
    let parents: Vec<String> = edges.iter().map(|(p, _)| p.to_string()).collect();
    let children: Vec<String> = edges.iter().map(|(_, c)| c.to_string()).collect();
    sqlx::query(
        "INSERT INTO task_parents (parent_id, child_id) \
         SELECT * FROM unnest($1::uuid[], $2::uuid[])",
    )
    .bind(parents)
    .bind(children)
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets who these tasks waited for: they left `waiting`.
pub async fn forget_edges(conn: &mut PgConnection, children: &[TaskId]) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM task_parents WHERE child_id = ANY($1::uuid[])")
        .bind(texts(children))
        .execute(conn)
        .await?;
    Ok(())
}

/// Settles the waiting children of those of `tasks` that ended, and the children of every
/// child that ends so in turn; call it inside the transaction that ended them.
pub async fn after_ends(
    conn: &mut PgConnection,
    tasks: &[Task],
    now: Millis,
) -> Result<Vec<Task>, StoreError> {
    let mut ended: Vec<TaskId> = tasks
        .iter()
        .filter(|t| t.state.is_terminal())
        .map(|t| t.id)
        .collect();
    let mut settled = Vec::new();
    while !ended.is_empty() {
        let sql = format!(
            "SELECT {COLUMNS} FROM tasks WHERE id IN \
                 (SELECT child_id FROM task_parents WHERE parent_id = ANY($1::uuid[])) \
               AND {waiting} ORDER BY id FOR UPDATE",
            waiting = state_guard("state", Move::Unblock),
        );
        let children = fetch_tasks(conn, sqlx::query(&sql).bind(texts(&ended))).await?;
        if children.is_empty() {
            break;
        }
        let found = read_outcomes(conn, &parents::parent_ids(&children)).await?;
        ended.clear();
        let mut left = Vec::new();
        for child in children {
            let Some(decided) = crate::task::settle(&child, &parents::outcomes(&child, &found))
            else {
                continue;
            };
            let mut next = child.clone();
            next.apply_settled(decided, now);
            let Some(written) = write_settled(conn, &next).await? else {
                continue;
            };
            if written.state.is_terminal() {
                ended.push(written.id);
            }
            left.push(written.id);
            settled.push(written);
        }
        forget_edges(conn, &left).await?;
    }
    Ok(settled)
}

/// Writes a waiting child's new state, only if it is still waiting.
async fn write_settled(conn: &mut PgConnection, next: &Task) -> Result<Option<Task>, StoreError> {
    let sql = format!(
        "UPDATE tasks SET state = $2, input = $3, error = $4, finished_at = $5 \
         WHERE id = $1::uuid AND {waiting} RETURNING {COLUMNS}",
        waiting = state_guard("state", Move::Unblock),
    );
    let query = sqlx::query(&sql)
        .bind(next.id.to_string())
        .bind(next.state.as_str())
        .bind(next.input.to_string())
        .bind(next.error.as_ref().map(to_json))
        .bind(next.finished_at);
    fetch_task(conn, query).await
}
