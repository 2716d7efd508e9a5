//! The maintainer keeps time: it promotes scheduled tasks when they fall due, fires the
//! schedules whose slot has come (`schedules.rs`), renews the
//! leases of the attempts running here, rescues attempts whose lease expired elsewhere, and
//! deletes finished tasks past their retention.
//!
//! It sleeps until the next due time (woken early when a task is scheduled), so a delayed
//! or retrying task starts within milliseconds of its time rather than a polling period.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::broadcast;
// tokio's clock, not std's: a test that pauses time drives the maintainer's deadlines too.
use tokio::time::Instant;

use super::Inner;
use crate::store::Signal;
use crate::task::now_millis;

/// How often expired leases are looked for and old tasks deleted.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// The shortest sleep before a schedule's due time is looked at again: a slot that stays due
/// (its submit failed on a store error) is retried at this pace, not in a busy loop.
const SCHEDULE_RETRY: Duration = Duration::from_millis(100);
/// How many finished tasks one housekeeping pass deletes at most.
const PURGE_BATCH: usize = 1000;

pub(super) async fn run(inner: Arc<Inner>) {
    let renew_every = (inner.config.lease / 3).max(Duration::from_millis(10));
    let mut next_renew = Instant::now() + renew_every;
    let mut next_housekeeping = Instant::now();
    // When the schedules are looked at next: at the earliest slot, and at least once per
    // housekeeping period (another node may have written one). Not on every pass: the
    // maintainer wakes on every scheduled submit and every other node's signal.
    let mut next_slot_check = Instant::now();
    loop {
        promote(&inner).await;
        if Instant::now() >= next_slot_check
            || inner.schedules_changed.swap(false, Ordering::AcqRel)
        {
            super::schedules::fire_due(&inner).await;
            let until_slot =
                until(inner.store.schedule_next_at().await).clamp(SCHEDULE_RETRY, HOUSEKEEPING);
            next_slot_check = Instant::now() + until_slot;
        }
        if Instant::now() >= next_housekeeping {
            housekeeping(&inner).await;
            next_housekeeping = Instant::now() + HOUSEKEEPING;
        }
        if Instant::now() >= next_renew {
            renew(&inner).await;
            next_renew = Instant::now() + renew_every;
        }
        let until_due = until(inner.store.next_due().await);
        let now = Instant::now();
        let sleep = until_due
            .min(next_slot_check.saturating_duration_since(now))
            .min(next_housekeeping.saturating_duration_since(now))
            .min(next_renew.saturating_duration_since(now));
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = inner.reschedule.notified() => {}
            () = inner.stop_maintaining.cancelled() => return,
        }
    }
}

/// How long until a due time the store answered (a task's run_at, a schedule's next slot).
fn until(due: Result<Option<crate::task::Millis>, crate::store::StoreError>) -> Duration {
    match due {
        Ok(Some(at)) => Duration::from_millis((at - now_millis()).max(0) as u64),
        Ok(None) => HOUSEKEEPING,
        Err(error) => {
            tracing::error!(%error, "cannot read the next due time");
            HOUSEKEEPING
        }
    }
}

async fn promote(inner: &Inner) {
    match inner.store.promote_due(now_millis()).await {
        Ok(0) => {}
        Ok(_) => inner.work_available(),
        Err(error) => super::log_store_failure(&error, "cannot promote due tasks"),
    }
}

async fn housekeeping(inner: &Inner) {
    match inner.store.rescue_expired(now_millis()).await {
        Ok(rescued) if !rescued.is_empty() => {
            tracing::warn!(count = rescued.len(), "rescued tasks whose lease expired");
            for task in &rescued {
                crate::metrics::attempt_ended(task, true);
                inner.config.tracer.attempt_ended(task, true);
            }
            for task in rescued.iter().filter(|t| t.state.is_terminal()) {
                inner.waiters.notify(task);
            }
            inner.work_available();
        }
        Ok(_) => {}
        Err(error) => super::log_store_failure(&error, "cannot rescue expired leases"),
    }
    inner.refresh_remote_queues().await;
    let before = now_millis() - inner.config.retention.as_millis() as i64;
    match inner.store.purge_finished(before, PURGE_BATCH).await {
        Ok(0) => {}
        Ok(deleted) => tracing::info!(deleted, "deleted finished tasks past their retention"),
        Err(error) => super::log_store_failure(&error, "cannot delete old tasks"),
    }
}

/// Extends the lease of every attempt running on this node, and of every attempt that ended
/// here and waits for its end to be committed.
async fn renew(inner: &Inner) {
    let running = inner.running.iter().map(|r| (*r.key(), r.lease.clone()));
    let ending = inner.ending.iter().map(|e| (*e.key(), e.value().clone()));
    let leases: Vec<_> = running.chain(ending).collect();
    if leases.is_empty() {
        return;
    }
    let expires_at = now_millis() + inner.config.lease.as_millis() as i64;
    if let Err(error) = inner.store.renew(leases, expires_at).await {
        super::log_store_failure(&error, "cannot renew leases");
    }
}

/// Relays what other nodes did — and, on any store, the children a parent's end settled: new
/// work wakes the dispatcher (and the maintainer, since a scheduled task may be due sooner),
/// a finish elsewhere resolves the waiters here, a cancel asked elsewhere stops the attempt
/// if it runs here.
pub(super) async fn listen(inner: Arc<Inner>, mut signals: broadcast::Receiver<Signal>) {
    loop {
        let signal = tokio::select! {
            signal = signals.recv() => signal,
            () = inner.stop_maintaining.cancelled() => return,
        };
        match signal {
            Ok(Signal::Work) => {
                inner.work_available();
                inner.reschedule.notify_one();
            }
            // A cancel asked on another node, of an attempt that may run here: stop it.
            Ok(Signal::Cancel(id)) => {
                if let Some(running) = inner.running.get(&id) {
                    running.cancel_requested.store(true, Ordering::Release);
                    running.cancel.cancel();
                }
            }
            // Read the task only for a waiter here: most finishes elsewhere have none (their
            // webhooks go at the deliverer's next poll).
            Ok(Signal::Finished(id)) if !inner.waiters.is_awaited(&id) => {}
            Ok(Signal::Finished(id)) => match inner.store.get(id).await {
                Ok(Some(task)) if task.state.is_terminal() => {
                    inner.waiters.notify(&task);
                    inner.callback_due(&task);
                }
                Ok(_) => {}
                Err(error) => tracing::error!(%id, %error, "cannot read a finished task"),
            },
            // Missed signals: wake everything once; waiters re-read on their own deadline.
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "missed signals from other nodes");
                inner.wake.notify_one();
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
