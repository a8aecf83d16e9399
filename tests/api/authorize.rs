//! `GET /authorize`, the consent screen and the callback's browser checks.

use awc::http::StatusCode;
use serde_json::json;

use crate::helpers::{jwt_payload, query_param, Pkce, TestApp, TestClient, REDIRECT_URI};
use crate::mock_upstream::MockUpstreamConfig;

fn assert_html_error_page(answer: &crate::helpers::Answer, status: StatusCode) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert!(answer.header("location").is_none(), "an error page, never a redirect");
    assert!(answer.header("content-type").unwrap().starts_with("text/html"));
    assert_eq!(answer.header("x-frame-options").as_deref(), Some("DENY"));
}

/// Runs one whole sign-in for `client` in this browser, approving it with
/// "remember" ticked: from then on the browser has approved the client.
async fn approve_in_this_browser(app: &TestApp, client: &TestClient) {
    let _ = app.code_for(client, &Pkce::new()).await;
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
    // Errors go back to a self-registered client once this browser approved it.
    approve_in_this_browser(&app, &client).await;
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
    for resource in [format!("{}/mcp", app.address), format!("{}/mcp/", app.address)] {
        let encoded: String = url::form_urlencoded::byte_serialize(resource.as_bytes()).collect();
        let answer = app.browser_get(&format!("{path}&resource={encoded}")).await;
        assert_eq!(answer.status, StatusCode::OK, "{resource}: {}", answer.body);
    }
    // Errors go back to a self-registered client once this browser approved it.
    approve_in_this_browser(&app, &client).await;
    let foreign = format!("{path}&resource=https%3A%2F%2Fother.example%2Fmcp");
    let answer = app.browser_get(&foreign).await;
    assert_eq!(
        query_param(&answer.location(), "error").as_deref(),
        Some("invalid_target")
    );
    app.stop().await;
}

