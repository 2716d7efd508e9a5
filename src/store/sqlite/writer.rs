//! Group commit: one thread owns the only writing connection and batches whatever writes are
//! waiting into one transaction, so concurrent submits share one fsync instead of paying one each.
//!
//! Each job runs inside its own SAVEPOINT: a job that fails rolls back alone and the rest of
//! the batch commits. A job's answer is held back until COMMIT returned, so an `Ok` always
//! means the write is on disk.
//!
//! Checkpoints (copying the WAL back into the database file) run on a thread of their own,
//! with a connection of their own, after commits: a checkpoint fsyncs the database file, and
//! run by the writer inside a commit (SQLite's automatic checkpoint) it held that commit's
//! callers, and every job queued behind them, for its whole length. A checkpoint in WAL mode
//! lets the writer go on meanwhile. The writer keeps SQLite's automatic checkpoint only as a
//! backstop, at a threshold the background one normally never lets the WAL reach.

use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::thread;
use std::time::Duration;

use rusqlite::Connection;

use tokio::sync::{Notify, mpsc, oneshot};

use crate::store::StoreError;

/// The most jobs one transaction takes; bounds the latency one batch adds to its first job.
const MAX_BATCH: usize = 1024;
/// How many jobs may wait for the writer. A full queue makes callers wait (backpressure to
/// the HTTP layer) instead of growing memory.
const QUEUE_CAPACITY: usize = 4096;

/// The writer checkpoints by itself only past this many WAL pages (4 KiB each: 64 MiB), when
/// the background checkpoints fell behind; SQLite's default is 1,000.
const BACKSTOP_CHECKPOINT_PAGES: i64 = 16_384;
/// The least time between two background checkpoints: each fsyncs the database file, so
/// under a steady stream of commits they are spaced, not run after every one.
const CHECKPOINT_SPACING: Duration = Duration::from_millis(100);

/// Runs a job's SQL; returns what to tell the caller once the batch committed (or not).
pub type Job = Box<dyn FnOnce(&Connection) -> Reply + Send>;
/// Answers a job's callers, given the commit's error if it failed.
pub type Reply = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// A handle on the writer thread. Cloning shares the thread; it exits when the last handle
/// (the last `Sender`) is dropped and the queue is drained.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    /// Notified after every successful commit (the event tailer listens).
    commits: Arc<Notify>,
}

impl Writer {
    /// Starts the writer thread on `conn`, and, given `checkpoints` (a second connection to
    /// the same file), the thread that checkpoints after its commits.
    pub fn spawn(conn: Connection, checkpoints: Option<Connection>) -> std::io::Result<Writer> {
        let (jobs, queue) = mpsc::channel(QUEUE_CAPACITY);
        let commits = Arc::new(Notify::new());
        let notify = Arc::clone(&commits);
        let committed = match checkpoints {
            Some(checkpoints) => {
                // One pending signal is enough: a checkpoint copies whatever committed before it.
                let (committed, signals) = std_mpsc::sync_channel(1);
                thread::Builder::new()
                    .name("taskd-sqlite-checkpoints".into())
                    .spawn(move || checkpoint_after_commits(&checkpoints, &signals))?;
                if let Err(error) =
                    conn.pragma_update(None, "wal_autocheckpoint", BACKSTOP_CHECKPOINT_PAGES)
                {
                    tracing::warn!(%error, "the writer keeps SQLite's default checkpoints");
                }
                Some(committed)
            }
            None => None,
        };
        thread::Builder::new()
            .name("taskd-sqlite-writer".into())
            .spawn(move || run(conn, queue, &notify, committed.as_ref()))?;
        Ok(Writer { jobs, commits })
    }

    pub fn commits(&self) -> Arc<Notify> {
        Arc::clone(&self.commits)
    }

