//! The engine: admits tasks, runs them on the bounded pool, keeps time (the maintainer),
//! resolves waiters, delivers completion webhooks, shuts down.
//!
//! It sits between the API and the store: it decides (which kinds exist, whether an input
//! fits, when to refuse) and the store records. It knows none of the API's HTTP types; its
//! own outbound requests (webhooks) go through [`crate::outbound`].

mod deps;
mod events;
mod hub;
mod keys;
mod maintainer;
mod meter;
mod pool;
mod remote;
mod schedules;
mod starts;
mod waiters;
mod webhooks;

pub use hub::Subscription;
pub use keys::{KEY_CACHE_TTL, NewKey, create_key};
pub use remote::Heartbeat;
pub use schedules::{ScheduleInfo, ScheduleSpec, UPCOMING};
pub use waiters::Waiter;
pub use webhooks::WebhookConfig;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{Mutex, Notify, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::access::QueueScope;
use crate::handlers::{CpuPool, InvalidInput, KindInfo, Registry};
use crate::metrics;
use crate::store::space::Space;
use crate::store::{
    CancelResult, Changed, EventFilter, Inserted, QueueInfo, QueuePatch, StoreError, TaskFilter,
    TaskStore, Watched,
};
use crate::task::{Kind, NewTask, Progress, QueueName, ScheduleName, Task, TaskEvent, TaskId};
use crate::traces::Tracer;

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
    /// How long a claim holds a task before it counts as lost; renewed while it runs.
    pub lease: Duration,
    /// How long running tasks may go on after shutdown began.
    pub shutdown_grace: Duration,
    /// How long finished tasks are kept.
    pub retention: Duration,
    /// The most a `Retry-After` estimate may say.
    pub max_retry_after: Duration,
    /// Completion webhooks: the outbound client and how patiently to deliver.
    pub webhooks: WebhookConfig,
    /// Where the spans of attempts go (off: nowhere, at no cost).
    pub tracer: Tracer,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("task {0} not found")]
    NotFound(TaskId),
    #[error("unknown kind `{0}`")]
    UnknownKind(Kind),
    #[error("{0}")]
    InvalidInput(InvalidInput),
    /// A batch item was invalid; `index` says which.
    #[error("item {index}: {error}")]
    InvalidItem {
        index: usize,
        error: Box<EngineError>,
    },
    #[error("queue `{queue}` is full ({limit} tasks waiting)")]
    QueueFull {
        queue: QueueName,
        limit: u64,
        retry_after: Duration,
    },
    #[error("idempotency key `{0}` was already used with a different request")]
    IdempotencyConflict(String),
    /// A parent a submission names (`after`, `input_from`) does not exist, or lies in a
    /// queue the caller's key cannot see (the same answer: ids reveal nothing).
    #[error("`{field}`: no task has the id {id}")]
    UnknownParent { field: String, id: TaskId },
    /// The task is in a state the operation does not apply to; `rule` says which rule.
    #[error("task {} {}: {}", .task.id, .task.state.described(), .rule.why())]
    WrongState { task: Box<Task>, rule: StateRule },
    /// The caller's key is limited to other queues. Only for a queue the caller named:
    /// a task of another queue is `NotFound`, so ids reveal nothing.
    #[error("this key may not use queue `{0}`: it is limited to other queues")]
    QueueForbidden(QueueName),
    #[error("queue `{0}` is not remote: mark it with PATCH {{\"remote\": true}} first")]
    NotRemote(QueueName),
    #[error("schedule `{0}` not found")]
    ScheduleNotFound(ScheduleName),
    /// A schedule's cron or time zone is refused (checked at the edge first; this is the
    /// engine's own check, for embedders).
    #[error("{0}")]
    InvalidSchedule(String),
    #[error("too many waiters")]
    TooManyWaiters,
    #[error("the server is shutting down")]
    Draining,
    #[error(transparent)]
    Store(StoreError),
}

