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
//!   The decision is a compare-and-swap on the stored grant, so concurrent
//!   refreshes of one token never fork the family, even across instances.
//! - In pass-through mode the client holds the upstream tokens; the vault keeps
//!   their hashes so a refresh is only accepted from the client it was issued to.

use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use super::{purge_interval, sweep_every, Answer};
use crate::oauth::now_secs;
use crate::oauth::scope::Scopes;
use crate::store::{Change, SealedTable, StoreError};

/// Clients that race two refreshes get the same answer within this window.
pub const REFRESH_GRACE: Duration = Duration::from_secs(5);

/// Tokens received from the upstream token endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UpstreamTokens {
    pub access_token: String,
    pub token_type: String,
    pub refresh_token: Option<String>,
    pub id_token: Option<String>,
    /// Unix time the upstream access token expires, when the upstream said.
    pub expires_at: Option<u64>,
    pub scope: Option<String>,
}

/// The proxy token pair currently issued for a grant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IssuedPair {
    pub access_jti: String,
    pub refresh_jti: String,
    pub issued_at: u64,
    /// Scope of the access token (a refresh may narrow it).
    pub scope: String,
}

/// A rotated-out refresh token and what replaced it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rotation {
    pub old_refresh_jti: String,
    pub rotated_at: u64,
    pub successor: IssuedPair,
}

/// One completed authorization.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Grant {
    pub client_id: String,
    pub subject: String,
    pub scopes: Scopes,
    pub resource: String,
    /// Custom claims copied into proxy JWTs, as a JSON object (records are
    /// stored in a binary format that cannot hold free-form JSON values).
    pub claims: String,
    pub upstream: UpstreamTokens,
    /// Swap mode: the pair currently valid for refresh.
    pub current: Option<IssuedPair>,
    pub previous: Option<Rotation>,
    /// Pass-through mode: hash of the upstream refresh token the client holds.
    pub passthrough_refresh_hash: Option<String>,
    /// Access tokens revoked one by one (RFC 7009), with their expiry.
    #[serde(default)]
    pub revoked_access: Vec<(String, u64)>,
}

impl Grant {
    fn access_revoked(&self, jti: &str) -> bool {
        self.revoked_access.iter().any(|(revoked, _)| revoked == jti)
    }
}

/// Token ids are `<grant id>.<random>`: the grant is found without an index.
pub fn grant_id_of(jti: &str) -> Option<&str> {
    jti.split_once('.')
        .map(|(grant_id, _)| grant_id)
        .filter(|g| !g.is_empty())
}

#[derive(Clone)]
pub struct TokenVault {
    tables: VaultTables,
    /// Only the primary instance sweeps; replicas on worker threads do not.
    sweeping: bool,
}

/// The vault's tables, cloned into each message's future.
#[derive(Clone)]
struct VaultTables {
    grants: SealedTable<Grant>,
    /// Pass-through token hash -> grant id.
    index: SealedTable<String>,
    refresh_ttl: Duration,
    access_ttl: Duration,
}

impl TokenVault {
    pub fn new(
        grants: SealedTable<Grant>,
        index: SealedTable<String>,
        access_ttl: Duration,
        refresh_ttl: Duration,
    ) -> Self {
        TokenVault {
            tables: VaultTables {
                grants,
                index,
                refresh_ttl,
                access_ttl,
            },
            sweeping: true,
        }
    }

    /// The grant table's generation (see [`crate::store::Table::generation`]).
    pub fn grant_generation(&self) -> Option<u64> {
        self.tables.grants.generation()
    }

    /// A copy for another thread, sharing the tables.
    pub fn replica(&self) -> Self {
        TokenVault {
            sweeping: false,
            ..self.clone()
        }
    }

    /// Runs `work` on a clone of the tables, as the message's answer.
    fn run<T: 'static, F>(&self, work: impl FnOnce(VaultTables) -> F) -> Answer<Result<T, StoreError>>
    where
        F: std::future::Future<Output = Result<T, StoreError>> + 'static,
    {
        Answer::of(work(self.tables.clone()))
    }
}

impl VaultTables {
    async fn grant_of(&self, index_key: &str) -> Result<Option<(String, Grant)>, StoreError> {
        let Some(grant_id) = self.index.get(index_key).await? else {
            return Ok(None);
        };
        Ok(self.grants.get(&grant_id).await?.map(|grant| (grant_id, grant)))
    }

