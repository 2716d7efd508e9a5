//! `task_insert`: admission control, idempotency and the insert of a batch, in one transaction.
//!
//! Race-free across nodes:
//! - **Admission**: the transaction takes an advisory lock per queue it adds to (in name
//!   order, so two batches never wait on each other in a circle) before it counts what waits
//!   there. A node inserting into the same queue waits until this one committed, and then
//!   counts this one's tasks too (each statement sees what committed before it began).
//! - **Idempotency**: keys already stored are replayed (or refused) up front; a key another
//!   node inserts at the same moment is caught by the unique index: `ON CONFLICT DO NOTHING`
//!   waits for that node's transaction and skips the row if it committed, and the task it
//!   stored is then replayed like any other.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sqlx::{Acquire, PgConnection};

use super::rows::{COLUMNS, to_json};
use crate::store::{Inserted, StoreError};
use crate::task::{Callback, NewTask, QueueName, Task, TaskId, TaskState, now_millis};

/// The first key of the advisory locks that guard one queue's admission ("adm").
const ADMISSION_LOCK: i32 = 0x61646d;

/// What became of one submission before the insert.
enum Plan {
    /// Stored earlier (or earlier in this batch, at this index) with the same request.
    Replay(Box<Task>),
    ReplayOf(usize),
    New(Box<Task>, Option<String>),
}

/// Tasks already stored under these keys, with the digest of the request that stored them.
async fn by_keys(
    conn: &mut PgConnection,
    keys: Vec<String>,
) -> Result<HashMap<String, (Task, String)>, StoreError> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "SELECT {COLUMNS}, request_hash FROM tasks WHERE idempotency_key = ANY($1::text[])"
    );
    let rows = sqlx::query(&sql).bind(keys).fetch_all(conn).await?;
    let mut found = HashMap::new();
    for row in &rows {
        let task = super::rows::task_from_row(row)?;
        let hash: String = sqlx::Row::try_get(row, "request_hash")?;
        if let Some(key) = task.idempotency_key.clone() {
            found.insert(key, (task, hash));
        }
    }
    Ok(found)
}

/// Replays `stored` if it was stored by the same request, refuses otherwise.
fn replay(stored: (Task, String), key: &str, hash: &str) -> Result<Plan, StoreError> {
    if stored.1 == hash {
        Ok(Plan::Replay(Box::new(stored.0)))
    } else {
        Err(StoreError::IdempotencyConflict(key.to_owned()))
    }
}

/// `new` as stored: `callbacks` holds the default callback of each queue that has one.
fn new_task(
    new: NewTask,
    now: i64,
    callbacks: &HashMap<String, Callback>,
) -> (Task, Option<String>) {
    let callback = new
        .callback
        .or_else(|| callbacks.get(new.queue.as_str()).cloned());
    let run_at = new.run_at.filter(|at| *at > now);
    let task = Task {
        id: TaskId::new(),
        state: if run_at.is_some() {
            TaskState::Scheduled
        } else {
            TaskState::Queued
        },
        queue: new.queue,
        kind: new.kind,
        input: new.input,
        priority: new.priority,
        attempt: 0,
        max_attempts: new.max_attempts,
        backoff: new.backoff,
        timeout_ms: new.timeout_ms,
        run_at,
        labels: new.labels,
        cancel_requested: false,
        result: None,
        error: None,
        errors: Vec::new(),
        progress: None,
        callback,
        callback_status: None,
        idempotency_key: new.idempotency.as_ref().map(|i| i.key.clone()),
        created_at: now,
        started_at: None,
        finished_at: None,
        lease: None,
    };
    (task, new.idempotency.map(|i| i.request_hash))
}

/// The default callbacks of the queues that have one, by queue name.
async fn queue_callbacks(
    conn: &mut PgConnection,
    queues: Vec<String>,
) -> Result<HashMap<String, Callback>, StoreError> {
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT name, callback_url, callback_secret FROM queues \
         WHERE name = ANY($1::text[]) AND callback_url IS NOT NULL",
    )
    .bind(queues)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, url, secret)| (name, Callback { url, secret }))
        .collect())
}

/// Locks `queue`'s admission for this transaction; returns (waiting tasks, their limit).
async fn admit(
    conn: &mut PgConnection,
    queue: &QueueName,
    default_max: u64,
) -> Result<(u64, u64), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(ADMISSION_LOCK)
        .bind(queue.as_str())
        .execute(&mut *conn)
        .await?;
    let (waiting, limit): (i64, Option<i64>) = sqlx::query_as(
        "SELECT (SELECT COALESCE(sum(n), 0)::bigint FROM queue_counts \
                 WHERE queue = $1 AND state IN ('queued', 'scheduled')), \
                (SELECT max_queued FROM queues WHERE name = $1)",
    )
    .bind(queue.as_str())
    .fetch_one(conn)
    .await?;
    Ok((waiting.max(0) as u64, limit.map_or(default_max, |l| l as u64)))
}

