//! Crash durability with a real child process and SIGKILL: every task answered 202 survives,
//! and tasks that were running run again with their attempt counted (at-least-once); queue
//! settings and schedules survive it too.

use reqwest::Client;
use serde_json::{Value, json};

use crate::backend::{Backend, TestDatabase};
use crate::child::Server;
use crate::helpers::{is_terminal, wait_for};

async fn submit(client: &Client, base: &str, body: Value) -> String {
    let response = client
        .post(format!("{base}/v1/tasks"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let task: Value = response.json().await.unwrap();
    task["id"].as_str().unwrap().to_owned()
}

async fn get_json(client: &Client, url: String) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

async fn get(client: &Client, base: &str, id: &str, wait: u32) -> Value {
    get_json(client, format!("{base}/v1/tasks/{id}?wait={wait}")).await
}

/// kill -9 with tasks queued and running; after a restart on the same database every task
/// reaches a terminal state, and the ones that were running ran again as attempt 2 (on
/// SQLite recovered at start-up; on PostgreSQL rescued once their lease expired).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_accepted_task() {
    let database = TestDatabase::fresh(Backend::from_env()).await;
    // A shared database's running tasks wait for their lease to expire: keep it short, but
    // long enough that a database stalled for a few seconds (a slow disk) lets no lease lapse
    // on the running node (that would make attempt 3).
    let lease: &[&str] = match database.backend() {
        Backend::Sqlite => &[],
        Backend::Postgres => &["--lease", "6s"],
    };
    let client = Client::new();

    let server = Server::start(&database.url, 2, lease);
    let mut running = Vec::new();
    for _ in 0..2 {
        running.push(
            submit(
                &client,
                &server.base,
                json!({"kind": "sleep", "input": {"ms": 3000}}),
            )
            .await,
        );
    }
    let mut queued = Vec::new();
    for n in 0..10 {
        queued.push(submit(&client, &server.base, json!({"kind": "echo", "input": n})).await);
    }
    for id in &running {
        wait_for("running", || async {
            (get(&client, &server.base, id, 0).await["state"] == "running").then_some(())
        })
        .await;
    }
    // Many concurrent submits just before the kill: each 202 must survive it.
    let burst: Vec<_> = (0..100)
        .map(|n| {
            let client = client.clone();
            let base = server.base.clone();
            tokio::spawn(async move {
                submit(&client, &base, json!({"kind": "echo", "input": n})).await
            })
        })
        .collect();
    let mut accepted = Vec::new();
    for submit in burst {
        accepted.push(submit.await.unwrap());
    }
    server.kill_9();

    let server = Server::start(&database.url, 4, lease);
    for id in running.iter().chain(&queued).chain(&accepted) {
        let task = wait_for("a terminal state after restart", || async {
            let task = get(&client, &server.base, id, 10).await;
            is_terminal(&task).then_some(task)
        })
        .await;
        assert_eq!(task["state"], "succeeded", "{task}");
    }
    for id in &running {
        let task = get(&client, &server.base, id, 0).await;
        assert_eq!(
            task["attempt"], 2,
            "a running task re-runs as attempt 2: {task}"
        );
    }
    server.kill_9();
}

/// kill -9 right after a queue was reconfigured and tasks were scheduled: after a restart the
/// queue keeps its settings, the scheduled tasks keep their time, and a paused queue stays
/// paused (its queued task has not run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_keeps_queue_settings_and_schedules() {
    let database = TestDatabase::fresh(Backend::from_env()).await;
    let client = Client::new();
    let server = Server::start(&database.url, 2, &[]);
    let settings = json!({"paused": true, "concurrency": 3, "max_queued": 50});
    let response = client
        .patch(format!("{}/v1/queues/kept", server.base))
        .json(&settings)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let held = submit(
        &client,
        &server.base,
        json!({"kind": "echo", "queue": "kept", "input": 1}),
    )
    .await;
    let later = submit(
        &client,
        &server.base,
        json!({"kind": "echo", "input": 2, "delay_ms": 3_600_000}),
    )
    .await;
    let run_at = get(&client, &server.base, &later, 0).await["run_at"].clone();
    assert!(run_at.is_string());
    server.kill_9();

    let server = Server::start(&database.url, 2, &[]);
    let queue = get_json(&client, format!("{}/v1/queues/kept", server.base)).await;
    assert_eq!(queue["paused"], true, "{queue}");
    assert_eq!(queue["concurrency"], 3, "{queue}");
    assert_eq!(queue["max_queued"], 50, "{queue}");
    assert_eq!(
        get(&client, &server.base, &held, 0).await["state"],
        "queued"
    );
    let task = get(&client, &server.base, &later, 0).await;
    assert_eq!(task["state"], "scheduled", "{task}");
    assert_eq!(task["run_at"], run_at);
    server.kill_9();
}
