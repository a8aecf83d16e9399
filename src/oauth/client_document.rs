//! Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document,
//! MCP authorization 2026-07-28): which client ids are document URLs, and what
//! a fetched document must say to stand for a client. No I/O here: fetching
//! (with its SSRF rules and cache) is `crate::client_documents`.

use std::sync::Arc;

use serde::Deserialize;
use url::Url;

use super::client::{RegisteredClient, TokenEndpointAuthMethod};
use super::redirect_uri::{is_loopback, RedirectUri};

/// What a document client has beyond the registered-client fields: shown on
/// the consent page and used to authenticate it. Never stored: it comes from
/// the document each time (see `RegisteredClient::document`).
#[derive(Debug, Clone)]
pub struct DocumentFacts {
    /// The document's host (`claude.ai`): the origin the proxy verified by
    /// fetching it over https.
    pub host: String,
    pub logo_uri: Option<String>,
    /// Every redirect URI is loopback: a local app, whose name anyone can
    /// claim in a document of their own.
    pub loopback_only: bool,
    /// Where its `private_key_jwt` keys are (`None`: a public client).
    pub keys: Option<ClientKeys>,
}

/// The keys of a `private_key_jwt` document client.
#[derive(Debug, Clone)]
pub enum ClientKeys {
    /// `jwks`, in the document itself.
    Inline(Arc<jsonwebtoken::jwk::JwkSet>),
    /// `jwks_uri`, fetched like a document.
    Uri(Url),
}

