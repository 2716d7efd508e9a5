//! [`Watched`]: a store that tells its [`Space`] how each write went, so readiness and the
//! log follow a full disk for every backend alike, without a line in either backend.
//!
//! Every operation is passed through unchanged. A write counts as "wrote" only if it stored
//! something (a task inserted, an attempt ended, a row changed): a write that found nothing
//! to do never touched the disk, so it cannot tell that space is back.
//!
//! The writes that stored something are also counted by purpose
//! (`taskd_store_commits_total`): each is one transaction (on SQLite, concurrent ones share
//! one group commit, so there it is an upper bound of the fsyncs).

use std::sync::Arc;

use async_trait::async_trait;

use super::space::Space;
use super::{
    CancelResult, Changed, ClaimMore, ClaimNow, Delivery, DeliveryOutcome, EndedAttempt,
    EventFilter, Inserted, QueueInfo, QueuePatch, Signal, StoreError, Submitted, TaskFilter,
    TaskStore,
};
use crate::access::{KeyRecord, QueueScope};
use crate::metrics;
use crate::task::{
    Kind, Millis, NewTask, Outcome, Progress, QueueName, Schedule, ScheduleName, Task, TaskEvent,
    TaskId,
};

pub struct Watched {
    store: Arc<dyn TaskStore>,
    space: Arc<Space>,
}

impl Watched {
    pub fn new(store: Arc<dyn TaskStore>, space: Arc<Space>) -> Watched {
        Watched { store, space }
    }

    /// Notes a write's outcome in the space watch and, if it stored something, counts its
    /// commit under `purpose`.
    fn note<T>(
        &self,
        outcome: Result<T, StoreError>,
        purpose: &'static str,
        wrote: impl FnOnce(&T) -> bool,
    ) -> Result<T, StoreError> {
        match &outcome {
            Ok(value) => {
                let wrote = wrote(value);
                if wrote {
                    metrics::store_commit(purpose);
                }
                self.space.note(None, wrote)
            }
            Err(error) => self.space.note(Some(error), false),
        }
        outcome
    }
}

fn changed(changed: &Changed) -> bool {
    matches!(changed, Changed::Done(_))
}

#[async_trait]
impl TaskStore for Watched {
    fn signals(&self) -> Option<tokio::sync::broadcast::Receiver<Signal>> {
        self.store.signals()
    }

    fn single_node(&self) -> bool {
        self.store.single_node()
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let outcome = self.store.migrate().await;
        self.note(outcome, "migrate", |()| false)
    }

    async fn insert(
        &self,
        tasks: Vec<NewTask>,
        default_max_queued: u64,
    ) -> Result<Vec<Inserted>, StoreError> {
        let outcome = self.store.insert(tasks, default_max_queued).await;
        self.note(outcome, "submit", |inserted| {
            inserted.iter().any(|i| !i.replayed)
        })
    }

    async fn insert_claiming(
        &self,
        tasks: Vec<NewTask>,
        default_max_queued: u64,
        claim: ClaimNow,
    ) -> Result<Submitted, StoreError> {
        let outcome = self
            .store
            .insert_claiming(tasks, default_max_queued, claim)
            .await;
        self.note(outcome, "submit", |submitted| {
            submitted.inserted.iter().any(|i| !i.replayed)
        })
    }

    async fn get(&self, id: TaskId) -> Result<Option<Task>, StoreError> {
        self.store.get(id).await
    }

    async fn list(&self, filter: TaskFilter) -> Result<Vec<Task>, StoreError> {
        self.store.list(filter).await
    }

    async fn claim(&self, limit: usize, lease_expires_at: Millis) -> Result<Vec<Task>, StoreError> {
        let outcome = self.store.claim(limit, lease_expires_at).await;
        self.note(outcome, "claim", |claimed| !claimed.is_empty())
    }

