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
//! - A grant ends `OAUTH_PROXY_GRANT_MAX_LIFETIME` after its sign-in, however
//!   often it is refreshed: no record and no token issued from it outlives
//!   that, and a refresh after it is refused and removes the grant.
//! - Writes made after a read (undoing a rotation, storing refreshed upstream
//!   tokens) are decided again on the record as stored, so they never bring
//!   back what another writer changed meanwhile (a revocation, newer tokens).

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
    /// Unix time of the sign-in that made the grant; it ends
    /// `OAUTH_PROXY_GRANT_MAX_LIFETIME` later. Appended last: a grant of the
    /// earlier release, which has none, counts from when it is first read.
    #[serde(deserialize_with = "crate::store::appended_time")]
    pub created_at: u64,
}

impl Grant {
    fn access_revoked(&self, jti: &str) -> bool {
        self.revoked_access.iter().any(|(revoked, _)| revoked == jti)
    }

    /// Unix time the grant ends, however often it is refreshed.
    pub fn ends_at(&self, max_lifetime: Duration) -> u64 {
        self.created_at.saturating_add(max_lifetime.as_secs())
    }
}

/// `ttl` from `now`, cut short so it ends by `ends_at`; `None` when that has
/// passed (the grant is over).
pub fn bounded_ttl(ttl: Duration, ends_at: u64, now: u64) -> Option<Duration> {
    let left = ends_at.checked_sub(now).filter(|left| *left > 0)?;
    Some(ttl.min(Duration::from_secs(left)))
}

/// The expiry of a token issued at `issued_at` for `ttl_secs`, no later
/// than its grant's end.
pub fn bounded_exp(issued_at: u64, ttl_secs: u64, ends_at: u64) -> u64 {
    issued_at.saturating_add(ttl_secs).min(ends_at)
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
    /// `OAUTH_PROXY_GRANT_MAX_LIFETIME`.
    max_lifetime: Duration,
}

