//! `POST /register`: RFC 7591 dynamic client registration.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use super::add_cors_headers;
use crate::error::{Error, ErrorCode};
use crate::oauth::client::RegistrationRequest;
use crate::proxy::OAuthProxy;

/// Registration documents are small; anything bigger is refused unread.
pub const MAX_REGISTRATION_BODY: usize = 16 * 1024;

pub async fn register(req: HttpRequest, body: web::Bytes, proxy: web::Data<OAuthProxy>) -> Result<HttpResponse, Error> {
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
        let client_ip = req.peer_addr().map(|a| a.ip());
        let answer = proxy.register_client(request, client_ip).await?;
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
