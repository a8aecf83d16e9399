//! Calls to the upstream provider, by endpoint and outcome.

use super::*;

/// The upstream endpoints the proxy calls (the `endpoint` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamEndpoint {
    Discovery,
    /// The token endpoint, for a code or a refresh.
    Token,
    Userinfo,
    Revocation,
}

impl UpstreamEndpoint {
    const ALL: [UpstreamEndpoint; 4] = [
        UpstreamEndpoint::Discovery,
        UpstreamEndpoint::Token,
        UpstreamEndpoint::Userinfo,
        UpstreamEndpoint::Revocation,
    ];

    fn as_str(self) -> &'static str {
        match self {
            UpstreamEndpoint::Discovery => "discovery",
            UpstreamEndpoint::Token => "token",
            UpstreamEndpoint::Userinfo => "userinfo",
            UpstreamEndpoint::Revocation => "revocation",
        }
    }
}

/// How an upstream call ended (the `outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamOutcome {
    Success,
    /// An OAuth error answer (`invalid_grant`, ...).
    Rejected,
    /// An HTTP error status without an OAuth error.
    Status,
    Timeout,
    Unreachable,
    InvalidResponse,
}

impl UpstreamOutcome {
    const ALL: [UpstreamOutcome; 6] = [
        UpstreamOutcome::Success,
        UpstreamOutcome::Rejected,
        UpstreamOutcome::Status,
        UpstreamOutcome::Timeout,
        UpstreamOutcome::Unreachable,
        UpstreamOutcome::InvalidResponse,
    ];

    fn as_str(self) -> &'static str {
        match self {
            UpstreamOutcome::Success => "success",
            UpstreamOutcome::Rejected => "rejected",
            UpstreamOutcome::Status => "http_error",
            UpstreamOutcome::Timeout => "timeout",
            UpstreamOutcome::Unreachable => "unreachable",
            UpstreamOutcome::InvalidResponse => "invalid_response",
        }
    }
}

/// Calls to the upstream provider, every label combination resolved once.
#[derive(Clone)]
pub struct UpstreamMetrics {
    /// By endpoint, then outcome (the order of their `ALL`).
    calls: Vec<Vec<IntCounter>>,
    duration: Vec<Histogram>,
}

impl std::fmt::Debug for UpstreamMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UpstreamMetrics")
    }
}

impl UpstreamMetrics {
    pub(super) fn new(registry: &Registry) -> UpstreamMetrics {
        let calls = counter_vec(
            registry,
            "upstream_requests_total",
            "Calls to the upstream provider, by endpoint and outcome.",
            &["endpoint", "outcome"],
        );
        let duration = histogram_vec(
            registry,
            "upstream_request_duration_seconds",
            "Time the upstream provider took to answer, by endpoint.",
            &["endpoint"],
            UPSTREAM_BUCKETS,
        );
        UpstreamMetrics {
            calls: UpstreamEndpoint::ALL
                .iter()
                .map(|endpoint| {
                    UpstreamOutcome::ALL
                        .iter()
                        .map(|outcome| calls.with_label_values(&[endpoint.as_str(), outcome.as_str()]))
                        .collect()
                })
                .collect(),
            duration: UpstreamEndpoint::ALL
                .iter()
                .map(|endpoint| duration.with_label_values(&[endpoint.as_str()]))
                .collect(),
        }
    }

    /// A set not registered anywhere (an `Upstream` built outside a proxy).
    pub fn detached() -> UpstreamMetrics {
        UpstreamMetrics::new(&Registry::new())
    }

    pub fn observe(&self, endpoint: UpstreamEndpoint, outcome: UpstreamOutcome, elapsed: Duration) {
        let e = UpstreamEndpoint::ALL.iter().position(|x| *x == endpoint).unwrap_or(0);
        let o = UpstreamOutcome::ALL.iter().position(|x| *x == outcome).unwrap_or(0);
        self.calls[e][o].inc();
        self.duration[e].observe(elapsed.as_secs_f64());
    }
}
