//! docs/operations.md and deploy/ held to the program: every `--flag` they name is a flag of
//! `taskd`, every `TASKD_*` variable an environment twin, the "Configure" table lists each
//! flag of `taskd serve` with its variable and default, and every metric the PromQL samples
//! and alert rules use is on a live `/metrics` page (and `promtool` parses them).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use clap::CommandFactory;
use serde_json::json;
use taskd::config::Cli;

use crate::helpers::spawn_app;
use crate::metrics::promtool;

const GUIDE: &str = "docs/operations.md";
/// Read by taskd but not a clap flag: the log filter (`EnvFilter`).
const PLAIN_VARIABLES: &[&str] = &["TASKD_LOG"];

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The files under `deploy/`, relative to the crate, in order.
fn deploy_files() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (mut dirs, mut files) = (vec![root.join("deploy")], Vec::new());
    while let Some(dir) = dirs.pop() {
        for path in std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()) {
            match path.is_dir() {
                true => dirs.push(path),
                false => files.push(path.strip_prefix(root).unwrap().display().to_string()),
            }
        }
    }
    files.sort();
    files
}

/// Prometheus rule files under deploy/.
fn rule_files() -> impl Iterator<Item = String> {
    deploy_files()
        .into_iter()
        .filter(|f| f.starts_with("deploy/prometheus/"))
}

/// The built command, globals propagated to every subcommand.
fn cli() -> clap::Command {
    let mut cli = Cli::command();
    cli.build();
    cli
}

/// Every long flag of every (sub)command, and every env twin.
fn known(command: &clap::Command, flags: &mut BTreeSet<String>, vars: &mut BTreeSet<String>) {
    for arg in command.get_arguments() {
        flags.extend(arg.get_long().map(|long| format!("--{long}")));
        vars.extend(arg.get_env().map(|env| env.to_string_lossy().into_owned()));
    }
    for sub in command.get_subcommands() {
        known(sub, flags, vars);
    }
}

/// The words of `text` made of `prefix` and then characters `tail` accepts (at least one),
/// not preceded by a word character.
fn words<'a>(text: &'a str, prefix: &str, tail: fn(char) -> bool) -> Vec<&'a str> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        let after = &rest[at + prefix.len()..];
        let end = after.find(|c: char| !tail(c)).unwrap_or(after.len());
        let before = rest[..at].chars().next_back();
        if end > 0 && !before.is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '_') {
            found.push(&rest[at..at + prefix.len() + end]);
        }
        rest = &after[end..];
    }
    found
}

fn flags_in(text: &str) -> Vec<&str> {
    let tail = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    words(text, "--", tail)
        .into_iter()
        .filter(|flag| flag.as_bytes().get(2).is_some_and(u8::is_ascii_lowercase))
        .collect()
}

/// Whether a command line (or a code span) speaks of taskd's own flags: it runs `taskd`
/// (after any `VAR=value` and `sudo -u USER`), starts with a flag, or is a comment. Another
/// program's flags (`pg_dump --format`, `docker run --rm`) are not taskd's.
fn speaks_of_taskd(line: &str) -> bool {
    let mut words = line.split_whitespace().peekable();
    while let Some(word) = words.peek() {
        if word.contains('=') && !word.starts_with('-') || *word == "$" {
            words.next();
        } else if *word == "sudo" {
            words.next();
            if words.next_if(|w| *w == "-u").is_some() {
                words.next();
            }
        } else {
            break;
        }
    }
    words
        .next()
        .is_some_and(|first| first == "taskd" || first.starts_with("--") || first == "#")
}

/// The flags the guide names where it speaks of taskd: shell lines and inline code spans.
fn named_flags(markdown: &str) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    let mut fence: Option<String> = None;
    for line in markdown.lines() {
        if let Some(lang) = line.trim_start().strip_prefix("```") {
            fence = match fence {
                Some(_) => None,
                None => Some(lang.trim().to_owned()),
            };
            continue;
        }
        match fence.as_deref() {
            Some("sh" | "bash" | "") if speaks_of_taskd(line) => {
                named.extend(flags_in(line).into_iter().map(str::to_owned));
            }
            Some(_) => {}
            None => {
                for span in line.split('`').skip(1).step_by(2) {
                    if speaks_of_taskd(span) {
                        named.extend(flags_in(span).into_iter().map(str::to_owned));
                    }
                }
            }
        }
    }
    named
}

/// Every `--flag` the guide gives for taskd exists, and every `TASKD_*` variable in the
/// guide and in deploy/ is a flag's environment twin (or the log filter).
#[test]
fn the_guide_and_deploy_name_only_real_flags_and_variables() {
    let (mut flags, mut vars) = (BTreeSet::new(), BTreeSet::new());
    known(&cli(), &mut flags, &mut vars);
    flags.extend(["--help".to_owned(), "--version".to_owned()]);
    vars.extend(PLAIN_VARIABLES.iter().map(|v| v.to_string()));
    let guide = read(GUIDE);
    let named = named_flags(&guide);
    assert!(named.contains("--database"), "the parser found no flags");
    let unknown: Vec<_> = named.difference(&flags).collect();
    assert!(
        unknown.is_empty(),
        "{GUIDE} names flags taskd lacks: {unknown:?}"
    );
    let variable = |c: char| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_';
    for file in std::iter::once(GUIDE.to_owned()).chain(deploy_files()) {
        let text = read(&file);
        let unknown: BTreeSet<_> = words(&text, "TASKD_", variable)
            .into_iter()
            .filter(|name| !vars.contains(*name))
            .collect();
        assert!(
            unknown.is_empty(),
            "{file} names unknown variables: {unknown:?}"
        );
    }
}