#[actix_web::test]
async fn unsupported_response_type_and_unknown_scope_are_redirected_errors() {
    let app = TestApp::spawn().await;
    let client = app.register_confidential().await;
    // Errors go back to a self-registered client once this browser approved it.
    approve_in_this_browser(&app, &client).await;
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

// ------------------------------------------------------------ bounded /authorize

#[actix_web::test]
async fn authorize_refuses_a_state_longer_than_1_kib_with_an_html_page() {
    let app = TestApp::spawn().await;
    let client = app.register_confidential().await;
    let longest = "s".repeat(1024);
    let page = app
        .browser_get(&app.authorize_path(&client, &Pkce::new(), &longest))
        .await;
    assert_eq!(page.status, StatusCode::OK, "a 1 KiB state is accepted: {}", page.body);
    for state in ["s".repeat(1025), "é".repeat(513), "x".repeat(60 * 1024)] {
        let answer = app
            .browser_get(&app.authorize_path(&client, &Pkce::new(), &state))
            .await;
        // Not a redirect: a huge state is not sent back to anyone.
        assert_html_error_page(&answer, StatusCode::BAD_REQUEST);
        assert!(answer.body.contains("invalid_request"), "{}", answer.body);
    }
    app.stop().await;
}

#[actix_web::test]
async fn authorize_refuses_a_query_string_longer_than_8_kib_with_an_html_page() {
    let app = TestApp::spawn().await;
    let client = app.register_confidential().await;
    let path = app.authorize_path(&client, &Pkce::new(), "s");
    let query_len = path.len() - "/authorize?".len();
    // Unknown parameters are ignored (RFC 6749 §3.1), but they count.
    let fits = format!("{path}&pad={}", "p".repeat(8 * 1024 - query_len - "&pad=".len()));
    let page = app.browser_get(&fits).await;
    assert_eq!(page.status, StatusCode::OK, "an 8 KiB query is accepted: {}", page.body);
    let answer = app.browser_get(&format!("{fits}p")).await;
    assert_html_error_page(&answer, StatusCode::BAD_REQUEST);
    assert!(answer.body.contains("invalid_request"), "{}", answer.body);
    app.stop().await;
}

#[actix_web::test]
async fn authorize_answers_503_with_retry_after_and_an_html_page_when_pending_authorizations_are_at_the_cap() {
    let app = TestApp::spawn_with(
        &[("OAUTH_PROXY_MAX_PENDING_AUTHORIZATIONS", "3")],
        MockUpstreamConfig::default(),
    )
    .await;
    let client = app.register_confidential().await;
    let mut pages = Vec::new();
    for _ in 0..3 {
        let page = app.browser_get(&app.authorize_path(&client, &Pkce::new(), "s")).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        pages.push(page);
    }
    for _ in 0..3 {
        let full = app.browser_get(&app.authorize_path(&client, &Pkce::new(), "s")).await;
        assert_html_error_page(&full, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(full.header("retry-after").as_deref(), Some("60"));
        assert!(full.body.contains("temporarily_unavailable"), "{}", full.body);
    }
    // A finished sign-in frees its place (the client is remembered now:
    // straight upstream).
    let back = app.through_upstream(&app.approve(&pages[0]).await).await;
    assert!(query_param(&back.location(), "code").is_some());
    let again = app.browser_get(&app.authorize_path(&client, &Pkce::new(), "s")).await;
    assert_eq!(again.status, StatusCode::FOUND, "{}", again.body);
    assert!(again
        .location()
        .as_str()
        .starts_with(&app.upstream.authorization_endpoint()));
    app.stop().await;
}

/// Counts 200 (consent page) and 503 answers to `/authorize` for `client`,
/// asking each app in turn.
async fn consent_pages_and_refusals(apps: &[&TestApp], client: &TestClient, requests: usize) -> (usize, usize) {
    let (mut pages, mut refused) = (0, 0);
    for i in 0..requests {
        let app = apps[i % apps.len()];
        let answer = app.browser_get(&app.authorize_path(client, &Pkce::new(), "s")).await;
        match answer.status {
            StatusCode::OK => pages += 1,
            status => {
                assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{}", answer.body);
                assert_eq!(answer.header("retry-after").as_deref(), Some("60"));
                refused += 1;
            }
        }
    }
    (pages, refused)
}

#[actix_web::test]
async fn the_pending_authorization_cap_holds_on_the_directory_store_and_across_redis_instances() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("data").display().to_string();
    let app = TestApp::spawn_with(
        &[
            ("OAUTH_PROXY_STORAGE", &storage),
            ("OAUTH_PROXY_MAX_PENDING_AUTHORIZATIONS", "3"),
        ],
        MockUpstreamConfig::default(),
    )
    .await;
    let client = app.register_confidential().await;
    assert_eq!(consent_pages_and_refusals(&[&app], &client, 6).await, (3, 3));
    app.stop().await;
    drop(dir);

    // Two instances sharing one Redis count the same transactions.
    let redis = crate::redis_server::RedisServer::start().await;
    let upstream = std::rc::Rc::new(crate::mock_upstream::MockUpstream::start(MockUpstreamConfig::default()).await);
    let url = redis.url();
    let mut settings = vec![
        ("OAUTH_PROXY_STORAGE", url.as_str()),
        ("OAUTH_PROXY_ENCRYPTION_KEY", "test-encryption-key-test-encryption-key"),
        (
            "OAUTH_PROXY_CONSENT_SIGNING_KEY",
            "test-consent-key-test-consent-key-01234",
        ),
        ("OAUTH_PROXY_MAX_PENDING_AUTHORIZATIONS", "4"),
    ];
    let a = TestApp::spawn_instance(&settings, upstream.clone()).await;
    let a_address = a.address.clone();
    settings.push(("OAUTH_PROXY_BASE_URL", &a_address));
    let b = TestApp::spawn_instance(&settings, upstream).await;
    let client = a.register_confidential().await;
    assert_eq!(consent_pages_and_refusals(&[&a, &b], &client, 8).await, (4, 4));
    a.stop().await;
    b.stop().await;
}

#[actix_web::test]
async fn a_pending_authorization_not_approved_is_gone_after_its_short_life_and_an_approved_one_lives_on() {
    let upstream = std::rc::Rc::new(crate::mock_upstream::MockUpstream::start(MockUpstreamConfig::default()).await);
    // The full transaction lifetime stays the default 600 s.
    let app = TestApp::spawn_adjusted(&[], upstream, |config| {
        config.lifetimes.unapproved_transaction = std::time::Duration::from_secs(1);
    })
    .await;
    let client = app.register_confidential().await;
    let left = app
        .browser_get(&app.authorize_path(&client, &Pkce::new(), "left"))
        .await;
    let approved = app
        .browser_get(&app.authorize_path(&client, &Pkce::new(), "kept"))
        .await;
    let to_upstream = app.approve(&approved).await;
    assert_eq!(to_upstream.status, StatusCode::SEE_OTHER, "{}", to_upstream.body);
    actix_rt::time::sleep(std::time::Duration::from_millis(1500)).await;
    let late = app.approve(&left).await;
    assert_html_error_page(&late, StatusCode::BAD_REQUEST);
    assert!(late.body.contains("expired"), "{}", late.body);
    // Approved before the short life ended: it has the full lifetime.
    let back = app.through_upstream(&to_upstream).await;
    assert_eq!(back.status, StatusCode::FOUND, "{}", back.body);
    assert_eq!(query_param(&back.location(), "state").as_deref(), Some("kept"));
    assert!(query_param(&back.location(), "code").is_some());
    app.stop().await;
}

// ------------------------------------------------- no open redirector (RFC 9700 §4.11.2)

/// A self-registered client whose redirect URI is the attacker's, and one
/// request per class of error found after the redirect URI is validated.
async fn evil_client_and_bad_requests(app: &TestApp) -> (TestClient, Vec<(String, &'static str)>) {
    let client = app.register(json!({"redirect_uris": ["https://evil.example/x"]})).await;
    let pkce = Pkce::new();
    let valid = app.authorize_path(&client, &pkce, "st8");
    let requests = vec![
        (
            valid.replace("response_type=code", "response_type=x"),
            "unsupported_response_type",
        ),
        (
            valid.replace(
                &format!("&code_challenge={}&code_challenge_method=S256", pkce.challenge),
                "",
            ),
            "invalid_request",
        ),
        (
            valid.replace("code_challenge_method=S256", "code_challenge_method=plain"),
            "invalid_request",
        ),
        (format!("{valid}&scope=admin"), "invalid_scope"),
        (
            format!("{valid}&resource=https%3A%2F%2Fother.example%2Fmcp"),
            "invalid_target",
        ),
    ];
    (client, requests)
}

#[actix_web::test]
async fn errors_for_a_self_registered_client_this_browser_has_not_approved_are_an_html_page() {
    let app = TestApp::spawn().await;
    let (_, requests) = evil_client_and_bad_requests(&app).await;
    for (path, error) in requests {
        let answer = app.browser_get(&path).await;
        assert_html_error_page(&answer, StatusCode::BAD_REQUEST);
        assert!(answer.body.contains(error), "{error}: {}", answer.body);
        assert!(!answer.body.contains("evil.example"), "no link to the client either");
    }
    app.stop().await;
}

#[actix_web::test]
async fn errors_for_a_self_registered_client_go_back_to_it_once_this_browser_approved_it() {
    let app = TestApp::spawn().await;
    let (client, requests) = evil_client_and_bad_requests(&app).await;
    approve_in_this_browser(&app, &client).await;
    for (path, error) in requests {
        let answer = app.browser_get(&path).await;
        assert_eq!(answer.status, StatusCode::FOUND, "{error}: {}", answer.body);
        let to = answer.location();
        assert!(to.as_str().starts_with("https://evil.example/x?"), "{to}");
        assert_eq!(query_param(&to, "error").as_deref(), Some(error));
        assert_eq!(query_param(&to, "state").as_deref(), Some("st8"));
        assert_eq!(query_param(&to, "iss").as_deref(), Some(app.address.as_str()));
    }
    // Another browser has not approved it.
    app.clear_cookies();
    let (path, _) = &evil_client_and_bad_requests(&app).await.1[0];
    assert_html_error_page(&app.browser_get(path).await, StatusCode::BAD_REQUEST);
    app.stop().await;
}

#[actix_web::test]
async fn with_consent_turned_off_errors_go_back_to_the_client() {
    // The operator vouches for every redirect URI (consent off is for pinned
    // patterns), so the client is told directly.
    let app = TestApp::spawn_with(
        &[
            ("OAUTH_PROXY_CONSENT_REQUIRED", "false"),
            ("OAUTH_PROXY_ALLOWED_REDIRECT_URI_PATTERNS", "http://127.0.0.1:7777/*"),
        ],
        MockUpstreamConfig::default(),
    )
    .await;
    let client = app.register_confidential().await;
    let path = app
        .authorize_path(&client, &Pkce::new(), "s")
        .replace("response_type=code", "response_type=x");
    let answer = app.browser_get(&path).await;
    assert_eq!(answer.status, StatusCode::FOUND, "{}", answer.body);
    assert!(answer.location().as_str().starts_with(REDIRECT_URI));
    assert_eq!(
        query_param(&answer.location(), "error").as_deref(),
        Some("unsupported_response_type")
    );
    app.stop().await;
}

// ------------------------------------------------------------- redirect URIs, scopes

#[actix_web::test]
async fn a_loopback_redirect_uri_must_have_the_port_the_operators_pattern_pins() {
    let app = TestApp::spawn_with(
        &[("OAUTH_PROXY_ALLOWED_REDIRECT_URI_PATTERNS", "http://127.0.0.1:7777/*")],
        MockUpstreamConfig::default(),
    )
    .await;
    let mut client = app
        .register(json!({"redirect_uris": ["http://127.0.0.1:7777/callback"]}))
        .await;
    let pinned = app.browser_get(&app.authorize_path(&client, &Pkce::new(), "s")).await;
    assert_eq!(pinned.status, StatusCode::OK, "{}", pinned.body);
    for other in ["http://127.0.0.1:9999/callback", "http://127.0.0.1/callback"] {
        client.redirect_uri = other.to_string();
        let answer = app.browser_get(&app.authorize_path(&client, &Pkce::new(), "s")).await;
        assert_html_error_page(&answer, StatusCode::BAD_REQUEST);
        assert!(answer.body.contains("Invalid redirect URI"), "{other}: {}", answer.body);
    }
    app.stop().await;
}

/// A full sign-in asking for `scope`; the token response.
async fn tokens_with_scope(app: &TestApp, client: &TestClient, scope: &str) -> serde_json::Value {
    let pkce = Pkce::new();
    let path = format!("{}&scope={scope}", app.authorize_path(client, &pkce, "s"));
    let first = app.browser_get(&path).await;
    // The consent page, or straight upstream once the client is remembered.
    let to_upstream = if first.status == StatusCode::OK {
        app.approve(&first).await
    } else {
        first
    };
    let back = app.through_upstream(&to_upstream).await;
    let code = query_param(&back.location(), "code").expect("a code");
    let answer = app.exchange_code(client, &code, &pkce.verifier).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.json()
}

#[actix_web::test]
async fn requested_scopes_must_be_advertised_so_tokens_carry_only_advertised_scopes() {
    let app = TestApp::spawn_with(&[("OAUTH_PROXY_SCOPES", "read write")], MockUpstreamConfig::default()).await;
    let client = app.register_public().await;
    let path = app.authorize_path(&client, &Pkce::new(), "s");
    let unknown = app.browser_get(&format!("{path}&scope=read%20admin")).await;
    assert_html_error_page(&unknown, StatusCode::BAD_REQUEST);
    assert!(unknown.body.contains("invalid_scope"), "{}", unknown.body);

    let tokens = tokens_with_scope(&app, &client, "read").await;
    assert_eq!(tokens["scope"], "read");
    assert_eq!(jwt_payload(tokens["access_token"].as_str().unwrap())["scope"], "read");
    // Approved now: the same refusal goes back to the client.
    let unknown = app.browser_get(&format!("{path}&scope=read%20admin")).await;
    assert_eq!(
        query_param(&unknown.location(), "error").as_deref(),
        Some("invalid_scope")
    );
    // Refresh may still narrow, never widen beyond the grant.
    let refresh = |token: String, scope: &'static str| {
        let client_id = client.client_id.clone();
        let app = &app;
        async move {
            app.post_form(
                "/token",
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &token),
                    ("client_id", &client_id),
                    ("scope", scope),
                ],
                None,
            )
            .await
        }
    };
    let wide = tokens_with_scope(&app, &client, "read%20write").await;
    let narrowed = refresh(wide["refresh_token"].as_str().unwrap().to_string(), "write").await;
    assert_eq!(narrowed.status, StatusCode::OK, "{}", narrowed.body);
    assert_eq!(narrowed.json()["scope"], "write");
    let widened = refresh(
        narrowed.json()["refresh_token"].as_str().unwrap().to_string(),
        "write admin",
    )
    .await;
    assert_eq!(widened.json()["error"], "invalid_scope");
    app.stop().await;
}

