//! `insert_jobs`: admission control, idempotency and the insert of new tasks, for several
//! submissions (jobs) in one transaction, each job all or nothing (see [`super::group`]).
//!
//! Race-free across nodes:
//! - **Admission**: the transaction takes an advisory lock per queue it adds to (in name
//!   order, so two transactions never wait on each other in a circle) before it counts what
//!   waits there. A node inserting into the same queue waits until this one committed, and then
//!   counts this one's tasks too (each statement sees what committed before it began).
//! - **Idempotency**: keys already stored are replayed (or refused) up front; a key another
//!   node inserts at the same moment is caught by the unique index (`ON CONFLICT DO NOTHING`
//!   waits for that node's transaction and skips the row if it committed). Then the whole
//!   transaction starts over, and finds that key stored like any other.
//! - **Starting at once**: jobs that hold free workers (`insert_claiming`) then claim, in the
//!   same transaction, as the dispatcher's claim would (its locks and rules), for as many
//!   tasks as they may start together (see `store::starts`): one commit makes the tasks
//!   durable and started.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sqlx::{Acquire, PgConnection};

use super::admission::{Keyed, admit, by_keys, queue_callbacks};
use super::rows::to_json;
use super::{claim, deps};
use crate::store::starts::{self, Stored};
use crate::store::{ClaimNow, Inserted, StoreError, Submitted, parents};
use crate::task::{
    Callback, NewTask, ParentOutcome, ParentRef, QueueName, Task, TaskId, now_millis,
};

/// How often a transaction starts over after losing an idempotency race.
const RACES: usize = 3;

/// One submission: tasks stored together or not at all.
pub struct Job {
    pub tasks: Vec<NewTask>,
    pub default_max_queued: u64,
    /// Free workers the job holds: it may start up to so many tasks.
    pub claim: Option<ClaimNow>,
}

pub type Answer = Result<Submitted, StoreError>;

/// Stores the jobs in one transaction and answers each (a refused job stores nothing and
/// does not stop the others). `Err`: the transaction failed; no job was stored.
pub async fn insert_jobs(conn: &mut PgConnection, jobs: &[Job]) -> Result<Vec<Answer>, StoreError> {
    for _ in 0..RACES {
        let mut tx = conn.begin().await?;
        if let Some(answers) = try_insert(&mut tx, jobs).await? {
            tx.commit().await?;
            return Ok(answers);
        }
        // Lost an idempotency race: dropping `tx` rolls it back; the next try sees the key.
    }
    Err(StoreError::backend("idempotency keys kept racing"))
}

/// Where the jobs stand while they are planned: what waits in each queue and its limit,
/// and the keys stored (before or by an earlier job of this transaction).
struct Planning {
    room: BTreeMap<QueueName, (u64, Option<u64>)>,
    keys: Keyed,
    callbacks: HashMap<String, Callback>,
    /// The stored parents the jobs name, held until the transaction ends.
    parents: HashMap<TaskId, ParentOutcome>,
    now: i64,
}

/// One planned job: its answers, and the rows to insert.
struct Planned {
    answers: Vec<Inserted>,
    rows: Vec<(Task, Option<String>)>,
}

