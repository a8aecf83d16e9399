//! The upstream callback: the upstream code exchange, the grant built from
//! the upstream tokens, and the proxy's code sent back to the client.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use url::Url;

use super::authorize::{expired_page, stored_client_redirect};
use super::{BrowserContext, CallbackParams, OAuthProxy};
use crate::actors::codes::StoreCode;
use crate::actors::token_vault::CreateGrant;
use crate::actors::transactions::TakeTransaction;
use crate::audit::{Event, EventKind, Outcome, RequestContext};
use crate::crypto::{constant_time_eq, random_token, sha256_b64url};
use crate::error::{ClientRedirect, Error, ErrorCode, PageReason};
use crate::oauth::jwt::RESERVED_CLAIMS;
use crate::oauth::now_secs;
use crate::oauth::scope::Scopes;
use crate::records::{CodeRecord, PreparedTokens};
use crate::records::{Grant, IssuedPair, UpstreamTokens};
use crate::upstream::{unverified_jwt_claims, UpstreamError};

/// Where an upstream's user id is found, in order (OIDC `sub`; GitHub's
/// userinfo has `id` and `login`).
const SUBJECT_CLAIMS: [&str; 3] = ["sub", "id", "login"];

/// The claim whose value the audit trail records beside the subject.
const EMAIL_CLAIM: &str = "email";

/// The audit reason of a sign-in `OAUTH_PROXY_ALLOWED_USERS` refused.
const USER_NOT_ALLOWED: &str = "the account is not allowed by OAUTH_PROXY_ALLOWED_USERS";

/// The most of an upstream's error text an audit event keeps.
const MAX_UPSTREAM_REASON: usize = 300;

/// An upstream failure during the callback, sent back to the client.
fn upstream_redirect_error(back: &ClientRedirect, error: UpstreamError) -> Error {
    log::warn!("upstream code exchange failed: {error}");
    let code = if error.is_grant_refused() {
        ErrorCode::AccessDenied
    } else if matches!(error, UpstreamError::Timeout(_) | UpstreamError::Unreachable(_)) {
        ErrorCode::TemporarilyUnavailable
    } else {
        ErrorCode::ServerError
    };
    Error::redirect(back, code, format!("upstream token exchange failed: {error}"))
}

