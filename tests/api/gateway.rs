//! The guarded MCP endpoint against a recording backend double: who gets
//! in, which token reaches the MCP server, streaming, and failures.

use std::time::{Duration, Instant};

use awc::http::{Method, StatusCode};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_util::StreamExt;
use serde_json::json;

use crate::backend_double::{BackendDouble, RawBackend};
use crate::helpers::{bearer_challenge, TestApp};
use crate::mock_upstream::{MockUpstreamConfig, TokenBehavior};

const PING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

fn ping() -> serde_json::Value {
    serde_json::from_str(PING).unwrap()
}

/// An MCP backend double the proxy can stand in front of.
trait McpBackend {
    fn url(&self) -> &str;
    async fn stop(self);
}

impl McpBackend for BackendDouble {
    fn url(&self) -> &str {
        &self.url
    }
    async fn stop(self) {
        BackendDouble::stop(self).await;
    }
}

impl McpBackend for RawBackend {
    fn url(&self) -> &str {
        &self.url
    }
    /// Its thread lives as long as the test process.
    async fn stop(self) {}
}

/// The proxy, with `extra` settings, in front of `backend`.
async fn spawn_in_front_of(backend: &impl McpBackend, extra: &[(&str, &str)], upstream: MockUpstreamConfig) -> TestApp {
    let mut settings = vec![("OAUTH_PROXY_MCP_UPSTREAM_URL", backend.url())];
    settings.extend_from_slice(extra);
    TestApp::spawn_with(&settings, upstream).await
}

async fn spawn_with_backend(extra: &[(&str, &str)], upstream: MockUpstreamConfig) -> (TestApp, BackendDouble) {
    let backend = BackendDouble::start().await;
    (spawn_in_front_of(&backend, extra, upstream).await, backend)
}

/// The proxy in front of an MCP backend double, and the access token a
/// public client got through the whole flow: where most tests here start.
struct Guarded<B> {
    app: TestApp,
    backend: B,
    access: String,
}

impl Guarded<BackendDouble> {
    /// In front of a [`BackendDouble`], with `extra` settings.
    async fn start(extra: &[(&str, &str)]) -> Self {
        Guarded::start_with(extra, MockUpstreamConfig::default()).await
    }

    async fn start_with(extra: &[(&str, &str)], upstream: MockUpstreamConfig) -> Self {
        Guarded::spawn(BackendDouble::start().await, extra, upstream).await
    }
}

impl<B: McpBackend> Guarded<B> {
    /// In front of `backend`, with the default settings.
    async fn in_front_of(backend: B) -> Self {
        Guarded::spawn(backend, &[], MockUpstreamConfig::default()).await
    }

    async fn spawn(backend: B, extra: &[(&str, &str)], upstream: MockUpstreamConfig) -> Self {
        let app = spawn_in_front_of(&backend, extra, upstream).await;
        let (access, _) = access_token(&app).await;
        Guarded { app, backend, access }
    }

    async fn stop(self) {
        self.app.stop().await;
        self.backend.stop().await;
    }
}

async fn access_token(app: &TestApp) -> (String, String) {
    let client = app.register_public().await;
    app.full_flow_tokens(&client).await
}

#[actix_web::test]
async fn no_token_gets_401_with_the_resource_metadata_url() {
    let (app, backend) = spawn_with_backend(&[], MockUpstreamConfig::default()).await;
    let answer = app.mcp_post(None, ping()).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let challenge = bearer_challenge(&answer);
    assert_eq!(
        challenge["resource_metadata"],
        format!("{}/.well-known/oauth-protected-resource/mcp", app.address)
    );
    assert!(!challenge.contains_key("error"), "no error when no token was sent");
    assert_eq!(challenge["scope"], "openid profile email");
    // The metadata URL in the challenge really serves the document.
    assert_eq!(app.get(&challenge["resource_metadata"]).await.status, StatusCode::OK);
    assert!(
        backend.recorded.authorization.lock().unwrap().is_empty(),
        "nothing reached the backend"
    );
    app.stop().await;
    backend.stop().await;
}

