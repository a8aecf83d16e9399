//! What an audit event says. The writer adds the time, the instance id and
//! the hash chain; everything else comes from the code that records it.
//!
//! An event never holds a token, code, secret, cookie or PKCE verifier:
//! only identifiers (client id, grant id, subject) and outcomes.

use serde::Serialize;

/// Every kind of event, by the name it has in the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum EventKind {
    #[serde(rename = "client.registered")]
    ClientRegistered,
    #[serde(rename = "client.expired")]
    ClientExpired,
    #[serde(rename = "client.deleted")]
    ClientDeleted,
    #[serde(rename = "authorization.started")]
    AuthorizationStarted,
    #[serde(rename = "consent.approved")]
    ConsentApproved,
    #[serde(rename = "consent.denied")]
    ConsentDenied,
    /// The upstream sign-in finished (outcome success) or failed (failure,
    /// with the upstream's error as the reason).
    #[serde(rename = "upstream.sign_in")]
    UpstreamSignIn,
    #[serde(rename = "code.issued")]
    CodeIssued,
    #[serde(rename = "code.redeemed")]
    CodeRedeemed,
    /// A code presented again: its grant is revoked.
    #[serde(rename = "code.replay_detected")]
    CodeReplayDetected,
    #[serde(rename = "token.issued")]
    TokensIssued,
    #[serde(rename = "token.refreshed")]
    TokensRefreshed,
    /// A rotated-out refresh token used again: its family is revoked.
    #[serde(rename = "token.refresh_reuse_detected")]
    RefreshReuseDetected,
    /// One access token revoked (RFC 7009).
    #[serde(rename = "token.revoked")]
    TokenRevoked,
    /// A whole grant revoked, with [`Event::revoked_by`].
    #[serde(rename = "grant.revoked")]
    GrantRevoked,
    /// The upstream access token refreshed (success) or the refresh refused.
    #[serde(rename = "upstream.token_refreshed")]
    UpstreamTokenRefreshed,
    /// A request the gateway forwarded to the MCP server.
    #[serde(rename = "mcp.request")]
    McpRequest,
    /// A request refused at the gateway or at `/token` (401/403).
    #[serde(rename = "request.refused")]
    RequestRefused,
    /// The service started (the first event of each run).
    #[serde(rename = "service.started")]
    ServiceStarted,
    /// The service is stopping (the last event of a clean stop).
    #[serde(rename = "service.stopped")]
    ServiceStopped,
}

impl EventKind {
    /// The event's name in the log (and its metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ClientRegistered => "client.registered",
            EventKind::ClientExpired => "client.expired",
            EventKind::ClientDeleted => "client.deleted",
            EventKind::AuthorizationStarted => "authorization.started",
            EventKind::ConsentApproved => "consent.approved",
            EventKind::ConsentDenied => "consent.denied",
            EventKind::UpstreamSignIn => "upstream.sign_in",
            EventKind::CodeIssued => "code.issued",
            EventKind::CodeRedeemed => "code.redeemed",
            EventKind::CodeReplayDetected => "code.replay_detected",
            EventKind::TokensIssued => "token.issued",
            EventKind::TokensRefreshed => "token.refreshed",
            EventKind::RefreshReuseDetected => "token.refresh_reuse_detected",
            EventKind::TokenRevoked => "token.revoked",
            EventKind::GrantRevoked => "grant.revoked",
            EventKind::UpstreamTokenRefreshed => "upstream.token_refreshed",
            EventKind::McpRequest => "mcp.request",
            EventKind::RequestRefused => "request.refused",
            EventKind::ServiceStarted => "service.started",
            EventKind::ServiceStopped => "service.stopped",
        }
    }
}

/// How it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
    /// Refused by the proxy (a bad credential, a policy).
    Refused,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Refused => "refused",
        }
    }
}

/// Who revoked a grant or token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokedBy {
    /// The client, at `/revoke`.
    Client,
    /// An operator, through the admin API.
    Admin,
    /// A refresh token or code used twice.
    ReuseDetection,
    /// `OAUTH_PROXY_GRANT_MAX_LIFETIME` passed.
    MaxLifetime,
}

/// Where a request came from: taken from the HTTP request by the web layer
/// (`RequestContext` is its extractor), empty for work no request started
/// (expiry sweeps).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RequestContext {
    /// The request's `X-Request-Id`.
    pub request_id: String,
    /// The client address (behind trusted proxies, the one they name).
    pub client_address: String,
    pub user_agent: Option<String>,
}

/// A guarded MCP request, as the gateway saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct McpCall {
    /// The JSON-RPC method (`tools/call`, ...), when the body had one.
    pub method: Option<String>,
    /// The tool, prompt or resource the method names.
    pub name: Option<String>,
    pub status: u16,
    pub duration_ms: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub event: EventKind,
    pub outcome: Outcome,
    #[serde(flatten)]
    pub context: RequestContext,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// A grant's identifier, never a token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<String>,
    /// Why it was refused or failed (a fixed phrase, or the upstream's
    /// error code and description).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The HTTP status answered, for refusals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<RevokedBy>,
    /// Consent approved or denied by a remembered decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remembered: Option<bool>,
    /// A refresh answered from the rotation grace window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grace_replay: Option<bool>,
    /// Scopes granted or asked for (space-separated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp: Option<McpCall>,
}

impl Event {
    pub fn new(event: EventKind, outcome: Outcome, context: &RequestContext) -> Event {
        Event {
            event,
            outcome,
            context: context.clone(),
            client_id: None,
            client_name: None,
            subject: None,
            email: None,
            grant_id: None,
            reason: None,
            status: None,
            revoked_by: None,
            remembered: None,
            grace_replay: None,
            scope: None,
            mcp: None,
        }
    }

    pub fn client(mut self, client_id: impl Into<String>, client_name: Option<String>) -> Event {
        self.client_id = Some(client_id.into());
        self.client_name = client_name;
        self
    }

    pub fn subject(mut self, subject: impl Into<String>, email: Option<String>) -> Event {
        self.subject = Some(subject.into());
        self.email = email;
        self
    }

    pub fn grant(mut self, grant_id: impl Into<String>) -> Event {
        self.grant_id = Some(grant_id.into());
        self
    }

    pub fn reason(mut self, reason: impl Into<String>) -> Event {
        self.reason = Some(reason.into());
        self
    }

    pub fn status(mut self, status: u16) -> Event {
        self.status = Some(status);
        self
    }

    pub fn revoked_by(mut self, by: RevokedBy) -> Event {
        self.revoked_by = Some(by);
        self
    }

    pub fn scope(mut self, scope: impl Into<String>) -> Event {
        self.scope = Some(scope.into());
        self
    }
}
