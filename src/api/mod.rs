//! The HTTP API: routes, extractors, problem+json errors and the middleware stack.
//!
//! Each resource file lists its routes; this module merges them into one router and layers
//! it. The same list is [`route_table`], which a test holds against `openapi.yaml`, so the
//! contract and the router cannot drift apart. Handlers call the engine; none writes SQL.

mod auth;
mod body;
pub mod codes;
mod conn;
mod cursor;
pub mod error;
mod events;
mod extract;
mod front;
pub(crate) mod gate;
mod hosts;
mod nul;
mod params;
mod parents;
mod plain;
mod proxy;
mod queues;
mod schedules;
mod serve;
mod submit;
mod system;
mod tasks;
mod workers;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use tower::ServiceBuilder;
use tower_http::add_extension::AddExtensionLayer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnFailure, TraceLayer};

use crate::access::{AuthMode, Scope};
use crate::engine::Engine;
use crate::task::Backoff;
use body::BodyBudget;
use codes::ErrorCode;
use error::{ApiError, PROBLEM_JSON, problem_response, problem_with_status};
use extract::BodyLimit;
use gate::{Entry, Gate, GateLayer};

pub use auth::Caller;
pub use body::MEMORY_PER_BODY_BYTE;
pub use front::FrontDoor;
pub use hosts::{AllowedHosts, HostPolicy};
pub use proxy::{BasePath, Links, ProxyConfig, TrustedProxies};
pub use serve::{ServeLimits, default_max_connections, serve};

/// What every handler shares: one cloneable state.
#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub config: Arc<ApiConfig>,
    /// This server's per-queue gauges for `/metrics`, read from its store now and then.
    pub depth: Arc<crate::metrics::Depth>,
}

/// What `/metrics` needs, on the API's router or on its own (`--metrics-listen`).
#[derive(Clone)]
pub struct MetricsState {
    engine: Engine,
    depth: Arc<crate::metrics::Depth>,
}

impl axum::extract::FromRef<AppState> for MetricsState {
    fn from_ref(state: &AppState) -> MetricsState {
        MetricsState {
            engine: state.engine.clone(),
            depth: Arc::clone(&state.depth),
        }
    }
}

/// The API's limits and defaults; each has a flag in `config`.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub max_body_bytes: usize,
    /// The bytes of bodies read or parsed at once, over all requests.
    pub max_body_memory: usize,
    pub request_timeout: Duration,
    /// The retry backoff of a task that sets none.
    pub default_backoff: Backoff,
    /// When requests must carry a key.
    pub auth: AuthMode,
    /// The `Host` names answered to; `None`: any.
    pub allowed_hosts: HostPolicy,
    /// The longest a long-poll waits (`?wait=`, `Prefer: wait`, a lease's `wait_ms`); a
    /// longer one asked for is cut to it.
    pub max_wait: Duration,
}

/// One route: a method on a path, with its handler.
pub struct Route {
    method: Method,
    path: &'static str,
    handler: MethodRouter<AppState>,
    /// Ends by its own `wait` parameter, so the request timeout does not apply.
    long_poll: bool,
    /// The scope a caller's key needs; `None`: open to anyone (health, the contract, the
    /// dashboard's page, which asks for a key itself).
    scope: Option<Scope>,
    /// The query parameters it takes; any other answers 400 (see [`params`]).
    query: &'static [&'static str],
}

impl Route {
    fn get(path: &'static str, handler: MethodRouter<AppState>) -> Route {
        Route::new(Method::GET, path, handler)
    }

    fn post(path: &'static str, handler: MethodRouter<AppState>) -> Route {
        Route::new(Method::POST, path, handler)
    }

    fn patch(path: &'static str, handler: MethodRouter<AppState>) -> Route {
        Route::new(Method::PATCH, path, handler)
    }

    fn put(path: &'static str, handler: MethodRouter<AppState>) -> Route {
        Route::new(Method::PUT, path, handler)
    }

    fn delete(path: &'static str, handler: MethodRouter<AppState>) -> Route {
        Route::new(Method::DELETE, path, handler)
    }

