//! Server-Sent Events: `GET /v1/tasks/{id}/events` (one task: its current state, then every
//! change, ending after the terminal one) and `GET /v1/events` (the firehose, filtered).
//!
//! Each stream's events are decided inside its response body, one when the connection can
//! take one: no task and no channel of its own between the hub and the socket (in a burst
//! of ends, each such hop waited its turn for a runtime thread). A client that reads slowly
//! leaves its subscription unread; it falls behind the hub, gets `Lagged`, tells the client
//! with a `reset` event (reason `lagged`) and resumes from the event log — memory stays
//! bounded (at most one page of the log waits) and no event is skipped. Both streams resume
//! after `Last-Event-ID`; a firehose resume from before the oldest retained event first gets
//! a `reset` (reason `expired`): the events in between are gone with their tasks.
//!
//! The firehose's `label=key:value` filter looks each task up once (labels never change after
//! submit) rather than widening every event and the event log with the task's labels: only
//! label-filtered streams pay, one read per task, not per event.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{Query, TaskIdPath};
use super::tasks::label_filter;
use super::{AppState, Route};
use crate::access::{QueueScope, Scope};
use crate::engine::{Engine, Subscription};
use crate::store::EventFilter;
use crate::task::{Kind, QueueName, TaskEvent, TaskId, TaskState};

/// Events one catch-up read takes from the log.
const PAGE: usize = 500;
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub(super) fn routes() -> Vec<Route> {
    vec![
        Route::get("/v1/tasks/{id}/events", axum::routing::get(task_events))
            .scope(Scope::Read)
            .long_poll(),
        Route::get("/v1/events", axum::routing::get(firehose))
            .scope(Scope::Read)
            .query(&["queue", "kind", "state", "label"])
            .long_poll(),
    ]
}

/// Which events a stream forwards.
#[derive(Debug, Clone, Default)]
struct Selector {
    task: Option<TaskId>,
    queue: Option<QueueName>,
    kind: Option<Kind>,
    state: Option<TaskState>,
    /// `key:value`: only events of tasks with this label. Events do not carry labels (the
    /// log stays narrow); the forwarder looks the task up, see [`LabelCache`].
    label: Option<(String, String)>,
}

impl Selector {
    fn matches(&self, event: &TaskEvent) -> bool {
        self.task.is_none_or(|id| event.task_id == id)
            && self.queue.as_ref().is_none_or(|q| &event.queue == q)
            && self.kind.as_ref().is_none_or(|k| &event.kind == k)
            && self.state.is_none_or(|s| event.state == s)
    }
}

/// Which tasks of a label-filtered stream carry the label. Labels are set at submit and never
/// change, so one lookup per task answers for all its events; a task already deleted has no
/// events worth sending. Bounded: past `LABEL_CACHE` entries it starts over, which costs
/// lookups, never correctness.
#[derive(Debug, Default)]
struct LabelCache(HashMap<TaskId, bool>);

/// Tasks whose label verdict one stream remembers.
const LABEL_CACHE: usize = 10_000;

impl LabelCache {
    async fn carries(
        &mut self,
        engine: &Engine,
        scope: &QueueScope,
        id: TaskId,
        (key, value): &(String, String),
    ) -> bool {
        if let Some(&carries) = self.0.get(&id) {
            return carries;
        }
        let carries = engine
            .get(id, scope)
            .await
            .is_ok_and(|task| task.labels.get(key) == Some(value));
        if self.0.len() >= LABEL_CACHE {
            self.0.clear();
        }
        self.0.insert(id, carries);
        carries
    }
}

fn last_event_id(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    headers
        .get("last-event-id")
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .ok_or_else(|| ApiError::InvalidHeader("Last-Event-ID must be an event id".into()))
        })
        .transpose()
}

fn task_event(event: &TaskEvent) -> Event {
    Event::default()
        .id(event.seq.to_string())
        .event("task")
        .json_data(event)
        .unwrap_or_else(|_| Event::default().comment("unserializable event"))
}

