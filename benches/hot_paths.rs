//! Micro benchmarks of the hot paths: `cargo bench --bench hot_paths`.
//!
//! JWT sign and verify (and the cached check the MCP endpoint uses), vault
//! record seal and open, PKCE verification, redirect-URI matching, a memory
//! store read and write, and one guarded gateway hop (an HTTP request
//! through the proxy in this process to a fast backend, next to the same
//! request sent to the backend directly).

use std::net::TcpListener;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use criterion::{criterion_group, criterion_main, Criterion};
use mcp_oauth_proxy::actors::token_vault::CreateGrant;
use mcp_oauth_proxy::crypto::Sealer;
use mcp_oauth_proxy::oauth::jwt::{Claims, IssuedClaims, TokenSigner, TokenUse};
use mcp_oauth_proxy::oauth::now_secs;
use mcp_oauth_proxy::oauth::pkce::CodeChallenge;
use mcp_oauth_proxy::oauth::redirect_uri::{pattern_matches, RedirectUri};
use mcp_oauth_proxy::oauth::scope::Scopes;
use mcp_oauth_proxy::records::{Grant, IssuedPair, UpstreamTokens};
use mcp_oauth_proxy::{startup, Config, OAuthProxy};
use url::Url;

const KEY: &str = "bench-signing-key-bench-signing-key-0123";

fn claims(token_use: TokenUse) -> Claims {
    let now = now_secs();
    Claims {
        iss: "https://mcp.example.com".into(),
        aud: "https://mcp.example.com/mcp".into(),
        sub: "user-123".into(),
        client_id: "Cw0Xo8Hk1zBzWmQf2A8b1g".into(),
        scope: "openid profile email".into(),
        jti: "kQ1i9m0Fhz7l8c0dVf3rJ6bQx0p4sT2a.q8ZrT1kWnYvB3xL0eP5dHg".into(),
        iat: now,
        exp: now + 3600,
        token_use,
        extra: serde_json::json!({"email": "user@example.com", "name": "Test User"})
            .as_object()
            .cloned()
            .unwrap(),
    }
}

fn jwt(c: &mut Criterion) {
    let signer = TokenSigner::hs256(KEY.as_bytes(), "https://mcp.example.com", "https://mcp.example.com/mcp");
    let access = claims(TokenUse::Access);
    let token = signer.sign(&access).unwrap();
    // As the token endpoint signs: claims borrowed from the grant, whose
    // custom claims are kept as JSON.
    let extra_json = serde_json::to_string(&access.extra).unwrap();
    let issued = IssuedClaims {
        iss: &access.iss,
        aud: &access.aud,
        sub: &access.sub,
        client_id: &access.client_id,
        scope: &access.scope,
        jti: &access.jti,
        iat: access.iat,
        exp: access.exp,
        token_use: access.token_use,
        extra_json: &extra_json,
    };
    c.bench_function("jwt/sign HS256", |b| b.iter(|| signer.sign_issued(&issued).unwrap()));
    c.bench_function("jwt/verify HS256 (full)", |b| {
        b.iter(|| signer.verify(&token, TokenUse::Access).unwrap())
    });
    c.bench_function("jwt/verify HS256 (cached, as the MCP endpoint)", |b| {
        b.iter(|| signer.verify_access(&token).unwrap())
    });
    let es = TokenSigner::generated(
        jsonwebtoken::Algorithm::ES256,
        "https://mcp.example.com",
        "https://mcp.example.com/mcp",
    )
    .unwrap();
    let es_token = es.sign(&access).unwrap();
    c.bench_function("jwt/sign ES256", |b| b.iter(|| es.sign(&access).unwrap()));
    c.bench_function("jwt/verify ES256 (full)", |b| {
        b.iter(|| es.verify(&es_token, TokenUse::Access).unwrap())
    });
}

fn grant() -> Grant {
    Grant {
        client_id: "Cw0Xo8Hk1zBzWmQf2A8b1g".into(),
        subject: "user-123".into(),
        scopes: Scopes::parse("openid profile email"),
        resource: "https://mcp.example.com/mcp".into(),
        claims: r#"{"email":"user@example.com","name":"Test User"}"#.into(),
        upstream: UpstreamTokens {
            access_token: "gho_16C7e42F292c6912E7710c838347Ae178B4a".into(),
            token_type: "Bearer".into(),
            refresh_token: Some("ghr_1B4a2e77838347a7E420ce178F2E7c6912E169246".into()),
            id_token: None,
            expires_at: Some(now_secs() + 28_800),
            scope: Some("read:user user:email".into()),
        },
        current: None,
        previous: None,
        passthrough_refresh_hash: None,
        revoked_access: Vec::new(),
        created_at: now_secs(),
        sign_in_claims: Some("{}".into()),
    }
}

