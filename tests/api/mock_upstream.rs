//! A mock upstream OAuth 2.0 / OpenID Connect provider for integration tests.
//!
//! It runs a real actix-web `HttpServer` on `127.0.0.1:0` inside the current
//! actix `System` and implements just enough of an authorization server to
//! drive the proxy end to end: discovery documents, an auto-approving
//! `/authorize`, `/token` (authorization_code with PKCE S256 and
//! refresh_token with optional rotation), `/userinfo` and `/revoke`.
//! Every request is recorded so tests can assert on what the proxy sent, and
//! the `/token` endpoint can be switched into failure modes.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::dev::ServerHandle;
use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use url::Url;

/// How the proxy must authenticate to the upstream token endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpstreamAuthMethod {
    /// `Authorization: Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 §2.3.1).
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

/// How `/token` answers.
#[derive(Clone, Debug, PartialEq)]
pub enum TokenBehavior {
    /// Normal OAuth processing.
    Normal,
    /// 500 with a JSON error body.
    ServerError,
    /// 200 with a `text/html` body `<html>oops</html>`.
    NonJson,
    /// Sleep, then answer normally (for client timeouts).
    Delay(Duration),
    /// Sleep, then answer 500 (a refresh that fails after others acted).
    DelayThenServerError(Duration),
    /// 400 `{"error":"invalid_grant","error_description":"..."}`.
    InvalidGrant,
}

/// Configuration of the fake provider and its single registered client / user.
#[derive(Clone, Debug)]
pub struct MockUpstreamConfig {
    pub client_id: String,
    pub client_secret: String,
    pub auth_method: UpstreamAuthMethod,
    /// Include a refresh_token in the authorization_code answer.
    pub issue_refresh_token: bool,
    /// The refresh grant returns a new refresh_token (and the old one becomes
    /// invalid); otherwise it returns none and the old one stays valid.
    pub rotate_refresh_token: bool,
    /// Include an id_token (an HS256 JWT signed with the client secret).
    pub issue_id_token: bool,
    /// `expires_in` to send; `None` omits the field.
    pub access_token_expires_in: Option<u64>,
    /// `sub` of the fake user.
    pub subject: String,
    pub email: String,
    pub name: String,
    /// Claims set over the ID token's own (a `null` value removes one).
    pub id_token_claims: Map<String, Value>,
    /// Claims set over userinfo's own (a `null` value removes one).
    pub userinfo_claims: Map<String, Value>,
    /// `Some`: access tokens are JWTs (HS256 with the client secret) with
    /// `iss`, `sub`, `iat`, `exp`, `jti` and these claims; `None`: opaque.
    pub access_token_claims: Option<Map<String, Value>>,
}

impl Default for MockUpstreamConfig {
    fn default() -> Self {
        MockUpstreamConfig {
            client_id: "upstream-client".to_string(),
            // Deliberately contains characters that must be form-urlencoded
            // inside HTTP Basic credentials (RFC 6749 §2.3.1).
            client_secret: "upstream-secret: with/odd&chars".to_string(),
            auth_method: UpstreamAuthMethod::ClientSecretBasic,
            issue_refresh_token: true,
            rotate_refresh_token: true,
            issue_id_token: true,
            access_token_expires_in: Some(3600),
            subject: "user-123".to_string(),
            email: "user@example.com".to_string(),
            name: "Test User".to_string(),
            id_token_claims: Map::new(),
            userinfo_claims: Map::new(),
            access_token_claims: None,
        }
    }
}

/// One recorded call to `/token`.
#[derive(Clone, Debug)]
pub struct RecordedTokenRequest {
    /// The decoded form body (last value wins for repeated keys).
    pub form: HashMap<String, String>,
    /// The raw `Authorization` header, if any.
    pub authorization_header: Option<String>,
}

/// An issued, not yet exchanged (or already exchanged) authorization code.
struct CodeGrant {
    redirect_uri: String,
    code_challenge: Option<String>,
    scope: String,
    nonce: Option<String>,
    used: bool,
}

