//! Storage behind the actors.
//!
//! A [`Table`] is one namespace of byte records with a time to live; a backend
//! (memory today; an embedded database and Redis can be added by implementing
//! [`Table`] and extending [`open_table`]) provides the tables. Actors never see
//! plain bytes: they use a [`SealedTable`], which serializes a typed record and
//! seals it with AES-256-GCM, the record's key being the associated data.
//! Handlers never see storage at all: they send messages to the actors.

mod memory;

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use memory::MemoryTable;

use crate::config::StorageSetting;
use crate::crypto::Sealer;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage backend unavailable: {0}")]
    Unavailable(String),
    #[error("record could not be encoded: {0}")]
    Encoding(String),
}

/// One namespace of records with expiry. Implementations are internally
/// synchronised; `take` must be atomic (a record is taken once).
pub trait Table: Send + Sync + 'static {
    fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), StoreError>;
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Reads and removes a record in one step.
    fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn delete(&self, key: &str) -> Result<bool, StoreError>;
    /// Removes expired records; returns how many went.
    fn purge_expired(&self) -> Result<usize, StoreError>;
    /// Records currently held (expired ones not yet purged included).
    fn len(&self) -> Result<usize, StoreError>;
    fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }
}

/// Opens the table `name` on the configured backend.
pub fn open_table(storage: &StorageSetting, _name: &str) -> Arc<dyn Table> {
    match storage {
        StorageSetting::Memory => Arc::new(MemoryTable::default()),
    }
}

/// A typed table whose records are JSON sealed with the vault's sealer.
pub struct SealedTable<T> {
    name: &'static str,
    table: Arc<dyn Table>,
    sealer: Sealer,
    _record: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned> SealedTable<T> {
    pub fn new(name: &'static str, table: Arc<dyn Table>, sealer: Sealer) -> Self {
        SealedTable {
            name,
            table,
            sealer,
            _record: PhantomData,
        }
    }

    fn record_key(&self, key: &str) -> String {
        format!("{}:{key}", self.name)
    }

    pub fn put(&self, key: &str, record: &T, ttl: Duration) -> Result<(), StoreError> {
        let plain = serde_json::to_vec(record).map_err(|e| StoreError::Encoding(e.to_string()))?;
        let sealed = self.sealer.seal(&self.record_key(key), &plain);
        self.table.put(key, sealed, ttl)
    }

    pub fn get(&self, key: &str) -> Result<Option<T>, StoreError> {
        Ok(self.table.get(key)?.and_then(|bytes| self.open(key, &bytes)))
    }

    pub fn take(&self, key: &str) -> Result<Option<T>, StoreError> {
        Ok(self.table.take(key)?.and_then(|bytes| self.open(key, &bytes)))
    }

    pub fn delete(&self, key: &str) -> Result<bool, StoreError> {
        self.table.delete(key)
    }

    pub fn purge_expired(&self) -> Result<usize, StoreError> {
        self.table.purge_expired()
    }

    pub fn len(&self) -> Result<usize, StoreError> {
        self.table.len()
    }

    pub fn is_empty(&self) -> Result<bool, StoreError> {
        self.table.is_empty()
    }

    /// A record that fails to open (wrong key, tampering) is treated as absent
    /// and logged, never returned.
    fn open(&self, key: &str, bytes: &[u8]) -> Option<T> {
        let plain = match self.sealer.open(&self.record_key(key), bytes) {
            Ok(plain) => plain,
            Err(_) => {
                log::warn!("{} record failed to decrypt; treating it as absent", self.name);
                return None;
            }
        };
        match serde_json::from_slice(&plain) {
            Ok(record) => Some(record),
            Err(e) => {
                log::warn!("{} record could not be decoded ({e}); treating it as absent", self.name);
                None
            }
        }
    }
}
