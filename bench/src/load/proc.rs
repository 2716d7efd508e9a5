//! What `/proc` says about the server: its resident memory and CPU time, and a sampler of
//! the memory once a second (the `rss` subcommand).

use std::time::{Duration, Instant};

use crate::client::Error;

/// `VmRSS` of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// User plus system CPU time of `pid`, in clock ticks (1/100 s on Linux).
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at state (field 3);
    // utime and stime are fields 14 and 15.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Waits until `pid` used less than 5% of a core over 500 ms (it has handled what was sent
/// to it), or `limit` passed. Returns how long it waited.
pub async fn settle(pid: u32, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut before = cpu_ticks(pid).unwrap_or(0);
    while started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = cpu_ticks(pid).unwrap_or(0);
        if now.saturating_sub(before) <= 2 {
            break;
        }
        before = now;
    }
    started.elapsed()
}

/// Samples `VmRSS` of `pid` every `every` for `duration`; prints each sample to stderr and
/// `RESULT samples=… first_kib=… min_kib=… max_kib=… last_kib=…`, where min and max leave out
/// the first `settle` (the server's warm-up: connections, buffers and caches being created).
pub async fn sample(
    pid: u32,
    every: Duration,
    duration: Duration,
    settle: Duration,
) -> Result<(), Error> {
    let started = Instant::now();
    let mut ticks = tokio::time::interval(every);
    let mut first = None;
    let mut settled: Vec<u64> = Vec::new();
    while started.elapsed() < duration {
        ticks.tick().await;
        let rss = rss_kib(pid).ok_or_else(|| format!("no process {pid}"))?;
        let at = started.elapsed();
        eprintln!("rss: {:5.1} s: {rss} KiB", at.as_secs_f64());
        first.get_or_insert(rss);
        if at >= settle {
            settled.push(rss);
        }
    }
    let min = settled.iter().copied().min().unwrap_or(0);
    let max = settled.iter().copied().max().unwrap_or(0);
    println!(
        "RESULT samples={} first_kib={} min_kib={min} max_kib={max} last_kib={}",
        settled.len(),
        first.unwrap_or(0),
        settled.last().copied().unwrap_or(0)
    );
    Ok(())
}

/// CPU time of a process's threads, grouped: the SQLite writer thread, the tokio threads
/// (async workers and blocking-pool readers share the name), and the rest.
#[derive(Debug, Default, Clone, Copy)]
pub struct ThreadTimes {
    /// Nanoseconds on a CPU and waiting in a runqueue for one, per group.
    writer: (u64, u64),
    tokio: (u64, u64),
    other: (u64, u64),
}

impl ThreadTimes {
    /// Reads `/proc/PID/task/*/schedstat` (on-CPU ns, runqueue ns, timeslices).
    pub fn read(pid: u32) -> ThreadTimes {
        let mut times = ThreadTimes::default();
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return times;
        };
        for task in tasks.flatten() {
            let path = task.path();
            let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            let stat = std::fs::read_to_string(path.join("schedstat")).unwrap_or_default();
            let mut fields = stat
                .split_whitespace()
                .map(|f| f.parse::<u64>().unwrap_or(0));
            let (on_cpu, waiting) = (fields.next().unwrap_or(0), fields.next().unwrap_or(0));
            let group = match comm.trim() {
                "taskd-sqlite-wr" => &mut times.writer,
                "tokio-rt-worker" => &mut times.tokio,
                _ => &mut times.other,
            };
            group.0 += on_cpu;
            group.1 += waiting;
        }
        times
    }

    /// `writer_cpu=… writer_wait=… tokio_cpu=… tokio_wait=… other_cpu=…`: percent of one core
    /// spent since `earlier`, over `seconds`, on a CPU and waiting for one (a thread that
    /// waits for a CPU a lot shares the machine with something else: the load generator, or
    /// other work on it).
    pub fn fields_since(&self, earlier: &ThreadTimes, seconds: f64) -> String {
        let pct = |now: u64, then: u64| now.saturating_sub(then) as f64 / 1e7 / seconds;
        format!(
            "writer_cpu={:.0} writer_wait={:.0} tokio_cpu={:.0} tokio_wait={:.0} other_cpu={:.0}",
            pct(self.writer.0, earlier.writer.0),
            pct(self.writer.1, earlier.writer.1),
            pct(self.tokio.0, earlier.tokio.0),
            pct(self.tokio.1, earlier.tokio.1),
            pct(self.other.0, earlier.other.0),
        )
    }
}

/// Prints `RESULT writer_cpu=… …` for `pid`'s threads over the next `duration`.
pub async fn threads(pid: u32, duration: Duration) -> Result<(), Error> {
    let before = ThreadTimes::read(pid);
    tokio::time::sleep(duration).await;
    let after = ThreadTimes::read(pid);
    println!(
        "RESULT {}",
        after.fields_since(&before, duration.as_secs_f64())
    );
    Ok(())
}
