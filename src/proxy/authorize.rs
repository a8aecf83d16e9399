//! `GET /authorize` and `POST /consent`: validating the authorization
//! request, starting the transaction, and the user's decision.

use std::borrow::Cow;

use url::Url;

use super::{
    AuthorizeOutcome, AuthorizeRequest, BrowserContext, ConsentForm, ConsentOutcome, ConsentPrompt, DocumentConsent,
    OAuthProxy, PENDING_FULL_RETRY_AFTER,
};
use crate::actors::client_registry::{DocumentListing, SeenDocumentClient};
use crate::actors::transactions::{GetTransaction, PutTransaction, StartRefusal, StartTransaction, TakeTransaction};
use crate::audit::{Event, EventKind, Outcome, RequestContext};
use crate::config::Config;
use crate::crypto::{constant_time_eq, random_token, sha256_b64url};
use crate::error::{ClientRedirect, Error, ErrorCode, PageReason};
use crate::oauth::client::RegisteredClient;
use crate::oauth::client_document::document_url;
use crate::oauth::pkce::{CodeChallenge, PkcePair};
use crate::oauth::redirect_uri::{is_loopback, pattern_matches};
use crate::oauth::resource::resource_matches;
use crate::oauth::scope::{resource_scopes, Scopes, OFFLINE_ACCESS};
use crate::records::Transaction;

/// Where a browser-facing request goes once the redirect URI is validated.
pub(super) fn client_redirect(config: &Config, redirect_uri: Url, state: Option<String>) -> ClientRedirect {
    ClientRedirect {
        redirect_uri,
        state,
        issuer: config.issuer.clone(),
    }
}

/// [`client_redirect`] for a redirect URI kept as text in a transaction.
pub(super) fn stored_client_redirect(
    config: &Config,
    redirect_uri: &str,
    state: Option<String>,
) -> Result<ClientRedirect, Error> {
    let redirect_uri = Url::parse(redirect_uri).map_err(|e| Error::encoding("a stored redirect URI", e))?;
    Ok(client_redirect(config, redirect_uri, state))
}

/// Origin (or scheme, for private-use schemes) of a URL for a CSP source list.
fn csp_source(url: &Url) -> String {
    match url.origin() {
        url::Origin::Tuple(..) => url.origin().ascii_serialization(),
        url::Origin::Opaque(_) => format!("{}:", url.scheme()),
    }
}

/// What a browser's list of remembered approvals holds for a client and
/// the redirect URI it asked for.
///
/// A registered client: its id (each install registers its own). A
/// document client: one document id covers every install of that client,
/// so an approval is bound to the id *and* the redirect URI: approving
/// `https://claude.ai/api/mcp/auth_callback` does not approve another
/// redirect URI the same document lists. A loopback redirect URI counts
/// without its port: Claude Code and Copilot CLI listen on a new ephemeral
/// port each run (RFC 8252 §7.3), and the same app on another port is the
/// same approval. The pair is hashed so every entry is short whatever the
/// URLs' length (the list lives in the browser's session cookie, which
/// must stay under 4 KiB: `MAX_REMEMBERED_CLIENTS` entries of 47 bytes).
pub(crate) fn remembered_key(client_id: &str, redirect_uri: &Url) -> String {
    if document_url(client_id).is_none() {
        return client_id.to_string();
    }
    let mut redirect_uri = redirect_uri.clone();
    if is_loopback(&redirect_uri) {
        // Cannot fail for an http URL with a host.
        let _ = redirect_uri.set_port(None);
    }
    format!(
        "doc:{}",
        sha256_b64url(format!("{client_id} {redirect_uri}").as_bytes())
    )
}

/// What a remembered approval says: the client (see [`remembered_key`])
/// and the scopes approved, so a request for more scopes (a step-up) shows
/// the consent page again instead of being granted silently. A short hash
/// of the scope set keeps each entry within the cookie's budget.
pub(crate) fn remembered_approval(client_key: &str, scopes: &Scopes) -> String {
    let digest = sha256_b64url(scopes.to_oauth_string().as_bytes());
    format!("{client_key} {}", &digest[..12])
}

