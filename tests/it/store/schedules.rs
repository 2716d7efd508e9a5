//! Conformance: schedules are stored whole, replaced keeping their history, listed by name
//! within a queue scope, found when due, and moved on only from the `next_at` a pass read.

use std::sync::Arc;

use serde_json::json;
use taskd::access::QueueScope;
use taskd::store::TaskStore;
use taskd::task::{CatchUp, Overlap, Schedule, ScheduleName, TaskId, TaskTemplate};

use super::task;

fn name(text: &str) -> ScheduleName {
    ScheduleName::parse(text).unwrap()
}

fn schedule(text: &str, queue: &str, next_at: i64) -> Schedule {
    Schedule {
        name: name(text),
        cron: "*/2 * * * * *".to_owned(),
        timezone: "Europe/Paris".to_owned(),
        task: TaskTemplate::of(task(queue, "echo", json!({"n": 1}))),
        overlap: Overlap::Allow,
        catch_up: CatchUp::None,
        paused: false,
        next_at,
        last_task: None,
        last_slot_at: None,
        created_at: 1_000,
        updated_at: 1_000,
    }
}

/// A schedule reads back whole; a replace keeps `created_at` and the last run and takes
/// the rest; a delete answers whether there was one.
pub async fn schedules_round_trip_and_replace(store: Arc<dyn TaskStore>) {
    let first = schedule("nightly", "reports", 5_000);
    assert_eq!(store.schedule_put(first.clone()).await.unwrap(), first);
    assert_eq!(
        store.schedule_get(name("nightly")).await.unwrap(),
        Some(first.clone())
    );
    let fired = TaskId::new();
    assert!(
        store
            .schedule_fired(name("nightly"), 5_000, 7_000, Some((fired, 5_000)))
            .await
            .unwrap()
    );
    let replaced = Schedule {
        cron: "0 3 * * *".to_owned(),
        paused: true,
        next_at: 9_000,
        created_at: 2_000,
        updated_at: 2_000,
        ..schedule("nightly", "other", 0)
    };
    let stored = store.schedule_put(replaced.clone()).await.unwrap();
    assert_eq!(
        stored,
        Schedule {
            created_at: 1_000,
            last_task: Some(fired),
            last_slot_at: Some(5_000),
            ..replaced
        }
    );
    assert!(store.schedule_delete(name("nightly")).await.unwrap());
    assert!(!store.schedule_delete(name("nightly")).await.unwrap());
    assert_eq!(store.schedule_get(name("nightly")).await.unwrap(), None);
}

/// Due means unpaused with `next_at` at or before now; the move is guarded by the `next_at`
/// read, so a second pass over the same slot changes nothing.
pub async fn due_schedules_move_on_once(store: Arc<dyn TaskStore>) {
    store.schedule_put(schedule("a", "q", 1_000)).await.unwrap();
    store.schedule_put(schedule("b", "q", 3_000)).await.unwrap();
    let paused = Schedule {
        paused: true,
        ..schedule("c", "q", 500)
    };
    store.schedule_put(paused).await.unwrap();
    assert_eq!(store.schedule_next_at().await.unwrap(), Some(1_000));
    let due = store.schedules_due(2_000, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].name, name("a"));

    let task = TaskId::new();
    let fired = Some((task, 1_000));
    assert!(
        store
            .schedule_fired(name("a"), 1_000, 4_000, fired)
            .await
            .unwrap()
    );
    assert!(
        !store
            .schedule_fired(name("a"), 1_000, 4_000, fired)
            .await
            .unwrap()
    );
    // A pass that skipped its slot keeps the last run.
    assert!(
        store
            .schedule_fired(name("a"), 4_000, 6_000, None)
            .await
            .unwrap()
    );
    let a = store.schedule_get(name("a")).await.unwrap().unwrap();
    assert_eq!(
        (a.next_at, a.last_task, a.last_slot_at),
        (6_000, Some(task), Some(1_000))
    );
    assert_eq!(store.schedule_next_at().await.unwrap(), Some(3_000));
    assert!(store.schedules_due(2_000, 10).await.unwrap().is_empty());
}

/// A listing goes by name from after the cursor, and keeps to the queues of a scope.
pub async fn schedule_listings_page_and_keep_to_a_scope(store: Arc<dyn TaskStore>) {
    for (text, queue) in [
        ("d", "tenant-a-x"),
        ("a", "reports"),
        ("c", "other"),
        ("b", "tenant-a-y"),
    ] {
        store
            .schedule_put(schedule(text, queue, 1_000))
            .await
            .unwrap();
    }
    let names = |schedules: Vec<Schedule>| -> Vec<String> {
        schedules.into_iter().map(|s| s.name.to_string()).collect()
    };
    let all = store.schedules(None, 10, QueueScope::All).await.unwrap();
    assert_eq!(names(all), ["a", "b", "c", "d"]);
    let page = store
        .schedules(Some(name("a")), 2, QueueScope::All)
        .await
        .unwrap();
    assert_eq!(names(page), ["b", "c"]);
    let scope = QueueScope::parse_list("reports,tenant-a-*").unwrap();
    let scoped = store.schedules(None, 10, scope).await.unwrap();
    assert_eq!(names(scoped), ["a", "b", "d"]);
}