async fn try_insert(
    conn: &mut PgConnection,
    jobs: &[Job],
) -> Result<Option<Vec<Answer>>, StoreError> {
    let all = || jobs.iter().flat_map(|job| job.tasks.iter());
    let keys: Vec<String> = all()
        .filter_map(|t| t.idempotency.as_ref().map(|i| i.key.clone()))
        .collect();
    let queues: BTreeSet<QueueName> = all().map(|t| t.queue.clone()).collect();
    let named: BTreeSet<TaskId> = all()
        .flat_map(|t| t.after.iter())
        .filter_map(|parent| match parent {
            ParentRef::Task(id) => Some(*id),
            ParentRef::Item(_) => None,
        })
        .collect();
    let named: Vec<TaskId> = named.into_iter().collect();
    let mut planning = Planning {
        keys: by_keys(conn, keys).await?,
        callbacks: queue_callbacks(conn, &queues).await?,
        parents: deps::hold_parents(conn, &named).await?,
        room: BTreeMap::new(),
        now: now_millis(),
    };
    // In name order: the lock order.
    for queue in queues {
        let counted = admit(conn, &queue).await?;
        planning.room.insert(queue, counted);
    }
    let mut answers: Vec<Stored> = Vec::with_capacity(jobs.len());
    let (mut rows, mut edges) = (Vec::new(), Vec::new());
    for job in jobs {
        match plan(&mut planning, job) {
            Ok(planned) => {
                rows.extend(planned.rows);
                edges.extend(parents::edges(&planned.answers));
                answers.push(Ok(planned.answers));
            }
            Err(refused) => answers.push(Err(refused)),
        }
    }
    if !rows.is_empty() && insert_all(conn, &rows).await? < rows.len() {
        return Ok(None);
    }
    deps::insert_edges(conn, &edges).await?;
    Ok(Some(start(conn, jobs, answers).await?))
}

/// Claims for the jobs that may start tasks, as the dispatcher's claim would, and shares
/// out what started. A claim that fails is undone (to its savepoint) and starts nothing:
/// the tasks stay queued for the dispatcher, and the jobs' inserts stand.
async fn start(
    conn: &mut PgConnection,
    jobs: &[Job],
    stored: Vec<Stored>,
) -> Result<Vec<Answer>, StoreError> {
    let claims: Vec<Option<ClaimNow>> = jobs.iter().map(|job| job.claim).collect();
    let (budgets, terms) = starts::plan(&stored, &claims);
    let mut started = Vec::new();
    if let Some(terms) = terms {
        let mut savepoint = conn.begin().await?;
        match claim::task_claim(&mut savepoint, terms.limit, terms.lease_expires_at).await {
            Ok(claimed) => {
                savepoint.commit().await?;
                started = claimed;
            }
            Err(error) => {
                savepoint.rollback().await?;
                tracing::error!(%error, "a submit's claim failed; the dispatcher will claim");
            }
        }
    }
    Ok(starts::share(started, stored, &budgets))
}

/// Decides one job against `planning`, which it updates only if the job is accepted.
fn plan(planning: &mut Planning, job: &Job) -> Result<Planned, StoreError> {
    let mut room = planning.room.clone();
    let mut keys: Keyed = HashMap::new();
    let mut planned = Planned {
        answers: Vec::with_capacity(job.tasks.len()),
        rows: Vec::new(),
    };
    for new in &job.tasks {
        if let Some(idempotency) = &new.idempotency {
            let (key, hash) = (&idempotency.key, &idempotency.request_hash);
            if let Some((first_hash, first)) = keys.get(key).or(planning.keys.get(key)) {
                if first_hash != hash {
                    return Err(StoreError::IdempotencyConflict(key.clone()));
                }
                planned.answers.push(Inserted {
                    task: first.clone(),
                    replayed: true,
                    waiting_before: 0,
                });
                continue;
            }
        }
        // Every queue of the jobs was counted before planning.
        let (waiting, limit) = room.get_mut(&new.queue).expect("counted");
        let limit = limit.unwrap_or(job.default_max_queued);
        if *waiting >= limit {
            return Err(StoreError::QueueFull {
                queue: new.queue.clone(),
                limit,
            });
        }
        let waiting_before = *waiting;
        *waiting += 1;
        let default_callback = planning.callbacks.get(new.queue.as_str()).cloned();
        let (mut task, hash) = new.clone().into_task(planning.now, default_callback);
        if !new.after.is_empty() {
            let (after, input_from) = parents::resolve(new, &planned.answers)?;
            let mut found = parents::earlier_outcomes(&planned.answers);
            for id in &after {
                if let Some(stored) = planning.parents.get(id) {
                    found.entry(*id).or_insert_with(|| stored.clone());
                }
            }
            let outcomes = parents::new_outcomes(&after, &found)?;
            task.start_after(after, new.after_policy, input_from, &outcomes, planning.now);
        }
        if let Some(hash) = &hash {
            keys.insert(
                task.idempotency_key.clone().unwrap_or_default(),
                (hash.clone(), task.clone()),
            );
        }
        planned.answers.push(Inserted {
            task: task.clone(),
            replayed: false,
            waiting_before,
        });
        planned.rows.push((task, hash));
    }
    planning.room = room;
    planning.keys.extend(keys);
    Ok(planned)
}