/// The rule a task's state broke when an operation did not apply to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateRule {
    /// A cancel of a task that already finished.
    CancelFinished,
    /// A retry of a task that is not failed or cancelled.
    RetryNotEnded,
    /// A delete of a task that has not finished.
    DeleteNotFinished,
    /// A delete of a finished task that waiting tasks name as a parent.
    DeleteHasDependents,
    /// A worker's call under a lease that is not the task's current one.
    LeaseLost,
}

impl StateRule {
    /// The rule in plain words, for the error's message.
    pub fn why(self) -> &'static str {
        match self {
            StateRule::CancelFinished => {
                "only a waiting, queued, scheduled or running task can be cancelled"
            }
            StateRule::RetryNotEnded => "only a failed or cancelled task can be retried",
            StateRule::DeleteNotFinished => "only a finished task can be deleted",
            StateRule::DeleteHasDependents => {
                "waiting tasks name it as a parent (after): cancel them or let them settle first"
            }
            StateRule::LeaseLost => {
                "the lease is not the task's current lease (expired, or never held)"
            }
        }
    }
}

/// A page of the event log as a caller may see it.
#[derive(Debug, Clone)]
pub struct EventPage {
    /// The events of the page in the caller's scope, oldest first.
    pub events: Vec<TaskEvent>,
    /// The last `seq` read, kept or not: where the next page starts.
    pub read_up_to: Option<i64>,
    /// The page was full: more may follow.
    pub full: bool,
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
    /// Set by a client's cancel, to tell it apart from a shutdown or a timeout.
    cancel_requested: AtomicBool,
    /// The latest progress report not yet written. A plain mutex: held for a swap only.
    progress: std::sync::Mutex<Option<Progress>>,
}