    fn new(method: Method, path: &'static str, handler: MethodRouter<AppState>) -> Route {
        Route {
            method,
            path,
            handler,
            long_poll: false,
            // A route that names no scope is for admins only: forgetting fails closed.
            scope: Some(Scope::Admin),
            query: &[],
        }
    }

    /// Takes these query parameters (and no others).
    fn query(mut self, names: &'static [&'static str]) -> Route {
        self.query = names;
        self
    }

    fn scope(mut self, scope: Scope) -> Route {
        self.scope = Some(scope);
        self
    }

    /// Served without a key.
    fn open(mut self) -> Route {
        self.scope = None;
        self
    }

    fn long_poll(mut self) -> Route {
        self.long_poll = true;
        self
    }
}

fn routes() -> Vec<Route> {
    let mut routes = tasks::routes();
    routes.extend(events::routes());
    routes.extend(queues::routes());
    routes.extend(schedules::routes());
    routes.extend(workers::routes());
    routes.extend(system::routes());
    routes
}

/// Every (method, path) the router serves, in OpenAPI path syntax.
pub fn route_table() -> Vec<(Method, &'static str)> {
    routes()
        .into_iter()
        .map(|route| (route.method, route.path))
        .collect()
}

/// Every route with the scope it needs (`None`: open), for the contract and the tests.
pub fn route_scopes() -> Vec<(Method, &'static str, Option<Scope>)> {
    routes()
        .into_iter()
        .map(|route| (route.method, route.path, route.scope))
        .collect()
}

/// Every route with the query parameters it takes, for the contract test.
pub fn route_queries() -> Vec<(Method, &'static str, &'static [&'static str])> {
    routes()
        .into_iter()
        .map(|route| (route.method, route.path, route.query))
        .collect()
}

/// The whole API with its middleware, ready to serve.
pub fn router(engine: Engine, config: &ApiConfig) -> Router {
    let state = AppState {
        engine,
        config: Arc::new(config.clone()),
        depth: Arc::default(),
    };
    let mut router = Router::new();
    let mut rules = RouteRules {
        state: state.clone(),
        by_method: Arc::default(),
    };
    let by_method = Arc::get_mut(&mut rules.by_method).expect("not shared yet");
    for route in routes() {
        by_method
            .entry(route.method.clone())
            .or_default()
            .insert(route.path, (route.scope, route.query));
        // A long-poll has no layer of its own: axum boxes the future of every `layer` call,
        // and a parked long-poll would hold the box for as long as it waits.
        let handler = if route.long_poll {
            route.handler
        } else {
            route.handler.layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                config.request_timeout,
            ))
        };
        // Routes on one path with different methods merge into one method router.
        router = router.route(route.path, handler);
    }
    let limit = config.max_body_bytes;
    router
        .fallback(|| async { ApiError::RouteNotFound })
        .with_state(state)
        // One `layer` call with one stack, for the same reason as the routes' own.
        .layer(
            // Outermost first: every response, even a panic's or a limit's, leaves through
            // `problem_for_errors`, and carries the request id.
            ServiceBuilder::new()
                // Outermost: every answer is counted and timed, by the route template that
                // matched.
                .layer(GateLayer(crate::metrics::TrackHttp))
                .layer(axum::extract::DefaultBodyLimit::disable())
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                // A failed answer is not logged here at ERROR: real internal errors are logged
                // where they happen, and a full disk or a full body budget is said once and
                // then counted, not once per refused request.
                .layer(
                    TraceLayer::new_for_http()
                        .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
                )
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(GateLayer(ProblemForErrors(BodyLimit(limit))))
                .layer(CatchPanicLayer::new())
                .layer(RequestBodyLimitLayer::new(limit))
                .layer(AddExtensionLayer::new(BodyLimit(limit)))
                // The limit wraps the body in a type of its own; the gates take axum's.
                .map_request(|request: Request<_>| request.map(Body::new))
                // Inside the limit: a body over --max-body-bytes is a 413 before it takes any
                // of the budget.
                .layer(GateLayer(hosts::CheckHost(config.allowed_hosts.clone())))
                .layer(GateLayer(body::ReserveBodyMemory(BodyBudget::new(
                    config.max_body_memory,
                ))))
                // Innermost, outside the request timeout: a key lookup is part of the request
                // like anything else.
                .layer(GateLayer(rules)),
        )
}

