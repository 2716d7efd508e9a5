//! The contract holds: `openapi.yaml` documents exactly the routes the router serves, the
//! server answers each of them, and what it answers — status, required headers, content type,
//! problem `code` — is what the contract says for that operation.

use std::collections::BTreeSet;

use reqwest::header::{ALLOW, CONTENT_TYPE, HeaderMap};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::contract::{Contract, Operation, PROBLEM_JSON, SPEC_FILE, check_body};
use crate::helpers::{TestApp, spawn_app, spawn_app_with};

/// A well-formed task id that no test ever submits.
const FRESH_ID: &str = "00000000-0000-7000-8000-000000000000";
/// A valid queue name for the `{name}` of queue routes.
const PROBE_QUEUE: &str = "probe";
const EVENT_STREAM: &str = "text/event-stream";

/// An answer, read whole — but for an event stream, which does not end, only its status and
/// headers.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
    /// The body as received (empty for a stream).
    raw: Vec<u8>,
}

impl Answer {
    async fn read(response: reqwest::Response) -> Answer {
        let mut answer = Answer {
            status: response.status(),
            headers: response.headers().clone(),
            body: Value::Null,
            raw: Vec::new(),
        };
        // A stream would be read forever: keep its head, and drop the response, which closes
        // the connection and ends the stream on the server.
        if answer.content_type() == EVENT_STREAM {
            return answer;
        }
        let bytes = response.bytes().await.expect("a body");
        answer.body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        answer.raw = bytes.to_vec();
        answer
    }

    /// The media type, without parameters.
    fn content_type(&self) -> &str {
        self.headers
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .map_or("", str::trim)
    }

    fn code(&self) -> Option<&str> {
        (self.content_type() == PROBLEM_JSON)
            .then(|| self.body["code"].as_str())
            .flatten()
    }

    /// Not the router's own "no such route" or "no such method".
    fn is_routed(&self) -> bool {
        !(self.status == StatusCode::METHOD_NOT_ALLOWED
            || (self.status == StatusCode::NOT_FOUND && self.code() == Some("route_not_found")))
    }
}

/// Asserts that `answer` is one the contract documents for the operation: its status, its
/// required headers, its content type and, for a problem, its code.
#[track_caller]
fn assert_documented(contract: &Contract, operation: (&str, &str), answer: &Answer) {
    let (method, path) = operation;
    let status = answer.status;
    let Some(response) = contract.response(operation, status) else {
        panic!(
            "{method} {path} answered {status}, which is not documented: {}",
            answer.body
        );
    };
    let headers = response["headers"].as_object().cloned().unwrap_or_default();
    for (name, header) in &headers {
        if contract.resolve(header)["required"] == true {
            assert!(
                answer.headers.contains_key(name.as_str()),
                "{method} {path} {status} lacks the required header {name}"
            );
        }
    }
    if let Some(content) = response["content"].as_object() {
        let content_type = answer.content_type();
        assert!(
            content.contains_key(content_type),
            "{method} {path} {status} answered {content_type:?}; documented: {:?}",
            content.keys().collect::<Vec<_>>()
        );
    }
    // A stream's head is checked here; its events by the tests that read them.
    if answer.content_type() != EVENT_STREAM {
        check_body(operation, status, answer.content_type(), &answer.raw);
    }
    if let Some(code) = answer.code() {
        let documented = contract.codes(response);
        assert!(
            documented.iter().any(|known| known == code),
            "{method} {path} {status} answered code `{code}`; documented: {documented:?}"
        );
    }
}

/// Sends a request; a `Some` body goes as `application/json`.
async fn send(app: &TestApp, method: &str, url_path: &str, body: Option<&Value>) -> Answer {
    send_with(app, method, url_path, &[], body).await
}

