//! The front door: what every request passes before the API's router. It takes the base path
//! off and records the outside view of the request (`proxy.rs`), then hands the request to
//! the router — or, while the server is still starting, answers it itself.
//!
//! The socket is served from the start, before the store is opened, migrated and recovered
//! (which can take a while on a large database): a probe then sees a live process that is
//! not ready, rather than a refused connection. Until the router is in place `/healthz`
//! answers 200, `/readyz` 503 `starting`, and every other route 503 `starting` with
//! `Retry-After`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::future::RouteFuture;
use futures::future::{Either, Ready, ready};
use serde_json::json;
use tower::Service;

use super::error::ApiError;
use super::proxy::{self, ProxyConfig};

/// The service the accept loop calls for each request.
#[derive(Clone)]
pub struct FrontDoor {
    proxy: Arc<ProxyConfig>,
    /// Set once, when start-up is done; a `OnceLock` since it never changes after, and each
    /// request reads it without a lock.
    router: Arc<OnceLock<Router>>,
}

impl FrontDoor {
    /// A front door that answers as a starting server until [`FrontDoor::open`].
    pub fn new(proxy: ProxyConfig) -> FrontDoor {
        FrontDoor {
            proxy: Arc::new(proxy),
            router: Arc::default(),
        }
    }

    /// Start-up is done: from now on every request goes to `router`.
    pub fn open(&self, router: Router) {
        if self.router.set(router).is_err() {
            tracing::warn!("the API's router was already in place");
        }
    }

    /// Answers one request from `peer`. What can be decided at once is, and the future is the
    /// router's own: it is what a parked long-poll holds while it waits.
    pub fn call(&self, peer: SocketAddr, mut request: Request) -> Answer {
        request.extensions_mut().insert(ConnectInfo(peer));
        let request = match proxy::enter(&self.proxy, request) {
            Ok(request) => request,
            Err(error) => return Either::Right(ready(Ok(error.into_response()))),
        };
        match self.router.get() {
            // A `Router` is always ready.
            Some(router) => Either::Left(router.clone().call(request)),
            None => Either::Right(ready(Ok(starting(&request)))),
        }
    }
}

/// The future of one request through the front door.
pub type Answer = Either<RouteFuture<Infallible>, Ready<Result<Response, Infallible>>>;

/// The answer of a server that is not started yet.
fn starting(request: &Request) -> Response {
    match request.uri().path() {
        "/healthz" => axum::Json(json!({ "status": "ok" })).into_response(),
        _ => ApiError::Starting.into_response(),
    }
}
