//! Dynamic client registration (RFC 7591): the request, its validation and
//! the registered client record.

use serde::{Deserialize, Serialize};

use super::redirect_uri::{RedirectUri, RedirectUriError};
use crate::error::{Error, ErrorCode};

/// How a client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenEndpointAuthMethod {
    None,
    ClientSecretBasic,
    ClientSecretPost,
    /// RFC 7523 §2.2: a client assertion signed with the client's key
    /// (document clients with `jwks` or `jwks_uri`).
    PrivateKeyJwt,
}

impl TokenEndpointAuthMethod {
    pub fn is_confidential(self) -> bool {
        self != TokenEndpointAuthMethod::None
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TokenEndpointAuthMethod::None => "none",
            TokenEndpointAuthMethod::ClientSecretBasic => "client_secret_basic",
            TokenEndpointAuthMethod::ClientSecretPost => "client_secret_post",
            TokenEndpointAuthMethod::PrivateKeyJwt => "private_key_jwt",
        }
    }
}

/// The RFC 7591 §2 metadata the proxy understands; other fields are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RegistrationRequest {
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    pub token_endpoint_auth_method: Option<String>,
    pub grant_types: Option<Vec<String>>,
    pub response_types: Option<Vec<String>>,
    pub client_name: Option<String>,
    pub client_uri: Option<String>,
    pub logo_uri: Option<String>,
    pub scope: Option<String>,
    pub software_id: Option<String>,
    pub software_version: Option<String>,
}

/// A registered client as stored by the client registry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisteredClient {
    pub client_id: String,
    /// SHA-256 of the client secret (base64url); secrets are high-entropy
    /// random strings, so a fast hash is enough and nothing usable is stored.
    pub client_secret_hash: Option<String>,
    pub redirect_uris: Vec<String>,
    pub token_endpoint_auth_method: TokenEndpointAuthMethod,
    pub grant_types: Vec<String>,
    pub client_name: Option<String>,
    pub client_uri: Option<String>,
    pub scope: Option<String>,
    pub issued_at: u64,
    /// A document client's facts (`None`: a registered client). Not part of
    /// the stored record: document clients are not stored as registrations.
    #[serde(skip)]
    pub document: Option<std::sync::Arc<super::client_document::DocumentFacts>>,
}

impl RegisteredClient {
    /// The registered redirect URIs, parsed (they were validated on the way in).
    pub fn redirect_uris(&self) -> impl Iterator<Item = RedirectUri> + '_ {
        self.redirect_uris
            .iter()
            .filter_map(|u| RedirectUri::parse(u, None).ok())
    }

    /// The name shown on the consent page.
    pub fn display_name(&self) -> &str {
        self.client_name
            .as_deref()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or("Unnamed MCP client")
    }
}

/// What validation keeps from a registration request.
#[derive(Debug, Clone)]
pub struct ValidRegistration {
    pub redirect_uris: Vec<String>,
    pub auth_method: TokenEndpointAuthMethod,
    pub grant_types: Vec<String>,
    pub client_name: Option<String>,
    pub client_uri: Option<String>,
    pub scope: Option<String>,
}

const MAX_REDIRECT_URIS: usize = 20;
const MAX_URI_LEN: usize = 2000;
const MAX_NAME_LEN: usize = 200;

impl RegistrationRequest {
    /// Validates the request. Redirect URIs that the rules or the operator's
    /// patterns refuse are dropped; only when none is left is the request
    /// refused (Cursor sends `cursor://`, https and loopback URIs together).
    pub fn validate(self, patterns: Option<&[String]>) -> Result<ValidRegistration, Error> {
        if self.redirect_uris.is_empty() {
            return Err(Error::oauth(ErrorCode::InvalidRedirectUri, "redirect_uris is required"));
        }
        if self.redirect_uris.len() > MAX_REDIRECT_URIS {
            return Err(Error::oauth(
                ErrorCode::InvalidRedirectUri,
                format!("at most {MAX_REDIRECT_URIS} redirect_uris are accepted"),
            ));
        }
        let mut kept = Vec::new();
        let mut refused: Vec<RedirectUriError> = Vec::new();
        for raw in &self.redirect_uris {
            if raw.len() > MAX_URI_LEN {
                continue;
            }
            match RedirectUri::parse(raw, patterns) {
                Ok(uri) if !kept.contains(&uri.as_str().to_string()) => kept.push(uri.as_str().to_string()),
                Ok(_) => {}
                Err(e) => refused.push(e),
            }
        }
        if kept.is_empty() {
            let why = refused
                .first()
                .map(|e| e.to_string())
                .unwrap_or_else(|| "redirect URI too long".into());
            return Err(Error::oauth(
                ErrorCode::InvalidRedirectUri,
                format!("no acceptable redirect URI: {why}"),
            ));
        }

        let auth_method = match self.token_endpoint_auth_method.as_deref() {
            // RFC 7591 §2: the default is client_secret_basic.
            None | Some("client_secret_basic") => TokenEndpointAuthMethod::ClientSecretBasic,
            Some("client_secret_post") => TokenEndpointAuthMethod::ClientSecretPost,
            Some("none") => TokenEndpointAuthMethod::None,
            Some(other) => {
                return Err(Error::oauth(
                    ErrorCode::InvalidClientMetadata,
                    format!("token_endpoint_auth_method `{other}` is not supported"),
                ))
            }
        };

        let grant_types = self
            .grant_types
            .unwrap_or_else(|| vec!["authorization_code".into(), "refresh_token".into()]);
        if let Some(bad) = grant_types
            .iter()
            .find(|g| !matches!(g.as_str(), "authorization_code" | "refresh_token"))
        {
            return Err(Error::oauth(
                ErrorCode::InvalidClientMetadata,
                format!("grant type `{bad}` is not supported"),
            ));
        }
        if let Some(types) = &self.response_types {
            if types.iter().any(|t| t != "code") {
                return Err(Error::oauth(
                    ErrorCode::InvalidClientMetadata,
                    "only the `code` response type is supported",
                ));
            }
        }

        let client_name = self.client_name.map(|n| n.chars().take(MAX_NAME_LEN).collect());
        let client_uri = self
            .client_uri
            .filter(|u| u.len() <= MAX_URI_LEN && url::Url::parse(u).is_ok_and(|u| u.scheme() == "https"));
        let scope = self
            .scope
            .map(|s| super::scope::Scopes::parse(&s).to_oauth_string())
            .filter(|s| !s.is_empty());

        Ok(ValidRegistration {
            redirect_uris: kept,
            auth_method,
            grant_types,
            client_name,
            client_uri,
            scope,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uris: &[&str]) -> RegistrationRequest {
        RegistrationRequest {
            redirect_uris: uris.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn partly_allowed_redirect_uris_keep_the_allowed_ones() {
        let valid = request(&["javascript:alert(1)", "http://127.0.0.1:1/cb", "http://evil.com/cb"])
            .validate(None)
            .unwrap();
        assert_eq!(valid.redirect_uris, ["http://127.0.0.1:1/cb"]);
    }

    #[test]
    fn no_allowed_redirect_uri_is_invalid_redirect_uri() {
        let err = request(&["http://evil.com/cb"]).validate(None).unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::InvalidRedirectUri));
    }

    #[test]
    fn the_default_auth_method_is_client_secret_basic() {
        let valid = request(&["https://app.example/cb"]).validate(None).unwrap();
        assert_eq!(valid.auth_method, TokenEndpointAuthMethod::ClientSecretBasic);
    }
}
