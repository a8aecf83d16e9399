//! RFC 7009 revocation and RFC 7662 introspection.

use std::time::Duration;

use awc::http::StatusCode;

use crate::backend_double::BackendDouble;
use crate::helpers::{TestApp, TestClient};
use crate::mock_upstream::{MockUpstreamConfig, TokenBehavior};

const RESOURCE_SERVER_SECRET: &str = "resource-server-secret-of-32-chars-min";

async fn spawn(extra: &[(&str, &str)]) -> (TestApp, BackendDouble) {
    let backend = BackendDouble::start().await;
    let mut settings = vec![
        ("OAUTH_PROXY_MCP_UPSTREAM_URL", backend.url.as_str()),
        ("OAUTH_PROXY_INTROSPECTION_SECRET", RESOURCE_SERVER_SECRET),
        ("OAUTH_PROXY_UPSTREAM_REVOCATION_ENDPOINT", "{upstream}/revoke"),
    ];
    settings.extend_from_slice(extra);
    (
        TestApp::spawn_with(&settings, MockUpstreamConfig::default()).await,
        backend,
    )
}

async fn revoke(app: &TestApp, client: &TestClient, token: &str, hint: Option<&str>) -> crate::helpers::Answer {
    let mut form = vec![("token", token)];
    if let Some(hint) = hint {
        form.push(("token_type_hint", hint));
    }
    match &client.client_secret {
        Some(secret) => app.post_form("/revoke", &form, Some((&client.client_id, secret))).await,
        None => {
            form.push(("client_id", &client.client_id));
            app.post_form("/revoke", &form, None).await
        }
    }
}

async fn introspect_as_resource_server(app: &TestApp, token: &str) -> serde_json::Value {
    let response = app
        .http()
        .post(format!("{}/introspect", app.address))
        .insert_header(("Authorization", format!("Bearer {RESOURCE_SERVER_SECRET}")))
        .send_form(&[("token", token)])
        .await
        .unwrap();
    let mut response = response;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

fn ping() -> serde_json::Value {
    serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})
}

#[actix_web::test]
async fn revoking_an_access_token_fails_it_at_once_on_the_mcp_endpoint_and_at_introspect() {
    let (app, backend) = spawn(&[]).await;
    let client = app.register_public().await;
    let tokens = app.full_flow(&client).await;
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(app.mcp_post(Some(access), ping()).await.status, StatusCode::OK);
    assert_eq!(introspect_as_resource_server(&app, access).await["active"], true);
    let answer = revoke(&app, &client, access, Some("access_token")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        app.mcp_post(Some(access), ping()).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        introspect_as_resource_server(&app, access).await,
        serde_json::json!({"active": false})
    );
    // The refresh token still works: only the access token was revoked.
    assert_eq!(
        app.refresh(&client, tokens["refresh_token"].as_str().unwrap())
            .await
            .status,
        StatusCode::OK
    );
    app.stop().await;
    backend.stop().await;
}

#[actix_web::test]
async fn revoking_a_refresh_token_revokes_the_grant_and_the_upstream_tokens() {
    let (app, backend) = spawn(&[]).await;
    let client = app.register_confidential().await;
    let (access, refresh) = &app.full_flow_tokens(&client).await;
    assert_eq!(revoke(&app, &client, refresh, None).await.status, StatusCode::OK);
    assert_eq!(
        app.mcp_post(Some(access), ping()).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.refresh(&client, refresh).await.json()["error"], "invalid_grant");
    assert!(app.proxy.load_upstream_tokens(access).await.is_none());
    assert_eq!(
        app.upstream.revoked_tokens(),
        vec![app.upstream.issued_refresh_tokens()[0].clone()]
    );
    app.stop().await;
    backend.stop().await;
}

#[actix_web::test]
async fn revocation_answers_200_for_unknown_tokens_and_ignores_other_clients_tokens() {
    let (app, backend) = spawn(&[]).await;
    let client = app.register_public().await;
    let other = app.register_public().await;
    let tokens = app.full_flow(&client).await;
    assert_eq!(
        revoke(&app, &client, "unknown-token", None).await.status,
        StatusCode::OK
    );
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(revoke(&app, &other, access, None).await.status, StatusCode::OK);
    assert_eq!(
        app.mcp_post(Some(access), ping()).await.status,
        StatusCode::OK,
        "not revoked by another client"
    );
    let unauthenticated = app.post_form("/revoke", &[("token", access)], None).await;
    assert_eq!(unauthenticated.status, StatusCode::UNAUTHORIZED);
    app.stop().await;
    backend.stop().await;
}

