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

/// `GET /jwks.json`: the public keys of ES256 / EdDSA signing (RFC 7517),
/// current first, then any previous key kept for rotation.
pub async fn jwks(proxy: web::Data<OAuthProxy>) -> HttpResponse {
    match proxy.signer().jwks() {
        Some(jwks) => json_with_cors(serde_json::to_value(jwks).unwrap_or_default()),
        None => super::errors::not_found("tokens are signed with a shared secret (HS256); there is no public key"),
    }
}
