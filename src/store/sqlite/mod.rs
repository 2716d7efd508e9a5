//! The embedded store: SQLite in WAL mode, every answered commit synced to disk.
//!
//! Writes go through one writer thread that commits them in batches, and threads beside it
//! sync the WAL before the batches are answered ([`writer`]); reads go to a small pool of
//! read-only connections, which WAL lets run beside the writer. An in-memory database has a
//! single connection, so there the writer serves reads too.
//!
//! The queries: `rows` (reading tasks, and the moves other than claims and ends), `inserts`
//! (submits combined into one job), `claims`, `ends`, `queues`, `events` (the event log and
//! webhook deliveries).

mod claims;
mod counts;
mod deps;
mod ends;
mod events;
mod inserts;
mod keys;
mod queues;
mod rows;
mod schedules;
mod writer;

#[cfg(test)]
pub(crate) use rows::COLUMNS;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use tokio::sync::{Notify, Semaphore};

use crate::access::{KeyRecord, QueueScope};
use crate::store::migrations::{self, Step};
use crate::store::{
    CancelResult, Changed, ClaimMore, ClaimNow, Delivery, DeliveryOutcome, EndedAttempt,
    EventFilter, Inserted, QueueInfo, QueuePatch, Signal, StoreError, Submitted, TaskFilter,
    TaskStore,
};
use crate::task::{
    Kind, Millis, NewTask, Outcome, Progress, QueueName, Schedule, ScheduleName, Task, TaskEvent,
    TaskId, clock_ahead_millis, now_millis, now_millis_ahead,
};
use writer::Writer;

/// How many announcements of settled children wait for the engine before it lags.
const SETTLED_SIGNALS: usize = 4096;

/// How many read connections a file database keeps; reads beyond that wait for one.
const READERS: usize = 4;

pub struct SqliteStore {
    writer: Writer,
    /// Insert calls waiting to be combined into the writer's next job.
    inserts: inserts::Inserts,
    /// `None` for an in-memory database, whose one connection is the writer's.
    readers: Option<Arc<ReaderPool>>,
    /// Children settled by a parent's end, announced once committed: the engine resolves
    /// their waiters and claims the released ones (`Signal::Finished`, `Signal::Work`), as
    /// it does for a shared store's other nodes. A broadcast, so a slow listener lags
    /// (and is told so) rather than holding the writer.
    settled: tokio::sync::broadcast::Sender<Signal>,
}

/// Read-only connections. The semaphore bounds how many reads run at once to the number of
/// connections; the mutex only guards the hand-out of one.
struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

enum Location {
    /// A file, and `max_page_count` if the URL caps its size (`?max_page_count=N`).
    File(PathBuf, Option<u64>),
    Memory,
}

fn parse_url(url: &str) -> Result<Location, StoreError> {
    let rest = url
        .strip_prefix("sqlite:")
        .ok_or_else(|| StoreError::UnsupportedUrl(url.to_owned()))?;
    if rest == ":memory:" || rest == "//:memory:" {
        return Ok(Location::Memory);
    }
    // `sqlite://taskd.db` is relative, `sqlite:///var/lib/taskd.db` absolute.
    let path = rest.strip_prefix("//").unwrap_or(rest);
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    if path.is_empty() {
        return Err(StoreError::UnsupportedUrl(url.to_owned()));
    }
    // The one option read here; other parameters are left to SQLite's defaults, as before.
    let max_page_count = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("max_page_count="))
        .map(|n| {
            n.parse()
                .map_err(|_| StoreError::UnsupportedUrl(url.to_owned()))
        })
        .transpose()?;
    Ok(Location::File(PathBuf::from(path), max_page_count))
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    conn.pragma_update(None, "busy_timeout", 5000)?;
    // WAL lets readers run beside the writer; FULL makes every commit durable across a power
    // cut, which is what a 202 promises. The writer trades it for NORMAL plus syncs of its own
    // (`writer::syncing`) where it can; FULL stays where it cannot.
    enable_wal(conn)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    persist_wal(conn);
    tune(conn)
}

