//! Fetching a document (or a key set) over https: no redirects, 200 only,
//! JSON only, a size cap, a short timeout.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use url::Url;

use crate::config::ClientDocumentSettings;
use crate::oauth::client_document::DocumentError;

/// Largest document read: client documents are a few hundred bytes.
pub const MAX_DOCUMENT_BYTES: usize = 5 * 1024;

/// Longest a fetch may take, connection included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A fetched body and how long it may be cached (`Cache-Control: max-age`).
pub struct Fetched {
    pub body: actix_web::web::Bytes,
    #[allow(dead_code)] // read by the document cache
    pub max_age: Option<Duration>,
}

thread_local! {
    static CLIENT: RefCell<Option<(Arc<rustls::ClientConfig>, awc::Client)>> = const { RefCell::new(None) };
}

/// The worker's client for documents, trusting this thread's outbound roots.
fn http_client() -> awc::Client {
    let tls = crate::tls::client_config();
    CLIENT.with(|cell| {
        let mut slot = cell.borrow_mut();
        match &*slot {
            Some((built_for, client)) if Arc::ptr_eq(built_for, &tls) => client.clone(),
            _ => {
                let client = awc::Client::builder()
                    .disable_redirects()
                    .timeout(FETCH_TIMEOUT)
                    .connector(awc::Connector::new().timeout(FETCH_TIMEOUT).rustls_0_23(tls.clone()))
                    .add_default_header((
                        header::USER_AGENT,
                        concat!("mcp-oauth-proxy/", env!("CARGO_PKG_VERSION")),
                    ))
                    .finish();
                *slot = Some((tls, client.clone()));
                client
            }
        }
    })
}

/// GETs `url` as JSON under the operator's `settings`.
pub async fn fetch_json(url: &Url, _settings: &ClientDocumentSettings) -> Result<Fetched, DocumentError> {
    if url.scheme() != "https" {
        return Err(DocumentError::BadUrl("only https URLs are fetched".into()));
    }
    let mut response = http_client()
        .get(url.as_str())
        .insert_header((header::ACCEPT, "application/json"))
        .send()
        .await
        .map_err(|e| match e {
            awc::error::SendRequestError::Timeout => DocumentError::Timeout(FETCH_TIMEOUT.as_secs()),
            other => DocumentError::Unreachable(other.to_string()),
        })?;
    let status = response.status();
    if status.is_redirection() {
        return Err(DocumentError::Redirected);
    }
    if status.as_u16() != 200 {
        return Err(DocumentError::Status(status.as_u16()));
    }
    let body = response.body().limit(MAX_DOCUMENT_BYTES).await.map_err(|e| match e {
        awc::error::PayloadError::Overflow => DocumentError::TooLarge(MAX_DOCUMENT_BYTES),
        other => DocumentError::Unreachable(other.to_string()),
    })?;
    Ok(Fetched { body, max_age: None })
}
