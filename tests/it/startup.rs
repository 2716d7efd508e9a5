//! Start-up: the socket is served before the store is open. Until start-up is done `/healthz`
//! answers 200, `/readyz` and every other route 503 `starting` (with `Retry-After`). The
//! store's opening is held by `app::run_after`'s hook, so the test sees each phase for as
//! long as it looks, without timing.

use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use taskd::config::ServeConfig;
use taskd::handlers::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::backend::{Backend, TestDatabase};
use crate::helpers::{DEADLINE, wait_for};

/// Before the store opens: healthz 200, readyz and a submit 503 `starting` with Retry-After
/// (under the base path too); once it opened, readyz 200 and the submit is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_answer_starting_until_the_store_is_open() {
    let database = TestDatabase::fresh(Backend::from_env()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/taskd", listener.local_addr().unwrap());
    let mut config = ServeConfig::defaults().expect("the TASKD_* environment parses");
    config.database.url = database.url.clone();
    config.base_path = "/taskd".parse().unwrap();
    let (open, opened) = tokio::sync::oneshot::channel::<()>();
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let server = tokio::spawn(taskd::app::run_after(
        listener,
        config,
        Registry::builtin(),
        async move { stopped.cancelled().await },
        async move {
            let _ = opened.await;
        },
    ));
    // A server that did not answer before start-up would hold these requests: bounded.
    let client = Client::builder().timeout(DEADLINE).build().unwrap();

    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(
        health.json::<Value>().await.unwrap(),
        json!({"status": "ok"})
    );
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_starting(ready, false).await;
    let submit = || {
        client
            .post(format!("{base}/v1/tasks"))
            .json(&json!({"kind": "echo"}))
            .send()
    };
    assert_starting(submit().await.unwrap(), true).await;
    // Outside the base path: not found, starting or not.
    let outside = client.get(format!("{base}x/healthz")).send().await.unwrap();
    assert_eq!(outside.status(), StatusCode::NOT_FOUND);
    assert!(!server.is_finished(), "the server waits for its hook");

    open.send(()).unwrap();
    wait_for("readyz to answer 200", || async {
        let ready = client.get(format!("{base}/readyz")).send().await.ok()?;
        (ready.status() == StatusCode::OK).then_some(())
    })
    .await;
    assert_eq!(submit().await.unwrap().status(), StatusCode::ACCEPTED);

    stop.cancel();
    tokio::time::timeout(DEADLINE, server)
        .await
        .expect("stops in time")
        .unwrap()
        .expect("stops cleanly");
}

/// A 503 `starting` problem; with `Retry-After` when `retry_after`.
async fn assert_starting(response: reqwest::Response, retry_after: bool) {
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    if retry_after {
        let seconds: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(seconds >= 1);
    }
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "starting", "{problem}");
    assert_eq!(problem["status"], 503);
}

/// A start-up that fails (a key is needed on a public address) stops serving the socket and
/// returns the error; the early socket does not outlive it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_up_closes_the_socket() {
    let database = TestDatabase::fresh(Backend::from_env()).await;
    let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut config = ServeConfig::defaults().expect("the TASKD_* environment parses");
    config.database.url = database.url.clone();
    let outcome = tokio::time::timeout(
        DEADLINE,
        taskd::app::run(listener, config, Registry::builtin(), async {}),
    )
    .await
    .expect("returns in time");
    assert!(outcome.is_err(), "start-up fails without keys");
    let refused = Client::new()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(refused.is_err(), "the socket is closed: {refused:?}");
}
