//! Who may do what: API keys and their scopes on every route, queue-scoped keys that are
//! blind to other queues, revoked and expired keys, the `taskd keys` commands, the start-up
//! refusal without keys, the `Host` check, and secret headers hidden in every read.

use std::process::Command;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use taskd::access::{AuthMode, QueueScope, Scope, Scopes};
use taskd::api::route_scopes;
use taskd::engine::{NewKey, create_key};
use taskd::handlers::Registry;
use tokio::net::TcpListener;

use crate::backend::{Backend, TestDatabase};
use crate::events::SseStream;
use crate::helpers::{
    DEADLINE, TestApp, expect_problem, spawn_app, spawn_app_on, spawn_app_with, wait_for,
};
use crate::receiver::Receiver;

/// Creates a key in the app's database, as `taskd keys create` would; returns its secret.
pub(crate) async fn key(app: &TestApp, name: &str, scopes: &str, queues: &str) -> String {
    key_with_expiry(app, name, scopes, queues, None).await
}

async fn key_with_expiry(
    app: &TestApp,
    name: &str,
    scopes: &str,
    queues: &str,
    expires_at: Option<i64>,
) -> String {
    // The server answers once it has migrated: only then does the keys table exist.
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    let store = taskd::store::open(&app.database_url).await.unwrap();
    let new = NewKey {
        name: name.to_owned(),
        scopes: scopes.parse().unwrap(),
        queues: QueueScope::parse_list(queues).unwrap(),
        expires_at,
    };
    create_key(store.as_ref(), new).await.unwrap().0
}

/// The JSON body of a GET that must succeed.
pub(crate) async fn get_json(client: &Client, url: String) -> Value {
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// The JSON body of a POST that must succeed.
async fn post_json(client: &Client, url: String, body: Value) -> Value {
    let response = client.post(url).json(&body).send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    response.json().await.unwrap()
}

/// The string field `key` of every object in the array `items`.
fn strings(items: &Value, key: &str) -> Vec<String> {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item[key].as_str().unwrap().to_owned())
        .collect()
}

/// A client that sends `secret` with every request.
pub(crate) fn keyed(secret: &str) -> Client {
    let mut headers = HeaderMap::new();
    let value = HeaderValue::from_str(&format!("Bearer {secret}")).unwrap();
    headers.insert(AUTHORIZATION, value);
    Client::builder().default_headers(headers).build().unwrap()
}

