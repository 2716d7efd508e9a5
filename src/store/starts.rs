//! What both stores do alike around a claim made in a submit's own transaction
//! (`TaskStore::insert_claiming`): how many tasks each call of a combined transaction may
//! start, and sharing out what the one claim started. No connection or driver type here.

use std::collections::HashMap;

use super::{ClaimNow, Inserted, StoreError, Submitted};
use crate::task::{Task, TaskId, TaskState};

/// One call's answer before its share of the claim.
pub(crate) type Stored = Result<Vec<Inserted>, StoreError>;

/// How many tasks a call may start: its claim's limit, but no more than it stored queued
/// (a replay, a delayed task or a waiting child starts nothing of its own).
fn budget(stored: &Stored, claim: Option<ClaimNow>) -> usize {
    let (Ok(inserted), Some(claim)) = (stored, claim) else {
        return 0;
    };
    let queued = inserted
        .iter()
        .filter(|i| !i.replayed && i.task.state == TaskState::Queued)
        .count();
    claim.limit.min(queued)
}

/// What each call of a combined transaction may start (its [`budget`]), and the one claim
/// that starts them together ([`combined`]; `None`: nothing may start).
pub(crate) fn plan(
    stored: &[Stored],
    claims: &[Option<ClaimNow>],
) -> (Vec<usize>, Option<ClaimNow>) {
    let budgets: Vec<usize> = stored
        .iter()
        .zip(claims)
        .map(|(stored, claim)| budget(stored, *claim))
        .collect();
    let terms = combined(&budgets, claims);
    (budgets, terms)
}

/// The claim's terms for a combined transaction: the calls' budgets summed, under the
/// earliest lease any of them asked for. `None`: no call may start anything.
fn combined(budgets: &[usize], claims: &[Option<ClaimNow>]) -> Option<ClaimNow> {
    let limit = budgets.iter().sum();
    let lease_expires_at = claims.iter().flatten().map(|c| c.lease_expires_at).min()?;
    (limit > 0).then_some(ClaimNow {
        limit,
        lease_expires_at,
    })
}

/// Shares the tasks one claim started between the calls of its transaction, each up to its
/// budget: a call gets its own tasks first, then others' (the claim is the dispatcher's,
/// fair across queues and oldest first, so it may start older work than the call's). A
/// call's own task that started is shown running. `started` never outnumbers the budgets
/// together (the claim's limit was their sum).
pub(crate) fn share(
    started: Vec<Task>,
    calls: Vec<Stored>,
    budgets: &[usize],
) -> Vec<Result<Submitted, StoreError>> {
    let owners: HashMap<TaskId, usize> = calls
        .iter()
        .enumerate()
        .filter_map(|(n, stored)| stored.as_ref().ok().map(|inserted| (n, inserted)))
        .flat_map(|(n, inserted)| {
            inserted
                .iter()
                .filter(|i| !i.replayed)
                .map(move |i| (i.task.id, n))
        })
        .collect();
    let mut shares: Vec<Vec<Task>> = calls.iter().map(|_| Vec::new()).collect();
    let mut others = Vec::new();
    for task in started {
        match owners.get(&task.id) {
            Some(&n) if shares[n].len() < budgets[n] => shares[n].push(task),
            _ => others.push(task),
        }
    }
    for task in others {
        let room = (0..shares.len()).find(|&n| shares[n].len() < budgets[n]);
        // Proven by the claim's limit; should it ever break, the task still gets a worker.
        let n = room.unwrap_or_else(|| budgets.iter().rposition(|&b| b > 0).unwrap_or(0));
        shares[n].push(task);
    }
    calls
        .into_iter()
        .zip(shares)
        .map(|(stored, started)| {
            let mut inserted = stored?;
            for entry in inserted.iter_mut().filter(|i| !i.replayed) {
                if let Some(now) = started.iter().find(|t| t.id == entry.task.id) {
                    entry.task = now.clone();
                }
            }
            Ok(Submitted { inserted, started })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{Kind, NewTask, QueueName};

    fn stored(states: &[TaskState]) -> Stored {
        Ok(states
            .iter()
            .map(|&state| {
                let (mut task, _) =
                    NewTask::new(QueueName::default(), Kind::parse("echo").unwrap(), 1.into())
                        .into_task(0, None);
                task.state = state;
                Inserted {
                    task,
                    replayed: false,
                    waiting_before: 0,
                }
            })
            .collect())
    }

    fn running(task: &Task) -> Task {
        Task {
            state: TaskState::Running,
            attempt: 1,
            ..task.clone()
        }
    }

    const CLAIM: ClaimNow = ClaimNow {
        limit: 2,
        lease_expires_at: 9,
    };

    #[test]
    fn a_call_starts_no_more_than_it_stored_queued() {
        let two = stored(&[TaskState::Queued, TaskState::Scheduled, TaskState::Queued]);
        assert_eq!(budget(&two, Some(CLAIM)), 2);
        assert_eq!(budget(&two, Some(ClaimNow { limit: 1, ..CLAIM })), 1);
        assert_eq!(budget(&two, None), 0);
        assert_eq!(budget(&stored(&[TaskState::Waiting]), Some(CLAIM)), 0);
        let mut replay = stored(&[TaskState::Queued]);
        replay.as_mut().unwrap()[0].replayed = true;
        assert_eq!(budget(&replay, Some(CLAIM)), 0);
        assert_eq!(budget(&Err(StoreError::Closed), Some(CLAIM)), 0);
        assert_eq!(combined(&[0, 0], &[Some(CLAIM), None]), None);
        let early = ClaimNow {
            limit: 1,
            lease_expires_at: 3,
        };
        assert_eq!(
            combined(&[2, 1], &[Some(CLAIM), Some(early)]),
            Some(ClaimNow {
                limit: 3,
                lease_expires_at: 3
            })
        );
    }

    #[test]
    fn each_call_gets_its_own_tasks_first_then_others_within_its_budget() {
        let first = stored(&[TaskState::Queued]);
        let second = stored(&[TaskState::Queued]);
        let older = running(&stored(&[TaskState::Queued]).unwrap()[0].task);
        let own = running(&second.as_ref().unwrap()[0].task);
        // The claim took an older task and the second call's; the first call's waits.
        let shared = share(
            vec![older.clone(), own.clone()],
            vec![first, second],
            &[1, 1],
        );
        let [first, second] = [&shared[0], &shared[1]].map(|s| s.as_ref().unwrap());
        assert_eq!(second.started, vec![own.clone()]);
        assert_eq!(second.inserted[0].task, own);
        assert_eq!(first.started, vec![older]);
        assert_eq!(first.inserted[0].task.state, TaskState::Queued);
    }
}
