//! The actors' timers really remove expired entries.

use std::time::Duration;

use mcp_oauth_proxy::actors::CountRecords;

use crate::helpers::{Pkce, TestApp};
use crate::mock_upstream::MockUpstreamConfig;

#[actix_web::test]
async fn expired_transactions_codes_and_registrations_are_swept() {
    let app = TestApp::spawn_with(
        &[
            ("OAUTH_PROXY_TRANSACTION_TTL", "1"),
            ("OAUTH_PROXY_AUTHORIZATION_CODE_TTL", "1"),
            ("OAUTH_PROXY_UNUSED_CLIENT_TTL", "1"),
            ("OAUTH_PROXY_ACCESS_TOKEN_TTL", "1"),
            ("OAUTH_PROXY_REFRESH_TOKEN_TTL", "1"),
        ],
        MockUpstreamConfig::default(),
    )
    .await;
    let client = app.register_public().await;
    // One transaction left pending, one flow completed to a code.
    let _pending = app.browser_get(&app.authorize_path(&client, &Pkce::new(), "s")).await;
    let _code = app.code_for(&client, &Pkce::new()).await;
    let proxy = &app.proxy;
    assert!(proxy.transaction_store().send(CountRecords).await.unwrap().unwrap() >= 1);
    assert_eq!(proxy.code_store().send(CountRecords).await.unwrap().unwrap(), 1);
    assert_eq!(proxy.client_registry().send(CountRecords).await.unwrap().unwrap(), 1);
    assert_eq!(proxy.token_vault().send(CountRecords).await.unwrap().unwrap(), 1);
    actix_rt::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(proxy.transaction_store().send(CountRecords).await.unwrap().unwrap(), 0);
    assert_eq!(proxy.code_store().send(CountRecords).await.unwrap().unwrap(), 0);
    assert_eq!(proxy.client_registry().send(CountRecords).await.unwrap().unwrap(), 0);
    assert_eq!(proxy.token_vault().send(CountRecords).await.unwrap().unwrap(), 0);
    app.stop().await;
}

#[actix_web::test]
async fn an_expired_transaction_cannot_be_approved() {
    let app = TestApp::spawn_with(&[("OAUTH_PROXY_TRANSACTION_TTL", "1")], MockUpstreamConfig::default()).await;
    let client = app.register_public().await;
    let page = app.browser_get(&app.authorize_path(&client, &Pkce::new(), "s")).await;
    actix_rt::time::sleep(Duration::from_millis(1300)).await;
    let answer = app.approve(&page).await;
    assert_eq!(answer.status, awc::http::StatusCode::BAD_REQUEST);
    assert!(answer.body.contains("expired"));
    app.stop().await;
}

/// The callback writes the grant with the code's lifetime (an abandoned
/// sign-in leaves nothing behind for long); redeeming the code extends it to
/// the refresh token's.
#[actix_web::test]
async fn a_redeemed_codes_grant_outlives_the_code_and_lasts_as_long_as_its_refresh_token() {
    let app = TestApp::spawn_with(
        &[("OAUTH_PROXY_AUTHORIZATION_CODE_TTL", "1")],
        MockUpstreamConfig::default(),
    )
    .await;
    let client = app.register_public().await;
    let tokens = app.full_flow(&client).await;
    actix_rt::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(app.proxy.token_vault().send(CountRecords).await.unwrap().unwrap(), 1);
    let refreshed = app.refresh(&client, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refreshed.status, awc::http::StatusCode::OK, "{}", refreshed.body);
    app.stop().await;
}
