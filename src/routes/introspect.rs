//! `POST /introspect`: RFC 7662 token introspection, for resource servers
//! (Bearer `OAUTH_PROXY_INTROSPECTION_SECRET`) and registered confidential
//! clients (their own tokens only).

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use secrecy::ExposeSecret;

use super::client_auth::{bearer_token, client_credentials, form_params};
use crate::crypto::constant_time_eq;
use crate::error::Error;
use crate::proxy::{IntrospectionCaller, OAuthProxy};

async fn introspect_request(req: &HttpRequest, body: &[u8], proxy: &OAuthProxy) -> Result<serde_json::Value, Error> {
    let mut params = form_params(req, body, "introspection")?;
    // §2.1: the endpoint requires authorization.
    let caller = match (bearer_token(req), &proxy.config().introspection_secret) {
        (Some(given), Some(secret)) if constant_time_eq(given.as_bytes(), secret.expose_secret().as_bytes()) => {
            IntrospectionCaller::ResourceServer
        }
        (Some(_), _) => return Err(Error::invalid_client("introspection authorization failed", false)),
        (None, _) => {
            let credentials = client_credentials(req, &mut params)?;
            let client = proxy.authenticate_client(&credentials).await?;
            if !client.token_endpoint_auth_method.is_confidential() {
                return Err(Error::invalid_client(
                    "public clients cannot introspect tokens",
                    credentials.via_basic,
                ));
            }
            IntrospectionCaller::Client(client.client_id.clone())
        }
    };
    let token = params
        .take("token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Error::invalid_request("`token` is required"))?;
    proxy.introspect(&caller, &token).await
}

pub async fn introspect(req: HttpRequest, body: web::Bytes, proxy: web::Data<OAuthProxy>) -> HttpResponse {
    match introspect_request(&req, &body, &proxy).await {
        Ok(answer) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(answer),
        Err(e) => actix_web::ResponseError::error_response(&e),
    }
}
