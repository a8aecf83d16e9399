//! Readiness (`GET /readyz`): whether this instance can serve now, as
//! opposed to liveness (`/healthz`, the process answers).
//!
//! Ready when the store answers (a Redis `PING`; the directory store is
//! open) and, when `OAUTH_PROXY_AUDIT_REQUIRED` is true, the audit trail is
//! being written (requests fail closed otherwise). The upstream's
//! discovery document needs no check here: the proxy does not start
//! without it.

use std::time::Duration;

use super::OAuthProxy;

/// Longest a readiness check waits for the store.
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the instance is not ready (the `reason` of the 503).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("the store does not answer: {0}")]
    Store(String),
    #[error("the audit trail cannot be written and OAUTH_PROXY_AUDIT_REQUIRED is true")]
    Audit,
}

impl OAuthProxy {
    /// Checks what serving depends on; `Err` names the first that fails.
    pub async fn readiness(&self) -> Result<(), NotReady> {
        match tokio::time::timeout(STORE_CHECK_TIMEOUT, self.inner.backend.ping()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(NotReady::Store(e.to_string())),
            Err(_) => {
                return Err(NotReady::Store(format!(
                    "no answer within {}s",
                    STORE_CHECK_TIMEOUT.as_secs()
                )))
            }
        }
        if self.config().operations.audit_required && !self.audit().healthy() {
            return Err(NotReady::Audit);
        }
        Ok(())
    }
}
