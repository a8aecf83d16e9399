//! Builds the route table and runs the HTTP server. `main` and the
//! integration tests both start the service through here.

use std::net::TcpListener;
use std::path::Path;

use actix_web::dev::Server;
use actix_web::middleware::{Condition, Logger};
use actix_web::{web, App, HttpResponse, HttpServer};

use crate::gateway::Gateway;
use crate::proxy::OAuthProxy;
use crate::routes::static_files::StaticAssets;
use crate::routes::{
    authorize, callback, gateway, health, introspect, preflight, register, revoke, static_files, token, well_known,
};

/// Mounts every endpoint of the proxy on an actix-web app:
/// `App::new().configure(|cfg| configure_routes(cfg, &proxy, &assets))`.
pub fn configure_routes(cfg: &mut web::ServiceConfig, proxy: &OAuthProxy, assets: &StaticAssets) {
    let config = proxy.config();
    let base_path = config.base_url.path().trim_end_matches('/').to_string();
    let mcp_path = config.mcp_path.clone();
    let mcp_gateway = web::Data::new(Gateway::new(&config.gateway));

    cfg.app_data(web::Data::new(proxy.clone()))
        .app_data(web::Data::new(assets.clone()))
        .service(health::healthz)
        .service(
            web::resource("/.well-known/oauth-authorization-server")
                .route(web::get().to(well_known::authorization_server))
                .route(web::method(actix_web::http::Method::OPTIONS).to(preflight)),
        )
        .service(
            web::resource("/.well-known/oauth-protected-resource")
                .route(web::get().to(well_known::protected_resource))
                .route(web::method(actix_web::http::Method::OPTIONS).to(preflight)),
        )
        .service(
            web::resource(format!("/.well-known/oauth-protected-resource{base_path}{mcp_path}"))
                .route(web::get().to(well_known::protected_resource))
                .route(web::method(actix_web::http::Method::OPTIONS).to(preflight)),
        )
        // OIDC clients sometimes look here first; the same document answers.
        .service(
            web::resource("/.well-known/openid-configuration")
                .route(web::get().to(well_known::authorization_server))
                .route(web::method(actix_web::http::Method::OPTIONS).to(preflight)),
        )
        .service(
            web::resource("/register")
                .app_data(web::PayloadConfig::new(register::MAX_REGISTRATION_BODY))
                .route(web::post().to(register::register))
                .route(web::method(actix_web::http::Method::OPTIONS).to(preflight)),
        )
        .service(web::resource("/authorize").route(web::get().to(authorize::authorize)))
        .service(
            web::resource("/consent")
                .app_data(web::PayloadConfig::new(16 * 1024))
                .route(web::post().to(authorize::consent)),
        )
        .service(web::resource(config.redirect_path.clone()).route(web::get().to(callback::callback)))
        .service(
            web::resource("/token")
                .app_data(web::PayloadConfig::new(token::MAX_TOKEN_BODY))
                .route(web::post().to(token::token))
                .route(web::method(actix_web::http::Method::OPTIONS).to(preflight)),
        )
        .service(
            web::resource("/revoke")
                .app_data(web::PayloadConfig::new(token::MAX_TOKEN_BODY))
                .route(web::post().to(revoke::revoke))
                .route(web::method(actix_web::http::Method::OPTIONS).to(preflight)),
        )
        .service(
            web::resource("/introspect")
                .app_data(web::PayloadConfig::new(token::MAX_TOKEN_BODY))
                .route(web::post().to(introspect::introspect)),
        )
        .service(
            web::resource("/jwks.json")
                .route(web::get().to(well_known::jwks))
                .route(web::method(actix_web::http::Method::OPTIONS).to(preflight)),
        )
        // Two resources rather than one with two patterns: a single static
        // pattern is matched by string comparison, a pattern list by regex
        // (measurable on every guarded request).
        .service(
            web::resource(mcp_path.clone())
                .app_data(web::PayloadConfig::new(gateway::MAX_MCP_BODY))
                .app_data(mcp_gateway.clone())
                .to(gateway::mcp),
        )
        .service(
            web::resource(format!("{mcp_path}/{{tail:.*}}"))
                .app_data(web::PayloadConfig::new(gateway::MAX_MCP_BODY))
                .app_data(mcp_gateway)
                .to(gateway::mcp),
        )
        .service(web::resource("/static/{name}").route(web::get().to(static_files::serve)));
    if !base_path.is_empty() {
        // RFC 8414 §3.1: the path-inserted form for an issuer with a path.
        cfg.service(
            web::resource(format!("/.well-known/oauth-authorization-server{base_path}"))
                .route(web::get().to(well_known::authorization_server)),
        );
    }
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(serde_json::json!({
        "error": "not_found",
        "error_description": "no such endpoint",
    }))
}

/// Starts the HTTP server on `listener` (port 0 in tests).
pub fn run(listener: TcpListener, proxy: OAuthProxy) -> std::io::Result<Server> {
    let assets = StaticAssets::load(Path::new(&proxy.config().static_dir));
    let workers = proxy.config().workers;
    let server = HttpServer::new(move || {
        App::new()
            // `%U` is the path without the query: codes and states stay out of logs.
            // The access log costs allocations per request even when filtered
            // out: mount it only when info logging is on.
            .wrap(Condition::new(
                log::log_enabled!(log::Level::Info),
                Logger::new("%a \"%{method}xi %U\" %s %b %Dms")
                    .custom_request_replace("method", |req| req.method().to_string()),
            ))
            .configure(|cfg| configure_routes(cfg, &proxy, &assets))
            .default_service(web::to(not_found))
    })
    .workers(workers)
    // Streamed answers (SSE) are written piece by piece; without TCP_NODELAY
    // Nagle's algorithm holds back each small write until the last is acked.
    .on_connect(|connection, _| {
        if let Some(socket) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
            let _ = socket.set_nodelay(true);
        }
    })
    .listen(listener)?
    .run();
    Ok(server)
}
