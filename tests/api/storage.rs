//! Storage backends through HTTP: the directory store survives restarts
//! (SIGTERM and SIGKILL); Redis lets two instances share one flow, keeps
//! codes single-use and refresh rotation atomic across them, and a Redis
//! outage gives 503s until it comes back.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::rc::Rc;
use std::time::{Duration, Instant};

use awc::http::StatusCode;
use mcp_oauth_proxy::actors::token_vault::BACKFILL_MARKER;
use serde_json::json;

use crate::backend_double::BackendDouble;
use crate::helpers::{free_port, query_param, upstream_settings, Driver, Pkce, TestApp, TestClient, REDIRECT_URI};
use crate::mock_upstream::{MockUpstream, MockUpstreamConfig};
use crate::redis_server::RedisServer;
use crate::service::RunningService;

/// A path `name` that does not exist yet (the proxy creates its data
/// directory itself, as on a first start), inside a fresh temporary
/// directory that is removed when the returned guard drops.
fn temp_dir(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let guard = tempfile::tempdir().unwrap();
    let dir = guard.path().join(name);
    (guard, dir)
}

/// Every file below `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn ping() -> serde_json::Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})
}

#[actix_web::test]
async fn the_directory_store_keeps_clients_grants_and_tokens_across_restarts_and_sigkill() {
    let upstream = MockUpstream::start(MockUpstreamConfig::default()).await;
    let backend = BackendDouble::start().await;
    let (_dir_guard, dir) = temp_dir("data");
    let port = free_port();
    let mut variables = upstream_settings(&upstream);
    variables.extend([
        ("OAUTH_PROXY_STORAGE", dir.display().to_string()),
        ("OAUTH_PROXY_MCP_UPSTREAM_URL", backend.url.clone()),
    ]);
    let service = RunningService::start(port, &variables).await;
    let driver = Driver::new(&service.address);
    let client = driver.register_confidential().await;
    let tokens = driver.full_flow(&client).await;
    let access = tokens["access_token"].as_str().unwrap().to_string();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_string();
    let upstream_token = upstream.issued_access_tokens()[0].clone();

    // Generated keys were kept in the directory, readable by the owner only.
    let keys = dir.join("keys.json");
    assert_eq!(std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777, 0o600);
    let key_file = std::fs::read_to_string(&keys).unwrap();
    assert!(!key_file.contains(&upstream_token), "no token material in the key file");
    let stored = files_under(&dir.join("store"));
    assert!(!stored.is_empty(), "the store wrote its journal");
    for file in stored {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !bytes
                .windows(upstream_token.len())
                .any(|w| w == upstream_token.as_bytes()),
            "tokens at rest are encrypted ({})",
            file.display()
        );
    }

    service.stop_with("TERM").await;
    let service = RunningService::start(port, &variables).await;
    // The same access token still maps to the same upstream tokens.
    assert_eq!(driver.mcp_post(Some(&access), ping()).await.status, StatusCode::OK);
    assert_eq!(backend.last_authorization(), Some(format!("Bearer {upstream_token}")));
    // The client is still registered and its refresh token still works.
    let refreshed = driver.refresh(&client, &refresh).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    let refreshed = refreshed.json();

    // SIGKILL right after the answer: what the answer promised was durable.
    service.stop_with("KILL").await;
    let service = RunningService::start(port, &variables).await;
    let new_access = refreshed["access_token"].as_str().unwrap();
    assert_eq!(driver.mcp_post(Some(new_access), ping()).await.status, StatusCode::OK);
    let again = driver
        .refresh(&client, refreshed["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    // The old refresh token stays rotated out.
    assert_eq!(driver.refresh(&client, &refresh).await.json()["error"], "invalid_grant");
    // New flows work after the restarts too.
    let other = driver.register_public().await;
    assert!(driver.full_flow(&other).await["access_token"].is_string());

    service.stop_with("TERM").await;
    backend.stop().await;
    upstream.stop().await;
}

#[actix_web::test]
async fn the_directory_stores_callback_answer_survives_sigkill_the_state_spent_and_the_code_redeemable() {
    // The callback's take of the transaction is answered before its own
    // sync; the code write that follows must carry it to disk with it.
    let upstream = MockUpstream::start(MockUpstreamConfig::default()).await;
    let (_dir_guard, dir) = temp_dir("callback");
    let port = free_port();
    let mut variables = upstream_settings(&upstream);
    variables.push(("OAUTH_PROXY_STORAGE", dir.display().to_string()));
    let service = RunningService::start(port, &variables).await;
    let driver = Driver::new(&service.address);
    let client = driver.register_confidential().await;
    let pkce = Pkce::new();
    let page = driver.browser_get(&driver.authorize_path(&client, &pkce, "s")).await;
    let to_upstream = driver.approve(&page).await;
    let callback = driver.browser_get(to_upstream.location().as_str()).await.location();
    let back = driver.browser_get(callback.as_str()).await;
    assert_eq!(back.status, StatusCode::FOUND, "{}", back.body);
    let code = query_param(&back.location(), "code").expect("a code for the client");

    service.stop_with("KILL").await;
    let service = RunningService::start(port, &variables).await;
    let replay = driver.browser_get(callback.as_str()).await;
    assert_eq!(
        replay.status,
        StatusCode::BAD_REQUEST,
        "the state was spent: {}",
        replay.body
    );
    assert!(replay.body.contains("expired"), "{}", replay.body);
    let tokens = driver.exchange_code(&client, &code, &pkce.verifier).await;
    assert_eq!(tokens.status, StatusCode::OK, "the code was stored: {}", tokens.body);

    service.stop_with("TERM").await;
    upstream.stop().await;
}

fn redis_settings(redis: &RedisServer, base_url: Option<&str>) -> Vec<(&'static str, String)> {
    let mut settings = vec![
        ("OAUTH_PROXY_STORAGE", redis.url()),
        (
            "OAUTH_PROXY_ENCRYPTION_KEY",
            "test-encryption-key-test-encryption-key".to_string(),
        ),
        (
            "OAUTH_PROXY_CONSENT_SIGNING_KEY",
            "test-consent-key-test-consent-key-01234".to_string(),
        ),
    ];
    if let Some(base) = base_url {
        settings.push(("OAUTH_PROXY_BASE_URL", base.to_string()));
    }
    settings
}

fn as_refs<'a>(settings: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    settings.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Two instances behind one issuer URL (A's), sharing a Redis and an upstream.
async fn two_instances(redis: &RedisServer) -> (TestApp, TestApp) {
    let upstream = Rc::new(MockUpstream::start(MockUpstreamConfig::default()).await);
    let a = TestApp::spawn_instance(&as_refs(&redis_settings(redis, None)), upstream.clone()).await;
    let b = TestApp::spawn_instance(&as_refs(&redis_settings(redis, Some(&a.address))), upstream).await;
    (a, b)
}

