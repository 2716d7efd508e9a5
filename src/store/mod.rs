//! The storage seam: [`TaskStore`] names every operation the engine needs, by verb.
//!
//! Implementations own their SQL and their dialect; nothing above this module writes a query.
//! Every state change is a guarded update ("only if still running under this lease"): zero rows
//! means the caller lost a race, which is a normal answer (`Ok(None)`), not an error.
//! The store knows nothing of HTTP.

mod keys;
pub mod migrations;
pub(crate) mod parents;
pub mod postgres;
pub(crate) mod schedules;
pub mod space;
pub(crate) mod sql;
pub mod sqlite;
pub(crate) mod starts;
mod watched;

pub use watched::Watched;

use std::sync::Arc;

use async_trait::async_trait;

use crate::access::{KeyRecord, QueueScope};
use crate::task::{
    Callback, Kind, Millis, NewTask, Outcome, Progress, QueueName, Schedule, ScheduleName, Task,
    TaskEvent, TaskId, TaskState,
};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Admission control refused the task; nothing was written.
    #[error("queue `{queue}` holds {limit} waiting tasks, its limit")]
    QueueFull { queue: QueueName, limit: u64 },
    /// A parent named by a submission does not exist (`after` or `input_from`).
    #[error("no task has the id {0}")]
    UnknownParent(TaskId),
    /// The idempotency key was used before with a different request.
    #[error("idempotency key `{0}` was used with a different request")]
    IdempotencyConflict(String),
    #[error(
        "unsupported database URL `{0}` (expected sqlite://PATH, sqlite::memory: or postgres://…)"
    )]
    UnsupportedUrl(String),
    /// The store was shut down (or its writer died); the operation did not happen.
    #[error("the store is closed")]
    Closed,
    /// The database refused a write for want of space (a full disk, SQLite's page limit,
    /// PostgreSQL's `disk_full`); nothing of that write was stored. Reads still work.
    #[error("the database is out of space: {0}")]
    StorageFull(String),
    /// The database failed; the details are for the log, not for clients. The cause is kept
    /// as the error's `source` (shared, not boxed alone, because one failed group commit
    /// answers every write of its batch with a clone).
    #[error("database error: {0}")]
    Backend(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// A stored row could not be read back as a task.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// An API key not revoked already has this name.
    #[error("a key named `{0}` exists; revoke it first or choose another name")]
    KeyNameTaken(String),
    /// A migration file differs from the one the database applied: the server must not
    /// start on a schema no file describes.
    #[error(
        "migration {version} ({file}) was edited after this database applied it \
         (recorded checksum {recorded}, the file's is {found}): restore the file; \
         a change to the schema goes in a new migration"
    )]
    MigrationEdited {
        version: i64,
        file: String,
        recorded: String,
        found: String,
    },
    /// This store does not implement the operation yet.
    #[error("this store does not support {0} yet")]
    Unsupported(&'static str),
}

impl StoreError {
    /// A database failure with its cause: a driver's error, or a sentence for a failure
    /// found by our own code.
    pub fn backend(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
        StoreError::Backend(Arc::from(cause.into()))
    }

    /// Whether every write would fail alike now (the store is closed or out of space), so
    /// retrying the parts of a combined write one by one cannot save any of them.
    pub fn is_shared(&self) -> bool {
        matches!(self, StoreError::Closed | StoreError::StorageFull(_))
    }
}

/// What an insert did with one submission.
#[derive(Debug, Clone, PartialEq)]
pub struct Inserted {
    pub task: Task,
    /// The idempotency key was used before with the same request: `task` is the first one.
    pub replayed: bool,
    /// How many tasks waited in the queue before this one (for a `Retry-After` estimate).
    pub waiting_before: u64,
}

/// How many more tasks a growing claim may take, asked as it starts (see
/// [`TaskStore::claim_growing`]). It runs wherever the claim runs (SQLite: on the writer
/// thread), so it only counts what is free and never waits.
pub type ClaimMore = Box<dyn FnOnce() -> usize + Send>;

