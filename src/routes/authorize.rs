//! `GET /authorize` and the consent screen (`POST /consent`).
//!
//! Browser-facing: errors are HTML pages until the client's redirect URI is
//! validated and this browser has approved the client (RFC 9700 §4.11.2),
//! then redirects to it. A query string that is too long, or whose `state`
//! is, is never sent back: it gets the HTML page. Never CORS-enabled.

use actix_session::Session;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use askama::Template;

use super::errors::error_page;
use super::{add_page_security_headers, redirect, BrowserCookies, STATIC_PREFIX};
use crate::audit::RequestContext;
use crate::error::{Error, PageReason};
use crate::proxy::{AuthorizeOutcome, AuthorizeRequest, ConsentForm, ConsentOutcome, OAuthProxy};
use crate::views::{redirect_display_host, ConsentPage};

pub async fn authorize(
    req: HttpRequest,
    ctx: RequestContext,
    session: Session,
    proxy: web::Data<OAuthProxy>,
) -> Result<HttpResponse, Error> {
    if let Some(refusal) = crate::rate_limit::authorize_refusal(&req, &proxy) {
        return Ok(refusal);
    }
    let request = AuthorizeRequest::from_query(req.query_string()).map_err(|e| Error::page(PageReason::from(e)))?;
    let (cookies, browser) = BrowserCookies::read(&req, session, &proxy);
    match proxy
        .authorize(request, &browser, &ctx)
        .await
        .map_err(Error::for_browser)?
    {
        AuthorizeOutcome::RedirectUpstream(url) => Ok(redirect(&url, Some(&cookies))),
        AuthorizeOutcome::Busy { retry_after } => {
            let mut response = error_page(&PageReason::TooManyPending);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(retry_after));
            Ok(response)
        }
        AuthorizeOutcome::Consent(prompt) => {
            let redirect_host = redirect_display_host(&prompt.redirect_uri);
            let page = ConsentPage {
                static_prefix: STATIC_PREFIX,
                client_name: &prompt.client_name,
                client_id: &prompt.client_id,
                document_host: prompt.document.as_ref().map(|d| d.host.as_str()),
                local_app: prompt.document.as_ref().is_some_and(|d| d.local_app),
                redirect_uri: prompt.redirect_uri.as_str(),
                redirect_host: &redirect_host,
                scopes: prompt.scopes.iter().map(String::as_str).collect(),
                provider_name: &proxy.config().provider_name,
                form_action: "/consent",
                transaction_id: &prompt.transaction_id,
                csrf_token: &prompt.csrf_token,
            };
            let body = page
                .render()
                .map_err(|e| Error::other("the consent page could not be rendered", e))
                .map_err(Error::for_browser)?;
            let mut response = HttpResponse::Ok();
            response.content_type("text/html; charset=utf-8");
            cookies.apply(&mut response);
            let mut response = response.body(body);
            add_page_security_headers(response.headers_mut(), &prompt.form_targets);
            Ok(response)
        }
    }
}

pub async fn consent(
    req: HttpRequest,
    ctx: RequestContext,
    session: Session,
    body: web::Bytes,
    proxy: web::Data<OAuthProxy>,
) -> Result<HttpResponse, Error> {
    let form: ConsentForm =
        serde_urlencoded::from_bytes(&body).map_err(|_| Error::page(PageReason::ConsentFormUnreadable))?;
    let (cookies, browser) = BrowserCookies::read(&req, session, &proxy);
    match proxy
        .handle_consent(form, &browser, &ctx)
        .await
        .map_err(Error::for_browser)?
    {
        ConsentOutcome::Approved {
            upstream,
            remember_client,
        } => {
            if let Some(client_id) = remember_client {
                cookies.remember_client(&browser, &client_id);
            }
            // 303: the browser follows a POST's redirect with GET (OAuth 2.1 §7.5.2).
            let mut response = redirect(&upstream, Some(&cookies));
            *response.status_mut() = StatusCode::SEE_OTHER;
            Ok(response)
        }
        ConsentOutcome::Denied { client_redirect } => {
            let mut response = redirect(client_redirect.as_str(), Some(&cookies));
            *response.status_mut() = StatusCode::SEE_OTHER;
            response
                .headers_mut()
                .insert(header::REFERRER_POLICY, header::HeaderValue::from_static("no-referrer"));
            Ok(response)
        }
    }
}
