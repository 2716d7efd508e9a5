//! Migrations record a checksum of each applied file; a store refuses to start on a file
//! edited after it was applied, and a database made before checksums gets them on its first
//! start. Cases take the URL of a migrated database and change `taskd_migrations` by hand.

use taskd::store::{StoreError, TaskFilter};
use taskd::task::NewTask;

/// Runs one statement on the database at `url`, outside any store.
async fn execute(url: &str, sql: &str) {
    try_execute(url, sql).await.unwrap();
}

/// The recorded checksums, by version.
async fn checksums(url: &str) -> Vec<(i64, Option<String>)> {
    let sql = "SELECT version, checksum FROM taskd_migrations ORDER BY version";
    if url.starts_with("postgres") {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query_as(sql).fetch_all(&mut conn).await.unwrap()
    } else {
        let path = url.trim_start_matches("sqlite://");
        let conn = rusqlite::Connection::open(path).unwrap();
        let mut statement = conn.prepare(sql).unwrap();
        let rows = statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }
}

async fn migrate(url: &str) -> Result<(), StoreError> {
    taskd::store::open(url).await.unwrap().migrate().await
}

/// A recorded checksum that is not the file's (as if the file were edited after it was
/// applied) stops the store from starting, naming the version and the file.
pub async fn an_edited_migration_is_refused(url: String) {
    let recorded = checksums(&url).await;
    assert!(
        recorded
            .iter()
            .all(|(_, sum)| sum.as_ref().is_some_and(|s| s.len() == 64)),
        "every applied file is recorded with its sum: {recorded:?}"
    );
    execute(
        &url,
        "UPDATE taskd_migrations SET checksum = 'edited' WHERE version = 2",
    )
    .await;
    let refused = migrate(&url)
        .await
        .expect_err("an edited migration is refused");
    let backend = if url.starts_with("postgres") {
        "postgres"
    } else {
        "sqlite"
    };
    let said = refused.to_string();
    assert!(
        matches!(refused, StoreError::MigrationEdited { version: 2, .. }),
        "{said}"
    );
    assert!(
        said.contains(&format!("migrations/{backend}/0002_events.sql")),
        "{said}"
    );
}

/// A database migrated before checksums were recorded gains the column, filled with the
/// files' sums on its first start; later starts find them equal.
pub async fn a_database_without_checksums_gets_them(url: String) {
    let before = checksums(&url).await;
    execute(&url, "ALTER TABLE taskd_migrations DROP COLUMN checksum").await;
    migrate(&url).await.expect("the old database starts");
    assert_eq!(
        checksums(&url).await,
        before,
        "the same sums as a fresh database"
    );
    migrate(&url).await.expect("and starts again");
}

/// Runs one statement on the database at `url`, outside any store; its error as text.
async fn try_execute(url: &str, sql: &str) -> Result<(), String> {
    if url.starts_with("postgres") {
        use sqlx::{Connection, Executor};
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        conn.execute(sql).await.map(drop).map_err(|e| e.to_string())
    } else {
        let path = url.trim_start_matches("sqlite://");
        rusqlite::Connection::open(path)
            .unwrap()
            .execute_batch(sql)
            .map_err(|e| e.to_string())
    }
}

/// The database refuses a task row its CHECKs forbid, whatever form they are written in
/// (SQLite's 0014 wrote its IN lists as ORs): each change below breaks one rule and fails;
/// the row is as it was after all of them.
pub async fn the_schema_refuses_the_rows_its_checks_forbid(url: String) {
    let store = super::open(&url).await;
    let task = super::insert(&store, super::task("checks", "echo", serde_json::json!(1))).await;
    let id = task.id;
    let forbidden = [
        ("state = 'bogus'", "a state not in the list"),
        (
            "state = 'succeeded'",
            "succeeded without a result or finished_at",
        ),
        ("finished_at = 1", "finished_at while queued"),
        (
            "callback_status = 'lost'",
            "a callback status not in the list",
        ),
        (
            "parents = '[]', after_policy = 'some_succeeded'",
            "an after policy not in the list",
        ),
        ("cancel_requested = 2", "cancel_requested neither 0 nor 1"),
        (
            "error = '{}'",
            "an error on a task neither failed nor cancelled",
        ),
        (
            "attempt = 9",
            "more attempts than max_attempts while running",
        ),
    ];
    for (set, rule) in forbidden {
        if set.starts_with("cancel_requested") && url.starts_with("postgres") {
            // A boolean there: the column's type is the rule.
            continue;
        }
        let attempt = if set.starts_with("attempt") {
            // Allowed while queued; the rule is about every other state.
            "state = 'running', lease = 'l', lease_expires_at = 1, "
        } else {
            ""
        };
        let sql = format!("UPDATE tasks SET {attempt}{set} WHERE id = '{id}'");
        let refused = try_execute(&url, &sql).await;
        assert!(
            refused
                .as_ref()
                .is_err_and(|e| e.to_lowercase().contains("check")),
            "{rule}: {sql} answered {refused:?}"
        );
    }
    assert_eq!(
        super::get(&store, &task).await,
        task,
        "the row is unchanged"
    );
}

