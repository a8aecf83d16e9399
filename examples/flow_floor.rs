//! The HTTP floor of a full flow, for calibrating the load benchmark's
//! full-flow row: the same four requests and the same upstream token call
//! as the proxy, on the same stack (actix-web, awc, mimalloc, one worker),
//! with none of the OAuth work (no client registry, no transaction, code or
//! grant, no PKCE check, no signing, no sealing, no cookie signing).
//!
//! It reads the proxy's environment variables the benchmark sets, so the
//! benchmark measures it in the proxy's place:
//!
//! ```sh
//! cargo build --release --example flow_floor
//! BENCH_PROXY_BINARY=target/release/examples/flow_floor \
//!   BENCH_SCENARIOS=flow BENCH_BACKENDS=memory cargo bench --bench load
//! ```
//!
//! Not a server for anything else: it trusts every request.

use std::cell::Cell;
use std::net::TcpListener;

use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use sha2::Digest;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The verifier the floor sends upstream; the mock upstream checks it.
const VERIFIER: &str = "flow-floor-verifier-0123456789-0123456789-0123";
/// A token of about the length of the proxy's signed JWTs.
const TOKEN_LENGTH: usize = 420;

struct Floor {
    authorize_prefix: String,
    token_endpoint: String,
    callback: String,
    basic: String,
    token_body: String,
    http: awc::Client,
    serial: Cell<u64>,
}

impl Floor {
    fn next(&self) -> u64 {
        self.serial.set(self.serial.get() + 1);
        self.serial.get()
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is required"))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().body("ok")
}

async fn register(body: web::Bytes, floor: web::Data<Floor>) -> HttpResponse {
    let registration: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    HttpResponse::Created().json(serde_json::json!({
        "client_id": format!("floor-client-{}", floor.next()),
        "client_id_issued_at": 0,
        "redirect_uris": registration["redirect_uris"],
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
    }))
}

async fn authorize(floor: web::Data<Floor>) -> HttpResponse {
    let location = format!("{}&state=floor-{}", floor.authorize_prefix, floor.next());
    HttpResponse::Found()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::SET_COOKIE, "floor_browser=1; Path=/; HttpOnly; SameSite=Lax"))
        .finish()
}

async fn upstream_callback(req: HttpRequest, floor: web::Data<Floor>) -> HttpResponse {
    let code = url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(name, _)| name == "code")
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", floor.callback.as_str()),
        ("code_verifier", VERIFIER),
    ];
    let answer = floor
        .http
        .post(&floor.token_endpoint)
        .insert_header((header::AUTHORIZATION, floor.basic.as_str()))
        .send_form(&form)
        .await;
    let tokens = match answer {
        Ok(mut answer) => answer.json::<serde_json::Value>().await.ok(),
        Err(_) => None,
    };
    match tokens {
        Some(tokens) if tokens.get("access_token").is_some() => HttpResponse::Found()
            .insert_header((
                header::LOCATION,
                format!("http://127.0.0.1:9/callback?code=floor-code-{}&state=s", floor.next()),
            ))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish(),
        _ => HttpResponse::BadGateway().body("the upstream token call failed"),
    }
}

async fn issue_tokens(body: web::Bytes, floor: web::Data<Floor>) -> HttpResponse {
    let _params: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .content_type("application/json")
        .body(floor.token_body.clone())
}

fn main() -> std::io::Result<()> {
    let bind = env("OAUTH_PROXY_BIND");
    let base = env("OAUTH_PROXY_BASE_URL");
    let authorization_endpoint = env("OAUTH_PROXY_UPSTREAM_AUTHORIZATION_ENDPOINT");
    let token_endpoint = env("OAUTH_PROXY_UPSTREAM_TOKEN_ENDPOINT");
    let client_id = env("OAUTH_PROXY_UPSTREAM_CLIENT_ID");
    let client_secret = env("OAUTH_PROXY_UPSTREAM_CLIENT_SECRET");
    let callback = format!("{base}/auth/callback");
    let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(VERIFIER.as_bytes()));
    let authorize_prefix = url::Url::parse_with_params(
        &authorization_endpoint,
        [
            ("response_type", "code"),
            ("client_id", client_id.as_str()),
            ("redirect_uri", callback.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ],
    )
    .expect("a valid upstream authorization endpoint")
    .to_string();
    let basic = format!("Basic {}", STANDARD.encode(format!("{client_id}:{client_secret}")));
    let token = "t".repeat(TOKEN_LENGTH);
    let token_body = serde_json::json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": 3600,
        "refresh_token": token,
        "scope": "",
    })
    .to_string();
    let listener = TcpListener::bind(&bind)?;
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            let floor = Floor {
                authorize_prefix: authorize_prefix.clone(),
                token_endpoint: token_endpoint.clone(),
                callback: callback.clone(),
                basic: basic.clone(),
                token_body: token_body.clone(),
                http: awc::Client::builder().disable_redirects().finish(),
                serial: Cell::new(0),
            };
            App::new()
                .app_data(web::Data::new(floor))
                .route("/healthz", web::get().to(healthz))
                .route("/register", web::post().to(register))
                .route("/authorize", web::get().to(authorize))
                .route("/auth/callback", web::get().to(upstream_callback))
                .route("/token", web::post().to(issue_tokens))
        })
        .workers(1)
        .on_connect(|connection, _| {
            if let Some(socket) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
                let _ = socket.set_nodelay(true);
            }
        })
        .listen(listener)?
        .run()
        .await
    })
}