/// Whether `entry` (a remembered approval) is of the client `client_key`,
/// whatever scopes it approved.
fn approval_of(entry: &str, client_key: &str) -> bool {
    entry
        .strip_prefix(client_key)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
}

pub(super) fn expired_page() -> Error {
    Error::page(PageReason::AuthorizationExpired)
}

impl OAuthProxy {
    /// `GET /authorize`: validates the request and either asks for consent or
    /// redirects upstream. Until the redirect URI is validated, errors are HTML
    /// pages (RFC 6749 §4.1.2.1); after, they go back to the client.
    pub async fn authorize(
        &self,
        request: AuthorizeRequest<'_>,
        browser: &BrowserContext,
        ctx: &RequestContext,
    ) -> Result<AuthorizeOutcome, Error> {
        let config = &self.inner.config;
        let Some(client_id) = request.client_id.as_deref().filter(|c| !c.is_empty()) else {
            return Err(Error::page(PageReason::MissingClient));
        };
        let Some(client) = self.client(client_id).await? else {
            return Err(Error::page(PageReason::UnknownClient));
        };
        let redirect_uri = match request.redirect_uri.as_deref() {
            Some(raw) => {
                let requested = Url::parse(raw).ok().filter(|_| !raw.contains('#'));
                requested.filter(|url| {
                    // Registered URIs are kept as parsed, so one spelled the
                    // same matches without parsing them all again.
                    client.redirect_uris.iter().any(|registered| registered == url.as_str())
                        || client.redirect_uris().any(|registered| registered.matches(url))
                })
            }
            // RFC 6749 §3.1.2.3: optional when exactly one is registered.
            None if client.redirect_uris.len() == 1 => Url::parse(&client.redirect_uris[0]).ok(),
            None => None,
        };
        // The URI actually used must pass the operator's patterns too: a
        // loopback URI matches its registration on any port (RFC 8252 §7.3),
        // so a pattern pinning a port (`http://127.0.0.1:7777/*`) is only
        // kept if checked here, where the port is known.
        let redirect_uri = redirect_uri.filter(|url| {
            config
                .allowed_redirect_uri_patterns
                .as_deref()
                .is_none_or(|patterns| patterns.iter().any(|pattern| pattern_matches(pattern, url)))
        });
        let Some(redirect_uri) = redirect_uri else {
            return Err(Error::page(PageReason::UnregisteredRedirectUri));
        };
        // RFC 9700 §4.11.2: registration is open, so a registered redirect
        // URI proves nothing about its owner, and redirecting an error to it
        // with no user action would make the proxy an open redirector. Errors
        // from here on go back to the client only once this browser has
        // approved it (a remembered consent), or when the operator turned
        // consent off (allowed only with pinned redirect patterns); else the
        // browser gets the HTML page.
        let remembered_as = remembered_key(&client.client_id, &redirect_uri);
        // Whether this browser approved this client before (any scopes):
        // enough to send errors back to it, not to skip the page.
        let known = browser
            .remembered_clients
            .iter()
            .any(|c| approval_of(c, &remembered_as));
        let approved = !config.consent_required || known;
        let refuse = |code: ErrorCode, description: String| {
            if approved {
                let back = client_redirect(
                    config,
                    redirect_uri.clone(),
                    request.state.as_deref().map(str::to_string),
                );
                Error::redirect(&back, code, description)
            } else {
                Error::page(PageReason::UnapprovedClientRequest { code, description })
            }
        };

        if request.response_type.as_deref() != Some("code") {
            return Err(refuse(
                ErrorCode::UnsupportedResponseType,
                "response_type must be `code`".into(),
            ));
        }
        let code_challenge = CodeChallenge::parse(
            request.code_challenge.as_deref(),
            request.code_challenge_method.as_deref(),
        )
        .map_err(|e| refuse(ErrorCode::InvalidRequest, e.to_string()))?;
        let resource = config.resource();
        if let Some(requested) = request.resource.as_deref() {
            if !resource_matches(requested, &resource) {
                return Err(refuse(
                    ErrorCode::InvalidTarget,
                    format!("this server only issues tokens for {resource}"),
                ));
            }
        }
        let scopes = self
            .requested_scopes(request.scope.as_deref(), &client)
            .map_err(|description| refuse(ErrorCode::InvalidScope, description))?;
        // Consent is skipped only for the very scopes approved before. An
        // entry of an earlier release (the client alone) approved the client
        // with any scopes, as it did then, until the user approves again.
        let approval = remembered_approval(&remembered_as, &scopes);
        let remembered = browser
            .remembered_clients
            .iter()
            .any(|c| *c == approval || *c == remembered_as);
        let approved = !config.consent_required || remembered;

        let transaction_id = random_token(32);
        let upstream_pkce = (!config.forward_pkce).then(PkcePair::generate);
        let upstream_challenge = match &upstream_pkce {
            Some(pkce) => pkce.challenge.clone(),
            None => code_challenge.as_str().to_string(),
        };
        let transaction = Transaction {
            client_id: client.client_id.clone(),
            redirect_uri: redirect_uri.to_string(),
            state: request.state.map(Cow::into_owned),
            scopes,
            resource,
            code_challenge,
            upstream_verifier: upstream_pkce.map(|p| p.verifier),
            csrf_token: random_token(32),
            browser_hash: sha256_b64url(browser.browser_id.as_bytes()),
            approved,
        };
        // What the consent page shows, kept before the transaction goes to its actor.
        let consent = (!approved).then(|| {
            (
                transaction.csrf_token.clone(),
                transaction.scopes.iter().map(String::from).collect(),
            )
        });
        let upstream = self.upstream_url(&transaction_id, &upstream_challenge);
        let scope = transaction.scopes.to_oauth_string();
        let started = self
            .actors()
            .transactions
            .send(StartTransaction {
                id: transaction_id.clone(),
                transaction,
            })
            .await?;
        match started {
            Ok(()) => {}
            Err(StartRefusal::Full) => {
                return Ok(AuthorizeOutcome::Busy {
                    retry_after: PENDING_FULL_RETRY_AFTER,
                })
            }
            Err(StartRefusal::Store(e)) => return Err(e.into()),
        }
        if let Some(listing) = DocumentListing::of(&client) {
            // The admin listings show document clients (not registrations).
            if let Err(e) = self.actors().clients.send(SeenDocumentClient(listing)).await? {
                log::warn!("document client {} not listed: {e}", client.client_id);
            }
        }
        let client_event =
            |kind| Event::new(kind, Outcome::Success, ctx).client(client.client_id.clone(), client.client_name.clone());
        self.record(client_event(EventKind::AuthorizationStarted).scope(scope.clone()))?;
        if remembered && config.consent_required {
            // This browser approved the client before: no page is shown.
            let mut approved = client_event(EventKind::ConsentApproved).scope(scope);
            approved.remembered = Some(true);
            self.record(approved)?;
        }

        let Some((csrf_token, scopes)) = consent else {
            return Ok(AuthorizeOutcome::RedirectUpstream(upstream));
        };
        Ok(AuthorizeOutcome::Consent(Box::new(ConsentPrompt {
            transaction_id,
            csrf_token,
            client_id: client.client_id.clone(),
            client_name: client.display_name().to_string(),
            document: client.document.as_ref().map(|facts| DocumentConsent {
                host: facts.host.clone(),
                local_app: facts.loopback_only,
            }),
            form_targets: vec![
                csp_source(&self.inner.upstream.authorization_endpoint),
                csp_source(&redirect_uri),
            ],
            redirect_uri,
            scopes,
        })))
    }

