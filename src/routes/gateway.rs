//! The guarded MCP endpoint (`OAUTH_PROXY_MCP_PATH` and below).
//!
//! MCP authorization spec: no or bad token → 401 with
//! `WWW-Authenticate: Bearer resource_metadata="…"` (+ `error="invalid_token"`
//! when a token was sent); insufficient scope → 403. A store that cannot be
//! asked about the token → 503 with `Retry-After` (the token is not blamed,
//! so clients keep it). MCP transport spec: an `Origin` that is not allowed
//! gets 403 (DNS rebinding); `OPTIONS` is a CORS preflight and never needs a
//! token; GET, POST and DELETE are forwarded, any other method gets 405.
//!
//! Everything is decided from the request head before the body is read: an
//! unauthorized client never gets to send one. An authorized one has
//! `OAUTH_PROXY_MCP_RESPONSE_TIMEOUT` to send at most
//! `OAUTH_PROXY_MCP_MAX_BODY` bytes (408, 413 otherwise).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::body::{BodySize, BoxBody, MessageBody};

use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::web::{Bytes, BytesMut};
use actix_web::{dev, web, HttpRequest, HttpResponse};
use futures_util::StreamExt;

use super::client_auth::bearer_token;
use super::errors::{bearer_challenge, json_rpc_error, json_rpc_error_for, step_up_challenge, BearerRefusal};
use crate::audit::{Event, EventKind, McpCall, Outcome, RequestContext};
use crate::gateway::call::{self, Message, Param, MAX_BATCH};
use crate::gateway::filter::ToolsListFilter;
use crate::gateway::headers::{self, HEADER_MISMATCH};
use crate::gateway::{check_tail, Forwarded, Gateway, GatewayError};
use crate::oauth::scope::Scopes;
use crate::proxy::upstream_refresh::RefreshFailed;
use crate::proxy::{AccessGrant, BearerRefused, OAuthProxy};

/// Request headers a browser may send (CORS preflight), besides every
/// `Mcp-Param-{Name}` header it asks for.
const ALLOWED_HEADERS: &str =
    "Authorization, Content-Type, Accept, Mcp-Session-Id, MCP-Protocol-Version, Last-Event-ID, Mcp-Method, Mcp-Name";
const ALLOWED_METHODS: &str = "GET, POST, DELETE, OPTIONS";
/// Seconds a client is asked to wait after a 503.
const RETRY_AFTER_SECS: &str = "5";
/// A body announced up to this size that arrived with the request head is
/// let through the connection's decoder before an early answer, so the
/// connection stays open for the next request (actix closes a connection
/// whose request body was left unread). Never waited for.
const EARLY_ANSWER_DISCARD: u64 = 64 * 1024;
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

/// The request body, until it is read.
struct Body {
    payload: dev::Payload,
    read: bool,
}

pub async fn mcp(
    req: HttpRequest,
    ctx: RequestContext,
    payload: web::Payload,
    proxy: web::Data<OAuthProxy>,
    gateway: web::Data<Gateway>,
) -> HttpResponse {
    let started = Instant::now();
    let mut body = Body {
        payload: payload.into_inner(),
        read: false,
    };
    let mut admitted = None;
    let response = match check_origin(&req, &proxy) {
        Ok(origin) => {
            let mut response = guarded(&req, &ctx, &mut body, &proxy, &gateway, &mut admitted).await;
            add_cors(response.headers_mut(), &origin);
            response
        }
        Err(()) => refuse(
            &proxy,
            &ctx,
            None,
            "Origin not allowed",
            json_rpc_error(StatusCode::FORBIDDEN, -32000, "Origin not allowed"),
        ),
    };
    // A request whose token was accepted is recorded when its answer has
    // been sent (or the client went away).
    let response = match admitted {
        Some(event) => audited(response, event, started, proxy.into_inner()),
        None => response,
    };
    if !body.read && announced_length(&req).is_some_and(|length| (1..=EARLY_ANSWER_DISCARD).contains(&length)) {
        // Answered from the head alone: one turn lets the connection take in
        // a small body that came with the head (nothing waits for it).
        YieldOnce(false).await;
    }
    response
}

