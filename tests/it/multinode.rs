//! Several nodes on one PostgreSQL database: three real `taskd serve` processes share the
//! work, wake each other's waiters, and rescue a killed node's tasks once its leases expire.
//! Always PostgreSQL, whatever `TASKD_TEST_BACKEND` says: only it can be shared.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

use crate::backend::{Backend, TestDatabase};
use crate::child::Server;
use crate::helpers::{millis, wait_for};

const TASKS: usize = 3_000;
/// Tasks per submitted batch.
const BATCH: usize = 20;
const WORKERS: u32 = 4;

async fn post(client: &Client, url: String, body: Value) -> Value {
    let response = client.post(url).json(&body).send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.unwrap()
}

async fn get(client: &Client, url: String) -> Value {
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

pub(crate) async fn set_paused(client: &Client, base: &str, queue: &str, paused: bool) {
    let response = client
        .patch(format!("{base}/v1/queues/{queue}"))
        .json(&json!({ "paused": paused }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// Polls until every task of `queue` is finished; returns its counts.
pub(crate) async fn drained(client: &Client, base: &str, queue: &str, total: u64) -> Value {
    wait_for("the queue to drain", || async {
        let info = get(client, format!("{base}/v1/queues/{queue}")).await;
        let counts = info["counts"].clone();
        let finished: u64 = ["succeeded", "failed", "cancelled"]
            .iter()
            .map(|s| counts[s].as_u64().unwrap())
            .sum();
        (finished == total).then_some(counts)
    })
    .await
}

/// Submits `3 × WORKERS` sleeps of `ms` to `queue` and waits until all run: with as many
/// tasks as the three nodes have workers, each node runs `WORKERS` of them.
async fn running_everywhere(
    client: &Client,
    bases: &[String],
    queue: &str,
    ms: u64,
) -> Vec<String> {
    set_paused(client, &bases[0], queue, true).await;
    let tasks: Vec<Value> = (0..3 * WORKERS)
        .map(|_| json!({"queue": queue, "kind": "sleep", "input": {"ms": ms}}))
        .collect();
    let url = format!("{}/v1/tasks/batch", bases[0]);
    let batch = post(client, url, json!({ "tasks": tasks })).await;
    let ids = batch["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    set_paused(client, &bases[0], queue, false).await;
    wait_for("every task running", || async {
        let info = get(client, format!("{}/v1/queues/{queue}", bases[0])).await;
        (info["counts"]["running"] == 3 * WORKERS).then_some(())
    })
    .await;
    ids
}

/// Three nodes: 3,000 tasks submitted round-robin (in batches) run exactly once each; a
/// waiter on one node sees a completion made on another; a cancel asked on one node stops
/// attempts running on the others; a node killed with tasks running loses them only until
/// their lease expires, then the others run them again (attempt 2), and all finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_one_database() {
    let database = TestDatabase::fresh(Backend::Postgres).await;
    // Long enough that a database stalled for a few seconds (a slow disk) lets no lease
    // lapse on a live node; a killed node's tasks wait that long before they run again.
    let args = ["--lease", "6s"];
    let nodes: Vec<Server> = (0..3)
        .map(|_| Server::start(&database.url, WORKERS, &args))
        .collect();
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let client = Client::new();

    // 1. Exactly once: batches of 20 submitted round-robin, 12 in flight.
    let submits = futures::stream::iter(0..TASKS / BATCH).map(|b| {
        let (client, base) = (client.clone(), bases[b % 3].clone());
        async move {
            let tasks: Vec<Value> = (0..BATCH)
                .map(|n| json!({"queue": "many", "kind": "echo", "input": b * BATCH + n}))
                .collect();
            let body = json!({ "tasks": tasks });
            let answer = post(&client, format!("{base}/v1/tasks/batch"), body).await;
            answer["tasks"][0]["id"].as_str().unwrap().to_owned()
        }
    });
    let ids: Vec<String> = submits.buffer_unordered(12).collect().await;
    let counts = drained(&client, &bases[1], "many", TASKS as u64).await;
    assert_eq!(counts["succeeded"], TASKS as u64, "{counts}");
    // Executions, counted: every claim writes a `running` event.
    let mut conn = PgConnection::connect(&database.url).await.unwrap();
    let starts: Vec<(String, i64)> = sqlx::query_as(
        "SELECT task_id::text, count(*) FROM task_events \
         WHERE state = 'running' AND queue = 'many' GROUP BY task_id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let starts: BTreeMap<String, i64> = starts.into_iter().collect();
    assert_eq!(starts.len(), TASKS, "every task started");
    assert!(starts.values().all(|n| *n == 1), "no task started twice");
    let (most_attempts,): (i32,) =
        sqlx::query_as("SELECT max(attempt) FROM tasks WHERE queue = 'many'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(most_attempts, 1);
    let sample = get(&client, format!("{}/v1/tasks/{}", bases[2], ids[0])).await;
    assert_eq!(sample["state"], "succeeded");

    // 2. A long-poll on node 0 sees a cancel made on node 1.
    set_paused(&client, &bases[0], "held", true).await;
    let body = json!({"queue": "held", "kind": "echo", "input": 1});
    let held = post(&client, format!("{}/v1/tasks", bases[2]), body).await;
    let id = held["id"].as_str().unwrap().to_owned();
    let waiter = {
        let (client, url) = (
            client.clone(),
            format!("{}/v1/tasks/{id}?wait=20", bases[0]),
        );
        tokio::spawn(async move { (get(&client, url).await, Instant::now()) })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cancelled_at = Instant::now();
    post(
        &client,
        format!("{}/v1/tasks/{id}/cancel", bases[1]),
        json!({}),
    )
    .await;
    let (seen, woken_at) = waiter.await.unwrap();
    assert_eq!(seen["state"], "cancelled");
    assert!(
        woken_at - cancelled_at < Duration::from_secs(10),
        "woken by the other node, not by its deadline"
    );

    // ... and waiters on all three nodes see one task finish, wherever it ran.
    let body = json!({"kind": "sleep", "input": {"ms": 300}});
    let task = post(&client, format!("{}/v1/tasks", bases[0]), body).await;
    let id = task["id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    let waits = bases.iter().map(|base| {
        let (client, url) = (client.clone(), format!("{base}/v1/tasks/{id}?wait=20"));
        async move { get(&client, url).await }
    });
    for seen in futures::future::join_all(waits).await {
        assert_eq!(seen["state"], "succeeded", "{seen}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // 3. A cancel asked on one node stops attempts running on the others: 12 long sleeps on
    // 12 slots (each node runs 4), all cancelled through node 1.
    let long = running_everywhere(&client, &bases, "long", 60_000).await;
    let asked = Instant::now();
    for id in &long {
        post(
            &client,
            format!("{}/v1/tasks/{id}/cancel", bases[1]),
            json!({}),
        )
        .await;
    }
    let counts = drained(&client, &bases[2], "long", long.len() as u64).await;
    assert_eq!(counts["cancelled"], long.len() as u64, "{counts}");
    assert!(
        asked.elapsed() < Duration::from_secs(30),
        "stopped at once, not after the sleep: {:?}",
        asked.elapsed()
    );

    // 4. SIGKILL a node while every node runs WORKERS sleeps (12 tasks, 12 slots: each runs 4).
    // The leases as they stand just before the kill: no task may run again before its own
    // expired (a renewal landing after this read only moves it later).
    let slow = running_everywhere(&client, &bases, "slow", 3000).await;
    let leases: Vec<(String, i64)> = sqlx::query_as(
        "SELECT id::text, lease_expires_at FROM tasks \
         WHERE queue = 'slow' AND lease_expires_at IS NOT NULL",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let leases: BTreeMap<String, i64> = leases.into_iter().collect();
    assert_eq!(leases.len(), slow.len(), "every task holds a lease");
    let mut nodes = nodes;
    nodes.pop().unwrap().kill_9();
    let counts = drained(&client, &bases[0], "slow", slow.len() as u64).await;
    assert_eq!(counts["succeeded"], slow.len() as u64, "{counts}");
    let mut rescued = 0;
    for id in &slow {
        let task = get(&client, format!("{}/v1/tasks/{id}", bases[1])).await;
        match task["attempt"].as_u64() {
            Some(1) => assert!(task["errors"].as_array().unwrap().is_empty()),
            Some(2) => {
                rescued += 1;
                assert_eq!(task["errors"][0]["type"], "lease_expired", "{task}");
                let restarted = millis(&task, "started_at");
                assert!(
                    restarted >= leases[id],
                    "rescued before its lease expired: {task}"
                );
            }
            _ => panic!("unexpected attempt: {task}"),
        }
    }
    // The killed node's WORKERS tasks can only have finished as attempt 2. More only if a
    // live node's renewal came later than its lease (a database stalled for seconds).
    assert!(
        rescued >= WORKERS,
        "the killed node's tasks ran again: {rescued}"
    );
    drop(nodes);
    conn.close().await.unwrap();
}
