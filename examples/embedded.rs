//! taskd embedded in a Rust program: a custom kind `resize` with a typed input, served over
//! the same HTTP API as `taskd serve`.
//!
//! Run: `cargo run --example embedded` (env `TASKD_LISTEN`, default 127.0.0.1:8081, beside a
//! `taskd serve` on 8080; env `TASKD_DATABASE`, default `sqlite::memory:` here), then
//! `curl -s -X POST localhost:8081/v1/tasks -H 'content-type: application/json' \
//!    -H 'prefer: wait=5' -d '{"kind":"resize","input":{"width":640,"height":480}}'`

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use taskd::handlers::{HandlerError, TaskContext};

/// The input of `resize`: checked at submit time (a wrong shape is a 422).
#[derive(Deserialize, JsonSchema)]
struct Resize {
    width: u32,
    height: u32,
}

async fn resize(input: Resize, ctx: TaskContext) -> Result<Value, HandlerError> {
    ctx.progress(50.0, Some("computing".to_owned()));
    let pixels = u64::from(input.width) * u64::from(input.height);
    Ok(json!({ "pixels": pixels, "attempt": ctx.attempt() }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen = std::env::var("TASKD_LISTEN").unwrap_or_else(|_| "127.0.0.1:8081".into());
    let database = std::env::var("TASKD_DATABASE").unwrap_or_else(|_| "sqlite::memory:".into());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!(
        "embedded taskd listening on http://{}",
        listener.local_addr()?
    );
    taskd::Taskd::builder()
        .database(database)
        .handler_fn(
            "resize",
            "Counts the pixels of a width × height image.",
            resize,
        )
        .serve(listener)
        .await?;
    Ok(())
}