#[actix_web::test]
async fn bad_tokens_get_401_invalid_token() {
    let (app, backend) = spawn_with_backend(&[], MockUpstreamConfig::default()).await;
    let (access, refresh) = access_token(&app).await;
    let parts: Vec<&str> = access.split('.').collect();
    let mut payload: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    payload["sub"] = json!("admin");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        parts[2]
    );
    let alg_none = format!("{}.{}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#), parts[1]);
    payload["aud"] = json!("https://other.example/mcp");
    let foreign_audience = {
        // Signed with the right key, but for another resource.
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        let key = jsonwebtoken::EncodingKey::from_secret(b"test-signing-key-test-signing-key-0123");
        jsonwebtoken::encode(&header, &payload, &key).unwrap()
    };
    for (what, token) in [
        ("garbage", "not-a-token".to_string()),
        ("tampered", tampered),
        ("alg none", alg_none),
        ("refresh token", refresh),
        ("foreign audience", foreign_audience),
    ] {
        let answer = app.mcp_post(Some(&token), ping()).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{what}");
        let challenge = bearer_challenge(&answer);
        assert_eq!(challenge["error"], "invalid_token", "{what}");
        assert!(challenge.contains_key("resource_metadata"), "{what}");
        // A short reason, without library internals or the accepted algorithms.
        let description = &challenge["error_description"];
        assert!(
            !description.contains("HS256") && !description.contains("JSON"),
            "{what}: {description}"
        );
    }
    assert!(backend.recorded.authorization.lock().unwrap().is_empty());
    app.stop().await;
    backend.stop().await;
}

