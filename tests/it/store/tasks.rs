//! Cases: insert, get, list; claims (order, limit, pause, concurrency, fairness); ending an
//! attempt (fencing, backoff, failure, retry); NUL characters; trace contexts.

use std::collections::BTreeMap;

use taskd::store::{CancelResult, Changed, EndedAttempt, TaskFilter};
use taskd::task::{Backoff, TaskError, TaskId, TaskState, TraceContext, TraceParent};

use super::*;

/// Inserted tasks read back as stored; listings filter by state, kind, queue and label,
/// newest first, and page with a cursor.
pub async fn insert_get_and_list_with_filters_and_cursor(store: Arc<dyn TaskStore>) {
    let mut inserted = Vec::new();
    for n in 0..5 {
        let mut new = task("a", "echo", json!({"n": n}));
        if n % 2 == 0 {
            new.labels.insert("parity".into(), "even".into());
        }
        inserted.push(insert(&store, new).await.id);
    }
    let other = insert(&store, task("b", "sleep", json!({"ms": 1}))).await;
    let first = store.get(inserted[0]).await.unwrap().unwrap();
    assert_eq!(first.state, TaskState::Queued);
    assert_eq!(*first.input, json!({"n": 0}));
    assert_eq!((first.attempt, first.max_attempts), (0, 3));
    assert_eq!(first.labels.get("parity").map(String::as_str), Some("even"));
    assert!(first.lease.is_none() && first.started_at.is_none());
    assert!(store.get(TaskId::new()).await.unwrap().is_none());

    let filter = |f: fn(&mut TaskFilter)| {
        let mut filter = TaskFilter {
            limit: 100,
            ..TaskFilter::default()
        };
        f(&mut filter);
        filter
    };
    let newest_first: Vec<TaskId> = std::iter::once(other.id)
        .chain(inserted.iter().rev().copied())
        .collect();
    assert_eq!(ids(list(&store, filter(|_| {})).await), newest_first);
    let in_a = ids(list(&store, filter(|f| f.queue = Some(queue("a")))).await);
    assert_eq!(in_a, newest_first[1..]);
    let sleeps = filter(|f| f.kind = Some(Kind::parse("sleep").unwrap()));
    assert_eq!(ids(list(&store, sleeps).await), [other.id]);
    let even = filter(|f| f.label = Some(("parity".into(), "even".into())));
    assert_eq!(
        ids(list(&store, even).await),
        [inserted[4], inserted[2], inserted[0]]
    );
    let odd = filter(|f| f.label = Some(("parity".into(), "odd".into())));
    assert!(list(&store, odd).await.is_empty());
    let queued = filter(|f| f.state = Some(TaskState::Queued));
    assert_eq!(list(&store, queued).await.len(), 6);
    let done = filter(|f| f.state = Some(TaskState::Succeeded));
    assert!(list(&store, done).await.is_empty());

    // Pages of two, each after the last id of the previous one.
    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let page = list(
            &store,
            TaskFilter {
                before,
                limit: 2,
                ..TaskFilter::default()
            },
        )
        .await;
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        pages.extend(ids(page));
    }
    assert_eq!(pages, newest_first);
}

/// Listings by state find every state's tasks newest first, running ones included (they are
/// not in the state index since migration 0011), by queue and page after page; a task that
/// moves on leaves its old state's listing.
pub async fn listings_by_state_follow_every_move(store: Arc<dyn TaskStore>) {
    let by_state = |state, queue: Option<&str>, before, limit| TaskFilter {
        state: Some(state),
        queue: queue.map(super::queue),
        before,
        limit,
        ..TaskFilter::default()
    };
    // Oldest first: a running task of "a", one of "b", another of "a", one that succeeded,
    // and one left queued.
    let a1 = running(&store, "list-a", 1).await;
    let b = running(&store, "list-b", 1).await;
    let a2 = running(&store, "list-a", 1).await;
    let done = succeeded(&store, "list-a").await;
    let queued = insert(&store, task("list-a", "echo", json!(null))).await;

    let running_now = ids(list(&store, by_state(TaskState::Running, None, None, 10)).await);
    assert_eq!(running_now, [a2.id, b.id, a1.id]);
    let in_a = by_state(TaskState::Running, Some("list-a"), None, 10);
    assert_eq!(ids(list(&store, in_a).await), [a2.id, a1.id]);
    let first = ids(list(&store, by_state(TaskState::Running, None, None, 2)).await);
    assert_eq!(first, [a2.id, b.id]);
    let rest = by_state(TaskState::Running, None, Some(b.id), 2);
    assert_eq!(ids(list(&store, rest).await), [a1.id]);
    let succeeded_now = by_state(TaskState::Succeeded, Some("list-a"), None, 10);
    assert_eq!(ids(list(&store, succeeded_now).await), [done.id]);
    let queued_now = by_state(TaskState::Queued, None, None, 10);
    assert_eq!(ids(list(&store, queued_now).await), [queued.id]);

    // b ends: it leaves the running listing for the succeeded one.
    let outcome = Outcome::Succeeded(json!("b"));
    store
        .finish(b.id, &lease(&b), outcome)
        .await
        .unwrap()
        .unwrap();
    let running_now = ids(list(&store, by_state(TaskState::Running, None, None, 10)).await);
    assert_eq!(running_now, [a2.id, a1.id]);
    let succeeded_now = ids(list(&store, by_state(TaskState::Succeeded, None, None, 10)).await);
    assert_eq!(succeeded_now, [done.id, b.id]);
}

