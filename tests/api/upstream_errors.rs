//! Upstream failures become clear OAuth errors, sent back to the client once
//! its redirect URI is validated.

use std::time::Duration;

use awc::http::StatusCode;

use crate::helpers::{query_param, Pkce, TestApp, REDIRECT_URI};
use crate::mock_upstream::{MockUpstreamConfig, TokenBehavior};

async fn callback_error(app: &TestApp) -> (String, Option<String>) {
    let client = app.register_confidential().await;
    let back = app.authorize_to_client(&client, &Pkce::new(), "st").await;
    assert!(back.as_str().starts_with(REDIRECT_URI));
    assert_eq!(query_param(&back, "state").as_deref(), Some("st"));
    assert_eq!(query_param(&back, "iss").as_deref(), Some(app.address.as_str()));
    assert!(query_param(&back, "code").is_none());
    (
        query_param(&back, "error").unwrap(),
        query_param(&back, "error_description"),
    )
}

#[actix_web::test]
async fn upstream_access_denied_reaches_the_client_with_its_state() {
    let app = TestApp::spawn().await;
    app.upstream.set_deny_authorization(true);
    let (error, _) = callback_error(&app).await;
    assert_eq!(error, "access_denied");
    app.stop().await;
}

#[actix_web::test]
async fn an_upstream_500_is_a_server_error() {
    let app = TestApp::spawn().await;
    app.upstream.set_token_behavior(TokenBehavior::ServerError);
    let (error, description) = callback_error(&app).await;
    assert_eq!(error, "server_error");
    assert!(description.unwrap().contains("500"));
    app.stop().await;
}

#[actix_web::test]
async fn a_non_json_upstream_answer_is_a_server_error() {
    let app = TestApp::spawn().await;
    app.upstream.set_token_behavior(TokenBehavior::NonJson);
    let (error, description) = callback_error(&app).await;
    assert_eq!(error, "server_error");
    assert!(description.unwrap().contains("not JSON"));
    app.stop().await;
}

#[actix_web::test]
async fn an_upstream_timeout_is_temporarily_unavailable() {
    let app = TestApp::spawn_with(&[("OAUTH_PROXY_UPSTREAM_TIMEOUT", "1")], MockUpstreamConfig::default()).await;
    app.upstream
        .set_token_behavior(TokenBehavior::Delay(Duration::from_millis(2500)));
    let started = std::time::Instant::now();
    let (error, _) = callback_error(&app).await;
    assert_eq!(error, "temporarily_unavailable");
    assert!(started.elapsed() < Duration::from_secs(5), "no hang");
    app.stop().await;
}

#[actix_web::test]
async fn an_upstream_refusal_of_the_code_is_access_denied() {
    let app = TestApp::spawn().await;
    app.upstream.set_token_behavior(TokenBehavior::InvalidGrant);
    let (error, _) = callback_error(&app).await;
    assert_eq!(error, "access_denied");
    app.stop().await;
}

#[actix_web::test]
async fn a_refused_upstream_refresh_fails_the_proxy_refresh_and_revokes_the_grant() {
    let app = TestApp::spawn().await;
    let client = app.register_public().await;
    let tokens = app.full_flow(&client).await;
    app.upstream.set_token_behavior(TokenBehavior::InvalidGrant);
    let answer = app.refresh(&client, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.json()["error"], "invalid_grant");
    assert!(app
        .proxy
        .load_upstream_tokens(tokens["access_token"].as_str().unwrap())
        .await
        .is_none());
    app.stop().await;
}

#[actix_web::test]
async fn a_failing_upstream_refresh_is_503_and_the_refresh_token_stays_usable() {
    let app = TestApp::spawn().await;
    let client = app.register_public().await;
    let tokens = app.full_flow(&client).await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    app.upstream.set_token_behavior(TokenBehavior::ServerError);
    let answer = app.refresh(&client, refresh).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{}", answer.body);
    assert_eq!(answer.json()["error"], "temporarily_unavailable");
    app.upstream.set_token_behavior(TokenBehavior::Normal);
    let retry = app.refresh(&client, refresh).await;
    assert_eq!(retry.status, StatusCode::OK, "{}", retry.body);
    app.stop().await;
}

#[actix_web::test]
async fn an_upstream_without_a_new_refresh_token_keeps_the_old_one() {
    let upstream = MockUpstreamConfig {
        rotate_refresh_token: false,
        ..Default::default()
    };
    let app = TestApp::spawn_with(&[], upstream).await;
    let client = app.register_public().await;
    let tokens = app.full_flow(&client).await;
    let first = app
        .refresh(&client, tokens["refresh_token"].as_str().unwrap())
        .await
        .json();
    let second = app.refresh(&client, first["refresh_token"].as_str().unwrap()).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    let refreshes: Vec<_> = app
        .upstream
        .token_requests()
        .into_iter()
        .filter(|r| r.form["grant_type"] == "refresh_token")
        .collect();
    assert_eq!(refreshes.len(), 2);
    assert_eq!(refreshes[0].form["refresh_token"], refreshes[1].form["refresh_token"]);
    app.stop().await;
}
