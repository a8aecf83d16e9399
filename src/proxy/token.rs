//! The token endpoint: client authentication, the `authorization_code` and
//! `refresh_token` grants, and the token responses (the proxy's signed pair in
//! swap mode, the upstream tokens in pass-through).

use secrecy::ExposeSecret;
use std::rc::Rc;

use super::upstream_refresh::{Failure, RefreshFailed, RefreshUpstream, TOKEN_LATE_WINDOW};
use super::{ClientCredentials, CodeExchange, OAuthProxy, RefreshExchange, TokenResponse};
use crate::actors::client_registry::MarkClientUsed;
use crate::actors::codes::RedeemCode;
use crate::actors::token_vault::{
    ClaimRefresh, CreateGrant, GetGrant, IssuePassThrough, KeepGrant, LookupPassThrough, RevokeGrant, UndoRotation,
};
use crate::audit::{Event, EventKind, Outcome, RequestContext, RevokedBy};
use crate::config::RefreshTokenPolicy;
use crate::crypto::{constant_time_eq, random_token, sha256_b64url};
use crate::error::{Error, ErrorCode, PageReason};
use crate::oauth::client::{RegisteredClient, TokenEndpointAuthMethod};
use crate::oauth::jwt::{IssuedClaims, TokenUse};
use crate::oauth::now_secs;
use crate::oauth::resource::resource_matches;
use crate::oauth::scope::{Scopes, OFFLINE_ACCESS};
use crate::records::{bounded_exp, bounded_ttl, Grant, IssuedPair, RefreshClaim, UpstreamTokens};
use crate::records::{CodeOutcome, CodeRefusal};
use crate::upstream::UpstreamError;

/// What a grant's proxy tokens say about it: read from the grant, or at the
/// token endpoint from the code record and what the callback prepared.
struct TokenSubject<'a> {
    client_id: &'a str,
    subject: &'a str,
    resource: &'a str,
    /// Custom claims as a JSON object.
    claims: &'a str,
    scopes: &'a Scopes,
    /// When the grant ends (`OAUTH_PROXY_GRANT_MAX_LIFETIME` after its
    /// sign-in): no token outlives it.
    ends_at: u64,
}

impl<'a> TokenSubject<'a> {
    fn of(grant: &'a Grant, max_lifetime: std::time::Duration) -> Self {
        TokenSubject {
            client_id: &grant.client_id,
            subject: &grant.subject,
            resource: &grant.resource,
            claims: &grant.claims,
            scopes: &grant.scopes,
            ends_at: grant.ends_at(max_lifetime),
        }
    }
}

/// Whose grant an upstream refresh at `/token` is for (its audit event).
struct RefreshAbout<'a> {
    grant_id: &'a str,
    client_id: &'a str,
    subject: &'a str,
    ctx: &'a RequestContext,
}

impl OAuthProxy {
    /// Authenticates a client at the token endpoint per its registered method;
    /// Basic and post are both accepted from confidential clients (clients mix
    /// them up). Unknown clients get 401 `invalid_client` so they re-register.
    pub async fn authenticate_client(&self, credentials: &ClientCredentials) -> Result<Rc<RegisteredClient>, Error> {
        let unauthorized = |description: &str| Error::invalid_client(description, credentials.via_basic);
        let client = match self.client(&credentials.client_id).await {
            // At the token endpoint a refused document is a failed client
            // authentication, said in OAuth JSON.
            Err(Error::Page(PageReason::ClientDocument { problem, .. })) => {
                return Err(unauthorized(&format!(
                    "the client metadata document cannot be used: {problem}"
                )))
            }
            other => other?,
        };
        let Some(client) = client else {
            return Err(unauthorized("unknown client; register again"));
        };
        // RFC 7523 §2.2: a `private_key_jwt` client proves itself with a
        // signed assertion and nothing else; other clients never with one.
        let signs = client.token_endpoint_auth_method == TokenEndpointAuthMethod::PrivateKeyJwt;
        match (signs, &credentials.client_assertion) {
            (true, Some(assertion)) => {
                self.verify_client_assertion(&client, assertion).await?;
                return Ok(client);
            }
            (true, None) => {
                return Err(unauthorized(
                    "this client authenticates with a client assertion (private_key_jwt)",
                ))
            }
            (false, Some(_)) => {
                return Err(unauthorized(
                    "this client is not registered for private_key_jwt; a client assertion is not accepted",
                ))
            }
            (false, None) => {}
        }
        match (&client.client_secret_hash, &credentials.client_secret) {
            (None, _) => Ok(client),
            (Some(expected), Some(given)) => {
                let given = sha256_b64url(given.expose_secret().as_bytes());
                if constant_time_eq(expected.as_bytes(), given.as_bytes()) {
                    Ok(client)
                } else {
                    Err(unauthorized("client authentication failed"))
                }
            }
            (Some(_), None) => Err(unauthorized("client authentication is required for this client")),
        }
    }