/// A Node MCP server (the TypeScript SDK's) builds each request's header
/// object in arrival order; when the order changes from request to request,
/// every object gets a new shape and V8's property caches stop working.
#[actix_web::test]
async fn the_same_headers_reach_the_mcp_server_in_the_same_order_on_every_request() {
    let guarded = Guarded::in_front_of(RawBackend::start()).await;
    let Guarded { app, backend, access } = &guarded;
    let headers = [
        ("MCP-Protocol-Version", "2025-06-18"),
        ("Mcp-Session-Id", "session-1"),
        ("User-Agent", "order-test/1"),
    ];
    for _ in 0..20 {
        let answer = app
            .mcp_request(Method::POST, "/mcp", Some(access), &headers, Some(ping()))
            .await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    let orders = backend.header_orders();
    assert_eq!(orders.len(), 20);
    for name in [
        "authorization",
        "content-type",
        "accept",
        "mcp-protocol-version",
        "mcp-session-id",
        "user-agent",
        "host",
    ] {
        assert!(
            orders[0].iter().any(|n| n == name),
            "{name} reaches the backend: {:?}",
            orders[0]
        );
    }
    for order in &orders[1..] {
        assert_eq!(order, &orders[0]);
    }
    guarded.stop().await;
}

#[actix_web::test]
async fn an_expired_token_gets_401_invalid_token() {
    let guarded = Guarded::start(&[("OAUTH_PROXY_ACCESS_TOKEN_TTL", "1")]).await;
    let Guarded { app, access, .. } = &guarded;
    assert_eq!(app.mcp_post(Some(access), ping()).await.status, StatusCode::OK);
    actix_rt::time::sleep(Duration::from_millis(2100)).await;
    let answer = app.mcp_post(Some(access), ping()).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(bearer_challenge(&answer)["error"], "invalid_token");
    guarded.stop().await;
}

#[actix_web::test]
async fn swap_mode_forwards_the_upstream_token_never_the_proxy_jwt_or_cookies() {
    let guarded = Guarded::start(&[]).await;
    let Guarded { app, backend, access } = &guarded;
    let answer = app
        .mcp_request(
            Method::POST,
            "/mcp",
            Some(access),
            &[
                ("Cookie", "mcp_proxy_browser=secret"),
                ("Mcp-Session-Id", "s-1"),
                ("MCP-Protocol-Version", "2025-06-18"),
            ],
            Some(ping()),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.json()["result"]["echo"], "ping");
    assert_eq!(answer.header("mcp-session-id").as_deref(), Some("session-1"));
    assert!(
        answer.header("set-cookie").is_none(),
        "backend cookies stay off the proxy's origin"
    );
    let upstream_token = app.upstream.issued_access_tokens()[0].clone();
    assert_eq!(backend.last_authorization(), Some(format!("Bearer {upstream_token}")));
    assert!(!backend.last_authorization().unwrap().contains(access.as_str()));
    assert_eq!(backend.recorded.cookies.lock().unwrap().last().cloned().flatten(), None);
    let headers = backend.recorded.other_headers.lock().unwrap().last().cloned().unwrap();
    assert!(headers.contains(&"mcp-session-id".to_string()));
    assert!(headers.contains(&"mcp-protocol-version".to_string()));
    guarded.stop().await;
}

#[actix_web::test]
async fn pass_through_mode_forwards_the_clients_own_token() {
    let guarded = Guarded::start(&[("OAUTH_PROXY_ENABLE_TOKEN_SWAP", "false")]).await;
    let Guarded { app, backend, access } = &guarded;
    assert_eq!(app.mcp_post(Some(access), ping()).await.status, StatusCode::OK);
    assert_eq!(backend.last_authorization(), Some(format!("Bearer {access}")));
    // A token the proxy never handed out is refused.
    let answer = app.mcp_post(Some("up-at-999-made-up"), ping()).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    guarded.stop().await;
}

#[actix_web::test]
async fn get_and_delete_pass_through_and_options_needs_no_token() {
    let guarded = Guarded::start(&[]).await;
    let Guarded { app, access, .. } = &guarded;
    let delete = app
        .mcp_request(Method::DELETE, "/mcp", Some(access), &[("Mcp-Session-Id", "s")], None)
        .await;
    assert_eq!(delete.status, StatusCode::OK);
    let get = app
        .mcp_request(Method::GET, "/mcp/events/2", Some(access), &[], None)
        .await;
    assert_eq!(get.status, StatusCode::OK);
    assert!(get.body.contains("data: {\"n\":1}"));
    let options = app
        .mcp_request(
            Method::OPTIONS,
            "/mcp",
            None,
            &[("Origin", &app.address), ("Access-Control-Request-Method", "POST")],
            None,
        )
        .await;
    assert_eq!(options.status, StatusCode::NO_CONTENT);
    assert!(options
        .header("access-control-allow-headers")
        .unwrap()
        .contains("Mcp-Session-Id"));
    guarded.stop().await;
}

#[actix_web::test]
async fn a_foreign_origin_gets_403_and_an_allowed_one_passes() {
    let guarded = Guarded::start(&[("OAUTH_PROXY_ALLOWED_ORIGINS", "https://inspector.example")]).await;
    let Guarded { app, access, .. } = &guarded;
    let evil = app
        .mcp_request(
            Method::POST,
            "/mcp",
            Some(access),
            &[("Origin", "https://evil.example")],
            Some(ping()),
        )
        .await;
    assert_eq!(evil.status, StatusCode::FORBIDDEN);
    assert_eq!(evil.json()["error"]["code"], -32000);
    let allowed = app
        .mcp_request(
            Method::POST,
            "/mcp",
            Some(access),
            &[("Origin", "https://inspector.example")],
            Some(ping()),
        )
        .await;
    assert_eq!(allowed.status, StatusCode::OK);
    assert_eq!(
        allowed.header("access-control-allow-origin").as_deref(),
        Some("https://inspector.example")
    );
    assert!(allowed
        .header("access-control-expose-headers")
        .unwrap()
        .contains("Mcp-Session-Id"));
    guarded.stop().await;
}

#[actix_web::test]
async fn a_token_without_the_required_scope_gets_403_insufficient_scope() {
    let (app, backend) = spawn_with_backend(
        &[
            ("OAUTH_PROXY_SCOPES", "openid mcp:admin"),
            ("OAUTH_PROXY_MCP_REQUIRED_SCOPES", "mcp:admin"),
        ],
        MockUpstreamConfig::default(),
    )
    .await;
    let client = app.register_public().await;
    let pkce = crate::helpers::Pkce::new();
    let page = app
        .browser_get(&format!("{}&scope=openid", app.authorize_path(&client, &pkce, "s")))
        .await;
    let back = app.through_upstream(&app.approve(&page).await).await;
    let code = crate::helpers::query_param(&back.location(), "code").unwrap();
    let tokens = app.exchange_code(&client, &code, &pkce.verifier).await.json();
    let answer = app.mcp_post(tokens["access_token"].as_str(), ping()).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    let challenge = bearer_challenge(&answer);
    assert_eq!(challenge["error"], "insufficient_scope");
    assert_eq!(challenge["scope"], "mcp:admin");
    app.stop().await;
    backend.stop().await;
}

#[actix_web::test]
async fn an_expired_upstream_token_is_refreshed_once_for_twenty_concurrent_requests() {
    let upstream = MockUpstreamConfig {
        access_token_expires_in: Some(1),
        ..Default::default()
    };
    let guarded = Guarded::start_with(&[], upstream).await;
    let Guarded { app, backend, access } = &guarded;
    app.upstream.set_access_token_expires_in(Some(3600));
    let refreshes_before = app.upstream.token_requests().len();
    let answers = futures_util::future::join_all((0..20).map(|_| app.mcp_post(Some(access), ping()))).await;
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }
    let upstream_refreshes: Vec<_> = app.upstream.token_requests()[refreshes_before..]
        .iter()
        .filter(|r| r.form.get("grant_type").map(String::as_str) == Some("refresh_token"))
        .cloned()
        .collect();
    assert_eq!(upstream_refreshes.len(), 1, "one upstream refresh for all twenty");
    let fresh = app.upstream.issued_access_tokens().last().unwrap().clone();
    let seen = backend.recorded.authorization.lock().unwrap().clone();
    assert_eq!(seen.len(), 20);
    assert!(
        seen.iter()
            .all(|a| a.as_deref() == Some(format!("Bearer {fresh}").as_str())),
        "all forwarded with the fresh token"
    );
    guarded.stop().await;
}