/// `reset`, reason `expired`: events between the client's last and `oldest` are gone.
fn expired_event(oldest: i64) -> Event {
    Event::default().event("reset").data(
        json!({
            "reason": "expired",
            "detail": "events before this point are no longer retained",
            "oldest_seq": oldest,
        })
        .to_string(),
    )
}

/// `reset`, reason `lagged`: the live stream outran this client; what follows comes from the
/// log, starting right after `last`, so nothing is missed.
fn lagged_event(last: i64) -> Event {
    Event::default().event("reset").data(
        json!({
            "reason": "lagged",
            "detail": "the client fell behind the live stream; resuming from the event log",
            "resume_after": last,
        })
        .to_string(),
    )
}

fn sse(forwarder: Forwarder) -> Response {
    // The gauge of open streams goes down when the response body (and so this) is dropped.
    let open = crate::metrics::Open::event_stream();
    let stream = futures::stream::unfold((forwarder, open), |(mut forwarder, open)| async move {
        forwarder
            .next()
            .await
            .map(|event| (Ok(event), (forwarder, open)))
    });
    let stream: std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>> =
        Box::pin(stream);
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    // Tell nginx and friends not to buffer the stream.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// The events of one stream: matching events from the log after `last`, then live, until
/// the stream is done or shutdown begins. It runs inside the response body, asked for the
/// next event only when the connection can take one; a client that leaves drops it.
struct Forwarder {
    engine: Engine,
    selector: Selector,
    live: Subscription,
    /// The caller's queues: the log is read through it, as the live subscription is.
    scope: QueueScope,
    /// The last seq forwarded (or skipped as not matching).
    last: i64,
    /// Ends the stream after this event (the task stream's terminal event).
    end_on_terminal: bool,
    /// The label verdicts of the tasks seen (used only with a label filter).
    labels: LabelCache,
    /// Events decided on and not yet sent: at most one page of the log.
    pending: VecDeque<Event>,
    phase: Phase,
    draining: CancellationToken,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading the log, a page at a time; `then_live`: go live once it is read (a resume
    /// of a task that already finished ends there instead).
    CatchUp {
        then_live: bool,
    },
    Live,
    Done,
}

impl Forwarder {
    fn new(engine: Engine, selector: Selector, live: Subscription, scope: QueueScope) -> Self {
        let draining = engine.draining();
        Forwarder {
            engine,
            selector,
            live,
            scope,
            last: 0,
            end_on_terminal: false,
            labels: LabelCache::default(),
            pending: VecDeque::new(),
            phase: Phase::CatchUp { then_live: true },
            draining,
        }
    }

    /// The next event to send; `None` ends the stream.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            match self.phase {
                Phase::Done => return None,
                Phase::CatchUp { then_live } => {
                    let page_full = self.catch_up_page().await;
                    if self.phase == Phase::Done || page_full {
                        continue;
                    }
                    self.phase = if then_live { Phase::Live } else { Phase::Done };
                }
                Phase::Live => {
                    let received = tokio::select! {
                        received = self.live.recv() => received,
                        () = self.draining.cancelled() => {
                            self.phase = Phase::Done;
                            continue;
                        }
                    };
                    match received {
                        Ok(event) => self.take(&event).await,
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            self.pending.push_back(lagged_event(self.last));
                            self.phase = Phase::CatchUp { then_live: true };
                        }
                        Err(broadcast::error::RecvError::Closed) => self.phase = Phase::Done,
                    }
                }
            }
        }
    }

    /// Decides on one event: queued to be sent if it is new and matches; the stream is done
    /// after a task stream's terminal event.
    async fn take(&mut self, event: &TaskEvent) {
        if event.seq <= self.last || self.phase == Phase::Done {
            return;
        }
        self.last = event.seq;
        if !self.selector.matches(event) {
            return;
        }
        if let Some(label) = &self.selector.label
            && !self
                .labels
                .carries(&self.engine, &self.scope, event.task_id, label)
                .await
        {
            return;
        }
        self.pending.push_back(task_event(event));
        if self.end_on_terminal && event.state.is_terminal() {
            self.phase = Phase::Done;
        }
    }

    /// Reads one page of the log after `last` (a gap before the oldest retained event is
    /// announced first, with `reset`); `true` if the page was full, so more may follow.
    async fn catch_up_page(&mut self) -> bool {
        if self.selector.task.is_none()
            && let Ok(Some((oldest, _))) = self.engine.event_bounds().await
            && oldest > self.last + 1
        {
            self.pending.push_back(expired_event(oldest));
            self.last = oldest - 1;
        }
        let filter = EventFilter {
            task: self.selector.task,
        };
        let Ok(page) = self
            .engine
            .events_after(self.last, filter, PAGE, &self.scope)
            .await
        else {
            self.phase = Phase::Done;
            return false;
        };
        for event in &page.events {
            self.take(event).await;
        }
        // Events outside the caller's queues were read too: the next page starts after.
        self.last = self.last.max(page.read_up_to.unwrap_or(self.last));
        page.full
    }
}

