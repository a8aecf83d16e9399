//! `POST /token`: client authentication, code and refresh rules, and the
//! token checks of `load_upstream_tokens`.

use awc::http::StatusCode;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::json;

use std::rc::Rc;
use std::time::Duration;

use crate::backend_double::BackendDouble;
use crate::helpers::{jwt_payload, Answer, Pkce, TestApp, TestClient};
use crate::mock_upstream::{MockUpstream, MockUpstreamConfig, TokenBehavior};
use crate::redis_server::RedisServer;

#[actix_web::test]
async fn a_wrong_or_missing_client_secret_is_invalid_client_401() {
    let app = TestApp::spawn().await;
    let client = app.register_confidential().await;
    let pkce = Pkce::new();
    let code = app.code_for(&client, &pkce).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", client.redirect_uri.as_str()),
        ("code_verifier", pkce.verifier.as_str()),
    ];
    let wrong = app
        .post_form("/token", &form, Some((&client.client_id, "wrong-secret")))
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.json()["error"], "invalid_client");
    assert!(wrong.header("www-authenticate").unwrap().starts_with("Basic"));
    let mut missing = form.to_vec();
    missing.push(("client_id", &client.client_id));
    let missing = app.post_form("/token", &missing, None).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(missing.json()["error"], "invalid_client");
    // The code was not burnt by failed authentication.
    assert_eq!(
        app.exchange_code(&client, &code, &pkce.verifier).await.status,
        StatusCode::OK
    );
    app.stop().await;
}

#[actix_web::test]
async fn an_unknown_client_is_invalid_client_401_so_it_re_registers() {
    let app = TestApp::spawn().await;
    let answer = app
        .post_form(
            "/token",
            &[("grant_type", "refresh_token"), ("refresh_token", "x")],
            Some(("ghost", "secret")),
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.json()["error"], "invalid_client");
    assert!(answer.header("www-authenticate").is_some());
    let answer = app
        .post_form(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", "x"),
                ("client_id", "ghost"),
            ],
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[actix_web::test]
async fn client_secret_post_works_for_a_basic_client_and_public_clients_need_no_secret() {
    let app = TestApp::spawn().await;
    let client = app.register_confidential().await;
    let pkce = Pkce::new();
    let code = app.code_for(&client, &pkce).await;
    let secret = client.client_secret.clone().unwrap();
    let answer = app
        .post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &client.redirect_uri),
                ("code_verifier", &pkce.verifier),
                ("client_id", &client.client_id),
                ("client_secret", &secret),
            ],
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let public = app.register_public().await;
    let tokens = app.full_flow(&public).await;
    assert!(tokens["access_token"].is_string());
    app.stop().await;
}

#[actix_web::test]
async fn the_redirect_uri_must_equal_the_one_sent_to_authorize() {
    let app = TestApp::spawn().await;
    let client = app.register_public().await;
    let pkce = Pkce::new();
    let code = app.code_for(&client, &pkce).await;
    for redirect in [Some("http://127.0.0.1:7777/other"), None] {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("code_verifier", pkce.verifier.as_str()),
            ("client_id", client.client_id.as_str()),
        ];
        if let Some(redirect) = redirect {
            form.push(("redirect_uri", redirect));
        }
        let answer = app.post_form("/token", &form, None).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert_eq!(answer.json()["error"], "invalid_grant");
    }
    app.stop().await;
}

#[actix_web::test]
async fn a_wrong_or_missing_code_verifier_is_refused() {
    let app = TestApp::spawn().await;
    let client = app.register_public().await;
    let pkce = Pkce::new();
    let code = app.code_for(&client, &pkce).await;
    let wrong = app.exchange_code(&client, &code, &Pkce::new().verifier).await;
    assert_eq!(wrong.json()["error"], "invalid_grant");
    let missing = app
        .post_form(
            "/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &client.redirect_uri),
                ("client_id", &client.client_id),
            ],
            None,
        )
        .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing.json()["error"], "invalid_request");
    app.stop().await;
}

