//! The outbound policy through the front door, for the `http` kind and completion webhooks
//! alike: deny-by-default, entries with ports, taskd's own addresses, and every spelling of
//! a loopback address. A refused request fails at once and for good (`outbound_refused`),
//! and the receiver counts no connection.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};
use crate::receiver::Receiver;
use crate::webhooks::wait_callback;

/// Submits an `http` request (one attempt) and waits for it to end.
async fn request(app: &TestApp, method: &str, url: &str, body: Value) -> Value {
    let input = json!({"method": method, "url": url, "body": body, "timeout_ms": 10_000});
    let task = app
        .submit(json!({"kind": "http", "input": input, "max_attempts": 1}))
        .await;
    app.wait_terminal(task["id"].as_str().unwrap()).await
}

async fn get(app: &TestApp, url: &str) -> Value {
    request(app, "GET", url, Value::Null).await
}

/// Submits an `echo` task with this callback and waits for the delivery to end `status`.
async fn call_back(app: &TestApp, url: &str, status: &str) -> Value {
    let task = app
        .submit(json!({"kind": "echo", "callback": {"url": url}}))
        .await;
    wait_callback(app, task["id"].as_str().unwrap(), status).await
}

/// The task failed on its first attempt, refused by the policy; returns the message.
#[track_caller]
fn assert_refused(task: &Value) -> String {
    assert_eq!(task["state"], "failed", "{task}");
    assert_eq!(task["attempt"], 1, "{task}");
    assert_eq!(task["error"]["type"], "outbound_refused", "{task}");
    task["error"]["message"].as_str().unwrap().to_owned()
}

/// With no `--allow-outbound`, an `http` task is refused with a message naming the flag,
/// and a callback is not delivered; neither opens a connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_refuses_every_outbound_request() {
    let receiver = Receiver::start().await;
    let app = spawn_app().await;
    let message = assert_refused(&get(&app, &receiver.url("/x")).await);
    assert!(message.contains("--allow-outbound"), "{message}");
    assert!(message.contains("TASKD_ALLOW_OUTBOUND"), "{message}");
    call_back(&app, &receiver.url("/hook"), "failed").await;
    assert_eq!(receiver.connections(), 0);
}

/// `127.0.0.1:PORT` allows that port exactly: another port of the same host is refused,
/// for a task and for a callback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_port_entry_allows_that_port_only() {
    let allowed = Receiver::start().await;
    let other = Receiver::start().await;
    let app = spawn_app_with(|config| config.allow_outbound = allowed.allow()).await;
    let done = get(&app, &allowed.url("/yes")).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    call_back(&app, &allowed.url("/hook"), "delivered").await;

    let message = assert_refused(&get(&app, &other.url("/no")).await);
    assert!(message.contains(&other.port().to_string()), "{message}");
    call_back(&app, &other.url("/hook"), "failed").await;
    assert_eq!(other.connections(), 0);
}

/// A task cannot drive taskd's own API (here: pause a queue) though `127.0.0.0/8` and
/// `localhost` cover its address; an entry naming exactly that host and port allows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_own_address_needs_an_entry_naming_it_exactly() {
    let app = spawn_app_with(|config| {
        config.allow_outbound = "127.0.0.0/8,[::1],localhost".parse().unwrap();
    })
    .await;
    let port = app.base.rsplit(':').next().unwrap();
    for base in [app.base.clone(), format!("http://localhost:{port}")] {
        let url = format!("{base}/v1/queues/victim");
        let done = request(&app, "PATCH", &url, json!({"paused": true})).await;
        let message = assert_refused(&done);
        assert!(message.contains("own listen address"), "{message}");
    }
    let queue: Value = app.get("/v1/queues/victim").await.json().await.unwrap();
    assert_eq!(queue["paused"], false, "{queue}");

    let named = spawn_app_with(|config| {
        config.allow_outbound = config.listen.to_string().parse().unwrap();
    })
    .await;
    let done = get(&named, &named.url("/healthz")).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"]["status"], 200);
}

/// The database's address (PostgreSQL) is refused though a network covers it. SQLite has
/// no address, so there this test has nothing to show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_address_is_refused() {
    let app = spawn_app_with(|config| {
        config.allow_outbound = "0.0.0.0/0,::/0,localhost".parse().unwrap();
    })
    .await;
    let Ok(database) = url::Url::parse(&app.database_url) else {
        return;
    };
    if database.scheme() != "postgres" {
        return;
    }
    let host = database.host_str().unwrap();
    let port = database.port().unwrap_or(5432);
    let done = get(&app, &format!("http://{host}:{port}/")).await;
    let message = assert_refused(&done);
    assert!(message.contains("database"), "{message}");
}

/// With only another port allowed, every spelling of a loopback address on the receiver's
/// port is refused before any connection: decimal, hex, octal, short, IPv4-mapped IPv6,
/// trailing dots, and a user part before the real host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_loopback_spelling_is_refused_on_another_port() {
    let receiver = Receiver::start().await;
    let port = receiver.port();
    let other = if port == u16::MAX { port - 1 } else { port + 1 };
    let app = spawn_app_with(|config| {
        config.allow_outbound = format!("127.0.0.0/8:{other},[::1]:{other},localhost:{other}")
            .parse()
            .unwrap();
    })
    .await;
    let hosts = [
        "127.0.0.1",
        "127.0.0.2",
        "[::1]",
        "2130706433",
        "0x7f000001",
        "0x7F.0.0.1",
        "0177.0.0.1",
        "127.1",
        "[::ffff:127.0.0.1]",
        "[0:0:0:0:0:ffff:7f00:1]",
        "127.0.0.1.",
        "localhost",
        "localhost.",
        "LocalHost",
        "user@127.0.0.1",
        &format!("localhost:{other}@127.0.0.1"),
    ];
    for host in hosts {
        let done = get(&app, &format!("http://{host}:{port}/x")).await;
        let message = assert_refused(&done);
        assert!(message.contains(&port.to_string()), "{host}: {message}");
    }
    call_back(&app, &format!("http://2130706433:{port}/hook"), "failed").await;
    assert_eq!(
        receiver.connections(),
        0,
        "no spelling reached the receiver"
    );
}
