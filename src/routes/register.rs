//! `POST /register`: RFC 7591 dynamic client registration.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use super::add_cors_headers;
use crate::audit::RequestContext;
use crate::client_address::ClientAddress;
use crate::error::{Error, ErrorCode};
use crate::oauth::client::RegistrationRequest;
use crate::proxy::OAuthProxy;

/// Registration documents are small; anything bigger is refused unread.
pub const MAX_REGISTRATION_BODY: usize = 16 * 1024;

pub async fn register(
    req: HttpRequest,
    client: ClientAddress,
    ctx: RequestContext,
    body: web::Bytes,
    proxy: web::Data<OAuthProxy>,
) -> Result<HttpResponse, Error> {
    let result = async {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("application/json"));
        if !is_json {
            return Err(Error::invalid_request("registration requests must be application/json"));
        }
        let request: RegistrationRequest = serde_json::from_slice(&body).map_err(|e| {
            Error::oauth(
                ErrorCode::InvalidClientMetadata,
                format!("the registration document is not valid: {e}"),
            )
        })?;
        // The client behind any trusted proxies, not the socket peer: the
        // registration limit counts per client address.
        let answer = proxy.register_client(request, client.ip(), &ctx).await?;
        Ok(HttpResponse::Created()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::PRAGMA, "no-cache"))
            .json(answer))
    }
    .await;
    let mut response = result.unwrap_or_else(|e| actix_web::ResponseError::error_response(&e));
    add_cors_headers(response.headers_mut());
    Ok(response)
}
