//! The join kinds, `all` and `any`: tasks that wait for parents (`after`) and combine their
//! results, read from the context. With them one `?wait=` on one id awaits a whole fan-out.

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Handler, HandlerError, TaskContext};
use crate::task::TaskState;

/// A join takes no input of its own: everything comes from its parents.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinInput {}

/// `all`: the array of its parents' results, in `after` order (`null` for a parent that
/// did not succeed, which only an `all_finished` policy lets through).
pub struct All;

#[async_trait]
impl Handler for All {
    type Input = JoinInput;

    fn description(&self) -> &'static str {
        "Joins its parents (`after`): the result is the array of their results, in order."
    }

    async fn run(&self, _input: JoinInput, ctx: TaskContext) -> Result<Value, HandlerError> {
        let results = ctx
            .parents()
            .iter()
            .map(|parent| parent.result.clone().unwrap_or(Value::Null))
            .collect();
        Ok(Value::Array(results))
    }
}

/// `any`: `{id, result}` of the parent that succeeded first (policy `any_succeeded` by
/// default, so it runs as soon as one did).
pub struct Any;

#[async_trait]
impl Handler for Any {
    type Input = JoinInput;

    fn description(&self) -> &'static str {
        "Runs once one of its parents (`after`) succeeded: the result is `{id, result}` of the \
         first that did."
    }

    async fn run(&self, _input: JoinInput, ctx: TaskContext) -> Result<Value, HandlerError> {
        let first = ctx
            .parents()
            .iter()
            .filter(|parent| parent.state == TaskState::Succeeded)
            .min_by_key(|parent| parent.finished_at);
        match first {
            Some(parent) => Ok(json!({"id": parent.id, "result": parent.result})),
            None => Err(HandlerError::permanent(
                "dependency_failed",
                "no parent succeeded",
            )),
        }
    }
}
