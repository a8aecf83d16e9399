//! The resource-server side of the proxy: checking bearer tokens for the MCP
//! endpoint, the upstream token to forward, RFC 7009 revocation and RFC 7662
//! introspection.

use std::rc::Rc;

use serde_json::{json, Value};

use super::upstream_refresh::{RefreshFailed, RefreshUpstream, GATEWAY_LATE_WINDOW};
use super::{memo, OAuthProxy};
use crate::actors::token_vault::{
    LookupAccessToken, LookupPassThrough, LookupRefreshToken, RevokeAccessToken, RevokeGrant,
};
use crate::audit::{Event, EventKind, Outcome, RequestContext, RevokedBy};
use crate::crypto::{constant_time_eq, sha256_b64url};
use crate::error::Error;
use crate::oauth::client::RegisteredClient;
use crate::oauth::jwt::{Claims, TokenUse};
use crate::oauth::now_secs;
use crate::oauth::scope::Scopes;
use crate::records::{Grant, UpstreamTokens};

/// Refresh an upstream token this long before it expires.
const UPSTREAM_EXPIRY_MARGIN_SECS: u64 = 10;

/// A bearer token that passed every check, with what it grants.
#[derive(Debug, Clone)]
pub struct AccessGrant {
    /// The grant id and grant, shared with the memo that remembered them
    /// (not copied for every guarded request).
    found: Rc<(String, Grant)>,
    /// Swap mode: the proxy JWT's claims.
    pub claims: Option<std::sync::Arc<Claims>>,
}

impl AccessGrant {
    pub fn grant_id(&self) -> &str {
        &self.found.0
    }

    pub fn grant(&self) -> &Grant {
        &self.found.1
    }

    /// The token's own scope (a refresh may have narrowed it).
    pub fn scopes(&self) -> Scopes {
        match &self.claims {
            Some(claims) => Scopes::parse(&claims.scope),
            None => self.grant().scopes.clone(),
        }
    }
}

/// Why a bearer token was not accepted at the MCP endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BearerRefused {
    /// Invalid, unknown, expired or revoked: the client must authorize
    /// again (401 `invalid_token`). The text is for `WWW-Authenticate`.
    Invalid(String),
    /// The store could not be asked, so nothing is known about the token:
    /// the client should try again, keeping its token (503). The text is
    /// for the log only.
    Unavailable(String),
}

/// Who calls `/introspect`.
#[derive(Debug, Clone)]
pub enum IntrospectionCaller {
    /// The resource server holding `OAUTH_PROXY_INTROSPECTION_SECRET`: any token.
    ResourceServer,
    /// A registered confidential client: only its own tokens.
    Client(String),
}

/// Why a grant whose user `OAUTH_PROXY_ALLOWED_USERS` no longer allows is
/// refused (the policy changed since the sign-in).
pub(super) const NO_LONGER_ALLOWED: &str = "the server's sign-in policy no longer allows this grant; sign in again";

impl OAuthProxy {
    /// Whether `OAUTH_PROXY_ALLOWED_USERS`, as configured now, allows the
    /// user the grant was made for (by the claims kept at sign-in).
    pub(super) fn still_allowed(&self, grant: &Grant) -> bool {
        self.inner
            .config
            .allowed_users
            .still_allows(grant.sign_in_claims.as_deref())
    }

