//! The built-in kinds: `echo`, `sleep`, `fail` and `sha256` (the joins are in `joins.rs`).

use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256 as Sha256Hasher};

use super::{Handler, HandlerError, InvalidInput, TaskContext};

/// The longest `sleep` accepted: one hour.
const MAX_SLEEP_MS: u64 = 3_600_000;
/// The most `sha256` rounds accepted: a few seconds of one core.
const MAX_ROUNDS: u32 = 10_000_000;

/// `echo`: the result is the input.
pub struct Echo;

#[async_trait]
impl Handler for Echo {
    type Input = Value;

    fn description(&self) -> &'static str {
        "Returns its input as the result."
    }

    async fn run(&self, input: Value, _ctx: TaskContext) -> Result<Value, HandlerError> {
        Ok(input)
    }
}

/// `sleep`: waits `ms` milliseconds; stops early when cancelled.
pub struct Sleep;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SleepInput {
    /// How long to sleep, in milliseconds (at most 3,600,000).
    pub ms: u64,
}

#[async_trait]
impl Handler for Sleep {
    type Input = SleepInput;

    fn description(&self) -> &'static str {
        "Sleeps for `ms` milliseconds, honouring cancellation."
    }

    fn check(&self, input: &SleepInput) -> Result<(), InvalidInput> {
        if input.ms > MAX_SLEEP_MS {
            return Err(InvalidInput::field("ms", format!("at most {MAX_SLEEP_MS}")));
        }
        Ok(())
    }

    async fn run(&self, input: SleepInput, ctx: TaskContext) -> Result<Value, HandlerError> {
        let total = Duration::from_millis(input.ms);
        let start = tokio::time::Instant::now();
        // About twenty progress reports, between 50 ms and 1 s apart.
        let tick = (total / 20).clamp(Duration::from_millis(50), Duration::from_secs(1));
        loop {
            let elapsed = start.elapsed();
            if elapsed >= total {
                return Ok(json!({"slept_ms": input.ms}));
            }
            let percent = 100.0 * elapsed.as_secs_f64() / total.as_secs_f64();
            ctx.progress(
                percent,
                format!("slept {} of {} ms", elapsed.as_millis(), input.ms),
            );
            tokio::select! {
                () = tokio::time::sleep(tick.min(total - elapsed)) => {}
                () = ctx.cancelled() => return Err(HandlerError::cancelled()),
            }
        }
    }
}

/// `fail`: fails with `message` — always, or only the first `times` attempts.
pub struct Fail;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailInput {
    /// The error message to fail with.
    #[serde(default = "default_fail_message")]
    pub message: String,
    /// Fail only the first `times` attempts, then succeed. Absent: fail every attempt.
    pub times: Option<u32>,
    /// Whether the error may be retried (default true).
    #[serde(default = "yes")]
    pub retryable: bool,
}

fn yes() -> bool {
    true
}

fn default_fail_message() -> String {
    "failed as asked".to_owned()
}

#[async_trait]
impl Handler for Fail {
    type Input = FailInput;

    fn description(&self) -> &'static str {
        "Fails with `message` (every attempt, or the first `times`): for tests and demos."
    }

    async fn run(&self, input: FailInput, ctx: TaskContext) -> Result<Value, HandlerError> {
        if input.times.is_some_and(|times| ctx.attempt() > times) {
            return Ok(json!({"succeeded_on_attempt": ctx.attempt()}));
        }
        let error = HandlerError::new("fail", input.message);
        Err(HandlerError {
            retryable: input.retryable,
            ..error
        })
    }
}

/// `sha256`: hashes `data`, then the digest again, `rounds` times in all. CPU-bound: it runs on
/// the bounded CPU pool.
pub struct Sha256;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sha256Input {
    /// The text to hash. `digest` is taken for it, so one sha256's result is the next one's
    /// input (`input_from`).
    #[serde(alias = "digest")]
    pub data: String,
    /// How many times to hash (1 to 10,000,000).
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 10_000_000))]
    pub rounds: u32,
}

fn one() -> u32 {
    1
}

#[async_trait]
impl Handler for Sha256 {
    type Input = Sha256Input;

    fn description(&self) -> &'static str {
        "Hashes `data` with SHA-256 `rounds` times (CPU-bound)."
    }

    fn check(&self, input: &Sha256Input) -> Result<(), InvalidInput> {
        if !(1..=MAX_ROUNDS).contains(&input.rounds) {
            return Err(InvalidInput::field(
                "rounds",
                format!(
                    "must be a whole number from 1 to {MAX_ROUNDS}, got {}",
                    input.rounds
                ),
            ));
        }
        Ok(())
    }

    async fn run(&self, input: Sha256Input, ctx: TaskContext) -> Result<Value, HandlerError> {
        let cancel = ctx.cancel_token();
        let rounds = input.rounds;
        let digest = ctx
            .cpu(move || {
                let mut digest = Sha256Hasher::digest(input.data.as_bytes());
                for round in 1..rounds {
                    // Checking the token costs an atomic load; every 4096 rounds is plenty.
                    if round % 4096 == 0 && cancel.is_cancelled() {
                        return None;
                    }
                    digest = Sha256Hasher::digest(digest);
                }
                Some(hex::encode(digest))
            })
            .await?
            .ok_or_else(HandlerError::cancelled)?;
        Ok(json!({"digest": digest, "rounds": rounds}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema `/v1/kinds` shows for `rounds` is the rule `check` enforces.
    #[test]
    fn sha256_rounds_schema_matches_its_check() {
        let schema = serde_json::to_value(schemars::schema_for!(Sha256Input)).unwrap();
        let rounds = &schema["properties"]["rounds"];
        assert_eq!(rounds["minimum"], 1, "{rounds}");
        assert_eq!(rounds["maximum"], MAX_ROUNDS, "{rounds}");
        let input = |rounds| Sha256Input {
            data: String::new(),
            rounds,
        };
        assert!(Sha256.check(&input(0)).is_err());
        assert!(Sha256.check(&input(1)).is_ok());
        assert!(Sha256.check(&input(MAX_ROUNDS + 1)).is_err());
    }
}
