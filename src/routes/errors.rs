//! The one mapping from errors to HTTP answers (the core types in
//! [`crate::error`] carry no HTTP):
//!
//! - OAuth errors: RFC 6749 §5.2 JSON `{error, error_description}`, never
//!   cached; `invalid_client` sent with HTTP Basic adds a Basic challenge.
//! - The guarded MCP endpoint's refusals: RFC 6750 §3 Bearer challenges with
//!   the RFC 9728 metadata URL, and JSON-RPC error bodies (MCP transport).
//! - Browser-facing errors: an HTML page whose status, title and wording
//!   come from [`PageReason`] here, never a redirect to an unvalidated URI
//!   (RFC 6749 §4.1.2.1).
//! - Internal failures: a bare `server_error`; their cause chain goes to the
//!   log only.

use std::borrow::Cow;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use askama::Template;

use super::{add_page_security_headers, STATIC_PREFIX};
use crate::config::Config;
use crate::error::{Chain, Error, ErrorCode, PageReason, AUDIT_UNAVAILABLE, STORE_UNAVAILABLE};
use crate::gateway::GatewayError;
use crate::oauth::metadata::protected_resource_url;
use crate::oauth::scope::{resource_scopes, Scopes, OFFLINE_ACCESS};
use crate::proxy::AuthorizeQueryError;
use crate::views::ErrorPage;

/// The HTTP status of an OAuth error code.
fn oauth_status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidClient | ErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
        ErrorCode::AccessDenied => StatusCode::FORBIDDEN,
        ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// The RFC 6749 §5.2 error body.
fn oauth_body(error: &str, description: &str) -> serde_json::Value {
    serde_json::json!({ "error": error, "error_description": description })
}

/// An RFC 6749 §5.2 error answer.
fn oauth_error(code: ErrorCode, description: &str, basic_challenge: bool) -> HttpResponse {
    let mut response = HttpResponse::build(oauth_status(code));
    response
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"));
    if basic_challenge {
        response.insert_header((header::WWW_AUTHENTICATE, "Basic realm=\"mcp-oauth-proxy\""));
    }
    response.json(oauth_body(code.as_str(), description))
}

/// A 404 for a JSON endpoint (an unknown path, or a document this
/// configuration does not publish).
pub fn not_found(description: &str) -> HttpResponse {
    HttpResponse::NotFound().json(oauth_body("not_found", description))
}

/// Why the admin API refuses a request before reading it.
#[derive(Debug, Clone, Copy)]
pub enum AdminRefusal {
    /// No `OAUTH_PROXY_ADMIN_TOKEN` is configured: 403, the API is off.
    Off,
    /// No bearer token, or the wrong one: 401 with a Bearer challenge.
    Unauthorized(&'static str),
}

/// The admin API's 401 / 403 (never cached).
pub fn admin_refusal(refusal: AdminRefusal) -> HttpResponse {
    match refusal {
        AdminRefusal::Off => HttpResponse::Forbidden()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(oauth_body(
                ErrorCode::AccessDenied.as_str(),
                "the admin API is off: set OAUTH_PROXY_ADMIN_TOKEN",
            )),
        AdminRefusal::Unauthorized(why) => HttpResponse::Unauthorized()
            .insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"mcp-oauth-proxy admin\""))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(oauth_body(ErrorCode::InvalidToken.as_str(), why)),
    }
}

