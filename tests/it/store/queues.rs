//! Cases: idempotency keys, admission control, queue settings and counts (as claims and ends
//! move tasks), remote queues.

use std::collections::BTreeMap;

use taskd::store::{CancelResult, EndedAttempt, QueuePatch, StoreError};
use taskd::task::{Callback, Idempotency, TaskError, TaskState};

use super::*;

fn keyed(key: &str, hash: &str) -> NewTask {
    NewTask {
        idempotency: Some(Idempotency {
            key: key.into(),
            request_hash: hash.into(),
        }),
        ..task("idem", "echo", json!(key))
    }
}

/// A key with the same request replays the first task; with another request it is refused
/// (and a refused batch stores nothing); a deleted task frees its key.
pub async fn idempotency_replays_and_refuses(store: Arc<dyn TaskStore>) {
    let first = only(store.insert(vec![keyed("k1", "h1")], ROOMY).await.unwrap());
    assert!(!first.replayed);
    let replay = only(store.insert(vec![keyed("k1", "h1")], ROOMY).await.unwrap());
    assert!(replay.replayed);
    assert_eq!(replay.task, first.task);
    let conflict = store.insert(vec![keyed("k1", "h2")], ROOMY).await;
    assert!(matches!(conflict, Err(StoreError::IdempotencyConflict(key)) if key == "k1"));

    let batch = store
        .insert(vec![keyed("k2", "h"), keyed("k2", "h")], ROOMY)
        .await
        .unwrap();
    assert!(!batch[0].replayed && batch[1].replayed);
    assert_eq!(batch[0].task.id, batch[1].task.id);
    let refused = store
        .insert(vec![keyed("k3", "h1"), keyed("k3", "h2")], ROOMY)
        .await;
    assert!(matches!(refused, Err(StoreError::IdempotencyConflict(_))));
    let all = TaskFilter {
        limit: 100,
        ..TaskFilter::default()
    };
    assert_eq!(
        list(&store, all).await.len(),
        2,
        "nothing of the refused batch"
    );

    let CancelResult::Cancelled(_) = store.cancel(first.task.id).await.unwrap() else {
        panic!("cancelled")
    };
    store.delete(first.task.id).await.unwrap();
    let fresh = only(store.insert(vec![keyed("k1", "h2")], ROOMY).await.unwrap());
    assert!(!fresh.replayed);
    assert_ne!(fresh.task.id, first.task.id);
}

/// A queue holding its limit of waiting (queued or scheduled) tasks refuses more; a batch is
/// all or nothing; the queue's own limit overrides the default; running tasks do not count.
pub async fn admission_refuses_beyond_the_limit_all_or_nothing(store: Arc<dyn TaskStore>) {
    let three: Vec<NewTask> = (0..3).map(|n| task("adm", "echo", json!(n))).collect();
    let inserted = store.insert(three, 3).await.unwrap();
    let before: Vec<u64> = inserted.iter().map(|i| i.waiting_before).collect();
    assert_eq!(before, [0, 1, 2]);
    let full = store.insert(vec![task("adm", "echo", json!(3))], 3).await;
    assert!(
        matches!(full, Err(StoreError::QueueFull { limit: 3, .. })),
        "{full:?}"
    );
    let mixed = vec![
        task("adm-other", "echo", json!(0)),
        task("adm", "echo", json!(4)),
    ];
    assert!(store.insert(mixed, 3).await.is_err());
    assert_eq!(
        store.queue(queue("adm-other")).await.unwrap().counts[&TaskState::Queued],
        0
    );

    let limit = QueuePatch {
        max_queued: Some(Some(5)),
        ..QueuePatch::default()
    };
    store.update_queue(queue("adm"), limit).await.unwrap();
    let delayed = NewTask {
        run_at: Some(far()),
        ..task("adm", "echo", json!(5))
    };
    store
        .insert(vec![task("adm", "echo", json!(4)), delayed], 3)
        .await
        .unwrap();
    let full = store.insert(vec![task("adm", "echo", json!(6))], 3).await;
    assert!(
        matches!(full, Err(StoreError::QueueFull { limit: 5, .. })),
        "{full:?}"
    );
    assert_eq!(store.claim(1, far()).await.unwrap().len(), 1);
    store
        .insert(vec![task("adm", "echo", json!(7))], 3)
        .await
        .unwrap();
}

