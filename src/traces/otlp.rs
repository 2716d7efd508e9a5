//! The OTLP/HTTP exporter: a bounded queue of finished spans, and one task that sends them in
//! batches as OTLP JSON (`POST {endpoint}/v1/traces`, `application/json`), the standard
//! encoding every OpenTelemetry collector accepts.
//!
//! Recording never waits: a span that finds the queue full is dropped and counted
//! (`taskd_trace_spans_total{outcome="dropped"}`), as is a batch the collector refused or
//! did not answer (`failed`); a batch is not tried again, so a collector that is down costs
//! one request per batch, not a growing backlog.
//!
//! The endpoint is the operator's, set by flag: its client is this module's own, not the
//! outbound client of webhooks and the `http` kind, so the task allow-list neither blocks it
//! nor is widened by it. No task can make this client send anywhere.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics;
use crate::task::TraceParent;

/// The most spans one request carries.
const MAX_BATCH: usize = 512;
/// How long the first span of a batch waits for others to join it.
const LINGER: Duration = Duration::from_millis(200);
/// How long one export request may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for the last batch.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// OTLP's span kinds, by their numbers in the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Server = 2,
    Consumer = 5,
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Str(String),
    Int(i64),
}

/// A finished span.
#[derive(Debug, Clone)]
pub struct Span {
    pub name: String,
    /// Its trace and its own span id.
    pub context: TraceParent,
    pub parent_span_id: Option<[u8; 8]>,
    pub trace_state: Option<String>,
    pub kind: SpanKind,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attributes: Vec<(&'static str, Attr)>,
    /// `Some`: the span's status is an error, with this message.
    pub error: Option<String>,
}

pub(super) struct Exporter {
    /// Bounded: a full queue drops the span rather than holding its caller.
    queue: mpsc::Sender<Span>,
    /// Fires at shutdown: the sender sends what is queued, then stops.
    closing: CancellationToken,
    /// The sending task, awaited at shutdown; a tokio mutex since shutdown awaits under it.
    sender: Mutex<Option<JoinHandle<()>>>,
}

impl Exporter {
    pub(super) fn start(
        endpoint: &url::Url,
        max_queued: usize,
    ) -> Result<Exporter, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(EXPORT_TIMEOUT)
            .user_agent(concat!("taskd/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let url = format!("{}/v1/traces", endpoint.as_str().trim_end_matches('/'));
        let (queue, spans) = mpsc::channel(max_queued.max(1));
        let closing = CancellationToken::new();
        let sender = tokio::spawn(send_batches(client, url, spans, closing.clone()));
        Ok(Exporter {
            queue,
            closing,
            sender: Mutex::new(Some(sender)),
        })
    }

    pub(super) fn record(&self, span: Span) {
        if self.queue.try_send(span).is_err() {
            metrics::trace_spans("dropped", 1);
        }
    }

    pub(super) async fn shutdown(&self) {
        self.closing.cancel();
        if let Some(sender) = self.sender.lock().await.take()
            && tokio::time::timeout(FLUSH_TIMEOUT, sender).await.is_err()
        {
            tracing::warn!("the last spans could not be exported in time");
        }
    }
}

async fn send_batches(
    client: reqwest::Client,
    url: String,
    mut spans: mpsc::Receiver<Span>,
    closing: CancellationToken,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // Said once when exports start failing and once when they work again, not per batch.
    let mut failing = false;
    loop {
        let received = tokio::select! {
            received = spans.recv_many(&mut batch, MAX_BATCH) => received,
            () = closing.cancelled() => {
                spans.close();
                spans.recv_many(&mut batch, MAX_BATCH).await
            }
        };
        if received == 0 {
            return;
        }
        let deadline = tokio::time::Instant::now() + LINGER;
        while batch.len() < MAX_BATCH && !closing.is_cancelled() {
            let room = MAX_BATCH - batch.len();
            match tokio::time::timeout_at(deadline, spans.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let count = batch.len() as u64;
        let sent = client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(encode(&batch).to_string())
            .send()
            .await;
        batch.clear();
        match sent {
            Ok(answer) if answer.status().is_success() => {
                metrics::trace_spans("exported", count);
                if failing {
                    tracing::info!(%url, "exporting spans works again");
                    failing = false;
                }
            }
            answer => {
                metrics::trace_spans("failed", count);
                if !failing {
                    let why = match answer {
                        Ok(answer) => format!("the collector answered {}", answer.status()),
                        Err(error) => error.to_string(),
                    };
                    tracing::warn!(%url, why, "cannot export spans; dropping them until it works");
                    failing = true;
                }
            }
        }
    }
}

/// A batch as an OTLP `ExportTraceServiceRequest` in the protocol's JSON mapping: ids in
/// hex, 64-bit integers as decimal strings, enums as numbers.
pub fn encode(spans: &[Span]) -> Value {
    let spans: Vec<Value> = spans.iter().map(encode_span).collect();
    json!({
        "resourceSpans": [{
            "resource": {"attributes": [
                attribute("service.name", &Attr::Str("taskd".into())),
                attribute("service.version", &Attr::Str(env!("CARGO_PKG_VERSION").into())),
            ]},
            "scopeSpans": [{
                "scope": {"name": "taskd", "version": env!("CARGO_PKG_VERSION")},
                "spans": spans,
            }],
        }],
    })
}

fn encode_span(span: &Span) -> Value {
    let mut encoded = json!({
        "traceId": span.context.trace_id_hex(),
        "spanId": span.context.span_id_hex(),
        "name": span.name,
        "kind": span.kind as i32,
        "startTimeUnixNano": span.start_ns.to_string(),
        "endTimeUnixNano": span.end_ns.to_string(),
        "attributes": span.attributes.iter().map(|(key, value)| attribute(key, value)).collect::<Vec<_>>(),
        "status": match &span.error {
            None => json!({}),
            Some(message) => json!({"code": 2, "message": message}),
        },
    });
    if let Some(parent) = span.parent_span_id {
        encoded["parentSpanId"] = json!(hex::encode(parent));
    }
    if let Some(state) = &span.trace_state {
        encoded["traceState"] = json!(state);
    }
    encoded
}

fn attribute(key: &str, value: &Attr) -> Value {
    let value = match value {
        Attr::Str(text) => json!({"stringValue": text}),
        Attr::Int(number) => json!({"intValue": number.to_string()}),
    };
    json!({"key": key, "value": value})
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON mapping's details a collector checks: hex ids, string integers, numbers for enums.
    #[test]
    fn spans_encode_as_otlp_json() {
        let context =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let span = Span {
            name: "attempt".into(),
            context,
            parent_span_id: Some([1, 2, 3, 4, 5, 6, 7, 8]),
            trace_state: None,
            kind: SpanKind::Consumer,
            start_ns: 1,
            end_ns: 2,
            attributes: vec![("taskd.attempt", Attr::Int(3))],
            error: Some("boom".into()),
        };
        let encoded = encode(&[span]);
        let span = &encoded["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(span["spanId"], "00f067aa0ba902b7");
        assert_eq!(span["parentSpanId"], "0102030405060708");
        assert_eq!(span["kind"], 5);
        assert_eq!(span["startTimeUnixNano"], "1");
        assert_eq!(span["attributes"][0]["value"]["intValue"], "3");
        assert_eq!(span["status"]["code"], 2);
        assert!(span.get("traceState").is_none());
    }
}
