//! Full flows: discovery → DCR → authorize (consent) → callback → token →
//! refresh, in swap and pass-through modes, with both upstream client
//! authentication methods and forwarded PKCE.

use awc::http::StatusCode;

use crate::helpers::{jwt_payload, query_param, Pkce, TestApp, REDIRECT_URI};
use crate::mock_upstream::{MockUpstreamConfig, UpstreamAuthMethod};

#[actix_web::test]
async fn swap_mode_full_flow_issues_proxy_jwts_mapped_to_upstream_tokens() {
    let app = TestApp::spawn().await;
    // Discovery.
    let metadata = app.get("/.well-known/oauth-authorization-server").await.json();
    assert_eq!(metadata["issuer"], app.address);
    // DCR.
    let client = app.register_confidential().await;
    // Authorize with consent.
    let pkce = Pkce::new();
    let consent = app.browser_get(&app.authorize_path(&client, &pkce, "xyz")).await;
    assert_eq!(consent.status, StatusCode::OK);
    assert!(consent.body.contains("Test Client"));
    assert!(consent.body.contains(REDIRECT_URI));
    let to_upstream = app.approve(&consent).await;
    assert_eq!(to_upstream.status, StatusCode::SEE_OTHER);
    let upstream_request = to_upstream.location();
    assert!(upstream_request
        .as_str()
        .starts_with(&app.upstream.authorization_endpoint()));
    assert_eq!(
        query_param(&upstream_request, "scope").as_deref(),
        Some("openid profile email")
    );
    assert_eq!(
        query_param(&upstream_request, "code_challenge_method").as_deref(),
        Some("S256")
    );
    // The proxy's own PKCE pair upstream, not the client's.
    assert_ne!(
        query_param(&upstream_request, "code_challenge"),
        Some(pkce.challenge.clone())
    );
    assert_eq!(query_param(&upstream_request, "resource"), None);
    // Callback → client.
    let back = app.through_upstream(&to_upstream).await;
    assert_eq!(back.status, StatusCode::FOUND);
    let to_client = back.location();
    assert!(to_client.as_str().starts_with(REDIRECT_URI));
    assert_eq!(query_param(&to_client, "state").as_deref(), Some("xyz"));
    assert_eq!(query_param(&to_client, "iss").as_deref(), Some(app.address.as_str()));
    let code = query_param(&to_client, "code").unwrap();
    // Token.
    let answer = app.exchange_code(&client, &code, &pkce.verifier).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(answer.header("pragma").as_deref(), Some("no-cache"));
    let tokens = answer.json();
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 3600);
    let access = tokens["access_token"].as_str().unwrap();
    let claims = jwt_payload(access);
    assert_eq!(claims["iss"], app.address);
    assert_eq!(claims["aud"], format!("{}/mcp", app.address));
    assert_eq!(claims["sub"], "user-123");
    assert_eq!(claims["client_id"], client.client_id);
    assert_eq!(claims["token_use"], "access");
    assert_eq!(claims["email"], "user@example.com");
    assert_eq!(claims["name"], "Test User");
    assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 3600);
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
    let refresh_claims = jwt_payload(tokens["refresh_token"].as_str().unwrap());
    assert_eq!(refresh_claims["token_use"], "refresh");
    assert_eq!(
        refresh_claims["exp"].as_u64().unwrap() - refresh_claims["iat"].as_u64().unwrap(),
        2_592_000
    );
    // The upstream token never reaches the client, but the vault maps to it.
    let upstream_token = app.upstream.issued_access_tokens()[0].clone();
    assert!(!answer.body.contains(&upstream_token));
    let loaded = app.proxy.load_upstream_tokens(access).await.expect("upstream tokens");
    assert_eq!(loaded.access_token, upstream_token);
    // Upstream code exchange used client_secret_basic with the proxy's PKCE verifier.
    let exchange = &app.upstream.token_requests()[0];
    assert!(exchange.authorization_header.as_deref().unwrap().starts_with("Basic "));
    assert!(exchange.form.contains_key("code_verifier"));
    assert!(!exchange.form.contains_key("client_secret"));
    // Refresh.
    let refreshed = app.refresh(&client, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    let refreshed = refreshed.json();
    assert_ne!(refreshed["access_token"], tokens["access_token"]);
    assert_ne!(refreshed["refresh_token"], tokens["refresh_token"]);
    // The upstream was refreshed too, and the vault holds the new upstream token.
    let new_upstream = app.upstream.issued_access_tokens().last().unwrap().clone();
    assert_ne!(new_upstream, upstream_token);
    let loaded = app
        .proxy
        .load_upstream_tokens(refreshed["access_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(loaded.access_token, new_upstream);
    app.stop().await;
}

#[actix_web::test]
async fn client_secret_post_is_used_upstream_when_configured() {
    let upstream = MockUpstreamConfig {
        auth_method: UpstreamAuthMethod::ClientSecretPost,
        ..Default::default()
    };
    let app = TestApp::spawn_with(
        &[("OAUTH_PROXY_UPSTREAM_TOKEN_ENDPOINT_AUTH_METHOD", "client_secret_post")],
        upstream,
    )
    .await;
    let client = app.register_confidential().await;
    let tokens = app.full_flow(&client).await;
    assert!(tokens["access_token"].is_string());
    let exchange = &app.upstream.token_requests()[0];
    assert_eq!(exchange.authorization_header, None);
    assert_eq!(exchange.form["client_id"], "upstream-client");
    assert_eq!(
        exchange.form["client_secret"],
        MockUpstreamConfig::default().client_secret
    );
    app.stop().await;
}

#[actix_web::test]
async fn pass_through_mode_hands_out_the_upstream_tokens_and_refreshes_upstream() {
    let app = TestApp::spawn_with(
        &[("OAUTH_PROXY_ENABLE_TOKEN_SWAP", "false")],
        MockUpstreamConfig::default(),
    )
    .await;
    let client = app.register_public().await;
    let tokens = app.full_flow(&client).await;
    assert_eq!(tokens["access_token"], app.upstream.issued_access_tokens()[0]);
    assert_eq!(tokens["refresh_token"], app.upstream.issued_refresh_tokens()[0]);
    let loaded = app
        .proxy
        .load_upstream_tokens(tokens["access_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(loaded.access_token, tokens["access_token"].as_str().unwrap());
    // Refresh goes upstream with the proxy's credentials.
    let refreshed = app.refresh(&client, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    let refreshed = refreshed.json();
    assert_eq!(
        refreshed["access_token"],
        *app.upstream.issued_access_tokens().last().unwrap()
    );
    let upstream_refresh = app.upstream.token_requests().last().unwrap().clone();
    assert_eq!(upstream_refresh.form["grant_type"], "refresh_token");
    assert!(upstream_refresh.authorization_header.unwrap().starts_with("Basic "));
    app.stop().await;
}

#[actix_web::test]
async fn pass_through_refresh_only_works_for_the_client_it_was_issued_to() {
    let app = TestApp::spawn_with(
        &[("OAUTH_PROXY_ENABLE_TOKEN_SWAP", "false")],
        MockUpstreamConfig::default(),
    )
    .await;
    let client = app.register_public().await;
    let other = app.register_public().await;
    let tokens = app.full_flow(&client).await;
    let upstream_calls = app.upstream.token_requests().len();
    let answer = app.refresh(&other, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.json()["error"], "invalid_grant");
    assert_eq!(
        app.upstream.token_requests().len(),
        upstream_calls,
        "no upstream call for a foreign client"
    );
    app.stop().await;
}

#[actix_web::test]
async fn forwarded_pkce_sends_the_client_challenge_upstream_and_its_verifier_at_token_time() {
    let app = TestApp::spawn_with(&[("OAUTH_PROXY_FORWARD_PKCE", "true")], MockUpstreamConfig::default()).await;
    let client = app.register_confidential().await;
    let pkce = Pkce::new();
    let code = app.code_for(&client, &pkce).await;
    let authorize = &app.upstream.authorize_requests()[0];
    assert_eq!(authorize["code_challenge"], pkce.challenge);
    assert!(
        app.upstream.token_requests().is_empty(),
        "the upstream code waits for the client's verifier"
    );
    let answer = app.exchange_code(&client, &code, &pkce.verifier).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(app.upstream.token_requests()[0].form["code_verifier"], pkce.verifier);
    let access = answer.json()["access_token"].as_str().unwrap().to_string();
    assert!(app.proxy.load_upstream_tokens(&access).await.is_some());
    // The grant made at /token holds this pair: its refresh token rotates.
    let refreshed = app
        .refresh(&client, answer.json()["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    app.stop().await;
}

#[actix_web::test]
async fn consent_off_redirects_straight_upstream() {
    let app = TestApp::spawn_with(
        &[
            ("OAUTH_PROXY_CONSENT_REQUIRED", "false"),
            // Consent off needs every redirect host pinned (here: loopback).
            ("OAUTH_PROXY_ALLOWED_REDIRECT_URI_PATTERNS", "http://127.0.0.1:*"),
        ],
        MockUpstreamConfig::default(),
    )
    .await;
    let client = app.register_confidential().await;
    let pkce = Pkce::new();
    let first = app.browser_get(&app.authorize_path(&client, &pkce, "s")).await;
    assert_eq!(first.status, StatusCode::FOUND);
    assert!(first
        .location()
        .as_str()
        .starts_with(&app.upstream.authorization_endpoint()));
    let tokens = app.full_flow(&client).await;
    assert!(tokens["refresh_token"].is_string());
    app.stop().await;
}

#[actix_web::test]
async fn custom_claims_follow_the_configuration_and_never_override_reserved_ones() {
    let app = TestApp::spawn_with(
        &[("OAUTH_PROXY_CUSTOM_CLAIMS", "email,iss,aud,client_id")],
        MockUpstreamConfig::default(),
    )
    .await;
    let client = app.register_confidential().await;
    let tokens = app.full_flow(&client).await;
    let claims = jwt_payload(tokens["access_token"].as_str().unwrap());
    assert_eq!(claims["email"], "user@example.com");
    assert!(claims.get("name").is_none(), "not configured");
    assert_eq!(claims["iss"], app.address);
    assert_eq!(claims["client_id"], client.client_id);
    app.stop().await;
}

#[actix_web::test]
async fn a_custom_claim_configured_twice_appears_once_in_the_token() {
    let app = TestApp::spawn_with(
        &[("OAUTH_PROXY_CUSTOM_CLAIMS", "email,email")],
        MockUpstreamConfig::default(),
    )
    .await;
    let client = app.register_confidential().await;
    let tokens = app.full_flow(&client).await;
    let access = tokens["access_token"].as_str().unwrap();
    let payload = String::from_utf8(
        base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            access.split('.').nth(1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(payload.matches("\"email\"").count(), 1, "{payload}");
    assert_eq!(jwt_payload(access)["email"], "user@example.com");
    app.stop().await;
}

#[actix_web::test]
async fn userinfo_supplies_claims_when_configured_and_tokens_are_opaque() {
    let upstream = MockUpstreamConfig {
        issue_id_token: false,
        ..Default::default()
    };
    let app = TestApp::spawn_with(
        &[("OAUTH_PROXY_UPSTREAM_USERINFO_ENDPOINT", "{upstream}/userinfo")],
        upstream,
    )
    .await;
    let client = app.register_confidential().await;
    let tokens = app.full_flow(&client).await;
    let claims = jwt_payload(tokens["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], "user-123");
    assert_eq!(claims["email"], "user@example.com");
    app.stop().await;
}

#[actix_web::test]
async fn extra_authorize_params_reach_the_upstream() {
    let app = TestApp::spawn_with(
        &[(
            "OAUTH_PROXY_UPSTREAM_EXTRA_AUTHORIZE_PARAMS",
            "access_type=offline&prompt=consent",
        )],
        MockUpstreamConfig::default(),
    )
    .await;
    let client = app.register_confidential().await;
    let pkce = Pkce::new();
    let _ = app.code_for(&client, &pkce).await;
    let authorize = &app.upstream.authorize_requests()[0];
    assert_eq!(authorize["access_type"], "offline");
    assert_eq!(authorize["prompt"], "consent");
    app.stop().await;
}

#[actix_web::test]
async fn upstream_endpoints_can_come_from_discovery() {
    let app = TestApp::spawn_with(
        &[
            ("OAUTH_PROXY_UPSTREAM_AUTHORIZATION_ENDPOINT", ""),
            ("OAUTH_PROXY_UPSTREAM_TOKEN_ENDPOINT", ""),
            ("OAUTH_PROXY_UPSTREAM_ISSUER", "{upstream}"),
        ],
        MockUpstreamConfig::default(),
    )
    .await;
    let client = app.register_confidential().await;
    let tokens = app.full_flow(&client).await;
    assert!(tokens["access_token"].is_string());
    assert_eq!(
        app.proxy.upstream().token_endpoint.as_str(),
        app.upstream.token_endpoint()
    );
    app.stop().await;
}
