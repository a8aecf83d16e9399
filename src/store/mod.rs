//! Storage behind the actors.
//!
//! A [`Table`] is one namespace of byte records with a time to live. Three
//! backends provide tables:
//! - [`memory`]: maps in this process (tests, throwaway runs);
//! - [`embedded`]: a fjall database in a directory, crash-safe, every write
//!   fsynced before it is acknowledged (group commit keeps that fast);
//! - [`shared`]: Redis, so several proxy instances share all state.
//!
//! Actors never see plain bytes: they use a [`SealedTable`], which serializes
//! a typed record and seals it with AES-256-GCM (the record's key as
//! associated data), so token material is never stored in clear in any
//! backend. Read-modify-write goes through [`SealedTable::update`], a
//! compare-and-swap loop, so it is atomic across threads and instances.
//! Handlers never see storage at all: they send messages to the actors.

pub mod embedded;
pub mod instrumented;
pub mod memory;
pub mod shared;
mod write_queue;

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::StorageSetting;
use crate::crypto::Sealer;
use crate::tls::OutboundTls;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("storage backend unavailable: {0}")]
    Unavailable(String),
    #[error("record could not be encoded: {0}")]
    Encoding(String),
    #[error("too much contention on one record; try again")]
    Contention,
}

/// The future every storage call returns: an answer already there (the
/// memory store, reads of the directory store), which costs no allocation,
/// or one on its way (a commit, a Redis round trip). Not `Send`: actors run
/// on one thread each.
pub enum StoreFuture<T> {
    Ready(Option<Result<T, StoreError>>),
    Pending(LocalBoxFuture<'static, Result<T, StoreError>>),
}

impl<T> StoreFuture<T> {
    pub fn ready(result: Result<T, StoreError>) -> Self {
        StoreFuture::Ready(Some(result))
    }
}

impl<T> From<LocalBoxFuture<'static, Result<T, StoreError>>> for StoreFuture<T> {
    fn from(pending: LocalBoxFuture<'static, Result<T, StoreError>>) -> Self {
        StoreFuture::Pending(pending)
    }
}

impl<T: Unpin> std::future::Future for StoreFuture<T> {
    type Output = Result<T, StoreError>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        match self.get_mut() {
            StoreFuture::Ready(answer) => {
                std::task::Poll::Ready(answer.take().expect("a store future is not polled after it finished"))
            }
            StoreFuture::Pending(pending) => pending.as_mut().poll(cx),
        }
    }
}