/// Why the guarded MCP endpoint refuses a request's bearer token.
#[derive(Debug, Clone, Copy)]
pub enum BearerRefusal<'a> {
    /// No token was sent: 401 with a bare challenge.
    Missing,
    /// The token is invalid, expired or revoked: 401 `invalid_token`.
    InvalidToken(&'a str),
    /// The token lacks a scope the endpoint requires: 403 `insufficient_scope`.
    InsufficientScope(&'a str),
}

/// A 401/403 with the RFC 6750 §3 challenge and the RFC 9728 metadata URL.
pub fn bearer_challenge(config: &Config, refusal: BearerRefusal<'_>) -> HttpResponse {
    let (status, error) = match refusal {
        BearerRefusal::Missing => (StatusCode::UNAUTHORIZED, None),
        BearerRefusal::InvalidToken(why) => (StatusCode::UNAUTHORIZED, Some(("invalid_token", why))),
        BearerRefusal::InsufficientScope(why) => (StatusCode::FORBIDDEN, Some(("insufficient_scope", why))),
    };
    let mut value = format!("Bearer resource_metadata=\"{}\"", protected_resource_url(config));
    if let Some((code, description)) = error {
        // Quoted-string safety: no quotes or backslashes inside.
        let description: String = description
            .chars()
            .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
            .collect();
        value.push_str(&format!(", error=\"{code}\", error_description=\"{description}\""));
    }
    let scopes = baseline_scopes(config);
    if !scopes.is_empty() {
        value.push_str(&format!(", scope=\"{}\"", scopes.join(" ")));
    }
    let (code, description) = error.unwrap_or(("invalid_token", "authorization required"));
    HttpResponse::build(status)
        .insert_header((header::WWW_AUTHENTICATE, value))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(oauth_body(code, description))
}

/// The scopes every use of the MCP endpoint needs (the 401 challenge's
/// `scope`): `OAUTH_PROXY_MCP_REQUIRED_SCOPES` when set, else the advertised
/// scopes except those only per-tool rules (`OAUTH_PROXY_MCP_TOOL_SCOPES`)
/// name, which a client asks for when a call needs them (step-up). Never
/// `offline_access`: the authorization server's, not a resource's (SEP-2207).
/// In the configured order.
pub fn baseline_scopes(config: &Config) -> Vec<String> {
    if !config.gateway.required_scopes.is_empty() {
        return resource_scopes(&config.gateway.required_scopes);
    }
    let mut baseline = resource_scopes(&config.scopes);
    let tool_scopes = &config.gateway.tool_scopes;
    if !tool_scopes.is_empty() {
        baseline.retain(|scope| !tool_scopes.scopes().any(|s| s == scope));
    }
    baseline
}

/// The JSON-RPC error code of a call refused for want of a scope: MCP
/// defines none, so an application code outside the JSON-RPC reserved
/// range, as the MCP spec asks of new codes.
pub const INSUFFICIENT_SCOPE_CODE: i64 = -31403;

/// The 403 of a call whose token lacks a scope its tool, prompt or resource
/// needs: the RFC 6750 §3.1 challenge naming every scope the call needs
/// (`needed`: the baseline and each scope of its names, so a client that
/// authorizes again with them gets a token that can make the call; MCP
/// "Scope Challenge Handling"), and a JSON-RPC error body echoing `id`.
pub fn step_up_challenge(config: &Config, needed: &Scopes, id: serde_json::Value, message: &str) -> HttpResponse {
    // The baseline in its order, then the others the call needs.
    let mut scopes = baseline_scopes(config);
    for scope in needed.iter() {
        if scope != OFFLINE_ACCESS && !scopes.iter().any(|s| s == scope) {
            scopes.push(scope.to_string());
        }
    }
    let scope = scopes.join(" ");
    let message: String = message
        .chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect();
    let value = format!(
        "Bearer error=\"insufficient_scope\", scope=\"{scope}\", resource_metadata=\"{}\", error_description=\"{message}\"",
        protected_resource_url(config)
    );
    HttpResponse::build(StatusCode::FORBIDDEN)
        .insert_header((header::WWW_AUTHENTICATE, value))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {
                "code": INSUFFICIENT_SCOPE_CODE,
                "message": message,
                "data": { "error": "insufficient_scope", "scope": scope },
            },
        }))
}

/// A JSON-RPC error answer echoing `id` (a single request's, or `null`).
pub fn json_rpc_error_for(status: StatusCode, id: serde_json::Value, code: i64, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": { "code": code, "message": message },
    }))
}

/// A JSON-RPC error body without an id (MCP transport spec), so MCP clients
/// can show it.
pub fn json_rpc_error(status: StatusCode, code: i64, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": { "code": code, "message": message },
    }))
}

impl ResponseError for GatewayError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        // JSON-RPC 2.0 §5.1: -32600 invalid request (the client's path),
        // -32603 internal error (the status says which).
        let code = match self {
            GatewayError::PathRefused(_) => -32600,
            _ => -32603,
        };
        json_rpc_error(self.status(), code, self.public_message())
    }
}

