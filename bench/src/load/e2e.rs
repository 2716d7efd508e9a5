//! end-to-end: an open loop of submits that wait for their result.
//!
//! Sends are scheduled on a fixed clock (`rate` per second) whatever the answers do: a slow
//! answer never delays the next send (no coordinated omission). Each send takes an idle
//! connection, or opens one if all are busy. A send that leaves more than `LATE` after its
//! slot is counted as late — the load generator itself could not keep up, so the offered
//! rate was lower than asked. Latency runs from the send to the last byte of the answer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Method;
use tokio::sync::mpsc;

use crate::client::{Conn, Error};
use crate::stats::Latencies;

/// Tokio's timer ticks in milliseconds, so a send may leave up to 1 ms after its slot as a
/// matter of course; beyond 2 ms it is late.
const LATE: Duration = Duration::from_millis(2);
/// How many failed sends are described on stderr (the count is in the result either way).
const FAILURES_SHOWN: usize = 5;

pub struct Args {
    pub addr: SocketAddr,
    pub rate: f64,
    /// Measured seconds, after `warmup` seconds at the same rate that are not recorded.
    pub duration: f64,
    pub warmup: f64,
    /// Connections opened before the clock starts.
    pub connections: usize,
    /// `Prefer: wait=N`; `None` sends no `Prefer` (the baseline ignores it anyway).
    pub wait: Option<f64>,
    /// A success must carry `"state":"succeeded"` (taskd answered after the task finished).
    pub expect_succeeded: bool,
}

struct Sample {
    recorded: bool,
    late: Duration,
    latency_us: i64,
    ok: bool,
}

type Idle = Arc<Mutex<Vec<Conn>>>;

/// The idle connection used last, passing over those the server has closed: one opened at
/// the start and first needed after the server's header timeout (10 s by default) is gone.
fn take(idle: &Idle) -> Option<Conn> {
    let mut idle = idle.lock().unwrap_or_else(|e| e.into_inner());
    std::iter::from_fn(|| idle.pop()).find(|conn| !conn.is_closed())
}

/// Prints `RESULT sent=… ok=… failed=… late=… max_late_us=… connections=… p50_us=…`.
pub async fn run(args: Args) -> Result<(), Error> {
    let body = Bytes::from_static(br#"{"kind":"echo","input":{"n":1}}"#);
    let prefer = args.wait.map(|secs| format!("wait={secs}"));
    let mut conns = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        conns.push(Conn::open(args.addr).await?);
    }
    let idle: Idle = Arc::new(Mutex::new(conns));
    let opened = Arc::new(AtomicUsize::new(args.connections));
    let shown = Arc::new(AtomicUsize::new(0));
    let (samples, mut received) = mpsc::unbounded_channel::<Sample>();

    let period = Duration::from_secs_f64(1.0 / args.rate);
    let total = ((args.warmup + args.duration) * args.rate).round() as u32;
    let warm = (args.warmup * args.rate).round() as u32;
    let start = tokio::time::Instant::now() + Duration::from_millis(10);
    for i in 0..total {
        let due = start + period * i;
        tokio::time::sleep_until(due).await;
        let late = due.elapsed();
        let (idle, opened, samples) = (Arc::clone(&idle), Arc::clone(&opened), samples.clone());
        let shown = Arc::clone(&shown);
        let (body, prefer) = (body.clone(), prefer.clone());
        let addr = args.addr;
        let expect_succeeded = args.expect_succeeded;
        tokio::spawn(async move {
            let conn = match take(&idle) {
                Some(conn) => Ok(conn),
                None => {
                    opened.fetch_add(1, Ordering::Relaxed);
                    Conn::open(addr).await
                }
            };
            let headers: Vec<(&str, &str)> =
                prefer.iter().map(|p| ("prefer", p.as_str())).collect();
            let sent = Instant::now();
            let outcome = async {
                let mut conn = conn?;
                let response = conn
                    .send(Method::POST, "/v1/tasks", &headers, Some(body))
                    .await?;
                let status = response.status();
                let answer = response.into_body().collect().await?.to_bytes();
                let finished = !expect_succeeded || contains(&answer, br#""state":"succeeded""#);
                idle.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
                if status.is_success() && finished {
                    return Ok::<_, Error>(());
                }
                let answer = String::from_utf8_lossy(&answer);
                Err(format!("{status}: {}", answer.chars().take(300).collect::<String>()).into())
            }
            .await;
            if let Err(error) = &outcome
                && shown.fetch_add(1, Ordering::Relaxed) < FAILURES_SHOWN
            {
                eprintln!("send {i} failed: {error}");
            }
            let _ = samples.send(Sample {
                recorded: i >= warm,
                late,
                latency_us: sent.elapsed().as_micros() as i64,
                ok: outcome.is_ok(),
            });
        });
    }
    drop(samples);

    let (mut sent, mut ok, mut late, mut max_late) = (0u64, 0u64, 0u64, Duration::ZERO);
    let mut latencies = Latencies::default();
    while let Some(sample) = received.recv().await {
        if !sample.recorded {
            continue;
        }
        sent += 1;
        if sample.late > LATE {
            late += 1;
        }
        max_late = max_late.max(sample.late);
        if sample.ok {
            ok += 1;
            latencies.record(sample.latency_us);
        }
    }
    println!(
        "RESULT sent={sent} ok={ok} failed={} late={late} max_late_us={} connections={}{}",
        sent - ok,
        max_late.as_micros(),
        opened.load(Ordering::Relaxed),
        latencies.fields("")
    );
    Ok(())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}