    async fn claim_growing(
        &self,
        limit: usize,
        more: ClaimMore,
        lease_expires_at: Millis,
    ) -> Result<Vec<Task>, StoreError> {
        let outcome = self
            .store
            .claim_growing(limit, more, lease_expires_at)
            .await;
        self.note(outcome, "claim", |claimed| !claimed.is_empty())
    }

    async fn finish(
        &self,
        id: TaskId,
        lease: &str,
        outcome: Outcome,
    ) -> Result<Option<Task>, StoreError> {
        let outcome = self.store.finish(id, lease, outcome).await;
        self.note(outcome, "finish", Option::is_some)
    }

    async fn finish_many(
        &self,
        attempts: Vec<EndedAttempt>,
    ) -> Result<Vec<Option<Task>>, StoreError> {
        let outcome = self.store.finish_many(attempts).await;
        self.note(outcome, "finish", |ended| ended.iter().any(Option::is_some))
    }

    async fn renew(
        &self,
        leases: Vec<(TaskId, String)>,
        lease_expires_at: Millis,
    ) -> Result<u64, StoreError> {
        let outcome = self.store.renew(leases, lease_expires_at).await;
        self.note(outcome, "renew", |&renewed| renewed > 0)
    }

    async fn renew_one(
        &self,
        id: TaskId,
        lease: &str,
        lease_expires_at: Millis,
    ) -> Result<bool, StoreError> {
        let outcome = self.store.renew_one(id, lease, lease_expires_at).await;
        self.note(outcome, "renew", |&renewed| renewed)
    }

    async fn cancel(&self, id: TaskId) -> Result<CancelResult, StoreError> {
        let outcome = self.store.cancel(id).await;
        self.note(outcome, "cancel", |cancel| {
            matches!(
                cancel,
                CancelResult::Cancelled(_) | CancelResult::Requested(_)
            )
        })
    }

    async fn release(&self, id: TaskId, lease: &str) -> Result<Option<Task>, StoreError> {
        let outcome = self.store.release(id, lease).await;
        self.note(outcome, "release", Option::is_some)
    }

    async fn recover_running(&self) -> Result<Vec<Task>, StoreError> {
        let outcome = self.store.recover_running().await;
        self.note(outcome, "recover", |recovered| !recovered.is_empty())
    }

    async fn rescue_expired(&self, now: Millis) -> Result<Vec<Task>, StoreError> {
        let outcome = self.store.rescue_expired(now).await;
        self.note(outcome, "rescue", |rescued| !rescued.is_empty())
    }

    async fn promote_due(&self, now: Millis) -> Result<u64, StoreError> {
        let outcome = self.store.promote_due(now).await;
        self.note(outcome, "promote", |&promoted| promoted > 0)
    }

    async fn next_due(&self) -> Result<Option<Millis>, StoreError> {
        self.store.next_due().await
    }

    async fn retry(&self, id: TaskId) -> Result<Changed, StoreError> {
        let outcome = self.store.retry(id).await;
        self.note(outcome, "retry", changed)
    }

    async fn delete(&self, id: TaskId) -> Result<Changed, StoreError> {
        let outcome = self.store.delete(id).await;
        self.note(outcome, "delete", changed)
    }

    async fn purge_finished(&self, before: Millis, limit: usize) -> Result<u64, StoreError> {
        let outcome = self.store.purge_finished(before, limit).await;
        self.note(outcome, "purge", |&purged| purged > 0)
    }

    async fn queues(&self) -> Result<Vec<QueueInfo>, StoreError> {
        self.store.queues().await
    }

    async fn remote_queues(&self) -> Result<Vec<QueueName>, StoreError> {
        self.store.remote_queues().await
    }

    async fn queue(&self, name: QueueName) -> Result<QueueInfo, StoreError> {
        self.store.queue(name).await
    }

    async fn update_queue(
        &self,
        name: QueueName,
        patch: QueuePatch,
    ) -> Result<QueueInfo, StoreError> {
        let outcome = self.store.update_queue(name, patch).await;
        self.note(outcome, "queue", |_| true)
    }