#[actix_web::test]
async fn with_no_advertised_scopes_any_requested_scope_is_passed_on() {
    let app = TestApp::spawn_with(&[("OAUTH_PROXY_UPSTREAM_SCOPES", "")], MockUpstreamConfig::default()).await;
    let client = app.register_public().await;
    let tokens = tokens_with_scope(&app, &client, "anything").await;
    assert_eq!(tokens["scope"], "anything");
    app.stop().await;
}

#[actix_web::test]
async fn the_consent_page_shows_a_private_use_redirect_uris_scheme_with_its_host() {
    let app = TestApp::spawn().await;
    let client = app.register(json!({"redirect_uris": ["x-app://claude.ai/cb"]})).await;
    let page = app.browser_get(&app.authorize_path(&client, &Pkce::new(), "s")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains(r#"<strong class="host">x-app://claude.ai</strong>"#),
        "{}",
        page.body
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_remembered_approval_does_not_cover_more_scopes_a_step_up_shows_the_page_again() {
    let app = TestApp::spawn_with(
        &[("OAUTH_PROXY_SCOPES", "mcp:read mcp:write")],
        MockUpstreamConfig::default(),
    )
    .await;
    let client = app.register_public().await;
    let with_scope = |scope: &str| format!("{}&scope={}", app.authorize_path(&client, &Pkce::new(), "s"), scope);
    let first = app.browser_get(&with_scope("mcp:read")).await;
    assert_eq!(first.status, StatusCode::OK, "the consent page: {}", first.body);
    let approved = app.approve(&first).await;
    assert_eq!(approved.status, StatusCode::SEE_OTHER, "{}", approved.body);

    let same = app.browser_get(&with_scope("mcp:read")).await;
    assert_eq!(same.status, StatusCode::FOUND, "the same scopes: remembered");
    let more = app.browser_get(&with_scope("mcp:read%20mcp:write")).await;
    assert_eq!(
        more.status,
        StatusCode::OK,
        "more scopes: the page again: {}",
        more.body
    );
    assert!(more.body.contains("mcp:write"), "{}", more.body);
    app.stop().await;
}
