//! Submits that start their tasks at once. A submit that finds workers of the local pool
//! free takes their permits (the dispatcher's semaphore) and has the store claim in the
//! submit's own transaction (`TaskStore::insert_claiming`): one durable commit stores the
//! tasks and starts them, so a task awaited with `Prefer: wait` costs two commits (submit
//! and start, then its end) instead of three. What started reaches the workers through the
//! pool's door, as the dispatcher's claims do. Without a free worker, a submit only stores,
//! and the dispatcher claims.
//!
//! The claim is the dispatcher's own (its fairness, pauses, concurrency and rate limits), so
//! nothing starts here that the dispatcher would not have started; a replay, a delayed task
//! or a waiting child starts nothing. A crash right after the commit leaves the tasks
//! running under a lease that expires, and they run again (at-least-once).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::{Inner, pool};
use crate::store::{ClaimNow, Inserted, StoreError};
use crate::task::{NewTask, TaskState, now_millis};

impl Inner {
    /// Stores `tasks`, all or none; with workers free, starts what it can in the same
    /// commit and hands it to them.
    pub(super) async fn store_submitted(
        self: &Arc<Self>,
        tasks: Vec<NewTask>,
    ) -> Result<Vec<Inserted>, StoreError> {
        let startable = tasks.iter().filter(|task| self.may_start(task)).count();
        let free = match startable {
            0 => None,
            n => self.door.get().and_then(|door| door.free_workers(n)),
        };
        let Some((permits, jobs)) = free.filter(|_| !self.stop_claiming.is_cancelled()) else {
            let inserted = self.store.insert(tasks, self.config.max_queued).await?;
            self.work_available();
            return Ok(inserted);
        };
        let claim = ClaimNow {
            limit: permits.len(),
            lease_expires_at: now_millis() + self.config.lease.as_millis() as i64,
        };
        // Spawned: once the store started tasks they must reach a worker, even if the caller
        // goes away (a client that disconnects drops its request's future).
        let inner = Arc::clone(self);
        tokio::spawn(async move { inner.start_submitted(tasks, claim, permits, jobs).await })
            .await
            .map_err(StoreError::backend)?
    }

    async fn start_submitted(
        &self,
        tasks: Vec<NewTask>,
        claim: ClaimNow,
        permits: Vec<OwnedSemaphorePermit>,
        jobs: mpsc::Sender<pool::Job>,
    ) -> Result<Vec<Inserted>, StoreError> {
        let submitted = self
            .store
            .insert_claiming(tasks, self.config.max_queued, claim)
            .await?;
        // The store starts no more than `claim.limit`, one per permit; permits left over
        // are returned when `permits` goes.
        let mut permits = permits.into_iter();
        for task in submitted.started {
            let id = task.id;
            let lease = task.lease.as_ref().map(|l| l.token.clone());
            let handed = match permits.next() {
                Some(permit) => pool::hand_over(self, &jobs, task, permit).await,
                None => false,
            };
            if !handed {
                // No worker will run it (the pool stopped): give it back, attempt not counted.
                self.running.remove(&id);
                self.release(id, &lease.unwrap_or_default()).await;
            }
        }
        // Only what is left queued needs the dispatcher (or a remote worker).
        let left = submitted
            .inserted
            .iter()
            .any(|i| !i.replayed && i.task.state == TaskState::Queued);
        if left {
            self.work_available();
        }
        Ok(submitted.inserted)
    }

    /// Whether a new task may start in its submit's transaction: due now, waiting for no
    /// parent, and in a queue the local pool serves.
    fn may_start(&self, task: &NewTask) -> bool {
        task.run_at.is_none()
            && task.after.is_empty()
            && !self.remote_queues.contains_key(&task.queue)
    }
}