    /// The `authorization_code` grant.
    pub async fn exchange_authorization_code(
        &self,
        client: &RegisteredClient,
        exchange: CodeExchange,
        ctx: &RequestContext,
    ) -> Result<TokenResponse, Error> {
        let config = &self.inner.config;
        let client_event =
            |kind, outcome| Event::new(kind, outcome, ctx).client(client.client_id.clone(), client.client_name.clone());
        let outcome = self
            .actors()
            .codes
            .send(RedeemCode {
                code: exchange.code,
                client_id: client.client_id.clone(),
                redirect_uri: exchange.redirect_uri,
                verifier: exchange.code_verifier,
                access_nonce: random_token(16),
                refresh_nonce: random_token(16),
                issued_at: now_secs(),
            })
            .await??;
        let (record, verifier, prepared) = match outcome {
            CodeOutcome::Redeemed(record, verifier, prepared) => (record, verifier, prepared),
            CodeOutcome::Duplicate(record, redemption) => {
                // The repeated request gets the first answer only if it
                // names the same resource the first one could.
                check_resource(exchange.resource.as_deref(), &record.resource)?;
                let grant = self.actors().vault.send(GetGrant(record.grant_id.clone())).await??;
                let grant = grant.ok_or_else(|| Error::invalid_grant("the authorization code was already used"))?;
                self.record(
                    client_event(EventKind::CodeRedeemed, Outcome::Success)
                        .subject(grant.subject.clone(), None)
                        .grant(record.grant_id.clone())
                        .scope(grant.scopes.to_oauth_string())
                        .reason("the same redemption repeated at once: answered with the same tokens"),
                )?;
                let pair = IssuedPair {
                    access_jti: redemption.access_jti,
                    refresh_jti: redemption.refresh_jti,
                    issued_at: redemption.at,
                    scope: grant.scopes.to_oauth_string(),
                };
                let answer = self.token_response(&grant, &pair)?;
                return Ok(self.apply_refresh_policy(answer, &record.scopes));
            }
            CodeOutcome::Replayed { grant_id } => {
                log::warn!(
                    "authorization code replayed by client {}; revoking its tokens",
                    client.client_id
                );
                let revoked = self.actors().vault.send(RevokeGrant(grant_id.clone())).await??;
                let subject = revoked.map(|grant| grant.subject);
                let mut replayed = client_event(EventKind::CodeReplayDetected, Outcome::Refused)
                    .grant(grant_id.clone())
                    .reason("the authorization code was already used; its grant is revoked");
                replayed.subject = subject.clone();
                self.record(replayed)?;
                let mut revoked = client_event(EventKind::GrantRevoked, Outcome::Success)
                    .grant(grant_id)
                    .revoked_by(RevokedBy::ReuseDetection)
                    .reason("authorization code replay");
                revoked.subject = subject;
                self.record(revoked)?;
                return Err(Error::invalid_grant("the authorization code was already used"));
            }
            CodeOutcome::Refused(refusal) => {
                return Err(Error::invalid_grant(match refusal {
                    CodeRefusal::Unknown => "the authorization code is invalid or expired",
                    CodeRefusal::WrongClient => "the authorization code was issued to another client",
                    CodeRefusal::WrongRedirectUri => "redirect_uri does not match the one sent to /authorize",
                    CodeRefusal::WrongVerifier => "code_verifier does not match the code_challenge",
                }))
            }
        };
        check_resource(exchange.resource.as_deref(), &record.resource)?;
        let redemption = record
            .redemption
            .clone()
            .ok_or(Error::Invariant("a redeemed code without its redemption"))?;
        let pair = IssuedPair {
            access_jti: redemption.access_jti,
            refresh_jti: redemption.refresh_jti,
            issued_at: redemption.at,
            scope: record.scopes.to_oauth_string(),
        };
        // `code.redeemed` and `token.issued`, once the subject is known.
        let issued = |subject: &str| -> Result<(), Error> {
            let event = |kind| {
                client_event(kind, Outcome::Success)
                    .subject(subject, None)
                    .grant(record.grant_id.clone())
                    .scope(pair.scope.clone())
            };
            self.record(event(EventKind::CodeRedeemed))?;
            self.record(event(EventKind::TokensIssued))
        };
        let actors = self.actors();
        // Keeping the client registered and the grant's own write are
        // independent: issued together, they share one commit.
        let keep_client = || actors.clients.send(MarkClientUsed(client.client_id.clone()));

        if let Some(upstream_code) = &record.pending_upstream_code {
            // Forwarded PKCE: the grant is made now, in swap mode with its
            // first pair and the refresh token's lifetime.
            let tokens = match self.inner.upstream.exchange_code(upstream_code, Some(&verifier)).await {
                Ok(tokens) => tokens,
                Err(e) => {
                    let reason = format!("the upstream code exchange failed: {e}");
                    self.record(
                        client_event(EventKind::UpstreamSignIn, Outcome::Failure)
                            .grant(record.grant_id.clone())
                            .reason(reason),
                    )?;
                    return Err(upstream_token_error(e));
                }
            };
            let (mut grant, email) = self
                .grant_from_upstream(tokens, &record.client_id, &record.scopes, &record.resource)
                .await;
            self.record(
                client_event(EventKind::UpstreamSignIn, Outcome::Success)
                    .subject(grant.subject.clone(), email)
                    .grant(record.grant_id.clone()),
            )?;
            // The grant's lifetime counts from the sign-in, not from now.
            grant.created_at = record.grant_created_at;
            let create = |grant, ttl| {
                actors.vault.send(CreateGrant {
                    grant_id: record.grant_id.clone(),
                    grant,
                    ttl,
                })
            };
            if config.token_swap {
                grant.current = Some(pair.clone());
                let answer = self.signed_pair(&TokenSubject::of(&grant, config.lifetimes.grant_max), &pair)?;
                let ends_at = grant.ends_at(config.lifetimes.grant_max);
                let ttl = bounded_ttl(config.lifetimes.refresh_token, ends_at, now_secs())
                    .ok_or_else(|| Error::invalid_grant("the authorization has expired"))?;
                let subject = grant.subject.clone();
                let (_, created) = futures_util::future::join(keep_client(), create(grant, ttl)).await;
                created??;
                issued(&subject)?;
                return Ok(self.apply_refresh_policy(answer, &record.scopes));
            }
            create(grant, config.lifetimes.authorization_code).await??;
        } else if config.token_swap {
            // The callback wrote the grant with this pair as its current one:
            // it now lives as long as the refresh token.
            let prepared = prepared.ok_or_else(|| {
                Error::invalid_grant("the authorization was started in another token mode; start it again")
            })?;
            let keep_grant = actors.vault.send(KeepGrant {
                grant_id: record.grant_id.clone(),
                created_at: record.grant_created_at,
            });
            let (_, kept) = futures_util::future::join(keep_client(), keep_grant).await;
            if !kept?? {
                return Err(Error::invalid_grant("the authorization has expired"));
            }
            let about = TokenSubject {
                client_id: &record.client_id,
                subject: &prepared.subject,
                resource: &record.resource,
                claims: &prepared.claims,
                scopes: &record.scopes,
                ends_at: record
                    .grant_created_at
                    .saturating_add(config.lifetimes.grant_max.as_secs()),
            };
            let answer = self.signed_pair(&about, &pair)?;
            issued(&prepared.subject)?;
            return Ok(self.apply_refresh_policy(answer, &record.scopes));
        }

        // Pass-through: the client gets the upstream tokens, recorded by hash
        // (the refresh token only when the policy hands it out, so one
        // withheld is refused at /token even if it leaks).
        let offers_refresh = self.offers_refresh_token(&record.scopes);
        let issue = async {
            let grant = match actors.vault.send(GetGrant(record.grant_id.clone())).await? {
                Ok(Some(grant)) => grant,
                other => return Ok(other),
            };
            actors
                .vault
                .send(IssuePassThrough {
                    grant_id: record.grant_id.clone(),
                    access_hash: sha256_b64url(grant.upstream.access_token.as_bytes()),
                    refresh_hash: grant
                        .upstream
                        .refresh_token
                        .as_deref()
                        .filter(|_| offers_refresh)
                        .map(|t| sha256_b64url(t.as_bytes())),
                })
                .await
        };
        let (_, grant) = futures_util::future::join(keep_client(), issue).await;
        let grant = grant??;
        let grant = grant.ok_or_else(|| Error::invalid_grant("the authorization has expired"))?;
        let answer = self.token_response(&grant, &pair)?;
        issued(&grant.subject)?;
        Ok(self.apply_refresh_policy(answer, &record.scopes))
    }

