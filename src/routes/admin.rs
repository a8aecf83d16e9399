//! The admin API under `/admin`, on the admin listener only: JSON over
//! [`crate::proxy::admin`], behind `Authorization: Bearer
//! <OAUTH_PROXY_ADMIN_TOKEN>` (compared in constant time; with no token
//! configured the whole API answers 403). Every answer carries
//! `Cache-Control: no-store`.
//!
//! - `GET /admin/clients?q=&redirect_host=&limit=&cursor=`, `GET|DELETE
//!   /admin/clients/{id}`
//! - `GET /admin/grants?sub=&client_id=&limit=&cursor=`, `GET|DELETE
//!   /admin/grants/{id}`
//! - `POST /admin/subjects/{sub}/revoke`
//!
//! Listings answer `{"items": [...], "next_cursor": "..." | null}`; `limit`
//! is 1 to 500 (default 50), `cursor` the `next_cursor` of the page before.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::http::header::{self, CACHE_CONTROL};
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use secrecy::ExposeSecret;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::errors::{admin_refusal, AdminRefusal};
use crate::actors::client_registry::ClientFilter;
use crate::audit::RequestContext;
use crate::crypto::constant_time_eq;
use crate::error::Error;
use crate::proxy::admin::{PageRequest, DEFAULT_PAGE, MAX_PAGE};
use crate::proxy::OAuthProxy;

/// Mounts the admin API (on the admin listener's app).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/admin")
            .wrap(DefaultHeaders::new().add((CACHE_CONTROL, "no-store")))
            .route("/clients", web::get().to(list_clients))
            .route("/clients/{id:.+}", web::get().to(show_client))
            .route("/clients/{id:.+}", web::delete().to(delete_client))
            .route("/grants", web::get().to(list_grants))
            .route("/grants/{id}", web::get().to(show_grant))
            .route("/grants/{id}", web::delete().to(revoke_grant))
            .route("/subjects/{sub:.+}/revoke", web::post().to(revoke_subject)),
    );
}

/// A request that showed the admin token (an extractor: a handler that
/// takes it runs only for such requests).
pub struct Admin;

/// The admin API's refusal of a request's credentials.
#[derive(Debug)]
pub struct Refused(AdminRefusal);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "admin API refused: {:?}", self.0)
    }
}

impl ResponseError for Refused {
    fn error_response(&self) -> HttpResponse {
        admin_refusal(self.0)
    }
}

fn check(req: &HttpRequest) -> Result<Admin, Refused> {
    let proxy = req
        .app_data::<web::Data<OAuthProxy>>()
        .ok_or(Refused(AdminRefusal::Off))?;
    let Some(expected) = &proxy.config().operations.admin_token else {
        return Err(Refused(AdminRefusal::Off));
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Some(given) = given else {
        return Err(Refused(AdminRefusal::Unauthorized("the admin token is required")));
    };
    // Hashed first, so the comparison's time says nothing of the length.
    let (given, expected) = (
        Sha256::digest(given.as_bytes()),
        Sha256::digest(expected.expose_secret().as_bytes()),
    );
    if constant_time_eq(&given, &expected) {
        Ok(Admin)
    } else {
        Err(Refused(AdminRefusal::Unauthorized("the admin token is not valid")))
    }
}

impl FromRequest for Admin {
    type Error = Refused;
    type Future = Ready<Result<Admin, Refused>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(check(req))
    }
}

/// The query of a listing; other parameters are ignored.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    limit: Option<String>,
    cursor: Option<String>,
    q: Option<String>,
    redirect_host: Option<String>,
    sub: Option<String>,
    client_id: Option<String>,
}

/// A parameter given empty counts as not given.
fn given(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

fn page_of(limit: Option<String>, cursor: Option<String>) -> Result<PageRequest, Error> {
    let limit = match given(limit) {
        None => DEFAULT_PAGE,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| Error::invalid_request(format!("limit must be a number from 1 to {MAX_PAGE}")))?,
    };
    Ok(PageRequest {
        cursor: given(cursor),
        limit,
    })
}

/// The query string, or 400 `invalid_request` when it cannot be read.
fn query(req: &HttpRequest) -> Result<ListQuery, Error> {
    web::Query::<ListQuery>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|_| Error::invalid_request("the query could not be read"))
}

async fn list_clients(_: Admin, req: HttpRequest, proxy: web::Data<OAuthProxy>) -> Result<HttpResponse, Error> {
    let query = query(&req)?;
    let page = page_of(query.limit, query.cursor)?;
    let filter = ClientFilter {
        name_contains: given(query.q),
        redirect_host: given(query.redirect_host),
    };
    Ok(HttpResponse::Ok().json(proxy.admin_clients(filter, page).await?))
}

async fn show_client(_: Admin, id: web::Path<String>, proxy: web::Data<OAuthProxy>) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(proxy.admin_client(&id).await?))
}

async fn delete_client(
    _: Admin,
    id: web::Path<String>,
    ctx: RequestContext,
    proxy: web::Data<OAuthProxy>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(proxy.admin_delete_client(&id, &ctx).await?))
}

async fn list_grants(_: Admin, req: HttpRequest, proxy: web::Data<OAuthProxy>) -> Result<HttpResponse, Error> {
    let query = query(&req)?;
    let page = page_of(query.limit, query.cursor)?;
    let listing = proxy
        .admin_grants(given(query.sub), given(query.client_id), page)
        .await?;
    Ok(HttpResponse::Ok().json(listing))
}

async fn show_grant(_: Admin, id: web::Path<String>, proxy: web::Data<OAuthProxy>) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(proxy.admin_grant(&id).await?))
}

async fn revoke_grant(
    _: Admin,
    id: web::Path<String>,
    ctx: RequestContext,
    proxy: web::Data<OAuthProxy>,
) -> Result<HttpResponse, Error> {
    proxy.admin_revoke_grant(&id, &ctx).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "grant_id": id.as_str(), "revoked": true })))
}

async fn revoke_subject(
    _: Admin,
    sub: web::Path<String>,
    ctx: RequestContext,
    proxy: web::Data<OAuthProxy>,
) -> Result<HttpResponse, Error> {
    Ok(HttpResponse::Ok().json(proxy.admin_revoke_subject(&sub, &ctx).await?))
}
