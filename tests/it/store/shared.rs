//! Cases for several stores on one database at once, as several nodes share one: claims,
//! admission, idempotency and queue concurrency hold across them.

use std::collections::BTreeSet;

use taskd::store::{EventFilter, QueuePatch, StoreError};
use taskd::task::{Idempotency, TaskId, TaskState};

use super::*;

/// How many stores (nodes) each case opens on the database.
const NODES: usize = 3;

async fn nodes(url: &str) -> Vec<Arc<dyn TaskStore>> {
    let mut nodes = Vec::new();
    for _ in 0..NODES {
        nodes.push(open(url).await);
    }
    nodes
}

/// Several stores migrating one fresh database at once apply each migration exactly once.
pub async fn migrations_run_once_when_nodes_start_together(url: String) {
    let mut starts = tokio::task::JoinSet::new();
    for _ in 0..NODES {
        let url = url.clone();
        starts.spawn(async move {
            let store = taskd::store::open(&url).await.unwrap();
            store.migrate().await.unwrap();
            store
        });
    }
    let mut nodes = Vec::new();
    while let Some(joined) = starts.join_next().await {
        nodes.push(joined.unwrap());
    }
    let versions: Vec<i64> = if url.starts_with("postgres") {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query_scalar("SELECT version FROM taskd_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap()
    } else {
        let path = url.trim_start_matches("sqlite://");
        let conn = rusqlite::Connection::open(path).unwrap();
        let mut statement = conn
            .prepare("SELECT version FROM taskd_migrations ORDER BY version")
            .unwrap();
        let rows = statement.query_map([], |row| row.get(0)).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    };
    // Each backend's own list (they differ only as `migrations::ONLY_SQLITE` and
    // `ONLY_POSTGRES` declare).
    let list = if url.starts_with("postgres") {
        taskd::store::migrations::POSTGRES
    } else {
        taskd::store::migrations::SQLITE
    };
    let expected: Vec<i64> = list.iter().map(|m| m.version).collect();
    assert_eq!(versions, expected, "each once, in order");
    let task = insert(&nodes[0], task("fresh", "echo", json!(1))).await;
    assert!(nodes[2].get(task.id).await.unwrap().is_some());
}

/// Stores claiming and finishing at once each take a task at most once: every task runs
/// exactly once.
pub async fn claims_from_several_stores_never_overlap(url: String) {
    let nodes = nodes(&url).await;
    let tasks: Vec<NewTask> = (0..300).map(|n| task("many", "echo", json!(n))).collect();
    nodes[0].insert(tasks, ROOMY).await.unwrap();
    let mut workers = tokio::task::JoinSet::new();
    for node in &nodes {
        let node = Arc::clone(node);
        workers.spawn(async move {
            let mut ran = Vec::new();
            loop {
                let claimed = node.claim(7, far()).await.unwrap();
                if claimed.is_empty() {
                    return ran;
                }
                for task in claimed {
                    let outcome = Outcome::Succeeded(json!(task.attempt));
                    let ended = node.finish(task.id, &lease(&task), outcome).await.unwrap();
                    assert!(ended.is_some(), "our lease is current");
                    ran.push(task.id);
                }
            }
        });
    }
    let mut ran: Vec<TaskId> = Vec::new();
    while let Some(joined) = workers.join_next().await {
        ran.extend(joined.unwrap());
    }
    let unique: BTreeSet<TaskId> = ran.iter().copied().collect();
    assert_eq!((ran.len(), unique.len()), (300, 300), "each exactly once");
    let counts = nodes[1].queue(queue("many")).await.unwrap().counts;
    assert_eq!(counts[&TaskState::Succeeded], 300);
}

/// A reader that follows the event log while other stores write it (submits, claims and
/// ends, each in transactions of their own, committing in any order) misses no event: what
/// it read, page by page from the last `seq` it saw, is the whole log, in `seq` order.
pub async fn a_reader_following_the_log_misses_no_event(url: String) {
    let nodes = nodes(&url).await;
    let mut writers = tokio::task::JoinSet::new();
    for node in &nodes[..2] {
        let node = Arc::clone(node);
        writers.spawn(async move {
            for n in 0..60 {
                insert(&node, task("tail", "echo", json!(n))).await;
                for task in node.claim(2, far()).await.unwrap() {
                    let outcome = Outcome::Succeeded(json!(n));
                    node.finish(task.id, &lease(&task), outcome).await.unwrap();
                }
            }
            // Then what is left, so every task ends.
            loop {
                let claimed = node.claim(10, far()).await.unwrap();
                if claimed.is_empty() {
                    return;
                }
                for task in claimed {
                    let outcome = Outcome::Succeeded(json!(0));
                    node.finish(task.id, &lease(&task), outcome).await.unwrap();
                }
            }
        });
    }
    let reader = Arc::clone(&nodes[2]);
    let mut seen: Vec<i64> = Vec::new();
    let mut last = 0;
    let mut writing = true;
    loop {
        let page = reader
            .events_after(last, EventFilter::default(), 50)
            .await
            .unwrap();
        if page.is_empty() && !writing {
            break;
        }
        if let Some(event) = page.last() {
            last = event.seq;
        }
        seen.extend(page.iter().map(|event| event.seq));
        if writing && writers.is_empty() {
            writing = false;
        }
        while let Some(joined) = writers.try_join_next() {
            joined.unwrap();
        }
        tokio::task::yield_now().await;
    }
    let all: Vec<i64> = nodes[0]
        .events_after(0, EventFilter::default(), 100_000)
        .await
        .unwrap()
        .iter()
        .map(|event| event.seq)
        .collect();
    // 120 submits, each task claimed and ended: three events each.
    assert_eq!(all.len(), 360);
    assert_eq!(seen, all, "read in seq order, none skipped, none twice");
}

/// Submits racing from several stores never push a queue past its limit.
pub async fn admission_holds_across_stores(url: String) {
    let nodes = nodes(&url).await;
    let mut submits = tokio::task::JoinSet::new();
    for round in 0..8 {
        for node in &nodes {
            let node = Arc::clone(node);
            submits.spawn(async move {
                let batch = (0..5)
                    .map(|n| task("adm", "echo", json!([round, n])))
                    .collect();
                match node.insert(batch, 50).await {
                    Ok(inserted) => inserted.len(),
                    Err(StoreError::QueueFull { .. }) => 0,
                    Err(error) => panic!("{error}"),
                }
            });
        }
    }
    let mut accepted = 0;
    while let Some(joined) = submits.join_next().await {
        accepted += joined.unwrap();
    }
    assert_eq!(accepted, 50, "ten batches of five fit, no more");
    let counts = nodes[2].queue(queue("adm")).await.unwrap().counts;
    assert_eq!(counts[&TaskState::Queued], 50);
}

/// One idempotency key submitted from several stores at once makes one task; every other
/// submit replays it.
pub async fn one_idempotency_key_makes_one_task_across_stores(url: String) {
    let nodes = nodes(&url).await;
    let mut submits = tokio::task::JoinSet::new();
    for _ in 0..4 {
        for node in &nodes {
            let node = Arc::clone(node);
            submits.spawn(async move {
                let new = NewTask {
                    idempotency: Some(Idempotency {
                        key: "once".into(),
                        request_hash: "same".into(),
                    }),
                    ..task("idem", "echo", json!(1))
                };
                only(node.insert(vec![new], ROOMY).await.unwrap())
            });
        }
    }
    let mut ids = BTreeSet::new();
    let mut fresh = 0;
    while let Some(joined) = submits.join_next().await {
        let inserted = joined.unwrap();
        ids.insert(inserted.task.id);
        fresh += usize::from(!inserted.replayed);
    }
    assert_eq!((ids.len(), fresh), (1, 1));
}

/// A queue's concurrency holds when several stores claim from it at once.
pub async fn concurrency_holds_across_stores(url: String) {
    let nodes = nodes(&url).await;
    let limit = QueuePatch {
        concurrency: Some(Some(3)),
        ..QueuePatch::default()
    };
    nodes[0].update_queue(queue("cap"), limit).await.unwrap();
    let tasks: Vec<NewTask> = (0..40).map(|n| task("cap", "echo", json!(n))).collect();
    nodes[0].insert(tasks, ROOMY).await.unwrap();
    let mut claims = tokio::task::JoinSet::new();
    for _ in 0..4 {
        for node in &nodes {
            let node = Arc::clone(node);
            claims.spawn(async move { node.claim(10, far()).await.unwrap().len() });
        }
    }
    let mut claimed = 0;
    while let Some(joined) = claims.join_next().await {
        claimed += joined.unwrap();
    }
    assert_eq!(claimed, 3, "never more running than the concurrency");
    let counts = nodes[1].queue(queue("cap")).await.unwrap().counts;
    assert_eq!(counts[&TaskState::Running], 3);
}

/// A PostgreSQL connection whose open transaction holds the row of task `id` (as an end being
/// recorded would) until [`release_row`].
async fn hold_row(url: &str, id: TaskId) -> sqlx::PgConnection {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
    sqlx::query("SELECT 1 FROM tasks WHERE id = $1::uuid FOR UPDATE")
        .bind(id.to_string())
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

/// Ends `hold_row`'s transaction without a change.
async fn release_row(holder: &mut sqlx::PgConnection) {
    sqlx::query("ROLLBACK").execute(holder).await.unwrap();
}

/// A renewal never waits for a row another transaction holds (on PostgreSQL, an end being
/// recorded): it renews the others and leaves that one to the next renewal. Waiting, it
/// deadlocked with an end that waited for a row the renewal held, and the end failed.
pub async fn a_renewal_skips_a_row_another_writer_holds(url: String) {
    let nodes = nodes(&url).await;
    let held = running(&nodes[0], "renew-held", 1).await;
    let free = running(&nodes[0], "renew-free", 1).await;
    let leases = vec![(held.id, lease(&held)), (free.id, lease(&free))];
    if url.starts_with("postgres") {
        let mut holder = hold_row(&url, held.id).await;
        // Waiting for `holder`, the renewal would never end: the deadline says so.
        let to = far();
        let renewal = nodes[1].renew(leases.clone(), to);
        let renewed = tokio::time::timeout(std::time::Duration::from_secs(30), renewal)
            .await
            .expect("the renewal waited for the held row")
            .unwrap();
        assert_eq!(renewed, 1);
        assert_eq!(get(&nodes[1], &free).await.lease.unwrap().expires_at, to);
        release_row(&mut holder).await;
    }
    // Nothing held (on SQLite one writer runs at a time, so nothing else can be): both.
    let to = far() + 1;
    assert_eq!(nodes[1].renew(leases, to).await.unwrap(), 2);
    assert_eq!(get(&nodes[1], &held).await.lease.unwrap().expires_at, to);
}

/// A heartbeat's renewal of one lease waits for a row another writer holds, and then renews
/// it: skipping would tell a worker whose lease holds that it lost it. A stale lease is not
/// renewed.
pub async fn a_heartbeat_waits_for_a_row_another_writer_holds(url: String) {
    let nodes = nodes(&url).await;
    let held = running(&nodes[0], "beat-held", 1).await;
    assert!(!nodes[1].renew_one(held.id, "stale", far()).await.unwrap());
    if url.starts_with("postgres") {
        let mut holder = hold_row(&url, held.id).await;
        let to = far();
        let store = nodes[1].clone();
        let token = lease(&held);
        let renewal = tokio::spawn(async move { store.renew_one(held.id, &token, to).await });
        // Until the renewal either answers or waits for the holder's lock.
        let watch = sqlx::PgPool::connect(&url).await.unwrap();
        let answered = &renewal;
        crate::helpers::wait_for("the renewal to answer or wait for the lock", || {
            let watch = watch.clone();
            async move {
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND wait_event_type = 'Lock' \
                       AND query LIKE 'UPDATE tasks SET lease_expires_at%'",
                )
                .fetch_one(&watch)
                .await
                .unwrap();
                (waiting > 0 || answered.is_finished()).then_some(())
            }
        })
        .await;
        release_row(&mut holder).await;
        assert!(
            renewal.await.unwrap().unwrap(),
            "the renewal skipped a held row"
        );
        assert_eq!(get(&nodes[1], &held).await.lease.unwrap().expires_at, to);
    }
    let to = far() + 1;
    assert!(
        nodes[1]
            .renew_one(held.id, &lease(&held), to)
            .await
            .unwrap()
    );
    assert_eq!(get(&nodes[1], &held).await.lease.unwrap().expires_at, to);
}
