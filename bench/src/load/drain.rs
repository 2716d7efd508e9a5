//! drain: how fast a backlog of no-op tasks is worked off.
//!
//! The queue is paused, filled with `tasks` echo tasks in batches, then resumed; the clock
//! runs from the resume until no task is queued or running. The server must be serving only
//! this queue.
//!
//! How the end is seen matters: `GET /v1/queues/{queue}` counts the queue's finished tasks of
//! the last minute, which costs the server ~30 ms per call at 100,000 finished — polling it
//! would slow the drain it measures. Instead the newest task (claimed last: same priority,
//! FIFO) is long-polled, which costs nothing while it waits; after it, only the last running
//! tasks are left, and `GET /v1/tasks?state=…&limit=1` (one index probe) is polled every 5 ms
//! until none is queued or running.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde_json::Value;

use crate::client::{Conn, Error};
use crate::proc::ThreadTimes;
use crate::queue;

const FINE_POLL: Duration = Duration::from_millis(5);

pub struct Args {
    pub addr: SocketAddr,
    pub queue: String,
    pub tasks: usize,
    /// Batches in flight while filling.
    pub concurrency: usize,
    /// The server's process id, to report how busy its threads were.
    pub pid: Option<u32>,
}

/// Prints `RESULT tasks=… fill_s=… fill_per_s=… drain_s=… drain_per_s=…` (and the threads'
/// CPU use, given the server's pid).
pub async fn run(args: Args) -> Result<(), Error> {
    let mut conn = Conn::open(args.addr).await?;
    queue::set_paused(&mut conn, &args.queue, true).await?;
    let filled = queue::fill(args.addr, &args.queue, args.tasks, args.concurrency, false).await?;
    let before = queue::counts(&mut conn, &args.queue).await?;
    if before.queued != args.tasks as u64 {
        return Err(format!("expected {} queued, found {}", args.tasks, before.queued).into());
    }
    let last = newest(&mut conn, "queued")
        .await?
        .ok_or("no queued task after the fill")?;
    eprintln!(
        "drain: {} tasks queued in {:.2} s; resuming",
        args.tasks, filled.seconds
    );

    let threads = args.pid.map(ThreadTimes::read);
    let started = Instant::now();
    queue::set_paused(&mut conn, &args.queue, false).await?;
    let path = format!("/v1/tasks/{last}?wait=60");
    loop {
        let task = conn.json(Method::GET, &path, None, StatusCode::OK).await?;
        if matches!(
            task["state"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        ) {
            break;
        }
    }
    while newest(&mut conn, "queued").await?.is_some()
        || newest(&mut conn, "running").await?.is_some()
    {
        tokio::time::sleep(FINE_POLL).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let threads = match (args.pid, threads) {
        (Some(pid), Some(before)) => {
            format!(" {}", ThreadTimes::read(pid).fields_since(&before, seconds))
        }
        _ => String::new(),
    };

    let after = queue::counts(&mut conn, &args.queue).await?;
    let done = after.succeeded - before.succeeded;
    if !after.drained() || done != args.tasks as u64 {
        return Err(format!(
            "expected {} succeeded, found {done} ({} failed, {} scheduled)",
            args.tasks, after.failed, after.scheduled
        )
        .into());
    }
    println!(
        "RESULT tasks={} fill_s={:.3} fill_per_s={:.0} drain_s={:.3} drain_per_s={:.0}{threads}",
        args.tasks,
        filled.seconds,
        args.tasks as f64 / filled.seconds,
        seconds,
        args.tasks as f64 / seconds
    );
    Ok(())
}

/// The id of the newest task in `state`, any queue (listings are newest first).
async fn newest(conn: &mut Conn, state: &str) -> Result<Option<String>, Error> {
    let path = format!("/v1/tasks?state={state}&limit=1");
    let page: Value = conn.json(Method::GET, &path, None, StatusCode::OK).await?;
    Ok(page["tasks"][0]["id"].as_str().map(str::to_owned))
}