/// Keeps the `-wal` and `-shm` files when the last connection closes. SQLite deletes them on
/// a clean close and creates them again on the next open, and creating the WAL index means
/// allocating it: on a full disk that fails, and a server restarted there could not even
/// read. Kept, a restart on a full disk opens, serves reads and waits for space.
fn persist_wal(conn: &Connection) {
    let mut on: std::ffi::c_int = 1;
    // SAFETY: the handle is live for the call; PERSIST_WAL takes a pointer to an int that it
    // reads (and may write) during the call only.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            rusqlite::ffi::SQLITE_FCNTL_PERSIST_WAL,
            (&raw mut on).cast(),
        )
    };
    if rc != rusqlite::ffi::SQLITE_OK {
        tracing::warn!(
            rc,
            "SQLite will not keep its WAL files; a restart needs disk space"
        );
    }
}

/// How long opening waits for another process that is switching the same file to WAL.
const WAL_SWITCH_WAIT: Duration = Duration::from_secs(5);

/// Puts the file in WAL mode. Switching a new file takes an exclusive lock, and SQLite answers
/// "database is locked" at once instead of waiting out the busy timeout, so processes that
/// open one new file together (nodes starting at once) retry here for a while.
fn enable_wal(conn: &Connection) -> Result<(), StoreError> {
    let deadline = Instant::now() + WAL_SWITCH_WAIT;
    loop {
        let mode = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0));
        match mode {
            Ok(mode) => {
                if !mode.eq_ignore_ascii_case("wal") {
                    // A file system without shared memory, for one: it works, without the
                    // concurrent reads.
                    tracing::warn!(mode, "SQLite stays out of WAL mode");
                }
                return Ok(());
            }
            Err(rusqlite::Error::SqliteFailure(error, _))
                if error.code == rusqlite::ErrorCode::DatabaseBusy && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// Settings for speed that do not touch durability: statement journals (one per SAVEPOINT)
/// and temporary tables in memory instead of temporary files, a larger page cache, and room
/// for every statement the writer prepares (multi-row statements come in several sizes), so
/// none is parsed again for want of a cache slot.
fn tune(conn: &Connection) -> Result<(), StoreError> {
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "cache_size", -65_536)?; // KiB: 64 MiB
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// Turns off SQLite's memory statistics, once per process, before its first connection.
/// With them on (SQLite's default), every allocation and free of every connection takes one
/// process-wide mutex to count bytes: lock and unlock were ~5 % of the writer thread's time
/// in a drain. Nothing here reads the statistics (`sqlite3_memory_used`) or sets a soft heap
/// limit, which needs them.
fn without_memory_statistics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: SQLITE_CONFIG_MEMSTATUS takes one int. `sqlite3_config` may run only before
        // SQLite initializes, which its first connection does; after that it changes nothing
        // and answers SQLITE_MISUSE (a program embedding taskd opened one first): the
        // statistics stay on, which costs time, not correctness.
        let rc = unsafe {
            rusqlite::ffi::sqlite3_config(
                rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS,
                0 as std::ffi::c_int,
            )
        };
        if rc != rusqlite::ffi::SQLITE_OK {
            tracing::debug!(
                rc,
                "SQLite keeps its memory statistics (it was initialized first)"
            );
        }
    });
}

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 64;

fn open_reader(path: &PathBuf) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.pragma_update(None, "busy_timeout", 5000)?;
    Ok(conn)
}

/// Writes a consistent copy of the database that `url` names to `out`, while servers may be
/// using it: `VACUUM INTO` reads one snapshot (WAL readers never block the writer, nor it
/// them) and writes a compact, self-contained file, which a server can open as it is.
/// `out` must not exist yet.
pub fn backup(url: &str, out: &std::path::Path) -> Result<(), StoreError> {
    let Location::File(path, _) = parse_url(url)? else {
        return Err(StoreError::Unsupported(
            "backups of an in-memory database (it is gone with its process)",
        ));
    };
    let conn = open_reader(&path)?;
    let out = out
        .to_str()
        .ok_or_else(|| StoreError::Unsupported("a backup path that is not UTF-8"))?;
    conn.execute("VACUUM INTO ?1", [out])?;
    Ok(())
}

impl SqliteStore {
    pub async fn open(url: &str) -> Result<SqliteStore, StoreError> {
        let location = parse_url(url)?;
        tokio::task::spawn_blocking(move || Self::open_blocking(location))
            .await
            .map_err(StoreError::backend)?
    }

