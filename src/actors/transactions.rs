//! `TransactionStore`: pending authorizations between `/authorize` and the
//! upstream callback.
//!
//! Contract: a transaction id (the upstream `state`) is random, expires after
//! the transaction TTL, and is taken once (atomically) at the callback.

use std::time::Duration;

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

#[derive(Clone)]
pub struct TransactionStore {
    /// Only the primary instance sweeps; replicas on worker threads do not.
    sweeping: bool,
    transactions: SealedTable<Transaction>,
    ttl: Duration,
}

impl TransactionStore {
    pub fn new(transactions: SealedTable<Transaction>, ttl: Duration) -> Self {
        TransactionStore {
            sweeping: true,
            transactions,
            ttl,
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
        sweep_every(ctx, purge_interval(self.ttl), "transaction", self.transactions.clone());
    }
}

/// Stores a new transaction (or the approved version of one).
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct PutTransaction {
    pub id: String,
    pub transaction: Transaction,
}

impl Handler<PutTransaction> for TransactionStore {
    type Result = Answer<Result<(), StoreError>>;

    fn handle(&mut self, msg: PutTransaction, _: &mut Self::Context) -> Self::Result {
        let (transactions, ttl) = (self.transactions.clone(), self.ttl);
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
