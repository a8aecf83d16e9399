//! `POST /token`: the `authorization_code` and `refresh_token` grants.
//!
//! RFC 6749 §3.2: form-encoded only, repeated parameters are an error, and
//! every answer carries `Cache-Control: no-store` and `Pragma: no-cache` (§5.1).

use std::collections::HashMap;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use url::form_urlencoded;

use super::add_cors_headers;
use crate::config::Secret;
use crate::error::{Error, ErrorCode};
use crate::proxy::{ClientCredentials, CodeExchange, OAuthProxy, RefreshExchange};

/// Token requests are small; anything bigger is refused.
pub const MAX_TOKEN_BODY: usize = 16 * 1024;

/// Parses a form body, refusing repeated parameters.
fn parse_form(body: &[u8]) -> Result<HashMap<String, String>, Error> {
    let mut params = HashMap::new();
    for (name, value) in form_urlencoded::parse(body) {
        if params.insert(name.to_string(), value.to_string()).is_some() {
            return Err(Error::invalid_request(format!("parameter `{name}` is repeated")));
        }
    }
    Ok(params)
}

/// RFC 6749 §2.3.1: HTTP Basic with form-urlencoded id and secret, or the
/// credentials in the body, but not both.
fn client_credentials(req: &HttpRequest, params: &mut HashMap<String, String>) -> Result<ClientCredentials, Error> {
    let basic = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")));
    let body_id = params.remove("client_id");
    let body_secret = params.remove("client_secret");
    if let Some(encoded) = basic {
        if body_secret.is_some() {
            return Err(Error::invalid_request("use one client authentication method, not two"));
        }
        let malformed = || Error::invalid_client("malformed HTTP Basic credentials", true);
        let decoded = STANDARD.decode(encoded.trim()).map_err(|_| malformed())?;
        let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
        let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
        let unescape = |s: &str| -> String {
            form_urlencoded::parse(format!("x={s}").as_bytes())
                .map(|(_, v)| v.into_owned())
                .next()
                .unwrap_or_default()
        };
        let client_id = unescape(id);
        if body_id.as_deref().is_some_and(|b| b != client_id) {
            return Err(Error::invalid_request(
                "client_id in the body differs from the authenticated client",
            ));
        }
        return Ok(ClientCredentials {
            client_id,
            client_secret: Some(Secret::new(unescape(secret))),
            via_basic: true,
        });
    }
    let client_id = body_id
        .filter(|id| !id.is_empty())
        .ok_or_else(|| Error::invalid_client("client authentication is required (client_id)", false))?;
    Ok(ClientCredentials {
        client_id,
        client_secret: body_secret.map(Secret::new),
        via_basic: false,
    })
}

fn required(params: &mut HashMap<String, String>, name: &str) -> Result<String, Error> {
    params
        .remove(name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Error::invalid_request(format!("`{name}` is required")))
}

async fn exchange(req: &HttpRequest, body: &[u8], proxy: &OAuthProxy) -> Result<HttpResponse, Error> {
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    if !is_form {
        return Err(Error::invalid_request(
            "token requests must be application/x-www-form-urlencoded",
        ));
    }
    let mut params = parse_form(body)?;
    let credentials = client_credentials(req, &mut params)?;
    let grant_type = required(&mut params, "grant_type")?;
    if !matches!(grant_type.as_str(), "authorization_code" | "refresh_token") {
        return Err(Error::oauth(
            ErrorCode::UnsupportedGrantType,
            format!("grant_type `{grant_type}` is not supported"),
        ));
    }
    let client = proxy.authenticate_client(&credentials).await?;
    if !client.grant_types.contains(&grant_type) {
        return Err(Error::oauth(
            ErrorCode::UnauthorizedClient,
            format!("this client is not registered for `{grant_type}`"),
        ));
    }
    let tokens = if grant_type == "authorization_code" {
        let code = required(&mut params, "code")?;
        let code_verifier = params
            .remove("code_verifier")
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Error::invalid_request("code_verifier is required (PKCE)"))?;
        proxy
            .exchange_authorization_code(
                &client,
                CodeExchange {
                    code,
                    redirect_uri: params.remove("redirect_uri"),
                    code_verifier,
                    resource: params.remove("resource"),
                },
            )
            .await?
    } else {
        let refresh_token = required(&mut params, "refresh_token")?;
        proxy
            .exchange_refresh_token(
                &client,
                RefreshExchange {
                    refresh_token,
                    scope: params.remove("scope"),
                    resource: params.remove("resource"),
                },
            )
            .await?
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(tokens))
}

pub async fn token(req: HttpRequest, body: web::Bytes, proxy: web::Data<OAuthProxy>) -> HttpResponse {
    let mut response = match exchange(&req, &body, &proxy).await {
        Ok(response) => response,
        Err(e) => {
            if e.code() == Some(ErrorCode::InvalidGrant) {
                log::info!("token request refused: {e}");
            }
            actix_web::ResponseError::error_response(&e)
        }
    };
    add_cors_headers(response.headers_mut());
    response
}
