//! Schedules, the engine's side: writing and reading them within a caller's queue scope, and
//! firing the due ones from the maintainer.
//!
//! A slot is fired by submitting [`Schedule::task_for`] through the ordinary submit path, so
//! kinds, inputs and queue limits are checked as for any task, and the slot's idempotency key
//! makes a slot fired on two nodes (or again after a crash) one task. Then the schedule's
//! `next_at` moves on with a guarded update; the pass that loses that race changed nothing.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Engine, EngineError, Inner};
use crate::access::QueueScope;
use crate::metrics;
use crate::store::StoreError;
use crate::task::{
    CatchUp, Millis, Overlap, Schedule, ScheduleName, TaskState, TaskTemplate, now_millis,
};

/// How many due schedules one maintainer pass fires at most; the rest wait for the next.
const FIRE_BATCH: usize = 100;
/// How many fire times every answer shows.
pub const UPCOMING: usize = 5;

/// A schedule as a client writes it, parsed at the edge (the cron and zone already checked).
#[derive(Debug, Clone)]
pub struct ScheduleSpec {
    pub name: ScheduleName,
    pub cron: String,
    pub timezone: String,
    pub task: TaskTemplate,
    pub overlap: Overlap,
    pub catch_up: CatchUp,
    pub paused: bool,
}

/// A schedule as served: with its last run's state and its next fire times.
#[derive(Debug, Clone)]
pub struct ScheduleInfo {
    pub schedule: Schedule,
    /// `None`: never fired, or its last task is gone (deleted, past retention).
    pub last_state: Option<TaskState>,
    pub upcoming: Vec<Millis>,
}

impl Engine {
    /// Creates or replaces a schedule; `true` if it was created. The task is checked as a
    /// submit would be (kind, input, and the caller's right to its queue); a schedule whose
    /// task goes to a queue outside the caller's scope cannot be replaced by it either.
    pub async fn put_schedule(
        &self,
        spec: ScheduleSpec,
        scope: &QueueScope,
    ) -> Result<(ScheduleInfo, bool), EngineError> {
        Self::check_queue(&spec.task.queue, scope)?;
        self.check_kind(&spec.task.queue, &spec.task.kind, &spec.task.input)?;
        let cron = crate::task::Cron::parse(&spec.cron, &spec.timezone)
            .map_err(|e| EngineError::InvalidSchedule(e.to_string()))?;
        let store = &self.inner.store;
        let existing = store
            .schedule_get(spec.name.clone())
            .await
            .map_err(EngineError::Store)?;
        if let Some(existing) = &existing {
            Self::check_queue(&existing.task.queue, scope)?;
        }
        let now = now_millis();
        let next_at = cron.after(now).ok_or_else(|| {
            EngineError::InvalidSchedule(format!("`{}` fires no more", spec.cron))
        })?;
        let schedule = Schedule {
            name: spec.name,
            cron: spec.cron,
            timezone: spec.timezone,
            task: spec.task,
            overlap: spec.overlap,
            catch_up: spec.catch_up,
            paused: spec.paused,
            next_at,
            last_task: None,
            last_slot_at: None,
            created_at: now,
            updated_at: now,
        };
        let stored = store
            .schedule_put(schedule)
            .await
            .map_err(EngineError::Store)?;
        // The maintainer may sleep past this schedule's first slot.
        self.inner.schedules_changed.store(true, Ordering::Release);
        self.inner.reschedule.notify_one();
        Ok((self.inner.schedule_info(stored).await?, existing.is_none()))
    }

    /// The schedule, if it exists and its task's queue lies in `scope`.
    pub async fn schedule(
        &self,
        name: ScheduleName,
        scope: &QueueScope,
    ) -> Result<ScheduleInfo, EngineError> {
        let schedule = self.scoped_schedule(name, scope).await?;
        self.inner.schedule_info(schedule).await
    }

    /// Schedules by name after `after`, within `scope`.
    pub async fn schedules(
        &self,
        after: Option<ScheduleName>,
        limit: usize,
        scope: &QueueScope,
    ) -> Result<Vec<ScheduleInfo>, EngineError> {
        let schedules = self
            .inner
            .store
            .schedules(after, limit, scope.clone())
            .await
            .map_err(EngineError::Store)?;
        let mut infos = Vec::with_capacity(schedules.len());
        for schedule in schedules {
            infos.push(self.inner.schedule_info(schedule).await?);
        }
        Ok(infos)
    }

