//! A property test of the task state machine: random sequences of submit, claim, finish,
//! cancel, retry, release, expire, promote and delete against the real store (SQLite and
//! PostgreSQL, whose guards are separate SQL), checked step by step against a model. No sequence may reach a state the model does not allow, and
//! every observed move must be legal per `TaskState::allows`.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::json;
use taskd::store::{Changed, TaskStore};

use crate::backend::{Backend, TestDatabase};
use taskd::task::{
    Backoff, Kind, NewTask, Outcome, QueueName, Task, TaskError, TaskId, TaskState, Transition,
};

#[derive(Debug, Clone)]
enum Op {
    Submit { max_attempts: u32, delayed: bool },
    Claim(usize),
    Succeed(usize),
    Fail { pick: usize, retryable: bool },
    Cancel(usize),
    Retry(usize),
    Release(usize),
    ExpireLeases,
    PromoteDue,
    Delete(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u32..4, any::<bool>()).prop_map(|(max_attempts, delayed)| Op::Submit { max_attempts, delayed }),
        3 => (1usize..4).prop_map(Op::Claim),
        2 => any::<usize>().prop_map(Op::Succeed),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(pick, retryable)| Op::Fail { pick, retryable }),
        1 => any::<usize>().prop_map(Op::Cancel),
        1 => any::<usize>().prop_map(Op::Retry),
        1 => any::<usize>().prop_map(Op::Release),
        1 => Just(Op::ExpireLeases),
        1 => Just(Op::PromoteDue),
        1 => any::<usize>().prop_map(Op::Delete),
    ]
}

/// Which transitions may explain a move from `before` to `after` of one task.
fn legal(before: &Task, after: &Task) -> bool {
    if before.state == after.state && before.attempt == after.attempt {
        return true;
    }
    use Transition::*;
    [Claim, Cancel, Release, Recover, Promote, Retry]
        .into_iter()
        .chain(TaskState::ALL.into_iter().map(Finish))
        .any(|transition| before.state.allows(transition, after.state))
}

fn running(tasks: &[Task]) -> Vec<&Task> {
    tasks
        .iter()
        .filter(|t| t.state == TaskState::Running)
        .collect()
}

fn pick<T>(items: &[T], index: usize) -> Option<&T> {
    (!items.is_empty()).then(|| &items[index % items.len()])
}

async fn snapshot(store: &dyn TaskStore, ids: &[TaskId]) -> Vec<Task> {
    let mut tasks = Vec::new();
    for id in ids {
        if let Some(task) = store.get(*id).await.unwrap() {
            tasks.push(task);
        }
    }
    tasks
}

