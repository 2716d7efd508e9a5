//! nginx and Caddy as unprivileged child processes on the committed configurations in
//! `deploy/`, with only addresses replaced (the proxy's listen port, the upstream's), each
//! with its own temporary prefix, config and logs. A missing program fails loudly: CI
//! installs both (`.ci/run`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::helpers::{terminate, wait_for};

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");
/// The upstream addresses and listen lines as the committed files have them.
const NGINX_UPSTREAM: &str = "server 127.0.0.1:8080;";
const NGINX_LISTEN: &str = "listen 80;";

/// A reverse proxy running as a child process; killed on drop.
pub struct Proxy {
    child: Child,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT` of the site under test.
    pub origin: String,
}

impl Drop for Proxy {
    /// SIGTERM, so nginx's master stops its workers (a SIGKILL would orphan them, still
    /// listening); SIGKILL only if it has not exited within the deadline.
    fn drop(&mut self) {
        if !terminate(&mut self.child) {
            let _ = self.child.kill();
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
pub fn free_port() -> u16 {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    socket.local_addr().expect("address").port()
}

/// `template` with `from` (which must occur) replaced by `to`.
#[track_caller]
fn replace(template: &str, from: &str, to: &str) -> String {
    assert!(template.contains(from), "the template has no `{from}`");
    template.replace(from, to)
}

pub fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(DEPLOY).join(path)).expect("the deploy file")
}

impl Proxy {
    /// nginx on `deploy/nginx/{file}`, proxying to taskd on `upstream`.
    pub async fn nginx(file: &str, upstream: u16) -> Proxy {
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
    pub async fn caddy(root: u16, prefixed: u16, at_root: bool) -> Proxy {
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

    pub fn log(&self) -> String {
        ["error.log", "caddy.log"]
            .iter()
            .filter_map(|name| std::fs::read_to_string(self.dir.path().join(name)).ok())
            .collect()
    }
}
