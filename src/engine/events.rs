//! The events tailer (Observer): it reads the event log after every commit and publishes
//! each event to the live subscribers (SSE streams) through the hub (`hub.rs`). Progress
//! reports are coalesced here too: the latest report of each running attempt is written a
//! few times a second, whatever the handler's pace.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Inner;
use crate::store::{EventFilter, StoreError};

/// How many events one read of the log takes.
const PAGE: usize = 1000;
/// How often the tailer reads the log even without a local commit (other nodes' writes).
const IDLE_TAIL: Duration = Duration::from_millis(500);
/// How often coalesced progress is written.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

pub(super) async fn tail(inner: Arc<Inner>) {
    let commits = inner.store.commits();
    let mut last = match inner.store.event_bounds().await {
        Ok(bounds) => bounds.map_or(0, |(_, newest)| newest),
        Err(StoreError::Unsupported(what)) => {
            tracing::warn!(what, "this store has no event log; live events are off");
            return;
        }
        Err(error) => {
            tracing::error!(%error, "cannot read the event log");
            0
        }
    };
    let mut bounds_read = Instant::now();
    loop {
        // Nobody listens: skip reading events nobody would get, but move the resume point up
        // now and then, so a new subscriber (who catches up from the log on its own) is not
        // sent a long backlog it already read. Not after every commit: under load that was a
        // read per commit for nobody. A point read while a subscriber arrived is not used:
        // a resume point too low only repeats events (streams drop what they have seen), one
        // too high would skip some.
        if !inner.hub.has_subscribers() && bounds_read.elapsed() >= IDLE_TAIL {
            bounds_read = Instant::now();
            if let Ok(Some((_, newest))) = inner.store.event_bounds().await
                && !inner.hub.has_subscribers()
            {
                last = last.max(newest);
            }
        }
        while inner.hub.has_subscribers() {
            let page = match inner
                .store
                .events_after(last, EventFilter::default(), PAGE)
                .await
            {
                Ok(page) => page,
                Err(error) => {
                    tracing::error!(%error, "cannot read the event log");
                    break;
                }
            };
            let full = page.len() == PAGE;
            for event in page {
                last = event.seq;
                // No subscribers is fine: the log keeps everything.
                inner.hub.publish(event);
            }
            if !full {
                break;
            }
        }
        tokio::select! {
            () = commits.notified() => {}
            () = tokio::time::sleep(IDLE_TAIL) => {}
            () = inner.stop_maintaining.cancelled() => return,
        }
    }
}

/// Writes the latest progress of every attempt that reported since the last write.
pub(super) async fn flush_progress(inner: Arc<Inner>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(PROGRESS_EVERY) => {}
            () = inner.stop_maintaining.cancelled() => return,
        }
        let updates: Vec<_> = inner
            .running
            .iter()
            .filter_map(|running| {
                let progress = running
                    .progress
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()?;
                Some((*running.key(), running.lease.clone(), progress))
            })
            .collect();
        if updates.is_empty() {
            continue;
        }
        match inner.store.record_progress(updates).await {
            Ok(_) => {}
            Err(StoreError::Unsupported(_)) => return,
            Err(error) => tracing::error!(%error, "cannot record progress"),
        }
    }
}
