//! The embedding API: a Rust program builds a taskd with handlers of its own and serves the
//! same HTTP API. `Taskd::builder().database(url).handler("resize", resize).serve(listener)`.

use std::future::Future;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::app::{self, AppError};
use crate::config::{ConfigError, ServeConfig};
use crate::handlers::{FnHandler, Handler, HandlerError, Registry, TaskContext};

/// The entry point of the embedding API.
pub struct Taskd;

impl Taskd {
    /// A builder with the built-in kinds and `taskd serve`'s defaults (environment included;
    /// a variable that does not parse is returned by `serve`).
    pub fn builder() -> TaskdBuilder {
        TaskdBuilder {
            config: ServeConfig::defaults(),
            registry: Registry::builtin(),
        }
    }
}

/// Configures an embedded taskd; `serve` runs it.
pub struct TaskdBuilder {
    /// An environment that did not parse is kept as the error `serve` returns: the builder's
    /// chain stays infallible, and the host process is never exited.
    config: Result<ServeConfig, ConfigError>,
    registry: Registry,
}

impl TaskdBuilder {
    /// Where tasks are stored (`sqlite://PATH`, `sqlite::memory:`, `postgres://…`).
    pub fn database(self, url: impl Into<String>) -> Self {
        let url = url.into();
        self.configure(|config| config.database.url = url)
    }

    /// How many tasks run at once.
    pub fn workers(self, workers: u32) -> Self {
        self.configure(|config| config.workers = workers.max(1))
    }

    /// Any other setting, as `taskd serve` has it.
    pub fn configure(mut self, adjust: impl FnOnce(&mut ServeConfig)) -> Self {
        if let Ok(config) = &mut self.config {
            adjust(config);
        }
        self
    }

    /// Registers a handler for `kind` (replacing a built-in one of that name).
    pub fn handler(mut self, kind: &str, handler: impl Handler) -> Self {
        self.registry.register(kind, handler);
        self
    }

    /// Registers an async function of a typed input as the handler of `kind`.
    pub fn handler_fn<I, F, Fut>(self, kind: &str, description: &'static str, run: F) -> Self
    where
        I: DeserializeOwned + JsonSchema + Send + 'static,
        F: Fn(I, TaskContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, HandlerError>> + Send + 'static,
    {
        self.handler(kind, FnHandler::new(description, run))
    }

    /// Serves on `listener` until Ctrl-C or SIGTERM, then shuts down gracefully.
    pub async fn serve(self, listener: TcpListener) -> Result<(), AppError> {
        self.serve_until(listener, app::shutdown_signal()).await
    }

    /// Serves on `listener` until `shutdown` resolves; a `TASKD_*` variable that did not
    /// parse is returned here as [`AppError::Config`].
    pub async fn serve_until(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        app::run(listener, self.config?, self.registry, shutdown).await
    }
}