    async fn claim_queue(
        &self,
        queue: QueueName,
        kinds: Option<Vec<Kind>>,
        limit: usize,
        lease_expires_at: Millis,
    ) -> Result<Vec<Task>, StoreError> {
        let outcome = self
            .store
            .claim_queue(queue, kinds, limit, lease_expires_at)
            .await;
        self.note(outcome, "lease", |claimed| !claimed.is_empty())
    }

    fn commits(&self) -> Arc<tokio::sync::Notify> {
        self.store.commits()
    }

    async fn events_after(
        &self,
        after: i64,
        filter: EventFilter,
        limit: usize,
    ) -> Result<Vec<TaskEvent>, StoreError> {
        self.store.events_after(after, filter, limit).await
    }

    async fn event_bounds(&self) -> Result<Option<(i64, i64)>, StoreError> {
        self.store.event_bounds().await
    }

    async fn record_progress(
        &self,
        updates: Vec<(TaskId, String, Progress)>,
    ) -> Result<u64, StoreError> {
        let outcome = self.store.record_progress(updates).await;
        self.note(outcome, "progress", |&recorded| recorded > 0)
    }

    async fn deliveries_due(&self, now: Millis, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        self.store.deliveries_due(now, limit).await
    }

    async fn delivery_tried(&self, id: String, outcome: DeliveryOutcome) -> Result<(), StoreError> {
        let outcome = self.store.delivery_tried(id, outcome).await;
        self.note(outcome, "delivery", |()| true)
    }

    async fn key_insert(&self, key: KeyRecord) -> Result<(), StoreError> {
        let outcome = self.store.key_insert(key).await;
        self.note(outcome, "key", |()| true)
    }

    async fn keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        self.store.keys().await
    }

    async fn key_by_hash(&self, hash: String) -> Result<Option<KeyRecord>, StoreError> {
        self.store.key_by_hash(hash).await
    }

    async fn key_revoke(&self, name: String, at: Millis) -> Result<bool, StoreError> {
        let outcome = self.store.key_revoke(name, at).await;
        self.note(outcome, "key", |&revoked| revoked)
    }

    async fn keys_exist(&self) -> Result<bool, StoreError> {
        self.store.keys_exist().await
    }

    async fn key_used(&self, hash: String, at: Millis) -> Result<(), StoreError> {
        // A last-use stamp may find the row already newer: no sign either way.
        let outcome = self.store.key_used(hash, at).await;
        self.note(outcome, "key", |()| false)
    }

    async fn schedule_put(&self, schedule: Schedule) -> Result<Schedule, StoreError> {
        let outcome = self.store.schedule_put(schedule).await;
        self.note(outcome, "schedule", |_| true)
    }

    async fn schedule_get(&self, name: ScheduleName) -> Result<Option<Schedule>, StoreError> {
        self.store.schedule_get(name).await
    }

    async fn schedules(
        &self,
        after: Option<ScheduleName>,
        limit: usize,
        queues: QueueScope,
    ) -> Result<Vec<Schedule>, StoreError> {
        self.store.schedules(after, limit, queues).await
    }

    async fn schedule_delete(&self, name: ScheduleName) -> Result<bool, StoreError> {
        let outcome = self.store.schedule_delete(name).await;
        self.note(outcome, "schedule", |&deleted| deleted)
    }

    async fn schedules_due(&self, now: Millis, limit: usize) -> Result<Vec<Schedule>, StoreError> {
        self.store.schedules_due(now, limit).await
    }

    async fn schedule_next_at(&self) -> Result<Option<Millis>, StoreError> {
        self.store.schedule_next_at().await
    }

    async fn schedule_fired(
        &self,
        name: ScheduleName,
        expected_next_at: Millis,
        next_at: Millis,
        fired: Option<(TaskId, Millis)>,
    ) -> Result<bool, StoreError> {
        let outcome = self
            .store
            .schedule_fired(name, expected_next_at, next_at, fired)
            .await;
        self.note(outcome, "schedule", |&moved| moved)
    }
}
