//! Every write a store makes to an existing task, named by the states it may start from.
//!
//! The states come from [`TaskState::apply`] (and, for a delete, [`TaskState::is_terminal`]):
//! nothing here lists them by hand. The stores render [`Move::from_states`] into the `WHERE`
//! clauses of their guarded writes (`store::sql::state_guard`), so the SQL cannot drift from
//! the state machine. Nothing here knows SQL.

use std::sync::LazyLock;

use super::{TaskState, Transition};

/// A guarded write of one task, by what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Move {
    /// A worker takes a task (`Transition::Claim`).
    Claim,
    /// The running attempt ends, and everything only its holder may do meanwhile: renew the
    /// lease, report progress (`Transition::Finish`).
    Finish,
    /// A cancel that ends the task at once (`Transition::Cancel` to `cancelled`).
    Cancel,
    /// A cancel that asks a running attempt to stop (`Transition::Cancel`, state kept).
    RequestCancel,
    /// A running task given back at shutdown (`Transition::Release`).
    Release,
    /// A running attempt lost to a crash or an expired lease (`Transition::Recover`).
    Recover,
    /// A scheduled task whose time came (`Transition::Promote`).
    Promote,
    /// A client re-runs a task (`Transition::Retry`).
    Retry,
    /// A client forgets a task: only a finished one.
    Delete,
    /// A waiting task whose parents settled as its policy asks (`Transition::Unblock`).
    Unblock,
}

impl Move {
    pub const ALL: [Move; 10] = [
        Move::Claim,
        Move::Finish,
        Move::Cancel,
        Move::RequestCancel,
        Move::Release,
        Move::Recover,
        Move::Promote,
        Move::Retry,
        Move::Delete,
        Move::Unblock,
    ];

    /// Whether this move may start from `state`, as the state machine says.
    pub fn starts_from(self, state: TaskState) -> bool {
        let to = |transition| state.apply(transition);
        match self {
            Move::Claim => to(Transition::Claim).is_some(),
            Move::Finish => TaskState::ALL
                .into_iter()
                .any(|end| state.allows(Transition::Finish(end), end)),
            Move::Cancel => to(Transition::Cancel) == Some(TaskState::Cancelled),
            Move::RequestCancel => to(Transition::Cancel) == Some(state),
            Move::Release => to(Transition::Release).is_some(),
            Move::Recover => to(Transition::Recover).is_some(),
            Move::Promote => to(Transition::Promote).is_some(),
            Move::Retry => to(Transition::Retry).is_some(),
            Move::Delete => state.is_terminal(),
            Move::Unblock => to(Transition::Unblock).is_some(),
        }
    }

    /// The states this move may start from, in the order of [`TaskState::ALL`].
    pub fn from_states(self) -> &'static [TaskState] {
        static TABLE: LazyLock<Vec<Vec<TaskState>>> = LazyLock::new(|| {
            Move::ALL
                .iter()
                .map(|&m| {
                    TaskState::ALL
                        .into_iter()
                        .filter(|&s| m.starts_from(s))
                        .collect()
                })
                .collect()
        });
        // `ALL` lists every variant in declaration order, so `self as usize` indexes it.
        &TABLE[self as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskState::*;

    /// The table the state diagram in `state.rs` draws: a change to `apply` that moves a
    /// guard shows here, on purpose.
    #[test]
    fn each_move_starts_from_the_states_of_the_diagram() {
        let expected: [(Move, &[TaskState]); 10] = [
            (Move::Claim, &[Queued]),
            (Move::Finish, &[Running]),
            (Move::Cancel, &[Waiting, Scheduled, Queued]),
            (Move::RequestCancel, &[Running]),
            (Move::Release, &[Running]),
            (Move::Recover, &[Running]),
            (Move::Promote, &[Scheduled]),
            (Move::Retry, &[Failed, Cancelled]),
            (Move::Delete, &[Succeeded, Failed, Cancelled]),
            (Move::Unblock, &[Waiting]),
        ];
        for (m, states) in expected {
            assert_eq!(m.from_states(), states, "{m:?}");
        }
    }

    #[test]
    fn all_lists_every_move_in_declaration_order() {
        for (i, m) in Move::ALL.into_iter().enumerate() {
            assert_eq!(m as usize, i);
        }
    }
}
