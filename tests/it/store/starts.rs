//! Cases: a submit that starts its tasks in its own transaction (`insert_claiming`): the
//! state, counts, events and cancel tell the truth; it starts only what a claim would, and
//! nothing for a replay; a started task whose lease expires runs again.

use taskd::store::{CancelResult, ClaimNow, EventFilter, QueuePatch, RateLimit, Submitted};
use taskd::task::{Idempotency, TaskId, TaskState};

use super::*;

/// One free worker, leases that do not expire during a case.
fn one() -> ClaimNow {
    ClaimNow {
        limit: 1,
        lease_expires_at: far(),
    }
}

async fn submit(store: &Arc<dyn TaskStore>, tasks: Vec<NewTask>, claim: ClaimNow) -> Submitted {
    store.insert_claiming(tasks, ROOMY, claim).await.unwrap()
}

/// A task submitted with a free worker is stored running in the same commit: attempt 1
/// under the claim's lease, the 202's task shown running, the queue's counts moved, the log
/// saying `queued` then `running`; a cancel asks the running attempt to stop, and its end
/// is `cancelled`.
pub async fn a_submit_starts_its_task_in_its_own_transaction(store: Arc<dyn TaskStore>) {
    let claim = one();
    let submitted = submit(&store, vec![task("now", "echo", json!(1))], claim).await;
    let started = only(submitted.started);
    let inserted = only(submitted.inserted);
    assert!(!inserted.replayed);
    assert_eq!(inserted.task, started);
    assert_eq!((started.state, started.attempt), (TaskState::Running, 1));
    assert_eq!(
        started.lease.as_ref().unwrap().expires_at,
        claim.lease_expires_at
    );
    assert!(started.started_at.is_some());
    assert_eq!(get(&store, &started).await, started);
    let counts = store.queue(queue("now")).await.unwrap().counts;
    assert_eq!(
        (counts[&TaskState::Queued], counts[&TaskState::Running]),
        (0, 1)
    );

    let events = store
        .events_after(
            0,
            EventFilter {
                task: Some(started.id),
            },
            10,
        )
        .await
        .unwrap();
    let seen: Vec<(TaskState, u32)> = events.iter().map(|e| (e.state, e.attempt)).collect();
    assert_eq!(seen, [(TaskState::Queued, 0), (TaskState::Running, 1)]);
    assert!(
        store.claim(4, far()).await.unwrap().is_empty(),
        "nothing left to claim"
    );

    let CancelResult::Requested(asked) = store.cancel(started.id).await.unwrap() else {
        panic!("a running task's cancel is a request");
    };
    assert!(asked.cancel_requested && asked.state == TaskState::Running);
    let ended = store
        .finish(started.id, &lease(&started), Outcome::Succeeded(json!(1)))
        .await
        .unwrap()
        .expect("its lease still holds");
    assert_eq!(ended.state, TaskState::Cancelled);
}

/// A submit starts no more than its limit, nor what a claim would not start: a replay, a
/// delayed task, a paused or remote queue, a queue at its concurrency or rate. The claim is
/// the dispatcher's, so an older queued task goes before a newer one of the call.
pub async fn a_submit_starts_only_what_a_claim_would(store: Arc<dyn TaskStore>) {
    let keyed = NewTask {
        idempotency: Some(Idempotency {
            key: "k".into(),
            request_hash: "h".into(),
        }),
        ..task("keys", "echo", json!(1))
    };
    let first = submit(&store, vec![keyed.clone()], one()).await;
    assert_eq!(first.started.len(), 1);
    let replay = submit(&store, vec![keyed], one()).await;
    assert!(replay.inserted[0].replayed && replay.started.is_empty());

    let later = NewTask {
        run_at: Some(far()),
        ..task("later", "echo", json!(1))
    };
    let delayed = submit(&store, vec![later], one()).await;
    assert_eq!(delayed.inserted[0].task.state, TaskState::Scheduled);
    assert!(delayed.started.is_empty());

    let set = |name: &str, patch: QueuePatch| {
        let store = Arc::clone(&store);
        let name = queue(name);
        async move { store.update_queue(name, patch).await.unwrap() }
    };
    set(
        "held",
        QueuePatch {
            paused: Some(true),
            ..QueuePatch::default()
        },
    )
    .await;
    set(
        "far",
        QueuePatch {
            remote: Some(true),
            ..QueuePatch::default()
        },
    )
    .await;
    set(
        "one",
        QueuePatch {
            concurrency: Some(Some(1)),
            ..QueuePatch::default()
        },
    )
    .await;
    let rate = RateLimit {
        limit: 1,
        per_ms: 3_600_000,
    };
    set(
        "slow",
        QueuePatch {
            rate: Some(Some(rate)),
            ..QueuePatch::default()
        },
    )
    .await;
    for name in ["held", "far"] {
        let submitted = submit(&store, vec![task(name, "echo", json!(1))], one()).await;
        assert!(submitted.started.is_empty(), "{name}");
        assert_eq!(
            submitted.inserted[0].task.state,
            TaskState::Queued,
            "{name}"
        );
    }
    for name in ["one", "slow"] {
        let first = submit(&store, vec![task(name, "echo", json!(1))], one()).await;
        assert_eq!(first.started.len(), 1, "{name}: within its limit");
        let second = submit(&store, vec![task(name, "echo", json!(2))], one()).await;
        assert!(second.started.is_empty(), "{name}: at its limit");
    }

    let older = insert(&store, task("fifo", "echo", json!("older"))).await;
    let three = vec![
        task("fifo", "echo", json!(1)),
        task("fifo", "echo", json!(2)),
    ];
    let two = ClaimNow { limit: 2, ..one() };
    let submitted = submit(&store, three, two).await;
    let started: Vec<TaskId> = submitted.started.iter().map(|t| t.id).collect();
    // The call's own task first, then the older one the claim took.
    assert_eq!(started, [submitted.inserted[0].task.id, older.id]);
    assert_eq!(submitted.inserted[0].task.state, TaskState::Running);
    assert_eq!(submitted.inserted[1].task.state, TaskState::Queued);
    assert_eq!(get(&store, &older).await.state, TaskState::Running);
}

/// A task started by its submit whose runner dies holds a lease like any claim's: when it
/// expires the attempt is lost, and the task is claimed and runs again (at-least-once).
pub async fn a_started_task_whose_lease_expires_runs_again(store: Arc<dyn TaskStore>) {
    let now = now_millis();
    let lapsing = ClaimNow {
        limit: 1,
        lease_expires_at: now - 1,
    };
    let submitted = submit(&store, vec![task("lapse", "echo", json!(1))], lapsing).await;
    let started = only(submitted.started);
    let rescued = only(store.rescue_expired(now).await.unwrap());
    assert_eq!(rescued.id, started.id);
    assert_eq!((rescued.state, rescued.attempt), (TaskState::Queued, 1));
    assert_eq!(rescued.errors[0].error_type, "lease_expired");
    let again = only(store.claim(1, far()).await.unwrap());
    assert_eq!((again.id, again.attempt), (started.id, 2));
}
