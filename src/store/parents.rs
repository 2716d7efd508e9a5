//! What both stores do alike with a child's parents, before and after their SQL: resolve the
//! parents a submission names (`"$N"` is an earlier item of the same call), line their
//! outcomes up in `after` order, and list the edges a waiting child's insert writes. The
//! rule itself is `task::settle`'s. No connection or driver type here.

use std::collections::HashMap;

use super::{Inserted, StoreError};
use crate::task::{NewTask, ParentOutcome, ParentRef, Task, TaskId, TaskState};

/// The ids of `new`'s parents and of its `input_from`, given this call's items before it.
pub(crate) fn resolve(
    new: &NewTask,
    earlier: &[Inserted],
) -> Result<(Vec<TaskId>, Option<TaskId>), StoreError> {
    let items: Vec<TaskId> = earlier.iter().map(|i| i.task.id).collect();
    // The edge refuses a `$N` that is not an earlier item; one reaching a store is a bug.
    let one = |parent: ParentRef| {
        parent.resolve(&items).ok_or_else(|| {
            StoreError::backend(format!("{parent:?} names no earlier item of the call"))
        })
    };
    let after = new
        .after
        .iter()
        .map(|&p| one(p))
        .collect::<Result<_, _>>()?;
    let input_from = new.input_from.map(one).transpose()?;
    Ok((after, input_from))
}

/// The outcomes of this call's earlier items, by id: parents a store cannot read yet.
pub(crate) fn earlier_outcomes(earlier: &[Inserted]) -> HashMap<TaskId, ParentOutcome> {
    earlier
        .iter()
        .map(|i| (i.task.id, ParentOutcome::of(&i.task)))
        .collect()
}

/// The outcomes of a new task's parents in `after` order; a parent not found refuses it.
pub(crate) fn new_outcomes(
    after: &[TaskId],
    found: &HashMap<TaskId, ParentOutcome>,
) -> Result<Vec<ParentOutcome>, StoreError> {
    after
        .iter()
        .map(|id| found.get(id).cloned().ok_or(StoreError::UnknownParent(*id)))
        .collect()
}

/// The outcomes of a waiting child's parents in `after` order; one deleted since counts as
/// not succeeded (`ParentOutcome::gone`).
pub(crate) fn outcomes(child: &Task, found: &HashMap<TaskId, ParentOutcome>) -> Vec<ParentOutcome> {
    child
        .after
        .iter()
        .map(|id| {
            found
                .get(id)
                .cloned()
                .unwrap_or_else(|| ParentOutcome::gone(*id))
        })
        .collect()
}

/// The (parent, child) rows that new waiting tasks add: a child that starts queued or
/// cancelled waits for nobody.
pub(crate) fn edges(inserted: &[Inserted]) -> Vec<(TaskId, TaskId)> {
    inserted
        .iter()
        .filter(|i| !i.replayed && i.task.state == TaskState::Waiting)
        .flat_map(|i| i.task.after.iter().map(|parent| (*parent, i.task.id)))
        .collect()
}

/// The distinct parents of these children.
pub(crate) fn parent_ids(children: &[Task]) -> Vec<TaskId> {
    let mut ids: Vec<TaskId> = children.iter().flat_map(|c| c.after.clone()).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}
