//! The relay of `LISTEN/NOTIFY`: one dedicated connection listens on channel `taskd` and turns
//! each notification into a [`Signal`] on a broadcast channel, which the engine reads.
//!
//! The triggers of the migrations send `work`, `finished:<id>,<id>,…` (the tasks one
//! statement ended, up to 200 to a notification) and `cancel:<id>` from the transaction that
//! made the change. Notifications this node's own connections sent are dropped ([`Own`]): the
//! engine already acted on its own writes, and a `finished` relayed back would cost it one
//! read per task it ran. A notification can be lost (the listening connection broke, or this
//! node's relay lagged); the engine polls as a fallback, and after a reconnect the relay
//! sends one `Work` to make every dispatcher look at once.

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use crate::store::{Signal, StoreError};

/// The channel the triggers notify on.
pub const CHANNEL: &str = "taskd";
/// How many signals wait for a slow engine before it misses some (it then sees `Lagged` and
/// wakes everything once, which is what a missed signal needs anyway).
const BUFFER: usize = 4096;
/// How long the relay waits before it tries a broken connection again.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// This node's own connections: their `application_name` (unique per store) and their
/// server process ids, which a notification carries. Kept by the pool's `after_connect` and
/// refreshed every second from `pg_stat_activity`, so a closed connection's id (which the
/// server may reuse for another node's connection) does not stay for long.
pub struct Own {
    pub application_name: String,
    pids: RwLock<HashSet<u32>>,
}

impl Own {
    pub fn new() -> Own {
        Own {
            application_name: format!("taskd-{}", uuid::Uuid::new_v4().simple()),
            pids: RwLock::new(HashSet::new()),
        }
    }

    pub fn add(&self, pid: u32) {
        self.pids
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pid);
    }

    fn contains(&self, pid: u32) -> bool {
        self.pids
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&pid)
    }

    /// Replaces the ids with those of the connections alive now.
    pub async fn refresh(&self, pool: &PgPool) -> Result<(), StoreError> {
        let pids: Vec<i32> =
            sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE application_name = $1")
                .bind(&self.application_name)
                .fetch_all(pool)
                .await?;
        *self.pids.write().unwrap_or_else(|e| e.into_inner()) =
            pids.into_iter().map(|pid| pid as u32).collect();
        Ok(())
    }
}

/// Starts listening (so that once this returns, nothing committed later is missed) and
/// relays until `stop` fires.
pub async fn start(
    options: PgConnectOptions,
    own: Arc<Own>,
    commits: Arc<Notify>,
    stop: CancellationToken,
) -> Result<broadcast::Sender<Signal>, StoreError> {
    let listener = listen(&options).await?;
    let (sender, _) = broadcast::channel(BUFFER);
    let relay = Relay {
        options,
        own,
        signals: sender.clone(),
        commits,
    };
    tokio::spawn(relay.run(listener, stop));
    Ok(sender)
}

/// Reads a notification's payload: `work`, `cancel:<id>`, or `finished:` with one id or
/// several, comma-separated (migration 0009). Whatever it does not know reads as nothing.
pub fn parse(payload: &str) -> Vec<Signal> {
    if payload == "work" {
        return vec![Signal::Work];
    }
    let Some((what, ids)) = payload.split_once(':') else {
        return Vec::new();
    };
    let ids = ids.split(',').map(str::parse);
    match what {
        "finished" => ids.map(|id| id.map(Signal::Finished)).collect(),
        "cancel" => ids.map(|id| id.map(Signal::Cancel)).collect(),
        _ => Ok(Vec::new()),
    }
    .unwrap_or_default()
}

async fn listen(options: &PgConnectOptions) -> Result<PgListener, StoreError> {
    // A pool of one, of its own: the listening connection never counts against the pool the
    // queries use, and `PgListener` reconnects through it.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(options.clone());
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

struct Relay {
    options: PgConnectOptions,
    own: Arc<Own>,
    signals: broadcast::Sender<Signal>,
    commits: Arc<Notify>,
}

impl Relay {
    async fn run(self, listener: PgListener, stop: CancellationToken) {
        let mut connected = Some(listener);
        loop {
            let listener = match connected.take() {
                Some(listener) => Ok(listener),
                None => tokio::select! {
                    listener = listen(&self.options) => listener,
                    () = stop.cancelled() => return,
                },
            };
            let mut listener = match listener {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for other nodes' signals");
                    tokio::select! {
                        () = tokio::time::sleep(RECONNECT_AFTER) => continue,
                        () = stop.cancelled() => return,
                    }
                }
            };
            loop {
                let received = tokio::select! {
                    received = listener.try_recv() => received,
                    () = stop.cancelled() => return,
                };
                match received {
                    Ok(Some(notification)) if self.own.contains(notification.process_id()) => {}
                    Ok(Some(notification)) => {
                        // Another node committed something: its events are in the log.
                        self.commits.notify_one();
                        for signal in parse(notification.payload()) {
                            // No receiver yet (no engine): nobody needs it.
                            let _ = self.signals.send(signal);
                        }
                    }
                    // The connection broke and was re-established: what was sent meanwhile
                    // is lost.
                    Ok(None) => {
                        tracing::warn!("the signal connection was re-established; waking up");
                        let _ = self.signals.send(Signal::Work);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "lost the signal connection");
                        let _ = self.signals.send(Signal::Work);
                        tokio::select! {
                            () = tokio::time::sleep(RECONNECT_AFTER) => break,
                            () = stop.cancelled() => return,
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_become_signals() {
        assert_eq!(parse("work"), [Signal::Work]);
        let id = crate::task::TaskId::new();
        let other = crate::task::TaskId::new();
        assert_eq!(parse(&format!("finished:{id}")), [Signal::Finished(id)]);
        assert_eq!(
            parse(&format!("finished:{id},{other}")),
            [Signal::Finished(id), Signal::Finished(other)]
        );
        assert_eq!(parse(&format!("cancel:{id}")), [Signal::Cancel(id)]);
        assert_eq!(parse("finished:nope"), []);
        assert_eq!(parse(&format!("finished:{id},nope")), []);
        assert_eq!(parse("other"), []);
    }
}
