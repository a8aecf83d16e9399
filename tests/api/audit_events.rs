//! The audit trail's events, family by family, as the HTTP interface
//! causes them: read back from the proxy's in-memory record of the last
//! events (`Audit::recent`), which holds what the trail was given. And the
//! leak test: no token, code, secret, verifier or cookie in any event.

use std::time::Duration;

use awc::http::{Method, StatusCode};
use mcp_oauth_proxy::audit::{Event, EventKind, Outcome, RevokedBy};
use serde_json::json;

use crate::backend_double::BackendDouble;
use crate::helpers::{query_param, Pkce, TestApp, TestClient};
use crate::mock_upstream::{MockUpstreamConfig, TokenBehavior};

fn events(app: &TestApp) -> Vec<Event> {
    app.proxy.audit().recent()
}

fn of_kind(app: &TestApp, kind: EventKind) -> Vec<Event> {
    events(app).into_iter().filter(|e| e.event == kind).collect()
}

/// The one event of `kind` (fails when there is none or more).
fn only(app: &TestApp, kind: EventKind) -> Event {
    let found = of_kind(app, kind);
    assert_eq!(found.len(), 1, "one {kind:?} expected, got {found:#?}");
    found.into_iter().next().unwrap()
}

/// What every event from a request carries.
fn assert_from_request(event: &Event) {
    assert!(!event.context.request_id.is_empty(), "no request id: {event:?}");
    assert_eq!(event.context.client_address, "127.0.0.1", "{event:?}");
}

fn assert_client(event: &Event, client: &TestClient, name: &str) {
    assert_eq!(event.client_id.as_deref(), Some(client.client_id.as_str()), "{event:?}");
    assert_eq!(event.client_name.as_deref(), Some(name), "{event:?}");
}

/// The grant id the callback created (from its sign-in event).
fn grant_id_of_sign_in(app: &TestApp) -> String {
    let sign_in = of_kind(app, EventKind::UpstreamSignIn).pop().expect("a sign-in event");
    sign_in.grant_id.expect("the sign-in names its grant")
}

async fn spawn_with_backend(extra: &[(&str, &str)]) -> (TestApp, BackendDouble) {
    let backend = BackendDouble::start().await;
    let mut settings = vec![("OAUTH_PROXY_MCP_UPSTREAM_URL", backend.url.as_str())];
    settings.extend_from_slice(extra);
    (
        TestApp::spawn_with(&settings, MockUpstreamConfig::default()).await,
        backend,
    )
}

#[actix_web::test]
async fn registering_a_client_records_its_id_and_name() {
    let app = TestApp::spawn().await;
    let client = app.register_confidential().await;
    let registered = only(&app, EventKind::ClientRegistered);
    assert_eq!(registered.outcome, Outcome::Success);
    assert_client(&registered, &client, "Test Client");
    assert_from_request(&registered);
    app.stop().await;
}

#[actix_web::test]
async fn the_registry_sweep_records_never_used_clients_that_expired() {
    let upstream = std::rc::Rc::new(crate::mock_upstream::MockUpstream::start(MockUpstreamConfig::default()).await);
    let app = TestApp::spawn_adjusted(&[], upstream, |config| {
        config.lifetimes.unused_client = Duration::from_secs(1);
    })
    .await;
    app.register_public().await;
    app.register_public().await;
    let mut expired = Vec::new();
    for _ in 0..40 {
        actix_rt::time::sleep(Duration::from_millis(100)).await;
        expired = of_kind(&app, EventKind::ClientExpired);
        let counted: usize = expired
            .iter()
            .filter_map(|e| e.reason.as_deref()?.split(' ').next()?.parse::<usize>().ok())
            .sum();
        if counted >= 2 {
            break;
        }
    }
    // The sweep learns only how many went: one event with the count.
    let counted: usize = expired
        .iter()
        .map(|e| {
            assert_eq!(e.outcome, Outcome::Success);
            assert!(e.context.request_id.is_empty(), "no request caused it: {e:?}");
            let reason = e.reason.as_deref().unwrap();
            assert!(reason.contains("client registration(s) expired"), "{reason}");
            reason.split(' ').next().unwrap().parse::<usize>().unwrap()
        })
        .sum();
    assert_eq!(counted, 2, "{expired:#?}");
    app.stop().await;
}

