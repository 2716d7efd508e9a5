//! The worker pool: one dispatcher claims queued tasks, a fixed set of workers runs them.
//!
//! ```text
//! submit ─► wake ─► dispatcher ─(permit per free worker, + ahead)─► store.claim(n) ─► channel ─► worker × N
//! ```
//!
//! The semaphore has one permit per worker, and the dispatcher claims as many tasks as it
//! holds permits. A claim is a round trip and a commit; were the dispatcher to claim only
//! for idle workers, workers that end their tasks meanwhile would wait for it. So it also
//! claims *ahead* when tasks are shorter than a claim: as many more as the workers ended
//! while its last claim was on its way, if those took less time on average than the claim
//! did, at most one more per worker (a second semaphore). They wait in the channel for the
//! next free worker, `running` under their lease, for about one short task's time. Tasks
//! longer than a claim are never claimed ahead, so none waits behind a busy worker holding a
//! lease that another node could have used. Workers are spawned once and reused for every
//! task.
//!
//! A worker hands each outcome to the completer and returns its permit at once: the completer
//! records outcomes in batches (one store call for all that are waiting), so recording costs
//! one commit per batch instead of holding every worker for a commit of its own. Until its
//! outcome is recorded a task stays `running` under its lease; a crash in between re-runs it
//! (at-least-once).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;

use super::{Inner, Running};
use crate::handlers::{HandlerError, ProgressSink, TaskContext};
use crate::metrics;
use crate::store::{EndedAttempt, StoreError};
use crate::task::{Outcome, Task, TaskError, TaskId, now_millis, timeout_error};

/// The most tasks one claim takes.
const CLAIM_BATCH: usize = 256;
/// How often an idle dispatcher looks at the store even when nothing woke it: a safety net
/// for wake-ups that cannot reach it (a write made by another process).
const IDLE_POLL: Duration = Duration::from_millis(500);
/// How long the dispatcher backs off after the store failed.
const ERROR_BACKOFF: Duration = Duration::from_millis(250);

type Job = (Task, OwnedSemaphorePermit);
/// An attempt's end, waiting to be recorded.
type Done = EndedAttempt;

/// How many outcomes wait for the completer before workers wait for it (backpressure).
const COMPLETER_QUEUE: usize = 4096;
/// The most outcomes one store call records.
const COMPLETE_BATCH: usize = 1024;

/// Starts the dispatcher and `workers` workers; they stop once `inner.stop_claiming` fires
/// and every claimed task was run.
pub(super) fn start(inner: &Arc<Inner>, workers: usize) -> JoinSet<()> {
    let slots = Slots {
        idle: Arc::new(Semaphore::new(workers)),
        ahead: Arc::new(Semaphore::new(workers)),
        ended: Arc::new(AtomicU64::new(0)),
        busy_micros: Arc::new(AtomicU64::new(0)),
    };
    // Capacity = both semaphores' permits: a send never waits.
    let (jobs, queue) = mpsc::channel::<Job>(2 * workers.max(1));
    // Workers share one receiver; the mutex is held only while taking the next job.
    let queue = Arc::new(Mutex::new(queue));
    // The last sender goes with the last worker; the completer then drains and stops.
    let (done, outcomes) = mpsc::channel::<Done>(COMPLETER_QUEUE);
    let mut set = JoinSet::new();
    let ended = (Arc::clone(&slots.ended), Arc::clone(&slots.busy_micros));
    set.spawn(dispatch(Arc::clone(inner), slots, jobs));
    set.spawn(complete(Arc::clone(inner), outcomes));
    for _ in 0..workers {
        let worker = work(
            Arc::clone(inner),
            Arc::clone(&queue),
            done.clone(),
            (Arc::clone(&ended.0), Arc::clone(&ended.1)),
        );
        set.spawn(worker);
    }
    set
}

/// What bounds the claimed tasks that have not ended: a permit each, from `idle` (one per
/// worker: the dispatcher waits for one of these) or from `ahead` (claimed ahead of the
/// workers, never waited for); a permit goes back when its task's outcome is handed off.
struct Slots {
    idle: Arc<Semaphore>,
    ahead: Arc<Semaphore>,
    /// Attempts the workers ended, ever, and how long they ran in all (µs): the dispatcher
    /// reads how many ended during a claim, and how long those took on average.
    ended: Arc<AtomicU64>,
    busy_micros: Arc<AtomicU64>,
}

