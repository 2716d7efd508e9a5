//! The relay of `LISTEN/NOTIFY`: one dedicated connection listens on channel `taskd` and turns
//! each notification into a [`Signal`] on a broadcast channel, which the engine reads.
//!
//! The triggers of the migration send `work` and `finished:<id>` from the transaction that
//! made the change. A notification can be lost (the listening connection broke, or this
//! node's relay lagged); the engine polls as a fallback, and after a reconnect the relay
//! sends one `Work` to make every dispatcher look at once.

use std::time::Duration;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use std::sync::Arc;

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

/// Starts listening (so that once this returns, nothing committed later is missed) and
/// relays until `stop` fires.
pub async fn start(
    options: PgConnectOptions,
    commits: Arc<Notify>,
    stop: CancellationToken,
) -> Result<broadcast::Sender<Signal>, StoreError> {
    let listener = listen(&options).await?;
    let (sender, _) = broadcast::channel(BUFFER);
    tokio::spawn(relay(options, listener, sender.clone(), commits, stop));
    Ok(sender)
}

/// Reads a notification's payload.
pub fn parse(payload: &str) -> Option<Signal> {
    match payload {
        "work" => Some(Signal::Work),
        _ => payload
            .strip_prefix("finished:")
            .and_then(|id| id.parse().ok())
            .map(Signal::Finished),
    }
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

async fn relay(
    options: PgConnectOptions,
    listener: PgListener,
    signals: broadcast::Sender<Signal>,
    commits: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut connected = Some(listener);
    loop {
        let listener = match connected.take() {
            Some(listener) => Ok(listener),
            None => tokio::select! {
                listener = listen(&options) => listener,
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
                Ok(Some(notification)) => {
                    // Another node committed something: its events are in the log.
                    commits.notify_one();
                    if let Some(signal) = parse(notification.payload()) {
                        // No receiver yet (no engine): nobody needs it.
                        let _ = signals.send(signal);
                    }
                }
                // The connection broke and was re-established: what was sent meanwhile is lost.
                Ok(None) => {
                    tracing::warn!("the signal connection was re-established; waking up");
                    let _ = signals.send(Signal::Work);
                }
                Err(error) => {
                    tracing::warn!(%error, "lost the signal connection");
                    let _ = signals.send(Signal::Work);
                    tokio::select! {
                        () = tokio::time::sleep(RECONNECT_AFTER) => break,
                        () = stop.cancelled() => return,
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
        assert_eq!(parse("work"), Some(Signal::Work));
        let id = crate::task::TaskId::new();
        assert_eq!(parse(&format!("finished:{id}")), Some(Signal::Finished(id)));
        assert_eq!(parse("finished:nope"), None);
        assert_eq!(parse("other"), None);
    }
}
