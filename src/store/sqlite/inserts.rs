//! Submits, combined: every insert call waiting for the writer goes into one job, which
//! decides each call on its own (idempotency, admission: all or nothing per call) and then
//! writes every admitted task with as few INSERT statements as it can.
//!
//! Call by call, each submit cost a savepoint, an admission query and a statement of its
//! own (with a statement journal copying every page it touched): profiles showed those, not
//! the rows, as most of the writer's time. Now a queue's admission is read once per job and
//! counted on in memory, and the pages are journaled once per job.
//!
//! A call is refused before anything is written, so refusals need no rollback. The rows are
//! written inside a savepoint: if writing them fails, it is undone and every call is decided
//! and written again on its own, so a call whose rows the database refuses fails alone and
//! never the others that shared its job (out of space excepted: that fails every call alike).
//!
//! Calls that hold free workers (`insert_claiming`) then claim, in the same job, as the
//! dispatcher would, for as many tasks as they may start together; one commit makes the
//! tasks durable and started (see `store::starts` for who gets which).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::rows::{self, Admission, InsertRow};
use super::writer::{Reply, Writer};
use super::{claims, deps};
use crate::store::starts::{self, Stored};
use crate::store::{ClaimNow, Inserted, StoreError, Submitted, parents};
use crate::task::{NewTask, QueueName, Task, now_millis};

type Answer = oneshot::Sender<Result<Submitted, StoreError>>;

/// One insert call: its tasks, whether it may start some, and where its answer goes.
struct Call {
    tasks: Vec<NewTask>,
    claim: Option<ClaimNow>,
    answer: Answer,
}

/// The calls waiting for the next combined job.
#[derive(Clone, Default)]
pub struct Inserts {
    waiting: Arc<Mutex<Vec<Call>>>,
}

