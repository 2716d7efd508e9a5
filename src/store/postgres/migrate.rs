//! The PostgreSQL migrations: applied in one transaction under an advisory lock, so nodes
//! starting together migrate exactly once (the first applies, the others wait, then find
//! every version recorded).

use sqlx::{Connection, Executor, PgConnection};

use crate::store::StoreError;
use crate::task::now_millis;

/// The migrations, in order, numbered as SQLite's. Append-only: a change is a new file.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "tasks",
        include_str!("../../../migrations/postgres/0001_tasks.sql"),
    ),
    (
        2,
        "events",
        include_str!("../../../migrations/postgres/0002_events.sql"),
    ),
    (
        4,
        "api_keys",
        include_str!("../../../migrations/postgres/0004_api_keys.sql"),
    ),
];

/// The advisory lock key that serializes migrations across nodes starting at once
/// ("taskd" + 1 in ASCII, a constant no other lock of ours uses).
const MIGRATION_LOCK: i64 = 0x7461_736b_6401;

pub async fn migrate(conn: &mut PgConnection) -> Result<(), StoreError> {
    let mut tx = conn.begin().await?;
    // Nodes starting together wait here in turn; the first applies, the others find it done.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await?;
    tx.execute(
        "CREATE TABLE IF NOT EXISTS taskd_migrations (
             version    bigint PRIMARY KEY,
             name       text   NOT NULL,
             applied_at bigint NOT NULL
         )",
    )
    .await?;
    for (version, name, sql) in MIGRATIONS {
        let applied: Option<i64> =
            sqlx::query_scalar("SELECT version FROM taskd_migrations WHERE version = $1")
                .bind(version)
                .fetch_optional(&mut *tx)
                .await?;
        if applied.is_none() {
            tracing::info!(version, name, "applying migration");
            // A plain string runs as a simple query: several statements in one go.
            tx.execute(*sql).await?;
            sqlx::query(
                "INSERT INTO taskd_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            )
            .bind(version)
            .bind(name)
            .bind(now_millis())
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}
