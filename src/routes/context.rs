//! Who sent a request, for the audit trail: its request id, the client
//! address and the user agent ([`RequestContext`] is an extractor).

use std::convert::Infallible;
use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::http::header::{HeaderName, USER_AGENT};
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};

use crate::audit::RequestContext;
use crate::client_address::{ClientAddress, TrustedProxies};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest incoming request id kept, and the most of a user agent recorded.
const MAX_REQUEST_ID: usize = 128;
const MAX_USER_AGENT: usize = 256;

/// A request's id: one a trusted proxy sent, or a new random one. Worked
/// out once and kept in the request's extensions (the response header, the
/// access log and the audit events share it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    pub fn of(req: &HttpRequest) -> RequestId {
        if let Some(known) = req.extensions().get::<RequestId>() {
            return known.clone();
        }
        let id = incoming_id(req).unwrap_or_else(|| crate::crypto::random_token(12));
        let id = RequestId(id);
        req.extensions_mut().insert(id.clone());
        id
    }
}

/// The `X-Request-Id` a trusted proxy sent, when it is a sane token.
fn incoming_id(req: &HttpRequest) -> Option<String> {
    let peer = req.peer_addr()?.ip();
    let trusted = req.app_data::<web::Data<TrustedProxies>>()?;
    if !trusted.contains(peer) {
        return None;
    }
    let value = req.headers().get(&X_REQUEST_ID)?.to_str().ok()?;
    let sane = !value.is_empty()
        && value.len() <= MAX_REQUEST_ID
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=".contains(&b));
    sane.then(|| value.to_string())
}

/// The audit context of a request.
pub fn request_context(req: &HttpRequest) -> RequestContext {
    let user_agent = req
        .headers()
        .get(USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().take(MAX_USER_AGENT).collect());
    RequestContext {
        request_id: RequestId::of(req).0,
        client_address: ClientAddress::of(req).to_string(),
        user_agent,
    }
}

impl FromRequest for RequestContext {
    type Error = Infallible;
    type Future = Ready<Result<RequestContext, Infallible>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(request_context(req)))
    }
}
