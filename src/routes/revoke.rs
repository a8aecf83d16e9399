//! `POST /revoke`: RFC 7009 token revocation.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use super::add_cors_headers;
use super::client_auth::{client_credentials, form_params};
use crate::error::Error;
use crate::proxy::OAuthProxy;

async fn revoke_request(req: &HttpRequest, body: &[u8], proxy: &OAuthProxy) -> Result<(), Error> {
    let mut params = form_params(req, body, "revocation")?;
    // RFC 7009 §2.1: the client authenticates as at the token endpoint.
    let credentials = client_credentials(req, &mut params)?;
    let client = proxy.authenticate_client(&credentials).await?;
    let token = params
        .take("token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Error::invalid_request("`token` is required"))?;
    proxy.revoke_token(&client, &token, params.get("token_type_hint")).await
}

pub async fn revoke(req: HttpRequest, body: web::Bytes, proxy: web::Data<OAuthProxy>) -> HttpResponse {
    let mut response = match revoke_request(&req, &body, &proxy).await {
        // §2.2: 200 also for tokens that were invalid or unknown.
        Ok(()) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish(),
        Err(e) => actix_web::ResponseError::error_response(&e),
    };
    add_cors_headers(response.headers_mut());
    response
}
