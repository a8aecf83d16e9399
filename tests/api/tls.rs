//! Outbound TLS: Redis over `rediss://`, the upstream provider and the MCP
//! server over https, each with a certificate from a CA made here, trusted
//! only through `OAUTH_PROXY_EXTRA_CA_FILE`.

use std::net::TcpListener;
use std::process::Stdio;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use awc::http::StatusCode;
use mcp_oauth_proxy::{Config, OAuthProxy};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;

use crate::backend_double::BackendDouble;
use crate::helpers::{free_port, upstream_settings, TestApp};
use crate::mock_upstream::{MockUpstream, MockUpstreamConfig};
use crate::redis_server::{RedisServer, TlsSetup};
use crate::service::service;

/// A CA made for one test, and a server certificate it signed for
/// `127.0.0.1` and `localhost`, as PEM files in a directory of their own.
pub struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    pub fn new(name: &str) -> TestPki {
        let dir = tempfile::Builder::new()
            .prefix(&format!("mcp-oauth-proxy-pki-{name}-"))
            .tempdir()
            .unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(DnType::CommonName, format!("mcp-oauth-proxy test CA ({name})"));
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();

        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "127.0.0.1");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate().unwrap();
        let server = params.signed_by(&server_key, &ca).unwrap();

        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), server.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), server_key.serialize_pem()).unwrap();
        TestPki { dir }
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    pub fn ca_file(&self) -> String {
        self.file("ca.pem")
    }

    /// A TLS server configuration presenting the server certificate.
    pub fn server_config(&self) -> rustls::ServerConfig {
        let chain = CertificateDer::pem_file_iter(self.file("server.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(self.file("server.key")).unwrap();
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap()
    }
}

/// An https server with the test PKI's certificate that hands every request
/// on to `target` over plain http and its answer back.
struct HttpsFront {
    base: String,
    handle: ServerHandle,
}

impl HttpsFront {
    async fn start(pki: &TestPki, target: &str) -> HttpsFront {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let target = web::Data::new(target.trim_end_matches('/').to_string());
        let server = HttpServer::new(move || App::new().app_data(target.clone()).default_service(web::to(forward)))
            .workers(1)
            .disable_signals()
            .shutdown_timeout(1)
            .listen_rustls_0_23(listener, pki.server_config())
            .unwrap()
            .run();
        let handle = server.handle();
        actix_rt::spawn(server);
        HttpsFront { base, handle }
    }

    async fn stop(self) {
        self.handle.stop(false).await;
    }
}

async fn forward(request: HttpRequest, body: web::Bytes, target: web::Data<String>) -> HttpResponse {
    // Over HTTP/2 the URI is absolute: keep its path and query.
    let path = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let url = format!("{}{path}", target.as_str());
    let mut out = awc::Client::new().request(request.method().clone(), url);
    for (name, value) in request.headers() {
        if name != header::HOST && name != header::CONTENT_LENGTH {
            out = out.append_header((name.clone(), value.clone()));
        }
    }
    let mut answer = match out.send_body(body).await {
        Ok(answer) => answer,
        Err(e) => return HttpResponse::BadGateway().body(e.to_string()),
    };
    let body = answer.body().limit(1 << 20).await.unwrap_or_default();
    let mut response = HttpResponse::build(answer.status());
    for (name, value) in answer.headers() {
        if name != header::CONTENT_LENGTH && name != header::TRANSFER_ENCODING && name != header::CONNECTION {
            response.append_header((name.clone(), value.clone()));
        }
    }
    response.body(body)
}

/// What every instance on Redis must be given.
const SHARED_KEYS: [(&str, &str); 2] = [
    ("OAUTH_PROXY_ENCRYPTION_KEY", "tls-test-encryption-key-0123456789abcdef"),
    (
        "OAUTH_PROXY_CONSENT_SIGNING_KEY",
        "tls-test-consent-key-0123456789abcdefgh",
    ),
];

async fn tls_redis(pki: &TestPki) -> RedisServer {
    let (cert, key, ca) = (pki.file("server.pem"), pki.file("server.key"), pki.ca_file());
    RedisServer::start_tls(TlsSetup {
        cert_file: &cert,
        key_file: &key,
        ca_file: &ca,
        password: "the-default-users-password",
        user: ("alice", "secret"),
    })
    .await
}

#[actix_web::test]
async fn a_full_flow_runs_on_redis_over_tls_as_an_acl_user_trusting_the_extra_ca() {
    let pki = TestPki::new("redis-ok");
    let redis = tls_redis(&pki).await;
    let url = format!("rediss://alice:secret@127.0.0.1:{}/", redis.port);
    let ca = pki.ca_file();
    let mut settings = vec![
        ("OAUTH_PROXY_STORAGE", url.as_str()),
        ("OAUTH_PROXY_EXTRA_CA_FILE", ca.as_str()),
    ];
    settings.extend(SHARED_KEYS);
    let app = TestApp::spawn_with(&settings, MockUpstreamConfig::default()).await;

    let client = app.register_confidential().await;
    let tokens = app.full_flow(&client).await;
    let refreshed = app.refresh(&client, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    // The records are in that Redis (read back over TLS as alice).
    let keys = redis.cli(&["--scan", "--pattern", "mcp-oauth-proxy:{grant}:*"]);
    assert!(
        keys.lines().any(|k| !k.ends_with("~index")),
        "a grant in Redis: {keys:?}"
    );
    app.stop().await;
}

#[actix_web::test]
async fn the_service_refuses_to_start_on_redis_over_tls_it_cannot_verify_and_says_what_to_do() {
    let pki = TestPki::new("redis-unknown-ca");
    let redis = tls_redis(&pki).await;
    let upstream = MockUpstream::start(MockUpstreamConfig::default()).await;
    let port = free_port();
    let mut command = service();
    command
        .env("OAUTH_PROXY_BIND", format!("127.0.0.1:{port}"))
        .env("OAUTH_PROXY_BASE_URL", format!("http://127.0.0.1:{port}"))
        .env(
            "OAUTH_PROXY_STORAGE",
            format!("rediss://alice:secret@127.0.0.1:{}/", redis.port),
        )
        .env("OAUTH_PROXY_JWT_SIGNING_KEY", "tls-test-signing-key-0123456789abcdefgh")
        .env("RUST_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, value) in upstream_settings(&upstream) {
        command.env(name, value);
    }
    for (name, value) in SHARED_KEYS {
        command.env(name, value);
    }
    let started = Instant::now();
    let mut child = command.spawn().unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            panic!("the service neither started nor stopped within 15 s: {stderr}");
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("OAUTH_PROXY_STORAGE"), "{stderr}");
    assert!(stderr.contains("certificate"), "{stderr}");
    assert!(
        stderr.contains("OAUTH_PROXY_EXTRA_CA_FILE"),
        "says what to do: {stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    upstream.stop().await;
}

#[actix_web::test]
async fn the_upstream_over_https_is_trusted_through_the_extra_ca_and_only_through_it() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let pki = TestPki::new("upstream");
    let upstream = Rc::new(MockUpstream::start(MockUpstreamConfig::default()).await);
    let front = HttpsFront::start(&pki, &upstream.base_url()).await;
    let token_path = url::Url::parse(&upstream.token_endpoint()).unwrap().path().to_string();
    let token_endpoint = format!("{}{token_path}", front.base);
    let ca = pki.ca_file();

    // The token endpoint over https: the code exchange at the callback works.
    let app = TestApp::spawn_instance(
        &[
            ("OAUTH_PROXY_UPSTREAM_TOKEN_ENDPOINT", token_endpoint.as_str()),
            ("OAUTH_PROXY_EXTRA_CA_FILE", ca.as_str()),
        ],
        upstream.clone(),
    )
    .await;
    let client = app.register_confidential().await;
    let tokens = app.full_flow(&client).await;
    assert!(tokens["access_token"].is_string());
    assert_eq!(
        upstream.token_requests().len(),
        1,
        "the exchange went through the https front"
    );
    app.stop().await;

    // Discovery over https at start-up: with the CA it works; without it the
    // start fails on the certificate.
    let mut env: std::collections::HashMap<&str, String> = upstream_settings(&upstream).into_iter().collect();
    env.remove("OAUTH_PROXY_UPSTREAM_AUTHORIZATION_ENDPOINT");
    env.remove("OAUTH_PROXY_UPSTREAM_TOKEN_ENDPOINT");
    env.insert("OAUTH_PROXY_UPSTREAM_ISSUER", front.base.clone());
    env.insert("OAUTH_PROXY_BASE_URL", "http://127.0.0.1:1".into());
    env.insert("OAUTH_PROXY_STORAGE", "memory".into());
    let without = Config::from_lookup(|name| env.get(name).cloned()).unwrap();
    env.insert("OAUTH_PROXY_EXTRA_CA_FILE", ca.clone());
    let with = Config::from_lookup(|name| env.get(name).cloned()).unwrap();
    let proxy = OAuthProxy::start(with).await.expect("discovery over https with the CA");
    assert_eq!(
        proxy.upstream().token_endpoint.as_str(),
        upstream.token_endpoint(),
        "the discovered endpoints"
    );
    proxy.shutdown().await;
    let error = match OAuthProxy::start(without).await {
        Ok(_) => panic!("discovery must not trust a certificate from an unknown CA"),
        Err(e) => e.to_string(),
    };
    assert!(error.to_lowercase().contains("certificate"), "{error}");

    front.stop().await;
    if let Ok(upstream) = Rc::try_unwrap(upstream) {
        upstream.stop().await;
    }
}

#[actix_web::test]
async fn the_mcp_server_over_https_is_trusted_through_the_extra_ca_and_only_through_it() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let pki = TestPki::new("mcp-server");
    let backend = BackendDouble::start().await;
    let backend_base = backend.url.trim_end_matches("/mcp").to_string();
    let front = HttpsFront::start(&pki, &backend_base).await;
    let mcp_url = format!("{}/mcp", front.base);
    let ca = pki.ca_file();
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});

    let app = TestApp::spawn_with(
        &[
            ("OAUTH_PROXY_MCP_UPSTREAM_URL", mcp_url.as_str()),
            ("OAUTH_PROXY_EXTRA_CA_FILE", ca.as_str()),
        ],
        MockUpstreamConfig::default(),
    )
    .await;
    let client = app.register_confidential().await;
    let tokens = app.full_flow(&client).await;
    let answer = app.mcp_post(tokens["access_token"].as_str(), ping.clone()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.json()["id"], 1);
    app.stop().await;

    let app = TestApp::spawn_with(
        &[("OAUTH_PROXY_MCP_UPSTREAM_URL", mcp_url.as_str())],
        MockUpstreamConfig::default(),
    )
    .await;
    let client = app.register_confidential().await;
    let tokens = app.full_flow(&client).await;
    let answer = app.mcp_post(tokens["access_token"].as_str(), ping).await;
    assert_eq!(
        answer.status,
        StatusCode::BAD_GATEWAY,
        "an unknown CA is not trusted: {}",
        answer.body
    );
    app.stop().await;

    front.stop().await;
    backend.stop().await;
}