/// One namespace of records with expiry.
pub trait Table: Send + Sync + 'static {
    fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> StoreFuture<()>;
    fn get(&self, key: &str) -> StoreFuture<Option<Vec<u8>>>;
    /// Reads and removes a record in one atomic step: a record is taken once.
    fn take(&self, key: &str) -> StoreFuture<Option<Vec<u8>>>;
    /// [`Table::take`] for a caller that makes a durable write to this store
    /// before it answers on success. A store that syncs to disk resolves it
    /// as soon as the take is decided, while its commit is still on the way
    /// to disk, so the caller's work (an upstream call) overlaps the sync.
    /// Commits are made in order in one journal, so that next write is
    /// durable only with this take. An error answer sent without a later
    /// write can precede the take's durability by one commit; a crash in
    /// that window leaves the record takeable once more.
    fn take_before_write(&self, key: &str) -> StoreFuture<Option<Vec<u8>>> {
        self.take(key)
    }
    fn delete(&self, key: &str) -> StoreFuture<bool>;
    /// Atomically replaces the record if it still holds `expected` (`None`:
    /// absent); `new` `None` deletes it. Answers whether it was replaced.
    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Option<(Vec<u8>, Duration)>,
    ) -> StoreFuture<bool>;
    /// [`Table::compare_and_swap`] for a caller that makes a durable write to
    /// this store before it answers on success, as
    /// [`Table::take_before_write`]: a swap that is made resolves before its
    /// sync, and that next write is durable only with it. A swap that is
    /// refused still resolves after the sync, so a caller that reads again
    /// sees the write that beat it.
    fn compare_and_swap_before_write(
        &self,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Option<(Vec<u8>, Duration)>,
    ) -> StoreFuture<bool> {
        self.compare_and_swap(key, expected, new)
    }
    /// Gives a live record `ttl` more to live from now, without the caller
    /// reading or rewriting it; answers whether it was there.
    fn touch(&self, key: &str, ttl: Duration) -> StoreFuture<bool>;
    /// Removes expired records; answers how many went.
    fn purge_expired(&self) -> StoreFuture<usize>;
    /// Records currently held.
    fn count(&self) -> StoreFuture<usize>;
    /// Keys of up to `limit` live records that expire soonest, soonest
    /// first. In a table whose records all get the same lifetime once, they
    /// are the oldest records (to the millisecond): the registry finds the
    /// oldest never-used clients this way. Memory and the directory store
    /// read the whole table (called only at the registration cap); Redis
    /// reads its expiry index.
    fn soonest_expiring(&self, limit: usize) -> StoreFuture<Vec<String>>;
    /// A counter that changes after every write to this table is visible,
    /// when this process learns of every write: it makes them all (memory,
    /// directory), or Redis tells it of the others' (a table opened with
    /// [`Backend::remembered_table`], while that works); `None` otherwise.
    /// Lets callers memoize reads.
    fn generation(&self) -> Option<u64> {
        None
    }
    /// Up to `limit` keys of live records after `cursor` (`None`: from the
    /// start), with the cursor of the next page when there may be more.
    /// Each key of a record that lives through the paging is listed once;
    /// one written or removed meanwhile may or may not be. The order is the
    /// backend's (by key in memory and the directory store, by expiry in
    /// Redis); cursors are opaque. Memory reads the whole table per page
    /// (admin listings only).
    fn scan(&self, cursor: Option<&str>, limit: usize) -> StoreFuture<Page>;
    /// [`Table::put`] that also writes `entries`, in one atomic step with
    /// the record: after it, the record and every entry are visible, or
    /// (on failure) none of them is new. An entry files `key` under its
    /// index (a name such as `client/<id>`) until its own lifetime ends,
    /// which the caller sets no shorter than the record can live, and
    /// [`Table::index_scan`] lists the keys filed under an index. A record
    /// removed or expired leaves its entries: readers skip and remove
    /// (with [`Table::index_remove`]) the keys whose record is gone.
    fn put_indexed(&self, key: &str, value: Vec<u8>, ttl: Duration, entries: &[IndexEntry]) -> StoreFuture<()>;
    /// Up to `limit` keys filed under `index` by live entries, after
    /// `cursor` (opaque; `None`: from the start), with the next cursor when
    /// there may be more. Expired entries are skipped.
    fn index_scan(&self, index: &str, cursor: Option<&str>, limit: usize) -> StoreFuture<Page>;
    /// Removes `key` from `index` (its record is gone); answers whether it
    /// was filed there.
    fn index_remove(&self, index: &str, key: &str) -> StoreFuture<bool>;
    /// Files `key` under `index` until `ttl` from now (or a later end the
    /// entry already has: an entry's life is never shortened), without
    /// touching the record itself, so it cannot undo a concurrent write of
    /// it (a compare-and-swap). Answers whether the key was newly filed (no
    /// live entry was there). For records written without their entries
    /// (by the earlier release, before indexes existed); adding an entry
    /// twice is harmless.
    fn index_add(&self, index: &str, key: &str, ttl: Duration) -> StoreFuture<bool>;
}

/// One page of keys (see [`Table::scan`], [`Table::index_scan`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    pub keys: Vec<String>,
    /// Where the next page starts; `None`: this was the last.
    pub next: Option<String>,
}

/// An index entry written with a record by [`Table::put_indexed`]. Index
/// names hold no `\0`, and keys filed in an index no `|` (the backends use
/// them as separators; grant ids are base64url).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub index: String,
    pub ttl: Duration,
}

/// How a table answers [`Table::count`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counting {
    /// Kept up to date by every write, so a count is cheap: for a table
    /// whose count is read while serving (the registration cap).
    Kept,
    /// Worked out when asked (the directory store scans the table), so a
    /// write of a new record need not first look for an old one: for tables
    /// whose count only tests and operators read.
    OnRequest,
}

/// Opens tables on the configured backend.
#[derive(Clone)]
pub enum Backend {
    Memory,
    Embedded(embedded::Database),
    Shared(shared::RedisStore),
}

impl Backend {
    /// Opens the backend; an embedded database is created when missing.
    /// `tls`: the roots a `rediss://` connection trusts.
    pub fn open(storage: &StorageSetting, tls: &OutboundTls) -> Result<Backend, StoreError> {
        match storage {
            StorageSetting::Memory => Ok(Backend::Memory),
            StorageSetting::Directory(dir) => Ok(Backend::Embedded(embedded::Database::open(dir)?)),
            StorageSetting::Redis(url) => Ok(Backend::Shared(shared::RedisStore::connect(url, tls)?)),
        }
    }

