//! Traces: a submit under a W3C `traceparent` makes a submit span (child of the caller's) and
//! one attempt span per attempt (child of the submit's), exported over OTLP/HTTP JSON to a
//! collector — here a receiver on an ephemeral port; the `http` kind and webhooks send the
//! trace onward. A malformed `traceparent` starts a new trace; with no collector configured,
//! the caller's context is still passed on.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app_with, wait_for};
use crate::receiver::Receiver;
use crate::worker_processes::taskd_worker;
use crate::workers::{lease_one, make_remote};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn caller_traceparent() -> String {
    format!("00-{TRACE_ID}-{CALLER_SPAN}-01")
}

/// A server exporting spans to `collector` (which the outbound allow-list does not name).
async fn spawn_traced(
    collector: &Receiver,
    adjust: impl FnOnce(&mut taskd::config::ServeConfig),
) -> TestApp {
    let endpoint = collector.base.parse().expect("a URL");
    spawn_app_with(|config| {
        config.otlp_endpoint = Some(endpoint);
        adjust(config);
    })
    .await
}

/// Submits `body` to `path` with these trace headers; returns the answer's JSON.
async fn submit_traced(app: &TestApp, path: &str, body: Value, headers: &[(&str, &str)]) -> Value {
    let mut request = app.client.post(app.url(path)).json(&body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("the submit is answered");
    assert_eq!(response.status(), 202, "the submit is accepted");
    response.json().await.expect("a JSON answer")
}

/// Every span the collector received, from all its OTLP JSON requests.
fn spans(collector: &Receiver) -> Vec<Value> {
    let mut spans = Vec::new();
    for request in collector.received() {
        assert_eq!(request.path, "/v1/traces", "spans go to URL/v1/traces");
        assert_eq!(request.header("content-type"), "application/json");
        let body = request.json();
        for resource in body["resourceSpans"].as_array().expect("resourceSpans") {
            for scope in resource["scopeSpans"].as_array().expect("scopeSpans") {
                spans.extend(scope["spans"].as_array().expect("spans").iter().cloned());
            }
        }
    }
    spans
}

/// A span attribute's value as text (string or integer).
fn attribute(span: &Value, key: &str) -> String {
    let found = span["attributes"]
        .as_array()
        .and_then(|attributes| attributes.iter().find(|a| a["key"] == key))
        .unwrap_or_else(|| panic!("span {span} has no attribute {key}"));
    let value = &found["value"];
    value["stringValue"]
        .as_str()
        .or(value["intValue"].as_str())
        .expect("a string or integer value")
        .to_owned()
}

/// Waits until the collector has the span named `name` of task `id`.
async fn span_of(collector: &Receiver, name: &str, id: &str) -> Value {
    wait_for(&format!("the {name} span of task {id}"), || async {
        spans(collector)
            .into_iter()
            .find(|span| span["name"] == name && attribute(span, "taskd.task.id") == id)
    })
    .await
}

/// The submit span is a child of the caller's span, in the caller's trace; the attempt span
/// is a child of the submit span and names the task, queue, kind, attempt and outcome.
#[tokio::test]
async fn an_attempt_span_is_a_child_of_the_submit_span() {
    let collector = Receiver::start().await;
    let app = spawn_traced(&collector, |_| {}).await;
    let traceparent = caller_traceparent();
    let task = submit_traced(
        &app,
        "/v1/tasks",
        json!({"kind": "echo", "input": {"n": 1}, "queue": "traced"}),
        &[("traceparent", &traceparent), ("tracestate", "vendor=x")],
    )
    .await;
    let id = task["id"].as_str().expect("an id");
    let attempt = span_of(&collector, "attempt", id).await;
    let submit = span_of(&collector, "POST /v1/tasks", id).await;

    assert_eq!(submit["traceId"], TRACE_ID);
    assert_eq!(submit["parentSpanId"], CALLER_SPAN);
    assert_ne!(submit["spanId"], CALLER_SPAN);
    assert_eq!(submit["kind"], 2, "a server span");
    assert_eq!(attribute(&submit, "http.response.status_code"), "202");

    assert_eq!(attempt["traceId"], TRACE_ID);
    assert_eq!(attempt["parentSpanId"], submit["spanId"]);
    assert_eq!(attempt["traceState"], "vendor=x");
    assert_eq!(attribute(&attempt, "taskd.queue"), "traced");
    assert_eq!(attribute(&attempt, "taskd.kind"), "echo");
    assert_eq!(attribute(&attempt, "taskd.attempt"), "1");
    assert_eq!(attribute(&attempt, "taskd.outcome"), "succeeded");
    let start: u64 = attempt["startTimeUnixNano"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let end: u64 = attempt["endTimeUnixNano"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(start > 0 && start <= end, "{attempt}");
}

/// A failing task's attempts are each a span under the same submit span, retried ones and
/// the last failed one marked as errors.
#[tokio::test]
async fn every_attempt_gets_a_span_of_its_own() {
    let collector = Receiver::start().await;
    let app = spawn_traced(&collector, |_| {}).await;
    let task = submit_traced(
        &app,
        "/v1/tasks",
        json!({"kind": "fail", "input": {"message": "no"}, "max_attempts": 2,
               "backoff": {"base_ms": 10, "cap_ms": 20}}),
        &[("traceparent", &caller_traceparent())],
    )
    .await;
    let id = task["id"].as_str().unwrap().to_owned();
    let attempts = wait_for("two attempt spans", || async {
        let mut attempts: Vec<Value> = spans(&collector)
            .into_iter()
            .filter(|s| s["name"] == "attempt" && attribute(s, "taskd.task.id") == id)
            .collect();
        attempts.sort_by_key(|s| attribute(s, "taskd.attempt"));
        (attempts.len() == 2).then_some(attempts)
    })
    .await;
    let submit = span_of(&collector, "POST /v1/tasks", &id).await;
    assert_eq!(attribute(&attempts[0], "taskd.outcome"), "retried");
    assert_eq!(attribute(&attempts[1], "taskd.outcome"), "failed");
    for attempt in &attempts {
        assert_eq!(attempt["parentSpanId"], submit["spanId"]);
        assert_eq!(attempt["status"]["code"], 2, "an error status: {attempt}");
    }
    assert_ne!(attempts[0]["spanId"], attempts[1]["spanId"]);
}

/// The `http` kind sends the attempt's context onward: the service it calls sees the
/// submitted trace id and the attempt span as its parent. The collector is reached outside
/// the allow-list, which still refuses a task aimed at it.
#[tokio::test]
async fn the_http_kind_forwards_the_attempts_traceparent() {
    let collector = Receiver::start().await;
    let service = Receiver::start().await;
    let app = spawn_traced(&collector, |config| config.allow_outbound = service.allow()).await;
    let task = submit_traced(
        &app,
        "/v1/tasks",
        json!({"kind": "http", "input": {"url": service.url("/work")}}),
        &[("traceparent", &caller_traceparent())],
    )
    .await;
    let id = task["id"].as_str().unwrap();
    let called = service.wait_received(1).await;
    let forwarded = called[0].header("traceparent").to_owned();
    let attempt = span_of(&collector, "attempt", id).await;
    assert_eq!(
        forwarded,
        format!("00-{TRACE_ID}-{}-01", attempt["spanId"].as_str().unwrap())
    );

    let sneaky = submit_traced(
        &app,
        "/v1/tasks",
        json!({"kind": "http", "input": {"url": collector.url("/v1/traces")}, "max_attempts": 1}),
        &[],
    )
    .await;
    let ended = app.wait_terminal(sneaky["id"].as_str().unwrap()).await;
    assert_eq!(ended["state"], "failed");
    assert_eq!(ended["error"]["type"], "outbound_refused");
}

/// A malformed `traceparent` is ignored, not refused: the submit starts a new trace, with no
/// parent, and the attempt joins it.
#[tokio::test]
async fn a_malformed_traceparent_starts_a_new_trace() {
    let collector = Receiver::start().await;
    let app = spawn_traced(&collector, |_| {}).await;
    let malformed = format!("00-{}-{CALLER_SPAN}-01", TRACE_ID.to_uppercase());
    let task = submit_traced(
        &app,
        "/v1/tasks",
        json!({"kind": "echo"}),
        &[("traceparent", &malformed), ("tracestate", "vendor=x")],
    )
    .await;
    let id = task["id"].as_str().unwrap();
    let attempt = span_of(&collector, "attempt", id).await;
    let submit = span_of(&collector, "POST /v1/tasks", id).await;
    let trace_id = submit["traceId"].as_str().unwrap();
    assert_eq!(trace_id.len(), 32);
    assert_ne!(trace_id, TRACE_ID.to_lowercase());
    assert!(submit.get("parentSpanId").is_none(), "a root: {submit}");
    assert!(
        submit.get("traceState").is_none(),
        "no state without a parent"
    );
    assert_eq!(attempt["traceId"], trace_id);
    assert_eq!(attempt["parentSpanId"], submit["spanId"]);
}

/// A batch's `traceparent` applies to every task of it: one submit span, and each task's
/// attempt is its child; a webhook carries the task's trace (the submit span) onward.
#[tokio::test]
async fn a_batch_shares_one_submit_span_and_webhooks_carry_it() {
    let collector = Receiver::start().await;
    let hook = Receiver::start().await;
    let app = spawn_traced(&collector, |config| config.allow_outbound = hook.allow()).await;
    let item = json!({"kind": "echo", "callback": {"url": hook.url("/done")}});
    let answer = submit_traced(
        &app,
        "/v1/tasks/batch",
        json!({"tasks": [item, {"kind": "echo"}]}),
        &[("traceparent", &caller_traceparent())],
    )
    .await;
    let ids: Vec<&str> = answer["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    let first = span_of(&collector, "attempt", ids[0]).await;
    let second = span_of(&collector, "attempt", ids[1]).await;
    let batch = wait_for("the batch's submit span", || async {
        spans(&collector)
            .into_iter()
            .find(|s| s["name"] == "POST /v1/tasks/batch")
    })
    .await;
    assert_eq!(attribute(&batch, "taskd.batch.size"), "2");
    assert_eq!(batch["parentSpanId"], CALLER_SPAN);
    for attempt in [&first, &second] {
        assert_eq!(attempt["traceId"], TRACE_ID);
        assert_eq!(attempt["parentSpanId"], batch["spanId"]);
    }
    let delivered = hook.wait_received(1).await;
    assert_eq!(
        delivered[0].header("traceparent"),
        format!("00-{TRACE_ID}-{}-01", batch["spanId"].as_str().unwrap())
    );
}

/// Without `--otlp-endpoint` nothing is exported, yet a caller's valid `traceparent` still
/// goes onward unchanged with the `http` kind; a malformed one is dropped.
#[tokio::test]
async fn without_a_collector_the_callers_context_is_passed_on() {
    let service = Receiver::start().await;
    let app = spawn_app_with(|config| config.allow_outbound = service.allow()).await;
    let traced = caller_traceparent();
    for (header, forwarded) in [(traced.as_str(), traced.as_str()), ("00-bad", "")] {
        let task = submit_traced(
            &app,
            "/v1/tasks",
            json!({"kind": "http", "input": {"url": service.url("/work")}}),
            &[("traceparent", header), ("tracestate", "vendor=x")],
        )
        .await;
        app.wait_terminal(task["id"].as_str().unwrap()).await;
        let called = service.received().pop().expect("the service was called");
        assert_eq!(called.header("traceparent"), forwarded, "for {header}");
        let state = if forwarded.is_empty() { "" } else { "vendor=x" };
        assert_eq!(called.header("tracestate"), state, "for {header}");
    }
}

/// A remote worker's attempt: the lease hands out the attempt's `traceparent`, and the
/// attempt span — from the lease to the worker's `complete` — carries that span id; an
/// attempt whose lease runs out ends its span `lease_expired`.
#[tokio::test]
async fn a_remote_attempt_spans_from_lease_to_complete_or_expiry() {
    let collector = Receiver::start().await;
    let app = spawn_traced(&collector, |_| {}).await;
    make_remote(&app, "far").await;
    let task = submit_traced(
        &app,
        "/v1/tasks",
        json!({"kind": "anything", "queue": "far"}),
        &[
            ("traceparent", &caller_traceparent()),
            ("tracestate", "vendor=x"),
        ],
    )
    .await;
    let id = task["id"].as_str().unwrap();
    let leased = lease_one(&app, "far", "w1", 30_000).await;
    assert_eq!(leased["id"], id);
    assert_eq!(leased["tracestate"], "vendor=x");
    let traceparent = leased["traceparent"]
        .as_str()
        .expect("a traceparent")
        .to_owned();
    let done = app
        .post_json(
            &format!("/v1/tasks/{id}/complete"),
            &json!({"lease": leased["lease"], "result": 1}),
        )
        .await;
    assert_eq!(done.status(), 200);
    let attempt = span_of(&collector, "attempt", id).await;
    assert_eq!(
        traceparent,
        format!("00-{TRACE_ID}-{}-01", attempt["spanId"].as_str().unwrap())
    );
    assert_eq!(attribute(&attempt, "taskd.outcome"), "succeeded");

    let lost = submit_traced(
        &app,
        "/v1/tasks",
        json!({"kind": "anything", "queue": "far", "max_attempts": 1}),
        &[("traceparent", &caller_traceparent())],
    )
    .await;
    let lost = lost["id"].as_str().unwrap();
    lease_one(&app, "far", "w2", 1_000).await;
    let expired = span_of(&collector, "attempt", lost).await;
    assert_eq!(attribute(&expired, "taskd.outcome"), "lease_expired");
    assert_eq!(expired["status"]["code"], 2);
}

/// `taskd worker` hands a traced task's context to its command as `TRACEPARENT` and
/// `TRACESTATE` (here, with no collector, the caller's own); an untraced task gets neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taskd_worker_passes_the_trace_to_its_command() {
    let app = spawn_app_with(|_| {}).await;
    make_remote(&app, "shell").await;
    let script = "printf '{\"tp\": \"%s\", \"ts\": \"%s\"}' \"$TRACEPARENT\" \"$TRACESTATE\"";
    let _worker = taskd_worker(&app, "shell", &["sh", "-c", script]);
    let traced = submit_traced(
        &app,
        "/v1/tasks",
        json!({"kind": "shell", "queue": "shell"}),
        &[
            ("traceparent", &caller_traceparent()),
            ("tracestate", "vendor=x"),
        ],
    )
    .await;
    let plain = submit_traced(
        &app,
        "/v1/tasks",
        json!({"kind": "shell", "queue": "shell"}),
        &[],
    )
    .await;
    let traced = app.wait_terminal(traced["id"].as_str().unwrap()).await;
    assert_eq!(
        traced["result"],
        json!({"tp": caller_traceparent(), "ts": "vendor=x"})
    );
    let plain = app.wait_terminal(plain["id"].as_str().unwrap()).await;
    assert_eq!(plain["result"], json!({"tp": "", "ts": ""}));
}
