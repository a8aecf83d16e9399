//! [`OAuthProxy`]: the library face of the service, with the methods of the
//! original `OAuthProxy` class. The HTTP handlers in `routes` parse requests,
//! call these methods and turn the outcomes into responses.
//!
//! This file holds the authorization-server side (registration, authorize,
//! consent, callback, token); `resource` holds the resource-server side
//! (bearer checks for the MCP endpoint, revocation, introspection).

mod memo;
mod resource;
pub mod upstream_refresh;

pub use resource::{AccessGrant, BearerRefused, IntrospectionCaller};

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;

use actix::{Actor, Addr};
use actix_web::http::StatusCode;
use serde::Serialize;
use serde_json::{Map, Value};
use url::Url;

use crate::actors::client_registry::{GetClient, MarkClientUsed, RegisterClient, RegisterError};
use crate::actors::codes::{CodeOutcome, CodeRecord, CodeRefusal, PreparedTokens, RedeemCode, StoreCode};
use crate::actors::token_vault::{
    bounded_exp, bounded_ttl, ClaimRefresh, CreateGrant, GetGrant, Grant, IssuePassThrough, IssuedPair, KeepGrant,
    LookupPassThrough, RefreshClaim, RevokeGrant, UndoRotation, UpstreamTokens,
};
use crate::actors::transactions::{
    GetTransaction, PutTransaction, StartRefusal, StartTransaction, TakeTransaction, Transaction,
};
use crate::actors::{ClientRegistry, CodeStore, Shutdown, TokenVault, TransactionStore};
use crate::config::{Config, JwtAlgorithm, Secret};
use crate::crypto::{constant_time_eq, random_token, sha256_b64url, Sealer};
use crate::error::{ClientRedirect, Error, ErrorCode};
use crate::keys::{KeyFileError, Keys};
use crate::oauth::client::{RegisteredClient, RegistrationRequest};
use crate::oauth::jwt::generate_private_pem;
use crate::oauth::jwt::{IssuedClaims, KeyError, TokenSigner, TokenUse, RESERVED_CLAIMS};
use crate::oauth::pkce::{CodeChallenge, PkcePair};
use crate::oauth::redirect_uri::pattern_matches;
use crate::oauth::scope::Scopes;
use crate::oauth::{metadata, now_secs};
use crate::store::{Backend, Counting, SealedTable, StoreError};
use crate::upstream::{unverified_jwt_claims, Upstream, UpstreamError};
use jsonwebtoken::Algorithm;
use upstream_refresh::{Failure, RefreshFailed, RefreshFlights, RefreshUpstream, TOKEN_LATE_WINDOW};

/// Parameters of `GET /authorize` (RFC 6749 §4.1.1, RFC 7636, RFC 8707),
/// borrowed from the query string unless percent-decoding changed them.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct AuthorizeRequest<'a> {
    #[serde(borrow)]
    pub response_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub client_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub redirect_uri: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub scope: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub state: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub code_challenge: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub code_challenge_method: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub resource: Option<Cow<'a, str>>,
}

/// Longest `/authorize` query string accepted, in bytes. A legitimate request
/// is a few hundred bytes; 8 KiB is the request-line limit of common front
/// ends (nginx's `large_client_header_buffers`, Apache's `LimitRequestLine`),
/// so a longer one would not pass a reverse proxy anyway.
pub const MAX_AUTHORIZE_QUERY: usize = 8 * 1024;
/// Longest `state` accepted, in bytes (after percent-decoding): clients send
/// a random value or a short encoded blob; every byte of it is stored with
/// the pending authorization and sent back to the client.
pub const MAX_STATE: usize = 1024;
/// Seconds a browser is asked to wait when the pending authorizations are at
/// their cap (`Retry-After`).
pub const PENDING_FULL_RETRY_AFTER: u64 = 60;

/// Why an `/authorize` query string was not read. None of these can go back
/// to the client: the query is not trusted, so an HTML page answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthorizeQueryError {
    #[error("the request is longer than {MAX_AUTHORIZE_QUERY} bytes")]
    TooLong,
    #[error("`state` is longer than {MAX_STATE} bytes")]
    StateTooLong,
    #[error("the request parameters could not be read (a parameter may be repeated)")]
    Unreadable,
}

impl<'a> AuthorizeRequest<'a> {
    /// Reads a query string: length caps first (before any decoding), then
    /// the parameters; a repeated parameter is refused (RFC 6749 §3.1).
    pub fn from_query(query: &'a str) -> Result<Self, AuthorizeQueryError> {
        if query.len() > MAX_AUTHORIZE_QUERY {
            return Err(AuthorizeQueryError::TooLong);
        }
        let request: AuthorizeRequest<'a> =
            serde_urlencoded::from_str(query).map_err(|_| AuthorizeQueryError::Unreadable)?;
        if request.state.as_deref().is_some_and(|state| state.len() > MAX_STATE) {
            return Err(AuthorizeQueryError::StateTooLong);
        }
        Ok(request)
    }
}

