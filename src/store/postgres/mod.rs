//! The shared store: PostgreSQL, for several taskd nodes on one database.
//!
//! Every node runs the same code against the same tables; the database arbitrates. Claims take
//! rows with `FOR UPDATE SKIP LOCKED`, so nodes never wait for each other's claims nor take one
//! task twice; every state change is a guarded `UPDATE … WHERE state = 'running' AND lease = $n`
//! (zero rows: this node lost the race); admission control and per-queue concurrency hold
//! across nodes through transaction-scoped advisory locks. Triggers keep per-queue counts and
//! send `LISTEN/NOTIFY` wake-ups, which [`signals`] relays to the engine.
//!
//! Files: [`migrate`] applies the schema; [`rows`] maps rows to tasks and lists them;
//! [`insert`] admits and stores new tasks (reading first what [`admission`] reads, gathered
//! into shared transactions by [`group`]); [`claim`] hands out work; [`attempts`] ends and
//! moves tasks; [`queues`] reads and sets queue settings; [`events`] serves the event log,
//! progress and webhooks; [`signals`] listens.

mod admission;
mod attempts;
mod claim;
mod deps;
mod events;
mod group;
mod insert;
mod keys;
mod migrate;
mod queues;
mod rows;
mod schedules;
mod signals;

pub use attempts::PURGE_FINISHED;
#[cfg(test)]
pub(crate) use rows::COLUMNS;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Postgres;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::access::{KeyRecord, QueueScope};
use crate::store::{
    CancelResult, Changed, ClaimNow, Delivery, DeliveryOutcome, EndedAttempt, EventFilter,
    Inserted, QueueInfo, QueuePatch, Signal, StoreError, Submitted, TaskFilter, TaskStore,
};
use crate::task::{
    Kind, Millis, NewTask, Outcome, Progress, QueueName, Schedule, ScheduleName, Task, TaskEvent,
    TaskId, now_millis,
};

/// How many connections one node opens at most. The workers finish attempts concurrently
/// (one connection each while they write), the dispatcher claims and the API reads; a
/// request beyond this waits for a connection (up to `ACQUIRE_TIMEOUT`) rather than open
/// more. Three nodes stay well inside PostgreSQL's default `max_connections` (100).
const POOL_SIZE: u32 = 16;
/// How long a query waits for a free connection before it fails.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the per-queue count changes are folded into totals.
const FOLD_EVERY: Duration = Duration::from_secs(1);

pub struct PostgresStore {
    pool: PgPool,
    /// Stores submits in shared transactions (group commit).
    inserter: group::Inserter,
    /// The relay of other nodes' notifications; the listener task holds the sender and each
    /// engine that asks for [`TaskStore::signals`] a receiver.
    signals: broadcast::Sender<Signal>,
    /// Fired after every write this node commits and every notification from another node,
    /// so the event tailer reads the log soon after anything changed.
    commits: Arc<Notify>,
    /// Stops the listener, the inserter and the housekeeping when the store is dropped.
    _background: DropGuard,
}

impl PostgresStore {
    /// Connects (failing now if the server cannot be reached) and starts the listener.
    pub async fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let own = Arc::new(signals::Own::new());
        let options: PgConnectOptions = url
            .parse::<PgConnectOptions>()
            .map_err(|_| StoreError::UnsupportedUrl(url.to_owned()))?
            .application_name(&own.application_name);
        let known = Arc::clone(&own);
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(move |conn, _| {
                let known = Arc::clone(&known);
                Box::pin(async move {
                    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                        .fetch_one(conn)
                        .await?;
                    known.add(pid as u32);
                    Ok(())
                })
            })
            // A connection's buffers grow to its largest message (a group commit of large
            // inputs: hundreds of MB) and sqlx keeps them; back in the pool, a connection
            // keeps its default size only. Cheap when they did not grow.
            .after_release(|conn, _| {
                Box::pin(async move {
                    sqlx::Connection::shrink_buffers(conn);
                    Ok(true)
                })
            })
            .connect_with(options.clone())
            .await?;
        let stop = CancellationToken::new();
        let commits = Arc::new(Notify::new());
        let signals = signals::start(
            options,
            Arc::clone(&own),
            Arc::clone(&commits),
            stop.clone(),
        )
        .await?;
        tokio::spawn(housekeep_every(pool.clone(), own, stop.clone()));
        let inserter = group::Inserter::start(pool.clone(), stop.clone());
        Ok(PostgresStore {
            pool,
            inserter,
            signals,
            commits,
            _background: stop.drop_guard(),
        })
    }

    async fn conn(&self) -> Result<PoolConnection<Postgres>, StoreError> {
        Ok(self.pool.acquire().await?)
    }

    /// Passes a write's answer on, telling the event tailer first when it committed.
    fn wrote<T>(&self, answer: Result<T, StoreError>) -> Result<T, StoreError> {
        if answer.is_ok() {
            self.commits.notify_one();
        }
        answer
    }
}