/// The rows of the "Configure" table: flag → (variable, default), cells without backticks.
fn configure_table(markdown: &str) -> BTreeMap<String, (String, String)> {
    let section = markdown
        .split("\n## ")
        .find(|s| s.starts_with("Configure"))
        .expect("a \"Configure\" section");
    let bare = |cell: &str| cell.trim().trim_matches('`').to_owned();
    section
        .lines()
        .filter(|line| line.starts_with("| `--"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').collect();
            (bare(cells[1]), (bare(cells[2]), bare(cells[3])))
        })
        .collect()
}

/// The "Configure" table has a row per flag of `taskd serve`, no other, each with the flag's
/// variable and (where clap shows one) its default; on a mismatch the message lists the rows
/// to paste.
#[test]
fn the_configure_table_lists_every_flag_of_serve() {
    let cli = cli();
    let serve = cli.find_subcommand("serve").expect("a serve subcommand");
    let rows = configure_table(&read(GUIDE));
    let mut wanted = Vec::new();
    let mut wrong = Vec::new();
    for arg in serve.get_arguments() {
        let (Some(long), Some(env)) = (arg.get_long(), arg.get_env()) else {
            continue; // --help
        };
        let flag = format!("--{long}");
        let env = env.to_string_lossy().into_owned();
        let default: Vec<_> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy())
            .collect();
        let shown =
            (!arg.is_hide_default_value_set() && !default.is_empty()).then(|| default.join(","));
        wanted.push(format!(
            "| `{flag}` | `{env}` | {} | … |",
            shown.as_ref().map_or("…".to_owned(), |d| format!("`{d}`"))
        ));
        match rows.get(&flag) {
            Some((var, cell)) if *var == env && shown.as_ref().is_none_or(|d| d == cell) => {}
            _ => wrong.push(flag),
        }
    }
    let extra: Vec<_> = rows
        .keys()
        .filter(|flag| {
            !serve
                .get_arguments()
                .any(|a| a.get_long() == Some(&flag[2..]))
        })
        .collect();
    assert!(
        wrong.is_empty() && extra.is_empty(),
        "{GUIDE} \"Configure\": missing or wrong rows {wrong:?}, rows of no flag {extra:?}; \
         the rows, from the program:\n{}",
        wanted.join("\n")
    );
}

/// The PromQL expressions of the guide (each a run of lines between comments in a ```promql
/// block) and the `expr:` of the alert rules in deploy/prometheus/.
fn expressions() -> Vec<String> {
    let mut found = Vec::new();
    let guide = read(GUIDE);
    for block in guide.split("```promql\n").skip(1) {
        let block = block.split("```").next().unwrap_or_default();
        let mut current = String::new();
        for line in block.lines().chain(std::iter::once("#")) {
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                if !current.trim().is_empty() {
                    found.push(std::mem::take(&mut current));
                }
            } else {
                current.push_str(line);
                current.push('\n');
            }
        }
    }
    for file in rule_files() {
        let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(&read(&file)).unwrap();
        for group in rules["groups"].as_sequence().expect("groups") {
            for rule in group["rules"].as_sequence().expect("rules") {
                found.push(rule["expr"].as_str().expect("an expr").to_owned());
            }
        }
    }
    found
}

/// Every metric the PromQL samples and the alert rules use is on a live page after a task
/// ran (histograms by their `_bucket`, `_sum` and `_count` series), and `promtool` parses
/// every expression and the rule files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_promql_samples_use_live_metrics_and_parse() {
    let app = spawn_app().await;
    let task = app
        .submit(json!({"kind": "echo", "input": {}, "queue": "ops-docs"}))
        .await;
    app.wait_terminal(task["id"].as_str().unwrap()).await;
    let page = app.get("/metrics").await.text().await.unwrap();
    let mut live = BTreeSet::new();
    for family in page.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let mut parts = family.split_whitespace();
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap_or_default());
        live.insert(name.to_owned());
        if kind == "histogram" || kind == "summary" {
            live.extend(["_bucket", "_sum", "_count"].map(|s| format!("{name}{s}")));
        }
    }
    let expressions = expressions();
    assert!(expressions.len() >= 4, "{expressions:?}");
    let name = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    for expression in &expressions {
        for metric in words(expression, "taskd_", name) {
            assert!(
                live.contains(metric),
                "{metric} (in {expression}) is not on the page:\n{page}"
            );
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let samples = dir.path().join("samples.yaml");
    let rules: Vec<_> = expressions
        .iter()
        .enumerate()
        .map(|(n, expr)| json!({"record": format!("docs:sample_{n}"), "expr": expr}))
        .collect();
    let file = json!({"groups": [{"name": "docs", "rules": rules}]});
    // JSON is YAML: promtool reads it as a rule file.
    std::fs::write(&samples, file.to_string()).unwrap();
    let mut files = vec![samples.display().to_string()];
    files.extend(rule_files().map(|f| format!("{}/{f}", env!("CARGO_MANIFEST_DIR"))));
    let args: Vec<&str> = ["check", "rules"]
        .into_iter()
        .chain(files.iter().map(String::as_str))
        .collect();
    let output = promtool(&args, "");
    assert!(
        output.status.success(),
        "promtool rejects the expressions: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
