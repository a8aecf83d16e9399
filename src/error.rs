//! The core error type of the service: what went wrong, in protocol terms,
//! with no HTTP in it. `routes::errors` is the one place that turns it into a
//! response:
//!
//! - OAuth endpoint errors become RFC 6749 §5.2 JSON `{error, error_description}`
//!   (401 plus `WWW-Authenticate` for `invalid_client` sent with HTTP Basic).
//! - Browser-facing errors that cannot be sent back to a validated redirect URI
//!   carry a [`PageReason`] and become an HTML page: RFC 6749 §4.1.2.1 forbids
//!   redirecting to an invalid or unregistered redirect URI.
//! - Errors after the redirect URI is validated redirect to the client with
//!   `error`, `state` and `iss` (RFC 9207).
//! - Failures inside the service keep their cause ([`std::error::Error::source`]);
//!   the cause goes to the log, never to the client.

use std::fmt;

use url::Url;

use crate::store::StoreError;

/// RFC 6749 / RFC 8707 / RFC 7591 error codes used by the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    UnsupportedResponseType,
    InvalidScope,
    InvalidTarget,
    AccessDenied,
    ServerError,
    TemporarilyUnavailable,
    InvalidRedirectUri,
    InvalidClientMetadata,
    InvalidToken,
    /// Too many registrations from one address (answered with 429).
    RateLimited,
    /// The admin API: no such client or grant (404).
    NotFound,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::UnsupportedResponseType => "unsupported_response_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::InvalidTarget => "invalid_target",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::ServerError => "server_error",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            ErrorCode::InvalidRedirectUri => "invalid_redirect_uri",
            ErrorCode::InvalidClientMetadata => "invalid_client_metadata",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::RateLimited => "temporarily_unavailable",
            ErrorCode::NotFound => "not_found",
        }
    }
}

/// Where a browser-facing error goes once the client's redirect URI is known
/// to be registered.
#[derive(Debug, Clone)]
pub struct ClientRedirect {
    pub redirect_uri: Url,
    pub state: Option<String>,
    pub issuer: String,
}

impl ClientRedirect {
    /// The redirect URI with the given response parameters and `iss` appended.
    pub fn with_params(&self, params: &[(&str, &str)]) -> Url {
        let mut url = self.redirect_uri.clone();
        {
            let mut query = url.query_pairs_mut();
            for (name, value) in params {
                query.append_pair(name, value);
            }
            if let Some(state) = &self.state {
                query.append_pair("state", state);
            }
            query.append_pair("iss", &self.issuer);
        }
        url
    }
}

