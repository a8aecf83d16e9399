//! The in-memory backend: a map per table with an expiry instant per record.
//! Expired records are invisible at once and removed by the owning actor's
//! timer. Nothing survives a restart.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::future::{ready, FutureExt};

use super::{StoreError, StoreFuture, Table};

/// Record bytes and when they expire (milliseconds after the table's
/// epoch), by key. Boxed slices instead of `String`/`Vec` and a plain
/// integer expiry keep an entry small: memory per grant is a target here.
type Records = HashMap<Box<str>, (Box<[u8]>, u64)>;

pub struct MemoryTable {
    records: Mutex<Records>,
    epoch: Instant,
}

impl Default for MemoryTable {
    fn default() -> Self {
        MemoryTable {
            records: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
        }
    }
}

fn done<T: 'static>(result: Result<T, StoreError>) -> StoreFuture<T> {
    ready(result).boxed_local()
}

impl MemoryTable {
    fn lock(&self) -> Result<MutexGuard<'_, Records>, StoreError> {
        self.records
            .lock()
            .map_err(|_| StoreError::Unavailable("memory table lock poisoned".into()))
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn expiry(&self, ttl: Duration) -> u64 {
        self.now().saturating_add(ttl.as_millis() as u64)
    }

    fn live(&self, records: &Records, key: &str) -> Option<Vec<u8>> {
        let now = self.now();
        records
            .get(key)
            .filter(|(_, expires)| *expires > now)
            .map(|(value, _)| value.to_vec())
    }
}

impl Table for MemoryTable {
    fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> StoreFuture<()> {
        let expires = self.expiry(ttl);
        done(self.lock().map(|mut records| {
            records.insert(key.into(), (value.into_boxed_slice(), expires));
        }))
    }

    fn get(&self, key: &str) -> StoreFuture<Option<Vec<u8>>> {
        done(self.lock().map(|records| self.live(&records, key)))
    }

    fn take(&self, key: &str) -> StoreFuture<Option<Vec<u8>>> {
        let now = self.now();
        done(self.lock().map(|mut records| {
            records
                .remove(key)
                .filter(|(_, expires)| *expires > now)
                .map(|(value, _)| value.into_vec())
        }))
    }

    fn delete(&self, key: &str) -> StoreFuture<bool> {
        done(self.lock().map(|mut records| records.remove(key).is_some()))
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Option<(Vec<u8>, Duration)>,
    ) -> StoreFuture<bool> {
        done(self.lock().map(|mut records| {
            if self.live(&records, key) != expected {
                return false;
            }
            match new {
                Some((value, ttl)) => records.insert(key.into(), (value.into_boxed_slice(), self.expiry(ttl))),
                None => records.remove(key),
            };
            true
        }))
    }

    fn purge_expired(&self) -> StoreFuture<usize> {
        let now = self.now();
        done(self.lock().map(|mut records| {
            let before = records.len();
            records.retain(|_, (_, expires)| *expires > now);
            before - records.len()
        }))
    }

    fn count(&self) -> StoreFuture<usize> {
        done(self.lock().map(|records| records.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    fn now<T>(future: StoreFuture<T>) -> T {
        future.now_or_never().expect("memory futures are ready").unwrap()
    }

    #[test]
    fn expired_records_are_invisible_and_purged() {
        let table = MemoryTable::default();
        now(table.put("a", b"1".to_vec(), Duration::from_millis(1)));
        now(table.put("b", b"2".to_vec(), Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(now(table.get("a")), None);
        assert_eq!(now(table.purge_expired()), 1);
        assert_eq!(now(table.count()), 1);
    }

    #[test]
    fn take_returns_a_record_once() {
        let table = MemoryTable::default();
        now(table.put("a", b"1".to_vec(), Duration::from_secs(60)));
        assert_eq!(now(table.take("a")), Some(b"1".to_vec()));
        assert_eq!(now(table.take("a")), None);
    }

    #[test]
    fn compare_and_swap_replaces_only_the_expected_value() {
        let table = MemoryTable::default();
        let ttl = Duration::from_secs(60);
        assert!(now(table.compare_and_swap("a", None, Some((b"1".to_vec(), ttl)))));
        assert!(!now(table.compare_and_swap("a", None, Some((b"2".to_vec(), ttl)))));
        assert!(now(table.compare_and_swap(
            "a",
            Some(b"1".to_vec()),
            Some((b"2".to_vec(), ttl))
        )));
        assert_eq!(now(table.get("a")), Some(b"2".to_vec()));
        assert!(now(table.compare_and_swap("a", Some(b"2".to_vec()), None)));
        assert_eq!(now(table.get("a")), None);
    }
}
