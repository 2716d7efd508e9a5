//! Group commit for inserts: submits that arrive together share one transaction.
//!
//! Every insert transaction takes its queue's admission lock and holds it until it committed
//! (see [`super::insert`]), so one transaction per submit would queue every submit of a queue,
//! on every node, behind the previous one's commit. One task per node gathers whatever submits
//! are waiting and stores them in one transaction (each still all or nothing), so a lock,
//! a commit and an fsync are paid per batch, not per submit. As in the SQLite store, an answer
//! is sent only once its batch committed.
//!
//! A submit never fails for another's sake: if the combined transaction fails for a reason
//! that may be one job's (a value a column refuses), each job is stored again alone, so only
//! the job at fault fails. Failures every job would meet alike (the database is gone or
//! full) are answered at once, without the retries.

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::insert::{Answer, Job, insert_jobs};
use crate::store::{ClaimNow, StoreError, Submitted};
use crate::task::NewTask;

/// How many submits may wait for the inserter; beyond, submitters wait (backpressure).
const QUEUE_CAPACITY: usize = 4096;
/// The most tasks one transaction takes (a single larger submit still goes alone).
const MAX_TASKS: usize = 5_000;

type Request = (Job, oneshot::Sender<Answer>);

/// A handle on the inserter task; it stops when the store's token fires.
pub struct Inserter {
    requests: mpsc::Sender<Request>,
}

impl Inserter {
    pub fn start(pool: PgPool, stop: CancellationToken) -> Inserter {
        let (requests, waiting) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(run(pool, waiting, stop));
        Inserter { requests }
    }

    /// Stores `tasks` in the next batch, claiming for `claim` in its transaction; answers
    /// once that batch committed (or failed).
    pub async fn insert(
        &self,
        tasks: Vec<NewTask>,
        default_max_queued: u64,
        claim: Option<ClaimNow>,
    ) -> Result<Submitted, StoreError> {
        let (answer, answered) = oneshot::channel();
        let job = Job {
            tasks,
            default_max_queued,
            claim,
        };
        self.requests
            .send((job, answer))
            .await
            .map_err(|_| StoreError::Closed)?;
        answered.await.map_err(|_| StoreError::Closed)?
    }
}

async fn run(pool: PgPool, mut waiting: mpsc::Receiver<Request>, stop: CancellationToken) {
    loop {
        let first = tokio::select! {
            request = waiting.recv() => match request {
                Some(request) => request,
                None => return,
            },
            () = stop.cancelled() => return,
        };
        let mut tasks = first.0.tasks.len();
        let mut batch = vec![first];
        while tasks < MAX_TASKS {
            match waiting.try_recv() {
                Ok(request) => {
                    tasks += request.0.tasks.len();
                    batch.push(request);
                }
                Err(_) => break,
            }
        }
        let (jobs, answers): (Vec<Job>, Vec<oneshot::Sender<Answer>>) = batch.into_iter().unzip();
        let stored = store(&pool, &jobs).await;
        let stored = match stored {
            Err(error) if jobs.len() > 1 && !error.is_shared() => {
                // One job's rows may have failed the combined statement (a value the column
                // refuses, a CHECK): each job is decided alone, so only its submitter fails.
                let mut alone = Vec::with_capacity(jobs.len());
                for job in &jobs {
                    alone.push(store(&pool, std::slice::from_ref(job)).await.and_then(only));
                }
                alone
            }
            Err(error) => {
                if !matches!(error, StoreError::StorageFull(_)) {
                    tracing::error!(%error, submits = answers.len(), "cannot store submitted tasks");
                }
                (0..jobs.len()).map(|_| Err(error.clone())).collect()
            }
            Ok(stored) => stored,
        };
        for (answer, stored) in answers.into_iter().zip(stored) {
            // The submitter may have gone (client disconnected); the tasks stand.
            let _ = answer.send(stored);
        }
    }
}

/// Stores `jobs` in one transaction on a connection of the pool.
async fn store(pool: &PgPool, jobs: &[Job]) -> Result<Vec<Answer>, StoreError> {
    let mut conn = pool.acquire().await?;
    insert_jobs(&mut conn, jobs).await
}

/// The one answer of a transaction of one job.
fn only(mut answers: Vec<Answer>) -> Answer {
    answers
        .pop()
        .unwrap_or(Err(StoreError::backend("no answer for a job")))
}
