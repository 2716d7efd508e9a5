//! What happens to a task when an attempt ends: the one place that decides between success,
//! retry after backoff, failure and cancellation. Stores call it inside the transaction that
//! writes the answer, so every backend applies the same rules.

use serde_json::Value;

use super::{AttemptError, Millis, Outcome, Task, TaskError, TaskState, Transition};

/// The fields an ended attempt writes.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptEnd {
    pub state: TaskState,
    pub result: Option<Value>,
    pub error: Option<TaskError>,
    pub errors: Vec<AttemptError>,
    /// Set when the task goes back to `scheduled` for a retry.
    pub run_at: Option<Millis>,
    /// Set when the task is terminal.
    pub finished_at: Option<Millis>,
}

impl AttemptEnd {
    fn new(task: &Task, state: TaskState, now: Millis) -> AttemptEnd {
        AttemptEnd {
            state,
            result: None,
            error: None,
            errors: task.errors.clone(),
            run_at: None,
            finished_at: state.is_terminal().then_some(now),
        }
    }
}

fn record(errors: &mut Vec<AttemptError>, attempt: u32, error: &TaskError, now: Millis) {
    errors.push(AttemptError {
        attempt,
        error_type: error.error_type.clone(),
        message: error.message.clone(),
        at: now,
    });
}

/// The end of the running attempt of `task` with `outcome`. `jitter` in [0, 1] spreads the
/// backoff. A cancel requested while the attempt ran wins over its outcome.
pub fn end_attempt(task: &Task, outcome: Outcome, now: Millis, jitter: f64) -> AttemptEnd {
    debug_assert_eq!(task.state, TaskState::Running);
    let end = match outcome {
        _ if task.cancel_requested => AttemptEnd::new(task, TaskState::Cancelled, now),
        Outcome::Cancelled => AttemptEnd::new(task, TaskState::Cancelled, now),
        Outcome::Succeeded(value) => AttemptEnd {
            result: Some(value),
            ..AttemptEnd::new(task, TaskState::Succeeded, now)
        },
        Outcome::Failed { error, retryable } => {
            let retry = retryable && task.attempt < task.max_attempts;
            let state = if retry {
                TaskState::Scheduled
            } else {
                TaskState::Failed
            };
            let mut end = AttemptEnd::new(task, state, now);
            record(&mut end.errors, task.attempt, &error, now);
            if retry {
                let delay = task.backoff.delay_ms(task.attempt, jitter);
                end.run_at = Some(now.saturating_add(delay as i64));
            } else {
                end.error = Some(error);
            }
            end
        }
    };
    debug_assert!(TaskState::Running.allows(Transition::Finish(end.state), end.state));
    end
}

/// The end of an attempt that was lost: its worker or node died, or its lease expired.
/// The attempt counts; the task runs again if it has attempts left, else it fails.
pub fn lose_attempt(task: &Task, now: Millis) -> AttemptEnd {
    if task.cancel_requested {
        return AttemptEnd::new(task, TaskState::Cancelled, now);
    }
    let error = TaskError {
        error_type: "lease_expired".to_owned(),
        message: "the attempt was lost: its worker stopped or its lease expired".to_owned(),
    };
    let state = if task.attempt < task.max_attempts {
        TaskState::Queued
    } else {
        TaskState::Failed
    };
    let mut end = AttemptEnd::new(task, state, now);
    record(&mut end.errors, task.attempt, &error, now);
    if state == TaskState::Failed {
        end.error = Some(error);
    }
    debug_assert!(TaskState::Running.allows(Transition::Recover, end.state));
    end
}

/// When the running attempt of `task` must have ended: `started_at + timeout_ms`. `None`
/// without a timeout (or for a task that is not running).
pub fn attempt_deadline(task: &Task) -> Option<Millis> {
    let timeout_ms = i64::try_from(task.timeout_ms?).unwrap_or(i64::MAX);
    Some(task.started_at?.saturating_add(timeout_ms))
}

/// The error of an attempt that ran past its `timeout_ms`: the same whoever ran it.
pub fn timeout_error(timeout_ms: u64) -> TaskError {
    TaskError {
        error_type: "timeout".to_owned(),
        message: format!("the attempt ran longer than {timeout_ms} ms"),
    }
}