#[actix_web::test]
async fn introspection_requires_authentication_and_never_shows_the_upstream_token() {
    let (app, backend) = spawn(&[]).await;
    let client = app.register_confidential().await;
    let (access, _) = &app.full_flow_tokens(&client).await;
    let unauthenticated = app.post_form("/introspect", &[("token", access)], None).await;
    assert_eq!(unauthenticated.status, StatusCode::UNAUTHORIZED);
    let wrong_secret = app
        .http()
        .post(format!("{}/introspect", app.address))
        .insert_header(("Authorization", "Bearer wrong"))
        .send_form(&[("token", access)])
        .await
        .unwrap();
    assert_eq!(wrong_secret.status(), StatusCode::UNAUTHORIZED);

    let active = introspect_as_resource_server(&app, access).await;
    assert_eq!(active["active"], true);
    assert_eq!(active["client_id"], client.client_id);
    assert_eq!(active["sub"], "user-123");
    assert_eq!(active["aud"], format!("{}/mcp", app.address));
    assert_eq!(active["iss"], app.address);
    assert_eq!(active["token_type"], "Bearer");
    for claim in ["scope", "exp", "iat"] {
        assert!(active.get(claim).is_some(), "{claim}");
    }
    let upstream_token = app.upstream.issued_access_tokens()[0].clone();
    assert!(!active.to_string().contains(&upstream_token));

    // The client itself, with its secret, may introspect its own token.
    let own = app
        .post_form(
            "/introspect",
            &[("token", access)],
            Some((&client.client_id, client.client_secret.as_deref().unwrap())),
        )
        .await;
    assert_eq!(own.json()["active"], true);
    // Another confidential client sees it inactive.
    let other = app.register_confidential().await;
    let foreign = app
        .post_form(
            "/introspect",
            &[("token", access)],
            Some((&other.client_id, other.client_secret.as_deref().unwrap())),
        )
        .await;
    assert_eq!(foreign.json(), serde_json::json!({"active": false}));
    assert_eq!(
        introspect_as_resource_server(&app, "garbage").await,
        serde_json::json!({"active": false})
    );
    app.stop().await;
    backend.stop().await;
}

#[actix_web::test]
async fn metadata_lists_revocation_and_introspection() {
    let (app, backend) = spawn(&[]).await;
    let doc = app.get("/.well-known/oauth-authorization-server").await.json();
    assert_eq!(doc["revocation_endpoint"], format!("{}/revoke", app.address));
    assert_eq!(doc["introspection_endpoint"], format!("{}/introspect", app.address));
    assert!(doc.get("jwks_uri").is_none(), "HS256: no public key to publish");
    assert_eq!(app.get("/jwks.json").await.status, StatusCode::NOT_FOUND);
    app.stop().await;
    backend.stop().await;
}