/// What the browser brings: its binding id (from its session cookie) and the
/// clients it approved before.
#[derive(Debug, Clone)]
pub struct BrowserContext {
    pub browser_id: String,
    pub remembered_clients: Vec<String>,
}

/// The data the consent page shows.
#[derive(Debug, Clone)]
pub struct ConsentPrompt {
    pub transaction_id: String,
    pub csrf_token: String,
    pub client_id: String,
    pub client_name: String,
    pub redirect_uri: Url,
    pub scopes: Vec<String>,
    /// Origins the consent form may lead to (for the CSP `form-action`).
    pub form_targets: Vec<String>,
}

#[derive(Debug)]
pub enum AuthorizeOutcome {
    /// Ask the user (consent screen).
    Consent(Box<ConsentPrompt>),
    /// Consent is off or remembered: go to the upstream.
    RedirectUpstream(String),
    /// Too many pending authorizations (`OAUTH_PROXY_MAX_PENDING_AUTHORIZATIONS`):
    /// the browser is asked to come back after `retry_after` seconds (503).
    Busy { retry_after: u64 },
}

/// The consent form (`POST /consent`).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ConsentForm {
    pub transaction_id: String,
    pub csrf_token: String,
    pub decision: String,
    pub remember: Option<String>,
}

#[derive(Debug)]
pub enum ConsentOutcome {
    Approved {
        upstream: String,
        remember_client: Option<String>,
    },
    Denied {
        client_redirect: Url,
    },
}

/// Parameters of the upstream callback.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct CallbackParams {
    pub state: Option<String>,
    pub code: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// Client credentials as presented at the token endpoint.
#[derive(Debug, Clone)]
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: Option<Secret>,
    /// Sent with HTTP Basic (the 401 then carries a Basic challenge).
    pub via_basic: bool,
}

/// RFC 6749 §5.1 token response.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// Left out when empty: RFC 6749 §3.3 makes a scope token at least one
    /// character, so `"scope": ""` reads as one empty scope granted (rmcp
    /// then refuses to refresh), not as none.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub scope: String,
}

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

/// RFC 7591 §3.2.1 client information: the registered client, with its
/// secret in clear this once (confidential clients).
#[derive(Debug)]
pub struct ClientInformation {
    pub client: Rc<RegisteredClient>,
    pub client_secret: Option<String>,
}

impl Serialize for ClientInformation {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Fields<'a> {
            client_id: &'a str,
            client_id_issued_at: u64,
            #[serde(skip_serializing_if = "Option::is_none")]
            client_secret: Option<&'a str>,
            /// The secret never expires (RFC 7591 §3.2.1: 0).
            #[serde(skip_serializing_if = "Option::is_none")]
            client_secret_expires_at: Option<u64>,
            redirect_uris: &'a [String],
            token_endpoint_auth_method: &'a crate::oauth::client::TokenEndpointAuthMethod,
            grant_types: &'a [String],
            response_types: [&'static str; 1],
            #[serde(skip_serializing_if = "Option::is_none")]
            client_name: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            client_uri: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            scope: Option<&'a str>,
        }
        let client = &self.client;
        Fields {
            client_id: &client.client_id,
            client_id_issued_at: client.issued_at,
            client_secret: self.client_secret.as_deref(),
            client_secret_expires_at: self.client_secret.as_ref().map(|_| 0),
            redirect_uris: &client.redirect_uris,
            token_endpoint_auth_method: &client.token_endpoint_auth_method,
            grant_types: &client.grant_types,
            response_types: ["code"],
            client_name: client.client_name.as_deref(),
            client_uri: client.client_uri.as_deref(),
            scope: client.scope.as_deref(),
        }
        .serialize(serializer)
    }
}

/// Token request parameters for the `authorization_code` grant.
#[derive(Debug, Clone)]
pub struct CodeExchange {
    pub code: String,
    pub redirect_uri: Option<String>,
    pub code_verifier: String,
    pub resource: Option<String>,
}