/// A listing by queue that names no state holds every task of the queue, running ones
/// included, newest first and page after page, with the other filters applied to all of
/// them.
pub async fn a_queue_lists_every_task_whatever_its_state(store: Arc<dyn TaskStore>) {
    let in_queue = |queue: &str, before, limit| TaskFilter {
        queue: Some(super::queue(queue)),
        before,
        limit,
        ..TaskFilter::default()
    };
    // Oldest first: running, succeeded, running, one of another queue, and one left queued
    // (with a label; inserted last, so that the claims above cannot take it).
    let r1 = running(&store, "every-a", 1).await;
    let done = succeeded(&store, "every-a").await;
    let r2 = running(&store, "every-a", 1).await;
    running(&store, "every-b", 1).await;
    let mut labelled = task("every-a", "echo", json!(null));
    labelled.labels.insert("k".into(), "v".into());
    let queued = insert(&store, labelled).await;

    let all = ids(list(&store, in_queue("every-a", None, 10)).await);
    assert_eq!(all, [queued.id, r2.id, done.id, r1.id]);
    let first = ids(list(&store, in_queue("every-a", None, 2)).await);
    assert_eq!(first, [queued.id, r2.id]);
    let rest = ids(list(&store, in_queue("every-a", Some(r2.id), 2)).await);
    assert_eq!(rest, [done.id, r1.id]);
    let last = ids(list(&store, in_queue("every-a", Some(done.id), 1)).await);
    assert_eq!(last, [r1.id]);
    let with_label = TaskFilter {
        label: Some(("k".into(), "v".into())),
        ..in_queue("every-a", None, 10)
    };
    assert_eq!(ids(list(&store, with_label).await), [queued.id]);
    let of_kind = TaskFilter {
        kind: Some(taskd::task::Kind::parse("echo").unwrap()),
        ..in_queue("every-a", None, 10)
    };
    assert_eq!(
        ids(list(&store, of_kind).await),
        [queued.id, r2.id, done.id, r1.id]
    );

    // r2 ends: it stays in its queue's listing, in the same place.
    store
        .finish(r2.id, &lease(&r2), Outcome::Succeeded(json!("r2")))
        .await
        .unwrap()
        .unwrap();
    let all = ids(list(&store, in_queue("every-a", None, 10)).await);
    assert_eq!(all, [queued.id, r2.id, done.id, r1.id]);
}