async fn run(backend: Backend, ops: Vec<Op>) -> Result<(), TestCaseError> {
    // SQLite in memory; PostgreSQL on a fresh database per sequence (dropped with it).
    let database = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(TestDatabase::fresh(Backend::Postgres).await),
    };
    let url = database
        .as_ref()
        .map_or_else(|| "sqlite::memory:".to_owned(), |d| d.url.clone());
    let store = taskd::store::open(&url).await.unwrap();
    store.migrate().await.unwrap();
    let far_future = taskd::task::now_millis() + 10 * 365 * 86_400_000;
    let mut ids: Vec<TaskId> = Vec::new();
    for op in ops {
        let before = snapshot(store.as_ref(), &ids).await;
        let by_id: BTreeMap<TaskId, &Task> = before.iter().map(|t| (t.id, t)).collect();
        match op {
            Op::Submit {
                max_attempts,
                delayed,
            } => {
                let mut new = NewTask::new(
                    QueueName::default(),
                    Kind::parse("echo").unwrap(),
                    json!({}),
                );
                new.max_attempts = max_attempts;
                new.backoff = Backoff {
                    base_ms: 0,
                    cap_ms: 0,
                };
                if delayed {
                    new.run_at = Some(far_future);
                }
                let inserted = store.insert(vec![new], u64::MAX).await.unwrap();
                let task = &inserted[0].task;
                let expected = if delayed {
                    TaskState::Scheduled
                } else {
                    TaskState::Queued
                };
                prop_assert_eq!(task.state, expected);
                ids.push(task.id);
            }
            Op::Claim(n) => {
                let queued_before = before
                    .iter()
                    .filter(|t| t.state == TaskState::Queued)
                    .count();
                let claimed = store.claim(n, far_future).await.unwrap();
                prop_assert_eq!(claimed.len(), n.min(queued_before));
                for task in &claimed {
                    prop_assert_eq!(task.state, TaskState::Running);
                    prop_assert_eq!(task.attempt, by_id[&task.id].attempt + 1);
                    prop_assert!(task.attempt <= task.max_attempts);
                }
            }
            Op::Succeed(index) => {
                if let Some(task) = pick(&running(&before), index) {
                    let lease = task.lease.clone().unwrap().token;
                    let done = store
                        .finish(task.id, &lease, Outcome::Succeeded(json!(1)))
                        .await
                        .unwrap();
                    let done = done.expect("the lease is current");
                    let expected = if task.cancel_requested {
                        TaskState::Cancelled
                    } else {
                        TaskState::Succeeded
                    };
                    prop_assert_eq!(done.state, expected);
                    // The same lease again is stale: nothing changes.
                    let again = store
                        .finish(task.id, &lease, Outcome::Succeeded(json!(2)))
                        .await
                        .unwrap();
                    prop_assert!(again.is_none());
                }
            }
            Op::Fail {
                pick: index,
                retryable,
            } => {
                if let Some(task) = pick(&running(&before), index) {
                    let lease = task.lease.clone().unwrap().token;
                    let error = TaskError {
                        error_type: "x".into(),
                        message: "y".into(),
                    };
                    let done = store
                        .finish(task.id, &lease, Outcome::Failed { error, retryable })
                        .await
                        .unwrap()
                        .unwrap();
                    let expected = if task.cancel_requested {
                        TaskState::Cancelled
                    } else if retryable && task.attempt < task.max_attempts {
                        TaskState::Scheduled
                    } else {
                        TaskState::Failed
                    };
                    prop_assert_eq!(done.state, expected);
                }
            }
            Op::Cancel(index) => {
                if let Some(task) = pick(&before, index) {
                    store.cancel(task.id).await.unwrap();
                    let after = store.get(task.id).await.unwrap().unwrap();
                    match task.state {
                        TaskState::Queued | TaskState::Scheduled => {
                            prop_assert_eq!(after.state, TaskState::Cancelled)
                        }
                        TaskState::Running => prop_assert!(
                            after.cancel_requested && after.state == TaskState::Running
                        ),
                        _ => prop_assert_eq!(&after, task),
                    }
                }
            }
            Op::Retry(index) => {
                if let Some(task) = pick(&before, index) {
                    let outcome = store.retry(task.id).await.unwrap();
                    let retryable = matches!(task.state, TaskState::Failed | TaskState::Cancelled);
                    prop_assert_eq!(matches!(outcome, Changed::Done(_)), retryable);
                }
            }
            Op::Release(index) => {
                if let Some(task) = pick(&running(&before), index) {
                    let lease = task.lease.clone().unwrap().token;
                    let released = store.release(task.id, &lease).await.unwrap().unwrap();
                    prop_assert_eq!(released.attempt, task.attempt - 1);
                }
            }
            Op::ExpireLeases => {
                let rescued = store.rescue_expired(far_future + 1).await.unwrap();
                prop_assert_eq!(rescued.len(), running(&before).len());
            }
            Op::PromoteDue => {
                let promoted = store.promote_due(far_future + 1).await.unwrap();
                let scheduled = before
                    .iter()
                    .filter(|t| t.state == TaskState::Scheduled)
                    .count();
                prop_assert_eq!(promoted as usize, scheduled);
            }
            Op::Delete(index) => {
                if let Some(task) = pick(&before, index) {
                    let outcome = store.delete(task.id).await.unwrap();
                    prop_assert_eq!(
                        matches!(outcome, Changed::Done(_)),
                        task.state.is_terminal()
                    );
                }
            }
        }
        let after = snapshot(store.as_ref(), &ids).await;
        for task in &after {
            if let Some(previous) = by_id.get(&task.id) {
                prop_assert!(
                    legal(previous, task),
                    "illegal move {:?} -> {:?}",
                    previous.state,
                    task.state
                );
            }
            prop_assert_eq!(task.state == TaskState::Running, task.lease.is_some());
            prop_assert_eq!(task.state.is_terminal(), task.finished_at.is_some());
            prop_assert_eq!(task.state == TaskState::Scheduled, task.run_at.is_some());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random operation sequences never reach an illegal state or make an illegal move.
    #[test]
    fn random_sequences_keep_the_state_machine(ops in proptest::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(run(Backend::Sqlite, ops))?;
    }

    /// The same on PostgreSQL, whose guards are its own SQL.
    #[test]
    fn random_sequences_keep_the_state_machine_on_postgres(
        ops in proptest::collection::vec(op(), 1..40)
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(run(Backend::Postgres, ops))?;
    }
}
