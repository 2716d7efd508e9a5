//! `taskd submit`, `get`, `result`, `wait`, `list`, `cancel` and `retry`: one task (or a few)
//! at a time over the public API. Waiting is the server's long-poll (`Prefer: wait`,
//! `?wait=`), renewed until the task ends or the caller's limit runs out.

use std::io::Read;
use std::time::{Duration, Instant};

use clap::Args;
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::client::{CliError, Client, Connection};
use super::output::{self, Exit};

/// The longest one long-poll asks the server to wait (its own limit).
const LONGEST_POLL_SECS: f64 = 60.0;

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The kind of task (`GET /v1/kinds` lists them).
    pub kind: String,
    /// The input: JSON, `@FILE` (a file holding JSON) or `-` (JSON on stdin); default `{}`.
    #[arg(long, value_name = "JSON|@FILE|-")]
    pub input: Option<String>,
    /// The queue; default: the server's `default`.
    #[arg(long)]
    pub queue: Option<String>,
    /// A label, `key=value`; may be given several times.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// Run only after this task succeeded; may be given several times (needs a server that
    /// has task dependencies).
    #[arg(long = "after", value_name = "ID")]
    pub after: Vec<String>,
    /// Submit at most once under this key (a repeat answers with the first task).
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Wait for the task to finish and print it: at most SECS seconds, or as long as it takes
    /// without SECS. Exits 1 if it failed or was cancelled, 124 if SECS ran out.
    #[arg(long, value_name = "SECS", num_args = 0..=1)]
    pub wait: Option<Option<f64>>,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    /// The task's id.
    pub id: String,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Args)]
pub struct ResultArgs {
    /// The task's id.
    pub id: String,
    /// Wait for the task to finish first: at most SECS seconds, or as long as it takes.
    #[arg(long, value_name = "SECS", num_args = 0..=1)]
    pub wait: Option<Option<f64>>,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The tasks' ids.
    #[arg(required = true)]
    pub ids: Vec<String>,
    /// Give up after this many seconds (exit 124); default: wait as long as it takes.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Args)]
pub struct IdsArgs {
    /// The tasks' ids.
    #[arg(required = true)]
    pub ids: Vec<String>,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long)]
    pub queue: Option<String>,
    /// scheduled, queued, running, succeeded, failed or cancelled.
    #[arg(long)]
    pub state: Option<String>,
    #[arg(long)]
    pub kind: Option<String>,
    /// Only tasks with this label, `key=value`.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_label)]
    pub label: Option<(String, String)>,
    /// Only the children of this task (the tasks that name it in `after`).
    #[arg(long, value_name = "ID")]
    pub parent: Option<String>,
    /// Tasks per page (1 to 500), newest first.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Go on from a page's `next_cursor`.
    #[arg(long)]
    pub cursor: Option<String>,
    /// Follow every page to the end.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub connection: Connection,
}

/// `key=value` (or the API's own `key:value`) as a pair.
pub fn parse_label(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .or_else(|| text.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("a label is KEY=VALUE, got `{text}`"))
}

/// The input as given: inline JSON, `@FILE` or `-` for stdin.
fn read_input(input: &str) -> Result<Value, CliError> {
    let (text, source) = if input == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::Input(format!("cannot read the input from stdin: {e}")))?;
        (text, "stdin".to_owned())
    } else if let Some(path) = input.strip_prefix('@') {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::Input(format!("cannot read the input file {path}: {e}")))?;
        (text, path.to_owned())
    } else {
        (input.to_owned(), "--input".to_owned())
    };
    serde_json::from_str(&text)
        .map_err(|e| CliError::Input(format!("the input ({source}) is not JSON: {e}")))
}

/// A long-poll's deadline: `None` waits as long as it takes.
fn deadline(secs: Option<f64>) -> Result<Option<Instant>, CliError> {
    secs.map(|secs| {
        Duration::try_from_secs_f64(secs)
            .map(|wait| Instant::now() + wait)
            .map_err(|_| CliError::Input(format!("a wait is a number of seconds, got {secs}")))
    })
    .transpose()
}