/// One at a time, claims take the highest priority first, then the oldest; a claim never
/// takes more than its limit, and starts the attempt under a lease.
pub async fn claims_go_by_priority_then_age_within_the_limit(store: Arc<dyn TaskStore>) {
    let mut expected = BTreeMap::new();
    for (n, priority) in [0, 5, 1, 0, 5, 0].into_iter().enumerate() {
        let new = NewTask {
            priority,
            ..task("c", "echo", json!(n))
        };
        expected.insert((-priority, n), insert(&store, new).await.id);
    }
    assert!(store.claim(0, far()).await.unwrap().is_empty());
    let lease_expires_at = far();
    let mut order = Vec::new();
    for _ in 0..4 {
        let claimed = only(store.claim(1, lease_expires_at).await.unwrap());
        assert_eq!(claimed.state, TaskState::Running);
        assert_eq!(claimed.attempt, 1);
        assert_eq!(claimed.lease.as_ref().unwrap().expires_at, lease_expires_at);
        assert!(claimed.started_at.is_some());
        order.push(claimed.id);
    }
    let rest = store.claim(10, far()).await.unwrap();
    assert_eq!(rest.len(), 2, "only what is left");
    let mut rest = ids(rest);
    rest.sort();
    order.extend(rest);
    assert_eq!(order, expected.into_values().collect::<Vec<_>>());
    assert!(store.claim(10, far()).await.unwrap().is_empty());
    for id in order {
        let task = store.get(id).await.unwrap().unwrap();
        assert_eq!((task.state, task.attempt), (TaskState::Running, 1));
    }
}

/// A growing claim asks `more` at most once and takes at most its limit and what `more`
/// answered (a store may claim at once and never ask); it goes by the same order as a claim.
pub async fn a_growing_claim_takes_no_more_than_it_was_given(store: Arc<dyn TaskStore>) {
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(insert(&store, task("g", "echo", json!(n))).await.id);
    }
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // When `more` answered: the workers it gave came free then, so nothing it claimed may
    // seem to start before.
    let answered_at = Arc::new(std::sync::atomic::AtomicI64::new(i64::MIN));
    let growing = |answer: usize| -> taskd::store::ClaimMore {
        let asked = Arc::clone(&asked);
        let answered_at = Arc::clone(&answered_at);
        Box::new(move || {
            asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            answered_at.store(now_millis(), std::sync::atomic::Ordering::SeqCst);
            answer
        })
    };
    let claimed = store.claim_growing(1, growing(2), far()).await.unwrap();
    let asked_once = asked.load(std::sync::atomic::Ordering::SeqCst);
    assert!(asked_once <= 1, "more() asked {asked_once} times");
    let answered_at = answered_at.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        claimed.iter().all(|t| t.started_at >= Some(answered_at)),
        "started before more() answered"
    );
    let expected = 1 + 2 * asked_once;
    assert_eq!(
        claimed.len(),
        expected,
        "its limit, and what more() answered"
    );
    let taken: Vec<TaskId> = claimed.iter().map(|t| t.id).collect();
    assert_eq!(taken, ids[..expected], "oldest first");
    assert!(claimed.iter().all(|t| t.state == TaskState::Running));
    // Growth never goes past what is there.
    let rest = store.claim_growing(1, growing(100), far()).await.unwrap();
    assert!(rest.len() <= ids.len() - expected);
    let everything = store.claim(10, far()).await.unwrap();
    assert_eq!(expected + rest.len() + everything.len(), ids.len());
}

/// A paused queue's tasks wait; a queue's concurrency caps how many of its tasks run.
pub async fn paused_queues_wait_and_concurrency_caps_claims(store: Arc<dyn TaskStore>) {
    let paused = taskd::store::QueuePatch {
        paused: Some(true),
        ..Default::default()
    };
    store.update_queue(queue("p"), paused).await.unwrap();
    for n in 0..4 {
        insert(&store, task("p", "echo", json!(n))).await;
    }
    insert(&store, task("free", "echo", json!(0))).await;
    let claimed = only(store.claim(10, far()).await.unwrap());
    assert_eq!(claimed.queue.as_str(), "free");
    assert!(store.claim(10, far()).await.unwrap().is_empty());

    let resumed = taskd::store::QueuePatch {
        paused: Some(false),
        concurrency: Some(Some(2)),
        ..Default::default()
    };
    store.update_queue(queue("p"), resumed).await.unwrap();
    let claimed = store.claim(10, far()).await.unwrap();
    assert_eq!(claimed.len(), 2, "the concurrency");
    assert!(store.claim(10, far()).await.unwrap().is_empty());
    let done = &claimed[0];
    let outcome = Outcome::Succeeded(json!(1));
    store.finish(done.id, &lease(done), outcome).await.unwrap();
    assert_eq!(
        store.claim(10, far()).await.unwrap().len(),
        1,
        "a slot freed"
    );
}

