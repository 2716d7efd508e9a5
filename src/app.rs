//! The composition root: serve (answering "starting" at first), open the store, migrate,
//! start the engine, open the API, shut down.

use std::future::Future;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::access::AuthMode;
use crate::api::{self, AllowedHosts, ApiConfig, FrontDoor, ServeLimits};
use crate::config::ServeConfig;
use crate::engine::Engine;
use crate::handlers::Registry;
use crate::outbound::{Outbound, OwnAddrs};
use crate::store::{self, StoreError};
use crate::task::Backoff;
use crate::traces::Tracer;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A `TASKD_*` variable did not parse (the embedding API's configuration).
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
    #[error("outbound HTTP client: {0}")]
    Outbound(#[from] reqwest::Error),
    /// No API key exists and the server would be reachable from other machines.
    #[error(
        "no API key exists, and taskd would listen on {0}, which other machines can reach: \
         create a key first (`taskd keys create --name admin --scopes admin`, with the same \
         --database), or pass --auth off (TASKD_AUTH=off) to serve without keys on a network \
         you trust"
    )]
    NoKeys(std::net::SocketAddr),
}

/// Serves on `listener` until `shutdown` resolves, then drains: readiness and submits answer
/// 503 while running tasks get `shutdown_grace` to finish; the rest go back to their queue.
/// The HTTP server keeps answering reads until the engine has stopped.
pub async fn run(
    listener: TcpListener,
    config: ServeConfig,
    registry: Registry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AppError> {
    run_after(listener, config, registry, shutdown, std::future::ready(())).await
}

/// Like [`run`], but opens the store only once `open` resolves (an embedding program that
/// must first wait for something, such as its database's host). The listener is served from
/// the start: until the store is open, migrated and recovered `/healthz` answers 200 and
/// everything else 503 `starting` (see `api/front.rs`). `shutdown` is awaited from then on.
pub async fn run_after(
    listener: TcpListener,
    config: ServeConfig,
    registry: Registry,
    shutdown: impl Future<Output = ()> + Send + 'static,
    open: impl Future<Output = ()> + Send,
) -> Result<(), AppError> {
    // Before anything is recorded: until then the `metrics` macros record nowhere.
    crate::metrics::handle();
    let address = listener.local_addr()?;
    let front = FrontDoor::new(config.proxy());
    let limits = ServeLimits {
        header_timeout: config.header_timeout,
        body_timeout: config.body_timeout,
        idle_timeout: config.idle_timeout,
        max_connections: config.max_connections.map_or_else(
            || api::default_max_connections(config.workers),
            |max| max as usize,
        ),
    };
    // Cancelled once the engine has stopped (or start-up failed): the listener stops then.
    let stop_serving = CancellationToken::new();
    let serving = tokio::spawn(api::serve(
        listener,
        front.clone(),
        limits,
        stop_serving.clone().cancelled_owned(),
    ));
    // The shutdown future is first polled once started, as before the socket was served
    // early: a signal during start-up has its default effect (the process ends; a migration
    // is one transaction, applied whole or not at all).
    open.await;
    let started = start(address, config, registry).await;
    let (engine, router, metrics_server) = match started {
        Ok(started) => started,
        Err(error) => {
            stop_serving.cancel();
            let _ = joined(serving.await);
            return Err(error);
        }
    };
    front.open(router);
    tracing::info!(%address, "ready");
    shutdown.await;
    tracing::info!("shutting down");
    engine.shutdown().await;
    stop_serving.cancel();
    let served = joined(serving.await);
    if let Some(metrics_server) = metrics_server {
        // Nothing to drain: a scrape cut short is retried by the scraper.
        metrics_server.abort();
    }
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// The serving loop's outcome; a panic in it is passed on.
fn joined(outcome: Result<std::io::Result<()>, tokio::task::JoinError>) -> Result<(), AppError> {
    match outcome {
        Ok(served) => Ok(served?),
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => Err(std::io::Error::other(error).into()),
    }
}

/// Start-up: opens and migrates the store, starts the engine (which recovers the tasks of a
/// previous run) and builds the API's router, with the metrics listener if one is asked for.
async fn start(
    address: SocketAddr,
    config: ServeConfig,
    registry: Registry,
) -> Result<(Engine, axum::Router, Option<JoinHandle<()>>), AppError> {
    let store = store::open(&config.database.url).await?;
    store.migrate().await?;
    check_auth(config.auth, address, store.keys_exist().await?)?;
    // One client for webhooks and the `http` kind: one allow-list, one connection pool. It
    // refuses taskd's own API and database unless the list names them exactly.
    let own = OwnAddrs::of(address, &config.database.url).await;
    let outbound = Outbound::new(config.allow_outbound.clone(), own)?;
    let registry = registry.with_http(outbound.clone());
    // The collector is the operator's destination: its own client, outside the allow-list.
    let tracer = match &config.otlp_endpoint {
        Some(endpoint) => {
            tracing::info!(%endpoint, "exporting spans over OTLP/HTTP");
            Tracer::start(endpoint, config.otlp_max_queued as usize)?
        }
        None => Tracer::default(),
    };
    let engine = Engine::start(store, registry, config.engine(outbound, tracer)).await?;
    let api_config = ApiConfig {
        max_body_bytes: config.max_body_bytes,
        max_body_memory: config.max_body_memory,
        request_timeout: config.request_timeout,
        default_backoff: Backoff {
            base_ms: config.backoff_base.as_millis() as u64,
            cap_ms: config.backoff_cap.as_millis() as u64,
        },
        auth: config.auth,
        allowed_hosts: match config.allowed_hosts.clone() {
            Some(hosts) => Some(Arc::new(hosts)),
            None if address.ip().is_loopback() => Some(Arc::new(AllowedHosts::loopback())),
            None => None,
        },
        max_wait: config.max_wait,
    };
    let router = api::router(engine.clone(), &api_config);
    // Its own address, no keys: bound during start-up, so a bad address fails it.
    let metrics_server = match config.metrics_listen {
        Some(address) => {
            let listener = TcpListener::bind(address).await?;
            tracing::info!(address = %listener.local_addr()?, "serving /metrics without keys");
            let router = api::metrics_router(engine.clone());
            Some(tokio::spawn(async move {
                if let Err(error) = axum::serve(listener, router).await {
                    tracing::error!(%error, "the metrics listener stopped");
                }
            }))
        }
        None => None,
    };
    Ok((engine, router, metrics_server))
}

/// Decides at start-up whether the server may serve as configured: without any key, only on
/// a loopback address (or with `--auth off`), and it says so in the log.
fn check_auth(mode: AuthMode, address: SocketAddr, keys_exist: bool) -> Result<(), AppError> {
    match mode {
        AuthMode::Off => {
            tracing::warn!(
                %address,
                "--auth off: every route is open to whoever reaches {address}, keys or not"
            );
        }
        AuthMode::On if !keys_exist => {
            tracing::warn!("--auth on and no key exists yet: every guarded route answers 401");
        }
        AuthMode::Auto if !keys_exist => {
            if !address.ip().is_loopback() {
                return Err(AppError::NoKeys(address));
            }
            tracing::warn!(
                %address,
                "no API key exists: serving open on loopback; `taskd keys create` turns keys on"
            );
        }
        AuthMode::On | AuthMode::Auto => {}
    }
    Ok(())
}

/// `taskd migrate`: applies the migrations and returns.
pub async fn migrate(database_url: &str) -> Result<(), AppError> {
    let store = store::open(database_url).await?;
    store.migrate().await?;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
