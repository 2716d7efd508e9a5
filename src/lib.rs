//! taskd: an HTTP task service. Clients submit tasks over a REST API; taskd stores each one
//! durably, runs it on a bounded worker pool and serves it as a future keyed by its id.
//!
//! # Layout
//!
//! The arrows point one way: `api → engine → store → task`.
//!
//! - [`task`]: the domain — ids, names, states and their legal moves. No HTTP, no SQL.
//! - [`access`]: who may do what — API key scopes, queue patterns, secrets and their hashes.
//!   No HTTP, no SQL: the store keeps keys, the api checks them, the engine scopes by them.
//! - [`store`]: the [`store::TaskStore`] seam and its SQLite implementation (group commit).
//! - [`engine`]: admission, the dispatcher and the worker pool, waiters, completion
//!   webhooks, shutdown.
//! - [`handlers`]: the [`handlers::Handler`] trait and the built-in kinds.
//! - [`api`]: routes, extractors, problem+json errors, middleware, and the serving loop
//!   with its connection and body limits (`api/serve.rs`, `conn.rs`, `body.rs`); in front of
//!   the router, the start-up answers (`front.rs`) and the reverse proxy's view — base path,
//!   trusted `X-Forwarded-*` — that links are built from (`proxy.rs`).
//! - [`outbound`]: the outbound allow-list and the HTTP client that webhooks and the `http`
//!   kind share.
//! - [`metrics`]: names every metric; the engine and api record into it, `/metrics` renders it.
//! - [`traces`]: W3C trace context in and out, spans of submits and attempts, the OTLP/HTTP
//!   exporter behind `--otlp-endpoint`.
//! - [`config`], [`app`]: flags with env twins, and the composition root.
//! - [`cli`]: subcommands beside `serve`: `taskd worker` (a client of the API),
//!   `taskd keys` (API keys, in the database), `taskd backup` (a copy of a SQLite file), and
//!   the client (`submit`, `wait`, `watch`, `bulk`… over HTTP only; docs/cli.md).
//!
//! # Embedding
//!
//! A Rust program can serve the same API with handlers of its own:
//!
//! ```no_run
//! use serde::Deserialize;
//! use serde_json::{Value, json};
//! use taskd::handlers::{HandlerError, TaskContext};
//!
//! #[derive(Deserialize, schemars::JsonSchema)]
//! struct Resize { width: u32, height: u32 }
//!
//! async fn resize(input: Resize, _ctx: TaskContext) -> Result<Value, HandlerError> {
//!     Ok(json!({ "pixels": input.width * input.height }))
//! }
//!
//! # async fn run() -> Result<(), taskd::app::AppError> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! taskd::Taskd::builder()
//!     .database("sqlite://tasks.db")
//!     .handler_fn("resize", "Computes a pixel count.", resize)
//!     .serve(listener)
//!     .await
//! # }
//! ```
//!
//! # Patterns, and where they live
//!
//! - Thread pool: `engine/pool.rs` (a fixed set of workers, one permit each) and
//!   `handlers/context.rs` (a bounded pool for CPU-bound work).
//! - Worker model: `engine/pool.rs` — queue (the store), dispatcher, workers.
//! - Future and promise: `engine/waiters.rs` — the task is the future, `?wait=` resolves it;
//!   composed in `task/deps.rs` (`after` and its policies, decided once; the stores settle
//!   children in `store/*/deps.rs`) and `handlers/joins.rs` (the `all` and `any` kinds).
//! - Observer: `engine/events.rs` (the tailer reads the event log after each commit) and
//!   `engine/hub.rs` (the firehose, and a channel per streamed task).
//! - Periodic work: `engine/schedules.rs` — cron schedules fired by the maintainer, one task
//!   per slot across nodes (the slot is the idempotency key); rate limits in the claim paths
//!   (`store/sqlite/claims.rs`, `store/postgres/claim.rs`).
//! - Backpressure: `store/sqlite/inserts.rs` (`decide` refuses beyond `--max-queued`, 429)
//!   and `store/sqlite/writer.rs` (a bounded write queue).

pub mod access;
pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod engine;
pub mod handlers;
pub mod metrics;
pub mod outbound;
pub mod store;
pub mod task;
pub mod traces;

mod builder;

pub use builder::{Taskd, TaskdBuilder};