    /// Whether a code exchange for a grant of `scopes` hands out a refresh
    /// token (`OAUTH_PROXY_REFRESH_TOKENS`): always, or only when the
    /// authorization asked for `offline_access`. Refreshes of a grant that
    /// got one keep rotating it.
    fn offers_refresh_token(&self, scopes: &Scopes) -> bool {
        match self.inner.config.refresh_tokens {
            RefreshTokenPolicy::Always => true,
            RefreshTokenPolicy::OfflineAccess => scopes.contains(OFFLINE_ACCESS),
        }
    }

    /// A code exchange's answer under the refresh-token policy. In swap mode
    /// a refresh token not handed out is never usable (it exists only inside
    /// this answer); in pass-through the upstream's is withheld.
    fn apply_refresh_policy(&self, mut answer: TokenResponse, scopes: &Scopes) -> TokenResponse {
        if !self.offers_refresh_token(scopes) {
            answer.refresh_token = None;
        }
        answer
    }

    /// Swap mode: sign the proxy pair; pass-through: hand out the upstream tokens.
    fn token_response(&self, grant: &Grant, pair: &IssuedPair) -> Result<TokenResponse, Error> {
        let config = &self.inner.config;
        if config.token_swap {
            return self.signed_pair(&TokenSubject::of(grant, config.lifetimes.grant_max), pair);
        }
        let upstream = &grant.upstream;
        Ok(TokenResponse {
            access_token: upstream.access_token.clone(),
            token_type: "Bearer".into(),
            expires_in: upstream.expires_at.map(|at| at.saturating_sub(now_secs())),
            refresh_token: upstream.refresh_token.clone(),
            id_token: upstream.id_token.clone(),
            scope: grant.scopes.to_oauth_string(),
        })
    }

