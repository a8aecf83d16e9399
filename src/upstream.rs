//! The upstream OAuth client: builds the upstream authorization URL and calls
//! the upstream token, userinfo and discovery endpoints with awc.
//!
//! One pooled awc client per worker thread (awc clients are not `Send`), with
//! the configured timeout and redirects off: an OAuth endpoint that redirects a
//! POST carrying credentials must not be followed.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value};
use url::form_urlencoded::byte_serialize;
use url::Url;

use crate::config::{UpstreamAuthMethod, UpstreamConfig, UpstreamEndpoints};
use crate::metrics::{UpstreamEndpoint, UpstreamMetrics, UpstreamOutcome};
use crate::oauth::now_secs;
use crate::records::UpstreamTokens;

/// Largest upstream answer read (token and userinfo documents are small).
const MAX_BODY: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("the upstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the upstream could not be reached: {0}")]
    Unreachable(String),
    /// The upstream answered with an OAuth error.
    #[error("the upstream refused: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Rejected { error: String, description: Option<String> },
    #[error("the upstream answered HTTP {0}")]
    Status(u16),
    #[error("the upstream answer was not valid: {0}")]
    InvalidResponse(String),
    /// An endpoint URL that awc cannot send to (checked at start-up).
    #[error("the upstream endpoint {0} is not a valid HTTP request URI")]
    InvalidEndpoint(String),
}

impl UpstreamError {
    /// Whether the upstream refused the grant itself (not a passing failure).
    pub fn is_grant_refused(&self) -> bool {
        matches!(self, UpstreamError::Rejected { error, .. } if error == "invalid_grant" || error == "unauthorized_client")
    }

    /// Whether trying again later may succeed.
    /// The `outcome` label of a call that failed so.
    fn outcome(&self) -> UpstreamOutcome {
        match self {
            UpstreamError::Timeout(_) => UpstreamOutcome::Timeout,
            UpstreamError::Unreachable(_) => UpstreamOutcome::Unreachable,
            UpstreamError::Rejected { .. } => UpstreamOutcome::Rejected,
            UpstreamError::Status(_) => UpstreamOutcome::Status,
            UpstreamError::InvalidResponse(_) | UpstreamError::InvalidEndpoint(_) => UpstreamOutcome::InvalidResponse,
        }
    }

    pub fn is_transient(&self) -> bool {
        match self {
            UpstreamError::Timeout(_) | UpstreamError::Unreachable(_) => true,
            UpstreamError::Status(status) => *status >= 500 || *status == 429,
            UpstreamError::Rejected { error, .. } => error == "temporarily_unavailable" || error == "server_error",
            UpstreamError::InvalidResponse(_) | UpstreamError::InvalidEndpoint(_) => false,
        }
    }
}

/// Resolved upstream endpoints and the proxy's client credentials there.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub authorization_endpoint: Url,
    pub token_endpoint: Url,
    pub userinfo_endpoint: Option<Url>,
    pub revocation_endpoint: Option<Url>,
    client_id: String,
    client_secret: SecretString,
    auth_method: UpstreamAuthMethod,
    timeout: Duration,
    /// The `Authorization: Basic` value, built once.
    basic_authorization: SecretString,
    /// The proxy's callback URL, registered with the upstream client.
    callback: String,
    /// The authorization URL with every parameter that does not change per
    /// request already encoded; each request appends `state` and
    /// `code_challenge`.
    authorization_prefix: String,
    /// The token endpoint, parsed once for awc.
    token_uri: actix_web::http::Uri,
    /// Every call counted by endpoint and outcome, and timed.
    metrics: UpstreamMetrics,
}

/// RFC 6749 §2.3.1: form-urlencode id and secret, then base64.
fn basic_authorization(client_id: &str, client_secret: &SecretString) -> SecretString {
    let id: String = byte_serialize(client_id.as_bytes()).collect();
    let secret: String = byte_serialize(client_secret.expose_secret().as_bytes()).collect();
    SecretString::from(format!("Basic {}", STANDARD.encode(format!("{id}:{secret}"))))
}

/// A worker's pooled client, with the timeout and TLS set-up it was built for.
type PooledClient = (Duration, Arc<rustls::ClientConfig>, awc::Client);

thread_local! {
    static CLIENT: RefCell<Option<PooledClient>> = const { RefCell::new(None) };
}

