//! Health, readiness, the registered kinds, the OpenAPI contract and the console.

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
/// The console's page: its markup, with its style sheet and scripts put in at the markers
/// below, so the browser gets one self-contained page (no second request, nothing from
/// elsewhere) while each part stays a file of its own. It uses the public API only.
const CONSOLE_HTML: &str = include_str!("static/console.html");
const CONSOLE_CSS: &str = include_str!("static/console.css");
const CONSOLE_JS: [&str; 3] = [
    include_str!("static/console-core.js"),
    include_str!("static/console-queues.js"),
    include_str!("static/console-tasks.js"),
];
const CSS_MARKER: &str = "/*CSS*/";
const JS_MARKER: &str = "//JS";
/// The console's `<base>`, which [`dashboard`] points at the server's root as the client
/// sees it; the page's URLs are relative to it.
const DASHBOARD_BASE: &str = r#"<base href="/">"#;

/// The console's page, put together once.
fn console_page() -> &'static str {
    static PAGE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        CONSOLE_HTML.replacen(CSS_MARKER, CONSOLE_CSS, 1).replacen(
            JS_MARKER,
            &CONSOLE_JS.join("\n"),
            1,
        )
    });
    &PAGE
}

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
    axum::response::Html(console_page().replacen(DASHBOARD_BASE, &base, 1))
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
        let page = console_page();
        assert_eq!(page.matches(DASHBOARD_BASE).count(), 1);
        for absolute in ["(\"/", "(`/", "href=\"/\"", "src=\"/", "\"//"] {
            let count = page.matches(absolute).count();
            let allowed = usize::from(absolute == "href=\"/\"");
            assert_eq!(count, allowed, "`{absolute}` in the dashboard");
        }
    }

    /// Each part went in at its marker, and no marker is left.
    #[test]
    fn the_console_page_holds_its_style_and_scripts() {
        let page = console_page();
        assert!(!page.contains(CSS_MARKER) && !page.contains(JS_MARKER));
        for part in [CONSOLE_CSS].iter().chain(&CONSOLE_JS) {
            assert!(page.contains(part.trim()));
        }
    }
}
