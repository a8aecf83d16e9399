//! `TestApp`: the proxy on a real port in front of a mock upstream, with a
//! tiny browser (a cookie jar and manual redirects) and request helpers.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::TcpListener;
use std::rc::Rc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use awc::http::StatusCode;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use mcp_oauth_proxy::{startup, Config, OAuthProxy};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use url::Url;

use crate::mock_upstream::{MockUpstream, MockUpstreamConfig};

pub const REDIRECT_URI: &str = "http://127.0.0.1:7777/callback";

/// An HTTP client for one proxy address, with a browser's cookie jar.
pub struct Driver {
    pub address: String,
    http: awc::Client,
    cookies: RefCell<HashMap<String, String>>,
}

/// The proxy in this process, its mock upstream, and a driver for it.
pub struct TestApp {
    pub driver: Driver,
    pub proxy: OAuthProxy,
    pub upstream: Rc<MockUpstream>,
    server: ServerHandle,
    /// The admin listener (`/metrics`, `/readyz`, `/admin`).
    pub admin: Driver,
    admin_server: ServerHandle,
}

impl std::ops::Deref for TestApp {
    type Target = Driver;
    fn deref(&self) -> &Driver {
        &self.driver
    }
}

/// An HTTP answer read whole.
pub struct Answer {
    pub status: StatusCode,
    pub headers: awc::http::header::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON ({}): {}", self.status, self.body))
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.to_str().unwrap().to_string())
    }
    pub fn location(&self) -> Url {
        Url::parse(&self.header("location").expect("a Location header")).unwrap()
    }
    /// The value of a hidden form input on an HTML page.
    pub fn form_value(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no input {name} in {}", self.body))
            + marker.len();
        let end = self.body[start..].find('"').unwrap() + start;
        self.body[start..end].to_string()
    }
}

pub fn query_param(url: &Url, name: &str) -> Option<String> {
    url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// A registered client, as the test sees it.
#[derive(Clone, Debug)]
pub struct TestClient {
    pub client_id: String,
    pub client_secret: Option<String>,
    pub redirect_uri: String,
}

/// A PKCE pair for the client leg.
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    pub fn new() -> Pkce {
        let verifier = format!("verifier-{}-{}", rand_suffix(), "x".repeat(40));
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        Pkce { verifier, challenge }
    }
}

fn rand_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{nanos:x}")
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The variables that point a proxy at the mock upstream.
pub fn upstream_settings(upstream: &MockUpstream) -> Vec<(&'static str, String)> {
    vec![
        (
            "OAUTH_PROXY_UPSTREAM_AUTHORIZATION_ENDPOINT",
            upstream.authorization_endpoint(),
        ),
        ("OAUTH_PROXY_UPSTREAM_TOKEN_ENDPOINT", upstream.token_endpoint()),
        ("OAUTH_PROXY_UPSTREAM_CLIENT_ID", "upstream-client".to_string()),
        (
            "OAUTH_PROXY_UPSTREAM_CLIENT_SECRET",
            MockUpstreamConfig::default().client_secret,
        ),
    ]
}

