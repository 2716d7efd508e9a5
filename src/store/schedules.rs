//! What both stores share about schedules (`schedules`, migration 0007): a row's columns read
//! back as a [`Schedule`], and the listing's statement. The rest of the SQL is each store's
//! own (`sqlite/schedules.rs`, `postgres/schedules.rs`).

use crate::access::QueueScope;
use crate::store::StoreError;
use crate::store::sql::{self, Bound, Dialect};
use crate::task::{CatchUp, Millis, Overlap, Schedule, ScheduleName, TaskId, TaskTemplate};

/// The columns of `schedules`, in the order [`ScheduleColumns`] holds them.
pub const SCHEDULE_COLUMNS: &str = "name, cron, timezone, task, overlap, catch_up, paused, \
     next_at, last_task_id, last_slot_at, created_at, updated_at";

/// One row of `schedules` as stored.
pub struct ScheduleColumns {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub task: String,
    pub overlap: String,
    pub catch_up: String,
    pub paused: bool,
    pub next_at: Millis,
    pub last_task_id: Option<String>,
    pub last_slot_at: Option<Millis>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl ScheduleColumns {
    pub fn into_schedule(self) -> Result<Schedule, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("schedule `{}`: {what}", self.name));
        let task: TaskTemplate =
            serde_json::from_str(&self.task).map_err(|e| corrupt(&format!("task: {e}")))?;
        Ok(Schedule {
            name: ScheduleName::parse(self.name.clone()).map_err(|e| corrupt(&e.to_string()))?,
            overlap: Overlap::parse(&self.overlap).ok_or_else(|| corrupt("overlap"))?,
            catch_up: CatchUp::parse(&self.catch_up).ok_or_else(|| corrupt("catch_up"))?,
            last_task: self
                .last_task_id
                .as_deref()
                .map(str::parse::<TaskId>)
                .transpose()
                .map_err(|_| corrupt("last_task_id"))?,
            cron: self.cron,
            timezone: self.timezone,
            task,
            paused: self.paused,
            next_at: self.next_at,
            last_slot_at: self.last_slot_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// The values a write of `schedule` binds, in `SCHEDULE_COLUMNS` order after `paused`'s
/// neighbours: name, cron, timezone, queue, task JSON, overlap, catch_up.
pub fn texts(schedule: &Schedule) -> [String; 7] {
    [
        schedule.name.to_string(),
        schedule.cron.clone(),
        schedule.timezone.clone(),
        schedule.task.queue.to_string(),
        sql::to_json(&schedule.task),
        schedule.overlap.as_str().to_owned(),
        schedule.catch_up.as_str().to_owned(),
    ]
}

/// The upsert of a schedule: a new one is stored whole; a replaced one keeps its creation
/// time and its last run (the schedule's history), and takes everything else.
pub fn put_sql(dialect: Dialect) -> String {
    let p: Vec<String> = (1..=11).map(|n| dialect.placeholder(n)).collect();
    format!(
        "INSERT INTO schedules (name, cron, timezone, queue, task, overlap, catch_up, paused, \
         next_at, created_at, updated_at) \
         VALUES ({}) \
         ON CONFLICT (name) DO UPDATE SET cron = excluded.cron, timezone = excluded.timezone, \
         queue = excluded.queue, task = excluded.task, overlap = excluded.overlap, \
         catch_up = excluded.catch_up, paused = excluded.paused, next_at = excluded.next_at, \
         updated_at = excluded.updated_at \
         RETURNING {SCHEDULE_COLUMNS}",
        p.join(", ")
    )
}

/// The guarded move of a schedule's `next_at` (binds: name, expected next_at, next_at, then
/// [`fired_values`]): it keeps the last run when no slot fired.
pub fn fired_sql(dialect: Dialect) -> String {
    let p = |n| dialect.placeholder(n);
    format!(
        "UPDATE schedules SET next_at = {}, last_task_id = coalesce({}, last_task_id), \
         last_slot_at = coalesce({}, last_slot_at) WHERE name = {} AND next_at = {}",
        p(3),
        p(4),
        p(5),
        p(1),
        p(2)
    )
}

/// The fired task's id and its slot, as `fired_sql` binds them.
pub fn fired_values(fired: Option<(TaskId, Millis)>) -> (Option<String>, Option<Millis>) {
    fired.map(|(id, slot)| (id.to_string(), slot)).unzip()
}

/// `SELECT columns FROM schedules` by name after `after`, in `queues`, at most `limit`.
pub fn list(
    dialect: Dialect,
    after: Option<&ScheduleName>,
    limit: usize,
    queues: &QueueScope,
) -> Bound {
    sql::schedule_list(
        dialect,
        SCHEDULE_COLUMNS,
        after.map(|n| n.to_string()),
        limit,
        queues,
    )
}
