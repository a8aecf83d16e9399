//! `GET /metrics` on the admin listener: the Prometheus text format.

use actix_web::{web, HttpResponse};

use crate::proxy::OAuthProxy;

pub async fn metrics(proxy: web::Data<OAuthProxy>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(proxy.metrics().render())
}
