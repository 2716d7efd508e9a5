//! Health, readiness, the registered kinds, the OpenAPI contract and the dashboard.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::error::ApiError;
use super::proxy::Links;
use super::{AppState, MetricsState, Route};
use crate::access::{QueueScope, Scope};

/// The contract, served as written.
const OPENAPI: &str = include_str!("../../openapi.yaml");
/// A one-page dashboard: queues, recent tasks and live events, from the public API only.
const DASHBOARD: &str = include_str!("static/dashboard.html");
/// The dashboard's `<base>`, which [`dashboard`] points at the server's root as the client
/// sees it; the page's URLs are relative to it.
const DASHBOARD_BASE: &str = r#"<base href="/">"#;

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

async fn dashboard(links: Links) -> axum::response::Html<String> {
    // The prefix is checked to be URL-safe characters only: nothing to escape in an attribute.
    let base = format!(r#"<base href="{}/">"#, links.prefix());
    axum::response::Html(DASHBOARD.replacen(DASHBOARD_BASE, &base, 1))
}

async fn kinds(State(state): State<AppState>) -> axum::Json<Value> {
    axum::Json(json!({ "kinds": state.engine.kinds() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page has the one `<base>` the server rewrites, and no URL that ignores it.
    #[test]
    fn the_dashboard_has_a_base_and_only_relative_urls() {
        assert_eq!(DASHBOARD.matches(DASHBOARD_BASE).count(), 1);
        for absolute in ["(\"/", "(`/", "href=\"/\"", "src=\"/"] {
            let count = DASHBOARD.matches(absolute).count();
            let allowed = usize::from(absolute == "href=\"/\"");
            assert_eq!(count, allowed, "`{absolute}` in the dashboard");
        }
    }
}
