//! What a task costs in durable commits (`taskd_store_commits_total`), counted by a server
//! in a child process of its own: the counter is process-wide, and the other tests of this
//! binary share one process.

use reqwest::Client;
use serde_json::{Value, json};

use crate::backend::{Backend, TestDatabase};
use crate::child::Server;
use crate::metrics::sample;

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
