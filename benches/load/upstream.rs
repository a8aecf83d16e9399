//! The benchmark's mock upstream OAuth provider: the two endpoints a flow and
//! a refresh use, with the checks a real provider makes (client credentials,
//! single-use codes bound to their redirect URI and PKCE challenge, rotating
//! refresh tokens), and nothing the benchmark does not need. The tests'
//! provider (`tests/api/mock_upstream.rs`) records every call for assertions
//! and is several times slower per request; here it shared core 1 with the
//! load generator and took more of it than the load generator itself.
//!
//! Refresh tokens carry this process's random mark instead of being stored,
//! so `/token` can be measured alone with one refresh token (the headroom
//! row): every token the proxy gets is new, as with a rotating provider.

use std::collections::{HashMap, VecDeque};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::http::header;
use actix_web::web::{self, Bytes};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use sha2::Digest;

pub const CLIENT_ID: &str = "upstream-client";
pub const CLIENT_SECRET: &str = "bench-upstream-client-secret";

/// Codes not redeemed within this long, or beyond the newest this many, are
/// forgotten (a real provider's codes expire too); keeps the headroom row's
/// memory bounded.
const CODE_LIFETIME: Duration = Duration::from_secs(60);
const MOST_CODES: usize = 100_000;

struct IssuedCode {
    redirect_uri: String,
    challenge: String,
}

/// Unredeemed codes, and the order they were issued in for expiry.
#[derive(Default)]
struct Codes {
    by_code: HashMap<String, IssuedCode>,
    issued: VecDeque<(Instant, String)>,
}

impl Codes {
    fn insert(&mut self, code: String, issued: IssuedCode) {
        while let Some((at, oldest)) = self.issued.front() {
            if at.elapsed() < CODE_LIFETIME && self.issued.len() < MOST_CODES {
                break;
            }
            self.by_code.remove(oldest);
            self.issued.pop_front();
        }
        self.issued.push_back((Instant::now(), code.clone()));
        self.by_code.insert(code, issued);
    }

    /// Redeemed codes stay in `issued` until they age out; removing them
    /// from the map is what makes them single use.
    fn redeem(&mut self, code: &str) -> Option<IssuedCode> {
        self.by_code.remove(code)
    }
}

struct Provider {
    /// A random mark in every token, so tokens from an earlier run are refused.
    mark: String,
    counter: AtomicU64,
    codes: Mutex<Codes>,
    basic_authorization: String,
    id_token: String,
}

pub struct FastUpstream {
    base_url: String,
    mark: String,
    id_token_length: usize,
    handle: ServerHandle,
}

impl FastUpstream {
    /// Binds `127.0.0.1:0` and serves with one worker in the current System.
    pub fn start() -> FastUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("mock upstream binds");
        let base_url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let mark = format!("{:016x}", rand::random::<u64>());
        let id_token = id_token(&base_url);
        let id_token_length = id_token.len();
        let provider = Arc::new(Provider {
            mark: mark.clone(),
            counter: AtomicU64::new(0),
            codes: Mutex::default(),
            basic_authorization: basic_authorization(),
            id_token,
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::from(provider.clone()))
                .route("/authorize", web::get().to(authorize))
                .route("/token", web::post().to(token))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)
        .expect("mock upstream listens")
        .run();
        let handle = server.handle();
        actix_rt::spawn(server);
        FastUpstream {
            base_url,
            mark,
            id_token_length,
            handle,
        }
    }

    pub fn authorization_endpoint(&self) -> String {
        format!("{}/authorize", self.base_url)
    }

    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.base_url)
    }

    /// Bytes of one token set as issued around the `serial`th token: what a
    /// stored grant holds of the upstream's own.
    pub fn token_set_bytes(&self, serial: u64) -> usize {
        let access = format!("at-{}-{serial}", self.mark).len();
        let refresh = format!("rt-{}-{serial}", self.mark).len();
        access + refresh + self.id_token_length
    }

    /// A refresh token this provider accepts, to measure `/token` alone.
    pub fn a_refresh_token(&self) -> String {
        format!("rt-{}-0", self.mark)
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

/// The `Authorization` header of the proxy's token requests (client_secret_basic).
pub fn basic_authorization() -> String {
    format!("Basic {}", STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}")))
}

/// An OIDC ID token like a real provider's (HS256 with the client secret), made
/// once: the proxy reads its claims unverified.
fn id_token(issuer: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": issuer, "aud": CLIENT_ID, "sub": "user-123", "email": "user@example.com",
        "email_verified": true, "name": "Test User", "preferred_username": "user",
        "iat": now, "exp": now + 86_400,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(CLIENT_SECRET.as_bytes()),
    )
    .expect("an ID token")
}