/// Data carried along with a refresh token.
struct RefreshGrant {
    scope: String,
    valid: bool,
}

struct State {
    config: MockUpstreamConfig,
    base_url: String,
    token_behavior: TokenBehavior,
    deny_authorization: bool,
    authorize_requests: Vec<HashMap<String, String>>,
    token_requests: Vec<RecordedTokenRequest>,
    revoked_tokens: Vec<String>,
    revoked_set: HashSet<String>,
    issued_access_tokens: Vec<String>,
    codes: HashMap<String, CodeGrant>,
    refresh_tokens: HashMap<String, RefreshGrant>,
    counter: u64,
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> MutexGuard<'_, State> {
    // A panicking test thread must not make every later request panic too.
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running mock provider. Call [`MockUpstream::stop`] at the end of a test
/// (dropping it also asks the server to stop, without waiting).
pub struct MockUpstream {
    state: Shared,
    base_url: String,
    handle: Option<ServerHandle>,
    join: Option<actix_rt::task::JoinHandle<std::io::Result<()>>>,
}

impl MockUpstream {
    /// Binds `127.0.0.1:0` and runs the server (1 worker) in the current actix System.
    pub async fn start(config: MockUpstreamConfig) -> MockUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("mock upstream: bind 127.0.0.1:0");
        let port = listener.local_addr().expect("mock upstream: local_addr").port();
        let base_url = format!("http://127.0.0.1:{port}");
        let state: Shared = Arc::new(Mutex::new(State {
            config,
            base_url: base_url.clone(),
            token_behavior: TokenBehavior::Normal,
            deny_authorization: false,
            authorize_requests: Vec::new(),
            token_requests: Vec::new(),
            revoked_tokens: Vec::new(),
            revoked_set: HashSet::new(),
            issued_access_tokens: Vec::new(),
            codes: HashMap::new(),
            refresh_tokens: HashMap::new(),
            counter: 0,
        }));

