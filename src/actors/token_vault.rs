//! `TokenVault`: upstream token sets and the proxy tokens that map to them.
//!
//! Contract:
//! - A grant (one completed authorization) holds the upstream tokens, sealed
//!   with AES-256-GCM like every record; they are never handed to clients in
//!   swap mode.
//! - Proxy token ids (`jti`) are `<grant id>.<random>`, so a token leads to
//!   its grant in one read; revoking the grant revokes every token issued
//!   from it, and a single access token can be revoked on its own.
//! - Refresh tokens rotate on every use. A rotated-out token presented again
//!   within [`REFRESH_GRACE`] and before its successor was used gets the same
//!   successor; any other reuse revokes the whole family (RFC 9700 §4.14.2).
//!   The decision ([`crate::records::rotation::claim`]) is a compare-and-swap
//!   on the stored grant, so concurrent refreshes of one token never fork the
//!   family, even across instances.
//! - In pass-through mode the client holds the upstream tokens; the vault keeps
//!   their hashes so a refresh is only accepted from the client it was issued to.
//! - A grant ends `OAUTH_PROXY_GRANT_MAX_LIFETIME` after its sign-in, however
//!   often it is refreshed: no record and no token issued from it outlives
//!   that, and a refresh after it is refused and removes the grant.
//! - Writes made after a read (undoing a rotation, storing refreshed upstream
//!   tokens) are decided again on the record as stored, so they never bring
//!   back what another writer changed meanwhile (a revocation, newer tokens).

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use super::{purge_interval, store_messages, sweep_every};
use crate::oauth::now_secs;
use crate::records::rotation::{claim, refresh_token_is_live, undo_rotation, Claimed, RefreshRequest};
use crate::store::{Change, IndexEntry, SealedTable, StoreError, Table};

use crate::records::{
    bounded_ttl, grant_id_of, Grant, GrantLifetime, IssuedPair, RefreshClaim, RotationUndo, UpstreamTokens,
};

mod backfill;
pub use backfill::BACKFILL_MARKER;

#[derive(Clone)]
pub struct TokenVault {
    tables: VaultTables,
    /// Only the primary instance sweeps; replicas on worker threads do not.
    sweeping: bool,
    /// The table of the backfill's marker, when the primary is to file the
    /// grants of the earlier release by client and subject as it starts
    /// (see [`backfill`]).
    backfill: Option<Arc<dyn Table>>,
}

/// The vault's tables, cloned into each message's future.
#[derive(Clone)]
struct VaultTables {
    grants: SealedTable<Grant>,
    /// Pass-through token hash -> grant id.
    index: SealedTable<String>,
    access_ttl: Duration,
    /// The refresh token lifetime, and `OAUTH_PROXY_GRANT_MAX_LIFETIME`.
    lifetime: GrantLifetime,
    /// Keys the hashes that name the grant indexes (see [`GrantIndexes`]).
    indexes: GrantIndexes,
}

/// The names of the indexes a grant is filed under, by client and by
/// subject, so an operator can list and revoke them (the admin API).
/// Names are keyed hashes: the store never holds a subject (personal data)
/// in clear outside the sealed grant, and a client id of any length (a
/// client metadata document URL) makes a name of fixed size.
#[derive(Clone)]
pub struct GrantIndexes {
    key: std::sync::Arc<[u8; 32]>,
}

impl GrantIndexes {
    /// `secret`: a configured secret every instance sharing the store
    /// holds (the consent signing key); the hashing key is derived from it.
    pub fn new(secret: &[u8]) -> Self {
        GrantIndexes {
            key: std::sync::Arc::new(crate::crypto::derive_key(secret, "grant-index-names")),
        }
    }

    fn name(&self, kind: &str, value: &str) -> String {
        use base64::Engine;
        use hmac::Mac;
        let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&*self.key).expect("HMAC takes any key length");
        mac.update(kind.as_bytes());
        mac.update(b"\0");
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        // 128 bits: no collision among any realistic number of names.
        format!(
            "{kind}/{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16])
        )
    }

    pub fn by_client(&self, client_id: &str) -> String {
        self.name("client", client_id)
    }

    pub fn by_subject(&self, subject: &str) -> String {
        self.name("sub", subject)
    }
}

