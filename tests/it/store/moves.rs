//! Cases: cancel, release, rescue of expired leases and their renewal, remote leases cut at
//! the attempt's timeout, promotion of due tasks, delete and purge.

use taskd::store::{CancelResult, Changed, QueuePatch};
use taskd::task::{TaskId, TaskState};

use super::*;

/// A cancel ends a waiting task at once, asks a running one to stop (its attempt then ends
/// cancelled, whatever it returned), and leaves a finished one alone.
pub async fn cancel_in_every_state(store: Arc<dyn TaskStore>) {
    let queued = insert(&store, task("cq", "echo", json!(1))).await;
    let CancelResult::Cancelled(cancelled) = store.cancel(queued.id).await.unwrap() else {
        panic!("a queued task is cancelled at once")
    };
    assert_eq!(cancelled.state, TaskState::Cancelled);
    assert!(cancelled.finished_at.is_some());

    let later = NewTask {
        run_at: Some(far()),
        ..task("cq", "echo", json!(2))
    };
    let scheduled = insert(&store, later).await;
    assert_eq!(scheduled.state, TaskState::Scheduled);
    let CancelResult::Cancelled(cancelled) = store.cancel(scheduled.id).await.unwrap() else {
        panic!("a scheduled task is cancelled at once")
    };
    assert_eq!(
        (cancelled.state, cancelled.run_at),
        (TaskState::Cancelled, None)
    );

    let running = running(&store, "cr", 3).await;
    let CancelResult::Requested(requested) = store.cancel(running.id).await.unwrap() else {
        panic!("a running task is asked to stop")
    };
    assert_eq!(requested.state, TaskState::Running);
    assert!(requested.cancel_requested);
    let ended = store
        .finish(running.id, &lease(&running), Outcome::Succeeded(json!(1)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.state, TaskState::Cancelled, "the cancel wins");
    assert!(ended.result.is_none());

    let CancelResult::Finished(finished) = store.cancel(ended.id).await.unwrap() else {
        panic!("a finished task stays as it is")
    };
    assert_eq!(finished, ended);
    assert_eq!(
        store.cancel(TaskId::new()).await.unwrap(),
        CancelResult::NotFound
    );
}

/// A release (shutdown) gives a running task back without counting its attempt; a task whose
/// cancel was requested ends cancelled instead. A stale lease releases nothing.
pub async fn release_gives_the_attempt_back(store: Arc<dyn TaskStore>) {
    let task = running(&store, "rel", 3).await;
    assert!(store.release(task.id, "stale").await.unwrap().is_none());
    let released = store
        .release(task.id, &lease(&task))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((released.state, released.attempt), (TaskState::Queued, 0));
    assert!(released.lease.is_none());
    let again = only(store.claim(1, far()).await.unwrap());
    assert_eq!((again.id, again.attempt), (task.id, 1));
    assert!(
        store
            .release(task.id, &lease(&task))
            .await
            .unwrap()
            .is_none()
    );

    store.cancel(again.id).await.unwrap();
    let cancelled = store
        .release(again.id, &lease(&again))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cancelled.state, TaskState::Cancelled);
    assert!(cancelled.finished_at.is_some());
}

