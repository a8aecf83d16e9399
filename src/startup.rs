//! Builds the route table and runs the HTTP server. `main` and the
//! integration tests both start the service through here.

use std::net::TcpListener;
use std::path::Path;

use actix_session::storage::CookieSessionStore;
use actix_session::SessionMiddleware;
use actix_web::dev::{AppService, HttpServiceFactory, Server};
use actix_web::guard::{Guard, GuardContext};
use actix_web::http::{header, Method};
use actix_web::middleware::{Condition, Logger};
use actix_web::{web, App, HttpResponse, HttpServer, Resource, Route};

use crate::client_address::ClientAddress;
use crate::gateway::Gateway;
use crate::proxy::OAuthProxy;
use crate::routes::context::RequestId;
use crate::routes::observe::Observe;
use crate::routes::static_files::StaticAssets;
use crate::routes::{
    self, authorize, callback, gateway, health, introspect, preflight, register, revoke, static_files, token,
    well_known,
};

/// Mounts every endpoint of the proxy on an actix-web app:
/// `App::new().configure(|cfg| configure_routes(cfg, &proxy, &assets))`.
pub fn configure_routes(cfg: &mut web::ServiceConfig, proxy: &OAuthProxy, assets: &StaticAssets) {
    let config = proxy.config();
    // This thread's awc clients (upstream, MCP server) trust what the
    // configuration says (OAUTH_PROXY_EXTRA_CA_FILE): see `crate::tls`.
    crate::tls::use_on_this_thread(&config.outbound_tls);
    let base_path = config.base_url.path().trim_end_matches('/').to_string();
    let mcp_path = config.mcp_path.clone();
    let mcp_gateway = web::Data::new(Gateway::new(&config.gateway));
    // The browser session wraps the browser-facing routes only (one
    // middleware each: its store is not `Clone`).
    let session = || routes::browser_session(proxy);

    cfg.app_data(web::Data::new(proxy.clone()))
        .app_data(web::Data::new(assets.clone()))
        // Read by `ClientAddress` (handlers and the access log).
        .app_data(web::Data::new(config.trusted_proxies.clone()))
        .service(health::healthz)
        .service(methods("/readyz").on(Method::GET, web::to(health::readyz)))
        .service(
            methods("/.well-known/oauth-authorization-server")
                .on(Method::GET, web::to(well_known::authorization_server))
                .on(Method::OPTIONS, web::to(preflight)),
        )
        .service(
            methods("/.well-known/oauth-protected-resource")
                .on(Method::GET, web::to(well_known::protected_resource))
                .on(Method::OPTIONS, web::to(preflight)),
        )
        .service(
            methods(format!("/.well-known/oauth-protected-resource{base_path}{mcp_path}"))
                .on(Method::GET, web::to(well_known::protected_resource))
                .on(Method::OPTIONS, web::to(preflight)),
        )
        // OIDC clients sometimes look here first; the same document answers.
        .service(
            methods("/.well-known/openid-configuration")
                .on(Method::GET, web::to(well_known::authorization_server))
                .on(Method::OPTIONS, web::to(preflight)),
        )
        .service(
            methods("/register")
                .app_data(web::PayloadConfig::new(register::MAX_REGISTRATION_BODY))
                .on(Method::POST, web::to(register::register))
                .on(Method::OPTIONS, web::to(preflight)),
        )
        .service(
            methods("/authorize")
                .on(Method::GET, web::to(authorize::authorize))
                .with_session(session()),
        )
        .service(
            methods("/consent")
                .app_data(web::PayloadConfig::new(16 * 1024))
                .on(Method::POST, web::to(authorize::consent))
                .with_session(session()),
        )
        .service(
            methods(config.redirect_path.clone())
                .on(Method::GET, web::to(callback::callback))
                .with_session(session()),
        )
        .service(
            methods("/token")
                .app_data(web::PayloadConfig::new(token::MAX_TOKEN_BODY))
                .on(Method::POST, web::to(token::token))
                .on(Method::OPTIONS, web::to(preflight)),
        )
        .service(
            methods("/revoke")
                .app_data(web::PayloadConfig::new(token::MAX_TOKEN_BODY))
                .on(Method::POST, web::to(revoke::revoke))
                .on(Method::OPTIONS, web::to(preflight)),
        )
        .service(
            methods("/introspect")
                .app_data(web::PayloadConfig::new(token::MAX_TOKEN_BODY))
                .on(Method::POST, web::to(introspect::introspect)),
        )
        .service(
            methods("/jwks.json")
                .on(Method::GET, web::to(well_known::jwks))
                .on(Method::OPTIONS, web::to(preflight)),
        )
        // Two resources rather than one with two patterns: a single static
        // pattern is matched by string comparison, a pattern list by regex
        // (measurable on every guarded request).
        .service(
            // The gateway reads its body itself (web::Payload), after the
            // token check, up to OAUTH_PROXY_MCP_MAX_BODY: no PayloadConfig.
            web::resource(mcp_path.clone())
                .app_data(mcp_gateway.clone())
                .to(gateway::mcp),
        )
        .service(
            web::resource(format!("{mcp_path}/{{tail:.*}}"))
                .app_data(mcp_gateway)
                .to(gateway::mcp),
        )
        .service(methods("/static/{name}").on(Method::GET, web::to(static_files::serve)));
    if !base_path.is_empty() {
        // RFC 8414 §3.1: the path-inserted form for an issuer with a path.
        cfg.service(
            methods(format!("/.well-known/oauth-authorization-server{base_path}"))
                .on(Method::GET, web::to(well_known::authorization_server)),
        );
    }
}