/// The worker's pooled client for `timeout` (built on first use), trusting
/// the roots of this thread's outbound TLS set-up (`OAUTH_PROXY_EXTRA_CA_FILE`
/// included, see [`crate::tls`]).
fn http_client(timeout: Duration) -> awc::Client {
    let tls = crate::tls::client_config();
    CLIENT.with(|cell| {
        let mut slot = cell.borrow_mut();
        match &*slot {
            Some((t, built_for, client)) if *t == timeout && Arc::ptr_eq(built_for, &tls) => client.clone(),
            _ => {
                let client = awc::Client::builder()
                    .disable_redirects()
                    .timeout(timeout)
                    .connector(awc::Connector::new().timeout(timeout).rustls_0_23(tls.clone()))
                    .add_default_header((
                        header::USER_AGENT,
                        concat!("mcp-oauth-proxy/", env!("CARGO_PKG_VERSION")),
                    ))
                    .finish();
                *slot = Some((timeout, tls, client.clone()));
                client
            }
        }
    })
}

/// RFC 6749 §5.1 token response (tolerant of strings where numbers belong).
#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<Value>,
    refresh_token: Option<String>,
    id_token: Option<String>,
    scope: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

impl Upstream {
    /// Resolves the endpoints, fetching the discovery document when only the
    /// upstream issuer is configured. Calls are counted in `metrics`.
    pub async fn resolve(
        config: &UpstreamConfig,
        callback: String,
        metrics: UpstreamMetrics,
    ) -> Result<Upstream, UpstreamError> {
        let (authorization_endpoint, token_endpoint, mut userinfo, mut revocation) = match &config.endpoints {
            UpstreamEndpoints::Explicit {
                authorization_endpoint,
                token_endpoint,
            } => (authorization_endpoint.clone(), token_endpoint.clone(), None, None),
            UpstreamEndpoints::Discover { issuer } => discover(issuer, config.timeout, &metrics).await?,
        };
        if config.userinfo_endpoint.is_some() {
            userinfo = config.userinfo_endpoint.clone();
        }
        if config.revocation_endpoint.is_some() {
            revocation = config.revocation_endpoint.clone();
        }
        let authorization_prefix = authorization_prefix(&authorization_endpoint, config, &callback);
        let token_uri = token_endpoint
            .as_str()
            .parse()
            .map_err(|_| UpstreamError::InvalidEndpoint(token_endpoint.to_string()))?;
        Ok(Upstream {
            authorization_endpoint,
            token_endpoint,
            callback,
            authorization_prefix,
            token_uri,
            userinfo_endpoint: userinfo,
            revocation_endpoint: revocation,
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            auth_method: config.auth_method,
            timeout: config.timeout,
            basic_authorization: basic_authorization(&config.client_id, &config.client_secret),
            metrics,
        })
    }

    /// Runs one call to `endpoint`, counting it by outcome and timing it.
    async fn observed<T>(
        &self,
        endpoint: UpstreamEndpoint,
        call: impl std::future::Future<Output = Result<T, UpstreamError>>,
    ) -> Result<T, UpstreamError> {
        let started = Instant::now();
        let result = call.await;
        let outcome = result
            .as_ref()
            .map_or_else(UpstreamError::outcome, |_| UpstreamOutcome::Success);
        self.metrics.observe(endpoint, outcome, started.elapsed());
        result
    }

    /// The upstream authorization URL. The client's `resource` is never
    /// forwarded: upstreams reject resources they do not know.
    pub fn authorization_url(&self, state: &str, code_challenge: &str) -> String {
        let mut url = String::with_capacity(self.authorization_prefix.len() + state.len() + code_challenge.len() + 32);
        url.push_str(&self.authorization_prefix);
        // The prefix always holds a query, so the serializer joins with `&`.
        url::form_urlencoded::Serializer::for_suffix(url, 0)
            .append_pair("state", state)
            .append_pair("code_challenge", code_challenge)
            .finish()
    }