/// Now and then, until the store goes: folds the count changes (one node at a time, see
/// `queues::fold_counts`) and refreshes which connections are this node's own.
async fn housekeep_every(pool: PgPool, own: Arc<signals::Own>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(FOLD_EVERY) => {}
            () = stop.cancelled() => return,
        }
        if let Err(error) = own.refresh(&pool).await {
            tracing::warn!(%error, "cannot list this node's connections");
        }
        let folded = async {
            let mut conn = pool.acquire().await?;
            queues::fold_counts(&mut conn).await
        };
        if let Err(error) = folded.await {
            tracing::warn!(%error, "cannot fold the queue counts");
        }
    }
}

#[async_trait]
impl TaskStore for PostgresStore {
    fn signals(&self) -> Option<broadcast::Receiver<Signal>> {
        Some(self.signals.subscribe())
    }

    /// Other nodes share the database: a running task at start-up may be theirs and alive.
    fn single_node(&self) -> bool {
        false
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        migrate::migrate(&mut *self.conn().await?).await
    }

    async fn insert(
        &self,
        tasks: Vec<NewTask>,
        default_max_queued: u64,
    ) -> Result<Vec<Inserted>, StoreError> {
        let submitted = self.inserter.insert(tasks, default_max_queued, None).await;
        self.wrote(submitted.map(|submitted| submitted.inserted))
    }

    async fn insert_claiming(
        &self,
        tasks: Vec<NewTask>,
        default_max_queued: u64,
        claim: ClaimNow,
    ) -> Result<Submitted, StoreError> {
        self.wrote(
            self.inserter
                .insert(tasks, default_max_queued, Some(claim))
                .await,
        )
    }

    async fn get(&self, id: TaskId) -> Result<Option<Task>, StoreError> {
        rows::task_get(&mut *self.conn().await?, id).await
    }

    async fn list(&self, filter: TaskFilter) -> Result<Vec<Task>, StoreError> {
        rows::task_list(&mut *self.conn().await?, &filter).await
    }

    async fn claim(&self, limit: usize, lease_expires_at: Millis) -> Result<Vec<Task>, StoreError> {
        self.wrote(claim::task_claim(&mut *self.conn().await?, limit, lease_expires_at).await)
    }

    async fn finish(
        &self,
        id: TaskId,
        lease: &str,
        outcome: Outcome,
    ) -> Result<Option<Task>, StoreError> {
        let ended = EndedAttempt {
            id,
            lease: lease.to_owned(),
            outcome,
            ended_at: now_millis(),
        };
        let ended = attempts::task_finish_many(&mut *self.conn().await?, vec![ended]).await;
        self.wrote(ended.map(|ended| ended.into_iter().next().flatten()))
    }

    async fn finish_many(
        &self,
        attempts: Vec<EndedAttempt>,
    ) -> Result<Vec<Option<Task>>, StoreError> {
        self.wrote(attempts::task_finish_many(&mut *self.conn().await?, attempts).await)
    }

