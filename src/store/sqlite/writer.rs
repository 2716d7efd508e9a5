//! Group commit: one thread owns the only writing connection and batches whatever writes are
//! waiting into one transaction, so concurrent submits share one fsync instead of paying one each.
//!
//! Each job runs inside its own SAVEPOINT: a job that fails rolls back alone and the rest of
//! the batch commits. A job's answer is held back until its commit is on disk, so an `Ok`
//! always means the write is durable.
//!
//! Syncs run beside the writer: for a file, the writer's connection commits with `synchronous
//! = NORMAL` (SQLite writes the commit's pages into the WAL and does not sync) and threads of
//! their own, the syncers, sync the WAL (`fdatasync`) and only then answer the batches that
//! committed before the sync began. Meanwhile the writer runs the next batch, so a commit's
//! SQL no longer waits behind the previous commit's sync: on a disk whose sync takes 0.3 ms
//! that was half of the writer's time. SQLite's `NORMAL` keeps the file safe from corruption on
//! a power cut (checkpoints and WAL restarts still sync), and the syncers make every answered
//! commit as durable as `FULL` would. One thing differs: a commit is visible to readers as
//! soon as it is written, up to one sync before it is durable (docs/reliability.md).
//!
//! Checkpoints (copying the WAL back into the database file) run on a thread of their own,
//! with a connection of their own, after commits: a checkpoint fsyncs the database file, and
//! run by the writer inside a commit (SQLite's automatic checkpoint) it held that commit's
//! callers, and every job queued behind them, for its whole length. A checkpoint in WAL mode
//! lets the writer go on meanwhile. The writer keeps SQLite's automatic checkpoint only as a
//! backstop, at a threshold the background one normally never lets the WAL reach.

use std::collections::VecDeque;
use std::fs::File;
use std::path::Path;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
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

/// How many committed batches may wait for a sync before the writer waits for the syncers.
const SYNC_QUEUE: usize = 64;
/// How many syncs may be under way at once. A commit made while a sync runs starts its own
/// sync at once rather than waiting for that one to end: the disk overlaps them (on a virtio
/// disk with 0.3 ms syncs, two threads synced 1.6 times as often as one, each sync 20 %
/// slower).
const SYNCERS: usize = 2;

/// Runs a job's SQL; returns what to tell the caller once the batch committed (or not).
pub type Job = Box<dyn FnOnce(&Connection) -> Reply + Send>;
/// Answers a job's callers, given the commit's error if it failed.
pub type Reply = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// A handle on the writer thread. Cloning shares the thread; it exits when the last handle
/// (the last `Sender`) is dropped and the queue is drained.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
    /// Notified after every commit that reached the disk (the event tailer listens).
    commits: Arc<Notify>,
}

impl Writer {
    /// Starts the writer thread on `conn`; given `checkpoints` (a second connection to the
    /// same file), the thread that checkpoints after its commits; given `wal` (the path of
    /// the file's WAL), the syncers.
    pub fn spawn(
        conn: Connection,
        checkpoints: Option<Connection>,
        wal: Option<&Path>,
    ) -> std::io::Result<Writer> {
        let wal = wal.and_then(|wal| syncing(&conn, wal));
        Writer::start(conn, checkpoints, wal)
    }

