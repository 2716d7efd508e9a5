//! wake-up: how soon waiters hear that their task finished.
//!
//! `waiters + streams` echo tasks go into a paused queue. Each of the first `waiters` tasks
//! gets a long-poll (`GET /v1/tasks/{id}?wait=60`) on a connection of its own, each of the
//! other `streams` an SSE stream (`GET /v1/tasks/{id}/events`). Once every stream has
//! delivered its first event and the server is idle again (every long-poll is parked), the
//! queue is resumed. Per waiter, the latency is the time the client got the answer minus the
//! task's `finished_at` (the server's clock, the same machine). `finished_at` has millisecond
//! resolution, so each latency is overstated by 0–1 ms (0.5 ms on average).
//!
//! Resumed as it is, the queue runs every task at once at drain speed (a burst: the latency
//! is mostly how long 11,000 answers take to write). With `concurrency`, the queue is resumed
//! with that limit, so tasks end a few at a time while the rest still wait: the latency of one
//! wake-up with thousands of waiters parked.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::client::{Conn, Error, now_us, rfc3339_us};
use crate::proc;
use crate::queue;
use crate::stats::Latencies;

/// Connections being opened at once: more would overflow the server's accept backlog.
const OPENING: usize = 256;
/// How long the whole wake-up may take before the run counts as failed.
const DEADLINE: Duration = Duration::from_secs(120);

pub struct Args {
    pub addr: SocketAddr,
    /// The server's process id, for its RSS and to see when it is idle.
    pub pid: u32,
    pub queue: String,
    pub waiters: usize,
    pub streams: usize,
    /// How many of the queue's tasks may run at once after the resume (none: no limit).
    pub concurrency: Option<u64>,
}