/// Inserts the new tasks in one statement; returns the ids that were inserted (a task whose
/// key another node stored meanwhile is not).
async fn insert_rows(
    conn: &mut PgConnection,
    rows: &[(&Task, Option<&String>)],
) -> Result<BTreeSet<String>, StoreError> {
    let column = |f: &dyn Fn(&Task) -> Option<String>| -> Vec<Option<String>> {
        rows.iter().map(|(task, _)| f(task)).collect()
    };
    let ids = column(&|t| Some(t.id.to_string()));
    let queues = column(&|t| Some(t.queue.to_string()));
    let kinds = column(&|t| Some(t.kind.to_string()));
    let inputs = column(&|t| Some(t.input.to_string()));
    let states = column(&|t| Some(t.state.as_str().to_owned()));
    let labels = column(&|t| Some(to_json(&t.labels)));
    let keys = column(&|t| t.idempotency_key.clone());
    let callback_urls = column(&|t| t.callback.as_ref().map(|c| c.url.clone()));
    let callback_secrets = column(&|t| t.callback.as_ref().and_then(|c| c.secret.clone()));
    let hashes: Vec<Option<String>> = rows.iter().map(|(_, h)| h.cloned()).collect();
    let numbers = |f: &dyn Fn(&Task) -> Option<i64>| -> Vec<Option<i64>> {
        rows.iter().map(|(task, _)| f(task)).collect()
    };
    let inserted: Vec<String> = sqlx::query_scalar(
        "INSERT INTO tasks (id, queue, kind, input, state, priority, max_attempts, \
             backoff_base_ms, backoff_cap_ms, timeout_ms, run_at, labels, idempotency_key, \
             request_hash, created_at, callback_url, callback_secret) \
         SELECT id::uuid, queue, kind, input, state, priority::integer, max_attempts::integer, \
             backoff_base_ms, backoff_cap_ms, timeout_ms, run_at, labels, idempotency_key, \
             request_hash, created_at, callback_url, callback_secret \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], \
             $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], \
             $12::text[], $13::text[], $14::text[], $15::bigint[], $16::text[], $17::text[]) \
             AS new (id, queue, kind, input, state, priority, max_attempts, backoff_base_ms, \
                 backoff_cap_ms, timeout_ms, run_at, labels, idempotency_key, request_hash, \
                 created_at, callback_url, callback_secret) \
         ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING \
         RETURNING id::text",
    )
    .bind(ids)
    .bind(queues)
    .bind(kinds)
    .bind(inputs)
    .bind(states)
    .bind(numbers(&|t| Some(t.priority.into())))
    .bind(numbers(&|t| Some(t.max_attempts.into())))
    .bind(numbers(&|t| Some(t.backoff.base_ms as i64)))
    .bind(numbers(&|t| Some(t.backoff.cap_ms as i64)))
    .bind(numbers(&|t| t.timeout_ms.map(|ms| ms as i64)))
    .bind(numbers(&|t| t.run_at))
    .bind(labels)
    .bind(keys)
    .bind(hashes)
    .bind(numbers(&|t| Some(t.created_at)))
    .bind(callback_urls)
    .bind(callback_secrets)
    .fetch_all(conn)
    .await?;
    Ok(inserted.into_iter().collect())
}

