//! Dependencies: a task may name parents (`after`) and then waits, in state `waiting`, until
//! enough of them settled; its [`AfterPolicy`] decides whether it runs or ends cancelled as
//! `dependency_failed`. The rule is decided here, once: both stores call [`settle`] inside the
//! transaction that ends a parent (or inserts the child), so it holds across nodes and
//! crashes. Nothing here knows SQL.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Millis, Task, TaskError, TaskId, TaskState, Transition};

/// The most parents one task may name: a fan-out of a thousand tasks joins in one `all`.
pub const MAX_PARENTS: usize = 1_000;

/// When a waiting task may run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterPolicy {
    /// Once every parent succeeded; a failed or cancelled parent cancels it.
    #[default]
    AllSucceeded,
    /// Once every parent is terminal, whatever the outcome.
    AllFinished,
    /// As soon as one parent succeeded; cancelled if every parent ended otherwise.
    AnySucceeded,
}

impl AfterPolicy {
    pub const ALL: [AfterPolicy; 3] = [
        AfterPolicy::AllSucceeded,
        AfterPolicy::AllFinished,
        AfterPolicy::AnySucceeded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AfterPolicy::AllSucceeded => "all_succeeded",
            AfterPolicy::AllFinished => "all_finished",
            AfterPolicy::AnySucceeded => "any_succeeded",
        }
    }

    pub fn parse(text: &str) -> Option<AfterPolicy> {
        AfterPolicy::ALL.into_iter().find(|p| p.as_str() == text)
    }

    /// What the parents' outcomes decide: `None` while it depends on parents still to
    /// settle, `Ok` to run, `Err` with why it cannot.
    fn decide(self, parents: &[ParentOutcome]) -> Option<Result<(), TaskError>> {
        let ended = |p: &&ParentOutcome| p.state.is_terminal();
        let succeeded = |p: &&ParentOutcome| p.state == TaskState::Succeeded;
        match self {
            AfterPolicy::AllSucceeded => match parents.iter().find(|p| ended(p) && !succeeded(p)) {
                Some(failed) => Some(Err(dependency_failed(format!(
                    "parent {} {}, and all_succeeded needs every parent to succeed",
                    failed.id,
                    failed.state.described()
                )))),
                None => parents.iter().all(|p| succeeded(&p)).then_some(Ok(())),
            },
            AfterPolicy::AllFinished => parents.iter().all(|p| ended(&p)).then_some(Ok(())),
            AfterPolicy::AnySucceeded => {
                if parents.iter().any(|p| succeeded(&p)) {
                    Some(Ok(()))
                } else if parents.iter().all(|p| ended(&p)) {
                    Some(Err(dependency_failed(
                        "no parent succeeded, and any_succeeded needs one to".to_owned(),
                    )))
                } else {
                    None
                }
            }
        }
    }
}

fn dependency_failed(message: String) -> TaskError {
    TaskError {
        error_type: "dependency_failed".to_owned(),
        message,
    }
}

/// A parent as a submission names it: a task id, or an earlier item of the same batch
/// (`"$0"`, `"$1"`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParentRef {
    Task(TaskId),
    Item(usize),
}

impl ParentRef {
    /// The id this names, given the ids of the batch's items before this one (`None`: an
    /// item not among them, which the edge refuses before a store sees it).
    pub fn resolve(self, items: &[TaskId]) -> Option<TaskId> {
        match self {
            ParentRef::Task(id) => Some(id),
            ParentRef::Item(index) => items.get(index).copied(),
        }
    }
}

/// A parent's outcome as its child sees it: a local handler through its context, a remote
/// worker in its lease.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParentOutcome {
    pub id: TaskId,
    pub state: TaskState,
    pub result: Option<Value>,
    pub error: Option<TaskError>,
    /// When it ended: `any` picks the parent that succeeded first. Not served.
    #[serde(skip)]
    pub finished_at: Option<Millis>,
}

impl ParentOutcome {
    pub fn of(task: &Task) -> ParentOutcome {
        ParentOutcome {
            id: task.id,
            state: task.state,
            result: task.result.clone(),
            error: task.error.clone(),
            finished_at: task.finished_at,
        }
    }

    /// A parent that no longer exists (deleted once finished): it counts as one that did
    /// not succeed.
    pub fn gone(id: TaskId) -> ParentOutcome {
        ParentOutcome {
            id,
            state: TaskState::Cancelled,
            result: None,
            error: Some(TaskError {
                error_type: "not_found".to_owned(),
                message: format!("parent {id} no longer exists"),
            }),
            finished_at: None,
        }
    }
}

/// What a waiting task's parents decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Settled {
    /// It may run; `input` (the result of its `input_from` parent) replaces its input.
    Run { input: Option<Value> },
    /// Its policy can no longer be met: it ends cancelled with this error.
    Failed(TaskError),
}

/// What the outcomes of `task`'s parents (in any order) decide now; `None`: it waits on.
pub fn settle(task: &Task, parents: &[ParentOutcome]) -> Option<Settled> {
    let policy = task.after_policy.unwrap_or_default();
    match policy.decide(parents)? {
        Err(error) => Some(Settled::Failed(error)),
        Ok(()) => {
            let input = task.input_from.and_then(|from| {
                let parent = parents.iter().find(|p| p.id == from)?;
                parent.result.clone()
            });
            Some(Settled::Run { input })
        }
    }
}

