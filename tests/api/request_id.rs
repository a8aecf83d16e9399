//! `X-Request-Id` on every response of both listeners (an incoming one kept
//! only from a trusted proxy), in the access log, and the JSON log format
//! (`OAUTH_PROXY_LOG_FORMAT=json`).

use std::process::Stdio;
use std::time::{Duration, Instant};

use awc::http::StatusCode;
use serde_json::Value;

use crate::helpers::{free_port, Answer, TestApp};
use crate::mock_upstream::MockUpstreamConfig;
use crate::service::service_on;

/// The service process, killed (by its PID) and reaped when dropped, also
/// when an assertion fails first.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn request_id(answer: &Answer) -> String {
    answer
        .header("x-request-id")
        .unwrap_or_else(|| panic!("no X-Request-Id on a {} answer: {}", answer.status, answer.body))
}

/// A GET with an `X-Request-Id` of the caller's.
async fn get_with_id(address: &str, path: &str, id: &str) -> (StatusCode, Option<String>) {
    let response = awc::Client::default()
        .get(format!("{address}{path}"))
        .insert_header(("X-Request-Id", id))
        .send()
        .await
        .unwrap();
    let echoed = response
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_string());
    (response.status(), echoed)
}

#[actix_web::test]
async fn every_response_of_both_listeners_carries_a_request_id_errors_and_404s_included() {
    let app = TestApp::spawn().await;
    let ok = app.get("/healthz").await;
    assert_eq!(ok.status, 200);
    let missing = app.get("/no/such/endpoint").await;
    assert_eq!(missing.status, 404);
    let oauth_error = app
        .post_form("/token", &[("grant_type", "authorization_code")], None)
        .await;
    assert!(oauth_error.status.is_client_error(), "{}", oauth_error.body);
    assert!(oauth_error.json()["error"].is_string(), "{}", oauth_error.body);
    let wrong_method = app.get("/token").await;
    assert_eq!(wrong_method.status, 405);
    let scrape = app.admin.get("/metrics").await;
    assert_eq!(scrape.status, 200);
    let admin_missing = app.admin.get("/nothing-here").await;
    assert_eq!(admin_missing.status, 404);

    let ids: Vec<String> = [&ok, &missing, &oauth_error, &wrong_method, &scrape, &admin_missing]
        .iter()
        .map(|answer| request_id(answer))
        .collect();
    for id in &ids {
        assert!(id.len() >= 16, "a random id: {id}");
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "each request has its own id: {ids:?}");
    app.stop().await;
}

#[actix_web::test]
async fn an_incoming_request_id_from_an_untrusted_peer_is_replaced() {
    let app = TestApp::spawn().await;
    for address in [&app.address, &app.admin.address] {
        let (status, echoed) = get_with_id(address, "/healthz", "caller-chosen-id-42").await;
        assert!(status == 200 || status == 404, "{status}");
        let echoed = echoed.expect("an X-Request-Id");
        assert_ne!(echoed, "caller-chosen-id-42", "{address}");
    }
    app.stop().await;
}

#[actix_web::test]
async fn an_incoming_request_id_from_a_trusted_proxy_is_kept_and_a_malformed_one_replaced() {
    let app = TestApp::spawn_with(
        &[("OAUTH_PROXY_TRUSTED_PROXIES", "127.0.0.1")],
        MockUpstreamConfig::default(),
    )
    .await;
    let (status, echoed) = get_with_id(&app.address, "/healthz", "edge-7f3a-request").await;
    assert_eq!(status, 200);
    assert_eq!(echoed.as_deref(), Some("edge-7f3a-request"));
    let (status, echoed) = get_with_id(&app.address, "/missing", "edge-404-request").await;
    assert_eq!(status, 404);
    assert_eq!(echoed.as_deref(), Some("edge-404-request"));
    let (_, echoed) = get_with_id(&app.admin.address, "/metrics", "edge-admin-request").await;
    assert_eq!(echoed.as_deref(), Some("edge-admin-request"));
    // Not a sane token (a space, a quote): a new id instead.
    let (_, echoed) = get_with_id(&app.address, "/healthz", "bad id\"").await;
    let echoed = echoed.expect("an X-Request-Id");
    assert!(!echoed.contains(' '), "{echoed}");
    app.stop().await;
}

/// The service binary with `OAUTH_PROXY_LOG_FORMAT=json`: every stderr line
/// is one JSON object with a time, a level and a message, and the access
/// log line holds the request's id (the one its response carried).
#[actix_web::test]
async fn the_json_log_is_one_object_per_line_and_the_access_log_holds_the_request_id() {
    let port = free_port();
    let log_dir = tempfile::tempdir().unwrap();
    let log_path = log_dir.path().join("service.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut command = service_on(port);
    command
        .env("OAUTH_PROXY_LOG_FORMAT", "json")
        .env("OAUTH_PROXY_AUDIT_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    let child = Stopped(command.spawn().unwrap());
    let client = awc::Client::default();
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the service did not come up"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    let response = client
        .get(format!("{base}/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let id = response
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let mut logged = String::new();
    for _ in 0..100 {
        logged = std::fs::read_to_string(&log_path).unwrap();
        if logged.contains("/.well-known/oauth-authorization-server") {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    drop(child);
    assert!(
        logged.lines().count() >= 2,
        "a start-up line and an access line: {logged}"
    );
    let lines: Vec<Value> = logged
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not one JSON object: {line}")))
        .collect();
    for line in &lines {
        assert!(line["level"].is_string(), "{line}");
        assert!(line["message"].is_string(), "{line}");
        assert!(line["target"].is_string(), "{line}");
        let time = line["time"].as_str().unwrap_or_else(|| panic!("no time: {line}"));
        assert!(
            time.ends_with('Z') && time.contains('.'),
            "UTC with milliseconds: {time}"
        );
    }
    let access = lines
        .iter()
        .find(|line| {
            line["message"]
                .as_str()
                .unwrap()
                .contains("/.well-known/oauth-authorization-server")
        })
        .unwrap_or_else(|| panic!("no access log line: {logged}"));
    assert_eq!(access["level"], "INFO");
    assert!(
        access["message"]
            .as_str()
            .unwrap()
            .contains(&format!("request_id={id}")),
        "{access}"
    );
}

/// The text log's access line holds the request id too.
#[actix_web::test]
async fn the_text_access_log_holds_the_request_id() {
    let port = free_port();
    let log_dir = tempfile::tempdir().unwrap();
    let log_path = log_dir.path().join("service.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut command = service_on(port);
    command
        .env("OAUTH_PROXY_AUDIT_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    let child = Stopped(command.spawn().unwrap());
    let client = awc::Client::default();
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the service did not come up"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    let response = client.get(format!("{base}/jwks.json")).send().await.unwrap();
    let id = response
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let mut logged = String::new();
    for _ in 0..100 {
        logged = std::fs::read_to_string(&log_path).unwrap();
        if logged.contains(&id) {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    drop(child);
    let line = logged
        .lines()
        .find(|line| line.contains("/jwks.json"))
        .unwrap_or_else(|| panic!("no access log line: {logged}"));
    assert!(line.contains(&format!("request_id={id}")), "{line}");
}