/// Why a browser gets an HTML error page instead of a redirect. The web layer
/// (`routes::errors`) holds the status, title and wording of each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageReason {
    /// `/authorize` names no client.
    #[error("the request names no client")]
    MissingClient,
    /// The client id is a metadata document URL whose document cannot be
    /// used (fetching it failed, or it does not describe a valid client).
    #[error("client metadata document {client_id} refused: {problem}")]
    ClientDocument {
        client_id: String,
        problem: crate::oauth::client_document::DocumentError,
    },
    /// `/authorize` names a client that is not registered.
    #[error("unknown client")]
    UnknownClient,
    /// The redirect URI is not registered for the client (or not allowed by
    /// the operator's patterns): nothing may be sent to it.
    #[error("the redirect URI is not registered")]
    UnregisteredRedirectUri,
    /// The `/authorize` query is longer than the proxy reads.
    #[error("the authorization request is too long")]
    AuthorizeQueryTooLong,
    /// `state` is longer than the proxy keeps.
    #[error("`state` is too long")]
    StateTooLong,
    /// The `/authorize` query could not be read (a repeated parameter).
    #[error("the authorization request could not be read")]
    AuthorizeQueryUnreadable,
    /// An invalid authorization request from a client this browser has not
    /// approved: it is not sent back to the client (RFC 9700 §4.11.2).
    #[error("{}: {description} (client not approved in this browser)", code.as_str())]
    UnapprovedClientRequest { code: ErrorCode, description: String },
    /// Too many pending authorizations
    /// (`OAUTH_PROXY_MAX_PENDING_AUTHORIZATIONS`).
    #[error("too many pending authorizations")]
    TooManyPending,
    /// Too many `/authorize` requests from one client address
    /// (`OAUTH_PROXY_AUTHORIZE_RATE_LIMIT`).
    #[error("too many authorization requests from one address")]
    TooManyAttempts,
    /// The consent form body could not be read.
    #[error("the consent form could not be read")]
    ConsentFormUnreadable,
    /// The consent form's decision is neither approve nor deny.
    #[error("the consent decision was not understood")]
    UnknownDecision,
    /// The consent form was not issued to this browser (CSRF token or
    /// browser binding do not match).
    #[error("the consent form was not issued to this browser")]
    ConsentNotIssuedHere,
    /// The pending authorization is unknown, used, or expired.
    #[error("the authorization request has expired")]
    AuthorizationExpired,
    /// The upstream callback's parameters could not be read.
    #[error("the upstream callback could not be read")]
    CallbackUnreadable,
    /// The callback came to another browser, or to an authorization that was
    /// not approved.
    #[error("the sign-in was not started or approved in this browser")]
    SignInNotAccepted,
    /// An OAuth error on a browser-facing endpoint (see [`Error::for_browser`]).
    #[error("{}: {description}", code.as_str())]
    Refused { code: ErrorCode, description: String },
    /// Something failed inside the service (its cause was logged).
    #[error("internal error")]
    Internal,
}

/// Said to clients when the storage fails (503 `temporarily_unavailable`).
pub const AUDIT_UNAVAILABLE: &str = "the audit trail is unavailable; try again shortly";

impl From<crate::audit::AuditUnavailable> for Error {
    fn from(_: crate::audit::AuditUnavailable) -> Self {
        Error::AuditUnavailable
    }
}

pub const STORE_UNAVAILABLE: &str = "the token store is unavailable; try again shortly";