/// 0014: a new task's INSERT makes SQLite build no table (an `OpenEphemeral` filled with an
/// IN list's values for every row written, once five of them in `tasks`' CHECKs: a sixth
/// of a drained task's work on the writer), and no CHECK of `tasks` has an IN list for an
/// UPDATE to build. A CHECK with an IN list added to `tasks` again fails here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_writes_of_a_task_build_no_table() {
    let database = crate::backend::TestDatabase::fresh(crate::backend::Backend::Sqlite).await;
    drop(super::open(&database.url).await);
    let conn = rusqlite::Connection::open(database.url.trim_start_matches("sqlite://")).unwrap();
    // The INSERT's program includes its triggers' (counts, events), which have no IN list.
    let insert = "INSERT INTO tasks (id, queue, kind, input, state, max_attempts, \
                      backoff_base_ms, backoff_cap_ms, created_at, callback_status, parents, \
                      after_policy, error) \
                  VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    let mut explain = conn.prepare(&format!("EXPLAIN {insert}")).unwrap();
    let nulls = vec![rusqlite::types::Null; explain.parameter_count()];
    let opcodes: Vec<String> = explain
        .query_map(rusqlite::params_from_iter(nulls), |row| row.get(1))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(opcodes.iter().any(|op| op == "IdxInsert"), "{opcodes:?}");
    assert!(
        !opcodes.iter().any(|op| op == "OpenEphemeral"),
        "an insert builds a table: {opcodes:?}"
    );
    // An UPDATE's program also holds the webhook trigger's insert into another table, so
    // the table's own text is what is held here.
    let schema: String = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'tasks'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    // Its words, comments left out.
    let words: Vec<String> = schema
        .lines()
        .map(|line| line.split("--").next().unwrap_or_default())
        .flat_map(|line| line.split(|c: char| !c.is_alphanumeric() && c != '_'))
        .map(str::to_uppercase)
        .collect();
    assert!(words.iter().any(|w| w == "CHECK"), "{schema}");
    assert!(!words.iter().any(|w| w == "IN"), "an IN list in {schema}");
}

/// 0006 rebuilds SQLite's `tasks` table (a CHECK on `state` cannot change in place): a
/// database of 0001–0005 with tasks in several states keeps every row, its counts, its
/// events and its trace context, and then takes a waiting child of an old task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_0006_keeps_the_tasks_of_an_older_database() {
    use taskd::store::migrations::SQLITE;
    use taskd::task::{AfterPolicy, ParentRef, TaskState};

    let database = crate::backend::TestDatabase::fresh(crate::backend::Backend::Sqlite).await;
    let path = database.url.trim_start_matches("sqlite://").to_owned();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE taskd_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, \
             applied_at INTEGER NOT NULL, checksum TEXT)",
        )
        .unwrap();
        for migration in SQLITE.iter().filter(|m| m.version <= 5) {
            conn.execute_batch(migration.sql).unwrap();
            conn.execute(
                "INSERT INTO taskd_migrations VALUES (?1, ?2, 0, ?3)",
                rusqlite::params![migration.version, migration.name, migration.checksum()],
            )
            .unwrap();
        }
        conn.execute_batch(
            "INSERT INTO tasks (id, queue, kind, input, state, max_attempts, backoff_base_ms, \
                 backoff_cap_ms, created_at, finished_at, result, error, callback_url, \
                 traceparent) VALUES \
             ('0190b3c2-7d4e-7a3b-9c1d-000000000001', 'old', 'echo', '1', 'succeeded', 3, 0, 0, \
                 1, 2, '\"one\"', NULL, 'http://127.0.0.1:1/hook', \
                 '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'), \
             ('0190b3c2-7d4e-7a3b-9c1d-000000000002', 'old', 'fail', '{}', 'failed', 3, 0, 0, \
                 1, 2, NULL, '{\"type\":\"fail\",\"message\":\"no\"}', NULL, NULL), \
             ('0190b3c2-7d4e-7a3b-9c1d-000000000003', 'old', 'echo', '3', 'queued', 3, 0, 0, \
                 1, NULL, NULL, NULL, NULL, NULL)",
        )
        .unwrap();
    }
    let store = super::open(&database.url).await;
    let old = store
        .list(TaskFilter {
            queue: Some(super::queue("old")),
            limit: 10,
            ..TaskFilter::default()
        })
        .await
        .unwrap();
    let states: Vec<TaskState> = old.iter().map(|t| t.state).collect();
    assert_eq!(
        states,
        [TaskState::Queued, TaskState::Failed, TaskState::Succeeded]
    );
    assert_eq!(old[2].result, Some(serde_json::json!("one")));
    assert_eq!(
        old[2].callback.as_ref().unwrap().url,
        "http://127.0.0.1:1/hook"
    );
    assert_eq!(
        old[2]
            .trace
            .as_ref()
            .map(|t| t.parent.to_string())
            .as_deref(),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        "0005's trace context survives the rebuild"
    );
    let info = store.queue(super::queue("old")).await.unwrap();
    assert_eq!(info.counts[&TaskState::Queued], 1);
    assert_eq!(info.counts[&TaskState::Succeeded], 1);
    let events = store
        .events_after(0, Default::default(), 100)
        .await
        .unwrap();
    assert_eq!(events.len(), 3, "the old events are kept");
    let child = NewTask {
        after: vec![ParentRef::Task(old[0].id)],
        after_policy: AfterPolicy::AllSucceeded,
        ..super::task("new", "echo", serde_json::json!({}))
    };
    let child = super::insert(&store, child).await;
    assert_eq!(child.state, TaskState::Waiting);
}

