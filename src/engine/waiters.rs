//! Waiters: the promise side of the task future. A long-poll subscribes to a task id and is
//! woken with the finished task the moment it reaches a terminal state.
//!
//! One `watch` channel per awaited task, in a `DashMap` keyed by id: a `watch` because many
//! waiters share one value and a late one still sees it; a `DashMap` because submits, finishes
//! and waits touch different ids from many threads at once. The entry (and with it the last
//! sender) is removed by `notify`, or by the last waiter to leave.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;
use tokio::sync::watch;

use crate::task::{Task, TaskId};

type Slot = watch::Sender<Option<Arc<Task>>>;

pub struct Waiters {
    slots: DashMap<TaskId, Slot>,
    /// How many waiters exist now; bounded by `limit` so a flood of long-polls is refused
    /// (429) rather than held.
    count: AtomicUsize,
    limit: usize,
}

/// Too many waiters at once; the caller should poll later.
#[derive(Debug)]
pub struct TooManyWaiters;

impl Waiters {
    pub fn new(limit: usize) -> Self {
        Waiters {
            slots: DashMap::new(),
            count: AtomicUsize::new(0),
            limit,
        }
    }

    /// Subscribes to `id`. Subscribe before reading the task, so that a finish between the
    /// read and the wait is not missed.
    pub fn subscribe(&self, id: TaskId) -> Result<Waiter<'_>, TooManyWaiters> {
        if self.count.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.count.fetch_sub(1, Ordering::AcqRel);
            return Err(TooManyWaiters);
        }
        let receiver = self
            .slots
            .entry(id)
            .or_insert_with(|| watch::channel(None).0)
            .subscribe();
        Ok(Waiter {
            waiters: self,
            id,
            receiver,
        })
    }

    /// Whether anyone waits for `id` now. A waiter that subscribes later reads the task
    /// after subscribing, so it cannot miss a finish that happened before.
    pub fn is_awaited(&self, id: &TaskId) -> bool {
        self.slots.contains_key(id)
    }

    /// Wakes every waiter of a task that reached a terminal state.
    pub fn notify(&self, task: &Task) {
        if let Some((_, slot)) = self.slots.remove(&task.id) {
            slot.send_replace(Some(Arc::new(task.clone())));
        }
    }
}

pub struct Waiter<'a> {
    waiters: &'a Waiters,
    id: TaskId,
    receiver: watch::Receiver<Option<Arc<Task>>>,
}

impl Waiter<'_> {
    /// Resolves with the finished task; `None` if the slot went away without one.
    pub async fn finished(&mut self) -> Option<Arc<Task>> {
        let value = self.receiver.wait_for(Option::is_some).await.ok()?;
        value.clone()
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.waiters.count.fetch_sub(1, Ordering::AcqRel);
        // Our receiver is still alive here, hence `<= 1`: we were the last one listening.
        self.waiters
            .slots
            .remove_if(&self.id, |_, slot| slot.receiver_count() <= 1);
    }
}
