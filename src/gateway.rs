//! The MCP gateway: forwards an authorized request to the MCP server with the
//! upstream access token, and streams the answer back.
//!
//! - Only a path that stays below the MCP endpoint is forwarded, as the
//!   client sent it (percent-encoding untouched): no dot segment (`.`, `..`,
//!   encoded or not, also before a `;` parameter), no encoded `?` `#` `/`
//!   `\`, no backslash, no control character (raw or encoded), no broken
//!   percent-encoding ([`check_tail`]). The URL built is checked once more
//!   to lie below the MCP server's URL ([`Gateway::target`]).
//! - Request headers are forwarded from an allow-list (what MCP's streamable
//!   HTTP transport needs) plus every `Mcp-Param-{Name}` header; the
//!   client's `Authorization` (the proxy JWT) and `Cookie` never are, nor a
//!   header the client names in `Connection` (RFC 9110 §7.6.1).
//! - Response headers: hop-by-hop ones (the fixed list and those the MCP
//!   server names in `Connection`), `Set-Cookie`, `Location` (the MCP
//!   server's own addresses) and `Access-Control-*` (the proxy sets its own
//!   CORS) stay at the proxy.
//! - Responses are streamed chunk by chunk (SSE included) with back-pressure:
//!   actix-web pulls the next chunk from the backend only when the client's
//!   socket takes it, and a client that goes away drops the backend connection.
//! - A failure is answered with a fixed message; the HTTP client's error
//!   (addresses, OS errors) goes to the log only.
//! - One pooled client per worker thread (awc clients are not `Send`).

use std::cell::RefCell;
use std::time::Duration;

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode, Uri};
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse};
use url::Url;

use crate::config::GatewayConfig;
pub use path::{check_tail, PathRefused};

pub mod call;
pub mod filter;
pub mod headers;
mod path;
pub mod policy;
#[cfg(test)]
mod tests;

/// Request headers passed to the MCP server (MCP transport spec and content
/// negotiation). Everything else stays at the proxy.
const FORWARDED_REQUEST_HEADERS: [&str; 9] = [
    "content-type",
    "accept",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
    "mcp-method",
    "mcp-name",
    "user-agent",
    "accept-language",
];

/// [`FORWARDED_REQUEST_HEADERS`] parsed once, not on every request.
fn forwarded_request_headers() -> &'static [HeaderName] {
    static NAMES: std::sync::LazyLock<Vec<HeaderName>> =
        std::sync::LazyLock::new(|| FORWARDED_REQUEST_HEADERS.map(HeaderName::from_static).to_vec());
    &NAMES
}

/// An empty header map that shares one hash seed with every other one made
/// here, so the same headers, inserted in the same order, are written in the
/// same order on every request.
///
/// A new map gets a random seed, so its headers went out in a random order.
/// A Node MCP server then builds every request's header object with a new
/// shape, and V8's property caches stop working, which costs the TypeScript
/// SDK server measurable throughput (the load benchmark's real-server rows).
/// A clone keeps its original's seed; an API test checks the order holds.
fn seeded_header_map() -> HeaderMap {
    static SEEDED: std::sync::LazyLock<HeaderMap> = std::sync::LazyLock::new(HeaderMap::new);
    SEEDED.clone()
}

/// RFC 9110 §7.6.1 hop-by-hop headers, plus cookies for the backend's own
/// origin, which must not be set on the proxy's, and `Location`: the MCP
/// server's own address is no URL the client can use (MCP servers do not
/// redirect; a redirect is not followed either, see [`backend_client`]).
const DROPPED_RESPONSE_HEADERS: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "set-cookie",
    "location",
];

/// The prefix of the request headers that carry tool arguments (MCP
/// 2026-07-28 transport: an intermediary MUST forward them).
pub const MCP_PARAM_PREFIX: &str = "mcp-param-";

/// Whether `name` (lowercase, as `HeaderName::as_str` gives) is an
/// `Mcp-Param-{Name}` header.
pub fn is_mcp_param(name: &str) -> bool {
    name.len() > MCP_PARAM_PREFIX.len() && name.starts_with(MCP_PARAM_PREFIX)
}