#[actix_web::test]
async fn a_sign_in_records_authorization_consent_sign_in_code_and_tokens() {
    let app = TestApp::spawn().await;
    let client = app.register_confidential().await;
    let pkce = Pkce::new();
    let code = app.code_for(&client, &pkce).await;
    let answer = app.exchange_code(&client, &code, &pkce.verifier).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);

    let kinds: Vec<EventKind> = events(&app).iter().map(|e| e.event).collect();
    assert_eq!(
        kinds,
        [
            EventKind::ClientRegistered,
            EventKind::AuthorizationStarted,
            EventKind::ConsentApproved,
            EventKind::UpstreamSignIn,
            EventKind::CodeIssued,
            EventKind::CodeRedeemed,
            EventKind::TokensIssued,
        ]
    );
    let started = only(&app, EventKind::AuthorizationStarted);
    assert_client(&started, &client, "Test Client");
    assert_eq!(started.scope.as_deref(), Some("email openid profile"));
    assert_from_request(&started);

    let consent = only(&app, EventKind::ConsentApproved);
    assert_client(&consent, &client, "Test Client");
    assert_eq!(consent.remembered, Some(false));

    let sign_in = only(&app, EventKind::UpstreamSignIn);
    assert_eq!(sign_in.outcome, Outcome::Success);
    assert_client(&sign_in, &client, "Test Client");
    assert_eq!(sign_in.subject.as_deref(), Some("user-123"));
    assert_eq!(sign_in.email.as_deref(), Some("user@example.com"));
    let grant_id = sign_in.grant_id.clone().unwrap();
    assert!(!grant_id.is_empty());

    for kind in [EventKind::CodeIssued, EventKind::CodeRedeemed, EventKind::TokensIssued] {
        let event = only(&app, kind);
        assert_eq!(event.outcome, Outcome::Success, "{event:?}");
        assert_client(&event, &client, "Test Client");
        assert_eq!(event.subject.as_deref(), Some("user-123"), "{event:?}");
        assert_eq!(event.grant_id.as_deref(), Some(grant_id.as_str()), "{event:?}");
        assert_eq!(event.scope.as_deref(), Some("email openid profile"), "{event:?}");
        assert_from_request(&event);
    }
    // The access token's grant is the one recorded.
    let access = answer.json()["access_token"].as_str().unwrap().to_string();
    let jti = crate::helpers::jwt_payload(&access)["jti"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(jti.starts_with(&format!("{grant_id}.")), "{jti} vs {grant_id}");

    // The same browser again: approved by its remembered decision.
    let again = app.browser_get(&app.authorize_path(&client, &Pkce::new(), "s2")).await;
    assert_eq!(again.status, StatusCode::FOUND, "{}", again.body);
    let approvals = of_kind(&app, EventKind::ConsentApproved);
    assert_eq!(approvals.len(), 2);
    assert_eq!(approvals[1].remembered, Some(true));
    assert_client(&approvals[1], &client, "Test Client");
    app.stop().await;
}

#[actix_web::test]
async fn a_denied_consent_is_recorded() {
    let app = TestApp::spawn().await;
    let client = app.register_confidential().await;
    let page = app.browser_get(&app.authorize_path(&client, &Pkce::new(), "s")).await;
    let denied = app
        .browser_post_form(
            "/consent",
            &[
                ("transaction_id", &page.form_value("transaction_id")),
                ("csrf_token", &page.form_value("csrf_token")),
                ("decision", "deny"),
            ],
        )
        .await;
    assert_eq!(denied.status, StatusCode::SEE_OTHER);
    let event = only(&app, EventKind::ConsentDenied);
    assert_client(&event, &client, "Test Client");
    assert_eq!(event.remembered, Some(false));
    assert_from_request(&event);
    assert!(of_kind(&app, EventKind::ConsentApproved).is_empty());
    app.stop().await;
}

