//! Task states and the only legal moves between them.
//!
//! [`TaskState::apply`] is the one place that decides whether a move is legal. The stores
//! render it (through [`super::Move::from_states`]) into the `WHERE` clauses of their guarded
//! `UPDATE`s, and the schema's CHECK constraints back it, so two writers can never both move
//! one task.
//!
//! ```text
//! submit ─► queued ◄── promote (run_at due) ── scheduled ◄── submit with run_at / delay_ms
//!             │  ▲                                  ▲
//!       claim │  │ release (shutdown, attempt       │ finish: error with attempts left
//!             ▼  │ not counted) / recover (lease    │ (after the backoff)
//!           running  expired, attempt counted)  ────┘
//!             ├── finish: ok ───────────────────────► succeeded
//!             ├── finish: error, none left / final ──► failed
//!             └── finish after a cancel request ────► cancelled
//! queued | scheduled ── cancel ──► cancelled      failed | cancelled ── retry ──► queued
//!
//! submit with `after` ─► waiting ── unblock (parents settled, policy met) ──► queued
//!                           └── cancel (a client, or a parent failed: dependency_failed) ─► cancelled
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for its parents (`after`) to settle. In: submit. Out: unblock, cancel (by a
    /// client, or as `dependency_failed` when its policy can no longer be met).
    Waiting,
    /// Waiting for its time (`run_at`): a delayed submit or a retry in backoff.
    /// In: submit, finish (retry). Out: promote, cancel.
    Scheduled,
    /// Waiting for a worker. In: submit, promote, release, recover, retry. Out: claim, cancel.
    Queued,
    /// Held by a worker under a lease. In: claim. Out: complete, release, recover.
    Running,
    /// Terminal: the handler returned a result.
    Succeeded,
    /// Terminal: the handler returned an error.
    Failed,
    /// Terminal: cancelled while queued, or while running at the end of the attempt.
    Cancelled,
}

/// Something that happens to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// A worker takes a queued task; the attempt counter goes up.
    Claim,
    /// The running attempt ended with this terminal state.
    Finish(TaskState),
    /// A client cancels: a queued task ends at once; a running one is asked to stop.
    Cancel,
    /// The node gives a running task back at shutdown; the attempt is not counted.
    Release,
    /// The running attempt was lost (crash, expired lease); the attempt stays counted.
    Recover,
    /// A scheduled task's time has come.
    Promote,
    /// A client re-runs a failed or cancelled task (attempts reset, history kept).
    Retry,
    /// A waiting task's parents settled as its policy asks: it may run.
    Unblock,
}

impl TaskState {
    pub const ALL: [TaskState; 7] = [
        TaskState::Waiting,
        TaskState::Scheduled,
        TaskState::Queued,
        TaskState::Running,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Cancelled,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled
        )
    }

    /// The state after `transition`, or `None` when the move is illegal from here.
    /// A cancel of a running task leaves it running (with `cancel_requested` set); a lost
    /// attempt with no attempts left ends failed.
    pub fn apply(self, transition: Transition) -> Option<TaskState> {
        use TaskState::*;
        match (self, transition) {
            (Queued, Transition::Claim) => Some(Running),
            (Queued | Scheduled | Waiting, Transition::Cancel) => Some(Cancelled),
            (Waiting, Transition::Unblock) => Some(Queued),
            (Scheduled, Transition::Promote) => Some(Queued),
            (Running, Transition::Cancel) => Some(Running),
            (Running, Transition::Finish(to)) if to.is_terminal() || to == Scheduled => Some(to),
            (Running, Transition::Release | Transition::Recover) => Some(Queued),
            (Failed | Cancelled, Transition::Retry) => Some(Queued),
            _ => None,
        }
    }

    /// Whether `transition` may lead from here to `to`: the check every store write
    /// makes (`Recover` may also end `failed` or `cancelled`, `Release` `cancelled`).
    pub fn allows(self, transition: Transition, to: TaskState) -> bool {
        use TaskState::*;
        match (self, transition) {
            (Running, Transition::Recover) => {
                matches!(to, Queued | Failed | Cancelled)
            }
            (Running, Transition::Release) => matches!(to, Queued | Cancelled),
            _ => self.apply(transition) == Some(to),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Waiting => "waiting",
            TaskState::Scheduled => "scheduled",
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
        }
    }

    /// The state as the rest of a sentence about a task: "task … has succeeded".
    pub fn described(self) -> &'static str {
        match self {
            TaskState::Waiting => "is waiting for its parents",
            TaskState::Scheduled => "is scheduled",
            TaskState::Queued => "is queued",
            TaskState::Running => "is running",
            TaskState::Succeeded => "has succeeded",
            TaskState::Failed => "has failed",
            TaskState::Cancelled => "was cancelled",
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a task state")]
pub struct UnknownState(pub String);

impl FromStr for TaskState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_move_only_by_retry() {
        let moves = [
            Transition::Claim,
            Transition::Cancel,
            Transition::Release,
            Transition::Recover,
            Transition::Finish(TaskState::Succeeded),
        ];
        for state in TaskState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for transition in moves {
                assert_eq!(state.apply(transition), None, "{state} {transition:?}");
            }
        }
        assert_eq!(TaskState::Succeeded.apply(Transition::Retry), None);
        assert_eq!(
            TaskState::Failed.apply(Transition::Retry),
            Some(TaskState::Queued)
        );
    }

    #[test]
    fn a_running_task_cannot_finish_as_queued_or_running() {
        let running = TaskState::Running;
        assert_eq!(running.apply(Transition::Finish(TaskState::Queued)), None);
        assert_eq!(running.apply(Transition::Finish(TaskState::Running)), None);
        assert_eq!(running.apply(Transition::Claim), None);
    }

    /// A waiting task leaves only by unblock (to queued) or cancel; nothing else moves it.
    #[test]
    fn a_waiting_task_is_unblocked_or_cancelled() {
        let waiting = TaskState::Waiting;
        assert_eq!(waiting.apply(Transition::Unblock), Some(TaskState::Queued));
        assert_eq!(
            waiting.apply(Transition::Cancel),
            Some(TaskState::Cancelled)
        );
        for transition in [Transition::Claim, Transition::Promote, Transition::Retry] {
            assert_eq!(waiting.apply(transition), None, "{transition:?}");
        }
        assert_eq!(TaskState::Queued.apply(Transition::Unblock), None);
    }

    #[test]
    fn states_round_trip_through_text() {
        for state in TaskState::ALL {
            assert_eq!(state.as_str().parse::<TaskState>().unwrap(), state);
        }
    }
}