/// Sends `method path` as the routes table names it, with `{id}` and `{name}` filled in and
/// an empty JSON object as the body of a POST or PATCH.
async fn call(client: &Client, app: &TestApp, method: &Method, path: &str, id: &str) -> u16 {
    let path = path.replace("{id}", id).replace("{name}", "remote");
    let mut request = client.request(method.clone(), app.url(&path));
    if *method == Method::POST || *method == Method::PATCH {
        request = request.json(&json!({}));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    if status == 401 {
        let challenge = response.headers()["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("Bearer"), "{challenge}");
    }
    status
}

/// With a key present, every route but the open ones answers 401 without a key, 403 with a
/// key that lacks its scope (naming it), and serves a key that has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_needs_its_scope() {
    let app = spawn_app().await;
    let admin = keyed(&key(&app, "admin", "admin", "").await);
    let mut with_scope = Vec::new();
    let mut without_scope = Vec::new();
    for scope in Scope::ALL.into_iter().filter(|&s| s != Scope::Admin) {
        let name = scope.as_str();
        with_scope.push(keyed(&key(&app, &format!("only-{name}"), name, "").await));
        let others: Scopes = Scope::ALL
            .into_iter()
            .filter(|&s| s != scope && s != Scope::Admin)
            .collect();
        let others = others.to_string();
        without_scope.push(keyed(&key(&app, &format!("no-{name}"), &others, "").await));
    }
    let all_but_admin = keyed(&key(&app, "no-admin", "submit,read,manage,work", "").await);
    let patched = admin
        .patch(app.url("/v1/queues/remote"))
        .json(&json!({ "paused": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), StatusCode::OK);
    let task = post_json(
        &admin,
        app.url("/v1/tasks"),
        json!({ "kind": "echo", "input": {}, "queue": "remote" }),
    )
    .await;
    let id = task["id"].as_str().unwrap();

    let anonymous = Client::new();
    let mut checked = 0;
    for (method, path, scope) in route_scopes() {
        let Some(scope) = scope else {
            let status = call(&anonymous, &app, &method, path, id).await;
            assert_eq!(status, 200, "{method} {path} is open");
            continue;
        };
        let status = call(&anonymous, &app, &method, path, id).await;
        assert_eq!(status, 401, "{method} {path} without a key");
        let (lacking, having) = match scope {
            Scope::Admin => (&all_but_admin, &admin),
            other => {
                let index = Scope::ALL.iter().position(|&s| s == other).unwrap();
                (&without_scope[index], &with_scope[index])
            }
        };
        let response = lacking
            .request(
                method.clone(),
                app.url(&path.replace("{id}", id).replace("{name}", "remote")),
            )
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        let body = expect_problem(response, 403, "missing_scope").await;
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains(&format!("`{scope}`")),
            "{method} {path}: {detail}"
        );
        for client in [having, &admin] {
            let status = call(client, &app, &method, path, id).await;
            assert!(
                status != 401 && status != 403,
                "{method} {path} with the `{scope}` scope answered {status}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 18, "only {checked} guarded routes");

    // HEAD is served by the GET route and needs what GET needs; a method a path does not
    // take is refused to anyone but an admin before the router says 405.
    let task_path = format!("/v1/tasks/{id}");
    let head = anonymous.head(app.url(&task_path)).send().await.unwrap();
    assert_eq!(
        head.status(),
        StatusCode::UNAUTHORIZED,
        "HEAD without a key"
    );
    let reader = &with_scope[Scope::ALL.iter().position(|&s| s == Scope::Read).unwrap()];
    let head = reader.head(app.url(&task_path)).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK, "HEAD with the read scope");
    let put = anonymous.put(app.url(&task_path)).send().await.unwrap();
    assert_eq!(put.status(), StatusCode::UNAUTHORIZED, "PUT without a key");
    let put = admin.put(app.url(&task_path)).send().await.unwrap();
    expect_problem(put, 405, "method_not_allowed").await;

    let unknown = keyed("tdk_000000000000000000000000000000000000000000000000");
    let response = unknown.get(app.url("/v1/tasks")).send().await.unwrap();
    expect_problem(response, 401, "unauthenticated").await;
    let malformed = app
        .client
        .get(app.url("/v1/tasks"))
        .header("authorization", "Basic YWxhZGRpbjpvcGVuc2VzYW1l")
        .send()
        .await
        .unwrap();
    expect_problem(malformed, 401, "unauthenticated").await;
}

/// A key limited to some queues cannot see, list, stream, cancel, lease or complete another
/// queue's tasks: such a task is 404, naming such a queue is 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_scoped_key_is_blind_to_other_queues() {
    let app = spawn_app().await;
    let admin = keyed(&key(&app, "admin", "admin", "").await);
    let tenant = keyed(&key(&app, "tenant-a", "submit,read,manage,work", "a-*").await);
    for queue in ["a-1", "b"] {
        let patched = admin
            .patch(app.url(&format!("/v1/queues/{queue}")))
            .json(&json!({ "remote": true }))
            .send()
            .await
            .unwrap();
        assert_eq!(patched.status(), StatusCode::OK);
    }
    // The firehose, from the start of the log and live: only a-1's events may come.
    let firehose =
        SseStream::from_response(tenant.get(app.url("/v1/events")).send().await.unwrap());
    let submit = |client: &Client, queue: &str| {
        client
            .post(app.url("/v1/tasks"))
            .json(&json!({ "kind": "echo", "input": {}, "queue": queue }))
            .send()
    };
    let theirs: Value = submit(&admin, "b").await.unwrap().json().await.unwrap();
    let theirs = theirs["id"].as_str().unwrap().to_owned();
    let response = submit(&tenant, "a-1").await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let mine: Value = response.json().await.unwrap();
    let mine = mine["id"].as_str().unwrap().to_owned();

    let mut firehose = firehose;
    let first = firehose.next().await.expect("an event");
    assert_eq!(first.data["task_id"], mine.as_str(), "{:?}", first.data);
    let mut replay = SseStream::from_response(
        tenant
            .get(app.url("/v1/events"))
            .header("last-event-id", "0")
            .send()
            .await
            .unwrap(),
    );
    let replayed = replay.next().await.expect("a replayed event");
    assert_eq!(replayed.data["task_id"], mine.as_str());

    // Another queue's task by id: not found, on every route that takes an id.
    for (method, path) in [
        (Method::GET, "/v1/tasks/{id}"),
        (Method::GET, "/v1/tasks/{id}?wait=1"),
        (Method::GET, "/v1/tasks/{id}/result"),
        (Method::GET, "/v1/tasks/{id}/events"),
        (Method::POST, "/v1/tasks/{id}/cancel"),
        (Method::POST, "/v1/tasks/{id}/retry"),
        (Method::DELETE, "/v1/tasks/{id}"),
    ] {
        let response = tenant
            .request(method.clone(), app.url(&path.replace("{id}", &theirs)))
            .send()
            .await
            .unwrap();
        expect_problem(response, 404, "task_not_found").await;
    }
    for (path, body) in [
        ("heartbeat", json!({ "lease": "x" })),
        ("complete", json!({ "lease": "x", "result": 1 })),
        (
            "fail",
            json!({ "lease": "x", "error": { "type": "t", "message": "m" } }),
        ),
    ] {
        let response = tenant
            .post(app.url(&format!("/v1/tasks/{theirs}/{path}")))
            .json(&body)
            .send()
            .await
            .unwrap();
        expect_problem(response, 404, "task_not_found").await;
    }
    // The same id is there for the admin.
    let response = admin
        .get(app.url(&format!("/v1/tasks/{theirs}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // Lists and counts show only its queues; naming another queue is forbidden.
    let listed = get_json(&tenant, app.url("/v1/tasks")).await;
    assert_eq!(strings(&listed["tasks"], "id"), [mine.as_str()]);
    let queues = get_json(&tenant, app.url("/v1/queues")).await;
    let names = strings(&queues["queues"], "name");
    assert_eq!(names, ["a-1"]);
    for path in ["/v1/tasks?queue=b", "/v1/queues/b", "/v1/events?queue=b"] {
        let response = tenant.get(app.url(path)).send().await.unwrap();
        expect_problem(response, 403, "queue_forbidden").await;
    }
    let response = submit(&tenant, "b").await.unwrap();
    let body = expect_problem(response, 403, "queue_forbidden").await;
    assert_eq!(body["errors"][0]["field"], "queue");
    let batch = tenant
        .post(app.url("/v1/tasks/batch"))
        .json(&json!({ "tasks": [
            { "kind": "echo", "input": {}, "queue": "a-1" },
            { "kind": "echo", "input": {}, "queue": "b" },
        ]}))
        .send()
        .await
        .unwrap();
    let body = expect_problem(batch, 403, "queue_forbidden").await;
    assert_eq!(body["errors"][0]["index"], 1);
    let lease = tenant
        .post(app.url("/v1/queues/b/lease"))
        .json(&json!({ "worker_id": "w" }))
        .send()
        .await
        .unwrap();
    expect_problem(lease, 403, "queue_forbidden").await;

    // Its own queue works end to end: lease, complete.
    let leased = post_json(
        &tenant,
        app.url("/v1/queues/a-1/lease"),
        json!({ "worker_id": "w", "wait_ms": 5000 }),
    )
    .await;
    let task = &leased["tasks"][0];
    assert_eq!(task["id"], mine.as_str());
    let completed = tenant
        .post(app.url(&format!("/v1/tasks/{mine}/complete")))
        .json(&json!({ "lease": task["lease"], "result": "done" }))
        .send()
        .await
        .unwrap();
    assert_eq!(completed.status(), StatusCode::OK);
    // The live stream never showed b's task, before or after.
    loop {
        let event = firehose.next().await.expect("the stream goes on");
        assert_eq!(event.data["queue"], "a-1", "{:?}", event.data);
        if event.data["state"] == "succeeded" {
            break;
        }
    }
}

/// A revoked key is refused by every server on the database within seconds, an expired one
/// at once; revoking the last key leaves the server closed, not open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_expired_keys_are_refused_on_every_node() {
    let node_a = spawn_app().await;
    // A second server on the same database: another node on PostgreSQL.
    let node_b = spawn_app_on(&node_a.database_url, |_| {}).await;
    let secret = key(&node_a, "ops", "read", "").await;
    let ops = keyed(&secret);
    for node in [&node_a, &node_b] {
        let response = ops.get(node.url("/v1/queues")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let store = taskd::store::open(&node_a.database_url).await.unwrap();
    assert!(
        store
            .key_revoke("ops".into(), taskd::task::now_millis())
            .await
            .unwrap()
    );
    for node in [&node_a, &node_b] {
        let body = wait_for("the revoke to reach the node", || async {
            let response = ops.get(node.url("/v1/queues")).send().await.unwrap();
            (response.status() == StatusCode::UNAUTHORIZED).then_some(response.json::<Value>())
        })
        .await
        .await
        .unwrap();
        assert!(
            body["detail"].as_str().unwrap().contains("revoked"),
            "{body}"
        );
    }
    // No key is usable now, and still the routes are closed.
    let response = node_b.get("/v1/queues").await;
    expect_problem(response, 401, "unauthenticated").await;

    let expired = keyed(&key_with_expiry(&node_a, "old", "read", "", Some(1)).await);
    let response = expired.get(node_a.url("/v1/queues")).send().await.unwrap();
    let body = expect_problem(response, 401, "unauthenticated").await;
    assert!(
        body["detail"].as_str().unwrap().contains("expired"),
        "{body}"
    );
}

/// `taskd keys create` prints a `tdk_` secret once, `list` never shows it, and `revoke`
/// ends it; the secret works over HTTP in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keys_commands_create_list_and_revoke() {
    let app = spawn_app().await;
    let taskd = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_taskd"))
            .args(args)
            .args(["--database", &app.database_url])
            .output()
            .expect("taskd keys runs");
        (
            output.status.success(),
            String::from_utf8(output.stdout).unwrap(),
            String::from_utf8(output.stderr).unwrap(),
        )
    };
    let (ok, secret, _) = taskd(&["keys", "create", "--name", "ci", "--scopes", "submit,read"]);
    assert!(ok);
    let secret = secret.trim().to_owned();
    assert!(
        secret.starts_with("tdk_") && secret.len() >= 4 + 32,
        "{secret}"
    );
    let (ok, _, error) = taskd(&["keys", "create", "--name", "ci", "--scopes", "read"]);
    assert!(!ok && error.contains("`ci` exists"), "{error}");
    let (ok, _, error) = taskd(&["keys", "create", "--name", "x", "--scopes", "root"]);
    assert!(!ok && error.contains("root"), "{error}");

    let client = keyed(&secret);
    let response = client
        .post(app.url("/v1/tasks"))
        .json(&json!({ "kind": "echo", "input": {} }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);

    let (ok, listing, _) = taskd(&["keys", "list"]);
    assert!(
        ok && listing.contains("ci") && listing.contains("submit,read"),
        "{listing}"
    );
    assert!(!listing.contains(&secret[4..]), "the list shows no secret");
    let (ok, said, _) = taskd(&["keys", "revoke", "ci"]);
    assert!(ok, "{said}");
    let (ok, _, error) = taskd(&["keys", "revoke", "ci"]);
    assert!(!ok && error.contains("no key named `ci`"), "{error}");
    wait_for("the revoke to take effect", || async {
        let response = client.get(app.url("/v1/tasks")).send().await.unwrap();
        (response.status() == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
}

/// Without any key, a server on a non-loopback address refuses to start and says how to
/// create one; `--auth off` starts it anyway, and on loopback it serves open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_only_loopback_or_auth_off_serves() {
    let database = TestDatabase::fresh(Backend::from_env()).await;
    let mut config =
        taskd::config::ServeConfig::defaults().expect("the TASKD_* environment parses");
    config.database.url = database.url.clone();
    let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let refused = tokio::time::timeout(
        DEADLINE,
        taskd::app::run(listener, config.clone(), Registry::builtin(), async {}),
    )
    .await
    .expect("refuses in time");
    let message = refused.expect_err("refuses to start").to_string();
    assert!(
        message.contains("taskd keys create") && message.contains("--auth off"),
        "{message}"
    );

    let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    config.auth = AuthMode::Off;
    let stop = tokio_util::sync::CancellationToken::new();
    let stopped = stop.clone();
    let server = tokio::spawn(taskd::app::run(
        listener,
        config,
        Registry::builtin(),
        async move { stopped.cancelled().await },
    ));
    let answer = wait_for("the server to answer, started", || async {
        Client::new()
            .get(format!("http://127.0.0.1:{port}/v1/queues"))
            .send()
            .await
            .ok()
            .filter(|answer| answer.status() != StatusCode::SERVICE_UNAVAILABLE)
    })
    .await;
    assert_eq!(answer.status(), StatusCode::OK);
    stop.cancel();
    server.await.unwrap().unwrap();
}

/// On loopback, only `localhost`, `127.0.0.1` and `[::1]` are answered (421 otherwise, the
/// probes excepted); `--allowed-hosts` names the hosts instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_header_is_checked() {
    let app = spawn_app().await;
    let with_host =
        |path: &str, host: &str| app.client.get(app.url(path)).header("host", host).send();
    for host in ["localhost:8080", "127.0.0.1", "[::1]:1"] {
        assert_eq!(
            with_host("/v1/queues", host).await.unwrap().status(),
            200,
            "{host}"
        );
    }
    let response = with_host("/v1/queues", "attacker.example:8080")
        .await
        .unwrap();
    let body = expect_problem(response, 421, "host_not_allowed").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("attacker.example")
    );
    let response = with_host("/", "attacker.example").await.unwrap();
    expect_problem(response, 421, "host_not_allowed").await;
    assert_eq!(
        with_host("/healthz", "attacker.example")
            .await
            .unwrap()
            .status(),
        200
    );

    let named = spawn_app_with(|config| {
        config.allowed_hosts = Some("tasks.example.com,*.internal".parse().unwrap());
    })
    .await;
    let with_host = |path: &str, host: &str| {
        named
            .client
            .get(named.url(path))
            .header("host", host)
            .send()
    };
    assert_eq!(
        with_host("/v1/queues", "tasks.example.com")
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        with_host("/v1/queues", "a.internal:443")
            .await
            .unwrap()
            .status(),
        200
    );
    let response = with_host("/v1/queues", "localhost").await.unwrap();
    expect_problem(response, 421, "host_not_allowed").await;
}

/// The `http` kind's credentials (authorization, cookie and the listed secret headers) read
/// as "[redacted]" in the submit answer, GET, lists, a cancel's answer and the completion
/// webhook; a remote worker's lease still carries them, since it sends them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_headers_are_redacted_in_every_read() {
    let receiver = Receiver::start().await;
    let app = spawn_app_with(|config| config.allow_outbound = "127.0.0.1".parse().unwrap()).await;
    for (queue, body) in [
        ("held", json!({ "paused": true })),
        ("far", json!({ "remote": true })),
    ] {
        let response = app
            .client
            .patch(app.url(&format!("/v1/queues/{queue}")))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let input = json!({
        "url": receiver.url("/target"),
        "headers": {
            "Authorization": "Bearer s3cret-a",
            "Cookie": "session=s3cret-c",
            "X-Api-Key": "s3cret-k",
            "Accept": "application/json",
        },
        "secret_headers": ["x-api-key"],
    });
    let redacted = |task: &Value| {
        let text = task.to_string();
        assert!(!text.contains("s3cret"), "a secret shows: {text}");
        assert_eq!(task["input"]["headers"]["Authorization"], "[redacted]");
        assert_eq!(task["input"]["headers"]["Accept"], "application/json");
    };
    let submitted = app
        .submit(json!({
            "kind": "http", "queue": "held", "input": input,
            "callback": { "url": receiver.url("/hook") },
        }))
        .await;
    redacted(&submitted);
    let id = submitted["id"].as_str().unwrap();
    redacted(&app.task(id).await);
    let listed: Value = app.get("/v1/tasks?queue=held").await.json().await.unwrap();
    redacted(&listed["tasks"][0]);
    let cancelled: Value = app
        .post_json(&format!("/v1/tasks/{id}/cancel"), &json!({}))
        .await
        .json()
        .await
        .unwrap();
    redacted(&cancelled);
    let hooks = receiver.wait_received(1).await;
    redacted(&hooks[0].json());

    app.submit(json!({ "kind": "http", "queue": "far", "input": input }))
        .await;
    let leased: Value = app
        .post_json(
            "/v1/queues/far/lease",
            &json!({ "worker_id": "w", "wait_ms": 5000 }),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        leased["tasks"][0]["input"]["headers"]["Authorization"],
        "Bearer s3cret-a"
    );
}

/// A parent in a queue the key cannot see is as unknown as one that never existed
/// (`422 unknown_parent`): ids reveal nothing across queues. One it can see is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_outside_the_keys_queues_is_unknown() {
    let app = spawn_app().await;
    let admin = keyed(&key(&app, "admin", "admin", "").await);
    let tenant = keyed(&key(&app, "tenant-a", "submit,read", "a-*").await);
    let submit =
        |client: &Client, body: Value| client.post(app.url("/v1/tasks")).json(&body).send();
    let theirs: Value = submit(&admin, json!({"kind": "echo", "queue": "b"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mine: Value = submit(&tenant, json!({"kind": "echo", "queue": "a-1"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refused = submit(
        &tenant,
        json!({"kind": "echo", "queue": "a-1", "after": [mine["id"], theirs["id"]]}),
    )
    .await
    .unwrap();
    let problem = expect_problem(refused, 422, "unknown_parent").await;
    assert_eq!(problem["errors"][0]["field"], "after[1]", "{problem}");
    let taken = submit(
        &tenant,
        json!({"kind": "echo", "queue": "a-1", "after": [mine["id"]]}),
    )
    .await
    .unwrap();
    assert_eq!(taken.status(), StatusCode::ACCEPTED);
}