#[actix_web::test]
async fn a_refused_upstream_refresh_answers_401_so_the_client_re_authorizes() {
    let upstream = MockUpstreamConfig {
        access_token_expires_in: Some(1),
        ..Default::default()
    };
    let guarded = Guarded::start_with(&[], upstream).await;
    let Guarded { app, backend, access } = &guarded;
    app.upstream.set_token_behavior(TokenBehavior::InvalidGrant);
    let answer = app.mcp_post(Some(access), ping()).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(bearer_challenge(&answer)["error"], "invalid_token");
    assert!(backend.recorded.authorization.lock().unwrap().is_empty());
    guarded.stop().await;
}

#[actix_web::test]
async fn a_backend_that_refuses_the_upstream_token_gives_401() {
    let guarded = Guarded::start(&[]).await;
    let Guarded { app, access, .. } = &guarded;
    let answer = app
        .mcp_request(Method::POST, "/mcp/refuse", Some(access), &[], Some(ping()))
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    let challenge = bearer_challenge(&answer);
    assert_eq!(challenge["error"], "invalid_token");
    assert!(
        challenge["resource_metadata"].starts_with(&app.address),
        "our metadata, not the backend's"
    );
    guarded.stop().await;
}

#[actix_web::test]
async fn a_backend_that_is_down_gives_502_quickly_and_a_slow_one_504() {
    let Guarded { app, backend, access } = Guarded::start(&[("OAUTH_PROXY_MCP_RESPONSE_TIMEOUT", "1")]).await;
    let slow = app
        .mcp_request(Method::POST, "/mcp/slow", Some(&access), &[], Some(ping()))
        .await;
    assert_eq!(slow.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(slow.json()["jsonrpc"], "2.0");
    backend.stop().await;
    let started = Instant::now();
    let down = app.mcp_post(Some(&access), ping()).await;
    assert_eq!(down.status, StatusCode::BAD_GATEWAY);
    assert_eq!(down.json()["error"]["code"], -32603);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no hang: {:?}",
        started.elapsed()
    );
    app.stop().await;
}

