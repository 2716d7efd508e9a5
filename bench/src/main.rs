//! `baseline`: the floor taskd is measured against. A plain axum server that does what every
//! submit must do at the HTTP edge — parse a small JSON body shaped like a task submission into
//! a serde struct and answer 202 with a small JSON body — and nothing else: no validation of
//! kinds, no storage, no engine. `bench/run` drives it and taskd in the same run and reports
//! taskd's requests/s as a ratio of this one's.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;
use clap::Parser;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
#[command(
    name = "baseline",
    about = "A storage-free axum endpoint to benchmark taskd against."
)]
struct Args {
    /// The address to listen on (also accepted as the only positional argument).
    #[arg(long, env = "BASELINE_LISTEN", default_value = "127.0.0.1:8081")]
    listen: SocketAddr,

    /// Same as `--listen`, for `baseline 127.0.0.1:9000`.
    #[arg(conflicts_with = "listen", hide = true)]
    positional: Option<SocketAddr>,
}

/// What a client submits to taskd's `POST /v1/tasks`, parsed the same way (owned strings and a
/// JSON value), so the baseline pays for the same deserialization.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Submission {
    kind: String,
    input: Value,
    #[serde(default)]
    queue: Option<String>,
}

/// A small answer in the shape of a task summary.
#[derive(Debug, Serialize)]
struct Accepted {
    id: u64,
    queue: String,
    kind: String,
    state: &'static str,
    input: Value,
}

/// Gives each answer a distinct id, the way taskd hands out task ids. Relaxed: only uniqueness
/// matters, not ordering against other memory.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

async fn submit(
    axum::Json(submission): axum::Json<Submission>,
) -> (StatusCode, axum::Json<Accepted>) {
    let accepted = Accepted {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        queue: submission.queue.unwrap_or_else(|| "default".to_owned()),
        kind: submission.kind,
        state: "queued",
        input: submission.input,
    };
    (StatusCode::ACCEPTED, axum::Json(accepted))
}

async fn healthz() -> &'static str {
    "ok"
}

fn router() -> Router {
    Router::new()
        .route("/v1/tasks", post(submit))
        .route("/healthz", axum::routing::get(healthz))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.positional.unwrap_or(args.listen)).await?;
    // Printed so `bench/run` can wait for it and read the port.
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, router())
        .with_graceful_shutdown(async {
            // If the signal cannot be installed, serve until killed.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        })
        .await
}
