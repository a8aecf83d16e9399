//! A per-thread memo of the vault's answer to "which grant does this access
//! token belong to, and is it still valid?", for the guarded MCP endpoint.
//!
//! Asking the vault costs an actor round trip, a read, an AES-GCM open and a
//! decode on every MCP request: about a tenth of a guarded request's CPU. An
//! answer is reused only while the grant table's generation is unchanged
//! (any write to any grant, a revocation included, changes it, and the
//! generation is read before the vault is asked, so a write racing with the
//! lookup can only cause a miss), and for at most [`MAX_AGE`], which bounds
//! how long a grant that expires by time alone can still be served. With
//! Redis, other instances write too and the generation is unknown: nothing is
//! cached and the vault is asked every time.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::actors::token_vault::Grant;

/// Longest an answer is reused.
const MAX_AGE: Duration = Duration::from_secs(1);

/// Entries per thread before the cache is cleared.
const CAPACITY: usize = 4096;

/// The vault's answer for one access token id: the grant id and grant, or
/// `None` (revoked or unknown).
pub type Answer = Option<(String, Grant)>;

struct Entry {
    generation: u64,
    at: Instant,
    answer: Answer,
}

thread_local! {
    static ANSWERS: RefCell<HashMap<Box<str>, Entry, foldhash::fast::RandomState>> =
        RefCell::new(HashMap::default());
}

/// The remembered answer for `jti`, if the grant table is still at
/// `generation` and the answer is recent.
pub fn cached(jti: &str, generation: Option<u64>) -> Option<Answer> {
    let generation = generation?;
    ANSWERS.with(|answers| {
        let answers = answers.borrow();
        let entry = answers.get(jti)?;
        (entry.generation == generation && entry.at.elapsed() < MAX_AGE).then(|| entry.answer.clone())
    })
}

/// Remembers the vault's `answer` for `jti`, obtained after reading
/// `generation`.
pub fn remember(jti: &str, generation: Option<u64>, answer: &Answer) {
    let Some(generation) = generation else {
        return;
    };
    ANSWERS.with(|answers| {
        let mut answers = answers.borrow_mut();
        if answers.len() >= CAPACITY {
            answers.retain(|_, e| e.generation == generation && e.at.elapsed() < MAX_AGE);
            if answers.len() >= CAPACITY {
                answers.clear();
            }
        }
        answers.insert(
            jti.into(),
            Entry {
                generation,
                at: Instant::now(),
                answer: answer.clone(),
            },
        );
    });
}