/// Seconds to ask the server to wait now: its most, or what is left before `deadline`.
fn poll_secs(deadline: Option<Instant>) -> f64 {
    deadline.map_or(LONGEST_POLL_SECS, |at| {
        at.saturating_duration_since(Instant::now())
            .as_secs_f64()
            .min(LONGEST_POLL_SECS)
    })
}

/// Long-polls a task until it ends or `deadline` passes; answers the task as last seen.
pub async fn await_task(
    client: &Client,
    id: &str,
    deadline: Option<Instant>,
) -> Result<Value, CliError> {
    loop {
        let secs = poll_secs(deadline);
        let task = client
            .get(&format!("/v1/tasks/{id}?wait={secs:.3}"))
            .await?;
        let expired = deadline.is_some_and(|at| Instant::now() >= at);
        if Exit::of_state(output::state(&task)).is_some() || expired {
            return Ok(task);
        }
    }
}

/// Prints a finished (or given-up-on) task and tells how to exit.
fn report_waited(task: &Value, json: bool) -> Exit {
    if json {
        output::json_line(task);
    } else {
        print!("{}", output::task_block(task));
    }
    Exit::of_state(output::state(task)).unwrap_or(Exit::Timeout)
}

pub async fn submit(args: SubmitArgs) -> Result<Exit, CliError> {
    let client = Client::new(&args.connection)?;
    let mut body = Map::new();
    body.insert("kind".into(), json!(args.kind));
    if let Some(input) = &args.input {
        body.insert("input".into(), read_input(input)?);
    }
    if let Some(queue) = &args.queue {
        body.insert("queue".into(), json!(queue));
    }
    if !args.labels.is_empty() {
        let labels: Map<String, Value> = args
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        body.insert("labels".into(), Value::Object(labels));
    }
    if !args.after.is_empty() {
        body.insert("after".into(), json!(args.after));
    }
    let mut request = client
        .request(Method::POST, "/v1/tasks")
        .json(&Value::Object(body));
    if let Some(key) = &args.idempotency_key {
        request = request.header("idempotency-key", key);
    }
    let deadline = deadline(args.wait.flatten())?;
    if args.wait.is_some() {
        request = request.header("prefer", format!("wait={:.3}", poll_secs(deadline)));
    }
    let answer = client.send(request).await?;
    if answer.headers.contains_key("idempotent-replayed") {
        eprintln!(
            "taskd: already submitted under this idempotency key: {}",
            output::field(&answer.body, "id")
        );
    }
    let task = answer.body;
    if args.wait.is_none() {
        if args.connection.json {
            output::json_line(&task);
        } else {
            println!("{}", output::field(&task, "id"));
        }
        return Ok(Exit::Success);
    }
    let task = match Exit::of_state(output::state(&task)) {
        Some(_) => task,
        None => await_task(&client, output::field(&task, "id"), deadline).await?,
    };
    Ok(report_waited(&task, args.connection.json))
}

pub async fn get(args: IdArgs) -> Result<Exit, CliError> {
    let client = Client::new(&args.connection)?;
    let task = client.get(&format!("/v1/tasks/{}", args.id)).await?;
    if args.connection.json {
        output::json_line(&task);
    } else {
        print!("{}", output::task_block(&task));
    }
    Ok(Exit::Success)
}

