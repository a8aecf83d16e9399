//! The request and response types of the authorization-server flows: what
//! the handlers in `routes` parse requests into and what they turn into
//! responses.

use std::borrow::Cow;
use std::rc::Rc;

use serde::Serialize;
use url::Url;

use crate::error::PageReason;
use crate::oauth::client::RegisteredClient;
use secrecy::SecretString;

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

impl From<AuthorizeQueryError> for PageReason {
    fn from(refusal: AuthorizeQueryError) -> Self {
        match refusal {
            AuthorizeQueryError::TooLong => PageReason::AuthorizeQueryTooLong,
            AuthorizeQueryError::StateTooLong => PageReason::StateTooLong,
            AuthorizeQueryError::Unreadable => PageReason::AuthorizeQueryUnreadable,
        }
    }
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
    /// Remembered approvals: registered client ids, and for document
    /// clients a key bound to the redirect URI too
    /// (`proxy::authorize::remembered_key`).
    pub remembered_clients: Vec<String>,
}

/// The data the consent page shows.
#[derive(Debug, Clone)]
pub struct ConsentPrompt {
    pub transaction_id: String,
    pub csrf_token: String,
    pub client_id: String,
    /// The name the client gives (registered, or stated by its document).
    pub client_name: String,
    /// What the page says of a document client (`None`: a registered one).
    pub document: Option<DocumentConsent>,
    pub redirect_uri: Url,
    pub scopes: Vec<String>,
    /// Origins the consent form may lead to (for the CSP `form-action`).
    pub form_targets: Vec<String>,
}

/// What the consent page shows of a client metadata document.
#[derive(Debug, Clone)]
pub struct DocumentConsent {
    /// The document's host: the origin the proxy verified by fetching the
    /// document over https. The client name is only that host's claim.
    pub host: String,
    /// Every redirect URI is loopback: an app on the user's machine, whose
    /// name anyone can claim in a document of their own.
    pub local_app: bool,
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
        /// What to add to the browser's remembered approvals, when asked.
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
    pub client_secret: Option<SecretString>,
    /// Sent with HTTP Basic (the 401 then carries a Basic challenge).
    pub via_basic: bool,
    /// A `private_key_jwt` client assertion (RFC 7523 §2.2), the only
    /// credential when present (`client_secret` is then `None`).
    pub client_assertion: Option<SecretString>,
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

/// RFC 7591 §3.2.1 client information: the registered client, with its
/// secret in clear this once (confidential clients).
#[derive(Debug)]
pub struct ClientInformation {
    pub client: Rc<RegisteredClient>,
    pub client_secret: Option<String>,
    /// As registered (only decides the redirect URIs kept; not stored).
    pub application_type: Option<crate::oauth::client::ApplicationType>,
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
            #[serde(skip_serializing_if = "Option::is_none")]
            application_type: Option<crate::oauth::client::ApplicationType>,
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
            application_type: self.application_type,
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
