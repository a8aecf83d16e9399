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

mod events;
mod store;
mod upstream;

#[cfg(test)]
mod tests;

use events::EventMetrics;
use store::StoreMetrics;
pub use store::{StoreOperation, StoreOperationMetrics};
pub use upstream::{UpstreamEndpoint, UpstreamMetrics, UpstreamOutcome};

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
    /// Document clients listed (Client ID Metadata Documents).
    pub document_clients: Option<usize>,
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
                "Records held, read at scrape time: registered clients (kind=client), listed document clients (kind=document_client) and live grants (kind=grant).",
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
        if let Some(documents) = snapshot.document_clients {
            self.gauges
                .live
                .with_label_values(&["document_client"])
                .set(documents as i64);
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
