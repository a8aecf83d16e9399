//! The one error type of the service and its single mapping to HTTP.
//!
//! - OAuth endpoint errors become RFC 6749 §5.2 JSON `{error, error_description}`
//!   (401 plus `WWW-Authenticate` for `invalid_client` sent with HTTP Basic).
//! - Browser-facing errors that cannot be sent back to a validated redirect URI
//!   become an HTML page: RFC 6749 §4.1.2.1 forbids redirecting to an invalid or
//!   unregistered redirect URI.
//! - Errors after the redirect URI is validated redirect to the client with
//!   `error`, `state` and `iss` (RFC 9207).

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use askama::Template;
use url::Url;

use crate::views::ErrorPage;

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
        }
    }

    fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidClient | ErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
            ErrorCode::AccessDenied => StatusCode::FORBIDDEN,
            ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::BAD_REQUEST,
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

#[derive(Debug, thiserror::Error)]
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
    #[error("{title}: {message}")]
    Page {
        status: StatusCode,
        title: String,
        message: String,
        detail: Option<String>,
    },
    /// A redirect to the client's validated redirect URI with an error.
    #[error("{}: {description} (redirected to client)", code.as_str())]
    Redirect {
        to: Box<ClientRedirect>,
        code: ErrorCode,
        description: String,
    },
    /// Something failed inside the service; details go to the log only.
    #[error("internal error: {0}")]
    Internal(String),
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
    pub fn page(status: StatusCode, title: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Page {
            status,
            title: title.into(),
            message: message.into(),
            detail: None,
        }
    }
    pub fn page_with_detail(
        status: StatusCode,
        title: impl Into<String>,
        message: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Error::Page {
            status,
            title: title.into(),
            message: message.into(),
            detail: Some(detail.into()),
        }
    }
    pub fn redirect(to: &ClientRedirect, code: ErrorCode, description: impl Into<String>) -> Self {
        Error::Redirect {
            to: Box::new(to.clone()),
            code,
            description: description.into(),
        }
    }
    pub fn internal(what: impl std::fmt::Display) -> Self {
        Error::Internal(what.to_string())
    }

    /// The OAuth error code, if this error carries one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::OAuth { code, .. } | Error::Redirect { code, .. } => Some(*code),
            Error::Internal(_) => Some(ErrorCode::ServerError),
            Error::Page { .. } => None,
        }
    }

    /// Turns a JSON error into an HTML page for browser-facing endpoints.
    pub fn for_browser(self) -> Self {
        match self {
            Error::OAuth { code, description, .. } => {
                Error::page_with_detail(code.status(), "Authorization failed", description, code.as_str())
            }
            Error::Internal(what) => {
                log::error!("internal error: {what}");
                Error::page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "The authorization service hit an internal error.",
                )
            }
            other => other,
        }
    }
}

impl From<actix::MailboxError> for Error {
    fn from(err: actix::MailboxError) -> Self {
        Error::Internal(format!("store actor unavailable: {err}"))
    }
}

impl From<crate::store::StoreError> for Error {
    fn from(err: crate::store::StoreError) -> Self {
        log::error!("storage failure: {err}");
        Error::oauth(
            ErrorCode::TemporarilyUnavailable,
            "the token store is unavailable; try again shortly",
        )
    }
}

/// Renders the HTML error page (also used for 404s of browser routes).
pub fn error_page(status: StatusCode, title: &str, message: &str, detail: Option<&str>) -> HttpResponse {
    let page = ErrorPage {
        static_prefix: crate::routes::STATIC_PREFIX,
        status: status.as_u16(),
        title,
        message,
        detail,
    };
    let body = page
        .render()
        .unwrap_or_else(|_| format!("<h1>{status}</h1><p>{title}</p>"));
    let mut response = HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(body);
    crate::routes::add_page_security_headers(response.headers_mut(), &[]);
    response
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        match self {
            Error::OAuth { code, .. } => code.status(),
            Error::Page { status, .. } => *status,
            Error::Redirect { .. } => StatusCode::FOUND,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Error::OAuth {
                code,
                description,
                basic_challenge,
            } => {
                let mut response = HttpResponse::build(code.status());
                response
                    .insert_header((header::CACHE_CONTROL, "no-store"))
                    .insert_header((header::PRAGMA, "no-cache"));
                if *basic_challenge {
                    response.insert_header((header::WWW_AUTHENTICATE, "Basic realm=\"mcp-oauth-proxy\""));
                }
                response.json(serde_json::json!({
                    "error": code.as_str(),
                    "error_description": description,
                }))
            }
            Error::Page {
                status,
                title,
                message,
                detail,
            } => error_page(*status, title, message, detail.as_deref()),
            Error::Redirect { to, code, description } => {
                let location = to.with_params(&[("error", code.as_str()), ("error_description", description)]);
                HttpResponse::Found()
                    .insert_header((header::LOCATION, location.as_str()))
                    .insert_header((header::CACHE_CONTROL, "no-store"))
                    .finish()
            }
            Error::Internal(what) => {
                log::error!("internal error: {what}");
                let mut response = HttpResponse::InternalServerError();
                response.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
                response.json(serde_json::json!({
                    "error": "server_error",
                    "error_description": "internal error; see the proxy's log",
                }))
            }
        }
    }
}
