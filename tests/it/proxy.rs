//! taskd behind real reverse proxies, run on the committed configurations: nginx on
//! `deploy/nginx/taskd.conf` (at the root) and `deploy/nginx/taskd-prefix.conf` (under
//! `/taskd/`), Caddy on `deploy/caddy/Caddyfile` (both sites), run by `proxies.rs`.
//!
//! Through the proxy: a submit's `Location` carries the client's origin and prefix, a
//! long-poll and `Prefer: wait` end with taskd's answer (cut to `--max-wait`, not the proxy's
//! 504), the firehose streams events as they happen, and every URL of the dashboard page
//! resolves. nginx and Caddy must be installed (`.ci/run` installs both): a missing one fails
//! these tests, it does not skip them.

use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{DEADLINE, TestApp, spawn_app_with, wait_for};
use crate::proxies::{Proxy, free_port, read};

/// A taskd as the deploy files expect it: trusting the proxy on 127.0.0.1, under `base_path`,
/// with a short --max-wait so a cut wait shows quickly.
async fn upstream(base_path: &str) -> (TestApp, u16) {
    let app = spawn_app_with(|c| {
        c.trusted_proxies = "127.0.0.1".parse().unwrap();
        c.base_path = base_path.parse().unwrap();
        c.max_wait = Duration::from_secs(1);
    })
    .await;
    let port = app.base.rsplit(':').next().unwrap().parse().unwrap();
    (app, port)
}

fn client() -> Client {
    Client::builder().timeout(DEADLINE).build().unwrap()
}

