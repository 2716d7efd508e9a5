//! Handlers: the code that runs a kind of task. A handler knows its typed input and its
//! [`TaskContext`], and nothing of HTTP, SQL or the engine.
//!
//! [`Handler`] is the typed trait a user implements; the [`Registry`] keeps them type-erased
//! by kind, validates inputs at submit time and describes each kind's input as JSON Schema.

mod builtin;
mod context;
mod http;
mod joins;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use builtin::{Echo, Fail, Sha256, Sleep};
pub use context::{CpuPool, ProgressSink, TaskContext};
pub use http::Http;
pub use joins::{All, Any};

use crate::outbound::Outbound;
use crate::task::Kind;

/// Why an attempt failed, as a handler says it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error_type}: {message}")]
pub struct HandlerError {
    /// Stable and machine-readable: clients branch on it.
    pub error_type: String,
    pub message: String,
    /// Whether another attempt could succeed. `false` ends the task at once.
    pub retryable: bool,
}

impl HandlerError {
    /// A retryable error: the task runs again while it has attempts left.
    pub fn new(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        HandlerError {
            error_type: error_type.into(),
            message: message.into(),
            retryable: true,
        }
    }

    /// An error no retry can fix (bad input, a refused request): the task fails now.
    pub fn permanent(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        HandlerError {
            retryable: false,
            ..HandlerError::new(error_type, message)
        }
    }

    /// The attempt stopped because its cancellation fired.
    pub fn cancelled() -> Self {
        HandlerError::new("cancelled", "the attempt was cancelled")
    }
}

/// An input that does not fit its kind: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: {message}")]
pub struct InvalidInput {
    /// Where in the submission, e.g. `input.ms`.
    pub field: String,
    pub message: String,
}

impl InvalidInput {
    /// A problem with the field `name` of the input.
    pub fn field(name: &str, message: impl Into<String>) -> Self {
        InvalidInput {
            field: format!("input.{name}"),
            message: message.into(),
        }
    }
}

/// A kind of task. `Input` is deserialized (and checked) at submit time, so a task whose
/// input does not fit is refused with 422 and never stored.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    type Input: DeserializeOwned + JsonSchema + Send + 'static;

    /// One line for `GET /v1/kinds`.
    fn description(&self) -> &'static str;

    /// Checks beyond the input's type (ranges, sizes). Runs at submit time.
    fn check(&self, _input: &Self::Input) -> Result<(), InvalidInput> {
        Ok(())
    }

    async fn run(&self, input: Self::Input, ctx: TaskContext) -> Result<Value, HandlerError>;

    /// Hides the secrets in a stored input before anyone reads it (GET, lists, webhooks):
    /// the attempt still gets the input as submitted. The default hides nothing.
    fn redact(&self, _input: &mut Value) {}
}

/// An async function of a typed input, as a handler (see `TaskdBuilder::handler_fn`).
pub struct FnHandler<I, F> {
    description: &'static str,
    run: F,
    // `fn(I)`: the handler consumes inputs, it does not own one (keeps it Send + Sync).
    input: std::marker::PhantomData<fn(I)>,
}

impl<I, F> FnHandler<I, F> {
    pub fn new(description: &'static str, run: F) -> Self {
        FnHandler {
            description,
            run,
            input: std::marker::PhantomData,
        }
    }
}

#[async_trait]
impl<I, F, Fut> Handler for FnHandler<I, F>
where
    I: DeserializeOwned + JsonSchema + Send + 'static,
    F: Fn(I, TaskContext) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Value, HandlerError>> + Send + 'static,
{
    type Input = I;

    fn description(&self) -> &'static str {
        self.description
    }

    async fn run(&self, input: I, ctx: TaskContext) -> Result<Value, HandlerError> {
        (self.run)(input, ctx).await
    }
}

/// A handler with its input type erased, as the registry keeps it.
trait ErasedHandler: Send + Sync {
    fn parse(&self, input: &Value) -> Result<(), InvalidInput>;
    fn schema(&self) -> Value;
    fn description(&self) -> &'static str;
    fn redact(&self, input: &mut Value);
    fn run(
        self: Arc<Self>,
        input: Value,
        ctx: TaskContext,
    ) -> BoxFuture<'static, Result<Value, HandlerError>>;
}

struct Typed<H>(H);

