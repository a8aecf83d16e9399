//! `TransactionStore`: pending authorizations between `/authorize` and the
//! upstream callback.
//!
//! Contract: a transaction id (the upstream `state`) is random and is taken
//! once (atomically) at the callback. A transaction the user has not approved
//! yet expires after the short unapproved lifetime (two minutes); the full
//! transaction TTL starts when it is approved (or consent is skipped). New
//! transactions are capped: above `max_pending` live ones, a start is refused
//! ([`StartRefusal::Full`]), so `/authorize` cannot grow the store without
//! bound.
//!
//! Counting: the cap reads the table's count (memory: the map's length;
//! directory: a count kept by the writer; Redis: `ZCOUNT` of the live index,
//! shared by every instance). A count is trusted for a second while it is
//! below half the cap, plus this process's own starts since, so Redis sees a
//! round trip per start only near the cap. With Redis the cap is therefore
//! global but approximate: other instances' starts in that second are not
//! seen until the next count, and concurrent starts near the cap may all pass
//! the same count (overshoot by at most the requests in flight).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::{purge_interval, store_messages, sweep_every};
use crate::store::{SealedTable, StoreError};

use crate::records::Transaction;

/// How long a read count is trusted while it is below half the cap.
const COUNT_TRUSTED_FOR: Duration = Duration::from_secs(1);
/// At the cap, expired records still counted are swept at most this often
/// before refusing (a sweep walks the table: not once per refused request).
const PURGE_AT_CAP_EVERY: Duration = Duration::from_secs(1);
/// The "cap reached" warning is logged at most this often.
const LOG_AT_CAP_EVERY: Duration = Duration::from_secs(60);

/// What the cap knows, shared by the replicas of one process.
#[derive(Default)]
struct CapState {
    /// The last count read and when, plus this process's starts since.
    seen: Option<(Instant, usize)>,
    last_purge: Option<Instant>,
    last_log: Option<Instant>,
    refused_since_log: u64,
}

#[derive(Clone, Default)]
struct PendingCap(Arc<Mutex<CapState>>);

impl PendingCap {
    fn with<R>(&self, f: impl FnOnce(&mut CapState) -> R) -> Option<R> {
        self.0.lock().ok().map(|mut state| f(&mut state))
    }

    /// Whether the last count is recent and far enough below `max` to skip
    /// counting again.
    fn trusted(&self, max: usize) -> bool {
        self.with(|state| {
            state
                .seen
                .is_some_and(|(at, count)| at.elapsed() < COUNT_TRUSTED_FOR && count < max / 2)
        })
        .unwrap_or(false)
    }

    fn counted(&self, count: usize) {
        self.with(|state| state.seen = Some((Instant::now(), count)));
    }

    fn started_one(&self) {
        self.with(|state| {
            if let Some((_, count)) = state.seen.as_mut() {
                *count += 1;
            }
        });
    }

    /// Whether a sweep before refusing is due (and notes it as made).
    fn purge_due(&self) -> bool {
        self.with(|state| {
            let due = state.last_purge.is_none_or(|at| at.elapsed() >= PURGE_AT_CAP_EVERY);
            if due {
                state.last_purge = Some(Instant::now());
            }
            due
        })
        .unwrap_or(true)
    }

    /// Notes a refusal; logs one line a minute at most, with the number of
    /// refusals it stands for.
    fn refused(&self, max: usize) {
        self.with(|state| {
            state.refused_since_log += 1;
            if state.last_log.is_none_or(|at| at.elapsed() >= LOG_AT_CAP_EVERY) {
                log::warn!(
                    "pending authorizations are at OAUTH_PROXY_MAX_PENDING_AUTHORIZATIONS ({max}): \
                     /authorize answers 503 ({} refused since the last such line)",
                    state.refused_since_log
                );
                state.last_log = Some(Instant::now());
                state.refused_since_log = 0;
            }
        });
    }
}

