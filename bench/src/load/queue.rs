//! What several scenarios do to a queue: pause and resume it, read its counts, and fill it
//! with echo tasks through `POST /v1/tasks/batch`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::client::{Conn, Error};

/// The most tasks one batch request may hold (taskd's limit).
pub const MAX_BATCH: usize = 1000;

/// `PATCH /v1/queues/{queue}` with `settings` (e.g. `{"paused": false, "concurrency": 1}`).
pub async fn patch(conn: &mut Conn, queue: &str, settings: Value) -> Result<(), Error> {
    let path = format!("/v1/queues/{queue}");
    conn.json(Method::PATCH, &path, Some(&settings), StatusCode::OK)
        .await?;
    Ok(())
}

/// Pauses or resumes a queue.
pub async fn set_paused(conn: &mut Conn, queue: &str, paused: bool) -> Result<(), Error> {
    patch(conn, queue, json!({ "paused": paused })).await
}

/// Raises a queue's own `max_queued` (a per-queue override of `--max-queued`).
pub async fn set_max_queued(conn: &mut Conn, queue: &str, max_queued: u64) -> Result<(), Error> {
    patch(conn, queue, json!({ "max_queued": max_queued })).await
}

/// A queue's task counts.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub queued: u64,
    pub running: u64,
    pub scheduled: u64,
    pub succeeded: u64,
    pub failed: u64,
}

impl Counts {
    /// Nothing left to run.
    pub fn drained(&self) -> bool {
        self.queued == 0 && self.running == 0 && self.scheduled == 0
    }
}

/// `GET /v1/queues/{queue}`'s counts.
pub async fn counts(conn: &mut Conn, queue: &str) -> Result<Counts, Error> {
    let info = conn
        .json(
            Method::GET,
            &format!("/v1/queues/{queue}"),
            None,
            StatusCode::OK,
        )
        .await?;
    let count = |state: &str| info["counts"][state].as_u64().unwrap_or(0);
    Ok(Counts {
        queued: count("queued"),
        running: count("running"),
        scheduled: count("scheduled"),
        succeeded: count("succeeded"),
        failed: count("failed"),
    })
}

/// The body of one batch: `size` echo tasks into `queue`.
fn batch_body(queue: &str, size: usize) -> Bytes {
    let tasks: Vec<Value> = (0..size)
        .map(|n| json!({ "queue": queue, "kind": "echo", "input": { "n": n } }))
        .collect();
    Bytes::from(json!({ "tasks": tasks }).to_string())
}

/// What a fill did.
pub struct Filled {
    /// The ids of the tasks, in submission order (empty unless asked for).
    pub ids: Vec<String>,
    pub seconds: f64,
}

/// Submits `tasks` echo tasks to `queue` in batches of `MAX_BATCH`, `concurrency` batches in
/// flight (the server commits them one after another; two keep its writer busy while the next
/// body is parsed). Collects the new ids if `collect_ids`.
pub async fn fill(
    addr: SocketAddr,
    queue: &str,
    tasks: usize,
    concurrency: usize,
    collect_ids: bool,
) -> Result<Filled, Error> {
    let batches = tasks.div_ceil(MAX_BATCH);
    let full = batch_body(queue, MAX_BATCH);
    let last = batch_body(queue, tasks - (batches.saturating_sub(1)) * MAX_BATCH);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (next, full, last) = (Arc::clone(&next), full.clone(), last.clone());
        senders.spawn(async move {
            let mut conn = Conn::open(addr).await?;
            let mut ids: Vec<(usize, Vec<String>)> = Vec::new();
            loop {
                let batch = next.fetch_add(1, Ordering::Relaxed);
                if batch >= batches {
                    return Ok::<_, Error>(ids);
                }
                let body = if batch + 1 == batches { &last } else { &full };
                let (status, answer) = conn
                    .call(Method::POST, "/v1/tasks/batch", &[], Some(body.clone()))
                    .await?;
                if status != StatusCode::ACCEPTED {
                    let text = String::from_utf8_lossy(&answer);
                    return Err(format!("batch {batch}: {status}: {text}").into());
                }
                if collect_ids {
                    ids.push((batch, batch_ids(&answer)?));
                }
            }
        });
    }
    let mut ids: Vec<(usize, Vec<String>)> = Vec::new();
    while let Some(sent) = senders.join_next().await {
        ids.extend(sent??);
    }
    let seconds = started.elapsed().as_secs_f64();
    ids.sort_unstable_by_key(|(batch, _)| *batch);
    Ok(Filled {
        ids: ids.into_iter().flat_map(|(_, ids)| ids).collect(),
        seconds,
    })
}

fn batch_ids(answer: &[u8]) -> Result<Vec<String>, Error> {
    let answer: Value = serde_json::from_slice(answer)?;
    let tasks = answer["tasks"]
        .as_array()
        .ok_or("a batch answer without tasks")?;
    tasks
        .iter()
        .map(|task| {
            task["id"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| "a task without an id".into())
        })
        .collect()
}