impl Slots {
    /// Permits for the next claim: at least one worker's (waited for), every other free
    /// one, and up to `ahead` more to run after them; at most `CLAIM_BATCH` in all.
    async fn take(&self, ahead: usize) -> Option<Vec<OwnedSemaphorePermit>> {
        let first = Arc::clone(&self.idle).acquire_owned().await.ok()?;
        let mut held = vec![first];
        while held.len() < CLAIM_BATCH {
            match Arc::clone(&self.idle).try_acquire_owned() {
                Ok(permit) => held.push(permit),
                Err(_) => break,
            }
        }
        let limit = CLAIM_BATCH.min(held.len() + ahead);
        while held.len() < limit {
            match Arc::clone(&self.ahead).try_acquire_owned() {
                Ok(permit) => held.push(permit),
                Err(_) => break,
            }
        }
        Some(held)
    }
}

async fn dispatch(inner: Arc<Inner>, slots: Slots, jobs: mpsc::Sender<Job>) {
    let stop = inner.stop_claiming.clone();
    // How many to claim ahead: as many as ended while the last claim was on its way, if they
    // were shorter on average than the claim (see the module's note); else none.
    let mut ended_meanwhile = 0;
    loop {
        let held = tokio::select! {
            held = slots.take(ended_meanwhile) => match held {
                Some(held) => held,
                None => return,
            },
            () = stop.cancelled() => return,
        };
        let ended_before = slots.ended.load(Ordering::Relaxed);
        let busy_before = slots.busy_micros.load(Ordering::Relaxed);
        let claim_began = Instant::now();
        let lease_expires_at = now_millis() + inner.config.lease.as_millis() as i64;
        let claimed = inner.store.claim(held.len(), lease_expires_at).await;
        let claim_micros = claim_began.elapsed().as_micros() as u64;
        let ended = slots.ended.load(Ordering::Relaxed) - ended_before;
        let busy = slots.busy_micros.load(Ordering::Relaxed) - busy_before;
        ended_meanwhile = if ended > 0 && busy / ended < claim_micros {
            ended as usize
        } else {
            0
        };
        let claimed = match claimed {
            Ok(claimed) => claimed,
            Err(error) => {
                super::log_store_failure(&error, "claim failed");
                drop(held);
                tokio::select! {
                    () = tokio::time::sleep(ERROR_BACKOFF) => continue,
                    () = stop.cancelled() => return,
                }
            }
        };
        if claimed.is_empty() {
            drop(held);
            // `notify_one` stores a wake-up when nobody waits, so a submit that landed
            // between the claim and this line is not lost.
            tokio::select! {
                () = inner.wake.notified() => {},
                () = tokio::time::sleep(IDLE_POLL) => {},
                () = stop.cancelled() => return,
            }
            continue;
        }
        // Workers' permits come first in `held`: a short claim gives back the ahead ones.
        for (task, permit) in claimed.into_iter().zip(held) {
            metrics::attempt_started(&task);
            // Registered before the worker starts, so a cancel arriving now finds it.
            let cancel = inner.abort_running.child_token();
            let lease = task
                .lease
                .as_ref()
                .map(|l| l.token.clone())
                .unwrap_or_default();
            inner.running.insert(task.id, Running::new(cancel, lease));
            if jobs.send((task, permit)).await.is_err() {
                return;
            }
        }
    }
}

async fn work(
    inner: Arc<Inner>,
    queue: Arc<Mutex<mpsc::Receiver<Job>>>,
    done: mpsc::Sender<Done>,
    (ended, busy_micros): (Arc<AtomicU64>, Arc<AtomicU64>),
) {
    loop {
        let job = queue.lock().await.recv().await;
        let Some((task, permit)) = job else { return };
        let began = Instant::now();
        if let Some(outcome) = execute(&inner, task).await
            && done.send(outcome).await.is_err()
        {
            return;
        }
        busy_micros.fetch_add(began.elapsed().as_micros() as u64, Ordering::Relaxed);
        ended.fetch_add(1, Ordering::Relaxed);
        drop(permit);
    }
}

/// Records outcomes in batches: whatever is waiting goes in one store call.
async fn complete(inner: Arc<Inner>, mut outcomes: mpsc::Receiver<Done>) {
    let mut batch = Vec::with_capacity(COMPLETE_BATCH);
    while outcomes.recv_many(&mut batch, COMPLETE_BATCH).await > 0 {
        let attempts: Vec<Done> = std::mem::take(&mut batch);
        let ids: Vec<TaskId> = attempts.iter().map(|attempt| attempt.id).collect();
        match inner.store.finish_many(attempts).await {
            Ok(ended) => {
                for (id, ended) in ids.iter().zip(ended) {
                    match ended {
                        Some(ended) => inner.ended(&ended),
                        None => tracing::debug!(%id, "the attempt lost its lease before it ended"),
                    }
                }
            }
            // The tasks stay running under their leases; rescue or recovery re-runs them.
            Err(error) => tracing::error!(count = ids.len(), %error, "cannot record outcomes"),
        }
    }
}

