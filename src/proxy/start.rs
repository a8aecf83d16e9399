//! Start-up and wiring: [`OAuthProxy::start`] builds the store actors, the
//! JWT signer and the upstream client; each worker thread talks to its own
//! replicas of the store actors (sharing the tables); [`OAuthProxy::shutdown`]
//! stops them and closes the store.

use secrecy::ExposeSecret;
use std::rc::Rc;
use std::sync::Arc;

use actix::{Actor, Addr};
use jsonwebtoken::Algorithm;
use serde_json::Value;

use super::upstream_refresh::RefreshFlights;
use crate::actors::token_vault::{GrantIndexes, BACKFILL_MARKER};
use crate::actors::{ClientRegistry, CodeStore, Shutdown, TokenVault, TransactionStore};
use crate::audit::{Audit, AuditStartError, CheckpointKey, Event};
use crate::config::{Config, JwtAlgorithm};
use crate::crypto::Sealer;
use crate::keys::{KeyFileError, Keys};
use crate::metrics::Metrics;
use crate::oauth::jwt::generate_private_pem;
use crate::oauth::jwt::{KeyError, TokenSigner};
use crate::oauth::metadata;
use crate::store::instrumented::InstrumentedTable;
use crate::store::{Backend, Counting, SealedTable, StoreError, Table};
use crate::upstream::{Upstream, UpstreamError};

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
    #[error(transparent)]
    Audit(#[from] AuditStartError),
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
        Some(previous) => signer.with_previous_key(previous.expose_secret().as_bytes()),
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
pub(super) struct ActorPrototypes {
    pub(super) clients: ClientRegistry,
    pub(super) transactions: TransactionStore,
    pub(super) codes: CodeStore,
    pub(super) vault: TokenVault,
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

pub(super) struct Inner {
    pub(super) config: Config,
    pub(super) upstream: Upstream,
    pub(super) signer: TokenSigner,
    pub(super) cookie_keys: crate::crypto::CookieKeys,
    /// The primary actors (on the thread that started the proxy); they run
    /// the expiry timers.
    pub(super) primary: StoreActors,
    pub(super) primary_thread: std::thread::ThreadId,
    pub(super) prototypes: ActorPrototypes,
    /// Upstream refreshes in flight, shared by every worker thread.
    pub(super) refresh_flights: RefreshFlights,
    /// `/authorize` requests per client address (`None`: no limit).
    pub(super) authorize_limit: Option<crate::rate_limit::KeyedLimit>,
    /// Closed by [`OAuthProxy::shutdown`].
    pub(super) backend: Backend,
    pub(super) audit: Audit,
    pub(super) metrics: Arc<Metrics>,
    /// `audit` and `metrics` together, for [`OAuthProxy::record`] and the
    /// parts that record without a proxy at hand.
    pub(super) recorder: Recorder,
    /// Names this process in audit events and logs.
    pub(super) instance_id: String,
    /// Document client ids (Client ID Metadata Documents) and their keys.
    pub(super) documents: crate::client_documents::ClientDocuments,
    /// `jti`s of the `private_key_jwt` assertions used, in the shared store.
    pub(super) used_assertions: super::client_assertions::UsedAssertions,
}

/// Records audit events and counts them in the metrics: what
/// [`OAuthProxy::record`] does, handed to the parts of the proxy that record
/// without one at hand (the client registry's sweep, the upstream refresh
/// flights).
#[derive(Clone)]
pub struct Recorder {
    audit: Audit,
    metrics: Arc<Metrics>,
}

impl Recorder {
    /// See [`OAuthProxy::record`].
    pub fn record(&self, event: Event) -> Result<(), crate::Error> {
        self.metrics.observe_event(&event);
        Ok(self.audit.record(event)?)
    }
}

/// The OAuth proxy: cheap to clone, shared by every worker.
#[derive(Clone)]
pub struct OAuthProxy {
    pub(super) inner: Arc<Inner>,
}

impl OAuthProxy {
    /// Starts the actors and resolves the upstream; call inside an actix System.
    pub async fn start(config: Config) -> Result<OAuthProxy, StartError> {
        // awc with rustls 0.23 needs a process-wide crypto provider.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        // This thread's outbound TLS (discovery, the refresher's upstream calls).
        crate::tls::use_on_this_thread(&config.outbound_tls);
        let metrics = Arc::new(Metrics::new());
        let upstream = Upstream::resolve(&config.upstream, config.callback_url(), metrics.upstream()).await?;

        let backend = Backend::open(&config.storage, &config.outbound_tls)?;
        // Every table counts its operations (and times them, on backends
        // that do I/O): see `store::instrumented`.
        let timed = !matches!(backend, Backend::Memory);
        let table = |name: &'static str, counting: Counting| -> Result<Arc<dyn Table>, StoreError> {
            let raw = backend.table(name, counting)?;
            Ok(InstrumentedTable::wrap(raw, &metrics, backend.kind(), name, timed))
        };
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
        // The cookie library wants 64 bytes of key material: derive them.
        let cookie_keys = crate::crypto::CookieKeys::derive(&keys.consent);

        let instance_id = crate::crypto::random_token(8);
        let audit = Audit::start(&config.operations, &instance_id, CheckpointKey::derive(&keys.consent))?;
        let recorder = Recorder {
            audit: audit.clone(),
            metrics: metrics.clone(),
        };

        // Only the client and transaction counts are read while serving (the
        // registration and pending-authorization caps).
        let lifetimes = config.lifetimes;
        let prototypes = ActorPrototypes {
            clients: ClientRegistry::new(
                SealedTable::new("client", table("client", Counting::Kept)?, sealer.clone()),
                table("client_unused", Counting::OnRequest)?,
                table("client_used", Counting::OnRequest)?,
                // Read by the listing cap only when a new document client is seen.
                SealedTable::new(
                    "client_document",
                    table("client_document", Counting::OnRequest)?,
                    sealer.clone(),
                ),
                config.registration,
                lifetimes.unused_client,
                lifetimes.refresh_token.max(lifetimes.unused_client),
            )
            .recording(recorder.clone()),
            transactions: TransactionStore::new(
                SealedTable::new(
                    "transaction",
                    // Read by the pending-authorization cap at each /authorize.
                    table("transaction", Counting::Kept)?,
                    sealer.clone(),
                ),
                lifetimes.transaction,
                lifetimes.unapproved_transaction,
                config.max_pending_authorizations,
            ),
            codes: CodeStore::new(
                SealedTable::new("code", table("code", Counting::OnRequest)?, sealer.clone()),
                lifetimes.authorization_code,
            ),
            vault: TokenVault::new(
                SealedTable::new(
                    "grant",
                    InstrumentedTable::wrap(
                        backend.remembered_table("grant", Counting::OnRequest)?,
                        &metrics,
                        backend.kind(),
                        "grant",
                        timed,
                    ),
                    sealer.clone(),
                ),
                SealedTable::new("token", table("token", Counting::OnRequest)?, sealer),
                lifetimes.access_token,
                lifetimes.refresh_token,
                lifetimes.grant_max,
                GrantIndexes::new(&keys.consent),
            )
            // Grants of the earlier release have no index entries (see
            // `token_vault::backfill`).
            .backfilling(backend.table(BACKFILL_MARKER.0, Counting::OnRequest)?),
        };
        let primary = StoreActors {
            clients: prototypes.clients.clone().start(),
            transactions: prototypes.transactions.clone().start(),
            codes: prototypes.codes.clone().start(),
            vault: prototypes.vault.clone().start(),
        };

        let authorize_limit = crate::rate_limit::KeyedLimit::per_minute(config.authorize_rate_limit);
        let documents = crate::client_documents::ClientDocuments::new(&config);
        // Not sealed: keys are hashes and values a marker, nothing secret.
        let used_assertions = super::client_assertions::UsedAssertions::new(table(
            super::client_assertions::USED_ASSERTIONS_TABLE,
            Counting::OnRequest,
        )?);
        Ok(OAuthProxy {
            inner: Arc::new(Inner {
                config,
                upstream,
                signer,
                cookie_keys,
                primary,
                primary_thread: std::thread::current().id(),
                prototypes,
                refresh_flights: RefreshFlights::new(recorder.clone()),
                authorize_limit,
                backend,
                audit,
                metrics,
                recorder,
                instance_id,
                documents,
                used_assertions,
            }),
        })
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Records an audit event (and counts it in the metrics). `Err` only
    /// when `OAUTH_PROXY_AUDIT_REQUIRED` is true and the event cannot be
    /// taken: the request then fails with 503.
    pub fn record(&self, event: Event) -> Result<(), crate::Error> {
        self.inner.recorder.record(event)
    }

    pub fn audit(&self) -> &Audit {
        &self.inner.audit
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Names this process in audit events.
    pub fn instance_id(&self) -> &str {
        &self.inner.instance_id
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
    /// each time showed in the full flow's profile.
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
        self.inner.audit.shutdown();
        self.inner.backend.close();
    }
}