impl Running {
    fn new(cancel: CancellationToken, lease: String) -> Self {
        Running {
            cancel,
            lease,
            cancel_requested: AtomicBool::new(false),
            progress: std::sync::Mutex::new(None),
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
    /// Every event of the log, live, for SSE streams; the tailer is the only publisher.
    hub: Arc<hub::Hub>,
    /// Tasks finished per queue, recently: the rate behind `Retry-After` estimates.
    meter: meter::Meter,
    /// Wakes the dispatcher: work may be claimable. `Notify` keeps one wake-up when nobody
    /// waits, so none is lost between a claim that found nothing and the wait.
    wake: Notify,
    /// Wakes the maintainer: a task was scheduled, so the next due time may be earlier.
    reschedule: Notify,
    /// Set when a schedule was written here: the maintainer looks at the schedules on its
    /// next pass instead of at its usual time (it is woken by `reschedule`).
    schedules_changed: AtomicBool,
    /// Wakes the webhook deliverer: a task with a callback ended, so a delivery is due.
    deliveries: Notify,
    /// Bumped whenever work may have become claimable; remote lease long-polls watch it.
    /// A `watch` because any number of pollers must all see a bump.
    work: watch::Sender<u64>,
    /// Queues marked remote: submits to them take any kind, local workers skip them.
    remote_queues: DashMap<QueueName, ()>,
    /// How many times this node changed `remote_queues` itself. Held while it does, and while
    /// a reload applies what it read: a reload that read the store before such a change is
    /// dropped rather than undo it (the next one brings it).
    remote_changes: std::sync::Mutex<u64>,
    /// API keys looked up recently (see `keys`).
    keys: keys::KeyCache,
    /// The attempts running on this node, by task id, so a cancel reaches the handler.
    running: DashMap<TaskId, Running>,
    /// Attempts that ended here and whose end is not committed yet, with their leases. They
    /// are still `running` in the store, so their leases are renewed like those of `running`
    /// until the end is recorded: a slow commit must not let another node run them again.
    ending: DashMap<TaskId, String>,
    cpu: CpuPool,
    /// The worker pool's door for tasks a submit started itself; set once the pool starts.
    door: std::sync::OnceLock<pool::Door>,
    ready: AtomicBool,
    /// Whether the store takes writes; the store notes each write's outcome in it.
    space: Arc<Space>,
    draining: CancellationToken,
    /// Stops the dispatcher from claiming (shutdown, step one).
    stop_claiming: CancellationToken,
    /// Fires every running attempt's cancellation (shutdown, after the grace period).
    abort_running: CancellationToken,
    /// Stops the maintainer (shutdown, last step).
    stop_maintaining: CancellationToken,
    tasks: Mutex<Option<(JoinSet<()>, JoinSet<()>)>>,
}

/// The engine handle; clones share one engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Engine {
    /// Recovers what a previous process left running, then starts the pool and maintainer.
    pub async fn start(
        store: Arc<dyn TaskStore>,
        registry: Registry,
        config: EngineConfig,
    ) -> Result<Engine, StoreError> {
        let space = Arc::new(Space::default());
        let store: Arc<dyn TaskStore> = Arc::new(Watched::new(store, Arc::clone(&space)));
        // A shared database's running tasks may belong to live nodes: those are rescued
        // only when their lease expires.
        let recovered = match store.single_node() {
            true => match store.recover_running().await {
                Ok(recovered) => recovered,
                // On a full disk the server still comes up to serve reads and health; the
                // orphans are rescued when their leases expire, like a dead node's.
                Err(StoreError::StorageFull(_)) => Vec::new(),
                Err(error) => return Err(error),
            },
            false => Vec::new(),
        };
        for task in &recovered {
            metrics::attempt_ended(task, true);
            config.tracer.attempt_ended(task, true);
        }
        if !recovered.is_empty() {
            tracing::warn!(
                recovered = recovered.len(),
                "tasks left running by a previous process lost their attempt"
            );
        }
        let inner = Arc::new(Inner {
            store,
            registry,
            waiters: waiters::Waiters::new(config.max_waiters),
            hub: Arc::default(),
            meter: meter::Meter::new(config.max_retry_after),
            wake: Notify::new(),
            reschedule: Notify::new(),
            schedules_changed: AtomicBool::new(false),
            deliveries: Notify::new(),
            work: watch::channel(0).0,
            remote_queues: DashMap::new(),
            remote_changes: std::sync::Mutex::new(0),
            keys: keys::KeyCache::default(),
            running: DashMap::new(),
            ending: DashMap::new(),
            cpu: CpuPool::new(config.cpu_threads),
            door: std::sync::OnceLock::new(),
            ready: AtomicBool::new(false),
            space,
            draining: CancellationToken::new(),
            stop_claiming: CancellationToken::new(),
            abort_running: CancellationToken::new(),
            stop_maintaining: CancellationToken::new(),
            tasks: Mutex::new(None),
            config,
        });
        for task in recovered.iter().filter(|t| t.state.is_terminal()) {
            inner.waiters.notify(task);
        }
        inner.refresh_remote_queues().await;
        let pool = pool::start(&inner, inner.config.workers);
        let mut maintenance = JoinSet::new();
        maintenance.spawn(maintainer::run(Arc::clone(&inner)));
        maintenance.spawn(events::tail(Arc::clone(&inner)));
        maintenance.spawn(events::flush_progress(Arc::clone(&inner)));
        maintenance.spawn(webhooks::run(Arc::clone(&inner)));
        if let Some(signals) = inner.store.signals() {
            maintenance.spawn(maintainer::listen(Arc::clone(&inner), signals));
        }
        *inner.tasks.lock().await = Some((pool, maintenance));
        inner.ready.store(true, Ordering::Release);
        Ok(Engine { inner })
    }

    /// Validates and stores one task; on `Ok` it is durable and will run.
    pub async fn submit(&self, task: NewTask, scope: &QueueScope) -> Result<Inserted, EngineError> {
        let mut inserted = self
            .submit_batch(vec![task], scope)
            .await
            .map_err(|e| match e {
                EngineError::InvalidItem { error, .. } => *error,
                other => other,
            })?;
        // One task in, one answer out.
        inserted.pop().ok_or(EngineError::Store(StoreError::Closed))
    }

    /// Validates and stores tasks in one transaction: all or none.
    pub async fn submit_batch(
        &self,
        tasks: Vec<NewTask>,
        scope: &QueueScope,
    ) -> Result<Vec<Inserted>, EngineError> {
        if self.is_draining() {
            return Err(EngineError::Draining);
        }
        for (index, task) in tasks.iter().enumerate() {
            if !scope.allows(&task.queue) {
                return Err(EngineError::InvalidItem {
                    index,
                    error: Box::new(EngineError::QueueForbidden(task.queue.clone())),
                });
            }
            let checked = match self.check_kind(&task.queue, &task.kind, &task.input) {
                // The input is a parent's result, known once it is released.
                Err(EngineError::InvalidInput(_)) if task.input_from.is_some() => Ok(()),
                checked => checked,
            };
            checked.map_err(|error| EngineError::InvalidItem {
                index,
                error: Box::new(error),
            })?;
        }
        self.check_parents(&tasks, scope).await?;
        let inserted = self
            .inner
            .store_submitted(tasks)
            .await
            .map_err(|error| self.inner.store_error(error))?;
        for inserted in inserted.iter().filter(|inserted| !inserted.replayed) {
            metrics::task_submitted(&inserted.task);
        }
        if inserted.iter().any(|i| i.task.run_at.is_some()) {
            self.inner.reschedule.notify_one();
        }
        Ok(inserted
            .into_iter()
            .map(|inserted| Inserted {
                task: self.inner.shown(inserted.task),
                ..inserted
            })
            .collect())
    }

    /// Fails unless `kind` is registered and `input` fits it. A remote queue takes any kind:
    /// its workers, not this server, know the kinds.
    fn check_kind(
        &self,
        queue: &QueueName,
        kind: &Kind,
        input: &serde_json::Value,
    ) -> Result<(), EngineError> {
        if self.inner.remote_queues.contains_key(queue) {
            return Ok(());
        }
        match self.inner.registry.validate(kind, input) {
            None => Err(EngineError::UnknownKind(kind.clone())),
            Some(Err(invalid)) => Err(EngineError::InvalidInput(invalid)),
            Some(Ok(())) => Ok(()),
        }
    }

    /// The task, if it exists and lies in `scope` (one outside it is not found: a key
    /// limited to some queues cannot tell another queue's task from none).
    pub async fn get(&self, id: TaskId, scope: &QueueScope) -> Result<Task, EngineError> {
        self.inner
            .store
            .get(id)
            .await
            .map_err(EngineError::Store)?
            .filter(|task| scope.allows(&task.queue))
            .map(|task| self.inner.shown(task))
            .ok_or(EngineError::NotFound(id))
    }

    /// Fails with `NotFound` unless the task exists in `scope`. A check before a change by
    /// id; a task's queue never changes, so it cannot go stale.
    async fn check_scope(&self, id: TaskId, scope: &QueueScope) -> Result<(), EngineError> {
        if !scope.is_all() {
            self.get(id, scope).await?;
        }
        Ok(())
    }

    /// Fails with `QueueForbidden` unless `queue` lies in `scope`.
    fn check_queue(queue: &QueueName, scope: &QueueScope) -> Result<(), EngineError> {
        if scope.allows(queue) {
            Ok(())
        } else {
            Err(EngineError::QueueForbidden(queue.clone()))
        }
    }

    /// The task once it is terminal, or as it is after `timeout` (or when shutdown begins).
    pub async fn wait(
        &self,
        id: TaskId,
        timeout: Duration,
        scope: &QueueScope,
    ) -> Result<Task, EngineError> {
        if timeout.is_zero() {
            return self.get(id, scope).await;
        }
        let waiter = self.waiter(id)?;
        let task = self.get(id, scope).await?;
        if task.state.is_terminal() {
            return Ok(task);
        }
        // Not kept while parked: its input and labels may be kilobytes, times every waiter.
        drop(task);
        self.wait_with(waiter, id, timeout, scope).await
    }

    /// A subscription to task `id`'s end. Taken before the task is read (or, by a submit
    /// that will wait, before it is stored), so an end in between is not missed.
    pub fn waiter(&self, id: TaskId) -> Result<Waiter<'_>, EngineError> {
        self.inner
            .waiters
            .subscribe(id)
            .map_err(|_| EngineError::TooManyWaiters)
    }

