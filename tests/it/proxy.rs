//! taskd behind real reverse proxies, run on the committed configurations: nginx on
//! `deploy/nginx/taskd.conf` (at the root) and `deploy/nginx/taskd-prefix.conf` (under
//! `/taskd/`), Caddy on `deploy/caddy/Caddyfile` (both sites). Only addresses are replaced:
//! the proxy's listen port and the upstream's. Each proxy is an unprivileged child process
//! with its own temporary prefix, config and logs.
//!
//! Through the proxy: a submit's `Location` carries the client's origin and prefix, a
//! long-poll and `Prefer: wait` end with taskd's answer (cut to `--max-wait`, not the proxy's
//! 504), the firehose streams events as they happen, and every URL of the dashboard page
//! resolves. nginx and Caddy must be installed (`.ci/run` installs both): a missing one fails
//! these tests, it does not skip them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{DEADLINE, TestApp, spawn_app_with, wait_for};

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");
/// The upstream addresses and listen lines as the committed files have them.
const NGINX_UPSTREAM: &str = "server 127.0.0.1:8080;";
const NGINX_LISTEN: &str = "listen 80;";

/// A reverse proxy running as a child process; killed on drop.
struct Proxy {
    child: Child,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT` of the site under test.
    origin: String,
}

impl Drop for Proxy {
    /// SIGTERM, so nginx's master stops its workers (a SIGKILL would orphan them, still
    /// listening); SIGKILL only if it has not exited within the deadline.
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid, which is not reaped before the wait below.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let start = std::time::Instant::now();
        while matches!(self.child.try_wait(), Ok(None)) {
            if start.elapsed() > DEADLINE {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.wait();
    }
}

/// An installed program, or a loud failure naming the package.
fn program(paths: &[&str], package: &str) -> PathBuf {
    paths
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .unwrap_or_else(|| {
            panic!("{package} is not installed: `apt-get install {package}` (.ci/run does)")
        })
}

/// A port free a moment ago, for a proxy to listen on.
fn free_port() -> u16 {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    socket.local_addr().expect("address").port()
}

/// `template` with `from` (which must occur) replaced by `to`.
#[track_caller]
fn replace(template: &str, from: &str, to: &str) -> String {
    assert!(template.contains(from), "the template has no `{from}`");
    template.replace(from, to)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(DEPLOY).join(path)).expect("the deploy file")
}

impl Proxy {
    /// nginx on `deploy/nginx/{file}`, proxying to taskd on `upstream`.
    async fn nginx(file: &str, upstream: u16) -> Proxy {
        let nginx = program(&["/usr/sbin/nginx", "/usr/bin/nginx"], "nginx");
        let dir = tempfile::tempdir().expect("a temp dir");
        // nginx's workers run as `nobody` when the tests run as root: let them in.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        let port = free_port();
        let site = replace(
            &read(&format!("nginx/{file}")),
            NGINX_UPSTREAM,
            &format!("server 127.0.0.1:{upstream};"),
        );
        let site = replace(&site, NGINX_LISTEN, &format!("listen 127.0.0.1:{port};"));
        let d = dir.path().display();
        std::fs::write(dir.path().join("site.conf"), site).expect("write");
        let main = format!(
            "worker_processes 1;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
               access_log {d}/access.log;\n\
               client_body_temp_path {d}/client_body;\n\
               proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n\
               uwsgi_temp_path {d}/uwsgi;\n\
               scgi_temp_path {d}/scgi;\n\
               include {d}/site.conf;\n\
             }}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), main).expect("write");
        let child = Command::new(nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-g")
            .arg(format!("daemon off; pid {d}/nginx.pid;"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        Proxy::up(child, dir, port, "error.log").await
    }

    /// Caddy on `deploy/caddy/Caddyfile`, its root site proxying to `root` and its
    /// `/taskd/` site to `prefixed`; `origin` is the root site's when `at_root`.
    async fn caddy(root: u16, prefixed: u16, at_root: bool) -> Proxy {
        let caddy = program(&["/usr/bin/caddy", "/usr/local/bin/caddy"], "caddy");
        let dir = tempfile::tempdir().expect("a temp dir");
        let (root_port, prefix_port) = (free_port(), free_port());
        let d = dir.path().display();
        let file = read("caddy/Caddyfile");
        let file = replace(
            &file,
            "tasks.example.com {",
            &format!("http://127.0.0.1:{root_port} {{"),
        );
        let file = replace(
            &file,
            "www.example.com {",
            &format!("http://127.0.0.1:{prefix_port} {{"),
        );
        let file = replace(&file, "127.0.0.1:8080 {", &format!("127.0.0.1:{root} {{"));
        let file = replace(
            &file,
            "127.0.0.1:8081 {",
            &format!("127.0.0.1:{prefixed} {{"),
        );
        // Global options first (a Caddyfile has one such block, at the top): no admin
        // endpoint (tests run side by side), no certificates, state in the temp dir.
        let file = format!(
            "{{\n\tadmin off\n\tauto_https off\n\tstorage file_system {d}/data\n}}\n\n{file}"
        );
        std::fs::write(dir.path().join("Caddyfile"), file).expect("write");
        let log = std::fs::File::create(dir.path().join("caddy.log")).expect("a log file");
        let child = Command::new(caddy)
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(dir.path().join("Caddyfile"))
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("caddy starts");
        let port = if at_root { root_port } else { prefix_port };
        Proxy::up(child, dir, port, "caddy.log").await
    }

    /// Waits until the proxy accepts connections on `port`; fails with its log if it exits.
    async fn up(child: Child, dir: tempfile::TempDir, port: u16, log: &str) -> Proxy {
        let log = dir.path().join(log);
        let child = std::sync::Mutex::new(child);
        wait_for("the proxy to listen", || async {
            // Poisoned only by a panic of this very check, which ends the test anyway.
            if let Ok(Some(status)) = child.lock().unwrap().try_wait() {
                let said = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("the proxy exited ({status}):\n{said}");
            }
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(drop)
        })
        .await;
        let child = child.into_inner().unwrap();
        Proxy {
            child,
            dir,
            origin: format!("http://127.0.0.1:{port}"),
        }
    }

    fn log(&self) -> String {
        ["error.log", "caddy.log"]
            .iter()
            .filter_map(|name| std::fs::read_to_string(self.dir.path().join(name)).ok())
            .collect()
    }
}

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
/// calls (`api("…")`, `fetch("…")`) resolves against it to a working route.
async fn dashboard_urls_resolve(proxy: &Proxy, client: &Client, api: &str, prefix: &str) {
    let page = client.get(format!("{api}/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK, "{}", proxy.log());
    let html = page.text().await.unwrap();
    let base = format!(r#"<base href="{prefix}/">"#);
    assert!(html.contains(&base), "no {base} in the page");
    let page_url = url::Url::parse(&format!("{api}/")).unwrap();
    let mut urls = Vec::new();
    for call in [r#"api(""#, r#"fetch(""#] {
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
