//! `GET /healthz`: liveness (the process answers). `GET /readyz`:
//! readiness (the store answers, and the audit trail is written when it is
//! required); see [`OAuthProxy::readiness`].

use actix_web::http::header;
use actix_web::{get, web, HttpResponse};

use crate::proxy::OAuthProxy;

#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok" }))
}

/// 200 `{"status":"ready"}`, or 503 `{"status":"unavailable","reason":...}`
/// naming what failed; never cached.
pub async fn readyz(proxy: web::Data<OAuthProxy>) -> HttpResponse {
    let (mut response, body) = match proxy.readiness().await {
        Ok(()) => (HttpResponse::Ok(), serde_json::json!({ "status": "ready" })),
        Err(not_ready) => (
            HttpResponse::ServiceUnavailable(),
            serde_json::json!({ "status": "unavailable", "reason": not_ready.to_string() }),
        ),
    };
    response.insert_header((header::CACHE_CONTROL, "no-store")).json(body)
}