    /// Releases what the backend holds open, before returning: the
    /// directory store is closed and its directory unlocked (see
    /// [`embedded::Database::close`]); memory and Redis hold nothing that
    /// outlives their tables. Tables opened from it fail afterwards.
    pub fn close(&self) {
        if let Backend::Embedded(db) = self {
            db.close();
        }
    }

    /// The backend's name in metrics: `memory`, `directory` or `redis`.
    pub fn kind(&self) -> &'static str {
        match self {
            Backend::Memory => "memory",
            Backend::Embedded(_) => "directory",
            Backend::Shared(_) => "redis",
        }
    }

    /// Whether the store answers (readiness): a Redis `PING`; the
    /// directory store while it is open; memory always.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Backend::Memory => Ok(()),
            Backend::Embedded(db) => db.ping(),
            Backend::Shared(redis) => redis.ping().await,
        }
    }

    /// A table whose reads callers remember (see [`Table::generation`]):
    /// with Redis, it follows Redis's invalidations of its keys.
    pub fn remembered_table(&self, name: &'static str, counting: Counting) -> Result<Arc<dyn Table>, StoreError> {
        match self {
            Backend::Shared(redis) => Ok(Arc::new(redis.followed_table(name))),
            _ => self.table(name, counting),
        }
    }

    /// Memory and Redis count cheaply either way; `counting` matters to the
    /// directory store.
    pub fn table(&self, name: &'static str, counting: Counting) -> Result<Arc<dyn Table>, StoreError> {
        Ok(match self {
            Backend::Memory => Arc::new(memory::MemoryTable::default()),
            Backend::Embedded(db) => Arc::new(db.table(name, counting)?),
            Backend::Shared(redis) => Arc::new(redis.table(name)),
        })
    }
}

/// Reads a time field appended at the end of a record type (postcard has
/// no optional fields, so records of the earlier release end where the
/// field would begin): such a record reads it as the moment it is read,
/// and keeps that once it is written again. Only for the last field of a
/// top-level record (a field followed by others would swallow their bytes):
/// `#[serde(deserialize_with = "crate::store::appended_time")]`. Records
/// are authenticated, so the only short record is one of the earlier
/// release.
pub fn appended_time<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    use serde::Deserialize;
    Ok(u64::deserialize(deserializer).unwrap_or_else(|_| crate::oauth::now_secs()))
}

/// Reads an optional field appended at the end of a record type, after any
/// other appended field (see [`appended_time`]): a record of an earlier
/// release, which ends before it, reads it as `None`.
/// `#[serde(deserialize_with = "crate::store::appended_option")]`.
pub fn appended_option<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    use serde::Deserialize;
    Ok(Option::<T>::deserialize(deserializer).unwrap_or(None))
}

/// Attempts of one compare-and-swap update before giving up.
const MAX_UPDATE_ATTEMPTS: usize = 64;

/// What an update does to the record.
pub enum Change<T> {
    Keep,
    Put(T, Duration),
    Delete,
}

/// A typed table whose records are postcard-encoded and sealed with the
/// vault's sealer.
pub struct SealedTable<T> {
    name: &'static str,
    table: Arc<dyn Table>,
    sealer: Sealer,
    _record: PhantomData<fn() -> T>,
}

impl<T> Clone for SealedTable<T> {
    fn clone(&self) -> Self {
        SealedTable {
            name: self.name,
            table: self.table.clone(),
            sealer: self.sealer.clone(),
            _record: PhantomData,
        }
    }
}

/// Longest `<table>:<key>` built on the stack; longer ones are allocated.
const RECORD_KEY_ON_STACK: usize = 128;

