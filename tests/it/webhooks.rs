//! Completion webhooks through real HTTP: a local receiver gets the finished task, signed per
//! Standard Webhooks; failures are retried under one `webhook-id`; queue defaults apply; the
//! allow-list refuses before any connection; a pending delivery survives a restart.
//! Outbound is deny-by-default, so each test allows its receiver by name and port (the
//! policy's own cases are in `outbound`).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::{TestApp, expect_problem, patch_queue, spawn_app_with, wait_for};
use crate::receiver::{Receiver, Reply};

/// Fast retries, so a test sees several tries within its deadline.
fn quick_retries(config: &mut taskd::config::ServeConfig) {
    config.webhook_backoff_base = Duration::from_millis(10);
}

/// Polls until the task's `callback_status` is `status`.
pub async fn wait_callback(app: &TestApp, id: &str, status: &str) -> Value {
    wait_for(&format!("callback_status {status}"), || async {
        let task = app.task(id).await;
        (task["callback_status"] == status).then_some(task)
    })
    .await
}

/// The receiver gets the finished task with a signature it can verify with the shared
/// secret: HMAC-SHA256 over `{webhook-id}.{webhook-timestamp}.{body}`, base64, `v1,` first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signature_verifies() {
    let receiver = Receiver::start().await;
    let app = spawn_app_with(|config| config.allow_outbound = receiver.allow()).await;
    let key: Vec<u8> = (0..32).map(|_| fastrand::u8(..)).collect();
    let secret = format!("whsec_{}", BASE64.encode(&key));
    let task = app
        .submit(json!({"kind": "echo", "input": {"n": 1},
                       "callback": {"url": receiver.url("/hook"), "secret": secret}}))
        .await;
    let id = task["id"].as_str().unwrap();
    assert_eq!(
        task["callback"],
        json!({"url": receiver.url("/hook")}),
        "no secret served"
    );

    let delivery = receiver.wait_received(1).await.remove(0);
    assert_eq!(delivery.method, "POST");
    assert_eq!(delivery.path, "/hook");
    assert_eq!(delivery.header("content-type"), "application/json");
    let webhook_id = delivery.header("webhook-id");
    assert!(webhook_id.starts_with("msg_"), "{webhook_id}");
    let timestamp: i64 = delivery.header("webhook-timestamp").parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - timestamp).abs() < 300);

    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{webhook_id}.{timestamp}.").as_bytes());
    mac.update(&delivery.body);
    let expected = format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()));
    let signatures: Vec<&str> = delivery.header("webhook-signature").split(' ').collect();
    assert!(signatures.contains(&expected.as_str()), "{signatures:?}");

    let body = delivery.json();
    assert_eq!(body["id"], id);
    assert_eq!(body["state"], "succeeded");
    assert_eq!(body["result"], json!({"n": 1}));
    assert!(body["callback"].get("secret").is_none());
    wait_callback(&app, id, "delivered").await;
}

/// A receiver answering 500, 500, then 200 gets three tries carrying one `webhook-id`; the
/// task ends `delivered` and the queue counts it. Without a secret there is no signature.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_tries_are_retried_under_one_webhook_id() {
    let receiver = Receiver::start().await;
    receiver.script([
        Reply::Text(500, "down"),
        Reply::Text(500, "still down"),
        Reply::Json(200, json!({"thanks": true})),
    ]);
    let app = spawn_app_with(|config| {
        quick_retries(config);
        config.allow_outbound = receiver.allow();
    })
    .await;
    let task = app
        .submit(json!({"kind": "echo", "queue": "hooks", "callback": {"url": receiver.url("/r")}}))
        .await;
    let id = task["id"].as_str().unwrap();
    let finished = wait_callback(&app, id, "delivered").await;
    assert_eq!(finished["state"], "succeeded");

    let tries = receiver.received();
    assert_eq!(tries.len(), 3, "exactly three tries");
    let webhook_id = tries[0].header("webhook-id");
    assert!(tries.iter().all(|t| t.header("webhook-id") == webhook_id));
    assert!(
        tries
            .iter()
            .all(|t| t.headers.get("webhook-signature").is_none())
    );
    assert!(tries.iter().all(|t| t.json()["id"] == id));

    let queue: Value = app.get("/v1/queues/hooks").await.json().await.unwrap();
    assert_eq!(
        queue["callbacks"],
        json!({"pending": 0, "delivered": 1, "failed": 0})
    );
}

/// A receiver that never answers 2xx is tried `--webhook-max-attempts` times, then the
/// delivery is `failed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_gives_up_after_its_attempts() {
    let receiver = Receiver::start().await;
    receiver.script([
        Reply::Text(503, "no"),
        Reply::Text(503, "no"),
        Reply::Text(503, "no"),
    ]);
    let app = spawn_app_with(|config| {
        quick_retries(config);
        config.webhook_max_attempts = 3;
        config.allow_outbound = receiver.allow();
    })
    .await;
    let task = app
        .submit(json!({"kind": "fail", "input": {"retryable": false},
                       "callback": {"url": receiver.url("/r")}}))
        .await;
    let id = task["id"].as_str().unwrap();
    let finished = wait_callback(&app, id, "failed").await;
    assert_eq!(
        finished["state"], "failed",
        "a failed task is delivered too"
    );
    assert_eq!(receiver.received().len(), 3);
}