    /// The task once `waiter` hears it end, or as it is after `timeout` (or when shutdown
    /// begins). The caller has seen the task not terminal since `waiter` was taken.
    pub async fn wait_with(
        &self,
        mut waiter: Waiter<'_>,
        id: TaskId,
        timeout: Duration,
        scope: &QueueScope,
    ) -> Result<Task, EngineError> {
        let _open = metrics::Open::long_poll();
        tokio::select! {
            finished = waiter.finished() => {
                if let Some(task) = finished {
                    return Ok(self.inner.shown(Arc::unwrap_or_clone(task)));
                }
            }
            () = tokio::time::sleep(timeout) => {}
            () = self.inner.draining.cancelled() => {}
        }
        self.get(id, scope).await
    }

    pub async fn cancel(&self, id: TaskId, scope: &QueueScope) -> Result<Cancelled, EngineError> {
        self.check_scope(id, scope).await?;
        match self
            .inner
            .store
            .cancel(id)
            .await
            .map_err(EngineError::Store)?
        {
            CancelResult::NotFound => Err(EngineError::NotFound(id)),
            CancelResult::Finished(task) => Err(EngineError::WrongState {
                task: Box::new(task),
                rule: StateRule::CancelFinished,
            }),
            CancelResult::Cancelled(task) => {
                self.inner.waiters.notify(&task);
                self.inner.callback_due(&task);
                Ok(Cancelled::Now(self.inner.shown(task)))
            }
            CancelResult::Requested(task) => {
                if let Some(running) = self.inner.running.get(&id) {
                    running.cancel_requested.store(true, Ordering::Release);
                    running.cancel.cancel();
                }
                Ok(Cancelled::Requested(self.inner.shown(task)))
            }
        }
    }