        let app_state = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::from(app_state.clone()))
                .route("/.well-known/openid-configuration", web::get().to(discovery))
                .route("/.well-known/oauth-authorization-server", web::get().to(discovery))
                .route("/authorize", web::get().to(authorize))
                .route("/token", web::post().to(token))
                .route("/userinfo", web::get().to(userinfo))
                .route("/userinfo", web::post().to(userinfo))
                .route("/revoke", web::post().to(revoke))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)
        .expect("mock upstream: listen")
        .run();
        let handle = server.handle();
        let join = actix_rt::spawn(server);

        MockUpstream {
            state,
            base_url,
            handle: Some(handle),
            join: Some(join),
        }
    }

    /// `http://127.0.0.1:PORT` (also the issuer).
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    pub fn issuer(&self) -> String {
        self.base_url.clone()
    }

    pub fn authorization_endpoint(&self) -> String {
        format!("{}/authorize", self.base_url)
    }

    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.base_url)
    }

    pub fn userinfo_endpoint(&self) -> String {
        format!("{}/userinfo", self.base_url)
    }

    pub fn revocation_endpoint(&self) -> String {
        format!("{}/revoke", self.base_url)
    }

    /// Changes how later `/token` requests are answered.
    pub fn set_token_behavior(&self, b: TokenBehavior) {
        lock(&self.state).token_behavior = b;
    }

    /// When true, `/authorize` redirects back with `error=access_denied`.
    pub fn set_deny_authorization(&self, deny: bool) {
        lock(&self.state).deny_authorization = deny;
    }

    /// Signs in another user from now on (the `sub` and `email` of the
    /// tokens and userinfo issued next).
    pub fn set_user(&self, subject: &str, email: &str) {
        let mut state = lock(&self.state);
        state.config.subject = subject.to_string();
        state.config.email = email.to_string();
    }

    /// Changes the user and claims of what is issued from now on (the
    /// claims of each source: `id_token_claims`, `userinfo_claims`,
    /// `access_token_claims`).
    pub fn update_config(&self, change: impl FnOnce(&mut MockUpstreamConfig)) {
        change(&mut lock(&self.state).config);
    }

    /// Changes the `expires_in` sent with tokens issued from now on.
    pub fn set_access_token_expires_in(&self, expires_in: Option<u64>) {
        lock(&self.state).config.access_token_expires_in = expires_in;
    }

    /// Query parameters of every `/authorize` call, in order.
    pub fn authorize_requests(&self) -> Vec<HashMap<String, String>> {
        lock(&self.state).authorize_requests.clone()
    }

    /// Every `/token` call (form and Authorization header), in order.
    pub fn token_requests(&self) -> Vec<RecordedTokenRequest> {
        lock(&self.state).token_requests.clone()
    }

    /// How many `refresh_token` grant calls spent this refresh token.
    pub fn refresh_grant_calls(&self, refresh_token: &str) -> usize {
        lock(&self.state)
            .token_requests
            .iter()
            .filter(|r| r.form.get("grant_type").map(String::as_str) == Some("refresh_token"))
            .filter(|r| r.form.get("refresh_token").map(String::as_str) == Some(refresh_token))
            .count()
    }

    /// The `token` parameter of every `/revoke` call, in order.
    pub fn revoked_tokens(&self) -> Vec<String> {
        lock(&self.state).revoked_tokens.clone()
    }

    /// Every access token issued by `/token`, in order.
    pub fn issued_access_tokens(&self) -> Vec<String> {
        lock(&self.state).issued_access_tokens.clone()
    }

    /// Every refresh token issued by `/token`, in order of issue.
    pub fn issued_refresh_tokens(&self) -> Vec<String> {
        let st = lock(&self.state);
        let mut v: Vec<(u64, String)> = st.refresh_tokens.keys().map(|k| (token_serial(k), k.clone())).collect();
        v.sort();
        v.into_iter().map(|(_, k)| k).collect()
    }

    /// Stops the server (non-graceful) and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.stop(false).await;
        }
        if let Some(join) = self.join.take() {
            let _ = join.await;
        }
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            // The stop command is sent eagerly; the returned future only waits.
            drop(handle.stop(false));
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

static GLOBAL_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Random-looking hex string from a counter, the time and the process id.
fn random_hex(len: usize) -> String {
    let n = GLOBAL_COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = Sha256::new();
    h.update(n.to_le_bytes());
    h.update(nanos.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    let digest = h.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex[..len.min(hex.len())].to_string()
}

/// Serial number embedded in "up-xx-<n>-<hex>" tokens (for ordering).
fn token_serial(token: &str) -> u64 {
    token.split('-').nth(2).and_then(|s| s.parse().ok()).unwrap_or(u64::MAX)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Parses an `application/x-www-form-urlencoded` string. Never fails.
/// Returns the map (last value wins) and whether any key was repeated.
fn parse_form(input: &[u8]) -> (HashMap<String, String>, bool) {
    let mut map = HashMap::new();
    let mut duplicate = false;
    for (k, v) in url::form_urlencoded::parse(input) {
        if map.insert(k.into_owned(), v.into_owned()).is_some() {
            duplicate = true;
        }
    }
    (map, duplicate)
}

/// Decodes one form-urlencoded component ('+' is a space, %XX escapes).
/// Returns None for invalid escapes or invalid UTF-8.
fn form_urldecode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// True when `s` only contains characters a form-urlencoder may leave as is
/// (plus '%' escapes and '+'). Raw ':', ' ', '/', '&' etc. mean the client
/// forgot to encode its credentials.
fn looks_form_urlencoded(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || b"*-._~%+".contains(&b))
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({ "error": error, "error_description": description }))
}

fn invalid_client(description: &str) -> HttpResponse {
    let mut resp = oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", description);
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Basic realm=\"mock-upstream\""),
    );
    resp
}

fn invalid_grant(description: &str) -> HttpResponse {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", description)
}

