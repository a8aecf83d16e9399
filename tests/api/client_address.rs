//! The client address behind trusted proxies (`OAUTH_PROXY_TRUSTED_PROXIES`)
//! and the per-address limits that count by it (registration, /authorize).

use awc::http::StatusCode;
use serde_json::json;

use crate::helpers::{Answer, Pkce, TestApp, TestClient, REDIRECT_URI};
use crate::mock_upstream::MockUpstreamConfig;

/// A registration sent with one extra header (as a proxy in front would).
async fn register_with(app: &TestApp, header: (&str, &str)) -> StatusCode {
    let response = app
        .http()
        .post(format!("{}/register", app.address))
        .insert_header(header)
        .send_json(&json!({ "redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "none" }))
        .await
        .unwrap();
    response.status()
}

/// `GET /authorize` for `client`, with extra headers.
async fn authorize_with(app: &TestApp, client: &TestClient, headers: &[(&str, &str)]) -> Answer {
    let path = app.authorize_path(client, &Pkce::new(), "s");
    let mut request = app.http().get(format!("{}{path}", app.address));
    for header in headers {
        request = request.insert_header(*header);
    }
    let mut response = request.send().await.unwrap();
    let body = response.body().limit(1 << 20).await.unwrap();
    Answer {
        status: response.status(),
        headers: response.headers().clone(),
        body: String::from_utf8_lossy(&body).to_string(),
    }
}

#[actix_web::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_registration_bucket() {
    let app = TestApp::spawn_with(
        &[
            ("OAUTH_PROXY_TRUSTED_PROXIES", "127.0.0.1/32"),
            ("OAUTH_PROXY_REGISTRATION_RATE_LIMIT", "2"),
        ],
        MockUpstreamConfig::default(),
    )
    .await;
    let first = ("X-Forwarded-For", "198.51.100.1");
    for _ in 0..2 {
        assert_eq!(register_with(&app, first).await, StatusCode::CREATED);
    }
    assert_eq!(register_with(&app, first).await, StatusCode::TOO_MANY_REQUESTS);
    // Another client behind the same proxy is not blocked by the first.
    let second = ("X-Forwarded-For", "198.51.100.2");
    assert_eq!(register_with(&app, second).await, StatusCode::CREATED);
    // A spoofed entry left of the proxy's own is not believed.
    let spoofed = ("X-Forwarded-For", "203.0.113.50, 198.51.100.1");
    assert_eq!(register_with(&app, spoofed).await, StatusCode::TOO_MANY_REQUESTS);
    app.stop().await;
}

#[actix_web::test]
async fn from_an_untrusted_peer_x_forwarded_for_is_ignored() {
    let app = TestApp::spawn_with(
        &[("OAUTH_PROXY_REGISTRATION_RATE_LIMIT", "2")],
        MockUpstreamConfig::default(),
    )
    .await;
    assert_eq!(
        register_with(&app, ("X-Forwarded-For", "198.51.100.1")).await,
        StatusCode::CREATED
    );
    assert_eq!(
        register_with(&app, ("X-Forwarded-For", "198.51.100.2")).await,
        StatusCode::CREATED
    );
    // A fresh spoofed address does not buy a fresh bucket: the peer is counted.
    for spoof in ["198.51.100.3", "203.0.113.9"] {
        assert_eq!(
            register_with(&app, ("X-Forwarded-For", spoof)).await,
            StatusCode::TOO_MANY_REQUESTS
        );
    }
    assert_eq!(
        register_with(&app, ("Forwarded", "for=198.51.100.4")).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    app.stop().await;
}

#[actix_web::test]
async fn forwarded_ipv6_clients_share_a_bucket_per_slash_64() {
    let app = TestApp::spawn_with(
        &[
            ("OAUTH_PROXY_TRUSTED_PROXIES", "127.0.0.1"),
            ("OAUTH_PROXY_REGISTRATION_RATE_LIMIT", "2"),
        ],
        MockUpstreamConfig::default(),
    )
    .await;
    let forwarded = |value| ("Forwarded", value);
    assert_eq!(
        register_with(&app, forwarded("for=\"[2001:db8::1]\"")).await,
        StatusCode::CREATED
    );
    assert_eq!(
        register_with(&app, forwarded("for=\"[2001:db8::2]\"")).await,
        StatusCode::CREATED
    );
    // The same /64 (here with a port): the bucket is spent.
    assert_eq!(
        register_with(&app, forwarded("for=\"[2001:db8::3]:4711\";proto=https")).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // The next /64 is another client.
    assert_eq!(
        register_with(&app, forwarded("for=\"[2001:db8:0:1::1]\"")).await,
        StatusCode::CREATED
    );
    app.stop().await;
}

#[actix_web::test]
async fn authorize_answers_429_with_retry_after_and_an_html_page_over_the_per_address_limit() {
    let app = TestApp::spawn_with(
        &[
            ("OAUTH_PROXY_AUTHORIZE_RATE_LIMIT", "3"),
            ("OAUTH_PROXY_TRUSTED_PROXIES", "127.0.0.1"),
        ],
        MockUpstreamConfig::default(),
    )
    .await;
    let client = app.register_public().await;
    let first = [("X-Forwarded-For", "198.51.100.1")];
    for _ in 0..3 {
        assert_eq!(authorize_with(&app, &client, &first).await.status, StatusCode::OK);
    }
    let refused = authorize_with(&app, &client, &first).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS, "{}", refused.body);
    assert!(refused.header("content-type").unwrap().starts_with("text/html"));
    assert!(refused.header("location").is_none(), "a page, never a redirect");
    let retry_after: u64 = refused.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    // Another address behind the proxy still signs in.
    let second = [("X-Forwarded-For", "198.51.100.2")];
    assert_eq!(authorize_with(&app, &client, &second).await.status, StatusCode::OK);
    app.stop().await;
}

#[actix_web::test]
async fn authorize_rate_limit_0_turns_the_limit_off() {
    let app = TestApp::spawn_with(
        &[("OAUTH_PROXY_AUTHORIZE_RATE_LIMIT", "0")],
        MockUpstreamConfig::default(),
    )
    .await;
    let client = app.register_public().await;
    for _ in 0..150 {
        let answer = authorize_with(&app, &client, &[]).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }
    app.stop().await;
}

#[actix_web::test]
async fn authorize_is_limited_by_default_at_a_generous_rate() {
    let app = TestApp::spawn().await;
    let client = app.register_public().await;
    let mut allowed = 0;
    for _ in 0..200 {
        match authorize_with(&app, &client, &[]).await.status {
            StatusCode::OK => allowed += 1,
            status => assert_eq!(status, StatusCode::TOO_MANY_REQUESTS),
        }
    }
    // 120 at once, then two a second while the loop runs.
    assert!((120..200).contains(&allowed), "{allowed} allowed");
    app.stop().await;
}