#[actix_web::test]
async fn a_failed_upstream_sign_in_records_the_upstream_error() {
    let app = TestApp::spawn().await;
    app.upstream.set_deny_authorization(true);
    let client = app.register_confidential().await;
    let back = app.authorize_to_client(&client, &Pkce::new(), "s").await;
    assert_eq!(query_param(&back, "error").as_deref(), Some("access_denied"));
    let failed = only(&app, EventKind::UpstreamSignIn);
    assert_eq!(failed.outcome, Outcome::Failure);
    assert_client(&failed, &client, "Test Client");
    assert!(
        failed.reason.as_deref().unwrap().starts_with("access_denied"),
        "{failed:?}"
    );
    assert_eq!(failed.subject, None);
    assert!(of_kind(&app, EventKind::CodeIssued).is_empty());
    app.stop().await;
}

#[actix_web::test]
async fn a_replayed_code_records_the_replay_the_revoked_grant_and_the_refusal() {
    let app = TestApp::spawn().await;
    let client = app.register_confidential().await;
    let pkce = Pkce::new();
    let code = app.code_for(&client, &pkce).await;
    assert_eq!(
        app.exchange_code(&client, &code, &pkce.verifier).await.status,
        StatusCode::OK
    );
    let grant_id = grant_id_of_sign_in(&app);
    // Not the same request again (another verifier): a replay.
    let replay = app.exchange_code(&client, &code, &Pkce::new().verifier).await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST);

    let replayed = only(&app, EventKind::CodeReplayDetected);
    assert_eq!(replayed.outcome, Outcome::Refused);
    assert_client(&replayed, &client, "Test Client");
    assert_eq!(replayed.grant_id.as_deref(), Some(grant_id.as_str()));
    assert_eq!(replayed.subject.as_deref(), Some("user-123"));
    let revoked = only(&app, EventKind::GrantRevoked);
    assert_eq!(revoked.revoked_by, Some(RevokedBy::ReuseDetection));
    assert_eq!(revoked.grant_id.as_deref(), Some(grant_id.as_str()));
    let refused = only(&app, EventKind::RequestRefused);
    assert_eq!(refused.status, Some(400));
    assert_eq!(refused.client_id.as_deref(), Some(client.client_id.as_str()));
    assert!(
        refused.reason.as_deref().unwrap().starts_with("invalid_grant"),
        "{refused:?}"
    );
    assert_from_request(&refused);
    app.stop().await;
}