    /// Deletes a schedule; the tasks it fired stay.
    pub async fn delete_schedule(
        &self,
        name: ScheduleName,
        scope: &QueueScope,
    ) -> Result<(), EngineError> {
        self.scoped_schedule(name.clone(), scope).await?;
        match self.inner.store.schedule_delete(name.clone()).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(EngineError::ScheduleNotFound(name)),
            Err(error) => Err(EngineError::Store(error)),
        }
    }

    /// A schedule outside `scope` is not found, as a task outside it is.
    async fn scoped_schedule(
        &self,
        name: ScheduleName,
        scope: &QueueScope,
    ) -> Result<Schedule, EngineError> {
        self.inner
            .store
            .schedule_get(name.clone())
            .await
            .map_err(EngineError::Store)?
            .filter(|schedule| scope.allows(&schedule.task.queue))
            .ok_or(EngineError::ScheduleNotFound(name))
    }
}

impl Inner {
    async fn schedule_info(&self, schedule: Schedule) -> Result<ScheduleInfo, EngineError> {
        let last_state = self
            .last_state(&schedule)
            .await
            .map_err(EngineError::Store)?;
        let upcoming = schedule
            .cron()
            .map(|cron| cron.upcoming(now_millis().max(schedule.next_at - 1), UPCOMING))
            .unwrap_or_default();
        Ok(ScheduleInfo {
            schedule,
            last_state,
            upcoming,
        })
    }

    async fn last_state(&self, schedule: &Schedule) -> Result<Option<TaskState>, StoreError> {
        let Some(id) = schedule.last_task else {
            return Ok(None);
        };
        Ok(self.store.get(id).await?.map(|task| task.state))
    }
}

/// Fires the schedules due now (a maintainer step).
pub(super) async fn fire_due(inner: &Arc<Inner>) {
    let now = now_millis();
    let due = match inner.store.schedules_due(now, FIRE_BATCH).await {
        Ok(due) => due,
        Err(error) => return super::log_store_failure(&error, "cannot read due schedules"),
    };
    for schedule in due {
        fire(inner, schedule, now).await;
    }
}

async fn fire(inner: &Arc<Inner>, schedule: Schedule, now: Millis) {
    let name = schedule.name.to_string();
    let Some(firing) = schedule
        .cron()
        .ok()
        .and_then(|c| schedule.slot_to_fire(&c, now))
    else {
        // Checked when written; a cron that fires no more is left due and said once a pass.
        tracing::warn!(schedule = name, "a schedule's cron has no next slot");
        return;
    };
    let mut fired = None;
    match firing.slot {
        None => metrics::schedule_slot("skipped"),
        Some(slot) => {
            let last_state = match inner.last_state(&schedule).await {
                Ok(state) => state,
                Err(error) => return super::log_store_failure(&error, "cannot read a last run"),
            };
            if schedule.skips_for(last_state) {
                tracing::info!(
                    schedule = name,
                    "slot skipped: the previous run is unfinished"
                );
                metrics::schedule_slot("skipped");
            } else {
                let engine = Engine {
                    inner: Arc::clone(inner),
                };
                match engine
                    .submit(schedule.task_for(slot), &QueueScope::All)
                    .await
                {
                    Ok(inserted) => {
                        metrics::schedule_slot(if inserted.replayed {
                            "replayed"
                        } else {
                            "fired"
                        });
                        fired = Some((inserted.task.id, slot));
                    }
                    // Not fired and not to be skipped: the next pass (or start) tries again.
                    Err(EngineError::Draining) => return,
                    Err(EngineError::Store(error)) => {
                        return super::log_store_failure(&error, "cannot fire a schedule");
                    }
                    // Refused as a submit would be (queue full, kind gone): the slot is lost,
                    // and said.
                    Err(error) => {
                        tracing::warn!(schedule = name, %error, "a schedule's slot was refused");
                        metrics::schedule_slot("failed");
                    }
                }
            }
        }
    }
    let moved = inner
        .store
        .schedule_fired(schedule.name, schedule.next_at, firing.next_at, fired)
        .await;
    if let Err(error) = moved {
        super::log_store_failure(&error, "cannot move a schedule on");
    }
}