/// A claim made in a submit's own transaction (see [`TaskStore::insert_claiming`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimNow {
    /// At most this many tasks start: the local pool's workers held free for them.
    pub limit: usize,
    pub lease_expires_at: Millis,
}

/// What a submit that may claim stored and started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Submitted {
    /// As `insert` answers them; a task of the call that started is shown as it is now,
    /// running.
    pub inserted: Vec<Inserted>,
    /// The tasks the claim moved to running (the call's own first), for the local pool's
    /// workers: never more than the call's `ClaimNow::limit`.
    pub started: Vec<Task>,
}

/// What a cancel found and did, decided atomically in the store.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelResult {
    NotFound,
    /// The task was queued or scheduled and is now cancelled.
    Cancelled(Task),
    /// The task is running; `cancel_requested` is now set and its attempt should stop.
    Requested(Task),
    /// The task had already finished; nothing changed.
    Finished(Task),
}

/// What a retry or a delete found and did.
#[derive(Debug, Clone, PartialEq)]
pub enum Changed {
    NotFound,
    Done(Option<Task>),
    /// The task is in a state the operation does not apply to; nothing changed.
    WrongState(Task),
    /// A delete of a finished task that waiting tasks name as a parent; nothing changed.
    HasDependents(Task),
}

/// An attempt that ended and waits to be recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct EndedAttempt {
    pub id: TaskId,
    pub lease: String,
    pub outcome: Outcome,
    /// When the attempt ended: the task's `finished_at` if that was its end.
    pub ended_at: Millis,
}

/// Which tasks a listing returns: all filters are optional and combine with AND.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub state: Option<TaskState>,
    pub kind: Option<Kind>,
    pub queue: Option<QueueName>,
    /// `(key, value)`: only tasks carrying this label.
    pub label: Option<(String, String)>,
    /// Only tasks that name this task in their `after` (its children).
    pub parent: Option<TaskId>,
    /// Only tasks older than this one (the cursor of the previous page).
    pub before: Option<TaskId>,
    pub limit: usize,
    /// Only tasks of the queues the caller may see (a queue-scoped key).
    pub queues: QueueScope,
}

/// A queue's settings and what it holds.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct QueueInfo {
    pub name: QueueName,
    pub paused: bool,
    /// At most this many running at once from this queue; `None`: the global pool decides.
    pub concurrency: Option<u32>,
    /// Overrides the server's `--max-queued` for this queue.
    pub max_queued: Option<u64>,
    /// The callback of tasks that bring none.
    pub callback: Option<Callback>,
    /// The queue's tasks by the state of their completion webhook.
    pub callbacks: CallbackCounts,
    /// Served by remote workers that lease over HTTP; local handlers never take from it.
    pub remote: bool,
    /// At most so many attempts start per window, across nodes; `None`: no limit.
    pub rate: Option<RateLimit>,
    /// Tasks per state (every state present, zeros included).
    pub counts: std::collections::BTreeMap<TaskState, u64>,
    /// When the oldest queued task was submitted.
    pub oldest_queued_at: Option<Millis>,
    /// How many tasks finished in the last 60 seconds.
    pub finished_last_minute: u64,
}

/// A queue's rate limit: at most `limit` attempts start in any window of `per_ms`
/// milliseconds (local claims and remote leases alike, across all nodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RateLimit {
    pub limit: u32,
    pub per_ms: u64,
}

/// How many of a queue's tasks have their completion webhook in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CallbackCounts {
    pub pending: u64,
    pub delivered: u64,
    pub failed: u64,
}

/// A change of queue settings; `None` leaves a setting as it is, `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueuePatch {
    pub paused: Option<bool>,
    pub concurrency: Option<Option<u32>>,
    pub max_queued: Option<Option<u64>>,
    /// The default callback of the queue's tasks.
    pub callback: Option<Option<Callback>>,
    pub remote: Option<bool>,
    pub rate: Option<Option<RateLimit>>,
}

/// A completion webhook due for a (re)try.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The `webhook-id`: the same on every try.
    pub id: String,
    pub task: Task,
    pub url: String,
    pub secret: Option<String>,
    /// Tries made so far.
    pub attempts: u32,
}

