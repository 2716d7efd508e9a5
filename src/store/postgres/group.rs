//! Group commit for inserts: submits that arrive together share one transaction.
//!
//! Every insert transaction takes its queue's admission lock and holds it until it committed
//! (see [`super::insert`]), so one transaction per submit would queue every submit of a queue,
//! on every node, behind the previous one's commit. One task per node gathers whatever submits
//! are waiting and stores them in one transaction (each still all or nothing), so a lock,
//! a commit and an fsync are paid per batch, not per submit. As in the SQLite store, an answer
//! is sent only once its batch committed.

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::insert::{Answer, Job, insert_jobs};
use crate::store::{Inserted, StoreError};
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

    /// Stores `tasks` in the next batch; answers once that batch committed (or failed).
    pub async fn insert(
        &self,
        tasks: Vec<NewTask>,
        default_max_queued: u64,
    ) -> Result<Vec<Inserted>, StoreError> {
        let (answer, answered) = oneshot::channel();
        let job = Job {
            tasks,
            default_max_queued,
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
        let stored = async {
            let mut conn = pool.acquire().await?;
            insert_jobs(&mut conn, &jobs).await
        };
        match stored.await {
            Ok(stored) => {
                for (answer, stored) in answers.into_iter().zip(stored) {
                    // The submitter may have gone (client disconnected); the tasks stand.
                    let _ = answer.send(stored);
                }
            }
            Err(error) => {
                tracing::error!(%error, submits = answers.len(), "cannot store submitted tasks");
                for answer in answers {
                    let _ = answer.send(Err(StoreError::Backend(error.to_string())));
                }
            }
        }
    }
}