/// With work in two queues, a claim shares its slots between them.
pub async fn claims_share_slots_between_queues(store: Arc<dyn TaskStore>) {
    for n in 0..20 {
        insert(&store, task("x", "echo", json!(n))).await;
        insert(&store, task("y", "echo", json!(n))).await;
    }
    let claimed = store.claim(10, far()).await.unwrap();
    let from_x = claimed.iter().filter(|t| t.queue.as_str() == "x").count();
    assert_eq!((claimed.len(), from_x), (10, 5));
}

/// An end reported under a lease that is not (or no longer) the current one changes nothing.
pub async fn a_stale_lease_changes_nothing(store: Arc<dyn TaskStore>) {
    let task = running(&store, "fence", 3).await;
    let stale = store
        .finish(task.id, "not-the-lease", Outcome::Succeeded(json!(1)))
        .await
        .unwrap();
    assert!(stale.is_none());
    assert_eq!(get(&store, &task).await, task, "unchanged");
    let ended = store
        .finish(
            task.id,
            &lease(&task),
            Outcome::Succeeded(json!({"ok": true})),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.state, TaskState::Succeeded);
    assert_eq!(ended.result, Some(json!({"ok": true})));
    assert!(ended.finished_at.is_some() && ended.lease.is_none());
    let again = store
        .finish(task.id, &lease(&task), Outcome::Succeeded(json!(2)))
        .await
        .unwrap();
    assert!(again.is_none(), "a second end under the same lease");
    assert_eq!(get(&store, &task).await, ended);
}

/// One batch of ends: answers come back in the order asked, each decided on its own (a
/// success, a retry, a cancel requested while running, a stale lease that changes nothing).
pub async fn a_batch_of_ends_is_decided_one_by_one(store: Arc<dyn TaskStore>) {
    let ok = running(&store, "batch-ok", 3).await;
    let retried = running(&store, "batch-retry", 3).await;
    let stale = running(&store, "batch-stale", 3).await;
    let cancelled = running(&store, "batch-cancel", 3).await;
    assert!(matches!(
        store.cancel(cancelled.id).await.unwrap(),
        CancelResult::Requested(_)
    ));
    let ended_at = taskd::task::now_millis();
    let end = |task: &Task, lease: String, outcome: Outcome| EndedAttempt {
        id: task.id,
        lease,
        outcome,
        ended_at,
    };
    let ended = store
        .finish_many(vec![
            end(&stale, "not-the-lease".into(), Outcome::Succeeded(json!(0))),
            end(&ok, lease(&ok), Outcome::Succeeded(json!({"n": 1}))),
            end(&retried, lease(&retried), failure("once")),
            end(&cancelled, lease(&cancelled), Outcome::Succeeded(json!(2))),
        ])
        .await
        .unwrap();
    let states: Vec<Option<TaskState>> =
        ended.iter().map(|t| t.as_ref().map(|t| t.state)).collect();
    assert_eq!(
        states,
        [
            None,
            Some(TaskState::Succeeded),
            Some(TaskState::Scheduled),
            Some(TaskState::Cancelled)
        ]
    );
    let ok_ended = ended[1].clone().unwrap();
    assert_eq!(ok_ended.result, Some(json!({"n": 1})));
    assert_eq!(ok_ended.finished_at, Some(ended_at));
    assert_eq!(get(&store, &ok).await, ok_ended);
    let retry = ended[2].clone().unwrap();
    assert_eq!(retry.errors.len(), 1);
    assert!(retry.run_at.is_some_and(|at| at > ended_at) && retry.finished_at.is_none());
    assert_eq!(
        get(&store, &stale).await,
        stale,
        "a stale lease changes nothing"
    );
    assert!(store.finish_many(Vec::new()).await.unwrap().is_empty());
}

/// A task listed twice in one batch of ends is ended once, by its first end (a success
/// here, so the quick path of a success meets the repeat); the repeat answers `None`.
pub async fn a_task_twice_in_a_batch_ends_once(store: Arc<dyn TaskStore>) {
    let task = running(&store, "batch-twice", 3).await;
    let ended_at = taskd::task::now_millis();
    let end = |outcome: Outcome| EndedAttempt {
        id: task.id,
        lease: lease(&task),
        outcome,
        ended_at,
    };
    let ended = store
        .finish_many(vec![
            end(Outcome::Succeeded(json!("first"))),
            end(failure("second")),
            end(Outcome::Succeeded(json!("third"))),
        ])
        .await
        .unwrap();
    assert_eq!(ended.len(), 3);
    let first = ended[0].clone().expect("the first end counts");
    assert_eq!(
        (first.state, first.result.clone()),
        (TaskState::Succeeded, Some(json!("first")))
    );
    assert!(
        ended[1].is_none() && ended[2].is_none(),
        "a repeat ends nothing"
    );
    assert_eq!(get(&store, &task).await, first);
}