    /// Exchanges an upstream authorization code at the callback.
    pub async fn exchange_code(&self, code: &str, verifier: Option<&str>) -> Result<UpstreamTokens, UpstreamError> {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.callback.as_str()),
        ];
        if let Some(verifier) = verifier {
            form.push(("code_verifier", verifier));
        }
        self.token_request(form, None).await
    }

    /// Refreshes upstream with the proxy's credentials; keeps the old refresh
    /// token when the upstream does not send a new one.
    pub async fn refresh(&self, refresh_token: &str) -> Result<UpstreamTokens, UpstreamError> {
        let form = vec![("grant_type", "refresh_token"), ("refresh_token", refresh_token)];
        self.token_request(form, Some(refresh_token)).await
    }

    async fn token_request(
        &self,
        form: Vec<(&str, &str)>,
        previous_refresh: Option<&str>,
    ) -> Result<UpstreamTokens, UpstreamError> {
        self.observed(UpstreamEndpoint::Token, self.token_call(form, previous_refresh))
            .await
    }

    async fn token_call(
        &self,
        form: Vec<(&str, &str)>,
        previous_refresh: Option<&str>,
    ) -> Result<UpstreamTokens, UpstreamError> {
        let (request, form) = self.authenticated(self.token_uri.clone(), form);
        let mut response = request.send_form(&form).await.map_err(|e| self.send_error(e))?;
        let status = response.status();
        let body = response.body().limit(MAX_BODY).await.map_err(|e| match e {
            awc::error::PayloadError::Io(ref io) if io.kind() == std::io::ErrorKind::TimedOut => {
                UpstreamError::Timeout(self.timeout)
            }
            other => UpstreamError::InvalidResponse(other.to_string()),
        })?;
        if status.is_server_error() {
            return Err(UpstreamError::Status(status.as_u16()));
        }
        let parsed: Option<TokenResponse> = serde_json::from_slice(&body).ok();
        let Some(parsed) = parsed else {
            if !status.is_success() {
                return Err(UpstreamError::Status(status.as_u16()));
            }
            return Err(UpstreamError::InvalidResponse("the token response is not JSON".into()));
        };
        // GitHub answers some errors with 200 and an `error` field.
        if let Some(error) = parsed.error {
            return Err(UpstreamError::Rejected {
                error,
                description: parsed.error_description,
            });
        }
        if !status.is_success() {
            return Err(UpstreamError::Status(status.as_u16()));
        }
        let access_token = parsed
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| UpstreamError::InvalidResponse("the token response has no access_token".into()))?;
        let expires_in = parsed.expires_in.and_then(|v| match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        });
        Ok(UpstreamTokens {
            access_token,
            token_type: parsed.token_type.unwrap_or_else(|| "Bearer".into()),
            refresh_token: parsed.refresh_token.or_else(|| previous_refresh.map(String::from)),
            id_token: parsed.id_token,
            expires_at: expires_in.map(|s| now_secs() + s),
            scope: parsed.scope,
        })
    }

    /// A POST to an upstream endpoint with the proxy's client authentication.
    fn authenticated<'a, U>(
        &'a self,
        url: U,
        mut form: Vec<(&'a str, &'a str)>,
    ) -> (awc::ClientRequest, Vec<(&'a str, &'a str)>)
    where
        actix_web::http::Uri: TryFrom<U>,
        <actix_web::http::Uri as TryFrom<U>>::Error: Into<awc::error::HttpError>,
    {
        let mut request = http_client(self.timeout)
            .post(url)
            .insert_header((header::ACCEPT, "application/json"));
        match self.auth_method {
            UpstreamAuthMethod::ClientSecretBasic => {
                request = request.insert_header((header::AUTHORIZATION, self.basic_authorization.expose_secret()));
            }
            UpstreamAuthMethod::ClientSecretPost => {
                form.push(("client_id", &self.client_id));
                form.push(("client_secret", self.client_secret.expose_secret()));
            }
        }
        (request, form)
    }

    /// RFC 7009 revocation at the upstream, when it has an endpoint.
    pub async fn revoke(&self, token: &str, hint: &str) -> Result<(), UpstreamError> {
        let Some(endpoint) = &self.revocation_endpoint else {
            return Ok(());
        };
        let call = async {
            let (request, form) =
                self.authenticated(endpoint.as_str(), vec![("token", token), ("token_type_hint", hint)]);
            let response = request.send_form(&form).await.map_err(|e| self.send_error(e))?;
            if response.status().is_success() {
                Ok(())
            } else {
                Err(UpstreamError::Status(response.status().as_u16()))
            }
        };
        self.observed(UpstreamEndpoint::Revocation, call).await
    }

    /// Fetches userinfo with the upstream access token.
    pub async fn userinfo(&self, access_token: &str) -> Result<Map<String, Value>, UpstreamError> {
        let Some(endpoint) = &self.userinfo_endpoint else {
            return Ok(Map::new());
        };
        self.observed(UpstreamEndpoint::Userinfo, self.userinfo_call(endpoint, access_token))
            .await
    }

    async fn userinfo_call(&self, endpoint: &Url, access_token: &str) -> Result<Map<String, Value>, UpstreamError> {
        let mut response = http_client(self.timeout)
            .get(endpoint.as_str())
            .insert_header((header::AUTHORIZATION, format!("Bearer {access_token}")))
            .insert_header((header::ACCEPT, "application/json"))
            .send()
            .await
            .map_err(|e| self.send_error(e))?;
        if !response.status().is_success() {
            return Err(UpstreamError::Status(response.status().as_u16()));
        }
        let body = response
            .body()
            .limit(MAX_BODY)
            .await
            .map_err(|e| UpstreamError::InvalidResponse(e.to_string()))?;
        serde_json::from_slice(&body)
            .map_err(|_| UpstreamError::InvalidResponse("userinfo is not a JSON object".into()))
    }

    fn send_error(&self, error: awc::error::SendRequestError) -> UpstreamError {
        match error {
            awc::error::SendRequestError::Timeout
            | awc::error::SendRequestError::Connect(awc::error::ConnectError::Timeout) => {
                UpstreamError::Timeout(self.timeout)
            }
            other => UpstreamError::Unreachable(other.to_string()),
        }
    }
}

