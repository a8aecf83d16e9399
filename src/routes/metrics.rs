//! `GET /metrics` on the admin listener: the Prometheus text format. The
//! figures kept elsewhere (live clients, document clients and grants, audit events written
//! and dropped) are read first.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

use crate::actors::client_registry::CountDocumentClients;
use crate::actors::CountRecords;
use crate::metrics::Snapshot;
use crate::proxy::OAuthProxy;

pub async fn metrics(proxy: web::Data<OAuthProxy>) -> HttpResponse {
    let actors = proxy.actors();
    // A store that does not answer leaves the last figures as they were.
    let clients = actors.clients.send(CountRecords).await.ok().and_then(Result::ok);
    let document_clients = actors
        .clients
        .send(CountDocumentClients)
        .await
        .ok()
        .and_then(Result::ok);
    let grants = actors.vault.send(CountRecords).await.ok().and_then(Result::ok);
    let audit = proxy.audit();
    proxy.metrics().refresh(&Snapshot {
        clients,
        document_clients,
        grants,
        audit_written: audit.written(),
        audit_dropped: audit.dropped(),
    });
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(proxy.metrics().render())
}
