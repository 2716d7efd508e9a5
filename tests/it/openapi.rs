//! The contract holds: `openapi.yaml` documents exactly the routes the router serves, the
//! server answers each of them, and what it answers — status, required headers, content type,
//! problem `code` — is what the contract says for that operation.

use std::collections::BTreeSet;

use reqwest::header::{ALLOW, CONTENT_TYPE, HeaderMap};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

const SPEC_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml");
/// A well-formed task id that no test ever submits.
const FRESH_ID: &str = "00000000-0000-7000-8000-000000000000";
const PROBLEM_JSON: &str = "application/problem+json";
/// The keys of a path item that are operations.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// One documented operation: an upper-case method and a path in OpenAPI syntax.
type Operation = (String, String);

/// The parsed contract. YAML is read into JSON values: every key of an OpenAPI document is a
/// string, and a `$ref` is then a JSON pointer.
struct Contract(Value);

impl Contract {
    fn load() -> Contract {
        let text = std::fs::read_to_string(SPEC_FILE).expect("openapi.yaml is readable");
        Contract(serde_yaml_ng::from_str(&text).expect("openapi.yaml parses"))
    }

    fn operations(&self) -> BTreeSet<Operation> {
        let paths = self.0["paths"].as_object().expect("`paths` is a mapping");
        paths
            .iter()
            .flat_map(|(path, item)| {
                METHODS
                    .iter()
                    .filter(|method| item.get(**method).is_some())
                    .map(move |method| (method.to_uppercase(), path.clone()))
            })
            .collect()
    }

    /// The documented methods of `path`, upper case.
    fn methods_of(&self, path: &str) -> BTreeSet<String> {
        self.operations()
            .into_iter()
            .filter(|(_, documented)| documented == path)
            .map(|(method, _)| method)
            .collect()
    }

    /// Follows `$ref`s within the document.
    fn resolve<'a>(&'a self, mut value: &'a Value) -> &'a Value {
        while let Some(reference) = value.get("$ref").and_then(Value::as_str) {
            let pointer = reference
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("only local $refs: {reference}"));
            value = self
                .0
                .pointer(pointer)
                .unwrap_or_else(|| panic!("dangling $ref {reference}"));
        }
        value
    }

    /// The documented response of an operation for a status, resolved.
    fn response(&self, (method, path): (&str, &str), status: StatusCode) -> Option<&Value> {
        let operation = &self.0["paths"][path][method.to_lowercase()];
        assert!(operation.is_object(), "{method} {path} is not documented");
        operation["responses"]
            .get(status.as_str())
            .map(|response| self.resolve(response))
    }

    /// The problem codes a documented response allows (its `code` enum).
    fn codes(&self, response: &Value) -> Vec<String> {
        let schema = self.resolve(&response["content"][PROBLEM_JSON]["schema"]);
        let narrowings = schema["allOf"].as_array().cloned().unwrap_or_default();
        std::iter::once(schema)
            .chain(narrowings.iter())
            .map(|part| self.resolve(part))
            .filter_map(|part| part["properties"]["code"]["enum"].as_array())
            .flatten()
            .filter_map(|code| code.as_str().map(str::to_owned))
            .collect()
    }
}

/// An answer, read whole.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    async fn read(response: reqwest::Response) -> Answer {
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("a body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
        }
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
    let method = Method::from_bytes(method.as_bytes()).expect("a method");
    let mut request = app.client.request(method, app.url(url_path));
    if let Some(body) = body {
        request = request.json(body);
    }
    Answer::read(request.send().await.expect("the request is answered")).await
}

/// Sends a request with a raw body of the given content type.
async fn send_raw(app: &TestApp, url_path: &str, content_type: &str, body: String) -> Answer {
    let response = app
        .client
        .post(app.url(url_path))
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

/// The running server routes every documented operation, and its answer is documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_served() {
    let contract = Contract::load();
    let app = spawn_app().await;
    for (method, path) in contract.operations() {
        let url_path = path.replace("{id}", FRESH_ID);
        let body = (method == "POST").then(|| json!({}));
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
        let (method, _) = split(operation);
        let answer = send(self.app, method, url_path, body).await;
        self.check(operation, answer, want)
    }

    #[track_caller]
    fn check(&self, operation: &str, answer: Answer, want: u16) -> Value {
        let status = answer.status.as_u16();
        assert_eq!(status, want, "{operation}: {}", answer.body);
        assert_documented(self.contract, split(operation), &answer);
        answer.body
    }
}

fn split(operation: &str) -> (&str, &str) {
    operation.split_once(' ').expect("\"METHOD /path\"")
}

const SUBMIT: &str = "POST /v1/tasks";
const LIST: &str = "GET /v1/tasks";
const GET: &str = "GET /v1/tasks/{id}";
const RESULT: &str = "GET /v1/tasks/{id}/result";
const CANCEL: &str = "POST /v1/tasks/{id}/cancel";

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
        let answer = send_raw(&app, "/v1/tasks", content_type, body).await;
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
    let url = format!("/v1/tasks/{FRESH_ID}?wait=61");
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
        let url_path = path.replace("{id}", FRESH_ID);
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