/// Returns `Pending` once (after asking to be polled again), then `Ready`.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// The request's `Content-Length`, when it has a valid one.
fn announced_length(req: &HttpRequest) -> Option<u64> {
    req.headers().get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// The CORS preflight: the methods forwarded, and the request headers
/// allowed: the fixed list, plus each `Mcp-Param-{Name}` header the browser
/// asks for (`Access-Control-Allow-Headers` has no prefix wildcard, so each
/// is named).
fn preflight(req: &HttpRequest) -> HttpResponse {
    let requested = req
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut allowed = None::<String>;
    for name in requested.split(',').map(str::trim) {
        let param = name.len() > "mcp-param-".len()
            && name.as_bytes()[.."mcp-param-".len()].eq_ignore_ascii_case(b"mcp-param-");
        let token = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if param && token {
            let list = allowed.get_or_insert_with(|| String::from(ALLOWED_HEADERS));
            list.push_str(", ");
            list.push_str(name);
        }
    }
    let allowed = match allowed.map(HeaderValue::try_from) {
        Some(Ok(value)) => value,
        _ => HeaderValue::from_static(ALLOWED_HEADERS),
    };
    HttpResponse::NoContent()
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, ALLOWED_METHODS))
        .insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, allowed))
        .insert_header((header::ACCESS_CONTROL_MAX_AGE, "86400"))
        .finish()
}

/// A 503 that asks the client to come back, keeping its token.
fn unavailable(message: &str) -> HttpResponse {
    let mut response = json_rpc_error(StatusCode::SERVICE_UNAVAILABLE, -32603, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
    response
}

/// Why a request body was not read whole.
enum BodyFailed {
    TooLarge,
    TimedOut,
    Broken,
}

/// Reads the body: at most `max` bytes (the announced length is checked
/// before anything is read), all of it within `timeout`.
async fn read_body(
    req: &HttpRequest,
    body: &mut Body,
    max: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, BodyFailed> {
    let announced = announced_length(req);
    if announced.is_some_and(|length| length > max as u64) {
        return Err(BodyFailed::TooLarge);
    }
    body.read = true;
    let payload = &mut body.payload;
    let read = async {
        let mut bytes = BytesMut::with_capacity(announced.unwrap_or(0) as usize);
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|_| BodyFailed::Broken)?;
            if bytes.len() + chunk.len() > max {
                return Err(BodyFailed::TooLarge);
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes.freeze())
    };
    // The timer is only armed when the body has not all arrived yet.
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Err(BodyFailed::TimedOut))
}

/// Records a refused request (`request.refused`) and answers `response`,
/// or a 503 when a required audit trail cannot take the event.
fn refuse(
    proxy: &OAuthProxy,
    ctx: &RequestContext,
    access: Option<&AccessGrant>,
    reason: &str,
    response: HttpResponse,
) -> HttpResponse {
    let mut event = Event::new(EventKind::RequestRefused, Outcome::Refused, ctx)
        .status(response.status().as_u16())
        .reason(reason);
    if let Some(access) = access {
        let grant = access.grant();
        event = event
            .client(grant.client_id.clone(), None)
            .subject(grant.subject.clone(), None)
            .grant(access.grant_id());
    }
    match proxy.record(event) {
        Ok(()) => response,
        Err(_) => audit_unavailable(),
    }
}

fn audit_unavailable() -> HttpResponse {
    unavailable("the audit trail is unavailable; try again shortly")
}

/// Wraps the answer's body so the request's `mcp.request` event is
/// recorded once the body has been sent whole, or dropped before.
fn audited(response: HttpResponse, event: Event, started: Instant, proxy: Arc<OAuthProxy>) -> HttpResponse {
    let status = response.status().as_u16();
    response.map_body(|_, body| {
        BoxBody::new(AuditedBody {
            body,
            sent: 0,
            ended: false,
            pending: Some(Pending {
                event,
                status,
                started,
                proxy,
            }),
        })
    })
}

/// An `mcp.request` event waiting for the end of its answer.
struct Pending {
    event: Event,
    status: u16,
    started: Instant,
    proxy: Arc<OAuthProxy>,
}