    fn open_blocking(location: Location) -> Result<SqliteStore, StoreError> {
        without_memory_statistics();
        let (conn, readers, checkpoints, wal) = match location {
            Location::Memory => {
                let conn = Connection::open_in_memory()?;
                tune(&conn)?;
                (conn, None, None, None)
            }
            Location::File(path, max_page_count) => {
                let conn = Connection::open(&path)?;
                configure(&conn)?;
                if let Some(pages) = max_page_count {
                    // A cap on the file's size (SQLite keeps it at least the current size):
                    // writes beyond it fail as on a full disk.
                    conn.pragma_update(None, "max_page_count", pages)?;
                }
                let checkpoints = Connection::open(&path)?;
                checkpoints.pragma_update(None, "busy_timeout", 5000)?;
                persist_wal(&checkpoints);
                let mut wal = path.clone().into_os_string();
                wal.push("-wal");
                let pool = ReaderPool {
                    path,
                    idle: Mutex::new(Vec::new()),
                    permits: Semaphore::new(READERS),
                };
                (conn, Some(Arc::new(pool)), Some(checkpoints), Some(wal))
            }
        };
        let writer = Writer::spawn(conn, checkpoints, wal.as_deref().map(std::path::Path::new))
            .map_err(StoreError::backend)?;
        Ok(SqliteStore {
            writer,
            inserts: inserts::Inserts::default(),
            readers,
            settled: tokio::sync::broadcast::channel(SETTLED_SIGNALS).0,
        })
    }

    /// Runs a writer job that may end tasks, settles their waiting children in the same
    /// transaction, and announces the settled ones once committed.
    async fn ending<T, F>(&self, job: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, Millis) -> Result<(T, Vec<TaskId>), StoreError> + Send + 'static,
    {
        let now = now_millis();
        let (answer, settled) = self
            .writer
            .run(move |conn| {
                let (answer, ended) = job(conn, now)?;
                Ok((answer, deps::after_ends(conn, ended, now)?))
            })
            .await?;
        let mut released = false;
        for task in settled {
            if task.state.is_terminal() {
                let _ = self.settled.send(Signal::Finished(task.id));
            } else {
                released = true;
            }
        }
        if released {
            let _ = self.settled.send(Signal::Work);
        }
        Ok(answer)
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let Some(pool) = &self.readers else {
            return self.writer.run(f).await;
        };
        let _permit = pool
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let pool = Arc::clone(pool);
        tokio::task::spawn_blocking(move || {
            // A connection is opened lazily, and again if a panicking read lost one.
            let idle = pool.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let conn = match idle {
                Some(conn) => conn,
                None => open_reader(&pool.path)?,
            };
            let outcome = f(&conn);
            pool.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn);
            outcome
        })
        .await
        .map_err(StoreError::backend)?
    }
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS taskd_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT    NOT NULL,
             applied_at INTEGER NOT NULL,
             checksum   TEXT
         )",
    )?;
    // A database made before checksums were recorded gains the column; the next loop fills
    // it with the files' sums (trusted on this first start).
    let has_checksum: bool = conn.query_row(
        "SELECT count(*) > 0 FROM pragma_table_info('taskd_migrations') WHERE name = 'checksum'",
        [],
        |row| row.get(0),
    )?;
    if !has_checksum {
        conn.execute_batch("ALTER TABLE taskd_migrations ADD COLUMN checksum TEXT")?;
    }
    for migration in migrations::SQLITE {
        let recorded: Option<Option<String>> = conn
            .query_row(
                "SELECT checksum FROM taskd_migrations WHERE version = ?1",
                [migration.version],
                |row| row.get(0),
            )
            .optional()?;
        match migration.decide(recorded)? {
            Step::Apply => {
                tracing::info!(
                    version = migration.version,
                    name = migration.name,
                    "applying migration"
                );
                conn.execute_batch(migration.sql)?;
                conn.execute(
                    "INSERT INTO taskd_migrations (version, name, applied_at, checksum)
                     VALUES (?1, ?2, ?3, ?4)",
                    rusqlite::params![
                        migration.version,
                        migration.name,
                        now_millis(),
                        migration.checksum()
                    ],
                )?;
            }
            Step::Record => {
                conn.execute(
                    "UPDATE taskd_migrations SET checksum = ?2 WHERE version = ?1",
                    rusqlite::params![migration.version, migration.checksum()],
                )?;
            }
            Step::Nothing => {}
        }
    }
    Ok(())
}

