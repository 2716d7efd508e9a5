//! `taskd queues` (every queue's depth by state) and `taskd queue NAME` (one queue; with
//! `--pause`, `--resume` or `--concurrency N`, a `PATCH` of its settings first).

use clap::Args;
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::client::{CliError, Client, Connection};
use super::output::{self, Exit};

#[derive(Debug, Args)]
pub struct QueuesArgs {
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Args)]
pub struct QueueArgs {
    /// The queue's name.
    pub name: String,
    /// Stop starting its tasks (running ones finish; submits are still taken).
    #[arg(long, conflicts_with = "resume")]
    pub pause: bool,
    /// Start its tasks again.
    #[arg(long)]
    pub resume: bool,
    /// How many of its tasks may run at once; `none` lifts the limit.
    #[arg(long, value_name = "N|none", value_parser = parse_limit)]
    pub concurrency: Option<Limit>,
    #[command(flatten)]
    pub connection: Connection,
}

/// A limit, or `None` for no limit (a newtype: clap reads `Option<Option<_>>` as an
/// optional value).
#[derive(Debug, Clone, Copy)]
pub struct Limit(Option<u32>);

fn parse_limit(text: &str) -> Result<Limit, String> {
    if text == "none" {
        return Ok(Limit(None));
    }
    text.parse::<u32>()
        .map(|n| Limit(Some(n)))
        .map_err(|_| format!("a whole number or `none`, got `{text}`"))
}

const HEADER: &[&str] = &[
    "QUEUE",
    "PAUSED",
    "CONCURRENCY",
    "SCHEDULED",
    "QUEUED",
    "RUNNING",
    "SUCCEEDED",
    "FAILED",
    "CANCELLED",
    "OLDEST QUEUED",
];

fn row(queue: &Value) -> Vec<String> {
    let count = |state: &str| {
        queue
            .pointer(&format!("/counts/{state}"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
            .to_string()
    };
    let limit = |name: &str| match queue.get(name).and_then(Value::as_u64) {
        Some(n) => n.to_string(),
        None => "-".to_owned(),
    };
    let oldest = match queue.get("oldest_queued_age_ms").and_then(Value::as_u64) {
        Some(ms) => {
            humantime::format_duration(std::time::Duration::from_secs(ms / 1000)).to_string()
        }
        None => "-".to_owned(),
    };
    vec![
        output::field(queue, "name").to_owned(),
        queue
            .get("paused")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            .to_string(),
        limit("concurrency"),
        count("scheduled"),
        count("queued"),
        count("running"),
        count("succeeded"),
        count("failed"),
        count("cancelled"),
        oldest,
    ]
}

pub async fn queues(args: QueuesArgs) -> Result<Exit, CliError> {
    let client = Client::new(&args.connection)?;
    let answer = client.get("/v1/queues").await?;
    if args.connection.json {
        output::json_line(&answer);
    } else {
        let queues = answer.get("queues").and_then(Value::as_array);
        let rows: Vec<_> = queues.into_iter().flatten().map(row).collect();
        print!("{}", output::table(HEADER, &rows));
    }
    Ok(Exit::Success)
}

pub async fn queue(args: QueueArgs) -> Result<Exit, CliError> {
    let client = Client::new(&args.connection)?;
    let path = format!("/v1/queues/{}", args.name);
    let mut patch = Map::new();
    if args.pause || args.resume {
        patch.insert("paused".into(), json!(args.pause));
    }
    if let Some(Limit(concurrency)) = args.concurrency {
        patch.insert("concurrency".into(), json!(concurrency));
    }
    let queue = if patch.is_empty() {
        client.get(&path).await?
    } else {
        let request = client
            .request(Method::PATCH, &path)
            .json(&Value::Object(patch));
        client.send(request).await?.body
    };
    if args.connection.json {
        output::json_line(&queue);
    } else {
        print!("{}", output::table(HEADER, &[row(&queue)]));
    }
    Ok(Exit::Success)
}
