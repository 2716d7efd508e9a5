//! `taskd backup --database URL OUT`: a consistent copy of a SQLite database, taken while
//! servers run (`store::sqlite::backup`). PostgreSQL has its own tools; this says which.

use std::path::PathBuf;

use clap::Args;

use crate::config::DatabaseArgs;
use crate::store::{StoreError, sqlite};

#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// Where the copy goes: a new file (an existing one is refused).
    pub out: PathBuf,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0} exists; name a new file")]
    Exists(String),
    #[error(
        "a PostgreSQL database is backed up with PostgreSQL's tools: \
         pg_dump --format=custom --file=taskd.dump DBNAME (see docs/operations.md)"
    )]
    Postgres,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Takes the backup; returns the size of the copy in bytes.
pub fn run(args: &BackupArgs) -> Result<u64, BackupError> {
    let url = &args.database.url;
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Err(BackupError::Postgres);
    }
    if args.out.exists() {
        return Err(BackupError::Exists(args.out.display().to_string()));
    }
    sqlite::backup(url, &args.out)?;
    Ok(std::fs::metadata(&args.out).map_or(0, |meta| meta.len()))
}