/// A queue's default callback applies to tasks that bring none; its secret is never served;
/// `null` removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_default_callback_is_used() {
    let receiver = Receiver::start().await;
    let app = spawn_app_with(|config| config.allow_outbound = receiver.allow()).await;
    let queue = patch_queue(
        &app,
        "hooked",
        json!({"callback": {"url": receiver.url("/default"), "secret": "plain-secret"}}),
    )
    .await;
    assert_eq!(queue["callback"], json!({"url": receiver.url("/default")}));

    let task = app.submit(json!({"kind": "echo", "queue": "hooked"})).await;
    let id = task["id"].as_str().unwrap();
    assert_eq!(task["callback"]["url"], receiver.url("/default"));
    let delivery = receiver.wait_received(1).await.remove(0);
    assert_eq!(delivery.path, "/default");
    assert!(delivery.header("webhook-signature").starts_with("v1,"));
    wait_callback(&app, id, "delivered").await;

    // A task's own callback wins over the queue's.
    let own = app
        .submit(
            json!({"kind": "echo", "queue": "hooked", "callback": {"url": receiver.url("/own")}}),
        )
        .await;
    wait_callback(&app, own["id"].as_str().unwrap(), "delivered").await;
    assert_eq!(receiver.received()[1].path, "/own");

    let cleared = patch_queue(&app, "hooked", json!({"callback": null})).await;
    assert!(cleared["callback"].is_null());
    let plain = app.submit(json!({"kind": "echo", "queue": "hooked"})).await;
    let done = app.wait_terminal(plain["id"].as_str().unwrap()).await;
    assert!(done["callback"].is_null());
    assert!(done["callback_status"].is_null());
}

/// A host outside `--allow-outbound` gets no connection at all — neither an IP literal nor
/// a name that resolves outside the list — and the delivery fails at once, untried again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_host_gets_no_connection() {
    let receiver = Receiver::start().await;
    let app = spawn_app_with(|config| {
        quick_retries(config);
        config.allow_outbound = "hooks.example.invalid,10.0.0.0/8".parse().unwrap();
    })
    .await;
    let port = receiver.base.rsplit(':').next().unwrap().to_owned();
    for url in [
        receiver.url("/literal"),
        format!("http://localhost:{port}/named"),
    ] {
        let task = app
            .submit(json!({"kind": "echo", "callback": {"url": url}}))
            .await;
        wait_callback(&app, task["id"].as_str().unwrap(), "failed").await;
    }
    assert_eq!(receiver.connections(), 0, "no connection was made");
    let queue: Value = app.get("/v1/queues/default").await.json().await.unwrap();
    assert_eq!(queue["callbacks"]["failed"], 2);
}

/// A delivery in flight when the server stops stays pending in the database; the next
/// server on the same database delivers it, under the same `webhook-id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_delivery_survives_a_restart() {
    let receiver = Receiver::start().await;
    receiver.script([Reply::Hang]);
    let app = spawn_app_with(|config| config.allow_outbound = receiver.allow()).await;
    let task = app
        .submit(json!({"kind": "echo", "callback": {"url": receiver.url("/slow")}}))
        .await;
    let id = task["id"].as_str().unwrap().to_owned();
    let first = receiver.wait_received(1).await.remove(0);
    assert_eq!(app.task(&id).await["callback_status"], "pending");

    let app = app
        .restart(|config| config.allow_outbound = receiver.allow())
        .await;
    let finished = wait_callback(&app, &id, "delivered").await;
    assert_eq!(finished["state"], "succeeded");
    let tries = receiver.received();
    assert_eq!(tries.len(), 2);
    assert_eq!(tries[1].header("webhook-id"), first.header("webhook-id"));
}

/// A callback must be an absolute http(s) URL, and a `whsec_` secret must carry base64.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_callbacks_are_refused() {
    let app = spawn_app_with(|_| {}).await;
    for (callback, field) in [
        (json!({"url": "ftp://127.0.0.1/x"}), "callback.url"),
        (json!({"url": "not a url"}), "callback.url"),
        (json!({"url": "/relative"}), "callback.url"),
        (
            json!({"url": "http://127.0.0.1/", "secret": "whsec_***"}),
            "callback.secret",
        ),
        (
            json!({"url": "http://127.0.0.1/", "secret": ""}),
            "callback.secret",
        ),
    ] {
        let response = app
            .post_json("/v1/tasks", &json!({"kind": "echo", "callback": callback}))
            .await;
        let problem = expect_problem(response, 422, "invalid_request").await;
        assert_eq!(problem["errors"][0]["field"], field, "{callback}");
    }
    let response = app
        .client
        .patch(app.url("/v1/queues/q"))
        .json(&json!({"callback": {"url": "gopher://h/"}}))
        .send()
        .await
        .unwrap();
    expect_problem(response, 422, "invalid_request").await;
}
