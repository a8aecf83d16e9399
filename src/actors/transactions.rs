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
use serde::{Deserialize, Serialize};

use super::{purge_interval, sweep_every, Answer};
use crate::oauth::pkce::CodeChallenge;
use crate::oauth::scope::Scopes;
use crate::store::{SealedTable, StoreError};

/// One pending authorization.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Transaction {
    pub client_id: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub scopes: Scopes,
    pub resource: String,
    pub code_challenge: CodeChallenge,
    /// The proxy's own PKCE verifier for the upstream leg (absent when the
    /// client's challenge is forwarded).
    pub upstream_verifier: Option<String>,
    /// Anti-CSRF token for the consent form.
    pub csrf_token: String,
    /// Hash of the browser binding cookie the transaction belongs to.
    pub browser_hash: String,
    /// The user approved this client on the consent page (or consent is off).
    pub approved: bool,
}

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
            transactions,
            ttl,
            unapproved_ttl: unapproved_ttl.min(ttl),
            max_pending,
            cap: PendingCap::default(),
        }
    }

    /// The lifetime a transaction is stored with.
    fn ttl_of(&self, transaction: &Transaction) -> Duration {
        if transaction.approved {
            self.ttl
        } else {
            self.unapproved_ttl
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

impl Actor for TransactionStore {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if !self.sweeping {
            return;
        }
        sweep_every(
            ctx,
            purge_interval(self.unapproved_ttl),
            "transaction",
            self.transactions.clone(),
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

/// Stores a new transaction, unless the pending ones are at the cap. It
/// lives the unapproved lifetime, or the full one when already approved.
#[derive(Message)]
#[rtype(result = "Result<(), StartRefusal>")]
pub struct StartTransaction {
    pub id: String,
    pub transaction: Transaction,
}

impl Handler<StartTransaction> for TransactionStore {
    type Result = Answer<Result<(), StartRefusal>>;

    fn handle(&mut self, msg: StartTransaction, _: &mut Self::Context) -> Self::Result {
        let (transactions, max, cap) = (self.transactions.clone(), self.max_pending, self.cap.clone());
        let ttl = self.ttl_of(&msg.transaction);
        Answer::of(async move {
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
            transactions.put(&msg.id, &msg.transaction, ttl).await?;
            cap.started_one();
            Ok(())
        })
    }
}

/// Stores the approved version of a transaction: from now on it lives the
/// full transaction lifetime.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct PutTransaction {
    pub id: String,
    pub transaction: Transaction,
}

impl Handler<PutTransaction> for TransactionStore {
    type Result = Answer<Result<(), StoreError>>;

    fn handle(&mut self, msg: PutTransaction, _: &mut Self::Context) -> Self::Result {
        let transactions = self.transactions.clone();
        let ttl = self.ttl_of(&msg.transaction);
        Answer::of(async move { transactions.put(&msg.id, &msg.transaction, ttl).await })
    }
}

#[derive(Message)]
#[rtype(result = "Result<Option<Transaction>, StoreError>")]
pub struct GetTransaction(pub String);

impl Handler<GetTransaction> for TransactionStore {
    type Result = Answer<Result<Option<Transaction>, StoreError>>;

    fn handle(&mut self, msg: GetTransaction, _: &mut Self::Context) -> Self::Result {
        let transactions = self.transactions.clone();
        Answer::of(async move { transactions.get(&msg.0).await })
    }
}

/// Takes a transaction: it cannot be used again.
#[derive(Message)]
#[rtype(result = "Result<Option<Transaction>, StoreError>")]
pub struct TakeTransaction {
    pub id: String,
    /// The caller stores a code (a durable write) before it answers with
    /// it, as the callback does: the take need not wait for its own sync
    /// (see [`crate::store::Table::take_before_write`]).
    pub before_write: bool,
}

impl Handler<TakeTransaction> for TransactionStore {
    type Result = Answer<Result<Option<Transaction>, StoreError>>;

    fn handle(&mut self, msg: TakeTransaction, _: &mut Self::Context) -> Self::Result {
        let transactions = self.transactions.clone();
        Answer::of(async move {
            if msg.before_write {
                transactions.take_before_write(&msg.id).await
            } else {
                transactions.take(&msg.id).await
            }
        })
    }
}

super::lifecycle_handlers!(TransactionStore, transactions);
