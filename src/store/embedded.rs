//! The embedded backend: a fjall database (an LSM tree with a write-ahead
//! journal) in the data directory, one keyspace per table.
//!
//! Why fjall: pure Rust (no C toolchain or system library), crash recovery
//! from its journal, and a write path that is a journal append plus one
//! `fdatasync`, so a commit costs little CPU (the B-tree store used before,
//! redb, spent half the proxy's core rewriting pages on every commit).
//!
//! Contract: a write is durable (journal fsynced) before its future resolves,
//! so the HTTP answer that depends on it is sent only after, and it becomes
//! visible to readers only once durable (fjall publishes a batch after its
//! sync). The exceptions are [`Table::take_before_write`] and a swap made by
//! [`Table::compare_and_swap_before_write`], which resolve once decided and
//! are made durable by the caller's next write (batches commit in order, one
//! journal). One writer thread applies writes in batches: every write queued
//! while the previous batch was syncing goes into the next one (group
//! commit), so many concurrent requests share one fsync. Being the only
//! writer, it makes take and compare-and-swap atomic. Reads run on the
//! caller's thread and never wait for the writer.
//!
//! [`Database::close`] (the proxy's shutdown) releases the directory before
//! it returns: the writer finishes what is queued and is joined, every
//! table lets go of its keyspace, and the last database handle is dropped,
//! which stops and joins fjall's own threads and unlocks the directory, so
//! another store can open it at once in the same process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fjall::{Keyspace, KeyspaceCreateOptions, OwnedWriteBatch, PersistMode};
use futures_util::FutureExt;
use tokio::sync::oneshot;

use super::write_queue::{self, QueueReceiver, QueueSender};
use super::{Counting, StoreError, StoreFuture, Table};

/// Largest number of writes committed together.
const MAX_BATCH: usize = 512;