#[actix_web::test]
async fn a_code_redeemed_twice_fails_and_revokes_the_tokens_issued_from_it() {
    let app = TestApp::spawn().await;
    let client = app.register_public().await;
    let other = app.register_public().await;
    let pkce = Pkce::new();
    let code = app.code_for(&client, &pkce).await;
    let first = app.exchange_code(&client, &code, &pkce.verifier).await.json();
    let access = first["access_token"].as_str().unwrap();
    assert!(app.proxy.load_upstream_tokens(access).await.is_some());
    // Another client presenting the code: a replay.
    let mut other = other;
    other.redirect_uri = client.redirect_uri.clone();
    let replay = app.exchange_code(&other, &code, &pkce.verifier).await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST);
    assert_eq!(replay.json()["error"], "invalid_grant");
    assert!(
        app.proxy.load_upstream_tokens(access).await.is_none(),
        "tokens from a replayed code are revoked"
    );
    let refresh = app.refresh(&client, first["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refresh.json()["error"], "invalid_grant");
    app.stop().await;
}

#[actix_web::test]
async fn an_immediate_duplicate_code_request_gets_the_same_answer() {
    let app = TestApp::spawn().await;
    let client = app.register_confidential().await;
    let pkce = Pkce::new();
    let code = app.code_for(&client, &pkce).await;
    let first = app.exchange_code(&client, &code, &pkce.verifier).await.json();
    let second = app.exchange_code(&client, &code, &pkce.verifier).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    let second = second.json();
    assert_eq!(second["access_token"], first["access_token"]);
    assert_eq!(second["refresh_token"], first["refresh_token"]);
    assert!(app
        .proxy
        .load_upstream_tokens(first["access_token"].as_str().unwrap())
        .await
        .is_some());
    app.stop().await;
}

#[actix_web::test]
async fn an_expired_code_is_refused() {
    let app = TestApp::spawn_with(
        &[("OAUTH_PROXY_AUTHORIZATION_CODE_TTL", "1")],
        MockUpstreamConfig::default(),
    )
    .await;
    let client = app.register_public().await;
    let pkce = Pkce::new();
    let code = app.code_for(&client, &pkce).await;
    actix_rt::time::sleep(std::time::Duration::from_millis(1300)).await;
    let answer = app.exchange_code(&client, &code, &pkce.verifier).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.json()["error"], "invalid_grant");
    app.stop().await;
}

#[actix_web::test]
async fn an_access_token_is_never_accepted_as_a_refresh_token_nor_the_reverse() {
    let app = TestApp::spawn().await;
    let client = app.register_public().await;
    let (access, refresh) = app.full_flow_tokens(&client).await;
    let answer = app.refresh(&client, &access).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.json()["error"], "invalid_grant");
    assert!(app.proxy.load_upstream_tokens(&refresh).await.is_none());
    assert!(app.proxy.load_upstream_tokens(&access).await.is_some());
    app.stop().await;
}

#[actix_web::test]
async fn a_refresh_token_only_works_for_the_client_it_was_issued_to() {
    let app = TestApp::spawn().await;
    let client = app.register_public().await;
    let thief = app.register_public().await;
    let (_, refresh) = app.full_flow_tokens(&client).await;
    let answer = app.refresh(&thief, &refresh).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.json()["error"], "invalid_grant");
    assert_eq!(
        app.refresh(&client, &refresh).await.status,
        StatusCode::OK,
        "still valid for its owner"
    );
    app.stop().await;
}

#[actix_web::test]
async fn refresh_rotates_and_a_rotated_out_token_within_grace_gets_the_same_pair() {
    let app = TestApp::spawn().await;
    let client = app.register_public().await;
    let (_, refresh) = app.full_flow_tokens(&client).await;
    let first = app.refresh(&client, &refresh).await.json();
    let again = app.refresh(&client, &refresh).await;
    assert_eq!(again.status, StatusCode::OK, "grace window: {}", again.body);
    let again = again.json();
    assert_eq!(again["refresh_token"], first["refresh_token"]);
    assert_eq!(again["access_token"], first["access_token"]);
    app.stop().await;
}