/// Why a document client id is refused; the message is what the user reads
/// on the error page (these clients do not fall back to registration).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    #[error("client metadata documents are not accepted by this server")]
    Disabled,
    #[error("the client id is not a valid document URL: {0}")]
    BadUrl(String),
    #[error("documents from {host} are not allowed by this server's operator")]
    HostNotAllowed { host: String },
    #[error(
        "the document's host {host} is at {address}, a {kind} address, which this server does not fetch \
         documents from"
    )]
    ForbiddenAddress {
        host: String,
        address: String,
        kind: &'static str,
    },
    #[error("the document could not be fetched: {0}")]
    Unreachable(String),
    #[error("fetching the document took longer than {0} s (the server is too slow)")]
    Timeout(u64),
    #[error("the document's server answered with a redirect, which is not followed")]
    Redirected,
    #[error("the document's server answered with HTTP status {0} (200 is required)")]
    Status(u16),
    #[error("the document is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the document's server sent it as {0}, not JSON (application/json or application/*+json)")]
    ContentType(String),
    #[error("the document is not JSON ({0})")]
    NotJson(String),
    #[error("the document's client_id `{found}` is not the URL it was fetched from")]
    ClientIdMismatch { found: String },
    #[error("the document has no `{0}`")]
    Missing(&'static str),
    #[error("the document's `{field}` is invalid: {why}")]
    Invalid { field: &'static str, why: String },
}

/// The document URL a client id names, if it names one: an `https://` URL
/// with a host and a path (other than `/`). Anything else is an ordinary
/// (registered) client id. `Err` for `https://` ids that cannot be a
/// document URL, so the user learns why.
pub fn document_url(client_id: &str) -> Option<Result<Url, DocumentError>> {
    if !client_id.starts_with("https://") {
        return None;
    }
    Some(parse_document_url(client_id))
}

fn parse_document_url(client_id: &str) -> Result<Url, DocumentError> {
    let bad = |why: &str| DocumentError::BadUrl(why.to_string());
    let url = Url::parse(client_id).map_err(|e| DocumentError::BadUrl(e.to_string()))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    if url.path() == "/" || url.path().is_empty() {
        return Err(bad("it has no path"));
    }
    if url.fragment().is_some() {
        return Err(bad("it has a fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("it carries credentials"));
    }
    // The document must name itself with exactly this string, and dot
    // segments or other non-canonical spellings would make one client look
    // like two.
    if url.as_str() != client_id {
        return Err(bad("it is not in canonical form (dot segments, case, or escaping)"));
    }
    Ok(url)
}

/// The fields of a document the proxy reads; others are ignored.
#[derive(Deserialize)]
struct Document {
    client_id: Option<String>,
    client_name: Option<String>,
    redirect_uris: Option<Vec<String>>,
    client_uri: Option<String>,
    logo_uri: Option<String>,
    token_endpoint_auth_method: Option<String>,
    jwks: Option<serde_json::Value>,
    jwks_uri: Option<String>,
    grant_types: Option<Vec<String>>,
    scope: Option<String>,
}

/// Reads a fetched document as the client it describes. `patterns` are the
/// operator's redirect URI patterns (`OAUTH_PROXY_ALLOWED_REDIRECT_URI_PATTERNS`).
pub fn client_from_document(
    url: &Url,
    body: &[u8],
    patterns: Option<&[String]>,
    fetched_at: u64,
) -> Result<RegisteredClient, DocumentError> {
    let document: Document = serde_json::from_slice(body).map_err(|e| DocumentError::NotJson(e.to_string()))?;
    let client_id = document.client_id.ok_or(DocumentError::Missing("client_id"))?;
    if client_id != url.as_str() {
        return Err(DocumentError::ClientIdMismatch { found: client_id });
    }
    let client_name = document
        .client_name
        .filter(|n| !n.trim().is_empty())
        .ok_or(DocumentError::Missing("client_name"))?;
    let raw_uris = document
        .redirect_uris
        .filter(|u| !u.is_empty())
        .ok_or(DocumentError::Missing("redirect_uris"))?;
    // As with registration: URIs the rules or the operator's patterns refuse
    // are dropped (a document serves every deployment, not just this one);
    // only when none is left is the document refused, saying why.
    let mut redirect_uris: Vec<RedirectUri> = Vec::new();
    let mut refused = Vec::new();
    for raw in &raw_uris {
        match RedirectUri::parse(raw, patterns) {
            Ok(uri) if !redirect_uris.contains(&uri) => redirect_uris.push(uri),
            Ok(_) => {}
            Err(e) => refused.push(e),
        }
    }
    if redirect_uris.is_empty() {
        let why = refused.first().map(|e| e.to_string()).unwrap_or_default();
        return Err(DocumentError::Invalid {
            field: "redirect_uris",
            why: format!("none is acceptable to this server ({why})"),
        });
    }
    let loopback_only = redirect_uris.iter().all(|u| is_loopback(u.url()));

    let keys = match (document.jwks, document.jwks_uri) {
        (Some(_), Some(_)) => {
            return Err(DocumentError::Invalid {
                field: "jwks",
                why: "give `jwks` or `jwks_uri`, not both".into(),
            })
        }
        (Some(jwks), None) => Some(ClientKeys::Inline(Arc::new(serde_json::from_value(jwks).map_err(
            |e| DocumentError::Invalid {
                field: "jwks",
                why: e.to_string(),
            },
        )?))),
        (None, Some(uri)) => Some(ClientKeys::Uri(
            Url::parse(&uri)
                .ok()
                .filter(|u| u.scheme() == "https")
                .ok_or_else(|| DocumentError::Invalid {
                    field: "jwks_uri",
                    why: "must be an https URL".into(),
                })?,
        )),
        (None, None) => None,
    };
    let token_endpoint_auth_method = match document.token_endpoint_auth_method.as_deref() {
        None if keys.is_some() => TokenEndpointAuthMethod::PrivateKeyJwt,
        None | Some("none") => TokenEndpointAuthMethod::None,
        Some("private_key_jwt") if keys.is_some() => TokenEndpointAuthMethod::PrivateKeyJwt,
        Some("private_key_jwt") => return Err(DocumentError::Missing("jwks` or `jwks_uri")),
        Some(other) => {
            return Err(DocumentError::Invalid {
                field: "token_endpoint_auth_method",
                why: format!("`{other}` is not supported (use `none` or `private_key_jwt`)"),
            })
        }
    };
    let grant_types = document
        .grant_types
        .unwrap_or_else(|| vec!["authorization_code".into(), "refresh_token".into()]);
    if let Some(other) = grant_types
        .iter()
        .find(|g| !matches!(g.as_str(), "authorization_code" | "refresh_token"))
    {
        return Err(DocumentError::Invalid {
            field: "grant_types",
            why: format!("grant type `{other}` is not supported"),
        });
    }
    let https_url = |u: String| Url::parse(&u).ok().filter(|u| u.scheme() == "https").map(String::from);
    Ok(RegisteredClient {
        client_id,
        client_secret_hash: None,
        redirect_uris: redirect_uris.iter().map(|u| u.as_str().to_string()).collect(),
        token_endpoint_auth_method,
        grant_types,
        client_name: Some(client_name.chars().take(200).collect()),
        client_uri: document.client_uri.and_then(https_url),
        scope: document
            .scope
            .map(|s| super::scope::Scopes::parse(&s).to_oauth_string())
            .filter(|s| !s.is_empty()),
        issued_at: fetched_at,
        document: Some(Arc::new(DocumentFacts {
            host: url.host_str().unwrap_or_default().to_string(),
            logo_uri: document.logo_uri.and_then(https_url),
            loopback_only,
            keys,
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://claude.ai/oauth/mcp-oauth-client-metadata";

    fn client(document: serde_json::Value) -> Result<RegisteredClient, DocumentError> {
        client_from_document(&Url::parse(URL).unwrap(), document.to_string().as_bytes(), None, 0)
    }

    #[test]
    fn only_https_client_ids_are_document_urls() {
        assert!(document_url("f3a9c2").is_none());
        assert!(document_url("http://claude.ai/oauth/x").is_none());
        assert_eq!(document_url(URL).unwrap().unwrap().as_str(), URL);
        for bad in [
            "https://claude.ai",
            "https://claude.ai/",
            "https://claude.ai/a/../b",
            "https://u:p@claude.ai/a",
            "https://claude.ai/a#f",
            "https://CLAUDE.ai/a",
        ] {
            assert!(
                matches!(document_url(bad), Some(Err(DocumentError::BadUrl(_)))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_document_that_names_itself_is_a_public_client() {
        let client = client(serde_json::json!({
            "client_id": URL,
            "client_name": "Claude",
            "redirect_uris": ["https://claude.ai/api/mcp/auth_callback"],
        }))
        .unwrap();
        assert_eq!(client.client_id, URL);
        assert_eq!(client.token_endpoint_auth_method, TokenEndpointAuthMethod::None);
        let facts = client.document.unwrap();
        assert_eq!(facts.host, "claude.ai");
        assert!(!facts.loopback_only);
    }

    #[test]
    fn redirect_uris_the_operator_refuses_are_dropped_and_none_left_refuses_the_document() {
        let url = Url::parse(URL).unwrap();
        let patterns = vec!["https://claude.ai/*".to_string()];
        let document = serde_json::json!({
            "client_id": URL,
            "client_name": "Claude",
            "redirect_uris": ["https://evil.example/cb", "https://claude.ai/api/mcp/auth_callback", "javascript:alert(1)"],
        });
        let client = client_from_document(&url, document.to_string().as_bytes(), Some(&patterns), 0).unwrap();
        assert_eq!(client.redirect_uris, vec!["https://claude.ai/api/mcp/auth_callback"]);

        let document = serde_json::json!({
            "client_id": URL,
            "client_name": "Claude",
            "redirect_uris": ["https://evil.example/cb"],
        });
        let err = client_from_document(&url, document.to_string().as_bytes(), Some(&patterns), 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the document's `redirect_uris` is invalid: none is acceptable to this server \
             (`https://evil.example/cb` is not allowed by this server's redirect URI patterns)"
        );
    }

    #[test]
    fn a_document_without_a_required_field_is_refused_naming_it() {
        for field in ["client_id", "client_name", "redirect_uris"] {
            let mut document = serde_json::json!({
                "client_id": URL,
                "client_name": "Claude",
                "redirect_uris": ["https://claude.ai/cb"],
            });
            document.as_object_mut().unwrap().remove(field);
            assert_eq!(client(document).unwrap_err(), DocumentError::Missing(field), "{field}");
        }
    }

    #[test]
    fn a_document_naming_another_url_is_refused() {
        let err = client(serde_json::json!({
            "client_id": "https://claude.ai/other",
            "client_name": "Claude",
            "redirect_uris": ["https://claude.ai/cb"],
        }))
        .unwrap_err();
        assert!(matches!(err, DocumentError::ClientIdMismatch { .. }), "{err}");
    }
}
