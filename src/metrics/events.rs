//! What the audit events move: flows, tokens, revocations, reuse, the
//! gateway and refusals.

use super::*;

/// Why an authorization flow failed (the `reason` label).
pub(super) fn flow_failure(event: &Event) -> Option<&'static str> {
    match (event.event, event.outcome) {
        (EventKind::ConsentDenied, _) => Some("consent_denied"),
        (EventKind::UpstreamSignIn, Outcome::Failure) => Some("upstream_error"),
        // The upstream signed the user in, but the proxy's policy
        // (OAUTH_PROXY_ALLOWED_USERS) refused them.
        (EventKind::UpstreamSignIn, Outcome::Refused) => Some("user_not_allowed"),
        (EventKind::AuthorizationStarted, Outcome::Refused) => Some("refused"),
        (EventKind::AuthorizationStarted, Outcome::Failure) | (EventKind::CodeIssued, Outcome::Failure) => {
            Some("error")
        }
        _ => None,
    }
}

pub(super) fn revoked_by_label(by: Option<RevokedBy>) -> &'static str {
    match by {
        Some(RevokedBy::Client) => "client",
        Some(RevokedBy::Admin) => "admin",
        Some(RevokedBy::ReuseDetection) => "reuse_detection",
        Some(RevokedBy::MaxLifetime) => "max_lifetime",
        None => "unknown",
    }
}

/// What the audit events move.
pub(super) struct EventMetrics {
    events: IntCounterVec,
    authorizations_started: IntCounter,
    authorizations_completed: IntCounter,
    authorizations_failed: IntCounterVec,
    tokens_issued: IntCounter,
    tokens_refreshed: IntCounter,
    refresh_grace_replays: IntCounter,
    revocations: IntCounterVec,
    refresh_reuse_detected: IntCounter,
    code_replay_detected: IntCounter,
    upstream_token_refreshes: IntCounterVec,
    gateway_requests: IntCounterVec,
    gateway_duration: Histogram,
    gateway_bytes_in: IntCounter,
    gateway_bytes_out: IntCounter,
    refused: IntCounterVec,
}

impl EventMetrics {
    pub(super) fn new(registry: &Registry) -> EventMetrics {
        EventMetrics {
            events: counter_vec(
                registry,
                "audit_events_total",
                "Audit events recorded, by event and outcome.",
                &["event", "outcome"],
            ),
            authorizations_started: counter(
                registry,
                "authorizations_started_total",
                "Authorization flows started at /authorize.",
            ),
            authorizations_completed: counter(
                registry,
                "authorizations_completed_total",
                "Authorization flows completed (a code issued to the client).",
            ),
            authorizations_failed: counter_vec(
                registry,
                "authorizations_failed_total",
                "Authorization flows that failed, by reason.",
                &["reason"],
            ),
            tokens_issued: counter(
                registry,
                "tokens_issued_total",
                "Token responses to an authorization code.",
            ),
            tokens_refreshed: counter(
                registry,
                "tokens_refreshed_total",
                "Token responses to a refresh token.",
            ),
            refresh_grace_replays: counter(
                registry,
                "refresh_grace_replays_total",
                "Refreshes answered again from the rotation grace window.",
            ),
            revocations: counter_vec(
                registry,
                "revocations_total",
                "Access tokens (what=token) and whole grants (what=grant) revoked, by who revoked them.",
                &["what", "by"],
            ),
            refresh_reuse_detected: counter(
                registry,
                "refresh_reuse_detected_total",
                "Rotated-out refresh tokens used again (their grant revoked).",
            ),
            code_replay_detected: counter(
                registry,
                "code_replay_detected_total",
                "Authorization codes presented again (their grant revoked).",
            ),
            upstream_token_refreshes: counter_vec(
                registry,
                "upstream_token_refreshes_total",
                "Upstream access tokens refreshed, by outcome.",
                &["outcome"],
            ),
            gateway_requests: counter_vec(
                registry,
                "gateway_requests_total",
                "Guarded MCP requests forwarded, by the status answered.",
                &["status"],
            ),
            gateway_duration: histogram(
                registry,
                "gateway_request_duration_seconds",
                "Time to answer a guarded MCP request.",
                REQUEST_BUCKETS,
            ),
            gateway_bytes_in: counter(
                registry,
                "gateway_request_bytes_total",
                "Bytes of guarded MCP request bodies.",
            ),
            gateway_bytes_out: counter(
                registry,
                "gateway_response_bytes_total",
                "Bytes of guarded MCP response bodies.",
            ),
            refused: counter_vec(
                registry,
                "requests_refused_total",
                "Requests refused at the gateway, /token or /revoke (request.refused events), by status; \
                 mcp_oauth_proxy_http_requests_total tells the routes apart.",
                &["status"],
            ),
        }
    }

    pub(super) fn observe(&self, event: &Event) {
        self.events
            .with_label_values(&[event.event.as_str(), event.outcome.as_str()])
            .inc();
        if let Some(reason) = flow_failure(event) {
            self.authorizations_failed.with_label_values(&[reason]).inc();
        }
        let success = event.outcome == Outcome::Success;
        match event.event {
            EventKind::AuthorizationStarted if success => self.authorizations_started.inc(),
            EventKind::CodeIssued if success => self.authorizations_completed.inc(),
            EventKind::TokensIssued if success => self.tokens_issued.inc(),
            EventKind::TokensRefreshed if success => {
                self.tokens_refreshed.inc();
                if event.grace_replay == Some(true) {
                    self.refresh_grace_replays.inc();
                }
            }
            EventKind::TokenRevoked if success => self
                .revocations
                .with_label_values(&["token", revoked_by_label(event.revoked_by)])
                .inc(),
            EventKind::GrantRevoked if success => self
                .revocations
                .with_label_values(&["grant", revoked_by_label(event.revoked_by)])
                .inc(),
            EventKind::RefreshReuseDetected => self.refresh_reuse_detected.inc(),
            EventKind::CodeReplayDetected => self.code_replay_detected.inc(),
            EventKind::UpstreamTokenRefreshed => self
                .upstream_token_refreshes
                .with_label_values(&[event.outcome.as_str()])
                .inc(),
            EventKind::McpRequest => {
                if let Some(call) = &event.mcp {
                    self.gateway_requests
                        .with_label_values(&[status_label(call.status)])
                        .inc();
                    self.gateway_duration.observe(call.duration_ms as f64 / 1000.0);
                    self.gateway_bytes_in.inc_by(call.bytes_in);
                    self.gateway_bytes_out.inc_by(call.bytes_out);
                }
            }
            EventKind::RequestRefused => {
                // The event does not say where it was refused: the HTTP
                // request metrics count refusals by route.
                let status = event.status.or(event.mcp.as_ref().map(|call| call.status));
                let status = status.map_or("unknown", status_label);
                self.refused.with_label_values(&[status]).inc();
            }
            _ => {}
        }
    }
}