fn invalid_request(description: &str) -> HttpResponse {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_request", description)
}

/// Characters allowed in a PKCE code_verifier / code_challenge (RFC 7636 §4.1).
fn is_pkce_string(s: &str) -> bool {
    (43..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut ipad = [0x36u8; BLOCK];
    let mut opad = [0x5cu8; BLOCK];
    for i in 0..BLOCK {
        ipad[i] ^= k[i];
        opad[i] ^= k[i];
    }
    let inner = Sha256::new().chain_update(ipad).chain_update(msg).finalize();
    let outer = Sha256::new().chain_update(opad).chain_update(inner).finalize();
    outer.into()
}

/// An HS256 id_token signed with the client secret (valid per OIDC Core §10.1).
fn make_id_token(cfg: &MockUpstreamConfig, issuer: &str, nonce: Option<&str>) -> String {
    let iat = now_secs();
    let exp = iat + cfg.access_token_expires_in.unwrap_or(3600);
    let mut payload = Map::new();
    payload.insert("iss".into(), json!(issuer));
    payload.insert("aud".into(), json!(cfg.client_id));
    payload.insert("sub".into(), json!(cfg.subject));
    payload.insert("email".into(), json!(cfg.email));
    payload.insert("email_verified".into(), json!(true));
    payload.insert("name".into(), json!(cfg.name));
    payload.insert("preferred_username".into(), json!(preferred_username(cfg)));
    payload.insert("iat".into(), json!(iat));
    payload.insert("exp".into(), json!(exp));
    if let Some(nonce) = nonce {
        payload.insert("nonce".into(), json!(nonce));
    }
    set_claims(&mut payload, &cfg.id_token_claims);
    sign_hs256(cfg, payload)
}

/// Sets `claims` over `payload`; a `null` removes the claim.
fn set_claims(payload: &mut Map<String, Value>, claims: &Map<String, Value>) {
    for (name, value) in claims {
        if value.is_null() {
            payload.remove(name);
        } else {
            payload.insert(name.clone(), value.clone());
        }
    }
}

/// A JWT access token carrying `claims` (see `access_token_claims`).
fn make_jwt_access_token(cfg: &MockUpstreamConfig, issuer: &str, claims: &Map<String, Value>) -> String {
    let iat = now_secs();
    let mut payload = Map::new();
    payload.insert("iss".into(), json!(issuer));
    payload.insert("sub".into(), json!(cfg.subject));
    payload.insert("iat".into(), json!(iat));
    payload.insert("exp".into(), json!(iat + cfg.access_token_expires_in.unwrap_or(3600)));
    payload.insert("jti".into(), json!(random_hex(16)));
    set_claims(&mut payload, claims);
    sign_hs256(cfg, payload)
}

/// A compact HS256 JWS of `payload`, keyed with the client secret.
fn sign_hs256(cfg: &MockUpstreamConfig, payload: Map<String, Value>) -> String {
    let header = json!({ "alg": "HS256", "typ": "JWT" });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(Value::Object(payload).to_string())
    );
    let sig = hmac_sha256(cfg.client_secret.as_bytes(), signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

fn preferred_username(cfg: &MockUpstreamConfig) -> String {
    cfg.email
        .split('@')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or(&cfg.subject)
        .to_string()
}

fn header_str(req: &HttpRequest, name: header::HeaderName) -> Option<String> {
    req.headers()
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

fn is_form_content_type(req: &HttpRequest) -> bool {
    header_str(req, header::CONTENT_TYPE)
        .map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
        .unwrap_or(false)
}

/// Splits `Authorization: <scheme> <value>` when the scheme matches (case-insensitive).
fn auth_param<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = value.trim().split_once(' ')?;
    if s.eq_ignore_ascii_case(scheme) {
        Some(rest.trim())
    } else {
        None
    }
}

/// Decodes HTTP Basic credentials per RFC 6749 §2.3.1.
fn decode_basic(value: &str) -> Result<(String, String), &'static str> {
    let b64 = auth_param(value, "Basic").ok_or("Authorization scheme is not Basic")?;
    let raw = STANDARD
        .decode(b64)
        .map_err(|_| "Basic credentials are not valid base64")?;
    let raw = String::from_utf8(raw).map_err(|_| "Basic credentials are not UTF-8")?;
    let (id, secret) = raw.split_once(':').ok_or("Basic credentials have no ':' separator")?;
    if !looks_form_urlencoded(id) || !looks_form_urlencoded(secret) {
        return Err("Basic credentials were not form-urlencoded (RFC 6749 section 2.3.1)");
    }
    let id = form_urldecode(id).ok_or("bad form-urlencoding in client_id")?;
    let secret = form_urldecode(secret).ok_or("bad form-urlencoding in client_secret")?;
    Ok((id, secret))
}

/// Checks client authentication for the configured method.
fn authenticate_client(
    cfg: &MockUpstreamConfig,
    form: &HashMap<String, String>,
    authorization: Option<&str>,
) -> Result<(), &'static str> {
    match cfg.auth_method {
        UpstreamAuthMethod::ClientSecretBasic => {
            if form.contains_key("client_secret") {
                return Err("client_secret in the body, but client_secret_basic is required");
            }
            let value = authorization.ok_or("missing Authorization header (client_secret_basic)")?;
            let (id, secret) = decode_basic(value)?;
            if id != cfg.client_id || secret != cfg.client_secret {
                return Err("wrong client credentials");
            }
            if let Some(form_id) = form.get("client_id") {
                if *form_id != cfg.client_id {
                    return Err("client_id in body does not match Basic credentials");
                }
            }
            Ok(())
        }
        UpstreamAuthMethod::ClientSecretPost => {
            if authorization.is_some_and(|v| auth_param(v, "Basic").is_some()) {
                return Err("Basic credentials sent, but client_secret_post is required");
            }
            let id = form.get("client_id").ok_or("missing client_id (client_secret_post)")?;
            let secret = form
                .get("client_secret")
                .ok_or("missing client_secret (client_secret_post)")?;
            if *id != cfg.client_id || *secret != cfg.client_secret {
                return Err("wrong client credentials");
            }
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------

async fn discovery(state: web::Data<Mutex<State>>) -> HttpResponse {
    let st = state.lock().unwrap_or_else(|p| p.into_inner());
    let base = &st.base_url;
    let auth_method = match st.config.auth_method {
        UpstreamAuthMethod::ClientSecretBasic => "client_secret_basic",
        UpstreamAuthMethod::ClientSecretPost => "client_secret_post",
    };
    HttpResponse::Ok().json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "userinfo_endpoint": format!("{base}/userinfo"),
        "revocation_endpoint": format!("{base}/revoke"),
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": [auth_method],
        "revocation_endpoint_auth_methods_supported": [auth_method],
        "scopes_supported": ["openid", "email", "profile", "offline_access"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["HS256"],
    }))
}

async fn authorize(req: HttpRequest, state: web::Data<Mutex<State>>) -> HttpResponse {
    let (params, duplicate) = parse_form(req.query_string().as_bytes());
    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
    st.authorize_requests.push(params.clone());

    if duplicate {
        return invalid_request("a parameter was repeated");
    }
    let client_id = params.get("client_id").map(String::as_str);
    if client_id != Some(st.config.client_id.as_str()) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            "missing or unknown client_id",
        );
    }
    let Some(redirect_raw) = params.get("redirect_uri") else {
        return invalid_request("missing redirect_uri");
    };
    let Ok(mut redirect) = Url::parse(redirect_raw) else {
        return invalid_request("redirect_uri is not an absolute URL");
    };
    if redirect.fragment().is_some() {
        return invalid_request("redirect_uri must not contain a fragment");
    }
    match params.get("response_type").map(String::as_str) {
        Some("code") => {}
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_response_type",
                "only response_type=code is supported",
            )
        }
        None => return invalid_request("missing response_type"),
    }
    let Some(state_param) = params.get("state").filter(|s| !s.is_empty()) else {
        return invalid_request("missing state");
    };
    let code_challenge = match (
        params.get("code_challenge"),
        params.get("code_challenge_method").map(String::as_str),
    ) {
        (None, None) => None,
        (Some(c), Some("S256")) => {
            if !is_pkce_string(c) {
                return invalid_request("malformed code_challenge");
            }
            Some(c.clone())
        }
        (Some(_), None) => return invalid_request("code_challenge_method is required (only S256 supported)"),
        (Some(_), Some(_)) => return invalid_request("unsupported code_challenge_method (only S256 supported)"),
        (None, Some(_)) => return invalid_request("code_challenge_method without code_challenge"),
    };

    if st.deny_authorization {
        redirect
            .query_pairs_mut()
            .append_pair("error", "access_denied")
            .append_pair("error_description", "The user denied the request")
            .append_pair("state", state_param);
    } else {
        st.counter += 1;
        let code = format!("up-code-{}-{}", st.counter, random_hex(24));
        let scope = params
            .get("scope")
            .filter(|s| !s.trim().is_empty())
            .cloned()
            .unwrap_or_else(|| "openid".to_string());
        st.codes.insert(
            code.clone(),
            CodeGrant {
                redirect_uri: redirect_raw.clone(),
                code_challenge,
                scope,
                nonce: params.get("nonce").cloned(),
                used: false,
            },
        );
        redirect
            .query_pairs_mut()
            .append_pair("code", &code)
            .append_pair("state", state_param);
    }
    HttpResponse::Found()
        .insert_header((header::LOCATION, redirect.as_str()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

async fn token(req: HttpRequest, body: web::Bytes, state: web::Data<Mutex<State>>) -> HttpResponse {
    let (form, duplicate) = parse_form(&body);
    let authorization = header_str(&req, header::AUTHORIZATION);

    let behavior = {
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        st.token_requests.push(RecordedTokenRequest {
            form: form.clone(),
            authorization_header: authorization.clone(),
        });
        st.token_behavior.clone()
    };

    match behavior {
        TokenBehavior::Normal => {}
        TokenBehavior::ServerError => {
            return oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "mock upstream: simulated internal error",
            )
        }
        TokenBehavior::NonJson => {
            return HttpResponse::Ok()
                .content_type("text/html; charset=utf-8")
                .body("<html>oops</html>")
        }
        TokenBehavior::InvalidGrant => return invalid_grant("mock upstream: simulated invalid_grant"),
        TokenBehavior::Delay(d) => actix_rt::time::sleep(d).await,
        TokenBehavior::DelayThenServerError(d) => {
            actix_rt::time::sleep(d).await;
            return oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "mock upstream: simulated internal error after a delay",
            );
        }
    }

    if !is_form_content_type(&req) {
        return invalid_request("Content-Type must be application/x-www-form-urlencoded");
    }
    if duplicate {
        return invalid_request("a parameter was repeated");
    }

    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(why) = authenticate_client(&st.config, &form, authorization.as_deref()) {
        return invalid_client(why);
    }

    let (scope, nonce, old_refresh) = match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let Some(code) = form.get("code") else {
                return invalid_request("missing code");
            };
            let Some(grant) = st.codes.get_mut(code) else {
                return invalid_grant("unknown authorization code");
            };
            if grant.used {
                return invalid_grant("authorization code already used");
            }
            // A failed attempt burns the code too (single use).
            grant.used = true;
            match form.get("redirect_uri") {
                Some(r) if *r == grant.redirect_uri => {}
                Some(_) => return invalid_grant("redirect_uri does not match /authorize"),
                None => return invalid_grant("missing redirect_uri"),
            }
            match (&grant.code_challenge, form.get("code_verifier")) {
                (None, None) => {}
                (None, Some(_)) => return invalid_grant("code_verifier sent but no code_challenge was given"),
                (Some(_), None) => return invalid_grant("missing code_verifier"),
                (Some(challenge), Some(verifier)) => {
                    if !is_pkce_string(verifier) || s256(verifier) != *challenge {
                        return invalid_grant("PKCE verification failed");
                    }
                }
            }
            (grant.scope.clone(), grant.nonce.clone(), None)
        }
        Some("refresh_token") => {
            let Some(rt) = form.get("refresh_token") else {
                return invalid_request("missing refresh_token");
            };
            let revoked = st.revoked_set.contains(rt);
            let Some(grant) = st.refresh_tokens.get(rt) else {
                return invalid_grant("unknown refresh token");
            };
            if !grant.valid || revoked {
                return invalid_grant("refresh token is no longer valid");
            }
            (grant.scope.clone(), None, Some(rt.clone()))
        }
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only authorization_code and refresh_token are supported",
            )
        }
        None => return invalid_request("missing grant_type"),
    };

    st.counter += 1;
    let access_token = match &st.config.access_token_claims {
        Some(claims) => make_jwt_access_token(&st.config, &st.base_url, claims),
        None => format!("up-at-{}-{}", st.counter, random_hex(16)),
    };
    st.issued_access_tokens.push(access_token.clone());

    let mut body = Map::new();
    body.insert("access_token".into(), json!(access_token));
    body.insert("token_type".into(), json!("Bearer"));
    if let Some(exp) = st.config.access_token_expires_in {
        body.insert("expires_in".into(), json!(exp));
    }
    body.insert("scope".into(), json!(scope));

    let new_refresh = match &old_refresh {
        None => st.config.issue_refresh_token,
        Some(_) => st.config.rotate_refresh_token,
    };
    if new_refresh {
        if let Some(old) = &old_refresh {
            if let Some(g) = st.refresh_tokens.get_mut(old) {
                g.valid = false;
            }
        }
        st.counter += 1;
        let rt = format!("up-rt-{}-{}", st.counter, random_hex(16));
        st.refresh_tokens.insert(
            rt.clone(),
            RefreshGrant {
                scope: scope.clone(),
                valid: true,
            },
        );
        body.insert("refresh_token".into(), json!(rt));
    }
    if st.config.issue_id_token {
        let id_token = make_id_token(&st.config, &st.base_url, nonce.as_deref());
        body.insert("id_token".into(), json!(id_token));
    }

    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(Value::Object(body))
}