/// Whether a `Connection` header of `headers` names `name` (lowercase):
/// such a header is for this hop only (RFC 9110 §7.6.1).
fn named_in_connection(headers: &HeaderMap, name: &str) -> bool {
    headers.get_all(header::CONNECTION).any(|value| {
        value
            .to_str()
            .is_ok_and(|value| value.split(',').any(|option| option.trim().eq_ignore_ascii_case(name)))
    })
}

/// Most simultaneous connections to the MCP server per worker (SSE streams
/// each hold one).
const MAX_BACKEND_CONNECTIONS: usize = 1024;

/// Why the gateway did not forward a request, or got no answer. The
/// `Display` text (with the HTTP client's error) is for the log; the client
/// gets [`GatewayError::public_message`].
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("no MCP server is configured (OAUTH_PROXY_MCP_UPSTREAM_URL)")]
    NotConfigured,
    #[error("the MCP server could not be reached: {0}")]
    Unavailable(String),
    #[error("the MCP server did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the path below the MCP endpoint is refused: {0}")]
    PathRefused(PathRefused),
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::NotConfigured | GatewayError::Unavailable(_) => StatusCode::BAD_GATEWAY,
            GatewayError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::PathRefused(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// What the client is told: fixed text, never the HTTP client's error
    /// (which names the MCP server's address).
    pub fn public_message(&self) -> &'static str {
        match self {
            GatewayError::NotConfigured => "no MCP server is configured",
            GatewayError::Unavailable(_) => "the MCP server could not be reached",
            GatewayError::Timeout(_) => "the MCP server did not answer in time",
            GatewayError::PathRefused(why) => why.message(),
        }
    }
}

thread_local! {
    static CLIENT: RefCell<Option<(Duration, awc::Client)>> = const { RefCell::new(None) };
}

fn backend_client(connect_timeout: Duration) -> awc::Client {
    CLIENT.with(|cell| {
        let mut slot = cell.borrow_mut();
        match &*slot {
            Some((timeout, client)) if *timeout == connect_timeout => client.clone(),
            _ => {
                let client = awc::Client::builder()
                    .disable_redirects()
                    .no_default_headers()
                    .connector(
                        awc::Connector::new()
                            .timeout(connect_timeout)
                            .limit(MAX_BACKEND_CONNECTIONS)
                            .rustls_0_23(crate::tls::client_config()),
                    )
                    .finish();
                *slot = Some((connect_timeout, client.clone()));
                client
            }
        }
    })
}

/// Where and how requests are forwarded.
#[derive(Debug, Clone)]
pub struct Gateway {
    backend: Option<Backend>,
    connect_timeout: Duration,
    response_timeout: Duration,
    max_body: usize,
}

/// The MCP server's URL in the pieces a request's target is built from.
#[derive(Debug, Clone)]
struct Backend {
    /// Scheme, authority and path without a trailing `/`
    /// (`http://127.0.0.1:3000/mcp`, `http://127.0.0.1:3000`).
    base: String,
    /// The path without a trailing `/` (`/mcp`, or empty for the root).
    path: String,
    /// `path` and `/`: every forwarded path starts with it (or is `path`).
    below: String,
}

/// What the MCP server answered.
pub enum Forwarded {
    /// Streamed back to the client as it comes.
    Response(HttpResponse),
    /// The MCP server refused the upstream token (401): the client must
    /// authorize again.
    TokenRefused,
}

impl Gateway {
    pub fn new(config: &GatewayConfig) -> Self {
        let backend = config.upstream_url.as_ref().map(|url: &Url| {
            // Configuration refuses a query or fragment, so the URL ends
            // with its path.
            let base = url.as_str().trim_end_matches('/').to_string();
            let path = url.path().trim_end_matches('/').to_string();
            let below = format!("{path}/");
            Backend { base, path, below }
        });
        Gateway {
            backend,
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
            max_body: config.max_body,
        }
    }

