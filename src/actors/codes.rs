//! `CodeStore`: the proxy's authorization codes.
//!
//! Contract: a code is bound to its client, redirect URI and PKCE challenge,
//! expires after the code TTL, and is redeemed once. An immediate duplicate
//! request (same client and verifier within [`DUPLICATE_WINDOW`]) gets the same
//! tokens again; any other second redemption is refused and reported so the
//! tokens issued from the code can be revoked (OAuth 2.1 §4.1.3).

use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use super::{purge_interval, sweep_every, Answer};
use crate::crypto::{constant_time_eq, sha256_b64url};
use crate::oauth::now_secs;
use crate::oauth::pkce::CodeChallenge;
use crate::oauth::scope::Scopes;
use crate::store::{Change, SealedTable, StoreError};

/// Some clients send the token request twice in a row.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(5);

/// What a code stands for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CodeRecord {
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: CodeChallenge,
    pub scopes: Scopes,
    pub resource: String,
    /// The vault grant created at the callback (or at `/token` when PKCE is
    /// forwarded).
    pub grant_id: String,
    /// Forwarded PKCE: the upstream code, redeemable only with the client's
    /// verifier at `/token`.
    pub pending_upstream_code: Option<String>,
    /// Swap mode, grant written at the callback: what /token signs, so it
    /// need not read the grant back. Dropped from the record at redemption.
    pub prepared: Option<PreparedTokens>,
    pub redemption: Option<Redemption>,
    /// When the user signed in (the callback): the grant's creation time,
    /// from which `OAUTH_PROXY_GRANT_MAX_LIFETIME` counts; carried here so
    /// /token bounds the first tokens without reading the grant. Appended
    /// last: a code of the earlier release counts from when it is read.
    #[serde(deserialize_with = "crate::store::appended_time")]
    pub grant_created_at: u64,
}

/// The token ids the callback wrote into the grant as its current pair, and
/// the grant's subject and custom claims.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreparedTokens {
    pub access_nonce: String,
    pub refresh_nonce: String,
    pub subject: String,
    /// Custom claims as a JSON object (see `Grant::claims`).
    pub claims: String,
}

/// The tokens issued for a code, kept so a duplicate request gets the same.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Redemption {
    pub at: u64,
    pub verifier_hash: String,
    pub access_jti: String,
    pub refresh_jti: String,
}

/// Why a token request for a code fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeRefusal {
    Unknown,
    WrongClient,
    WrongRedirectUri,
    WrongVerifier,
}

impl CodeRecord {
    /// RFC 6749 §4.1.3 and RFC 7636 §4.6: the code was issued to this client,
    /// for this redirect URI, and the verifier matches the challenge.
    pub fn check(&self, client_id: &str, redirect_uri: Option<&str>, verifier: &str) -> Result<(), CodeRefusal> {
        if !constant_time_eq(self.client_id.as_bytes(), client_id.as_bytes()) {
            return Err(CodeRefusal::WrongClient);
        }
        if redirect_uri != Some(self.redirect_uri.as_str()) {
            return Err(CodeRefusal::WrongRedirectUri);
        }
        if !self.code_challenge.is_satisfied_by(verifier) {
            return Err(CodeRefusal::WrongVerifier);
        }
        Ok(())
    }
}

#[derive(Clone)]
pub struct CodeStore {
    /// Only the primary instance sweeps; replicas on worker threads do not.
    sweeping: bool,
    codes: SealedTable<CodeRecord>,
    ttl: Duration,
}

impl CodeStore {
    pub fn new(codes: SealedTable<CodeRecord>, ttl: Duration) -> Self {
        CodeStore {
            sweeping: true,
            codes,
            ttl,
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
        sweep_every(ctx, purge_interval(self.ttl), "code", self.codes.clone());
    }
}

/// Stores a new code under the hash of its value (the code itself is never stored).
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct StoreCode {
    pub code: String,
    pub record: CodeRecord,
}

impl Handler<StoreCode> for CodeStore {
    type Result = Answer<Result<(), StoreError>>;