    async fn index_passthrough(
        &self,
        grant_id: &str,
        access_hash: &str,
        refresh_hash: Option<&str>,
    ) -> Result<(), StoreError> {
        let grant_id = grant_id.to_string();
        self.index
            .put(&passthrough_key(access_hash), &grant_id, self.access_ttl)
            .await?;
        if let Some(refresh_hash) = refresh_hash {
            self.index
                .put(&passthrough_key(refresh_hash), &grant_id, self.refresh_ttl)
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
        let interval = purge_interval(self.tables.access_ttl.min(self.tables.refresh_ttl));
        sweep_every(ctx, interval, "grant", self.tables.grants.clone());
        sweep_every(ctx, interval, "token index", self.tables.index.clone());
    }
}

/// Stores a new grant; it lives for `ttl` until tokens are issued from it.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct CreateGrant {
    pub grant_id: String,
    pub grant: Grant,
    pub ttl: Duration,
}

impl Handler<CreateGrant> for TokenVault {
    type Result = Answer<Result<(), StoreError>>;

    fn handle(&mut self, msg: CreateGrant, _: &mut Self::Context) -> Self::Result {
        self.run(|t| async move { t.grants.put(&msg.grant_id, &msg.grant, msg.ttl).await })
    }
}

/// Keeps a grant for as long as its refresh token lives, once its code is
/// redeemed (swap mode: the callback wrote the grant with the code's
/// lifetime and its first token pair). `false`: the grant is gone (expired
/// or revoked since).
#[derive(Message)]
#[rtype(result = "Result<bool, StoreError>")]
pub struct KeepGrant(pub String);

impl Handler<KeepGrant> for TokenVault {
    type Result = Answer<Result<bool, StoreError>>;

    fn handle(&mut self, msg: KeepGrant, _: &mut Self::Context) -> Self::Result {
        self.run(|t| async move { t.grants.touch(&msg.0, t.refresh_ttl).await })
    }
}

/// Looks up a grant by grant id (for the duplicate-code answer).
#[derive(Message)]
#[rtype(result = "Result<Option<Grant>, StoreError>")]
pub struct GetGrant(pub String);

impl Handler<GetGrant> for TokenVault {
    type Result = Answer<Result<Option<Grant>, StoreError>>;

    fn handle(&mut self, msg: GetGrant, _: &mut Self::Context) -> Self::Result {
        self.run(|t| async move { t.grants.get(&msg.0).await })
    }
}

/// Finds the grant (and its id) of a proxy access token.
#[derive(Message)]
#[rtype(result = "Result<Option<(String, Grant)>, StoreError>")]
pub struct LookupAccessToken {
    pub jti: String,
}

impl Handler<LookupAccessToken> for TokenVault {
    type Result = Answer<Result<Option<(String, Grant)>, StoreError>>;

    fn handle(&mut self, msg: LookupAccessToken, _: &mut Self::Context) -> Self::Result {
        self.run(|t| async move {
            let Some(grant_id) = grant_id_of(&msg.jti) else {
                return Ok(None);
            };
            let grant = t.grants.get(grant_id).await?;
            Ok(grant
                .filter(|grant| !grant.access_revoked(&msg.jti))
                .map(|grant| (grant_id.to_string(), grant)))
        })
    }
}

/// Finds the grant of a proxy refresh token that is still current (or in
/// its grace window).
#[derive(Message)]
#[rtype(result = "Result<Option<(String, Grant)>, StoreError>")]
pub struct LookupRefreshToken {
    pub jti: String,
}

impl Handler<LookupRefreshToken> for TokenVault {
    type Result = Answer<Result<Option<(String, Grant)>, StoreError>>;

    fn handle(&mut self, msg: LookupRefreshToken, _: &mut Self::Context) -> Self::Result {
        self.run(|t| async move {
            let Some(grant_id) = grant_id_of(&msg.jti).map(String::from) else {
                return Ok(None);
            };
            let Some(grant) = t.grants.get(&grant_id).await? else {
                return Ok(None);
            };
            let current = grant.current.as_ref().is_some_and(|c| c.refresh_jti == msg.jti);
            let in_grace = grant.previous.as_ref().is_some_and(|r| {
                r.old_refresh_jti == msg.jti && now_secs().saturating_sub(r.rotated_at) <= REFRESH_GRACE.as_secs()
            });
            Ok((current || in_grace).then_some((grant_id, grant)))
        })
    }
}

/// Revokes one proxy access token: it fails at once everywhere.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct RevokeAccessToken {
    pub jti: String,
    /// The token's own expiry: after it, the revocation need not be kept.
    pub exp: u64,
}

impl Handler<RevokeAccessToken> for TokenVault {
    type Result = Answer<Result<(), StoreError>>;

