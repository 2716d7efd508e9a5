//! Remote workers: the lease protocol. A worker in any language leases tasks of a remote
//! queue over HTTP, heartbeats while it runs them, and completes or fails each under its
//! lease. Every call names the lease; a stale one changes nothing (fencing), so a worker
//! that lost its lease can never overwrite the outcome of the worker that holds it now.

use std::time::Duration;

use super::{Engine, EngineError, StateRule};
use crate::access::QueueScope;
use crate::metrics;
use crate::store::StoreError;
use crate::task::{
    Kind, Outcome, ParentOutcome, Progress, QueueName, Task, TaskError, TaskId, attempt_deadline,
    now_millis,
};

/// What a heartbeat learned.
#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    pub cancel_requested: bool,
    pub lease_expires_at: i64,
}

/// How often a waiting lease looks at the store again though no work was announced: a
/// rate-limited queue gains room as its window slides.
const RECHECK: std::time::Duration = std::time::Duration::from_millis(250);

impl Engine {
    /// Leases up to `max_tasks` tasks of a remote queue, waiting up to `wait` for some, each
    /// with the outcomes of its parents (empty without). An empty answer means none came in
    /// time.
    pub async fn lease(
        &self,
        queue: QueueName,
        kinds: Option<Vec<Kind>>,
        max_tasks: usize,
        lease: Duration,
        wait: Duration,
        scope: &QueueScope,
    ) -> Result<Vec<(Task, Vec<ParentOutcome>)>, EngineError> {
        Self::check_queue(&queue, scope)?;
        if !self.is_remote(&queue) {
            let info = self.queue(queue.clone(), scope).await?;
            if !info.remote {
                return Err(EngineError::NotRemote(queue));
            }
            self.inner.mark_remote(&queue, true);
        }
        let deadline = tokio::time::Instant::now() + wait;
        let _open = (!wait.is_zero()).then(metrics::Open::long_poll);
        // Subscribe before claiming, so work arriving in between is not missed.
        let mut work = self.inner.work.subscribe();
        loop {
            let expires_at = now_millis() + lease.as_millis() as i64;
            let claimed = self
                .inner
                .store
                .claim_queue(queue.clone(), kinds.clone(), max_tasks, expires_at)
                .await
                .map_err(EngineError::Store)?;
            if !claimed.is_empty() {
                claimed.iter().for_each(metrics::attempt_started);
                // Each leased child carries its parents' outcomes.
                let mut leased = Vec::with_capacity(claimed.len());
                for task in claimed {
                    let parents = self
                        .inner
                        .parents_of(&task)
                        .await
                        .map_err(EngineError::Store)?;
                    leased.push((task, parents));
                }
                return Ok(leased);
            }
            tokio::select! {
                changed = work.changed() => {
                    if changed.is_err() {
                        return Ok(Vec::new());
                    }
                }
                () = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
                () = self.inner.draining.cancelled() => return Ok(Vec::new()),
                // A rate limit frees room with time alone, which bumps nothing: look again.
                () = tokio::time::sleep(RECHECK) => {}
            }
        }
    }

    /// Extends a remote attempt's lease by `lease`, but never past the attempt's deadline
    /// (`started_at + timeout_ms`): a lease that runs out there is rescued as a `timeout`.
    /// Records its progress, and says whether a cancel was requested.
    pub async fn heartbeat(
        &self,
        id: TaskId,
        lease_token: &str,
        lease: Duration,
        progress: Option<Progress>,
        scope: &QueueScope,
    ) -> Result<Heartbeat, EngineError> {
        // Read first, for the deadline; `started_at` and `timeout_ms` do not change while
        // this lease holds, and the renewal below is guarded by it.
        let task = self.get(id, scope).await?;
        let mut expires_at = now_millis() + lease.as_millis() as i64;
        if let Some(deadline) = attempt_deadline(&task) {
            expires_at = expires_at.min(deadline);
        }
        let renewed = self
            .inner
            .store
            .renew_one(id, lease_token, expires_at)
            .await
            .map_err(EngineError::Store)?;
        if !renewed {
            return Err(self.lease_lost(id).await);
        }
        if let Some(progress) = progress {
            match self
                .inner
                .store
                .record_progress(vec![(id, lease_token.to_owned(), progress)])
                .await
            {
                Ok(_) | Err(StoreError::Unsupported(_)) => {}
                Err(error) => return Err(EngineError::Store(error)),
            }
        }
        Ok(Heartbeat {
            cancel_requested: task.cancel_requested,
            lease_expires_at: expires_at,
        })
    }

    /// Ends a remote attempt with its result.
    pub async fn complete(
        &self,
        id: TaskId,
        lease: &str,
        result: serde_json::Value,
        scope: &QueueScope,
    ) -> Result<Task, EngineError> {
        self.check_scope(id, scope).await?;
        self.end_remote(id, lease, Outcome::Succeeded(result)).await
    }

    /// Ends a remote attempt with an error; retried while attempts are left if `retryable`.
    pub async fn fail(
        &self,
        id: TaskId,
        lease: &str,
        error: TaskError,
        retryable: bool,
        scope: &QueueScope,
    ) -> Result<Task, EngineError> {
        self.check_scope(id, scope).await?;
        self.end_remote(id, lease, Outcome::Failed { error, retryable })
            .await
    }

    async fn end_remote(
        &self,
        id: TaskId,
        lease: &str,
        outcome: Outcome,
    ) -> Result<Task, EngineError> {
        match self.inner.store.finish(id, lease, outcome).await {
            Ok(Some(ended)) => {
                self.inner.ended(&ended);
                Ok(self.inner.shown(ended))
            }
            Ok(None) => Err(self.lease_lost(id).await),
            Err(error) => Err(EngineError::Store(error)),
        }
    }

    /// Why a lease did not hold: the task is unknown, or the lease is not (or no longer) the
    /// current one.
    async fn lease_lost(&self, id: TaskId) -> EngineError {
        // The caller's scope was checked before the attempt to end it.
        match self.get(id, &QueueScope::All).await {
            Ok(task) => EngineError::WrongState {
                task: Box::new(task),
                rule: StateRule::LeaseLost,
            },
            Err(error) => error,
        }
    }

    fn is_remote(&self, queue: &QueueName) -> bool {
        self.inner.remote_queues.contains_key(queue)
    }
}
