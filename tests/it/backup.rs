//! `taskd backup`: a consistent copy of a SQLite database taken while a server writes to it,
//! which a new server opens with every acknowledged task; PostgreSQL points to pg_dump.

use std::process::Command;

use serde_json::json;

use crate::backend::{Backend, TestDatabase};
use crate::helpers::spawn_app_on;

fn backup(database_url: &str, out: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_taskd"))
        .arg("backup")
        .arg(out)
        .args(["--database", database_url])
        .output()
        .expect("taskd backup runs")
}

/// A backup taken while the server serves holds every task acknowledged before it, and a
/// server started on the copy serves them; an existing file is never overwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_backup_taken_while_serving_restores_every_task() {
    let database = TestDatabase::fresh(Backend::Sqlite).await;
    let app = spawn_app_on(&database.url, |_| {}).await;
    let mut ids = Vec::new();
    for n in 0..20 {
        let task = app
            .submit(json!({ "kind": "echo", "input": { "n": n } }))
            .await;
        ids.push(task["id"].as_str().unwrap().to_owned());
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("copy.db");
    let made = backup(&database.url, &out);
    assert!(made.status.success(), "{made:?}");
    // Writes go on meanwhile; the copy is a snapshot of one moment.
    app.submit(json!({ "kind": "echo", "input": "after" }))
        .await;
    let again = backup(&database.url, &out);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));

    let restored = spawn_app_on(&format!("sqlite://{}", out.display()), |_| {}).await;
    for id in &ids {
        restored.wait_terminal(id).await;
    }
}

/// On PostgreSQL the command refuses and names pg_dump.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_backup_points_to_pg_dump() {
    let database = TestDatabase::fresh(Backend::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let refused = backup(&database.url, &dir.path().join("x"));
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("pg_dump"));
}
