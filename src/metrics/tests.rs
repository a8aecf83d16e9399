use super::*;
use crate::audit::{McpCall, RequestContext};

/// The value of one sample line (`name{labels} value`) of the exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().unwrap())
    })
}

fn event(kind: EventKind, outcome: Outcome) -> Event {
    Event::new(kind, outcome, &RequestContext::default())
}

fn mcp(status: u16, duration_ms: u64, bytes_in: u64, bytes_out: u64) -> McpCall {
    McpCall {
        method: Some("tools/call".into()),
        name: Some("a-tool-name-from-the-request".into()),
        status,
        duration_ms,
        bytes_in,
        bytes_out,
    }
}

#[test]
fn a_flow_of_events_moves_the_flow_and_token_counters() {
    let metrics = Metrics::new();
    metrics.observe_event(&event(EventKind::AuthorizationStarted, Outcome::Success));
    metrics.observe_event(&event(EventKind::AuthorizationStarted, Outcome::Success));
    metrics.observe_event(&event(EventKind::CodeIssued, Outcome::Success));
    metrics.observe_event(&event(EventKind::TokensIssued, Outcome::Success));
    metrics.observe_event(&event(EventKind::TokensRefreshed, Outcome::Success));
    let mut replay = event(EventKind::TokensRefreshed, Outcome::Success);
    replay.grace_replay = Some(true);
    metrics.observe_event(&replay);
    // A failed token request issues nothing.
    metrics.observe_event(&event(EventKind::TokensIssued, Outcome::Failure));
    let text = metrics.render();
    assert_eq!(sample(&text, "mcp_oauth_proxy_authorizations_started_total"), Some(2.0));
    assert_eq!(
        sample(&text, "mcp_oauth_proxy_authorizations_completed_total"),
        Some(1.0)
    );
    assert_eq!(sample(&text, "mcp_oauth_proxy_tokens_issued_total"), Some(1.0));
    assert_eq!(sample(&text, "mcp_oauth_proxy_tokens_refreshed_total"), Some(2.0));
    assert_eq!(sample(&text, "mcp_oauth_proxy_refresh_grace_replays_total"), Some(1.0));
    assert_eq!(
        sample(
            &text,
            "mcp_oauth_proxy_audit_events_total{event=\"token.issued\",outcome=\"failure\"}"
        ),
        Some(1.0)
    );
}