/// Runs one attempt; returns how it ended, for the completer to record (`None` when there is
/// nothing to record: the task was given back at shutdown).
async fn execute(inner: &Arc<Inner>, mut task: Task) -> Option<Done> {
    let cancel = inner.running.get(&task.id).map(|r| r.cancel.clone())?;
    // A child sees its parents' outcomes; a failed read fails the attempt (retryably).
    let (parents, unreadable) = match inner.parents_of(&task).await {
        Ok(parents) => (parents, false),
        Err(error) => {
            tracing::error!(id = %task.id, %error, "cannot read a task's parents");
            (Vec::new(), true)
        }
    };
    let ctx = TaskContext::new(task.id, task.attempt, cancel.clone(), inner.cpu.clone())
        .with_progress(progress_sink(inner, task.id))
        .with_trace(inner.config.tracer.attempt_context(&task))
        .with_parents(parents);
    // The handler owns its input; moved out, not copied (an input may be 1 MB).
    let input = Arc::unwrap_or_clone(std::mem::take(&mut task.input));
    let result = match inner.registry.run(&task.kind, input, ctx) {
        _ if unreadable => Err(HandlerError::new(
            "store",
            "the outcomes of the task's parents could not be read",
        )),
        Some(attempt) => {
            let attempt = AssertUnwindSafe(attempt).catch_unwind();
            let limit = task.timeout_ms.map(Duration::from_millis);
            match limit {
                None => attempt.await,
                Some(limit) => match tokio::time::timeout(limit, attempt).await {
                    Ok(result) => result,
                    Err(_) => {
                        // Tell the handler, then abandon it: dropping the future stops an
                        // async handler at its next await; CPU work sees the token.
                        cancel.cancel();
                        let error = timeout_error(limit.as_millis() as u64);
                        Ok(Err(HandlerError::new(error.error_type, error.message)))
                    }
                },
            }
            .unwrap_or_else(|panic| Err(HandlerError::new("panic", panic_message(&panic))))
        }
        None => Err(HandlerError::permanent(
            "unknown_kind",
            format!("no handler for kind `{}` on this server", task.kind),
        )),
    };
    let ended_at = now_millis();
    let (_, running) = inner.running.remove(&task.id)?;
    let cancel_requested = running.cancel_requested();
    // A report the flusher has not written yet would go with the entry: write it now, while
    // the lease still holds, so a task that reports and ends at once keeps its last progress.
    let unwritten = running
        .progress
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let lease = running.lease;
    if let Some(progress) = unwritten {
        let report = vec![(task.id, lease.clone(), progress)];
        match inner.store.record_progress(report).await {
            Ok(_) | Err(StoreError::Unsupported(_)) => {}
            Err(error) => tracing::warn!(%error, "cannot record the last progress"),
        }
    }
    let outcome = if cancel_requested {
        Outcome::Cancelled
    } else {
        match result {
            Ok(value) => Outcome::Succeeded(value),
            // Stopped by shutdown, not by its own failure: give it back, attempt not counted.
            Err(_) if inner.abort_running.is_cancelled() => {
                inner.release(task.id, &lease).await;
                return None;
            }
            Err(error) => Outcome::Failed {
                retryable: error.retryable,
                error: TaskError {
                    error_type: error.error_type,
                    message: error.message,
                },
            },
        }
    };
    Some(EndedAttempt {
        id: task.id,
        lease,
        outcome,
        ended_at,
    })
}

/// Where an attempt's progress reports go: the latest one waits in its `Running` entry
/// for the flusher (`events::flush_progress`).
fn progress_sink(inner: &Arc<Inner>, id: TaskId) -> ProgressSink {
    let inner = Arc::downgrade(inner);
    Arc::new(move |progress| {
        if let Some(inner) = inner.upgrade()
            && let Some(running) = inner.running.get(&id)
        {
            *running.progress.lock().unwrap_or_else(|e| e.into_inner()) = Some(progress);
        }
    })
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "the handler panicked".to_owned())
}
