//! The events hub's subscribers: where the tailer (`events::tail`) delivers each event.
//!
//! A stream of one task listens on a channel of that task's own, not on the firehose: with a
//! thousand task streams open, one shared channel would wake all thousand for every event
//! and each would throw away all but its own. Here an event wakes the firehose streams and
//! the streams of its task, nobody else.
//!
//! `broadcast` channels because every subscriber of a channel sees every event on it and a
//! slow one must not hold up the others: one that falls more than its buffer behind gets
//! `Lagged` and resumes from the log, which is the source of truth.

use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::broadcast;

use crate::access::QueueScope;
use crate::task::{TaskEvent, TaskId};

/// How many events the firehose buffers for its slowest live subscriber.
const FIREHOSE_CAPACITY: usize = 4096;
/// How many events one task's channel buffers: its state changes and progress reports,
/// which the progress flusher writes a few times a second at most, and its stream's
/// forwarder takes at once. Small, since every open task stream holds one (a slot is
/// ~40 bytes, allocated up front): one that falls behind anyway resumes from the log.
const TASK_CAPACITY: usize = 16;

type Channel = broadcast::Sender<Arc<TaskEvent>>;

pub struct Hub {
    /// Every event, for `GET /v1/events`.
    all: Channel,
    /// Per task with a live stream, that task's events. The entry (and its sender) goes
    /// with the task's last `Subscription`.
    tasks: DashMap<TaskId, Channel>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            all: broadcast::channel(FIREHOSE_CAPACITY).0,
            tasks: DashMap::new(),
        }
    }
}

impl Hub {
    /// Whether any stream listens; when none does, the tailer need not read the log.
    pub fn has_subscribers(&self) -> bool {
        self.all.receiver_count() > 0 || !self.tasks.is_empty()
    }

    /// Whether a stream of task `id` is open.
    pub fn streams_task(&self, id: &TaskId) -> bool {
        self.tasks.contains_key(id)
    }

    /// Hands `event` to the firehose and to the streams of its task.
    pub fn publish(&self, event: TaskEvent) {
        let event = Arc::new(event);
        if let Some(channel) = self.tasks.get(&event.task_id) {
            // No receiver left is fine: its subscription is being dropped.
            let _ = channel.send(Arc::clone(&event));
        }
        let _ = self.all.send(event);
    }

    /// Every event from now on.
    pub fn subscribe_all(self: &Arc<Self>, scope: QueueScope) -> Subscription {
        Subscription {
            receiver: self.all.subscribe(),
            task: None,
            scope,
        }
    }

    /// The events of task `id` from now on.
    pub fn subscribe_task(self: &Arc<Self>, id: TaskId) -> Subscription {
        let receiver = self
            .tasks
            .entry(id)
            .or_insert_with(|| broadcast::channel(TASK_CAPACITY).0)
            .subscribe();
        Subscription {
            receiver,
            task: Some((id, Arc::clone(self))),
            scope: QueueScope::All,
        }
    }
}

/// A live subscription; dropping the last one of a task removes that task's channel.
pub struct Subscription {
    receiver: broadcast::Receiver<Arc<TaskEvent>>,
    task: Option<(TaskId, Arc<Hub>)>,
    /// Only events of these queues are handed out; the others are skipped here.
    scope: QueueScope,
}

impl Subscription {
    pub async fn recv(&mut self) -> Result<Arc<TaskEvent>, broadcast::error::RecvError> {
        loop {
            let event = self.receiver.recv().await?;
            if self.scope.allows(&event.queue) {
                return Ok(event);
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some((id, hub)) = &self.task {
            // Our receiver is still alive here, hence `<= 1`: it was the last one.
            hub.tasks
                .remove_if(id, |_, channel| channel.receiver_count() <= 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{Kind, QueueName, TaskState};

    fn event(seq: i64, task_id: TaskId) -> TaskEvent {
        TaskEvent {
            seq,
            task_id,
            queue: QueueName::parse("default").unwrap(),
            kind: Kind::parse("echo").unwrap(),
            state: TaskState::Running,
            attempt: 1,
            progress: None,
            at: 0,
        }
    }

    /// A task stream gets its own task's events only; the firehose gets all of them.
    #[tokio::test]
    async fn a_task_stream_hears_only_its_task() {
        let hub = Arc::new(Hub::default());
        let (mine, other) = (TaskId::new(), TaskId::new());
        let mut task = hub.subscribe_task(mine);
        let mut all = hub.subscribe_all(QueueScope::All);
        hub.publish(event(1, other));
        hub.publish(event(2, mine));
        assert_eq!(task.recv().await.unwrap().seq, 2);
        assert_eq!(all.recv().await.unwrap().seq, 1);
        assert_eq!(all.recv().await.unwrap().seq, 2);
    }

    /// The last subscription of a task takes its channel with it; an earlier one does not.
    #[test]
    fn the_last_subscription_removes_the_channel() {
        let hub = Arc::new(Hub::default());
        let id = TaskId::new();
        let first = hub.subscribe_task(id);
        let second = hub.subscribe_task(id);
        drop(first);
        assert!(hub.tasks.contains_key(&id));
        drop(second);
        assert!(!hub.tasks.contains_key(&id));
        assert!(!hub.has_subscribers());
    }
}