    /// Swap mode: the proxy's access and refresh tokens for `pair`, neither
    /// outliving the grant.
    fn signed_pair(&self, about: &TokenSubject<'_>, pair: &IssuedPair) -> Result<TokenResponse, Error> {
        let config = &self.inner.config;
        let access_exp = bounded_exp(pair.issued_at, config.lifetimes.access_token.as_secs(), about.ends_at);
        let refresh_exp = bounded_exp(pair.issued_at, config.lifetimes.refresh_token.as_secs(), about.ends_at);
        let refresh_scope = about.scopes.to_oauth_string();
        let claims = |jti, token_use, scope, exp| IssuedClaims {
            iss: config.issuer.as_str(),
            aud: about.resource,
            sub: about.subject,
            client_id: about.client_id,
            scope,
            jti,
            iat: pair.issued_at,
            exp,
            token_use,
            extra_json: about.claims,
        };
        let signer = &self.inner.signer;
        let access = signer
            .sign_issued(&claims(&pair.access_jti, TokenUse::Access, &pair.scope, access_exp))
            .map_err(Error::Signing)?;
        let refresh = signer
            .sign_issued(&claims(
                &pair.refresh_jti,
                TokenUse::Refresh,
                &refresh_scope,
                refresh_exp,
            ))
            .map_err(Error::Signing)?;
        Ok(TokenResponse {
            access_token: access,
            token_type: "Bearer".into(),
            expires_in: Some(access_exp.saturating_sub(now_secs())),
            refresh_token: Some(refresh),
            id_token: None,
            scope: pair.scope.clone(),
        })
    }