    /// The scopes of a request: split on whitespace, limited to the advertised
    /// ones when the operator advertises any; absent means the client's
    /// registered scopes or the advertised default. `offline_access` is the
    /// authorization server's own (SEP-2207): always accepted, never part of
    /// the default (it is what asks for a refresh token under
    /// `OAUTH_PROXY_REFRESH_TOKENS=offline_access`), and never sent upstream
    /// (the upstream request carries the configured upstream scopes).
    fn requested_scopes(&self, raw: Option<&str>, client: &RegisteredClient) -> Result<Scopes, String> {
        let advertised = Scopes::from_list(&resource_scopes(&self.inner.config.scopes));
        let mut requested = raw.map(Scopes::parse).unwrap_or_default();
        let offline = requested.remove(OFFLINE_ACCESS);
        if requested.is_empty() {
            // Asking for `offline_access` alone asks for no resource scope:
            // the default, with a refresh token.
            requested = client
                .scope
                .as_deref()
                .map(Scopes::parse)
                .unwrap_or_else(|| advertised.clone());
            requested.remove(OFFLINE_ACCESS);
        }
        if !advertised.is_empty() && !requested.is_subset_of(&advertised) {
            let unknown: Vec<&str> = requested.not_in(&advertised).collect();
            return Err(format!("unknown scope(s): {}", unknown.join(" ")));
        }
        if offline {
            requested.insert(OFFLINE_ACCESS);
        }
        Ok(requested)
    }