/// One worker thread, so every MCP call meets the grants remembered by the
/// previous one: a revocation must still take effect on the very next call,
/// on the memory store and on the directory store alike.
async fn revocation_beats_remembered_grants(storage: &str) {
    let (app, backend) = spawn(&[("OAUTH_PROXY_WORKERS", "1"), ("OAUTH_PROXY_STORAGE", storage)]).await;
    let client = app.register_confidential().await;

    let first = app.full_flow(&client).await;
    let access = first["access_token"].as_str().unwrap();
    for _ in 0..3 {
        assert_eq!(app.mcp_post(Some(access), ping()).await.status, StatusCode::OK);
    }
    assert_eq!(
        revoke(&app, &client, access, Some("access_token")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.mcp_post(Some(access), ping()).await.status,
        StatusCode::UNAUTHORIZED
    );

    // Revoking the grant through its refresh token fails its access token too.
    let second = app.full_flow(&client).await;
    let access = second["access_token"].as_str().unwrap();
    for _ in 0..3 {
        assert_eq!(app.mcp_post(Some(access), ping()).await.status, StatusCode::OK);
    }
    let refresh = second["refresh_token"].as_str().unwrap();
    assert_eq!(revoke(&app, &client, refresh, None).await.status, StatusCode::OK);
    assert_eq!(
        app.mcp_post(Some(access), ping()).await.status,
        StatusCode::UNAUTHORIZED
    );
    app.stop().await;
    backend.stop().await;
}

#[actix_web::test]
async fn a_revoked_token_fails_on_the_next_mcp_call_even_right_after_use_memory_store() {
    revocation_beats_remembered_grants("memory").await;
}

#[actix_web::test]
async fn a_revoked_token_fails_on_the_next_mcp_call_even_right_after_use_directory_store() {
    let dir = tempfile::tempdir().unwrap();
    revocation_beats_remembered_grants(&dir.path().join("data").display().to_string()).await;
}

/// Waits (bounded) until the mock upstream has received a refresh grant call.
async fn until_the_upstream_refresh_is_in_flight(app: &TestApp) {
    for _ in 0..200 {
        let refreshing = app
            .upstream
            .token_requests()
            .iter()
            .any(|r| r.form.get("grant_type").map(String::as_str) == Some("refresh_token"));
        if refreshing {
            return;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the proxy never refreshed upstream");
}

/// A refresh whose upstream refresh fails is undone so the client can retry;
/// the undo puts back only the token pair, so an access token revoked while
/// the upstream refresh was in flight stays revoked.
#[actix_web::test]
async fn an_access_token_revoked_during_a_failing_refresh_stays_revoked_when_the_refresh_is_undone() {
    let (app, backend) = spawn(&[]).await;
    let client = app.register_public().await;
    let (access, refresh) = &app.full_flow_tokens(&client).await;
    assert_eq!(app.mcp_post(Some(access), ping()).await.status, StatusCode::OK);
    app.upstream
        .set_token_behavior(TokenBehavior::DelayThenServerError(Duration::from_millis(600)));
    let revoke_meanwhile = async {
        until_the_upstream_refresh_is_in_flight(&app).await;
        assert_eq!(
            revoke(&app, &client, access, Some("access_token")).await.status,
            StatusCode::OK
        );
    };
    let (refreshed, ()) = futures_util::future::join(app.refresh(&client, refresh), revoke_meanwhile).await;
    assert_eq!(refreshed.status, StatusCode::SERVICE_UNAVAILABLE, "{}", refreshed.body);
    assert_eq!(refreshed.json()["error"], "temporarily_unavailable");
    app.upstream.set_token_behavior(TokenBehavior::Normal);
    assert_eq!(
        app.mcp_post(Some(access), ping()).await.status,
        StatusCode::UNAUTHORIZED,
        "the revoked access token works again"
    );
    assert_eq!(introspect_as_resource_server(&app, access).await["active"], false);
    // The undo did happen: the refresh token the client holds still works.
    let retry = app.refresh(&client, refresh).await;
    assert_eq!(retry.status, StatusCode::OK, "{}", retry.body);
    app.stop().await;
    backend.stop().await;
}

/// The same with the whole family revoked meanwhile: it stays revoked.
#[actix_web::test]
async fn a_grant_revoked_during_a_failing_refresh_stays_revoked_when_the_refresh_is_undone() {
    let (app, backend) = spawn(&[]).await;
    let client = app.register_public().await;
    let (access, refresh) = &app.full_flow_tokens(&client).await;
    app.upstream
        .set_token_behavior(TokenBehavior::DelayThenServerError(Duration::from_millis(600)));
    let revoke_meanwhile = async {
        until_the_upstream_refresh_is_in_flight(&app).await;
        assert_eq!(
            revoke(&app, &client, refresh, Some("refresh_token")).await.status,
            StatusCode::OK
        );
    };
    let (refreshed, ()) = futures_util::future::join(app.refresh(&client, refresh), revoke_meanwhile).await;
    assert_eq!(refreshed.status, StatusCode::SERVICE_UNAVAILABLE, "{}", refreshed.body);
    app.upstream.set_token_behavior(TokenBehavior::Normal);
    assert_eq!(
        app.mcp_post(Some(access), ping()).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.refresh(&client, refresh).await.json()["error"], "invalid_grant");
    app.stop().await;
    backend.stop().await;
}
