//! A grant: one completed authorization, with the upstream tokens and the
//! proxy token pair currently issued from it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::oauth::scope::Scopes;

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
    /// The claims `OAUTH_PROXY_ALLOWED_USERS` named at sign-in, as the
    /// upstream stated them (a JSON object): the grant is checked against
    /// the policy in force whenever it is used or refreshed, so a user the
    /// operator takes off the list is cut off at the next restart. `None`:
    /// a grant of the earlier release (appended last, after `created_at`).
    #[serde(deserialize_with = "crate::store::appended_option")]
    pub sign_in_claims: Option<String>,
}

impl Grant {
    /// Whether the access token `jti` was revoked on its own.
    pub fn access_revoked(&self, jti: &str) -> bool {
        self.revoked_access.iter().any(|(revoked, _)| revoked == jti)
    }

    /// Unix time the grant ends, however often it is refreshed.
    pub fn ends_at(&self, max_lifetime: Duration) -> u64 {
        self.created_at.saturating_add(max_lifetime.as_secs())
    }
}

/// How long a grant's record lives: as long as its refresh token, never
/// past the grant's end (`OAUTH_PROXY_GRANT_MAX_LIFETIME` after its sign-in).
#[derive(Debug, Clone, Copy)]
pub struct GrantLifetime {
    pub refresh_ttl: Duration,
    pub max_lifetime: Duration,
}

impl GrantLifetime {
    /// The lifetime of `grant`'s record written at `now`; `None`: the grant
    /// has ended.
    pub fn ttl(&self, grant: &Grant, now: u64) -> Option<Duration> {
        bounded_ttl(self.refresh_ttl, grant.ends_at(self.max_lifetime), now)
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

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;

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
    fn a_token_id_names_its_grant_before_the_first_dot() {
        assert_eq!(grant_id_of("g.abc"), Some("g"));
        assert_eq!(grant_id_of("g.a.b"), Some("g"));
        assert_eq!(grant_id_of(".abc"), None);
        assert_eq!(grant_id_of("abc"), None);
    }
}