/// How a delivery try went.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryOutcome {
    Delivered {
        status: u16,
    },
    /// Try again at `next_at`.
    Retry {
        status: Option<u16>,
        error: String,
        next_at: Millis,
    },
    /// No more tries.
    GaveUp {
        status: Option<u16>,
        error: String,
    },
}

/// Which events a read of the log returns.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub task: Option<TaskId>,
}

/// News from other processes sharing the database, for stores that several nodes share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// Tasks became claimable (submitted, promoted, released) somewhere.
    Work,
    /// A task reached a terminal state somewhere.
    Finished(TaskId),
    /// A cancel was asked for a running task somewhere: the node running it stops it.
    Cancel(TaskId),
}

/// One task store. Implementations: [`sqlite::SqliteStore`] (one node) and
/// [`postgres::PostgresStore`] (several nodes on one database).
#[async_trait]
pub trait TaskStore: Send + Sync + 'static {
    /// Signals from other nodes, for a store that several nodes share; `None` (the default)
    /// for a single-node store, whose only writer is this process.
    fn signals(&self) -> Option<tokio::sync::broadcast::Receiver<Signal>> {
        None
    }

    /// Whether this process is the only one using the database, so every running task at
    /// start-up is an orphan of a dead process (see `recover_running`).
    fn single_node(&self) -> bool {
        true
    }

    /// Applies the migrations that are not yet applied; safe to call on every start.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Stores new tasks in one transaction — all or none. A queue holding its limit of waiting
    /// (waiting for parents, queued or scheduled) tasks refuses; `default_max_queued` applies
    /// where the queue has no limit of its own. On `Ok` the tasks are durable.
    ///
    /// A task with parents (`after`, each an id or an earlier item of the same call) starts
    /// `waiting`, or at once queued or cancelled if its parents already decided (see
    /// `task::settle`); a parent that does not exist refuses the call (`UnknownParent`).
    async fn insert(
        &self,
        tasks: Vec<NewTask>,
        default_max_queued: u64,
    ) -> Result<Vec<Inserted>, StoreError>;

    /// Stores new tasks as `insert` does and, in the same transaction, claims as `claim`
    /// does (its fairness, pauses, concurrency and rate limits, remote queues skipped) up to
    /// `claim.limit` tasks, but no more than the call stored `queued`: a call that stored
    /// nothing queued (a replay, a delayed task, a child that waits) starts nothing. One
    /// durable commit covers both, so a task submitted while a worker is free is started
    /// without a commit of its own; the event log still says `queued`, then `running`.
    /// The default stores and starts nothing of what it stored.
    async fn insert_claiming(
        &self,
        tasks: Vec<NewTask>,
        default_max_queued: u64,
        claim: ClaimNow,
    ) -> Result<Submitted, StoreError> {
        let _ = claim;
        Ok(Submitted {
            inserted: self.insert(tasks, default_max_queued).await?,
            started: Vec::new(),
        })
    }

    async fn get(&self, id: TaskId) -> Result<Option<Task>, StoreError>;

    /// Newest first.
    async fn list(&self, filter: TaskFilter) -> Result<Vec<Task>, StoreError>;

    /// Moves up to `limit` queued tasks to running, each under a fresh lease that expires at
    /// `lease_expires_at`, and counts the attempt. Paused queues are skipped, a queue's
    /// `concurrency` is honoured, and the slots are shared fairly between queues with work;
    /// within a queue, highest priority first, then oldest.
    async fn claim(&self, limit: usize, lease_expires_at: Millis) -> Result<Vec<Task>, StoreError>;

    /// As `claim`, but the claim may grow when it runs: `more` is called once, as the claim
    /// starts, and answers how many tasks it may take beyond `limit` (the local pool's
    /// workers that came free while the claim waited for its turn). A store whose claim
    /// runs at once has nothing to wait for; the default claims `limit` and never calls it.
    async fn claim_growing(
        &self,
        limit: usize,
        more: ClaimMore,
        lease_expires_at: Millis,
    ) -> Result<Vec<Task>, StoreError> {
        drop(more);
        self.claim(limit, lease_expires_at).await
    }

    /// Ends the running attempt held under `lease` (success, retry after backoff, failure or
    /// cancellation, as `task::end_attempt` decides). `None`: the lease is no longer current.
    ///
    /// Every write that ends a task (this, `finish_many`, `cancel`, `release`, the rescues)
    /// also settles its waiting children in the same transaction, and theirs in turn
    /// (`task::settle`: released to `queued`, or cancelled as `dependency_failed`); each
    /// settled child is announced as a [`Signal`] once committed.
    async fn finish(
        &self,
        id: TaskId,
        lease: &str,
        outcome: Outcome,
    ) -> Result<Option<Task>, StoreError>;

    /// Ends many running attempts at once (each as `finish` would, `finished_at` being each
    /// one's `ended_at`); the answers are in order. A store may do them in one transaction;
    /// the default does them one by one, at the time of recording.
    async fn finish_many(
        &self,
        attempts: Vec<EndedAttempt>,
    ) -> Result<Vec<Option<Task>>, StoreError> {
        let mut ended = Vec::with_capacity(attempts.len());
        for attempt in attempts {
            ended.push(
                self.finish(attempt.id, &attempt.lease, attempt.outcome)
                    .await?,
            );
        }
        Ok(ended)
    }

    /// Extends the leases of running attempts still held under these tokens (the
    /// maintainer's renewal of this node's attempts). A row another writer holds may be
    /// skipped, not waited for: it is renewed at the next renewal.
    async fn renew(
        &self,
        leases: Vec<(TaskId, String)>,
        lease_expires_at: Millis,
    ) -> Result<u64, StoreError>;

    /// Extends one attempt's lease, as its remote worker's heartbeat asks. Unlike [`renew`],
    /// it waits for a row another writer holds, so `false` means the lease is no longer held
    /// (the attempt ended, was rescued or moved on), never that the row was busy. The default
    /// is [`renew`] of that one lease, right for a store whose `renew` never skips a row; a
    /// store whose `renew` may skip one (PostgreSQL) has its own.
    ///
    /// [`renew`]: TaskStore::renew
    async fn renew_one(
        &self,
        id: TaskId,
        lease: &str,
        lease_expires_at: Millis,
    ) -> Result<bool, StoreError> {
        let renewed = self
            .renew(vec![(id, lease.to_owned())], lease_expires_at)
            .await?;
        Ok(renewed == 1)
    }

    async fn cancel(&self, id: TaskId) -> Result<CancelResult, StoreError>;

    /// Gives a running task back to its queue without counting the attempt (shutdown).
    /// A task whose cancel was requested ends cancelled instead.
    async fn release(&self, id: TaskId, lease: &str) -> Result<Option<Task>, StoreError>;

    /// At start-up of a single-node store: every running task belongs to a process that died.
    /// Each such attempt is lost (`task::lose_attempt`). Returns the tasks as they are now.
    async fn recover_running(&self) -> Result<Vec<Task>, StoreError>;

    /// Running tasks whose lease expired before `now` end their attempt as
    /// `task::expire_attempt` decides: timed out if the lease ran out at the attempt's
    /// deadline (a remote lease is cut there), else lost. Returns them.
    async fn rescue_expired(&self, now: Millis) -> Result<Vec<Task>, StoreError>;

    /// Scheduled tasks due at `now` become queued. Returns how many.
    async fn promote_due(&self, now: Millis) -> Result<u64, StoreError>;

    /// When the next scheduled task is due.
    async fn next_due(&self) -> Result<Option<Millis>, StoreError>;

    /// A failed or cancelled task is queued again, attempts reset, history kept.
    async fn retry(&self, id: TaskId) -> Result<Changed, StoreError>;

    /// Forgets a finished task (and its idempotency key), unless waiting tasks name it as
    /// a parent (`HasDependents`).
    async fn delete(&self, id: TaskId) -> Result<Changed, StoreError>;

    /// Deletes up to `limit` tasks that finished before `before` (but those waiting tasks
    /// name as a parent). Returns how many.
    async fn purge_finished(&self, before: Millis, limit: usize) -> Result<u64, StoreError>;

    /// These tasks, those that exist, in no particular order (a child's parents).
    async fn get_many(&self, ids: Vec<TaskId>) -> Result<Vec<Task>, StoreError> {
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            found.extend(self.get(id).await?);
        }
        Ok(found)
    }

    /// Every queue that has tasks or settings, by name.
    async fn queues(&self) -> Result<Vec<QueueInfo>, StoreError>;

    /// The names of the queues whose tasks remote workers lease (`remote`), by name: what
    /// each node reloads every second. [`TaskStore::queues`] would also count every queue's
    /// tasks, finished in the last minute among them (a walk over that many rows).
    async fn remote_queues(&self) -> Result<Vec<QueueName>, StoreError>;

    async fn queue(&self, name: QueueName) -> Result<QueueInfo, StoreError>;

    async fn update_queue(
        &self,
        name: QueueName,
        patch: QueuePatch,
    ) -> Result<QueueInfo, StoreError>;

    /// Leases up to `limit` queued tasks of one queue (of these kinds, if given) to a remote
    /// worker: like `claim`, under one fresh lease expiring at `lease_expires_at`, or at the
    /// attempt's deadline (`started_at + timeout_ms`) if that comes first.
    async fn claim_queue(
        &self,
        queue: QueueName,
        kinds: Option<Vec<Kind>>,
        limit: usize,
        lease_expires_at: Millis,
    ) -> Result<Vec<Task>, StoreError> {
        let _ = (queue, kinds, limit, lease_expires_at);
        Err(StoreError::Unsupported("remote workers"))
    }

    // The observer's operations. They have defaults that refuse, so a store can grow into
    // them; both shipped stores implement them, and the conformance suite holds them to it.

    /// Fired after every commit this process makes, so the event tailer reads the log.
    fn commits(&self) -> Arc<tokio::sync::Notify> {
        Arc::new(tokio::sync::Notify::new())
    }

    /// Events after `after` (a `seq`), oldest first, at most `limit`.
    async fn events_after(
        &self,
        after: i64,
        filter: EventFilter,
        limit: usize,
    ) -> Result<Vec<TaskEvent>, StoreError> {
        let _ = (after, filter, limit);
        Err(StoreError::Unsupported("events"))
    }

    /// The oldest retained event's `seq`, and the newest.
    async fn event_bounds(&self) -> Result<Option<(i64, i64)>, StoreError> {
        Err(StoreError::Unsupported("events"))
    }

    /// Records the latest progress of running attempts (guarded by their leases).
    async fn record_progress(
        &self,
        updates: Vec<(TaskId, String, Progress)>,
    ) -> Result<u64, StoreError> {
        let _ = updates;
        Err(StoreError::Unsupported("progress"))
    }

    /// Webhook deliveries due at `now`, at most `limit`.
    async fn deliveries_due(&self, now: Millis, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let _ = (now, limit);
        Err(StoreError::Unsupported("webhooks"))
    }

    /// Records how a delivery try went (and the task's `callback_status`).
    async fn delivery_tried(&self, id: String, outcome: DeliveryOutcome) -> Result<(), StoreError> {
        let _ = (id, outcome);
        Err(StoreError::Unsupported("webhooks"))
    }

    // API keys: hashed, never the secret (see `access`).

    /// Stores a new key; `KeyNameTaken` if a key not revoked has its name.
    async fn key_insert(&self, key: KeyRecord) -> Result<(), StoreError>;

    /// Every key, revoked ones included, oldest first.
    async fn keys(&self) -> Result<Vec<KeyRecord>, StoreError>;

    /// The key whose secret hashes to `hash`, revoked or not.
    async fn key_by_hash(&self, hash: String) -> Result<Option<KeyRecord>, StoreError>;

    /// Revokes the key not yet revoked named `name`; `false` if there is none.
    async fn key_revoke(&self, name: String, at: Millis) -> Result<bool, StoreError>;

    /// Whether any key was ever created (revoked and expired ones count: revoking the last
    /// key must not open the server).
    async fn keys_exist(&self) -> Result<bool, StoreError>;

    /// Records that the key was used at `at` (only ever moves `last_used_at` forward).
    async fn key_used(&self, hash: String, at: Millis) -> Result<(), StoreError>;

    // Schedules (see `task::Schedule`); the engine's maintainer fires them.

    /// Creates the schedule, or replaces the one of its name: a replace keeps the stored
    /// `created_at` and last run, and takes everything else. Returns it as stored.
    async fn schedule_put(&self, schedule: Schedule) -> Result<Schedule, StoreError>;

    async fn schedule_get(&self, name: ScheduleName) -> Result<Option<Schedule>, StoreError>;

    /// By name, those after `after`, at most `limit`, whose task goes to a queue in `queues`.
    async fn schedules(
        &self,
        after: Option<ScheduleName>,
        limit: usize,
        queues: QueueScope,
    ) -> Result<Vec<Schedule>, StoreError>;

    /// `false` if there was none.
    async fn schedule_delete(&self, name: ScheduleName) -> Result<bool, StoreError>;

    /// Unpaused schedules whose `next_at` is at or before `now`, soonest first, at most `limit`.
    async fn schedules_due(&self, now: Millis, limit: usize) -> Result<Vec<Schedule>, StoreError>;

    /// The earliest `next_at` of the unpaused schedules.
    async fn schedule_next_at(&self) -> Result<Option<Millis>, StoreError>;

    /// Moves the schedule's `next_at` from `expected_next_at` to `next_at`, recording the
    /// slot fired and its task if one was. `false`: another pass (a node, a `PUT`) moved it
    /// first, which is a normal outcome.
    async fn schedule_fired(
        &self,
        name: ScheduleName,
        expected_next_at: Millis,
        next_at: Millis,
        fired: Option<(TaskId, Millis)>,
    ) -> Result<bool, StoreError>;
}