/// Sends a request with extra request headers; a `Some` body goes as `application/json`.
async fn send_with(
    app: &TestApp,
    method: &str,
    url_path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Answer {
    let method = Method::from_bytes(method.as_bytes()).expect("a method");
    let mut request = app.client.request(method, app.url(url_path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    Answer::read(request.send().await.expect("the request is answered")).await
}

/// A documented path with its parameters filled in.
fn fill(path: &str, id: &str) -> String {
    path.replace("{id}", id).replace("{name}", PROBE_QUEUE)
}

/// Sends a request with a raw body of the given content type.
async fn send_raw(
    app: &TestApp,
    method: &str,
    url_path: &str,
    content_type: &str,
    body: String,
) -> Answer {
    let method = Method::from_bytes(method.as_bytes()).expect("a method");
    let response = app
        .client
        .request(method, app.url(url_path))
        .header(CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await
        .expect("the request is answered");
    Answer::read(response).await
}

/// The contract documents every route the router serves, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_documents_exactly_the_routes_served() {
    let table = taskd::api::route_table();
    let served: BTreeSet<Operation> = table
        .iter()
        .map(|(method, path)| (method.as_str().to_owned(), (*path).to_owned()))
        .collect();
    assert_eq!(served.len(), table.len(), "route_table lists a route twice");
    let documented = Contract::load().operations();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && unserved.is_empty(),
        "openapi.yaml and the router disagree\n  served but missing from openapi.yaml: \
         {undocumented:?}\n  in openapi.yaml but missing from route_table(): {unserved:?}"
    );
}

/// Each operation's `security` is the scope its route needs in the router (`[]` for the open
/// ones), and each guarded operation documents the 401, 403 and 421 answers.
#[test]
fn the_contract_names_the_scope_of_every_route() {
    let contract = Contract::load();
    for (method, path, scope) in taskd::api::route_scopes() {
        let operation = &contract.0["paths"][path][method.as_str().to_lowercase()];
        let expected = match scope {
            None => json!([]),
            Some(scope) => json!([{ "bearer": [scope.as_str()] }]),
        };
        assert_eq!(operation["security"], expected, "{method} {path}: security");
        if scope.is_some() {
            for status in ["401", "403", "421"] {
                assert!(
                    operation["responses"].get(status).is_some(),
                    "{method} {path} does not document {status}"
                );
            }
        }
    }
    let scheme = &contract.0["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["scheme"], "bearer");
}

/// The running server routes every documented operation, and its answer is documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_served() {
    let contract = Contract::load();
    let app = spawn_app().await;
    for (method, path) in contract.operations() {
        let url_path = fill(&path, FRESH_ID);
        let body = matches!(method.as_str(), "POST" | "PATCH").then(|| json!({}));
        let answer = send(&app, &method, &url_path, body.as_ref()).await;
        assert!(
            answer.is_routed(),
            "{method} {url_path} is documented but not routed: {} {}",
            answer.status,
            answer.body
        );
        assert_documented(&contract, (&method, &path), &answer);
    }
}

/// A query parameter an operation does not document answers 400 `invalid_query`, on every
/// route; the parameters each route takes are exactly those the contract documents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_query_parameters_are_refused_everywhere() {
    let contract = Contract::get();
    for (method, path, taken) in taskd::api::route_queries() {
        let operation = &contract.0["paths"][path][method.as_str().to_lowercase()];
        let documented: BTreeSet<String> = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|parameter| contract.resolve(parameter))
            .filter(|parameter| parameter["in"] == "query")
            .filter_map(|parameter| parameter["name"].as_str().map(str::to_owned))
            .collect();
        let taken: BTreeSet<String> = taken.iter().map(|name| (*name).to_owned()).collect();
        assert_eq!(taken, documented, "{method} {path}: query parameters");
    }
    let app = spawn_app().await;
    for (method, path) in contract.operations() {
        let url_path = format!("{}?bogus=1", fill(&path, FRESH_ID));
        let body = matches!(method.as_str(), "POST" | "PATCH").then(|| json!({}));
        let answer = send(&app, &method, &url_path, body.as_ref()).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{method} {url_path}"
        );
        assert_eq!(answer.code(), Some("invalid_query"), "{method} {url_path}");
        assert!(
            answer.body["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("bogus"),
            "{method} {url_path}: {}",
            answer.body
        );
        assert_documented(contract, (&method, &path), &answer);
    }
}

/// Sends requests and holds each answer against the contract.
struct Probe<'a> {
    app: &'a TestApp,
    contract: &'a Contract,
}

