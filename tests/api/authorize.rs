//! `GET /authorize`, the consent screen and the callback's browser checks.

use awc::http::StatusCode;
use serde_json::json;

use crate::helpers::{query_param, Pkce, TestApp, REDIRECT_URI};

fn assert_html_error_page(answer: &crate::helpers::Answer, status: StatusCode) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert!(answer.header("location").is_none(), "an error page, never a redirect");
    assert!(answer.header("content-type").unwrap().starts_with("text/html"));
    assert_eq!(answer.header("x-frame-options").as_deref(), Some("DENY"));
}

#[actix_web::test]
async fn an_unknown_client_gets_an_html_error_page_not_a_redirect() {
    let app = TestApp::spawn().await;
    let pkce = Pkce::new();
    let path = format!(
        "/authorize?response_type=code&client_id=nobody&redirect_uri={REDIRECT_URI}&code_challenge={}&code_challenge_method=S256",
        pkce.challenge
    );
    let answer = app.browser_get(&path).await;
    assert_html_error_page(&answer, StatusCode::BAD_REQUEST);
    assert!(answer.body.contains("Unknown client"));
    app.stop().await;
}

#[actix_web::test]
async fn an_unregistered_redirect_uri_gets_an_html_error_page() {
    let app = TestApp::spawn().await;
    let mut client = app
        .register(json!({"redirect_uris": ["http://localhost:6274/oauth/callback/debug", "https://app.example/cb"]}))
        .await;
    let pkce = Pkce::new();
    for evil in [
        "https://evil.example/cb",
        "http://localhost:6274/oauth/callback",
        "https://app.example/cb/x",
    ] {
        client.redirect_uri = evil.to_string();
        let answer = app.browser_get(&app.authorize_path(&client, &pkce, "s")).await;
        assert_html_error_page(&answer, StatusCode::BAD_REQUEST);
    }
    app.stop().await;
}

