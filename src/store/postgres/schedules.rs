//! The PostgreSQL schedule queries (`schedules`, migration 0007). Every node's maintainer reads
//! the due schedules; the guarded move of `next_at` lets one node's pass win, and the slot's
//! idempotency key makes the loser's insert a replay, not a second task.

use sqlx::{PgConnection, Row};

use crate::access::QueueScope;
use crate::store::StoreError;
use crate::store::schedules::{self, SCHEDULE_COLUMNS, ScheduleColumns};
use crate::store::sql::Dialect;
use crate::task::{Millis, Schedule, ScheduleName, TaskId};

fn schedule_row(row: &sqlx::postgres::PgRow) -> Result<Schedule, StoreError> {
    ScheduleColumns {
        name: row.try_get(0)?,
        cron: row.try_get(1)?,
        timezone: row.try_get(2)?,
        task: row.try_get(3)?,
        overlap: row.try_get(4)?,
        catch_up: row.try_get(5)?,
        paused: row.try_get(6)?,
        next_at: row.try_get(7)?,
        last_task_id: row.try_get(8)?,
        last_slot_at: row.try_get(9)?,
        created_at: row.try_get(10)?,
        updated_at: row.try_get(11)?,
    }
    .into_schedule()
}

pub async fn schedule_put(
    conn: &mut PgConnection,
    schedule: &Schedule,
) -> Result<Schedule, StoreError> {
    let sql = schedules::put_sql(Dialect::Postgres);
    let mut statement = sqlx::query(&sql);
    for text in schedules::texts(schedule) {
        statement = statement.bind(text);
    }
    let row = statement
        .bind(schedule.paused)
        .bind(schedule.next_at)
        .bind(schedule.created_at)
        .bind(schedule.updated_at)
        .fetch_one(conn)
        .await?;
    schedule_row(&row)
}

pub async fn schedule_get(
    conn: &mut PgConnection,
    name: &ScheduleName,
) -> Result<Option<Schedule>, StoreError> {
    sqlx::query(&format!(
        "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE name = $1"
    ))
    .bind(name.as_str())
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(schedule_row)
    .transpose()
}

pub async fn schedule_list(
    conn: &mut PgConnection,
    after: Option<&ScheduleName>,
    limit: usize,
    queues: &QueueScope,
) -> Result<Vec<Schedule>, StoreError> {
    let list = schedules::list(Dialect::Postgres, after, limit, queues);
    let mut statement = sqlx::query(&list.sql);
    for value in list.values {
        statement = statement.bind(value);
    }
    statement
        .fetch_all(conn)
        .await?
        .iter()
        .map(schedule_row)
        .collect()
}

pub async fn schedule_delete(
    conn: &mut PgConnection,
    name: &ScheduleName,
) -> Result<bool, StoreError> {
    let deleted = sqlx::query("DELETE FROM schedules WHERE name = $1")
        .bind(name.as_str())
        .execute(conn)
        .await?;
    Ok(deleted.rows_affected() > 0)
}

pub async fn schedules_due(
    conn: &mut PgConnection,
    now: Millis,
    limit: usize,
) -> Result<Vec<Schedule>, StoreError> {
    sqlx::query(&format!(
        "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE NOT paused AND next_at <= $1 \
         ORDER BY next_at LIMIT $2"
    ))
    .bind(now)
    .bind(limit as i64)
    .fetch_all(conn)
    .await?
    .iter()
    .map(schedule_row)
    .collect()
}

pub async fn schedule_next_at(conn: &mut PgConnection) -> Result<Option<Millis>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT MIN(next_at) FROM schedules WHERE NOT paused")
            .fetch_one(conn)
            .await?,
    )
}

pub async fn schedule_fired(
    conn: &mut PgConnection,
    name: &ScheduleName,
    expected_next_at: Millis,
    next_at: Millis,
    fired: Option<(TaskId, Millis)>,
) -> Result<bool, StoreError> {
    let (task, slot) = schedules::fired_values(fired);
    let sql = schedules::fired_sql(Dialect::Postgres);
    let moved = sqlx::query(&sql)
        .bind(name.as_str())
        .bind(expected_next_at)
        .bind(next_at)
        .bind(task)
        .bind(slot)
        .execute(conn)
        .await?;
    Ok(moved.rows_affected() > 0)
}
