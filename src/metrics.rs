//! Metrics: the one place that names every metric taskd exports. The engine and the api
//! record into it through the functions below; `GET /metrics` renders it in the Prometheus
//! text format.
//!
//! Two kinds of numbers live here:
//!
//! - **Process-wide** ones, recorded as things happen into the global `metrics` recorder
//!   (installed once per process, [`handle`]): counters, histograms, and gauges that only
//!   move up and down (open connections, long-polls, streams). Several servers in one
//!   process (the integration tests) add into the same series, which sums correctly.
//! - **Per-store** gauges (tasks per queue and state, the oldest queued task's age), read from
//!   the server's own store when scraped, at most once per [`DEPTH_EVERY`], and appended by
//!   [`Depth`]. They are set values, so they are never put into the global recorder where
//!   two servers would overwrite each other.
//!
//! Labels are bounded: queue, kind, outcome, method, route template and status — never a
//! task id, a raw path or a task's labels. No axum types here but [`track_http`]'s.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use dashmap::DashMap;
use metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::sync::Mutex;

use crate::api::gate::{Entry, Gate};
use crate::store::QueueInfo;
use crate::task::{Kind, Millis, QueueName, Task, TaskState, now_millis};

pub const TASKS_SUBMITTED: &str = "taskd_tasks_submitted_total";
pub const ATTEMPTS_STARTED: &str = "taskd_attempts_started_total";
pub const ATTEMPTS_ENDED: &str = "taskd_attempts_ended_total";
pub const WEBHOOK_DELIVERIES: &str = "taskd_webhook_deliveries_total";
pub const TRACE_SPANS: &str = "taskd_trace_spans_total";
pub const SCHEDULE_SLOTS: &str = "taskd_schedule_slots_total";
pub const HTTP_REQUESTS: &str = "taskd_http_requests_total";
pub const STORE_COMMITS: &str = "taskd_store_commits_total";
pub const QUEUE_WAIT: &str = "taskd_task_queue_wait_seconds";
pub const RUN_TIME: &str = "taskd_attempt_run_seconds";
pub const SUBMIT_TO_FINISH: &str = "taskd_task_total_seconds";
pub const HTTP_LATENCY: &str = "taskd_http_request_duration_seconds";
pub const OPEN_LONG_POLLS: &str = "taskd_open_long_polls";
pub const OPEN_EVENT_STREAMS: &str = "taskd_open_event_streams";
pub const OPEN_CONNECTIONS: &str = "taskd_open_connections";
/// Per-store, rendered by [`Depth`].
pub const TASKS: &str = "taskd_tasks";
/// Per-store, rendered by [`Depth`].
pub const OLDEST_QUEUED_AGE: &str = "taskd_oldest_queued_age_seconds";

/// Buckets of the task timings (queue wait, run time, submit → finished): 5 ms to 1 h.
const TASK_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
/// Buckets of HTTP latency: 1 ms to 60 s (a long-poll may wait that long).
const HTTP_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// How often histograms' pending samples are folded in, scraped or not (bounds their memory).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);
/// The per-store gauges are read from the store at most this often.
pub const DEPTH_EVERY: Duration = Duration::from_secs(5);
/// The states whose counts are exported per queue.
const DEPTH_STATES: [TaskState; 4] = [
    TaskState::Waiting,
    TaskState::Queued,
    TaskState::Scheduled,
    TaskState::Running,
];

/// The process's recorder, installed on first use. A `OnceLock`: many servers in one process
/// (the tests) share one; `metrics` allows one global recorder per process.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(install)
}

fn install() -> PrometheusHandle {
    let builder = [QUEUE_WAIT, RUN_TIME, SUBMIT_TO_FINISH]
        .into_iter()
        .try_fold(PrometheusBuilder::new(), |builder, name| {
            builder.set_buckets_for_metric(Matcher::Full(name.to_owned()), TASK_BUCKETS)
        })
        .and_then(|builder| {
            builder.set_buckets_for_metric(Matcher::Full(HTTP_LATENCY.to_owned()), HTTP_BUCKETS)
        })
        // Proven safe: the bucket lists above are constant and not empty.
        .expect("bucket lists are not empty");
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    if let Err(error) = metrics::set_global_recorder(recorder) {
        // An embedding program installed its own: taskd's page then shows only per-store gauges.
        tracing::warn!(%error, "a metrics recorder is already installed; /metrics shows less");
    }
    describe();
    let upkeep = handle.clone();
    let spawned = std::thread::Builder::new()
        .name("taskd-metrics-upkeep".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start the metrics upkeep thread; scrapes do it instead");
    }
    handle
}