/// Prints `RESULT waiters=… streams=… rss_idle_kib=… rss_waiting_kib=… rss_after_kib=…
/// all_answered_s=… poll_p50_us=… … sse_p50_us=… …`.
pub async fn run(args: Args) -> Result<(), Error> {
    let mut conn = Conn::open(args.addr).await?;
    queue::set_paused(&mut conn, &args.queue, true).await?;
    let filled = queue::fill(args.addr, &args.queue, args.waiters + args.streams, 2, true).await?;
    let (poll_ids, sse_ids) = filled.ids.split_at(args.waiters);
    let rss_idle = proc::rss_kib(args.pid).unwrap_or(0);

    // Answers arrive here: (task id, answer time, finished_at as the answer said, if it did).
    let (answers, mut received) = mpsc::unbounded_channel::<(String, i64, Option<i64>)>();
    // One message per waiter once it is live: a long-poll connected, a stream's first event.
    let (live, mut live_waiters) = mpsc::unbounded_channel::<()>();
    let opening = Arc::new(Semaphore::new(OPENING));
    let mut clients = JoinSet::new();
    for id in poll_ids {
        let (id, answers, opening) = (id.clone(), answers.clone(), Arc::clone(&opening));
        let (addr, live) = (args.addr, live.clone());
        clients.spawn(async move {
            let permit = opening.acquire_owned().await?;
            let mut conn = Conn::open(addr).await?;
            drop(permit);
            // Connected: the request goes out next, without waiting for anything.
            let _ = live.send(());
            let path = format!("/v1/tasks/{id}?wait=60");
            let response = conn.send(Method::GET, &path, &[], None).await?;
            // The head and the small body come in one read: the head's arrival is the answer.
            let answered = now_us();
            if response.status() != StatusCode::OK {
                return Err(format!("long-poll {id}: {}", response.status()).into());
            }
            let body = response.into_body().collect().await?.to_bytes();
            let task: Value = serde_json::from_slice(&body)?;
            let finished = task["finished_at"].as_str().and_then(rfc3339_us);
            let _ = answers.send((id, answered, finished));
            Ok::<_, Error>(())
        });
    }
    for id in sse_ids {
        let (id, answers, opening) = (id.clone(), answers.clone(), Arc::clone(&opening));
        let (addr, live) = (args.addr, live.clone());
        clients.spawn(async move {
            let permit = opening.acquire_owned().await?;
            let mut conn = Conn::open(addr).await?;
            drop(permit);
            let path = format!("/v1/tasks/{id}/events");
            let accept = [("accept", "text/event-stream")];
            let response = conn.send(Method::GET, &path, &accept, None).await?;
            if response.status() != StatusCode::OK {
                return Err(format!("stream {id}: {}", response.status()).into());
            }
            let mut body = response.into_body();
            let mut buffer = BytesMut::new();
            let mut first = true;
            while let Some(frame) = body.frame().await {
                let Ok(data) = frame?.into_data() else {
                    continue;
                };
                let received = now_us();
                buffer.extend_from_slice(&data);
                while let Some(event) = next_event(&mut buffer) {
                    if first {
                        first = false;
                        let _ = live.send(());
                    }
                    if is_terminal(&event) {
                        let _ = answers.send((id, received, None));
                        return Ok(());
                    }
                }
            }
            Err(format!("stream {id} ended before the task finished").into())
        });
    }
    drop((answers, live));

    // Every long-poll is connected and every stream delivered its current state; once the
    // server is idle, every long-poll is parked too.
    for _ in 0..filled.ids.len() {
        live_waiters
            .recv()
            .await
            .ok_or("a waiter failed before it was live")?;
    }
    let settled = proc::settle(args.pid, Duration::from_secs(30)).await;
    let rss_waiting = proc::rss_kib(args.pid).unwrap_or(0);
    eprintln!(
        "wake-up: {} long-polls and {} streams open (server idle after {:.1} s), RSS {} MiB; resuming",
        poll_ids.len(),
        sse_ids.len(),
        settled.as_secs_f64(),
        rss_waiting / 1024
    );

    let resumed = now_us();
    let resume = match args.concurrency {
        Some(limit) => json!({ "paused": false, "concurrency": limit }),
        None => json!({ "paused": false }),
    };
    queue::patch(&mut conn, &args.queue, resume).await?;
    let mut answered: Vec<(String, i64, Option<i64>)> = Vec::with_capacity(filled.ids.len());
    let collect = async {
        while let Some(answer) = received.recv().await {
            answered.push(answer);
        }
    };
    tokio::time::timeout(DEADLINE, collect)
        .await
        .map_err(|_| "not every waiter was answered in time")?;
    while let Some(client) = clients.join_next().await {
        client??;
    }
    let last_answer = answered
        .iter()
        .map(|(_, at, _)| *at)
        .max()
        .unwrap_or(resumed);
    let rss_after = proc::rss_kib(args.pid).unwrap_or(0);

    // The streams' events carry no finished_at: read it from each task.
    let mut poll = Latencies::default();
    let mut sse = Latencies::default();
    for (id, at, finished) in answered {
        match finished {
            Some(finished) => poll.record(at - finished),
            None => {
                let task = conn
                    .json(
                        Method::GET,
                        &format!("/v1/tasks/{id}"),
                        None,
                        StatusCode::OK,
                    )
                    .await?;
                let finished = task["finished_at"]
                    .as_str()
                    .and_then(rfc3339_us)
                    .ok_or("a finished task without finished_at")?;
                sse.record(at - finished);
            }
        }
    }
    if poll.len() != poll_ids.len() || sse.len() != sse_ids.len() {
        return Err("a long-poll answered before its task finished".into());
    }
    println!(
        "RESULT waiters={} streams={} rss_idle_kib={rss_idle} rss_waiting_kib={rss_waiting} \
         rss_after_kib={rss_after} all_answered_s={:.3}{}{}",
        poll_ids.len(),
        sse_ids.len(),
        (last_answer - resumed) as f64 / 1e6,
        poll.fields("poll_"),
        sse.fields("sse_")
    );
    Ok(())
}

/// Takes one complete event (up to a blank line) off the front of `buffer`.
fn next_event(buffer: &mut BytesMut) -> Option<String> {
    let end = buffer.windows(2).position(|w| w == b"\n\n")?;
    let event = buffer.split_to(end + 2);
    Some(String::from_utf8_lossy(&event).into_owned())
}

/// Whether an SSE event is a `task` event in a terminal state.
fn is_terminal(event: &str) -> bool {
    let Some(data) = event.lines().find_map(|line| line.strip_prefix("data:")) else {
        return false;
    };
    let Ok(data) = serde_json::from_str::<Value>(data.trim()) else {
        return false;
    };
    matches!(
        data["state"].as_str(),
        Some("succeeded" | "failed" | "cancelled")
    )
}
