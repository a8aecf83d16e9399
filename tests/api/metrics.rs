//! `GET /metrics` on the admin listener: a valid Prometheus exposition
//! (`promtool check metrics`, from the Debian package `prometheus`), whose
//! counters move with a flow, with labels from fixed sets only.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::helpers::{query_param, Pkce, TestApp};
use crate::mock_upstream::TokenBehavior;

/// The value of one series (`name{labels}`) in an exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().unwrap())
    })
}

/// Runs `promtool check metrics` on an exposition (its stdin); answers its
/// exit status and output. Never skipped: without promtool the test fails.
fn promtool_check(exposition: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "promtool is needed ({e}): install the Debian package `prometheus` \
                 (scripts/test.sh does), then run again"
            )
        });
    child.stdin.take().unwrap().write_all(exposition.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said)
}

#[actix_web::test]
async fn a_scrape_after_a_full_flow_passes_promtool_and_its_counters_moved_with_the_flow() {
    let app = TestApp::spawn().await;
    let before = app.admin.get("/metrics").await.body;
    let client = app.register_confidential().await;
    let (_, refresh_token) = app.full_flow_tokens(&client).await;
    let refreshed = app.refresh(&client, &refresh_token).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    let scrape = app.admin.get("/metrics").await;
    assert_eq!(scrape.status, 200);
    let text = scrape.body;

    let (ok, said) = promtool_check(&text);
    assert!(ok, "promtool check metrics failed:\n{said}\n{text}");

    let value = |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    // HTTP requests by route pattern and status.
    assert_eq!(
        value("mcp_oauth_proxy_http_requests_total{route=\"/register\",status=\"201\"}"),
        1.0
    );
    assert_eq!(
        value("mcp_oauth_proxy_http_requests_total{route=\"/authorize\",status=\"200\"}"),
        1.0
    );
    assert_eq!(
        value("mcp_oauth_proxy_http_requests_total{route=\"/token\",status=\"200\"}"),
        2.0
    );
    assert_eq!(
        value("mcp_oauth_proxy_http_request_duration_seconds_count{route=\"/token\"}"),
        2.0
    );
    // Upstream calls by endpoint and outcome: the code exchange and the
    // upstream refresh (when the refresh needed one) at the token endpoint.
    assert!(value("mcp_oauth_proxy_upstream_requests_total{endpoint=\"token\",outcome=\"success\"}") >= 1.0);
    assert!(value("mcp_oauth_proxy_upstream_request_duration_seconds_count{endpoint=\"token\"}") >= 1.0);
    // Store operations by backend, table, operation and outcome.
    for (table, operation) in [
        ("client", "put"),
        ("transaction", "put"),
        ("code", "cas"),
        ("grant", "get"),
    ] {
        let series = format!(
            "mcp_oauth_proxy_store_operations_total{{backend=\"memory\",operation=\"{operation}\",outcome=\"ok\",table=\"{table}\"}}"
        );
        assert!(value(&series) >= 1.0, "{series}");
    }
    // From the audit events of the flow.
    assert_eq!(value("mcp_oauth_proxy_authorizations_started_total"), 1.0);
    assert_eq!(value("mcp_oauth_proxy_authorizations_completed_total"), 1.0);
    assert_eq!(value("mcp_oauth_proxy_tokens_issued_total"), 1.0);
    assert_eq!(value("mcp_oauth_proxy_tokens_refreshed_total"), 1.0);
    assert_eq!(
        value("mcp_oauth_proxy_audit_events_total{event=\"client.registered\",outcome=\"success\"}"),
        1.0
    );
    // Read at scrape time: one client, one grant.
    assert_eq!(value("mcp_oauth_proxy_live_records{kind=\"client\"}"), 1.0);
    assert_eq!(value("mcp_oauth_proxy_live_records{kind=\"grant\"}"), 1.0);
    assert_eq!(
        value(&format!(
            "mcp_oauth_proxy_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    // None of it was there before the flow.
    assert_eq!(
        sample(
            &before,
            "mcp_oauth_proxy_http_requests_total{route=\"/token\",status=\"200\"}"
        ),
        None
    );
    // Nothing taken from a request becomes a label: no client id.
    assert!(!text.contains(&client.client_id), "a client id in the metrics");
    app.stop().await;
}

#[actix_web::test]
async fn requests_to_unknown_paths_are_counted_as_unmatched_never_by_their_path() {
    let app = TestApp::spawn().await;
    let answer = app.get("/some/probe/path-5f1c?x=1").await;
    assert_eq!(answer.status, 404);
    let text = app.admin.get("/metrics").await.body;
    assert_eq!(
        sample(
            &text,
            "mcp_oauth_proxy_http_requests_total{route=\"unmatched\",status=\"404\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert!(!text.contains("path-5f1c"), "{text}");
    // The admin listener's own requests are not counted with the service's.
    assert!(!text.contains("route=\"/metrics\""), "{text}");
    app.stop().await;
}

#[actix_web::test]
async fn upstream_calls_are_counted_by_how_they_failed() {
    let app = TestApp::spawn().await;
    let client = app.register_confidential().await;
    for behavior in [TokenBehavior::ServerError, TokenBehavior::NonJson] {
        app.upstream.set_token_behavior(behavior);
        let back = app.authorize_to_client(&client, &Pkce::new(), "st").await;
        assert_eq!(query_param(&back, "error").as_deref(), Some("server_error"), "{back}");
    }
    let text = app.admin.get("/metrics").await.body;
    for outcome in ["http_error", "invalid_response"] {
        let series = format!("mcp_oauth_proxy_upstream_requests_total{{endpoint=\"token\",outcome=\"{outcome}\"}}");
        assert_eq!(sample(&text, &series), Some(1.0), "{series} in:\n{text}");
    }
    assert_eq!(
        sample(
            &text,
            "mcp_oauth_proxy_upstream_requests_total{endpoint=\"token\",outcome=\"success\"}"
        ),
        Some(0.0)
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_refused_guarded_request_moves_the_refusal_and_route_counters() {
    let app = TestApp::spawn().await;
    let refused = app
        .mcp_request(
            awc::http::Method::POST,
            "/mcp",
            Some("not-a-token"),
            &[],
            Some(serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"})),
        )
        .await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    let text = app.admin.get("/metrics").await.body;
    assert_eq!(
        sample(&text, "mcp_oauth_proxy_requests_refused_total{status=\"401\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "mcp_oauth_proxy_http_requests_total{route=\"/mcp\",status=\"401\"}"
        ),
        Some(1.0),
        "{text}"
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_forwarded_guarded_request_is_counted_by_status_with_latency_and_bytes() {
    let backend = crate::backend_double::BackendDouble::start().await;
    let app = TestApp::spawn_with(
        &[("OAUTH_PROXY_MCP_UPSTREAM_URL", backend.url.as_str())],
        crate::mock_upstream::MockUpstreamConfig::default(),
    )
    .await;
    let client = app.register_public().await;
    let (access, _) = app.full_flow_tokens(&client).await;
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let answer = app
        .mcp_request(awc::http::Method::POST, "/mcp", Some(&access), &[], Some(body.clone()))
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // The event is recorded when the answer's body has been sent whole.
    let mut text = String::new();
    for _ in 0..50 {
        text = app.admin.get("/metrics").await.body;
        if sample(&text, "mcp_oauth_proxy_gateway_requests_total{status=\"200\"}") == Some(1.0) {
            break;
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        sample(&text, "mcp_oauth_proxy_gateway_requests_total{status=\"200\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "mcp_oauth_proxy_gateway_request_duration_seconds_count"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "mcp_oauth_proxy_gateway_request_bytes_total"),
        Some(serde_json::to_vec(&body).unwrap().len() as f64)
    );
    assert_eq!(
        sample(&text, "mcp_oauth_proxy_gateway_response_bytes_total"),
        Some(answer.body.len() as f64)
    );
    app.stop().await;
    backend.stop().await;
}

#[actix_web::test]
async fn document_clients_are_counted_apart_from_registrations_and_their_urls_are_no_label() {
    let host = crate::document_host::DocumentHost::start().await;
    let app = host.proxy(&[]).await;
    let client = host.public_client(
        "/oauth/metrics-client.json",
        "Metrics Client",
        crate::helpers::REDIRECT_URI,
    );
    app.full_flow(&client).await;
    let text = app.admin.get("/metrics").await.body;
    assert_eq!(
        sample(&text, "mcp_oauth_proxy_live_records{kind=\"document_client\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "mcp_oauth_proxy_live_records{kind=\"client\"}"),
        Some(0.0)
    );
    assert!(!text.contains(&client.client_id), "a document URL in the metrics");
    app.stop().await;
    host.stop().await;
}
