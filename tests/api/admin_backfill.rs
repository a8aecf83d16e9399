//! Grants stored by the earlier release, which had no grant indexes, are
//! filed by client and subject by a one-time backfill at start-up, so the
//! admin listings and the kill switch find them too (directory store and
//! Redis: memory keeps nothing across a restart).

use std::rc::Rc;
use std::time::{Duration, Instant};

use awc::http::{Method, StatusCode};
use serde_json::{json, Value};

use mcp_oauth_proxy::actors::token_vault::{GrantIndexes, BACKFILL_MARKER};
use mcp_oauth_proxy::config::StorageSetting;
use mcp_oauth_proxy::store::{Backend, Counting};
use mcp_oauth_proxy::tls::OutboundTls;

use crate::backend_double::BackendDouble;
use crate::helpers::{Answer, TestApp, TestClient};
use crate::mock_upstream::{MockUpstream, MockUpstreamConfig};
use crate::redis_server::RedisServer;

const ADMIN_TOKEN: &str = "admin-token-for-the-tests-0123456789";
const CONSENT_KEY: &str = "test-consent-key-test-consent-key-01234";
/// How long the test waits for the backfill, which runs in the background.
const BOUND: Duration = Duration::from_secs(15);

fn ping() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})
}

async fn admin(app: &TestApp, method: Method, path: &str) -> Answer {
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    app.admin.send(method, path, &[("Authorization", &bearer)]).await
}

/// The grant ids a listing answers.
async fn listed(app: &TestApp, path: &str) -> Vec<String> {
    let answer = admin(app, Method::GET, path).await;
    assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.body);
    answer.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["grant_id"].as_str().unwrap().to_string())
        .collect()
}

/// Makes the store what the earlier release left: the grant's record
/// without its index entries, and no record of a backfill.
async fn as_the_earlier_release_left_it(storage: StorageSetting, grant_id: &str, client_id: &str, subject: &str) {
    let backend = Backend::open(&storage, &OutboundTls::new(None).unwrap()).expect("the store opens");
    let grants = backend.table("grant", Counting::OnRequest).unwrap();
    let indexes = GrantIndexes::new(CONSENT_KEY.as_bytes());
    for index in [indexes.by_subject(subject), indexes.by_client(client_id)] {
        assert!(
            grants.index_remove(&index, grant_id).await.unwrap(),
            "the grant was filed under {index}"
        );
    }
    let (table, key) = BACKFILL_MARKER;
    backend
        .table(table, Counting::OnRequest)
        .unwrap()
        .delete(key)
        .await
        .unwrap();
    backend.close();
}

/// Signs `subject` in through `client`: its access token, and its grant's id.
async fn sign_in(app: &TestApp, client: &TestClient, subject: &str) -> (String, String) {
    app.upstream.set_user(subject, &format!("{subject}@example.com"));
    app.clear_cookies();
    let access = app.full_flow(client).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let grant_ids = listed(app, &format!("/admin/grants?sub={subject}")).await;
    assert_eq!(grant_ids.len(), 1, "{grant_ids:?}");
    (access, grant_ids[0].clone())
}