    /// A refresh of a grant whose user `OAUTH_PROXY_ALLOWED_USERS` no longer
    /// allows: the grant is revoked (its upstream tokens too, where the
    /// upstream can), `revoked` recorded, and the client told to sign in
    /// again, where the policy is checked with fresh claims.
    async fn end_no_longer_allowed(
        &self,
        grant_id: &str,
        grant: &Grant,
        revoked: Event,
    ) -> Result<TokenResponse, Error> {
        self.actors().vault.send(RevokeGrant(grant_id.to_string())).await??;
        self.record(revoked.reason("OAUTH_PROXY_ALLOWED_USERS no longer allows the user"))?;
        self.revoke_upstream(grant).await;
        Err(Error::invalid_grant(super::resource::NO_LONGER_ALLOWED))
    }

    /// The `refresh_token` grant: rotation with reuse detection in swap mode,
    /// an upstream refresh bound to the original client in pass-through mode.
    pub async fn exchange_refresh_token(
        &self,
        client: &RegisteredClient,
        exchange: RefreshExchange,
        ctx: &RequestContext,
    ) -> Result<TokenResponse, Error> {
        if !self.inner.config.token_swap {
            return self.refresh_pass_through(client, exchange, ctx).await;
        }
        let claims = self
            .inner
            .signer
            .verify(&exchange.refresh_token, TokenUse::Refresh)
            .map_err(|e| Error::invalid_grant(e.public_description()))?;
        if !constant_time_eq(claims.client_id.as_bytes(), client.client_id.as_bytes()) {
            return Err(Error::invalid_grant("the refresh token was issued to another client"));
        }
        if let Some(requested) = exchange.resource.as_deref() {
            if !resource_matches(requested, &claims.aud) {
                return Err(Error::oauth(
                    ErrorCode::InvalidTarget,
                    "resource does not match the grant",
                ));
            }
        }
        let granted = Scopes::parse(&claims.scope);
        let scope = match exchange.scope.as_deref().map(Scopes::parse).filter(|s| !s.is_empty()) {
            // RFC 6749 §6: a refresh may narrow the scope, never widen it.
            Some(requested) if !requested.is_subset_of(&granted) => {
                return Err(Error::oauth(
                    ErrorCode::InvalidScope,
                    "the requested scope exceeds the original grant",
                ))
            }
            Some(requested) => requested,
            None => granted,
        };
        let Some((grant_id, _)) = claims.jti.split_once('.') else {
            return Err(Error::invalid_grant("the refresh token is invalid, expired or revoked"));
        };
        let successor = IssuedPair {
            access_jti: format!("{grant_id}.{}", random_token(16)),
            refresh_jti: format!("{grant_id}.{}", random_token(16)),
            issued_at: now_secs(),
            scope: scope.to_oauth_string(),
        };
        let grant_event = |kind, outcome| {
            Event::new(kind, outcome, ctx)
                .client(client.client_id.clone(), client.client_name.clone())
                .subject(claims.sub.clone(), None)
                .grant(grant_id)
        };
        let refreshed = |grace_replay: bool, scope: &str| {
            let mut event = grant_event(EventKind::TokensRefreshed, Outcome::Success).scope(scope);
            event.grace_replay = Some(grace_replay);
            self.record(event)
        };
        let claim = self
            .actors()
            .vault
            .send(ClaimRefresh {
                refresh_jti: claims.jti.clone(),
                client_id: client.client_id.clone(),
                successor: successor.clone(),
            })
            .await??;
        match claim {
            RefreshClaim::Rotated { grant, .. } | RefreshClaim::GraceReplay { grant, .. }
                if !self.still_allowed(&grant) =>
            {
                self.end_no_longer_allowed(grant_id, &grant, grant_event(EventKind::GrantRevoked, Outcome::Success))
                    .await
            }
            RefreshClaim::Rotated {
                grant_id,
                mut grant,
                undo,
            } => {
                if let Some(upstream_refresh) = grant.upstream.refresh_token.clone() {
                    let about = RefreshAbout {
                        grant_id: &grant_id,
                        client_id: &client.client_id,
                        subject: &grant.subject,
                        ctx,
                    };
                    match self.refresh_upstream(about, upstream_refresh, false).await {
                        Ok(tokens) => grant.upstream = tokens,
                        Err(RefreshFailed::Refused(why)) => {
                            self.actors().vault.send(RevokeGrant(grant_id)).await??;
                            self.record(
                                grant_event(EventKind::GrantRevoked, Outcome::Success)
                                    .reason(format!("the upstream refused the refresh: {why}")),
                            )?;
                            return Err(Error::invalid_grant(format!(
                                "the upstream grant is no longer valid: {why}"
                            )));
                        }
                        Err(RefreshFailed::Unavailable(failure)) => {
                            // Only the pair goes back, on the grant as it is
                            // now (a revocation since stays).
                            self.actors()
                                .vault
                                .send(UndoRotation {
                                    grant_id,
                                    successor: grant.current.clone().unwrap_or_else(|| successor.clone()),
                                    undo,
                                })
                                .await??;
                            return Err(upstream_refresh_error(failure));
                        }
                    }
                }
                let pair = grant
                    .current
                    .clone()
                    .ok_or(Error::Invariant("rotated grant has no current pair"))?;
                let answer = self.token_response(&grant, &pair)?;
                refreshed(false, &pair.scope)?;
                Ok(answer)
            }
            RefreshClaim::GraceReplay { grant, pair } => {
                let answer = self.token_response(&grant, &pair)?;
                refreshed(true, &pair.scope)?;
                Ok(answer)
            }
            RefreshClaim::ReuseDetected => {
                self.record(
                    grant_event(EventKind::RefreshReuseDetected, Outcome::Refused)
                        .reason("a rotated-out refresh token was used again; the grant is revoked"),
                )?;
                self.record(
                    grant_event(EventKind::GrantRevoked, Outcome::Success)
                        .revoked_by(RevokedBy::ReuseDetection)
                        .reason("refresh token reuse"),
                )?;
                Err(Error::invalid_grant(
                    "refresh token reuse detected; the grant was revoked",
                ))
            }
            RefreshClaim::Ended => {
                self.record(
                    grant_event(EventKind::GrantRevoked, Outcome::Success)
                        .revoked_by(RevokedBy::MaxLifetime)
                        .reason("OAUTH_PROXY_GRANT_MAX_LIFETIME has passed"),
                )?;
                Err(Error::invalid_grant(
                    "the grant has reached its maximum lifetime; sign in again",
                ))
            }
            RefreshClaim::WrongClient => Err(Error::invalid_grant("the refresh token was issued to another client")),
            RefreshClaim::Unknown => Err(Error::invalid_grant("the refresh token is invalid, expired or revoked")),
        }
    }