    /// [`Writer::spawn`], given the WAL file to sync (`None`: SQLite syncs in COMMIT).
    fn start(
        conn: Connection,
        checkpoints: Option<Connection>,
        wal: Option<File>,
    ) -> std::io::Result<Writer> {
        let (jobs, queue) = mpsc::channel(QUEUE_CAPACITY);
        let commits = Arc::new(Notify::new());
        let checkpoint = match checkpoints {
            Some(checkpoints) => {
                // One pending signal is enough: a checkpoint copies whatever committed before it.
                let (checkpoint, signals) = std_mpsc::sync_channel(1);
                thread::Builder::new()
                    .name("taskd-sqlite-checkpoints".into())
                    .spawn(move || checkpoint_after_commits(&checkpoints, &signals))?;
                if let Err(error) =
                    conn.pragma_update(None, "wal_autocheckpoint", BACKSTOP_CHECKPOINT_PAGES)
                {
                    tracing::warn!(%error, "the writer keeps SQLite's default checkpoints");
                }
                Some(checkpoint)
            }
            None => None,
        };
        let after = AfterCommit {
            commits: Arc::clone(&commits),
            checkpoint,
        };
        let answer = match wal {
            Some(wal) => {
                let syncs = Arc::new(Syncs::new(wal, after));
                for _ in 0..SYNCERS {
                    let syncs = Arc::clone(&syncs);
                    thread::Builder::new()
                        .name("taskd-sqlite-sync".into())
                        .spawn(move || syncs.run())?;
                }
                Answer::AfterSync(syncs)
            }
            None => Answer::AtCommit(after),
        };
        thread::Builder::new()
            .name("taskd-sqlite-writer".into())
            .spawn(move || run(conn, queue, &answer))?;
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

/// A batch whose COMMIT returned: its callers' answers, and the commit's error if it failed.
struct Committed {
    replies: Vec<Reply>,
    error: Option<StoreError>,
}

impl Committed {
    fn answer(self, sync_error: Option<&StoreError>) {
        let error = self.error.as_ref().or(sync_error);
        for reply in self.replies {
            reply(error);
        }
    }
}

/// Who hears of a commit once it is durable: the event tailer, and the checkpoint thread.
struct AfterCommit {
    commits: Arc<Notify>,
    checkpoint: Option<std_mpsc::SyncSender<()>>,
}

impl AfterCommit {
    fn durable(&self) {
        self.commits.notify_one();
        if let Some(checkpoint) = &self.checkpoint {
            // Full: a checkpoint is already asked for.
            let _ = checkpoint.try_send(());
        }
    }
}

/// Where a committed batch goes: answered at once (SQLite synced it in COMMIT: `FULL`, or
/// there is no file), or to the syncers.
enum Answer {
    AtCommit(AfterCommit),
    AfterSync(Arc<Syncs>),
}

/// The WAL file to sync, with the writer's connection switched to `synchronous = NORMAL`;
/// `None` (the writer keeps `FULL` and syncs in COMMIT) if either cannot be had.
fn syncing(conn: &Connection, wal: &Path) -> Option<File> {
    // Out of WAL mode (a file system without shared memory), commits go elsewhere.
    let mode = conn.pragma_query_value(None, "journal_mode", |row| row.get::<_, String>(0));
    if !mode.is_ok_and(|mode| mode.eq_ignore_ascii_case("wal")) {
        return None;
    }
    // Read-only is enough for fdatasync; the file is SQLite's, kept while the store is open
    // (WAL mode, and PERSIST_WAL keeps it even past the last close). SQLite creates it at a
    // connection's first read in WAL mode.
    let opened = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
        .map_err(|error| error.to_string())
        .and_then(|()| File::open(wal).map_err(|error| format!("{}: {error}", wal.display())))
        .and_then(|file| {
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map(|()| file)
                .map_err(|error| error.to_string())
        });
    opened
        .inspect_err(|error| tracing::warn!(%error, "commits sync in SQLite's COMMIT"))
        .ok()
}

fn run(conn: Connection, mut queue: mpsc::Receiver<Job>, answer: &Answer) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let committed = commit_batch(&conn, &mut batch);
        match answer {
            Answer::AtCommit(after) => {
                committed.answer(None);
                after.durable();
            }
            Answer::AfterSync(syncs) => syncs.hand_over(committed),
        }
    }
    if let Answer::AfterSync(syncs) = answer {
        syncs.close();
    }
    // The checkpoint thread ends with its sender, here.
}

/// The batches that committed and wait for a sync, shared by the writer (which hands them
/// over in commit order, numbered) and the syncers.
struct Syncs {
    wal: File,
    after: AfterCommit,
    state: Mutex<SyncState>,
    /// Signalled when a batch is handed over (or the writer stopped).
    work: Condvar,
    /// Signalled when batches were answered, for a writer waiting for room.
    room: Condvar,
}

#[derive(Default)]
struct SyncState {
    /// Committed batches not answered yet, by number, oldest first.
    waiting: VecDeque<(u64, Committed)>,
    /// The number of the last batch handed over.
    committed: u64,
    /// The last batch a sync under way (or done) covers.
    covered: u64,
    closed: bool,
}