    /// Largest request body forwarded (`OAUTH_PROXY_MCP_MAX_BODY`).
    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// How long a client may take to send a request body: the same as the
    /// MCP server has to start its answer (`OAUTH_PROXY_MCP_RESPONSE_TIMEOUT`).
    pub fn body_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// The backend URL for a raw request path below the MCP path (`tail`:
    /// empty or starting with `/`, as the client sent it) and the raw query.
    /// The tail is checked segment by segment ([`check_tail`]), and the URL
    /// built is checked to have the backend's path or one below it, and
    /// exactly the client's query.
    pub fn target(&self, tail: &str, query: &str) -> Result<Uri, GatewayError> {
        let backend = self.backend.as_ref().ok_or(GatewayError::NotConfigured)?;
        check_tail(tail).map_err(GatewayError::PathRefused)?;
        let mut target = String::with_capacity(backend.base.len() + tail.len() + query.len() + 2);
        target.push_str(&backend.base);
        if backend.path.is_empty() && tail.is_empty() {
            target.push('/');
        }
        target.push_str(tail);
        if !query.is_empty() {
            target.push('?');
            target.push_str(query);
        }
        let uri = Uri::try_from(target).map_err(|_| GatewayError::PathRefused(PathRefused::BadEncoding))?;
        let path = uri.path();
        let below =
            path.starts_with(&backend.below) || path == backend.path || (backend.path.is_empty() && path == "/");
        let same_query = uri.query().unwrap_or_default() == query;
        if !below || !same_query {
            return Err(GatewayError::PathRefused(PathRefused::Outside));
        }
        Ok(uri)
    }