#[actix_web::test]
async fn reuse_of_a_token_two_generations_back_revokes_the_whole_family() {
    let app = TestApp::spawn().await;
    let client = app.register_public().await;
    let (_, gen0) = app.full_flow_tokens(&client).await;
    let gen1 = app.refresh(&client, &gen0).await.json();
    let gen1_refresh = gen1["refresh_token"].as_str().unwrap().to_string();
    let gen2 = app.refresh(&client, &gen1_refresh).await.json();
    // gen0 is now two generations back: reuse.
    let reuse = app.refresh(&client, &gen0).await;
    assert_eq!(reuse.status, StatusCode::BAD_REQUEST);
    assert_eq!(reuse.json()["error"], "invalid_grant");
    // The family is gone: the newest tokens fail too.
    let newest = app.refresh(&client, gen2["refresh_token"].as_str().unwrap()).await;
    assert_eq!(newest.json()["error"], "invalid_grant");
    assert!(app
        .proxy
        .load_upstream_tokens(gen2["access_token"].as_str().unwrap())
        .await
        .is_none());
    app.stop().await;
}

#[actix_web::test]
async fn concurrent_refreshes_of_one_token_never_fork_the_family() {
    let app = TestApp::spawn().await;
    let client = app.register_public().await;
    let (_, refresh) = app.full_flow_tokens(&client).await;
    let answers = futures_util::future::join_all((0..10).map(|_| app.refresh(&client, &refresh))).await;
    let issued: std::collections::HashSet<String> = answers
        .iter()
        .filter(|a| a.status == StatusCode::OK)
        .map(|a| a.json()["refresh_token"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(issued.len(), 1, "one successor at most: {issued:?}");
    app.stop().await;
}

#[actix_web::test]
async fn refresh_may_narrow_the_scope_but_never_widen_it() {
    let app = TestApp::spawn().await;
    let client = app.register_public().await;
    let (_, refresh) = app.full_flow_tokens(&client).await;
    let narrow = app
        .post_form(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("client_id", &client.client_id),
                ("scope", "openid"),
            ],
            None,
        )
        .await;
    assert_eq!(narrow.status, StatusCode::OK, "{}", narrow.body);
    assert_eq!(narrow.json()["scope"], "openid");
    assert_eq!(
        jwt_payload(narrow.json()["access_token"].as_str().unwrap())["scope"],
        "openid"
    );
    let wide = app
        .post_form(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", narrow.json()["refresh_token"].as_str().unwrap()),
                ("client_id", &client.client_id),
                ("scope", "openid admin"),
            ],
            None,
        )
        .await;
    assert_eq!(wide.json()["error"], "invalid_scope");
    app.stop().await;
}

#[actix_web::test]
async fn tampered_alg_none_and_foreign_tokens_load_nothing() {
    let app = TestApp::spawn().await;
    let client = app.register_public().await;
    let (access, _) = app.full_flow_tokens(&client).await;
    let parts: Vec<&str> = access.split('.').collect();
    let mut payload = jwt_payload(&access);
    payload["scope"] = json!("admin");
    let edited_payload = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        parts[2]
    );
    let mut signature = parts[2].to_string();
    signature.replace_range(0..1, if signature.starts_with('A') { "B" } else { "A" });
    let edited_signature = format!("{}.{}.{signature}", parts[0], parts[1]);
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    for token in [
        edited_payload,
        edited_signature,
        none,
        "garbage".to_string(),
        String::new(),
    ] {
        assert!(app.proxy.load_upstream_tokens(&token).await.is_none(), "{token}");
    }
    let answer = app.refresh(&client, "not-a-jwt").await;
    assert_eq!(answer.json()["error"], "invalid_grant");
    app.stop().await;
}