/// The end of an attempt whose lease expired. A remote lease is never granted or extended
/// past the attempt's deadline, so a lease that ran out exactly there was cut by the timeout:
/// the attempt timed out, a retryable failure as a local timeout is (`end_attempt`). Any
/// other expiry means the worker stopped: the attempt was lost (`lose_attempt`).
pub fn expire_attempt(task: &Task, now: Millis, jitter: f64) -> AttemptEnd {
    let cut_at_deadline = attempt_deadline(task).is_some_and(|deadline| {
        task.lease
            .as_ref()
            .is_some_and(|lease| lease.expires_at == deadline)
    });
    match task.timeout_ms {
        Some(timeout_ms) if cut_at_deadline => {
            let error = timeout_error(timeout_ms);
            end_attempt(
                task,
                Outcome::Failed {
                    error,
                    retryable: true,
                },
                now,
                jitter,
            )
        }
        _ => lose_attempt(task, now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{Backoff, Kind, Lease, NewTask, QueueName, TaskId};
    use serde_json::json;

    fn running(attempt: u32, max_attempts: u32) -> Task {
        let new = NewTask::new(QueueName::default(), Kind::parse("x").unwrap(), json!({}));
        Task {
            id: TaskId::new(),
            queue: new.queue,
            kind: new.kind,
            input: new.input,
            state: TaskState::Running,
            priority: 0,
            attempt,
            max_attempts,
            backoff: Backoff {
                base_ms: 100,
                cap_ms: 1_000,
            },
            timeout_ms: None,
            run_at: None,
            labels: Default::default(),
            cancel_requested: false,
            result: None,
            error: None,
            errors: Vec::new(),
            progress: None,
            callback: None,
            callback_status: None,
            after: Vec::new(),
            after_policy: None,
            input_from: None,
            idempotency_key: None,
            created_at: 0,
            started_at: Some(0),
            finished_at: None,
            lease: None,
            trace: None,
        }
    }

    fn failure(retryable: bool) -> Outcome {
        Outcome::Failed {
            error: TaskError {
                error_type: "boom".into(),
                message: "it broke".into(),
            },
            retryable,
        }
    }

    #[test]
    fn a_failure_with_attempts_left_is_scheduled_after_the_backoff() {
        let end = end_attempt(&running(2, 3), failure(true), 10_000, 1.0);
        assert_eq!(end.state, TaskState::Scheduled);
        assert_eq!(end.run_at, Some(10_000 + 200));
        assert_eq!(end.errors.len(), 1);
        assert_eq!(end.errors[0].attempt, 2);
        assert!(end.error.is_none() && end.finished_at.is_none());
    }

    #[test]
    fn the_last_attempt_or_a_final_error_fails() {
        let end = end_attempt(&running(3, 3), failure(true), 5, 0.5);
        assert_eq!(end.state, TaskState::Failed);
        assert_eq!(end.error.unwrap().error_type, "boom");
        assert_eq!(end.finished_at, Some(5));
        let end = end_attempt(&running(1, 3), failure(false), 5, 0.5);
        assert_eq!(end.state, TaskState::Failed);
    }

    #[test]
    fn a_requested_cancel_wins_over_success() {
        let mut task = running(1, 3);
        task.cancel_requested = true;
        let end = end_attempt(&task, Outcome::Succeeded(json!(1)), 5, 0.0);
        assert_eq!(end.state, TaskState::Cancelled);
        assert!(end.result.is_none());
    }

    #[test]
    fn a_lost_attempt_counts() {
        assert_eq!(lose_attempt(&running(1, 3), 5).state, TaskState::Queued);
        let end = lose_attempt(&running(3, 3), 5);
        assert_eq!(end.state, TaskState::Failed);
        assert_eq!(end.error.unwrap().error_type, "lease_expired");
    }

    #[test]
    fn a_lease_cut_at_the_deadline_times_out_and_any_other_expiry_is_lost() {
        let mut task = running(1, 3);
        task.timeout_ms = Some(300);
        task.started_at = Some(1_000);
        assert_eq!(attempt_deadline(&task), Some(1_300));
        task.lease = Some(Lease {
            token: "l".into(),
            expires_at: 1_300,
        });
        let end = expire_attempt(&task, 2_000, 1.0);
        assert_eq!(end.state, TaskState::Scheduled);
        assert_eq!(end.run_at, Some(2_000 + 100));
        assert_eq!(end.errors[0].error_type, "timeout");
        assert_eq!(end.errors[0].message, "the attempt ran longer than 300 ms");
        task.attempt = 3;
        let end = expire_attempt(&task, 2_000, 1.0);
        assert_eq!(end.state, TaskState::Failed);
        assert_eq!(end.error.unwrap().error_type, "timeout");

        task.attempt = 1;
        task.lease = Some(Lease {
            token: "l".into(),
            expires_at: 1_200,
        });
        let end = expire_attempt(&task, 2_000, 1.0);
        assert_eq!(end.state, TaskState::Queued);
        assert_eq!(end.errors[0].error_type, "lease_expired");
        task.timeout_ms = None;
        assert_eq!(attempt_deadline(&task), None);
        assert_eq!(expire_attempt(&task, 2_000, 1.0).state, TaskState::Queued);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let backoff = Backoff {
            base_ms: 100,
            cap_ms: 1_000,
        };
        assert_eq!(backoff.delay_ms(1, 1.0), 100);
        assert_eq!(backoff.delay_ms(3, 1.0), 400);
        assert_eq!(backoff.delay_ms(30, 1.0), 1_000);
        assert_eq!(backoff.delay_ms(1, 0.0), 50);
        assert_eq!(backoff.delay_ms(u32::MAX, 1.0), 1_000);
    }
}