#[async_trait]
impl TaskStore for SqliteStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        // One writer job: the migrations commit together or not at all.
        self.writer.run(migrate).await
    }

    async fn insert(
        &self,
        tasks: Vec<NewTask>,
        default_max_queued: u64,
    ) -> Result<Vec<Inserted>, StoreError> {
        let submitted = self
            .inserts
            .insert(&self.writer, tasks, default_max_queued, None)
            .await?;
        Ok(submitted.inserted)
    }

    async fn insert_claiming(
        &self,
        tasks: Vec<NewTask>,
        default_max_queued: u64,
        claim: ClaimNow,
    ) -> Result<Submitted, StoreError> {
        self.inserts
            .insert(&self.writer, tasks, default_max_queued, Some(claim))
            .await
    }

    async fn get(&self, id: TaskId) -> Result<Option<Task>, StoreError> {
        self.read(move |conn| rows::task_get(conn, id)).await
    }

    async fn get_many(&self, ids: Vec<TaskId>) -> Result<Vec<Task>, StoreError> {
        self.read(move |conn| rows::task_get_many(conn, &ids)).await
    }

    fn signals(&self) -> Option<tokio::sync::broadcast::Receiver<Signal>> {
        Some(self.settled.subscribe())
    }

    async fn list(&self, filter: TaskFilter) -> Result<Vec<Task>, StoreError> {
        self.read(move |conn| rows::task_list(conn, &filter)).await
    }

    async fn claim(&self, limit: usize, lease_expires_at: Millis) -> Result<Vec<Task>, StoreError> {
        self.claim_growing(limit, Box::new(|| 0), lease_expires_at)
            .await
    }

    async fn claim_growing(
        &self,
        limit: usize,
        more: ClaimMore,
        lease_expires_at: Millis,
    ) -> Result<Vec<Task>, StoreError> {
        // The writer thread is off the runtime: the runtime's clock offset comes from here.
        let ahead = clock_ahead_millis();
        // A claim waits for the writer's batch before it (a commit, ~1 ms in a drain); the
        // workers that came free meanwhile are counted when it starts, not when it was sent.
        // The time is read after that: a task started on a worker another task just left
        // never seems to start before that one ended.
        self.writer
            .run(move |conn| {
                let limit = limit + more();
                let now = now_millis_ahead(ahead);
                claims::task_claim(conn, limit, lease_expires_at, now)
            })
            .await
    }

    async fn finish(
        &self,
        id: TaskId,
        lease: &str,
        outcome: Outcome,
    ) -> Result<Option<Task>, StoreError> {
        // One end is a batch of one: a single way to end an attempt.
        let attempt = EndedAttempt {
            id,
            lease: lease.to_owned(),
            outcome,
            ended_at: now_millis(),
        };
        let mut ended = self.finish_many(vec![attempt]).await?;
        Ok(ended.pop().flatten())
    }

    async fn finish_many(
        &self,
        attempts: Vec<EndedAttempt>,
    ) -> Result<Vec<Option<Task>>, StoreError> {
        // One job: one savepoint and one trip to the writer for the whole batch.
        self.ending(move |conn, _| {
            let ended = ends::task_finish_many(conn, attempts)?;
            let terminal = deps::terminal(ended.iter().flatten());
            Ok((ended, terminal))
        })
        .await
    }

    // One writer runs at a time here, so no row is ever held by another and nothing is
    // skipped: the default `renew_one` (this, for one lease) serves heartbeats.
    async fn renew(
        &self,
        leases: Vec<(TaskId, String)>,
        lease_expires_at: Millis,
    ) -> Result<u64, StoreError> {
        self.writer
            .run(move |conn| rows::task_renew(conn, &leases, lease_expires_at))
            .await
    }

    async fn cancel(&self, id: TaskId) -> Result<CancelResult, StoreError> {
        self.ending(move |conn, now| {
            let cancelled = rows::task_cancel(conn, id, now)?;
            let ended = match &cancelled {
                CancelResult::Cancelled(task) => {
                    // It may have been waiting: it waits for nobody now.
                    deps::forget_edges(conn, id)?;
                    deps::terminal([task])
                }
                _ => Vec::new(),
            };
            Ok((cancelled, ended))
        })
        .await
    }

    async fn release(&self, id: TaskId, lease: &str) -> Result<Option<Task>, StoreError> {
        let lease = lease.to_owned();
        self.ending(move |conn, now| {
            let released = rows::task_release(conn, id, &lease, now)?;
            let ended = deps::terminal(&released);
            Ok((released, ended))
        })
        .await
    }

    async fn recover_running(&self) -> Result<Vec<Task>, StoreError> {
        self.ending(move |conn, now| {
            let recovered = rows::task_recover_running(conn, now)?;
            let ended = deps::terminal(&recovered);
            Ok((recovered, ended))
        })
        .await
    }

    async fn rescue_expired(&self, now: Millis) -> Result<Vec<Task>, StoreError> {
        self.ending(move |conn, _| {
            let rescued = rows::task_rescue_expired(conn, now)?;
            let ended = deps::terminal(&rescued);
            Ok((rescued, ended))
        })
        .await
    }

    async fn promote_due(&self, now: Millis) -> Result<u64, StoreError> {
        self.writer
            .run(move |conn| rows::task_promote_due(conn, now))
            .await
    }

    async fn next_due(&self) -> Result<Option<Millis>, StoreError> {
        self.read(rows::task_next_due).await
    }

    async fn retry(&self, id: TaskId) -> Result<Changed, StoreError> {
        self.writer
            .run(move |conn| rows::task_retry(conn, id))
            .await
    }

    async fn delete(&self, id: TaskId) -> Result<Changed, StoreError> {
        self.writer
            .run(move |conn| rows::task_delete(conn, id))
            .await
    }

    async fn purge_finished(&self, before: Millis, limit: usize) -> Result<u64, StoreError> {
        self.writer
            .run(move |conn| rows::task_purge_finished(conn, before, limit))
            .await
    }

    async fn queues(&self) -> Result<Vec<QueueInfo>, StoreError> {
        self.read(queues::queue_list).await
    }

    async fn remote_queues(&self) -> Result<Vec<QueueName>, StoreError> {
        self.read(queues::remote_queues).await
    }

    async fn queue(&self, name: QueueName) -> Result<QueueInfo, StoreError> {
        self.read(move |conn| queues::queue_get(conn, name)).await
    }

    async fn update_queue(
        &self,
        name: QueueName,
        patch: QueuePatch,
    ) -> Result<QueueInfo, StoreError> {
        self.writer
            .run(move |conn| queues::queue_update(conn, name, patch))
            .await
    }

    async fn claim_queue(
        &self,
        queue: QueueName,
        kinds: Option<Vec<Kind>>,
        limit: usize,
        lease_expires_at: Millis,
    ) -> Result<Vec<Task>, StoreError> {
        let now = now_millis();
        self.writer
            .run(move |conn| {
                let kinds = kinds.as_deref();
                claims::task_claim_queue(conn, &queue, kinds, limit, lease_expires_at, now)
            })
            .await
    }

    fn commits(&self) -> Arc<Notify> {
        self.writer.commits()
    }

    async fn events_after(
        &self,
        after: i64,
        filter: EventFilter,
        limit: usize,
    ) -> Result<Vec<TaskEvent>, StoreError> {
        self.read(move |conn| events::events_after(conn, after, &filter, limit))
            .await
    }

    async fn event_bounds(&self) -> Result<Option<(i64, i64)>, StoreError> {
        self.read(events::event_bounds).await
    }

    async fn record_progress(
        &self,
        updates: Vec<(TaskId, String, Progress)>,
    ) -> Result<u64, StoreError> {
        self.writer
            .run(move |conn| events::record_progress(conn, &updates))
            .await
    }

    async fn deliveries_due(&self, now: Millis, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        self.read(move |conn| events::deliveries_due(conn, now, limit))
            .await
    }

    async fn delivery_tried(&self, id: String, outcome: DeliveryOutcome) -> Result<(), StoreError> {
        self.writer
            .run(move |conn| events::delivery_tried(conn, &id, &outcome))
            .await
    }

    async fn key_insert(&self, key: KeyRecord) -> Result<(), StoreError> {
        self.writer
            .run(move |conn| keys::key_insert(conn, &key))
            .await
    }

    async fn keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        self.read(keys::keys).await
    }

    async fn key_by_hash(&self, hash: String) -> Result<Option<KeyRecord>, StoreError> {
        self.read(move |conn| keys::key_by_hash(conn, &hash)).await
    }

    async fn key_revoke(&self, name: String, at: Millis) -> Result<bool, StoreError> {
        self.writer
            .run(move |conn| keys::key_revoke(conn, &name, at))
            .await
    }

    async fn keys_exist(&self) -> Result<bool, StoreError> {
        self.read(keys::keys_exist).await
    }

    async fn key_used(&self, hash: String, at: Millis) -> Result<(), StoreError> {
        self.writer
            .run(move |conn| keys::key_used(conn, &hash, at))
            .await
    }

    async fn schedule_put(&self, schedule: Schedule) -> Result<Schedule, StoreError> {
        self.writer
            .run(move |conn| schedules::schedule_put(conn, &schedule))
            .await
    }

    async fn schedule_get(&self, name: ScheduleName) -> Result<Option<Schedule>, StoreError> {
        self.read(move |conn| schedules::schedule_get(conn, &name))
            .await
    }

    async fn schedules(
        &self,
        after: Option<ScheduleName>,
        limit: usize,
        queues: QueueScope,
    ) -> Result<Vec<Schedule>, StoreError> {
        self.read(move |conn| schedules::schedule_list(conn, after.as_ref(), limit, &queues))
            .await
    }

    async fn schedule_delete(&self, name: ScheduleName) -> Result<bool, StoreError> {
        self.writer
            .run(move |conn| schedules::schedule_delete(conn, &name))
            .await
    }

    async fn schedules_due(&self, now: Millis, limit: usize) -> Result<Vec<Schedule>, StoreError> {
        self.read(move |conn| schedules::schedules_due(conn, now, limit))
            .await
    }

    async fn schedule_next_at(&self) -> Result<Option<Millis>, StoreError> {
        self.read(schedules::schedule_next_at).await
    }

    async fn schedule_fired(
        &self,
        name: ScheduleName,
        expected_next_at: Millis,
        next_at: Millis,
        fired: Option<(TaskId, Millis)>,
    ) -> Result<bool, StoreError> {
        self.writer
            .run(move |conn| {
                schedules::schedule_fired(conn, &name, expected_next_at, next_at, fired)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sql::{Dialect, task_list};
    use crate::task::TaskState;

    #[test]
    fn urls_name_a_file_or_memory() {
        assert!(matches!(parse_url("sqlite::memory:"), Ok(Location::Memory)));
        let Ok(Location::File(path, None)) = parse_url("sqlite://taskd.db") else {
            panic!("a relative file")
        };
        assert_eq!(path, PathBuf::from("taskd.db"));
        let Ok(Location::File(path, None)) = parse_url("sqlite:///var/lib/t.db?mode=rwc") else {
            panic!("an absolute file")
        };
        assert_eq!(path, PathBuf::from("/var/lib/t.db"));
        let Ok(Location::File(_, Some(9))) = parse_url("sqlite://t.db?mode=rwc&max_page_count=9")
        else {
            panic!("a capped file")
        };
        assert!(parse_url("sqlite://t.db?max_page_count=many").is_err());
        assert!(parse_url("sqlite://").is_err());
        assert!(parse_url("postgres://x").is_err());
    }

    /// Every listing by state reads the partial index that holds the state (migration 0011),
    /// with or without a queue and a cursor: never the whole table, never the key backwards.
    #[test]
    fn a_listing_by_state_reads_its_index() {
        let conn = Connection::open_in_memory().unwrap();
        migrate(&conn).unwrap();
        for state in TaskState::ALL {
            let filter = TaskFilter {
                state: Some(state),
                queue: Some(QueueName::parse("q").unwrap()),
                before: Some(TaskId::new()),
                limit: 5,
                ..TaskFilter::default()
            };
            let list = task_list(Dialect::Sqlite, "id", &filter);
            let plan: Vec<String> = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {}", list.sql))
                .unwrap()
                .query_map(rusqlite::params_from_iter(&list.values), |row| row.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let index = match state {
                TaskState::Running => "tasks_lease",
                _ => "tasks_state",
            };
            assert!(
                plan.iter()
                    .any(|step| step.starts_with("SEARCH tasks USING")
                        && step.contains(&format!("INDEX {index} "))),
                "{state:?}: {plan:?}"
            );
        }
    }
}