/// A resource whose routes each answer one method; any other method gets
/// 405 with `Allow` naming those (RFC 9110 §15.5.6).
///
/// actix-web's method guards (`web::get()`, ...) record each method they
/// test in the request's extension map, so that the resource's fallback can
/// name them: an allocation storm on every request (about ten per full
/// flow). Here the guards only compare, and the fallback knows the list.
struct MethodRoutes {
    resource: Resource,
    allowed: Vec<Method>,
    session: Option<SessionMiddleware<CookieSessionStore>>,
}

fn methods(path: impl Into<String>) -> MethodRoutes {
    MethodRoutes {
        resource: web::resource(path.into()),
        allowed: Vec::new(),
        session: None,
    }
}

struct OnlyMethod(Method);

impl Guard for OnlyMethod {
    fn check(&self, ctx: &GuardContext<'_>) -> bool {
        ctx.head().method == self.0
    }
}

impl MethodRoutes {
    fn on(mut self, method: Method, route: Route) -> Self {
        self.allowed.push(method.clone());
        self.resource = self.resource.route(route.guard(OnlyMethod(method)));
        self
    }

    fn app_data<U: 'static>(mut self, data: U) -> Self {
        self.resource = self.resource.app_data(data);
        self
    }

    /// Wraps the resource in the browser session (see
    /// [`routes::browser_session`]).
    fn with_session(mut self, session: SessionMiddleware<CookieSessionStore>) -> Self {
        self.session = Some(session);
        self
    }
}

impl HttpServiceFactory for MethodRoutes {
    fn register(self, config: &mut AppService) {
        let allowed = self.allowed;
        let resource = self.resource.default_service(web::to(move || {
            let allow = header::Allow(allowed.clone());
            async move { HttpResponse::MethodNotAllowed().insert_header(allow).finish() }
        }));
        match self.session {
            Some(session) => resource.wrap(session).register(config),
            None => resource.register(config),
        }
    }
}

async fn not_found() -> HttpResponse {
    crate::routes::errors::not_found("no such endpoint")
}

/// Starts the HTTP server on `listener` (port 0 in tests).
pub fn run(listener: TcpListener, proxy: OAuthProxy) -> std::io::Result<Server> {
    let assets = StaticAssets::load(Path::new(&proxy.config().static_dir));
    let workers = proxy.config().workers;
    let server = HttpServer::new(move || {
        App::new()
            // `%U` is the path without the query: codes and states stay out of logs.
            // `%{client}xi` is the client address (behind trusted proxies, the
            // client they name; see `client_address`), the one rate limits use.
            // The access log costs allocations per request even when filtered
            // out: mount it only when info logging is on. It ends with the
            // request's id, the one its response's `X-Request-Id` carries.
            .wrap(Condition::new(
                log::log_enabled!(log::Level::Info),
                Logger::new("%{client}xi \"%{method}xi %U\" %s %b %Dms request_id=%{request_id}xi")
                    .custom_request_replace("client", |req| ClientAddress::of(req.request()).to_string())
                    .custom_request_replace("method", |req| req.method().to_string())
                    .custom_request_replace("request_id", |req| RequestId::of(req.request()).0),
            ))
            // Outermost: every response, 404s and errors included, carries
            // the request id; each request is counted by route and status.
            .wrap(Observe::counting(proxy.metrics().http()))
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

/// The admin listener's routes: `GET /metrics`, `GET /readyz`, and the
/// admin API under `/admin` (see [`routes::admin`]).
pub fn configure_admin_routes(cfg: &mut web::ServiceConfig, proxy: &OAuthProxy) {
    cfg.app_data(web::Data::new(proxy.clone()))
        .app_data(web::Data::new(proxy.config().trusted_proxies.clone()))
        .service(methods("/metrics").on(Method::GET, web::to(routes::metrics::metrics)))
        .service(methods("/readyz").on(Method::GET, web::to(health::readyz)))
        .configure(routes::admin::configure);
}

/// Starts the admin listener (`OAUTH_PROXY_ADMIN_BIND`) on `listener`: one
/// worker, apart from the service's, so a scrape or an admin call never
/// waits behind client traffic.
pub fn run_admin(listener: TcpListener, proxy: OAuthProxy) -> std::io::Result<Server> {
    let server = HttpServer::new(move || {
        App::new()
            .wrap(Observe::ids_only())
            .configure(|cfg| configure_admin_routes(cfg, &proxy))
            .default_service(web::to(not_found))
    })
    .workers(1)
    .listen(listener)?
    .run();
    Ok(server)
}
