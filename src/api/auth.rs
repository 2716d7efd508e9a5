//! Who is calling, checked at the API's edge: the bearer key of each request, its scope for
//! the route, and the queues it is limited to.
//!
//! Each guarded route names its scope in the route table (`api/mod.rs`); [`authorize`] runs
//! in front of it, answers 401 (no key, an unknown, expired or revoked one) or 403 (a key
//! without the scope), and otherwise hands the handler a [`Caller`]. Handlers pass the
//! caller's [`QueueScope`] to every engine call, and the engine narrows what it reads and
//! writes by it. A secret is hashed on arrival and never logged.

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;

use super::AppState;
use super::error::ApiError;
use super::gate::Entry;
use crate::access::{AuthMode, QueueScope, Scope, Unusable};
use crate::task::now_millis;

/// The caller of a guarded route, as [`authorize`] found it.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's name; `None` on a server that asks for no key.
    pub key: Option<String>,
    /// The queues the caller may see and touch.
    pub queues: QueueScope,
}

impl Caller {
    /// The caller of a server without keys: may do anything.
    fn open() -> Caller {
        Caller {
            key: None,
            queues: QueueScope::All,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    /// Fails closed: a handler reached without [`authorize`] in front of it serves no one.
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Caller, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::Unauthenticated("this route needs an API key".to_owned()))
    }
}

/// Admits a request to a route that needs `scope` (the route rules' first step, `api/mod.rs`).
/// The key lookup owns the request while it runs, in a box of its own that is gone by the time
/// the route runs: a parked long-poll does not carry it.
pub(super) fn authorize(state: &AppState, scope: Scope, mut request: Request) -> Entry<()> {
    if state.config.auth == AuthMode::Off {
        request.extensions_mut().insert(Caller::open());
        return Entry::Pass(request, ());
    }
    let state = state.clone();
    Entry::Later(Box::pin(async move {
        match caller(&state, scope, request.headers()).await {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Ok((request, ()))
            }
            Err(error) => Err(error.into_response()),
        }
    }))
}

/// The caller of a request to a route that needs `needed`, on a server that asks for keys
/// (`--auth` other than `off`).
async fn caller(state: &AppState, needed: Scope, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let mode = state.config.auth;
    let Some(secret) = bearer(headers)? else {
        if mode == AuthMode::Auto && !state.engine.keys_exist().await? {
            return Ok(Caller::open());
        }
        return Err(ApiError::Unauthenticated(
            "this route needs an API key: send `Authorization: Bearer <key>`".to_owned(),
        ));
    };
    let key = state
        .engine
        .key_for_secret(secret)
        .await?
        .ok_or_else(|| ApiError::Unauthenticated("the API key is not known".to_owned()))?;
    key.check(now_millis()).map_err(|why| {
        ApiError::Unauthenticated(match why {
            Unusable::Expired => format!("the API key `{}` has expired", key.name),
            Unusable::Revoked => format!("the API key `{}` was revoked", key.name),
        })
    })?;
    if !key.scopes.allow(needed) {
        tracing::debug!(key = %key.name, scope = %needed, "a key without the route's scope");
        return Err(ApiError::MissingScope {
            key: key.name,
            scope: needed,
        });
    }
    state.engine.key_used(&key);
    Ok(Caller {
        key: Some(key.name),
        queues: key.queues,
    })
}

/// The secret of an `Authorization: Bearer …` header, if one is sent.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed =
        || ApiError::Unauthenticated("the Authorization header must be `Bearer <key>`".to_owned());
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, secret) = value.trim().split_once(' ').ok_or_else(malformed)?;
    let secret = secret.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || secret.is_empty() {
        return Err(malformed());
    }
    Ok(Some(secret))
}
