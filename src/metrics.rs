//! Prometheus metrics, one registry per proxy instance (tests run several
//! in one process), served by the admin listener at `GET /metrics`.
//!
//! Label values come from fixed sets only (route patterns of the route
//! table, outcomes, endpoint and operation names, status codes from a fixed
//! list), never from a client id or a path taken from a request. Every name
//! starts with `mcp_oauth_proxy_`.
//!
//! The hot paths (HTTP requests, store operations) use children resolved
//! once where the label values are known in advance (store operations,
//! upstream calls); the figures read from elsewhere (live clients and
//! grants, audit events written and dropped) are set at scrape time
//! ([`Metrics::refresh`]).

use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::audit::{Event, EventKind, Outcome, RevokedBy};

const PREFIX: &str = "mcp_oauth_proxy";

/// Request latencies: half a millisecond to ten seconds.
const REQUEST_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Calls to the upstream provider: network round trips, up to its timeout.
const UPSTREAM_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Store operations: tens of microseconds (a directory-store read) to a
/// second (a Redis timeout, a slow fsync).
const STORE_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Status codes that get a label of their own; others are counted by class
/// (`2xx`, ...). A backend's answers stay within this set.
const STATUS_CODES: &[(u16, &str)] = &[
    (200, "200"),
    (201, "201"),
    (202, "202"),
    (204, "204"),
    (301, "301"),
    (302, "302"),
    (303, "303"),
    (304, "304"),
    (307, "307"),
    (308, "308"),
    (400, "400"),
    (401, "401"),
    (403, "403"),
    (404, "404"),
    (405, "405"),
    (406, "406"),
    (409, "409"),
    (410, "410"),
    (413, "413"),
    (415, "415"),
    (422, "422"),
    (429, "429"),
    (500, "500"),
    (501, "501"),
    (502, "502"),
    (503, "503"),
    (504, "504"),
];

/// The label of an HTTP status: the code itself when it is in the fixed
/// list, else its class.
pub fn status_label(status: u16) -> &'static str {
    if let Some((_, label)) = STATUS_CODES.iter().find(|(code, _)| *code == status) {
        return label;
    }
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        _ => "other",
    }
}

fn name(suffix: &str) -> String {
    format!("{PREFIX}_{suffix}")
}

fn counter(registry: &Registry, suffix: &str, help: &str) -> IntCounter {
    let metric = IntCounter::new(name(suffix), help).expect("a valid metric");
    register(registry, &metric);
    metric
}

fn counter_vec(registry: &Registry, suffix: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name(suffix), help), labels).expect("a valid metric");
    register(registry, &metric);
    metric
}

fn gauge_vec(registry: &Registry, suffix: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name(suffix), help), labels).expect("a valid metric");
    register(registry, &metric);
    metric
}

fn histogram_vec(registry: &Registry, suffix: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    let opts = HistogramOpts::new(name(suffix), help).buckets(buckets.to_vec());
    let metric = HistogramVec::new(opts, labels).expect("a valid metric");
    register(registry, &metric);
    metric
}

fn histogram(registry: &Registry, suffix: &str, help: &str, buckets: &[f64]) -> Histogram {
    let opts = HistogramOpts::new(name(suffix), help).buckets(buckets.to_vec());
    let metric = Histogram::with_opts(opts).expect("a valid metric");
    register(registry, &metric);
    metric
}

/// Registers a metric built here: its name is fixed and unique in this
/// registry, so registration cannot fail but by a programming error.
fn register<C: Collector + Clone + 'static>(registry: &Registry, metric: &C) {
    registry
        .register(Box::new(metric.clone()))
        .expect("each metric is registered once");
}

/// Why an authorization flow failed (the `reason` label).
fn flow_failure(event: &Event) -> Option<&'static str> {
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

fn revoked_by_label(by: Option<RevokedBy>) -> &'static str {
    match by {
        Some(RevokedBy::Client) => "client",
        Some(RevokedBy::Admin) => "admin",
        Some(RevokedBy::ReuseDetection) => "reuse_detection",
        Some(RevokedBy::MaxLifetime) => "max_lifetime",
        None => "unknown",
    }
}