#[actix_web::test]
async fn an_expired_access_token_loads_nothing() {
    let app = TestApp::spawn_with(&[("OAUTH_PROXY_ACCESS_TOKEN_TTL", "1")], MockUpstreamConfig::default()).await;
    let client = app.register_public().await;
    let (access, _) = app.full_flow_tokens(&client).await;
    assert!(app.proxy.load_upstream_tokens(&access).await.is_some());
    actix_rt::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert!(app.proxy.load_upstream_tokens(&access).await.is_none());
    app.stop().await;
}

#[actix_web::test]
async fn malformed_token_requests_get_rfc_6749_errors() {
    let app = TestApp::spawn().await;
    let client = app.register_public().await;
    let id = client.client_id.as_str();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![("grant_type", "password"), ("client_id", id)],
            "unsupported_grant_type",
        ),
        (vec![("client_id", id)], "invalid_request"),
        (
            vec![
                ("grant_type", "authorization_code"),
                ("client_id", id),
                ("code_verifier", "x"),
            ],
            "invalid_request",
        ),
        (
            vec![
                ("grant_type", "refresh_token"),
                ("grant_type", "refresh_token"),
                ("client_id", id),
            ],
            "invalid_request",
        ),
    ];
    for (form, error) in cases {
        let answer = app.post_form("/token", &form, None).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{form:?}");
        assert_eq!(answer.json()["error"], error, "{form:?}");
        assert_eq!(answer.header("cache-control").as_deref(), Some("no-store"));
        assert_eq!(answer.header("pragma").as_deref(), Some("no-cache"));
    }
    // Far more parameters than any token request has: refused, not scanned.
    let names: Vec<String> = (0..40).map(|i| format!("extension_{i}")).collect();
    let mut crowded: Vec<(&str, &str)> = vec![("grant_type", "refresh_token"), ("client_id", id)];
    crowded.extend(names.iter().map(|name| (name.as_str(), "x")));
    let answer = app.post_form("/token", &crowded, None).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.json()["error"], "invalid_request");
    assert!(answer.json()["error_description"]
        .as_str()
        .unwrap()
        .contains("parameters"));
    let json_body = awc::Client::default()
        .post(format!("{}/token", app.address))
        .send_json(&json!({"grant_type": "refresh_token"}))
        .await
        .unwrap();
    assert_eq!(json_body.status(), StatusCode::BAD_REQUEST);
    app.stop().await;
}