impl Task {
    /// Gives a new (queued) task its parents and, from their outcomes now, its first state:
    /// `waiting`, or at once queued (its input taken from `input_from`) or cancelled.
    pub fn start_after(
        &mut self,
        after: Vec<TaskId>,
        policy: AfterPolicy,
        input_from: Option<TaskId>,
        parents: &[ParentOutcome],
        now: Millis,
    ) {
        debug_assert_eq!(self.state, TaskState::Queued);
        self.after = after;
        self.after_policy = Some(policy);
        self.input_from = input_from;
        self.state = TaskState::Waiting;
        match settle(self, parents) {
            None => {}
            Some(settled) => self.apply_settled(settled, now),
        }
    }

    /// Writes what the parents decided into a waiting task.
    pub fn apply_settled(&mut self, settled: Settled, now: Millis) {
        match settled {
            Settled::Run { input } => {
                debug_assert!(self.state.allows(Transition::Unblock, TaskState::Queued));
                self.state = TaskState::Queued;
                if let Some(input) = input {
                    self.input = input.into();
                }
            }
            Settled::Failed(error) => {
                debug_assert!(self.state.allows(Transition::Cancel, TaskState::Cancelled));
                self.state = TaskState::Cancelled;
                self.error = Some(error);
                self.finished_at = Some(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parent(state: TaskState, result: Option<Value>) -> ParentOutcome {
        ParentOutcome {
            id: TaskId::new(),
            state,
            result,
            error: None,
            finished_at: None,
        }
    }

    fn child(policy: AfterPolicy, parents: &[ParentOutcome], input_from: usize) -> Task {
        let new = super::super::NewTask::new(
            Default::default(),
            super::super::Kind::parse("x").unwrap(),
            json!({}),
        );
        let (mut task, _) = new.into_task(0, None);
        let ids = parents.iter().map(|p| p.id).collect();
        task.after_policy = Some(policy);
        task.after = ids;
        task.input_from = parents.get(input_from).map(|p| p.id);
        task.state = TaskState::Waiting;
        task
    }

    /// all_succeeded waits for every parent, and a failed one decides at once.
    #[test]
    fn all_succeeded_needs_every_parent() {
        use TaskState::*;
        let ps = [parent(Succeeded, Some(json!(1))), parent(Running, None)];
        let task = child(AfterPolicy::AllSucceeded, &ps, 0);
        assert_eq!(settle(&task, &ps), None);
        let ps = [
            parent(Succeeded, Some(json!(1))),
            parent(Succeeded, Some(json!(2))),
        ];
        let task = child(AfterPolicy::AllSucceeded, &ps, 1);
        assert_eq!(
            settle(&task, &ps),
            Some(Settled::Run {
                input: Some(json!(2))
            })
        );
        let ps = [parent(Failed, None), parent(Queued, None)];
        let task = child(AfterPolicy::AllSucceeded, &ps, 9);
        let Some(Settled::Failed(error)) = settle(&task, &ps) else {
            panic!("a failed parent decides")
        };
        assert_eq!(error.error_type, "dependency_failed");
        assert!(error.message.contains("has failed"), "{}", error.message);
    }

    /// all_finished runs whatever the outcomes; any_succeeded runs on the first success
    /// and fails once none can succeed.
    #[test]
    fn all_finished_and_any_succeeded() {
        use TaskState::*;
        let ps = [parent(Failed, None), parent(Cancelled, None)];
        let task = child(AfterPolicy::AllFinished, &ps, 9);
        assert_eq!(settle(&task, &ps), Some(Settled::Run { input: None }));
        let task = child(AfterPolicy::AnySucceeded, &ps, 9);
        assert!(matches!(settle(&task, &ps), Some(Settled::Failed(_))));
        let ps = [parent(Failed, None), parent(Waiting, None)];
        let task = child(AfterPolicy::AnySucceeded, &ps, 9);
        assert_eq!(settle(&task, &ps), None);
        let ps = [parent(Running, None), parent(Succeeded, Some(json!("x")))];
        let task = child(AfterPolicy::AnySucceeded, &ps, 9);
        assert_eq!(settle(&task, &ps), Some(Settled::Run { input: None }));
    }

    /// A new task whose parents all succeeded already starts queued with its input taken.
    #[test]
    fn a_child_of_settled_parents_starts_settled() {
        let ps = [parent(TaskState::Succeeded, Some(json!({"a": 1})))];
        let mut task = child(AfterPolicy::AllSucceeded, &ps, 0);
        task.state = TaskState::Queued;
        task.start_after(
            vec![ps[0].id],
            AfterPolicy::AllSucceeded,
            Some(ps[0].id),
            &ps,
            5,
        );
        assert_eq!(task.state, TaskState::Queued);
        assert_eq!(*task.input, json!({"a": 1}));
        let ps = [ParentOutcome::gone(TaskId::new())];
        let mut task = child(AfterPolicy::AllSucceeded, &ps, 9);
        task.state = TaskState::Queued;
        task.start_after(vec![ps[0].id], AfterPolicy::AllSucceeded, None, &ps, 5);
        assert_eq!(task.state, TaskState::Cancelled);
        assert_eq!(task.finished_at, Some(5));
    }
}
