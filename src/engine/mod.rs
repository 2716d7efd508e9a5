//! The engine: admits tasks, runs them on the bounded pool, resolves waiters, shuts down.
//!
//! It sits between the API and the store: it decides (which kinds exist, whether an input
//! fits, when to refuse) and the store records. It knows no HTTP types.

mod pool;
mod waiters;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{Mutex, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::handlers::{CpuPool, InvalidInput, KindInfo, Registry};
use crate::store::{CancelResult, StoreError, TaskFilter, TaskStore};
use crate::task::{Kind, NewTask, QueueName, Task, TaskId};

/// The engine's limits; each has a flag in `config`.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How many tasks run at once.
    pub workers: usize,
    /// How many tasks may wait per queue before submits are refused.
    pub max_queued: u64,
    /// How many CPU-bound computations run at once.
    pub cpu_threads: usize,
    /// How many long-polls may wait at once.
    pub max_waiters: usize,
    /// How long a claim holds a task before others may consider it lost.
    pub lease: Duration,
    /// How long running tasks may go on after shutdown began.
    pub shutdown_grace: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("task {0} not found")]
    NotFound(TaskId),
    #[error("unknown kind `{0}`")]
    UnknownKind(Kind),
    #[error("invalid input: {0}")]
    InvalidInput(InvalidInput),
    #[error("queue `{queue}` is full ({limit} tasks waiting)")]
    QueueFull {
        queue: QueueName,
        limit: u64,
        retry_after: Duration,
    },
    #[error("task {} has already finished ({})", .0.id, .0.state)]
    Finished(Box<Task>),
    #[error("too many waiters")]
    TooManyWaiters,
    #[error("the server is shutting down")]
    Draining,
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for EngineError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::QueueFull { queue, limit } => EngineError::QueueFull {
                queue,
                limit,
                retry_after: Duration::from_secs(1),
            },
            other => EngineError::Store(other),
        }
    }
}

/// What a cancel did.
#[derive(Debug, Clone)]
pub enum Cancelled {
    /// The task was waiting and is now cancelled.
    Now(Task),
    /// The task is running; its attempt was asked to stop and will end `cancelled`.
    Requested(Task),
}

/// The cancellation handle of one running attempt.
struct Running {
    /// Fires for a cancel of this task; a child of `abort_running`, so shutdown fires it too.
    cancel: CancellationToken,
    lease: String,
    /// Set by a client's cancel, to tell it apart from a shutdown.
    cancel_requested: AtomicBool,
}

impl Running {
    fn new(cancel: CancellationToken, lease: String) -> Self {
        Running {
            cancel,
            lease,
            cancel_requested: AtomicBool::new(false),
        }
    }

    fn cancel_requested(&self) -> bool {
        self.cancel_requested.load(Ordering::Acquire)
    }
}

struct Inner {
    store: Arc<dyn TaskStore>,
    registry: Registry,
    config: EngineConfig,
    waiters: waiters::Waiters,
    /// Wakes the dispatcher after a submit. `Notify` keeps one wake-up when nobody waits.
    wake: Notify,
    /// The attempts running on this node, by task id, so a cancel reaches the handler.
    running: DashMap<TaskId, Running>,
    cpu: CpuPool,
    ready: AtomicBool,
    draining: CancellationToken,
    /// Stops the dispatcher from claiming (shutdown, step one).
    stop_claiming: CancellationToken,
    /// Fires every running attempt's cancellation (shutdown, after the grace period).
    abort_running: CancellationToken,
    pool: Mutex<Option<JoinSet<()>>>,
}

