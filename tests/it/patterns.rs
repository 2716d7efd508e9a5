//! docs/patterns.md stays true: every `sh` block of the page, in order, runs as one bash
//! script against a fresh server, and each block checks its own outcome (`jq -e`, `grep -q`).

use std::time::Duration;

use tokio::process::Command;

use crate::helpers::spawn_app;

/// The `sh` blocks of a Markdown page, in order.
fn shell_blocks(page: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in page.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// Every example of docs/patterns.md runs, as written, and its checks hold: thread pool,
/// remote worker, future and `any`, events, backpressure, pipeline, map-reduce, schedule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_of_the_patterns_page_runs() {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/patterns.md"))
        .expect("docs/patterns.md");
    let blocks = shell_blocks(&page);
    assert!(
        blocks.len() >= 9,
        "the page has its examples: {}",
        blocks.len()
    );
    let app = spawn_app().await;
    let script = blocks.join("\n");
    let run = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("TASKD", &app.base)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the page's examples end within 180 s")
        .expect("bash runs");
    assert!(
        output.status.success(),
        "the examples failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