pub async fn task_insert(
    conn: &mut PgConnection,
    tasks: Vec<NewTask>,
    default_max_queued: u64,
) -> Result<Vec<Inserted>, StoreError> {
    let mut tx = conn.begin().await?;
    let keys = tasks
        .iter()
        .filter_map(|t| t.idempotency.as_ref().map(|i| i.key.clone()))
        .collect();
    let stored = by_keys(&mut tx, keys).await?;
    let names: BTreeSet<String> = tasks
        .iter()
        .filter(|t| t.callback.is_none())
        .map(|t| t.queue.to_string())
        .collect();
    let callbacks = if names.is_empty() {
        HashMap::new()
    } else {
        queue_callbacks(&mut tx, names.into_iter().collect()).await?
    };
    let now = now_millis();
    // Decide every submission first: replays (of stored tasks, or of an earlier item of this
    // batch) take no room; the rest are new.
    let mut first_with_key: HashMap<String, (usize, String)> = HashMap::new();
    let mut plans = Vec::with_capacity(tasks.len());
    for (index, new) in tasks.into_iter().enumerate() {
        if let Some(idempotency) = &new.idempotency {
            let (key, hash) = (&idempotency.key, &idempotency.request_hash);
            if let Some(found) = stored.get(key) {
                plans.push(replay(found.clone(), key, hash)?);
                continue;
            }
            if let Some((earlier, earlier_hash)) = first_with_key.get(key) {
                if earlier_hash != hash {
                    return Err(StoreError::IdempotencyConflict(key.clone()));
                }
                plans.push(Plan::ReplayOf(*earlier));
                continue;
            }
            first_with_key.insert(key.clone(), (index, hash.clone()));
        }
        let (task, hash) = new_task(new, now, &callbacks);
        plans.push(Plan::New(Box::new(task), hash));
    }
    // Admission, per queue, in name order (the lock order).
    let queues: BTreeSet<QueueName> = plans
        .iter()
        .filter_map(|plan| match plan {
            Plan::New(task, _) => Some(task.queue.clone()),
            _ => None,
        })
        .collect();
    let mut room: BTreeMap<QueueName, (u64, u64)> = BTreeMap::new();
    for queue in queues {
        let counted = admit(&mut tx, &queue, default_max_queued).await?;
        room.insert(queue, counted);
    }
    let mut waiting_before = vec![0; plans.len()];
    for (index, plan) in plans.iter().enumerate() {
        let Plan::New(task, _) = plan else { continue };
        // Every new task's queue was counted just above.
        let (waiting, limit) = room.get_mut(&task.queue).expect("counted");
        if *waiting >= *limit {
            return Err(StoreError::QueueFull {
                queue: task.queue.clone(),
                limit: *limit,
            });
        }
        waiting_before[index] = *waiting;
        *waiting += 1;
    }
    let rows: Vec<(&Task, Option<&String>)> = plans
        .iter()
        .filter_map(|plan| match plan {
            Plan::New(task, hash) => Some((&**task, hash.as_ref())),
            _ => None,
        })
        .collect();
    let inserted = if rows.is_empty() {
        BTreeSet::new()
    } else {
        insert_rows(&mut tx, &rows).await?
    };
    // A key another node stored since `by_keys`: replay its task (or refuse).
    let mut lost: Vec<usize> = Vec::new();
    for (index, plan) in plans.iter().enumerate() {
        if let Plan::New(task, _) = plan {
            if !inserted.contains(&task.id.to_string()) {
                lost.push(index);
            }
        }
    }
    if !lost.is_empty() {
        let keys = lost
            .iter()
            .filter_map(|i| match &plans[*i] {
                Plan::New(task, _) => task.idempotency_key.clone(),
                _ => None,
            })
            .collect();
        let raced = by_keys(&mut tx, keys).await?;
        for index in lost {
            let Plan::New(task, Some(hash)) = &plans[index] else {
                return Err(StoreError::Backend("an insert without a key was skipped".into()));
            };
            let key = task.idempotency_key.clone().unwrap_or_default();
            let found = raced
                .get(&key)
                .cloned()
                .ok_or_else(|| StoreError::Backend(format!("key `{key}` vanished")))?;
            plans[index] = replay(found, &key, hash)?;
            waiting_before[index] = 0;
        }
    }
    tx.commit().await?;
    let mut answers: Vec<Inserted> = Vec::with_capacity(plans.len());
    for (index, plan) in plans.into_iter().enumerate() {
        let answer = match plan {
            Plan::New(task, _) => Inserted {
                task: *task,
                replayed: false,
                waiting_before: waiting_before[index],
            },
            Plan::Replay(task) => Inserted {
                task: *task,
                replayed: true,
                waiting_before: 0,
            },
            Plan::ReplayOf(earlier) => Inserted {
                task: answers[earlier].task.clone(),
                replayed: true,
                waiting_before: 0,
            },
        };
        answers.push(answer);
    }
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delayed_task_starts_scheduled_and_a_past_one_queued() {
        let new = NewTask::new(
            QueueName::default(),
            crate::task::Kind::parse("echo").unwrap(),
            serde_json::json!({}),
        );
        let none = HashMap::new();
        let (task, hash) = new_task(NewTask { run_at: Some(5_000), ..new.clone() }, 1_000, &none);
        assert_eq!(task.state, TaskState::Scheduled);
        assert!(hash.is_none());
        let (task, _) = new_task(NewTask { run_at: Some(5), ..new }, 1_000, &none);
        assert_eq!((task.state, task.run_at), (TaskState::Queued, None));
    }
}
