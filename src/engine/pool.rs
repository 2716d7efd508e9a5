//! The worker pool: one dispatcher claims queued tasks, a fixed set of workers runs them.
//!
//! ```text
//! submit ─► wake ─► dispatcher ─(permit per free worker)─► store.claim(n) ─► channel ─► worker × N
//! ```
//!
//! The semaphore has one permit per worker, and the dispatcher claims only as many tasks as it
//! holds permits, so no task is ever claimed that a worker cannot start now (a claimed task
//! holds a lease; one parked in a buffer would hold it for nothing). Workers are spawned once
//! and reused for every task.
//!
//! A worker hands each outcome to the completer and returns its permit at once (an awaited
//! task's permit waits for its end to commit: see [`work`]): the completer records outcomes in
//! batches (one store call for all that are waiting), so recording costs one commit per batch
//! instead of holding every worker for a commit of its own. Until its outcome is recorded a
//! task stays `running` under its lease; a crash in between re-runs it (at-least-once).
//!
//! A submit that finds workers free takes their permits itself and claims in its own
//! transaction (`starts.rs`); what it started comes through the [`Door`] to the same workers.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;

use super::{Inner, Running};
use crate::handlers::{HandlerError, ProgressSink, TaskContext};
use crate::metrics;
use crate::store::{ClaimMore, EndedAttempt, StoreError};
use crate::task::{Outcome, Task, TaskError, TaskId, now_millis, timeout_error};

/// The most tasks one claim takes (it never takes more than there are free workers). Large
/// claims pay a statement's fixed costs (a round trip, its triggers' own statements, its
/// commit) once for many tasks: a PostgreSQL drain did ~30,000 tasks/s at `--workers 2048`
/// with claims of up to 2,048, against ~20,000 at 256 with claims of 256
/// (docs/benchmarks.md). On SQLite a claim holds the one writer while it runs, longer the
/// larger it is; only a pool that large makes one that large.
const CLAIM_BATCH: usize = 2048;
/// The most tasks one claim takes, per core, while the tasks claimed are awaited (see
/// [`dispatch`]).
const AWAITED_CLAIM_PER_CORE: usize = 2;
/// How often an idle dispatcher looks at the store even when nothing woke it: a safety net
/// for wake-ups that cannot reach it (a write made by another process).
const IDLE_POLL: Duration = Duration::from_millis(500);
/// How long the dispatcher backs off after the store failed.
const ERROR_BACKOFF: Duration = Duration::from_millis(250);

pub(super) type Job = (Task, OwnedSemaphorePermit);
/// An attempt's end, waiting to be recorded; with its worker's permit when the task is
/// awaited (see [`work`]).
type Done = (EndedAttempt, Option<OwnedSemaphorePermit>);

/// How many outcomes wait for the completer before workers wait for it (backpressure).
const COMPLETER_QUEUE: usize = 4096;
/// The most outcomes one store call records: two claims' worth, so that a pool as large as
/// [`CLAIM_BATCH`] records its ends in as few statements as it claims them (a PostgreSQL drain
/// at `--workers 2048`: ~34,000 tasks/s against ~32,000 with at most 1,024 per call).
const COMPLETE_BATCH: usize = 2 * CLAIM_BATCH;
/// How many store calls of the completer may be under way at once (see [`complete`]). On
/// SQLite the writer runs them one after the other; on PostgreSQL two may commit side by
/// side, as two nodes' would.
const COMPLETE_IN_FLIGHT: usize = 2;

/// The pool's door for tasks claimed outside the dispatcher: the same permits, the same
/// workers' channel.
pub(super) struct Door {
    permits: Arc<Semaphore>,
    /// Weak: the dispatcher's sender is the one that keeps the workers' channel open, so the
    /// door closes when the dispatcher stops (shutdown) and the workers can drain and end.
    jobs: mpsc::WeakSender<Job>,
}

impl Door {
    /// Up to `n` permits of workers free now (never waits), and the way to them; `None` if
    /// there is none or the pool stopped taking work.
    pub(super) fn free_workers(
        &self,
        n: usize,
    ) -> Option<(Vec<OwnedSemaphorePermit>, mpsc::Sender<Job>)> {
        let jobs = self.jobs.upgrade()?;
        let mut held = Vec::new();
        while held.len() < n {
            match Arc::clone(&self.permits).try_acquire_owned() {
                Ok(permit) => held.push(permit),
                Err(_) => break,
            }
        }
        (!held.is_empty()).then_some((held, jobs))
    }
}