impl OAuthProxy {
    /// The upstream callback: consumes the transaction, exchanges the upstream
    /// code (unless the client's PKCE is forwarded, then at `/token`), and
    /// redirects to the client with a proxy code, `state` and `iss`.
    pub async fn handle_callback(
        &self,
        params: CallbackParams,
        browser: &BrowserContext,
        ctx: &RequestContext,
    ) -> Result<Url, Error> {
        let config = &self.inner.config;
        let Some(state) = params.state.as_deref().filter(|s| !s.is_empty()) else {
            return Err(expired_page());
        };
        let transaction = self
            .actors()
            .transactions
            .send(TakeTransaction {
                id: state.to_string(),
                before_write: true,
            })
            .await??;
        let Some(transaction) = transaction else {
            return Err(expired_page());
        };
        if !constant_time_eq(
            transaction.browser_hash.as_bytes(),
            sha256_b64url(browser.browser_id.as_bytes()).as_bytes(),
        ) || !transaction.approved
        {
            return Err(Error::page(PageReason::SignInNotAccepted));
        }
        let back = stored_client_redirect(config, &transaction.redirect_uri, transaction.state.clone())?;
        let client_name = self.client_name(&transaction.client_id).await;
        let client_event =
            |kind, outcome| Event::new(kind, outcome, ctx).client(transaction.client_id.clone(), client_name.clone());
        let sign_in_failed = |reason: String| {
            let reason: String = reason.chars().take(MAX_UPSTREAM_REASON).collect();
            self.record(client_event(EventKind::UpstreamSignIn, Outcome::Failure).reason(reason))
        };
        if let Some(error) = params.error.as_deref() {
            sign_in_failed(match params.error_description.as_deref() {
                Some(description) => format!("{error}: {description}"),
                None => error.to_string(),
            })?;
            // Upstream codes that mean the same to the client pass through.
            let code = match error {
                "access_denied" => ErrorCode::AccessDenied,
                "temporarily_unavailable" => ErrorCode::TemporarilyUnavailable,
                "invalid_scope" => ErrorCode::InvalidScope,
                _ => ErrorCode::ServerError,
            };
            let description = params
                .error_description
                .as_deref()
                .map(|d| format!("upstream: {}", d.chars().take(200).collect::<String>()))
                .unwrap_or_else(|| {
                    format!(
                        "the upstream provider answered `{}`",
                        error.chars().take(64).collect::<String>()
                    )
                });
            return Err(Error::redirect(&back, code, description));
        }
        let Some(upstream_code) = params.code.filter(|c| !c.is_empty()) else {
            sign_in_failed("the upstream provider sent no code".into())?;
            return Err(Error::redirect(
                &back,
                ErrorCode::ServerError,
                "the upstream provider sent no code",
            ));
        };

        let grant_id = random_token(24);
        let (pending_upstream_code, grant, prepared) = match &transaction.upstream_verifier {
            Some(verifier) => {
                let tokens = match self.inner.upstream.exchange_code(&upstream_code, Some(verifier)).await {
                    Ok(tokens) => tokens,
                    Err(e) => {
                        sign_in_failed(format!("the upstream code exchange failed: {e}"))?;
                        return Err(upstream_redirect_error(&back, e));
                    }
                };
                let source = self.upstream_claims(&tokens).await;
                let allowed = config.allowed_users.allows(&source);
                let (mut grant, email) = self.grant_from_claims(
                    &source,
                    tokens,
                    &transaction.client_id,
                    &transaction.scopes,
                    &transaction.resource,
                );
                if !allowed {
                    // Nothing is stored for a refused user; the upstream
                    // tokens are revoked there when it can, then dropped.
                    log::warn!(
                        "sign-in refused by OAUTH_PROXY_ALLOWED_USERS: subject {:?} (client {:?})",
                        grant.subject,
                        transaction.client_id
                    );
                    self.record(
                        client_event(EventKind::UpstreamSignIn, Outcome::Refused)
                            .subject(grant.subject.clone(), None)
                            .reason(USER_NOT_ALLOWED),
                    )?;
                    self.revoke_upstream(&grant).await;
                    return Err(Error::redirect(
                        &back,
                        ErrorCode::AccessDenied,
                        "this account is not allowed to use this server",
                    ));
                }
                self.record(
                    client_event(EventKind::UpstreamSignIn, Outcome::Success)
                        .subject(grant.subject.clone(), email)
                        .grant(grant_id.clone()),
                )?;
                // Swap mode: the grant is written with the ids of the tokens
                // its code will be redeemed for, and the code carries what
                // they are signed with, so /token need not rewrite or even
                // read the grant. Nothing can use the ids before /token signs
                // tokens carrying them; those tokens carry the redemption's
                // time, and this pair's own time is never signed.
                let prepared = config.token_swap.then(|| {
                    let prepared = PreparedTokens {
                        access_nonce: random_token(16),
                        refresh_nonce: random_token(16),
                        subject: grant.subject.clone(),
                        claims: grant.claims.clone(),
                    };
                    grant.current = Some(IssuedPair {
                        access_jti: format!("{grant_id}.{}", prepared.access_nonce),
                        refresh_jti: format!("{grant_id}.{}", prepared.refresh_nonce),
                        issued_at: now_secs(),
                        scope: grant.scopes.to_oauth_string(),
                    });
                    prepared
                });
                (None, Some(grant), prepared)
            }
            // Forwarded PKCE: only the client's verifier can redeem it, at /token.
            None => (Some(upstream_code), None, None),
        };

        let code = random_token(32);
        // Forwarded PKCE: the sign-in completes at /token (the subject is
        // known from then on).
        let mut issued = client_event(EventKind::CodeIssued, Outcome::Success)
            .grant(grant_id.clone())
            .scope(transaction.scopes.to_oauth_string());
        issued.subject = grant.as_ref().map(|grant| grant.subject.clone());
        let actors = self.actors();
        let store_code = actors.codes.send(StoreCode {
            code: code.clone(),
            record: CodeRecord {
                client_id: transaction.client_id,
                redirect_uri: transaction.redirect_uri,
                code_challenge: transaction.code_challenge,
                scopes: transaction.scopes,
                resource: transaction.resource,
                grant_id: grant_id.clone(),
                pending_upstream_code,
                prepared,
                redemption: None,
                grant_created_at: grant.as_ref().map_or_else(now_secs, |grant| grant.created_at),
            },
        });
        // The grant and the code are independent writes: issued together,
        // they share one durable commit (directory store) or round trip.
        let store_grant = async {
            match grant {
                Some(grant) => {
                    actors
                        .vault
                        .send(CreateGrant {
                            grant_id: grant_id.clone(),
                            grant,
                            ttl: config.lifetimes.authorization_code,
                        })
                        .await
                }
                None => Ok(Ok(())),
            }
        };
        let (code_stored, grant_stored) = futures_util::future::join(store_code, store_grant).await;
        for stored in [code_stored, grant_stored] {
            stored?
                .map_err(|e| Error::redirect(&back, ErrorCode::TemporarilyUnavailable, Error::from(e).to_string()))?;
        }
        self.record(issued)?;
        Ok(back.with_params(&[("code", &code)]))
    }