async fn task_events(
    State(state): State<AppState>,
    caller: Caller,
    TaskIdPath(id): TaskIdPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let resume = last_event_id(&headers)?;
    let engine = state.engine;
    // Subscribe first, then read: whatever happens in between arrives live.
    let live = engine.subscribe_task(id);
    let newest = engine.event_bounds().await?.map_or(0, |(_, newest)| newest);
    let task = engine.get(id, &caller.queues).await?;
    let mut forwarder = Forwarder::new(
        engine,
        Selector {
            task: Some(id),
            ..Selector::default()
        },
        live,
        caller.queues,
    );
    forwarder.end_on_terminal = true;
    forwarder.last = match resume {
        Some(last) => last,
        None => {
            // The current state first, as of the newest event so far.
            let current = TaskEvent {
                seq: newest,
                task_id: task.id,
                queue: task.queue.clone(),
                kind: task.kind.clone(),
                state: task.state,
                attempt: task.attempt,
                progress: task.progress.clone(),
                at: crate::task::now_millis(),
            };
            forwarder.pending.push_back(task_event(&current));
            newest
        }
    };
    if task.state.is_terminal() {
        // Finished already: a fresh stream has said so; a resume reads what follows `last`
        // from the log, where it all is, and ends.
        forwarder.phase = match resume {
            Some(_) => Phase::CatchUp { then_live: false },
            None => Phase::Done,
        };
    }
    Ok(sse(forwarder))
}

#[derive(Debug, Deserialize)]
struct FirehoseQuery {
    queue: Option<String>,
    kind: Option<String>,
    state: Option<String>,
    /// `key:value`
    label: Option<String>,
}

async fn firehose(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Query(query): Query<FirehoseQuery>,
) -> Result<Response, ApiError> {
    let invalid = |name: &str, error: &dyn std::fmt::Display| {
        ApiError::InvalidQuery(format!("{name}: {error}"))
    };
    let selector = Selector {
        task: None,
        queue: query
            .queue
            .map(QueueName::parse)
            .transpose()
            .map_err(|e| invalid("queue", &e))?,
        kind: query
            .kind
            .map(Kind::parse)
            .transpose()
            .map_err(|e| invalid("kind", &e))?,
        state: query
            .state
            .map(|s| s.parse::<TaskState>())
            .transpose()
            .map_err(|e| invalid("state", &e))?,
        label: query
            .label
            .as_deref()
            .map(label_filter)
            .transpose()
            .map_err(|e| invalid("label", &e))?,
    };
    let resume = last_event_id(&headers)?;
    let engine = state.engine;
    let live = engine.subscribe(&caller.queues, selector.queue.as_ref())?;
    let last = match resume {
        Some(last) => last,
        // From now on: the newest event so far is the starting point.
        None => engine.event_bounds().await?.map_or(0, |(_, newest)| newest),
    };
    let mut forwarder = Forwarder::new(engine, selector, live, caller.queues);
    forwarder.last = last;
    Ok(sse(forwarder))
}
