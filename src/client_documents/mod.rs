//! [`ClientDocuments`]: resolves document client ids (Client ID Metadata
//! Documents) to clients, and `jwks_uri` key sets for `private_key_jwt`.
//!
//! What a document must say is `crate::oauth::client_document`; this module
//! is the I/O around it: fetching ([`fetch`]) under the operator's rules
//! (`OAUTH_PROXY_CIMD_ALLOWED_HOSTS`, `OAUTH_PROXY_CIMD_ALLOW_PRIVATE_NETWORKS`,
//! the outbound TLS roots of [`crate::tls`]).

mod fetch;

use std::sync::Arc;

use jsonwebtoken::jwk::JwkSet;
use url::Url;

use crate::config::{ClientDocumentSettings, Config};
use crate::oauth::client::RegisteredClient;
use crate::oauth::client_document::{client_from_document, DocumentError};
use crate::oauth::now_secs;

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
}

impl ClientDocuments {
    pub fn new(config: &Config) -> ClientDocuments {
        ClientDocuments {
            inner: Arc::new(Shared {
                settings: config.client_documents.clone(),
                redirect_patterns: config.allowed_redirect_uri_patterns.clone(),
            }),
        }
    }

    /// Whether document client ids are accepted (`OAUTH_PROXY_CIMD`).
    pub fn enabled(&self) -> bool {
        self.inner.settings.enabled
    }

    /// The client the document at `url` describes.
    pub async fn client(&self, url: &Url) -> Result<Arc<RegisteredClient>, DocumentError> {
        if !self.enabled() {
            return Err(DocumentError::Disabled);
        }
        let fetched = fetch::fetch_json(url, &self.inner.settings).await?;
        let client = client_from_document(url, &fetched.body, self.inner.redirect_patterns.as_deref(), now_secs())?;
        Ok(Arc::new(client))
    }

    /// The key set at a document client's `jwks_uri`, fetched under the
    /// same rules as documents.
    pub async fn key_set(&self, url: &Url) -> Result<Arc<JwkSet>, DocumentError> {
        let fetched = fetch::fetch_json(url, &self.inner.settings).await?;
        let keys: JwkSet = serde_json::from_slice(&fetched.body).map_err(|e| DocumentError::Invalid {
            field: "jwks_uri",
            why: format!("the key set is not a JWK Set ({e})"),
        })?;
        Ok(Arc::new(keys))
    }

    /// The key set at `url` fetched again, for an assertion naming a key
    /// the set did not have (a rotated key). A stand-in until the cached
    /// fetcher lands: there is no cache yet, so this is [`Self::key_set`].
    pub async fn refetch_key_set(&self, url: &Url) -> Result<Arc<JwkSet>, DocumentError> {
        self.key_set(url).await
    }
}
