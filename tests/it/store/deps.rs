//! Cases: dependencies. A child waits for its parents and is released (its input taken
//! from `input_from`) or cancelled as `dependency_failed` inside the write that ends a
//! parent, down the graph; parents already settled decide at insert; an unknown parent
//! refuses the call; a parent that waiting children need is not deleted or purged. The last
//! case ends two parents of one child on two stores at once, as two nodes would.

use taskd::store::{CancelResult, Changed, StoreError};
use taskd::task::{AfterPolicy, ParentRef, TaskId, TaskState};

use super::*;

fn child(queue: &str, parents: &[ParentRef], policy: AfterPolicy) -> NewTask {
    NewTask {
        after: parents.to_vec(),
        after_policy: policy,
        ..task(queue, "echo", json!({"child": true}))
    }
}

fn of(task: &Task) -> ParentRef {
    ParentRef::Task(task.id)
}

/// Claims the one queued task of `queue` and ends it with `outcome`.
async fn end(store: &Arc<dyn TaskStore>, queue_name: &str, outcome: Outcome) -> Task {
    let claimed = only(
        store
            .claim_queue(queue(queue_name), None, 1, far())
            .await
            .unwrap(),
    );
    store
        .finish(claimed.id, &lease(&claimed), outcome)
        .await
        .unwrap()
        .expect("ended under its lease")
}

fn failure() -> Outcome {
    Outcome::Failed {
        error: taskd::task::TaskError {
            error_type: "boom".into(),
            message: "it broke".into(),
        },
        retryable: false,
    }
}

/// A child waits (not claimable) until its parent succeeds, then is queued with the
/// parent's result as its input; once released it waits for nobody, so the parent may go.
pub async fn a_child_is_released_with_its_parents_result(store: Arc<dyn TaskStore>) {
    let parent = insert(&store, task("p1", "echo", json!(1))).await;
    let new = NewTask {
        input_from: Some(of(&parent)),
        ..child("c1", &[of(&parent)], AfterPolicy::AllSucceeded)
    };
    let waiting = insert(&store, new).await;
    assert_eq!(waiting.state, TaskState::Waiting);
    assert_eq!(waiting.after, vec![parent.id]);
    assert_eq!(waiting.after_policy, Some(AfterPolicy::AllSucceeded));
    assert_eq!(waiting.input_from, Some(parent.id));
    assert!(
        store
            .claim_queue(queue("c1"), None, 1, far())
            .await
            .unwrap()
            .is_empty(),
        "a waiting task is not claimable"
    );
    assert!(matches!(
        store.delete(parent.id).await.unwrap(),
        Changed::WrongState(_)
    ));
    end(&store, "p1", Outcome::Succeeded(json!({"data": "x"}))).await;
    let released = get(&store, &waiting).await;
    assert_eq!(released.state, TaskState::Queued);
    assert_eq!(*released.input, json!({"data": "x"}));
    assert_eq!(store.delete(parent.id).await.unwrap(), Changed::Done(None));
}

/// A failed parent cancels its child as `dependency_failed`, and that child's own child in
/// turn, in the write that ended the parent.
pub async fn a_failure_cascades_down_the_graph(store: Arc<dyn TaskStore>) {
    let parent = insert(&store, task("f1", "fail", json!({}))).await;
    let child_task = insert(
        &store,
        child("f2", &[of(&parent)], AfterPolicy::AllSucceeded),
    )
    .await;
    let grandchild = insert(
        &store,
        child("f3", &[of(&child_task)], AfterPolicy::AllSucceeded),
    )
    .await;
    assert_eq!(grandchild.state, TaskState::Waiting);
    let failed = end(&store, "f1", failure()).await;
    assert_eq!(failed.state, TaskState::Failed);
    for task in [&child_task, &grandchild] {
        let now = get(&store, task).await;
        assert_eq!(now.state, TaskState::Cancelled, "{}", task.queue);
        assert!(now.finished_at.is_some());
        let error = now.error.expect("why it was cancelled");
        assert_eq!(error.error_type, "dependency_failed");
    }
}