impl Probe<'_> {
    /// Sends `operation` ("METHOD /path/{id}") to `url_path` with an optional JSON body;
    /// asserts the status is `want` and the answer is documented. Returns the body.
    async fn expect(
        &self,
        operation: &str,
        url_path: &str,
        body: Option<&Value>,
        want: u16,
    ) -> Value {
        let answer = self.expect_with(operation, url_path, &[], body, want).await;
        answer.body
    }

    /// As [`Probe::expect`], with extra request headers; returns the whole answer.
    async fn expect_with(
        &self,
        operation: &str,
        url_path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
        want: u16,
    ) -> Answer {
        let (method, _) = split(operation);
        let answer = send_with(self.app, method, url_path, headers, body).await;
        self.verify(operation, &answer, want);
        answer
    }

    #[track_caller]
    fn check(&self, operation: &str, answer: Answer, want: u16) -> Value {
        self.verify(operation, &answer, want);
        answer.body
    }

    #[track_caller]
    fn verify(&self, operation: &str, answer: &Answer, want: u16) {
        let status = answer.status.as_u16();
        assert_eq!(status, want, "{operation}: {}", answer.body);
        assert_documented(self.contract, split(operation), answer);
    }

    /// Asserts that `answer` carries the header `name` and that the contract documents it for
    /// the operation and status (optional headers are not checked by `assert_documented`).
    /// Returns its value.
    #[track_caller]
    fn header<'a>(&self, operation: &str, answer: &'a Answer, name: &str) -> &'a str {
        let response = self
            .contract
            .response(split(operation), answer.status)
            .expect("a documented status");
        let documented = response["headers"]
            .as_object()
            .is_some_and(|headers| headers.keys().any(|key| key.eq_ignore_ascii_case(name)));
        assert!(
            documented,
            "{operation} {} does not document the header {name}",
            answer.status
        );
        answer
            .headers
            .get(name)
            .unwrap_or_else(|| panic!("{operation} {} lacks the header {name}", answer.status))
            .to_str()
            .expect("a text header")
    }
}

/// The `id` of a task in a body.
fn id_of(task: &Value) -> String {
    task["id"].as_str().expect("an id").to_owned()
}

fn split(operation: &str) -> (&str, &str) {
    operation.split_once(' ').expect("\"METHOD /path\"")
}

const SUBMIT: &str = "POST /v1/tasks";
const LIST: &str = "GET /v1/tasks";
const GET: &str = "GET /v1/tasks/{id}";
const RESULT: &str = "GET /v1/tasks/{id}/result";
const CANCEL: &str = "POST /v1/tasks/{id}/cancel";
const RETRY: &str = "POST /v1/tasks/{id}/retry";
const DELETE: &str = "DELETE /v1/tasks/{id}";
const BATCH: &str = "POST /v1/tasks/batch";
const QUEUES: &str = "GET /v1/queues";
const QUEUE: &str = "GET /v1/queues/{name}";
const PATCH_QUEUE: &str = "PATCH /v1/queues/{name}";
const LEASE: &str = "POST /v1/queues/{name}/lease";
const HEARTBEAT: &str = "POST /v1/tasks/{id}/heartbeat";
const COMPLETE: &str = "POST /v1/tasks/{id}/complete";
const FAIL: &str = "POST /v1/tasks/{id}/fail";
const TASK_EVENTS: &str = "GET /v1/tasks/{id}/events";
const FIREHOSE: &str = "GET /v1/events";

