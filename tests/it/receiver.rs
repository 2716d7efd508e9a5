//! A local HTTP receiver for the outbound tests: an axum server on 127.0.0.1:0 that records
//! every request, answers from a script, and counts the TCP connections it accepted (so a
//! test can prove that a refused request never reached it). Outbound is deny-by-default, so a
//! test names the receiver with `config.allow_outbound = receiver.allow()`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use serde_json::{Value, json};
use taskd::outbound::AllowList;
use tokio::net::TcpListener;

use crate::helpers::wait_for;

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// This status, with a JSON body.
    Json(u16, Value),
    /// This status, with a `text/plain` body.
    Text(u16, &'static str),
    /// Never answers.
    Hang,
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    /// A header's value as text ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

#[derive(Default)]
struct Shared {
    connections: AtomicUsize,
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Reply>>,
}

pub struct Receiver {
    pub base: String,
    shared: Arc<Shared>,
}

impl Receiver {
    /// Starts a receiver that answers `200 {"ok": true}` until scripted otherwise. It runs
    /// until the test's runtime ends.
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let shared = Arc::new(Shared::default());
        let counted = Arc::clone(&shared);
        let listener = listener.tap_io(move |_| {
            counted.connections.fetch_add(1, Ordering::SeqCst);
        });
        let app = axum::Router::new()
            .fallback(record)
            .with_state(Arc::clone(&shared));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { base, shared }
    }

    /// The next answers, in order; after them, `200 {"ok": true}` again.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.script.lock().unwrap().extend(replies);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The port it listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        let port = self.base.rsplit(':').next().expect("a port");
        port.parse().expect("a port number")
    }

    /// An `--allow-outbound` that names this receiver exactly (host and port).
    pub fn allow(&self) -> AllowList {
        format!("127.0.0.1:{}", self.port())
            .parse()
            .expect("an allow-list")
    }

    /// The TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// Waits until at least `count` requests arrived; returns them all.
    pub async fn wait_received(&self, count: usize) -> Vec<Received> {
        wait_for(&format!("{count} requests at the receiver"), || async {
            let received = self.received();
            (received.len() >= count).then_some(received)
        })
        .await
    }
}

async fn record(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.received.lock().unwrap().push(Received {
        method,
        path: uri.path().to_owned(),
        headers,
        body,
    });
    let reply = shared.script.lock().unwrap().pop_front();
    match reply.unwrap_or_else(|| Reply::Json(200, json!({"ok": true}))) {
        Reply::Json(status, body) => (status_code(status), axum::Json(body)).into_response(),
        Reply::Text(status, body) => (status_code(status), body).into_response(),
        Reply::Hang => std::future::pending().await,
    }
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).expect("a valid status")
}
