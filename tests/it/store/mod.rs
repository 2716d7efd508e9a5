//! The store conformance suite: the same cases against every backend, through the
//! `TaskStore` trait only. A case is an `async fn(Arc<dyn TaskStore>)` on a fresh, migrated
//! database; the cases in `shared` take the database URL instead and open several stores on
//! it, as several nodes would. `conformance!` runs each case on SQLite and on PostgreSQL (a
//! PostgreSQL case fails when the server cannot be reached; it is never skipped).

mod deps;
mod isolation;
mod keys;
mod migrations;
mod moves;
mod observer;
mod queues;
mod rates;
mod schedules;
mod shared;
mod starts;
mod tasks;

use std::future::Future;
use std::sync::Arc;

use serde_json::{Value, json};
use taskd::store::{TaskFilter, TaskStore};
use taskd::task::{Kind, Millis, NewTask, Outcome, QueueName, Task, TaskId, now_millis};

use crate::backend::{Backend, TestDatabase};

/// Plenty: no case but the admission ones comes near it.
pub const ROOMY: u64 = 10_000;
/// A lease that does not expire during a case.
pub fn far() -> Millis {
    now_millis() + 3_600_000
}

pub async fn open(url: &str) -> Arc<dyn TaskStore> {
    let store = taskd::store::open(url).await.expect("the store opens");
    store.migrate().await.expect("the store migrates");
    store
}

/// Runs `case` on a fresh database of `backend`; the database goes when it returns.
pub async fn run<F, Fut>(backend: Backend, case: F)
where
    F: FnOnce(Arc<dyn TaskStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    let database = TestDatabase::fresh(backend).await;
    case(open(&database.url).await).await;
}

/// Runs `case` with the URL of a fresh, migrated database of `backend`.
pub async fn run_shared<F, Fut>(backend: Backend, case: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let database = TestDatabase::fresh(backend).await;
    drop(open(&database.url).await);
    case(database.url.clone()).await;
}

/// Runs `case` with the URL of a fresh database of `backend` that nothing migrated yet.
pub async fn run_fresh<F, Fut>(backend: Backend, case: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let database = TestDatabase::fresh(backend).await;
    case(database.url.clone()).await;
}

pub fn task(queue: &str, kind: &str, input: Value) -> NewTask {
    NewTask::new(
        QueueName::parse(queue).unwrap(),
        Kind::parse(kind).unwrap(),
        input,
    )
}

pub fn queue(name: &str) -> QueueName {
    QueueName::parse(name).unwrap()
}

#[track_caller]
pub fn only<T>(mut items: Vec<T>) -> T {
    assert_eq!(items.len(), 1, "exactly one");
    items.pop().unwrap()
}

/// Inserts one task and returns it as stored.
pub async fn insert(store: &Arc<dyn TaskStore>, new: NewTask) -> Task {
    only(store.insert(vec![new], ROOMY).await.unwrap()).task
}

pub async fn get(store: &Arc<dyn TaskStore>, task: &Task) -> Task {
    store.get(task.id).await.unwrap().expect("the task exists")
}

/// The ids of `tasks`, in their order.
pub fn ids(tasks: Vec<Task>) -> Vec<TaskId> {
    tasks.into_iter().map(|t| t.id).collect()
}

pub async fn list(store: &Arc<dyn TaskStore>, filter: TaskFilter) -> Vec<Task> {
    store.list(filter).await.unwrap()
}

pub fn lease(task: &Task) -> String {
    task.lease
        .as_ref()
        .expect("a running task has a lease")
        .token
        .clone()
}

/// A task of its own queue, claimed.
pub async fn running(store: &Arc<dyn TaskStore>, queue: &str, max_attempts: u32) -> Task {
    let new = NewTask {
        max_attempts,
        ..task(queue, "echo", json!(queue))
    };
    insert(store, new).await;
    let claimed = only(store.claim(1, far()).await.unwrap());
    assert_eq!(claimed.queue.as_str(), queue);
    claimed
}

/// A task of its own queue that ran and succeeded.
pub async fn succeeded(store: &Arc<dyn TaskStore>, queue: &str) -> Task {
    let task = running(store, queue, 1).await;
    let outcome = Outcome::Succeeded(json!("done"));
    store
        .finish(task.id, &lease(&task), outcome)
        .await
        .unwrap()
        .expect("finished under its lease")
}