impl<H: Handler> Typed<H> {
    fn deserialize(input: &Value) -> Result<H::Input, InvalidInput> {
        serde_path_to_error::deserialize(input).map_err(|error| {
            let path = error.path().to_string();
            let message = error.into_inner().to_string();
            InvalidInput {
                field: crate::task::error_field("input", &path, &message),
                message: crate::task::plain_serde_message(&message),
            }
        })
    }
}

impl<H: Handler> ErasedHandler for Typed<H> {
    fn parse(&self, input: &Value) -> Result<(), InvalidInput> {
        self.0.check(&Self::deserialize(input)?)
    }

    fn schema(&self) -> Value {
        serde_json::to_value(schemars::schema_for!(H::Input)).unwrap_or(Value::Bool(true))
    }

    fn description(&self) -> &'static str {
        self.0.description()
    }

    fn redact(&self, input: &mut Value) {
        self.0.redact(input);
    }

    fn run(
        self: Arc<Self>,
        input: Value,
        ctx: TaskContext,
    ) -> BoxFuture<'static, Result<Value, HandlerError>> {
        Box::pin(async move {
            // The input passed `parse` at submit time; a stored input that no longer fits
            // (the handler changed meanwhile) fails the attempt instead of panicking.
            let input = Self::deserialize(&input)
                .map_err(|e| HandlerError::permanent("invalid_input", e.to_string()))?;
            self.0.run(input, ctx).await
        })
    }
}

/// The kinds this server runs. Built once at start, then shared read-only.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<Kind, Arc<dyn ErasedHandler>>,
}

/// A registered kind, as `GET /v1/kinds` describes it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KindInfo {
    pub kind: Kind,
    pub description: &'static str,
    pub input_schema: Value,
}

impl Registry {
    /// The built-in kinds: `echo`, `sleep`, `fail`, `sha256`, and the joins `all` and `any`
    /// (see `joins.rs`). The `http` kind needs the
    /// outbound client; see [`Registry::with_http`].
    pub fn builtin() -> Registry {
        let mut registry = Registry::default();
        registry.register("echo", Echo);
        registry.register("sleep", Sleep);
        registry.register("fail", Fail);
        registry.register("sha256", Sha256);
        registry.register("all", All);
        registry.register("any", Any);
        registry
    }

    /// Adds the `http` kind, which sends its requests through `outbound` (and so honours its
    /// allow-list) — unless the registry has an `http` kind already: an embedder's own wins.
    /// `app::run` calls it with the server's outbound client.
    pub fn with_http(mut self, outbound: Outbound) -> Registry {
        let taken = self.kinds.keys().any(|kind| kind.as_str() == "http");
        if !taken {
            self.register("http", Http::new(outbound));
        }
        self
    }

    /// Adds (or replaces) the handler of `kind`.
    ///
    /// # Panics
    /// When `kind` is not a valid kind name: that is a programming error in the embedding code.
    pub fn register(&mut self, kind: &str, handler: impl Handler) -> &mut Self {
        let kind = Kind::parse(kind).unwrap_or_else(|e| panic!("kind `{kind}`: {e}"));
        self.kinds.insert(kind, Arc::new(Typed(handler)));
        self
    }

    pub fn contains(&self, kind: &Kind) -> bool {
        self.kinds.contains_key(kind)
    }

    /// Checks `input` against the kind's input type. `None` when the kind is unknown.
    pub fn validate(&self, kind: &Kind, input: &Value) -> Option<Result<(), InvalidInput>> {
        self.kinds.get(kind).map(|handler| handler.parse(input))
    }

    /// Hides the secrets of a task's input as its kind's handler says (see
    /// [`Handler::redact`]), whatever queue the task is in.
    pub fn redact(&self, task: &mut crate::task::Task) {
        if let Some(handler) = self.kinds.get(&task.kind) {
            handler.redact(Arc::make_mut(&mut task.input));
        }
    }

    /// Runs one attempt. `None` when the kind is unknown.
    pub fn run(
        &self,
        kind: &Kind,
        input: Value,
        ctx: TaskContext,
    ) -> Option<BoxFuture<'static, Result<Value, HandlerError>>> {
        self.kinds
            .get(kind)
            .map(|handler| Arc::clone(handler).run(input, ctx))
    }

    pub fn describe(&self) -> Vec<KindInfo> {
        self.kinds
            .iter()
            .map(|(kind, handler)| KindInfo {
                kind: kind.clone(),
                description: handler.description(),
                input_schema: handler.schema(),
            })
            .collect()
    }
}
