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

/// OpenID Connect Dynamic Client Registration 1.0 §2 `application_type`, as
/// MCP authorization 2026-07-28 asks DCR clients to send it.
///
/// The proxy is no OpenID provider, so an absent value is not read as
/// OIDC's default `web` (the MCP text: "non-OIDC servers safely ignore the
/// parameter"): clients that never send it (Cursor, older SDKs) keep the
/// default rules, which are `native`'s. It is not stored: it only decides
/// which redirect URIs a registration keeps, and the kept ones are what
/// `/authorize` matches against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplicationType {
    /// Redirect URIs are https on a host that is not this machine.
    Web,
    /// Loopback http (any port), private-use schemes (`cursor://`) and https
    /// (RFC 8252 §7).
    Native,
}

impl ApplicationType {
    fn parse(raw: &str) -> Result<Self, Error> {
        match raw {
            "web" => Ok(ApplicationType::Web),
            "native" => Ok(ApplicationType::Native),
            other => Err(Error::oauth(
                ErrorCode::InvalidClientMetadata,
                format!("application_type `{other}` is not supported (`web` or `native`)"),
            )),
        }
    }

    /// Why this type of client may not use `uri` (which passed the general
    /// rules), if it may not.
    fn refuses(self, uri: &RedirectUri) -> Option<String> {
        let url = uri.url();
        match self {
            ApplicationType::Native => None,
            // OIDC Registration §2: web clients register https URLs and
            // MUST NOT use localhost (nor a loopback address) as the host.
            ApplicationType::Web if url.scheme() != "https" => Some(format!(
                "`{}`: a web client's redirect URIs must be https",
                uri.as_str()
            )),
            ApplicationType::Web if is_this_machine(url) => Some(format!(
                "`{}`: a web client's redirect URIs must not be loopback or localhost (register as `native`)",
                uri.as_str()
            )),
            ApplicationType::Web => None,
        }
    }
}

/// A loopback address or a `localhost` name (RFC 6761 §6.3: `*.localhost` too).
fn is_this_machine(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(domain)) => {
            let domain = domain.trim_end_matches('.').to_ascii_lowercase();
            domain == "localhost" || domain.ends_with(".localhost")
        }
        None => false,
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
    /// OIDC Registration §2: `web` or `native` (see [`ApplicationType`]).
    pub application_type: Option<String>,
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
    /// As the client sent it (echoed in the answer, not stored).
    pub application_type: Option<ApplicationType>,
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
        let application_type = self
            .application_type
            .as_deref()
            .map(ApplicationType::parse)
            .transpose()?;
        let mut kept = Vec::new();
        let mut refused: Vec<String> = Vec::new();
        for raw in &self.redirect_uris {
            if raw.len() > MAX_URI_LEN {
                continue;
            }
            let uri = RedirectUri::parse(raw, patterns).map_err(|e: RedirectUriError| e.to_string());
            let uri = uri.and_then(|uri| match application_type.and_then(|t| t.refuses(&uri)) {
                Some(why) => Err(why),
                None => Ok(uri),
            });
            match uri {
                Ok(uri) if !kept.contains(&uri.as_str().to_string()) => kept.push(uri.as_str().to_string()),
                Ok(_) => {}
                Err(why) => refused.push(why),
            }
        }
        if kept.is_empty() {
            let why = refused
                .into_iter()
                .next()
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
            application_type,
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

    fn typed(application_type: &str, uris: &[&str]) -> Result<ValidRegistration, Error> {
        RegistrationRequest {
            application_type: Some(application_type.into()),
            ..request(uris)
        }
        .validate(None)
    }

    #[test]
    fn each_application_type_keeps_the_redirect_uris_its_rules_allow() {
        let uris = [
            "https://app.example/cb",
            "https://localhost/cb",
            "https://LOCALHOST./cb",
            "https://dev.localhost/cb",
            "https://127.0.0.2/cb",
            "https://[::1]:8443/cb",
            "http://127.0.0.1:1234/cb",
            "http://localhost/cb",
            "cursor://anysphere.cursor-retrieval/oauth/callback",
        ];
        // (application type, the URIs kept)
        let rows: [(&str, &[&str]); 2] = [
            ("web", &["https://app.example/cb"]),
            (
                "native",
                &[
                    "https://app.example/cb",
                    "https://localhost/cb",
                    "https://localhost./cb",
                    "https://dev.localhost/cb",
                    "https://127.0.0.2/cb",
                    "https://[::1]:8443/cb",
                    "http://127.0.0.1:1234/cb",
                    "http://localhost/cb",
                    "cursor://anysphere.cursor-retrieval/oauth/callback",
                ],
            ),
        ];
        for (application_type, kept) in rows {
            let valid = typed(application_type, &uris).unwrap();
            assert_eq!(valid.redirect_uris, kept, "{application_type}");
        }
        assert_eq!(
            typed("web", &uris).unwrap().application_type,
            Some(ApplicationType::Web)
        );
        assert_eq!(request(&uris).validate(None).unwrap().application_type, None);
    }

    #[test]
    fn an_unknown_application_type_is_invalid_client_metadata() {
        for application_type in ["desktop", "WEB", "", " native"] {
            let err = typed(application_type, &["https://app.example/cb"]).unwrap_err();
            assert_eq!(
                err.code(),
                Some(ErrorCode::InvalidClientMetadata),
                "{application_type:?}"
            );
        }
    }
}