/// The fairness rule of every claim: shares `slots` between queues one at a time,
/// round-robin from a random queue, each up to its `rooms` entry (waiting tasks, capped by
/// its concurrency), so with work in several queues none gets more than its fair share.
pub(crate) fn fair_shares(rooms: &[u64], slots: usize) -> Vec<u64> {
    let mut shares = vec![0u64; rooms.len()];
    if rooms.is_empty() {
        return shares;
    }
    let start = fastrand::usize(..rooms.len());
    let mut left = slots;
    let mut progressed = true;
    while left > 0 && progressed {
        progressed = false;
        for offset in 0..rooms.len() {
            let i = (start + offset) % rooms.len();
            if left > 0 && shares[i] < rooms[i] {
                shares[i] += 1;
                left -= 1;
                progressed = true;
            }
        }
    }
    shares
}

/// Opens the store a database URL names (without migrating it).
pub async fn open(url: &str) -> Result<Arc<dyn TaskStore>, StoreError> {
    if url.starts_with("sqlite:") {
        let store = sqlite::SqliteStore::open(url).await?;
        return Ok(Arc::new(store));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = postgres::PostgresStore::open(url).await?;
        return Ok(Arc::new(store));
    }
    Err(StoreError::UnsupportedUrl(url.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::fair_shares;

    #[test]
    fn slots_are_shared_fairly_and_within_room() {
        let rooms = [100, 1, 100];
        let shares = fair_shares(&rooms, 7);
        assert_eq!(shares.iter().sum::<u64>(), 7);
        assert_eq!(shares[1], 1);
        assert!(shares[0].abs_diff(shares[2]) <= 1, "{shares:?}");
        assert_eq!(fair_shares(&rooms, 1000), vec![100, 1, 100]);
        assert!(fair_shares(&[], 5).is_empty());
    }

    /// Both stores read a task's columns by position: their lists name the same columns in
    /// the same order (PostgreSQL's casts some to text and names them back with `AS`).
    #[test]
    fn both_stores_select_a_task_s_columns_in_one_order() {
        let names = |columns: &str| -> Vec<String> {
            columns
                .split(',')
                .map(|column| column.rsplit(' ').next().unwrap().trim().to_owned())
                .collect()
        };
        let sqlite = names(super::sqlite::COLUMNS);
        assert_eq!(sqlite.len(), 32);
        assert_eq!(names(super::postgres::COLUMNS), sqlite);
    }
}
