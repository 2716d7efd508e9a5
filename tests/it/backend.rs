//! Which database a test runs on, and a fresh one per test.
//!
//! `TASKD_TEST_BACKEND=postgres` runs the HTTP suite on PostgreSQL (default: SQLite). The
//! server is `TASKD_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/test`); each test
//! gets a database of its own, `taskd_t_<uuid>`, dropped when the test ends. A PostgreSQL test
//! whose server cannot be reached fails: it is never skipped silently.

use std::path::PathBuf;

use sqlx::{Connection, Executor, PgConnection};

/// The server the PostgreSQL tests use, unless `TASKD_TEST_POSTGRES` names another.
pub const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend `TASKD_TEST_BACKEND` selects: `postgres` or (unset, `sqlite`) SQLite.
    pub fn from_env() -> Backend {
        match std::env::var("TASKD_TEST_BACKEND").as_deref() {
            Ok("postgres" | "postgresql" | "pg") => Backend::Postgres,
            Ok("" | "sqlite") | Err(_) => Backend::Sqlite,
            Ok(other) => panic!("TASKD_TEST_BACKEND={other}: expected sqlite or postgres"),
        }
    }
}

/// A database that lives as long as this value: a file in a temporary directory, or a
/// PostgreSQL database that is dropped (with its connections) on drop.
pub struct TestDatabase {
    pub url: String,
    _keep: Keep,
}

/// What keeps the database alive; held only to be dropped with the `TestDatabase`.
#[allow(dead_code)]
enum Keep {
    Dir(tempfile::TempDir),
    Postgres(PostgresDatabase),
}

impl TestDatabase {
    pub async fn fresh(backend: Backend) -> TestDatabase {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let path: PathBuf = dir.path().join("taskd.db");
                TestDatabase {
                    url: format!("sqlite://{}", path.display()),
                    _keep: Keep::Dir(dir),
                }
            }
            Backend::Postgres => {
                let database = PostgresDatabase::create().await;
                TestDatabase {
                    url: database.url.clone(),
                    _keep: Keep::Postgres(database),
                }
            }
        }
    }

    pub fn backend(&self) -> Backend {
        match self._keep {
            Keep::Dir(_) => Backend::Sqlite,
            Keep::Postgres(_) => Backend::Postgres,
        }
    }
}

/// A fresh database on the test server.
struct PostgresDatabase {
    server: String,
    name: String,
    url: String,
}

fn server_url() -> String {
    std::env::var("TASKD_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_POSTGRES.to_owned())
}

/// `url` with its database name replaced by `name` (a query string is kept).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority_end = base
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| base[start..].find('/').map(|i| start + i))
        .unwrap_or(base.len());
    format!("{}/{name}{query}", &base[..authority_end])
}

impl PostgresDatabase {
    async fn create() -> PostgresDatabase {
        let server = server_url();
        let name = format!("taskd_t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&server)
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "PostgreSQL at {server} is needed for this test and cannot be reached: {error} \
                 (start it, or point TASKD_TEST_POSTGRES at one)"
                )
            });
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("CREATE DATABASE");
        let _ = conn.close().await;
        PostgresDatabase {
            url: with_database(&server, &name),
            server,
            name,
        }
    }
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // Drop runs inside the test's runtime, where one cannot block on a future: a thread
        // with a runtime of its own drops the database (FORCE ends the server's connections).
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&server).await?;
                conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await?;
                conn.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the test database {}", self.name);
        }
    }
}

#[test]
fn database_names_are_replaced() {
    assert_eq!(
        with_database("postgres://u@h:5432/test", "x"),
        "postgres://u@h:5432/x"
    );
    assert_eq!(
        with_database("postgresql://h/test?sslmode=disable", "x"),
        "postgresql://h/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
}