/// Memtable size per table. fjall's default (64 MiB) lets each table's
/// skiplist grow to hundreds of thousands of short-lived records and
/// tombstones, which makes the writer's lookups and inserts slow; a small
/// memtable keeps them cheap and resident memory bounded, at the cost of
/// more frequent small flushes (docs/performance.md).
const MEMTABLE_BYTES: u64 = 4 * 1024 * 1024;

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Stored form: 8 bytes of big-endian expiry (Unix ms), then the record.
fn encode(value: &[u8], ttl: Duration) -> Vec<u8> {
    let expires = now_millis().saturating_add(ttl.as_millis() as u64);
    let mut out = Vec::with_capacity(8 + value.len());
    out.extend_from_slice(&expires.to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// The record if it has not expired.
fn decode(stored: &[u8], now: u64) -> Option<Vec<u8>> {
    let (expiry, value) = stored.split_at_checked(8)?;
    let expires = u64::from_be_bytes(expiry.try_into().ok()?);
    (expires > now).then(|| value.to_vec())
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("embedded store: {e}"))
}

fn closed() -> StoreError {
    unavailable("the store is closed (the proxy was shut down)")
}

/// A lock whose holder cannot leave what it guards half changed (a take or
/// a push of one value), so a panic elsewhere does not make it unusable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

enum Op {
    Put {
        key: String,
        stored: Vec<u8>,
    },
    Take {
        key: String,
    },
    Delete {
        key: String,
    },
    Swap {
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    },
    Touch {
        key: String,
        ttl: Duration,
    },
    Purge,
}

enum Outcome {
    Done,
    Value(Option<Vec<u8>>),
    Flag(bool),
    Count(usize),
}

struct Write {
    table: Arc<TableState>,
    op: Op,
    /// Answered as soon as its outcome is decided, before its batch is
    /// durable (see [`Table::take_before_write`]).
    early: bool,
    reply: oneshot::Sender<Result<Outcome, StoreError>>,
}

/// The database: the queue of the writer thread, and what
/// [`Database::close`] releases.
#[derive(Clone)]
pub struct Database {
    writes: QueueSender<Write>,
    path: PathBuf,
    open: Arc<Open>,
}

/// What holds the directory's lock while the store is open: each of these
/// (and every table's keyspace) keeps fjall's lock file locked.
struct Open {
    /// `None` once closed.
    db: Mutex<Option<fjall::Database>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    tables: Mutex<Vec<Arc<TableState>>>,
}

impl Database {
    /// Opens (or creates, or recovers after a crash) the database in
    /// `<dir>/store`.
    pub fn open(dir: &Path) -> Result<Database, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| unavailable(format!("cannot create {}: {e}", dir.display())))?;
        if dir.join("store.redb").exists() {
            log::warn!(
                "{} holds store.redb from an earlier version of the proxy; its records are not read \
                 (clients register again, users authorize again); delete it once no longer needed",
                dir.display()
            );
        }
        let path = dir.join("store");
        let db = fjall::Database::builder(&path)
            // Flushes and compactions of a few small tables need no more.
            .worker_threads(1)
            .cache_size(16 * 1024 * 1024)
            // The writer thread syncs every batch itself.
            .manual_journal_persist(true)
            .open()
            .map_err(|e| unavailable(format!("cannot open {}: {e}", path.display())))?;
        let (writes, queue) = write_queue::channel::<Write>();
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn({
                let db = db.clone();
                move || writer(db, queue)
            })
            .map_err(unavailable)?;
        Ok(Database {
            writes,
            path,
            open: Arc::new(Open {
                db: Mutex::new(Some(db)),
                writer: Mutex::new(Some(writer)),
                tables: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Closes the store and releases its directory before returning: later
    /// writes and reads through any of its tables fail (`Unavailable`), the
    /// writes already queued are committed, the writer thread is joined,
    /// every table drops its keyspace, and the last fjall handle goes, which
    /// stops and joins fjall's background threads and unlocks the directory.
    /// Without this, the lock lasts as long as the last table handle (the
    /// actors, each worker thread's replicas) and the writer thread, which
    /// ends on its own time. Blocks while queued writes commit. Idempotent.
    pub fn close(&self) {
        self.writes.close();
        if let Some(writer) = lock(&self.open.writer).take() {
            if writer.join().is_err() {
                log::error!("the embedded store's writer thread panicked");
            }
        }
        for table in lock(&self.open.tables).drain(..) {
            // Waits for reads in progress on this table.
            let keyspace = table
                .keyspace
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take();
            drop(keyspace);
        }
        // The last handle: fjall's drop stops its workers and unlocks.
        let db = lock(&self.open.db).take();
        drop(db);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens a table. With [`Counting::Kept`] its record count is read once
    /// here and kept up to date by the writer; with [`Counting::OnRequest`]
    /// a count scans the table, and a put does not look for the record it
    /// replaces (a lookup through the memtables and every table file's
    /// filter: a visible share of the proxy's CPU in full flows).
    pub fn table(&self, name: &'static str, counting: Counting) -> Result<EmbeddedTable, StoreError> {
        let keyspace = lock(&self.open.db)
            .as_ref()
            .ok_or_else(closed)?
            .keyspace(name, || {
                KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES)
            })
            .map_err(unavailable)?;
        let count = match counting {
            Counting::Kept => Some(AtomicUsize::new(keyspace.len().map_err(unavailable)?)),
            Counting::OnRequest => None,
        };
        let state = Arc::new(TableState {
            id: keyspace.id(),
            keyspace: RwLock::new(Some(keyspace)),
            count,
            generation: AtomicU64::new(0),
        });
        lock(&self.open.tables).push(state.clone());
        Ok(EmbeddedTable {
            state,
            writes: self.writes.clone(),
        })
    }
}

/// Applies queued writes, a batch per commit, until every sender is gone.
fn writer(db: fjall::Database, queue: QueueReceiver<Write>) {
    // Set when a commit fails after writes of its batch were answered early:
    // their callers may have gone on, so no later write may become durable
    // without them. The store then refuses writes until restarted.
    let mut broken: Option<StoreError> = None;
    loop {
        let mut batch = Vec::new();
        if !queue.recv_many(&mut batch, MAX_BATCH) {
            break;
        }
        if let Some(e) = &broken {
            for write in batch {
                let _ = write.reply.send(Err(e.clone()));
            }
            continue;
        }
        broken = commit_batch(&db, batch).err();
    }
}

/// One fjall batch for the whole group, synced before anyone but the early
/// writes is answered. Fails only when the commit failed after answering
/// early writes.
fn commit_batch(db: &fjall::Database, batch: Vec<Write>) -> Result<(), StoreError> {
    let now = now_millis();
    let mut group = Group {
        commit: db.batch().durability(Some(PersistMode::SyncData)),
        pending: HashMap::new(),
        counted: Vec::new(),
    };
    let mut answered_early = false;
    let mut after_commit = Vec::with_capacity(batch.len());
    for write in batch {
        // A write that fails here has changed nothing in the group.
        let outcome = group.apply(&write, now);
        match outcome {
            // A refused swap waits for the commit: the caller reads again,
            // and must then see the write that beat it.
            Ok(outcome) if write.early && !matches!(outcome, Outcome::Flag(false)) => {
                let _ = write.reply.send(Ok(outcome));
                answered_early = true;
            }
            outcome => after_commit.push((write.reply, outcome)),
        }
    }
    match group.commit() {
        Ok(()) => {
            for (reply, outcome) in after_commit {
                let _ = reply.send(outcome);
            }
            Ok(())
        }
        Err(e) => {
            log::error!("embedded store commit failed: {e}");
            for (reply, _) in after_commit {
                let _ = reply.send(Err(e.clone()));
            }
            if answered_early {
                log::error!("writes were answered before this failed commit; the store refuses writes until restarted");
                Err(e)
            } else {
                Ok(())
            }
        }
    }
}

/// One group of writes: a fjall batch plus what it has done so far, so each
/// write sees the writes queued before it.
struct Group {
    commit: OwnedWriteBatch,
    /// Records written by this group: `None` removed.
    pending: HashMap<(u64, String), Option<Vec<u8>>>,
    /// Per write: its table and the change to its kept record count, if
    /// any (+1, 0, -1); applied, with a new generation, after the sync.
    counted: Vec<(Arc<TableState>, isize)>,
}

impl Group {
    /// One record as this group sees it: its own earlier writes, else the store.
    fn current(&self, table: &TableState, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.pending.get(&(table.id, key.to_string())) {
            Some(value) => Ok(value.clone()),
            None => table.with_keyspace(|keyspace| Ok(keyspace.get(key).map_err(unavailable)?.map(|v| v.to_vec()))),
        }
    }

    /// Writes (or removes, `None`) a record whose presence before the write
    /// the caller already knows (it has just read it).
    fn set(
        &mut self,
        table: &Arc<TableState>,
        key: &str,
        existed: bool,
        value: Option<Vec<u8>>,
    ) -> Result<(), StoreError> {
        table.with_keyspace(|keyspace| {
            match &value {
                Some(stored) => self.commit.insert(keyspace, key, stored.as_slice()),
                None => self.commit.remove(keyspace, key),
            }
            Ok(())
        })?;
        let delta = value.is_some() as isize - existed as isize;
        self.pending.insert((table.id, key.to_string()), value);
        self.counted.push((table.clone(), delta));
        Ok(())
    }

    /// Commits (and syncs) the group, then updates the tables' counts and
    /// generations.
    fn commit(self) -> Result<(), StoreError> {
        self.commit.commit().map_err(unavailable)?;
        for (table, delta) in self.counted {
            table.generation.fetch_add(1, Ordering::Release);
            let Some(count) = &table.count else { continue };
            if delta > 0 {
                count.fetch_add(delta as usize, Ordering::Relaxed);
            } else if delta < 0 {
                count.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn apply(&mut self, write: &Write, now: u64) -> Result<Outcome, StoreError> {
        let table = &write.table;
        Ok(match &write.op {
            Op::Put { key, stored } => {
                // Only a kept count needs to know whether this replaces a record.
                let existed = table.count.is_some() && self.current(table, key)?.is_some();
                self.set(table, key, existed, Some(stored.clone()))?;
                Outcome::Done
            }
            Op::Take { key } => {
                let value = self.current(table, key)?;
                if value.is_some() {
                    self.set(table, key, true, None)?;
                }
                Outcome::Value(value.and_then(|v| decode(&v, now)))
            }
            Op::Delete { key } => {
                let existed = self.current(table, key)?.is_some();
                if existed {
                    self.set(table, key, true, None)?;
                }
                Outcome::Flag(existed)
            }
            Op::Swap { key, expected, new } => {
                let stored = self.current(table, key)?;
                let existed = stored.is_some();
                if &stored.and_then(|v| decode(&v, now)) != expected {
                    Outcome::Flag(false)
                } else {
                    self.set(table, key, existed, new.clone())?;
                    Outcome::Flag(true)
                }
            }
            Op::Touch { key, ttl } => match self.current(table, key)? {
                Some(stored) if decode(&stored, now).is_some() => {
                    let extended = encode(&stored[8..], *ttl);
                    self.set(table, key, true, Some(extended))?;
                    Outcome::Flag(true)
                }
                _ => Outcome::Flag(false),
            },
            Op::Purge => {
                let pending = &self.pending;
                let expired = table.with_keyspace(|keyspace| {
                    let mut expired = Vec::new();
                    for entry in keyspace.iter() {
                        let (key, value) = entry.into_inner().map_err(unavailable)?;
                        let key = String::from_utf8_lossy(&key).into_owned();
                        let rewritten = pending.contains_key(&(table.id, key.clone()));
                        if !rewritten && decode(&value, now).is_none() {
                            expired.push(key);
                        }
                    }
                    Ok(expired)
                })?;
                for key in &expired {
                    self.set(table, key, true, None)?;
                }
                Outcome::Count(expired.len())
            }
        })
    }
}

/// One table of the embedded database.
#[derive(Clone)]
pub struct EmbeddedTable {
    state: Arc<TableState>,
    writes: QueueSender<Write>,
}

/// What the writer needs of a table: each write carries it (one reference
/// count, not a handle on the queue).
struct TableState {
    /// The keyspace's id, kept for after it is closed.
    id: u64,
    /// `None` once the database is closed ([`Database::close`] takes it: a
    /// keyspace handle keeps the directory locked). An uncontended read
    /// lock; only the close writes.
    keyspace: RwLock<Option<Keyspace>>,
    /// `None`: counted on request (see [`Database::table`]).
    count: Option<AtomicUsize>,
    /// Bumped after each commit that wrote to this table.
    generation: AtomicU64,
}

impl TableState {
    /// Runs `read` on the keyspace, unless the database is closed.
    fn with_keyspace<R>(&self, read: impl FnOnce(&Keyspace) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let keyspace = self.keyspace.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        read(keyspace.as_ref().ok_or_else(closed)?)
    }
}

impl EmbeddedTable {
    fn write(&self, op: Op) -> StoreFuture<Outcome> {
        self.queue(op, false)
    }

    fn queue(&self, op: Op, early: bool) -> StoreFuture<Outcome> {
        let (reply, answer) = oneshot::channel();
        let queued = self
            .writes
            .send(Write {
                table: self.state.clone(),
                op,
                early,
                reply,
            })
            .is_ok();
        async move {
            if !queued {
                return Err(unavailable("the writer thread stopped (or the store was closed)"));
            }
            answer.await.map_err(|_| unavailable("the writer thread stopped"))?
        }
        .boxed_local()
        .into()
    }

    /// Counts the live records by reading them all (see [`Counting::OnRequest`]).
    fn live_records(&self) -> Result<usize, StoreError> {
        let now = now_millis();
        self.state.with_keyspace(|keyspace| {
            let mut live = 0;
            for entry in keyspace.iter() {
                let (_, value) = entry.into_inner().map_err(unavailable)?;
                live += decode(&value, now).is_some() as usize;
            }
            Ok(live)
        })
    }

    /// A compare-and-swap; `early`: see [`Table::compare_and_swap_before_write`].
    fn swap(
        &self,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Option<(Vec<u8>, Duration)>,
        early: bool,
    ) -> StoreFuture<bool> {
        let op = Op::Swap {
            key: key.to_string(),
            expected,
            new: new.map(|(value, ttl)| encode(&value, ttl)),
        };
        let write = self.queue(op, early);
        async move { write.await.map(expect_flag) }.boxed_local().into()
    }
}

fn expect_value(outcome: Outcome) -> Option<Vec<u8>> {
    match outcome {
        Outcome::Value(value) => value,
        _ => None,
    }
}

fn expect_flag(outcome: Outcome) -> bool {
    matches!(outcome, Outcome::Flag(true))
}

impl Table for EmbeddedTable {
    fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> StoreFuture<()> {
        let write = self.write(Op::Put {
            key: key.to_string(),
            stored: encode(&value, ttl),
        });
        async move { write.await.map(|_| ()) }.boxed_local().into()
    }

    fn get(&self, key: &str) -> StoreFuture<Option<Vec<u8>>> {
        let now = now_millis();
        let result = self.state.with_keyspace(|keyspace| {
            keyspace
                .get(key)
                .map(|stored| stored.and_then(|v| decode(&v, now)))
                .map_err(unavailable)
        });
        StoreFuture::ready(result)
    }

    fn take(&self, key: &str) -> StoreFuture<Option<Vec<u8>>> {
        let write = self.write(Op::Take { key: key.to_string() });
        async move { write.await.map(expect_value) }.boxed_local().into()
    }

    fn take_before_write(&self, key: &str) -> StoreFuture<Option<Vec<u8>>> {
        let write = self.queue(Op::Take { key: key.to_string() }, true);
        async move { write.await.map(expect_value) }.boxed_local().into()
    }

    fn delete(&self, key: &str) -> StoreFuture<bool> {
        let write = self.write(Op::Delete { key: key.to_string() });
        async move { write.await.map(expect_flag) }.boxed_local().into()
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Option<(Vec<u8>, Duration)>,
    ) -> StoreFuture<bool> {
        self.swap(key, expected, new, false)
    }

    fn compare_and_swap_before_write(
        &self,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Option<(Vec<u8>, Duration)>,
    ) -> StoreFuture<bool> {
        self.swap(key, expected, new, true)
    }

    fn touch(&self, key: &str, ttl: Duration) -> StoreFuture<bool> {
        let write = self.write(Op::Touch {
            key: key.to_string(),
            ttl,
        });
        async move { write.await.map(expect_flag) }.boxed_local().into()
    }

    fn purge_expired(&self) -> StoreFuture<usize> {
        let write = self.write(Op::Purge);
        async move {
            match write.await? {
                Outcome::Count(n) => Ok(n),
                _ => Ok(0),
            }
        }
        .boxed_local()
        .into()
    }

    fn count(&self) -> StoreFuture<usize> {
        let count = match &self.state.count {
            Some(count) => Ok(count.load(Ordering::Relaxed)),
            None => self.live_records(),
        };
        StoreFuture::ready(count)
    }

    fn generation(&self) -> Option<u64> {
        Some(self.state.generation.load(Ordering::Acquire))
    }

    fn soonest_expiring(&self, limit: usize) -> StoreFuture<Vec<String>> {
        let now = now_millis();
        let live = self.state.with_keyspace(|keyspace| {
            let mut live: Vec<(u64, String)> = Vec::new();
            for entry in keyspace.iter() {
                let (key, value) = entry.into_inner().map_err(unavailable)?;
                let Some(expires) = value.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes) else {
                    continue;
                };
                if expires > now {
                    live.push((expires, String::from_utf8_lossy(&key).into_owned()));
                }
            }
            Ok(live)
        });
        StoreFuture::ready(live.map(|mut live| {
            live.sort_unstable();
            live.into_iter().take(limit).map(|(_, key)| key).collect()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    /// A database in a fresh temporary directory, removed when dropped.
    struct TempStore {
        dir: PathBuf,
        db: Option<Database>,
        /// Dropped after the database is closed (see `Drop`).
        _temp: tempfile::TempDir,
    }

    impl TempStore {
        fn open(name: &str) -> TempStore {
            let temp = tempfile::Builder::new()
                .prefix(&format!("mcp-oauth-proxy-embedded-{name}-"))
                .tempdir()
                .unwrap();
            // A directory the store creates itself, as on a first start.
            let dir = temp.path().join("data");
            let db = Database::open(&dir).unwrap();
            TempStore {
                dir,
                db: Some(db),
                _temp: temp,
            }
        }

        fn table(&self, name: &'static str) -> EmbeddedTable {
            self.table_counted(name, Counting::Kept)
        }

        /// Closes the database (as the proxy's shutdown does) and opens
        /// the directory again at once.
        fn reopen(&mut self) {
            if let Some(db) = self.db.take() {
                db.close();
            }
            self.db = Some(Database::open(&self.dir).unwrap());
        }

        fn table_counted(&self, name: &'static str, counting: Counting) -> EmbeddedTable {
            self.db.as_ref().unwrap().table(name, counting).unwrap()
        }
    }

    impl Drop for TempStore {
        fn drop(&mut self) {
            if let Some(db) = self.db.take() {
                db.close();
            }
        }
    }

    #[actix_rt::test]
    async fn a_closed_database_unlocks_its_directory_at_once_even_while_its_tables_are_held() {
        let mut store = TempStore::open("close");
        let table = store.table("grant");
        table.put("g", b"kept".to_vec(), HOUR).await.unwrap();
        // Queued, not yet committed, when the close begins: committed by it.
        let queued = table.put("late", b"also kept".to_vec(), HOUR);
        store.db.take().unwrap().close();
        queued.await.unwrap();
        // The handle outlives the close: it answers, but no longer reaches the store.
        assert!(matches!(table.get("g").await, Err(StoreError::Unavailable(_))));
        assert!(matches!(
            table.put("after", b"x".to_vec(), HOUR).await,
            Err(StoreError::Unavailable(_))
        ));
        store.db = Some(Database::open(&store.dir).expect("the directory is unlocked once close returns"));
        let reopened = store.table("grant");
        assert_eq!(reopened.get("g").await.unwrap(), Some(b"kept".to_vec()));
        assert_eq!(reopened.get("late").await.unwrap(), Some(b"also kept".to_vec()));
        assert_eq!(reopened.get("after").await.unwrap(), None);
        assert_eq!(reopened.count().await.unwrap(), 2);
    }

    #[actix_rt::test]
    async fn concurrent_takes_of_one_record_in_one_batch_give_it_to_one_caller() {
        let store = TempStore::open("takes");
        let table = store.table("code");
        table.put("code", b"x".to_vec(), HOUR).await.unwrap();
        let takes: Vec<_> = (0..50).map(|_| table.take("code")).collect();
        let won = futures_util::future::join_all(takes)
            .await
            .into_iter()
            .filter(|r| matches!(r, Ok(Some(_))))
            .count();
        assert_eq!(won, 1);
    }

    #[actix_rt::test]
    async fn a_table_counted_on_request_counts_its_live_records_after_every_kind_of_write() {
        let mut store = TempStore::open("count-on-request");
        let table = store.table_counted("grant", Counting::OnRequest);
        for key in ["a", "b", "c", "d"] {
            table.put(key, b"x".to_vec(), HOUR).await.unwrap();
        }
        table.put("a", b"replaced".to_vec(), HOUR).await.unwrap();
        assert_eq!(table.count().await.unwrap(), 4, "a replaced record is counted once");
        assert!(table.take("b").await.unwrap().is_some());
        assert!(table.delete("c").await.unwrap());
        assert!(table
            .compare_and_swap("e", None, Some((b"y".to_vec(), HOUR)))
            .await
            .unwrap());
        table
            .put("short", b"z".to_vec(), Duration::from_millis(1))
            .await
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(
            table.count().await.unwrap(),
            3,
            "a, d and e; the expired record is not counted"
        );
        drop(table);

        store.reopen();
        let table = store.table_counted("grant", Counting::OnRequest);
        assert_eq!(table.count().await.unwrap(), 3);
        assert_eq!(table.get("a").await.unwrap(), Some(b"replaced".to_vec()));
    }

    #[actix_rt::test]
    async fn touch_extends_a_live_record_only_and_keeps_it_as_it_is() {
        let store = TempStore::open("touch");
        let table = store.table("client");
        table
            .put("a", b"one".to_vec(), Duration::from_millis(30))
            .await
            .unwrap();
        table.put("b", b"two".to_vec(), Duration::from_millis(1)).await.unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(table.touch("a", HOUR).await.unwrap());
        assert!(!table.touch("b", HOUR).await.unwrap(), "expired");
        assert!(!table.touch("c", HOUR).await.unwrap(), "absent");
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(
            table.get("a").await.unwrap(),
            Some(b"one".to_vec()),
            "outlived its first TTL"
        );
        assert_eq!(table.get("b").await.unwrap(), None);
        assert_eq!(
            table.count().await.unwrap(),
            2,
            "touch neither adds nor removes records"
        );
    }

    #[actix_rt::test]
    async fn records_written_past_several_memtables_survive_flushes_and_a_reopen() {
        let mut store = TempStore::open("flushes");
        let table = store.table("grant");
        let record = vec![7u8; 1024];
        let written = 3 * MEMTABLE_BYTES as usize / record.len();
        for chunk in (0..written).collect::<Vec<_>>().chunks(256) {
            let puts: Vec<_> = chunk
                .iter()
                .map(|i| table.put(&format!("g{i}"), record.clone(), HOUR))
                .collect();
            for put in futures_util::future::join_all(puts).await {
                put.unwrap();
            }
        }
        assert_eq!(table.take("g0").await.unwrap(), Some(record.clone()));
        drop(table);
        let flushed_tables: usize = std::fs::read_dir(store.dir.join("store/keyspaces"))
            .unwrap()
            .filter_map(|keyspace| std::fs::read_dir(keyspace.ok()?.path().join("tables")).ok())
            .map(|tables| tables.count())
            .sum();
        assert!(flushed_tables >= 2, "the memtable was flushed to disk tables");

        store.reopen();
        let table = store.table("grant");
        assert_eq!(table.count().await.unwrap(), written - 1);
        assert_eq!(table.get("g0").await.unwrap(), None, "the take outlived the reopen");
        for i in [1, written / 2, written - 1] {
            assert_eq!(table.get(&format!("g{i}")).await.unwrap(), Some(record.clone()));
        }
    }

    /// The vendored fjall writes the journal's blocks ahead of its records
    /// (vendor/README.md): a commit's fdatasync then allocates no blocks and
    /// writes no inode. Without the patch the journal is a 64 MiB hole with
    /// one block of records.
    #[actix_rt::test]
    async fn the_journal_is_written_ahead_of_its_records() {
        use std::os::unix::fs::MetadataExt;

        let store = TempStore::open("journal");
        let table = store.table("code");
        table.put("a", b"one".to_vec(), HOUR).await.unwrap();
        let journals: Vec<_> = std::fs::read_dir(store.dir.join("store"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "jnl"))
            .map(|path| path.metadata().unwrap())
            .collect();
        assert_eq!(journals.len(), 1);
        let allocated = journals[0].blocks() * 512;
        assert!(allocated >= 512 * 1024, "{allocated} bytes of the journal allocated");
        assert!(allocated < journals[0].len(), "the rest is still a hole");
    }

    #[actix_rt::test]
    async fn a_take_answered_before_its_sync_is_still_single_use_and_kept_after_the_next_write() {
        let mut store = TempStore::open("early");
        let table = store.table("transaction");
        table.put("t", b"x".to_vec(), HOUR).await.unwrap();
        let takes: Vec<_> = (0..20)
            .map(|i| {
                if i % 2 == 0 {
                    table.take_before_write("t")
                } else {
                    table.take("t")
                }
            })
            .collect();
        let won = futures_util::future::join_all(takes)
            .await
            .into_iter()
            .filter(|r| matches!(r, Ok(Some(_))))
            .count();
        assert_eq!(won, 1, "early or not, a record is taken once");
        assert_eq!(table.count().await.unwrap(), 0);
        table.put("code", b"c".to_vec(), HOUR).await.unwrap();
        drop(table);

        store.reopen();
        let table = store.table("transaction");
        assert_eq!(table.get("t").await.unwrap(), None);
        assert_eq!(table.get("code").await.unwrap(), Some(b"c".to_vec()));
    }

    #[actix_rt::test]
    async fn a_swap_answered_before_its_sync_is_made_once_and_a_refused_one_sees_the_winner() {
        let mut store = TempStore::open("early-swap");
        let table = store.table("code");
        table.put("c", b"fresh".to_vec(), HOUR).await.unwrap();
        let fresh = Some(b"fresh".to_vec());
        // A large write keeps the writer busy while the swaps queue up, so
        // they share one batch: the winner is decided before the others.
        let slow = table.put("large", vec![0; 8 << 20], HOUR);
        let swaps: Vec<_> = (0..20u8)
            .map(|i| {
                let new = Some((vec![b'r', i], HOUR));
                let swap = table.compare_and_swap_before_write("c", fresh.clone(), new);
                let table = table.clone();
                async move {
                    let made = swap.await.unwrap();
                    // What a caller that lost would read before trying again.
                    (made, table.get("c").await.unwrap())
                }
            })
            .collect();
        let outcomes = futures_util::future::join_all(swaps).await;
        slow.await.unwrap();
        let winners: Vec<u8> = (0..20u8).filter(|&i| outcomes[i as usize].0).collect();
        assert_eq!(winners.len(), 1, "early or not, one swap from the same value is made");
        let winner = Some(vec![b'r', winners[0]]);
        for (made, seen) in &outcomes {
            if !made {
                assert_eq!(
                    seen, &winner,
                    "a refused swap resolves only once the winning one is visible"
                );
            }
        }
        table.put("grant", b"g".to_vec(), HOUR).await.unwrap();
        drop(table);

        store.reopen();
        let table = store.table("code");
        assert_eq!(
            table.get("c").await.unwrap(),
            winner,
            "durable with the caller's next write"
        );
        assert_eq!(table.get("grant").await.unwrap(), Some(b"g".to_vec()));
    }
}