/// What the browser is shown for each reason: status, title, message and
/// the technical detail (an OAuth error code).
struct Wording {
    status: StatusCode,
    title: &'static str,
    message: Cow<'static, str>,
    detail: Option<&'static str>,
}

fn wording(reason: &PageReason) -> Wording {
    let word = |status, title, message: &'static str, detail| Wording {
        status,
        title,
        message: Cow::Borrowed(message),
        detail,
    };
    let bad_query = |refusal: AuthorizeQueryError| Wording {
        status: StatusCode::BAD_REQUEST,
        title: "Invalid authorization request",
        message: Cow::Owned(format!("The request could not be accepted: {refusal}.")),
        detail: Some("invalid_request"),
    };
    match reason {
        PageReason::MissingClient => word(
            StatusCode::BAD_REQUEST,
            "Missing client",
            "The request does not name a client (client_id).",
            None,
        ),
        PageReason::UnknownClient => word(
            StatusCode::BAD_REQUEST,
            "Unknown client",
            "This application is not registered with the authorization server. Ask it to register again.",
            Some("invalid_client"),
        ),
        PageReason::ClientDocument { client_id, problem } => Wording {
            status: StatusCode::BAD_REQUEST,
            title: "This application's metadata document cannot be used",
            message: Cow::Owned(format!(
                "The application identifies itself with the client metadata document {client_id}, \
                 and this authorization server cannot use it: {problem}. \
                 Tell the application's developer (or, if the document is right, this server's operator)."
            )),
            detail: Some("invalid_client"),
        },
        PageReason::UnregisteredRedirectUri => word(
            StatusCode::BAD_REQUEST,
            "Invalid redirect URI",
            "The redirect URI in this request is not registered for this application (or, for an application identified by a client metadata document, not listed in that document), so the authorization server will not send you there.",
            Some("invalid_request"),
        ),
        PageReason::AuthorizeQueryTooLong => bad_query(AuthorizeQueryError::TooLong),
        PageReason::StateTooLong => bad_query(AuthorizeQueryError::StateTooLong),
        PageReason::AuthorizeQueryUnreadable => bad_query(AuthorizeQueryError::Unreadable),
        PageReason::UnapprovedClientRequest { code, description } => Wording {
            status: StatusCode::BAD_REQUEST,
            title: "Invalid authorization request",
            message: Cow::Owned(format!(
                "The application sent a request this server cannot accept ({description}). \
                 You have not approved this application in this browser, so you are not sent back to it."
            )),
            detail: Some(code.as_str()),
        },
        PageReason::TooManyPending => word(
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many sign-ins in progress",
            "The authorization server is handling too many sign-ins right now. Try again in a minute.",
            Some("temporarily_unavailable"),
        ),
        PageReason::TooManyAttempts => word(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many sign-in attempts",
            "Too many authorization requests came from your network. Wait a moment, then try again.",
            None,
        ),
        PageReason::ConsentFormUnreadable => word(
            StatusCode::BAD_REQUEST,
            "Invalid consent form",
            "The consent form was incomplete.",
            None,
        ),
        PageReason::UnknownDecision => word(
            StatusCode::BAD_REQUEST,
            "Invalid decision",
            "The consent form was not understood.",
            None,
        ),
        PageReason::ConsentNotIssuedHere => word(
            StatusCode::FORBIDDEN,
            "Request not accepted",
            "This consent form was not issued to this browser session. Start the sign-in again from your application.",
            Some("invalid_request"),
        ),
        PageReason::AuthorizationExpired => word(
            StatusCode::BAD_REQUEST,
            "This sign-in has expired",
            "The authorization request is unknown, was already used, or took too long. Start again from your application.",
            Some("invalid_request"),
        ),
        PageReason::CallbackUnreadable => word(
            StatusCode::BAD_REQUEST,
            "Invalid callback",
            "The answer from the sign-in provider could not be read.",
            None,
        ),
        PageReason::SignInNotAccepted => word(
            StatusCode::FORBIDDEN,
            "Sign-in not accepted",
            "This sign-in was started in another browser or was not approved here. Start again from your application.",
            Some("access_denied"),
        ),
        PageReason::Refused { code, description } => Wording {
            status: oauth_status(*code),
            title: "Authorization failed",
            message: Cow::Owned(description.clone()),
            detail: Some(code.as_str()),
        },
        PageReason::Internal => word(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "The authorization service hit an internal error.",
            None,
        ),
    }
}