async fn userinfo(req: HttpRequest, state: web::Data<Mutex<State>>) -> HttpResponse {
    let unauthorized = |error: &str| {
        HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, format!("Bearer error=\"{error}\"")))
            .json(json!({ "error": error }))
    };
    let Some(value) = header_str(&req, header::AUTHORIZATION) else {
        return unauthorized("invalid_request");
    };
    let Some(token) = auth_param(&value, "Bearer") else {
        return unauthorized("invalid_request");
    };
    let st = state.lock().unwrap_or_else(|p| p.into_inner());
    let known = st.issued_access_tokens.iter().any(|t| t == token);
    if !known || st.revoked_set.contains(token) {
        return unauthorized("invalid_token");
    }
    let cfg = &st.config;
    let mut info = json!({
        "sub": cfg.subject,
        "email": cfg.email,
        "email_verified": true,
        "name": cfg.name,
        "preferred_username": preferred_username(cfg),
    });
    if let Value::Object(info) = &mut info {
        set_claims(info, &cfg.userinfo_claims);
    }
    HttpResponse::Ok().json(info)
}

async fn revoke(body: web::Bytes, state: web::Data<Mutex<State>>) -> HttpResponse {
    let (form, _) = parse_form(&body);
    let Some(token) = form.get("token").filter(|t| !t.is_empty()) else {
        return invalid_request("missing token");
    };
    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
    st.revoked_tokens.push(token.clone());
    st.revoked_set.insert(token.clone());
    if let Some(g) = st.refresh_tokens.get_mut(token) {
        g.valid = false;
    }
    HttpResponse::Ok().finish()
}