pub async fn result(args: ResultArgs) -> Result<Exit, CliError> {
    let client = Client::new(&args.connection)?;
    if let Some(wait) = args.wait {
        await_task(&client, &args.id, deadline(wait)?).await?;
    }
    let path = format!("/v1/tasks/{}/result", args.id);
    match client.send(client.request(Method::GET, &path)).await {
        Ok(answer) if answer.status == reqwest::StatusCode::ACCEPTED => {
            eprintln!(
                "taskd: task {} is {}: no result yet",
                args.id,
                output::state(&answer.body)
            );
            Ok(Exit::Timeout)
        }
        Ok(answer) => {
            if args.connection.json {
                output::json_line(&answer.body);
            } else {
                let pretty = serde_json::to_string_pretty(&answer.body).unwrap_or_default();
                println!("{pretty}");
            }
            Ok(Exit::Success)
        }
        // A failed or cancelled task has no result: that is the task's outcome, not an error
        // of the request.
        Err(CliError::Problem(problem)) if problem.status == reqwest::StatusCode::CONFLICT => {
            eprintln!("taskd: {}", CliError::Problem(problem));
            Ok(Exit::TaskFailed)
        }
        Err(error) => Err(error),
    }
}

pub async fn wait(args: WaitArgs) -> Result<Exit, CliError> {
    let client = Client::new(&args.connection)?;
    let deadline = deadline(args.timeout)?;
    let mut exit = Exit::Success;
    let mut rows = Vec::new();
    for id in &args.ids {
        let task = await_task(&client, id, deadline).await?;
        exit = exit.worst(Exit::of_state(output::state(&task)).unwrap_or(Exit::Timeout));
        if args.connection.json {
            output::json_line(&task);
        } else {
            rows.push(output::task_row(&task));
        }
    }
    if !args.connection.json {
        print!("{}", output::table(output::TASK_HEADER, &rows));
    }
    Ok(exit)
}

pub async fn list(args: ListArgs) -> Result<Exit, CliError> {
    let client = Client::new(&args.connection)?;
    let mut query: Vec<(&str, String)> = vec![("limit", args.limit.to_string())];
    for (name, value) in [
        ("queue", &args.queue),
        ("state", &args.state),
        ("kind", &args.kind),
        ("parent", &args.parent),
    ] {
        if let Some(value) = value {
            query.push((name, value.clone()));
        }
    }
    if let Some((key, value)) = &args.label {
        query.push(("label", format!("{key}:{value}")));
    }
    let mut cursor = args.cursor.clone();
    let mut rows = Vec::new();
    loop {
        let mut page_query = query.clone();
        if let Some(cursor) = &cursor {
            page_query.push(("cursor", cursor.clone()));
        }
        let request = client.request(Method::GET, "/v1/tasks").query(&page_query);
        let page = client.send(request).await?.body;
        if args.connection.json {
            output::json_line(&page);
        } else {
            let tasks = page.get("tasks").and_then(Value::as_array);
            rows.extend(tasks.into_iter().flatten().map(output::task_row));
        }
        cursor = page
            .get("next_cursor")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if !args.all || cursor.is_none() {
            break;
        }
    }
    if !args.connection.json {
        print!("{}", output::table(output::TASK_HEADER, &rows));
        if let Some(cursor) = cursor {
            eprintln!("more: taskd list --cursor {cursor} (or --all)");
        }
    }
    Ok(Exit::Success)
}

/// `taskd cancel` and `taskd retry`: one POST per id; an error on one does not stop the rest.
pub async fn act(args: IdsArgs, action: &str) -> Result<Exit, CliError> {
    let client = Client::new(&args.connection)?;
    let mut exit = Exit::Success;
    let mut rows = Vec::new();
    for id in &args.ids {
        let request = client.request(Method::POST, &format!("/v1/tasks/{id}/{action}"));
        match client.send(request).await {
            Ok(answer) if args.connection.json => output::json_line(&answer.body),
            Ok(answer) => rows.push(output::task_row(&answer.body)),
            Err(error @ CliError::Unreachable { .. }) => return Err(error),
            Err(error) => {
                eprintln!("taskd {action} {id}: {error}");
                exit = Exit::Error;
            }
        }
    }
    if !args.connection.json && !rows.is_empty() {
        print!("{}", output::table(output::TASK_HEADER, &rows));
    }
    Ok(exit)
}