/// Each answer a client can provoke — success or problem — has its status, required headers,
/// content type and problem code documented for its operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_match_the_contract() {
    let contract = Contract::load();
    let app = spawn_app_with(|config| config.max_body_bytes = 1024).await;
    let probe = Probe {
        app: &app,
        contract: &contract,
    };

    let bad_submits = [
        json!({"kind": "echo", "bogus": 1}),
        json!({"kind": "teleport"}),
        json!({"kind": "sleep", "input": {}}),
    ];
    for body in bad_submits {
        probe.expect(SUBMIT, "/v1/tasks", Some(&body), 422).await;
    }
    let raw_submits = [
        ("application/json", "{\"kind\":".to_owned(), 400),
        ("text/plain", "{\"kind\":\"echo\"}".to_owned(), 415),
        ("application/json", format!("\"{}\"", "x".repeat(2048)), 413),
    ];
    for (content_type, body, want) in raw_submits {
        let answer = send_raw(&app, "POST", "/v1/tasks", content_type, body).await;
        probe.check(SUBMIT, answer, want);
    }
    for query in [
        "limit=0",
        "limit=501",
        "state=bogus",
        "cursor=x",
        "queue=a/b",
    ] {
        probe
            .expect(LIST, &format!("/v1/tasks?{query}"), None, 400)
            .await;
    }
    probe.expect(LIST, "/v1/tasks?limit=1", None, 200).await;
    probe.expect(GET, "/v1/tasks/nope", None, 400).await;
    let url = format!("/v1/tasks/{FRESH_ID}?wait=-1");
    probe.expect(GET, &url, None, 400).await;
    probe
        .expect(RESULT, "/v1/tasks/nope/result", None, 400)
        .await;
    probe
        .expect(CANCEL, "/v1/tasks/nope/cancel", None, 400)
        .await;

    // A running task: its result is not there yet (202), a cancel is requested (202), and
    // once it ended cancelled it has no result (409) and cannot be cancelled again (409).
    let body = json!({"kind": "sleep", "input": {"ms": 60_000}});
    let task = probe.expect(SUBMIT, "/v1/tasks", Some(&body), 202).await;
    let id = task["id"].as_str().expect("an id");
    app.wait_state(id, "running").await;
    let url = format!("/v1/tasks/{id}");
    probe
        .expect(GET, &format!("{url}?wait=0.05"), None, 200)
        .await;
    probe
        .expect(RESULT, &format!("{url}/result"), None, 202)
        .await;
    probe
        .expect(CANCEL, &format!("{url}/cancel"), None, 202)
        .await;
    assert_eq!(app.wait_terminal(id).await["state"], "cancelled");
    probe
        .expect(RESULT, &format!("{url}/result"), None, 409)
        .await;
    probe
        .expect(CANCEL, &format!("{url}/cancel"), None, 409)
        .await;

    // A failed task has no result either; a succeeded one has.
    for (body, want) in [
        (json!({"kind": "fail", "input": {"message": "boom"}}), 409),
        (json!({"kind": "echo", "input": [1, 2]}), 200),
    ] {
        let task = probe.expect(SUBMIT, "/v1/tasks", Some(&body), 202).await;
        let id = task["id"].as_str().expect("an id");
        app.wait_terminal(id).await;
        let url = format!("/v1/tasks/{id}/result");
        probe.expect(RESULT, &url, None, want).await;
    }

    provoke_submit_options(&probe).await;
    provoke_management(&probe).await;
    provoke_batches(&probe).await;
    provoke_queues(&probe).await;
    provoke_workers(&probe).await;
    provoke_events(&probe).await;
}

/// The submit's options and headers: bad options are 422; a bad `Idempotency-Key` is 400; a
/// repeat with the key is 200 with `Idempotent-Replayed`, another body with it 422; a
/// `Prefer: wait` met is 200 with `Preference-Applied`, one not met 202; labels filter.
async fn provoke_submit_options(probe: &Probe<'_>) {
    let bad_options = [
        json!({"kind": "echo", "max_attempts": 0}),
        json!({"kind": "echo", "max_attempts": 101}),
        json!({"kind": "echo", "timeout_ms": 0}),
        json!({"kind": "echo", "delay_ms": 10, "run_at": "2030-01-01T00:00:00Z"}),
        json!({"kind": "echo", "run_at": "tomorrow"}),
        json!({"kind": "echo", "backoff": {"base_ms": 2000, "cap_ms": 1000}}),
        json!({"kind": "echo", "labels": {"a:b": "c"}}),
        json!({"kind": "echo", "labels": {"a": 1}}),
        json!({"kind": "echo", "priority": 1.5}),
    ];
    for body in bad_options {
        let problem = probe.expect(SUBMIT, "/v1/tasks", Some(&body), 422).await;
        assert_eq!(problem["code"], "invalid_request", "{body}");
    }
    let echo = json!({"kind": "echo"});
    let long_key = "k".repeat(256);
    let headers = [("idempotency-key", long_key.as_str())];
    let answer = probe
        .expect_with(SUBMIT, "/v1/tasks", &headers, Some(&echo), 400)
        .await;
    assert_eq!(answer.code(), Some("invalid_header"));

    let key = [("idempotency-key", "openapi-probe")];
    let body = json!({"kind": "echo", "input": {"n": 1}, "labels": {"probe": "yes"}});
    let first = probe
        .expect_with(SUBMIT, "/v1/tasks", &key, Some(&body), 202)
        .await;
    let replay = probe
        .expect_with(SUBMIT, "/v1/tasks", &key, Some(&body), 200)
        .await;
    assert_eq!(probe.header(SUBMIT, &replay, "Idempotent-Replayed"), "true");
    assert_eq!(replay.body["id"], first.body["id"]);
    let other = json!({"kind": "echo", "input": {"n": 2}});
    let reused = probe
        .expect_with(SUBMIT, "/v1/tasks", &key, Some(&other), 422)
        .await;
    assert_eq!(reused.code(), Some("idempotency_key_reused"));

    let prefer = [("prefer", "wait=10")];
    let done = probe
        .expect_with(SUBMIT, "/v1/tasks", &prefer, Some(&echo), 200)
        .await;
    assert_eq!(done.body["state"], "succeeded");
    assert_eq!(probe.header(SUBMIT, &done, "Preference-Applied"), "wait=10");
    probe.header(SUBMIT, &done, "Location");
    let later = json!({"kind": "echo", "delay_ms": 60_000});
    let prefer = [("prefer", "wait=0.1")];
    let waiting = probe
        .expect_with(SUBMIT, "/v1/tasks", &prefer, Some(&later), 202)
        .await;
    assert_eq!(waiting.body["state"], "scheduled");

    let page = probe
        .expect(LIST, "/v1/tasks?label=probe:yes", None, 200)
        .await;
    assert_eq!(page["tasks"].as_array().map(Vec::len), Some(1), "{page}");
    for query in ["label=probe", "label=a:b&label=c:d", "state=blocked"] {
        probe
            .expect(LIST, &format!("/v1/tasks?{query}"), None, 400)
            .await;
    }
    probe
        .expect(LIST, "/v1/tasks?state=scheduled", None, 200)
        .await;
}