    /// Checks a bearer token for the MCP endpoint: signature, type, audience,
    /// expiry and revocation (swap mode), or that the proxy handed it out and
    /// it is current (pass-through). A store that cannot be asked is told
    /// apart from a token that is bad.
    pub async fn check_bearer(&self, token: &str) -> Result<AccessGrant, BearerRefused> {
        if !self.inner.config.token_swap {
            let (grant_id, grant) = self.passthrough_grant(token).await?;
            if !constant_time_eq(grant.upstream.access_token.as_bytes(), token.as_bytes()) {
                return Err(BearerRefused::Invalid("the token is not current".into()));
            }
            if grant.upstream.expires_at.is_some_and(|at| at <= now_secs()) {
                return Err(BearerRefused::Invalid("the token has expired".into()));
            }
            if grant.ends_at(self.inner.config.lifetimes.grant_max) <= now_secs() {
                return Err(BearerRefused::Invalid(
                    "the grant has reached its maximum lifetime".into(),
                ));
            }
            if !self.still_allowed(&grant) {
                return Err(BearerRefused::Invalid(NO_LONGER_ALLOWED.into()));
            }
            return Ok(AccessGrant {
                found: Rc::new((grant_id, grant)),
                claims: None,
            });
        }
        let claims = self
            .inner
            .signer
            .verify_access(token)
            .map_err(|e| BearerRefused::Invalid(e.public_description().to_string()))?;
        let generation = self.inner.prototypes.vault.grant_generation();
        // The sign-in policy is checked when the grant is read, not on each
        // request: a grant it refuses is never remembered (errors are not).
        let found = memo::remembered(&memo::ACCESS_GRANTS, &claims.jti, generation, || async {
            let found = self
                .actors()
                .vault
                .send(LookupAccessToken {
                    jti: claims.jti.clone(),
                })
                .await
                .map_err(|e| BearerRefused::Unavailable(e.to_string()))?
                .map_err(|e| BearerRefused::Unavailable(e.to_string()))?;
            match found {
                Some((_, grant)) if !self.still_allowed(&grant) => {
                    Err(BearerRefused::Invalid(NO_LONGER_ALLOWED.into()))
                }
                found => Ok(found.map(Rc::new)),
            }
        })
        .await?;
        let Some(found) = found else {
            return Err(BearerRefused::Invalid("the access token was revoked".into()));
        };
        if found.1.client_id != claims.client_id {
            return Err(BearerRefused::Invalid(
                "the access token does not match its grant".into(),
            ));
        }
        Ok(AccessGrant {
            found,
            claims: Some(claims),
        })
    }

    async fn passthrough_grant(&self, token: &str) -> Result<(String, Grant), BearerRefused> {
        self.actors()
            .vault
            .send(LookupPassThrough {
                token_hash: sha256_b64url(token.as_bytes()),
            })
            .await
            .map_err(|e| BearerRefused::Unavailable(e.to_string()))?
            .map_err(|e| BearerRefused::Unavailable(e.to_string()))?
            .ok_or_else(|| BearerRefused::Invalid("the token is unknown, expired or revoked".into()))
    }

    /// The upstream token set behind a token the proxy issued, or `None` for an
    /// invalid, expired, wrong-type or revoked token.
    pub async fn load_upstream_tokens(&self, token: &str) -> Option<UpstreamTokens> {
        self.check_bearer(token)
            .await
            .ok()
            .map(|access| access.grant().upstream.clone())
    }

    /// The upstream access token to forward for a checked bearer: in swap mode
    /// an expired one is refreshed first (one refresh shared by concurrent
    /// requests and by `/token`); in pass-through mode it is the client's own
    /// token.
    pub async fn upstream_access_token(
        &self,
        access: &AccessGrant,
        ctx: &RequestContext,
    ) -> Result<String, RefreshFailed> {
        let upstream = &access.grant().upstream;
        let expiring = upstream
            .expires_at
            .is_some_and(|at| at <= now_secs() + UPSTREAM_EXPIRY_MARGIN_SECS);
        let refresh_token = match (&upstream.refresh_token, self.inner.config.token_swap) {
            (Some(refresh_token), true) if expiring => refresh_token.clone(),
            _ => return Ok(upstream.access_token.clone()),
        };
        let request = RefreshUpstream {
            grant_id: access.grant_id().to_string(),
            refresh_token,
            passthrough: false,
            late_window: GATEWAY_LATE_WINDOW,
            context: ctx.clone(),
            client_id: access.grant().client_id.clone(),
            subject: access.grant().subject.clone(),
        };
        let refreshed = self
            .inner
            .refresh_flights
            .refresh(&self.inner.upstream, &self.actors().vault, request)
            .await?;
        Ok(refreshed.access_token)
    }