#[actix_web::test]
async fn loopback_redirect_uris_match_on_any_port() {
    let app = TestApp::spawn().await;
    let mut client = app
        .register(json!({"redirect_uris": ["http://127.0.0.1/callback"]}))
        .await;
    client.redirect_uri = "http://127.0.0.1:54321/callback".into();
    let pkce = Pkce::new();
    let answer = app.browser_get(&app.authorize_path(&client, &pkce, "s")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let back = app.authorize_to_client(&client, &pkce, "s").await;
    assert!(back.as_str().starts_with("http://127.0.0.1:54321/callback?"));
    app.stop().await;
}

#[actix_web::test]
async fn missing_or_plain_pkce_is_refused_back_at_the_client_with_state_and_iss() {
    let app = TestApp::spawn().await;
    let client = app.register_confidential().await;
    let pkce = Pkce::new();
    let valid = app.authorize_path(&client, &pkce, "st8");
    let without = valid.replace(
        &format!("&code_challenge={}&code_challenge_method=S256", pkce.challenge),
        "",
    );
    let plain = valid.replace("code_challenge_method=S256", "code_challenge_method=plain");
    let no_method = valid.replace("&code_challenge_method=S256", "");
    for path in [without, plain, no_method] {
        let answer = app.browser_get(&path).await;
        assert_eq!(answer.status, StatusCode::FOUND, "{path}");
        let to = answer.location();
        assert!(to.as_str().starts_with(REDIRECT_URI));
        assert_eq!(query_param(&to, "error").as_deref(), Some("invalid_request"));
        assert_eq!(query_param(&to, "state").as_deref(), Some("st8"));
        assert_eq!(query_param(&to, "iss").as_deref(), Some(app.address.as_str()));
        assert!(query_param(&to, "code").is_none());
    }
    app.stop().await;
}

#[actix_web::test]
async fn a_foreign_resource_is_invalid_target_and_ours_is_accepted_with_or_without_slash() {
    let app = TestApp::spawn().await;
    let client = app.register_confidential().await;
    let pkce = Pkce::new();
    let path = app.authorize_path(&client, &pkce, "s");
    let foreign = format!("{path}&resource=https%3A%2F%2Fother.example%2Fmcp");
    let answer = app.browser_get(&foreign).await;
    assert_eq!(
        query_param(&answer.location(), "error").as_deref(),
        Some("invalid_target")
    );
    for resource in [format!("{}/mcp", app.address), format!("{}/mcp/", app.address)] {
        let encoded: String = url::form_urlencoded::byte_serialize(resource.as_bytes()).collect();
        let answer = app.browser_get(&format!("{path}&resource={encoded}")).await;
        assert_eq!(answer.status, StatusCode::OK, "{resource}: {}", answer.body);
    }
    app.stop().await;
}

#[actix_web::test]
async fn unsupported_response_type_and_unknown_scope_are_redirected_errors() {
    let app = TestApp::spawn().await;
    let client = app.register_confidential().await;
    let pkce = Pkce::new();
    let path = app.authorize_path(&client, &pkce, "s");
    let token_type = path.replace("response_type=code", "response_type=token");
    let answer = app.browser_get(&token_type).await;
    assert_eq!(
        query_param(&answer.location(), "error").as_deref(),
        Some("unsupported_response_type")
    );
    let answer = app.browser_get(&format!("{path}&scope=admin")).await;
    assert_eq!(
        query_param(&answer.location(), "error").as_deref(),
        Some("invalid_scope")
    );
    app.stop().await;
}

#[actix_web::test]
async fn scopes_default_to_the_advertised_ones_and_split_on_whitespace() {
    let app = TestApp::spawn().await;
    let client = app.register_confidential().await;
    let pkce = Pkce::new();
    let path = app.authorize_path(&client, &pkce, "s");
    let page = app.browser_get(&path).await;
    for scope in ["openid", "profile", "email"] {
        assert!(page.body.contains(scope), "default scope {scope} shown");
    }
    let page = app.browser_get(&format!("{path}&scope=%20openid%09email")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(!page.body.contains(">profile<"));
    app.stop().await;
}

#[actix_web::test]
async fn a_state_with_escaped_characters_comes_back_unchanged() {
    // RFC 6749 §4.1.2: the exact value received from the client.
    let app = TestApp::spawn().await;
    let client = app.register_confidential().await;
    let pkce = Pkce::new();
    let state = "a b&c=d/é%";
    let page = app.browser_get(&app.authorize_path(&client, &pkce, state)).await;
    let back = app.through_upstream(&app.approve(&page).await).await;
    assert_eq!(query_param(&back.location(), "state").as_deref(), Some(state));
    app.stop().await;
}

#[actix_web::test]
async fn a_request_without_state_still_works() {
    let app = TestApp::spawn().await;
    let client = app.register_confidential().await;
    let pkce = Pkce::new();
    let path = app.authorize_path(&client, &pkce, "x").replace("&state=x", "");
    let page = app.browser_get(&path).await;
    let back = app.through_upstream(&app.approve(&page).await).await;
    let to = back.location();
    assert!(query_param(&to, "code").is_some());
    assert!(query_param(&to, "state").is_none());
    assert_eq!(query_param(&to, "iss").as_deref(), Some(app.address.as_str()));
    app.stop().await;
}

#[actix_web::test]
async fn the_consent_page_cannot_be_framed_or_cached() {
    let app = TestApp::spawn().await;
    let client = app.register_confidential().await;
    let page = app.browser_get(&app.authorize_path(&client, &Pkce::new(), "s")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.header("x-frame-options").as_deref(), Some("DENY"));
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("frame-ancestors 'none'"));
    assert!(
        csp.contains(&app.upstream.base_url()),
        "form-action allows the upstream redirect: {csp}"
    );
    assert_eq!(page.header("cache-control").as_deref(), Some("no-store"));
    assert!(page.header("access-control-allow-origin").is_none());
    assert!(page.body.contains("<form"));
    assert!(page.body.contains("method=\"post\""));
    assert!(page.body.contains("value=\"approve\"") && page.body.contains("value=\"deny\""));
    assert!(page.body.contains("127.0.0.1"), "redirect host shown");
    assert!(page.body.contains("127.0.0.1"), "provider shown");
    app.stop().await;
}

#[actix_web::test]
async fn denying_consent_sends_access_denied_with_state_and_no_code() {
    let app = TestApp::spawn().await;
    let client = app.register_confidential().await;
    let page = app
        .browser_get(&app.authorize_path(&client, &Pkce::new(), "keep-me"))
        .await;
    let answer = app
        .browser_post_form(
            "/consent",
            &[
                ("transaction_id", &page.form_value("transaction_id")),
                ("csrf_token", &page.form_value("csrf_token")),
                ("decision", "deny"),
            ],
        )
        .await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    let to = answer.location();
    assert!(to.as_str().starts_with(REDIRECT_URI));
    assert_eq!(query_param(&to, "error").as_deref(), Some("access_denied"));
    assert_eq!(query_param(&to, "state").as_deref(), Some("keep-me"));
    assert_eq!(query_param(&to, "iss").as_deref(), Some(app.address.as_str()));
    assert!(query_param(&to, "code").is_none());
    assert!(app.upstream.authorize_requests().is_empty(), "never went upstream");
    app.stop().await;
}

#[actix_web::test]
async fn consent_with_a_wrong_csrf_token_or_from_another_browser_is_refused() {
    let app = TestApp::spawn().await;
    let client = app.register_confidential().await;
    let page = app.browser_get(&app.authorize_path(&client, &Pkce::new(), "s")).await;
    let transaction_id = page.form_value("transaction_id");
    let csrf = page.form_value("csrf_token");
    let wrong = app
        .browser_post_form(
            "/consent",
            &[
                ("transaction_id", &transaction_id),
                ("csrf_token", "forged"),
                ("decision", "approve"),
            ],
        )
        .await;
    assert_html_error_page(&wrong, StatusCode::FORBIDDEN);
    app.clear_cookies();
    let other_browser = app
        .browser_post_form(
            "/consent",
            &[
                ("transaction_id", &transaction_id),
                ("csrf_token", &csrf),
                ("decision", "approve"),
            ],
        )
        .await;
    assert_html_error_page(&other_browser, StatusCode::FORBIDDEN);
    app.stop().await;
}

#[actix_web::test]
async fn remembered_consent_skips_the_page_for_that_client_only() {
    let app = TestApp::spawn().await;
    let client = app.register_confidential().await;
    let other = app.register_confidential().await;
    let _ = app.code_for(&client, &Pkce::new()).await;
    let again = app.browser_get(&app.authorize_path(&client, &Pkce::new(), "s")).await;
    assert_eq!(again.status, StatusCode::FOUND, "remembered: straight upstream");
    assert!(again
        .location()
        .as_str()
        .starts_with(&app.upstream.authorization_endpoint()));
    let other_page = app.browser_get(&app.authorize_path(&other, &Pkce::new(), "s")).await;
    assert_eq!(
        other_page.status,
        StatusCode::OK,
        "another client sees the consent page"
    );
    // A forged consent cookie is ignored.
    app.clear_cookies();
    let fresh = app.browser_get(&app.authorize_path(&client, &Pkce::new(), "s")).await;
    assert_eq!(fresh.status, StatusCode::OK);
    app.stop().await;
}

#[actix_web::test]
async fn the_proxy_finds_its_cookies_by_exact_name_among_the_sites_other_cookies() {
    let app = TestApp::spawn().await;
    let client = app.register_confidential().await;
    // Look-alike names share a prefix with the proxy's; a forged value under
    // the proxy's own name would fail its signature instead.
    let before = "theme=dark; mcp_proxy_browser_old=stale; mcp_proxy_consentx=1";
    let after = "mcp_proxy_browser2=other; lang=en";
    let page = app
        .browser_get_among(&app.authorize_path(&client, &Pkce::new(), "s"), before, after)
        .await;
    let to_upstream = app.approve(&page).await;
    assert_eq!(to_upstream.status, StatusCode::SEE_OTHER, "the same browser approved");
    assert!(to_upstream
        .location()
        .as_str()
        .starts_with(&app.upstream.authorization_endpoint()));
    let upstream_answer = app.browser_get(to_upstream.location().as_str()).await;
    let back = app
        .browser_get_among(upstream_answer.location().as_str(), before, after)
        .await;
    assert_eq!(back.status, StatusCode::FOUND, "{}", back.body);
    let to_client = back.location();
    assert!(to_client.as_str().starts_with(REDIRECT_URI));
    assert!(query_param(&to_client, "code").is_some());
    // The approval is remembered for this browser, read among the others too.
    let again = app
        .browser_get_among(&app.authorize_path(&client, &Pkce::new(), "s"), before, after)
        .await;
    assert_eq!(again.status, StatusCode::FOUND, "remembered: straight upstream");
    app.stop().await;
}

#[actix_web::test]
async fn the_callback_refuses_unknown_replayed_and_foreign_browser_states() {
    let app = TestApp::spawn().await;
    let unknown = app.browser_get("/oauth/callback?state=nope&code=x").await;
    assert_html_error_page(&unknown, StatusCode::BAD_REQUEST);
    let client = app.register_confidential().await;
    let page = app.browser_get(&app.authorize_path(&client, &Pkce::new(), "s")).await;
    let to_upstream = app.approve(&page).await;
    let upstream_answer = app.browser_get(to_upstream.location().as_str()).await;
    let callback = upstream_answer.location();
    // Another browser cannot finish this sign-in.
    let saved = app.browser_get("/healthz").await;
    drop(saved);
    let stranger = awc::Client::builder().disable_redirects().finish();
    let response = stranger.get(callback.as_str()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // The transaction was consumed by that attempt: a replay is refused too.
    let replay = app.browser_get(callback.as_str()).await;
    assert_html_error_page(&replay, StatusCode::BAD_REQUEST);
    app.stop().await;
}

#[actix_web::test]
async fn the_upstream_authorization_url_keeps_its_own_query_and_carries_every_parameter_once() {
    let app = TestApp::spawn_with(
        &[
            // RFC 6749 §3.1: the endpoint may have a query, which is kept.
            (
                "OAUTH_PROXY_UPSTREAM_AUTHORIZATION_ENDPOINT",
                "{upstream}/authorize?tenant=acme",
            ),
            (
                "OAUTH_PROXY_UPSTREAM_EXTRA_AUTHORIZE_PARAMS",
                "access_type=offline&prompt=select account",
            ),
        ],
        crate::mock_upstream::MockUpstreamConfig::default(),
    )
    .await;
    let client = app.register_confidential().await;
    let pkce = Pkce::new();
    let page = app.browser_get(&app.authorize_path(&client, &pkce, "s")).await;
    let to_upstream = app.approve(&page).await.location();

    assert_eq!(to_upstream.path(), "/authorize");
    let pairs: Vec<(String, String)> = to_upstream.query_pairs().into_owned().collect();
    for name in [
        "tenant",
        "response_type",
        "client_id",
        "redirect_uri",
        "state",
        "code_challenge",
        "code_challenge_method",
        "scope",
        "access_type",
        "prompt",
    ] {
        assert_eq!(
            pairs.iter().filter(|(k, _)| k == name).count(),
            1,
            "`{name}` once in {to_upstream}"
        );
    }
    let param = |name: &str| query_param(&to_upstream, name).unwrap();
    assert_eq!(param("tenant"), "acme");
    assert_eq!(param("response_type"), "code");
    assert_eq!(param("client_id"), "upstream-client");
    assert_eq!(param("redirect_uri"), format!("{}/oauth/callback", app.address));
    assert_eq!(param("code_challenge_method"), "S256");
    assert_eq!(
        param("code_challenge").len(),
        43,
        "an S256 challenge of the proxy's own verifier"
    );
    assert_ne!(
        param("state"),
        "s",
        "the upstream sees the proxy's transaction, not the client's state"
    );
    assert_eq!(param("prompt"), "select account");
    app.stop().await;
}
