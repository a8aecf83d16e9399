//! The in-memory backend: a map per table with an expiry instant per record.
//! Expired records are invisible at once and removed by the owning actor's
//! timer.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{StoreError, Table};

/// Record bytes and the instant they expire, by key.
type Records = HashMap<String, (Vec<u8>, Instant)>;

#[derive(Default)]
pub struct MemoryTable {
    records: Mutex<Records>,
}

impl MemoryTable {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Records>, StoreError> {
        self.records
            .lock()
            .map_err(|_| StoreError::Unavailable("memory table lock poisoned".into()))
    }
}

impl Table for MemoryTable {
    fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), StoreError> {
        let expires = Instant::now() + ttl;
        self.lock()?.insert(key.to_string(), (value, expires));
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let records = self.lock()?;
        Ok(records
            .get(key)
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(value, _)| value.clone()))
    }

    fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut records = self.lock()?;
        Ok(records
            .remove(key)
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(value, _)| value))
    }

    fn delete(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.lock()?.remove(key).is_some())
    }

    fn purge_expired(&self) -> Result<usize, StoreError> {
        let mut records = self.lock()?;
        let before = records.len();
        let now = Instant::now();
        records.retain(|_, (_, expires)| *expires > now);
        Ok(before - records.len())
    }

    fn len(&self) -> Result<usize, StoreError> {
        Ok(self.lock()?.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_records_are_invisible_and_purged() {
        let table = MemoryTable::default();
        table.put("a", b"1".to_vec(), Duration::from_millis(1)).unwrap();
        table.put("b", b"2".to_vec(), Duration::from_secs(60)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(table.get("a").unwrap(), None);
        assert_eq!(table.purge_expired().unwrap(), 1);
        assert_eq!(table.len().unwrap(), 1);
    }

    #[test]
    fn take_returns_a_record_once() {
        let table = MemoryTable::default();
        table.put("a", b"1".to_vec(), Duration::from_secs(60)).unwrap();
        assert_eq!(table.take("a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(table.take("a").unwrap(), None);
    }
}
