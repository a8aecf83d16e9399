//! `CodeStore`: the proxy's authorization codes.
//!
//! Contract: a code is bound to its client, redirect URI and PKCE challenge,
//! expires after the code TTL, and is redeemed once. An immediate duplicate
//! request (same client and verifier within [`DUPLICATE_WINDOW`]) gets the same
//! tokens again; any other second redemption is refused and reported so the
//! tokens issued from the code can be revoked (OAuth 2.1 §4.1.3). The
//! decision is [`crate::records::redemption::redeem`], applied by
//! compare-and-swap on the stored code record.

use std::time::Duration;

use actix::prelude::*;

use super::{purge_interval, store_messages, sweep_every};
use crate::crypto::sha256_b64url;
use crate::oauth::now_secs;
use crate::records::redemption::{redeem, Decided, RedeemRequest};
use crate::store::{SealedTable, StoreError};

use crate::records::{CodeOutcome, CodeRecord};

#[derive(Clone)]
pub struct CodeStore {
    /// Only the primary instance sweeps; replicas on worker threads do not.
    sweeping: bool,
    tables: CodeTables,
}

/// The code table and its setting, cloned into each message's future.
#[derive(Clone)]
struct CodeTables {
    codes: SealedTable<CodeRecord>,
    ttl: Duration,
}

impl CodeStore {
    pub fn new(codes: SealedTable<CodeRecord>, ttl: Duration) -> Self {
        CodeStore {
            sweeping: true,
            tables: CodeTables { codes, ttl },
        }
    }

    /// A copy for another thread, sharing the tables.
    pub fn replica(&self) -> Self {
        CodeStore {
            sweeping: false,
            ..self.clone()
        }
    }
}

impl Actor for CodeStore {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if !self.sweeping {
            return;
        }
        sweep_every(ctx, purge_interval(self.tables.ttl), "code", self.tables.codes.clone());
    }
}

store_messages! {
    CodeStore: |t = tables, msg|

    /// Stores a new code under the hash of its value (the code itself is never stored).
    StoreCode {
        pub code: String,
        pub record: CodeRecord,
    } -> Result<(), StoreError> {
        t.codes.put(&sha256_b64url(msg.code.as_bytes()), &msg.record, t.ttl).await
    }

    /// Redeems a code in one atomic step: checks it, and records the tokens issued.
    RedeemCode {
        pub code: String,
        pub client_id: String,
        pub redirect_uri: Option<String>,
        pub verifier: String,
        /// Random parts of the token ids to issue if this is the first
        /// redemption of a code without prepared ids; the ids are
        /// `<grant id>.<random>`.
        pub access_nonce: String,
        pub refresh_nonce: String,
        pub issued_at: u64,
    } -> Result<CodeOutcome, StoreError> {
        let key = sha256_b64url(msg.code.as_bytes());
        let verifier_hash = sha256_b64url(msg.verifier.as_bytes());
        let request = RedeemRequest {
            client_id: &msg.client_id,
            redirect_uri: msg.redirect_uri.as_deref(),
            verifier: &msg.verifier,
            verifier_hash: &verifier_hash,
            access_nonce: &msg.access_nonce,
            refresh_nonce: &msg.refresh_nonce,
            issued_at: msg.issued_at,
        };
        let now = now_secs();
        // A redemption is followed by a durable write on success (the
        // grant's tokens, or the grant from a forwarded-PKCE exchange),
        // so its own sync overlaps the caller's work.
        let (outcome, written) = t
            .codes
            .update_returning(&key, true, |record| redeem(record, &request, t.ttl, now))
            .await?;
        match (outcome, written) {
            (Decided::Outcome(outcome), _) => Ok(*outcome),
            (Decided::FirstRedemption(prepared), Some(record)) => {
                Ok(CodeOutcome::Redeemed(record, msg.verifier, prepared))
            }
            (Decided::FirstRedemption(_), None) => {
                Err(StoreError::Encoding("a redemption wrote no code record".into()))
            }
        }
    }
}

super::lifecycle_handlers!(CodeStore, tables.codes);