impl Syncs {
    fn new(wal: File, after: AfterCommit) -> Syncs {
        Syncs {
            wal,
            after,
            state: Mutex::new(SyncState::default()),
            work: Condvar::new(),
            room: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called by the writer after each COMMIT; waits while [`SYNC_QUEUE`] batches wait.
    fn hand_over(&self, batch: Committed) {
        let mut state = self.lock();
        while state.waiting.len() >= SYNC_QUEUE {
            state = self.room.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        state.committed += 1;
        let number = state.committed;
        state.waiting.push_back((number, batch));
        drop(state);
        self.work.notify_one();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.work.notify_all();
    }

    /// A syncer: syncs the WAL for every batch committed and not yet covered by a sync, then
    /// answers every batch up to the last one its sync covers. Their COMMITs wrote their
    /// pages before the sync began, so it covers them, even those an earlier sync still
    /// under way was started for (that one answers nothing left when it ends). A failed sync
    /// fails the batches it was for: their writes may or may not survive a power cut, so no
    /// caller is told they are durable.
    fn run(&self) {
        loop {
            let mut state = self.lock();
            while state.covered == state.committed && !state.closed {
                state = self.work.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            if state.covered == state.committed {
                return;
            }
            let target = state.committed;
            state.covered = target;
            drop(state);
            let synced = self.wal.sync_data().map_err(sync_error);
            let mut state = self.lock();
            let mut synced_batches = Vec::new();
            while state
                .waiting
                .front()
                .is_some_and(|(number, _)| *number <= target)
            {
                synced_batches.extend(state.waiting.pop_front().map(|(_, batch)| batch));
            }
            drop(state);
            self.room.notify_one();
            for batch in synced_batches {
                batch.answer(synced.as_ref().err());
            }
            if synced.is_ok() {
                self.after.durable();
            }
        }
    }
}

fn sync_error(error: std::io::Error) -> StoreError {
    let error = if error.raw_os_error() == Some(libc::ENOSPC) {
        StoreError::StorageFull(error.to_string())
    } else {
        StoreError::backend(format!("syncing the WAL failed: {error}"))
    };
    if !error.is_shared() {
        tracing::error!(%error, "a sync failed; its commits are answered with an error");
    }
    error
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

fn commit_batch(conn: &Connection, batch: &mut Vec<Job>) -> Committed {
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
        return Committed {
            replies: Vec::new(),
            error: Some(error),
        };
    }
    let replies: Vec<Reply> = batch.drain(..).map(|job| job(conn)).collect();
    let committed = conn
        .prepare_cached("COMMIT")
        .and_then(|mut commit| commit.execute([]));
    let error = committed.err().map(|error| {
        let error = store_error(conn, error);
        // Out of space is said once by the store's space watch, not once per batch.
        if !error.is_shared() {
            tracing::error!(%error, jobs = replies.len(), "commit failed; the batch is rolled back");
        }
        let _ = conn.execute_batch("ROLLBACK");
        error
    });
    Committed { replies, error }
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

#[cfg(test)]
mod tests {
    use std::os::fd::{FromRawFd, OwnedFd};

    use super::*;

    fn create_table(writer: &Writer) -> impl Future<Output = Result<(), StoreError>> {
        writer.run(|conn| Ok(conn.execute_batch("CREATE TABLE t (x INTEGER)")?))
    }

    #[tokio::test]
    async fn a_commit_is_answered_with_its_sync_and_fails_with_it() {
        // A pipe cannot be synced (EINVAL): every commit's sync fails, so an answer that
        // came before its sync (or without one) would be Ok.
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe() writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both descriptors were just opened and are owned by nothing else.
        let (read, _write) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let conn = Connection::open_in_memory().unwrap();
        let writer = Writer::start(conn, None, Some(File::from(read))).unwrap();
        let failed = create_table(&writer).await;
        assert!(
            matches!(&failed, Err(StoreError::Backend(error)) if error.to_string().contains("syncing the WAL failed")),
            "{failed:?}"
        );

        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("synced")).unwrap();
        let conn = Connection::open_in_memory().unwrap();
        let writer = Writer::start(conn, None, Some(file)).unwrap();
        create_table(&writer).await.unwrap();
    }

    #[test]
    fn the_writer_syncs_beside_sqlite_only_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let synchronous = |conn: &Connection| {
            conn.pragma_query_value(None, "synchronous", |row| row.get::<_, i64>(0))
                .unwrap()
        };

        let path = dir.path().join("wal.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "synchronous", "FULL").unwrap();
        let wal = path.with_extension("db-wal");
        assert!(syncing(&conn, &wal).is_some());
        assert_eq!(synchronous(&conn), 1, "NORMAL: the syncers sync");

        let path = dir.path().join("rollback.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "synchronous", "FULL").unwrap();
        // A stale WAL beside a file out of WAL mode is not what its commits write.
        File::create(path.with_extension("db-wal")).unwrap();
        assert!(syncing(&conn, &path.with_extension("db-wal")).is_none());
        assert_eq!(synchronous(&conn), 2, "FULL: SQLite syncs in COMMIT");
    }
}
