//! The SQLite schedule queries (`schedules`, migration 0007). The one writer serialises every
//! write, so the guarded move of `next_at` can only lose to a `PUT` that moved it first.

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::access::QueueScope;
use crate::store::StoreError;
use crate::store::schedules::{self, SCHEDULE_COLUMNS, ScheduleColumns};
use crate::store::sql::Dialect;
use crate::task::{Millis, Schedule, ScheduleName, TaskId};

fn schedule_row(row: &Row<'_>) -> rusqlite::Result<ScheduleColumns> {
    Ok(ScheduleColumns {
        name: row.get(0)?,
        cron: row.get(1)?,
        timezone: row.get(2)?,
        task: row.get(3)?,
        overlap: row.get(4)?,
        catch_up: row.get(5)?,
        paused: row.get(6)?,
        next_at: row.get(7)?,
        last_task_id: row.get(8)?,
        last_slot_at: row.get(9)?,
        created_at: row.get(10)?,
        updated_at: row.get(11)?,
    })
}

fn collect(
    rows: impl Iterator<Item = rusqlite::Result<ScheduleColumns>>,
) -> Result<Vec<Schedule>, StoreError> {
    rows.map(|row| row?.into_schedule()).collect()
}

pub fn schedule_put(conn: &Connection, schedule: &Schedule) -> Result<Schedule, StoreError> {
    let [name, cron, timezone, queue, task, overlap, catch_up] = schedules::texts(schedule);
    conn.prepare_cached(&schedules::put_sql(Dialect::Sqlite))?
        .query_row(
            params![
                name,
                cron,
                timezone,
                queue,
                task,
                overlap,
                catch_up,
                schedule.paused,
                schedule.next_at,
                schedule.created_at,
                schedule.updated_at
            ],
            schedule_row,
        )?
        .into_schedule()
}

pub fn schedule_get(
    conn: &Connection,
    name: &ScheduleName,
) -> Result<Option<Schedule>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE name = ?1"
    ))?
    .query_row([name.as_str()], schedule_row)
    .optional()?
    .map(ScheduleColumns::into_schedule)
    .transpose()
}

pub fn schedule_list(
    conn: &Connection,
    after: Option<&ScheduleName>,
    limit: usize,
    queues: &QueueScope,
) -> Result<Vec<Schedule>, StoreError> {
    let list = schedules::list(Dialect::Sqlite, after, limit, queues);
    let mut statement = conn.prepare_cached(&list.sql)?;
    let rows = statement.query_map(rusqlite::params_from_iter(list.values), schedule_row)?;
    collect(rows)
}

pub fn schedule_delete(conn: &Connection, name: &ScheduleName) -> Result<bool, StoreError> {
    let deleted = conn
        .prepare_cached("DELETE FROM schedules WHERE name = ?1")?
        .execute([name.as_str()])?;
    Ok(deleted > 0)
}

pub fn schedules_due(
    conn: &Connection,
    now: Millis,
    limit: usize,
) -> Result<Vec<Schedule>, StoreError> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE paused = 0 AND next_at <= ?1 \
         ORDER BY next_at LIMIT ?2"
    ))?;
    let rows = statement.query_map(params![now, limit as i64], schedule_row)?;
    collect(rows)
}

pub fn schedule_next_at(conn: &Connection) -> Result<Option<Millis>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT MIN(next_at) FROM schedules WHERE paused = 0")?
        .query_row([], |row| row.get(0))?)
}

pub fn schedule_fired(
    conn: &Connection,
    name: &ScheduleName,
    expected_next_at: Millis,
    next_at: Millis,
    fired: Option<(TaskId, Millis)>,
) -> Result<bool, StoreError> {
    let (task, slot) = schedules::fired_values(fired);
    let moved = conn
        .prepare_cached(&schedules::fired_sql(Dialect::Sqlite))?
        .execute(params![
            name.as_str(),
            expected_next_at,
            next_at,
            task,
            slot
        ])?;
    Ok(moved > 0)
}