/// An answer's body, counted as it streams (SSE included).
struct AuditedBody {
    body: BoxBody,
    sent: u64,
    ended: bool,
    pending: Option<Pending>,
}

impl AuditedBody {
    fn finish(&mut self) {
        let Some(Pending {
            mut event,
            status,
            started,
            proxy,
        }) = self.pending.take()
        else {
            return;
        };
        if !self.ended {
            event.reason = Some(match event.reason.take() {
                Some(reason) => format!("{reason}; the answer was cut short"),
                None => "the answer was cut short (the client went away or the stream failed)".into(),
            });
        }
        if let Some(call) = &mut event.mcp {
            call.status = status;
            call.duration_ms = started.elapsed().as_millis() as u64;
            call.bytes_out = self.sent;
        }
        event.status = Some(status);
        event.outcome = if status < 400 && self.ended {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        // The answer is gone: a required trail that cannot take the event
        // can only be logged (the gateway asked it before forwarding).
        if let Err(e) = proxy.record(event) {
            log::warn!("an MCP request was not audited: {e}");
        }
    }
}

impl MessageBody for AuditedBody {
    type Error = <BoxBody as MessageBody>::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(chunk))) => this.sent += chunk.len() as u64,
            Poll::Ready(None) => {
                this.ended = true;
                this.finish();
            }
            Poll::Ready(Some(Err(_))) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }
}

impl Drop for AuditedBody {
    fn drop(&mut self) {
        // A body actix never polled to its end (nothing to send for a HEAD
        // or a 204, or a client gone): an empty body counts as sent.
        if matches!(self.body.size(), BodySize::None | BodySize::Sized(0)) {
            self.ended = true;
        }
        self.finish();
    }
}