#[derive(thiserror::Error)]
pub enum Error {
    /// An OAuth JSON error.
    #[error("{}: {description}", code.as_str())]
    OAuth {
        code: ErrorCode,
        description: String,
        /// Answer `invalid_client` with a Basic challenge (RFC 6749 §5.2).
        basic_challenge: bool,
    },
    /// An HTML error page for the browser.
    #[error(transparent)]
    Page(PageReason),
    /// A redirect to the client's validated redirect URI with an error.
    #[error("{}: {description} (redirected to client)", code.as_str())]
    Redirect {
        to: Box<ClientRedirect>,
        code: ErrorCode,
        description: String,
    },
    /// The storage failed: the client is told to try again (503
    /// `temporarily_unavailable`, [`STORE_UNAVAILABLE`]).
    #[error("{}: {STORE_UNAVAILABLE}", ErrorCode::TemporarilyUnavailable.as_str())]
    Store(#[source] StoreError),
    /// The audit trail is required and cannot take the request's event
    /// (503 `temporarily_unavailable`).
    #[error("{}: {AUDIT_UNAVAILABLE}", ErrorCode::TemporarilyUnavailable.as_str())]
    AuditUnavailable,
    /// A store actor did not answer.
    #[error("store actor unavailable")]
    Mailbox(#[from] actix::MailboxError),
    /// A token could not be signed.
    #[error("a token could not be signed")]
    Signing(#[source] jsonwebtoken::errors::Error),
    /// A value kept by the service could not be read back.
    #[error("{what} could not be read")]
    Encoding {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A state the service's own records should never be in.
    #[error("{0}")]
    Invariant(&'static str),
    /// Any other failure inside the service.
    #[error("{what}")]
    Other {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// `Debug` prints the error and its cause chain (what the log shows).
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", Chain(self))
    }
}

/// An error and its causes, one after the other: `a: b: c`.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

impl Error {
    pub fn oauth(code: ErrorCode, description: impl Into<String>) -> Self {
        Error::OAuth {
            code,
            description: description.into(),
            basic_challenge: false,
        }
    }
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Error::oauth(ErrorCode::InvalidRequest, description)
    }
    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Error::oauth(ErrorCode::InvalidGrant, description)
    }
    pub fn invalid_client(description: impl Into<String>, basic_challenge: bool) -> Self {
        Error::OAuth {
            code: ErrorCode::InvalidClient,
            description: description.into(),
            basic_challenge,
        }
    }
    pub fn page(reason: PageReason) -> Self {
        Error::Page(reason)
    }
    pub fn redirect(to: &ClientRedirect, code: ErrorCode, description: impl Into<String>) -> Self {
        Error::Redirect {
            to: Box::new(to.clone()),
            code,
            description: description.into(),
        }
    }
    /// A value kept by the service that could not be read back.
    pub fn encoding(what: &'static str, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Encoding {
            what,
            source: Box::new(source),
        }
    }
    /// Any other failure inside the service, with its cause.
    pub fn other(what: &'static str, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Other {
            what,
            source: Box::new(source),
        }
    }

    /// A failure inside the service: answered with a bare `server_error`
    /// (or the generic error page), its cause logged.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            Error::Mailbox(_) | Error::Signing(_) | Error::Encoding { .. } | Error::Invariant(_) | Error::Other { .. }
        )
    }

    /// The OAuth error code, if this error carries one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::OAuth { code, .. } | Error::Redirect { code, .. } => Some(*code),
            Error::Store(_) => Some(ErrorCode::TemporarilyUnavailable),
            Error::Page(_) => None,
            _ => Some(ErrorCode::ServerError),
        }
    }

    /// Turns a JSON error into an HTML page for browser-facing endpoints.
    pub fn for_browser(self) -> Self {
        match self {
            Error::OAuth { code, description, .. } => Error::Page(PageReason::Refused { code, description }),
            Error::Store(_) => Error::Page(PageReason::Refused {
                code: ErrorCode::TemporarilyUnavailable,
                description: STORE_UNAVAILABLE.to_string(),
            }),
            Error::AuditUnavailable => Error::Page(PageReason::Refused {
                code: ErrorCode::TemporarilyUnavailable,
                description: AUDIT_UNAVAILABLE.to_string(),
            }),
            internal if internal.is_internal() => {
                log::error!("internal error: {}", Chain(&internal));
                Error::Page(PageReason::Internal)
            }
            other => other,
        }
    }
}

impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        log::error!("storage failure: {}", Chain(&err));
        Error::Store(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_prints_the_cause_chain() {
        let cause = "not a url".parse::<Url>().unwrap_err();
        let error = Error::encoding("a stored redirect URI", cause);
        assert_eq!(
            format!("{error:?}"),
            format!("a stored redirect URI could not be read: {cause}")
        );
        assert!(std::error::Error::source(&error).is_some());
        assert_eq!(error.code(), Some(ErrorCode::ServerError));
    }

    #[test]
    fn a_storage_failure_reads_as_temporarily_unavailable_and_keeps_its_cause() {
        let error = Error::from(StoreError::Unavailable("connection refused".into()));
        assert_eq!(error.code(), Some(ErrorCode::TemporarilyUnavailable));
        assert_eq!(
            error.to_string(),
            "temporarily_unavailable: the token store is unavailable; try again shortly"
        );
        assert!(format!("{error:?}").ends_with("connection refused"), "{error:?}");
    }

    #[test]
    fn for_browser_turns_json_errors_into_pages() {
        let page = Error::invalid_grant("nope").for_browser();
        assert!(matches!(
            page,
            Error::Page(PageReason::Refused { code: ErrorCode::InvalidGrant, ref description }) if description == "nope"
        ));
        let internal = Error::Invariant("broken").for_browser();
        assert!(matches!(internal, Error::Page(PageReason::Internal)));
        let store = Error::from(StoreError::Unavailable("down".into())).for_browser();
        assert!(matches!(
            store,
            Error::Page(PageReason::Refused {
                code: ErrorCode::TemporarilyUnavailable,
                ..
            })
        ));
    }
}
