//! Time as an input: a backoff, a timeout, a lease and a schedule measured in minutes and
//! hours, seen through the store on tokio's paused clock. `task::now_millis` follows that
//! clock, so the store's own idea of "now" (an attempt's end, a claim's start) moves only
//! when the test calls `advance`: no test sleeps, none depends on the machine's speed.
//!
//! SQLite only: nothing in its store keeps a timer, so the paused clock never moves on its
//! own. (A whole server on a paused clock does not work yet: tokio moves idle time forward to
//! the next timer while the SQLite writer thread works, and request timeouts fire.)

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use taskd::store::TaskStore;
use taskd::task::{Backoff, NewTask, Outcome, TaskError, TaskState, now_millis};
use tokio::time::advance;

use crate::backend::Backend;
use crate::store::{insert, lease, only, run, task};

const MINUTE: Duration = Duration::from_secs(60);

fn failure() -> Outcome {
    Outcome::Failed {
        error: TaskError {
            error_type: "flaky".into(),
            message: "once".into(),
        },
        retryable: true,
    }
}

async fn claim_for(store: &Arc<dyn TaskStore>, lease_for: Duration) -> taskd::task::Task {
    let expires_at = now_millis() + lease_for.as_millis() as i64;
    only(store.claim(1, expires_at).await.unwrap())
}

/// A retry with a ten-minute backoff is due after ten minutes of the test clock, not before.
#[tokio::test(start_paused = true)]
async fn a_backoff_is_due_on_the_test_clock() {
    run(Backend::Sqlite, |store| async move {
        let backoff = Backoff {
            base_ms: 600_000,
            cap_ms: 600_000,
        };
        let new = NewTask {
            backoff,
            ..task("clock", "echo", json!(null))
        };
        insert(&store, new).await;
        let first = claim_for(&store, 60 * MINUTE).await;
        let scheduled = store
            .finish(first.id, &lease(&first), failure())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(scheduled.state, TaskState::Scheduled);
        advance(4 * MINUTE).await;
        assert_eq!(
            store.promote_due(now_millis()).await.unwrap(),
            0,
            "jitter keeps half"
        );
        advance(6 * MINUTE).await;
        assert_eq!(store.promote_due(now_millis()).await.unwrap(), 1);
        assert_eq!(claim_for(&store, MINUTE).await.attempt, 2);
    })
    .await;
}

/// A remote lease is cut at the attempt's one-minute deadline: a minute later on the test
/// clock the rescue ends it as timed out.
#[tokio::test(start_paused = true)]
async fn a_timeout_fires_on_the_test_clock() {
    run(Backend::Sqlite, |store| async move {
        let new = NewTask {
            timeout_ms: Some(60_000),
            max_attempts: 1,
            ..task("clock", "echo", json!(null))
        };
        insert(&store, new).await;
        let queue = crate::store::queue("clock");
        let expires_at = now_millis() + 3_600_000;
        let leased = only(store.claim_queue(queue, None, 1, expires_at).await.unwrap());
        assert!(store.rescue_expired(now_millis()).await.unwrap().is_empty());
        advance(MINUTE + Duration::from_secs(1)).await;
        let ended = only(store.rescue_expired(now_millis()).await.unwrap());
        assert_eq!(ended.id, leased.id);
        assert_eq!(ended.state, TaskState::Failed);
        assert_eq!(ended.error.unwrap().error_type, "timeout");
    })
    .await;
}

/// A lease of thirty seconds that nobody renews expires on the test clock; the attempt is lost
/// and counted, and the task is queued again.
#[tokio::test(start_paused = true)]
async fn a_lease_expires_on_the_test_clock() {
    run(Backend::Sqlite, |store| async move {
        insert(&store, task("clock", "echo", json!(null))).await;
        let held = claim_for(&store, Duration::from_secs(30)).await;
        advance(Duration::from_secs(29)).await;
        assert!(store.rescue_expired(now_millis()).await.unwrap().is_empty());
        advance(Duration::from_secs(2)).await;
        let lost = only(store.rescue_expired(now_millis()).await.unwrap());
        assert_eq!(lost.id, held.id);
        assert_eq!(lost.state, TaskState::Queued);
        assert_eq!(lost.errors[0].error_type, "lease_expired");
    })
    .await;
}

/// A task scheduled an hour ahead is due after an hour of the test clock, not before.
#[tokio::test(start_paused = true)]
async fn a_schedule_is_due_on_the_test_clock() {
    run(Backend::Sqlite, |store| async move {
        let new = NewTask {
            run_at: Some(now_millis() + 3_600_000),
            ..task("clock", "echo", json!(null))
        };
        assert_eq!(insert(&store, new).await.state, TaskState::Scheduled);
        advance(59 * MINUTE).await;
        assert_eq!(store.promote_due(now_millis()).await.unwrap(), 0);
        // A second past: the clock's milliseconds are rounded down.
        advance(MINUTE + Duration::from_secs(1)).await;
        assert_eq!(store.promote_due(now_millis()).await.unwrap(), 1);
    })
    .await;
}
