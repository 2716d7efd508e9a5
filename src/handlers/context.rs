//! What a running attempt may use: who it is, whether it should stop, and a bounded pool for
//! CPU-bound work.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use super::HandlerError;
use crate::task::{ParentOutcome, Progress, TaskId, TraceContext, now_millis};

/// Where progress reports go. The engine keeps only the latest one per attempt and writes
/// it a few times a second, so reporting is cheap however often a handler calls it.
pub type ProgressSink = Arc<dyn Fn(Progress) + Send + Sync>;

/// Handed to every attempt. Cheap to clone.
#[derive(Clone)]
pub struct TaskContext {
    id: TaskId,
    attempt: u32,
    cancel: CancellationToken,
    cpu: CpuPool,
    progress: Option<ProgressSink>,
    trace: Option<TraceContext>,
    /// The outcomes of the task's parents (`after`), in the order named; shared, since a
    /// join's hundred results are cloned with every context clone otherwise.
    parents: Arc<[ParentOutcome]>,
}

impl TaskContext {
    pub fn new(id: TaskId, attempt: u32, cancel: CancellationToken, cpu: CpuPool) -> Self {
        TaskContext {
            id,
            attempt,
            cancel,
            cpu,
            progress: None,
            trace: None,
            parents: Arc::new([]),
        }
    }

    /// The same context, running under `trace` (the attempt's span, or the caller's).
    pub fn with_trace(mut self, trace: Option<TraceContext>) -> Self {
        self.trace = trace;
        self
    }

    /// The W3C trace context this attempt runs under, for a handler's outbound requests:
    /// `traceparent` names the attempt's span (or, with no spans exported, the caller's
    /// span the task was submitted under). `None`: the task is not traced.
    pub fn trace(&self) -> Option<&TraceContext> {
        self.trace.as_ref()
    }

    /// The same context, with the outcomes of the task's parents.
    pub fn with_parents(mut self, parents: Vec<ParentOutcome>) -> Self {
        self.parents = parents.into();
        self
    }

    /// The outcomes of the task's parents (`after`), in the order it named them; empty for a
    /// task without parents. A parent deleted since it ended shows as cancelled.
    pub fn parents(&self) -> &[ParentOutcome] {
        &self.parents
    }

    /// The same context, with progress reports going to `sink`.
    pub fn with_progress(mut self, sink: ProgressSink) -> Self {
        self.progress = Some(sink);
        self
    }

    /// Reports how far the attempt got (`percent` is clamped to 0–100 and
    /// rounded to two decimals). Coalesced: only the
    /// latest report is kept until it is written.
    pub fn progress(&self, percent: f64, message: impl Into<Option<String>>) {
        if let Some(sink) = &self.progress {
            sink(Progress {
                percent: Progress::tidy_percent(percent),
                message: message.into(),
                at: now_millis(),
            });
        }
    }

    pub fn id(&self) -> TaskId {
        self.id
    }

    /// 1 on the first attempt.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Resolves when the attempt should stop: the task was cancelled or the server is
    /// shutting down. A handler that ignores it is abandoned after the grace period.
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// A token a blocking closure can poll to stop early.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Runs CPU-bound `work` on the bounded CPU pool, off the async threads that serve HTTP.
    pub async fn cpu<R, F>(&self, work: F) -> Result<R, HandlerError>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        self.cpu.run(work).await
    }
}

/// A bounded pool for CPU-bound work. Tokio's blocking pool grows to hundreds of threads; the
/// semaphore caps how many of them compute at once, so a pool full of hashing leaves cores
/// for the API. Waiting work holds no thread, only a place in the semaphore's queue.
#[derive(Clone)]
pub struct CpuPool {
    permits: Arc<Semaphore>,
}

impl CpuPool {
    pub fn new(threads: usize) -> Self {
        CpuPool {
            permits: Arc::new(Semaphore::new(threads.max(1))),
        }
    }

    pub async fn run<R, F>(&self, work: F) -> Result<R, HandlerError>
    where
        R: Send + 'static,
        F: FnOnce() -> R + Send + 'static,
    {
        // The semaphore is never closed, so acquiring only fails if that changes.
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| HandlerError::new("shutdown", "the CPU pool is closed"))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| HandlerError::new("panic", e.to_string()))
    }
}
