//! `taskd bulk FILE.ndjson`: one task per line (each line a `POST /v1/tasks` body), sent
//! through `POST /v1/tasks/batch` in batches, with a progress bar, a rate and an ETA, then a
//! summary; `--wait` follows every task to its end.
//!
//! Safe to run again after an interruption: every line goes with an idempotency key made of
//! a digest of the whole file's bytes and the line's number, so a second run of the same file
//! replays the lines already stored (the server answers them with their first task) and
//! stores the rest. The digest is of the content, not of the path or size: a renamed or moved
//! copy still matches its earlier run, while two different files never share keys (a path and
//! a size would: a file rewritten in place with new tasks of the same length would have its
//! tasks silently taken for the old ones). The price: an edited file is a new file, and all
//! its lines are submitted again. A line that carries its own `idempotency_key` keeps it.
//!
//! The file is read twice: first to digest and check every line (so a bad line 9,000 stops
//! the run before anything is sent), then to send; memory holds one batch, not the file.

use std::io::{BufRead, BufReader, IsTerminal};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::client::{CliError, Client, Connection};
use super::output::{self, Exit};
use super::tasks::await_task;

/// The longest pause a `Retry-After` may impose between two tries of one batch.
const LONGEST_PAUSE: Duration = Duration::from_secs(60);
/// How many times in a row one batch may find no server before the run stops.
const UNREACHABLE_TRIES: u32 = 5;

#[derive(Debug, Args)]
pub struct BulkArgs {
    /// A file with one submit body (a JSON object) per line; blank lines are skipped.
    pub file: PathBuf,
    /// Tasks per request (1 to 1000, the server's batch limit).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub batch_size: u16,
    /// Then follow every task to its end; exit 1 if any failed or was cancelled.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub connection: Connection,
}

/// What the first reading found: the file's digest and how many tasks it holds.
struct Scan {
    digest: String,
    tasks: u64,
}

fn open(args: &BulkArgs) -> Result<BufReader<std::fs::File>, CliError> {
    std::fs::File::open(&args.file)
        .map(BufReader::new)
        .map_err(|e| CliError::Input(format!("cannot read {}: {e}", args.file.display())))
}

/// Each non-blank line with its 1-based number.
fn lines(reader: impl BufRead) -> impl Iterator<Item = Result<(u64, String), CliError>> {
    reader
        .lines()
        .enumerate()
        .map(|(index, line)| {
            line.map(|line| (index as u64 + 1, line))
                .map_err(|e| CliError::Input(format!("cannot read line {}: {e}", index + 1)))
        })
        .filter(|line| !matches!(line, Ok((_, text)) if text.trim().is_empty()))
}

fn parse_line(number: u64, text: &str) -> Result<serde_json::Map<String, Value>, CliError> {
    match serde_json::from_str(text) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(CliError::Input(format!(
            "line {number}: expected a JSON object (a submit body)"
        ))),
        Err(e) => Err(CliError::Input(format!("line {number}: not JSON: {e}"))),
    }
}

fn scan(args: &BulkArgs) -> Result<Scan, CliError> {
    let unreadable =
        |e: std::io::Error| CliError::Input(format!("cannot read {}: {e}", args.file.display()));
    let mut reader = open(args)?;
    let mut hasher = Sha256::new();
    let (mut line, mut number, mut tasks) = (Vec::new(), 0, 0);
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(unreadable)? == 0 {
            break;
        }
        number += 1;
        hasher.update(&line);
        let text = std::str::from_utf8(&line)
            .map_err(|_| CliError::Input(format!("line {number}: not UTF-8")))?;
        if !text.trim().is_empty() {
            parse_line(number, text)?;
            tasks += 1;
        }
    }
    // 128 bits of the digest: no two files meet by chance.
    let digest = hex::encode(&hasher.finalize()[..16]);
    Ok(Scan { digest, tasks })
}

fn bar(total: u64, hidden: bool) -> ProgressBar {
    let target = if hidden || !std::io::stderr().is_terminal() {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:9} {bar:40} {pos}/{len} {per_sec:>12} eta {eta} ({elapsed})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("█▉▊▋▌▍▎▏ "),
    );
    bar
}