/// A scheduled task has no result yet (202) and can be neither deleted nor retried (409);
/// its ETag answers 304 until it changes; cancelled, it can be retried (200); finished, it
/// can be deleted (204), and then it is gone (404).
async fn provoke_management(probe: &Probe<'_>) {
    let body = json!({"kind": "echo", "delay_ms": 60_000});
    let task = probe.expect(SUBMIT, "/v1/tasks", Some(&body), 202).await;
    assert_eq!(task["state"], "scheduled");
    let id = id_of(&task);
    let url = format!("/v1/tasks/{id}");
    probe
        .expect(RESULT, &format!("{url}/result"), None, 202)
        .await;
    let problem = probe.expect(DELETE, &url, None, 409).await;
    assert_eq!(problem["code"], "task_not_finished");
    let problem = probe
        .expect(RETRY, &format!("{url}/retry"), None, 409)
        .await;
    assert_eq!(problem["code"], "task_not_retryable");

    let got = probe.expect_with(GET, &url, &[], None, 200).await;
    let etag = probe.header(GET, &got, "ETag").to_owned();
    let unchanged = [("if-none-match", etag.as_str())];
    probe.expect_with(GET, &url, &unchanged, None, 304).await;
    probe
        .expect(CANCEL, &format!("{url}/cancel"), None, 200)
        .await;
    probe.expect_with(GET, &url, &unchanged, None, 200).await;

    let retried = probe
        .expect(RETRY, &format!("{url}/retry"), None, 200)
        .await;
    assert_eq!(retried["state"], "queued");
    assert_eq!(probe.app.wait_terminal(&id).await["state"], "succeeded");
    probe
        .expect(RETRY, &format!("{url}/retry"), None, 409)
        .await;
    probe.expect(DELETE, &url, None, 204).await;
    probe.expect(GET, &url, None, 404).await;
    probe.expect(DELETE, &url, None, 404).await;
    probe
        .expect(RETRY, &format!("{url}/retry"), None, 404)
        .await;
    probe.expect(DELETE, "/v1/tasks/nope", None, 400).await;
    probe.expect(RETRY, "/v1/tasks/nope/retry", None, 400).await;
}