/// A new attempt starts without the progress an earlier attempt reported.
pub async fn a_new_attempt_starts_without_progress(store: Arc<dyn TaskStore>) {
    let task = running(&store, "progress-reset", 2).await;
    let progress = taskd::task::Progress {
        percent: 50.0,
        message: Some("half".into()),
        at: taskd::task::now_millis(),
    };
    let recorded = store
        .record_progress(vec![(task.id, lease(&task), progress.clone())])
        .await
        .unwrap();
    assert_eq!(recorded, 1);
    assert_eq!(get(&store, &task).await.progress, Some(progress));
    let retry = store
        .finish(task.id, &lease(&task), failure("first"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(retry.state, TaskState::Scheduled);
    store.promote_due(far()).await.unwrap();
    let again = only(store.claim(1, far()).await.unwrap());
    assert_eq!((again.id, again.attempt), (task.id, 2));
    assert_eq!(again.progress, None);
    assert_eq!(get(&store, &task).await.progress, None);
}

/// A batch larger than one multi-row statement: forty successes, one of them stale and one
/// with a cancel requested, each answered in order and on its own; the rest succeed with
/// their own result and end time.
pub async fn a_large_batch_of_successes_is_decided_one_by_one(store: Arc<dyn TaskStore>) {
    let new = NewTask {
        max_attempts: 3,
        ..task("batch-large", "echo", json!(null))
    };
    for _ in 0..40 {
        insert(&store, new.clone()).await;
    }
    let claimed = store.claim(40, far()).await.unwrap();
    assert_eq!(claimed.len(), 40);
    let (stale, cancelled) = (&claimed[5], &claimed[20]);
    assert!(matches!(
        store.cancel(cancelled.id).await.unwrap(),
        CancelResult::Requested(_)
    ));
    let ends = claimed
        .iter()
        .enumerate()
        .map(|(i, task)| EndedAttempt {
            id: task.id,
            lease: if task.id == stale.id {
                "not-the-lease".into()
            } else {
                lease(task)
            },
            outcome: Outcome::Succeeded(json!({ "i": i })),
            ended_at: 1_000_000 + i as i64,
        })
        .collect();
    let ended = store.finish_many(ends).await.unwrap();
    assert_eq!(ended.len(), 40);
    for (i, (task, answer)) in claimed.iter().zip(&ended).enumerate() {
        if task.id == stale.id {
            assert!(answer.is_none(), "a stale lease ends nothing");
            assert_eq!(get(&store, task).await.state, TaskState::Running);
            continue;
        }
        let answer = answer.as_ref().expect("an attempt with its lease ends");
        assert_eq!(answer.id, task.id, "answers come in the order asked");
        if task.id == cancelled.id {
            assert_eq!(answer.state, TaskState::Cancelled);
            assert_eq!(answer.result, None);
        } else {
            assert_eq!(answer.state, TaskState::Succeeded);
            assert_eq!(answer.result, Some(json!({ "i": i })));
            assert_eq!(answer.finished_at, Some(1_000_000 + i as i64));
            assert!(answer.lease.is_none());
        }
        assert_eq!(&get(&store, task).await, answer);
    }
}

fn failure(message: &str) -> Outcome {
    Outcome::Failed {
        error: TaskError {
            error_type: "boom".into(),
            message: message.into(),
        },
        retryable: true,
    }
}

/// A failure with attempts left schedules a retry after the backoff; the last one fails the
/// task; a retry queues it again with the history kept.
pub async fn a_failed_attempt_backs_off_then_fails_then_retries(store: Arc<dyn TaskStore>) {
    let new = NewTask {
        max_attempts: 2,
        backoff: Backoff {
            base_ms: 60_000,
            cap_ms: 60_000,
        },
        ..task("retry", "echo", json!(null))
    };
    let inserted = insert(&store, new).await;
    let first = only(store.claim(1, far()).await.unwrap());
    let before = now_millis();
    let scheduled = store
        .finish(first.id, &lease(&first), failure("once"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(scheduled.state, TaskState::Scheduled);
    let run_at = scheduled.run_at.unwrap();
    assert!(run_at >= before + 30_000, "the backoff");
    assert_eq!(scheduled.errors.len(), 1);
    assert_eq!(scheduled.errors[0].attempt, 1);
    assert!(scheduled.error.is_none() && scheduled.finished_at.is_none());
    assert_eq!(store.promote_due(now_millis()).await.unwrap(), 0);
    assert_eq!(store.promote_due(run_at).await.unwrap(), 1);
    let second = only(store.claim(1, far()).await.unwrap());
    assert_eq!(second.attempt, 2);
    let failed = store
        .finish(second.id, &lease(&second), failure("twice"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.state, TaskState::Failed);
    assert_eq!(failed.error.as_ref().unwrap().message, "twice");
    assert_eq!(failed.errors.len(), 2);
    let Changed::Done(Some(retried)) = store.retry(inserted.id).await.unwrap() else {
        panic!("a failed task can be retried")
    };
    assert_eq!((retried.state, retried.attempt), (TaskState::Queued, 0));
    assert!(retried.error.is_none() && retried.finished_at.is_none());
    assert_eq!(retried.errors.len(), 2, "the history stays");
    assert!(matches!(
        store.retry(inserted.id).await.unwrap(),
        Changed::WrongState(_)
    ));
    assert!(matches!(
        store.retry(TaskId::new()).await.unwrap(),
        Changed::NotFound
    ));
}

/// "\u0000" inside JSON strings (input, labels, result, error) is kept as is, and a label
/// filter still finds the task (PostgreSQL's jsonb would refuse it: the store keeps text).
pub async fn nul_characters_round_trip(store: Arc<dyn TaskStore>) {
    let input = json!({"s": "a\u{0}b", "list": ["\u{0}"], "\u{0}key": 1});
    let mut new = task("nul", "echo", input.clone());
    new.labels.insert("nul".into(), "v\u{0}w".into());
    new.labels.insert("plain".into(), "x".into());
    let inserted = insert(&store, new).await;
    let stored = get(&store, &inserted).await;
    assert_eq!(*stored.input, input);
    assert_eq!(stored.labels, inserted.labels);
    for label in [("plain", "x"), ("nul", "v\u{0}w")] {
        let filter = TaskFilter {
            label: Some((label.0.into(), label.1.into())),
            limit: 10,
            ..TaskFilter::default()
        };
        let found = list(&store, filter).await;
        assert_eq!(found.len(), 1, "label {label:?}");
    }
    let claimed = only(store.claim(1, far()).await.unwrap());
    let result = json!({"echo": "\u{0}"});
    let ended = store
        .finish(
            claimed.id,
            &lease(&claimed),
            Outcome::Succeeded(result.clone()),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(get(&store, &ended).await.result, Some(result));

    let failing = running(&store, "nul-error", 1).await;
    let ended = store
        .finish(failing.id, &lease(&failing), failure("bad \u{0} byte"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.error.unwrap().message, "bad \u{0} byte");
}

/// A task's W3C trace context (`traceparent`, `tracestate`) is stored with it and read back
/// by every read, a claim and an end included; a task without one reads back without.
pub async fn trace_context_round_trips(store: Arc<dyn TaskStore>) {
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let context = TraceContext {
        parent: TraceParent::parse(parent).unwrap(),
        state: Some("vendor=opaque,other=1".into()),
    };
    let traced = insert(
        &store,
        NewTask {
            trace: Some(context.clone()),
            ..task("traced", "echo", json!(1))
        },
    )
    .await;
    let plain = insert(&store, task("plain", "echo", json!(2))).await;
    assert_eq!(get(&store, &traced).await.trace, Some(context.clone()));
    assert_eq!(get(&store, &plain).await.trace, None);
    let claimed = store.claim(2, far()).await.unwrap();
    let claimed_traced = claimed.iter().find(|t| t.id == traced.id).unwrap();
    assert_eq!(claimed_traced.trace, Some(context.clone()));
    let ended = store
        .finish(
            traced.id,
            &lease(claimed_traced),
            Outcome::Succeeded(json!("done")),
        )
        .await
        .unwrap()
        .expect("finished under its lease");
    assert_eq!(ended.trace.as_ref(), Some(&context));
    assert_eq!(ended.trace.unwrap().parent.to_string(), parent);
}