    fn handle(&mut self, msg: StoreCode, _: &mut Self::Context) -> Self::Result {
        let (codes, ttl) = (self.codes.clone(), self.ttl);
        Answer::of(async move { codes.put(&sha256_b64url(msg.code.as_bytes()), &msg.record, ttl).await })
    }
}

/// Redeems a code in one atomic step: checks it, and records the tokens issued.
#[derive(Message)]
#[rtype(result = "Result<CodeOutcome, StoreError>")]
pub struct RedeemCode {
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
}

#[derive(Debug)]
pub enum CodeOutcome {
    /// First redemption: issue tokens with the ids of the record's
    /// redemption; the verifier is handed back for a forwarded-PKCE upstream
    /// exchange, and what the callback prepared, taken out of the record.
    Redeemed(CodeRecord, String, Option<PreparedTokens>),
    /// An immediate duplicate: answer with the tokens of the first redemption.
    Duplicate(CodeRecord, Redemption),
    /// The code was already used: refuse and revoke this grant.
    Replayed {
        grant_id: String,
    },
    Refused(CodeRefusal),
}

/// What a redemption attempt decided, besides the record it writes.
enum Decided {
    /// Refusals, duplicates and replays (boxed: rare, and large).
    Outcome(Box<CodeOutcome>),
    /// A first redemption, whose outcome is the record written, with what
    /// the callback prepared (taken out of that record).
    FirstRedemption(Option<PreparedTokens>),
}

/// What a redemption attempt does to the code record, and its outcome.
fn redeem(
    record: Option<CodeRecord>,
    msg: &RedeemCode,
    verifier_hash: &str,
    ttl: Duration,
) -> (Change<CodeRecord>, Decided) {
    let refused = |outcome| (Change::Keep, Decided::Outcome(Box::new(outcome)));
    let Some(mut record) = record else {
        return refused(CodeOutcome::Refused(CodeRefusal::Unknown));
    };
    if let Some(redemption) = record.redemption.clone() {
        let immediate = now_secs().saturating_sub(redemption.at) <= DUPLICATE_WINDOW.as_secs();
        let same_request = record.client_id == msg.client_id
            && constant_time_eq(redemption.verifier_hash.as_bytes(), verifier_hash.as_bytes())
            && record.redirect_uri.as_str() == msg.redirect_uri.as_deref().unwrap_or_default();
        if immediate && same_request {
            return refused(CodeOutcome::Duplicate(record, redemption));
        }
        let grant_id = record.grant_id;
        return refused(CodeOutcome::Replayed { grant_id });
    }
    if let Err(refusal) = record.check(&msg.client_id, msg.redirect_uri.as_deref(), &msg.verifier) {
        return refused(CodeOutcome::Refused(refusal));
    }
    // The ids the callback already wrote into the grant, if it prepared them.
    let prepared = record.prepared.take();
    let (access_nonce, refresh_nonce) = match &prepared {
        Some(p) => (&p.access_nonce, &p.refresh_nonce),
        None => (&msg.access_nonce, &msg.refresh_nonce),
    };
    record.redemption = Some(Redemption {
        at: msg.issued_at,
        verifier_hash: verifier_hash.to_string(),
        access_jti: format!("{}.{access_nonce}", record.grant_id),
        refresh_jti: format!("{}.{refresh_nonce}", record.grant_id),
    });
    // Kept until it expires, to recognise duplicates and replays.
    (Change::Put(record, ttl), Decided::FirstRedemption(prepared))
}

impl Handler<RedeemCode> for CodeStore {
    type Result = Answer<Result<CodeOutcome, StoreError>>;

    fn handle(&mut self, msg: RedeemCode, _: &mut Self::Context) -> Self::Result {
        let (codes, ttl) = (self.codes.clone(), self.ttl);
        Answer::of(async move {
            let key = sha256_b64url(msg.code.as_bytes());
            let verifier_hash = sha256_b64url(msg.verifier.as_bytes());
            // A redemption is followed by a durable write on success (the
            // grant's tokens, or the grant from a forwarded-PKCE exchange),
            // so its own sync overlaps the caller's work.
            let (outcome, written) = codes
                .update_returning(&key, true, |record| redeem(record, &msg, &verifier_hash, ttl))
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
        })
    }
}

super::lifecycle_handlers!(CodeStore, codes);