#[actix_web::test]
async fn refreshes_record_rotation_grace_replays_and_reuse_detection() {
    let app = TestApp::spawn().await;
    let client = app.register_confidential().await;
    let (_, first) = app.full_flow_tokens(&client).await;
    let grant_id = grant_id_of_sign_in(&app);

    let rotated = app.refresh(&client, &first).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    let second = rotated.json()["refresh_token"].as_str().unwrap().to_string();
    // The first token again at once, its successor unused: a grace replay.
    assert_eq!(app.refresh(&client, &first).await.status, StatusCode::OK);
    let refreshed = of_kind(&app, EventKind::TokensRefreshed);
    assert_eq!(refreshed.len(), 2, "{refreshed:#?}");
    assert_eq!(refreshed[0].grace_replay, Some(false));
    assert_eq!(refreshed[1].grace_replay, Some(true));
    for event in &refreshed {
        assert_client(event, &client, "Test Client");
        assert_eq!(event.subject.as_deref(), Some("user-123"));
        assert_eq!(event.grant_id.as_deref(), Some(grant_id.as_str()));
        assert_eq!(event.scope.as_deref(), Some("email openid profile"));
        assert_from_request(event);
    }
    // The rotation refreshed upstream too (once).
    let upstream = only(&app, EventKind::UpstreamTokenRefreshed);
    assert_eq!(upstream.outcome, Outcome::Success);
    assert_eq!(upstream.grant_id.as_deref(), Some(grant_id.as_str()));
    assert_eq!(upstream.subject.as_deref(), Some("user-123"));
    assert_eq!(upstream.client_id.as_deref(), Some(client.client_id.as_str()));
    assert_from_request(&upstream);

    // The successor used, then the first token once more: reuse.
    assert_eq!(app.refresh(&client, &second).await.status, StatusCode::OK);
    assert_eq!(app.refresh(&client, &first).await.status, StatusCode::BAD_REQUEST);
    let reuse = only(&app, EventKind::RefreshReuseDetected);
    assert_eq!(reuse.outcome, Outcome::Refused);
    assert_eq!(reuse.grant_id.as_deref(), Some(grant_id.as_str()));
    assert_client(&reuse, &client, "Test Client");
    let revoked = only(&app, EventKind::GrantRevoked);
    assert_eq!(revoked.revoked_by, Some(RevokedBy::ReuseDetection));
    assert_eq!(revoked.grant_id.as_deref(), Some(grant_id.as_str()));
    let refused = only(&app, EventKind::RequestRefused);
    assert_eq!(refused.status, Some(400));
    app.stop().await;
}

#[actix_web::test]
async fn an_upstream_refresh_refused_records_the_refusal_and_the_revoked_grant() {
    let app = TestApp::spawn().await;
    let client = app.register_confidential().await;
    let (_, refresh) = app.full_flow_tokens(&client).await;
    let grant_id = grant_id_of_sign_in(&app);
    app.upstream.set_token_behavior(TokenBehavior::InvalidGrant);
    assert_eq!(app.refresh(&client, &refresh).await.status, StatusCode::BAD_REQUEST);
    let upstream = only(&app, EventKind::UpstreamTokenRefreshed);
    assert_eq!(upstream.outcome, Outcome::Refused);
    assert!(
        upstream.reason.as_deref().unwrap().contains("invalid_grant"),
        "{upstream:?}"
    );
    assert_eq!(upstream.grant_id.as_deref(), Some(grant_id.as_str()));
    let revoked = only(&app, EventKind::GrantRevoked);
    assert_eq!(revoked.grant_id.as_deref(), Some(grant_id.as_str()));
    assert!(
        revoked.reason.as_deref().unwrap().contains("upstream refused"),
        "{revoked:?}"
    );
    assert!(of_kind(&app, EventKind::TokensRefreshed).is_empty());
    app.stop().await;
}

#[actix_web::test]
async fn revocation_by_the_client_records_the_token_and_the_grant() {
    let app = TestApp::spawn().await;
    let client = app.register_confidential().await;
    let (access, refresh) = app.full_flow_tokens(&client).await;
    let grant_id = grant_id_of_sign_in(&app);
    let secret = client.client_secret.clone().unwrap();
    let basic = Some((client.client_id.as_str(), secret.as_str()));
    assert_eq!(
        app.post_form("/revoke", &[("token", &access)], basic).await.status,
        StatusCode::OK
    );
    let token = only(&app, EventKind::TokenRevoked);
    assert_eq!(token.revoked_by, Some(RevokedBy::Client));
    assert_eq!(token.grant_id.as_deref(), Some(grant_id.as_str()));
    assert_eq!(token.subject.as_deref(), Some("user-123"));
    assert_client(&token, &client, "Test Client");
    assert_from_request(&token);
    assert_eq!(
        app.post_form("/revoke", &[("token", &refresh)], basic).await.status,
        StatusCode::OK
    );
    let grant = only(&app, EventKind::GrantRevoked);
    assert_eq!(grant.revoked_by, Some(RevokedBy::Client));
    assert_eq!(grant.grant_id.as_deref(), Some(grant_id.as_str()));
    // A wrong secret is a refusal.
    let wrong = app
        .post_form("/revoke", &[("token", &refresh)], Some((&client.client_id, "wrong")))
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let refused = only(&app, EventKind::RequestRefused);
    assert_eq!(refused.status, Some(401));
    assert_eq!(refused.client_id.as_deref(), Some(client.client_id.as_str()));
    app.stop().await;
}