/// The HTML error page for `reason`, with the page security headers.
pub fn error_page(reason: &PageReason) -> HttpResponse {
    let Wording {
        status,
        title,
        message,
        detail,
    } = wording(reason);
    let page = ErrorPage {
        static_prefix: STATIC_PREFIX,
        status: status.as_u16(),
        title,
        message: &message,
        detail,
    };
    let body = page
        .render()
        .unwrap_or_else(|_| format!("<h1>{status}</h1><p>{title}</p>"));
    let mut response = HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(body);
    add_page_security_headers(response.headers_mut(), &[]);
    response
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        match self {
            Error::OAuth { code, .. } => oauth_status(*code),
            Error::Page(reason) => wording(reason).status,
            Error::Redirect { .. } => StatusCode::FOUND,
            Error::Store(_) | Error::AuditUnavailable => oauth_status(ErrorCode::TemporarilyUnavailable),
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Error::OAuth {
                code,
                description,
                basic_challenge,
            } => oauth_error(*code, description, *basic_challenge),
            Error::Page(reason) => error_page(reason),
            Error::Redirect { to, code, description } => {
                let location = to.with_params(&[("error", code.as_str()), ("error_description", description)]);
                HttpResponse::Found()
                    .insert_header((header::LOCATION, location.as_str()))
                    .insert_header((header::CACHE_CONTROL, "no-store"))
                    .finish()
            }
            // Logged where it was converted (`From<StoreError>`).
            Error::Store(_) => oauth_error(ErrorCode::TemporarilyUnavailable, STORE_UNAVAILABLE, false),
            Error::AuditUnavailable => oauth_error(ErrorCode::TemporarilyUnavailable, AUDIT_UNAVAILABLE, false),
            internal => {
                log::error!("internal error: {}", Chain(internal));
                let mut response = HttpResponse::InternalServerError();
                response.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
                response.json(oauth_body(
                    ErrorCode::ServerError.as_str(),
                    "internal error; see the proxy's log",
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(response: HttpResponse) -> String {
        let bytes = actix_web::body::to_bytes(response.into_body()).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[actix_web::test]
    async fn an_oauth_error_is_rfc_6749_json_never_cached() {
        let response = Error::invalid_client("client authentication failed", true).error_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let headers = response.headers();
        assert_eq!(
            headers.get(header::WWW_AUTHENTICATE).unwrap(),
            "Basic realm=\"mcp-oauth-proxy\""
        );
        assert_eq!(headers.get(header::CACHE_CONTROL).unwrap(), "no-store");
        assert_eq!(headers.get(header::PRAGMA).unwrap(), "no-cache");
        assert_eq!(
            body_of(response).await,
            r#"{"error":"invalid_client","error_description":"client authentication failed"}"#
        );
    }

    #[actix_web::test]
    async fn an_internal_error_says_server_error_and_nothing_of_its_cause() {
        let cause = "secret-looking detail".parse::<url::Url>().unwrap_err();
        let response = Error::encoding("a stored redirect URI", cause).error_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            body_of(response).await,
            r#"{"error":"server_error","error_description":"internal error; see the proxy's log"}"#
        );
    }

    #[actix_web::test]
    async fn a_storage_failure_is_503_temporarily_unavailable() {
        let error = Error::from(crate::store::StoreError::Unavailable("down".into()));
        let response = error.error_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body_of(response).await,
            r#"{"error":"temporarily_unavailable","error_description":"the token store is unavailable; try again shortly"}"#
        );
    }

    #[actix_web::test]
    async fn a_page_reason_becomes_its_html_page() {
        let response = Error::page(PageReason::StateTooLong).error_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers().get(header::X_FRAME_OPTIONS).unwrap(), "DENY");
        let body = body_of(response).await;
        assert!(body.contains("Invalid authorization request"), "{body}");
        assert!(body.contains("`state` is longer than 1024 bytes"), "{body}");
        let refused = Error::oauth(ErrorCode::TemporarilyUnavailable, "busy").for_browser();
        assert_eq!(refused.status_code(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
