//! `OAUTH_PROXY_ALLOWED_USERS`: who may finish sign-in, decided at the
//! upstream callback from the claims of the ID token, a JWT access token or
//! userinfo. A refused user is sent back to the client with `access_denied`
//! and nothing is issued or stored for them.

use std::rc::Rc;

use awc::http::{Method, StatusCode};
use mcp_oauth_proxy::audit::{EventKind, Outcome};
use serde_json::{json, Map, Value};
use url::Url;

use crate::backend_double::BackendDouble;
use crate::helpers::{bearer_challenge, query_param, Pkce, TestApp, TestClient};
use crate::mock_upstream::{MockUpstream, MockUpstreamConfig};

const ADMIN_TOKEN: &str = "admin-token-for-the-tests-0123456789";
const NOT_ALLOWED: &str = "this account is not allowed to use this server";

fn claims(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// The proxy with `policy` (and `extra` settings) in front of `upstream`.
async fn spawn(policy: &str, extra: &[(&str, &str)], upstream: MockUpstreamConfig) -> TestApp {
    let mut settings = vec![
        ("OAUTH_PROXY_ALLOWED_USERS", policy),
        ("OAUTH_PROXY_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    settings.extend_from_slice(extra);
    TestApp::spawn_with(&settings, upstream).await
}

/// A fresh browser signs in as the upstream's current user: where the
/// callback sends it back to.
async fn sign_in(app: &TestApp, client: &TestClient) -> Url {
    app.clear_cookies();
    app.authorize_to_client(client, &Pkce::new(), "state-1").await
}

/// The sign-in went through: a code, no error.
fn assert_allowed(back: &Url) {
    assert!(query_param(back, "code").is_some(), "no code in {back}");
    assert_eq!(query_param(back, "error"), None, "{back}");
}

/// The sign-in was refused: `access_denied` to the client's redirect URI
/// with `state` and `iss`, no code, nothing about the rule.
fn assert_refused(app: &TestApp, client: &TestClient, back: &Url) {
    assert!(
        back.as_str().starts_with(&client.redirect_uri),
        "not the client's redirect URI: {back}"
    );
    assert_eq!(query_param(back, "error").as_deref(), Some("access_denied"), "{back}");
    assert_eq!(
        query_param(back, "error_description").as_deref(),
        Some(NOT_ALLOWED),
        "{back}"
    );
    assert_eq!(query_param(back, "state").as_deref(), Some("state-1"), "{back}");
    assert_eq!(
        query_param(back, "iss").as_deref(),
        Some(app.address.as_str()),
        "{back}"
    );
    assert_eq!(query_param(back, "code"), None, "{back}");
}

/// The grants the admin API lists for `subject`.
async fn grants_of(app: &TestApp, subject: &str) -> Vec<Value> {
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let answer = app
        .admin
        .send(
            Method::GET,
            &format!("/admin/grants?sub={subject}"),
            &[("Authorization", &bearer)],
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.json()["items"].as_array().expect("a listing").clone()
}

#[actix_web::test]
async fn an_id_token_claim_decides_who_may_sign_in() {
    let upstream = MockUpstreamConfig {
        id_token_claims: claims(json!({"hd": "example.com"})),
        ..Default::default()
    };
    let app = spawn("hd:example.com", &[], upstream).await;
    let client = app.register_public().await;
    assert_allowed(&sign_in(&app, &client).await);

    app.upstream
        .update_config(|c| c.id_token_claims = claims(json!({"hd": "example.org"})));
    assert_refused(&app, &client, &sign_in(&app, &client).await);
    app.stop().await;
}

#[actix_web::test]
async fn a_jwt_access_token_claim_decides_who_may_sign_in() {
    // No userinfo, and the ID token does not carry the claim.
    let upstream = MockUpstreamConfig {
        access_token_claims: Some(claims(json!({"org": "acme"}))),
        ..Default::default()
    };
    let app = spawn("org:acme", &[], upstream).await;
    let client = app.register_public().await;
    assert_allowed(&sign_in(&app, &client).await);

    app.upstream
        .update_config(|c| c.access_token_claims = Some(claims(json!({"org": "other"}))));
    assert_refused(&app, &client, &sign_in(&app, &client).await);
    app.stop().await;
}

#[actix_web::test]
async fn a_userinfo_claim_decides_who_may_sign_in_and_a_login_compares_without_regard_to_case() {
    // GitHub-like: no ID token, an opaque access token, the user in userinfo.
    let upstream = MockUpstreamConfig {
        issue_id_token: false,
        userinfo_claims: claims(json!({"login": "OctoCat"})),
        ..Default::default()
    };
    let userinfo = [("OAUTH_PROXY_UPSTREAM_USERINFO_ENDPOINT", "{upstream}/userinfo")];
    let app = spawn("login:octocat", &userinfo, upstream).await;
    let client = app.register_public().await;
    assert_allowed(&sign_in(&app, &client).await);

    app.upstream
        .update_config(|c| c.userinfo_claims = claims(json!({"login": "hubot"})));
    assert_refused(&app, &client, &sign_in(&app, &client).await);
    app.stop().await;
}

#[actix_web::test]
async fn a_list_claim_allows_a_user_when_any_element_matches() {
    let upstream = MockUpstreamConfig {
        userinfo_claims: claims(json!({"groups": ["staff", "mcp-users"]})),
        ..Default::default()
    };
    let userinfo = [("OAUTH_PROXY_UPSTREAM_USERINFO_ENDPOINT", "{upstream}/userinfo")];
    let app = spawn("groups:mcp-users", &userinfo, upstream).await;
    let client = app.register_public().await;
    assert_allowed(&sign_in(&app, &client).await);

    app.upstream
        .update_config(|c| c.userinfo_claims = claims(json!({"groups": ["staff", "mcp-users-old"]})));
    assert_refused(&app, &client, &sign_in(&app, &client).await);
    app.stop().await;
}

#[actix_web::test]
async fn a_numeric_claim_matches_by_its_decimal_text() {
    // GitHub's userinfo: a numeric `id`, no `sub`.
    let upstream = MockUpstreamConfig {
        issue_id_token: false,
        userinfo_claims: claims(json!({"sub": null, "id": 583231})),
        ..Default::default()
    };
    let userinfo = [("OAUTH_PROXY_UPSTREAM_USERINFO_ENDPOINT", "{upstream}/userinfo")];
    let app = spawn("id:583231", &userinfo, upstream).await;
    let client = app.register_public().await;
    assert_allowed(&sign_in(&app, &client).await);

    app.upstream
        .update_config(|c| c.userinfo_claims = claims(json!({"sub": null, "id": 5832310})));
    assert_refused(&app, &client, &sign_in(&app, &client).await);
    app.stop().await;
}

#[actix_web::test]
async fn an_email_pattern_does_not_count_when_email_verified_is_false() {
    let upstream = MockUpstreamConfig {
        id_token_claims: claims(json!({"email_verified": false})),
        ..Default::default()
    };
    let app = spawn("email:*@example.com", &[], upstream).await;
    let client = app.register_public().await;
    assert_refused(&app, &client, &sign_in(&app, &client).await);

    // The same address, verified, is allowed.
    app.upstream
        .update_config(|c| c.id_token_claims = claims(json!({"email_verified": true})));
    assert_allowed(&sign_in(&app, &client).await);
    app.stop().await;
}

#[actix_web::test]
async fn an_email_pattern_counts_when_email_verified_is_absent_and_compares_without_regard_to_case() {
    let upstream = MockUpstreamConfig {
        email: "Ann@EXAMPLE.com".to_string(),
        id_token_claims: claims(json!({"email_verified": null})),
        ..Default::default()
    };
    let app = spawn("email:*@example.com", &[], upstream).await;
    let client = app.register_public().await;
    assert_allowed(&sign_in(&app, &client).await);

    app.upstream
        .update_config(|c| c.email = "ann@example.com.evil.test".into());
    assert_refused(&app, &client, &sign_in(&app, &client).await);
    app.stop().await;
}

#[actix_web::test]
async fn a_refused_user_gets_no_code_no_grant_and_the_upstream_tokens_are_revoked() {
    let app = spawn(
        "sub:allowed-*",
        &[("OAUTH_PROXY_UPSTREAM_REVOCATION_ENDPOINT", "{upstream}/revoke")],
        MockUpstreamConfig::default(),
    )
    .await;
    let client = app.register_public().await;
    app.upstream.set_user("allowed-1", "a@example.com");
    assert_allowed(&sign_in(&app, &client).await);
    // The listing shows a grant as soon as the callback wrote it.
    assert_eq!(grants_of(&app, "allowed-1").await.len(), 1);

    app.upstream.set_user("refused-1", "r@example.com");
    let issued_before = app.upstream.issued_refresh_tokens();
    assert_refused(&app, &client, &sign_in(&app, &client).await);
    assert_eq!(grants_of(&app, "refused-1").await, Vec::<Value>::new());
    let codes_issued = app
        .proxy
        .audit()
        .recent()
        .into_iter()
        .filter(|e| e.event == EventKind::CodeIssued)
        .count();
    assert_eq!(codes_issued, 1, "only the allowed user's code");
    // The refused user's upstream refresh token was revoked at the upstream.
    let refused_refresh: Vec<String> = app
        .upstream
        .issued_refresh_tokens()
        .into_iter()
        .filter(|t| !issued_before.contains(t))
        .collect();
    assert_eq!(refused_refresh.len(), 1, "{refused_refresh:?}");
    assert_eq!(app.upstream.revoked_tokens(), refused_refresh);
    app.stop().await;
}

#[actix_web::test]
async fn a_refused_sign_in_is_audited_with_the_subject_and_a_reason_but_no_claim_values() {
    let upstream = MockUpstreamConfig {
        subject: "user-9".into(),
        email: "nine@example.org".into(),
        ..Default::default()
    };
    let app = spawn("email:*@example.com", &[], upstream).await;
    let client = app.register_public().await;
    assert_refused(&app, &client, &sign_in(&app, &client).await);

    let events = app.proxy.audit().recent();
    let sign_ins: Vec<_> = events.iter().filter(|e| e.event == EventKind::UpstreamSignIn).collect();
    assert_eq!(sign_ins.len(), 1, "{sign_ins:#?}");
    let event = sign_ins[0];
    assert_eq!(event.outcome, Outcome::Refused);
    assert_eq!(event.subject.as_deref(), Some("user-9"));
    assert_eq!(event.client_id.as_deref(), Some(client.client_id.as_str()));
    assert_eq!(
        event.reason.as_deref(),
        Some("the account is not allowed by OAUTH_PROXY_ALLOWED_USERS")
    );
    assert_eq!(event.email, None);
    assert_eq!(event.grant_id, None);
    assert!(!event.context.request_id.is_empty());
    let serialized = serde_json::to_string(&events).unwrap();
    assert!(!serialized.contains("nine@example.org"), "{serialized}");
    assert!(events.iter().all(|e| e.event != EventKind::CodeIssued));
    app.stop().await;
}

/// The policy holds for grants made before it changed: a grant keeps the
/// claims the policy named at sign-in and is checked again whenever it is
/// used or refreshed. After a restart with a narrower list, a user taken off
/// it is cut off (gateway 401, introspection inactive, refresh refused and
/// the grant revoked, recorded), while a user the new list still allows goes
/// on without signing in again.
#[actix_web::test]
async fn after_a_restart_with_a_narrower_list_a_user_taken_off_it_is_cut_off_and_one_still_on_it_is_not() {
    narrower_list_after_a_restart("true").await;
}

#[actix_web::test]
async fn in_pass_through_mode_too_a_user_taken_off_the_list_is_cut_off_after_a_restart() {
    narrower_list_after_a_restart("false").await;
}

async fn narrower_list_after_a_restart(token_swap: &str) {
    let backend = BackendDouble::start().await;
    let upstream = Rc::new(
        MockUpstream::start(MockUpstreamConfig {
            issue_id_token: false,
            ..Default::default()
        })
        .await,
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    let mut settings = vec![
        ("OAUTH_PROXY_STORAGE", data),
        ("OAUTH_PROXY_ALLOWED_USERS", "groups:staff groups:mcp-users".to_string()),
        (
            "OAUTH_PROXY_UPSTREAM_USERINFO_ENDPOINT",
            "{upstream}/userinfo".to_string(),
        ),
        ("OAUTH_PROXY_MCP_UPSTREAM_URL", backend.url.clone()),
        ("OAUTH_PROXY_ENABLE_TOKEN_SWAP", token_swap.to_string()),
    ];
    let first = TestApp::spawn_instance(&as_refs(&settings), upstream.clone()).await;
    let client = first.register_confidential().await;
    let mut tokens = Vec::new();
    for (subject, groups) in [("ann", json!(["staff"])), ("bob", json!(["staff", "mcp-users"]))] {
        first.upstream.update_config(|c| {
            c.subject = subject.to_string();
            c.userinfo_claims = claims(json!({"sub": subject, "groups": groups}));
        });
        first.clear_cookies();
        tokens.push(first.full_flow_tokens(&client).await);
    }
    // The same issuer after the restart, so the tokens still verify.
    settings.push(("OAUTH_PROXY_BASE_URL", first.address.clone()));
    settings[1].1 = "groups:mcp-users".to_string();
    first.stop().await;
    let app = TestApp::spawn_instance(&as_refs(&settings), upstream).await;
    let [(ann_access, ann_refresh), (bob_access, bob_refresh)] = [tokens[0].clone(), tokens[1].clone()];
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});

    // Ann is no longer on the list.
    let refused = app.mcp_post(Some(&ann_access), ping.clone()).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    assert_eq!(bearer_challenge(&refused)["error"], "invalid_token");
    assert!(bearer_challenge(&refused)["error_description"].contains("sign in again"));
    assert_eq!(introspect_active(&app, &client, &ann_access).await, json!(false));
    let refresh = app.refresh(&client, &ann_refresh).await;
    assert_eq!(refresh.status, StatusCode::BAD_REQUEST, "{}", refresh.body);
    assert_eq!(refresh.json()["error"], "invalid_grant");
    assert_eq!(
        refresh.json()["error_description"],
        "the server's sign-in policy no longer allows this grant; sign in again"
    );
    let revoked: Vec<_> = app
        .proxy
        .audit()
        .recent()
        .into_iter()
        .filter(|e| e.event == EventKind::GrantRevoked)
        .collect();
    assert_eq!(revoked.len(), 1, "{revoked:#?}");
    assert_eq!(revoked[0].subject.as_deref(), Some("ann"));
    assert_eq!(
        revoked[0].reason.as_deref(),
        Some("OAUTH_PROXY_ALLOWED_USERS no longer allows the user")
    );
    // The grant is gone: a second refresh finds nothing.
    let again = app.refresh(&client, &ann_refresh).await;
    assert_eq!(
        again.json()["error_description"],
        "the refresh token is invalid, expired or revoked"
    );

    // Bob still is: his tokens work and refresh as before.
    assert_eq!(
        app.mcp_post(Some(&bob_access), ping.clone()).await.status,
        StatusCode::OK
    );
    let refreshed = app.refresh(&client, &bob_refresh).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    let bob_new = refreshed.json()["access_token"].as_str().unwrap().to_string();
    assert_eq!(app.mcp_post(Some(&bob_new), ping).await.status, StatusCode::OK);
    assert_eq!(
        introspect_active(&app, &client, &bob_new).await,
        json!(true),
        "bob's new token is active"
    );
    app.stop().await;
    backend.stop().await;
}

fn as_refs<'a>(settings: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    settings.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

async fn introspect_active(app: &TestApp, client: &TestClient, token: &str) -> Value {
    let secret = client.client_secret.clone().unwrap();
    let answer = app
        .post_form("/introspect", &[("token", token)], Some((&client.client_id, &secret)))
        .await;
    answer.json()["active"].clone()
}