    /// RFC 7009: revokes a token issued to `client`. Unknown tokens and tokens
    /// of other clients are ignored (the answer is 200 either way, §2.2).
    pub async fn revoke_token(
        &self,
        client: &RegisteredClient,
        token: &str,
        hint: Option<&str>,
        ctx: &RequestContext,
    ) -> Result<(), Error> {
        let vault = &self.actors().vault;
        let revoked = |kind, grant_id: &str, subject: &str| {
            self.record(
                Event::new(kind, Outcome::Success, ctx)
                    .client(client.client_id.clone(), client.client_name.clone())
                    .subject(subject, None)
                    .grant(grant_id)
                    .revoked_by(RevokedBy::Client),
            )
        };
        if !self.inner.config.token_swap {
            if let Ok((grant_id, grant)) = self.passthrough_grant(token).await {
                if grant.client_id == client.client_id {
                    self.revoke_grant(&grant_id).await?;
                    revoked(EventKind::GrantRevoked, &grant_id, &grant.subject)?;
                }
            }
            return Ok(());
        }
        let signer = &self.inner.signer;
        let order = if hint == Some("refresh_token") {
            [TokenUse::Refresh, TokenUse::Access]
        } else {
            [TokenUse::Access, TokenUse::Refresh]
        };
        for token_use in order {
            let Ok(claims) = signer.verify(token, token_use) else {
                continue;
            };
            if claims.client_id != client.client_id {
                return Ok(());
            }
            match token_use {
                TokenUse::Access => {
                    vault
                        .send(RevokeAccessToken {
                            jti: claims.jti.clone(),
                            exp: claims.exp,
                        })
                        .await??;
                    let grant_id = claims.jti.split_once('.').map_or("", |(grant_id, _)| grant_id);
                    revoked(EventKind::TokenRevoked, grant_id, &claims.sub)?;
                }
                TokenUse::Refresh => {
                    // Revoking a refresh token revokes its grant: every access
                    // token and the stored upstream tokens (RFC 7009 §2.1).
                    if let Some((grant_id, grant)) = vault.send(LookupRefreshToken { jti: claims.jti }).await?? {
                        self.revoke_grant(&grant_id).await?;
                        revoked(EventKind::GrantRevoked, &grant_id, &grant.subject)?;
                    }
                }
            }
            return Ok(());
        }
        Ok(())
    }

    /// Revokes a grant, and its upstream tokens when the upstream can.
    async fn revoke_grant(&self, grant_id: &str) -> Result<(), Error> {
        let revoked = self.actors().vault.send(RevokeGrant(grant_id.to_string())).await??;
        if let Some(grant) = revoked {
            self.revoke_upstream(&grant).await;
        }
        Ok(())
    }

    /// RFC 7662 introspection. Inactive tokens answer only `{"active": false}`;
    /// the upstream token is never part of the answer.
    pub async fn introspect(&self, caller: &IntrospectionCaller, token: &str) -> Result<Value, Error> {
        let inactive = json!({ "active": false });
        let config = &self.inner.config;
        let (grant, token_use, claims) = if config.token_swap {
            let signer = &self.inner.signer;
            if let Ok(claims) = signer.verify(token, TokenUse::Access) {
                match self
                    .actors()
                    .vault
                    .send(LookupAccessToken {
                        jti: claims.jti.clone(),
                    })
                    .await??
                {
                    Some((_, grant)) => (grant, TokenUse::Access, Some(claims)),
                    None => return Ok(inactive),
                }
            } else if let Ok(claims) = signer.verify(token, TokenUse::Refresh) {
                match self
                    .actors()
                    .vault
                    .send(LookupRefreshToken {
                        jti: claims.jti.clone(),
                    })
                    .await??
                {
                    Some((_, grant)) => (grant, TokenUse::Refresh, Some(claims)),
                    None => return Ok(inactive),
                }
            } else {
                return Ok(inactive);
            }
        } else {
            let Ok((_, grant)) = self.passthrough_grant(token).await else {
                return Ok(inactive);
            };
            let hash = sha256_b64url(token.as_bytes());
            let token_use = if constant_time_eq(grant.upstream.access_token.as_bytes(), token.as_bytes()) {
                TokenUse::Access
            } else if grant.passthrough_refresh_hash.as_deref() == Some(hash.as_str()) {
                TokenUse::Refresh
            } else {
                return Ok(inactive);
            };
            (grant, token_use, None)
        };
        if let IntrospectionCaller::Client(client_id) = caller {
            if client_id != &grant.client_id {
                return Ok(inactive);
            }
        }
        if !self.still_allowed(&grant) {
            return Ok(inactive);
        }
        let (scope, iat, exp) = match &claims {
            Some(claims) => (claims.scope.clone(), Some(claims.iat), Some(claims.exp)),
            None => (grant.scopes.to_oauth_string(), None, grant.upstream.expires_at),
        };
        if exp.is_some_and(|exp| exp <= now_secs()) {
            return Ok(inactive);
        }
        let mut answer = json!({
            "active": true,
            "client_id": grant.client_id,
            "scope": scope,
            "sub": grant.subject,
            "aud": grant.resource,
            "iss": config.issuer,
            "token_type": "Bearer",
            "token_use": match token_use { TokenUse::Access => "access", TokenUse::Refresh => "refresh" },
        });
        let fields = answer.as_object_mut().expect("a JSON object literal");
        if let Some(exp) = exp {
            fields.insert("exp".into(), exp.into());
        }
        if let Some(iat) = iat {
            fields.insert("iat".into(), iat.into());
        }
        if let Some(jti) = claims.as_ref().map(|c| c.jti.clone()) {
            fields.insert("jti".into(), jti.into());
        }
        Ok(answer)
    }
}