fn describe() {
    describe_counter!(
        TASKS_SUBMITTED,
        "Tasks accepted (replays of an idempotency key excluded)."
    );
    describe_counter!(
        ATTEMPTS_STARTED,
        "Attempts claimed to run, by queue and kind."
    );
    describe_counter!(
        ATTEMPTS_ENDED,
        "Attempts ended, by queue, kind and outcome (succeeded, failed, retried, timeout, cancelled, lease_expired)."
    );
    describe_counter!(
        WEBHOOK_DELIVERIES,
        "Completion webhook tries, by outcome (delivered, retry, gave_up)."
    );
    describe_counter!(
        TRACE_SPANS,
        "Spans for the OTLP exporter, by outcome (exported, dropped: the queue was full, failed: the collector did not take them)."
    );
    describe_counter!(
        SCHEDULE_SLOTS,
        "Schedule slots this node handled, by outcome (fired, replayed: another node fired it, skipped: overlap or catch-up, failed)."
    );
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests, by method, route template and status."
    );
    describe_counter!(
        STORE_COMMITS,
        "Store writes that stored something, by purpose (submit, claim, finish, ...): one transaction each; on SQLite concurrent writes share one group commit."
    );
    describe_histogram!(
        QUEUE_WAIT,
        Unit::Seconds,
        "From submit to the start of the first attempt."
    );
    describe_histogram!(
        RUN_TIME,
        Unit::Seconds,
        "How long an attempt ran, by queue, kind and outcome."
    );
    describe_histogram!(
        SUBMIT_TO_FINISH,
        Unit::Seconds,
        "From submit to the task's terminal state."
    );
    describe_histogram!(
        HTTP_LATENCY,
        Unit::Seconds,
        "Time to the response's head, by method and route template."
    );
    describe_gauge!(
        OPEN_LONG_POLLS,
        "Requests waiting for a task to finish (?wait=, Prefer: wait)."
    );
    describe_gauge!(OPEN_EVENT_STREAMS, "Open server-sent event streams.");
    describe_gauge!(OPEN_CONNECTIONS, "Open HTTP connections.");
}

/// The page: the process-wide metrics, then `depth`'s per-store gauges.
pub fn render(depth: &str) -> String {
    let handle = handle();
    handle.run_upkeep();
    let mut page = handle.render();
    page.push_str(depth);
    page
}

/// A task was accepted (not a replay).
pub fn task_submitted(task: &Task) {
    series(task).submitted.increment(1);
}

/// An attempt was claimed (locally or by a remote worker); `task` as claimed.
pub fn attempt_started(task: &Task) {
    let series = series(task);
    series.started.increment(1);
    if task.attempt == 1
        && let Some(started) = task.started_at
    {
        series.queue_wait.record(seconds(started - task.created_at));
    }
}

/// An attempt ended; `task` as it is after. `expired`: its lease ran out (the maintainer or
/// start-up recovery ended it, not its runner).
pub fn attempt_ended(task: &Task, expired: bool) {
    let index = outcome_index(task, expired);
    let outcome = OUTCOMES[index];
    let series = series(task);
    let (ended, run_time) = series.ended(index);
    ended.increment(1);
    let ended_at = task.finished_at.unwrap_or_else(now_millis);
    // The attempt's one log line, beside its counters.
    tracing::info!(
        target: "taskd::attempt",
        task = %task.id,
        queue = %task.queue,
        kind = %task.kind,
        attempt = task.attempt,
        outcome,
        duration_ms = task.started_at.map(|started| ended_at - started),
        "attempt ended"
    );
    if let Some(started) = task.started_at {
        run_time.record(seconds(ended_at - started));
    }
    if let Some(finished) = task.finished_at {
        series
            .total(task)
            .record(seconds(finished - task.created_at));
    }
}

/// What [`attempt_outcome`] answers, by [`outcome_index`].
const OUTCOMES: [&str; 6] = [
    "succeeded",
    "cancelled",
    "timeout",
    "lease_expired",
    "failed",
    "retried",
];

