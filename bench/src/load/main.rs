//! `taskd-load`: the scenarios of `bench/run` that wrk cannot drive. Each subcommand runs one
//! scenario against a server that `bench/run` started, logs its progress to stderr and prints
//! one `RESULT key=value …` line to stdout for the table.
//!
//! # Layout
//! - `client`: one HTTP/1.1 connection (hyper, no pool) and the wall clock.
//! - `queue`: pause/resume a queue, read its counts, fill it with batches.
//! - `drain`, `e2e`, `wakeup`: the scenarios.
//! - `proc`: the server's RSS and its threads' CPU time from `/proc`; the `rss` and
//!   `threads` samplers.
//! - `stats`: exact percentiles of the latencies.

mod client;
mod drain;
mod e2e;
mod proc;
mod queue;
mod stats;
mod wakeup;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "taskd-load", about = "Load scenarios for bench/run.")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Fill a paused queue with echo tasks, resume it, time until it is empty.
    Drain {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value = "drain")]
        queue: String,
        #[arg(long, default_value_t = 100_000)]
        tasks: usize,
        /// Batch requests in flight while filling.
        #[arg(long, default_value_t = 2)]
        concurrency: usize,
        /// The server's process id: report how busy its threads were during the drain.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// Fill a paused queue with echo tasks and leave them there.
    Fill {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value = "backlog")]
        queue: String,
        #[arg(long, default_value_t = 1_000_000)]
        tasks: usize,
        #[arg(long, default_value_t = 2)]
        concurrency: usize,
    },
    /// An open loop of submits at a fixed rate; latency from send to answer.
    E2e {
        #[arg(long)]
        addr: SocketAddr,
        /// Submits per second.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
        /// Measured seconds.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Seconds at the same rate before the measurement, not recorded.
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// Connections opened before the clock starts (more open if all are busy).
        #[arg(long, default_value_t = 32)]
        connections: usize,
        /// Send `Prefer: wait=N`.
        #[arg(long)]
        wait: Option<f64>,
        /// Count an answer as a success only if its task succeeded.
        #[arg(long)]
        expect_succeeded: bool,
    },
    /// Long-polls and SSE streams parked on queued tasks; latency from finish to answer.
    Wakeup {
        #[arg(long)]
        addr: SocketAddr,
        /// The server's process id (for its RSS).
        #[arg(long)]
        pid: u32,
        #[arg(long, default_value = "wake")]
        queue: String,
        #[arg(long, default_value_t = 10_000)]
        waiters: usize,
        #[arg(long, default_value_t = 1_000)]
        streams: usize,
        /// Resume the queue with this concurrency limit (paced ends) instead of none.
        #[arg(long)]
        concurrency: Option<u64>,
    },
    /// How busy a process's threads are over a while: on a CPU, waiting for one.
    Threads {
        #[arg(long)]
        pid: u32,
        /// Seconds to watch.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
    },
    /// Sample a process's RSS every second.
    Rss {
        #[arg(long)]
        pid: u32,
        /// Seconds to sample for.
        #[arg(long, default_value_t = 60.0)]
        duration: f64,
        /// Seconds of warm-up left out of min and max.
        #[arg(long, default_value_t = 5.0)]
        settle: f64,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let outcome = match Cli::parse().scenario {
        Scenario::Drain {
            addr,
            queue,
            tasks,
            concurrency,
            pid,
        } => {
            let args = drain::Args {
                addr,
                queue,
                tasks,
                concurrency,
                pid,
            };
            drain::run(args).await
        }
        Scenario::Fill {
            addr,
            queue,
            tasks,
            concurrency,
        } => fill(addr, &queue, tasks, concurrency).await,
        Scenario::E2e {
            addr,
            rate,
            duration,
            warmup,
            connections,
            wait,
            expect_succeeded,
        } => {
            let args = e2e::Args {
                addr,
                rate,
                duration,
                warmup,
                connections,
                wait,
                expect_succeeded,
            };
            e2e::run(args).await
        }
        Scenario::Wakeup {
            addr,
            pid,
            queue,
            waiters,
            streams,
            concurrency,
        } => {
            let args = wakeup::Args {
                addr,
                pid,
                queue,
                waiters,
                streams,
                concurrency,
            };
            wakeup::run(args).await
        }
        Scenario::Threads { pid, duration } => {
            proc::threads(pid, Duration::from_secs_f64(duration)).await
        }
        Scenario::Rss {
            pid,
            duration,
            settle,
        } => {
            let every = Duration::from_secs(1);
            let settle = Duration::from_secs_f64(settle);
            proc::sample(pid, every, Duration::from_secs_f64(duration), settle).await
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("taskd-load: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Pauses `queue`, lifts its own limit to hold `tasks`, fills it; prints
/// `RESULT tasks=… seconds=… per_s=…`.
async fn fill(
    addr: SocketAddr,
    queue: &str,
    tasks: usize,
    concurrency: usize,
) -> Result<(), client::Error> {
    let mut conn = client::Conn::open(addr).await?;
    queue::set_paused(&mut conn, queue, true).await?;
    queue::set_max_queued(&mut conn, queue, tasks as u64).await?;
    let filled = queue::fill(addr, queue, tasks, concurrency, false).await?;
    let counts = queue::counts(&mut conn, queue).await?;
    if counts.queued != tasks as u64 {
        return Err(format!("expected {tasks} queued, found {}", counts.queued).into());
    }
    println!(
        "RESULT tasks={tasks} seconds={:.3} per_s={:.0}",
        filled.seconds,
        tasks as f64 / filled.seconds
    );
    Ok(())
}