async fn guarded(
    req: &HttpRequest,
    ctx: &RequestContext,
    body: &mut Body,
    proxy: &OAuthProxy,
    gateway: &Gateway,
    admitted: &mut Option<Event>,
) -> HttpResponse {
    let method = req.method();
    if method == Method::OPTIONS {
        return preflight(req);
    }
    if method != Method::POST && method != Method::GET && method != Method::DELETE {
        let mut response = json_rpc_error(StatusCode::METHOD_NOT_ALLOWED, -32600, "method not allowed");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
        return response;
    }
    // The raw path, before any percent-decoding: what the MCP server gets.
    let tail = req
        .uri()
        .path()
        .strip_prefix(proxy.config().mcp_path.as_str())
        .filter(|tail| tail.is_empty() || tail.starts_with('/'));
    let Some(tail) = tail else {
        // An encoded form of the MCP path itself (`/%6Dcp`).
        let error = GatewayError::PathRefused(crate::gateway::PathRefused::Outside);
        return actix_web::ResponseError::error_response(&error);
    };
    if let Err(why) = check_tail(tail) {
        return actix_web::ResponseError::error_response(&GatewayError::PathRefused(why));
    }
    let Some(token) = bearer_token(req) else {
        let challenge = bearer_challenge(proxy.config(), BearerRefusal::Missing);
        return refuse(proxy, ctx, None, "no bearer token", challenge);
    };
    let access = match proxy.check_bearer(token).await {
        Ok(access) => access,
        Err(BearerRefused::Invalid(why)) => {
            let challenge = bearer_challenge(proxy.config(), BearerRefusal::InvalidToken(&why));
            return refuse(proxy, ctx, None, &why, challenge);
        }
        Err(BearerRefused::Unavailable(why)) => {
            log::error!("gateway: the token store could not be asked: {why}");
            return unavailable("the authorization server is unavailable; try again shortly");
        }
    };
    let required = &proxy.config().gateway.required_scopes;
    if !required.is_empty() && !Scopes::from_list(required).is_subset_of(&access.scopes()) {
        let why = "the token lacks a scope this server requires";
        let challenge = bearer_challenge(proxy.config(), BearerRefusal::InsufficientScope(why));
        return refuse(proxy, ctx, Some(&access), why, challenge);
    }
    // Fail closed: a request the trail cannot record is not forwarded.
    if proxy.config().operations.audit_required && !proxy.audit().accepting() {
        return audit_unavailable();
    }
    let grant = access.grant();
    let client_name = proxy.client_name(&grant.client_id).await;
    let mut event = Event::new(EventKind::McpRequest, Outcome::Success, ctx)
        .client(grant.client_id.clone(), client_name)
        .subject(grant.subject.clone(), None)
        .grant(access.grant_id());
    event.mcp = Some(McpCall::default());
    let event = admitted.insert(event);
    let target = match gateway.target(tail, req.query_string()) {
        Ok(target) => target,
        Err(e) => {
            log::warn!("gateway: {e}");
            return actix_web::ResponseError::error_response(&e);
        }
    };
    let bytes = match read_body(req, body, gateway.max_body(), gateway.body_timeout()).await {
        Ok(bytes) => bytes,
        // JSON-RPC 2.0 §5.1 -32600: the request is not acceptable.
        Err(BodyFailed::TooLarge) => {
            return json_rpc_error(StatusCode::PAYLOAD_TOO_LARGE, -32600, "the request body is too large")
        }
        Err(BodyFailed::TimedOut) => {
            return json_rpc_error(
                StatusCode::REQUEST_TIMEOUT,
                -32600,
                "the request body did not arrive in time",
            )
        }
        Err(BodyFailed::Broken) => {
            return json_rpc_error(StatusCode::BAD_REQUEST, -32600, "the request body could not be read")
        }
    };
    let message = call::read(&bytes);
    if let Some(call) = &mut event.mcp {
        let summary = message.summary();
        call.method = summary.method;
        call.name = summary.name;
        call.bytes_in = bytes.len() as u64;
        if let Some(count) = summary.batch {
            event.reason = Some(format!("a batch of {count}: the first one's method and name"));
        }
    }
    if method == Method::POST || !bytes.is_empty() {
        if let Some(refusal) = check_call(req, proxy, &access, &message, bytes.is_empty()) {
            let mut refused = admitted.take().and_then(|e| e.mcp).unwrap_or_default();
            refused.status = refusal.response.status().as_u16();
            if let Some(name) = refusal.name {
                refused.name = Some(name);
            }
            return refuse_call(proxy, ctx, &access, refused, &refusal.reason, refusal.response);
        }
    }
    let upstream_token = match proxy.upstream_access_token(&access, ctx).await {
        Ok(token) => token,
        Err(RefreshFailed::Refused(why)) => {
            *admitted = None;
            let challenge = bearer_challenge(proxy.config(), BearerRefusal::InvalidToken(&why));
            return refuse(proxy, ctx, Some(&access), &why, challenge);
        }
        Err(RefreshFailed::Unavailable(why)) => {
            log::warn!("upstream token refresh for the gateway failed: {why}");
            return unavailable("the upstream authorization server is unavailable; try again shortly");
        }
    };
    let tools_list = tools_list_filter(proxy, method, &bytes, &access);
    match gateway.forward(req, target, bytes, &upstream_token).await {
        Ok(Forwarded::Response(response)) => match tools_list {
            Some(filter) => gateway.filter_tools_list(response, filter).await,
            None => response,
        },
        Ok(Forwarded::TokenRefused) => {
            *admitted = None;
            let why = "the MCP server refused the upstream token; authorize again";
            let challenge = bearer_challenge(proxy.config(), BearerRefusal::InvalidToken(why));
            refuse(proxy, ctx, Some(&access), why, challenge)
        }
        Err(e) => {
            log::warn!("gateway: {e}");
            actix_web::ResponseError::error_response(&e)
        }
    }
}

/// The `tools/list` filter for this request (`OAUTH_PROXY_MCP_FILTER_TOOLS_LIST`
/// with tool scopes set, and a body that is a `tools/list` request, or a
/// GET: its stream may replay `tools/list` answers); `None` leaves the
/// answer streaming untouched.
fn tools_list_filter(
    proxy: &OAuthProxy,
    method: &Method,
    body: &Bytes,
    access: &AccessGrant,
) -> Option<ToolsListFilter> {
    let gateway = &proxy.config().gateway;
    if !gateway.filter_tools_list || gateway.tool_scopes.is_empty() {
        return None;
    }
    let (rules, granted) = (gateway.tool_scopes.clone(), access.scopes());
    let may_call = move |name: &str| rules.may_call(&granted, name);
    if *method == Method::GET {
        return Some(ToolsListFilter::for_stream(may_call));
    }
    ToolsListFilter::for_request(body, may_call)
}