/// Lists `path` until it answers `expected` (the backfill runs in the
/// background), bounded.
async fn until_listed(app: &TestApp, path: &str, expected: &str) {
    let started = Instant::now();
    loop {
        let found = listed(app, path).await;
        if found == [expected] {
            return;
        }
        assert!(
            started.elapsed() < BOUND,
            "the grant of the earlier release is never listed by {path}: {found:?}"
        );
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn grants_of_the_earlier_release_are_listed_revoked_by_the_kill_switch_and_with_their_client(
    storage: StorageSetting,
    mut settings: Vec<(&'static str, String)>,
) {
    let backend = BackendDouble::start().await;
    let upstream = Rc::new(MockUpstream::start(MockUpstreamConfig::default()).await);
    settings.extend([
        ("OAUTH_PROXY_ADMIN_TOKEN", ADMIN_TOKEN.to_string()),
        ("OAUTH_PROXY_MCP_UPSTREAM_URL", backend.url.clone()),
        ("OAUTH_PROXY_CONSENT_SIGNING_KEY", CONSENT_KEY.to_string()),
        (
            "OAUTH_PROXY_ENCRYPTION_KEY",
            "test-encryption-key-test-encryption-key".to_string(),
        ),
    ]);
    let first = TestApp::spawn_instance(&refs(&settings), upstream.clone()).await;
    let (one, two) = (first.register_confidential().await, first.register_confidential().await);
    let (alice, alice_grant) = sign_in(&first, &one, "alice").await;
    let (bob, bob_grant) = sign_in(&first, &two, "bob").await;
    // The same issuer after the restart, so the access tokens still hold.
    settings.push(("OAUTH_PROXY_BASE_URL", first.address.clone()));
    first.stop().await;

    as_the_earlier_release_left_it(storage.clone(), &alice_grant, &one.client_id, "alice").await;
    as_the_earlier_release_left_it(storage.clone(), &bob_grant, &two.client_id, "bob").await;

    let app = TestApp::spawn_instance(&refs(&settings), upstream).await;
    for access in [&alice, &bob] {
        assert_eq!(
            app.mcp_post(Some(access), ping()).await.status,
            StatusCode::OK,
            "the grants live"
        );
    }
    until_listed(&app, "/admin/grants?sub=alice", &alice_grant).await;
    until_listed(
        &app,
        &format!("/admin/grants?client_id={}", one.client_id),
        &alice_grant,
    )
    .await;
    until_listed(&app, "/admin/grants?sub=bob", &bob_grant).await;
    until_listed(&app, &format!("/admin/grants?client_id={}", two.client_id), &bob_grant).await;

    // The kill switch finds the grant.
    let revoked = admin(&app, Method::POST, "/admin/subjects/alice/revoke").await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    assert_eq!(revoked.json()["grants_revoked"], 1, "{}", revoked.body);
    assert_eq!(
        app.mcp_post(Some(&alice), ping()).await.status,
        StatusCode::UNAUTHORIZED,
        "the kill switch holds at the gateway"
    );
    // So does a client's deletion.
    let deleted = admin(&app, Method::DELETE, &format!("/admin/clients/{}", two.client_id)).await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
    assert_eq!(deleted.json()["grants_revoked"], 1, "{}", deleted.body);
    assert_eq!(
        app.mcp_post(Some(&bob), ping()).await.status,
        StatusCode::UNAUTHORIZED,
        "a deleted client's grant fails at the gateway"
    );
    app.stop().await;
    // Recorded as done, so later starts skip it.
    let store = Backend::open(&storage, &OutboundTls::new(None).unwrap()).expect("the store opens");
    let (table, key) = BACKFILL_MARKER;
    let marker = store.table(table, Counting::OnRequest).unwrap().get(key).await.unwrap();
    assert_eq!(marker.as_deref(), Some(&b"done"[..]), "the backfill's marker");
    store.close();
    backend.stop().await;
}

fn refs<'a>(settings: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    settings.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[actix_web::test]
async fn on_the_directory_store_grants_of_the_earlier_release_are_listed_and_revoked_by_the_kill_switch_and_client_deletion(
) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let settings = vec![("OAUTH_PROXY_STORAGE", data.display().to_string())];
    grants_of_the_earlier_release_are_listed_revoked_by_the_kill_switch_and_with_their_client(
        StorageSetting::Directory(data),
        settings,
    )
    .await;
}

#[actix_web::test]
async fn on_redis_grants_of_the_earlier_release_are_listed_and_revoked_by_the_kill_switch_and_client_deletion() {
    let redis = RedisServer::start().await;
    let settings = vec![("OAUTH_PROXY_STORAGE", redis.url())];
    grants_of_the_earlier_release_are_listed_revoked_by_the_kill_switch_and_with_their_client(
        StorageSetting::Redis(redis.url()),
        settings,
    )
    .await;
}