/// Token request parameters for the `refresh_token` grant.
#[derive(Debug, Clone)]
pub struct RefreshExchange {
    pub refresh_token: String,
    pub scope: Option<String>,
    pub resource: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the upstream endpoints could not be discovered: {0}")]
    Discovery(#[from] UpstreamError),
    #[error("the JWT signing key is unusable: {0}")]
    Key(#[from] KeyError),
    #[error("the storage cannot be opened (OAUTH_PROXY_STORAGE): {0}")]
    Storage(#[from] StoreError),
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
}

/// The JWT signer the configuration asks for.
fn token_signer(config: &Config, keys: &Keys) -> Result<TokenSigner, KeyError> {
    let (issuer, audience) = (config.issuer.as_str(), config.resource());
    let jwt = &config.jwt;
    let signer = match (jwt.algorithm, &keys.jwt_private_pem) {
        (JwtAlgorithm::Hs256, _) => TokenSigner::hs256(&keys.jwt_secret, issuer, &audience),
        (JwtAlgorithm::Es256, Some(pem)) => {
            TokenSigner::asymmetric(Algorithm::ES256, pem.as_bytes(), issuer, &audience)?
        }
        (JwtAlgorithm::EdDsa, Some(pem)) => {
            TokenSigner::asymmetric(Algorithm::EdDSA, pem.as_bytes(), issuer, &audience)?
        }
        (_, None) => {
            return Err(KeyError::Invalid(
                "OAUTH_PROXY_JWT_PRIVATE_KEY",
                "no key could be generated".into(),
            ));
        }
    };
    match &jwt.previous_key {
        Some(previous) => signer.with_previous_key(previous.expose().as_bytes()),
        None => Ok(signer),
    }
}

/// The addresses of the store actors one thread talks to.
#[derive(Clone)]
pub struct StoreActors {
    pub clients: Addr<ClientRegistry>,
    pub transactions: Addr<TransactionStore>,
    pub codes: Addr<CodeStore>,
    pub vault: Addr<TokenVault>,
}

/// The store actors as built, before starting: each worker thread starts
/// replicas of them (sharing the tables), so a handler's message never
/// crosses threads.
struct ActorPrototypes {
    clients: ClientRegistry,
    transactions: TransactionStore,
    codes: CodeStore,
    vault: TokenVault,
}

impl ActorPrototypes {
    fn start_replicas(&self) -> StoreActors {
        StoreActors {
            clients: self.clients.replica().start(),
            transactions: self.transactions.replica().start(),
            codes: self.codes.replica().start(),
            vault: self.vault.replica().start(),
        }
    }
}

thread_local! {
    /// This thread's replicas, by proxy instance.
    static REPLICAS: std::cell::RefCell<Vec<(usize, Rc<StoreActors>)>> = const { std::cell::RefCell::new(Vec::new()) };
}

struct Inner {
    config: Config,
    upstream: Upstream,
    signer: TokenSigner,
    cookie_keys: crate::crypto::CookieKeys,
    /// The primary actors (on the thread that started the proxy); they run
    /// the expiry timers.
    primary: StoreActors,
    primary_thread: std::thread::ThreadId,
    prototypes: ActorPrototypes,
    /// Upstream refreshes in flight, shared by every worker thread.
    refresh_flights: RefreshFlights,
    /// `/authorize` requests per client address (`None`: no limit).
    authorize_limit: Option<crate::rate_limit::KeyedLimit>,
    /// Closed by [`OAuthProxy::shutdown`].
    backend: Backend,
}

/// The OAuth proxy: cheap to clone, shared by every worker.
#[derive(Clone)]
pub struct OAuthProxy {
    inner: Arc<Inner>,
}

/// Where a browser-facing request goes once the redirect URI is validated.
fn client_redirect(config: &Config, redirect_uri: Url, state: Option<String>) -> ClientRedirect {
    ClientRedirect {
        redirect_uri,
        state,
        issuer: config.issuer.clone(),
    }
}

/// [`client_redirect`] for a redirect URI kept as text in a transaction.
fn stored_client_redirect(config: &Config, redirect_uri: &str, state: Option<String>) -> Result<ClientRedirect, Error> {
    let redirect_uri = Url::parse(redirect_uri).map_err(Error::internal)?;
    Ok(client_redirect(config, redirect_uri, state))
}

/// RFC 8707: `resource` must be the proxy's MCP resource (one trailing slash
/// ignored).
fn resource_matches(requested: &str, canonical: &str) -> bool {
    requested.trim_end_matches('/') == canonical.trim_end_matches('/') && requested.len() <= canonical.len() + 1
}

/// Origin (or scheme, for private-use schemes) of a URL for a CSP source list.
fn csp_source(url: &Url) -> String {
    match url.origin() {
        url::Origin::Tuple(..) => url.origin().ascii_serialization(),
        url::Origin::Opaque(_) => format!("{}:", url.scheme()),
    }
}

impl OAuthProxy {
    /// Starts the actors and resolves the upstream; call inside an actix System.
    pub async fn start(config: Config) -> Result<OAuthProxy, StartError> {
        // awc with rustls 0.23 needs a process-wide crypto provider.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        // This thread's outbound TLS (discovery, the refresher's upstream calls).
        crate::tls::use_on_this_thread(&config.outbound_tls);
        let upstream = Upstream::resolve(&config.upstream, config.callback_url()).await?;

        let backend = Backend::open(&config.storage, &config.outbound_tls)?;
        let keys = Keys::resolve(&config, |algorithm| {
            generate_private_pem(match algorithm {
                JwtAlgorithm::Es256 => Algorithm::ES256,
                _ => Algorithm::EdDSA,
            })
        })?;
        let signer = token_signer(&config, &keys)?;
        let sealer = match &keys.encryption {
            Some(secret) => Sealer::new(secret),
            None => {
                log::warn!("OAUTH_PROXY_ENCRYPTION_KEY=false: upstream tokens are stored unencrypted");
                Sealer::disabled()
            }
        };
        let cookie_keys = crate::crypto::CookieKeys::derive(&keys.consent);

        // Only the client and transaction counts are read while serving (the
        // registration and pending-authorization caps).
        let lifetimes = config.lifetimes;
        let prototypes = ActorPrototypes {
            clients: ClientRegistry::new(
                SealedTable::new("client", backend.table("client", Counting::Kept)?, sealer.clone()),
                backend.table("client_unused", Counting::OnRequest)?,
                config.registration,
                lifetimes.unused_client,
                lifetimes.refresh_token.max(lifetimes.unused_client),
            ),
            transactions: TransactionStore::new(
                SealedTable::new(
                    "transaction",
                    // Read by the pending-authorization cap at each /authorize.
                    backend.table("transaction", Counting::Kept)?,
                    sealer.clone(),
                ),
                lifetimes.transaction,
                lifetimes.unapproved_transaction,
                config.max_pending_authorizations,
            ),
            codes: CodeStore::new(
                SealedTable::new("code", backend.table("code", Counting::OnRequest)?, sealer.clone()),
                lifetimes.authorization_code,
            ),
            vault: TokenVault::new(
                SealedTable::new(
                    "grant",
                    backend.remembered_table("grant", Counting::OnRequest)?,
                    sealer.clone(),
                ),
                SealedTable::new("token", backend.table("token", Counting::OnRequest)?, sealer),
                lifetimes.access_token,
                lifetimes.refresh_token,
                lifetimes.grant_max,
            ),
        };
        let primary = StoreActors {
            clients: prototypes.clients.clone().start(),
            transactions: prototypes.transactions.clone().start(),
            codes: prototypes.codes.clone().start(),
            vault: prototypes.vault.clone().start(),
        };

        let authorize_limit = crate::rate_limit::KeyedLimit::per_minute(config.authorize_rate_limit);
        Ok(OAuthProxy {
            inner: Arc::new(Inner {
                config,
                upstream,
                signer,
                cookie_keys,
                primary,
                primary_thread: std::thread::current().id(),
                prototypes,
                refresh_flights: RefreshFlights::default(),
                authorize_limit,
                backend,
            }),
        })
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The `/authorize` limit per client address (see [`crate::rate_limit`]).
    pub fn authorize_limit(&self) -> Option<&crate::rate_limit::KeyedLimit> {
        self.inner.authorize_limit.as_ref()
    }

    /// The JWT signer (its JWK Set is published at `/jwks.json`).
    pub fn signer(&self) -> &TokenSigner {
        &self.inner.signer
    }

    pub fn upstream(&self) -> &Upstream {
        &self.inner.upstream
    }

    /// Keys for the browser session cookie (and the signed cookies of
    /// earlier releases), derived from `OAUTH_PROXY_CONSENT_SIGNING_KEY`.
    pub fn cookie_keys(&self) -> &crate::crypto::CookieKeys {
        &self.inner.cookie_keys
    }

    /// The store actors of the calling thread: the primary ones on the
    /// thread that started the proxy (or outside any actix runtime), else
    /// this thread's replicas, started on first use. Shared by `Rc`: handlers
    /// ask for them several times per request, and cloning four addresses
    /// each time was about 2% of a full flow's CPU.
    pub fn actors(&self) -> Rc<StoreActors> {
        let inner = &self.inner;
        let id = Arc::as_ptr(inner) as usize;
        REPLICAS.with(|replicas| {
            let mut replicas = replicas.borrow_mut();
            if let Some((_, actors)) = replicas
                .iter()
                .find(|(owner, actors)| *owner == id && actors.vault.connected())
            {
                return actors.clone();
            }
            replicas.retain(|(_, actors)| actors.vault.connected());
            let actors =
                if std::thread::current().id() == inner.primary_thread || actix::Arbiter::try_current().is_none() {
                    Rc::new(inner.primary.clone())
                } else {
                    Rc::new(inner.prototypes.start_replicas())
                };
            replicas.push((id, actors.clone()));
            actors
        })
    }

    pub fn client_registry(&self) -> &Addr<ClientRegistry> {
        &self.inner.primary.clients
    }
    pub fn transaction_store(&self) -> &Addr<TransactionStore> {
        &self.inner.primary.transactions
    }
    pub fn code_store(&self) -> &Addr<CodeStore> {
        &self.inner.primary.codes
    }
    pub fn token_vault(&self) -> &Addr<TokenVault> {
        &self.inner.primary.vault
    }

    /// RFC 8414 metadata.
    pub fn authorization_server_metadata(&self) -> Value {
        metadata::authorization_server(&self.inner.config, self.inner.signer.jwks().is_some())
    }

    /// RFC 9728 metadata.
    pub fn protected_resource_metadata(&self) -> Value {
        metadata::protected_resource(&self.inner.config)
    }

    /// RFC 7591 registration; answers the §3.2.1 client information.
    pub async fn register_client(
        &self,
        request: RegistrationRequest,
        client_ip: Option<IpAddr>,
    ) -> Result<ClientInformation, Error> {
        let config = &self.inner.config;
        let registration = request.validate(config.allowed_redirect_uri_patterns.as_deref())?;
        let (client, client_secret) = self
            .actors()
            .clients
            .send(RegisterClient {
                registration,
                client_ip,
            })
            .await?
            .map_err(|e| match e {
                RegisterError::RateLimited => Error::oauth(ErrorCode::RateLimited, e.to_string()),
                RegisterError::Full => Error::oauth(ErrorCode::TemporarilyUnavailable, e.to_string()),
                RegisterError::Store(e) => e.into(),
            })?;
        // MCP clients go to /authorize right after registering: the record
        // written is the record that would be read back (client records are
        // never rewritten), so this thread remembers it as a read would.
        let client = Rc::new(client);
        memo::CLIENTS.with(|memo| memo.remember(&client.client_id, Some(memo::UNCHANGING), &Some(client.clone())));
        Ok(ClientInformation { client, client_secret })
    }

    async fn client(&self, client_id: &str) -> Result<Option<Rc<RegisteredClient>>, Error> {
        // Client records are never rewritten, only created and expired: an
        // answer stays right for the memo's whole age, whatever else the
        // table sees and whichever instance writes it (Redis included).
        memo::remembered(&memo::CLIENTS, client_id, Some(memo::UNCHANGING), || async {
            let client = self.actors().clients.send(GetClient(client_id.to_string())).await??;
            Ok(client.map(Rc::new))
        })
        .await
    }

    /// `GET /authorize`: validates the request and either asks for consent or
    /// redirects upstream. Until the redirect URI is validated, errors are HTML
    /// pages (RFC 6749 §4.1.2.1); after, they go back to the client.
    pub async fn authorize(
        &self,
        request: AuthorizeRequest<'_>,
        browser: &BrowserContext,
    ) -> Result<AuthorizeOutcome, Error> {
        let config = &self.inner.config;
        let Some(client_id) = request.client_id.as_deref().filter(|c| !c.is_empty()) else {
            return Err(Error::page(
                StatusCode::BAD_REQUEST,
                "Missing client",
                "The request does not name a client (client_id).",
            ));
        };
        let Some(client) = self.client(client_id).await? else {
            return Err(Error::page_with_detail(
                StatusCode::BAD_REQUEST,
                "Unknown client",
                "This application is not registered with the authorization server. Ask it to register again.",
                "invalid_client",
            ));
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
            return Err(Error::page_with_detail(
                StatusCode::BAD_REQUEST,
                "Invalid redirect URI",
                "The redirect URI in this request is not registered for this application, so the authorization server will not send you there.",
                "invalid_request",
            ));
        };
        // RFC 9700 §4.11.2: registration is open, so a registered redirect
        // URI proves nothing about its owner, and redirecting an error to it
        // with no user action would make the proxy an open redirector. Errors
        // from here on go back to the client only once this browser has
        // approved it (a remembered consent), or when the operator turned
        // consent off (allowed only with pinned redirect patterns); else the
        // browser gets the HTML page.
        let remembered = browser.remembered_clients.iter().any(|c| c == &client.client_id);
        let approved = !config.consent_required || remembered;
        let refuse = |code: ErrorCode, description: String| {
            if approved {
                let back = client_redirect(
                    config,
                    redirect_uri.clone(),
                    request.state.as_deref().map(str::to_string),
                );
                Error::redirect(&back, code, description)
            } else {
                Error::page_with_detail(
                    StatusCode::BAD_REQUEST,
                    "Invalid authorization request",
                    format!(
                        "The application sent a request this server cannot accept ({description}). \
                         You have not approved this application in this browser, so you are not sent back to it."
                    ),
                    code.as_str(),
                )
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

        let Some((csrf_token, scopes)) = consent else {
            return Ok(AuthorizeOutcome::RedirectUpstream(upstream));
        };
        Ok(AuthorizeOutcome::Consent(Box::new(ConsentPrompt {
            transaction_id,
            csrf_token,
            client_id: client.client_id.clone(),
            client_name: client.display_name().to_string(),
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
    /// registered scopes or the advertised default.
    fn requested_scopes(&self, raw: Option<&str>, client: &RegisteredClient) -> Result<Scopes, String> {
        let advertised = Scopes::from_list(&self.inner.config.scopes);
        let requested = match raw.map(Scopes::parse).filter(|s| !s.is_empty()) {
            Some(scopes) => scopes,
            None => client
                .scope
                .as_deref()
                .map(Scopes::parse)
                .unwrap_or_else(|| advertised.clone()),
        };
        if !advertised.is_empty() && !requested.is_subset_of(&advertised) {
            let unknown: Vec<&str> = requested.not_in(&advertised).collect();
            return Err(format!("unknown scope(s): {}", unknown.join(" ")));
        }
        Ok(requested)
    }

    fn upstream_url(&self, transaction_id: &str, challenge: &str) -> String {
        self.inner.upstream.authorization_url(transaction_id, challenge)
    }

    /// `POST /consent`: checks the CSRF token and the browser, then approves
    /// (redirect upstream) or denies (redirect to the client with
    /// `access_denied`).
    pub async fn handle_consent(&self, form: ConsentForm, browser: &BrowserContext) -> Result<ConsentOutcome, Error> {
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
            return Err(Error::page_with_detail(
                StatusCode::FORBIDDEN,
                "Request not accepted",
                "This consent form was not issued to this browser session. Start the sign-in again from your application.",
                "invalid_request",
            ));
        }
        let back = stored_client_redirect(&self.inner.config, &transaction.redirect_uri, transaction.state.clone())?;
        match form.decision.as_str() {
            "approve" => {
                transaction.approved = true;
                let challenge = match &transaction.upstream_verifier {
                    Some(verifier) => sha256_b64url(verifier.as_bytes()),
                    None => transaction.code_challenge.as_str().to_string(),
                };
                let client_id = transaction.client_id.clone();
                self.actors()
                    .transactions
                    .send(PutTransaction {
                        id: form.transaction_id.clone(),
                        transaction,
                    })
                    .await??;
                Ok(ConsentOutcome::Approved {
                    upstream: self.upstream_url(&form.transaction_id, &challenge),
                    remember_client: (form.remember.as_deref() == Some("true")).then_some(client_id),
                })
            }
            "deny" => {
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
            _ => Err(Error::page(
                StatusCode::BAD_REQUEST,
                "Invalid decision",
                "The consent form was not understood.",
            )),
        }
    }

    /// The upstream callback: consumes the transaction, exchanges the upstream
    /// code (unless the client's PKCE is forwarded, then at `/token`), and
    /// redirects to the client with a proxy code, `state` and `iss`.
    pub async fn handle_callback(&self, params: CallbackParams, browser: &BrowserContext) -> Result<Url, Error> {
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
            return Err(Error::page_with_detail(
                StatusCode::FORBIDDEN,
                "Sign-in not accepted",
                "This sign-in was started in another browser or was not approved here. Start again from your application.",
                "access_denied",
            ));
        }
        let back = stored_client_redirect(config, &transaction.redirect_uri, transaction.state.clone())?;
        if let Some(error) = params.error.as_deref() {
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
            return Err(Error::redirect(
                &back,
                ErrorCode::ServerError,
                "the upstream provider sent no code",
            ));
        };

        let grant_id = random_token(24);
        let (pending_upstream_code, grant, prepared) = match &transaction.upstream_verifier {
            Some(verifier) => {
                let tokens = self
                    .inner
                    .upstream
                    .exchange_code(&upstream_code, Some(verifier))
                    .await
                    .map_err(|e| upstream_redirect_error(&back, e))?;
                let mut grant = self
                    .grant_from_upstream(
                        tokens,
                        &transaction.client_id,
                        &transaction.scopes,
                        &transaction.resource,
                    )
                    .await;
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
        Ok(back.with_params(&[("code", &code)]))
    }

    /// Builds a grant from an upstream token set: the subject and custom
    /// claims come from the ID token, a JWT access token, or userinfo.
    async fn grant_from_upstream(
        &self,
        upstream: UpstreamTokens,
        client_id: &str,
        scopes: &Scopes,
        resource: &str,
    ) -> Grant {
        let config = &self.inner.config;
        let mut source = Map::new();
        if self.inner.upstream.userinfo_endpoint.is_some() {
            match self.inner.upstream.userinfo(&upstream.access_token).await {
                Ok(info) => source.extend(info),
                Err(e) => log::warn!("upstream userinfo failed, continuing without its claims: {e}"),
            }
        }
        // Only the claims used below are read from the tokens.
        let wanted: Vec<&str> = SUBJECT_CLAIMS
            .iter()
            .copied()
            .chain(config.custom_claims.iter().map(String::as_str))
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
        Grant {
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
        }
    }

    /// Authenticates a client at the token endpoint per its registered method;
    /// Basic and post are both accepted from confidential clients (clients mix
    /// them up). Unknown clients get 401 `invalid_client` so they re-register.
    pub async fn authenticate_client(&self, credentials: &ClientCredentials) -> Result<Rc<RegisteredClient>, Error> {
        let unauthorized = |description: &str| Error::invalid_client(description, credentials.via_basic);
        let Some(client) = self.client(&credentials.client_id).await? else {
            return Err(unauthorized("unknown client; register again"));
        };
        match (&client.client_secret_hash, &credentials.client_secret) {
            (None, _) => Ok(client),
            (Some(expected), Some(given)) => {
                let given = sha256_b64url(given.expose().as_bytes());
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
    ) -> Result<TokenResponse, Error> {
        let config = &self.inner.config;
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
                let grant = self.actors().vault.send(GetGrant(record.grant_id.clone())).await??;
                let grant = grant.ok_or_else(|| Error::invalid_grant("the authorization code was already used"))?;
                let pair = IssuedPair {
                    access_jti: redemption.access_jti,
                    refresh_jti: redemption.refresh_jti,
                    issued_at: redemption.at,
                    scope: grant.scopes.to_oauth_string(),
                };
                return self.token_response(&grant, &pair);
            }
            CodeOutcome::Replayed { grant_id } => {
                log::warn!(
                    "authorization code replayed by client {}; revoking its tokens",
                    client.client_id
                );
                self.actors().vault.send(RevokeGrant(grant_id)).await??;
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
        if let Some(requested) = exchange.resource.as_deref() {
            if !resource_matches(requested, &record.resource) {
                return Err(Error::oauth(
                    ErrorCode::InvalidTarget,
                    "resource does not match the authorization request",
                ));
            }
        }
        let redemption = record
            .redemption
            .clone()
            .ok_or_else(|| Error::internal("a redeemed code without its redemption"))?;
        let pair = IssuedPair {
            access_jti: redemption.access_jti,
            refresh_jti: redemption.refresh_jti,
            issued_at: redemption.at,
            scope: record.scopes.to_oauth_string(),
        };
        let actors = self.actors();
        // Keeping the client registered and the grant's own write are
        // independent: issued together, they share one commit.
        let keep_client = || actors.clients.send(MarkClientUsed(client.client_id.clone()));

        if let Some(upstream_code) = &record.pending_upstream_code {
            // Forwarded PKCE: the grant is made now, in swap mode with its
            // first pair and the refresh token's lifetime.
            let tokens = self
                .inner
                .upstream
                .exchange_code(upstream_code, Some(&verifier))
                .await
                .map_err(upstream_token_error)?;
            let mut grant = self
                .grant_from_upstream(tokens, &record.client_id, &record.scopes, &record.resource)
                .await;
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
                let (_, created) = futures_util::future::join(keep_client(), create(grant, ttl)).await;
                created??;
                return Ok(answer);
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
            return self.signed_pair(&about, &pair);
        }

        // Pass-through: the client gets the upstream tokens, recorded by hash.
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
                        .map(|t| sha256_b64url(t.as_bytes())),
                })
                .await
        };
        let (_, grant) = futures_util::future::join(keep_client(), issue).await;
        let grant = grant??;
        let grant = grant.ok_or_else(|| Error::invalid_grant("the authorization has expired"))?;
        self.token_response(&grant, &pair)
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
            .map_err(Error::internal)?;
        let refresh = signer
            .sign_issued(&claims(
                &pair.refresh_jti,
                TokenUse::Refresh,
                &refresh_scope,
                refresh_exp,
            ))
            .map_err(Error::internal)?;
        Ok(TokenResponse {
            access_token: access,
            token_type: "Bearer".into(),
            expires_in: Some(access_exp.saturating_sub(now_secs())),
            refresh_token: Some(refresh),
            id_token: None,
            scope: pair.scope.clone(),
        })
    }

    /// The `refresh_token` grant: rotation with reuse detection in swap mode,
    /// an upstream refresh bound to the original client in pass-through mode.
    pub async fn exchange_refresh_token(
        &self,
        client: &RegisteredClient,
        exchange: RefreshExchange,
    ) -> Result<TokenResponse, Error> {
        if !self.inner.config.token_swap {
            return self.refresh_pass_through(client, exchange).await;
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
        let claim = self
            .actors()
            .vault
            .send(ClaimRefresh {
                refresh_jti: claims.jti,
                client_id: client.client_id.clone(),
                successor: successor.clone(),
            })
            .await??;
        match claim {
            RefreshClaim::Rotated {
                grant_id,
                mut grant,
                undo,
            } => {
                if let Some(upstream_refresh) = grant.upstream.refresh_token.clone() {
                    match self.refresh_upstream(&grant_id, upstream_refresh, false).await {
                        Ok(tokens) => grant.upstream = tokens,
                        Err(RefreshFailed::Refused(why)) => {
                            self.actors().vault.send(RevokeGrant(grant_id)).await??;
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
                    .ok_or_else(|| Error::internal("rotated grant has no current pair"))?;
                self.token_response(&grant, &pair)
            }
            RefreshClaim::GraceReplay { grant, pair } => self.token_response(&grant, &pair),
            RefreshClaim::ReuseDetected => Err(Error::invalid_grant(
                "refresh token reuse detected; the grant was revoked",
            )),
            RefreshClaim::Ended => Err(Error::invalid_grant(
                "the grant has reached its maximum lifetime; sign in again",
            )),
            RefreshClaim::WrongClient => Err(Error::invalid_grant("the refresh token was issued to another client")),
            RefreshClaim::Unknown => Err(Error::invalid_grant("the refresh token is invalid, expired or revoked")),
        }
    }

    async fn refresh_pass_through(
        &self,
        client: &RegisteredClient,
        exchange: RefreshExchange,
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
        if grant.ends_at(self.inner.config.lifetimes.grant_max) <= now_secs() {
            self.actors().vault.send(RevokeGrant(grant_id)).await??;
            return Err(Error::invalid_grant(
                "the grant has reached its maximum lifetime; sign in again",
            ));
        }
        grant.upstream = match self.refresh_upstream(&grant_id, exchange.refresh_token, true).await {
            Ok(tokens) => tokens,
            Err(RefreshFailed::Refused(why)) => {
                self.actors().vault.send(RevokeGrant(grant_id)).await??;
                return Err(Error::invalid_grant(format!("the upstream refused the refresh: {why}")));
            }
            Err(RefreshFailed::Unavailable(failure)) => return Err(upstream_refresh_error(failure)),
        };
        let pair = IssuedPair {
            access_jti: String::new(),
            refresh_jti: String::new(),
            issued_at: now_secs(),
            scope: grant.scopes.to_oauth_string(),
        };
        self.token_response(&grant, &pair)
    }

    /// Spends an upstream refresh token through the refresh flights, the one
    /// path every upstream refresh takes (shared with the gateway's), and
    /// stores the new tokens.
    async fn refresh_upstream(
        &self,
        grant_id: &str,
        refresh_token: String,
        passthrough: bool,
    ) -> Result<UpstreamTokens, RefreshFailed> {
        let request = RefreshUpstream {
            grant_id: grant_id.to_string(),
            refresh_token,
            passthrough,
            late_window: TOKEN_LATE_WINDOW,
        };
        self.inner
            .refresh_flights
            .refresh(&self.inner.upstream, &self.actors().vault, request)
            .await
    }

    /// Stops the actors and their expiry timers and closes the store (the
    /// original `destroy`). A directory store is released before this
    /// returns (its writes committed, its threads joined, its lock gone), so
    /// another proxy may open the directory at once, even while handles to
    /// this one remain; they answer with storage errors from then on.
    pub async fn shutdown(&self) {
        let actors = &self.inner.primary;
        let _ = actors.clients.send(Shutdown).await;
        let _ = actors.transactions.send(Shutdown).await;
        let _ = actors.codes.send(Shutdown).await;
        let _ = actors.vault.send(Shutdown).await;
        self.inner.backend.close();
    }
}

/// Where an upstream's user id is found, in order (OIDC `sub`; GitHub's
/// userinfo has `id` and `login`).
const SUBJECT_CLAIMS: [&str; 3] = ["sub", "id", "login"];

fn expired_page() -> Error {
    Error::page_with_detail(
        StatusCode::BAD_REQUEST,
        "This sign-in has expired",
        "The authorization request is unknown, was already used, or took too long. Start again from your application.",
        "invalid_request",
    )
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NAMES: [&str; 8] = [
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "code_challenge",
        "code_challenge_method",
        "resource",
    ];

    #[test]
    fn an_authorize_query_is_read_with_its_caps() {
        let request = AuthorizeRequest::from_query("response_type=code&state=a%20b&extra=1").unwrap();
        assert_eq!(request.response_type.as_deref(), Some("code"));
        assert_eq!(request.state.as_deref(), Some("a b"));
        let state = |n: usize| format!("state={}", "s".repeat(n));
        assert!(AuthorizeRequest::from_query(&state(MAX_STATE)).is_ok());
        assert_eq!(
            AuthorizeRequest::from_query(&state(MAX_STATE + 1)).unwrap_err(),
            AuthorizeQueryError::StateTooLong
        );
        // Percent-encoded, the state is measured decoded.
        let encoded = format!("state={}", "%41".repeat(MAX_STATE));
        assert!(AuthorizeRequest::from_query(&encoded).is_ok());
        let padded = format!("client_id=c&pad={}", "p".repeat(MAX_AUTHORIZE_QUERY));
        assert_eq!(
            AuthorizeRequest::from_query(&padded).unwrap_err(),
            AuthorizeQueryError::TooLong
        );
        assert_eq!(
            AuthorizeRequest::from_query("state=a&state=b").unwrap_err(),
            AuthorizeQueryError::Unreadable
        );
    }

    /// A value in any spelling: plain, percent-encoded, broken escapes,
    /// `+`, invalid UTF-8.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9._~-]{0,12}",
            "(%[0-9a-fA-F]{2}){0,8}",
            "(%[0-9a-zA-Z]{0,2}|[+&=;a-z]){0,12}",
            "\\PC{0,12}",
        ]
    }

    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn any_query_is_read_or_refused_without_panicking(raw in "\\PC{0,200}", pairs in proptest::collection::vec((prop_oneof![
            proptest::sample::select(NAMES.to_vec()).prop_map(String::from),
            "[a-z_%]{0,10}",
        ], value()), 0..10)) {
            let built = pairs
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect::<Vec<_>>()
                .join("&");
            for query in [raw.as_str(), built.as_str()] {
                if let Ok(request) = AuthorizeRequest::from_query(query) {
                    prop_assert!(query.len() <= MAX_AUTHORIZE_QUERY);
                    prop_assert!(request.state.as_deref().is_none_or(|s| s.len() <= MAX_STATE));
                }
            }
        }

        #[test]
        fn a_repeated_parameter_is_refused(
            pairs in proptest::collection::vec((proptest::sample::select(NAMES.to_vec()), value()), 0..6),
            repeated in proptest::sample::select(NAMES.to_vec()),
            first in value(),
            second in value(),
            at in 0usize..8,
        ) {
            let mut pairs: Vec<(String, String)> = pairs
                .into_iter()
                .filter(|(name, _)| *name != repeated)
                .map(|(name, value)| (name.to_string(), value))
                .collect();
            pairs.push((repeated.to_string(), first));
            pairs.insert(at.min(pairs.len()), (repeated.to_string(), second));
            let query = pairs
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect::<Vec<_>>()
                .join("&");
            // A value with a raw `&` or `=` may split into other pairs, but the
            // two names are still there.
            prop_assert!(AuthorizeRequest::from_query(&query).is_err(), "{query}");
        }
    }
}
