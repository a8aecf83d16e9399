//! The MCP gateway: forwards an authorized request to the MCP server with the
//! upstream access token, and streams the answer back.
//!
//! - Request headers are forwarded from an allow-list (what MCP's streamable
//!   HTTP transport needs); the client's `Authorization` (the proxy JWT) and
//!   `Cookie` never are.
//! - Responses are streamed chunk by chunk (SSE included) with back-pressure:
//!   actix-web pulls the next chunk from the backend only when the client's
//!   socket takes it, and a client that goes away drops the backend connection.
//! - One pooled client per worker thread (awc clients are not `Send`).

use std::cell::RefCell;
use std::time::Duration;

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse};
use url::Url;

use crate::config::GatewayConfig;

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
/// shape, and V8's property caches stop working: the TypeScript SDK server
/// lost about 4% of its throughput to that (load benchmark, real-server rows).
/// A clone keeps its original's seed; an API test checks the order holds.
fn seeded_header_map() -> HeaderMap {
    static SEEDED: std::sync::LazyLock<HeaderMap> = std::sync::LazyLock::new(HeaderMap::new);
    SEEDED.clone()
}

/// RFC 9110 §7.6.1 hop-by-hop headers, plus cookies for the backend's own
/// origin, which must not be set on the proxy's.
const DROPPED_RESPONSE_HEADERS: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "set-cookie",
];

/// Most simultaneous connections to the MCP server per worker (SSE streams
/// each hold one).
const MAX_BACKEND_CONNECTIONS: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("no MCP server is configured (OAUTH_PROXY_MCP_UPSTREAM_URL)")]
    NotConfigured,
    #[error("the MCP server could not be reached: {0}")]
    Unavailable(String),
    #[error("the MCP server did not answer within {0:?}")]
    Timeout(Duration),
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::NotConfigured | GatewayError::Unavailable(_) => StatusCode::BAD_GATEWAY,
            GatewayError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }
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

impl actix_web::ResponseError for GatewayError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse {
        // -32603: internal error (JSON-RPC 2.0 §5.1); the status says which.
        json_rpc_error(self.status(), -32603, &self.to_string())
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
    backend: Option<Url>,
    connect_timeout: Duration,
    response_timeout: Duration,
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
        Gateway {
            backend: config.upstream_url.clone(),
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
        }
    }

    /// The backend URL for a request path below the MCP path.
    fn target(&self, tail: &str, query: &str) -> Result<String, GatewayError> {
        let backend = self.backend.as_ref().ok_or(GatewayError::NotConfigured)?;
        let mut target = backend.as_str().trim_end_matches('/').to_string();
        if backend.path() == "/" && tail.is_empty() {
            target.push('/');
        }
        target.push_str(tail);
        if !query.is_empty() {
            target.push('?');
            target.push_str(query);
        }
        Ok(target)
    }

    /// Forwards a request with `Authorization: Bearer <upstream_token>`.
    pub async fn forward(
        &self,
        req: &HttpRequest,
        body: Bytes,
        upstream_token: &str,
        tail: &str,
    ) -> Result<Forwarded, GatewayError> {
        let target = self.target(tail, req.query_string())?;
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
        for name in forwarded_request_headers() {
            for value in req.headers().get_all(name) {
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
        for (name, value) in response.headers() {
            if !DROPPED_RESPONSE_HEADERS.contains(&name.as_str()) {
                answer.append_header((name.clone(), value.clone()));
            }
        }
        Ok(Forwarded::Response(answer.streaming(response)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(backend: &str) -> Gateway {
        Gateway {
            backend: Some(Url::parse(backend).unwrap()),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn paths_below_the_mcp_path_map_below_the_backend_url() {
        let g = gateway("http://127.0.0.1:3000/mcp");
        assert_eq!(g.target("", "").unwrap(), "http://127.0.0.1:3000/mcp");
        assert_eq!(g.target("/x", "a=1").unwrap(), "http://127.0.0.1:3000/mcp/x?a=1");
        let root = gateway("http://127.0.0.1:3000");
        assert_eq!(root.target("", "").unwrap(), "http://127.0.0.1:3000/");
    }
}