    fn handle(&mut self, msg: RevokeAccessToken, _: &mut Self::Context) -> Self::Result {
        self.run(|t| async move {
            let Some(grant_id) = grant_id_of(&msg.jti) else {
                return Ok(());
            };
            t.grants
                .update(grant_id, |grant| match grant {
                    Some(mut grant) if !grant.access_revoked(&msg.jti) => {
                        let now = now_secs();
                        grant.revoked_access.retain(|(_, exp)| *exp > now);
                        grant.revoked_access.push((msg.jti.clone(), msg.exp));
                        (Change::Put(grant, t.refresh_ttl), ())
                    }
                    _ => (Change::Keep, ()),
                })
                .await
        })
    }
}

/// Claims a refresh token for rotation (swap mode).
#[derive(Message)]
#[rtype(result = "Result<RefreshClaim, StoreError>")]
pub struct ClaimRefresh {
    pub refresh_jti: String,
    pub client_id: String,
    /// The pair to issue if the token is current.
    pub successor: IssuedPair,
}

#[derive(Debug)]
pub enum RefreshClaim {
    /// The token was current: it is rotated out and `successor` now current;
    /// `before` restores the grant if the rotation must be undone.
    Rotated {
        grant_id: String,
        grant: Grant,
        before: Box<Grant>,
    },
    /// A rotated-out token within the grace window: answer with this pair.
    GraceReplay {
        grant: Grant,
        pair: IssuedPair,
    },
    /// Reuse of an old token: the whole family was revoked.
    ReuseDetected,
    /// Issued to another client.
    WrongClient,
    Unknown,
}

/// RFC 9700 §4.14.2 rotation with reuse detection, decided on the grant as
/// stored; the store applies the change only if nobody changed it meanwhile.
fn claim(grant: Option<Grant>, msg: &ClaimRefresh, ttl: Duration) -> (Change<Grant>, Claimed) {
    let Some(mut grant) = grant else {
        return (Change::Keep, Claimed::Answer(RefreshClaim::Unknown));
    };
    if grant.client_id != msg.client_id {
        return (Change::Keep, Claimed::Answer(RefreshClaim::WrongClient));
    }
    if grant.current.as_ref().is_some_and(|c| c.refresh_jti == msg.refresh_jti) {
        let before = Box::new(grant.clone());
        grant.previous = Some(Rotation {
            old_refresh_jti: msg.refresh_jti.clone(),
            rotated_at: now_secs(),
            successor: msg.successor.clone(),
        });
        grant.current = Some(msg.successor.clone());
        return (Change::Put(grant, ttl), Claimed::Rotated { before });
    }
    if let Some(rotation) = &grant.previous {
        let within_grace = now_secs().saturating_sub(rotation.rotated_at) <= REFRESH_GRACE.as_secs();
        let successor_unused = grant.current.as_ref() == Some(&rotation.successor);
        if rotation.old_refresh_jti == msg.refresh_jti && within_grace && successor_unused {
            let pair = rotation.successor.clone();
            return (Change::Keep, Claimed::Answer(RefreshClaim::GraceReplay { grant, pair }));
        }
    }
    (Change::Delete, Claimed::Answer(RefreshClaim::ReuseDetected))
}

/// What [`claim`] decided: a rotation (the rotated grant is the record
/// written, handed back by the store), or the answer itself. Lives for one
/// call on the stack, so its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Claimed {
    Rotated { before: Box<Grant> },
    Answer(RefreshClaim),
}

impl Handler<ClaimRefresh> for TokenVault {
    type Result = Answer<Result<RefreshClaim, StoreError>>;

    fn handle(&mut self, msg: ClaimRefresh, _: &mut Self::Context) -> Self::Result {
        self.run(|t| async move {
            let Some(grant_id) = grant_id_of(&msg.refresh_jti).map(String::from) else {
                return Ok(RefreshClaim::Unknown);
            };
            let (outcome, written) = t
                .grants
                .update_returning(&grant_id, false, |grant| claim(grant, &msg, t.refresh_ttl))
                .await?;
            match outcome {
                Claimed::Rotated { before } => Ok(RefreshClaim::Rotated {
                    grant_id,
                    grant: written.ok_or_else(|| StoreError::Encoding("a rotation wrote no grant".into()))?,
                    before,
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
        })
    }
}

/// Undoes a rotation whose upstream refresh failed for a passing reason, so
/// the client can retry with the token it holds.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct UndoRotation {
    pub grant_id: String,
    pub restored: Grant,
    /// The pair the rotation made current; undone only if still current.
    pub successor: IssuedPair,
}

impl Handler<UndoRotation> for TokenVault {
    type Result = Answer<Result<(), StoreError>>;

    fn handle(&mut self, msg: UndoRotation, _: &mut Self::Context) -> Self::Result {
        self.run(|t| async move {
            t.grants
                .update(&msg.grant_id, |grant| match grant {
                    Some(grant) if grant.current.as_ref() == Some(&msg.successor) => {
                        (Change::Put(msg.restored.clone(), t.refresh_ttl), ())
                    }
                    _ => (Change::Keep, ()),
                })
                .await
        })
    }
}

/// Replaces the upstream tokens of a grant after an upstream refresh.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct UpdateUpstreamTokens {
    pub grant_id: String,
    pub upstream: UpstreamTokens,
    /// Pass-through: the hashes of the token pair the client now holds.
    pub passthrough_hashes: Option<(String, Option<String>)>,
}

impl Handler<UpdateUpstreamTokens> for TokenVault {
    type Result = Answer<Result<(), StoreError>>;