/// Everything a client does through the proxy at `origin` + `prefix`.
async fn exercise(proxy: &Proxy, prefix: &str) {
    let client = client();
    let api = format!("{}{prefix}", proxy.origin);
    let check = |what: &str, status: StatusCode, want: StatusCode| {
        assert_eq!(
            status,
            want,
            "{what} through the proxy; its log:\n{}",
            proxy.log()
        );
    };

    // Submit: Location is the client's URL, with the prefix; it resolves.
    let submitted = client
        .post(format!("{api}/v1/tasks"))
        .json(&json!({"kind": "echo", "input": {"n": 1}}))
        .send()
        .await
        .unwrap();
    check("submit", submitted.status(), StatusCode::ACCEPTED);
    let location = submitted.headers()["location"].to_str().unwrap().to_owned();
    let task: Value = submitted.json().await.unwrap();
    let id = task["id"].as_str().unwrap();
    assert_eq!(location, format!("{api}/v1/tasks/{id}"));

    // Long-poll on the Location until terminal.
    let done = wait_for("the task to succeed through the proxy", || async {
        let task: Value = client
            .get(format!("{location}?wait=10"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (task["state"] == "succeeded").then_some(task)
    })
    .await;
    assert_eq!(done["result"], json!({"n": 1}));

    // A wait longer than --max-wait (1 s here) is cut to it: taskd's 202, not the proxy's 504.
    let waited = client
        .post(format!("{api}/v1/tasks"))
        .header("prefer", "wait=600")
        .json(&json!({"kind": "sleep", "input": {"ms": 600_000}}))
        .send()
        .await
        .unwrap();
    check("a cut Prefer: wait", waited.status(), StatusCode::ACCEPTED);
    assert!(
        waited.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with(&api)
    );
    let sleeping: Value = waited.json().await.unwrap();
    let polled = client
        .get(format!(
            "{api}/v1/tasks/{}?wait=600",
            sleeping["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    check("a cut ?wait=", polled.status(), StatusCode::OK);

    firehose_streams(proxy, &client, &api).await;
    dashboard_urls_resolve(proxy, &client, &api, prefix).await;
}

/// The firehose through the proxy delivers a task's events while the stream stays open.
async fn firehose_streams(proxy: &Proxy, client: &Client, api: &str) {
    let mut stream = client.get(format!("{api}/v1/events")).send().await.unwrap();
    assert_eq!(stream.status(), StatusCode::OK, "{}", proxy.log());
    let submitted: Value = client
        .post(format!("{api}/v1/tasks"))
        .json(&json!({"kind": "echo", "queue": "streamed"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = submitted["id"].as_str().unwrap();
    let mut seen = String::new();
    let succeeded = |seen: &str| {
        seen.split("\n\n").any(|block| {
            block
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
                .any(|event| event["task_id"] == id && event["state"] == "succeeded")
        })
    };
    tokio::time::timeout(DEADLINE, async {
        while !succeeded(&seen) {
            let chunk = stream
                .chunk()
                .await
                .unwrap()
                .expect("the stream stays open");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no events of {id} through the proxy; got:\n{seen}"));
}

/// The dashboard through the proxy: its `<base>` is the prefix, and every URL its script
/// calls (`api("…")`, `fetch("…")`, its event stream's `stream("…")`) resolves against it to
/// a working route.
async fn dashboard_urls_resolve(proxy: &Proxy, client: &Client, api: &str, prefix: &str) {
    let page = client.get(format!("{api}/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK, "{}", proxy.log());
    let html = page.text().await.unwrap();
    let base = format!(r#"<base href="{prefix}/">"#);
    assert!(html.contains(&base), "no {base} in the page");
    let page_url = url::Url::parse(&format!("{api}/")).unwrap();
    let mut urls = Vec::new();
    for call in [r#"api(""#, r#"fetch(""#, r#"stream(""#] {
        for piece in html.split(call).skip(1) {
            urls.push(piece.split('"').next().unwrap().to_owned());
        }
    }
    assert!(urls.len() >= 4, "the page's URLs: {urls:?}");
    for relative in urls {
        let url = page_url.join(&relative).unwrap();
        assert!(url.path().starts_with(&format!("{prefix}/")), "{url}");
        let response = client.get(url.clone()).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{url}: {}", proxy.log());
    }
}

/// The proxies' read timeouts are above taskd's default --max-wait, so a long-poll ends with
/// taskd's answer (the 504 of nginx's default 60 s is what this prevents).
#[test]
fn proxy_timeouts_are_above_the_default_max_wait() {
    let max_wait = taskd::config::ServeConfig::defaults().unwrap().max_wait;
    let seconds = |text: &str, directive: &str| -> Vec<u64> {
        text.lines()
            .map(str::trim)
            .filter(|line| line.starts_with(directive))
            .map(|line| {
                let value = line[directive.len()..].trim().trim_end_matches(';');
                humantime::parse_duration(value).unwrap().as_secs()
            })
            .collect()
    };
    for (file, directive) in [
        ("nginx/taskd.conf", "proxy_read_timeout"),
        ("nginx/taskd-prefix.conf", "proxy_read_timeout"),
        ("caddy/Caddyfile", "response_header_timeout"),
    ] {
        let found = seconds(&read(file), directive);
        assert!(!found.is_empty(), "{file} sets no {directive}");
        assert!(
            found.iter().all(|&s| s > max_wait.as_secs()),
            "{file}: {directive} {found:?} is not above --max-wait {max_wait:?}"
        );
    }
}

/// nginx on deploy/nginx/taskd.conf, taskd at the root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_nginx_at_the_root() {
    let (_app, port) = upstream("").await;
    let proxy = Proxy::nginx("taskd.conf", port).await;
    exercise(&proxy, "").await;
}

/// nginx on deploy/nginx/taskd-prefix.conf, taskd under /taskd (--base-path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_nginx_under_a_prefix() {
    let (_app, port) = upstream("/taskd").await;
    let proxy = Proxy::nginx("taskd-prefix.conf", port).await;
    exercise(&proxy, "/taskd").await;
    bare_prefix_is_the_dashboard(&proxy).await;
}

/// `/taskd` without its slash redirects to the dashboard at `/taskd/`.
async fn bare_prefix_is_the_dashboard(proxy: &Proxy) {
    let bare = client()
        .get(format!("{}/taskd", proxy.origin))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), StatusCode::OK, "{}", proxy.log());
    assert_eq!(bare.url().path(), "/taskd/");
    assert!(
        bare.text()
            .await
            .unwrap()
            .contains(r#"<base href="/taskd/">"#)
    );
}

/// Caddy on deploy/caddy/Caddyfile's root site, taskd at the root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_caddy_at_the_root() {
    let (_app, port) = upstream("").await;
    let proxy = Proxy::caddy(port, free_port(), true).await;
    exercise(&proxy, "").await;
}

/// Caddy on deploy/caddy/Caddyfile's /taskd/ site, taskd under /taskd (--base-path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_caddy_under_a_prefix() {
    let (_app, port) = upstream("/taskd").await;
    let proxy = Proxy::caddy(free_port(), port, false).await;
    exercise(&proxy, "/taskd").await;
    bare_prefix_is_the_dashboard(&proxy).await;
}
