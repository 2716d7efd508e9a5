//! Server-Sent Events: `GET /v1/tasks/{id}/events` (one task: its current state, then every
//! change, ending after the terminal one) and `GET /v1/events` (the firehose, filtered).
//!
//! Each stream is a producer task writing into a small bounded channel that the response
//! body drains. A client that reads slowly fills the channel; its producer then falls behind
//! the hub, gets `Lagged`, tells the client with a `reset` event (reason `lagged`) and resumes
//! from the event log — memory stays bounded and no event is skipped. Both streams resume
//! after `Last-Event-ID`; a firehose resume from before the oldest retained event first gets
//! a `reset` (reason `expired`): the events in between are gone with their tasks.
//!
//! The firehose's `label=key:value` filter looks each task up once (labels never change after
//! submit) rather than widening every event and the event log with the task's labels: only
//! label-filtered streams pay, one read per task, not per event.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{Query, TaskIdPath};
use super::tasks::label_filter;
use super::{AppState, Route};
use crate::access::{QueueScope, Scope};
use crate::engine::{Engine, Subscription};
use crate::store::EventFilter;
use crate::task::{Kind, QueueName, TaskEvent, TaskId, TaskState};

/// Events waiting for one slow client before its producer falls back to the log.
const STREAM_BUFFER: usize = 64;
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

fn sse(receiver: mpsc::Receiver<Event>) -> Response {
    // The gauge of open streams goes down when the response body (and so this) is dropped.
    let open = crate::metrics::Open::event_stream();
    let stream = futures::stream::unfold((receiver, open), |(mut receiver, open)| async move {
        receiver
            .recv()
            .await
            .map(|event| (Ok(event), (receiver, open)))
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

/// Forwards matching events to `out` from the log after `from`, then live, until `until`
/// says the stream is done, the client leaves, or shutdown begins.
struct Forwarder {
    engine: Engine,
    selector: Selector,
    out: mpsc::Sender<Event>,
    live: Subscription,
    /// The caller's queues: the log is read through it, as the live subscription is.
    scope: QueueScope,
    /// The last seq forwarded (or skipped as not matching).
    last: i64,
    /// Ends the stream after this event (the task stream's terminal event).
    end_on_terminal: bool,
    /// Ends the stream once the log is read (a resume of a task that already finished).
    log_only: bool,
    /// The label verdicts of the tasks seen (used only with a label filter).
    labels: LabelCache,
}

enum Flow {
    Continue,
    Done,
}

impl Forwarder {
    async fn send(&mut self, event: &TaskEvent) -> Flow {
        if event.seq <= self.last {
            return Flow::Continue;
        }
        self.last = event.seq;
        if !self.selector.matches(event) {
            return Flow::Continue;
        }
        if let Some(label) = &self.selector.label
            && !self
                .labels
                .carries(&self.engine, &self.scope, event.task_id, label)
                .await
        {
            return Flow::Continue;
        }
        if self.out.send(task_event(event)).await.is_err() {
            return Flow::Done;
        }
        if self.end_on_terminal && event.state.is_terminal() {
            return Flow::Done;
        }
        Flow::Continue
    }

    /// Reads the log after `last` until it is exhausted; a gap before the oldest retained
    /// event is announced with `reset`.
    async fn catch_up(&mut self) -> Flow {
        if self.selector.task.is_none()
            && let Ok(Some((oldest, _))) = self.engine.event_bounds().await
            && oldest > self.last + 1
        {
            if self.out.send(expired_event(oldest)).await.is_err() {
                return Flow::Done;
            }
            self.last = oldest - 1;
        }
        let filter = EventFilter {
            task: self.selector.task,
        };
        loop {
            let Ok(page) = self
                .engine
                .events_after(self.last, filter.clone(), PAGE, &self.scope)
                .await
            else {
                return Flow::Done;
            };
            for event in &page.events {
                if let Flow::Done = self.send(event).await {
                    return Flow::Done;
                }
            }
            // Events outside the caller's queues were read too: the next page starts after.
            self.last = self.last.max(page.read_up_to.unwrap_or(self.last));
            if !page.full {
                return Flow::Continue;
            }
        }
    }

    async fn run(mut self) {
        let draining = self.engine.draining();
        if let Flow::Done = self.catch_up().await {
            return;
        }
        if self.log_only {
            return;
        }
        loop {
            let received = tokio::select! {
                received = self.live.recv() => received,
                () = draining.cancelled() => return,
                () = self.out.closed() => return,
            };
            let flow = match received {
                Ok(event) => self.send(&event).await,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if self.out.send(lagged_event(self.last)).await.is_err() {
                        return;
                    }
                    self.catch_up().await
                }
                Err(broadcast::error::RecvError::Closed) => Flow::Done,
            };
            if let Flow::Done = flow {
                return;
            }
        }
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
    let (out, receiver) = mpsc::channel(STREAM_BUFFER);
    let last = match resume {
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
            // The channel is new and empty: this cannot fail for want of room.
            let _ = out.try_send(task_event(&current));
            if task.state.is_terminal() {
                return Ok(sse(receiver));
            }
            newest
        }
    };
    let forwarder = Forwarder {
        engine,
        selector: Selector {
            task: Some(id),
            ..Selector::default()
        },
        out,
        live,
        scope: caller.queues,
        last,
        end_on_terminal: true,
        // Finished already: what follows `last` is all in the log; then the stream ends.
        log_only: task.state.is_terminal(),
        labels: LabelCache::default(),
    };
    tokio::spawn(forwarder.run());
    Ok(sse(receiver))
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
    let (out, receiver) = mpsc::channel(STREAM_BUFFER);
    let forwarder = Forwarder {
        engine,
        selector,
        out,
        live,
        scope: caller.queues,
        last,
        end_on_terminal: false,
        log_only: false,
        labels: LabelCache::default(),
    };
    tokio::spawn(forwarder.run());
    Ok(sse(receiver))
}
