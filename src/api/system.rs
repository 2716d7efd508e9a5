//! Health, readiness, the registered kinds, the OpenAPI contract and the dashboard.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::error::ApiError;
use super::{AppState, MetricsState, Route};
use crate::access::{QueueScope, Scope};

/// The contract, served as written.
const OPENAPI: &str = include_str!("../../openapi.yaml");
/// A one-page dashboard: queues, recent tasks and live events, from the public API only.
const DASHBOARD: &str = include_str!("static/dashboard.html");

pub(super) fn routes() -> Vec<Route> {
    vec![
        Route::get("/", axum::routing::get(dashboard)).open(),
        Route::get("/healthz", axum::routing::get(healthz)).open(),
        Route::get("/readyz", axum::routing::get(readyz)).open(),
        Route::get("/openapi.yaml", axum::routing::get(openapi)).open(),
        Route::get("/v1/kinds", axum::routing::get(kinds)).scope(Scope::Read),
        Route::get("/metrics", axum::routing::get(metrics)).scope(Scope::Read),
    ]
}

/// The Prometheus text page: this process's metrics and this server's queue gauges.
pub(super) async fn metrics(State(state): State<MetricsState>) -> impl IntoResponse {
    let depth = state
        .depth
        .text(|| state.engine.queues(&QueueScope::All))
        .await;
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        crate::metrics::render(&depth),
    )
}

/// Alive: the process answers. Says nothing of the database.
async fn healthz() -> axum::Json<Value> {
    axum::Json(json!({ "status": "ok" }))
}

/// Ready for traffic: started and not draining.
async fn readyz(State(state): State<AppState>) -> Result<axum::Json<Value>, ApiError> {
    if state.engine.is_draining() {
        return Err(crate::engine::EngineError::Draining.into());
    }
    if !state.engine.is_ready() {
        return Err(ApiError::NotReady);
    }
    Ok(axum::Json(json!({ "status": "ready" })))
}

async fn openapi() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/yaml"),
        )],
        OPENAPI,
    )
}

async fn dashboard() -> axum::response::Html<&'static str> {
    axum::response::Html(DASHBOARD)
}

async fn kinds(State(state): State<AppState>) -> axum::Json<Value> {
    axum::Json(json!({ "kinds": state.engine.kinds() }))
}