/// The authorization endpoint with the parameters that are the same for
/// every request (RFC 6749 §4.1.1, RFC 7636 §4.3). The endpoint's own query
/// is kept; a fragment, which RFC 6749 §3.1 forbids there, is dropped.
fn authorization_prefix(endpoint: &Url, config: &UpstreamConfig, callback: &str) -> String {
    let mut url = endpoint.clone();
    url.set_fragment(None);
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("response_type", "code")
            .append_pair("client_id", &config.client_id)
            .append_pair("redirect_uri", callback)
            .append_pair("code_challenge_method", "S256");
        if !config.scopes.is_empty() {
            query.append_pair("scope", &config.scopes.join(" "));
        }
        for (name, value) in &config.extra_authorize_params {
            query.append_pair(name, value);
        }
    }
    url.into()
}

type DiscoveredEndpoints = (Url, Url, Option<Url>, Option<Url>);

/// OIDC discovery, then RFC 8414 metadata, for the upstream issuer; each
/// document asked for is counted in `metrics`.
async fn discover(
    issuer: &Url,
    timeout: Duration,
    metrics: &UpstreamMetrics,
) -> Result<DiscoveredEndpoints, UpstreamError> {
    let base = issuer.as_str().trim_end_matches('/');
    let candidates = [
        format!("{base}/.well-known/openid-configuration"),
        format!(
            "{}/.well-known/oauth-authorization-server{}",
            issuer.origin().ascii_serialization(),
            issuer.path().trim_end_matches('/')
        ),
    ];
    let mut last_error = UpstreamError::InvalidResponse("no discovery document".into());
    for candidate in candidates {
        let started = Instant::now();
        let (outcome, found) = discovery_document(&candidate, timeout, &mut last_error).await;
        metrics.observe(UpstreamEndpoint::Discovery, outcome, started.elapsed());
        if let Some(found) = found {
            return Ok(found);
        }
    }
    Err(last_error)
}

/// One discovery document's endpoints, if it answers with them; how the
/// call went; `last_error` set to why not (kept when the body is unreadable).
async fn discovery_document(
    candidate: &str,
    timeout: Duration,
    last_error: &mut UpstreamError,
) -> (UpstreamOutcome, Option<DiscoveredEndpoints>) {
    let response = http_client(timeout).get(candidate).send().await;
    let mut response = match response {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => {
            *last_error = UpstreamError::Status(r.status().as_u16());
            return (UpstreamOutcome::Status, None);
        }
        Err(e) => {
            *last_error = UpstreamError::Unreachable(e.to_string());
            return (UpstreamOutcome::Unreachable, None);
        }
    };
    let Ok(body) = response.body().limit(MAX_BODY).await else {
        return (UpstreamOutcome::InvalidResponse, None);
    };
    let Ok(document) = serde_json::from_slice::<Value>(&body) else {
        return (UpstreamOutcome::InvalidResponse, None);
    };
    let endpoint = |name: &str| {
        document
            .get(name)
            .and_then(Value::as_str)
            .and_then(|s| Url::parse(s).ok())
    };
    if let (Some(authorization), Some(token)) = (endpoint("authorization_endpoint"), endpoint("token_endpoint")) {
        let found = (
            authorization,
            token,
            endpoint("userinfo_endpoint"),
            endpoint("revocation_endpoint"),
        );
        return (UpstreamOutcome::Success, Some(found));
    }
    *last_error = UpstreamError::InvalidResponse(format!("{candidate} lacks the endpoints"));
    (UpstreamOutcome::InvalidResponse, None)
}

