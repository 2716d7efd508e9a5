//! Migrations record a checksum of each applied file; a store refuses to start on a file
//! edited after it was applied, and a database made before checksums gets them on its first
//! start. Cases take the URL of a migrated database and change `taskd_migrations` by hand.

use taskd::store::StoreError;

/// Runs one statement on the database at `url`, outside any store.
async fn execute(url: &str, sql: &str) {
    if url.starts_with("postgres") {
        use sqlx::{Connection, Executor};
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        conn.execute(sql).await.unwrap();
    } else {
        let path = url.trim_start_matches("sqlite://");
        rusqlite::Connection::open(path)
            .unwrap()
            .execute_batch(sql)
            .unwrap();
    }
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
