//! RFC 8414 and RFC 9728 discovery documents, CORS, and health.

use awc::http::StatusCode;

use crate::helpers::TestApp;

#[actix_web::test]
async fn authorization_server_metadata_lists_what_the_standards_require() {
    let app = TestApp::spawn().await;
    let answer = app.get("/.well-known/oauth-authorization-server").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("access-control-allow-origin").as_deref(), Some("*"));
    let doc = answer.json();
    let base = &app.address;
    assert_eq!(doc["issuer"], *base);
    assert_eq!(doc["authorization_endpoint"], format!("{base}/authorize"));
    assert_eq!(doc["token_endpoint"], format!("{base}/token"));
    assert_eq!(doc["registration_endpoint"], format!("{base}/register"));
    assert_eq!(doc["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(doc["code_challenge_methods_supported"], serde_json::json!(["S256"]));
    assert_eq!(
        doc["grant_types_supported"],
        serde_json::json!(["authorization_code", "refresh_token"])
    );
    let methods = doc["token_endpoint_auth_methods_supported"].as_array().unwrap();
    assert!(methods.iter().any(|m| m == "none"));
    // SEP-2207: `offline_access` is offered by the authorization server.
    assert_eq!(
        doc["scopes_supported"],
        serde_json::json!(["openid", "profile", "email", "offline_access"])
    );
    assert_eq!(doc["authorization_response_iss_parameter_supported"], true);
    app.stop().await;
}

#[actix_web::test]
async fn protected_resource_metadata_is_served_at_root_and_path_form() {
    let app = TestApp::spawn().await;
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    ] {
        let answer = app.get(path).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        let doc = answer.json();
        assert_eq!(doc["resource"], format!("{}/mcp", app.address));
        assert_eq!(doc["authorization_servers"], serde_json::json!([app.address]));
    }
    app.stop().await;
}

#[actix_web::test]
async fn cors_preflight_is_answered_on_token_and_register_but_not_authorize() {
    let app = TestApp::spawn().await;
    let client = awc::Client::default();
    for path in ["/token", "/register", "/.well-known/oauth-authorization-server"] {
        let response = client
            .request(awc::http::Method::OPTIONS, format!("{}{path}", app.address))
            .insert_header(("Origin", "https://inspector.example"))
            .insert_header(("Access-Control-Request-Method", "POST"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT, "{path}");
        assert_eq!(response.headers().get("access-control-allow-origin").unwrap(), "*");
    }
    let authorize = app.get("/authorize").await;
    assert!(authorize.header("access-control-allow-origin").is_none());
    app.stop().await;
}

#[actix_web::test]
async fn healthz_answers_ok() {
    let app = TestApp::spawn().await;
    let answer = app.get("/healthz").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json()["status"], "ok");
    app.stop().await;
}

#[actix_web::test]
async fn the_stylesheet_is_served_for_the_pages() {
    let app = TestApp::spawn().await;
    let answer = app.get("/static/consent.css").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.header("content-type").unwrap().starts_with("text/css"));
    assert_eq!(app.get("/static/../Cargo.toml").await.status, StatusCode::NOT_FOUND);
    app.stop().await;
}

/// RFC 9110 §15.5.6: a 405 answer MUST list the methods the resource does
/// support in `Allow`.
#[actix_web::test]
async fn a_method_an_endpoint_does_not_take_gets_405_naming_the_ones_it_does() {
    let app = TestApp::spawn().await;
    let cases = [
        ("GET", "/token", "POST, OPTIONS"),
        ("DELETE", "/register", "POST, OPTIONS"),
        ("POST", "/authorize", "GET"),
        ("PUT", "/.well-known/oauth-authorization-server", "GET, OPTIONS"),
        ("GET", "/consent", "POST"),
        ("POST", "/jwks.json", "GET, OPTIONS"),
    ];
    for (method, path, allowed) in cases {
        let response = app
            .http()
            .request(method.parse().unwrap(), format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        let allow = response.headers().get("allow").map(|v| v.to_str().unwrap().to_string());
        assert_eq!(allow.as_deref(), Some(allowed), "{method} {path}");
    }
    // The methods each endpoint takes still reach it.
    assert_eq!(
        app.get("/.well-known/oauth-authorization-server").await.status,
        StatusCode::OK
    );
    let preflight = app
        .http()
        .request(awc::http::Method::OPTIONS, format!("{}/token", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
    app.stop().await;
}

#[actix_web::test]
async fn metadata_leaves_scopes_supported_out_when_no_scope_is_configured() {
    // An empty `scopes_supported` reads as "no scope may be asked for"; the
    // Python SDK turns it into a registration with `"scope": ""`. The
    // authorization server still offers `offline_access` (SEP-2207), and
    // only that.
    let app = TestApp::spawn_with(
        &[("OAUTH_PROXY_UPSTREAM_SCOPES", "")],
        crate::mock_upstream::MockUpstreamConfig::default(),
    )
    .await;
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    ] {
        let answer = app.get(path).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
        let doc = answer.json();
        assert!(doc.get("resource").is_some(), "{path}: {doc}");
        assert!(doc.get("scopes_supported").is_none(), "{path}: {doc}");
    }
    let doc = app.get("/.well-known/oauth-authorization-server").await.json();
    assert_eq!(doc["scopes_supported"], serde_json::json!(["offline_access"]), "{doc}");
    app.stop().await;
}

#[actix_web::test]
async fn offline_access_is_in_the_authorization_server_metadata_never_in_the_resource_metadata_or_challenges() {
    // An upstream that needs `offline_access` for its own refresh token: the
    // scope list (advertised by default) names it, yet the MCP resource never
    // asks for it (SEP-2207).
    let backend = crate::backend_double::BackendDouble::start().await;
    let app = TestApp::spawn_with(
        &[
            ("OAUTH_PROXY_UPSTREAM_SCOPES", "openid offline_access email"),
            ("OAUTH_PROXY_MCP_UPSTREAM_URL", backend.url.as_str()),
        ],
        crate::mock_upstream::MockUpstreamConfig::default(),
    )
    .await;
    let doc = app.get("/.well-known/oauth-authorization-server").await.json();
    assert_eq!(
        doc["scopes_supported"],
        serde_json::json!(["openid", "email", "offline_access"]),
        "listed once, last: {doc}"
    );
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    ] {
        let doc = app.get(path).await.json();
        assert_eq!(
            doc["scopes_supported"],
            serde_json::json!(["openid", "email"]),
            "{path}: {doc}"
        );
    }
    let ping = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let missing = app.mcp_post(None, ping.clone()).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(crate::helpers::bearer_challenge(&missing)["scope"], "openid email");
    let invalid = app.mcp_post(Some("not-a-token"), ping).await;
    assert_eq!(invalid.status, StatusCode::UNAUTHORIZED);
    assert_eq!(crate::helpers::bearer_challenge(&invalid)["scope"], "openid email");
    app.stop().await;
    backend.stop().await;
}