fn oauth_error(error: &str, description: &str) -> HttpResponse {
    HttpResponse::BadRequest().json(serde_json::json!({ "error": error, "error_description": description }))
}

fn form(input: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(input).into_owned().collect()
}

async fn authorize(req: HttpRequest, provider: web::Data<Provider>) -> HttpResponse {
    let params = form(req.query_string().as_bytes());
    let field = |name: &str| params.get(name).map(String::as_str).unwrap_or_default();
    if field("client_id") != CLIENT_ID || field("response_type") != "code" {
        return oauth_error("invalid_request", "unknown client or response_type");
    }
    if field("code_challenge_method") != "S256" || field("code_challenge").is_empty() || field("state").is_empty() {
        return oauth_error("invalid_request", "PKCE S256 and state are required");
    }
    let Ok(mut redirect) = url::Url::parse(field("redirect_uri")) else {
        return oauth_error("invalid_request", "redirect_uri is not an absolute URL");
    };
    let serial = provider.counter.fetch_add(1, Ordering::Relaxed);
    let code = format!("code-{}-{serial}", provider.mark);
    provider.codes.lock().unwrap().insert(
        code.clone(),
        IssuedCode {
            redirect_uri: field("redirect_uri").to_string(),
            challenge: field("code_challenge").to_string(),
        },
    );
    redirect
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", field("state"));
    HttpResponse::Found()
        .insert_header((header::LOCATION, redirect.as_str()))
        .finish()
}

async fn token(req: HttpRequest, body: Bytes, provider: web::Data<Provider>) -> HttpResponse {
    let authorized = req
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == provider.basic_authorization.as_bytes());
    if !authorized {
        return HttpResponse::Unauthorized().json(serde_json::json!({ "error": "invalid_client" }));
    }
    let params = form(&body);
    let field = |name: &str| params.get(name).map(String::as_str).unwrap_or_default();
    match field("grant_type") {
        "authorization_code" => {
            let Some(issued) = provider.codes.lock().unwrap().redeem(field("code")) else {
                return oauth_error("invalid_grant", "unknown or used code");
            };
            let verified = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(field("code_verifier").as_bytes()));
            if issued.redirect_uri != field("redirect_uri") || verified != issued.challenge {
                return oauth_error("invalid_grant", "redirect_uri or PKCE verifier does not match");
            }
        }
        "refresh_token" => {
            let issued_here = field("refresh_token")
                .strip_prefix("rt-")
                .is_some_and(|rest| rest.starts_with(provider.mark.as_str()));
            if !issued_here {
                return oauth_error("invalid_grant", "unknown refresh token");
            }
        }
        _ => return oauth_error("unsupported_grant_type", "authorization_code or refresh_token"),
    }
    let serial = provider.counter.fetch_add(1, Ordering::Relaxed);
    // An ID token on every answer, refreshes included, as the tests' provider.
    let answer = serde_json::json!({
        "access_token": format!("at-{}-{serial}", provider.mark),
        "token_type": "Bearer",
        "expires_in": 3600,
        "scope": "openid",
        "refresh_token": format!("rt-{}-{serial}", provider.mark),
        "id_token": provider.id_token,
    });
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(answer)
}
