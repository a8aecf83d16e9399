//! RFC 7591 dynamic client registration and its redirect-URI rules.

use awc::http::StatusCode;
use serde_json::json;

use std::rc::Rc;
use std::time::Duration;

use crate::helpers::{Pkce, TestApp, TestClient, REDIRECT_URI};
use crate::mock_upstream::{MockUpstream, MockUpstreamConfig};
use crate::redis_server::RedisServer;

#[actix_web::test]
async fn a_confidential_registration_gets_a_secret_and_echoes_its_metadata() {
    let app = TestApp::spawn().await;
    let answer = app
        .post_json(
            "/register",
            &json!({"client_name": "Claude", "redirect_uris": ["https://claude.ai/api/mcp/auth_callback"]}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(answer.header("cache-control").as_deref(), Some("no-store"));
    let doc = answer.json();
    assert!(doc["client_id"].as_str().is_some_and(|id| id.len() >= 20));
    assert!(doc["client_secret"].as_str().is_some_and(|s| s.len() >= 40));
    assert_eq!(doc["token_endpoint_auth_method"], "client_secret_basic");
    assert_eq!(doc["redirect_uris"], json!(["https://claude.ai/api/mcp/auth_callback"]));
    assert_eq!(doc["client_name"], "Claude");
    // RFC 7591 §3.2.1: with a secret, when it expires (0: never), and when
    // the id was issued.
    assert_eq!(doc["client_secret_expires_at"], 0);
    assert!(doc["client_id_issued_at"].as_u64().is_some_and(|at| at > 1_700_000_000));
    assert_eq!(doc["grant_types"], json!(["authorization_code", "refresh_token"]));
    assert_eq!(doc["response_types"], json!(["code"]));
    app.stop().await;
}

#[actix_web::test]
async fn a_public_registration_gets_no_secret() {
    let app = TestApp::spawn().await;
    let doc = app
        .post_json(
            "/register",
            &json!({"redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "none"}),
        )
        .await
        .json();
    assert_eq!(doc["token_endpoint_auth_method"], "none");
    assert!(doc.get("client_secret").is_none());
    assert!(doc.get("client_secret_expires_at").is_none());
    assert!(doc.get("client_name").is_none(), "absent metadata stays absent: {doc}");
    app.stop().await;
}

#[actix_web::test]
async fn a_registration_with_some_refused_uris_keeps_the_allowed_ones() {
    let app = TestApp::spawn().await;
    let doc = app
        .post_json(
            "/register",
            &json!({"redirect_uris": [
                "cursor://anysphere.cursor-retrieval/oauth/callback",
                "javascript:alert(1)",
                "http://evil.example/cb",
                "http://localhost:3000/cb"
            ]}),
        )
        .await
        .json();
    assert_eq!(
        doc["redirect_uris"],
        json!([
            "cursor://anysphere.cursor-retrieval/oauth/callback",
            "http://localhost:3000/cb"
        ])
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_registration_without_any_allowed_uri_is_invalid_redirect_uri() {
    let app = TestApp::spawn().await;
    for uris in [
        json!(["javascript:alert(1)"]),
        json!(["data:text/html,x"]),
        json!(["file:///etc/passwd"]),
        json!(["http://localhost:1@evil.example/cb"]),
        json!(["https://app.example/cb#fragment"]),
        json!(["http://evil.example/cb"]),
        json!([]),
    ] {
        let answer = app.post_json("/register", &json!({ "redirect_uris": uris })).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{uris}");
        assert_eq!(answer.json()["error"], "invalid_redirect_uri", "{uris}");
        assert!(answer.json()["error_description"].is_string());
    }
    app.stop().await;
}

#[actix_web::test]
async fn operator_patterns_limit_redirect_uris() {
    let app = TestApp::spawn_with(
        &[(
            "OAUTH_PROXY_ALLOWED_REDIRECT_URI_PATTERNS",
            "https://*.trusted.example/*, http://localhost:*",
        )],
        MockUpstreamConfig::default(),
    )
    .await;
    let ok = app
        .post_json(
            "/register",
            &json!({"redirect_uris": ["https://app.trusted.example/cb"]}),
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED);
    let refused = app
        .post_json("/register", &json!({"redirect_uris": ["https://claude.ai/cb"]}))
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.json()["error"], "invalid_redirect_uri");
    app.stop().await;
}

#[actix_web::test]
async fn malformed_registrations_get_clear_errors() {
    let app = TestApp::spawn().await;
    let not_json = awc::Client::default()
        .post(format!("{}/register", app.address))
        .insert_header(("Content-Type", "application/json"))
        .send_body("{not json")
        .await
        .unwrap();
    assert_eq!(not_json.status(), StatusCode::BAD_REQUEST);
    let answer = app
        .post_json(
            "/register",
            &json!({"redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "private_key_jwt"}),
        )
        .await;
    assert_eq!(answer.json()["error"], "invalid_client_metadata");
    let answer = app
        .post_json(
            "/register",
            &json!({"redirect_uris": ["http://127.0.0.1/cb"], "grant_types": ["password"]}),
        )
        .await;
    assert_eq!(answer.json()["error"], "invalid_client_metadata");
    app.stop().await;
}

#[actix_web::test]
async fn registration_is_rate_limited_per_address_and_capped() {
    let app = TestApp::spawn_with(
        &[
            ("OAUTH_PROXY_REGISTRATION_RATE_LIMIT", "3"),
            ("OAUTH_PROXY_MAX_CLIENTS", "100"),
        ],
        MockUpstreamConfig::default(),
    )
    .await;
    let body = json!({"redirect_uris": ["http://127.0.0.1/cb"]});
    for _ in 0..3 {
        assert_eq!(app.post_json("/register", &body).await.status, StatusCode::CREATED);
    }
    let limited = app.post_json("/register", &body).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.json()["error"], "temporarily_unavailable");
    app.stop().await;

    // At the cap with every client in use (none to evict), registration is refused.
    let app = TestApp::spawn_with(&[("OAUTH_PROXY_MAX_CLIENTS", "2")], MockUpstreamConfig::default()).await;
    for _ in 0..2 {
        let client = app.register_public().await;
        app.full_flow(&client).await;
    }
    let full = app.post_json("/register", &body).await;
    assert_eq!(full.status, StatusCode::SERVICE_UNAVAILABLE);
    app.stop().await;
}

/// The consent page (200) or the unknown-client page (400) for `client`.
async fn authorize_status(app: &TestApp, client: &TestClient) -> (StatusCode, bool) {
    app.clear_cookies();
    let answer = app.browser_get(&app.authorize_path(client, &Pkce::new(), "s")).await;
    (answer.status, answer.body.contains("Unknown client"))
}

/// With a cap of 3: a used client, then two never-used ones; the fourth
/// registration (on `other`, which may be another instance) evicts the
/// oldest never-used one, keeps the used one; once every client is used,
/// registration is refused again.
async fn the_oldest_never_used_registration_makes_room(app: &TestApp, other: &TestApp) {
    let used = app.register_public().await;
    app.full_flow(&used).await;
    let oldest = app.register_public().await;
    // Evicted in registration order to the millisecond.
    actix_rt::time::sleep(Duration::from_millis(5)).await;
    let newer = other.register_public().await;
    actix_rt::time::sleep(Duration::from_millis(5)).await;
    let newest = other.register_public().await;
    // A worker may serve a client it read for up to a second (proxy::memo).
    actix_rt::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        authorize_status(app, &oldest).await,
        (StatusCode::BAD_REQUEST, true),
        "evicted"
    );
    for kept in [&used, &newer, &newest] {
        assert_eq!(authorize_status(app, kept).await, (StatusCode::OK, false), "{kept:?}");
    }
    app.full_flow(&used).await;

    for client in [&newer, &newest] {
        other.full_flow(client).await;
    }
    let full = app
        .post_json("/register", &json!({"redirect_uris": [REDIRECT_URI]}))
        .await;
    assert_eq!(full.status, StatusCode::SERVICE_UNAVAILABLE, "{}", full.body);
}

#[actix_web::test]
async fn at_the_cap_the_oldest_never_used_registration_makes_room_in_memory() {
    let app = TestApp::spawn_with(&[("OAUTH_PROXY_MAX_CLIENTS", "3")], MockUpstreamConfig::default()).await;
    the_oldest_never_used_registration_makes_room(&app, &app).await;
    app.stop().await;
}

#[actix_web::test]
async fn at_the_cap_the_oldest_never_used_registration_makes_room_in_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("data").to_string_lossy().to_string();
    let app = TestApp::spawn_with(
        &[("OAUTH_PROXY_MAX_CLIENTS", "3"), ("OAUTH_PROXY_STORAGE", &storage)],
        MockUpstreamConfig::default(),
    )
    .await;
    the_oldest_never_used_registration_makes_room(&app, &app).await;
    app.stop().await;
    drop(dir);
}

#[actix_web::test]
async fn at_the_cap_the_oldest_never_used_registration_makes_room_across_redis_instances() {
    let redis = RedisServer::start().await;
    let upstream = Rc::new(MockUpstream::start(MockUpstreamConfig::default()).await);
    let url = redis.url();
    let mut settings = vec![
        ("OAUTH_PROXY_MAX_CLIENTS", "3"),
        ("OAUTH_PROXY_STORAGE", url.as_str()),
        ("OAUTH_PROXY_ENCRYPTION_KEY", "test-encryption-key-test-encryption-key"),
        (
            "OAUTH_PROXY_CONSENT_SIGNING_KEY",
            "test-consent-key-test-consent-key-01234",
        ),
    ];
    let a = TestApp::spawn_instance(&settings, upstream.clone()).await;
    settings.push(("OAUTH_PROXY_BASE_URL", &a.address));
    let b = TestApp::spawn_instance(&settings, upstream).await;
    // Registered on A, evicted by a registration on B.
    the_oldest_never_used_registration_makes_room(&a, &b).await;
    b.stop().await;
    a.stop().await;
}

// `application_type` (OpenID Connect Dynamic Client Registration 1.0 §2, as
// MCP authorization 2026-07-28 adopts it for DCR).

#[actix_web::test]
async fn a_web_registration_keeps_only_https_redirect_uris_off_loopback_and_echoes_its_type() {
    let app = TestApp::spawn().await;
    let answer = app
        .post_json(
            "/register",
            &json!({
                "application_type": "web",
                "redirect_uris": [
                    "http://127.0.0.1:3000/cb",
                    "https://localhost/cb",
                    "https://127.0.0.1:8443/cb",
                    "https://[::1]/cb",
                    "https://app.localhost/cb",
                    "cursor://anysphere.cursor-retrieval/oauth/callback",
                    "https://app.example/cb"
                ],
            }),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let doc = answer.json();
    assert_eq!(doc["redirect_uris"], json!(["https://app.example/cb"]));
    assert_eq!(doc["application_type"], "web");
    app.stop().await;
}

#[actix_web::test]
async fn a_web_registration_with_only_loopback_or_private_use_redirect_uris_is_invalid_redirect_uri() {
    let app = TestApp::spawn().await;
    for uris in [
        json!(["http://localhost:3000/cb"]),
        json!(["http://127.0.0.1/cb", "https://localhost:8443/cb"]),
        json!(["cursor://anysphere.cursor-retrieval/oauth/callback"]),
    ] {
        let answer = app
            .post_json("/register", &json!({"application_type": "web", "redirect_uris": uris}))
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{uris}: {}", answer.body);
        let error = answer.json();
        assert_eq!(error["error"], "invalid_redirect_uri", "{uris}: {error}");
        assert!(
            error["error_description"].as_str().is_some_and(|d| d.contains("web")),
            "the description says why: {error}"
        );
    }
    app.stop().await;
}

#[actix_web::test]
async fn a_native_registration_keeps_loopback_private_use_and_https_redirect_uris_and_echoes_its_type() {
    let app = TestApp::spawn().await;
    let answer = app
        .post_json(
            "/register",
            &json!({
                "application_type": "native",
                "token_endpoint_auth_method": "none",
                "redirect_uris": [
                    "cursor://anysphere.cursor-retrieval/oauth/callback",
                    "http://127.0.0.1:33418/callback",
                    "http://localhost/cb",
                    "http://[::1]:8080/cb",
                    "https://app.example/cb",
                    "http://evil.example/cb",
                    "javascript:alert(1)"
                ],
            }),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let doc = answer.json();
    assert_eq!(
        doc["redirect_uris"],
        json!([
            "cursor://anysphere.cursor-retrieval/oauth/callback",
            "http://127.0.0.1:33418/callback",
            "http://localhost/cb",
            "http://[::1]:8080/cb",
            "https://app.example/cb"
        ])
    );
    assert_eq!(doc["application_type"], "native");
    // A native client's loopback URI still matches on any port (RFC 8252 §7.3).
    let client = TestClient {
        client_id: doc["client_id"].as_str().unwrap().to_string(),
        client_secret: None,
        redirect_uri: "http://localhost:61234/cb".into(),
    };
    let page = app.browser_get(&app.authorize_path(&client, &Pkce::new(), "s")).await;
    assert_eq!(page.status, StatusCode::OK, "the consent page: {}", page.body);
    app.stop().await;
}

#[actix_web::test]
async fn a_registration_without_application_type_keeps_the_default_rules_and_echoes_no_type() {
    // The proxy is no OpenID provider: an absent `application_type` is not
    // read as OIDC's `web` (MCP 2026-07-28: non-OIDC servers ignore it), so
    // clients that never send it (Cursor, older SDKs) register as before.
    let app = TestApp::spawn().await;
    let doc = app
        .post_json(
            "/register",
            &json!({"redirect_uris": ["cursor://anysphere.cursor-retrieval/oauth/callback", "http://127.0.0.1/cb"]}),
        )
        .await
        .json();
    assert_eq!(
        doc["redirect_uris"],
        json!([
            "cursor://anysphere.cursor-retrieval/oauth/callback",
            "http://127.0.0.1/cb"
        ])
    );
    assert!(doc.get("application_type").is_none(), "{doc}");
    app.stop().await;
}

#[actix_web::test]
async fn an_unknown_application_type_is_invalid_client_metadata() {
    let app = TestApp::spawn().await;
    for application_type in [json!("desktop"), json!("Native"), json!(""), json!(7)] {
        let answer = app
            .post_json(
                "/register",
                &json!({"application_type": application_type, "redirect_uris": ["https://app.example/cb"]}),
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{application_type}: {}",
            answer.body
        );
        assert_eq!(answer.json()["error"], "invalid_client_metadata", "{application_type}");
    }
    app.stop().await;
}