    /// Builds a grant from an upstream token set: the subject and custom
    /// claims come from the ID token, a JWT access token, or userinfo. The
    /// user's email, when the upstream named one, comes back beside it (for
    /// the audit trail).
    pub(super) async fn grant_from_upstream(
        &self,
        upstream: UpstreamTokens,
        client_id: &str,
        scopes: &Scopes,
        resource: &str,
    ) -> (Grant, Option<String>) {
        let source = self.upstream_claims(&upstream).await;
        self.grant_from_claims(&source, upstream, client_id, scopes, resource)
    }

    /// What the proxy knows of the signed-in user, one merged view: all of
    /// userinfo (when an endpoint is configured), then the ID token's, then
    /// a JWT access token's claims, each filling only names not yet present
    /// (userinfo wins, then the ID token). Only the claims used are read
    /// from the tokens: the subject, `email`, `OAUTH_PROXY_CUSTOM_CLAIMS`,
    /// and every claim `OAUTH_PROXY_ALLOWED_USERS` names.
    async fn upstream_claims(&self, upstream: &UpstreamTokens) -> Map<String, Value> {
        let config = &self.inner.config;
        let mut source = Map::new();
        if self.inner.upstream.userinfo_endpoint.is_some() {
            match self.inner.upstream.userinfo(&upstream.access_token).await {
                Ok(info) => source.extend(info),
                Err(e) => log::warn!("upstream userinfo failed, continuing without its claims: {e}"),
            }
        }
        let wanted: Vec<&str> = SUBJECT_CLAIMS
            .iter()
            .copied()
            .chain([EMAIL_CLAIM])
            .chain(config.custom_claims.iter().map(String::as_str))
            .chain(config.allowed_users.claim_names())
            .collect();
        for token in [upstream.id_token.as_deref(), Some(upstream.access_token.as_str())]
            .into_iter()
            .flatten()
        {
            if let Some(claims) = unverified_jwt_claims(token, &wanted) {
                for (name, value) in claims {
                    source.entry(name).or_insert(value);
                }
            }
        }
        source
    }

    /// The grant for the user `source` describes (see [`Self::grant_from_upstream`]).
    fn grant_from_claims(
        &self,
        source: &Map<String, Value>,
        upstream: UpstreamTokens,
        client_id: &str,
        scopes: &Scopes,
        resource: &str,
    ) -> (Grant, Option<String>) {
        let config = &self.inner.config;
        let subject = SUBJECT_CLAIMS
            .iter()
            .find_map(|name| match source.get(*name) {
                Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            })
            // An upstream that names nobody: a stable id for this grant's tokens.
            .unwrap_or_else(|| format!("anonymous-{}", &sha256_b64url(upstream.access_token.as_bytes())[..16]));
        // The custom claims as a JSON object, written from references into
        // the source (no copies); a name configured twice appears once.
        let custom: BTreeMap<&str, &Value> = config
            .custom_claims
            .iter()
            .filter(|name| !RESERVED_CLAIMS.contains(&name.as_str()))
            .filter_map(|name| source.get(name).map(|value| (name.as_str(), value)))
            .collect();
        let claims = serde_json::to_string(&custom).unwrap_or_else(|_| "{}".to_string());
        let email = match source.get(EMAIL_CLAIM) {
            Some(Value::String(email)) if !email.is_empty() => Some(email.clone()),
            _ => None,
        };
        let grant = Grant {
            client_id: client_id.to_string(),
            subject,
            scopes: scopes.clone(),
            resource: resource.to_string(),
            claims,
            upstream,
            current: None,
            previous: None,
            passthrough_refresh_hash: None,
            revoked_access: Vec::new(),
            created_at: now_secs(),
            sign_in_claims: Some(config.allowed_users.captured(source)),
        };
        (grant, email)
    }
}