/// What the audit events move.
struct EventMetrics {
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
    fn new(registry: &Registry) -> EventMetrics {
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

    fn observe(&self, event: &Event) {
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

/// Requests answered by the service's listener.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl HttpMetrics {
    /// Counts one answered request: `route` is the matched pattern of the
    /// route table (or `unmatched`), never the request's path.
    pub fn observe(&self, route: &str, status: u16, elapsed: Duration) {
        self.requests.with_label_values(&[route, status_label(status)]).inc();
        self.duration.with_label_values(&[route]).observe(elapsed.as_secs_f64());
    }
}

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
    fn new(registry: &Registry) -> UpstreamMetrics {
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

/// The store operations an instrumented table counts (the `operation`
/// label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOperation {
    Get,
    Put,
    Take,
    Delete,
    CompareAndSwap,
    Touch,
    Purge,
    Count,
    SoonestExpiring,
    Scan,
    PutIndexed,
    IndexScan,
    IndexRemove,
    IndexAdd,
}

impl StoreOperation {
    pub const ALL: [StoreOperation; 14] = [
        StoreOperation::Get,
        StoreOperation::Put,
        StoreOperation::Take,
        StoreOperation::Delete,
        StoreOperation::CompareAndSwap,
        StoreOperation::Touch,
        StoreOperation::Purge,
        StoreOperation::Count,
        StoreOperation::SoonestExpiring,
        StoreOperation::Scan,
        StoreOperation::PutIndexed,
        StoreOperation::IndexScan,
        StoreOperation::IndexRemove,
        StoreOperation::IndexAdd,
    ];

    fn as_str(self) -> &'static str {
        match self {
            StoreOperation::Get => "get",
            StoreOperation::Put => "put",
            StoreOperation::Take => "take",
            StoreOperation::Delete => "delete",
            StoreOperation::CompareAndSwap => "cas",
            StoreOperation::Touch => "touch",
            StoreOperation::Purge => "purge",
            StoreOperation::Count => "count",
            StoreOperation::SoonestExpiring => "soonest_expiring",
            StoreOperation::Scan => "scan",
            StoreOperation::PutIndexed => "put_indexed",
            StoreOperation::IndexScan => "index_scan",
            StoreOperation::IndexRemove => "index_remove",
            StoreOperation::IndexAdd => "index_add",
        }
    }
}

/// One operation on one table: its counters and (for backends that do
/// I/O) its latency histogram, resolved once.
#[derive(Clone)]
pub struct StoreOperationMetrics {
    pub ok: IntCounter,
    pub error: IntCounter,
    pub duration: Option<Histogram>,
}

/// Store operations: the families, from which each table resolves its own
/// children ([`Metrics::store_table`]).
struct StoreMetrics {
    operations: IntCounterVec,
    duration: HistogramVec,
}

/// Live records read at scrape time.
struct Gauges {
    live: IntGaugeVec,
    audit_written: IntCounter,
    audit_dropped: IntCounter,
}

/// What the scrape handler reads from elsewhere before rendering.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    /// Registered clients (`None`: the store did not answer).
    pub clients: Option<usize>,
    /// Live grants.
    pub grants: Option<usize>,
    pub audit_written: u64,
    pub audit_dropped: u64,
}

pub struct Metrics {
    registry: Registry,
    http: HttpMetrics,
    events: EventMetrics,
    upstream: UpstreamMetrics,
    store: StoreMetrics,
    gauges: Gauges,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let build_info = gauge_vec(
            &registry,
            "build_info",
            "The running build: always 1, with the version as a label.",
            &["version"],
        );
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let http = HttpMetrics {
            requests: counter_vec(
                &registry,
                "http_requests_total",
                "HTTP requests answered by the service listener, by route pattern and status.",
                &["route", "status"],
            ),
            duration: histogram_vec(
                &registry,
                "http_request_duration_seconds",
                "Time to the response head, by route pattern.",
                &["route"],
                REQUEST_BUCKETS,
            ),
        };
        let events = EventMetrics::new(&registry);
        let upstream = UpstreamMetrics::new(&registry);
        let store = StoreMetrics {
            operations: counter_vec(
                &registry,
                "store_operations_total",
                "Storage operations, by backend, table, operation and outcome.",
                &["backend", "table", "operation", "outcome"],
            ),
            duration: histogram_vec(
                &registry,
                "store_operation_duration_seconds",
                "Time a storage operation took, by backend and operation (backends that do I/O only).",
                &["backend", "operation"],
                STORE_BUCKETS,
            ),
        };
        let gauges = Gauges {
            live: gauge_vec(
                &registry,
                "live_records",
                "Records held, read at scrape time: registered clients (kind=client) and live grants (kind=grant).",
                &["kind"],
            ),
            audit_written: counter(
                &registry,
                "audit_events_written_total",
                "Audit events written to the sink.",
            ),
            audit_dropped: counter(
                &registry,
                "audit_events_dropped_total",
                "Audit events dropped (queue full or sink failing).",
            ),
        };
        Metrics {
            registry,
            http,
            events,
            upstream,
            store,
            gauges,
        }
    }

    /// Counts what an audit event says (flows, tokens, reuse, gateway).
    pub fn observe_event(&self, event: &Event) {
        self.events.observe(event);
    }

    /// The service listener's request metrics (its middleware holds them).
    pub fn http(&self) -> &HttpMetrics {
        &self.http
    }

    /// The upstream calls' metrics (the upstream client holds them).
    pub fn upstream(&self) -> UpstreamMetrics {
        self.upstream.clone()
    }

    /// The children for every operation on one table of `backend`
    /// (`memory`, `directory`, `redis`), in the order of
    /// [`StoreOperation::ALL`]. `timed`: whether latencies are observed.
    pub fn store_table(&self, backend: &str, table: &str, timed: bool) -> Vec<StoreOperationMetrics> {
        StoreOperation::ALL
            .iter()
            .map(|operation| {
                let op = operation.as_str();
                StoreOperationMetrics {
                    ok: self.store.operations.with_label_values(&[backend, table, op, "ok"]),
                    error: self.store.operations.with_label_values(&[backend, table, op, "error"]),
                    duration: timed.then(|| self.store.duration.with_label_values(&[backend, op])),
                }
            })
            .collect()
    }

    /// Sets what is read at scrape time.
    pub fn refresh(&self, snapshot: &Snapshot) {
        if let Some(clients) = snapshot.clients {
            self.gauges.live.with_label_values(&["client"]).set(clients as i64);
        }
        if let Some(grants) = snapshot.grants {
            self.gauges.live.with_label_values(&["grant"]).set(grants as i64);
        }
        catch_up(&self.gauges.audit_written, snapshot.audit_written);
        catch_up(&self.gauges.audit_dropped, snapshot.audit_dropped);
    }

    /// The exposition in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// Moves a counter up to a total kept elsewhere (counters never go down).
fn catch_up(counter: &IntCounter, total: u64) {
    let current = counter.get();
    if total > current {
        counter.inc_by(total - current);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

#[cfg(test)]
mod tests;