/// Hands a claimed task to the workers under `permit`: counted as started and registered
/// (so a cancel finds it) before a worker can take it. `false`: the workers are gone.
pub(super) async fn hand_over(
    inner: &Inner,
    jobs: &mpsc::Sender<Job>,
    task: Task,
    permit: OwnedSemaphorePermit,
) -> bool {
    metrics::attempt_started(&task);
    let cancel = inner.abort_running.child_token();
    let lease = task
        .lease
        .as_ref()
        .map(|l| l.token.clone())
        .unwrap_or_default();
    inner.running.insert(task.id, Running::new(cancel, lease));
    jobs.send((task, permit)).await.is_ok()
}

/// Starts the dispatcher and `workers` workers; they stop once `inner.stop_claiming` fires
/// and every claimed task was run.
pub(super) fn start(inner: &Arc<Inner>, workers: usize) -> JoinSet<()> {
    let permits = Arc::new(Semaphore::new(workers));
    // Capacity = workers: the dispatcher never holds more claimed tasks than free workers.
    let (jobs, queue) = mpsc::channel::<Job>(workers);
    let door = Door {
        permits: Arc::clone(&permits),
        jobs: jobs.downgrade(),
    };
    if inner.door.set(door).is_err() {
        tracing::error!("the worker pool was started twice; submits use the first");
    }
    // Workers share one receiver; the mutex is held only while taking the next job.
    let queue = Arc::new(Mutex::new(queue));
    // The last sender goes with the last worker; the completer then drains and stops.
    let (done, outcomes) = mpsc::channel::<Done>(COMPLETER_QUEUE);
    let mut set = JoinSet::new();
    set.spawn(dispatch(Arc::clone(inner), permits, jobs));
    set.spawn(complete(Arc::clone(inner), outcomes));
    for _ in 0..workers {
        set.spawn(work(Arc::clone(inner), Arc::clone(&queue), done.clone()));
    }
    set
}

/// Claims tasks for free workers. After a wake-up nothing says how much work waits: a claim
/// of one probes, so the other free workers stay free meanwhile for submits that start their
/// own tasks (`starts.rs`). A claim that comes back full is followed by one as large as the
/// free workers, up to [`CLAIM_BATCH`].
///
/// Unless most of the last claim's tasks were awaited: then claims stay small
/// ([`AWAITED_CLAIM_PER_CORE`] per core). An awaited task's worker comes back only once its
/// end is committed and its waiters woken (see [`work`]), so a pool of awaited tasks claims,
/// runs and ends in waves, and each task's answer waits for its whole wave's: answers to write,
/// ends to record. Small claims make small waves, one behind the other, each paced by its
/// claim's commit. A burst of 11,000 waiters at `--workers 64` (bench/run's wake-up), side by
/// side: p99 from finish to answer 16–20 ms with claims as large as the pool, ~6 ms with claims
/// of 4; all answered in 4.3–4.9 s instead of 2.2–2.5 s (docs/benchmarks.md). Tasks nobody awaits
/// are still claimed as many at once as workers are free.
async fn dispatch(inner: Arc<Inner>, permits: Arc<Semaphore>, jobs: mpsc::Sender<Job>) {
    let stop = inner.stop_claiming.clone();
    let awaited_claim = AWAITED_CLAIM_PER_CORE
        * std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut probing = true;
    let mut largest = CLAIM_BATCH;
    loop {
        let first = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            () = stop.cancelled() => return,
        };
        let mut held = vec![first];
        while !probing && held.len() < largest {
            match Arc::clone(&permits).try_acquire_owned() {
                Ok(permit) => held.push(permit),
                Err(_) => break,
            }
        }
        let lease_expires_at = now_millis() + inner.config.lease.as_millis() as i64;
        // Workers that come free while the claim waits for its turn join it as it starts.
        let grown = Arc::new(std::sync::Mutex::new(Vec::new()));
        let more = grow(
            &permits,
            &grown,
            if probing { 0 } else { largest - held.len() },
        );
        let claimed = inner
            .store
            .claim_growing(held.len(), more, lease_expires_at)
            .await;
        held.append(&mut grown.lock().unwrap_or_else(|e| e.into_inner()));
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
        probing = claimed.len() < held.len();
        let awaited = claimed
            .iter()
            .filter(|task| inner.is_awaited(&task.id))
            .count();
        largest = if awaited * 2 > claimed.len() {
            awaited_claim
        } else {
            CLAIM_BATCH
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
        for (task, permit) in claimed.into_iter().zip(held) {
            if !hand_over(&inner, &jobs, task, permit).await {
                return;
            }
        }
    }
}