/// A request refused after its body was read: the answer, why (for the
/// audit trail), and the name refused when it was one.
struct CallRefused {
    response: HttpResponse,
    reason: String,
    name: Option<String>,
}

/// The checks on a request's body before it is forwarded: its
/// 2026-07-28 headers against the body (400 `HeaderMismatch`), then, with
/// `OAUTH_PROXY_MCP_TOOL_SCOPES` and token swap, the scopes each tool,
/// prompt or resource it names needs (403 step-up challenge). Every
/// decision reads the body; a batch is checked element by element and
/// refused whole when one element is.
fn check_call(
    req: &HttpRequest,
    proxy: &OAuthProxy,
    access: &AccessGrant,
    message: &Message<'_>,
    empty: bool,
) -> Option<CallRefused> {
    let id = message.id();
    if let Err(headers::Mismatch(why)) = headers::check(req.headers(), message) {
        return Some(CallRefused {
            response: json_rpc_error_for(StatusCode::BAD_REQUEST, id, HEADER_MISMATCH, &why),
            reason: why,
            name: None,
        });
    }
    let config = proxy.config();
    let rules = &config.gateway.tool_scopes;
    // Pass-through tokens are the upstream's: their scopes cannot be read
    // (configuration refuses tool scopes without token swap).
    if rules.is_empty() || !config.token_swap || empty {
        return None;
    }
    let invalid = |code: i64, why: &str| {
        Some(CallRefused {
            response: json_rpc_error_for(StatusCode::BAD_REQUEST, id.clone(), code, why),
            reason: why.to_string(),
            name: None,
        })
    };
    match message {
        // JSON-RPC 2.0 §5.1: -32700 parse error, -32600 invalid request.
        Message::Unreadable => return invalid(-32700, "the body is not JSON the gateway can check"),
        _ if message.too_long() => {
            return invalid(
                -32600,
                &format!("a batch of more than {MAX_BATCH} requests is not accepted"),
            )
        }
        _ => {}
    }
    let granted = access.scopes();
    let mut needed = crate::oauth::scope::Scopes::default();
    let mut refused: Vec<&str> = Vec::new();
    for call in message.calls() {
        let name = match call.target() {
            None => continue,
            Some(Param::Text(name)) => name.as_ref(),
            // A name the gateway cannot read is not one it can allow.
            Some(Param::Other) => {
                return invalid(
                    -32602,
                    "the tool, prompt or resource named (params.name, params.uri or params.ref) must be a string",
                )
            }
            Some(Param::Absent) => "",
        };
        let required = rules.required(name);
        if required.is_empty() {
            continue;
        }
        if !required.is_subset_of(&granted) {
            refused.push(name);
        }
        for scope in required.iter() {
            needed.insert(scope);
        }
    }
    if refused.is_empty() {
        return None;
    }
    let shown: String = refused.join(", ").chars().take(200).collect();
    let why = if message.calls().len() > 1 {
        format!("the token lacks a scope that {shown} needs; the batch is refused whole")
    } else {
        format!("the token lacks a scope that {shown} needs")
    };
    Some(CallRefused {
        response: step_up_challenge(config, &needed, id, &why),
        name: Some(shown),
        reason: why,
    })
}

/// Records a call refused after its body was read (`request.refused`, with
/// the method and name) and answers `response`.
fn refuse_call(
    proxy: &OAuthProxy,
    ctx: &RequestContext,
    access: &AccessGrant,
    call: McpCall,
    reason: &str,
    response: HttpResponse,
) -> HttpResponse {
    let grant = access.grant();
    let mut event = Event::new(EventKind::RequestRefused, Outcome::Refused, ctx)
        .status(response.status().as_u16())
        .reason(reason)
        .client(grant.client_id.clone(), None)
        .subject(grant.subject.clone(), None)
        .grant(access.grant_id());
    event.mcp = Some(call);
    match proxy.record(event) {
        Ok(()) => response,
        Err(_) => audit_unavailable(),
    }
}