/// A batch is stored whole (202) or refused whole; an invalid item is named by its index.
async fn provoke_batches(probe: &Probe<'_>) {
    let url = "/v1/tasks/batch";
    let batch = json!({"tasks": [{"kind": "echo"}, {"kind": "echo", "priority": 1}]});
    let stored = probe.expect(BATCH, url, Some(&batch), 202).await;
    assert_eq!(stored["tasks"].as_array().map(Vec::len), Some(2));
    let bad_items = [
        (json!([{"kind": "echo"}, {"kind": "teleport"}]), 1),
        (
            json!([{"kind": "echo"}, {"kind": "echo"}, {"kind": "echo", "max_attempts": 0}]),
            2,
        ),
        (json!([{"kind": "sleep", "input": {}}]), 0),
    ];
    for (tasks, index) in bad_items {
        let body = json!({ "tasks": tasks });
        let problem = probe.expect(BATCH, url, Some(&body), 422).await;
        assert_eq!(problem["errors"][0]["index"], index, "{problem}");
    }
    for body in [
        json!({"tasks": []}),
        json!({}),
        json!({"tasks": [{"kind": "echo", "bogus": 1}]}),
    ] {
        probe.expect(BATCH, url, Some(&body), 422).await;
    }
    for (content_type, body, want) in [
        ("application/json", "{\"tasks\":".to_owned(), 400),
        ("text/plain", "{\"tasks\":[]}".to_owned(), 415),
    ] {
        let answer = send_raw(probe.app, "POST", url, content_type, body).await;
        probe.check(BATCH, answer, want);
    }
}