    async fn refresh_pass_through(
        &self,
        client: &RegisteredClient,
        exchange: RefreshExchange,
        ctx: &RequestContext,
    ) -> Result<TokenResponse, Error> {
        let token_hash = sha256_b64url(exchange.refresh_token.as_bytes());
        let found = self
            .actors()
            .vault
            .send(LookupPassThrough {
                token_hash: token_hash.clone(),
            })
            .await??;
        let Some((grant_id, mut grant)) = found else {
            return Err(Error::invalid_grant("the refresh token is invalid, expired or revoked"));
        };
        if grant.client_id != client.client_id || grant.passthrough_refresh_hash.as_deref() != Some(token_hash.as_str())
        {
            return Err(Error::invalid_grant("the refresh token was not issued to this client"));
        }
        let grant_event = |kind, outcome| {
            Event::new(kind, outcome, ctx)
                .client(client.client_id.clone(), client.client_name.clone())
                .subject(grant.subject.clone(), None)
                .grant(grant_id.clone())
        };
        if grant.ends_at(self.inner.config.lifetimes.grant_max) <= now_secs() {
            self.actors().vault.send(RevokeGrant(grant_id.clone())).await??;
            self.record(
                grant_event(EventKind::GrantRevoked, Outcome::Success)
                    .revoked_by(RevokedBy::MaxLifetime)
                    .reason("OAUTH_PROXY_GRANT_MAX_LIFETIME has passed"),
            )?;
            return Err(Error::invalid_grant(
                "the grant has reached its maximum lifetime; sign in again",
            ));
        }
        if !self.still_allowed(&grant) {
            return self
                .end_no_longer_allowed(
                    &grant_id,
                    &grant,
                    grant_event(EventKind::GrantRevoked, Outcome::Success),
                )
                .await;
        }
        let about = RefreshAbout {
            grant_id: &grant_id,
            client_id: &client.client_id,
            subject: &grant.subject,
            ctx,
        };
        let upstream = match self.refresh_upstream(about, exchange.refresh_token, true).await {
            Ok(tokens) => tokens,
            Err(RefreshFailed::Refused(why)) => {
                self.actors().vault.send(RevokeGrant(grant_id.clone())).await??;
                self.record(
                    grant_event(EventKind::GrantRevoked, Outcome::Success)
                        .reason(format!("the upstream refused the refresh: {why}")),
                )?;
                return Err(Error::invalid_grant(format!("the upstream refused the refresh: {why}")));
            }
            Err(RefreshFailed::Unavailable(failure)) => return Err(upstream_refresh_error(failure)),
        };
        let refreshed = grant_event(EventKind::TokensRefreshed, Outcome::Success).scope(grant.scopes.to_oauth_string());
        grant.upstream = upstream;
        let pair = IssuedPair {
            access_jti: String::new(),
            refresh_jti: String::new(),
            issued_at: now_secs(),
            scope: grant.scopes.to_oauth_string(),
        };
        let answer = self.token_response(&grant, &pair)?;
        self.record(refreshed)?;
        Ok(answer)
    }

