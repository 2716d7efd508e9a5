//! How the client subcommands print: a task as a block of `name  value` lines, several as a
//! table with aligned columns, or (`--json`) the server's JSON as one compact document per
//! line, which `jq` and scripts read without caring whether one or many came.

use std::io::Write;

use serde_json::Value;

/// Why a client subcommand exits as it does (docs/cli.md lists them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done; every task concerned succeeded.
    Success = 0,
    /// A task concerned failed or was cancelled.
    TaskFailed = 1,
    /// A usage error (clap's own code), an error answer, or no server to answer.
    Error = 2,
    /// Waiting ran out before the tasks finished (the code of coreutils' `timeout`).
    Timeout = 124,
}

impl Exit {
    /// The worse of two outcomes: an error outranks a timeout, which outranks a failed task.
    pub fn worst(self, other: Exit) -> Exit {
        let rank = |exit: Exit| match exit {
            Exit::Success => 0,
            Exit::TaskFailed => 1,
            Exit::Timeout => 2,
            Exit::Error => 3,
        };
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }

    /// The exit of a task in this state: success, failure, or not finished (`None`).
    pub fn of_state(state: &str) -> Option<Exit> {
        match state {
            "succeeded" => Some(Exit::Success),
            "failed" | "cancelled" => Some(Exit::TaskFailed),
            _ => None,
        }
    }
}

/// The `state` of a task (or event) as served.
pub fn state(task: &Value) -> &str {
    task.get("state").and_then(Value::as_str).unwrap_or("")
}

/// A string field, or `-` when absent.
pub fn field<'a>(value: &'a Value, name: &str) -> &'a str {
    value.get(name).and_then(Value::as_str).unwrap_or("-")
}

/// One JSON document on one line.
pub fn json_line(value: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
}

/// A task as `name  value` lines, for a person.
pub fn task_block(task: &Value) -> String {
    let mut lines: Vec<(&str, String)> = vec![
        ("id", field(task, "id").to_owned()),
        ("state", state(task).to_owned()),
        ("queue", field(task, "queue").to_owned()),
        ("kind", field(task, "kind").to_owned()),
        (
            "attempt",
            format!(
                "{}/{}",
                task.get("attempt").unwrap_or(&Value::Null),
                task.get("max_attempts").unwrap_or(&Value::Null)
            ),
        ),
        ("created", field(task, "created_at").to_owned()),
    ];
    for (name, key) in [
        ("run at", "run_at"),
        ("started", "started_at"),
        ("finished", "finished_at"),
    ] {
        if let Some(at) = task.get(key).and_then(Value::as_str) {
            lines.push((name, at.to_owned()));
        }
    }
    if let Some(labels) = task.get("labels").and_then(Value::as_object)
        && !labels.is_empty()
    {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        lines.push(("labels", labels.join(" ")));
    }
    if let Some(progress) = task.get("progress").filter(|p| !p.is_null()) {
        lines.push(("progress", progress_text(progress)));
    }
    lines.push(("input", compact(task.get("input"))));
    if let Some(result) = task.get("result").filter(|r| !r.is_null()) {
        lines.push(("result", result.to_string()));
    }
    if let Some(error) = task.get("error").filter(|e| !e.is_null()) {
        lines.push(("error", error_text(error)));
    }
    let width = lines.iter().map(|(name, _)| name.len()).max().unwrap_or(0);
    lines
        .iter()
        .map(|(name, value)| format!("{name:width$}  {value}\n"))
        .collect()
}

/// `42% copying` for a progress report.
pub fn progress_text(progress: &Value) -> String {
    let percent = progress
        .get("percent")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    match progress.get("message").and_then(Value::as_str) {
        Some(message) => format!("{percent:.0}% {message}"),
        None => format!("{percent:.0}%"),
    }
}

/// `type: message` for a task's error.
pub fn error_text(error: &Value) -> String {
    format!("{}: {}", field(error, "type"), field(error, "message"))
}

fn compact(value: Option<&Value>) -> String {
    const LONGEST: usize = 200;
    let text = value.map(Value::to_string).unwrap_or_default();
    match text.char_indices().nth(LONGEST) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// Rows under a header, each column as wide as its widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:width$}  ", width = *width));
            }
        }
        text.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// The table row of a task in a listing.
pub fn task_row(task: &Value) -> Vec<String> {
    vec![
        field(task, "id").to_owned(),
        state(task).to_owned(),
        field(task, "queue").to_owned(),
        field(task, "kind").to_owned(),
        task.get("attempt")
            .map(Value::to_string)
            .unwrap_or_default(),
        field(task, "created_at").to_owned(),
    ]
}

pub const TASK_HEADER: &[&str] = &["ID", "STATE", "QUEUE", "KIND", "ATTEMPT", "CREATED"];