#[actix_web::test]
async fn sse_events_stream_through_as_they_come_and_a_leaving_client_closes_the_backend() {
    let guarded = Guarded::start(&[]).await;
    let Guarded { app, backend, access } = &guarded;
    let started = Instant::now();
    let mut response = app
        .http()
        .get(format!("{}/mcp/events/4", app.address))
        .insert_header(("Authorization", format!("Bearer {access}")))
        .insert_header(("Accept", "text/event-stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers().get("content-type").unwrap(), "text/event-stream");
    let mut arrivals = Vec::new();
    let mut seen = String::new();
    while let Some(chunk) = response.next().await {
        seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while seen.matches("\n\n").count() > arrivals.len() {
            arrivals.push(started.elapsed());
        }
    }
    assert_eq!(arrivals.len(), 4, "{seen}");
    // The backend spaces events 300 ms apart: buffering would bunch them.
    assert!(arrivals[3] - arrivals[0] >= Duration::from_millis(800), "{arrivals:?}");
    assert!(arrivals[1] - arrivals[0] >= Duration::from_millis(200), "{arrivals:?}");

    // A client that leaves a long stream: the proxy drops the backend side.
    let dropped_before = backend
        .recorded
        .streams_dropped
        .load(std::sync::atomic::Ordering::SeqCst);
    let mut response = app
        .http()
        .get(format!("{}/mcp/events/100", app.address))
        .insert_header(("Authorization", format!("Bearer {access}")))
        .send()
        .await
        .unwrap();
    let _first = response.next().await.unwrap().unwrap();
    drop(response);
    let deadline = Instant::now() + Duration::from_secs(5);
    while backend
        .recorded
        .streams_dropped
        .load(std::sync::atomic::Ordering::SeqCst)
        == dropped_before
    {
        assert!(
            Instant::now() < deadline,
            "the backend stream was not closed after the client left"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    guarded.stop().await;
}

/// Sends `count` identical requests over one TCP connection and answers the
/// status codes read back; a closed connection ends the list early.
fn statuses_on_one_connection(address: &str, request: &str, count: usize) -> Vec<u16> {
    use std::io::{BufRead, BufReader, Read, Write};
    let host = address.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut statuses = Vec::new();
    for _ in 0..count {
        if stream.write_all(request.as_bytes()).is_err() {
            break;
        }
        let mut status_line = String::new();
        if reader.read_line(&mut status_line).unwrap_or(0) == 0 {
            break;
        }
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).unwrap();
        statuses.push(status);
    }
    statuses
}

#[actix_web::test]
async fn early_rejections_keep_the_connection_alive() {
    let (app, backend) = spawn_with_backend(&[], MockUpstreamConfig::default()).await;
    let address = app.address.clone();
    let host = address.trim_start_matches("http://").to_string();
    let unauthorized = format!(
        "POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{PING}",
        PING.len()
    );
    let bad_registration = format!(
        "POST /register HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n{{not json"
    );
    let (a, b) = actix_web::rt::task::spawn_blocking(move || {
        (
            statuses_on_one_connection(&address, &unauthorized, 3),
            statuses_on_one_connection(&address, &bad_registration, 3),
        )
    })
    .await
    .unwrap();
    assert_eq!(a, [401, 401, 401], "401s on one kept-alive connection");
    assert_eq!(b, [400, 400, 400], "400s on one kept-alive connection");
    app.stop().await;
    backend.stop().await;
}

/// What came back from [`raw_exchange`].
#[derive(Debug)]
struct RawAnswer {
    status: u16,
    /// The header lines, lowercased.
    head: String,
    body: String,
}

impl RawAnswer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }
}

/// Sends `request` as is on a new connection and reads one answer, waiting
/// at most `wait` for it; `None` when none came in time.
fn raw_exchange(address: &str, request: &[u8], wait: Duration) -> Option<RawAnswer> {
    use std::io::{Read, Write};
    let host = address.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    stream.set_read_timeout(Some(wait)).unwrap();
    stream.write_all(request).unwrap();
    let deadline = Instant::now() + wait;
    let mut seen = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse::<usize>().unwrap());
            if length.is_some_and(|length| seen.len() >= end + 4 + length) {
                let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
                let body = String::from_utf8_lossy(&seen[end + 4..end + 4 + length.unwrap()]).into_owned();
                return Some(RawAnswer { status, head, body });
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return None,
            Ok(n) => seen.extend_from_slice(&buffer[..n]),
        }
    }
}

/// `raw_exchange` off the test's thread (the proxy's client runs on it).
async fn raw(address: &str, request: String, wait: Duration) -> Option<RawAnswer> {
    let address = address.to_string();
    actix_web::rt::task::spawn_blocking(move || raw_exchange(&address, request.as_bytes(), wait))
        .await
        .unwrap()
}

fn host_of(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_string()
}