    async fn renew(
        &self,
        leases: Vec<(TaskId, String)>,
        lease_expires_at: Millis,
    ) -> Result<u64, StoreError> {
        self.wrote(attempts::task_renew(&mut *self.conn().await?, &leases, lease_expires_at).await)
    }

    async fn renew_one(
        &self,
        id: TaskId,
        lease: &str,
        lease_expires_at: Millis,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        self.wrote(attempts::task_renew_one(&mut conn, id, lease, lease_expires_at).await)
    }

    async fn cancel(&self, id: TaskId) -> Result<CancelResult, StoreError> {
        self.wrote(attempts::task_cancel(&mut *self.conn().await?, id).await)
    }

    async fn release(&self, id: TaskId, lease: &str) -> Result<Option<Task>, StoreError> {
        self.wrote(attempts::task_release(&mut *self.conn().await?, id, lease).await)
    }

    async fn get_many(&self, ids: Vec<TaskId>) -> Result<Vec<Task>, StoreError> {
        rows::task_get_many(&mut *self.conn().await?, &ids).await
    }

    async fn recover_running(&self) -> Result<Vec<Task>, StoreError> {
        self.wrote(attempts::task_lose_running(&mut *self.conn().await?, None).await)
    }

    async fn rescue_expired(&self, now: Millis) -> Result<Vec<Task>, StoreError> {
        self.wrote(attempts::task_lose_running(&mut *self.conn().await?, Some(now)).await)
    }

    async fn promote_due(&self, now: Millis) -> Result<u64, StoreError> {
        self.wrote(attempts::task_promote_due(&mut *self.conn().await?, now).await)
    }

    async fn next_due(&self) -> Result<Option<Millis>, StoreError> {
        attempts::task_next_due(&mut *self.conn().await?).await
    }

    async fn retry(&self, id: TaskId) -> Result<Changed, StoreError> {
        self.wrote(attempts::task_retry(&mut *self.conn().await?, id).await)
    }

    async fn delete(&self, id: TaskId) -> Result<Changed, StoreError> {
        self.wrote(attempts::task_delete(&mut *self.conn().await?, id).await)
    }

    async fn purge_finished(&self, before: Millis, limit: usize) -> Result<u64, StoreError> {
        self.wrote(attempts::task_purge_finished(&mut *self.conn().await?, before, limit).await)
    }

    async fn queues(&self) -> Result<Vec<QueueInfo>, StoreError> {
        queues::queue_list(&mut *self.conn().await?).await
    }

    async fn remote_queues(&self) -> Result<Vec<QueueName>, StoreError> {
        queues::remote_queues(&mut *self.conn().await?).await
    }

    async fn queue(&self, name: QueueName) -> Result<QueueInfo, StoreError> {
        queues::queue_get(&mut *self.conn().await?, name).await
    }

    async fn update_queue(
        &self,
        name: QueueName,
        patch: QueuePatch,
    ) -> Result<QueueInfo, StoreError> {
        self.wrote(queues::queue_update(&mut *self.conn().await?, name, patch).await)
    }

    async fn claim_queue(
        &self,
        queue: QueueName,
        kinds: Option<Vec<Kind>>,
        limit: usize,
        lease_expires_at: Millis,
    ) -> Result<Vec<Task>, StoreError> {
        let mut conn = self.conn().await?;
        let kinds = kinds.as_deref();
        self.wrote(claim::task_claim_queue(&mut conn, &queue, kinds, limit, lease_expires_at).await)
    }

    fn commits(&self) -> Arc<Notify> {
        Arc::clone(&self.commits)
    }

    async fn events_after(
        &self,
        after: i64,
        filter: EventFilter,
        limit: usize,
    ) -> Result<Vec<TaskEvent>, StoreError> {
        events::events_after(&mut *self.conn().await?, after, &filter, limit).await
    }

    async fn event_bounds(&self) -> Result<Option<(i64, i64)>, StoreError> {
        events::event_bounds(&mut *self.conn().await?).await
    }