#[actix_web::test]
async fn token_endpoint_refusals_are_recorded_with_their_status_and_reason() {
    let app = TestApp::spawn().await;
    let client = app.register_confidential().await;
    let form = [("grant_type", "refresh_token"), ("refresh_token", "not-a-token")];
    let unknown = app.post_form("/token", &form, Some(("no-such-client", "x"))).await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    let bad_grant = app.refresh(&client, "not-a-token").await;
    assert_eq!(bad_grant.status, StatusCode::BAD_REQUEST);
    // A malformed request is no refusal worth recording.
    let secret = client.client_secret.clone().unwrap();
    let malformed = app
        .post_form(
            "/token",
            &[("grant_type", "refresh_token")],
            Some((&client.client_id, &secret)),
        )
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    let refused = of_kind(&app, EventKind::RequestRefused);
    assert_eq!(refused.len(), 2, "{refused:#?}");
    assert_eq!(refused[0].status, Some(401));
    assert_eq!(refused[0].client_id.as_deref(), Some("no-such-client"));
    assert!(refused[0].reason.as_deref().unwrap().starts_with("invalid_client"));
    assert_eq!(refused[1].status, Some(400));
    assert_eq!(refused[1].client_id.as_deref(), Some(client.client_id.as_str()));
    assert!(refused[1].reason.as_deref().unwrap().starts_with("invalid_grant"));
    for event in &refused {
        assert_eq!(event.outcome, Outcome::Refused);
        assert_from_request(event);
    }
    app.stop().await;
}