/// The claims named in `wanted` from the payload of a JWT, read without
/// verifying its signature: used only for an ID token received directly
/// from the upstream token endpoint over TLS (OIDC Core §3.1.3.7 item 6), or
/// a JWT access token, to copy claims. Anything that is not a compact JWS
/// (three base64url parts, RFC 7515 §7.1) whose payload is one JSON object
/// gives `None`. Only the payload is read: the header (whatever its `alg`)
/// plays no part in copying claims.
pub fn unverified_jwt_claims(token: &str, wanted: &[&str]) -> Option<Map<String, Value>> {
    let mut claims: Map<String, Value> = jsonwebtoken::dangerous::insecure_decode_claims(token).ok()?;
    claims.retain(|name, _| wanted.contains(&name.as_str()));
    Some(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn jwt(payload: &str) -> String {
        format!("eyJhbGciOiJSUzI1NiJ9.{}.c2ln", URL_SAFE_NO_PAD.encode(payload))
    }

    #[test]
    fn only_the_wanted_claims_are_read_from_a_token() {
        let token = jwt(r#"{"iss":"https://up","sub":"user-1","em\u0061il":"a@b","groups":["x",{"y":1}],"exp":9}"#);
        let claims = unverified_jwt_claims(&token, &["sub", "email", "groups", "name"]).unwrap();
        assert_eq!(
            Value::Object(claims),
            serde_json::json!({"sub": "user-1", "email": "a@b", "groups": ["x", {"y": 1}]})
        );
    }

    #[test]
    fn a_token_whose_payload_is_not_a_json_object_gives_no_claims() {
        for payload in [r#"["sub"]"#, r#"{"sub":"a"} trailing"#, r#"{"sub":"#, "not json"] {
            assert!(unverified_jwt_claims(&jwt(payload), &["sub"]).is_none(), "{payload}");
        }
        assert!(unverified_jwt_claims("opaque-access-token", &["sub"]).is_none());
    }

    #[test]
    fn a_token_that_is_not_three_base64url_parts_gives_no_claims() {
        let payload = URL_SAFE_NO_PAD.encode(r#"{"sub":"a"}"#);
        for token in [
            String::new(),
            ".".to_string(),
            "..".to_string(),
            format!("eyJhbGciOiJSUzI1NiJ9.{payload}"),
            format!("eyJhbGciOiJSUzI1NiJ9.{payload}.c2ln.extra"),
            format!("eyJhbGciOiJSUzI1NiJ9.{payload}!.c2ln"),
            format!("eyJhbGciOiJSUzI1NiJ9.{}.c2ln", "\u{e9}"),
        ] {
            assert!(unverified_jwt_claims(&token, &["sub"]).is_none(), "{token}");
        }
    }

    #[test]
    fn the_header_plays_no_part_in_reading_the_claims() {
        // An algorithm jsonwebtoken does not know, and a header that is not JSON.
        let payload = URL_SAFE_NO_PAD.encode(r#"{"sub":"user-1"}"#);
        for header in [URL_SAFE_NO_PAD.encode(r#"{"alg":"ES512"}"#), "bm90IGpzb24".to_string()] {
            let claims = unverified_jwt_claims(&format!("{header}.{payload}.c2ln"), &["sub"]).unwrap();
            assert_eq!(Value::Object(claims), serde_json::json!({"sub": "user-1"}));
        }
    }

    #[test]
    fn a_payload_with_none_of_the_wanted_claims_gives_an_empty_set() {
        let claims = unverified_jwt_claims(&jwt(r#"{"iss":"https://up"}"#), &["sub"]).unwrap();
        assert!(claims.is_empty());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Whatever the upstream returns as a token, reading its claims
            /// answers (never panics).
            #[test]
            fn arbitrary_tokens_are_read_without_panicking(token in ".{0,300}") {
                let _ = unverified_jwt_claims(&token, &["sub"]);
            }

            /// Any JSON object payload gives exactly its wanted members.
            #[test]
            fn the_claims_read_are_the_wanted_members_of_the_payload(
                members in proptest::collection::btree_map("[a-z]{1,4}", any::<i64>(), 0..8),
            ) {
                let token = jwt(&serde_json::to_string(&members).unwrap());
                let claims = unverified_jwt_claims(&token, &["a", "sub", "ab"]).unwrap();
                let expected: Map<String, Value> = members
                    .iter()
                    .filter(|(name, _)| ["a", "sub", "ab"].contains(&name.as_str()))
                    .map(|(name, value)| (name.clone(), Value::from(*value)))
                    .collect();
                prop_assert_eq!(claims, expected);
            }
        }
    }
}
