//! Behind a proxy, without one running: `--base-path`, `X-Forwarded-*` believed from
//! `--trusted-proxies` only (this test client is 127.0.0.1), the `Host` check reading a
//! trusted `X-Forwarded-Host`, and `--max-wait` cutting long-polls. The real nginx and Caddy
//! in front are `proxy.rs`.

use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, expect_problem, spawn_app_with};

/// The headers a client outside a trusted proxy would like taskd to believe.
const FORGED: [(&str, &str); 3] = [
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "tasks.example.com"),
    ("x-forwarded-prefix", "/elsewhere"),
];

/// Submits an echo task with `headers`; returns the response.
async fn submit_with(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = Client::new()
        .post(app.url(path))
        .json(&json!({"kind": "echo"}));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

fn location(response: &reqwest::Response) -> String {
    response.headers()["location"].to_str().unwrap().to_owned()
}

/// From a peer not in `--trusted-proxies` (none listed, or another address) X-Forwarded-*
/// change nothing: Location stays on the request's own path, and `Host` is what is checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_from_untrusted_peers_are_ignored() {
    for trusted in ["", "10.9.9.9, 192.0.2.0/24"] {
        let app = spawn_app_with(|c| c.trusted_proxies = trusted.parse().unwrap()).await;
        let response = submit_with(&app, "/v1/tasks", &FORGED).await;
        // Had X-Forwarded-Host been read, the loopback allow-list would have refused it.
        assert_eq!(
            response.status(),
            StatusCode::ACCEPTED,
            "trusted {trusted:?}"
        );
        let location = location(&response);
        let task: Value = response.json().await.unwrap();
        let id = task["id"].as_str().unwrap();
        assert_eq!(location, format!("/v1/tasks/{id}"));
        let dashboard = Client::new()
            .get(app.url("/"))
            .header("x-forwarded-prefix", "/elsewhere")
            .send()
            .await
            .unwrap();
        let page = dashboard.text().await.unwrap();
        assert!(page.contains(r#"<base href="/">"#), "trusted {trusted:?}");
        assert_eq!(app.task(id).await["id"], id);
    }
}

/// From a trusted proxy, Location is the client's URL (scheme, host, prefix), the dashboard's
/// base is the prefix, and the allow-list checks X-Forwarded-Host (421 if not listed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_from_trusted_proxies_shape_links() {
    let app = spawn_app_with(|c| {
        c.trusted_proxies = "127.0.0.1".parse().unwrap();
        c.allowed_hosts = Some("tasks.example.com".parse().unwrap());
    })
    .await;
    let response = submit_with(&app, "/v1/tasks", &FORGED).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let url = location(&response);
    let task: Value = response.json().await.unwrap();
    assert_eq!(
        url,
        format!(
            "https://tasks.example.com/elsewhere/v1/tasks/{}",
            task["id"].as_str().unwrap()
        ),
    );

    // No X-Forwarded-Proto: the scheme is http (taskd serves no TLS itself).
    let prefixed = submit_with(
        &app,
        "/v1/tasks",
        &[
            ("x-forwarded-prefix", "/elsewhere/"),
            ("x-forwarded-host", "tasks.example.com"),
        ],
    )
    .await;
    assert!(location(&prefixed).starts_with("http://tasks.example.com/elsewhere/v1/tasks/"));

    let page = Client::new()
        .get(app.url("/"))
        .header("x-forwarded-host", "tasks.example.com")
        .header("x-forwarded-prefix", "/elsewhere")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(r#"<base href="/elsewhere/">"#), "{page}");

    let other = submit_with(&app, "/v1/tasks", &[("x-forwarded-host", "evil.example")]).await;
    expect_problem(other, 421, "host_not_allowed").await;
    // Without X-Forwarded-Host, Host itself (127.0.0.1, not listed) is checked.
    let plain = submit_with(&app, "/v1/tasks", &[]).await;
    expect_problem(plain, 421, "host_not_allowed").await;
}

/// A trusted proxy's malformed X-Forwarded-* is a 400 `invalid_header` naming the header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_forwarded_headers_from_a_trusted_proxy_are_400() {
    let app = spawn_app_with(|c| c.trusted_proxies = "127.0.0.1/32".parse().unwrap()).await;
    for (name, value) in [
        ("x-forwarded-proto", "gopher"),
        ("x-forwarded-host", "user@tasks.example.com"),
        ("x-forwarded-host", "a b"),
        ("x-forwarded-prefix", "//evil.example"),
        ("x-forwarded-prefix", "taskd"),
    ] {
        let response = submit_with(&app, "/v1/tasks", &[(name, value)]).await;
        let problem = expect_problem(response, 400, "invalid_header").await;
        let detail = problem["detail"].as_str().unwrap().to_ascii_lowercase();
        assert!(detail.contains(name), "{name}: {problem}");
    }
}

/// With `--base-path /taskd` every route is under it (the bare prefix is the dashboard),
/// links carry it, and paths outside it are 404 `route_not_found`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_base_path_prefixes_every_route_and_link() {
    let app = spawn_app_with(|c| c.base_path = "/taskd/".parse().unwrap()).await;
    let response = submit_with(&app, "/taskd/v1/tasks", &[]).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = location(&response);
    assert!(location.starts_with("/taskd/v1/tasks/"), "{location}");
    let task: Value = Client::new()
        .get(app.url(&format!("{location}?wait=10")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(task["state"], "succeeded");
    for page in ["/taskd", "/taskd/"] {
        let html = Client::new().get(app.url(page)).send().await.unwrap();
        assert_eq!(html.status(), StatusCode::OK, "{page}");
        assert!(
            html.text()
                .await
                .unwrap()
                .contains(r#"<base href="/taskd/">"#)
        );
    }
    for outside in ["/v1/tasks", "/healthz", "/taskdx/healthz", "/"] {
        let response = Client::new().get(app.url(outside)).send().await.unwrap();
        expect_problem(response, 404, "route_not_found").await;
    }
}

/// A wait above `--max-wait` is cut to it, not refused: `?wait=` answers the running task
/// and `Prefer: wait` the 202, each after the cut wait; a negative wait is still a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_above_max_wait_are_cut_to_it() {
    let app = spawn_app_with(|c| c.max_wait = Duration::from_millis(200)).await;
    let long = json!({"kind": "sleep", "input": {"ms": 600_000}});
    let submitted = app
        .client
        .post(app.url("/v1/tasks"))
        .header("prefer", "wait=600")
        .json(&long)
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status(), StatusCode::ACCEPTED);
    let task: Value = submitted.json().await.unwrap();
    let id = task["id"].as_str().unwrap();
    let polled = app.get(&format!("/v1/tasks/{id}?wait=3600")).await;
    assert_eq!(polled.status(), StatusCode::OK);
    let polled: Value = polled.json().await.unwrap();
    assert!(
        matches!(polled["state"].as_str(), Some("queued" | "running")),
        "{polled}"
    );
    let negative = app.get(&format!("/v1/tasks/{id}?wait=-1")).await;
    expect_problem(negative, 400, "invalid_query").await;
}