    /// Runs a failed or cancelled task again: attempts reset, history kept.
    pub async fn retry(&self, id: TaskId, scope: &QueueScope) -> Result<Task, EngineError> {
        self.check_scope(id, scope).await?;
        match self
            .inner
            .store
            .retry(id)
            .await
            .map_err(EngineError::Store)?
        {
            Changed::Done(Some(task)) => {
                self.inner.work_available();
                Ok(self.inner.shown(task))
            }
            Changed::NotFound | Changed::Done(None) => Err(EngineError::NotFound(id)),
            Changed::WrongState(task) | Changed::HasDependents(task) => {
                Err(EngineError::WrongState {
                    task: Box::new(task),
                    rule: StateRule::RetryNotEnded,
                })
            }
        }
    }

    /// Forgets a finished task.
    pub async fn delete(&self, id: TaskId, scope: &QueueScope) -> Result<(), EngineError> {
        self.check_scope(id, scope).await?;
        match self
            .inner
            .store
            .delete(id)
            .await
            .map_err(EngineError::Store)?
        {
            Changed::Done(_) => Ok(()),
            Changed::NotFound => Err(EngineError::NotFound(id)),
            Changed::WrongState(task) => Err(EngineError::WrongState {
                task: Box::new(task),
                rule: StateRule::DeleteNotFinished,
            }),
            Changed::HasDependents(task) => Err(EngineError::WrongState {
                task: Box::new(task),
                rule: StateRule::DeleteHasDependents,
            }),
        }
    }

    /// Tasks matching `filter`, within `scope` (naming a queue outside it is forbidden).
    pub async fn list(
        &self,
        mut filter: TaskFilter,
        scope: &QueueScope,
    ) -> Result<Vec<Task>, EngineError> {
        if let Some(queue) = &filter.queue {
            Self::check_queue(queue, scope)?;
        }
        filter.queues = scope.clone();
        let tasks = self
            .inner
            .store
            .list(filter)
            .await
            .map_err(EngineError::Store)?;
        Ok(tasks
            .into_iter()
            .map(|task| self.inner.shown(task))
            .collect())
    }