/// Settings change one at a time (`Some(None)` clears); a queue's counts cover every state;
/// queues with tasks or settings are listed; a queue's callback is the default of its tasks.
pub async fn queue_settings_and_counts(store: Arc<dyn TaskStore>) {
    let fresh = store.queue(queue("fresh")).await.unwrap();
    assert!(!fresh.paused && !fresh.remote);
    assert_eq!((fresh.concurrency, fresh.max_queued), (None, None));
    assert_eq!(fresh.counts.len(), TaskState::ALL.len());
    assert!(fresh.counts.values().all(|n| *n == 0));
    assert!(store.queues().await.unwrap().is_empty());

    let patch = |f: fn(&mut QueuePatch)| {
        let mut patch = QueuePatch::default();
        f(&mut patch);
        patch
    };
    store
        .update_queue(queue("set"), patch(|p| p.paused = Some(true)))
        .await
        .unwrap();
    let set = store
        .update_queue(queue("set"), patch(|p| p.concurrency = Some(Some(3))))
        .await
        .unwrap();
    assert!(set.paused, "untouched settings stay");
    assert_eq!(set.concurrency, Some(3));
    let set = store
        .update_queue(queue("set"), patch(|p| p.max_queued = Some(Some(9))))
        .await
        .unwrap();
    assert_eq!((set.concurrency, set.max_queued), (Some(3), Some(9)));
    let set = store
        .update_queue(queue("set"), patch(|p| p.concurrency = Some(None)))
        .await
        .unwrap();
    assert_eq!(
        (set.paused, set.concurrency, set.max_queued),
        (true, None, Some(9))
    );

    let callback = Callback {
        url: "http://127.0.0.1:9/hook".into(),
        secret: Some("s3cret".into()),
    };
    let with_callback = QueuePatch {
        callback: Some(Some(callback.clone())),
        ..QueuePatch::default()
    };
    let set = store
        .update_queue(queue("set"), with_callback)
        .await
        .unwrap();
    assert_eq!(set.callback.as_ref(), Some(&callback));
    let inherits = insert(&store, task("set", "echo", json!(0))).await;
    assert_eq!(get(&store, &inherits).await.callback, Some(callback));

    insert(&store, task("held", "echo", json!(0))).await;
    insert(&store, task("held", "echo", json!(1))).await;
    succeeded(&store, "held").await;
    running(&store, "held", 3).await;
    let held = store.queue(queue("held")).await.unwrap();
    let counts: Vec<(TaskState, u64)> = held.counts.into_iter().filter(|(_, n)| *n > 0).collect();
    assert_eq!(
        counts,
        [
            (TaskState::Queued, 2),
            (TaskState::Running, 1),
            (TaskState::Succeeded, 1)
        ]
    );
    assert!(held.oldest_queued_at.is_some());
    assert_eq!(held.finished_last_minute, 1);
    let names: Vec<String> = store
        .queues()
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.name.to_string())
        .collect();
    assert_eq!(names, ["held", "set"]);
}

/// A remote queue's tasks are never claimed for local handlers; `claim_queue` leases them
/// (only the kinds asked for), unless the queue is paused. `remote_queues` lists the remote
/// queues and no other.
pub async fn remote_queues_lease_only_through_claim_queue(store: Arc<dyn TaskStore>) {
    let remote = QueuePatch {
        remote: Some(true),
        ..QueuePatch::default()
    };
    assert!(store.remote_queues().await.unwrap().is_empty());
    assert!(
        store
            .update_queue(queue("far"), remote)
            .await
            .unwrap()
            .remote
    );
    // A queue with settings that is not remote is not listed.
    let paused = QueuePatch {
        paused: Some(true),
        ..QueuePatch::default()
    };
    store.update_queue(queue("near"), paused).await.unwrap();
    assert_eq!(store.remote_queues().await.unwrap(), [queue("far")]);
    insert(&store, task("far", "resize", json!(1))).await;
    insert(&store, task("far", "encode", json!(2))).await;
    assert!(store.claim(10, far()).await.unwrap().is_empty());

    let resize = Some(vec![Kind::parse("resize").unwrap()]);
    let pause = QueuePatch {
        paused: Some(true),
        ..QueuePatch::default()
    };
    store.update_queue(queue("far"), pause).await.unwrap();
    let none = store
        .claim_queue(queue("far"), resize.clone(), 10, far())
        .await;
    assert!(none.unwrap().is_empty(), "paused");
    let resume = QueuePatch {
        paused: Some(false),
        ..QueuePatch::default()
    };
    store.update_queue(queue("far"), resume).await.unwrap();
    let leased = only(
        store
            .claim_queue(queue("far"), resize, 10, far())
            .await
            .unwrap(),
    );
    assert_eq!(
        (leased.kind.as_str(), leased.state),
        ("resize", TaskState::Running)
    );
    let rest = store
        .claim_queue(queue("far"), None, 10, far())
        .await
        .unwrap();
    assert_eq!(only(rest).kind.as_str(), "encode");
    let local = QueuePatch {
        remote: Some(false),
        ..QueuePatch::default()
    };
    store.update_queue(queue("far"), local).await.unwrap();
    assert!(
        store.remote_queues().await.unwrap().is_empty(),
        "local again"
    );
}

