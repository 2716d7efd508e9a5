//! `/v1/queues`: what each queue holds, and its settings (pause, concurrency, max depth,
//! rate limit, default callback).

use axum::extract::{Path, State};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::error::ApiError;
use super::extract::Json;
use super::submit::CallbackRequest;
use super::{AppState, Route};
use crate::access::Scope;
use crate::store::{CallbackCounts, QueueInfo, QueuePatch, RateLimit};
use crate::task::{Callback, QueueName, TaskState, now_millis};

/// The largest per-queue `max_queued` accepted (a trillion: beyond any real backlog).
const MAX_QUEUED_LIMIT: u64 = 1_000_000_000_000;
/// The largest `rate.limit` accepted: the log of starts holds up to this many rows per queue.
const MAX_RATE_LIMIT: u64 = 100_000;
/// The longest `rate.per_ms` window accepted: a day.
const MAX_RATE_WINDOW_MS: u64 = 86_400_000;

pub(super) fn routes() -> Vec<Route> {
    vec![
        Route::get("/v1/queues", axum::routing::get(list)).scope(Scope::Read),
        Route::get("/v1/queues/{name}", axum::routing::get(get_queue)).scope(Scope::Read),
        Route::patch("/v1/queues/{name}", axum::routing::patch(update)).scope(Scope::Admin),
    ]
}

/// A queue as served (`Queue` in openapi.yaml, which lists exactly these fields).
#[derive(Debug, Serialize)]
struct QueueBody {
    name: QueueName,
    paused: bool,
    concurrency: Option<u32>,
    max_queued: Option<u64>,
    remote: bool,
    rate: Option<RateLimit>,
    callback: Option<Callback>,
    callbacks: CallbackCounts,
    counts: BTreeMap<TaskState, u64>,
    oldest_queued_age_ms: Option<i64>,
    finished_last_minute: u64,
}

impl From<QueueInfo> for QueueBody {
    fn from(info: QueueInfo) -> QueueBody {
        QueueBody {
            name: info.name,
            paused: info.paused,
            concurrency: info.concurrency,
            max_queued: info.max_queued,
            remote: info.remote,
            rate: info.rate,
            callback: info.callback,
            callbacks: info.callbacks,
            counts: info.counts,
            oldest_queued_age_ms: info.oldest_queued_at.map(|at| (now_millis() - at).max(0)),
            finished_last_minute: info.finished_last_minute,
        }
    }
}

/// The answer of `GET /v1/queues`.
#[derive(Debug, Serialize)]
struct QueueList {
    queues: Vec<QueueBody>,
}

fn queue_name(raw: String) -> Result<QueueName, ApiError> {
    QueueName::parse(raw).map_err(|e| ApiError::InvalidPath(format!("queue name: {e}")))
}

async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<QueueList>, ApiError> {
    let queues = state
        .engine
        .queues(&caller.queues)
        .await?
        .into_iter()
        .map(QueueBody::from)
        .collect();
    Ok(axum::Json(QueueList { queues }))
}

/// Queues exist from their first use; one never used answers with zero counts.
async fn get_queue(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<axum::Json<QueueBody>, ApiError> {
    let info = state
        .engine
        .queue(queue_name(name)?, &caller.queues)
        .await?;
    Ok(axum::Json(info.into()))
}

/// The body of `PATCH /v1/queues/{name}`: absent fields stay as they are; `null` clears a
/// limit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueUpdate {
    paused: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    concurrency: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present")]
    max_queued: Option<Option<u64>>,
    /// Served by remote workers over HTTP (`POST /v1/queues/{name}/lease`).
    remote: Option<bool>,
    /// The default callback of the queue's tasks; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    callback: Option<Option<CallbackRequest>>,
    /// At most `limit` attempts start per `per_ms`; `null` removes the limit.
    #[serde(default, deserialize_with = "present")]
    rate: Option<Option<RateRequest>>,
}

/// A rate limit as a client writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateRequest {
    limit: u64,
    per_ms: u64,
}

impl RateRequest {
    fn parse(self) -> Result<RateLimit, ApiError> {
        let out_of = |field: &str, max: u64, got: u64| ApiError::InvalidField {
            field: field.to_owned(),
            message: format!("must be a whole number from 1 to {max}, got {got}"),
        };
        if !(1..=MAX_RATE_LIMIT).contains(&self.limit) {
            return Err(out_of("rate.limit", MAX_RATE_LIMIT, self.limit));
        }
        if !(1..=MAX_RATE_WINDOW_MS).contains(&self.per_ms) {
            return Err(out_of("rate.per_ms", MAX_RATE_WINDOW_MS, self.per_ms));
        }
        Ok(RateLimit {
            limit: self.limit as u32,
            per_ms: self.per_ms,
        })
    }
}

/// Tells a field given as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(update): Json<QueueUpdate>,
) -> Result<axum::Json<QueueBody>, ApiError> {
    if let Some(Some(max_queued)) = update.max_queued
        && max_queued > MAX_QUEUED_LIMIT
    {
        return Err(ApiError::InvalidField {
            field: "max_queued".to_owned(),
            message: format!(
                "must be a whole number from 0 to {MAX_QUEUED_LIMIT}, got {max_queued}"
            ),
        });
    }
    let patch = QueuePatch {
        paused: update.paused,
        concurrency: update.concurrency,
        max_queued: update.max_queued,
        callback: match update.callback {
            None => None,
            Some(None) => Some(None),
            Some(Some(callback)) => Some(Some(callback.parse("callback")?)),
        },
        remote: update.remote,
        rate: match update.rate {
            None => None,
            Some(None) => Some(None),
            Some(Some(rate)) => Some(Some(rate.parse()?)),
        },
    };
    let info = state
        .engine
        .update_queue(queue_name(name)?, patch, &caller.queues)
        .await?;
    Ok(axum::Json(info.into()))
}