impl TokenVault {
    pub fn new(
        grants: SealedTable<Grant>,
        index: SealedTable<String>,
        access_ttl: Duration,
        refresh_ttl: Duration,
        max_lifetime: Duration,
    ) -> Self {
        TokenVault {
            tables: VaultTables {
                grants,
                index,
                refresh_ttl,
                access_ttl,
                max_lifetime,
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

    /// How long a grant's record lives when written now: as long as its
    /// refresh token, never past the grant's end; `None`: it has ended.
    fn grant_ttl(&self, grant: &Grant) -> Option<Duration> {
        bounded_ttl(self.refresh_ttl, grant.ends_at(self.max_lifetime), now_secs())
    }

    /// What a write that keeps the grant does: put it for [`Self::grant_ttl`],
    /// or remove it once it has ended.
    fn keep(&self, grant: Grant) -> Change<Grant> {
        match self.grant_ttl(&grant) {
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
    ) -> Result<(), StoreError> {
        let grant_id = grant_id.to_string();
        let now = now_secs();
        let (Some(access_ttl), Some(refresh_ttl)) = (
            bounded_ttl(self.access_ttl, ends_at, now),
            bounded_ttl(self.refresh_ttl, ends_at, now),
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

/// Keeps a grant for as long as its refresh token lives (never past the
/// grant's end), once its code is redeemed (swap mode: the callback wrote the
/// grant with the code's lifetime and its first token pair). `false`: the
/// grant is gone (expired or revoked since) or has ended.
#[derive(Message)]
#[rtype(result = "Result<bool, StoreError>")]
pub struct KeepGrant {
    pub grant_id: String,
    /// When the grant was made (the code record carries it, so the grant
    /// need not be read).
    pub created_at: u64,
}

impl Handler<KeepGrant> for TokenVault {
    type Result = Answer<Result<bool, StoreError>>;

    fn handle(&mut self, msg: KeepGrant, _: &mut Self::Context) -> Self::Result {
        self.run(|t| async move {
            let ends_at = msg.created_at.saturating_add(t.max_lifetime.as_secs());
            match bounded_ttl(t.refresh_ttl, ends_at, now_secs()) {
                Some(ttl) => t.grants.touch(&msg.grant_id, ttl).await,
                None => Ok(false),
            }
        })
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
                        (t.keep(grant), ())
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
    /// `undo` is what [`UndoRotation`] puts back if the rotation must be undone.
    Rotated {
        grant_id: String,
        grant: Grant,
        undo: RotationUndo,
    },
    /// A rotated-out token within the grace window: answer with this pair.
    GraceReplay {
        grant: Grant,
        pair: IssuedPair,
    },
    /// Reuse of an old token: the whole family was revoked.
    ReuseDetected,
    /// The grant reached its maximum lifetime: it was removed.
    Ended,
    /// Issued to another client.
    WrongClient,
    Unknown,
}

/// The token pair a rotation replaced: undoing it puts only these back.
#[derive(Debug, Clone)]
pub struct RotationUndo {
    current: Option<IssuedPair>,
    previous: Option<Rotation>,
}

/// RFC 9700 §4.14.2 rotation with reuse detection, decided on the grant as
/// stored; the store applies the change only if nobody changed it meanwhile.
/// A grant past its end (`ttl` `None`) is removed instead.
fn claim(
    grant: Option<Grant>,
    msg: &ClaimRefresh,
    ttl: impl Fn(&Grant) -> Option<Duration>,
) -> (Change<Grant>, Claimed) {
    let Some(mut grant) = grant else {
        return (Change::Keep, Claimed::Answer(RefreshClaim::Unknown));
    };
    if grant.client_id != msg.client_id {
        return (Change::Keep, Claimed::Answer(RefreshClaim::WrongClient));
    }
    let Some(ttl) = ttl(&grant) else {
        return (Change::Delete, Claimed::Answer(RefreshClaim::Ended));
    };
    if grant.current.as_ref().is_some_and(|c| c.refresh_jti == msg.refresh_jti) {
        let rotation = Rotation {
            old_refresh_jti: msg.refresh_jti.clone(),
            rotated_at: now_secs(),
            successor: msg.successor.clone(),
        };
        let undo = RotationUndo {
            current: grant.current.replace(msg.successor.clone()),
            previous: grant.previous.replace(rotation),
        };
        return (Change::Put(grant, ttl), Claimed::Rotated { undo });
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
    Rotated { undo: RotationUndo },
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
                .update_returning(&grant_id, false, |grant| claim(grant, &msg, |g| t.grant_ttl(g)))
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
        })
    }
}

/// Undoes a rotation whose upstream refresh failed for a passing reason, so
/// the client can retry with the token it holds. Only the token pair goes
/// back, on the grant as stored now: whatever else changed since the claim
/// (an access token revoked, upstream tokens refreshed) stays, and a grant
/// revoked since stays revoked.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct UndoRotation {
    pub grant_id: String,
    /// The pair the rotation made current; undone only if still current.
    pub successor: IssuedPair,
    pub undo: RotationUndo,
}

/// [`UndoRotation`] decided on the grant as stored.
fn undo_rotation(grant: Option<Grant>, msg: &UndoRotation) -> Option<Grant> {
    let mut grant = grant.filter(|grant| grant.current.as_ref() == Some(&msg.successor))?;
    grant.current = msg.undo.current.clone();
    grant.previous = msg.undo.previous.clone();
    Some(grant)
}

impl Handler<UndoRotation> for TokenVault {
    type Result = Answer<Result<(), StoreError>>;

    fn handle(&mut self, msg: UndoRotation, _: &mut Self::Context) -> Self::Result {
        self.run(|t| async move {
            t.grants
                .update(&msg.grant_id, |grant| match undo_rotation(grant, &msg) {
                    Some(grant) => (t.keep(grant), ()),
                    None => (Change::Keep, ()),
                })
                .await
        })
    }
}

/// Replaces the upstream tokens of a grant after an upstream refresh, if
/// the grant still holds the upstream refresh token that was spent: a
/// compare-and-swap on it, so of two instances that refreshed at once the
/// first to write wins and the other takes its tokens.
#[derive(Message)]
#[rtype(result = "Result<UpstreamUpdate, StoreError>")]
pub struct UpdateUpstreamTokens {
    pub grant_id: String,
    /// The upstream refresh token the refresh spent.
    pub spent_refresh_token: String,
    pub upstream: UpstreamTokens,
    /// Pass-through: the hashes of the token pair the client now holds.
    pub passthrough_hashes: Option<(String, Option<String>)>,
}

#[derive(Debug)]
pub enum UpstreamUpdate {
    /// The new tokens are stored.
    Written,
    /// Another refresh spent the token first; its tokens are stored.
    Superseded(UpstreamTokens),
    /// The grant is gone (revoked, expired or ended).
    Gone,
}

impl Handler<UpdateUpstreamTokens> for TokenVault {
    type Result = Answer<Result<UpstreamUpdate, StoreError>>;

    fn handle(&mut self, msg: UpdateUpstreamTokens, _: &mut Self::Context) -> Self::Result {
        self.run(|t| async move {
            let refresh_hash = msg.passthrough_hashes.as_ref().and_then(|(_, r)| r.clone());
            let (outcome, written) = t
                .grants
                .update_returning(&msg.grant_id, false, |grant| match grant {
                    Some(grant)
                        if grant.upstream.refresh_token.as_deref() != Some(msg.spent_refresh_token.as_str()) =>
                    {
                        (Change::Keep, UpstreamUpdate::Superseded(grant.upstream))
                    }
                    Some(mut grant) => {
                        grant.upstream = msg.upstream.clone();
                        if refresh_hash.is_some() {
                            grant.passthrough_refresh_hash = refresh_hash.clone();
                        }
                        match t.keep(grant) {
                            Change::Delete => (Change::Delete, UpstreamUpdate::Gone),
                            kept => (kept, UpstreamUpdate::Written),
                        }
                    }
                    None => (Change::Keep, UpstreamUpdate::Gone),
                })
                .await?;
            if let (Some(grant), Some((access_hash, refresh_hash))) = (written, &msg.passthrough_hashes) {
                let ends_at = grant.ends_at(t.max_lifetime);
                t.index_passthrough(&msg.grant_id, ends_at, access_hash, refresh_hash.as_deref())
                    .await?;
            }
            Ok(outcome)
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
                        match t.grant_ttl(&grant) {
                            Some(ttl) => (Change::Put(grant.clone(), ttl), Some(grant)),
                            None => (Change::Delete, None),
                        }
                    }
                    None => (Change::Keep, None),
                })
                .await?;
            if let Some(grant) = &grant {
                let ends_at = grant.ends_at(t.max_lifetime);
                t.index_passthrough(&msg.grant_id, ends_at, &msg.access_hash, msg.refresh_hash.as_deref())
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

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

    fn pair(tag: &str) -> IssuedPair {
        IssuedPair {
            access_jti: format!("g.access-{tag}"),
            refresh_jti: format!("g.refresh-{tag}"),
            issued_at: 1_000,
            scope: "openid".into(),
        }
    }

    fn grant(created_at: u64) -> Grant {
        Grant {
            client_id: "client".into(),
            subject: "user".into(),
            scopes: Scopes::parse("openid"),
            resource: "https://mcp.example.com/mcp".into(),
            claims: "{}".into(),
            upstream: UpstreamTokens {
                access_token: "up-at".into(),
                token_type: "Bearer".into(),
                refresh_token: Some("up-rt".into()),
                id_token: None,
                expires_at: None,
                scope: None,
            },
            current: Some(pair("0")),
            previous: None,
            passthrough_refresh_hash: None,
            revoked_access: Vec::new(),
            created_at,
        }
    }

    fn claim_of(refresh_jti: &str, successor: IssuedPair) -> ClaimRefresh {
        ClaimRefresh {
            refresh_jti: refresh_jti.into(),
            client_id: "client".into(),
            successor,
        }
    }

    #[test]
    fn lifetimes_are_cut_short_at_the_grants_end_and_none_after_it() {
        let (now, ttl) = (1_000_000, Duration::from_secs(30 * DAY));
        // Far from the end: the normal lifetime.
        assert_eq!(bounded_ttl(ttl, now + 90 * DAY, now), Some(ttl));
        // Near it: what is left.
        assert_eq!(bounded_ttl(ttl, now + 7, now), Some(Duration::from_secs(7)));
        // At or after it: nothing.
        assert_eq!(bounded_ttl(ttl, now, now), None);
        assert_eq!(bounded_ttl(ttl, now - 1, now), None);
        assert_eq!(bounded_exp(now, 3600, now + 90 * DAY), now + 3600);
        assert_eq!(bounded_exp(now, 30 * DAY, now + 10), now + 10);
        assert_eq!(bounded_exp(u64::MAX - 5, 3600, u64::MAX), u64::MAX);
    }

    #[test]
    fn a_refresh_after_the_grants_end_removes_it_and_one_before_rotates() {
        let max = Duration::from_secs(90 * DAY);
        let ttl = |g: &Grant| bounded_ttl(Duration::from_secs(30 * DAY), g.ends_at(max), now_secs());
        let ended = grant(now_secs() - 90 * DAY);
        let (change, claimed) = claim(Some(ended), &claim_of("g.refresh-0", pair("1")), ttl);
        assert!(matches!(change, Change::Delete));
        assert!(matches!(claimed, Claimed::Answer(RefreshClaim::Ended)));

        // Two hours before the end: rotated, the record kept only that long.
        let ending = grant(now_secs() - 90 * DAY + 7200);
        let (change, claimed) = claim(Some(ending), &claim_of("g.refresh-0", pair("1")), ttl);
        let Change::Put(written, kept_for) = change else {
            panic!("a rotation writes the grant")
        };
        assert!(kept_for <= Duration::from_secs(7200) && kept_for > Duration::from_secs(7100));
        assert_eq!(written.current, Some(pair("1")));
        assert_eq!(
            written.previous.map(|r| r.old_refresh_jti).as_deref(),
            Some("g.refresh-0")
        );
        assert!(matches!(claimed, Claimed::Rotated { .. }));
    }

    #[test]
    fn undoing_a_rotation_keeps_what_changed_since_and_a_revoked_grant_stays_revoked() {
        let max = Duration::from_secs(90 * DAY);
        let ttl = |g: &Grant| bounded_ttl(Duration::from_secs(30 * DAY), g.ends_at(max), now_secs());
        let successor = pair("1");
        let (change, claimed) = claim(
            Some(grant(now_secs())),
            &claim_of("g.refresh-0", successor.clone()),
            ttl,
        );
        let (Change::Put(mut stored, _), Claimed::Rotated { undo }) = (change, claimed) else {
            panic!("a rotation")
        };
        // Meanwhile: an access token revoked and the upstream tokens refreshed.
        stored.revoked_access.push(("g.access-0".into(), now_secs() + 3600));
        stored.upstream.access_token = "up-at-2".into();
        let msg = UndoRotation {
            grant_id: "g".into(),
            successor,
            undo,
        };
        let restored = undo_rotation(Some(stored.clone()), &msg).expect("the rotation is undone");
        assert_eq!(restored.current, Some(pair("0")));
        assert!(restored.previous.is_none());
        assert!(restored.access_revoked("g.access-0"), "the revocation stays");
        assert_eq!(
            restored.upstream.access_token, "up-at-2",
            "the newer upstream tokens stay"
        );
        // A grant revoked meanwhile stays revoked; one rotated again is left alone.
        assert!(undo_rotation(None, &msg).is_none());
        stored.current = Some(pair("2"));
        assert!(undo_rotation(Some(stored), &msg).is_none());
    }
}