#[actix_web::test]
async fn paths_that_could_leave_the_mcp_endpoint_get_400_and_never_reach_the_mcp_server() {
    let guarded = Guarded::in_front_of(RawBackend::start()).await;
    let Guarded { app, backend, access } = &guarded;
    let host = host_of(app);
    for path in [
        "/mcp/%2e%2e/admin",
        "/mcp/%2e%2e/%2e%2e/etc",
        "/mcp/%2E%2e/admin",
        "/mcp/.%2e/admin",
        "/mcp/%2e./admin",
        "/mcp/..",
        "/mcp/../admin",
        "/mcp/./admin",
        "/mcp/sub/%2e",
        "/mcp/..;/admin",
        "/mcp/a%3Fx=1",
        "/mcp/a%3fx=1",
        "/mcp/a%23frag",
        "/mcp/a%2F..%2Fadmin",
        "/mcp/a%2fb",
        "/mcp/a%5C..%5Cadmin",
        "/mcp/a\\..\\admin",
        "/mcp/a%00b",
        "/mcp/a%0d%0aX-Injected:%201",
        "/mcp/a%1Fb",
        "/mcp/a%7fb",
        "/mcp/a%zz",
        "/mcp/a%2",
        "/mcp/%C0%AE%C0%AE/admin",
    ] {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {access}\r\nConnection: close\r\n\r\n"
        );
        let answer = raw(&app.address, request, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("{path}: no answer"));
        assert_eq!(answer.status, 400, "{path}: {answer:?}");
        assert_eq!(answer.json()["jsonrpc"], "2.0", "{path}");
    }
    assert_eq!(
        backend.recorded().iter().map(|r| r.line.clone()).collect::<Vec<_>>(),
        Vec::<String>::new(),
        "nothing reached the MCP server"
    );

    // Paths that stay below the endpoint arrive exactly as sent.
    for path in [
        "/mcp/sub/path?x=1",
        "/mcp/caf%C3%A9/a%20b?q=%2e%2e&r=%3F",
        "/mcp/...x/.well",
    ] {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {access}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PING}",
            PING.len()
        );
        let answer = raw(&app.address, request, Duration::from_secs(5)).await.unwrap();
        assert_eq!(answer.status, 200, "{path}: {answer:?}");
        let last = backend.recorded().last().cloned().unwrap();
        assert_eq!(last.line, format!("POST {path} HTTP/1.1"));
        assert_eq!(last.body, PING.as_bytes());
    }
    guarded.stop().await;
}

#[actix_web::test]
async fn an_unauthenticated_request_gets_401_without_its_body_being_waited_for() {
    let (app, backend) = spawn_with_backend(&[], MockUpstreamConfig::default()).await;
    let host = host_of(&app);
    // Headers announcing a large body, and no body at all.
    for token in ["", "Authorization: Bearer not-a-token\r\n"] {
        let request = format!(
            "POST /mcp HTTP/1.1\r\nHost: {host}\r\n{token}Content-Type: application/json\r\nContent-Length: 3000000\r\n\r\n"
        );
        let started = Instant::now();
        let answer = raw(&app.address, request, Duration::from_secs(5))
            .await
            .expect("the 401 came before the body was sent");
        assert_eq!(answer.status, 401, "{answer:?}");
        assert!(answer.head.contains("www-authenticate: bearer"), "{answer:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    }
    assert!(backend.recorded.authorization.lock().unwrap().is_empty());
    app.stop().await;
    backend.stop().await;
}

#[actix_web::test]
async fn a_body_over_the_configured_cap_gets_413_whether_announced_or_streamed() {
    let guarded = Guarded::start(&[("OAUTH_PROXY_MCP_MAX_BODY", "1024")]).await;
    let Guarded { app, backend, access } = &guarded;
    let big = json!({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "x".repeat(2000)}});
    // Announced with Content-Length: refused before it is read.
    let announced = app.mcp_post(Some(access), big.clone()).await;
    assert_eq!(announced.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", announced.body);
    assert_eq!(announced.json()["jsonrpc"], "2.0");
    // Chunked, without a length: counted as it arrives.
    let chunks: Vec<Result<actix_web::web::Bytes, std::io::Error>> = (0..4)
        .map(|_| Ok(actix_web::web::Bytes::from(vec![b' '; 400])))
        .collect();
    let mut streamed = app
        .http()
        .post(format!("{}/mcp", app.address))
        .insert_header(("Authorization", format!("Bearer {access}")))
        .insert_header(("Content-Type", "application/json"))
        .send_stream(futures_util::stream::iter(chunks))
        .await
        .unwrap();
    assert_eq!(streamed.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: serde_json::Value = serde_json::from_slice(&streamed.body().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], -32600);
    // At the cap it passes.
    let at_cap = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat(1024 - 60)
    );
    assert_eq!(at_cap.len(), 1024);
    let answer = app
        .http()
        .post(format!("{}/mcp", app.address))
        .insert_header(("Authorization", format!("Bearer {access}")))
        .insert_header(("Content-Type", "application/json"))
        .send_body(at_cap)
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(
        backend.recorded.authorization.lock().unwrap().len(),
        1,
        "only the one at the cap"
    );
    guarded.stop().await;
}

#[actix_web::test]
async fn a_body_that_stalls_past_the_read_timeout_gets_408() {
    let guarded = Guarded::start(&[("OAUTH_PROXY_MCP_RESPONSE_TIMEOUT", "1")]).await;
    let Guarded { app, backend, access } = &guarded;
    let host = host_of(app);
    // Half the announced body, then nothing.
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {access}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        PING.len() * 2,
        PING
    );
    let started = Instant::now();
    let answer = raw(&app.address, request, Duration::from_secs(5))
        .await
        .expect("an answer after the read timeout");
    assert_eq!(answer.status, 408, "{answer:?}");
    assert_eq!(answer.json()["jsonrpc"], "2.0");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert!(backend.recorded.authorization.lock().unwrap().is_empty());
    guarded.stop().await;
}