    /// Runs `f` in the next batch and answers once that batch committed.
    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let outcome = in_savepoint(conn, f);
            Box::new(move |commit_error: Option<&StoreError>| {
                let outcome = match commit_error {
                    Some(error) => Err(error.clone()),
                    None => outcome,
                };
                // The caller may have gone away (client disconnected); the write stands.
                let _ = answer.send(outcome);
            })
        });
        self.send(job).await?;
        answered.await.map_err(|_| StoreError::Closed)?
    }

    /// Queues a job that answers its callers itself, with no savepoint around it: for a job
    /// that is refused before it writes or writes with one statement (which SQLite undoes
    /// on its own when it fails).
    pub async fn send(&self, job: Job) -> Result<(), StoreError> {
        self.jobs.send(job).await.map_err(|_| StoreError::Closed)
    }
}

fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    // Cached statements: parsing these twice per job showed in profiles.
    conn.prepare_cached("SAVEPOINT job")?.execute([])?;
    let outcome = f(conn);
    if outcome.is_err() {
        conn.prepare_cached("ROLLBACK TO job")?.execute([])?;
    }
    conn.prepare_cached("RELEASE job")?.execute([])?;
    outcome
}

fn run(
    conn: Connection,
    mut queue: mpsc::Receiver<Job>,
    commits: &Notify,
    checkpoints: Option<&std_mpsc::SyncSender<()>>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(&conn, &mut batch);
        commits.notify_one();
        if let Some(checkpoints) = checkpoints {
            // Full: a checkpoint is already asked for.
            let _ = checkpoints.try_send(());
        }
    }
    // The checkpoint thread ends with the last sender, here.
}

/// Checkpoints after commits, at most once per [`CHECKPOINT_SPACING`], until the writer is
/// gone. PASSIVE: it copies what no reader still needs and never waits for anyone; what it
/// leaves, the next one takes. A failure (a full disk, say) is only logged: the WAL keeps
/// every commit, and the next checkpoint tries again.
fn checkpoint_after_commits(conn: &Connection, commits: &std_mpsc::Receiver<()>) {
    while commits.recv().is_ok() {
        if let Err(error) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(%error, "a background checkpoint failed; the next one tries again");
        }
        thread::sleep(CHECKPOINT_SPACING);
    }
}

fn commit_batch(conn: &Connection, batch: &mut Vec<Job>) {
    if let Err(error) = conn
        .prepare_cached("BEGIN IMMEDIATE")
        .and_then(|mut begin| begin.execute([]))
    {
        let error = store_error(conn, error);
        if !error.is_shared() {
            tracing::error!(%error, "cannot begin a write transaction");
        }
        for job in batch.drain(..) {
            // Run nothing; tell every caller the write did not happen.
            drop(job);
        }
        return;
    }
    let replies: Vec<Reply> = batch.drain(..).map(|job| job(conn)).collect();
    let committed = conn
        .prepare_cached("COMMIT")
        .and_then(|mut commit| commit.execute([]));
    let commit_error = committed.err().map(|error| {
        let error = store_error(conn, error);
        // Out of space is said once by the store's space watch, not once per batch.
        if !error.is_shared() {
            tracing::error!(%error, jobs = replies.len(), "commit failed; the batch is rolled back");
        }
        let _ = conn.execute_batch("ROLLBACK");
        error
    });
    for reply in replies {
        reply(commit_error.as_ref());
    }
}

/// An error of the writer's connection: as `From` maps it, except that an I/O error whose
/// cause was ENOSPC (SQLite says SQLITE_FULL for most, but not for every file it writes,
/// such as the WAL index) is out of space too.
fn store_error(conn: &Connection, error: rusqlite::Error) -> StoreError {
    // SAFETY: the handle is only read for its last errno, on the thread that owns `conn`.
    let errno = unsafe { rusqlite::ffi::sqlite3_system_errno(conn.handle()) };
    match &error {
        rusqlite::Error::SqliteFailure(failure, _)
            if failure.code == rusqlite::ErrorCode::SystemIoFailure && errno == libc::ENOSPC =>
        {
            StoreError::StorageFull(error.to_string())
        }
        _ => error.into(),
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        match &error {
            // SQLITE_FULL: the disk is full, or the database reached `max_page_count`.
            rusqlite::Error::SqliteFailure(failure, _)
                if failure.code == rusqlite::ErrorCode::DiskFull =>
            {
                StoreError::StorageFull(error.to_string())
            }
            _ => StoreError::backend(error),
        }
    }
}