impl Inserts {
    /// Stores `tasks`, all or none, claims for `claim` in the same job, and answers once
    /// they are committed.
    pub async fn insert(
        &self,
        writer: &Writer,
        tasks: Vec<NewTask>,
        default_max_queued: u64,
        claim: Option<ClaimNow>,
    ) -> Result<Submitted, StoreError> {
        let (answer, answered) = oneshot::channel();
        let first = {
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            waiting.push(Call {
                tasks,
                claim,
                answer,
            });
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
/// Keys admitted in this job: a repeat within the job replays them like a stored one.
type Keyed = HashMap<String, (Task, String)>;
/// What one call stored, before its share of the claim.
type Outcome = Stored;

/// Decides every call, writes the admitted tasks, claims for the calls that may start some,
/// and returns the reply that answers each call once the batch committed.
fn insert_calls(conn: &Connection, calls: Vec<Call>, default_max_queued: u64) -> Reply {
    let mut answers = Vec::with_capacity(calls.len());
    let mut tasks = Vec::with_capacity(calls.len());
    let mut claims = Vec::with_capacity(calls.len());
    for call in calls {
        answers.push(call.answer);
        tasks.push(call.tasks);
        claims.push(call.claim);
    }
    let stored = match together(conn, &tasks, default_max_queued) {
        Ok(outcomes) => outcomes,
        // A call's rows may have failed the combined statements (a CHECK, a value the
        // column refuses): each call is decided alone, so only the call at fault fails.
        Err(error) if tasks.len() > 1 && !error.is_shared() => {
            alone(conn, &tasks, default_max_queued)
        }
        Err(error) => tasks.iter().map(|_| Err(error.clone())).collect(),
    };
    let outcomes = start(conn, stored, &claims);
    Box::new(move |commit_error: Option<&StoreError>| {
        for (answer, outcome) in answers.into_iter().zip(outcomes) {
            let outcome = match (commit_error, outcome) {
                // A refused call wrote nothing either way: its refusal stands.
                (_, Err(refused)) => Err(refused),
                (Some(error), Ok(_)) => Err(error.clone()),
                (None, inserted) => inserted,
            };
            // The caller may have gone away (client disconnected); the write stands.
            let _ = answer.send(outcome);
        }
    })
}

/// Claims for the calls that may start tasks, as the dispatcher's claim would, and shares
/// out what started. A claim that fails is undone and starts nothing: the tasks stay
/// queued for the dispatcher, and the calls' inserts stand.
fn start(
    conn: &Connection,
    stored: Vec<Outcome>,
    claims: &[Option<ClaimNow>],
) -> Vec<Result<Submitted, StoreError>> {
    let (budgets, terms) = starts::plan(&stored, claims);
    let started = match terms {
        None => Vec::new(),
        Some(claim) => savepoint(conn, || {
            claims::task_claim(conn, claim.limit, claim.lease_expires_at, now_millis())
        })
        .unwrap_or_else(|error| {
            tracing::error!(%error, "a submit's claim failed; the dispatcher will claim");
            Vec::new()
        }),
    };
    starts::share(started, stored, &budgets)
}

/// Runs `f` inside a savepoint that is rolled back if `f` fails, so a failed write leaves
/// the batch's transaction as it was.
fn savepoint<T>(
    conn: &Connection,
    f: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.prepare_cached("SAVEPOINT inserts")?.execute([])?;
    let outcome = f();
    if outcome.is_err() {
        conn.prepare_cached("ROLLBACK TO inserts")?.execute([])?;
    }
    conn.prepare_cached("RELEASE inserts")?.execute([])?;
    outcome
}

/// Every call decided, and all admitted rows written with as few statements as can be.
/// `Err`: the writing failed, and nothing of any call was written.
fn together(
    conn: &Connection,
    calls: &[Vec<NewTask>],
    default_max_queued: u64,
) -> Result<Vec<Outcome>, StoreError> {
    savepoint(conn, || {
        let (mut admissions, mut keyed) = (Admissions::new(), Keyed::new());
        let (mut writes, mut edges) = (Vec::new(), Vec::new());
        let mut outcomes = Vec::with_capacity(calls.len());
        for tasks in calls {
            let decided = decide(conn, tasks, default_max_queued, &mut admissions, &mut keyed);
            outcomes.push(decided.map(|(inserted, rows)| {
                writes.extend(rows);
                edges.extend(parents::edges(&inserted));
                inserted
            }));
        }
        if !writes.is_empty() {
            rows::task_insert_rows(conn, &writes)?;
            deps::insert_edges(conn, &edges)?;
        }
        Ok(outcomes)
    })
}

/// Every call decided and written on its own: a call whose rows fail is undone alone, and
/// counts neither for admission nor as a first use of its keys for the calls after it.
fn alone(conn: &Connection, calls: &[Vec<NewTask>], default_max_queued: u64) -> Vec<Outcome> {
    let (mut admissions, mut keyed) = (Admissions::new(), Keyed::new());
    let mut outcomes = Vec::with_capacity(calls.len());
    for tasks in calls {
        let before = (admissions.clone(), keyed.clone());
        let outcome = savepoint(conn, || {
            let (inserted, rows) =
                decide(conn, tasks, default_max_queued, &mut admissions, &mut keyed)?;
            if !rows.is_empty() {
                rows::task_insert_rows(conn, &rows)?;
                deps::insert_edges(conn, &parents::edges(&inserted))?;
            }
            Ok(inserted)
        });
        if outcome.is_err() {
            (admissions, keyed) = before;
        }
        outcomes.push(outcome);
    }
    outcomes
}

/// One call, all or nothing: its answer and the rows to write, or why it is refused.
/// Admission counts and known keys change only when the whole call is admitted.
fn decide(
    conn: &Connection,
    tasks: &[NewTask],
    default_max_queued: u64,
    admissions: &mut Admissions,
    keyed: &mut Keyed,
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
                queue: new.queue.clone(),
                limit: admission.limit,
            });
        }
        let now = now_millis();
        let (mut task, request_hash) = new.clone().into_task(now, admission.callback.clone());
        if !new.after.is_empty() {
            deps::start_after(conn, &mut task, new, &inserted, now)?;
        }
        // A new task is waiting, queued or scheduled (or, its parents failed, cancelled; it
        // counts until the counts are read again).
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
