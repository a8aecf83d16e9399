//! An authorization code's record: what the code stands for, and the
//! tokens issued when it was redeemed.

use serde::{Deserialize, Serialize};

use crate::crypto::constant_time_eq;
use crate::oauth::pkce::CodeChallenge;
use crate::oauth::scope::Scopes;

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