/// A batch item names an earlier one as its parent; parents that already settled decide at
/// insert (queued, or cancelled at once); an unknown parent refuses the whole call.
pub async fn parents_in_a_batch_and_parents_already_settled(store: Arc<dyn TaskStore>) {
    let inserted = store
        .insert(
            vec![
                task("b1", "echo", json!(1)),
                child("b2", &[ParentRef::Item(0)], AfterPolicy::AllSucceeded),
            ],
            ROOMY,
        )
        .await
        .unwrap();
    assert_eq!(inserted[1].task.state, TaskState::Waiting);
    assert_eq!(inserted[1].task.after, vec![inserted[0].task.id]);
    end(&store, "b1", Outcome::Succeeded(json!(1))).await;
    // Released, then run: nothing of this case stays queued for the claims below.
    end(&store, "b2", Outcome::Succeeded(json!(2))).await;

    let done = succeeded(&store, "s1").await;
    let new = NewTask {
        input_from: Some(of(&done)),
        ..child("s2", &[of(&done)], AfterPolicy::AllSucceeded)
    };
    let queued = insert(&store, new).await;
    assert_eq!(queued.state, TaskState::Queued);
    assert_eq!(*queued.input, json!("done"));
    let failed = insert(&store, task("s3", "fail", json!({}))).await;
    end(&store, "s3", failure()).await;
    let cancelled = insert(
        &store,
        child("s4", &[of(&failed)], AfterPolicy::AllSucceeded),
    )
    .await;
    assert_eq!(cancelled.state, TaskState::Cancelled);
    assert_eq!(cancelled.error.unwrap().error_type, "dependency_failed");
    let runs = insert(
        &store,
        child("s5", &[of(&failed)], AfterPolicy::AllFinished),
    )
    .await;
    assert_eq!(runs.state, TaskState::Queued);

    let unknown = TaskId::new();
    let refused = store
        .insert(
            vec![
                task("u1", "echo", json!(1)),
                child("u1", &[ParentRef::Task(unknown)], AfterPolicy::AllSucceeded),
            ],
            ROOMY,
        )
        .await
        .unwrap_err();
    assert!(matches!(refused, StoreError::UnknownParent(id) if id == unknown));
    let filter = TaskFilter {
        queue: Some(queue("u1")),
        limit: 10,
        ..TaskFilter::default()
    };
    assert!(list(&store, filter).await.is_empty(), "all or nothing");
}

/// `any_succeeded` runs on the first success; `all_finished` once all ended, whatever the
/// outcomes; `any_succeeded` over parents that all failed is cancelled.
pub async fn any_succeeded_and_all_finished(store: Arc<dyn TaskStore>) {
    let a = insert(&store, task("a1", "fail", json!({}))).await;
    let b = insert(&store, task("a2", "echo", json!(2))).await;
    let any = insert(
        &store,
        child("any", &[of(&a), of(&b)], AfterPolicy::AnySucceeded),
    )
    .await;
    let all = insert(
        &store,
        child("all", &[of(&a), of(&b)], AfterPolicy::AllFinished),
    )
    .await;
    end(&store, "a2", Outcome::Succeeded(json!(2))).await;
    assert_eq!(get(&store, &any).await.state, TaskState::Queued);
    assert_eq!(get(&store, &all).await.state, TaskState::Waiting);
    end(&store, "a1", failure()).await;
    assert_eq!(get(&store, &all).await.state, TaskState::Queued);

    let c = insert(&store, task("n1", "fail", json!({}))).await;
    let none = insert(&store, child("none", &[of(&c)], AfterPolicy::AnySucceeded)).await;
    end(&store, "n1", failure()).await;
    let none = get(&store, &none).await;
    assert_eq!(none.state, TaskState::Cancelled);
    assert_eq!(none.error.unwrap().error_type, "dependency_failed");
}

