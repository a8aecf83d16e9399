//! Per-thread memos of store actors' answers, for the hottest reads: the
//! grant behind an access token (every guarded MCP request) and a client
//! record (every authorization and token request).
//!
//! Asking an actor costs a round trip, a read, an AES-GCM open and a decode:
//! about a tenth of a guarded request's CPU, and a network round trip with
//! Redis. An answer is reused only while its table's generation is unchanged
//! (any write to that table, a revocation included, changes it; the
//! generation is read before the actor is asked, so a write racing with the
//! lookup can only cause a miss), and for at most [`MAX_AGE`], which bounds
//! how long a record that expires by time alone can still be served. With
//! Redis, other instances write too: the grant table has a generation only
//! while Redis pushes it an invalidation for every write (see
//! `store::shared::Invalidations`), so another instance's revocation is
//! seen as soon as its push arrives, a moment after that instance answered
//! (the propagation delay RFC 7009 allows for). Client records are never
//! rewritten (only created and expired), so client answers use
//! [`UNCHANGING`] and are reused for [`MAX_AGE`] on every backend.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::oauth::client::RegisteredClient;
use crate::records::Grant;

/// Longest an answer is reused.
const MAX_AGE: Duration = Duration::from_secs(1);

/// The generation of records that are never rewritten once written.
pub const UNCHANGING: u64 = 0;

/// Entries per memo and thread before it is cleared.
const CAPACITY: usize = 4096;

/// How often stale answers are dropped: they hold decrypted grants (upstream
/// tokens), so they should not linger in memory after they stop being used.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

struct Entry<V> {
    generation: u64,
    at: Instant,
    value: V,
}

/// Answers by key, each with the table generation it was read at.
pub struct Memo<V> {
    entries: RefCell<HashMap<Box<str>, Entry<V>, foldhash::fast::RandomState>>,
    swept: std::cell::Cell<Instant>,
}

impl<V> Default for Memo<V> {
    fn default() -> Self {
        Memo {
            entries: RefCell::new(HashMap::default()),
            swept: std::cell::Cell::new(Instant::now()),
        }
    }
}

impl<V: Clone> Memo<V> {
    /// The remembered answer for `key`, if its table is still at
    /// `generation` and the answer is recent.
    pub fn get(&self, key: &str, generation: Option<u64>) -> Option<V> {
        let generation = generation?;
        let entries = self.entries.borrow();
        let entry = entries.get(key)?;
        (entry.generation == generation && entry.at.elapsed() < MAX_AGE).then(|| entry.value.clone())
    }

    /// Remembers `value` for `key`, obtained after reading `generation`.
    pub fn remember(&self, key: &str, generation: Option<u64>, value: &V) {
        let Some(generation) = generation else {
            return;
        };
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= CAPACITY || self.swept.get().elapsed() >= SWEEP_EVERY {
            entries.retain(|_, e| e.generation == generation && e.at.elapsed() < MAX_AGE);
            self.swept.set(Instant::now());
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(
            key.into(),
            Entry {
                generation,
                at: Instant::now(),
                value: value.clone(),
            },
        );
    }
}

/// The answer for `key` from `memo`, or from `ask` (then remembered).
/// `generation` must be read before calling, so a write racing with `ask`
/// only makes the remembered answer miss.
pub async fn remembered<V, E, F>(
    memo: &'static std::thread::LocalKey<Memo<V>>,
    key: &str,
    generation: Option<u64>,
    ask: impl FnOnce() -> F,
) -> Result<V, E>
where
    V: Clone + 'static,
    F: std::future::Future<Output = Result<V, E>>,
{
    if let Some(value) = memo.with(|memo| memo.get(key, generation)) {
        return Ok(value);
    }
    let value = ask().await?;
    memo.with(|memo| memo.remember(key, generation, &value));
    Ok(value)
}

thread_local! {
    /// The vault's answer for an access token id: its grant id and grant, or
    /// `None` (revoked or unknown).
    pub static ACCESS_GRANTS: Memo<Option<std::rc::Rc<(String, Grant)>>> = Memo::default();
    /// The registry's answer for a client id (shared, not copied, by the
    /// requests that use it).
    pub static CLIENTS: Memo<Option<std::rc::Rc<RegisteredClient>>> = Memo::default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_reused_only_at_the_generation_it_was_read_at() {
        let memo = Memo::<u32>::default();
        memo.remember("k", Some(7), &1);
        assert_eq!(memo.get("k", Some(7)), Some(1));
        assert_eq!(memo.get("k", Some(8)), None, "a write since: ask again");
        assert_eq!(memo.get("other", Some(7)), None);
    }

    #[test]
    fn without_a_generation_nothing_is_remembered() {
        let memo = Memo::<u32>::default();
        memo.remember("k", None, &1);
        assert_eq!(memo.get("k", None), None);
        assert!(memo.entries.borrow().is_empty());
    }

    #[test]
    fn an_answer_older_than_the_maximum_age_is_not_reused() {
        let memo = Memo::<u32>::default();
        memo.remember("k", Some(1), &1);
        memo.entries.borrow_mut().get_mut("k").unwrap().at -= MAX_AGE;
        assert_eq!(memo.get("k", Some(1)), None);
    }

    #[test]
    fn stale_answers_are_dropped_by_the_next_sweep() {
        let memo = Memo::<u32>::default();
        memo.remember("old", Some(1), &1);
        memo.entries.borrow_mut().get_mut("old").unwrap().at -= MAX_AGE;
        memo.swept.set(memo.swept.get() - SWEEP_EVERY);
        memo.remember("new", Some(1), &2);
        assert!(!memo.entries.borrow().contains_key("old"));
        assert_eq!(memo.get("new", Some(1)), Some(2));
    }

    #[test]
    fn a_full_memo_makes_room_instead_of_growing() {
        let memo = Memo::<u32>::default();
        for i in 0..CAPACITY + 10 {
            memo.remember(&i.to_string(), Some(1), &0);
        }
        assert!(memo.entries.borrow().len() <= CAPACITY);
    }
}