/// Running tasks whose lease expired lose their attempt (queued again, or failed when none
/// is left); a renewed lease keeps its task; renewing under a stale token does nothing.
pub async fn expired_leases_are_rescued_and_renewed_ones_are_not(store: Arc<dyn TaskStore>) {
    let now = now_millis();
    let spare = NewTask {
        max_attempts: 3,
        ..task("exp-a", "echo", json!(1))
    };
    let last = NewTask {
        max_attempts: 1,
        ..task("exp-b", "echo", json!(2))
    };
    let spare = insert(&store, spare).await;
    let last = insert(&store, last).await;
    assert_eq!(store.claim(2, now - 1).await.unwrap().len(), 2);
    let alive = running(&store, "exp-c", 3).await;
    assert_eq!(
        store
            .renew(vec![(alive.id, "stale".into())], far())
            .await
            .unwrap(),
        0
    );
    let renewed_to = far() + 1_000;
    let renewed = store
        .renew(vec![(alive.id, lease(&alive))], renewed_to)
        .await;
    assert_eq!(renewed.unwrap(), 1);
    assert_eq!(
        get(&store, &alive).await.lease.unwrap().expires_at,
        renewed_to
    );

    let mut rescued = store.rescue_expired(now).await.unwrap();
    rescued.sort_by_key(|t| t.id);
    assert_eq!(rescued.len(), 2, "{rescued:?}");
    let (spare_now, last_now) = (get(&store, &spare).await, get(&store, &last).await);
    assert_eq!(rescued, vec![spare_now.clone(), last_now.clone()]);
    assert_eq!((spare_now.state, spare_now.attempt), (TaskState::Queued, 1));
    assert_eq!(spare_now.errors[0].error_type, "lease_expired");
    assert!(spare_now.lease.is_none());
    assert_eq!(last_now.state, TaskState::Failed);
    assert_eq!(last_now.error.unwrap().error_type, "lease_expired");
    assert!(store.rescue_expired(now).await.unwrap().is_empty());
    assert_eq!(get(&store, &alive).await.state, TaskState::Running);
}

/// A remote lease never outlives the attempt's `timeout_ms` (a local one does: the pool
/// enforces its own); a lease that ran out at that deadline is rescued as a retryable
/// `timeout`, any other expiry as `lease_expired`; the old lease then changes nothing.
pub async fn a_remote_lease_expiring_at_the_deadline_is_a_timeout(store: Arc<dyn TaskStore>) {
    let remote = QueuePatch {
        remote: Some(true),
        ..QueuePatch::default()
    };
    store.update_queue(queue("tmo"), remote).await.unwrap();
    let timed = |input: i32, max_attempts: u32| NewTask {
        timeout_ms: Some(300),
        max_attempts,
        ..task("tmo", "render", json!(input))
    };
    let retried = insert(&store, timed(1, 2)).await.id;
    let last = insert(&store, timed(2, 1)).await.id;
    let silent = insert(&store, timed(3, 2)).await.id;
    let unlimited = insert(&store, task("tmo", "render", json!(4))).await.id;
    let local = NewTask {
        timeout_ms: Some(300),
        ..task("tmo-local", "echo", json!(5))
    };
    insert(&store, local).await;
    let until = far();

    let leased = store
        .claim_queue(queue("tmo"), None, 10, until)
        .await
        .unwrap();
    assert_eq!(leased.len(), 4);
    let by_id = |id: TaskId| leased.iter().find(|t| t.id == id).unwrap().clone();
    let deadline = |task: &Task| task.started_at.unwrap() + 300;
    let expiry = |task: &Task| task.lease.as_ref().unwrap().expires_at;
    for id in [retried, last, silent] {
        let task = by_id(id);
        assert_eq!(expiry(&task), deadline(&task), "cut at the deadline");
    }
    assert_eq!(expiry(&by_id(unlimited)), until);
    let local = only(store.claim(1, until).await.unwrap());
    assert_eq!(expiry(&local), until, "the pool enforces local timeouts");
    // A worker whose lease ran out before the deadline stopped: lost, not timed out.
    let silent = by_id(silent);
    let short = deadline(&silent) - 100;
    let renewed = store.renew(vec![(silent.id, lease(&silent))], short).await;
    assert_eq!(renewed.unwrap(), 1);

    let after = leased.iter().map(deadline).max().unwrap() + 1;
    let mut rescued = store.rescue_expired(after).await.unwrap();
    rescued.sort_by_key(|t| t.id);
    assert_eq!(rescued.len(), 3, "{rescued:?}");
    let now = |id: TaskId| rescued.iter().find(|t| t.id == id).unwrap().clone();

    let retried_now = now(retried);
    assert_eq!(retried_now, get(&store, &retried_now).await);
    assert_eq!(
        retried_now.state,
        TaskState::Scheduled,
        "retried after the backoff"
    );
    assert!(retried_now.run_at.is_some() && retried_now.error.is_none());
    let error = &retried_now.errors[0];
    assert_eq!((error.attempt, error.error_type.as_str()), (1, "timeout"));
    assert_eq!(error.message, "the attempt ran longer than 300 ms");
    let last_now = now(last);
    assert_eq!(last_now.state, TaskState::Failed);
    assert_eq!(last_now.error.unwrap().error_type, "timeout");
    let silent_now = now(silent.id);
    assert_eq!(silent_now.state, TaskState::Queued);
    assert_eq!(silent_now.errors[0].error_type, "lease_expired");

    let old = lease(&by_id(retried));
    let outcome = Outcome::Succeeded(json!("late"));
    assert!(
        store
            .finish(retried, &old, outcome)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.renew(vec![(retried, old)], until).await.unwrap(), 0);
    assert_eq!(
        get(&store, &by_id(unlimited)).await.state,
        TaskState::Running
    );
    assert_eq!(get(&store, &local).await.state, TaskState::Running);
}