#[actix_web::test]
async fn every_forwarded_mcp_request_is_recorded_with_method_name_status_and_bytes() {
    let (app, backend) = spawn_with_backend(&[]).await;
    let client = app.register_public().await;
    let (access, _) = app.full_flow_tokens(&client).await;
    let grant_id = grant_id_of_sign_in(&app);

    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "search", "arguments": {"name": "not this one"}}});
    let read = json!({"jsonrpc": "2.0", "id": 2, "method": "resources/read", "params": {"uri": "file:///notes.txt"}});
    let mut answers = Vec::new();
    for body in [&call, &read] {
        let answer = app.mcp_post(Some(&access), body.clone()).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        answers.push((body.to_string().len() as u64, answer.body.len() as u64));
    }
    // A stream of server-sent events, counted as it streams.
    let stream = app
        .mcp_request(Method::GET, "/mcp/events/3", Some(&access), &[], None)
        .await;
    assert_eq!(stream.status, StatusCode::OK);
    answers.push((0, stream.body.len() as u64));

    let mut recorded = Vec::new();
    for _ in 0..50 {
        recorded = of_kind(&app, EventKind::McpRequest);
        if recorded.len() == 3 {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(recorded.len(), 3, "{recorded:#?}");
    let expected = [
        (Some("tools/call"), Some("search")),
        (Some("resources/read"), Some("file:///notes.txt")),
        (None, None),
    ];
    for ((event, (method, name)), (bytes_in, bytes_out)) in recorded.iter().zip(expected).zip(answers) {
        assert_eq!(event.outcome, Outcome::Success, "{event:?}");
        assert_client(event, &client, "Public Client");
        assert_eq!(event.subject.as_deref(), Some("user-123"));
        assert_eq!(event.grant_id.as_deref(), Some(grant_id.as_str()));
        assert_from_request(event);
        let mcp = event.mcp.as_ref().expect("the MCP call");
        assert_eq!((mcp.method.as_deref(), mcp.name.as_deref()), (method, name));
        assert_eq!(mcp.status, 200);
        assert_eq!(mcp.bytes_in, bytes_in, "{event:?}");
        assert_eq!(mcp.bytes_out, bytes_out, "{event:?}");
        assert!(bytes_out > 0);
    }
    // The stream's events came 300 ms apart: its duration covers them.
    assert!(
        recorded[2].mcp.as_ref().unwrap().duration_ms >= 500,
        "{:?}",
        recorded[2]
    );
    app.stop().await;
    backend.stop().await;
}

#[actix_web::test]
async fn refused_mcp_requests_are_recorded_with_their_reason() {
    let (app, backend) = spawn_with_backend(&[
        ("OAUTH_PROXY_SCOPES", "openid mcp:admin"),
        ("OAUTH_PROXY_MCP_REQUIRED_SCOPES", "mcp:admin"),
    ])
    .await;
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    assert_eq!(app.mcp_post(None, ping.clone()).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.mcp_post(Some("not-a-token"), ping.clone()).await.status,
        StatusCode::UNAUTHORIZED
    );
    // A token for `openid` only.
    let client = app.register_public().await;
    let pkce = Pkce::new();
    let path = format!("{}&scope=openid", app.authorize_path(&client, &pkce, "s"));
    let first = app.browser_get(&path).await;
    let back = app.through_upstream(&app.approve(&first).await).await;
    let code = query_param(&back.location(), "code").unwrap();
    let tokens = app.exchange_code(&client, &code, &pkce.verifier).await.json();
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let grant_id = grant_id_of_sign_in(&app);
    assert_eq!(app.mcp_post(Some(&access), ping).await.status, StatusCode::FORBIDDEN);

    let refused = of_kind(&app, EventKind::RequestRefused);
    assert_eq!(refused.len(), 3, "{refused:#?}");
    let statuses: Vec<Option<u16>> = refused.iter().map(|e| e.status).collect();
    assert_eq!(statuses, [Some(401), Some(401), Some(403)]);
    assert_eq!(refused[0].reason.as_deref(), Some("no bearer token"));
    assert!(refused[1].reason.as_deref().is_some_and(|r| !r.is_empty()));
    assert!(refused[2].reason.as_deref().unwrap().contains("scope"));
    assert_eq!(refused[2].grant_id.as_deref(), Some(grant_id.as_str()));
    assert_eq!(refused[2].subject.as_deref(), Some("user-123"));
    for event in &refused {
        assert_eq!(event.outcome, Outcome::Refused);
        assert_from_request(event);
    }
    assert!(of_kind(&app, EventKind::McpRequest).is_empty(), "nothing was forwarded");
    app.stop().await;
    backend.stop().await;
}

/// Everything secret a whole session shows the test: the leak test looks
/// for each in the serialized events.
struct Secrets(Vec<(String, String)>);

impl Secrets {
    fn add(&mut self, what: &str, value: &str) {
        assert!(value.len() >= 8, "{what} is too short to search for: {value:?}");
        self.0.push((what.to_string(), value.to_string()));
    }
}

/// A full session: sign-in (step by step, keeping every secret seen),
/// refresh, MCP calls, revocation; then no secret in any event.
async fn no_secret_reaches_the_audit_trail(extra: &[(&str, &str)]) {
    let (app, backend) = spawn_with_backend(extra).await;
    let mut secrets = Secrets(Vec::new());
    let client = app.register_confidential().await;
    let client_secret = client.client_secret.clone().unwrap();
    secrets.add("client secret", &client_secret);
    let pkce = Pkce::new();
    secrets.add("PKCE verifier", &pkce.verifier);
    let page = app.browser_get(&app.authorize_path(&client, &pkce, "state-1")).await;
    secrets.add("CSRF token", &page.form_value("csrf_token"));
    secrets.add("transaction id", &page.form_value("transaction_id"));
    let to_upstream = app.approve(&page).await;
    let upstream_answer = app.browser_get(to_upstream.location().as_str()).await;
    let callback = upstream_answer.location();
    secrets.add("upstream code", &query_param(&callback, "code").unwrap());
    let back = app.browser_get(callback.as_str()).await;
    let code = query_param(&back.location(), "code").unwrap();
    secrets.add("code", &code);
    let tokens = app.exchange_code(&client, &code, &pkce.verifier).await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.body);
    let tokens = tokens.json();
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    let refreshed = app.refresh(&client, &refresh).await.json();
    let new_access = refreshed["access_token"].as_str().unwrap().to_string();
    let new_refresh = refreshed["refresh_token"].as_str().unwrap().to_string();
    for (what, token) in [
        ("access token", &access),
        ("refresh token", &refresh),
        ("refreshed access token", &new_access),
        ("refreshed refresh token", &new_refresh),
    ] {
        secrets.add(what, token);
    }
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "search"}});
    assert_eq!(app.mcp_post(Some(&new_access), call).await.status, StatusCode::OK);
    let stream = app
        .mcp_request(Method::GET, "/mcp/events/2", Some(&new_access), &[], None)
        .await;
    assert_eq!(stream.status, StatusCode::OK);
    // Refused ones too: a made-up token, and the old refresh token again.
    assert_eq!(
        app.mcp_post(Some("made-up-token-0123456789"), json!({"method": "ping"}))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    secrets.add("made-up token", "made-up-token-0123456789");
    app.refresh(&client, &refresh).await;
    let basic = Some((client.client_id.as_str(), client_secret.as_str()));
    app.post_form("/revoke", &[("token", &new_refresh)], basic).await;
    for token in app.upstream.issued_access_tokens() {
        secrets.add("upstream access token", &token);
    }
    for token in app.upstream.issued_refresh_tokens() {
        secrets.add("upstream refresh token", &token);
    }
    for value in app.cookie_values() {
        secrets.add("cookie", &value);
    }
    // Give the stream's event time to be recorded.
    for _ in 0..50 {
        if of_kind(&app, EventKind::McpRequest).len() == 2 {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }

    let recorded = events(&app);
    let kinds: std::collections::HashSet<EventKind> = recorded.iter().map(|e| e.event).collect();
    for kind in [
        EventKind::ClientRegistered,
        EventKind::UpstreamSignIn,
        EventKind::TokensIssued,
        EventKind::TokensRefreshed,
        EventKind::McpRequest,
        EventKind::RequestRefused,
        EventKind::GrantRevoked,
    ] {
        assert!(kinds.contains(&kind), "no {kind:?} in {kinds:?}");
    }
    let text: String = recorded
        .iter()
        .map(|e| serde_json::to_string(e).unwrap() + "\n")
        .collect();
    for (what, secret) in &secrets.0 {
        assert!(
            !text.contains(secret.as_str()),
            "the audit trail holds a {what}:\n{text}"
        );
    }
    assert!(secrets.0.len() >= 14, "too few secrets collected: {}", secrets.0.len());
    app.stop().await;
    backend.stop().await;
}

#[actix_web::test]
async fn no_token_code_secret_verifier_or_cookie_reaches_the_audit_trail() {
    no_secret_reaches_the_audit_trail(&[]).await;
}

#[actix_web::test]
async fn no_token_code_secret_verifier_or_cookie_reaches_the_audit_trail_in_pass_through_mode() {
    no_secret_reaches_the_audit_trail(&[("OAUTH_PROXY_ENABLE_TOKEN_SWAP", "false")]).await;
}

/// An audit file whose every write fails (`/dev/full`), required or not.
fn failing_trail(required: bool) -> Vec<(&'static str, &'static str)> {
    vec![
        ("OAUTH_PROXY_AUDIT_LOG", "/dev/full"),
        ("OAUTH_PROXY_AUDIT_REQUIRED", if required { "true" } else { "false" }),
    ]
}

/// Waits (bounded) until the writer has found that its sink fails.
async fn until_unhealthy(app: &TestApp) {
    for _ in 0..100 {
        if !app.proxy.audit().healthy() {
            return;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the audit sink on /dev/full never failed");
}

#[actix_web::test]
async fn with_the_trail_required_a_request_whose_event_cannot_be_written_fails_with_503() {
    let app = TestApp::spawn_with(&failing_trail(true), MockUpstreamConfig::default()).await;
    until_unhealthy(&app).await;
    let answer = app
        .post_json(
            "/register",
            &json!({"redirect_uris": ["http://127.0.0.1:9/cb"], "token_endpoint_auth_method": "none"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{}", answer.body);
    assert_eq!(answer.json()["error"], "temporarily_unavailable");
    assert!(app.proxy.audit().dropped() >= 1);
    app.stop().await;
}

#[actix_web::test]
async fn with_the_trail_not_required_a_failing_sink_counts_the_event_as_dropped_and_the_request_goes_on() {
    let app = TestApp::spawn_with(&failing_trail(false), MockUpstreamConfig::default()).await;
    until_unhealthy(&app).await;
    let dropped = app.proxy.audit().dropped();
    let client = app.register_public().await;
    assert!(!client.client_id.is_empty());
    // The writer finds it cannot write the event a moment later.
    for _ in 0..100 {
        if app.proxy.audit().dropped() > dropped {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        app.proxy.audit().dropped() > dropped,
        "the registration's event counts as dropped"
    );
    app.stop().await;
}

#[actix_web::test]
async fn with_the_trail_required_the_gateway_forwards_nothing_it_cannot_record() {
    // Instance A (trail off) signs the user in; instance B, sharing its
    // Redis but with a required trail it cannot write, gets the MCP call.
    let redis = crate::redis_server::RedisServer::start().await;
    let backend = BackendDouble::start().await;
    let shared = [
        ("OAUTH_PROXY_STORAGE", redis.url()),
        (
            "OAUTH_PROXY_ENCRYPTION_KEY",
            "test-encryption-key-test-encryption-key".to_string(),
        ),
        (
            "OAUTH_PROXY_CONSENT_SIGNING_KEY",
            "test-consent-key-test-consent-key-01234".to_string(),
        ),
        ("OAUTH_PROXY_MCP_UPSTREAM_URL", backend.url.clone()),
    ];
    let settings: Vec<(&str, &str)> = shared.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let upstream = std::rc::Rc::new(crate::mock_upstream::MockUpstream::start(MockUpstreamConfig::default()).await);
    let a = TestApp::spawn_instance(&settings, upstream.clone()).await;
    let base = ("OAUTH_PROXY_BASE_URL", a.address.clone());
    let mut b_settings = settings.clone();
    b_settings.push((base.0, base.1.as_str()));
    b_settings.extend(failing_trail(true));
    let b = TestApp::spawn_instance(&b_settings, upstream).await;
    until_unhealthy(&b).await;

    let client = a.register_public().await;
    let tokens = a.full_flow(&client).await;
    let access = tokens["access_token"].as_str().unwrap();
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    assert_eq!(a.mcp_post(Some(access), ping.clone()).await.status, StatusCode::OK);
    let forwarded = backend.recorded.authorization.lock().unwrap().len();
    let answer = b.mcp_post(Some(access), ping).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{}", answer.body);
    assert_eq!(
        backend.recorded.authorization.lock().unwrap().len(),
        forwarded,
        "nothing reached the MCP server"
    );
    b.stop().await;
    a.stop().await;
}

#[actix_web::test]
async fn an_event_carries_the_request_id_its_response_was_sent_with() {
    let app = TestApp::spawn().await;
    let answer = app
        .post_json(
            "/register",
            &json!({"redirect_uris": ["http://127.0.0.1:9/cb"], "token_endpoint_auth_method": "none"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let sent = answer.header("x-request-id").expect("an X-Request-Id on the answer");
    let registered = only(&app, EventKind::ClientRegistered);
    assert_eq!(registered.context.request_id, sent);
    app.stop().await;
}