/// The settings every test starts from; tests override what they check.
fn base_settings(address: &str, upstream: &MockUpstream) -> HashMap<String, String> {
    let mut settings = upstream_settings(upstream);
    settings.extend([
        ("OAUTH_PROXY_BASE_URL", address.to_string()),
        ("OAUTH_PROXY_UPSTREAM_SCOPES", "openid profile email".to_string()),
        (
            "OAUTH_PROXY_JWT_SIGNING_KEY",
            "test-signing-key-test-signing-key-0123".to_string(),
        ),
        ("OAUTH_PROXY_UPSTREAM_TIMEOUT", "2".to_string()),
        ("OAUTH_PROXY_REGISTRATION_RATE_LIMIT", "0".to_string()),
        ("OAUTH_PROXY_STORAGE", "memory".to_string()),
        // Tests that read the audit trail name a file of their own.
        ("OAUTH_PROXY_AUDIT_LOG", "off".to_string()),
    ]);
    settings.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        TestApp::spawn_with(&[], MockUpstreamConfig::default()).await
    }

    /// Starts the mock upstream and the proxy with extra settings.
    pub async fn spawn_with(settings: &[(&str, &str)], upstream_config: MockUpstreamConfig) -> TestApp {
        let upstream = Rc::new(MockUpstream::start(upstream_config).await);
        TestApp::spawn_instance(settings, upstream).await
    }

    /// Starts a proxy in front of an upstream that other instances may share.
    pub async fn spawn_instance(settings: &[(&str, &str)], upstream: Rc<MockUpstream>) -> TestApp {
        TestApp::spawn_adjusted(settings, upstream, |_| {}).await
    }

    /// [`TestApp::spawn_instance`] with a last change to the parsed
    /// configuration, for settings no variable sets (shorter lifetimes).
    pub async fn spawn_adjusted(
        settings: &[(&str, &str)],
        upstream: Rc<MockUpstream>,
        adjust: impl FnOnce(&mut Config),
    ) -> TestApp {
        let _ = env_logger::builder().is_test(true).try_init();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let mut env = base_settings(&address, &upstream);
        // `{upstream}` in a value stands for the mock upstream's base URL.
        for (k, v) in settings {
            env.insert(k.to_string(), v.replace("{upstream}", &upstream.base_url()));
        }
        let mut config = Config::from_lookup(|name| env.get(name).cloned()).expect("test config");
        adjust(&mut config);
        let proxy = OAuthProxy::start(config).await.expect("proxy starts");
        // Tests read the events they cause (`app.proxy.audit().recent()`).
        proxy.audit().keep_recent();
        let server = startup::run(listener, proxy.clone()).unwrap();
        let handle = server.handle();
        actix_rt::spawn(server);
        // The admin listener, on a port of its own.
        let admin_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let admin_address = format!("http://127.0.0.1:{}", admin_listener.local_addr().unwrap().port());
        let admin_server = startup::run_admin(admin_listener, proxy.clone()).unwrap();
        let admin_handle = admin_server.handle();
        actix_rt::spawn(admin_server);
        TestApp {
            admin: Driver::new(&admin_address),
            admin_server: admin_handle,
            driver: Driver::new(&address),
            proxy,
            upstream,
            server: handle,
        }
    }

    pub async fn stop(self) {
        self.admin_server.stop(false).await;
        self.server.stop(false).await;
        self.proxy.shutdown().await;
        if let Ok(upstream) = Rc::try_unwrap(self.upstream) {
            upstream.stop().await;
        }
    }
}

impl Driver {
    pub fn new(address: &str) -> Driver {
        Driver {
            address: address.to_string(),
            http: awc::Client::builder()
                .disable_redirects()
                .timeout(Duration::from_secs(10))
                .finish(),
            cookies: RefCell::new(HashMap::new()),
        }
    }

    /// Forgets the browser's cookies (a different browser).
    pub fn clear_cookies(&self) {
        self.cookies.borrow_mut().clear();
    }

    /// Puts a cookie in the browser's jar (as an earlier visit would have).
    pub fn set_cookie(&self, name: &str, value: &str) {
        self.cookies.borrow_mut().insert(name.to_string(), value.to_string());
    }