/// Queues answer with their settings and counts; a PATCH changes and clears settings; a bad
/// name is 400, a bad setting 422; a full queue refuses submits and batches (429).
async fn provoke_queues(probe: &Probe<'_>) {
    let listed = probe.expect(QUEUES, "/v1/queues", None, 200).await;
    let names: Vec<&str> = listed["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .filter_map(|queue| queue["name"].as_str())
        .collect();
    assert!(names.contains(&"default"), "{listed}");
    probe.expect(QUEUE, "/v1/queues/default", None, 200).await;
    let unused = probe
        .expect(QUEUE, "/v1/queues/never-used", None, 200)
        .await;
    assert_eq!(unused["counts"]["queued"], 0);
    probe
        .expect(QUEUE, "/v1/queues/bad%20name", None, 400)
        .await;

    let url = format!("/v1/queues/{PROBE_QUEUE}");
    probe.expect(PATCH_QUEUE, &url, Some(&json!({})), 200).await;
    let set = json!({"paused": true, "concurrency": 2, "max_queued": 10});
    let queue = probe.expect(PATCH_QUEUE, &url, Some(&set), 200).await;
    assert_eq!(
        (queue["paused"].clone(), queue["concurrency"].clone()),
        (json!(true), json!(2))
    );
    let clear = json!({"paused": false, "concurrency": null, "max_queued": null});
    let queue = probe.expect(PATCH_QUEUE, &url, Some(&clear), 200).await;
    assert_eq!(queue["concurrency"], Value::Null);
    for body in [
        json!({"concurrency": -1}),
        json!({"paused": "yes"}),
        json!({"bogus": 1}),
    ] {
        probe.expect(PATCH_QUEUE, &url, Some(&body), 422).await;
    }
    probe
        .expect(PATCH_QUEUE, "/v1/queues/bad%20name", Some(&json!({})), 400)
        .await;
    for (content_type, body, want) in [
        ("application/json", "{\"paused\":".to_owned(), 400),
        ("text/plain", "{}".to_owned(), 415),
    ] {
        let answer = send_raw(probe.app, "PATCH", &url, content_type, body).await;
        probe.check(PATCH_QUEUE, answer, want);
    }

    let full = json!({"max_queued": 0});
    probe
        .expect(PATCH_QUEUE, "/v1/queues/full", Some(&full), 200)
        .await;
    let body = json!({"kind": "echo", "queue": "full"});
    probe.expect(SUBMIT, "/v1/tasks", Some(&body), 429).await;
    let batch = json!({ "tasks": [body] });
    probe
        .expect(BATCH, "/v1/tasks/batch", Some(&batch), 429)
        .await;
}

/// The lease protocol: a queue that is not remote refuses leases (409); an empty remote queue
/// answers 204 at once with `wait_ms` 0; a leased task is held by its lease, and a wrong or
/// stale lease answers 409 `lease_lost` and changes nothing.
async fn provoke_workers(probe: &Probe<'_>) {
    let ask = json!({"worker_id": "probe", "wait_ms": 0});
    let problem = probe
        .expect(LEASE, "/v1/queues/local/lease", Some(&ask), 409)
        .await;
    assert_eq!(problem["code"], "queue_not_remote");
    let remote = json!({"remote": true});
    let queue = probe
        .expect(PATCH_QUEUE, "/v1/queues/remote", Some(&remote), 200)
        .await;
    assert_eq!(queue["remote"], true);
    let url = "/v1/queues/remote/lease";
    probe.expect(LEASE, url, Some(&ask), 204).await;
    for body in [
        json!({"wait_ms": 0}),
        json!({"worker_id": "probe", "max_tasks": 0}),
        json!({"worker_id": "probe", "lease_ms": 999}),
        json!({"worker_id": "probe", "wait_ms": 60_001}),
        json!({"worker_id": "probe", "kinds": ["a b"]}),
    ] {
        probe.expect(LEASE, url, Some(&body), 422).await;
    }
    probe
        .expect(LEASE, "/v1/queues/bad%20name/lease", Some(&ask), 400)
        .await;

    // A remote queue takes any kind; the lease hands the task out with its lease token.
    let body = json!({"kind": "render", "queue": "remote", "input": {"page": 1}});
    let task = probe.expect(SUBMIT, "/v1/tasks", Some(&body), 202).await;
    let id = id_of(&task);
    let leased = probe.expect(LEASE, url, Some(&ask), 200).await;
    let held = &leased["tasks"][0];
    assert_eq!(held["id"], task["id"], "{leased}");
    assert_eq!(held["state"], "running");
    let lease = held["lease"].as_str().expect("a lease").to_owned();

    let base = format!("/v1/tasks/{id}");
    let beat = json!({"lease": lease, "progress": {"percent": 50, "message": "half"}});
    let answer = probe
        .expect(HEARTBEAT, &format!("{base}/heartbeat"), Some(&beat), 200)
        .await;
    assert_eq!(answer["cancel_requested"], false);
    let wrong = json!({"lease": "not-the-lease"});
    for (operation, path, body) in [
        (HEARTBEAT, "heartbeat", wrong.clone()),
        (
            COMPLETE,
            "complete",
            json!({"lease": "not-the-lease", "result": 1}),
        ),
        (
            FAIL,
            "fail",
            json!({"lease": "not-the-lease", "error": {"type": "x", "message": "y"}}),
        ),
    ] {
        let problem = probe
            .expect(operation, &format!("{base}/{path}"), Some(&body), 409)
            .await;
        assert_eq!(problem["code"], "lease_lost", "{operation}");
    }
    let bad_progress = json!({"lease": lease, "progress": {"percent": 101}});
    probe
        .expect(
            HEARTBEAT,
            &format!("{base}/heartbeat"),
            Some(&bad_progress),
            422,
        )
        .await;
    let done = json!({"lease": lease, "result": {"pages": 1}});
    let ended = probe
        .expect(COMPLETE, &format!("{base}/complete"), Some(&done), 200)
        .await;
    assert_eq!(ended["state"], "succeeded");
    assert_eq!(ended["progress"]["percent"], 50.0);
    // Now the lease is stale: nothing it names changes the task.
    let problem = probe
        .expect(COMPLETE, &format!("{base}/complete"), Some(&done), 409)
        .await;
    assert_eq!(problem["code"], "lease_lost");
    let failed = json!({"lease": lease, "error": {"type": "late", "message": "too late"}});
    probe
        .expect(FAIL, &format!("{base}/fail"), Some(&failed), 409)
        .await;
    assert_eq!(probe.app.task(&id).await["state"], "succeeded");

    let unknown = format!("/v1/tasks/{FRESH_ID}");
    probe
        .expect(
            HEARTBEAT,
            &format!("{unknown}/heartbeat"),
            Some(&wrong),
            404,
        )
        .await;
    probe
        .expect(COMPLETE, &format!("{unknown}/complete"), Some(&wrong), 404)
        .await;
    probe
        .expect(HEARTBEAT, "/v1/tasks/nope/heartbeat", Some(&wrong), 400)
        .await;
    for (content_type, body, want) in [
        ("application/json", "{\"lease\":".to_owned(), 400),
        ("text/plain", "{}".to_owned(), 415),
    ] {
        let url = format!("{base}/fail");
        let answer = send_raw(probe.app, "POST", &url, content_type, body).await;
        probe.check(FAIL, answer, want);
    }
}

/// The event streams answer `text/event-stream` with `X-Accel-Buffering: no`; a bad
/// `Last-Event-ID` is 400 `invalid_header`, a bad filter 400 `invalid_query`, an unknown task
/// 404.
async fn provoke_events(probe: &Probe<'_>) {
    let answer = probe
        .expect_with(FIREHOSE, "/v1/events", &[], None, 200)
        .await;
    assert_eq!(answer.content_type(), EVENT_STREAM);
    assert_eq!(probe.header(FIREHOSE, &answer, "X-Accel-Buffering"), "no");
    let filtered = "/v1/events?queue=default&kind=echo&state=succeeded";
    let resume = [("last-event-id", "0")];
    probe
        .expect_with(FIREHOSE, filtered, &resume, None, 200)
        .await;
    for query in [
        "state=bogus",
        "queue=a/b",
        "kind=",
        "state=queued&state=running",
    ] {
        let answer = probe
            .expect_with(FIREHOSE, &format!("/v1/events?{query}"), &[], None, 400)
            .await;
        assert_eq!(answer.code(), Some("invalid_query"), "{query}");
    }
    let bad = [("last-event-id", "yesterday")];
    let answer = probe
        .expect_with(FIREHOSE, "/v1/events", &bad, None, 400)
        .await;
    assert_eq!(answer.code(), Some("invalid_header"));

    let url = format!("/v1/tasks/{FRESH_ID}/events");
    let answer = probe.expect_with(TASK_EVENTS, &url, &bad, None, 400).await;
    assert_eq!(answer.code(), Some("invalid_header"));
    let problem = probe.expect(TASK_EVENTS, &url, None, 404).await;
    assert_eq!(problem["code"], "task_not_found");
    probe
        .expect(TASK_EVENTS, "/v1/tasks/nope/events", None, 400)
        .await;
    let body = json!({"kind": "echo"});
    let task = probe.expect(SUBMIT, "/v1/tasks", Some(&body), 202).await;
    let id = id_of(&task);
    probe.app.wait_terminal(&id).await;
    let url = format!("/v1/tasks/{id}/events");
    let answer = probe.expect_with(TASK_EVENTS, &url, &[], None, 200).await;
    assert_eq!(answer.content_type(), EVENT_STREAM);
    assert_eq!(
        probe.header(TASK_EVENTS, &answer, "X-Accel-Buffering"),
        "no"
    );
}

/// A method a path does not document answers 405 with an `Allow` of exactly the documented
/// methods; an unknown path answers 404 `route_not_found`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undocumented_methods_and_paths_are_refused() {
    let contract = Contract::load();
    let app = spawn_app().await;
    let paths: BTreeSet<String> = contract.operations().into_iter().map(|(_, p)| p).collect();
    for path in paths {
        let documented = contract.methods_of(&path);
        let method = ["PATCH", "PUT", "DELETE"]
            .into_iter()
            .find(|method| !documented.contains(*method))
            .expect("a method the path does not take");
        let url_path = fill(&path, FRESH_ID);
        let answer = send(&app, method, &url_path, None).await;
        assert_eq!(
            answer.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert_eq!(answer.code(), Some("method_not_allowed"), "{method} {path}");
        let allow = answer.headers[ALLOW].to_str().expect("a text Allow");
        // axum answers HEAD wherever it answers GET; the contract does not list HEAD.
        let allowed: BTreeSet<String> = allow
            .split(',')
            .map(|method| method.trim().to_owned())
            .filter(|method| method != "HEAD")
            .collect();
        assert_eq!(allowed, documented, "Allow of {path}");
    }
    let answer = send(&app, "GET", "/v1/no-such-thing", None).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    let documented = contract.codes(&contract.0["components"]["responses"]["RouteNotFound"]);
    assert_eq!(documented, ["route_not_found"]);
    assert_eq!(answer.code(), Some("route_not_found"));
}

/// `GET /openapi.yaml` serves the file byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_contract_is_the_file() {
    let app = spawn_app().await;
    let response = app.get("/openapi.yaml").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/yaml");
    let served = response.bytes().await.expect("a body");
    let file = std::fs::read(SPEC_FILE).expect("openapi.yaml is readable");
    assert!(served == file, "GET /openapi.yaml differs from the file");
}