#[actix_web::test]
async fn a_storage_outage_gives_503_with_retry_after_and_a_revoked_token_still_gets_401() {
    let redis = crate::redis_server::RedisServer::start().await;
    let (app, backend) = spawn_with_backend(
        &[
            ("OAUTH_PROXY_STORAGE", &redis.url()),
            ("OAUTH_PROXY_ENCRYPTION_KEY", "test-encryption-key-test-encryption-key"),
            (
                "OAUTH_PROXY_CONSENT_SIGNING_KEY",
                "test-consent-key-test-consent-key-01234",
            ),
        ],
        MockUpstreamConfig::default(),
    )
    .await;
    let client = app.register_public().await;
    let revoked = app.full_flow(&client).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let kept = app.full_flow(&client).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let answer = app
        .post_form(
            "/revoke",
            &[("token", &revoked), ("client_id", &client.client_id)],
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let answer = app.mcp_post(Some(&revoked), ping()).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
    assert_eq!(bearer_challenge(&answer)["error"], "invalid_token");

    let mut redis = redis;
    redis.kill();
    let answer = app.mcp_post(Some(&kept), ping()).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{}", answer.body);
    assert!(answer.header("retry-after").is_some());
    assert!(answer.header("www-authenticate").is_none(), "the token is not blamed");
    let message = answer.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        !message.contains("redis") && !message.contains("127.0.0.1") && !message.contains("refused"),
        "{message}"
    );
    assert!(backend.recorded.authorization.lock().unwrap().is_empty());
    app.stop().await;
    backend.stop().await;
}

#[actix_web::test]
async fn only_get_post_and_delete_are_forwarded_and_other_methods_get_405_with_allow() {
    let guarded = Guarded::in_front_of(RawBackend::start()).await;
    let Guarded { app, backend, access } = &guarded;
    for method in ["PUT", "PATCH", "HEAD", "TRACE", "PROPFIND", "CONNECT"] {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let answer = app.mcp_request(method.clone(), "/mcp/x", Some(access), &[], None).await;
        assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(
            answer.header("allow").as_deref(),
            Some("GET, POST, DELETE, OPTIONS"),
            "{method}"
        );
    }
    assert!(backend.recorded().is_empty(), "{:?}", backend.recorded());
    for method in [Method::GET, Method::POST, Method::DELETE] {
        let answer = app.mcp_request(method.clone(), "/mcp", Some(access), &[], None).await;
        assert_eq!(answer.status, StatusCode::OK, "{method}");
        assert!(backend.recorded().last().unwrap().line.starts_with(method.as_str()));
    }
    guarded.stop().await;
}

#[actix_web::test]
async fn backend_cors_location_and_connection_named_headers_stay_at_the_proxy() {
    let guarded = Guarded::in_front_of(RawBackend::answering_with(&[
        ("Access-Control-Allow-Origin", "*"),
        ("Access-Control-Allow-Credentials", "true"),
        ("Location", "http://10.0.0.7:9000/internal"),
        ("Connection", "keep-alive, X-Backend-Trace"),
        ("X-Backend-Trace", "node-7"),
        ("Keep-Alive", "timeout=5"),
        ("X-Kept", "yes"),
    ]))
    .await;
    let Guarded { app, access, .. } = &guarded;
    let answer = app
        .mcp_request(
            Method::POST,
            "/mcp",
            Some(access),
            &[("Origin", &app.address)],
            Some(ping()),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("x-kept").as_deref(), Some("yes"));
    assert_eq!(
        answer.header("access-control-allow-origin").as_deref(),
        Some(app.address.as_str()),
        "the proxy's own CORS, not the backend's `*`"
    );
    for dropped in [
        "access-control-allow-credentials",
        "location",
        "x-backend-trace",
        "keep-alive",
    ] {
        assert!(answer.header(dropped).is_none(), "{dropped} reached the client");
    }
    guarded.stop().await;
}