    /// The value the browser holds for a cookie.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookies.borrow().get(name).cloned()
    }

    /// Every cookie value the browser holds.
    pub fn cookie_values(&self) -> Vec<String> {
        self.cookies.borrow().values().cloned().collect()
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .borrow()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn read(&self, mut response: awc::ClientResponse, keep_cookies: bool) -> Answer {
        if keep_cookies {
            for value in response.headers().get_all("set-cookie") {
                let raw = value.to_str().unwrap();
                let pair = raw.split(';').next().unwrap();
                if let Some((name, value)) = pair.split_once('=') {
                    self.cookies
                        .borrow_mut()
                        .insert(name.trim().to_string(), value.trim().to_string());
                }
            }
        }
        let body = response.body().limit(1 << 20).await.unwrap();
        Answer {
            status: response.status(),
            headers: response.headers().clone(),
            body: String::from_utf8_lossy(&body).to_string(),
        }
    }

    fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http") {
            path_or_url.to_string()
        } else {
            format!("{}{path_or_url}", self.address)
        }
    }

    /// GET as the browser (cookies sent and kept).
    pub async fn browser_get(&self, path_or_url: &str) -> Answer {
        let response = self
            .http
            .get(self.url(path_or_url))
            .insert_header(("Cookie", self.cookie_header()))
            .send()
            .await
            .unwrap();
        self.read(response, true).await
    }

    /// GET as the browser, with other cookies of the site before and after
    /// the kept ones (a browser sends every cookie of the host).
    pub async fn browser_get_among(&self, path_or_url: &str, before: &str, after: &str) -> Answer {
        let response = self
            .http
            .get(self.url(path_or_url))
            .insert_header(("Cookie", format!("{before}; {}; {after}", self.cookie_header())))
            .send()
            .await
            .unwrap();
        self.read(response, true).await
    }

    /// POST a form as the browser.
    pub async fn browser_post_form(&self, path: &str, form: &[(&str, &str)]) -> Answer {
        let response = self
            .http
            .post(self.url(path))
            .insert_header(("Cookie", self.cookie_header()))
            .send_form(&form)
            .await
            .unwrap();
        self.read(response, true).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        self.read(response, false).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Answer {
        let response = self.http.post(self.url(path)).send_json(body).await.unwrap();
        self.read(response, false).await
    }

    /// POST a form with optional HTTP Basic credentials (form-urlencoded first,
    /// RFC 6749 §2.3.1).
    pub async fn post_form(&self, path: &str, form: &[(&str, &str)], basic: Option<(&str, &str)>) -> Answer {
        let mut request = self.http.post(self.url(path));
        if let Some((id, secret)) = basic {
            let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let credentials = STANDARD.encode(format!("{}:{}", enc(id), enc(secret)));
            request = request.insert_header(("Authorization", format!("Basic {credentials}")));
        }
        let response = request.send_form(&form).await.unwrap();
        self.read(response, false).await
    }

    /// Registers a client and returns it.
    pub async fn register(&self, metadata: Value) -> TestClient {
        let answer = self.post_json("/register", &metadata).await;
        assert_eq!(
            answer.status,
            StatusCode::CREATED,
            "registration failed: {}",
            answer.body
        );
        let json = answer.json();
        TestClient {
            client_id: json["client_id"].as_str().unwrap().to_string(),
            client_secret: json["client_secret"].as_str().map(String::from),
            redirect_uri: json["redirect_uris"][0].as_str().unwrap().to_string(),
        }
    }

    /// A confidential client (client_secret_basic) redirecting to [`REDIRECT_URI`].
    pub async fn register_confidential(&self) -> TestClient {
        self.register(json!({ "client_name": "Test Client", "redirect_uris": [REDIRECT_URI] }))
            .await
    }

    /// A public client (`none`).
    pub async fn register_public(&self) -> TestClient {
        self.register(json!({
            "client_name": "Public Client",
            "redirect_uris": [REDIRECT_URI],
            "token_endpoint_auth_method": "none",
        }))
        .await
    }

    /// The query string of a valid authorization request.
    pub fn authorize_path(&self, client: &TestClient, pkce: &Pkce, state: &str) -> String {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", &client.client_id)
            .append_pair("redirect_uri", &client.redirect_uri)
            .append_pair("state", state)
            .append_pair("code_challenge", &pkce.challenge)
            .append_pair("code_challenge_method", "S256")
            .finish();
        format!("/authorize?{query}")
    }

    /// Approves the consent page the answer shows; returns the 303 to upstream.
    pub async fn approve(&self, consent_page: &Answer) -> Answer {
        assert_eq!(
            consent_page.status,
            StatusCode::OK,
            "expected the consent page: {}",
            consent_page.body
        );
        let transaction_id = consent_page.form_value("transaction_id");
        let csrf_token = consent_page.form_value("csrf_token");
        self.browser_post_form(
            "/consent",
            &[
                ("transaction_id", &transaction_id),
                ("csrf_token", &csrf_token),
                ("decision", "approve"),
                ("remember", "true"),
            ],
        )
        .await
    }

    /// From a redirect to the upstream: the mock upstream signs in and
    /// redirects to the proxy's callback, which redirects to the client.
    pub async fn through_upstream(&self, to_upstream: &Answer) -> Answer {
        assert!(
            to_upstream.status == StatusCode::FOUND || to_upstream.status == StatusCode::SEE_OTHER,
            "expected a redirect upstream, got {}: {}",
            to_upstream.status,
            to_upstream.body
        );
        let upstream_answer = self.browser_get(to_upstream.location().as_str()).await;
        assert_eq!(
            upstream_answer.status,
            StatusCode::FOUND,
            "upstream: {}",
            upstream_answer.body
        );
        self.browser_get(upstream_answer.location().as_str()).await
    }

    /// Runs the browser part of a flow (with consent when it shows) and
    /// returns the redirect to the client.
    pub async fn authorize_to_client(&self, client: &TestClient, pkce: &Pkce, state: &str) -> Url {
        let first = self.browser_get(&self.authorize_path(client, pkce, state)).await;
        let to_upstream = if first.status == StatusCode::OK {
            self.approve(&first).await
        } else {
            first
        };
        let back = self.through_upstream(&to_upstream).await;
        assert_eq!(back.status, StatusCode::FOUND, "callback: {}", back.body);
        back.location()
    }

    /// Authorization code for a client.
    pub async fn code_for(&self, client: &TestClient, pkce: &Pkce) -> String {
        let back = self.authorize_to_client(client, pkce, "state-1").await;
        query_param(&back, "code").unwrap_or_else(|| panic!("no code in {back}"))
    }

    /// The token request for a code, authenticating as the client registered.
    pub async fn exchange_code(&self, client: &TestClient, code: &str, verifier: &str) -> Answer {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", client.redirect_uri.as_str()),
            ("code_verifier", verifier),
        ];
        match &client.client_secret {
            Some(secret) => self.post_form("/token", &form, Some((&client.client_id, secret))).await,
            None => {
                form.push(("client_id", &client.client_id));
                self.post_form("/token", &form, None).await
            }
        }
    }

    /// A refresh request as `client`.
    pub async fn refresh(&self, client: &TestClient, refresh_token: &str) -> Answer {
        let mut form = vec![("grant_type", "refresh_token"), ("refresh_token", refresh_token)];
        match &client.client_secret {
            Some(secret) => self.post_form("/token", &form, Some((&client.client_id, secret))).await,
            None => {
                form.push(("client_id", &client.client_id));
                self.post_form("/token", &form, None).await
            }
        }
    }

    /// The code for an authorization request with `extra` appended to its
    /// query (the consent page approved when it is shown).
    pub async fn code_with(&self, client: &TestClient, pkce: &Pkce, extra: &str) -> String {
        let first = self
            .browser_get(&format!("{}{extra}", self.authorize_path(client, pkce, "s")))
            .await;
        let to_upstream = if first.status == StatusCode::OK {
            self.approve(&first).await
        } else {
            first
        };
        let back = self.through_upstream(&to_upstream).await;
        assert_eq!(back.status, StatusCode::FOUND, "callback: {}", back.body);
        let back = back.location();
        query_param(&back, "code").unwrap_or_else(|| panic!("no code in {back}"))
    }

    /// An access token for `client` from an authorization asking for `scope`.
    pub async fn token_with_scope(&self, client: &TestClient, scope: &str) -> String {
        let pkce = Pkce::new();
        let scope: String = url::form_urlencoded::byte_serialize(scope.as_bytes()).collect();
        let code = self.code_with(client, &pkce, &format!("&scope={scope}")).await;
        let answer = self.exchange_code(client, &code, &pkce.verifier).await;
        assert_eq!(answer.status, StatusCode::OK, "token: {}", answer.body);
        answer.json()["access_token"].as_str().unwrap().to_string()
    }

    /// Register, authorize, exchange: the token response.
    pub async fn full_flow(&self, client: &TestClient) -> Value {
        let pkce = Pkce::new();
        let code = self.code_for(client, &pkce).await;
        let answer = self.exchange_code(client, &code, &pkce.verifier).await;
        assert_eq!(answer.status, StatusCode::OK, "token: {}", answer.body);
        answer.json()
    }

    /// [`full_flow`](Self::full_flow)'s access and refresh token.
    pub async fn full_flow_tokens(&self, client: &TestClient) -> (String, String) {
        let tokens = self.full_flow(client).await;
        (
            tokens["access_token"].as_str().unwrap().to_string(),
            tokens["refresh_token"].as_str().unwrap().to_string(),
        )
    }
}