/// `#[tokio::test]`s running each named case on SQLite and on PostgreSQL.
macro_rules! conformance {
    ($runner:ident: $($module:ident::$case:ident),* $(,)?) => {
        mod sqlite {
            use crate::backend::Backend;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$runner(Backend::Sqlite, super::$module::$case).await
                }
            )*
        }
        mod postgres {
            use crate::backend::Backend;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$runner(Backend::Postgres, super::$module::$case).await
                }
            )*
        }
    };
}

mod cases {
    use super::*;

    conformance!(run:
        tasks::insert_get_and_list_with_filters_and_cursor,
        tasks::listings_by_state_follow_every_move,
        tasks::a_queue_lists_every_task_whatever_its_state,
        tasks::claims_go_by_priority_then_age_within_the_limit,
        tasks::a_growing_claim_takes_no_more_than_it_was_given,
        tasks::paused_queues_wait_and_concurrency_caps_claims,
        tasks::claims_share_slots_between_queues,
        tasks::a_stale_lease_changes_nothing,
        tasks::a_batch_of_ends_is_decided_one_by_one,
        tasks::a_large_batch_of_successes_is_decided_one_by_one,
        tasks::a_task_twice_in_a_batch_ends_once,
        tasks::a_new_attempt_starts_without_progress,
        tasks::a_failed_attempt_backs_off_then_fails_then_retries,
        tasks::nul_characters_round_trip,
        tasks::trace_context_round_trips,
        isolation::a_refused_row_fails_only_its_own_call,
        deps::a_child_is_released_with_its_parents_result,
        deps::a_failure_cascades_down_the_graph,
        deps::parents_in_a_batch_and_parents_already_settled,
        deps::any_succeeded_and_all_finished,
        deps::cancel_cascades_and_needed_parents_stay,
        deps::children_are_listed_by_parent,
        moves::cancel_in_every_state,
        moves::release_gives_the_attempt_back,
        moves::expired_leases_are_rescued_and_renewed_ones_are_not,
        moves::a_remote_lease_expiring_at_the_deadline_is_a_timeout,
        moves::due_tasks_are_promoted,
        moves::delete_and_purge_take_only_finished_tasks,
        queues::idempotency_replays_and_refuses,
        queues::admission_refuses_beyond_the_limit_all_or_nothing,
        queues::queue_settings_and_counts,
        queues::queue_counts_follow_claims_and_ends,
        queues::remote_queues_lease_only_through_claim_queue,
        observer::the_event_log_follows_every_change,
        observer::a_finished_callback_gets_one_delivery,
        observer::a_delivery_is_due_on_each_end_and_only_then,
        keys::keys_are_named_once_revoked_and_kept,
        keys::listings_keep_to_a_scope,
        schedules::schedules_round_trip_and_replace,
        schedules::due_schedules_move_on_once,
        schedules::schedule_listings_page_and_keep_to_a_scope,
        rates::a_rate_limit_caps_starts_in_a_window,
        rates::a_rate_window_slides,
        starts::a_submit_starts_its_task_in_its_own_transaction,
        starts::a_submit_starts_only_what_a_claim_would,
        starts::a_started_task_whose_lease_expires_runs_again,
    );
}

mod starting_together {
    use super::*;

    conformance!(run_fresh: shared::migrations_run_once_when_nodes_start_together);
}

mod migrating {
    use super::*;

    conformance!(run_shared:
        migrations::an_edited_migration_is_refused,
        migrations::a_database_without_checksums_gets_them,
        migrations::the_schema_refuses_the_rows_its_checks_forbid,
    );
}

mod several_nodes {
    use super::*;

    conformance!(run_shared:
        shared::claims_from_several_stores_never_overlap,
        shared::admission_holds_across_stores,
        shared::one_idempotency_key_makes_one_task_across_stores,
        shared::concurrency_holds_across_stores,
        shared::a_reader_following_the_log_misses_no_event,
        shared::a_renewal_skips_a_row_another_writer_holds,
        shared::a_heartbeat_waits_for_a_row_another_writer_holds,
        deps::parents_ending_on_two_stores_release_their_child,
        rates::a_rate_limit_holds_across_stores,
    );
}