impl TokenVault {
    pub fn new(
        grants: SealedTable<Grant>,
        index: SealedTable<String>,
        access_ttl: Duration,
        refresh_ttl: Duration,
        max_lifetime: Duration,
        indexes: GrantIndexes,
    ) -> Self {
        TokenVault {
            tables: VaultTables {
                grants,
                index,
                access_ttl,
                lifetime: GrantLifetime {
                    refresh_ttl,
                    max_lifetime,
                },
                indexes,
            },
            sweeping: true,
            backfill: None,
        }
    }

    /// Files the grants of the earlier release (stored without index
    /// entries) under their client and subject, once, in the background
    /// when the primary starts; `meta` keeps the marker that it was done
    /// (see [`BACKFILL_MARKER`]).
    pub fn backfilling(self, meta: Arc<dyn Table>) -> Self {
        TokenVault {
            backfill: Some(meta),
            ..self
        }
    }

    /// Names the indexes grants are filed under.
    pub fn indexes(&self) -> &GrantIndexes {
        &self.tables.indexes
    }

    /// The grant table's generation (see [`crate::store::Table::generation`]).
    pub fn grant_generation(&self) -> Option<u64> {
        self.tables.grants.generation()
    }

    /// A copy for another thread, sharing the tables.
    pub fn replica(&self) -> Self {
        TokenVault {
            sweeping: false,
            backfill: None,
            ..self.clone()
        }
    }
}

impl VaultTables {
    async fn grant_of(&self, index_key: &str) -> Result<Option<(String, Grant)>, StoreError> {
        let Some(grant_id) = self.index.get(index_key).await? else {
            return Ok(None);
        };
        Ok(self.grants.get(&grant_id).await?.map(|grant| (grant_id, grant)))
    }

    /// The index entries of a new grant: by client and by subject, each
    /// until the grant's end, which no write of the grant outlives.
    fn index_entries(&self, grant: &Grant, now: u64) -> Vec<IndexEntry> {
        let Some(ttl) = bounded_ttl(
            self.lifetime.max_lifetime,
            grant.ends_at(self.lifetime.max_lifetime),
            now,
        ) else {
            return Vec::new();
        };
        vec![
            IndexEntry {
                index: self.indexes.by_client(&grant.client_id),
                ttl,
            },
            IndexEntry {
                index: self.indexes.by_subject(&grant.subject),
                ttl,
            },
        ]
    }

    /// What a write at `now` that keeps the grant does: put it for as long
    /// as its refresh token lives, or remove it once it has ended.
    fn keep(&self, grant: Grant, now: u64) -> Change<Grant> {
        match self.lifetime.ttl(&grant, now) {
            Some(ttl) => Change::Put(grant, ttl),
            None => Change::Delete,
        }
    }

    async fn index_passthrough(
        &self,
        grant_id: &str,
        ends_at: u64,
        access_hash: &str,
        refresh_hash: Option<&str>,
        now: u64,
    ) -> Result<(), StoreError> {
        let grant_id = grant_id.to_string();
        let (Some(access_ttl), Some(refresh_ttl)) = (
            bounded_ttl(self.access_ttl, ends_at, now),
            bounded_ttl(self.lifetime.refresh_ttl, ends_at, now),
        ) else {
            return Ok(());
        };
        self.index
            .put(&passthrough_key(access_hash), &grant_id, access_ttl)
            .await?;
        if let Some(refresh_hash) = refresh_hash {
            self.index
                .put(&passthrough_key(refresh_hash), &grant_id, refresh_ttl)
                .await?;
        }
        Ok(())
    }
}

fn passthrough_key(token_hash: &str) -> String {
    format!("pt.{token_hash}")
}

impl Actor for TokenVault {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if !self.sweeping {
            return;
        }
        let interval = purge_interval(self.tables.access_ttl.min(self.tables.lifetime.refresh_ttl));
        sweep_every(ctx, interval, "grant", self.tables.grants.clone());
        sweep_every(ctx, interval, "token index", self.tables.index.clone());
        // Stopped with the actor (the proxy's shutdown); a run cut short is
        // run again at the next start.
        if let Some(meta) = self.backfill.clone() {
            ctx.spawn(actix::fut::wrap_future(backfill::backfill(self.tables.clone(), meta)));
        }
    }
}