/// What a growing claim asks as it starts: up to `room` more permits of free workers, taken
/// then (never waiting) and kept in `grown` for the dispatcher, which hands one to each task
/// claimed beyond its own permits; the ones no task took go back when it drops them.
fn grow(
    permits: &Arc<Semaphore>,
    grown: &Arc<std::sync::Mutex<Vec<OwnedSemaphorePermit>>>,
    room: usize,
) -> ClaimMore {
    let permits = Arc::clone(permits);
    let grown = Arc::clone(grown);
    Box::new(move || {
        let mut grown = grown.lock().unwrap_or_else(|e| e.into_inner());
        while grown.len() < room {
            match Arc::clone(&permits).try_acquire_owned() {
                Ok(permit) => grown.push(permit),
                Err(_) => break,
            }
        }
        grown.len()
    })
}

/// A worker hands each end to the completer and takes its next task at once, unless someone
/// awaits the task it ran (a long-poll, `Prefer: wait`, a stream of the task): then its permit
/// goes with the end and comes back once the end is committed and the waiters woken. Answers
/// come before new work, so when ends come faster than waiters can be answered (a burst of
/// thousands), the backlog stays queued tasks rather than growing between a task's end and its
/// answer.
async fn work(inner: Arc<Inner>, queue: Arc<Mutex<mpsc::Receiver<Job>>>, done: mpsc::Sender<Done>) {
    loop {
        let job = queue.lock().await.recv().await;
        let Some((task, permit)) = job else { return };
        if let Some(ended) = execute(&inner, task).await {
            let held = inner.is_awaited(&ended.id).then_some(permit);
            if done.send((ended, held)).await.is_err() {
                return;
            }
        }
    }
}

/// Records outcomes in batches: whatever is waiting goes in one store call, so a lone end
/// under low load is recorded at once and ends under high load share a commit. Up to
/// [`COMPLETE_IN_FLIGHT`] batches are on their way at once: while one commits, the next
/// already waits at the store, so the ends that came meanwhile go into the very next commit
/// rather than waiting for this one's answer to travel back first (and for a commit that
/// started without them in between), and their waiters hear of them one commit sooner.
async fn complete(inner: Arc<Inner>, mut outcomes: mpsc::Receiver<Done>) {
    let mut recording = FuturesUnordered::new();
    let mut batch = Vec::with_capacity(COMPLETE_BATCH);
    let mut open = true;
    while open || !recording.is_empty() {
        tokio::select! {
            // A recorded batch first: its waiters are waiting for it.
            biased;
            Some(()) = recording.next(), if !recording.is_empty() => {}
            // `recv_many` is cancel-safe: a branch not taken loses nothing.
            taken = outcomes.recv_many(&mut batch, COMPLETE_BATCH),
                if open && recording.len() < COMPLETE_IN_FLIGHT =>
            {
                if taken == 0 {
                    // Every worker is gone: record what is on its way, then stop.
                    open = false;
                } else {
                    recording.push(record(&inner, std::mem::take(&mut batch)));
                }
            }
        }
    }
}

/// Records one batch of outcomes and tells whoever waits for those tasks.
async fn record(inner: &Inner, done: Vec<Done>) {
    let (attempts, permits): (Vec<EndedAttempt>, Vec<Option<OwnedSemaphorePermit>>) =
        done.into_iter().unzip();
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
    for id in &ids {
        inner.ending.remove(id);
    }
    // Only now, their waiters woken, may the workers of awaited tasks take more work.
    drop(permits);
}

/// Runs one attempt; returns how it ended, for the completer to record (`None` when there is
/// nothing to record: the task was given back at shutdown).
async fn execute(inner: &Arc<Inner>, mut task: Task) -> Option<EndedAttempt> {
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
    // Renewed until the completer records the end (see `Inner::ending`).
    inner.ending.insert(task.id, lease.clone());
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
