//! `offline_access` (SEP-2207) and `OAUTH_PROXY_REFRESH_TOKENS`: the scope is
//! accepted at `/authorize` without reaching the upstream, and decides
//! whether a code exchange gets a refresh token when the operator asks for
//! `offline_access`; by default (`always`) every exchange gets one.

use awc::http::StatusCode;
use serde_json::Value;

use crate::helpers::{jwt_payload, query_param, Pkce, TestApp, TestClient};
use crate::mock_upstream::MockUpstreamConfig;

/// A proxy in swap (`true`) or pass-through mode with the given refresh policy
/// (`None`: the default).
async fn spawn(swap: bool, policy: Option<&str>) -> TestApp {
    let mut settings = vec![("OAUTH_PROXY_ENABLE_TOKEN_SWAP", if swap { "true" } else { "false" })];
    if let Some(policy) = policy {
        settings.push(("OAUTH_PROXY_REFRESH_TOKENS", policy));
    }
    TestApp::spawn_with(&settings, MockUpstreamConfig::default()).await
}

/// The first answer to `/authorize` with `scope` (when given).
async fn authorize(app: &TestApp, client: &TestClient, pkce: &Pkce, scope: Option<&str>) -> crate::helpers::Answer {
    let mut path = app.authorize_path(client, pkce, "s");
    if let Some(scope) = scope {
        let scope: String = url::form_urlencoded::byte_serialize(scope.as_bytes()).collect();
        path.push_str(&format!("&scope={scope}"));
    }
    app.browser_get(&path).await
}

/// The whole flow with `scope` (when given): the token response.
async fn tokens_for(app: &TestApp, client: &TestClient, scope: Option<&str>) -> Value {
    let pkce = Pkce::new();
    let first = authorize(app, client, &pkce, scope).await;
    let to_upstream = if first.status == StatusCode::OK {
        app.approve(&first).await
    } else {
        first
    };
    let back = app.through_upstream(&to_upstream).await;
    assert_eq!(back.status, StatusCode::FOUND, "callback: {}", back.body);
    let code = query_param(&back.location(), "code").unwrap_or_else(|| panic!("no code in {}", back.location()));
    let answer = app.exchange_code(client, &code, &pkce.verifier).await;
    assert_eq!(answer.status, StatusCode::OK, "token: {}", answer.body);
    answer.json()
}

#[actix_web::test]
async fn offline_access_is_accepted_at_authorize_and_never_forwarded_upstream() {
    let app = spawn(true, None).await;
    let client = app.register_public().await;
    let tokens = tokens_for(&app, &client, Some("openid offline_access")).await;
    assert_eq!(tokens["scope"], "offline_access openid");
    let upstream = &app.upstream.authorize_requests()[0];
    assert_eq!(
        upstream["scope"], "openid profile email",
        "the configured upstream scopes only"
    );
    assert_eq!(
        jwt_payload(tokens["access_token"].as_str().unwrap())["scope"],
        "offline_access openid"
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_request_for_offline_access_alone_gets_the_default_scopes_with_it() {
    let app = spawn(true, None).await;
    let client = app.register_public().await;
    let tokens = tokens_for(&app, &client, Some("offline_access")).await;
    assert_eq!(tokens["scope"], "email offline_access openid profile");
    // And asking for nothing still gets the default, without offline_access.
    let tokens = tokens_for(&app, &client, None).await;
    assert_eq!(tokens["scope"], "email openid profile");
    app.stop().await;
}

#[actix_web::test]
async fn an_unknown_scope_next_to_offline_access_is_still_invalid_scope() {
    let app = spawn(true, None).await;
    let client = app.register_public().await;
    let page = authorize(&app, &client, &Pkce::new(), Some("offline_access admin")).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    assert!(page.body.contains("invalid_scope"), "{}", page.body);
    assert!(page.body.contains("admin"), "{}", page.body);
    assert!(app.upstream.authorize_requests().is_empty(), "nothing went upstream");
    app.stop().await;
}

/// Under `policy`, a flow without `offline_access` and one with it: whether
/// each got a refresh token, and the second one's refresh works.
async fn refresh_tokens_under(swap: bool, policy: Option<&str>) -> (bool, bool) {
    let app = spawn(swap, policy).await;
    let client = app.register_public().await;
    let without = tokens_for(&app, &client, Some("openid email")).await;
    let with = tokens_for(&app, &client, Some("openid email offline_access")).await;
    assert!(with["access_token"].is_string(), "{with}");
    let refresh_token = with["refresh_token"].as_str().map(String::from);
    if let Some(refresh_token) = &refresh_token {
        let refreshed = app.refresh(&client, refresh_token).await;
        assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
        assert!(refreshed.json()["refresh_token"].is_string(), "rotated");
    }
    if let Some(issued) = without["refresh_token"].as_str() {
        // Still refreshable: `always` issues a working one.
        assert_eq!(app.refresh(&client, issued).await.status, StatusCode::OK);
    }
    app.stop().await;
    (without.get("refresh_token").is_some(), refresh_token.is_some())
}

#[actix_web::test]
async fn by_default_every_code_exchange_gets_a_refresh_token_in_swap_mode() {
    assert_eq!(refresh_tokens_under(true, None).await, (true, true));
    assert_eq!(refresh_tokens_under(true, Some("always")).await, (true, true));
}

#[actix_web::test]
async fn by_default_every_code_exchange_gets_the_upstream_refresh_token_in_pass_through_mode() {
    assert_eq!(refresh_tokens_under(false, None).await, (true, true));
    assert_eq!(refresh_tokens_under(false, Some("always")).await, (true, true));
}

#[actix_web::test]
async fn with_refresh_tokens_offline_access_only_a_grant_that_asked_for_it_gets_a_refresh_token_in_swap_mode() {
    assert_eq!(refresh_tokens_under(true, Some("offline_access")).await, (false, true));
}

#[actix_web::test]
async fn with_refresh_tokens_offline_access_the_upstream_refresh_token_is_withheld_unless_asked_for_in_pass_through_mode(
) {
    assert_eq!(refresh_tokens_under(false, Some("offline_access")).await, (false, true));
}

#[actix_web::test]
async fn with_refresh_tokens_offline_access_a_withheld_upstream_refresh_token_cannot_be_used_at_token() {
    // Pass-through: the upstream's refresh token exists, but the client was
    // not given it; presented anyway (leaked, guessed), it is refused.
    let app = spawn(false, Some("offline_access")).await;
    let client = app.register_public().await;
    let tokens = tokens_for(&app, &client, None).await;
    assert!(tokens.get("refresh_token").is_none(), "{tokens}");
    let withheld = app.upstream.issued_refresh_tokens()[0].clone();
    let calls = app.upstream.token_requests().len();
    let answer = app.refresh(&client, &withheld).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert_eq!(answer.json()["error"], "invalid_grant");
    assert_eq!(app.upstream.token_requests().len(), calls, "no upstream call");
    app.stop().await;
}
