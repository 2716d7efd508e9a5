//! `taskd watch ID` and `taskd watch --queue Q`: follow tasks live over Server-Sent Events
//! (`GET /v1/tasks/{id}/events`, `GET /v1/events`). On a terminal each running task gets a
//! progress bar (indicatif) and other changes print above the bars; into a pipe or a file,
//! one plain line per event; `--json`, each event's JSON. A dropped stream is resumed from
//! the last event seen (`Last-Event-ID`), so no change is missed or shown twice.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::Method;
use serde_json::Value;

use super::client::{CliError, Client, Connection};
use super::output::{self, Exit};
use super::sse::SseParser;

/// How many reconnects in a row may fail before the watch gives up, and the pause between.
const RECONNECTS: u32 = 30;
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The task to follow to its end; without it, every task of `--queue` (or of every
    /// queue) until interrupted.
    pub id: Option<String>,
    /// Only this queue's tasks.
    #[arg(long, conflicts_with = "id")]
    pub queue: Option<String>,
    /// Only tasks of this kind.
    #[arg(long, conflicts_with = "id")]
    pub kind: Option<String>,
    #[command(flatten)]
    pub connection: Connection,
}

/// Where events are shown: bars on a terminal, else lines.
struct Screen {
    json: bool,
    bars: Option<(MultiProgress, HashMap<String, ProgressBar>)>,
}

impl Screen {
    fn new(json: bool) -> Screen {
        let bars = (!json && std::io::stdout().is_terminal()).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
            (multi, HashMap::new())
        });
        Screen { json, bars }
    }

    fn show(&mut self, event: &Value) {
        if self.json {
            output::json_line(event);
            return;
        }
        let id = output::field(event, "task_id").to_owned();
        let state = output::state(event);
        let mut line = format!(
            "{} {id} {} {state} attempt {}",
            output::field(event, "at"),
            output::field(event, "kind"),
            event.get("attempt").unwrap_or(&Value::Null),
        );
        if let Some(progress) = event.get("progress").filter(|p| !p.is_null()) {
            line.push_str(&format!(" {}", output::progress_text(progress)));
        }
        let Some((multi, bars)) = &mut self.bars else {
            println!("{line}");
            return;
        };
        if state == "running" {
            let bar = bars.entry(id.clone()).or_insert_with(|| {
                let bar = multi.add(ProgressBar::new(100));
                bar.set_style(bar_style());
                bar.set_prefix(format!("{id} {}", output::field(event, "kind")));
                bar
            });
            let progress = event.get("progress").filter(|p| !p.is_null());
            let percent = progress
                .and_then(|p| p.get("percent"))
                .and_then(Value::as_f64)
                .unwrap_or(0.0);
            bar.set_position(percent.clamp(0.0, 100.0) as u64);
            let message = progress
                .and_then(|p| p.get("message"))
                .and_then(Value::as_str)
                .unwrap_or("running");
            bar.set_message(message.to_owned());
            return;
        }
        if let Some(bar) = bars.remove(&id) {
            bar.finish_and_clear();
        }
        let _ = multi.println(line);
    }
}

/// A running task's bar: its id and kind, the bar, the percent and its progress message.
pub fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix} {bar:30} {pos:>3}% {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("█▉▊▋▌▍▎▏ ")
}

pub async fn watch(args: WatchArgs) -> Result<Exit, CliError> {
    let client = Client::new(&args.connection)?;
    let (path, query) = match &args.id {
        Some(id) => (format!("/v1/tasks/{id}/events"), vec![]),
        None => {
            let mut query = vec![];
            if let Some(queue) = &args.queue {
                query.push(("queue", queue.clone()));
            }
            if let Some(kind) = &args.kind {
                query.push(("kind", kind.clone()));
            }
            ("/v1/events".to_owned(), query)
        }
    };
    let mut screen = Screen::new(args.connection.json);
    let mut last_id: Option<String> = None;
    let mut failures = 0;
    let mut connected = false;
    loop {
        let mut request = client
            .request(Method::GET, &path)
            .query(&query)
            .header("accept", "text/event-stream");
        if let Some(last) = &last_id {
            request = request.header("last-event-id", last);
        }
        let mut response = match client.open(request).await {
            Ok(response) => response,
            // The first connection's failure is the answer; later ones may be a restart.
            Err(error) if !connected || failures >= RECONNECTS => return Err(error),
            Err(error @ CliError::Problem(_)) => return Err(error),
            Err(_) => {
                failures += 1;
                tokio::time::sleep(RECONNECT_PAUSE).await;
                continue;
            }
        };
        connected = true;
        let mut parser = SseParser::default();
        while let Ok(Some(chunk)) = response.chunk().await {
            failures = 0;
            for event in parser.push(&chunk) {
                if event.id.is_some() {
                    last_id = event.id.clone();
                }
                let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
                if event.event == "reset" {
                    eprintln!("taskd watch: {}", output::field(&data, "detail"));
                    continue;
                }
                screen.show(&data);
                if args.id.is_some()
                    && let Some(exit) = Exit::of_state(output::state(&data))
                {
                    return Ok(exit);
                }
            }
        }
        // The stream ended or broke (a server restart, a proxy's timeout): resume.
        failures += 1;
        if failures > RECONNECTS {
            return Err(CliError::Input(format!(
                "the event stream of {} keeps ending",
                client.url(&path)
            )));
        }
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
}