    /// Forwards a request to `target` (from [`Gateway::target`]) with
    /// `Authorization: Bearer <upstream_token>`.
    pub async fn forward(
        &self,
        req: &HttpRequest,
        target: Uri,
        body: Bytes,
        upstream_token: &str,
    ) -> Result<Forwarded, GatewayError> {
        let method = req.method().clone();
        let mut request = backend_client(self.connect_timeout)
            .request(method.clone(), target)
            .timeout(self.response_timeout);
        // The backend client adds no default headers, so this replaces an
        // empty map.
        let headers = request.headers_mut();
        *headers = seeded_header_map();
        let bearer = HeaderValue::try_from(format!("Bearer {upstream_token}"))
            .map_err(|_| GatewayError::Unavailable("the upstream token is not a valid header value".into()))?;
        headers.insert(header::AUTHORIZATION, bearer);
        let incoming = req.headers();
        // Almost no client sends `Connection` options besides keep-alive or
        // close; only then is every name looked up in it.
        let hop_options = incoming.contains_key(header::CONNECTION);
        let forwarded = |name: &HeaderName| !hop_options || !named_in_connection(incoming, name.as_str());
        for name in forwarded_request_headers() {
            if forwarded(name) {
                for value in incoming.get_all(name) {
                    headers.append(name.clone(), value.clone());
                }
            }
        }
        for (name, value) in incoming.iter() {
            if is_mcp_param(name.as_str()) && forwarded(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        let has_body = !body.is_empty() || method == Method::POST;
        let sent = if has_body {
            request.send_body(body).await
        } else {
            request.send().await
        };
        let response = sent.map_err(|e| match e {
            awc::error::SendRequestError::Timeout
            | awc::error::SendRequestError::Connect(awc::error::ConnectError::Timeout) => {
                GatewayError::Timeout(self.response_timeout)
            }
            other => GatewayError::Unavailable(other.to_string()),
        })?;
        if response.status() == StatusCode::UNAUTHORIZED {
            return Ok(Forwarded::TokenRefused);
        }
        let mut answer = HttpResponse::build(response.status());
        let returned = response.headers();
        let hop_options = returned.contains_key(header::CONNECTION);
        for (name, value) in returned {
            let name_str = name.as_str();
            let dropped = DROPPED_RESPONSE_HEADERS.contains(&name_str)
                || name_str.starts_with("access-control-")
                || hop_options && named_in_connection(returned, name_str);
            if !dropped {
                answer.append_header((name.clone(), value.clone()));
            }
        }
        Ok(Forwarded::Response(answer.streaming(response)))
    }
}

impl Gateway {
    /// Rewrites the MCP server's answer to a `tools/list` request to the
    /// tools the token may call (`OAUTH_PROXY_MCP_FILTER_TOOLS_LIST`, see
    /// [`filter`]). A JSON answer is read whole (at most
    /// [`filter::MAX_TOOLS_LIST_ANSWER`]), an SSE answer is filtered event by
    /// event as it streams. An answer that is not a success is left as it
    /// is; one that cannot be filtered (neither JSON nor SSE, compressed, too
    /// large, unreadable) is replaced by a 502 JSON-RPC error (an SSE answer
    /// already under way ends with an error event): passing it through would
    /// show every tool.
    pub async fn filter_tools_list(&self, response: HttpResponse, filter: filter::ToolsListFilter) -> HttpResponse {
        if !response.status().is_success() {
            return response;
        }
        let headers = response.headers();
        let essence = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let encoded = headers
            .get(header::CONTENT_ENCODING)
            .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
        // A GET that opened no stream carries no answers to filter.
        if filter.is_for_stream() && essence != "text/event-stream" {
            return response;
        }
        if encoded {
            return unfilterable(&filter, filter::Unfilterable("the tools/list answer is compressed"));
        }
        match essence.as_str() {
            "application/json" => self.filter_json(response, filter).await,
            "text/event-stream" => {
                let (mut head, body) = response.into_parts();
                // The server's length no longer holds; forwarding it marked
                // the answer unchunked, which would leave it unframed.
                head.headers_mut().remove(header::CONTENT_LENGTH);
                head.head_mut().no_chunking(false);
                let body = FilteredSse {
                    body,
                    filter: filter.sse(),
                    done: false,
                };
                head.set_body(body).map_into_boxed_body()
            }
            _ => unfilterable(
                &filter,
                filter::Unfilterable("the tools/list answer is neither JSON nor SSE"),
            ),
        }
    }

    async fn filter_json(&self, response: HttpResponse, mut filter: filter::ToolsListFilter) -> HttpResponse {
        let (mut head, body) = response.into_parts();
        let read = actix_web::body::to_bytes_limited(body, filter::MAX_TOOLS_LIST_ANSWER);
        let bytes = match tokio::time::timeout(self.response_timeout, read).await {
            Ok(Ok(Ok(bytes))) => bytes,
            Ok(Err(_)) => {
                return unfilterable(
                    &filter,
                    filter::Unfilterable("the tools/list answer is too large to filter"),
                )
            }
            Ok(Ok(Err(e))) => {
                log::warn!("gateway: the tools/list answer broke off: {e}");
                return unfilterable(&filter, filter::Unfilterable("the tools/list answer broke off"));
            }
            Err(_) => {
                return unfilterable(
                    &filter,
                    filter::Unfilterable("the tools/list answer did not arrive in time"),
                )
            }
        };
        let body = match filter.rewrite_json(&bytes) {
            Ok(None) => bytes,
            Ok(Some(rewritten)) => Bytes::from(rewritten),
            Err(why) => return unfilterable(&filter, why),
        };
        // actix announces the length of the body it sends.
        head.headers_mut().remove(header::CONTENT_LENGTH);
        head.set_body(body).map_into_boxed_body()
    }
}

/// The 502 that replaces a `tools/list` answer the proxy could not filter.
fn unfilterable(filter: &filter::ToolsListFilter, why: filter::Unfilterable) -> HttpResponse {
    log::warn!("gateway: a tools/list answer was not filtered: {}", why.0);
    HttpResponse::BadGateway().json(serde_json::json!({
        "jsonrpc": "2.0",
        "id": filter.pending_id(),
        "error": { "code": -32603, "message": format!("the MCP server's tools/list answer could not be filtered: {}", why.0) },
    }))
}

/// An SSE answer to `tools/list`, filtered as it streams.
struct FilteredSse {
    body: actix_web::body::BoxBody,
    filter: filter::SseFilter,
    done: bool,
}

impl actix_web::body::MessageBody for FilteredSse {
    type Error = <actix_web::body::BoxBody as actix_web::body::MessageBody>::Error;

    fn size(&self) -> actix_web::body::BodySize {
        actix_web::body::BodySize::Stream
    }

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Bytes, Self::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let chunk = match std::pin::Pin::new(&mut this.body).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(chunk))) if this.filter.passes_through() => return Poll::Ready(Some(Ok(chunk))),
                Poll::Ready(Some(Ok(chunk))) => this.filter.push(&chunk),
                Poll::Ready(None) => {
                    this.done = true;
                    this.filter.finish()
                }
            };
            let out = match chunk {
                Ok(out) => out,
                Err(why) => {
                    log::warn!("gateway: a tools/list answer was not filtered: {}", why.0);
                    this.done = true;
                    this.filter.error_event(why)
                }
            };
            if !out.is_empty() {
                return Poll::Ready(Some(Ok(Bytes::from(out))));
            }
        }
    }
}
