//! `POST /revoke`: RFC 7009 token revocation.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

use super::add_cors_headers;
use super::client_auth::{client_credentials, form_params};
use super::token::refused;
use crate::audit::RequestContext;
use crate::error::Error;
use crate::proxy::OAuthProxy;

async fn revoke_request(
    req: &HttpRequest,
    body: &[u8],
    proxy: &OAuthProxy,
    ctx: &RequestContext,
    client_id: &mut Option<String>,
) -> Result<(), Error> {
    let mut params = form_params(req, body, "revocation")?;
    // RFC 7009 §2.1: the client authenticates as at the token endpoint.
    let credentials = client_credentials(req, &mut params)?;
    *client_id = Some(credentials.client_id.clone());
    let client = proxy.authenticate_client(&credentials).await?;
    let token = params
        .take("token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Error::invalid_request("`token` is required"))?;
    proxy
        .revoke_token(&client, &token, params.get("token_type_hint"), ctx)
        .await
}

pub async fn revoke(
    req: HttpRequest,
    ctx: RequestContext,
    body: web::Bytes,
    proxy: web::Data<OAuthProxy>,
) -> HttpResponse {
    let mut client_id = None;
    let answer = revoke_request(&req, &body, &proxy, &ctx, &mut client_id).await;
    let mut response = match refused(&proxy, &ctx, client_id, answer) {
        // §2.2: 200 also for tokens that were invalid or unknown.
        Ok(()) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish(),
        Err(e) => actix_web::ResponseError::error_response(&e),
    };
    add_cors_headers(response.headers_mut());
    response
}