/// The handles of one queue and kind's task series, registered on first use and kept.
/// Registering looks a series up by name and labels (the label values allocated, hashed and
/// compared): five of those per drained task cost ~9,000 instructions, counted with
/// callgrind. The recorder never drops a series, so a kept handle stays the one it renders;
/// there are as many of these as queues × kinds, as there are series.
struct Series {
    submitted: Counter,
    started: Counter,
    queue_wait: Histogram,
    /// By [`OUTCOMES`]' order: attempts ended so, and their run time.
    ended: [OnceLock<(Counter, Histogram)>; OUTCOMES.len()],
    /// By terminal state (succeeded, failed, cancelled): submit to finish.
    total: [OnceLock<Histogram>; 3],
    queue: String,
    kind: String,
}

impl Series {
    fn new(queue: &QueueName, kind: &Kind) -> Series {
        let (queue, kind) = (queue.to_string(), kind.to_string());
        Series {
            submitted: counter!(TASKS_SUBMITTED, "queue" => queue.clone(), "kind" => kind.clone()),
            started: counter!(ATTEMPTS_STARTED, "queue" => queue.clone(), "kind" => kind.clone()),
            queue_wait: histogram!(QUEUE_WAIT, "queue" => queue.clone()),
            ended: Default::default(),
            total: Default::default(),
            queue,
            kind,
        }
    }

    /// The series of attempts ended with `OUTCOMES[index]`.
    fn ended(&self, index: usize) -> (Counter, Histogram) {
        let outcome = OUTCOMES[index];
        self.ended[index]
            .get_or_init(|| {
                let (queue, kind) = (self.queue.clone(), self.kind.clone());
                (
                    counter!(ATTEMPTS_ENDED, "queue" => queue.clone(), "kind" => kind.clone(), "outcome" => outcome),
                    histogram!(RUN_TIME, "queue" => queue, "kind" => kind, "outcome" => outcome),
                )
            })
            .clone()
    }

    fn total(&self, task: &Task) -> Histogram {
        let register = || histogram!(SUBMIT_TO_FINISH, "queue" => self.queue.clone(), "state" => task.state.as_str());
        match task.state {
            TaskState::Succeeded => self.total[0].get_or_init(register).clone(),
            TaskState::Failed => self.total[1].get_or_init(register).clone(),
            TaskState::Cancelled => self.total[2].get_or_init(register).clone(),
            _ => register(),
        }
    }
}

/// `task`'s queue and kind's series.
fn series(task: &Task) -> Arc<Series> {
    static SERIES: OnceLock<DashMap<QueueName, DashMap<Kind, Arc<Series>>>> = OnceLock::new();
    let all = SERIES.get_or_init(|| {
        // The recorder first: a handle taken before it is installed would count into nothing.
        handle();
        DashMap::new()
    });
    if let Some(kinds) = all.get(&task.queue)
        && let Some(series) = kinds.get(&task.kind)
    {
        return Arc::clone(&series);
    }
    let series = Arc::new(Series::new(&task.queue, &task.kind));
    let kinds = all.entry(task.queue.clone()).or_default();
    Arc::clone(&kinds.entry(task.kind.clone()).or_insert(series))
}

/// How the attempt that just ended went: the state it left, refined by its own error.
pub fn attempt_outcome(task: &Task, expired: bool) -> &'static str {
    OUTCOMES[outcome_index(task, expired)]
}

/// [`attempt_outcome`]'s answer, as its place in [`OUTCOMES`] (where [`Series`] keeps the
/// handles of each).
fn outcome_index(task: &Task, expired: bool) -> usize {
    let timed_out = task
        .errors
        .last()
        .is_some_and(|error| error.attempt == task.attempt && error.error_type == "timeout");
    match task.state {
        TaskState::Succeeded => 0,
        TaskState::Cancelled => 1,
        _ if timed_out => 2,
        _ if expired => 3,
        TaskState::Failed => 4,
        _ => 5,
    }
}

/// A webhook try ended: `delivered`, `retry` or `gave_up`.
pub fn webhook_delivery(outcome: &'static str) {
    counter!(WEBHOOK_DELIVERIES, "outcome" => outcome).increment(1);
}

/// Spans of the OTLP exporter: `exported`, `dropped` or `failed`.
pub fn trace_spans(outcome: &'static str, count: u64) {
    counter!(TRACE_SPANS, "outcome" => outcome).increment(count);
}

/// A store write that stored something committed, for `purpose` (`submit`, `claim`, …).
pub fn store_commit(purpose: &'static str) {
    static COMMITS: OnceLock<DashMap<&'static str, Counter>> = OnceLock::new();
    let commits = COMMITS.get_or_init(|| {
        // The recorder first, as in `series`.
        handle();
        DashMap::new()
    });
    // A read lock for the known purposes; `entry` would take the shard's write lock each time.
    match commits.get(purpose) {
        Some(counter) => counter.increment(1),
        None => commits
            .entry(purpose)
            .or_insert_with(|| counter!(STORE_COMMITS, "purpose" => purpose))
            .increment(1),
    }
}