    fn upstream_url(&self, transaction_id: &str, challenge: &str) -> String {
        self.inner.upstream.authorization_url(transaction_id, challenge)
    }

    /// `POST /consent`: checks the CSRF token and the browser, then approves
    /// (redirect upstream) or denies (redirect to the client with
    /// `access_denied`).
    pub async fn handle_consent(
        &self,
        form: ConsentForm,
        browser: &BrowserContext,
        ctx: &RequestContext,
    ) -> Result<ConsentOutcome, Error> {
        let transaction = self
            .actors()
            .transactions
            .send(GetTransaction(form.transaction_id.clone()))
            .await??;
        let Some(mut transaction) = transaction else {
            return Err(expired_page());
        };
        let same_browser = constant_time_eq(
            transaction.browser_hash.as_bytes(),
            sha256_b64url(browser.browser_id.as_bytes()).as_bytes(),
        );
        if !same_browser || !constant_time_eq(transaction.csrf_token.as_bytes(), form.csrf_token.as_bytes()) {
            return Err(Error::page(PageReason::ConsentNotIssuedHere));
        }
        let back = stored_client_redirect(&self.inner.config, &transaction.redirect_uri, transaction.state.clone())?;
        // The decision's event (`event` set below): made by the user on
        // the page, not by a remembered decision.
        let client_name = self.client_name(&transaction.client_id).await;
        let mut decided = Event::new(EventKind::ConsentApproved, Outcome::Success, ctx)
            .client(transaction.client_id.clone(), client_name)
            .scope(transaction.scopes.to_oauth_string());
        decided.remembered = Some(false);
        match form.decision.as_str() {
            "approve" => {
                self.record(decided)?;
                transaction.approved = true;
                let challenge = match &transaction.upstream_verifier {
                    Some(verifier) => sha256_b64url(verifier.as_bytes()),
                    None => transaction.code_challenge.as_str().to_string(),
                };
                let remember_as = stored_client_redirect(&self.inner.config, &transaction.redirect_uri, None)
                    .map(|back| remembered_key(&transaction.client_id, &back.redirect_uri))
                    .map(|key| remembered_approval(&key, &transaction.scopes))?;
                self.actors()
                    .transactions
                    .send(PutTransaction {
                        id: form.transaction_id.clone(),
                        transaction,
                    })
                    .await??;
                Ok(ConsentOutcome::Approved {
                    upstream: self.upstream_url(&form.transaction_id, &challenge),
                    remember_client: (form.remember.as_deref() == Some("true")).then_some(remember_as),
                })
            }
            "deny" => {
                decided.event = EventKind::ConsentDenied;
                self.record(decided)?;
                let _ = self
                    .actors()
                    .transactions
                    .send(TakeTransaction {
                        id: form.transaction_id,
                        // The denial answers without another write.
                        before_write: false,
                    })
                    .await?;
                Ok(ConsentOutcome::Denied {
                    client_redirect: back.with_params(&[
                        ("error", ErrorCode::AccessDenied.as_str()),
                        ("error_description", "the user denied the request"),
                    ]),
                })
            }
            _ => Err(Error::page(PageReason::UnknownDecision)),
        }
    }
}
