//! `taskd keys create | list | revoke`: the API keys in the database that `--database`
//! names. They work while servers run: every node reads keys from the database and trusts a
//! lookup for `KEY_CACHE_TTL` at most, so a revoke reaches all of them within seconds.
//!
//! The secret is printed once, by `create`, and exists nowhere else: the database keeps its
//! hash.

use std::io::Write;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::access::{self, QueueScope, Scopes};
use crate::config::DatabaseArgs;
use crate::engine::{KEY_CACHE_TTL, NewKey, create_key};
use crate::store::{self, StoreError, TaskStore};
use crate::task::{now_millis, rfc3339_string};

#[derive(Debug, Clone, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its secret (once: it is stored hashed).
    Create(CreateArgs),
    /// List the keys (never their secrets).
    List(ListArgs),
    /// Revoke a key by name; every server refuses it within seconds.
    Revoke(RevokeArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// What the key is for (unique among keys not revoked): letters, digits, '_', '-', '.'.
    #[arg(long)]
    pub name: String,
    /// What it may do, comma-separated: submit, read, manage, work, admin (admin: all).
    #[arg(long)]
    pub scopes: Scopes,
    /// Only these queues, comma-separated names or prefixes ending in `*`
    /// (`reports,tenant-a-*`); default: every queue.
    #[arg(long)]
    pub queues: Option<String>,
    /// How long until it expires (`90days`, `12h`); default: never.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub expires: Option<Duration>,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Revoked keys too.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, Clone, Args)]
pub struct RevokeArgs {
    /// The key's name.
    pub name: String,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
    #[error("no key named `{0}` is in use")]
    NoSuchKey(String),
    #[error("cannot write the answer: {0}")]
    Io(#[from] std::io::Error),
}

async fn open(database: &DatabaseArgs) -> Result<std::sync::Arc<dyn TaskStore>, KeysError> {
    let store = store::open(&database.url).await?;
    // The first key may come before the first server: the table must exist.
    store.migrate().await?;
    Ok(store)
}

/// Runs one `taskd keys` subcommand, writing its answer to `out`.
pub async fn run(args: KeysArgs, out: &mut dyn Write) -> Result<(), KeysError> {
    match args.command {
        KeysCommand::Create(create) => {
            let name =
                access::key_name(&create.name).map_err(|e| KeysError::Invalid(e.to_string()))?;
            let queues = QueueScope::parse_list(create.queues.as_deref().unwrap_or_default())
                .map_err(|e| KeysError::Invalid(format!("--queues: {e}")))?;
            let expires_at = create
                .expires
                .map(|after| now_millis() + after.as_millis() as i64);
            let store = open(&create.database).await?;
            let new = NewKey {
                name,
                scopes: create.scopes,
                queues,
                expires_at,
            };
            let (secret, key) = create_key(store.as_ref(), new).await?;
            writeln!(out, "{secret}")?;
            eprintln!(
                "created key `{}` (scopes {}; queues {}; expires {}). The secret above is \
                 shown only now: keep it safe, and send it as `Authorization: Bearer <secret>`.",
                key.name,
                key.scopes,
                key.queues.to_list().unwrap_or_else(|| "all".to_owned()),
                key.expires_at.map_or("never".to_owned(), rfc3339_string),
            );
        }
        KeysCommand::List(list) => {
            let store = open(&list.database).await?;
            let keys = store.keys().await?;
            writeln!(
                out,
                "{:<24} {:<28} {:<24} {:<25} {:<25} {:<25} STATUS",
                "NAME", "SCOPES", "QUEUES", "CREATED", "LAST USED", "EXPIRES"
            )?;
            let now = now_millis();
            for key in keys.iter().filter(|k| list.all || k.revoked_at.is_none()) {
                let status = match key.check(now) {
                    Ok(()) => "active",
                    Err(access::Unusable::Expired) => "expired",
                    Err(access::Unusable::Revoked) => "revoked",
                };
                let time = |at: Option<i64>, none: &str| at.map_or(none.to_owned(), rfc3339_string);
                writeln!(
                    out,
                    "{:<24} {:<28} {:<24} {:<25} {:<25} {:<25} {status}",
                    key.name,
                    key.scopes.to_string(),
                    key.queues.to_list().unwrap_or_else(|| "*".to_owned()),
                    rfc3339_string(key.created_at),
                    time(key.last_used_at, "never"),
                    time(key.expires_at, "never"),
                )?;
            }
        }
        KeysCommand::Revoke(revoke) => {
            let store = open(&revoke.database).await?;
            if !store.key_revoke(revoke.name.clone(), now_millis()).await? {
                return Err(KeysError::NoSuchKey(revoke.name));
            }
            writeln!(
                out,
                "revoked key `{}`; servers refuse it within {} s",
                revoke.name,
                KEY_CACHE_TTL.as_secs()
            )?;
        }
    }
    Ok(())
}