/// Each route's own rules, applied by the router-wide stack to the route that matched: the
/// scope its caller's key needs (checked first), then the query parameters it takes.
#[derive(Clone)]
struct RouteRules {
    state: AppState,
    by_method: Arc<HashMap<Method, HashMap<&'static str, RouteRule>>>,
}

/// The scope a route needs (`None`: open) and the query parameters it takes.
type RouteRule = (Option<Scope>, &'static [&'static str]);

impl Gate for RouteRules {
    type Kept = ();

    fn enter(&self, request: Request) -> Entry<()> {
        // No route matched: the router's 404 (it needs no key).
        let Some(path) = request.extensions().get::<MatchedPath>() else {
            return Entry::Pass(request, ());
        };
        // HEAD is served by the GET route; a method the path does not take (the router's 405)
        // fails closed, as a route that names no scope does: admins only.
        let method = match *request.method() {
            Method::HEAD => &Method::GET,
            ref method => method,
        };
        // `None`: no route of this method, whose answer is the router's 405 whatever the query.
        let (scope, query) = match self
            .by_method
            .get(method)
            .and_then(|paths| paths.get(path.as_str()))
        {
            Some(&(scope, query)) => (scope, Some(query)),
            None => (Some(Scope::Admin), None),
        };
        let refused =
            move |request: &Request| query.and_then(|known| params::refusal(known, request));
        let Some(scope) = scope else {
            return Entry::unless(refused(&request), request);
        };
        match auth::authorize(&self.state, scope, request) {
            Entry::Pass(request, ()) => Entry::unless(refused(&request), request),
            Entry::Answer(answer) => Entry::Answer(answer),
            Entry::Later(decision) => Entry::Later(Box::pin(async move {
                let (request, ()) = decision.await?;
                match refused(&request) {
                    Some(answer) => Err(answer),
                    None => Ok((request, ())),
                }
            })),
        }
    }
}

/// `/metrics` alone, without keys: what `--metrics-listen` serves on its own address.
pub fn metrics_router(engine: Engine) -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(system::metrics))
        .with_state(MetricsState {
            engine,
            depth: Arc::default(),
        })
}

/// Turns any error response that is not yet problem+json (axum's 405, a layer's 413 or 408,
/// a caught panic's 500) into one, keeping its status and headers such as `Allow`. Its
/// limit is the body limit in force, so a 413 says it.
#[derive(Clone)]
struct ProblemForErrors(BodyLimit);

impl Gate for ProblemForErrors {
    type Kept = BodyLimit;

    fn enter(&self, request: Request) -> Entry<BodyLimit> {
        Entry::Pass(request, self.0)
    }

    fn leave(limit: BodyLimit, response: Response) -> Response {
        let status = response.status();
        let is_problem = response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|value| value.as_bytes() == PROBLEM_JSON.as_bytes());
        if !(status.is_client_error() || status.is_server_error()) || is_problem {
            return response;
        }
        let code = ErrorCode::of_layer_status(status);
        let detail = match code {
            ErrorCode::MethodNotAllowed => "this route does not take this method".to_owned(),
            ErrorCode::PayloadTooLarge => {
                format!("the body is larger than the limit of {} bytes", limit.0)
            }
            ErrorCode::RequestTimeout => "the request took too long".to_owned(),
            ErrorCode::Internal => "the server could not complete the request".to_owned(),
            _ => status.canonical_reason().unwrap_or("error").to_owned(),
        };
        let (mut parts, _) = response.into_parts();
        let rendered = problem_response(status, &problem_with_status(status, code, &detail));
        let (rendered, body) = rendered.into_parts();
        parts.headers.remove(header::CONTENT_LENGTH);
        for (name, value) in &rendered.headers {
            parts.headers.insert(name, value.clone());
        }
        Response::from_parts(parts, Body::new(body)).into_response()
    }
}