/// The most input text one INSERT carries (beyond its first row); more goes in the next.
const INSERT_BYTES: usize = 4 * 1024 * 1024;

/// Inserts the rows, in one statement unless their inputs are large; returns how many were
/// inserted (fewer: a key was stored by another node meanwhile).
///
/// A statement's input texts exist three times while it is sent (the array, sqlx's encoding
/// of it, the connection's write buffer): a group commit of a hundred 1 MB inputs in one
/// statement took ~300 MB at once. Inputs become text here, one statement at a time.
async fn insert_all(
    conn: &mut PgConnection,
    rows: &[(Task, Option<String>)],
) -> Result<usize, StoreError> {
    let (mut inserted, mut start) = (0, 0);
    while start < rows.len() {
        let (mut inputs, mut bytes) = (Vec::new(), 0);
        while let Some((task, _)) = rows.get(start + inputs.len()) {
            if !inputs.is_empty() && bytes >= INSERT_BYTES {
                break;
            }
            let input = task.input.to_string();
            bytes += input.len();
            inputs.push(Some(input));
        }
        let end = start + inputs.len();
        inserted += insert_rows(conn, &rows[start..end], inputs).await?;
        start = end;
    }
    Ok(inserted)
}

/// Inserts the rows in one statement, with `inputs` their input texts.
async fn insert_rows(
    conn: &mut PgConnection,
    rows: &[(Task, Option<String>)],
    inputs: Vec<Option<String>>,
) -> Result<usize, StoreError> {
    let text = |f: &dyn Fn(&Task) -> Option<String>| -> Vec<Option<String>> {
        rows.iter().map(|(task, _)| f(task)).collect()
    };
    let number = |f: &dyn Fn(&Task) -> Option<i64>| -> Vec<Option<i64>> {
        rows.iter().map(|(task, _)| f(task)).collect()
    };
    let hashes: Vec<Option<String>> = rows.iter().map(|(_, hash)| hash.clone()).collect();
    let inserted = sqlx::query(
        "INSERT INTO tasks (id, queue, kind, input, state, priority, max_attempts, \
             backoff_base_ms, backoff_cap_ms, timeout_ms, run_at, labels, idempotency_key, \
             request_hash, created_at, callback_url, callback_secret, traceparent, tracestate, \
             parents, after_policy, input_from, error, finished_at) \
         SELECT id::uuid, queue, kind, input, state, priority::integer, max_attempts::integer, \
             backoff_base_ms, backoff_cap_ms, timeout_ms, run_at, labels, idempotency_key, \
             request_hash, created_at, callback_url, callback_secret, traceparent, tracestate, \
             parents, after_policy, input_from::uuid, error, finished_at \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], \
             $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], \
             $12::text[], $13::text[], $14::text[], $15::bigint[], $16::text[], $17::text[], \
             $18::text[], $19::text[], $20::text[], $21::text[], $22::text[], $23::text[], \
             $24::bigint[]) \
             AS new (id, queue, kind, input, state, priority, max_attempts, backoff_base_ms, \
                 backoff_cap_ms, timeout_ms, run_at, labels, idempotency_key, request_hash, \
                 created_at, callback_url, callback_secret, traceparent, tracestate, parents, \
                 after_policy, input_from, error, finished_at) \
         ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING",
    )
    .bind(text(&|t| Some(t.id.to_string())))
    .bind(text(&|t| Some(t.queue.to_string())))
    .bind(text(&|t| Some(t.kind.to_string())))
    .bind(inputs)
    .bind(text(&|t| Some(t.state.as_str().to_owned())))
    .bind(number(&|t| Some(t.priority.into())))
    .bind(number(&|t| Some(t.max_attempts.into())))
    .bind(number(&|t| Some(t.backoff.base_ms as i64)))
    .bind(number(&|t| Some(t.backoff.cap_ms as i64)))
    .bind(number(&|t| t.timeout_ms.map(|ms| ms as i64)))
    .bind(number(&|t| t.run_at))
    .bind(text(&|t| Some(to_json(&t.labels))))
    .bind(text(&|t| t.idempotency_key.clone()))
    .bind(hashes)
    .bind(number(&|t| Some(t.created_at)))
    .bind(text(&|t| t.callback.as_ref().map(|c| c.url.clone())))
    .bind(text(&|t| {
        t.callback.as_ref().and_then(|c| c.secret.clone())
    }))
    .bind(text(&|t| t.trace.as_ref().map(|c| c.parent.to_string())))
    .bind(text(&|t| t.trace.as_ref().and_then(|c| c.state.clone())))
    // A task with parents: they, its policy, and (cancelled at once when a parent had
    // already failed) its error and end.
    .bind(text(&|t| (!t.after.is_empty()).then(|| to_json(&t.after))))
    .bind(text(&|t| t.after_policy.map(|p| p.as_str().to_owned())))
    .bind(text(&|t| t.input_from.map(|id| id.to_string())))
    .bind(text(&|t| t.error.as_ref().map(to_json)))
    .bind(number(&|t| t.finished_at))
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskState;
    use crate::task::{Idempotency, Kind};

    fn planning(waiting: u64, limit: Option<u64>) -> Planning {
        Planning {
            room: [(QueueName::default(), (waiting, limit))]
                .into_iter()
                .collect(),
            keys: HashMap::new(),
            callbacks: HashMap::new(),
            parents: HashMap::new(),
            now: 1_000,
        }
    }

    fn job(tasks: Vec<NewTask>, default_max_queued: u64) -> Job {
        Job {
            tasks,
            default_max_queued,
            claim: None,
        }
    }

    fn new(key: Option<(&str, &str)>) -> NewTask {
        NewTask {
            idempotency: key.map(|(key, hash)| Idempotency {
                key: key.into(),
                request_hash: hash.into(),
            }),
            ..NewTask::new(QueueName::default(), Kind::parse("echo").unwrap(), 1.into())
        }
    }

    #[test]
    fn a_refused_job_leaves_no_trace_for_the_next() {
        let mut planning = planning(1, None);
        let refused = plan(
            &mut planning,
            &job(vec![new(Some(("k", "h"))), new(None)], 2),
        );
        assert!(matches!(
            refused,
            Err(StoreError::QueueFull { limit: 2, .. })
        ));
        assert_eq!(planning.room[&QueueName::default()].0, 1);
        assert!(planning.keys.is_empty());
        let accepted = plan(&mut planning, &job(vec![new(Some(("k", "h")))], 2)).unwrap();
        assert_eq!(accepted.answers[0].waiting_before, 1);
        let replay = plan(&mut planning, &job(vec![new(Some(("k", "h")))], 2)).unwrap();
        assert!(replay.answers[0].replayed && replay.rows.is_empty());
        let conflict = plan(&mut planning, &job(vec![new(Some(("k", "other")))], 9));
        assert!(matches!(conflict, Err(StoreError::IdempotencyConflict(_))));
    }

    #[test]
    fn a_queue_limit_overrides_the_default_and_delays_schedule() {
        let mut planning = planning(0, Some(1));
        let later = NewTask {
            run_at: Some(5_000),
            ..new(None)
        };
        let planned = plan(&mut planning, &job(vec![later], 100)).unwrap();
        assert_eq!(planned.answers[0].task.state, TaskState::Scheduled);
        let refused = plan(&mut planning, &job(vec![new(None)], 100));
        assert!(matches!(
            refused,
            Err(StoreError::QueueFull { limit: 1, .. })
        ));
    }
}
