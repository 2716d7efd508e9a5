//! The engine's side of dependencies: the parents a submission names are checked against
//! the caller's scope before the store sees them, and a child's parents' outcomes are read
//! for its attempt (a local handler's context, a remote worker's lease). Releasing and
//! cancelling children is the store's, inside the transaction that ends a parent.

use std::collections::{BTreeSet, HashMap};

use super::{Engine, EngineError, Inner};
use crate::access::QueueScope;
use crate::store::{StoreError, parents};
use crate::task::{NewTask, ParentOutcome, ParentRef, Task, TaskId};

impl Engine {
    /// Every parent named by id exists in the caller's scope: one in a queue the key cannot
    /// see is as unknown as one that never existed. (Items of the batch, `"$N"`, were checked
    /// at the edge.)
    pub(super) async fn check_parents(
        &self,
        tasks: &[NewTask],
        scope: &QueueScope,
    ) -> Result<(), EngineError> {
        let named: BTreeSet<TaskId> = tasks
            .iter()
            .flat_map(|t| t.after.iter())
            .filter_map(|parent| match parent {
                ParentRef::Task(id) => Some(*id),
                ParentRef::Item(_) => None,
            })
            .collect();
        if named.is_empty() {
            return Ok(());
        }
        let found: BTreeSet<TaskId> = self
            .inner
            .store
            .get_many(named.into_iter().collect())
            .await
            .map_err(EngineError::Store)?
            .into_iter()
            .filter(|task| scope.allows(&task.queue))
            .map(|task| task.id)
            .collect();
        for (index, task) in tasks.iter().enumerate() {
            for (i, parent) in task.after.iter().enumerate() {
                if let ParentRef::Task(id) = parent
                    && !found.contains(id)
                {
                    return Err(EngineError::InvalidItem {
                        index,
                        error: Box::new(EngineError::UnknownParent {
                            field: format!("after[{i}]"),
                            id: *id,
                        }),
                    });
                }
            }
        }
        Ok(())
    }
}

impl Inner {
    /// The outcomes of `task`'s parents, in the order it named them (one deleted since
    /// shows as cancelled); empty for a task without parents.
    pub(super) async fn parents_of(&self, task: &Task) -> Result<Vec<ParentOutcome>, StoreError> {
        if task.after.is_empty() {
            return Ok(Vec::new());
        }
        let found: HashMap<TaskId, ParentOutcome> = self
            .store
            .get_many(task.after.clone())
            .await?
            .iter()
            .map(|parent| (parent.id, ParentOutcome::of(parent)))
            .collect();
        Ok(parents::outcomes(task, &found))
    }
}