    async fn record_progress(
        &self,
        updates: Vec<(TaskId, String, Progress)>,
    ) -> Result<u64, StoreError> {
        self.wrote(events::record_progress(&mut *self.conn().await?, &updates).await)
    }

    async fn deliveries_due(&self, now: Millis, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        events::deliveries_due(&mut *self.conn().await?, now, limit).await
    }

    async fn delivery_tried(&self, id: String, outcome: DeliveryOutcome) -> Result<(), StoreError> {
        events::delivery_tried(&mut *self.conn().await?, &id, &outcome).await
    }

    async fn key_insert(&self, key: KeyRecord) -> Result<(), StoreError> {
        keys::key_insert(&mut *self.conn().await?, &key).await
    }

    async fn keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        keys::keys(&mut *self.conn().await?).await
    }

    async fn key_by_hash(&self, hash: String) -> Result<Option<KeyRecord>, StoreError> {
        keys::key_by_hash(&mut *self.conn().await?, &hash).await
    }

    async fn key_revoke(&self, name: String, at: Millis) -> Result<bool, StoreError> {
        keys::key_revoke(&mut *self.conn().await?, &name, at).await
    }

    async fn keys_exist(&self) -> Result<bool, StoreError> {
        keys::keys_exist(&mut *self.conn().await?).await
    }

    async fn key_used(&self, hash: String, at: Millis) -> Result<(), StoreError> {
        keys::key_used(&mut *self.conn().await?, &hash, at).await
    }

    async fn schedule_put(&self, schedule: Schedule) -> Result<Schedule, StoreError> {
        schedules::schedule_put(&mut *self.conn().await?, &schedule).await
    }

    async fn schedule_get(&self, name: ScheduleName) -> Result<Option<Schedule>, StoreError> {
        schedules::schedule_get(&mut *self.conn().await?, &name).await
    }

    async fn schedules(
        &self,
        after: Option<ScheduleName>,
        limit: usize,
        queues: QueueScope,
    ) -> Result<Vec<Schedule>, StoreError> {
        schedules::schedule_list(&mut *self.conn().await?, after.as_ref(), limit, &queues).await
    }

    async fn schedule_delete(&self, name: ScheduleName) -> Result<bool, StoreError> {
        schedules::schedule_delete(&mut *self.conn().await?, &name).await
    }

    async fn schedules_due(&self, now: Millis, limit: usize) -> Result<Vec<Schedule>, StoreError> {
        schedules::schedules_due(&mut *self.conn().await?, now, limit).await
    }

    async fn schedule_next_at(&self) -> Result<Option<Millis>, StoreError> {
        schedules::schedule_next_at(&mut *self.conn().await?).await
    }

    async fn schedule_fired(
        &self,
        name: ScheduleName,
        expected_next_at: Millis,
        next_at: Millis,
        fired: Option<(TaskId, Millis)>,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        schedules::schedule_fired(&mut conn, &name, expected_next_at, next_at, fired).await
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::PoolClosed => StoreError::Closed,
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
                StoreError::Corrupt(error.to_string())
            }
            sqlx::Error::Database(ref db) if db.code().is_some_and(|c| refused_for_space(&c)) => {
                StoreError::StorageFull(error.to_string())
            }
            other => StoreError::backend(other),
        }
    }
}

/// Whether a SQLSTATE says the server refused for want of space: `53100` disk_full, or the
/// bare class code `53000` insufficient_resources. The rest of class 53 (out of memory, too
/// many connections, a configured limit) is no question of space, and stays a backend error.
fn refused_for_space(sqlstate: &str) -> bool {
    matches!(sqlstate, "53100" | "53000")
}

#[cfg(test)]
mod tests {
    use super::refused_for_space;

    #[test]
    fn disk_full_sqlstates_are_space_and_others_are_not() {
        assert!(refused_for_space("53100"));
        assert!(refused_for_space("53000"));
        for other in ["53200", "53300", "53400", "23505", "22021", "08006"] {
            assert!(!refused_for_space(other), "{other}");
        }
    }
}