    /// The queues in `scope`.
    pub async fn queues(&self, scope: &QueueScope) -> Result<Vec<QueueInfo>, EngineError> {
        let mut queues = self
            .inner
            .store
            .queues()
            .await
            .map_err(EngineError::Store)?;
        queues.retain(|queue| scope.allows(&queue.name));
        Ok(queues)
    }

    pub async fn queue(
        &self,
        name: QueueName,
        scope: &QueueScope,
    ) -> Result<QueueInfo, EngineError> {
        Self::check_queue(&name, scope)?;
        self.inner
            .store
            .queue(name)
            .await
            .map_err(EngineError::Store)
    }

    pub async fn update_queue(
        &self,
        name: QueueName,
        patch: QueuePatch,
        scope: &QueueScope,
    ) -> Result<QueueInfo, EngineError> {
        Self::check_queue(&name, scope)?;
        let info = self
            .inner
            .store
            .update_queue(name, patch)
            .await
            .map_err(EngineError::Store)?;
        self.inner.mark_remote(&info.name, info.remote);
        // A resumed queue or a raised concurrency may make work claimable.
        self.inner.work_available();
        Ok(info)
    }

    /// An estimate of how long until a task with `waiting_before` tasks ahead of it in
    /// `queue` starts, from the queue's recent throughput; at least one second, at most
    /// `max_retry_after`.
    pub fn estimate_wait(&self, queue: &QueueName, waiting_before: u64) -> Duration {
        self.inner.estimate_wait(queue, waiting_before)
    }

    /// Live events of the queues in `scope` from now on; naming a `queue` outside it is
    /// forbidden, as for a listing. Subscribe before reading state, so nothing falls between.
    pub fn subscribe(
        &self,
        scope: &QueueScope,
        queue: Option<&QueueName>,
    ) -> Result<Subscription, EngineError> {
        if let Some(queue) = queue {
            Self::check_queue(queue, scope)?;
        }
        Ok(self.inner.hub.subscribe_all(scope.clone()))
    }

    /// Live events of task `id` from now on. Subscribe before reading state, as above; the
    /// caller has found the task in its scope first.
    pub fn subscribe_task(&self, id: TaskId) -> Subscription {
        self.inner.hub.subscribe_task(id)
    }

    /// Events from the log after `after`, oldest first: a page of at most `limit` read,
    /// of which those in `scope` are kept.
    pub async fn events_after(
        &self,
        after: i64,
        filter: EventFilter,
        limit: usize,
        scope: &QueueScope,
    ) -> Result<EventPage, EngineError> {
        let mut events = self
            .inner
            .store
            .events_after(after, filter, limit)
            .await
            .map_err(EngineError::Store)?;
        let page = EventPage {
            full: events.len() == limit,
            read_up_to: events.last().map(|event| event.seq),
            events: Vec::new(),
        };
        events.retain(|event| scope.allows(&event.queue));
        Ok(EventPage { events, ..page })
    }

    /// The oldest and newest retained event `seq`.
    pub async fn event_bounds(&self) -> Result<Option<(i64, i64)>, EngineError> {
        self.inner
            .store
            .event_bounds()
            .await
            .map_err(EngineError::Store)
    }

    /// Fires when shutdown begins: long-lived streams end then.
    pub fn draining(&self) -> CancellationToken {
        self.inner.draining.clone()
    }

    pub fn kinds(&self) -> Vec<KindInfo> {
        self.inner.registry.describe()
    }

    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
            && !self.is_draining()
            && self.inner.space.writable()
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
        let Some((mut pool, mut maintenance)) = self.inner.tasks.lock().await.take() else {
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
                    self.inner.release(id, &lease).await;
                }
            }
        }
        // The maintainer renews leases while tasks run, so it stops last.
        self.inner.stop_maintaining.cancel();
        while maintenance.join_next().await.is_some() {}
        // Last: every attempt that ended has recorded its span.
        self.inner.config.tracer.shutdown().await;
    }

    /// Where spans go: the api records its submits' spans there.
    pub fn tracer(&self) -> &Tracer {
        &self.inner.config.tracer
    }
}

