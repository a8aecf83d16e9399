//! [`ClientDocuments`]: resolves document client ids (Client ID Metadata
//! Documents) to clients, and `jwks_uri` key sets for `private_key_jwt`.
//!
//! What a document must say is `crate::oauth::client_document`; this module
//! is the I/O around it: fetching ([`fetch`]) under the operator's rules
//! (`OAUTH_PROXY_CIMD_ALLOWED_HOSTS`, `OAUTH_PROXY_CIMD_ALLOW_PRIVATE_NETWORKS`,
//! the outbound TLS roots of [`crate::tls`]).

mod address;
mod cache;
mod fetch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use url::Url;

use crate::config::{ClientDocumentSettings, Config};
use crate::oauth::client::RegisteredClient;
use crate::oauth::client_document::{client_from_document, DocumentError};
use crate::oauth::now_secs;

pub use address::forbidden_kind;
pub use cache::{MAX_LIFETIME, MIN_LIFETIME};
pub use fetch::{FETCH_TIMEOUT, MAX_DOCUMENT_BYTES};

/// A key set is fetched again for an unknown `kid` at most this often per
/// URL: a client rotating its keys is seen quickly, while assertions with
/// made-up `kid`s cannot make the proxy fetch on every request.
pub const KEY_SET_REFETCH_INTERVAL: Duration = Duration::from_secs(60);

/// Document clients and key sets, shared by every worker thread (cheap to
/// clone).
#[derive(Clone)]
pub struct ClientDocuments {
    inner: Arc<Shared>,
}

struct Shared {
    settings: ClientDocumentSettings,
    /// `OAUTH_PROXY_ALLOWED_REDIRECT_URI_PATTERNS`: a document's redirect
    /// URIs must pass them as registered ones do.
    redirect_patterns: Option<Vec<String>>,
    documents: Arc<cache::Store<Arc<RegisteredClient>>>,
    key_sets: Arc<cache::Store<Arc<JwkSet>>>,
    /// When each key set was last fetched past its cache
    /// ([`ClientDocuments::refetch_key_set`]).
    refetched: Mutex<HashMap<String, Instant>>,
}

impl ClientDocuments {
    pub fn new(config: &Config) -> ClientDocuments {
        ClientDocuments::with_settings(
            config.client_documents.clone(),
            config.allowed_redirect_uri_patterns.clone(),
        )
    }

    fn with_settings(settings: ClientDocumentSettings, redirect_patterns: Option<Vec<String>>) -> ClientDocuments {
        ClientDocuments {
            inner: Arc::new(Shared {
                settings,
                redirect_patterns,
                documents: Arc::new(cache::Store::new(cache::CAPACITY)),
                key_sets: Arc::new(cache::Store::new(cache::CAPACITY)),
                refetched: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Whether document client ids are accepted (`OAUTH_PROXY_CIMD`).
    pub fn enabled(&self) -> bool {
        self.inner.settings.enabled
    }

    /// The client the document at `url` describes (cached; see
    /// [`cache`]).
    pub async fn client(&self, url: &Url) -> Result<Arc<RegisteredClient>, DocumentError> {
        if !self.enabled() {
            return Err(DocumentError::Disabled);
        }
        let settings = self.inner.settings.clone();
        let patterns = self.inner.redirect_patterns.clone();
        let url = url.clone();
        let key = url.as_str().to_string();
        self.inner
            .documents
            .get_or_fetch(&key, move || async move {
                let fetched = fetch::fetch_json(&url, &settings).await?;
                let client = client_from_document(&url, &fetched.body, patterns.as_deref(), now_secs())?;
                Ok((Arc::new(client), cache::lifetime(fetched.max_age)))
            })
            .await
    }

    /// The key set at a document client's `jwks_uri`, fetched under the
    /// same rules as documents, and cached like them.
    pub async fn key_set(&self, url: &Url) -> Result<Arc<JwkSet>, DocumentError> {
        let settings = self.inner.settings.clone();
        let url = url.clone();
        let key = url.as_str().to_string();
        self.inner
            .key_sets
            .get_or_fetch(&key, move || async move {
                let fetched = fetch::fetch_json(&url, &settings).await?;
                let keys: JwkSet = serde_json::from_slice(&fetched.body).map_err(|e| DocumentError::Invalid {
                    field: "jwks_uri",
                    why: format!("the key set is not a JWK Set ({e})"),
                })?;
                Ok((Arc::new(keys), cache::lifetime(fetched.max_age)))
            })
            .await
    }

    /// The key set at `url` fetched past the cache (an assertion named a
    /// `kid` the cached set lacks: the client may have rotated its keys), at
    /// most once per [`KEY_SET_REFETCH_INTERVAL`] per URL; otherwise the
    /// cached set.
    pub async fn refetch_key_set(&self, url: &Url) -> Result<Arc<JwkSet>, DocumentError> {
        if self.may_refetch(url.as_str(), Instant::now()) {
            self.inner.key_sets.forget(url.as_str());
        }
        self.key_set(url).await
    }

    /// Whether `url` may be refetched at `now`, noting it if so.
    fn may_refetch(&self, url: &str, now: Instant) -> bool {
        let mut refetched = self
            .inner
            .refetched
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(last) = refetched.get(url) {
            if now.duration_since(*last) < KEY_SET_REFETCH_INTERVAL {
                return false;
            }
        }
        if refetched.len() >= cache::CAPACITY {
            refetched.retain(|_, last| now.duration_since(*last) < KEY_SET_REFETCH_INTERVAL);
            if refetched.len() >= cache::CAPACITY {
                return false;
            }
        }
        refetched.insert(url.to_string(), now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_set_is_refetched_at_most_once_a_minute_per_url() {
        let documents = ClientDocuments::with_settings(ClientDocumentSettings::default(), None);
        let start = Instant::now();
        assert!(documents.may_refetch("https://a.example/jwks", start));
        assert!(!documents.may_refetch("https://a.example/jwks", start + Duration::from_secs(59)));
        assert!(documents.may_refetch("https://b.example/jwks", start + Duration::from_secs(59)));
        assert!(documents.may_refetch("https://a.example/jwks", start + Duration::from_secs(60)));
    }
}