#[test]
fn failed_flows_are_counted_by_a_reason_from_a_fixed_set() {
    let metrics = Metrics::new();
    metrics.observe_event(&event(EventKind::ConsentDenied, Outcome::Success));
    let upstream_failure = event(EventKind::UpstreamSignIn, Outcome::Failure).reason("access_denied: user said no");
    metrics.observe_event(&upstream_failure);
    metrics.observe_event(&event(EventKind::UpstreamSignIn, Outcome::Refused));
    metrics.observe_event(&event(EventKind::UpstreamSignIn, Outcome::Success));
    let text = metrics.render();
    let failed = |reason: &str| {
        sample(
            &text,
            &format!("mcp_oauth_proxy_authorizations_failed_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(failed("consent_denied"), Some(1.0));
    assert_eq!(failed("upstream_error"), Some(1.0));
    assert_eq!(failed("user_not_allowed"), Some(1.0));
    // The upstream's own words never become a label.
    assert!(!text.contains("user said no"), "{text}");
}

#[test]
fn revocations_reuse_and_replay_are_counted_by_who_revoked() {
    let metrics = Metrics::new();
    metrics.observe_event(&event(EventKind::TokenRevoked, Outcome::Success).revoked_by(RevokedBy::Client));
    metrics.observe_event(&event(EventKind::GrantRevoked, Outcome::Success).revoked_by(RevokedBy::Admin));
    metrics.observe_event(&event(EventKind::GrantRevoked, Outcome::Success).revoked_by(RevokedBy::ReuseDetection));
    metrics.observe_event(&event(EventKind::RefreshReuseDetected, Outcome::Refused));
    metrics.observe_event(&event(EventKind::CodeReplayDetected, Outcome::Refused));
    let text = metrics.render();
    assert_eq!(
        sample(&text, "mcp_oauth_proxy_revocations_total{by=\"client\",what=\"token\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "mcp_oauth_proxy_revocations_total{by=\"admin\",what=\"grant\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "mcp_oauth_proxy_revocations_total{by=\"reuse_detection\",what=\"grant\"}"
        ),
        Some(1.0)
    );
    assert_eq!(sample(&text, "mcp_oauth_proxy_refresh_reuse_detected_total"), Some(1.0));
    assert_eq!(sample(&text, "mcp_oauth_proxy_code_replay_detected_total"), Some(1.0));
}

#[test]
fn gateway_requests_are_counted_by_status_with_latency_and_bytes() {
    let metrics = Metrics::new();
    let mut ok = event(EventKind::McpRequest, Outcome::Success);
    ok.mcp = Some(mcp(200, 30, 120, 4000));
    metrics.observe_event(&ok);
    let mut teapot = event(EventKind::McpRequest, Outcome::Failure);
    teapot.mcp = Some(mcp(418, 2, 80, 10));
    metrics.observe_event(&teapot);
    let text = metrics.render();
    assert_eq!(
        sample(&text, "mcp_oauth_proxy_gateway_requests_total{status=\"200\"}"),
        Some(1.0)
    );
    // A status outside the fixed list is counted by its class.
    assert_eq!(
        sample(&text, "mcp_oauth_proxy_gateway_requests_total{status=\"4xx\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "mcp_oauth_proxy_gateway_request_duration_seconds_count"),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            "mcp_oauth_proxy_gateway_request_duration_seconds_bucket{le=\"0.025\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "mcp_oauth_proxy_gateway_request_bytes_total"),
        Some(200.0)
    );
    assert_eq!(
        sample(&text, "mcp_oauth_proxy_gateway_response_bytes_total"),
        Some(4010.0)
    );
    // Tool names from the request never become labels.
    assert!(!text.contains("a-tool-name-from-the-request"), "{text}");
}

#[test]
fn refusals_are_counted_by_status() {
    let metrics = Metrics::new();
    metrics.observe_event(&event(EventKind::RequestRefused, Outcome::Refused).status(401));
    metrics.observe_event(&event(EventKind::RequestRefused, Outcome::Refused).status(401));
    metrics.observe_event(&event(EventKind::RequestRefused, Outcome::Refused).status(403));
    let text = metrics.render();
    let refused = |status: &str| {
        sample(
            &text,
            &format!("mcp_oauth_proxy_requests_refused_total{{status=\"{status}\"}}"),
        )
    };
    assert_eq!(refused("401"), Some(2.0));
    assert_eq!(refused("403"), Some(1.0));
}

#[test]
fn figures_read_at_scrape_time_are_set_and_counters_never_go_down() {
    let metrics = Metrics::new();
    metrics.refresh(&Snapshot {
        clients: Some(3),
        document_clients: Some(2),
        grants: Some(7),
        audit_written: 10,
        audit_dropped: 1,
    });
    metrics.refresh(&Snapshot {
        clients: None,
        document_clients: None,
        grants: Some(5),
        audit_written: 12,
        audit_dropped: 0,
    });
    let text = metrics.render();
    assert_eq!(
        sample(&text, "mcp_oauth_proxy_live_records{kind=\"client\"}"),
        Some(3.0)
    );
    assert_eq!(sample(&text, "mcp_oauth_proxy_live_records{kind=\"grant\"}"), Some(5.0));
    assert_eq!(
        sample(&text, "mcp_oauth_proxy_live_records{kind=\"document_client\"}"),
        Some(2.0)
    );
    assert_eq!(sample(&text, "mcp_oauth_proxy_audit_events_written_total"), Some(12.0));
    assert_eq!(sample(&text, "mcp_oauth_proxy_audit_events_dropped_total"), Some(1.0));
}

#[test]
fn the_build_version_is_exposed() {
    let text = Metrics::new().render();
    let series = format!(
        "mcp_oauth_proxy_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(sample(&text, &series), Some(1.0));
}

#[test]
fn statuses_outside_the_fixed_list_are_labelled_by_class() {
    assert_eq!(status_label(200), "200");
    assert_eq!(status_label(503), "503");
    assert_eq!(status_label(299), "2xx");
    assert_eq!(status_label(599), "5xx");
    assert_eq!(status_label(999), "other");
    assert_eq!(status_label(0), "other");
}

#[test]
fn each_proxy_instance_has_a_registry_of_its_own() {
    let (one, two) = (Metrics::new(), Metrics::new());
    one.observe_event(&event(EventKind::TokensIssued, Outcome::Success));
    assert_eq!(sample(&one.render(), "mcp_oauth_proxy_tokens_issued_total"), Some(1.0));
    assert_eq!(sample(&two.render(), "mcp_oauth_proxy_tokens_issued_total"), Some(0.0));
}