/// Logs a failed store call of a background loop at ERROR, unless the store is out of space:
/// that is said once, then counted, by the store's space watch, not on every tick.
fn log_store_failure(error: &StoreError, what: &'static str) {
    if matches!(error, StoreError::StorageFull(_)) {
        tracing::debug!(%error, what);
    } else {
        tracing::error!(%error, what);
    }
}

impl Inner {
    /// A task as clients may read it: its kind's secrets hidden (the `http` kind's
    /// credentials). Every task the engine hands out goes through here, webhooks included;
    /// only a remote worker's lease carries the input as submitted, since it runs it.
    fn shown(&self, mut task: Task) -> Task {
        self.registry.redact(&mut task);
        task
    }

    /// Wakes whoever may claim: the local dispatcher and remote lease long-polls.
    fn work_available(&self) {
        self.wake.notify_one();
        self.work
            .send_modify(|generation| *generation = generation.wrapping_add(1));
    }

    /// Whether anyone awaits task `id` now: a long-poll or a stream of that task.
    fn is_awaited(&self, id: &TaskId) -> bool {
        self.waiters.is_awaited(id) || self.hub.streams_task(id)
    }

    /// What follows an attempt's end, wherever it ran: waiters, meters, timers, claims.
    fn ended(&self, task: &Task) {
        metrics::attempt_ended(task, false);
        self.config.tracer.attempt_ended(task, false);
        if task.state.is_terminal() {
            self.meter.record(&task.queue);
            self.waiters.notify(task);
            self.callback_due(task);
        } else {
            // Scheduled for a retry: the maintainer may need to wake earlier.
            self.reschedule.notify_one();
        }
        // A slot of the task's queue is free: work held back by its concurrency may go.
        self.work_available();
    }

    /// Marks `queue` remote or not, as this node just stored it.
    fn mark_remote(&self, queue: &QueueName, remote: bool) {
        let mut changes = self
            .remote_changes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if remote {
            self.remote_queues.insert(queue.clone(), ());
        } else {
            self.remote_queues.remove(queue);
        }
        *changes += 1;
    }

    /// Reloads which queues are remote (other nodes may have changed them).
    async fn refresh_remote_queues(&self) {
        let seen = *self
            .remote_changes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match self.store.remote_queues().await {
            Ok(remote) => {
                let changes = self
                    .remote_changes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if *changes != seen {
                    return;
                }
                self.remote_queues.retain(|name, ()| remote.contains(name));
                for name in remote {
                    self.remote_queues.insert(name, ());
                }
            }
            Err(error) => tracing::error!(%error, "cannot read queue settings"),
        }
    }

    /// Wakes the webhook deliverer if `task` ended with a callback.
    fn callback_due(&self, task: &Task) {
        if task.callback.is_some() {
            self.deliveries.notify_one();
        }
    }

    /// Gives a running task back to its queue (attempt not counted).
    async fn release(&self, id: TaskId, lease: &str) {
        match self.store.release(id, lease).await {
            Ok(Some(released)) if released.state.is_terminal() => self.waiters.notify(&released),
            Ok(_) => self.work_available(),
            Err(error) => tracing::error!(%id, %error, "cannot release a task"),
        }
    }

    fn store_error(&self, error: StoreError) -> EngineError {
        match error {
            StoreError::QueueFull { queue, limit } => EngineError::QueueFull {
                retry_after: self.estimate_wait(&queue, limit),
                queue,
                limit,
            },
            StoreError::IdempotencyConflict(key) => EngineError::IdempotencyConflict(key),
            // Checked before the insert; deleted in between.
            StoreError::UnknownParent(id) => EngineError::UnknownParent {
                field: "after".to_owned(),
                id,
            },
            other => EngineError::Store(other),
        }
    }

    fn estimate_wait(&self, queue: &QueueName, waiting_before: u64) -> Duration {
        self.meter.estimate_wait(queue, waiting_before)
    }
}
