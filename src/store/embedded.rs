//! The embedded backend: one redb database file in the data directory.
//!
//! Why redb: pure Rust (no C toolchain or system library), ACID transactions,
//! crash-safe copy-on-write commits that are fsynced before `commit` returns,
//! and a plain ordered key-value model that fits a [`Table`] exactly.
//!
//! Contract: a write is durable (committed and fsynced) before its future
//! resolves, so the HTTP answer that depends on it is sent only after. One
//! writer thread applies writes in batches: every write queued while the
//! previous commit was syncing goes into the next transaction (group commit),
//! so many concurrent requests share one fsync. Reads use read transactions
//! on the caller's thread and never wait for the writer.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;
use redb::{Database as Redb, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableError};
use tokio::sync::oneshot;

use super::{StoreError, StoreFuture, Table};

/// Largest number of writes committed together.
const MAX_BATCH: usize = 512;

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
    Purge,
}

enum Outcome {
    Done,
    Value(Option<Vec<u8>>),
    Flag(bool),
    Count(usize),
}

struct Write {
    table: &'static str,
    op: Op,
    reply: oneshot::Sender<Result<Outcome, StoreError>>,
}

/// The database: a handle for reads and the queue of the writer thread.
#[derive(Clone)]
pub struct Database {
    db: Arc<Redb>,
    writes: mpsc::Sender<Write>,
    path: PathBuf,
}

impl Database {
    /// Opens (or creates) `store.redb` in `dir`.
    pub fn open(dir: &Path) -> Result<Database, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| unavailable(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join("store.redb");
        let db =
            Arc::new(Redb::create(&path).map_err(|e| unavailable(format!("cannot open {}: {e}", path.display())))?);
        let (writes, queue) = mpsc::channel::<Write>();
        let writer_db = db.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer(writer_db, queue))
            .map_err(unavailable)?;
        Ok(Database { db, writes, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn table(&self, name: &'static str) -> EmbeddedTable {
        EmbeddedTable { name, db: self.clone() }
    }
}

/// Applies queued writes, a batch per transaction, until every sender is gone.
fn writer(db: Arc<Redb>, queue: mpsc::Receiver<Write>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        match apply(&db, &batch) {
            Ok(outcomes) => {
                for (write, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = write.reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                log::error!("embedded store commit failed: {e}");
                for write in batch {
                    let _ = write.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// One transaction for the batch; committed (fsynced) before answering.
fn apply(db: &Redb, batch: &[Write]) -> Result<Vec<Outcome>, StoreError> {
    let txn = db.begin_write().map_err(unavailable)?;
    let now = now_millis();
    let mut outcomes = Vec::with_capacity(batch.len());
    for write in batch {
        let definition: TableDefinition<&str, &[u8]> = TableDefinition::new(write.table);
        let mut table = txn.open_table(definition).map_err(unavailable)?;
        let outcome = match &write.op {
            Op::Put { key, stored } => {
                table.insert(key.as_str(), stored.as_slice()).map_err(unavailable)?;
                Outcome::Done
            }
            Op::Take { key } => {
                let removed = table.remove(key.as_str()).map_err(unavailable)?;
                Outcome::Value(removed.and_then(|v| decode(v.value(), now)))
            }
            Op::Delete { key } => Outcome::Flag(table.remove(key.as_str()).map_err(unavailable)?.is_some()),
            Op::Swap { key, expected, new } => {
                let current = table
                    .get(key.as_str())
                    .map_err(unavailable)?
                    .and_then(|v| decode(v.value(), now));
                if &current != expected {
                    Outcome::Flag(false)
                } else {
                    match new {
                        Some(stored) => {
                            table.insert(key.as_str(), stored.as_slice()).map_err(unavailable)?;
                        }
                        None => {
                            table.remove(key.as_str()).map_err(unavailable)?;
                        }
                    }
                    Outcome::Flag(true)
                }
            }
            Op::Purge => {
                let before = table.len().map_err(unavailable)?;
                table
                    .retain(|_, stored| decode(stored, now).is_some())
                    .map_err(unavailable)?;
                Outcome::Count((before - table.len().map_err(unavailable)?) as usize)
            }
        };
        outcomes.push(outcome);
    }
    txn.commit().map_err(unavailable)?;
    Ok(outcomes)
}

/// One table of the embedded database.
pub struct EmbeddedTable {
    name: &'static str,
    db: Database,
}

impl EmbeddedTable {
    fn write(&self, op: Op) -> StoreFuture<Outcome> {
        let (reply, answer) = oneshot::channel();
        let queued = self.db.writes.send(Write {
            table: self.name,
            op,
            reply,
        });
        async move {
            queued.map_err(|_| unavailable("the writer thread stopped"))?;
            answer.await.map_err(|_| unavailable("the writer thread stopped"))?
        }
        .boxed_local()
    }

    /// Reads on this thread with a read transaction.
    fn read<T>(
        &self,
        read: impl FnOnce(&redb::ReadOnlyTable<&str, &[u8]>) -> Result<T, redb::StorageError>,
        empty: T,
    ) -> Result<T, StoreError> {
        let txn = self.db.db.begin_read().map_err(unavailable)?;
        let definition: TableDefinition<&str, &[u8]> = TableDefinition::new(self.name);
        match txn.open_table(definition) {
            Ok(table) => read(&table).map_err(unavailable),
            // Nothing was ever written to this table.
            Err(TableError::TableDoesNotExist(_)) => Ok(empty),
            Err(e) => Err(unavailable(e)),
        }
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
        async move { write.await.map(|_| ()) }.boxed_local()
    }

    fn get(&self, key: &str) -> StoreFuture<Option<Vec<u8>>> {
        let now = now_millis();
        let result = self.read(|table| Ok(table.get(key)?.and_then(|v| decode(v.value(), now))), None);
        futures_util::future::ready(result).boxed_local()
    }

    fn take(&self, key: &str) -> StoreFuture<Option<Vec<u8>>> {
        let write = self.write(Op::Take { key: key.to_string() });
        async move { write.await.map(expect_value) }.boxed_local()
    }

    fn delete(&self, key: &str) -> StoreFuture<bool> {
        let write = self.write(Op::Delete { key: key.to_string() });
        async move { write.await.map(expect_flag) }.boxed_local()
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Option<(Vec<u8>, Duration)>,
    ) -> StoreFuture<bool> {
        let write = self.write(Op::Swap {
            key: key.to_string(),
            expected,
            new: new.map(|(value, ttl)| encode(&value, ttl)),
        });
        async move { write.await.map(expect_flag) }.boxed_local()
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
    }

    fn count(&self) -> StoreFuture<usize> {
        let result = self.read(|table| table.len().map(|n| n as usize), 0);
        futures_util::future::ready(result).boxed_local()
    }
}