#[derive(Clone)]
pub struct TransactionStore {
    /// Only the primary instance sweeps; replicas on worker threads do not.
    sweeping: bool,
    tables: TransactionTables,
}

/// The transaction table, its settings and the cap's counters, cloned into
/// each message's future.
#[derive(Clone)]
struct TransactionTables {
    transactions: SealedTable<Transaction>,
    /// Lifetime of an approved transaction.
    ttl: Duration,
    /// Lifetime of one not approved yet (at most `ttl`).
    unapproved_ttl: Duration,
    max_pending: usize,
    cap: PendingCap,
}

impl TransactionStore {
    pub fn new(
        transactions: SealedTable<Transaction>,
        ttl: Duration,
        unapproved_ttl: Duration,
        max_pending: usize,
    ) -> Self {
        TransactionStore {
            sweeping: true,
            tables: TransactionTables {
                transactions,
                ttl,
                unapproved_ttl: unapproved_ttl.min(ttl),
                max_pending,
                cap: PendingCap::default(),
            },
        }
    }

    /// A copy for another thread, sharing the tables.
    pub fn replica(&self) -> Self {
        TransactionStore {
            sweeping: false,
            ..self.clone()
        }
    }
}

impl TransactionTables {
    /// The lifetime a transaction is stored with.
    fn ttl_of(&self, transaction: &Transaction) -> Duration {
        if transaction.approved {
            self.ttl
        } else {
            self.unapproved_ttl
        }
    }
}

impl Actor for TransactionStore {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if !self.sweeping {
            return;
        }
        sweep_every(
            ctx,
            purge_interval(self.tables.unapproved_ttl),
            "transaction",
            self.tables.transactions.clone(),
        );
    }
}

/// Why a new transaction was not stored.
#[derive(Debug, thiserror::Error)]
pub enum StartRefusal {
    #[error("too many pending authorizations")]
    Full,
    #[error(transparent)]
    Store(#[from] StoreError),
}

store_messages! {
    TransactionStore: |t = tables, msg|

    /// Stores a new transaction, unless the pending ones are at the cap. It
    /// lives the unapproved lifetime, or the full one when already approved.
    StartTransaction {
        pub id: String,
        pub transaction: Transaction,
    } -> Result<(), StartRefusal> {
        let (transactions, max, cap) = (&t.transactions, t.max_pending, &t.cap);
        if !cap.trusted(max) {
            let mut count = transactions.count().await?;
            if count >= max && cap.purge_due() {
                // Expired records may still be counted; sweep before refusing.
                transactions.purge_expired().await?;
                count = transactions.count().await?;
            }
            cap.counted(count);
            if count >= max {
                cap.refused(max);
                return Err(StartRefusal::Full);
            }
        }
        transactions.put(&msg.id, &msg.transaction, t.ttl_of(&msg.transaction)).await?;
        cap.started_one();
        Ok(())
    }

    /// Stores the approved version of a transaction: from now on it lives the
    /// full transaction lifetime.
    PutTransaction {
        pub id: String,
        pub transaction: Transaction,
    } -> Result<(), StoreError> {
        t.transactions.put(&msg.id, &msg.transaction, t.ttl_of(&msg.transaction)).await
    }

    /// Reads a transaction (it stays).
    GetTransaction(pub String) -> Result<Option<Transaction>, StoreError> {
        t.transactions.get(&msg.0).await
    }

    /// Takes a transaction: it cannot be used again.
    TakeTransaction {
        pub id: String,
        /// The caller stores a code (a durable write) before it answers with
        /// it, as the callback does: the take need not wait for its own sync
        /// (see [`crate::store::Table::take_before_write`]).
        pub before_write: bool,
    } -> Result<Option<Transaction>, StoreError> {
        if msg.before_write {
            t.transactions.take_before_write(&msg.id).await
        } else {
            t.transactions.take(&msg.id).await
        }
    }
}

super::lifecycle_handlers!(TransactionStore, tables.transactions);
