//! Traces: spans opened at the api edge (a submit) and per attempt in the engine, exported
//! over OTLP/HTTP when `--otlp-endpoint` is set; W3C `traceparent` carried in and out.
//!
//! ```text
//! caller span ─► submit span (POST /v1/tasks) ─► attempt 1 ─► http kind's request, onward
//!  (header)        stored with the task          attempt 2 …   (its traceparent header)
//! ```
//!
//! A span here is a record made when its work has ended, not an object that lives while it
//! runs: an attempt may start on one node (or a remote worker's lease) and end on another, so
//! its span is written by whoever ends it, from the task as stored (`started_at`, the outcome)
//! and the stored context. The attempt's span id is derived from the task id and the attempt
//! number ([`TraceContext::attempt`]), so the id the `http` kind sends onward while the attempt
//! runs is the id of the span exported when it ends, without storing it.
//!
//! With `--otlp-endpoint` unset the [`Tracer`] is off: no span is built, nothing is queued,
//! and a submit only keeps the caller's valid `traceparent` for propagation (a task submitted
//! without one is not traced). Spans go to a bounded queue that drops (and counts) when full,
//! so tracing never blocks a request; `otlp` sends them. No axum types here.

mod otlp;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::metrics;
use crate::task::{
    Millis, Task, TaskId, TraceContext, TraceParent, new_span_id, now_millis, parse_tracestate,
};

pub use otlp::{Attr, Span, SpanKind};

/// Where spans go. Cheap to clone; clones share one exporter. `Default` is off.
#[derive(Clone, Default)]
pub struct Tracer {
    exporter: Option<Arc<otlp::Exporter>>,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer").field("on", &self.is_on()).finish()
    }
}

impl Tracer {
    /// A tracer that exports to `endpoint` + `/v1/traces`, queueing at most `max_queued`
    /// spans. Starts the exporter task: call it inside the runtime.
    pub fn start(endpoint: &url::Url, max_queued: usize) -> Result<Tracer, reqwest::Error> {
        let exporter = otlp::Exporter::start(endpoint, max_queued)?;
        Ok(Tracer {
            exporter: Some(Arc::new(exporter)),
        })
    }

    pub fn is_on(&self) -> bool {
        self.exporter.is_some()
    }

    /// Sends what is queued and stops the exporter (at shutdown, after the last attempt).
    pub async fn shutdown(&self) {
        if let Some(exporter) = &self.exporter {
            exporter.shutdown().await;
        }
    }

    /// Opens the span of a submit that came with these `traceparent` and `tracestate`
    /// headers (as text). A header that does not parse is ignored, as the W3C specification
    /// asks: the submit then starts a new trace (or, with the tracer off, is not traced).
    pub fn submit(
        &self,
        traceparent: Option<&str>,
        tracestate: Option<&str>,
        route: &'static str,
    ) -> SubmitSpan {
        let incoming = traceparent.and_then(TraceParent::parse);
        let state = incoming.and(tracestate.and_then(parse_tracestate));
        if !self.is_on() {
            return SubmitSpan {
                context: incoming.map(|parent| TraceContext { parent, state }),
                open: None,
            };
        }
        let own = match incoming {
            Some(parent) => parent.child(new_span_id()),
            None => TraceParent::new_root(),
        };
        SubmitSpan {
            context: Some(TraceContext { parent: own, state }),
            open: Some(OpenSpan {
                tracer: self.clone(),
                parent_span_id: incoming.map(|parent| parent.span_id),
                start_ns: unix_nanos(),
                route,
            }),
        }
    }

    /// The context an attempt of `task` runs under, as it goes onward (the `http` kind's
    /// `traceparent`): the attempt's own span when spans are exported, else the stored one.
    pub fn attempt_context(&self, task: &Task) -> Option<TraceContext> {
        let stored = task.trace.as_ref()?;
        if !self.is_on() {
            return Some(stored.clone());
        }
        Some(TraceContext {
            parent: stored.attempt(task.id, task.attempt),
            state: stored.state.clone(),
        })
    }

    /// Records the span of the attempt of `task` that just ended (`expired`: its lease ran
    /// out), from its start (`started_at`: the claim or the remote lease) to now or its end.
    pub fn attempt_ended(&self, task: &Task, expired: bool) {
        let (Some(exporter), Some(stored)) = (&self.exporter, &task.trace) else {
            return;
        };
        if !stored.parent.sampled() {
            return;
        }
        let outcome = metrics::attempt_outcome(task, expired);
        let ended_at = task.finished_at.unwrap_or_else(now_millis);
        let error = match outcome {
            "succeeded" | "cancelled" => None,
            _ => Some(
                task.errors
                    .last()
                    .filter(|error| error.attempt == task.attempt)
                    .map_or_else(|| outcome.to_owned(), |error| error.message.clone()),
            ),
        };
        exporter.record(Span {
            name: "attempt".into(),
            context: stored.attempt(task.id, task.attempt),
            parent_span_id: Some(stored.parent.span_id),
            trace_state: stored.state.clone(),
            kind: SpanKind::Consumer,
            start_ns: millis_to_nanos(task.started_at.unwrap_or(ended_at)),
            end_ns: millis_to_nanos(ended_at),
            attributes: vec![
                ("taskd.task.id", Attr::Str(task.id.to_string())),
                ("taskd.queue", Attr::Str(task.queue.to_string())),
                ("taskd.kind", Attr::Str(task.kind.to_string())),
                ("taskd.attempt", Attr::Int(task.attempt.into())),
                ("taskd.outcome", Attr::Str(outcome.to_owned())),
                ("taskd.state", Attr::Str(task.state.as_str().to_owned())),
            ],
            error,
        });
    }
}

/// A submit's trace: the context to store with its tasks, and its span while open.
pub struct SubmitSpan {
    context: Option<TraceContext>,
    open: Option<OpenSpan>,
}

struct OpenSpan {
    tracer: Tracer,
    parent_span_id: Option<[u8; 8]>,
    start_ns: u64,
    route: &'static str,
}

impl SubmitSpan {
    /// What the submitted tasks store: their attempts become children of this span.
    pub fn context(&self) -> Option<TraceContext> {
        self.context.clone()
    }

    /// Ends the span with the response's `status` and the tasks the submit stored.
    pub fn end(self, status: u16, tasks: &[TaskId]) {
        let (Some(open), Some(context)) = (self.open, self.context) else {
            return;
        };
        let Some(exporter) = &open.tracer.exporter else {
            return;
        };
        if !context.parent.sampled() {
            return;
        }
        let mut attributes = vec![
            ("http.request.method", Attr::Str("POST".into())),
            ("http.route", Attr::Str(open.route.into())),
            ("http.response.status_code", Attr::Int(status.into())),
        ];
        match tasks {
            [] => {}
            [id] => attributes.push(("taskd.task.id", Attr::Str(id.to_string()))),
            _ => attributes.push(("taskd.batch.size", Attr::Int(tasks.len() as i64))),
        }
        exporter.record(Span {
            name: format!("POST {}", open.route),
            context: context.parent,
            parent_span_id: open.parent_span_id,
            trace_state: context.state,
            kind: SpanKind::Server,
            start_ns: open.start_ns,
            end_ns: unix_nanos().max(open.start_ns),
            attributes,
            // A server span is in error for 5xx only: a 4xx is the client's.
            error: (status >= 500).then(|| format!("answered {status}")),
        });
    }
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64)
}

fn millis_to_nanos(ms: Millis) -> u64 {
    (ms.max(0) as u64).saturating_mul(1_000_000)
}
