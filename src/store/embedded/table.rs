//! A table of the embedded database: reads on the caller's thread, writes
//! queued to the writer thread.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use fjall::Keyspace;
use futures_util::FutureExt;
use tokio::sync::oneshot;

use super::{closed, decode, encode, now_millis, unavailable, Op, Outcome, Write};
use crate::store::memory::page;
use crate::store::write_queue::QueueSender;
use crate::store::{IndexEntry, Page, StoreError, StoreFuture, Table};

/// One table of the embedded database.
#[derive(Clone)]
pub struct EmbeddedTable {
    pub(super) state: Arc<TableState>,
    /// The keyspace of its index entries (see [`Table::put_indexed`]).
    pub(super) index: Arc<TableState>,
    pub(super) writes: QueueSender<Write>,
}

/// What the writer needs of a table: each write carries it (one reference
/// count, not a handle on the queue).
pub(super) struct TableState {
    /// The keyspace's id, kept for after it is closed.
    pub(super) id: u64,
    /// `None` once the database is closed ([`super::Database::close`] takes it: a
    /// keyspace handle keeps the directory locked). An uncontended read
    /// lock; only the close writes.
    pub(super) keyspace: RwLock<Option<Keyspace>>,
    /// `None`: counted on request (see [`super::Database::table`]).
    pub(super) count: Option<AtomicUsize>,
    /// Bumped after each commit that wrote to this table.
    pub(super) generation: AtomicU64,
}

impl TableState {
    /// Runs `read` on the keyspace, unless the database is closed.
    pub(super) fn with_keyspace<R>(
        &self,
        read: impl FnOnce(&Keyspace) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let keyspace = self.keyspace.read().unwrap_or_else(|poisoned| poisoned.into_inner());
        read(keyspace.as_ref().ok_or_else(closed)?)
    }
}

impl EmbeddedTable {
    fn write(&self, op: Op) -> StoreFuture<Outcome> {
        self.queue(op, false)
    }

    fn queue(&self, op: Op, early: bool) -> StoreFuture<Outcome> {
        self.queue_on(&self.state, op, early)
    }

    fn queue_on(&self, table: &Arc<TableState>, op: Op, early: bool) -> StoreFuture<Outcome> {
        let (reply, answer) = oneshot::channel();
        let queued = self
            .writes
            .send(Write {
                table: table.clone(),
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

/// `<index>\0<key>`: the entries of one index are one range of keys.
fn index_entry(index: &str, key: &str) -> String {
    format!("{index}\0{key}")
}

/// Whether a stored value (expiry first) is still live at `now`.
fn live(stored: &[u8], now: u64) -> bool {
    stored
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .is_some_and(|expires| expires > now)
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
        // Expired index entries go with the same commit.
        let purge_index = self.queue_on(&self.index, Op::Purge, false);
        let write = self.write(Op::Purge);
        async move {
            purge_index.await?;
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

    fn scan(&self, cursor: Option<&str>, limit: usize) -> StoreFuture<Page> {
        use std::ops::Bound::{Excluded, Unbounded};
        let now = now_millis();
        let start = cursor.map_or(Unbounded, |after| Excluded(after.as_bytes().to_vec()));
        StoreFuture::ready(self.state.with_keyspace(|keyspace| {
            let mut keys = Vec::new();
            for entry in keyspace.range::<Vec<u8>, _>((start, Unbounded)) {
                if keys.len() == limit {
                    break;
                }
                let (key, value) = entry.into_inner().map_err(unavailable)?;
                if live(&value, now) {
                    keys.push(String::from_utf8_lossy(&key).into_owned());
                }
            }
            Ok(page(keys, limit))
        }))
    }

    fn put_indexed(&self, key: &str, value: Vec<u8>, ttl: Duration, entries: &[IndexEntry]) -> StoreFuture<()> {
        let write = self.write(Op::PutIndexed {
            key: key.to_string(),
            stored: encode(&value, ttl),
            index: self.index.clone(),
            entries: entries
                .iter()
                .map(|entry| (index_entry(&entry.index, key), encode(&[], entry.ttl)))
                .collect(),
        });
        async move { write.await.map(|_| ()) }.boxed_local().into()
    }

    /// Expired entries are skipped here and removed by the table's purge.
    fn index_scan(&self, index: &str, cursor: Option<&str>, limit: usize) -> StoreFuture<Page> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let now = now_millis();
        let prefix = index_entry(index, "");
        let start = match cursor {
            Some(after) => Excluded(index_entry(index, after).into_bytes()),
            None => Included(prefix.clone().into_bytes()),
        };
        StoreFuture::ready(self.index.with_keyspace(|keyspace| {
            let mut keys = Vec::new();
            for entry in keyspace.range::<Vec<u8>, _>((start, Unbounded)) {
                if keys.len() == limit {
                    break;
                }
                let (entry, value) = entry.into_inner().map_err(unavailable)?;
                let Some(key) = entry.strip_prefix(prefix.as_bytes()) else {
                    break;
                };
                if live(&value, now) {
                    keys.push(String::from_utf8_lossy(key).into_owned());
                }
            }
            Ok(page(keys, limit))
        }))
    }

    fn index_remove(&self, index: &str, key: &str) -> StoreFuture<bool> {
        let write = self.queue_on(
            &self.index,
            Op::Delete {
                key: index_entry(index, key),
            },
            false,
        );
        async move { write.await.map(expect_flag) }.boxed_local().into()
    }

    fn index_add(&self, index: &str, key: &str, ttl: Duration) -> StoreFuture<bool> {
        let write = self.queue_on(
            &self.index,
            Op::IndexAdd {
                key: index_entry(index, key),
                stored: encode(&[], ttl),
            },
            false,
        );
        async move { write.await.map(expect_flag) }.boxed_local().into()
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