/// Media types are case-insensitive (RFC 9110 §8.3.1) and may carry
/// parameters.
#[actix_web::test]
async fn a_form_content_type_in_any_case_and_with_a_charset_is_a_form() {
    let app = TestApp::spawn().await;
    let client = app.register_public().await;
    let pkce = Pkce::new();
    let code = app.code_for(&client, &pkce).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", crate::helpers::REDIRECT_URI),
        ("code_verifier", pkce.verifier.as_str()),
        ("client_id", client.client_id.as_str()),
    ];
    let body = serde_urlencoded::to_string(form).unwrap();
    let mut response = app
        .http()
        .post(format!("{}/token", app.address))
        .insert_header(("Content-Type", "Application/X-WWW-Form-URLEncoded; charset=UTF-8"))
        .send_body(body)
        .await
        .unwrap();
    let answer = response.body().await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    app.stop().await;
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Refreshes with `refresh` once the clock has passed the second `ends_by`
/// (after 8 s at the most).
async fn refresh_after(app: &TestApp, client: &TestClient, refresh: &str, ends_by: u64) -> Answer {
    for _ in 0..80 {
        if now_secs() > ends_by {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    app.refresh(client, refresh).await
}

/// A refresh at `/token` refreshes upstream too; a guarded request with an
/// expired upstream access token does as well. At once, they must spend the
/// upstream refresh token once: an upstream that rotates refresh tokens
/// refuses the second use (and some end the whole session on reuse).
#[actix_web::test]
async fn a_token_refresh_and_a_guarded_request_at_once_spend_the_upstream_refresh_token_once() {
    let backend = BackendDouble::start().await;
    let upstream = MockUpstreamConfig {
        access_token_expires_in: Some(1),
        ..Default::default()
    };
    let app = TestApp::spawn_with(&[("OAUTH_PROXY_MCP_UPSTREAM_URL", backend.url.as_str())], upstream).await;
    let client = app.register_public().await;
    let (access, refresh) = app.full_flow_tokens(&client).await;
    let upstream_refresh = app.upstream.issued_refresh_tokens()[0].clone();
    app.upstream.set_access_token_expires_in(Some(3600));
    // Slow enough that both are at the upstream together.
    app.upstream
        .set_token_behavior(TokenBehavior::Delay(Duration::from_millis(400)));
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let (refreshed, guarded) =
        futures_util::future::join(app.refresh(&client, &refresh), app.mcp_post(Some(&access), ping)).await;
    assert_eq!(refreshed.status, StatusCode::OK, "/token: {}", refreshed.body);
    assert_eq!(guarded.status, StatusCode::OK, "/mcp: {}", guarded.body);
    assert_eq!(
        app.upstream.refresh_grant_calls(&upstream_refresh),
        1,
        "the upstream refresh token was spent more than once"
    );
    app.stop().await;
    backend.stop().await;
}

fn borrowed<'a>(settings: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    settings.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Instances sharing a Redis cannot share one refresh in flight: two that
/// find the upstream access token expired at once both spend the upstream
/// refresh token, and an upstream that rotates refuses the second. That
/// instance takes the tokens the first stored instead of failing.
#[actix_web::test]
async fn guarded_requests_on_two_instances_needing_one_upstream_refresh_both_succeed() {
    let redis = RedisServer::start().await;
    let backend = BackendDouble::start().await;
    let upstream = Rc::new(
        MockUpstream::start(MockUpstreamConfig {
            access_token_expires_in: Some(1),
            ..Default::default()
        })
        .await,
    );
    let (storage, mcp) = (redis.url(), backend.url.clone());
    let settings = |base: Option<&str>| {
        let mut settings = vec![
            ("OAUTH_PROXY_STORAGE", storage.clone()),
            (
                "OAUTH_PROXY_ENCRYPTION_KEY",
                "test-encryption-key-test-encryption-key".into(),
            ),
            (
                "OAUTH_PROXY_CONSENT_SIGNING_KEY",
                "test-consent-key-test-consent-key-01234".into(),
            ),
            ("OAUTH_PROXY_MCP_UPSTREAM_URL", mcp.clone()),
        ];
        settings.extend(base.map(|base| ("OAUTH_PROXY_BASE_URL", base.to_string())));
        settings
    };
    let a_settings = settings(None);
    let a = TestApp::spawn_instance(&borrowed(&a_settings), upstream.clone()).await;
    let b_settings = settings(Some(&a.address));
    let b = TestApp::spawn_instance(&borrowed(&b_settings), upstream.clone()).await;
    let client = a.register_public().await;
    let (access, _) = a.full_flow_tokens(&client).await;
    let upstream_refresh = upstream.issued_refresh_tokens()[0].clone();
    upstream.set_access_token_expires_in(Some(3600));
    upstream.set_token_behavior(TokenBehavior::Delay(Duration::from_millis(300)));
    let ping = || json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let (on_a, on_b) =
        futures_util::future::join(a.mcp_post(Some(&access), ping()), b.mcp_post(Some(&access), ping())).await;
    assert_eq!(on_a.status, StatusCode::OK, "instance A: {}", on_a.body);
    assert_eq!(on_b.status, StatusCode::OK, "instance B: {}", on_b.body);
    assert!(
        upstream.refresh_grant_calls(&upstream_refresh) <= 2,
        "at most once per instance"
    );
    a.stop().await;
    b.stop().await;
    backend.stop().await;
}

/// `OAUTH_PROXY_GRANT_MAX_LIFETIME` bounds a grant from its sign-in: refreshes
/// well inside the refresh token's lifetime work until then, never after,
/// and no token issued from the grant expires later than its end.
#[actix_web::test]
async fn a_grant_ends_at_its_max_lifetime_however_often_it_is_refreshed() {
    let app = TestApp::spawn_with(
        &[("OAUTH_PROXY_GRANT_MAX_LIFETIME", "5")],
        MockUpstreamConfig::default(),
    )
    .await;
    let client = app.register_public().await;
    let tokens = app.full_flow(&client).await;
    // The sign-in happened at this second or before: the grant ends by +5.
    let ends_by = now_secs() + 5;
    let bounded = |tokens: &serde_json::Value| {
        for kind in ["access_token", "refresh_token"] {
            let exp = jwt_payload(tokens[kind].as_str().unwrap())["exp"].as_u64().unwrap();
            assert!(
                exp <= ends_by,
                "the {kind} expires at {exp}, after the grant's end {ends_by}"
            );
        }
        assert!(tokens["expires_in"].as_u64().unwrap() <= 5);
    };
    bounded(&tokens);
    let mut refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    for _ in 0..2 {
        actix_rt::time::sleep(Duration::from_millis(800)).await;
        let answer = app.refresh(&client, &refresh).await;
        assert_eq!(answer.status, StatusCode::OK, "before the grant's end: {}", answer.body);
        let tokens = answer.json();
        bounded(&tokens);
        refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    }
    let answer = refresh_after(&app, &client, &refresh, ends_by).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert_eq!(answer.json()["error"], "invalid_grant");
    app.stop().await;
}

/// In pass-through mode the client holds the upstream's tokens, whose
/// lifetimes the proxy does not set: the grant's end is enforced at refresh.
#[actix_web::test]
async fn a_pass_through_grant_cannot_be_refreshed_after_its_max_lifetime() {
    let app = TestApp::spawn_with(
        &[
            ("OAUTH_PROXY_GRANT_MAX_LIFETIME", "3"),
            ("OAUTH_PROXY_ENABLE_TOKEN_SWAP", "false"),
        ],
        MockUpstreamConfig::default(),
    )
    .await;
    let client = app.register_public().await;
    let tokens = app.full_flow(&client).await;
    let ends_by = now_secs() + 3;
    let answer = app.refresh(&client, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(answer.status, StatusCode::OK, "before the grant's end: {}", answer.body);
    let refresh = answer.json()["refresh_token"].as_str().unwrap().to_string();
    let answer = refresh_after(&app, &client, &refresh, ends_by).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert_eq!(answer.json()["error"], "invalid_grant");
    app.stop().await;
}

#[actix_web::test]
async fn a_token_response_leaves_scope_out_when_the_grant_has_none_in_swap_and_pass_through_mode() {
    // RFC 6749 §3.3: a scope token is at least one character, so `"scope": ""`
    // is one empty scope (rmcp then refuses to refresh); none is said by
    // leaving the member out.
    for swap in ["true", "false"] {
        let app = TestApp::spawn_with(
            &[
                ("OAUTH_PROXY_UPSTREAM_SCOPES", ""),
                ("OAUTH_PROXY_ENABLE_TOKEN_SWAP", swap),
            ],
            MockUpstreamConfig::default(),
        )
        .await;
        let client = app.register_confidential().await;
        let tokens = app.full_flow(&client).await;
        assert!(tokens["access_token"].is_string(), "swap={swap}: {tokens}");
        assert!(tokens.get("scope").is_none(), "swap={swap}: code exchange: {tokens}");
        let refreshed = app.refresh(&client, tokens["refresh_token"].as_str().unwrap()).await;
        assert_eq!(refreshed.status, StatusCode::OK, "swap={swap}: {}", refreshed.body);
        let refreshed = refreshed.json();
        assert!(refreshed.get("scope").is_none(), "swap={swap}: refresh: {refreshed}");
        app.stop().await;
    }
}

fn encoded(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[actix_web::test]
async fn a_resource_with_a_query_is_accepted_at_authorize_and_token_and_the_audience_stays_canonical() {
    // ChatGPT sends `https://host/mcp?kb_name=...`: the same resource (scheme,
    // host, port and path) with a query.
    let app = TestApp::spawn().await;
    let client = app.register_confidential().await;
    let (secret, pkce) = (client.client_secret.clone().unwrap(), Pkce::new());
    let resource = format!("{}/mcp?kb_name=team%20docs&x=1", app.address);
    let code = app
        .code_with(&client, &pkce, &format!("&resource={}", encoded(&resource)))
        .await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", client.redirect_uri.as_str()),
        ("code_verifier", pkce.verifier.as_str()),
        ("resource", resource.as_str()),
    ];
    let answer = app.post_form("/token", &form, Some((&client.client_id, &secret))).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let tokens = answer.json();
    let canonical = format!("{}/mcp", app.address);
    assert_eq!(jwt_payload(tokens["access_token"].as_str().unwrap())["aud"], canonical);
    let refresh_token = tokens["refresh_token"].as_str().unwrap();
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("resource", resource.as_str()),
    ];
    let refreshed = app.post_form("/token", &form, Some((&client.client_id, &secret))).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    assert_eq!(
        jwt_payload(refreshed.json()["access_token"].as_str().unwrap())["aud"],
        canonical
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_resource_with_another_path_or_host_or_a_fragment_is_still_invalid_target() {
    let app = TestApp::spawn().await;
    let client = app.register_confidential().await;
    let secret = client.client_secret.clone().unwrap();
    let address = &app.address;
    for resource in [
        format!("{address}/other?kb_name=docs"),
        format!("{address}/mcp/tools?kb_name=docs"),
        format!("{address}/mcp//?kb_name=docs"),
        "https://other.example/mcp?kb_name=docs".to_string(),
        format!("{address}/mcp?kb_name=docs#f"),
        format!("{address}/mcp#f"),
    ] {
        let pkce = Pkce::new();
        let code = app.code_with(&client, &pkce, "").await;
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", client.redirect_uri.as_str()),
            ("code_verifier", pkce.verifier.as_str()),
            ("resource", resource.as_str()),
        ];
        let answer = app.post_form("/token", &form, Some((&client.client_id, &secret))).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{resource}: {}", answer.body);
        assert_eq!(answer.json()["error"], "invalid_target", "{resource}");
        // This browser approved the client: /authorize answers with a redirect.
        let path = format!(
            "{}&resource={}",
            app.authorize_path(&client, &Pkce::new(), "s"),
            encoded(&resource)
        );
        let refused = app.browser_get(&path).await;
        assert_eq!(refused.status, StatusCode::FOUND, "{resource}: {}", refused.body);
        assert_eq!(
            crate::helpers::query_param(&refused.location(), "error").as_deref(),
            Some("invalid_target"),
            "{resource}"
        );
    }
    app.stop().await;
}

#[actix_web::test]
async fn an_immediate_repeated_redemption_naming_another_resource_is_invalid_target_not_the_same_tokens() {
    // A duplicate POST gets the first answer back (clients that send the
    // request twice), but only for the request the code allows.
    let app = TestApp::spawn().await;
    let client = app.register_confidential().await;
    let secret = client.client_secret.clone().unwrap();
    let pkce = Pkce::new();
    let code = app.code_with(&client, &pkce, "").await;
    let form = |resource: &'static str| {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", client.redirect_uri.as_str()),
            ("code_verifier", pkce.verifier.as_str()),
        ];
        if !resource.is_empty() {
            form.push(("resource", resource));
        }
        form
    };
    let first = app
        .post_form("/token", &form(""), Some((&client.client_id, &secret)))
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let foreign = app
        .post_form(
            "/token",
            &form("https://other.example/mcp"),
            Some((&client.client_id, &secret)),
        )
        .await;
    assert_eq!(foreign.status, StatusCode::BAD_REQUEST, "{}", foreign.body);
    assert_eq!(foreign.json()["error"], "invalid_target");
    app.stop().await;
}
