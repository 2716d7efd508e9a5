//! The PostgreSQL migrations: applied in one transaction under an advisory lock, so nodes
//! starting together migrate exactly once (the first applies, the others wait, then find
//! every version recorded).

use sqlx::{Connection, Executor, PgConnection};

use crate::store::StoreError;
use crate::store::migrations::{self, Step};
use crate::task::now_millis;

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
    // `checksum` is added apart, so a database made before checksums were recorded gains it;
    // the loop below fills it with the files' sums (trusted on this first start).
    tx.execute(
        "CREATE TABLE IF NOT EXISTS taskd_migrations (
             version    bigint PRIMARY KEY,
             name       text   NOT NULL,
             applied_at bigint NOT NULL
         );
         ALTER TABLE taskd_migrations ADD COLUMN IF NOT EXISTS checksum text",
    )
    .await?;
    for migration in migrations::POSTGRES {
        let recorded: Option<Option<String>> =
            sqlx::query_scalar("SELECT checksum FROM taskd_migrations WHERE version = $1")
                .bind(migration.version)
                .fetch_optional(&mut *tx)
                .await?;
        match migration.decide(recorded)? {
            Step::Apply => {
                tracing::info!(
                    version = migration.version,
                    name = migration.name,
                    "applying migration"
                );
                // A plain string runs as a simple query: several statements in one go.
                tx.execute(migration.sql).await?;
                sqlx::query(
                    "INSERT INTO taskd_migrations (version, name, applied_at, checksum)
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(migration.version)
                .bind(migration.name)
                .bind(now_millis())
                .bind(migration.checksum())
                .execute(&mut *tx)
                .await?;
            }
            Step::Record => {
                sqlx::query("UPDATE taskd_migrations SET checksum = $2 WHERE version = $1")
                    .bind(migration.version)
                    .bind(migration.checksum())
                    .execute(&mut *tx)
                    .await?;
            }
            Step::Nothing => {}
        }
    }
    tx.commit().await?;
    Ok(())
}