#[actix_web::test]
async fn redis_refuses_to_start_with_generated_keys() {
    let config = mcp_oauth_proxy::Config::from_lookup(|name| match name {
        "OAUTH_PROXY_BASE_URL" => Some("http://127.0.0.1:1".into()),
        "OAUTH_PROXY_UPSTREAM_AUTHORIZATION_ENDPOINT" => Some("https://up.example/a".into()),
        "OAUTH_PROXY_UPSTREAM_TOKEN_ENDPOINT" => Some("https://up.example/t".into()),
        "OAUTH_PROXY_UPSTREAM_CLIENT_ID" | "OAUTH_PROXY_UPSTREAM_CLIENT_SECRET" => Some("x".into()),
        "OAUTH_PROXY_STORAGE" => Some("redis://127.0.0.1:1/".into()),
        _ => None,
    });
    let error = config.unwrap_err();
    assert_eq!(error.variable, "OAUTH_PROXY_JWT_SIGNING_KEY");
    assert!(error.problem.contains("Redis"));
}

#[actix_web::test]
async fn a_flow_started_on_one_instance_finishes_on_another() {
    let redis = RedisServer::start().await;
    let (a, b) = two_instances(&redis).await;
    let client = a.register_confidential().await;
    let pkce = Pkce::new();
    // Register, authorize and consent on A...
    let page = a.browser_get(&a.authorize_path(&client, &pkce, "st")).await;
    let to_upstream = a.approve(&page).await;
    let upstream_answer = a.browser_get(to_upstream.location().as_str()).await;
    // ...the upstream sends the browser back, and the balancer picks B.
    let callback_on_b = upstream_answer.location().as_str().replacen(&a.address, &b.address, 1);
    let back = a.browser_get(&callback_on_b).await;
    assert_eq!(back.status, StatusCode::FOUND, "{}", back.body);
    let to_client = back.location();
    assert!(to_client.as_str().starts_with(REDIRECT_URI));
    let code = query_param(&to_client, "code").unwrap();
    let tokens = b.exchange_code(&client, &code, &pkce.verifier).await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.body);
    let refreshed = b
        .refresh(&client, tokens.json()["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    // And A accepts what B issued.
    assert!(a
        .proxy
        .load_upstream_tokens(refreshed.json()["access_token"].as_str().unwrap())
        .await
        .is_some());
    a.stop().await;
    b.stop().await;
}

#[actix_web::test]
async fn a_code_redeemed_on_one_instance_cannot_be_redeemed_on_another() {
    let redis = RedisServer::start().await;
    let (a, b) = two_instances(&redis).await;
    let client = a.register_public().await;
    let pkce = Pkce::new();
    let code = a.code_for(&client, &pkce).await;
    let first = a.exchange_code(&client, &code, &pkce.verifier).await.json();
    // Another redemption on B, not an immediate duplicate of the same request:
    let mut other = client.clone();
    other.client_id = b.register_public().await.client_id;
    let replay = b.exchange_code(&other, &code, &pkce.verifier).await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST);
    assert_eq!(replay.json()["error"], "invalid_grant");
    // The replay revoked what A issued, on both instances.
    let access = first["access_token"].as_str().unwrap();
    assert!(a.proxy.load_upstream_tokens(access).await.is_none());
    assert!(b.proxy.load_upstream_tokens(access).await.is_none());
    a.stop().await;
    b.stop().await;
}