fn vault(c: &mut Criterion) {
    let sealer = Sealer::new(b"bench-encryption-key-bench-encryption-key");
    let record = postcard::to_stdvec(&grant()).unwrap();
    let sealed = sealer.seal(b"grant:kQ1i9m0Fhz7l8c0dVf3rJ6bQx0p4sT2a", &record);
    c.bench_function("vault/seal a grant record (postcard + AES-256-GCM)", |b| {
        b.iter(|| {
            let plain = postcard::to_stdvec(&grant()).unwrap();
            sealer.seal(b"grant:kQ1i9m0Fhz7l8c0dVf3rJ6bQx0p4sT2a", &plain)
        })
    });
    c.bench_function("vault/open a grant record (AES-256-GCM + postcard)", |b| {
        b.iter(|| {
            let plain = sealer.open(b"grant:kQ1i9m0Fhz7l8c0dVf3rJ6bQx0p4sT2a", &sealed).unwrap();
            postcard::from_bytes::<Grant>(&plain).unwrap()
        })
    });
}

fn pkce(c: &mut Criterion) {
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = CodeChallenge::parse(Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"), Some("S256")).unwrap();
    c.bench_function("pkce/verify S256", |b| {
        b.iter(|| assert!(challenge.is_satisfied_by(verifier)))
    });
}

fn redirect_uris(c: &mut Criterion) {
    let registered = RedirectUri::parse("http://127.0.0.1/callback", None).unwrap();
    let requested = Url::parse("http://127.0.0.1:51234/callback").unwrap();
    c.bench_function("redirect-uri/parse a registered URI", |b| {
        b.iter(|| RedirectUri::parse("https://claude.ai/api/mcp/auth_callback", None).unwrap())
    });
    c.bench_function("redirect-uri/match loopback on any port", |b| {
        b.iter(|| assert!(registered.matches(&requested)))
    });
    let url = Url::parse("https://app.trusted.example/oauth/callback").unwrap();
    c.bench_function("redirect-uri/operator pattern", |b| {
        b.iter(|| assert!(pattern_matches("https://*.trusted.example/*", &url)))
    });
}

/// The proxy and a fast backend in this process; answers (proxy URL,
/// backend URL, access token).
fn start_gateway() -> (String, String, String) {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let system = actix_rt::System::new();
        system.block_on(async move {
            let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
            let backend_listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let backend = format!("http://127.0.0.1:{}/mcp", backend_listener.local_addr().unwrap().port());
            let server = HttpServer::new(|| {
                App::new().route(
                    "/mcp",
                    web::post().to(|| async {
                        HttpResponse::Ok().json(serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {}}))
                    }),
                )
            })
            .workers(1)
            .disable_signals()
            .listen(backend_listener)
            .unwrap()
            .run();
            actix_rt::spawn(server);

            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
            let settings = [
                ("OAUTH_PROXY_BASE_URL", base.as_str()),
                (
                    "OAUTH_PROXY_UPSTREAM_AUTHORIZATION_ENDPOINT",
                    "https://upstream.example/authorize",
                ),
                ("OAUTH_PROXY_UPSTREAM_TOKEN_ENDPOINT", "https://upstream.example/token"),
                ("OAUTH_PROXY_UPSTREAM_CLIENT_ID", "id"),
                ("OAUTH_PROXY_UPSTREAM_CLIENT_SECRET", "secret"),
                ("OAUTH_PROXY_STORAGE", "memory"),
                ("OAUTH_PROXY_JWT_SIGNING_KEY", KEY),
                ("OAUTH_PROXY_WORKERS", "1"),
                ("OAUTH_PROXY_MCP_UPSTREAM_URL", backend.as_str()),
            ];
            let config =
                Config::from_lookup(|name| settings.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()))
                    .unwrap();
            let proxy = OAuthProxy::start(config).await.unwrap();
            // A grant and its access token, straight into the vault.
            let grant_id = "kQ1i9m0Fhz7l8c0dVf3rJ6bQx0p4sT2a".to_string();
            let mut record = grant();
            record.resource = format!("{base}/mcp");
            let pair = IssuedPair {
                access_jti: format!("{grant_id}.a"),
                refresh_jti: format!("{grant_id}.r"),
                issued_at: now_secs(),
                scope: "openid profile email".into(),
            };
            record.current = Some(pair.clone());
            proxy
                .token_vault()
                .send(CreateGrant {
                    grant_id,
                    grant: record,
                    ttl: Duration::from_secs(3600),
                })
                .await
                .unwrap()
                .unwrap();
            let signer = TokenSigner::hs256(KEY.as_bytes(), &base, &format!("{base}/mcp"));
            let mut access = claims(TokenUse::Access);
            access.iss = base.clone();
            access.aud = format!("{base}/mcp");
            access.jti = pair.access_jti;
            let token = signer.sign(&access).unwrap();
            let server = startup::run(listener, proxy).unwrap();
            sender.send((base, backend, token)).unwrap();
            server.await.unwrap();
        });
    });
    receiver.recv().unwrap()
}