/// 0012: every PostgreSQL function that joins a trigger's `old_rows` to its `new_rows` plans
/// a hash join, never a nested loop or a merge join. PL/pgSQL keeps the plan of a
/// connection's first run, sized by the rows the transition tables held then; a nested loop
/// planned for one row compared n × n pairs for every later batch of n. A later `CREATE OR
/// REPLACE` that drops the settings fails here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_triggers_join_their_transition_tables_by_hash() {
    use sqlx::Connection;

    let database = crate::backend::TestDatabase::fresh(crate::backend::Backend::Postgres).await;
    drop(super::open(&database.url).await);
    let mut conn = sqlx::PgConnection::connect(&database.url).await.unwrap();
    let joining: Vec<(String, Option<Vec<String>>)> = sqlx::query_as(
        "SELECT p.proname::text, p.proconfig FROM pg_proc p \
         JOIN pg_namespace n ON n.oid = p.pronamespace \
         WHERE n.nspname = current_schema() AND p.prosrc ~ 'JOIN\\s+old_rows' \
         ORDER BY p.proname",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let names: Vec<&str> = joining.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        ["taskd_notify_tasks", "taskd_task_events"],
        "the functions that join their transition tables"
    );
    for (name, config) in &joining {
        for setting in ["enable_nestloop=off", "enable_mergejoin=off"] {
            assert!(
                config.iter().flatten().any(|s| s == setting),
                "{name} plans its join as a hash join ({setting}): {config:?}"
            );
        }
    }
}

/// The purge of finished tasks, which every node runs every second and which mostly finds
/// nothing to delete, walks the `tasks_finished` index even when the table's statistics are
/// wrong: here they say every task is old, while none is. A plan that reads the whole table
/// to find that out fails here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_purge_reads_the_index_of_finished_tasks() {
    use sqlx::Connection;

    let database = crate::backend::TestDatabase::fresh(crate::backend::Backend::Postgres).await;
    let store = super::open(&database.url).await;
    let finished = super::succeeded(&store, "purged").await;
    let mut conn = sqlx::PgConnection::connect(&database.url).await.unwrap();
    // 20,000 copies of the finished task; statistics taken while they all ended at 1 ms past
    // the epoch; then they end now, and nobody tells the statistics.
    for sql in [
        "ALTER TABLE tasks SET (autovacuum_enabled = false)",
        "CREATE TEMP TABLE copies AS SELECT tasks.* FROM tasks, generate_series(1, 20000)",
        "UPDATE copies SET id = gen_random_uuid()",
        "INSERT INTO tasks SELECT * FROM copies",
        "UPDATE tasks SET finished_at = 1",
        "ANALYZE tasks",
    ] {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
    let now = finished.finished_at.expect("a finished task has an end");
    sqlx::query("UPDATE tasks SET finished_at = $1")
        .bind(now)
        .execute(&mut conn)
        .await
        .unwrap();
    let plan: Vec<(String,)> = sqlx::query_as(&format!(
        "EXPLAIN {}",
        taskd::store::postgres::PURGE_FINISHED
    ))
    .bind(now - 1)
    .bind(1000_i64)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let plan: Vec<&str> = plan.iter().map(|(line,)| line.as_str()).collect();
    assert!(
        plan.iter()
            .any(|line| line.contains("Index Scan using tasks_finished")),
        "{plan:#?}"
    );
    assert!(
        !plan.iter().any(|line| line.contains("Seq Scan on tasks")),
        "the purge reads the whole table: {plan:#?}"
    );
    assert_eq!(store.purge_finished(now - 1, 1000).await.unwrap(), 0);
}
