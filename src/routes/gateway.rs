//! The guarded MCP endpoint (`OAUTH_PROXY_MCP_PATH` and below, all methods).
//!
//! MCP authorization spec: no or bad token → 401 with
//! `WWW-Authenticate: Bearer resource_metadata="…"` (+ `error="invalid_token"`
//! when a token was sent); insufficient scope → 403. MCP transport spec: an
//! `Origin` that is not allowed gets 403 (DNS rebinding); `OPTIONS` is a CORS
//! preflight and never needs a token.

use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};

use super::client_auth::bearer_token;
use crate::actors::upstream_refresher::RefreshFailed;
use crate::gateway::{json_rpc_error, Forwarded, Gateway};
use crate::oauth::metadata::protected_resource_url;
use crate::oauth::scope::Scopes;
use crate::proxy::OAuthProxy;

/// Largest MCP request body forwarded.
pub const MAX_MCP_BODY: usize = 4 * 1024 * 1024;

const ALLOWED_HEADERS: &str =
    "Authorization, Content-Type, Accept, Mcp-Session-Id, MCP-Protocol-Version, Last-Event-ID, Mcp-Method, Mcp-Name";
const EXPOSED_HEADERS: &str = "Mcp-Session-Id, MCP-Protocol-Version, WWW-Authenticate";

/// The request's `Origin` when it is allowed; `Err` when it is present and
/// not allowed. Requests without `Origin` (non-browser clients) pass.
fn check_origin(req: &HttpRequest, proxy: &OAuthProxy) -> Result<Option<HeaderValue>, ()> {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return Ok(None);
    };
    let config = proxy.config();
    let value = origin.to_str().map_err(|_| ())?.trim_end_matches('/');
    let own = config.base_url.origin().ascii_serialization();
    let allowed = value == own
        || config
            .gateway
            .allowed_origins
            .iter()
            .any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(value));
    if allowed {
        Ok(Some(origin.clone()))
    } else {
        Err(())
    }
}

fn add_cors(headers: &mut HeaderMap, origin: &Option<HeaderValue>) {
    if let Some(origin) = origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED_HEADERS),
        );
    }
}

/// A 401/403 with the RFC 6750 §3 challenge and the RFC 9728 metadata URL.
fn challenge(proxy: &OAuthProxy, status: StatusCode, error: Option<(&str, &str)>) -> HttpResponse {
    let config = proxy.config();
    let mut value = format!("Bearer resource_metadata=\"{}\"", protected_resource_url(config));
    if let Some((code, description)) = error {
        // Quoted-string safety: no quotes or backslashes inside.
        let description: String = description
            .chars()
            .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
            .collect();
        value.push_str(&format!(", error=\"{code}\", error_description=\"{description}\""));
    }
    let scopes = if config.gateway.required_scopes.is_empty() {
        &config.scopes
    } else {
        &config.gateway.required_scopes
    };
    if !scopes.is_empty() {
        value.push_str(&format!(", scope=\"{}\"", scopes.join(" ")));
    }
    let body = match error {
        Some((code, description)) => serde_json::json!({ "error": code, "error_description": description }),
        None => serde_json::json!({ "error": "invalid_token", "error_description": "authorization required" }),
    };
    HttpResponse::build(status)
        .insert_header((header::WWW_AUTHENTICATE, value))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body)
}

pub async fn mcp(
    req: HttpRequest,
    body: Bytes,
    proxy: web::Data<OAuthProxy>,
    gateway: web::Data<Gateway>,
) -> HttpResponse {
    let Ok(origin) = check_origin(&req, &proxy) else {
        return json_rpc_error(StatusCode::FORBIDDEN, -32000, "Origin not allowed");
    };
    let mut response = guarded(&req, body, &proxy, &gateway).await;
    add_cors(response.headers_mut(), &origin);
    response
}

async fn guarded(req: &HttpRequest, body: Bytes, proxy: &OAuthProxy, gateway: &Gateway) -> HttpResponse {
    if req.method() == Method::OPTIONS {
        return HttpResponse::NoContent()
            .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, "GET, POST, DELETE, OPTIONS"))
            .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOWED_HEADERS))
            .insert_header((header::ACCESS_CONTROL_MAX_AGE, "86400"))
            .finish();
    }
    let Some(token) = bearer_token(req) else {
        return challenge(proxy, StatusCode::UNAUTHORIZED, None);
    };
    let access = match proxy.check_bearer(token).await {
        Ok(access) => access,
        Err(why) => return challenge(proxy, StatusCode::UNAUTHORIZED, Some(("invalid_token", &why))),
    };
    let required = &proxy.config().gateway.required_scopes;
    if !required.is_empty() && !Scopes::from_list(required).is_subset_of(&access.scopes()) {
        return challenge(
            proxy,
            StatusCode::FORBIDDEN,
            Some(("insufficient_scope", "the token lacks a scope this server requires")),
        );
    }
    let upstream_token = match proxy.upstream_access_token(&access).await {
        Ok(token) => token,
        Err(RefreshFailed::Refused(why)) => {
            return challenge(proxy, StatusCode::UNAUTHORIZED, Some(("invalid_token", &why)));
        }
        Err(RefreshFailed::Unavailable(why)) => {
            log::warn!("upstream token refresh for the gateway failed: {why}");
            return json_rpc_error(
                StatusCode::SERVICE_UNAVAILABLE,
                -32603,
                "the upstream authorization server is unavailable; try again shortly",
            );
        }
    };
    let tail = req
        .match_info()
        .get("tail")
        .map(|t| format!("/{t}"))
        .unwrap_or_default();
    match gateway.forward(req, body, &upstream_token, &tail).await {
        Ok(Forwarded::Response(response)) => response,
        Ok(Forwarded::TokenRefused) => challenge(
            proxy,
            StatusCode::UNAUTHORIZED,
            Some((
                "invalid_token",
                "the MCP server refused the upstream token; authorize again",
            )),
        ),
        Err(e) => {
            log::warn!("gateway: {e}");
            actix_web::ResponseError::error_response(&e)
        }
    }
}