/// Sends one batch until the server takes it: a full queue or a draining server is waited
/// out as its `Retry-After` says; an unreachable one is tried a few times.
async fn send(client: &Client, tasks: Vec<Value>, bar: &ProgressBar) -> Result<Value, CliError> {
    let body = json!({ "tasks": tasks });
    let mut unreachable = 0;
    loop {
        match client.post("/v1/tasks/batch", &body).await {
            Ok(answer) => return Ok(answer),
            Err(CliError::Problem(problem)) if matches!(problem.status.as_u16(), 429 | 503) => {
                let pause = problem
                    .retry_after
                    .unwrap_or(Duration::from_secs(1))
                    .min(LONGEST_PAUSE);
                let detail = problem.detail.clone().unwrap_or_default();
                bar.suspend(|| {
                    eprintln!("taskd bulk: {detail}; trying again in {}s", pause.as_secs())
                });
                tokio::time::sleep(pause).await;
            }
            Err(error @ CliError::Unreachable { .. }) => {
                unreachable += 1;
                if unreachable >= UNREACHABLE_TRIES {
                    return Err(error);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

pub async fn bulk(args: BulkArgs) -> Result<Exit, CliError> {
    let client = Client::new(&args.connection)?;
    let scan = scan(&args)?;
    let json = args.connection.json;
    let started = Instant::now();
    let bar = bar(scan.tasks, json);
    bar.set_message("submitted");
    let (mut submitted, mut replayed) = (0u64, 0u64);
    let mut ids = Vec::new();
    let mut batch = Vec::with_capacity(args.batch_size.into());
    let mut numbers = Vec::with_capacity(args.batch_size.into());
    let mut lines = lines(open(&args)?).peekable();
    while let Some(line) = lines.next() {
        let (number, text) = line?;
        let mut task = parse_line(number, &text)?;
        task.entry("idempotency_key")
            .or_insert_with(|| json!(format!("bulk-{}-{number}", scan.digest)));
        batch.push(Value::Object(task));
        numbers.push(number);
        if batch.len() < usize::from(args.batch_size) && lines.peek().is_some() {
            continue;
        }
        let sent = batch.len() as u64;
        let answer = send(&client, std::mem::take(&mut batch), &bar)
            .await
            .map_err(|error| refused(error, &numbers))?;
        numbers.clear();
        let again = answer.get("replayed").and_then(Value::as_u64).unwrap_or(0);
        replayed += again;
        submitted += sent - again;
        if args.wait {
            let tasks = answer.get("tasks").and_then(Value::as_array);
            let new_ids = tasks.into_iter().flatten().map(|t| output::field(t, "id"));
            ids.extend(new_ids.map(str::to_owned));
        }
        bar.inc(sent);
    }
    bar.finish();
    let seconds = started.elapsed().as_secs_f64();
    let file = args.file.display().to_string();
    if json {
        output::json_line(&json!({
            "file": file, "tasks": scan.tasks, "submitted": submitted,
            "replayed": replayed, "seconds": seconds,
        }));
    } else {
        println!(
            "{file}: {} tasks: {submitted} submitted, {replayed} already there from an \
             earlier run; {seconds:.1}s ({:.0} tasks/s)",
            scan.tasks,
            scan.tasks as f64 / seconds.max(0.001)
        );
    }
    if !args.wait {
        return Ok(Exit::Success);
    }
    follow(&client, &ids, json).await
}

/// Names the lines of a refused batch: the server's index is within the batch.
fn refused(error: CliError, numbers: &[u64]) -> CliError {
    let CliError::Problem(problem) = &error else {
        return error;
    };
    let line = problem
        .errors
        .iter()
        .find_map(|(_, _, index)| *index)
        .and_then(|index| numbers.get(index as usize));
    let (first, last) = (numbers.first(), numbers.last());
    match (line, first, last) {
        (Some(line), _, _) => CliError::Input(format!(
            "line {line} was refused (nothing of its batch was stored): {error}"
        )),
        (None, Some(first), Some(last)) => CliError::Input(format!(
            "the batch of lines {first} to {last} was refused (nothing of it was stored): {error}"
        )),
        _ => error,
    }
}

/// `--wait`: every task to its end, with a bar; the exit says whether all succeeded.
async fn follow(client: &Client, ids: &[String], json: bool) -> Result<Exit, CliError> {
    let bar = bar(ids.len() as u64, json);
    bar.set_message("finished");
    let mut counts = std::collections::BTreeMap::<String, u64>::new();
    for id in ids {
        let task = await_task(client, id, None).await?;
        *counts.entry(output::state(&task).to_owned()).or_default() += 1;
        bar.inc(1);
    }
    bar.finish();
    let count = |state: &str| counts.get(state).copied().unwrap_or(0);
    if json {
        output::json_line(&json!({ "finished": counts }));
    } else {
        println!(
            "finished: {} succeeded, {} failed, {} cancelled",
            count("succeeded"),
            count("failed"),
            count("cancelled")
        );
    }
    Ok(if count("failed") + count("cancelled") > 0 {
        Exit::TaskFailed
    } else {
        Exit::Success
    })
}