#[actix_web::test]
async fn twenty_concurrent_refreshes_across_two_instances_never_fork_the_family() {
    let redis = RedisServer::start().await;
    let (a, b) = two_instances(&redis).await;
    let client = a.register_public().await;
    let tokens = a.full_flow(&client).await;
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let requests = (0..20).map(|i| {
        let instance = if i % 2 == 0 { &a } else { &b };
        instance.refresh(&client, refresh)
    });
    let answers = futures_util::future::join_all(requests).await;
    let issued: std::collections::HashSet<String> = answers
        .iter()
        .filter(|answer| answer.status == StatusCode::OK)
        .map(|answer| answer.json()["refresh_token"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        issued.len(),
        1,
        "exactly one new refresh token (others: the grace answer): {issued:?}"
    );
    for answer in &answers {
        assert!(
            answer.status == StatusCode::OK || answer.json()["error"] == "invalid_grant",
            "{}",
            answer.body
        );
    }
    // The one successor works on either instance.
    let successor = issued.into_iter().next().unwrap();
    assert_eq!(b.refresh(&client, &successor).await.status, StatusCode::OK);
    a.stop().await;
    b.stop().await;
}

/// A registration never used expires after OAUTH_PROXY_UNUSED_CLIENT_TTL; a
/// client that has exchanged a code lives on (the registry extends its
/// record's expiry without rewriting it), in memory and in Redis.
#[actix_web::test]
async fn a_client_that_exchanged_a_code_outlives_the_unused_client_ttl() {
    let redis = RedisServer::start().await;
    let mut in_redis = redis_settings(&redis, None);
    in_redis.push(("OAUTH_PROXY_UNUSED_CLIENT_TTL", "1".into()));
    let in_memory = vec![
        ("OAUTH_PROXY_STORAGE", "memory".to_string()),
        ("OAUTH_PROXY_UNUSED_CLIENT_TTL", "1".into()),
    ];
    for settings in [in_memory, in_redis] {
        let upstream = Rc::new(MockUpstream::start(MockUpstreamConfig::default()).await);
        let app = TestApp::spawn_instance(&as_refs(&settings), upstream).await;
        let (used, unused) = (app.register_public().await, app.register_public().await);
        let pkce = Pkce::new();
        let code = app.code_for(&used, &pkce).await;
        assert_eq!(
            app.exchange_code(&used, &code, &pkce.verifier).await.status,
            StatusCode::OK
        );
        actix_rt::time::sleep(Duration::from_millis(1500)).await;
        let gone = app.browser_get(&app.authorize_path(&unused, &Pkce::new(), "s")).await;
        assert_eq!(gone.status, StatusCode::BAD_REQUEST, "{}", gone.body);
        assert!(gone.body.contains("Unknown client"));
        let kept = app.browser_get(&app.authorize_path(&used, &Pkce::new(), "s")).await;
        assert_ne!(kept.status, StatusCode::BAD_REQUEST, "{}", kept.body);
        app.stop().await;
    }
}

/// A proxy with one worker (memos are per thread) on a fresh Redis.
async fn one_worker_with_redis() -> (RedisServer, TestApp) {
    let redis = RedisServer::start().await;
    let mut settings = redis_settings(&redis, None);
    settings.push(("OAUTH_PROXY_WORKERS", "1".into()));
    let upstream = Rc::new(MockUpstream::start(MockUpstreamConfig::default()).await);
    let app = TestApp::spawn_instance(&as_refs(&settings), upstream).await;
    until_the_start_up_backfill_is_done(&redis).await;
    (redis, app)
}

/// Waits (bounded) until the one-time grant index backfill a proxy runs in
/// the background as it starts is done, so a test that counts Redis
/// commands counts only its own.
async fn until_the_start_up_backfill_is_done(redis: &RedisServer) {
    let (table, key) = BACKFILL_MARKER;
    let marker = format!("mcp-oauth-proxy:{{{table}}}:{key}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis.cli(&["get", &marker]).trim() != "done" {
        assert!(Instant::now() < deadline, "the start-up backfill never finished");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Client records are never rewritten, so a lookup is remembered for up to a
/// second even with Redis: the token request right after /authorize does not
/// read the client again (here it still succeeds after the record was
/// removed behind the proxy's back). After a second the store is asked again.
#[actix_web::test]
async fn a_client_lookup_is_remembered_for_at_most_a_second_even_with_redis() {
    let (redis, app) = one_worker_with_redis().await;
    let client = app.register_public().await;
    let pkce = Pkce::new();
    let code = app.code_for(&client, &pkce).await;
    let removed = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "del"])
        .arg(format!("mcp-oauth-proxy:{{client}}:{}", client.client_id))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&removed.stdout).trim(), "1");
    let tokens = app.exchange_code(&client, &code, &pkce.verifier).await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.body);
    actix_rt::time::sleep(Duration::from_millis(1100)).await;
    let gone = app.browser_get(&app.authorize_path(&client, &Pkce::new(), "s")).await;
    assert_eq!(gone.status, StatusCode::BAD_REQUEST, "{}", gone.body);
    assert!(gone.body.contains("Unknown client"));
    app.stop().await;
}