/// What an upstream token update did.
#[derive(Debug)]
pub enum UpstreamUpdate {
    /// The new tokens are stored.
    Written,
    /// Another refresh spent the token first; its tokens are stored.
    Superseded(UpstreamTokens),
    /// The grant is gone (revoked, expired or ended).
    Gone,
}

store_messages! {
    TokenVault: |t = tables, msg|

    /// Stores a new grant; it lives for `ttl` until tokens are issued from it.
    CreateGrant {
        pub grant_id: String,
        pub grant: Grant,
        pub ttl: Duration,
    } -> Result<(), StoreError> {
        // Filed by client and subject in the same atomic write.
        let entries = t.index_entries(&msg.grant, now_secs());
        t.grants.put_indexed(&msg.grant_id, &msg.grant, msg.ttl, &entries).await
    }

    /// Keeps a grant for as long as its refresh token lives (never past the
    /// grant's end), once its code is redeemed (swap mode: the callback wrote
    /// the grant with the code's lifetime and its first token pair). `false`:
    /// the grant is gone (expired or revoked since) or has ended.
    KeepGrant {
        pub grant_id: String,
        /// When the grant was made (the code record carries it, so the grant
        /// need not be read).
        pub created_at: u64,
    } -> Result<bool, StoreError> {
        let ends_at = msg.created_at.saturating_add(t.lifetime.max_lifetime.as_secs());
        match bounded_ttl(t.lifetime.refresh_ttl, ends_at, now_secs()) {
            Some(ttl) => t.grants.touch(&msg.grant_id, ttl).await,
            None => Ok(false),
        }
    }

    /// Looks up a grant by grant id (for the duplicate-code answer).
    GetGrant(pub String) -> Result<Option<Grant>, StoreError> {
        t.grants.get(&msg.0).await
    }

    /// Finds the grant (and its id) of a proxy access token.
    LookupAccessToken {
        pub jti: String,
    } -> Result<Option<(String, Grant)>, StoreError> {
        let Some(grant_id) = grant_id_of(&msg.jti) else {
            return Ok(None);
        };
        let grant = t.grants.get(grant_id).await?;
        Ok(grant
            .filter(|grant| !grant.access_revoked(&msg.jti))
            .map(|grant| (grant_id.to_string(), grant)))
    }

    /// Finds the grant of a proxy refresh token that is still current (or in
    /// its grace window).
    LookupRefreshToken {
        pub jti: String,
    } -> Result<Option<(String, Grant)>, StoreError> {
        let Some(grant_id) = grant_id_of(&msg.jti).map(String::from) else {
            return Ok(None);
        };
        let Some(grant) = t.grants.get(&grant_id).await? else {
            return Ok(None);
        };
        Ok(refresh_token_is_live(&grant, &msg.jti, now_secs()).then_some((grant_id, grant)))
    }

    /// Revokes one proxy access token: it fails at once everywhere.
    RevokeAccessToken {
        pub jti: String,
        /// The token's own expiry: after it, the revocation need not be kept.
        pub exp: u64,
    } -> Result<(), StoreError> {
        let Some(grant_id) = grant_id_of(&msg.jti) else {
            return Ok(());
        };
        let now = now_secs();
        t.grants
            .update(grant_id, |grant| match grant {
                Some(mut grant) if !grant.access_revoked(&msg.jti) => {
                    grant.revoked_access.retain(|(_, exp)| *exp > now);
                    grant.revoked_access.push((msg.jti.clone(), msg.exp));
                    (t.keep(grant, now), ())
                }
                _ => (Change::Keep, ()),
            })
            .await
    }

    /// Claims a refresh token for rotation (swap mode): the decision is
    /// [`claim`], applied by compare-and-swap on the stored grant.
    ClaimRefresh {
        pub refresh_jti: String,
        pub client_id: String,
        /// The pair to issue if the token is current.
        pub successor: IssuedPair,
    } -> Result<RefreshClaim, StoreError> {
        let Some(grant_id) = grant_id_of(&msg.refresh_jti).map(String::from) else {
            return Ok(RefreshClaim::Unknown);
        };
        let request = RefreshRequest {
            refresh_jti: &msg.refresh_jti,
            client_id: &msg.client_id,
            successor: &msg.successor,
        };
        let now = now_secs();
        let (outcome, written) = t
            .grants
            .update_returning(&grant_id, false, |grant| claim(grant, &request, now, t.lifetime))
            .await?;
        match outcome {
            Claimed::Rotated { undo } => Ok(RefreshClaim::Rotated {
                grant_id,
                grant: written.ok_or_else(|| StoreError::Encoding("a rotation wrote no grant".into()))?,
                undo,
            }),
            Claimed::Answer(RefreshClaim::ReuseDetected) => {
                log::warn!(
                    "refresh token reuse detected for client {}; its grant was revoked",
                    msg.client_id
                );
                Ok(RefreshClaim::ReuseDetected)
            }
            Claimed::Answer(other) => Ok(other),
        }
    }

    /// Undoes a rotation whose upstream refresh failed for a passing reason,
    /// so the client can retry with the token it holds. Only the token pair
    /// goes back, on the grant as stored now ([`undo_rotation`]): whatever
    /// else changed since the claim (an access token revoked, upstream tokens
    /// refreshed) stays, and a grant revoked since stays revoked.
    UndoRotation {
        pub grant_id: String,
        /// The pair the rotation made current; undone only if still current.
        pub successor: IssuedPair,
        pub undo: RotationUndo,
    } -> Result<(), StoreError> {
        let now = now_secs();
        t.grants
            .update(&msg.grant_id, |grant| match undo_rotation(grant, &msg.successor, &msg.undo) {
                Some(grant) => (t.keep(grant, now), ()),
                None => (Change::Keep, ()),
            })
            .await
    }

    /// Replaces the upstream tokens of a grant after an upstream refresh, if
    /// the grant still holds the upstream refresh token that was spent: a
    /// compare-and-swap on it, so of two instances that refreshed at once the
    /// first to write wins and the other takes its tokens.
    UpdateUpstreamTokens {
        pub grant_id: String,
        /// The upstream refresh token the refresh spent.
        pub spent_refresh_token: String,
        pub upstream: UpstreamTokens,
        /// Pass-through: the hashes of the token pair the client now holds.
        pub passthrough_hashes: Option<(String, Option<String>)>,
    } -> Result<UpstreamUpdate, StoreError> {
        let refresh_hash = msg.passthrough_hashes.as_ref().and_then(|(_, r)| r.clone());
        let now = now_secs();
        let (outcome, written) = t
            .grants
            .update_returning(&msg.grant_id, false, |grant| match grant {
                Some(grant) if grant.upstream.refresh_token.as_deref() != Some(msg.spent_refresh_token.as_str()) => {
                    (Change::Keep, UpstreamUpdate::Superseded(grant.upstream))
                }
                Some(mut grant) => {
                    grant.upstream = msg.upstream.clone();
                    if refresh_hash.is_some() {
                        grant.passthrough_refresh_hash = refresh_hash.clone();
                    }
                    match t.keep(grant, now) {
                        Change::Delete => (Change::Delete, UpstreamUpdate::Gone),
                        kept => (kept, UpstreamUpdate::Written),
                    }
                }
                None => (Change::Keep, UpstreamUpdate::Gone),
            })
            .await?;
        if let (Some(grant), Some((access_hash, refresh_hash))) = (written, &msg.passthrough_hashes) {
            let ends_at = grant.ends_at(t.lifetime.max_lifetime);
            t.index_passthrough(&msg.grant_id, ends_at, access_hash, refresh_hash.as_deref(), now)
                .await?;
        }
        Ok(outcome)
    }

    /// Pass-through mode: records the upstream token hashes handed to a client.
    IssuePassThrough {
        pub grant_id: String,
        pub access_hash: String,
        pub refresh_hash: Option<String>,
    } -> Result<Option<Grant>, StoreError> {
        let now = now_secs();
        let grant = t
            .grants
            .update(&msg.grant_id, |grant| match grant {
                Some(mut grant) => {
                    grant.passthrough_refresh_hash = msg.refresh_hash.clone();
                    match t.lifetime.ttl(&grant, now) {
                        Some(ttl) => (Change::Put(grant.clone(), ttl), Some(grant)),
                        None => (Change::Delete, None),
                    }
                }
                None => (Change::Keep, None),
            })
            .await?;
        if let Some(grant) = &grant {
            let ends_at = grant.ends_at(t.lifetime.max_lifetime);
            t.index_passthrough(&msg.grant_id, ends_at, &msg.access_hash, msg.refresh_hash.as_deref(), now)
                .await?;
        }
        Ok(grant)
    }

    /// Pass-through mode: finds the grant of an upstream token the client holds.
    LookupPassThrough {
        pub token_hash: String,
    } -> Result<Option<(String, Grant)>, StoreError> {
        t.grant_of(&passthrough_key(&msg.token_hash)).await
    }

    /// Revokes a grant and with it every token issued from it; answers the
    /// grant that was revoked (to revoke its upstream tokens too).
    RevokeGrant(pub String) -> Result<Option<Grant>, StoreError> {
        t.grants.take(&msg.0).await
    }

    /// A page of live grants (the admin API): those filed under `index`
    /// (see [`GrantIndexes`]), or every grant when it is `None`, that
    /// match the filters, from `cursor` on, up to `limit`; with the cursor
    /// of the next page. Index entries of grants that are gone are removed
    /// on the way.
    ListGrants {
        pub index: Option<String>,
        pub subject: Option<String>,
        pub client_id: Option<String>,
        pub cursor: Option<String>,
        pub limit: usize,
    } -> Result<(Vec<(String, Grant)>, Option<String>), StoreError> {
        let matches = |grant: &Grant| {
            msg.subject.as_deref().is_none_or(|s| s == grant.subject)
                && msg.client_id.as_deref().is_none_or(|c| c == grant.client_id)
        };
        let (mut found, mut cursor) = (Vec::new(), msg.cursor);
        while found.len() < msg.limit {
            let want = msg.limit - found.len();
            let page = match &msg.index {
                Some(index) => t.grants.index_scan(index, cursor.as_deref(), want).await?,
                None => t.grants.scan(cursor.as_deref(), want).await?,
            };
            for grant_id in page.keys {
                match t.grants.get(&grant_id).await? {
                    Some(grant) if matches(&grant) => found.push((grant_id, grant)),
                    Some(_) => {}
                    None => {
                        if let Some(index) = &msg.index {
                            t.grants.index_remove(index, &grant_id).await?;
                        }
                    }
                }
            }
            cursor = page.next;
            if cursor.is_none() {
                break;
            }
        }
        Ok((found, cursor))
    }
}

super::lifecycle_handlers!(TokenVault, tables.grants);

#[cfg(test)]
mod tests {
    use super::GrantIndexes;

    #[test]
    fn index_names_hold_no_subject_in_clear_and_depend_on_the_key() {
        let indexes = GrantIndexes::new(b"consent-signing-key-consent-signing-key");
        let name = indexes.by_subject("alice@example.com");
        assert!(name.starts_with("sub/") && !name.contains("alice"), "{name}");
        assert_eq!(
            name,
            indexes.by_subject("alice@example.com"),
            "the same name every time"
        );
        assert_ne!(name, indexes.by_subject("bob@example.com"));
        // A client and a subject of the same value are different indexes.
        assert_ne!(indexes.by_client("x")[7..], indexes.by_subject("x")[4..]);
        let other_key = GrantIndexes::new(b"another-key-another-key-another-key-0");
        assert_ne!(name, other_key.by_subject("alice@example.com"));
        // A long client id (a metadata document URL) makes a short name.
        let long = format!("https://example.com/{}", "c".repeat(2000));
        assert_eq!(indexes.by_client(&long).len(), "client/".len() + 22);
    }
}
