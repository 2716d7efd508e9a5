//! Conformance: a queue's rate limit caps how many attempts start in a window, for local
//! claims and remote leases, across several stores on one database; `None` removes it.

use std::sync::Arc;

use serde_json::json;
use taskd::store::{QueuePatch, RateLimit, TaskStore};
use taskd::task::now_millis;

use super::{ROOMY, far, open, queue, task};

/// A window no case outlives: what it refuses stays refused for the case.
const LONG: u64 = 3_600_000;

async fn limit(store: &Arc<dyn TaskStore>, name: &str, rate: Option<RateLimit>, remote: bool) {
    let patch = QueuePatch {
        rate: Some(rate),
        remote: Some(remote),
        ..QueuePatch::default()
    };
    let info = store.update_queue(queue(name), patch).await.unwrap();
    assert_eq!(info.rate, rate);
}

async fn fill(store: &Arc<dyn TaskStore>, name: &str, n: usize) {
    let tasks = (0..n).map(|i| task(name, "echo", json!(i))).collect();
    store.insert(tasks, ROOMY).await.unwrap();
}

/// Claims and leases start at most `limit` per window; other queues are not held back; once
/// the limit is removed the rest start.
pub async fn a_rate_limit_caps_starts_in_a_window(store: Arc<dyn TaskStore>) {
    let rate = RateLimit {
        limit: 3,
        per_ms: LONG,
    };
    limit(&store, "slow", Some(rate), false).await;
    fill(&store, "slow", 5).await;
    fill(&store, "free", 2).await;
    let claimed = store.claim(10, far()).await.unwrap();
    let slow = claimed
        .iter()
        .filter(|t| t.queue.as_str() == "slow")
        .count();
    assert_eq!((slow, claimed.len()), (3, 5));
    assert!(store.claim(10, far()).await.unwrap().is_empty());

    limit(&store, "leased", Some(rate), true).await;
    fill(&store, "leased", 5).await;
    let leased = store
        .claim_queue(queue("leased"), None, 10, far())
        .await
        .unwrap();
    assert_eq!(leased.len(), 3);
    let more = store
        .claim_queue(queue("leased"), None, 10, far())
        .await
        .unwrap();
    assert!(more.is_empty());

    limit(&store, "slow", None, false).await;
    assert_eq!(store.claim(10, far()).await.unwrap().len(), 2);
}

/// A short window slides: starts refused now are allowed once the window has passed.
pub async fn a_rate_window_slides(store: Arc<dyn TaskStore>) {
    let rate = RateLimit {
        limit: 2,
        per_ms: 200,
    };
    limit(&store, "tick", Some(rate), false).await;
    fill(&store, "tick", 4).await;
    let first = store.claim(10, far()).await.unwrap();
    assert_eq!(first.len(), 2);
    let since = now_millis();
    let mut second = Vec::new();
    while second.is_empty() {
        assert!(now_millis() - since < 30_000, "the window never slid");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        second = store.claim(10, far()).await.unwrap();
    }
    let started = |t: &taskd::task::Task| t.started_at.unwrap();
    let first_start = first.iter().map(started).min().unwrap();
    assert!(second.len() <= 2);
    assert!(second.iter().all(|t| started(t) >= first_start + 200));
}

/// Several stores claiming one limited queue at once start no more than the limit together.
pub async fn a_rate_limit_holds_across_stores(url: String) {
    let first = open(&url).await;
    limit(
        &first,
        "shared",
        Some(RateLimit {
            limit: 4,
            per_ms: LONG,
        }),
        false,
    )
    .await;
    fill(&first, "shared", 12).await;
    let mut claims = tokio::task::JoinSet::new();
    for _ in 0..3 {
        let store = open(&url).await;
        claims.spawn(async move {
            let mut claimed = 0;
            for _ in 0..5 {
                claimed += store.claim(3, far()).await.unwrap().len();
            }
            claimed
        });
    }
    let mut total = 0;
    while let Some(claimed) = claims.join_next().await {
        total += claimed.unwrap();
    }
    assert_eq!(total, 4);
}