/// The engine handle; clones share one engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// Recovers what a previous process left running, then starts the pool.
    pub async fn start(
        store: Arc<dyn TaskStore>,
        registry: Registry,
        config: EngineConfig,
    ) -> Result<Engine, StoreError> {
        let recovered = store.recover_running().await?;
        if recovered > 0 {
            tracing::warn!(
                recovered,
                "re-queued tasks left running by a previous process"
            );
        }
        let inner = Arc::new(Inner {
            store,
            registry,
            waiters: waiters::Waiters::new(config.max_waiters),
            wake: Notify::new(),
            running: DashMap::new(),
            cpu: CpuPool::new(config.cpu_threads),
            ready: AtomicBool::new(false),
            draining: CancellationToken::new(),
            stop_claiming: CancellationToken::new(),
            abort_running: CancellationToken::new(),
            pool: Mutex::new(None),
            config,
        });
        let pool = pool::start(&inner, inner.config.workers);
        *inner.pool.lock().await = Some(pool);
        inner.ready.store(true, Ordering::Release);
        Ok(Engine { inner })
    }

    /// Validates and stores a task; on `Ok` it is durable and will run.
    pub async fn submit(&self, task: NewTask) -> Result<Task, EngineError> {
        if self.is_draining() {
            return Err(EngineError::Draining);
        }
        match self.inner.registry.validate(&task.kind, &task.input) {
            None => return Err(EngineError::UnknownKind(task.kind)),
            Some(Err(invalid)) => return Err(EngineError::InvalidInput(invalid)),
            Some(Ok(())) => {}
        }
        let task = self
            .inner
            .store
            .insert(task, self.inner.config.max_queued)
            .await?;
        self.inner.wake.notify_one();
        Ok(task)
    }

    pub async fn get(&self, id: TaskId) -> Result<Task, EngineError> {
        self.inner
            .store
            .get(id)
            .await?
            .ok_or(EngineError::NotFound(id))
    }

    /// The task once it is terminal, or as it is after `timeout` (or when shutdown begins).
    pub async fn wait(&self, id: TaskId, timeout: Duration) -> Result<Task, EngineError> {
        if timeout.is_zero() {
            return self.get(id).await;
        }
        let mut waiter = self
            .inner
            .waiters
            .subscribe(id)
            .map_err(|_| EngineError::TooManyWaiters)?;
        let task = self.get(id).await?;
        if task.state.is_terminal() {
            return Ok(task);
        }
        tokio::select! {
            finished = waiter.finished() => {
                if let Some(task) = finished {
                    return Ok(Arc::unwrap_or_clone(task));
                }
            }
            () = tokio::time::sleep(timeout) => {}
            () = self.inner.draining.cancelled() => {}
        }
        self.get(id).await
    }

    pub async fn cancel(&self, id: TaskId) -> Result<Cancelled, EngineError> {
        match self.inner.store.cancel(id).await? {
            CancelResult::NotFound => Err(EngineError::NotFound(id)),
            CancelResult::Finished(task) => Err(EngineError::Finished(Box::new(task))),
            CancelResult::Cancelled(task) => {
                self.inner.waiters.notify(&task);
                Ok(Cancelled::Now(task))
            }
            CancelResult::Requested(task) => {
                if let Some(running) = self.inner.running.get(&id) {
                    running.cancel_requested.store(true, Ordering::Release);
                    running.cancel.cancel();
                }
                Ok(Cancelled::Requested(task))
            }
        }
    }

    pub async fn list(&self, filter: TaskFilter) -> Result<Vec<Task>, EngineError> {
        Ok(self.inner.store.list(filter).await?)
    }

    pub fn kinds(&self) -> Vec<KindInfo> {
        self.inner.registry.describe()
    }

    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire) && !self.is_draining()
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.is_cancelled()
    }

    /// Step one of shutdown: refuse new submits, answer long-polls now, stop claiming.
    pub fn begin_drain(&self) {
        self.inner.draining.cancel();
        self.inner.stop_claiming.cancel();
    }

    /// Drains, lets running attempts finish within the grace period, then stops the rest and
    /// gives their tasks back to the queue with the attempt not counted.
    pub async fn shutdown(&self) {
        self.begin_drain();
        let Some(mut pool) = self.inner.pool.lock().await.take() else {
            return;
        };
        let grace = self.inner.config.shutdown_grace;
        let finished =
            tokio::time::timeout(grace, async { while pool.join_next().await.is_some() {} }).await;
        if finished.is_err() {
            tracing::warn!(
                running = self.inner.running.len(),
                "grace period over; stopping running tasks"
            );
            self.inner.abort_running.cancel();
            // Handlers that honour cancellation return promptly and are released by their
            // worker; the ones that do not are abandoned and released here.
            let stopped = tokio::time::timeout(Duration::from_secs(1), async {
                while pool.join_next().await.is_some() {}
            })
            .await;
            if stopped.is_err() {
                pool.abort_all();
                let abandoned: Vec<(TaskId, String)> = self
                    .inner
                    .running
                    .iter()
                    .map(|r| (*r.key(), r.lease.clone()))
                    .collect();
                for (id, lease) in abandoned {
                    if let Ok(Some(task)) = self.inner.store.get(id).await {
                        self.inner.release(&task, &lease).await;
                    }
                }
            }
        }
    }
}

impl Inner {
    /// Gives a running task back to its queue (attempt not counted).
    async fn release(&self, task: &Task, lease: &str) {
        match self.store.release(task.id, lease).await {
            Ok(Some(released)) if released.state.is_terminal() => self.waiters.notify(&released),
            Ok(_) => {}
            Err(error) => tracing::error!(id = %task.id, %error, "cannot release a task"),
        }
    }
}