/// A delayed task waits `scheduled` until its time; `next_due` names that time; promotion
/// queues what is due and nothing else. A time already past queues at once.
pub async fn due_tasks_are_promoted(store: Arc<dyn TaskStore>) {
    assert_eq!(store.next_due().await.unwrap(), None);
    let at = now_millis() + 60_000;
    let later = NewTask {
        run_at: Some(at),
        ..task("due", "echo", json!(1))
    };
    let scheduled = insert(&store, later).await;
    assert_eq!(
        (scheduled.state, scheduled.run_at),
        (TaskState::Scheduled, Some(at))
    );
    assert_eq!(store.next_due().await.unwrap(), Some(at));
    assert!(store.claim(10, far()).await.unwrap().is_empty());
    assert_eq!(store.promote_due(at - 1).await.unwrap(), 0);
    assert_eq!(store.promote_due(at).await.unwrap(), 1);
    let promoted = get(&store, &scheduled).await;
    assert_eq!((promoted.state, promoted.run_at), (TaskState::Queued, None));
    assert_eq!(store.next_due().await.unwrap(), None);

    let past = NewTask {
        run_at: Some(now_millis() - 1_000),
        ..task("due", "echo", json!(2))
    };
    assert_eq!(insert(&store, past).await.state, TaskState::Queued);
}

/// Only finished tasks can be deleted; purge deletes finished tasks older than a time, at
/// most so many at once.
pub async fn delete_and_purge_take_only_finished_tasks(store: Arc<dyn TaskStore>) {
    let done = succeeded(&store, "del-done").await;
    assert_eq!(store.delete(done.id).await.unwrap(), Changed::Done(None));
    assert!(store.get(done.id).await.unwrap().is_none());
    assert_eq!(store.delete(done.id).await.unwrap(), Changed::NotFound);

    for n in 0..3 {
        succeeded(&store, &format!("purge-{n}")).await;
    }
    let waiting = insert(&store, task("del", "echo", json!(0))).await;
    assert!(matches!(
        store.delete(waiting.id).await.unwrap(),
        Changed::WrongState(_)
    ));
    let cutoff = now_millis() + 1;
    assert_eq!(store.purge_finished(cutoff - 60_000, 10).await.unwrap(), 0);
    assert_eq!(store.purge_finished(cutoff, 2).await.unwrap(), 2);
    assert_eq!(store.purge_finished(cutoff, 10).await.unwrap(), 1);
    assert_eq!(store.purge_finished(cutoff, 10).await.unwrap(), 0);
    assert!(
        store.get(waiting.id).await.unwrap().is_some(),
        "waiting stays"
    );
}