/// Cancelling a parent cancels its waiting children under `all_succeeded`; a finished parent
/// that a waiting child still needs is neither deleted nor purged until the child settles.
pub async fn cancel_cascades_and_needed_parents_stay(store: Arc<dyn TaskStore>) {
    let parent = insert(&store, task("x1", "echo", json!(1))).await;
    let child_task = insert(
        &store,
        child("x2", &[of(&parent)], AfterPolicy::AllSucceeded),
    )
    .await;
    let CancelResult::Cancelled(_) = store.cancel(parent.id).await.unwrap() else {
        panic!("a queued parent is cancelled at once")
    };
    let now = get(&store, &child_task).await;
    assert_eq!(now.state, TaskState::Cancelled);
    assert_eq!(now.error.unwrap().error_type, "dependency_failed");

    let done = succeeded(&store, "d1").await;
    let other = insert(&store, task("d2", "echo", json!(2))).await;
    let needs = insert(
        &store,
        child("d3", &[of(&done), of(&other)], AfterPolicy::AllSucceeded),
    )
    .await;
    assert!(matches!(
        store.delete(done.id).await.unwrap(),
        Changed::HasDependents(task) if task.id == done.id
    ));
    // The purge takes the cancelled pair above, never the parent still needed.
    assert_eq!(store.purge_finished(far(), 100).await.unwrap(), 2);
    assert_eq!(get(&store, &done).await.state, TaskState::Succeeded);
    let CancelResult::Cancelled(_) = store.cancel(needs.id).await.unwrap() else {
        panic!("a waiting task is cancelled at once")
    };
    assert_eq!(store.delete(done.id).await.unwrap(), Changed::Done(None));
}

/// Two parents of one child end at once on two stores (two nodes): the child is released
/// exactly once, never left waiting for parents that all ended.
pub async fn parents_ending_on_two_stores_release_their_child(url: String) {
    let (one, two) = (open(&url).await, open(&url).await);
    for round in 0..10 {
        let (qa, qb) = (format!("r{round}a"), format!("r{round}b"));
        let a = insert(&one, task(&qa, "echo", json!(1))).await;
        let b = insert(&one, task(&qb, "echo", json!(2))).await;
        let waiting = insert(
            &one,
            child(
                &format!("r{round}c"),
                &[of(&a), of(&b)],
                AfterPolicy::AllSucceeded,
            ),
        )
        .await;
        let (one_ends, two_ends) = tokio::join!(
            end(&one, &qa, Outcome::Succeeded(json!(1))),
            end(&two, &qb, Outcome::Succeeded(json!(2))),
        );
        assert_eq!(
            (one_ends.state, two_ends.state),
            (TaskState::Succeeded, TaskState::Succeeded)
        );
        assert_eq!(
            get(&one, &waiting).await.state,
            TaskState::Queued,
            "round {round}"
        );
    }
}

/// A listing by `parent` holds the tasks naming it in `after`, waiting or released, newest
/// first, and no task naming only another parent; the page size and the cursor apply.
pub async fn children_are_listed_by_parent(store: Arc<dyn TaskStore>) {
    let parent = insert(&store, task("lp", "echo", json!(1))).await;
    let other = insert(&store, task("lp", "echo", json!(2))).await;
    let first = insert(
        &store,
        child("lc", &[of(&parent)], AfterPolicy::AllSucceeded),
    )
    .await;
    let both = insert(
        &store,
        child("lc", &[of(&other), of(&parent)], AfterPolicy::AllFinished),
    )
    .await;
    insert(
        &store,
        child("lc", &[of(&other)], AfterPolicy::AllSucceeded),
    )
    .await;
    let released = end(&store, "lp", Outcome::Succeeded(json!(1))).await;
    assert_eq!(released.id, parent.id);
    let children = |limit: usize, before: Option<TaskId>| TaskFilter {
        parent: Some(parent.id),
        before,
        limit,
        ..TaskFilter::default()
    };
    assert_eq!(
        ids(list(&store, children(10, None)).await),
        [both.id, first.id]
    );
    assert_eq!(ids(list(&store, children(1, None)).await), [both.id]);
    assert_eq!(
        ids(list(&store, children(10, Some(both.id))).await),
        [first.id]
    );
    let none = TaskFilter {
        parent: Some(first.id),
        limit: 10,
        ..TaskFilter::default()
    };
    assert!(list(&store, none).await.is_empty());
}
