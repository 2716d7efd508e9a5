//! What a task costs in durable commits (`taskd_store_commits_total`), counted by a server
//! in a child process of its own: the counter is process-wide, and the other tests of this
//! binary share one process.

use reqwest::Client;
use serde_json::{Value, json};

use crate::backend::{Backend, TestDatabase};
use crate::child::Server;
use crate::helpers::wait_for;
use crate::metrics::sample;
use crate::multinode::{drained, set_paused};

/// The server's commits so far, by purpose: submit, claim, finish.
async fn commits(client: &Client, base: &str) -> [f64; 3] {
    let page = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    ["submit", "claim", "finish"]
        .map(|purpose| sample(&page, "taskd_store_commits_total", &[("purpose", purpose)]))
}

/// A task awaited with `Prefer: wait` on an idle pool costs two durable commits: its
/// submit, which starts it as well, and its end. No claim commits on its behalf.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_awaited_task_costs_two_commits() {
    let database = TestDatabase::fresh(Backend::from_env()).await;
    // A lease far longer than the test: no renewal commits while the task runs.
    let server = Server::start(&database.url, 2, &["--lease", "10m"]);
    let client = Client::new();
    let before = commits(&client, &server.base).await;
    let response = client
        .post(format!("{}/v1/tasks", server.base))
        .header("prefer", "wait=30")
        .json(&json!({"kind": "echo", "input": {"n": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let task: Value = response.json().await.unwrap();
    assert_eq!(task["state"], "succeeded", "{task}");
    assert_eq!(task["attempt"], 1);
    let after = commits(&client, &server.base).await;
    let spent: Vec<f64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    assert_eq!(spent, [1.0, 0.0, 1.0], "commits for submit, claim, finish");
}

/// Submits `count` echo tasks into `queue`, paused; returns their ids.
async fn park(client: &Client, base: &str, queue: &str, count: usize) -> Vec<String> {
    set_paused(client, base, queue, true).await;
    let tasks: Vec<Value> = (0..count)
        .map(|n| json!({"kind": "echo", "input": n, "queue": queue}))
        .collect();
    let response = client
        .post(format!("{base}/v1/tasks/batch"))
        .json(&json!({ "tasks": tasks }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let batch: Value = response.json().await.unwrap();
    batch["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|task| task["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Tasks per run of [`awaited_tasks_are_claimed_a_few_at_a_time`]: six of the small claims.
const TASKS_PER_RUN: usize = 48;

/// Tasks that someone awaits are claimed a few at a time (two per core), so that each one's
/// answer waits for a small wave's answers and ends, not the whole pool's; the same tasks
/// with nobody waiting go in one claim as large as the free workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awaited_tasks_are_claimed_a_few_at_a_time() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_claim = 2 * cores;
    // With 24 cores or more one claim of awaited tasks may take them all, and the count no
    // longer tells the two sizes apart.
    let small_claims = TASKS_PER_RUN.div_ceil(per_claim);
    let database = TestDatabase::fresh(Backend::from_env()).await;
    let server = Server::start(&database.url, 64, &["--lease", "10m"]);
    let client = Client::new();
    let base = server.base.as_str();

    let ids = park(&client, base, "alone", TASKS_PER_RUN).await;
    assert_eq!(ids.len(), TASKS_PER_RUN);
    let before = commits(&client, base).await;
    set_paused(&client, base, "alone", false).await;
    drained(&client, base, "alone", TASKS_PER_RUN as u64).await;
    let unawaited = commits(&client, base).await[1] - before[1];
    // A probe of one, then the rest at once.
    assert!(
        unawaited <= 3.0,
        "{unawaited} claims for {TASKS_PER_RUN} tasks nobody awaits"
    );

    let ids = park(&client, base, "awaited", TASKS_PER_RUN).await;
    let waiters: Vec<_> = ids
        .iter()
        .map(|id| {
            let request = client.get(format!("{base}/v1/tasks/{id}?wait=60"));
            tokio::spawn(async move { request.send().await.unwrap().json::<Value>().await })
        })
        .collect();
    wait_for("every long-poll to park", || async {
        let page = client.get(format!("{base}/metrics")).send().await.ok()?;
        let page = page.text().await.ok()?;
        let open = sample(&page, "taskd_open_long_polls", &[]);
        (open as usize >= TASKS_PER_RUN).then_some(())
    })
    .await;
    let before = commits(&client, base).await;
    set_paused(&client, base, "awaited", false).await;
    for waiter in waiters {
        let task = waiter.await.unwrap().unwrap();
        assert_eq!(task["state"], "succeeded", "{task}");
    }
    let awaited = commits(&client, base).await[1] - before[1];
    // The probe of one, then claims of at most `per_claim`.
    assert!(
        awaited as usize > small_claims,
        "{awaited} claims for {TASKS_PER_RUN} awaited tasks, claims of {per_claim} at most"
    );
}
