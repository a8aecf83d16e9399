//! Discovery documents: RFC 8414 authorization server metadata and RFC 9728
//! protected resource metadata (root and path-inserted forms).

use actix_web::{web, HttpResponse};
use serde_json::Value;

use super::add_cors_headers;
use crate::proxy::OAuthProxy;

fn json_with_cors(document: Value) -> HttpResponse {
    let mut response = HttpResponse::Ok()
        .insert_header(("Cache-Control", "public, max-age=3600"))
        .json(document);
    add_cors_headers(response.headers_mut());
    response
}

pub async fn authorization_server(proxy: web::Data<OAuthProxy>) -> HttpResponse {
    json_with_cors(proxy.authorization_server_metadata())
}

pub async fn protected_resource(proxy: web::Data<OAuthProxy>) -> HttpResponse {
    json_with_cors(proxy.protected_resource_metadata())
}