#[actix_web::test]
async fn request_headers_the_client_names_in_connection_are_not_forwarded() {
    let guarded = Guarded::in_front_of(RawBackend::start()).await;
    let Guarded { app, backend, access } = &guarded;
    let host = host_of(app);
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {access}\r\nConnection: close, Mcp-Session-Id, mcp-param-hop\r\n\
         Mcp-Session-Id: s-1\r\nMcp-Param-Hop: 1\r\nMcp-Param-Region: eu\r\nMCP-Protocol-Version: 2025-06-18\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{PING}",
        PING.len()
    );
    let answer = raw(&app.address, request, Duration::from_secs(5)).await.unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    let seen = backend.recorded().pop().unwrap();
    assert!(seen.values("mcp-session-id").is_empty(), "{seen:?}");
    assert!(seen.values("mcp-param-hop").is_empty(), "{seen:?}");
    assert_eq!(seen.values("mcp-param-region"), ["eu"]);
    assert_eq!(seen.values("mcp-protocol-version"), ["2025-06-18"]);
    guarded.stop().await;
}

#[actix_web::test]
async fn the_mcp_servers_address_and_the_http_clients_errors_never_reach_the_client() {
    let Guarded { app, backend, access } = Guarded::start(&[("OAUTH_PROXY_MCP_RESPONSE_TIMEOUT", "1")]).await;
    let port = backend
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .trim_end_matches("/mcp")
        .to_string();
    let slow = app
        .mcp_request(Method::POST, "/mcp/slow", Some(&access), &[], Some(ping()))
        .await;
    assert_eq!(slow.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(slow.json()["error"]["message"], "the MCP server did not answer in time");
    backend.stop().await;
    let down = app.mcp_post(Some(&access), ping()).await;
    assert_eq!(down.status, StatusCode::BAD_GATEWAY);
    assert_eq!(down.json()["error"]["message"], "the MCP server could not be reached");
    assert!(
        !down.body.contains(&port) && !down.body.contains("127.0.0.1"),
        "{}",
        down.body
    );
    app.stop().await;
}

#[actix_web::test]
async fn mcp_param_headers_reach_the_mcp_server_and_are_allowed_in_a_preflight() {
    let guarded = Guarded::in_front_of(RawBackend::start()).await;
    let Guarded { app, backend, access } = &guarded;
    let host = host_of(app);
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {access}\r\nMcp-Param-Region: eu-west-1\r\n\
         Mcp-Param-X-Y: 1\r\nMcp-Param-X-Y: 2\r\nX-Other: no\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{PING}",
        PING.len()
    );
    let answer = raw(&app.address, request, Duration::from_secs(5)).await.unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    let seen = backend.recorded().pop().unwrap();
    assert_eq!(seen.values("mcp-param-region"), ["eu-west-1"]);
    assert_eq!(seen.values("mcp-param-x-y"), ["1", "2"], "every value, in order");
    assert!(seen.values("x-other").is_empty());

    let preflight = app
        .mcp_request(
            Method::OPTIONS,
            "/mcp",
            None,
            &[
                ("Origin", &app.address),
                ("Access-Control-Request-Method", "POST"),
                (
                    "Access-Control-Request-Headers",
                    "authorization, mcp-param-region,Mcp-Param-X-Y, x-evil",
                ),
            ],
            None,
        )
        .await;
    assert_eq!(preflight.status, StatusCode::NO_CONTENT);
    let allowed: Vec<String> = preflight
        .header("access-control-allow-headers")
        .unwrap()
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    for name in ["authorization", "mcp-session-id", "mcp-param-region", "mcp-param-x-y"] {
        assert!(allowed.iter().any(|a| a == name), "{name} not in {allowed:?}");
    }
    assert!(!allowed.iter().any(|a| a == "x-evil"), "{allowed:?}");
    guarded.stop().await;
}
