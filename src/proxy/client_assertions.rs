//! `private_key_jwt` at the token, revocation and introspection endpoints:
//! a document client's assertion verified with its keys (`jwks` inline, or
//! `jwks_uri` fetched like a document and fetched again once for an unknown
//! `kid`), and its `jti` used once.
//!
//! Single use holds across instances: each `jti` is written to a shared-store
//! table with an insert-if-absent (`compare_and_swap` from nothing, atomic in
//! memory, in the directory store and in Redis), kept until the assertion
//! has expired (plus the clock leeway), under a hash of the client id and
//! the `jti` (bounded keys; a client cannot burn another client's `jti`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;

use super::OAuthProxy;
use crate::crypto::sha256_b64url;
use crate::error::Error;
use crate::oauth::client::RegisteredClient;
use crate::oauth::client_assertion::{self, names_unknown_key, AssertionError, Expected, CLOCK_LEEWAY};
use crate::oauth::client_document::ClientKeys;
use crate::oauth::now_secs;
use crate::store::{StoreError, Table};

/// The table of used assertion ids.
pub const USED_ASSERTIONS_TABLE: &str = "assertion_jti";

/// How often, at most, expired ids are swept from stores without their own
/// expiry (memory, directory); Redis expires them itself.
const SWEEP_INTERVAL_SECS: u64 = 60;

/// The assertion ids already used (see the module docs).
pub struct UsedAssertions {
    table: Arc<dyn Table>,
    last_sweep: AtomicU64,
}

impl UsedAssertions {
    pub fn new(table: Arc<dyn Table>) -> UsedAssertions {
        UsedAssertions {
            table,
            last_sweep: AtomicU64::new(now_secs()),
        }
    }

    /// Records `jti` as used by `client_id` until `exp`; `false` when it
    /// was used before (a replay).
    pub async fn first_use(&self, client_id: &str, jti: &str, exp: u64) -> Result<bool, StoreError> {
        let now = now_secs();
        self.sweep_now_and_then(now).await;
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        let key = sha256_b64url(format!("{}:{client_id}{jti}", client_id.len()).as_bytes());
        let ttl = Duration::from_secs(exp.saturating_add(CLOCK_LEEWAY).saturating_sub(now).max(1));
        self.table.compare_and_swap(&key, None, Some((vec![1], ttl))).await
    }

    async fn sweep_now_and_then(&self, now: u64) {
        let last = self.last_sweep.load(Ordering::Relaxed);
        if now < last + SWEEP_INTERVAL_SECS
            || self
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        if let Err(e) = self.table.purge_expired().await {
            log::warn!("sweeping used client assertion ids failed: {e}");
        }
    }
}

impl OAuthProxy {
    /// Authenticates a `private_key_jwt` client by its assertion: a 401
    /// `invalid_client` saying what is wrong otherwise (never key material).
    pub(super) async fn verify_client_assertion(
        &self,
        client: &RegisteredClient,
        assertion: &secrecy::SecretString,
    ) -> Result<(), Error> {
        let refused = |description: String| Error::invalid_client(description, false);
        let config = &self.inner.config;
        let token_endpoint = config.url_for("/token");
        let audiences = [token_endpoint.as_str(), config.issuer.as_str()];
        let expected = || Expected {
            client_id: &client.client_id,
            audiences: &audiences,
            now: now_secs(),
        };
        let assertion = assertion.expose_secret();
        let keys = client.document.as_ref().and_then(|facts| facts.keys.as_ref());
        let verified = match keys {
            None => return Err(refused("the client has no keys to verify a client assertion".into())),
            Some(ClientKeys::Inline(keys)) => client_assertion::verify(assertion, keys, expected()),
            Some(ClientKeys::Uri(url)) => {
                let unusable = |e: crate::oauth::client_document::DocumentError| {
                    refused(format!("the client's jwks_uri cannot be used: {e}"))
                };
                let keys = self.inner.documents.key_set(url).await.map_err(unusable)?;
                match client_assertion::verify(assertion, &keys, expected()) {
                    // A key the set did not have: it may have been rotated
                    // in since the set was fetched.
                    Err(e) if names_unknown_key(&e) => {
                        let keys = self.inner.documents.refetch_key_set(url).await.map_err(unusable)?;
                        client_assertion::verify(assertion, &keys, expected())
                    }
                    other => other,
                }
            }
        };
        let verified = verified.map_err(|e: AssertionError| refused(e.to_string()))?;
        // RFC 7523 §3: the server may ensure a JWT is not replayed, by
        // keeping its `jti` until it expires.
        if !self
            .inner
            .used_assertions
            .first_use(&client.client_id, &verified.jti, verified.exp)
            .await?
        {
            return Err(refused("assertion replayed: its jti was used before".into()));
        }
        Ok(())
    }
}