/// Each queue's counts, recounted from a listing of all its tasks.
async fn recounted(store: &Arc<dyn TaskStore>, name: &str) -> Vec<(TaskState, u64)> {
    let filter = TaskFilter {
        queue: Some(queue(name)),
        limit: 1_000,
        ..TaskFilter::default()
    };
    let mut counts: BTreeMap<TaskState, u64> = TaskState::ALL.iter().map(|s| (*s, 0)).collect();
    for task in list(store, filter).await {
        *counts.get_mut(&task.state).unwrap() += 1;
    }
    counts.into_iter().collect()
}

async fn counted(store: &Arc<dyn TaskStore>, name: &str) -> Vec<(TaskState, u64)> {
    let counts = store.queue(queue(name)).await.unwrap().counts;
    let counts: BTreeMap<TaskState, u64> = counts.into_iter().collect();
    counts.into_iter().collect()
}

/// The counts follow claims of several queues in one call and a batch of ends of every
/// kind (successes, a retry, a stale lease, a success on a cancelled task): after each
/// step they equal a recount of the queue's tasks.
pub async fn queue_counts_follow_claims_and_ends(store: Arc<dyn TaskStore>) {
    let names = ["count-a", "count-b"];
    for (name, n) in names.iter().zip([6, 4]) {
        let tasks = (0..n)
            .map(|i| NewTask {
                max_attempts: 3,
                ..task(name, "echo", json!(i))
            })
            .collect();
        store.insert(tasks, ROOMY).await.unwrap();
    }
    let claimed = store.claim(8, far()).await.unwrap();
    assert_eq!(claimed.len(), 8);
    for name in names {
        assert_eq!(counted(&store, name).await, recounted(&store, name).await);
    }
    let cancelled = &claimed[3];
    assert!(matches!(
        store.cancel(cancelled.id).await.unwrap(),
        CancelResult::Requested(_)
    ));
    let ended_at = taskd::task::now_millis();
    let ends = claimed
        .iter()
        .enumerate()
        .map(|(n, task)| EndedAttempt {
            id: task.id,
            lease: match n {
                5 => "not-the-lease".into(),
                _ => lease(task),
            },
            outcome: match n {
                1 => Outcome::Failed {
                    error: TaskError {
                        error_type: "boom".into(),
                        message: "once".into(),
                    },
                    retryable: true,
                },
                _ => Outcome::Succeeded(json!(n)),
            },
            ended_at,
        })
        .collect();
    let ended = store.finish_many(ends).await.unwrap();
    assert_eq!(ended.iter().filter(|e| e.is_some()).count(), 7);
    let mut states = BTreeMap::new();
    for name in names {
        let counts = counted(&store, name).await;
        assert_eq!(counts, recounted(&store, name).await, "{name}");
        for (state, n) in counts {
            *states.entry(state).or_insert(0) += n;
        }
    }
    assert_eq!(states[&TaskState::Succeeded], 5);
    assert_eq!(states[&TaskState::Scheduled], 1);
    assert_eq!(states[&TaskState::Cancelled], 1);
    assert_eq!(states[&TaskState::Running], 1, "the stale lease's task");
    assert_eq!(states[&TaskState::Queued], 2);
}
