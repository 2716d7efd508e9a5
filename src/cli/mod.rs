//! Subcommands beside `serve`: `taskd worker` (a remote worker that runs a command per task,
//! an HTTP client of the public API like any other), `taskd keys` (API keys, written
//! straight to the database like `taskd migrate`, so the first key can exist before any
//! server does), `taskd backup` (a consistent copy of a SQLite database), and the client
//! commands (`submit`, `get`, `result`, `wait`, `list`, `cancel`, `retry`, `queues`, `queue`,
//! `watch`, `bulk`, `completions`; see `commands`), which speak only HTTP to a server.

pub mod backup;
pub mod bulk;
pub mod client;
pub mod commands;
pub mod keys;
pub mod output;
pub mod queues;
pub mod sse;
pub mod tasks;
pub mod watch;
pub mod worker;