/// A schedule's slot was handled: `fired`, `replayed`, `skipped` or `failed`.
pub fn schedule_slot(outcome: &'static str) {
    counter!(SCHEDULE_SLOTS, "outcome" => outcome).increment(1);
}

fn seconds(millis: Millis) -> f64 {
    millis.max(0) as f64 / 1000.0
}

/// Counts one of something open while it lives (a connection, a long-poll, a stream).
#[must_use = "the gauge goes down when this is dropped"]
pub struct Open(&'static Gauge);

impl Open {
    pub fn connection() -> Open {
        static GAUGE: OnceLock<Gauge> = OnceLock::new();
        Open::new(&GAUGE, OPEN_CONNECTIONS)
    }

    pub fn long_poll() -> Open {
        static GAUGE: OnceLock<Gauge> = OnceLock::new();
        Open::new(&GAUGE, OPEN_LONG_POLLS)
    }

    pub fn event_stream() -> Open {
        static GAUGE: OnceLock<Gauge> = OnceLock::new();
        Open::new(&GAUGE, OPEN_EVENT_STREAMS)
    }

    /// The gauge registered once, the recorder installed first (as in `series`).
    fn new(gauge: &'static OnceLock<Gauge>, name: &'static str) -> Open {
        let gauge = gauge.get_or_init(|| {
            handle();
            gauge!(name)
        });
        gauge.increment(1.0);
        Open(gauge)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Middleware: counts every request and times it to its response's head, labelled by the
/// route template that matched (`/v1/tasks/{id}`), never the raw path; `unmatched` for 404s.
/// It also writes the request's one log line (at info: request id, method, route, status,
/// latency), so the log and the metrics name requests alike.
#[derive(Clone)]
pub struct TrackHttp;

/// What [`TrackHttp`] keeps of a request for its answer: when it came, its method and route.
pub struct Tracked {
    started: Instant,
    method: axum::http::Method,
    route: Arc<RouteSeries>,
}

/// The HTTP series of one route template, registered on first use and kept (as [`Series`]
/// is, for the same reason): by method, the latency histogram and the requests counted by
/// status. Routes are templates or `unmatched`, methods and statuses few, so these stay small.
struct RouteSeries {
    route: String,
    by_method: std::sync::Mutex<Vec<MethodSeries>>,
}

struct MethodSeries {
    method: axum::http::Method,
    latency: Histogram,
    requests: Vec<(u16, Counter)>,
}

impl RouteSeries {
    /// The series of `route`.
    fn of(route: &str) -> Arc<RouteSeries> {
        static ROUTES: OnceLock<DashMap<String, Arc<RouteSeries>>> = OnceLock::new();
        let routes = ROUTES.get_or_init(|| {
            // The recorder first, as in `series`.
            handle();
            DashMap::new()
        });
        if let Some(series) = routes.get(route) {
            return Arc::clone(&series);
        }
        let series = routes.entry(route.to_owned()).or_insert_with(|| {
            Arc::new(RouteSeries {
                route: route.to_owned(),
                by_method: std::sync::Mutex::new(Vec::new()),
            })
        });
        Arc::clone(&series)
    }

    /// Records one answered request: its latency, and its count under its status.
    fn record(&self, method: &axum::http::Method, status: u16, seconds: f64) {
        let mut by_method = self.by_method.lock().unwrap_or_else(|e| e.into_inner());
        let index = match by_method.iter().position(|m| m.method == *method) {
            Some(index) => index,
            None => {
                let (method_label, route) = (method.as_str().to_owned(), self.route.clone());
                by_method.push(MethodSeries {
                    method: method.clone(),
                    latency: histogram!(HTTP_LATENCY, "method" => method_label, "route" => route),
                    requests: Vec::new(),
                });
                by_method.len() - 1
            }
        };
        let series = &mut by_method[index];
        series.latency.record(seconds);
        match series.requests.iter().find(|(known, _)| *known == status) {
            Some((_, counter)) => counter.increment(1),
            None => {
                let counter = counter!(HTTP_REQUESTS, "method" => method.as_str().to_owned(),
                    "route" => self.route.clone(), "status" => status.to_string());
                counter.increment(1);
                series.requests.push((status, counter));
            }
        }
    }
}

impl Gate for TrackHttp {
    type Kept = Tracked;

    fn enter(&self, request: Request) -> Entry<Tracked> {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", |path| path.as_str());
        let tracked = Tracked {
            started: Instant::now(),
            method: request.method().clone(),
            route: RouteSeries::of(route),
        };
        Entry::Pass(request, tracked)
    }

    fn leave(tracked: Tracked, response: Response) -> Response {
        let Tracked {
            started,
            method,
            route,
        } = tracked;
        let elapsed = started.elapsed().as_secs_f64();
        route.record(&method, response.status().as_u16(), elapsed);
        let latency_ms = elapsed * 1000.0;
        let request_id = response
            .headers()
            .get("x-request-id")
            .and_then(|id| id.to_str().ok())
            .unwrap_or_default();
        tracing::info!(
            target: "taskd::request",
            request_id,
            method = %method,
            route = %route.route,
            status = response.status().as_u16(),
            latency_ms = (latency_ms * 1000.0).round() / 1000.0,
            "request"
        );
        response
    }
}

/// The per-store gauges of one server, rendered from its last read of the store.
#[derive(Default)]
pub struct Depth {
    /// The last rendering and when it was read. A tokio mutex: held across the store read, so
    /// concurrent scrapes wait for one read instead of each making its own.
    cached: Mutex<Option<(Instant, String)>>,
}

impl Depth {
    /// The gauges' text, read anew by `read` if the last read is older than [`DEPTH_EVERY`].
    /// A failed read renders nothing (the process-wide metrics still serve).
    pub async fn text<F, Fut, E>(&self, read: F) -> String
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<QueueInfo>, E>>,
        E: std::fmt::Display,
    {
        let mut cached = self.cached.lock().await;
        if let Some((at, text)) = cached.as_ref()
            && at.elapsed() < DEPTH_EVERY
        {
            return text.clone();
        }
        let text = match read().await {
            Ok(queues) => depth_text(&queues, now_millis()),
            Err(error) => {
                tracing::warn!(%error, "cannot read queue depths for /metrics");
                String::new()
            }
        };
        *cached = Some((Instant::now(), text.clone()));
        text
    }
}

/// The per-queue gauges in the Prometheus text format.
fn depth_text(queues: &[QueueInfo], now: Millis) -> String {
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        text,
        "# HELP {TASKS} Tasks per queue and state, read from the store."
    );
    let _ = writeln!(text, "# TYPE {TASKS} gauge");
    for queue in queues {
        for state in DEPTH_STATES {
            let count = queue.counts.get(&state).copied().unwrap_or(0);
            let _ = writeln!(
                text,
                "{TASKS}{{queue=\"{}\",state=\"{}\"}} {count}",
                escape(queue.name.as_str()),
                state.as_str()
            );
        }
    }
    let _ = writeln!(
        text,
        "# HELP {OLDEST_QUEUED_AGE} Age of the oldest queued task per queue (0: none queued)."
    );
    let _ = writeln!(text, "# TYPE {OLDEST_QUEUED_AGE} gauge");
    for queue in queues {
        let age = queue
            .oldest_queued_at
            .map_or(0.0, |oldest| seconds(now - oldest));
        let _ = writeln!(
            text,
            "{OLDEST_QUEUED_AGE}{{queue=\"{}\"}} {age}",
            escape(queue.name.as_str())
        );
    }
    text
}

/// A label value as the text format wants it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::store::CallbackCounts;
    use crate::task::QueueName;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("a\nb"), r"a\nb");
    }

    #[test]
    fn depth_lists_each_queue_in_each_exported_state() {
        let queue = QueueInfo {
            name: QueueName::parse("emails").unwrap(),
            paused: false,
            concurrency: None,
            max_queued: None,
            callback: None,
            callbacks: CallbackCounts::default(),
            remote: false,
            rate: None,
            counts: BTreeMap::from([(TaskState::Queued, 4), (TaskState::Succeeded, 9)]),
            oldest_queued_at: Some(1_000),
            finished_last_minute: 0,
        };
        let text = depth_text(&[queue], 3_500);
        assert!(
            text.contains(r#"taskd_tasks{queue="emails",state="queued"} 4"#),
            "{text}"
        );
        assert!(
            text.contains(r#"taskd_tasks{queue="emails",state="running"} 0"#),
            "{text}"
        );
        assert!(!text.contains("succeeded"), "{text}");
        assert!(
            text.contains(r#"taskd_oldest_queued_age_seconds{queue="emails"} 2.5"#),
            "{text}"
        );
    }
}
