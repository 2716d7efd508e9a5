//! The storage seam: [`TaskStore`] names every operation the engine needs, by verb.
//!
//! Implementations own their SQL and their dialect; nothing above this module writes a query.
//! Every state change is a guarded update ("only if still running under this lease"): zero rows
//! means the caller lost a race, which is a normal answer (`Ok(None)`), not an error.
//! The store knows nothing of HTTP.

pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

use crate::task::{Kind, Millis, NewTask, Outcome, QueueName, Task, TaskId, TaskState};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Admission control refused the task; nothing was written.
    #[error("queue `{queue}` holds {limit} waiting tasks, its limit")]
    QueueFull { queue: QueueName, limit: u64 },
    #[error("unsupported database URL `{0}` (expected sqlite://PATH or sqlite::memory:)")]
    UnsupportedUrl(String),
    /// The store was shut down (or its writer died); the operation did not happen.
    #[error("the store is closed")]
    Closed,
    /// The database failed; the details are for the log, not for clients.
    #[error("database error: {0}")]
    Backend(String),
    /// A stored row could not be read back as a task.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// What a cancel found and did, decided atomically in the store.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelResult {
    NotFound,
    /// The task was queued and is now cancelled.
    Cancelled(Task),
    /// The task is running; `cancel_requested` is now set and its attempt should stop.
    Requested(Task),
    /// The task had already finished; nothing changed.
    Finished(Task),
}

/// Which tasks a listing returns: all filters are optional and combine with AND.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub state: Option<TaskState>,
    pub kind: Option<Kind>,
    pub queue: Option<QueueName>,
    /// Only tasks older than this one (the cursor of the previous page).
    pub before: Option<TaskId>,
    pub limit: usize,
}

/// One task store. Implementations: [`sqlite::SqliteStore`].
#[async_trait]
pub trait TaskStore: Send + Sync + 'static {
    /// Applies the migrations that are not yet applied; safe to call on every start.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Stores a new queued task, unless its queue already holds `max_queued` waiting tasks.
    /// On `Ok` the task is durable.
    async fn insert(&self, task: NewTask, max_queued: u64) -> Result<Task, StoreError>;

    async fn get(&self, id: TaskId) -> Result<Option<Task>, StoreError>;

    /// Newest first.
    async fn list(&self, filter: TaskFilter) -> Result<Vec<Task>, StoreError>;

    /// Moves up to `limit` queued tasks to running (highest priority, then oldest first), each
    /// under a fresh lease that expires at `lease_expires_at`; counts the attempt.
    async fn claim(&self, limit: usize, lease_expires_at: Millis) -> Result<Vec<Task>, StoreError>;

    /// Ends the running attempt held under `lease`. `None`: the lease is no longer current.
    async fn finish(
        &self,
        id: TaskId,
        lease: &str,
        outcome: Outcome,
    ) -> Result<Option<Task>, StoreError>;

    async fn cancel(&self, id: TaskId) -> Result<CancelResult, StoreError>;

    /// Gives a running task back to its queue without counting the attempt (shutdown).
    /// A task whose cancel was requested ends cancelled instead.
    async fn release(&self, id: TaskId, lease: &str) -> Result<Option<Task>, StoreError>;

    /// At start-up of a single-node store: every running task belongs to a process that died,
    /// so it goes back to its queue with its attempt counted. Returns how many moved.
    async fn recover_running(&self) -> Result<u64, StoreError>;
}

/// Opens the store a database URL names (without migrating it).
pub async fn open(url: &str) -> Result<Arc<dyn TaskStore>, StoreError> {
    if url.starts_with("sqlite:") {
        let store = sqlite::SqliteStore::open(url).await?;
        return Ok(Arc::new(store));
    }
    Err(StoreError::UnsupportedUrl(url.to_owned()))
}
