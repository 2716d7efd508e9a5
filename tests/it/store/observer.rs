//! Cases: the event log, progress reports, completion webhook deliveries.

use taskd::store::{CancelResult, Changed, DeliveryOutcome, EventFilter};
use taskd::task::{Callback, Progress, TaskError, TaskState};

use super::*;

/// Every state change and progress report of a task is in the log, in order, once; a stale
/// lease reports nothing; a deleted task's events go with it.
pub async fn the_event_log_follows_every_change(store: Arc<dyn TaskStore>) {
    assert_eq!(store.event_bounds().await.unwrap(), None);
    let task = running(&store, "ev", 3).await;
    let report = Progress {
        percent: 50.0,
        message: Some("half".into()),
        at: now_millis(),
    };
    let stale = vec![(task.id, "stale".to_owned(), report.clone())];
    assert_eq!(store.record_progress(stale).await.unwrap(), 0);
    let current = vec![(task.id, lease(&task), report.clone())];
    assert_eq!(store.record_progress(current).await.unwrap(), 1);
    assert_eq!(get(&store, &task).await.progress, Some(report.clone()));
    store
        .finish(task.id, &lease(&task), Outcome::Succeeded(json!(1)))
        .await
        .unwrap();
    let other = insert(&store, super::task("ev", "echo", json!(2))).await;

    let only_task = EventFilter {
        task: Some(task.id),
    };
    let events = store.events_after(0, only_task.clone(), 100).await.unwrap();
    let seen: Vec<(TaskState, u32, bool)> = events
        .iter()
        .map(|e| (e.state, e.attempt, e.progress.is_some()))
        .collect();
    assert_eq!(
        seen,
        [
            (TaskState::Queued, 0, false),
            (TaskState::Running, 1, false),
            (TaskState::Running, 1, true),
            (TaskState::Succeeded, 1, false),
        ]
    );
    assert_eq!(events[2].progress, Some(report));
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(
        events
            .iter()
            .all(|e| e.task_id == task.id && e.queue.as_str() == "ev")
    );

    let all = store
        .events_after(0, EventFilter::default(), 100)
        .await
        .unwrap();
    assert_eq!(all.len(), 5);
    assert_eq!(all.last().unwrap().task_id, other.id);
    let (oldest, newest) = store.event_bounds().await.unwrap().unwrap();
    assert_eq!((oldest, newest), (all[0].seq, all[4].seq));
    let after = store
        .events_after(all[1].seq, EventFilter::default(), 2)
        .await
        .unwrap();
    assert_eq!(after, all[2..4]);
    assert!(
        store
            .events_after(newest, EventFilter::default(), 10)
            .await
            .unwrap()
            .is_empty()
    );

    store.delete(task.id).await.unwrap();
    assert!(
        store
            .events_after(0, only_task, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A task with a callback that ends gets exactly one delivery, pending until a try succeeds;
/// a retry waits for its time; the task's `callback_status` follows the delivery.
pub async fn a_finished_callback_gets_one_delivery(store: Arc<dyn TaskStore>) {
    let callback = Callback {
        url: "http://127.0.0.1:9/hook".into(),
        secret: Some("s3cret".into()),
    };
    let new = NewTask {
        callback: Some(callback.clone()),
        ..task("hooks", "echo", json!(1))
    };
    insert(&store, new).await;
    let claimed = only(store.claim(1, far()).await.unwrap());
    assert!(
        store.deliveries_due(far(), 10).await.unwrap().is_empty(),
        "not yet"
    );
    store
        .finish(claimed.id, &lease(&claimed), Outcome::Succeeded(json!(1)))
        .await
        .unwrap();
    let ended = get(&store, &claimed).await;
    assert_eq!(ended.callback_status.as_deref(), Some("pending"));
    assert_eq!(ended.callback, Some(callback.clone()));

    let delivery = only(store.deliveries_due(now_millis() + 1, 10).await.unwrap());
    assert_eq!(
        (delivery.url.as_str(), delivery.secret.as_deref()),
        (callback.url.as_str(), Some("s3cret"))
    );
    assert_eq!((delivery.task.id, delivery.attempts), (claimed.id, 0));
    assert_eq!(delivery.task.state, TaskState::Succeeded);
    let next_at = now_millis() + 60_000;
    let retry = DeliveryOutcome::Retry {
        status: Some(500),
        error: "server error".into(),
        next_at,
    };
    store
        .delivery_tried(delivery.id.clone(), retry)
        .await
        .unwrap();
    assert!(
        store
            .deliveries_due(next_at - 1, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        get(&store, &claimed).await.callback_status.as_deref(),
        Some("pending")
    );
    let again = only(store.deliveries_due(next_at, 10).await.unwrap());
    assert_eq!(
        (again.id.as_str(), again.attempts),
        (delivery.id.as_str(), 1)
    );
    let delivered = DeliveryOutcome::Delivered { status: 204 };
    store.delivery_tried(again.id, delivered).await.unwrap();
    assert_eq!(
        get(&store, &claimed).await.callback_status.as_deref(),
        Some("delivered")
    );
    assert!(store.deliveries_due(far(), 10).await.unwrap().is_empty());
    let counts = store.queue(queue("hooks")).await.unwrap().callbacks;
    assert_eq!((counts.pending, counts.delivered, counts.failed), (0, 1, 0));
}

/// Deliveries follow the moves into a terminal state and nothing else: a cancel while queued,
/// a last failure and the end of a task retried by hand add one each; a claim, a retry
/// scheduled after a failure and a promotion add none.
pub async fn a_delivery_is_due_on_each_end_and_only_then(store: Arc<dyn TaskStore>) {
    let new = |queue: &str| NewTask {
        callback: Some(Callback {
            url: "http://127.0.0.1:9/hook".into(),
            secret: None,
        }),
        max_attempts: 2,
        ..task(queue, "echo", json!(1))
    };
    // The tasks of the deliveries that appeared since the last look. (PostgreSQL hides a
    // delivery it handed out for a while; SQLite hands it out again: count each id once.)
    let mut seen = std::collections::HashSet::new();
    let mut new_deliveries = async || {
        let due = store.deliveries_due(far(), 100).await.unwrap();
        due.into_iter()
            .filter(|d| seen.insert(d.id.clone()))
            .map(|d| d.task.id)
            .collect::<Vec<_>>()
    };
    let failure = || Outcome::Failed {
        error: TaskError {
            error_type: "boom".into(),
            message: "boom".into(),
        },
        retryable: true,
    };

    let cancelled = insert(&store, new("hooks-cancel")).await;
    assert!(matches!(
        store.cancel(cancelled.id).await.unwrap(),
        CancelResult::Cancelled(_)
    ));
    assert_eq!(
        new_deliveries().await,
        [cancelled.id],
        "a cancel while queued"
    );

    insert(&store, new("hooks-fail")).await;
    let first = only(store.claim(1, far()).await.unwrap());
    assert_eq!(new_deliveries().await, [], "a claim adds none");
    store
        .finish(first.id, &lease(&first), failure())
        .await
        .unwrap();
    assert_eq!(get(&store, &first).await.state, TaskState::Scheduled);
    assert_eq!(store.promote_due(far()).await.unwrap(), 1);
    assert_eq!(
        new_deliveries().await,
        [],
        "a retry after backoff adds none"
    );
    let second = only(store.claim(1, far()).await.unwrap());
    store
        .finish(second.id, &lease(&second), failure())
        .await
        .unwrap();
    assert_eq!(get(&store, &second).await.state, TaskState::Failed);
    assert_eq!(
        new_deliveries().await,
        [second.id],
        "the last failure adds one"
    );

    assert!(matches!(
        store.retry(second.id).await.unwrap(),
        Changed::Done(_)
    ));
    assert_eq!(new_deliveries().await, [], "a retry by hand adds none");
    let third = only(store.claim(1, far()).await.unwrap());
    store
        .finish(third.id, &lease(&third), Outcome::Succeeded(json!(3)))
        .await
        .unwrap();
    assert_eq!(
        new_deliveries().await,
        [third.id],
        "the retried task's end adds one"
    );
}