/// Decodes a JWT's payload (tests only).
pub fn jwt_payload(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

impl Driver {
    /// A request to the guarded MCP endpoint (path below the proxy).
    pub async fn mcp_request(
        &self,
        method: awc::http::Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Answer {
        let mut request = self.http.request(method, self.url(path));
        if let Some(token) = token {
            request = request.insert_header(("Authorization", format!("Bearer {token}")));
        }
        for (name, value) in headers {
            request = request.insert_header((*name, *value));
        }
        let response = match body {
            Some(body) => request
                .insert_header(("Accept", "application/json, text/event-stream"))
                .send_json(&body)
                .await
                .unwrap(),
            None => request.send().await.unwrap(),
        };
        self.read(response, false).await
    }

    /// A JSON-RPC POST to `/mcp`.
    pub async fn mcp_post(&self, token: Option<&str>, body: Value) -> Answer {
        self.mcp_request(awc::http::Method::POST, "/mcp", token, &[], Some(body))
            .await
    }

    /// The raw HTTP client (for streaming reads).
    pub fn http(&self) -> &awc::Client {
        &self.http
    }
}

/// The parameters of a `WWW-Authenticate: Bearer` challenge.
pub fn bearer_challenge(answer: &Answer) -> HashMap<String, String> {
    let value = answer.header("www-authenticate").expect("a WWW-Authenticate header");
    let params = value.strip_prefix("Bearer ").expect("a Bearer challenge");
    let mut map = HashMap::new();
    let mut rest = params;
    while let Some((name, after)) = rest.split_once("=\"") {
        let (value, tail) = after.split_once('"').unwrap();
        map.insert(name.trim_start_matches(", ").trim().to_string(), value.to_string());
        rest = tail;
    }
    map
}

impl Driver {
    /// A request with a method and headers of the caller's choosing (the
    /// admin API's bearer token).
    pub async fn send(&self, method: awc::http::Method, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut request = self.http.request(method, self.url(path));
        for (name, value) in headers {
            request = request.insert_header((*name, *value));
        }
        let response = request.send().await.unwrap();
        self.read(response, false).await
    }
}