impl<T: Serialize + DeserializeOwned + 'static> SealedTable<T> {
    pub fn new(name: &'static str, table: Arc<dyn Table>, sealer: Sealer) -> Self {
        SealedTable {
            name,
            table,
            sealer,
            _record: PhantomData,
        }
    }

    /// Calls `use_key` with the data a record is sealed with, `<table>:<key>`
    /// (so a record moved to another key or table does not open); built on
    /// the stack, as every seal and open needs it.
    fn with_record_key<R>(&self, key: &str, use_key: impl FnOnce(&[u8]) -> R) -> R {
        let (name, len) = (self.name.as_bytes(), self.name.len() + 1 + key.len());
        if len > RECORD_KEY_ON_STACK {
            return use_key(format!("{}:{key}", self.name).as_bytes());
        }
        let mut buffer = [0u8; RECORD_KEY_ON_STACK];
        buffer[..name.len()].copy_from_slice(name);
        buffer[name.len()] = b':';
        buffer[name.len() + 1..len].copy_from_slice(key.as_bytes());
        use_key(&buffer[..len])
    }

    /// Serializes the record straight into the buffer it is sealed in,
    /// sized exactly first (a counting pass writes nothing): the memory
    /// store keeps that buffer, so slack in it would be memory per grant.
    fn seal(&self, key: &str, record: &T) -> Result<Vec<u8>, StoreError> {
        let encoding = |e: postcard::Error| StoreError::Encoding(e.to_string());
        let size = postcard::serialize_with_flavor(record, postcard::ser_flavors::Size::default()).map_err(encoding)?;
        self.with_record_key(key, |record_key| {
            self.sealer
                .seal_with(record_key, size, |buffer| postcard::to_io(record, buffer).map(|_| ()))
        })
        .map_err(encoding)
    }

    /// Opens a record where it lies in `bytes`. A record that fails to open
    /// (wrong key, tampering) is treated as absent and logged, never
    /// returned.
    fn open(&self, key: &str, mut bytes: Vec<u8>) -> Option<T> {
        let plain = match self.with_record_key(key, |record_key| self.sealer.open_in_place(record_key, &mut bytes)) {
            Ok(plain) => plain,
            Err(_) => {
                log::warn!("{} record failed to decrypt; treating it as absent", self.name);
                return None;
            }
        };
        match postcard::from_bytes(plain) {
            Ok(record) => Some(record),
            Err(e) => {
                log::warn!("{} record could not be decoded ({e}); treating it as absent", self.name);
                None
            }
        }
    }

    pub async fn put(&self, key: &str, record: &T, ttl: Duration) -> Result<(), StoreError> {
        let sealed = self.seal(key, record)?;
        self.table.put(key, sealed, ttl).await
    }

    pub async fn get(&self, key: &str) -> Result<Option<T>, StoreError> {
        Ok(self.table.get(key).await?.and_then(|bytes| self.open(key, bytes)))
    }

    pub async fn take(&self, key: &str) -> Result<Option<T>, StoreError> {
        Ok(self.table.take(key).await?.and_then(|bytes| self.open(key, bytes)))
    }

    /// See [`Table::take_before_write`].
    pub async fn take_before_write(&self, key: &str) -> Result<Option<T>, StoreError> {
        Ok(self
            .table
            .take_before_write(key)
            .await?
            .and_then(|bytes| self.open(key, bytes)))
    }

    pub async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.table.delete(key).await
    }

    /// Stores a record with index entries in one atomic step (see
    /// [`Table::put_indexed`]).
    pub async fn put_indexed(
        &self,
        key: &str,
        record: &T,
        ttl: Duration,
        entries: &[IndexEntry],
    ) -> Result<(), StoreError> {
        let sealed = self.seal(key, record)?;
        self.table.put_indexed(key, sealed, ttl, entries).await
    }

    /// See [`Table::scan`].
    pub async fn scan(&self, cursor: Option<&str>, limit: usize) -> Result<Page, StoreError> {
        self.table.scan(cursor, limit).await
    }

    /// See [`Table::index_scan`].
    pub async fn index_scan(&self, index: &str, cursor: Option<&str>, limit: usize) -> Result<Page, StoreError> {
        self.table.index_scan(index, cursor, limit).await
    }

    /// See [`Table::index_remove`].
    pub async fn index_remove(&self, index: &str, key: &str) -> Result<bool, StoreError> {
        self.table.index_remove(index, key).await
    }

    /// See [`Table::index_add`].
    pub async fn index_add(&self, index: &str, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.table.index_add(index, key, ttl).await
    }

    /// See [`Table::touch`]: the sealed record is kept as it is.
    pub async fn touch(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.table.touch(key, ttl).await
    }

    pub async fn purge_expired(&self) -> Result<usize, StoreError> {
        self.table.purge_expired().await
    }

    pub async fn count(&self) -> Result<usize, StoreError> {
        self.table.count().await
    }

    /// See [`Table::generation`].
    pub fn generation(&self) -> Option<u64> {
        self.table.generation()
    }

    /// Atomic read-modify-write: `decide` sees the current record and says
    /// what to do with it; when another writer got there first, it runs
    /// again on the newer record. `decide` must have no side effects.
    pub async fn update<R>(&self, key: &str, decide: impl FnMut(Option<T>) -> (Change<T>, R)) -> Result<R, StoreError> {
        Ok(self.update_returning(key, false, decide).await?.0)
    }

    /// [`SealedTable::update`] that also hands back the record it wrote,
    /// when `decide` chose [`Change::Put`]: for a caller that answers with
    /// it, without a copy. `before_write`: the caller makes a durable write
    /// to this store before it answers on success (see
    /// [`Table::compare_and_swap_before_write`]).
    pub async fn update_returning<R>(
        &self,
        key: &str,
        before_write: bool,
        mut decide: impl FnMut(Option<T>) -> (Change<T>, R),
    ) -> Result<(R, Option<T>), StoreError> {
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let raw = self.table.get(key).await?;
            // The bytes as read stay whole: the swap compares them.
            let current = raw.clone().and_then(|bytes| self.open(key, bytes));
            let (change, result) = decide(current);
            let (new, written) = match change {
                Change::Keep => return Ok((result, None)),
                Change::Put(record, ttl) => (Some((self.seal(key, &record)?, ttl)), Some(record)),
                Change::Delete if raw.is_none() => return Ok((result, None)),
                Change::Delete => (None, None),
            };
            let swapped = if before_write {
                self.table.compare_and_swap_before_write(key, raw, new).await?
            } else {
                self.table.compare_and_swap(key, raw, new).await?
            };
            if swapped {
                return Ok((result, written));
            }
        }
        Err(StoreError::Contention)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    fn table() -> (Arc<dyn Table>, SealedTable<String>) {
        let raw: Arc<dyn Table> = Arc::new(memory::MemoryTable::default());
        let sealer = Sealer::new(b"0123456789abcdef0123456789abcdef");
        (raw.clone(), SealedTable::new("grant", raw, sealer))
    }

    #[test]
    fn records_round_trip_under_short_and_long_keys_and_only_under_their_own() {
        let (raw, sealed) = table();
        let long_key = "k".repeat(RECORD_KEY_ON_STACK * 2);
        for key in ["short", long_key.as_str()] {
            let record = format!("upstream token for {key}");
            sealed
                .put(key, &record, Duration::from_secs(60))
                .now_or_never()
                .unwrap()
                .unwrap();
            assert_eq!(sealed.get(key).now_or_never().unwrap().unwrap(), Some(record));
            // The same bytes under another key do not open: the key is sealed in.
            let bytes = raw.get(key).now_or_never().unwrap().unwrap().unwrap();
            assert!(!bytes.windows(14).any(|w| w == b"upstream token"));
            raw.put("moved", bytes, Duration::from_secs(60))
                .now_or_never()
                .unwrap()
                .unwrap();
            assert_eq!(sealed.get("moved").now_or_never().unwrap().unwrap(), None);
        }
    }

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Before {
        name: String,
        tags: Vec<String>,
    }

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct After {
        name: String,
        tags: Vec<String>,
        #[serde(deserialize_with = "appended_time")]
        created_at: u64,
    }

    #[test]
    fn a_record_of_the_earlier_release_reads_an_appended_time_as_now() {
        let before = Before {
            name: "grant".into(),
            tags: vec!["a".into(), "b".into()],
        };
        let old_bytes = postcard::to_allocvec(&before).unwrap();
        let start = crate::oauth::now_secs();
        let read: After = postcard::from_bytes(&old_bytes).unwrap();
        assert_eq!((read.name.as_str(), read.tags.len()), ("grant", 2));
        assert!((start..=crate::oauth::now_secs()).contains(&read.created_at));
        // A record written with the field keeps its value.
        let after = After {
            created_at: 1_700_000_000,
            ..read
        };
        let new_bytes = postcard::to_allocvec(&after).unwrap();
        assert_eq!(postcard::from_bytes::<After>(&new_bytes).unwrap(), after);
    }

    #[test]
    fn an_update_hands_back_the_record_it_wrote() {
        let (_, sealed) = table();
        let ttl = Duration::from_secs(60);
        sealed
            .put("k", &"one".to_string(), ttl)
            .now_or_never()
            .unwrap()
            .unwrap();
        let (seen, written) = sealed
            .update_returning("k", false, |current| {
                (Change::Put(format!("{}+two", current.clone().unwrap()), ttl), current)
            })
            .now_or_never()
            .unwrap()
            .unwrap();
        assert_eq!(seen.as_deref(), Some("one"));
        assert_eq!(written.as_deref(), Some("one+two"));
        assert_eq!(
            sealed.get("k").now_or_never().unwrap().unwrap().as_deref(),
            Some("one+two")
        );
        let (_, written) = sealed
            .update_returning("k", false, |_| (Change::<String>::Keep, ()))
            .now_or_never()
            .unwrap()
            .unwrap();
        assert_eq!(written, None, "nothing written, nothing handed back");
    }
}
