//! Subcommands beside `serve`: `taskd worker` (a remote worker that runs a command per task,
//! an HTTP client of the public API like any other), `taskd keys` (API keys, written
//! straight to the database like `taskd migrate`, so the first key can exist before any
//! server does) and `taskd backup` (a consistent copy of a SQLite database).

pub mod backup;
pub mod keys;
pub mod worker;