/// MCP clients go to /authorize right after registering: the thread that
/// registered a client remembers the record it wrote, so /authorize does not
/// read it back from Redis (a round trip per flow).
#[actix_web::test]
async fn authorize_right_after_registration_does_not_read_the_client_back() {
    let (redis, app) = one_worker_with_redis().await;
    let client = app.register_public().await;
    let reads_before = redis.calls("get");
    let page = app.browser_get(&app.authorize_path(&client, &Pkce::new(), "s")).await;
    assert_eq!(page.status, StatusCode::OK, "the consent page: {}", page.body);
    assert_eq!(redis.calls("get") - reads_before, 0, "the client was read back");
    // A second later the store is asked again.
    actix_rt::time::sleep(Duration::from_millis(1100)).await;
    let page = app.browser_get(&app.authorize_path(&client, &Pkce::new(), "s")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(redis.calls("get") - reads_before, 1);
    app.stop().await;
}

/// Swap mode: the callback writes the grant with the ids of its first token
/// pair, so the token request reads and swaps only the code, and extends the
/// grant's life without reading or rewriting it.
#[actix_web::test]
async fn the_token_request_reads_only_the_code_and_leaves_the_grant_as_written() {
    let redis = RedisServer::start().await;
    let upstream = Rc::new(MockUpstream::start(MockUpstreamConfig::default()).await);
    let app = TestApp::spawn_instance(&as_refs(&redis_settings(&redis, None)), upstream).await;
    until_the_start_up_backfill_is_done(&redis).await;
    let client = app.register_public().await;
    // A first flow loads the swap script into this fresh Redis (the first
    // EVALSHA meets NOSCRIPT and is sent again).
    app.full_flow(&client).await;
    let pkce = Pkce::new();
    let code = app.code_for(&client, &pkce).await;
    let (reads, swaps) = (redis.calls("get"), redis.calls("evalsha"));
    let tokens = app.exchange_code(&client, &code, &pkce.verifier).await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.body);
    // The compare-and-swap script reads the code once more, on the server.
    assert_eq!(redis.calls("get") - reads, 2, "the code, and in the swap");
    assert_eq!(redis.calls("evalsha") - swaps, 1, "the code's redemption only");
    // The tokens work: the access token at the MCP endpoint's lookup, the
    // refresh token for a rotation.
    let refreshed = app
        .refresh(&client, tokens.json()["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    app.stop().await;
}

/// The registration cap counts clients in Redis, a round trip. Far below the
/// cap a count read within the last second is trusted; from half the cap on
/// every registration counts, so two instances together stop exactly at it.
#[actix_web::test]
async fn the_registration_cap_holds_across_instances_and_far_below_it_skips_counting() {
    let redis = RedisServer::start().await;
    let upstream = Rc::new(MockUpstream::start(MockUpstreamConfig::default()).await);
    let body = json!({ "redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "none" });

    let mut roomy = redis_settings(&redis, None);
    roomy.push(("OAUTH_PROXY_MAX_CLIENTS", "1000".into()));
    let app = TestApp::spawn_instance(&as_refs(&roomy), upstream.clone()).await;
    let counted_before = redis.calls("zcount");
    let started = Instant::now();
    for _ in 0..10 {
        assert_eq!(app.post_json("/register", &body).await.status, StatusCode::CREATED);
    }
    let counts = redis.calls("zcount") - counted_before;
    // One count per started second at most, instead of one per registration.
    assert!(
        counts <= 1 + started.elapsed().as_secs(),
        "{counts} counts for 10 registrations"
    );
    app.stop().await;

    let redis = RedisServer::start().await;
    let mut capped = redis_settings(&redis, None);
    capped.push(("OAUTH_PROXY_MAX_CLIENTS", "4".into()));
    let a = TestApp::spawn_instance(&as_refs(&capped), upstream.clone()).await;
    capped.push(("OAUTH_PROXY_BASE_URL", a.address.clone()));
    let b = TestApp::spawn_instance(&as_refs(&capped), upstream).await;
    let mut created = 0;
    for app in [&a, &b, &a, &b, &a, &b, &a, &b] {
        let answer = app.post_json("/register", &body).await;
        match answer.status {
            StatusCode::CREATED => {
                created += 1;
                // In use, so not evicted to make room (see register.rs).
                let client = TestClient {
                    client_id: answer.json()["client_id"].as_str().unwrap().to_string(),
                    client_secret: None,
                    redirect_uri: REDIRECT_URI.to_string(),
                };
                app.full_flow(&client).await;
            }
            status => assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{}", answer.body),
        }
    }
    assert_eq!(created, 4);
    a.stop().await;
    b.stop().await;
}

#[actix_web::test]
async fn a_redis_outage_gives_503s_and_the_service_recovers_when_it_returns() {
    let mut redis = RedisServer::start().await;
    let (a, b) = two_instances(&redis).await;
    let client = a.register_public().await;
    let tokens = a.full_flow(&client).await;
    assert!(tokens["access_token"].is_string());
    redis.kill();
    let started = Instant::now();
    let registration = a
        .post_json("/register", &json!({"redirect_uris": [REDIRECT_URI]}))
        .await;
    assert_eq!(
        registration.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        registration.body
    );
    assert_eq!(registration.json()["error"], "temporarily_unavailable");
    let refresh = a
        .post_form(
            "/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
                ("client_id", &client.client_id),
            ],
            None,
        )
        .await;
    assert_eq!(refresh.status, StatusCode::SERVICE_UNAVAILABLE, "{}", refresh.body);
    let page = a.browser_get(&a.authorize_path(&client, &Pkce::new(), "s")).await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(page.header("content-type").unwrap().starts_with("text/html"));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "failures are fast: {:?}",
        started.elapsed()
    );

    redis.restart().await;
    // Redis came back empty: a new registration and flow work without a
    // restart, on each instance (each had its connection to Redis cut,
    // which its first request after the outage may find: answered 503).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut registered = Vec::new();
    for app in [&a, &b] {
        registered.push(loop {
            let answer = app
                .post_json(
                    "/register",
                    &json!({"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "none"}),
                )
                .await;
            if answer.status == StatusCode::CREATED {
                break answer.json()["client_id"].as_str().unwrap().to_string();
            }
            assert!(Instant::now() < deadline, "no recovery: {}", answer.body);
            actix_rt::time::sleep(Duration::from_millis(200)).await;
        });
    }
    let mut recovered = client.clone();
    recovered.client_id = registered.swap_remove(0);
    recovered.client_secret = None;
    assert!(b.full_flow(&recovered).await["access_token"].is_string());
    a.stop().await;
    b.stop().await;
}

/// Two instances sharing a Redis and guarding one MCP backend, A holding
/// a grant (tokens of a confidential client) whose guarded requests it
/// answers from memory.
struct GuardedPair {
    redis: RedisServer,
    _backend: BackendDouble,
    a: TestApp,
    b: TestApp,
    client: crate::helpers::TestClient,
    tokens: serde_json::Value,
}

impl GuardedPair {
    async fn start() -> GuardedPair {
        let redis = RedisServer::start().await;
        let backend = BackendDouble::start().await;
        let upstream = Rc::new(MockUpstream::start(MockUpstreamConfig::default()).await);
        let mut settings = redis_settings(&redis, None);
        settings.push(("OAUTH_PROXY_MCP_UPSTREAM_URL", backend.url.clone()));
        let a = TestApp::spawn_instance(&as_refs(&settings), upstream.clone()).await;
        settings.push(("OAUTH_PROXY_BASE_URL", a.address.clone()));
        let b = TestApp::spawn_instance(&as_refs(&settings), upstream).await;
        let client = a.register_confidential().await;
        let tokens = a.full_flow(&client).await;
        until_guarded_requests_are_answered_from_memory(&a, &redis, tokens["access_token"].as_str().unwrap()).await;
        GuardedPair {
            redis,
            _backend: backend,
            a,
            b,
            client,
            tokens,
        }
    }

    fn access(&self) -> &str {
        self.tokens["access_token"].as_str().unwrap()
    }

    async fn stop(self) {
        self.a.stop().await;
        self.b.stop().await;
    }
}

/// Waits until a guarded request on `app` no longer reads the grant from
/// Redis (its connection following invalidations is set up a moment after
/// start); panics after two seconds.
pub async fn until_guarded_requests_are_answered_from_memory(app: &TestApp, redis: &RedisServer, token: &str) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        assert_eq!(app.mcp_post(Some(token), ping()).await.status, StatusCode::OK);
        let reads = redis.calls("get");
        assert_eq!(app.mcp_post(Some(token), ping()).await.status, StatusCode::OK);
        if redis.calls("get") == reads {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "every guarded request read the grant from Redis"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Redis tells each instance of every write to the grants (server-assisted
/// client-side caching), so a guarded request need not read the grant from
/// Redis again; and a grant revoked through another instance is refused as
/// soon as Redis's push reaches the one that remembered it (RFC 7009 allows
/// for such a propagation delay and asks to keep it short): here within
/// 300 ms, where without the push the remembered grant would be served for
/// a second.
#[actix_web::test]
async fn a_grant_revoked_on_one_instance_is_refused_by_another_as_soon_as_redis_tells_it() {
    let pair = GuardedPair::start().await;
    let (client, refresh) = (&pair.client, pair.tokens["refresh_token"].as_str().unwrap());
    let revoked = pair
        .b
        .post_form(
            "/revoke",
            &[("token", refresh)],
            Some((&client.client_id, client.client_secret.as_deref().unwrap())),
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    refused_within_300_ms(&pair.a, pair.access()).await;
    pair.stop().await;
}

/// Asks `app` with `token` until it refuses it (401), failing if it is
/// still served 300 ms after the revocation made just before the call.
pub async fn refused_within_300_ms(app: &TestApp, token: &str) {
    let revoked_at = Instant::now();
    loop {
        let answer = app.mcp_post(Some(token), ping()).await;
        if answer.status == StatusCode::UNAUTHORIZED {
            return;
        }
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert!(
            revoked_at.elapsed() < Duration::from_millis(300),
            "the revoked grant was still served after 300 ms"
        );
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
}

/// When the connection that follows invalidations closes, what was
/// remembered is dropped: after Redis comes back empty, the grant it lost is
/// refused (503s while the store reconnects), never served from memory.
#[actix_web::test]
async fn a_grant_lost_with_a_redis_restart_is_not_served_from_memory() {
    let mut pair = GuardedPair::start().await;
    // A Redis that comes back empty: the grant is gone.
    pair.redis.kill();
    pair.redis.restart().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = pair.a.mcp_post(Some(pair.access()), ping()).await;
        if answer.status == StatusCode::UNAUTHORIZED {
            break;
        }
        // 503 while the store reconnects; never 200 for the deleted grant.
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{}", answer.body);
        assert!(Instant::now() < deadline, "the proxy never read the grant again");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    pair.stop().await;
}

#[actix_web::test]
async fn a_directory_store_proxy_shut_down_can_start_again_at_once_on_its_directory_in_one_process() {
    // A library user stops the server, shuts the proxy down and starts a
    // new one on the same directory straight away, while a handle to the old
    // one is still around (the proxy is a cheap clone kept in app state and
    // by every worker; here, `old`): shutdown must have released the
    // directory (fjall's lock) before it returned, whoever still holds a
    // handle or however long the store's threads take to end.
    let upstream = Rc::new(MockUpstream::start(MockUpstreamConfig::default()).await);
    let (_dir_guard, dir) = temp_dir("restart-in-process");
    let storage = dir.display().to_string();
    let settings = [("OAUTH_PROXY_STORAGE", storage.as_str())];
    let first = TestApp::spawn_instance(&settings, upstream.clone()).await;
    let old = first.proxy.clone();
    let client = first.register_confidential().await;
    assert!(first.full_flow(&client).await["access_token"].is_string());
    first.stop().await;

    let second = TestApp::spawn_instance(&settings, upstream.clone()).await;
    // The same store: the client registered with the first instance signs in.
    let tokens = second.full_flow(&client).await;
    assert!(tokens["access_token"].is_string(), "{tokens}");
    second.stop().await;
    drop(old);
}

#[actix_web::test]
async fn generated_keys_never_go_through_a_planted_temp_file_and_are_kept_owner_only() {
    // A symlink where the temp file goes, pointing outside the data directory.
    let (_dir_guard, dir) = temp_dir("keys-symlink");
    std::fs::create_dir_all(&dir).unwrap();
    let (_outside_guard, outside) = temp_dir("keys-symlink-target");
    std::fs::create_dir_all(&outside).unwrap();
    let target = outside.join("victim");
    std::fs::write(&target, "untouched").unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::symlink(&target, dir.join("keys.json.tmp")).unwrap();
    let dir_setting = dir.display().to_string();
    let app = TestApp::spawn_with(&[("OAUTH_PROXY_STORAGE", &dir_setting)], MockUpstreamConfig::default()).await;
    app.stop().await;
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
    assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o644);
    let keys = std::fs::symlink_metadata(dir.join("keys.json")).unwrap();
    assert!(keys.file_type().is_file(), "keys.json is a file of its own, not a link");
    assert_eq!(keys.permissions().mode() & 0o777, 0o600);

    // A stale temp file from an earlier run, readable by everyone.
    let (_dir_guard, dir) = temp_dir("keys-stale");
    std::fs::create_dir_all(&dir).unwrap();
    let stale = dir.join("keys.json.tmp");
    std::fs::write(&stale, "stale").unwrap();
    std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o644)).unwrap();
    let dir_setting = dir.display().to_string();
    let app = TestApp::spawn_with(&[("OAUTH_PROXY_STORAGE", &dir_setting)], MockUpstreamConfig::default()).await;
    app.stop().await;
    let keys = dir.join("keys.json");
    assert_eq!(std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777, 0o600);
    let kept: serde_json::Value = serde_json::from_slice(&std::fs::read(&keys).unwrap()).unwrap();
    assert!(kept["consent_signing_key"].is_string(), "{kept}");
    assert!(!stale.exists(), "the temp file was renamed into place");
}

/// How the previous release sealed records (aws-lc-rs AES-256-GCM, the key
/// derived as the proxy derives it, `<table>:<key>` as associated data).
fn seal_as_the_aws_lc_rs_release(secret: &str, record_key: &str, plaintext: &[u8]) -> Vec<u8> {
    use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
    let key: [u8; 32] = mcp_oauth_proxy::crypto::derive_key(secret.as_bytes(), "token-vault aes-256-gcm");
    let cipher = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).unwrap());
    let nonce = [9u8; 12];
    let mut sealed = vec![1u8];
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(plaintext);
    let tag = cipher
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(record_key.as_bytes()),
            &mut sealed[13..],
        )
        .unwrap();
    sealed.extend_from_slice(tag.as_ref());
    sealed
}

#[actix_web::test]
async fn a_client_record_sealed_by_the_aws_lc_rs_release_in_the_directory_store_still_works() {
    use mcp_oauth_proxy::config::StorageSetting;
    use mcp_oauth_proxy::crypto::Sealer;
    use mcp_oauth_proxy::store::{Backend, Counting};
    const ENCRYPTION_KEY: &str = "test-encryption-key-test-encryption-key";
    let (_guard, dir) = temp_dir("sealed-by-aws-lc-rs");
    let dir_setting = dir.display().to_string();
    let settings = [
        ("OAUTH_PROXY_STORAGE", dir_setting.as_str()),
        ("OAUTH_PROXY_ENCRYPTION_KEY", ENCRYPTION_KEY),
        (
            "OAUTH_PROXY_CONSENT_SIGNING_KEY",
            "test-consent-signing-key-0123456789abcdef",
        ),
    ];
    let upstream = Rc::new(MockUpstream::start(MockUpstreamConfig::default()).await);
    let app = TestApp::spawn_instance(&settings, upstream.clone()).await;
    let client = app.register_confidential().await;
    app.stop().await;

    // Rewrite the client's record as the previous release wrote it.
    let backend = Backend::open(&StorageSetting::Directory(dir.clone()), &Default::default()).unwrap();
    let table = backend.table("client", Counting::Kept).unwrap();
    let record_key = format!("client:{}", client.client_id);
    let sealed = table
        .get(&client.client_id)
        .await
        .unwrap()
        .expect("the client's record");
    let plain = Sealer::new(ENCRYPTION_KEY.as_bytes())
        .open(record_key.as_bytes(), &sealed)
        .unwrap();
    let old = seal_as_the_aws_lc_rs_release(ENCRYPTION_KEY, &record_key, &plain);
    assert_ne!(old, sealed);
    table
        .put(&client.client_id, old, Duration::from_secs(3600))
        .await
        .unwrap();
    backend.close();

    let app = TestApp::spawn_instance(&settings, upstream.clone()).await;
    let tokens = app.full_flow(&client).await;
    assert!(tokens["access_token"].is_string(), "{tokens}");
    app.stop().await;
}