    fn handle(&mut self, msg: UpdateUpstreamTokens, _: &mut Self::Context) -> Self::Result {
        self.run(|t| async move {
            let refresh_hash = msg.passthrough_hashes.as_ref().and_then(|(_, r)| r.clone());
            let updated = t
                .grants
                .update(&msg.grant_id, |grant| match grant {
                    Some(mut grant) => {
                        grant.upstream = msg.upstream.clone();
                        if refresh_hash.is_some() {
                            grant.passthrough_refresh_hash = refresh_hash.clone();
                        }
                        (Change::Put(grant, t.refresh_ttl), true)
                    }
                    None => (Change::Keep, false),
                })
                .await?;
            if let (true, Some((access_hash, refresh_hash))) = (updated, &msg.passthrough_hashes) {
                t.index_passthrough(&msg.grant_id, access_hash, refresh_hash.as_deref())
                    .await?;
            }
            Ok(())
        })
    }
}

/// Pass-through mode: records the upstream token hashes handed to a client.
#[derive(Message)]
#[rtype(result = "Result<Option<Grant>, StoreError>")]
pub struct IssuePassThrough {
    pub grant_id: String,
    pub access_hash: String,
    pub refresh_hash: Option<String>,
}

impl Handler<IssuePassThrough> for TokenVault {
    type Result = Answer<Result<Option<Grant>, StoreError>>;

    fn handle(&mut self, msg: IssuePassThrough, _: &mut Self::Context) -> Self::Result {
        self.run(|t| async move {
            let grant = t
                .grants
                .update(&msg.grant_id, |grant| match grant {
                    Some(mut grant) => {
                        grant.passthrough_refresh_hash = msg.refresh_hash.clone();
                        (Change::Put(grant.clone(), t.refresh_ttl), Some(grant))
                    }
                    None => (Change::Keep, None),
                })
                .await?;
            if grant.is_some() {
                t.index_passthrough(&msg.grant_id, &msg.access_hash, msg.refresh_hash.as_deref())
                    .await?;
            }
            Ok(grant)
        })
    }
}

/// Pass-through mode: finds the grant of an upstream token the client holds.
#[derive(Message)]
#[rtype(result = "Result<Option<(String, Grant)>, StoreError>")]
pub struct LookupPassThrough {
    pub token_hash: String,
}

impl Handler<LookupPassThrough> for TokenVault {
    type Result = Answer<Result<Option<(String, Grant)>, StoreError>>;

    fn handle(&mut self, msg: LookupPassThrough, _: &mut Self::Context) -> Self::Result {
        self.run(|t| async move { t.grant_of(&passthrough_key(&msg.token_hash)).await })
    }
}

/// Revokes a grant and with it every token issued from it; answers the
/// grant that was revoked (to revoke its upstream tokens too).
#[derive(Message)]
#[rtype(result = "Result<Option<Grant>, StoreError>")]
pub struct RevokeGrant(pub String);

impl Handler<RevokeGrant> for TokenVault {
    type Result = Answer<Result<Option<Grant>, StoreError>>;

    fn handle(&mut self, msg: RevokeGrant, _: &mut Self::Context) -> Self::Result {
        self.run(|t| async move { t.grants.take(&msg.0).await })
    }
}

impl Handler<super::CountRecords> for TokenVault {
    type Result = Answer<Result<usize, StoreError>>;

    fn handle(&mut self, _: super::CountRecords, _: &mut Self::Context) -> Self::Result {
        self.run(|t| async move { t.grants.count().await })
    }
}

impl Handler<super::Shutdown> for TokenVault {
    type Result = ();

    fn handle(&mut self, _: super::Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
