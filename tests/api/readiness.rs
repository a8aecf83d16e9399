//! `GET /readyz` (both listeners): 200 while the store answers, 503 with a
//! JSON reason while it does not, 200 again once it is back. `/healthz`
//! stays liveness.

use std::time::{Duration, Instant};

use crate::helpers::{Answer, Driver, TestApp};
use crate::mock_upstream::MockUpstreamConfig;
use crate::redis_server::RedisServer;

fn assert_ready(answer: &Answer) {
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json(), serde_json::json!({"status": "ready"}));
    assert_eq!(answer.header("cache-control").as_deref(), Some("no-store"));
}

/// `/readyz` until it answers `status`, for at most 20 s.
async fn readyz_until(driver: &Driver, status: u16) -> Answer {
    let started = Instant::now();
    loop {
        let answer = driver.get("/readyz").await;
        if answer.status == status {
            return answer;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "/readyz still answers {} ({}), not {status}",
            answer.status,
            answer.body
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
}

#[actix_web::test]
async fn readyz_answers_ready_on_both_listeners_with_a_memory_store() {
    let app = TestApp::spawn().await;
    assert_ready(&app.get("/readyz").await);
    assert_ready(&app.admin.get("/readyz").await);
    app.stop().await;
}

#[actix_web::test]
async fn readyz_fails_while_redis_is_down_and_recovers_when_it_is_back() {
    let mut redis = RedisServer::start().await;
    let app = TestApp::spawn_with(
        &[
            ("OAUTH_PROXY_STORAGE", &redis.url()),
            (
                "OAUTH_PROXY_CONSENT_SIGNING_KEY",
                "readiness-consent-key-0123456789abcdef",
            ),
            (
                "OAUTH_PROXY_ENCRYPTION_KEY",
                "readiness-encryption-key-0123456789abcdef",
            ),
        ],
        MockUpstreamConfig::default(),
    )
    .await;
    assert_ready(&app.get("/readyz").await);

    redis.kill();
    for driver in [&app.driver, &app.admin] {
        let down = readyz_until(driver, 503).await;
        let body = down.json();
        assert_eq!(body["status"], "unavailable", "{body}");
        let reason = body["reason"].as_str().unwrap();
        assert!(reason.contains("store"), "{reason}");
        assert_eq!(down.header("cache-control").as_deref(), Some("no-store"));
    }
    // Liveness is not readiness: the process still answers.
    assert_eq!(app.get("/healthz").await.status, 200);

    redis.restart().await;
    assert_ready(&readyz_until(&app.driver, 200).await);
    assert_ready(&readyz_until(&app.admin, 200).await);
    app.stop().await;
}

#[actix_web::test]
async fn readyz_fails_once_the_directory_store_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn_with(
        &[("OAUTH_PROXY_STORAGE", &dir.path().display().to_string())],
        MockUpstreamConfig::default(),
    )
    .await;
    assert_ready(&app.get("/readyz").await);
    app.proxy.shutdown().await;
    let closed = app.get("/readyz").await;
    assert_eq!(closed.status, 503, "{}", closed.body);
    assert!(
        closed.json()["reason"].as_str().unwrap().contains("closed"),
        "{}",
        closed.body
    );
    app.stop().await;
}
