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

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fjall::KeyspaceCreateOptions;
use tokio::sync::oneshot;

pub use table::EmbeddedTable;
use table::TableState;
use writer::writer;

use super::write_queue::{self, QueueSender};
use super::{Counting, StoreError};

mod table;
#[cfg(test)]
mod tests;
mod writer;

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
    /// A put and its index entries (`<index>\0<key>` → expiry) in the
    /// table's index keyspace, in the same batch.
    PutIndexed {
        key: String,
        stored: Vec<u8>,
        index: Arc<TableState>,
        entries: Vec<(String, Vec<u8>)>,
    },
    /// An index entry (`<index>\0<key>` → expiry) written unless it
    /// already lives longer (see [`crate::store::Table::index_add`]).
    IndexAdd {
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

    /// `Ok` while the store is open (readiness).
    pub fn ping(&self) -> Result<(), StoreError> {
        lock(&self.open.db).as_ref().map(|_| ()).ok_or_else(closed)
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
        let state = self.keyspace(name, counting)?;
        // Its index entries (see `Table::put_indexed`): a keyspace of their
        // own, so counts, purges and scans of the records never see them.
        let index = self.keyspace(&format!("{name}.index"), Counting::OnRequest)?;
        Ok(EmbeddedTable {
            state,
            index,
            writes: self.writes.clone(),
        })
    }

    fn keyspace(&self, name: &str, counting: Counting) -> Result<Arc<TableState>, StoreError> {
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
        Ok(state)
    }
}
