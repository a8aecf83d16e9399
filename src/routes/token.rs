//! `POST /token`: the `authorization_code` and `refresh_token` grants.
//!
//! RFC 6749 §3.2: form-encoded only, repeated parameters are an error, and
//! every answer carries `Cache-Control: no-store` and `Pragma: no-cache` (§5.1).

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};

use super::add_cors_headers;
use super::client_auth::{client_credentials, form_params, FormParams};
use crate::audit::{Event, EventKind, Outcome, RequestContext};
use crate::error::{Error, ErrorCode};
use crate::proxy::{CodeExchange, OAuthProxy, RefreshExchange};

/// Token requests are small; anything bigger is refused.
pub const MAX_TOKEN_BODY: usize = 16 * 1024;

fn required(params: &mut FormParams, name: &str) -> Result<String, Error> {
    params
        .take(name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Error::invalid_request(format!("`{name}` is required")))
}

/// Records a refused request at `/token` or `/revoke` (`request.refused`):
/// a 401 or 403 (`invalid_client` above all), or an `invalid_grant` 400 (a
/// code or refresh token refused: the security-relevant ones). Other 400s
/// (a malformed request) are not recorded. Answers the error to send: a
/// 503 instead when a required audit trail cannot take the event.
pub(super) fn refused<T>(
    proxy: &OAuthProxy,
    ctx: &RequestContext,
    client_id: Option<String>,
    answer: Result<T, Error>,
) -> Result<T, Error> {
    let Err(error) = answer else {
        return answer;
    };
    let status = actix_web::ResponseError::status_code(&error);
    let refusal = matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
        || error.code() == Some(ErrorCode::InvalidGrant);
    if refusal {
        let mut event = Event::new(EventKind::RequestRefused, Outcome::Refused, ctx)
            .status(status.as_u16())
            .reason(error.to_string());
        event.client_id = client_id;
        proxy.record(event)?;
    }
    Err(error)
}

async fn exchange(
    req: &HttpRequest,
    body: &[u8],
    proxy: &OAuthProxy,
    ctx: &RequestContext,
    client_id: &mut Option<String>,
) -> Result<HttpResponse, Error> {
    let mut params = form_params(req, body, "token")?;
    let credentials = client_credentials(req, &mut params)?;
    *client_id = Some(credentials.client_id.clone());
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
            .take("code_verifier")
            .filter(|v| !v.is_empty())
            .ok_or_else(|| Error::invalid_request("code_verifier is required (PKCE)"))?;
        proxy
            .exchange_authorization_code(
                &client,
                CodeExchange {
                    code,
                    redirect_uri: params.take("redirect_uri"),
                    code_verifier,
                    resource: params.take("resource"),
                },
                ctx,
            )
            .await?
    } else {
        let refresh_token = required(&mut params, "refresh_token")?;
        proxy
            .exchange_refresh_token(
                &client,
                RefreshExchange {
                    refresh_token,
                    scope: params.take("scope"),
                    resource: params.take("resource"),
                },
                ctx,
            )
            .await?
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(tokens))
}

pub async fn token(
    req: HttpRequest,
    ctx: RequestContext,
    body: web::Bytes,
    proxy: web::Data<OAuthProxy>,
) -> HttpResponse {
    let mut client_id = None;
    let answer = exchange(&req, &body, &proxy, &ctx, &mut client_id).await;
    let mut response = match refused(&proxy, &ctx, client_id, answer) {
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
