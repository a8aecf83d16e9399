//! The writer thread: applies queued writes in groups, one fjall batch and
//! one sync per group (group commit), answering each write once it is
//! durable (or, for an early write, once decided).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use fjall::{OwnedWriteBatch, PersistMode};

use super::table::TableState;
use super::{decode, encode, now_millis, unavailable, Op, Outcome, Write, MAX_BATCH};
use crate::store::write_queue::QueueReceiver;
use crate::store::StoreError;

/// Applies queued writes, a batch per commit, until every sender is gone.
pub(super) fn writer(db: fjall::Database, queue: QueueReceiver<Write>) {
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
            Op::PutIndexed {
                key,
                stored,
                index,
                entries,
            } => {
                let existed = table.count.is_some() && self.current(table, key)?.is_some();
                // Index entries first: a failure leaves nothing of this write
                // in the group (an entry alone is skipped by readers).
                for (entry, expiry) in entries {
                    self.set(index, entry, false, Some(expiry.clone()))?;
                }
                self.set(table, key, existed, Some(stored.clone()))?;
                Outcome::Done
            }
            Op::IndexAdd { key, stored } => {
                let current = self.current(table, key)?;
                let expiry = |value: &[u8]| value.get(..8).map(|b| b.to_vec());
                let live = current.as_deref().is_some_and(|v| decode(v, now).is_some());
                // Both expiries are 8 big-endian bytes: compared as bytes.
                if current.as_deref().and_then(expiry) < expiry(stored) {
                    self.set(table, key, current.is_some(), Some(stored.clone()))?;
                }
                Outcome::Flag(!live)
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
