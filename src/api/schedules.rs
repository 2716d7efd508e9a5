//! `/v1/schedules`: cron schedules that submit a task at each slot. A handler parses the body
//! once (the cron and its time zone checked here, the task as a submit is) and makes one
//! engine call; the engine scopes every schedule by its task's queue.
//!
//! Scopes: writing a schedule creates tasks, so it needs `submit` (and the caller's right to
//! the task's queue, as a submit does); reading needs `read`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{Json, Query};
use super::submit::SubmitRequest;
use super::{AppState, Route};
use crate::access::Scope;
use crate::engine::{ScheduleInfo, ScheduleSpec};
use crate::task::{
    CatchUp, Cron, CronError, Overlap, ScheduleName, TaskId, TaskState, TaskTemplate,
    rfc3339_string,
};

/// The page size of a listing when none is asked for, and the largest one allowed.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 100;
/// The longest cron expression and time zone name taken.
const MAX_CRON: usize = 256;
const MAX_TIMEZONE: usize = 64;

pub(super) fn routes() -> Vec<Route> {
    vec![
        Route::get("/v1/schedules", axum::routing::get(list))
            .scope(Scope::Read)
            .query(&["limit", "cursor"]),
        Route::get("/v1/schedules/{name}", axum::routing::get(get_schedule)).scope(Scope::Read),
        Route::put("/v1/schedules/{name}", axum::routing::put(put)).scope(Scope::Submit),
        Route::delete("/v1/schedules/{name}", axum::routing::delete(delete)).scope(Scope::Submit),
    ]
}

/// The body of `PUT /v1/schedules/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleRequest {
    cron: String,
    timezone: Option<String>,
    task: SubmitRequest,
    overlap: Option<String>,
    catch_up: Option<String>,
    paused: Option<bool>,
}

/// A schedule as served (`Schedule` in openapi.yaml, which lists exactly these fields).
#[derive(Debug, Serialize)]
struct ScheduleBody {
    name: ScheduleName,
    cron: String,
    timezone: String,
    task: TaskTemplate,
    overlap: Overlap,
    catch_up: CatchUp,
    paused: bool,
    /// The next five slots, RFC 3339 in UTC.
    next_fire_times: Vec<String>,
    last_run: Option<LastRun>,
    created_at: String,
    updated_at: String,
}

#[derive(Debug, Serialize)]
struct LastRun {
    id: TaskId,
    /// The slot it was fired for.
    slot: String,
    /// `null` once the task is gone (deleted, or past retention).
    state: Option<TaskState>,
}

impl From<ScheduleInfo> for ScheduleBody {
    fn from(info: ScheduleInfo) -> ScheduleBody {
        let s = info.schedule;
        ScheduleBody {
            last_run: s.last_task.zip(s.last_slot_at).map(|(id, slot)| LastRun {
                id,
                slot: rfc3339_string(slot),
                state: info.last_state,
            }),
            name: s.name,
            cron: s.cron,
            timezone: s.timezone,
            task: s.task,
            overlap: s.overlap,
            catch_up: s.catch_up,
            paused: s.paused,
            next_fire_times: info.upcoming.into_iter().map(rfc3339_string).collect(),
            created_at: rfc3339_string(s.created_at),
            updated_at: rfc3339_string(s.updated_at),
        }
    }
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidField {
        field: field.to_owned(),
        message: message.into(),
    }
}

fn schedule_name(raw: String) -> Result<ScheduleName, ApiError> {
    ScheduleName::parse(raw).map_err(|e| ApiError::InvalidPath(format!("schedule name: {e}")))
}

impl ScheduleRequest {
    fn parse(self, name: ScheduleName, state: &AppState) -> Result<ScheduleSpec, ApiError> {
        if self.cron.len() > MAX_CRON {
            return Err(invalid("cron", format!("at most {MAX_CRON} characters")));
        }
        let timezone = self.timezone.unwrap_or_else(|| "UTC".to_owned());
        if timezone.len() > MAX_TIMEZONE {
            return Err(invalid(
                "timezone",
                format!("at most {MAX_TIMEZONE} characters"),
            ));
        }
        Cron::parse(&self.cron, &timezone).map_err(|error| match error {
            CronError::Zone(_) => invalid("timezone", error.to_string()),
            _ => invalid("cron", error.to_string()),
        })?;
        let overlap = match self.overlap.as_deref() {
            None => Overlap::default(),
            Some(text) => Overlap::parse(text).ok_or_else(|| {
                invalid(
                    "overlap",
                    format!("must be `skip` or `allow`, got `{text}`"),
                )
            })?,
        };
        let catch_up = match self.catch_up.as_deref() {
            None => CatchUp::default(),
            Some(text) => CatchUp::parse(text).ok_or_else(|| {
                invalid(
                    "catch_up",
                    format!("must be `latest` or `none`, got `{text}`"),
                )
            })?,
        };
        Ok(ScheduleSpec {
            name,
            cron: self.cron.trim().to_owned(),
            timezone,
            task: self.task.parse_template(state.config.default_backoff)?,
            overlap,
            catch_up,
            paused: self.paused.unwrap_or(false),
        })
    }
}

/// 201 when created, 200 when an existing schedule was replaced.
async fn put(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(request): Json<ScheduleRequest>,
) -> Result<Response, ApiError> {
    let spec = request.parse(schedule_name(name)?, &state)?;
    let (info, created) = state.engine.put_schedule(spec, &caller.queues).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(ScheduleBody::from(info))).into_response())
}

async fn get_schedule(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<axum::Json<ScheduleBody>, ApiError> {
    let info = state
        .engine
        .schedule(schedule_name(name)?, &caller.queues)
        .await?;
    Ok(axum::Json(info.into()))
}

async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .engine
        .delete_schedule(schedule_name(name)?, &caller.queues)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    limit: Option<usize>,
    /// The name of the last schedule of the previous page.
    cursor: Option<String>,
}

/// The answer of `GET /v1/schedules`.
#[derive(Debug, Serialize)]
struct ScheduleList {
    schedules: Vec<ScheduleBody>,
    next_cursor: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> Result<axum::Json<ScheduleList>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::InvalidQuery(format!(
            "limit: must be a whole number from 1 to {MAX_PAGE}, got {limit}"
        )));
    }
    let after = query
        .cursor
        .map(ScheduleName::parse)
        .transpose()
        .map_err(|e| ApiError::InvalidQuery(format!("cursor: {e}")))?;
    let infos = state.engine.schedules(after, limit, &caller.queues).await?;
    let next_cursor = (infos.len() == limit)
        .then(|| infos.last().map(|info| info.schedule.name.to_string()))
        .flatten();
    Ok(axum::Json(ScheduleList {
        schedules: infos.into_iter().map(ScheduleBody::from).collect(),
        next_cursor,
    }))
}