    /// Spends an upstream refresh token through the refresh flights, the one
    /// path every upstream refresh takes (shared with the gateway's), and
    /// stores the new tokens.
    async fn refresh_upstream(
        &self,
        about: RefreshAbout<'_>,
        refresh_token: String,
        passthrough: bool,
    ) -> Result<UpstreamTokens, RefreshFailed> {
        let request = RefreshUpstream {
            grant_id: about.grant_id.to_string(),
            refresh_token,
            passthrough,
            late_window: TOKEN_LATE_WINDOW,
            context: about.ctx.clone(),
            client_id: about.client_id.to_string(),
            subject: about.subject.to_string(),
        };
        self.inner
            .refresh_flights
            .refresh(&self.inner.upstream, &self.actors().vault, request)
            .await
    }
}

/// RFC 8707 §2.2: a `resource` at the code exchange must name the resource
/// the code was issued for (by [`resource_matches`]).
fn check_resource(requested: Option<&str>, granted: &str) -> Result<(), Error> {
    match requested {
        Some(requested) if !resource_matches(requested, granted) => Err(Error::oauth(
            ErrorCode::InvalidTarget,
            "resource does not match the authorization request",
        )),
        _ => Ok(()),
    }
}

/// An upstream refresh that failed for a reason signing in again would not fix.
fn upstream_refresh_error(failure: Failure) -> Error {
    log::warn!("upstream token refresh failed: {failure}");
    let code = if failure.transient {
        ErrorCode::TemporarilyUnavailable
    } else {
        ErrorCode::ServerError
    };
    Error::oauth(code, format!("upstream token endpoint failed: {failure}"))
}

/// An upstream failure during a token request.
fn upstream_token_error(error: UpstreamError) -> Error {
    log::warn!("upstream token request failed: {error}");
    if error.is_grant_refused() {
        Error::invalid_grant(format!("the upstream refused the grant: {error}"))
    } else if error.is_transient() {
        Error::oauth(
            ErrorCode::TemporarilyUnavailable,
            format!("upstream token endpoint failed: {error}"),
        )
    } else {
        // Misconfiguration or a broken upstream: the client cannot fix it.
        Error::oauth(
            ErrorCode::ServerError,
            format!("upstream token endpoint failed: {error}"),
        )
    }
}
