//! Submits, combined: every insert call waiting for the writer goes into one job, which
//! decides each call on its own (idempotency, admission: all or nothing per call) and then
//! writes every admitted task with as few INSERT statements as it can.
//!
//! Call by call, each submit cost a savepoint, an admission query and a statement of its
//! own (with a statement journal copying every page it touched): profiles showed those, not
//! the rows, as most of the writer's time. Now a queue's admission is read once per job and
//! counted on in memory, and the pages are journaled once per job.
//!
//! A call is refused before anything is written, so refusals need no rollback; a failing
//! INSERT undoes itself (statement rollback) and fails every call it carried.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::rows::{self, Admission, InsertRow};
use super::writer::{Reply, Writer};
use crate::store::{Inserted, StoreError};
use crate::task::{NewTask, QueueName, Task, now_millis};

type Answer = oneshot::Sender<Result<Vec<Inserted>, StoreError>>;

/// One insert call: its tasks and where its answer goes.
struct Call {
    tasks: Vec<NewTask>,
    answer: Answer,
}

/// The calls waiting for the next combined job.
#[derive(Clone, Default)]
pub struct Inserts {
    waiting: Arc<Mutex<Vec<Call>>>,
}

impl Inserts {
    /// Stores `tasks`, all or none, and answers once they are committed.
    pub async fn insert(
        &self,
        writer: &Writer,
        tasks: Vec<NewTask>,
        default_max_queued: u64,
    ) -> Result<Vec<Inserted>, StoreError> {
        let (answer, answered) = oneshot::channel();
        let first = {
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            waiting.push(Call { tasks, answer });
            waiting.len() == 1
        };
        // The call that finds the list empty sends the job that will take the list (with
        // whatever joins it meanwhile). Spawned: if this caller goes away, the job must
        // still reach the writer, or the calls behind it would wait forever.
        if first {
            let taker = Taker::new(Arc::clone(&self.waiting));
            let writer = writer.clone();
            tokio::spawn(async move {
                let job = Box::new(move |conn: &Connection| {
                    insert_calls(conn, taker.take(), default_max_queued)
                });
                if writer.send(job).await.is_err() {
                    tracing::error!("the writer is gone; submits waiting for it fail");
                }
            });
        }
        answered.await.map_err(|_| StoreError::Closed)?
    }
}

/// Takes the waiting calls for a job. Dropped unused (the writer is gone, or refused the
/// batch before running it), it answers them with an error instead, so that no call waits
/// forever and the next call starts a new job.
struct Taker {
    waiting: Arc<Mutex<Vec<Call>>>,
    used: bool,
}

impl Taker {
    fn new(waiting: Arc<Mutex<Vec<Call>>>) -> Taker {
        Taker {
            waiting,
            used: false,
        }
    }

    /// Once: calls arriving later belong to the next job.
    fn take(mut self) -> Vec<Call> {
        self.used = true;
        self.calls()
    }

    fn calls(&self) -> Vec<Call> {
        std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for Taker {
    fn drop(&mut self) {
        if self.used {
            return;
        }
        for call in self.calls() {
            let _ = call.answer.send(Err(StoreError::Closed));
        }
    }
}

/// A queue's admission as this job counts it: read once, then counted on in memory.
type Admissions = HashMap<QueueName, Admission>;

/// Decides every call, writes the admitted tasks, and returns the reply that answers each
/// call once the batch committed.
fn insert_calls(conn: &Connection, calls: Vec<Call>, default_max_queued: u64) -> Reply {
    let mut admissions = Admissions::new();
    // Keys admitted in this job: a repeat within the job replays them like a stored one.
    let mut keyed: HashMap<String, (Task, String)> = HashMap::new();
    let mut writes = Vec::new();
    let mut decided = Vec::with_capacity(calls.len());
    for call in calls {
        let outcome = decide(
            conn,
            call.tasks,
            default_max_queued,
            &mut admissions,
            &mut keyed,
        )
        .map(|(inserted, rows)| {
            writes.extend(rows);
            inserted
        });
        decided.push((call.answer, outcome));
    }
    let written = if writes.is_empty() {
        Ok(())
    } else {
        rows::task_insert_rows(conn, &writes)
    };
    Box::new(move |commit_error: Option<&str>| {
        let failed = match (&written, commit_error) {
            (Err(error), _) => Some(error.to_string()),
            (Ok(()), Some(error)) => Some(error.to_owned()),
            (Ok(()), None) => None,
        };
        for (answer, outcome) in decided {
            let outcome = match (&failed, outcome) {
                // A refused call wrote nothing either way: its refusal stands.
                (_, Err(refused)) => Err(refused),
                (Some(error), Ok(_)) => Err(StoreError::Backend(error.clone())),
                (None, inserted) => inserted,
            };
            // The caller may have gone away (client disconnected); the write stands.
            let _ = answer.send(outcome);
        }
    })
}

/// One call, all or nothing: its answer and the rows to write, or why it is refused.
/// Admission counts and known keys change only when the whole call is admitted.
fn decide(
    conn: &Connection,
    tasks: Vec<NewTask>,
    default_max_queued: u64,
    admissions: &mut Admissions,
    keyed: &mut HashMap<String, (Task, String)>,
) -> Result<(Vec<Inserted>, Vec<InsertRow>), StoreError> {
    let mut taken: HashMap<QueueName, u64> = HashMap::new();
    let mut new_keys: Vec<(String, Task, String)> = Vec::new();
    let mut inserted = Vec::with_capacity(tasks.len());
    let mut writes = Vec::with_capacity(tasks.len());
    for new in tasks {
        if let Some(idempotency) = &new.idempotency {
            // The first use of the key: earlier in this call, earlier in this job, or stored.
            let in_call = new_keys
                .iter()
                .find(|(key, ..)| key == &idempotency.key)
                .map(|(_, task, hash)| (task.clone(), hash.clone()));
            let in_job = || keyed.get(&idempotency.key).cloned();
            let first = match in_call.or_else(in_job) {
                Some(first) => Some(first),
                None => rows::task_by_key(conn, &idempotency.key)?,
            };
            if let Some((task, hash)) = first {
                if hash != idempotency.request_hash {
                    return Err(StoreError::IdempotencyConflict(idempotency.key.clone()));
                }
                inserted.push(Inserted {
                    task,
                    replayed: true,
                    waiting_before: 0,
                });
                continue;
            }
        }
        if !admissions.contains_key(&new.queue) {
            let admission = rows::admission(conn, &new.queue, default_max_queued)?;
            admissions.insert(new.queue.clone(), admission);
        }
        let admission = &admissions[&new.queue];
        let before = taken.get(&new.queue).copied().unwrap_or(0);
        let waiting = admission.waiting + before;
        if waiting >= admission.limit {
            return Err(StoreError::QueueFull {
                queue: new.queue,
                limit: admission.limit,
            });
        }
        let (task, request_hash) = new.into_task(now_millis(), admission.callback.clone());
        // A new task is queued or scheduled: waiting, either way.
        *taken.entry(task.queue.clone()).or_default() += 1;
        if let (Some(key), Some(hash)) = (&task.idempotency_key, &request_hash) {
            new_keys.push((key.clone(), task.clone(), hash.clone()));
        }
        writes.push(rows::insert_row(&task, request_hash));
        inserted.push(Inserted {
            task,
            replayed: false,
            waiting_before: waiting,
        });
    }
    for (queue, n) in taken {
        if let Some(admission) = admissions.get_mut(&queue) {
            admission.waiting += n;
        }
    }
    for (key, task, hash) in new_keys {
        keyed.insert(key, (task, hash));
    }
    Ok((inserted, writes))
}
