//! The composition root: open the store, migrate, start the engine, serve, shut down.

use std::future::Future;

use tokio::net::TcpListener;

use crate::api::{self, ApiConfig};
use crate::config::ServeConfig;
use crate::engine::Engine;
use crate::handlers::Registry;
use crate::store::{self, StoreError};
use crate::task::Backoff;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
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
    let store = store::open(&config.database.url).await?;
    store.migrate().await?;
    let engine = Engine::start(store, registry, config.engine()).await?;
    let api_config = ApiConfig {
        max_body_bytes: config.max_body_bytes,
        request_timeout: config.request_timeout,
        default_backoff: Backoff {
            base_ms: config.backoff_base.as_millis() as u64,
            cap_ms: config.backoff_cap.as_millis() as u64,
        },
    };
    let app = api::router(engine.clone(), &api_config);
    let stopping = engine.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down");
            stopping.shutdown().await;
        })
        .await?;
    tracing::info!("stopped");
    Ok(())
}

/// `taskd migrate`: applies the migrations and returns.
pub async fn migrate(database_url: &str) -> Result<(), AppError> {
    let store = store::open(database_url).await?;
    store.migrate().await?;
    Ok(())
}