/// One read and one write of a grant-sized record through the memory
/// store's `Table`, as the actors call it (a trait object).
fn store(c: &mut Criterion) {
    use futures_util::FutureExt;
    use mcp_oauth_proxy::metrics::Metrics;
    use mcp_oauth_proxy::store::instrumented::InstrumentedTable;
    use mcp_oauth_proxy::store::{memory::MemoryTable, Table};
    use std::sync::Arc;

    let record = vec![7u8; 300];
    let ttl = Duration::from_secs(3600);
    let key = "kQ1i9m0Fhz7l8c0dVf3rJ6bQx0p4sT2a";
    let table: Arc<dyn Table> = Arc::new(MemoryTable::default());
    table.put(key, record.clone(), ttl).now_or_never().unwrap().unwrap();
    c.bench_function("store/memory get", |b| {
        b.iter(|| table.get(key).now_or_never().unwrap().unwrap().unwrap())
    });
    c.bench_function("store/memory put", |b| {
        b.iter(|| table.put(key, record.clone(), ttl).now_or_never().unwrap().unwrap())
    });
    // The same table as the proxy holds it: counted by the metrics
    // decorator (memory tables are not timed).
    let metrics = Metrics::new();
    let counted = InstrumentedTable::wrap(table.clone(), &metrics, "memory", "grant", false);
    c.bench_function("store/memory get (counted)", |b| {
        b.iter(|| counted.get(key).now_or_never().unwrap().unwrap().unwrap())
    });
    c.bench_function("store/memory put (counted)", |b| {
        b.iter(|| counted.put(key, record.clone(), ttl).now_or_never().unwrap().unwrap())
    });
    // As a backend that does I/O is wrapped: counted and timed.
    let timed = InstrumentedTable::wrap(table.clone(), &metrics, "directory", "grant", true);
    c.bench_function("store/memory get (counted and timed)", |b| {
        b.iter(|| timed.get(key).now_or_never().unwrap().unwrap().unwrap())
    });
}

fn gateway(c: &mut Criterion) {
    let (base, backend, token) = start_gateway();
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let runtime = actix_rt::System::new();
    let client = runtime.block_on(async { awc::Client::default() });
    let hop = |url: String, authorization: Option<String>, iterations: u64| -> Duration {
        runtime.block_on(async {
            let started = Instant::now();
            for _ in 0..iterations {
                let mut request = client.post(&url).insert_header(("Content-Type", "application/json"));
                if let Some(authorization) = &authorization {
                    request = request.insert_header(("Authorization", authorization.clone()));
                }
                let mut response = request.send_body(body).await.unwrap();
                assert!(response.status().is_success());
                let _ = response.body().await.unwrap();
            }
            started.elapsed()
        })
    };
    let mut group = c.benchmark_group("gateway");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("one MCP POST to the backend directly", |b| {
        b.iter_custom(|n| hop(backend.clone(), None, n))
    });
    group.bench_function("one MCP POST through the proxy (token check, vault, forward)", |b| {
        b.iter_custom(|n| hop(format!("{base}/mcp"), Some(format!("Bearer {token}")), n))
    });
    group.finish();
}

criterion_group!(benches, jwt, vault, pkce, redirect_uris, store, gateway);
criterion_main!(benches);
