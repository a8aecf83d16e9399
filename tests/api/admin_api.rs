//! The admin API on the admin listener (`/admin/...`): bearer
//! `OAUTH_PROXY_ADMIN_TOKEN`; clients listed, searched, shown and deleted;
//! grants listed by user and/or client, shown and revoked; a user's grants
//! revoked at once (upstream tokens too). Each rule runs on memory, the
//! directory store and Redis, in swap and pass-through mode; a revocation
//! through one instance holds on another sharing the Redis.

use std::collections::HashSet;
use std::rc::Rc;

use awc::http::{Method, StatusCode};
use serde_json::{json, Value};

use mcp_oauth_proxy::audit::{EventKind, RevokedBy};

use crate::backend_double::BackendDouble;
use crate::document_host::DocumentHost;
use crate::helpers::{Answer, TestApp, TestClient, REDIRECT_URI};
use crate::mock_upstream::{MockUpstream, MockUpstreamConfig};
use crate::redis_server::RedisServer;
use crate::storage::{refused_within_300_ms, until_guarded_requests_are_answered_from_memory};

const ADMIN_TOKEN: &str = "admin-token-for-the-tests-0123456789";

fn ping() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "ping"})
}

#[derive(Clone, Copy)]
pub enum Store {
    Memory,
    Directory,
    Redis,
}

/// A proxy with the admin token set, in front of an MCP backend and an
/// upstream with a revocation endpoint, on one store.
struct Setup {
    app: TestApp,
    _backend: BackendDouble,
    _dir: Option<tempfile::TempDir>,
    _redis: Option<RedisServer>,
    /// Every token and secret the test saw: no admin answer holds one.
    secrets: std::cell::RefCell<Vec<String>>,
}

fn redis_settings(redis: &RedisServer) -> Vec<(&'static str, String)> {
    vec![
        ("OAUTH_PROXY_STORAGE", redis.url()),
        (
            "OAUTH_PROXY_ENCRYPTION_KEY",
            "test-encryption-key-test-encryption-key".to_string(),
        ),
        (
            "OAUTH_PROXY_CONSENT_SIGNING_KEY",
            "test-consent-key-test-consent-key-01234".to_string(),
        ),
    ]
}

fn as_refs<'a>(settings: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    settings.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

impl Setup {
    async fn start(store: Store, swap: bool) -> Setup {
        Setup::start_with(store, swap, Vec::new()).await
    }

    async fn start_with(store: Store, swap: bool, extra: Vec<(&'static str, String)>) -> Setup {
        let backend = BackendDouble::start().await;
        let mut settings = extra;
        settings.extend([
            ("OAUTH_PROXY_ADMIN_TOKEN", ADMIN_TOKEN.to_string()),
            ("OAUTH_PROXY_MCP_UPSTREAM_URL", backend.url.clone()),
            (
                "OAUTH_PROXY_UPSTREAM_REVOCATION_ENDPOINT",
                "{upstream}/revoke".to_string(),
            ),
            ("OAUTH_PROXY_ENABLE_TOKEN_SWAP", swap.to_string()),
        ]);
        let (mut dir, mut redis) = (None, None);
        match store {
            Store::Memory => {}
            Store::Directory => {
                let temp = tempfile::tempdir().unwrap();
                settings.push(("OAUTH_PROXY_STORAGE", temp.path().join("data").display().to_string()));
                dir = Some(temp);
            }
            Store::Redis => {
                let server = RedisServer::start().await;
                settings.extend(redis_settings(&server));
                redis = Some(server);
            }
        }
        let app = TestApp::spawn_with(&as_refs(&settings), MockUpstreamConfig::default()).await;
        Setup {
            app,
            _backend: backend,
            _dir: dir,
            _redis: redis,
            secrets: Default::default(),
        }
    }

    async fn stop(self) {
        self.app.stop().await;
    }

    /// A client whose secret the test remembers.
    async fn client(&self, name: &str, redirect_uri: &str) -> TestClient {
        let client = self
            .app
            .register(json!({ "client_name": name, "redirect_uris": [redirect_uri] }))
            .await;
        self.secrets.borrow_mut().extend(client.client_secret.clone());
        client
    }

    /// A full flow of `client` signed in upstream as `subject`: its
    /// access and refresh tokens.
    async fn sign_in(&self, client: &TestClient, subject: &str) -> (String, String) {
        self.app.upstream.set_user(subject, &format!("{subject}@example.com"));
        self.app.clear_cookies();
        let tokens = self.app.full_flow(client).await;
        let (access, refresh) = (
            tokens["access_token"].as_str().unwrap().to_string(),
            tokens["refresh_token"].as_str().unwrap().to_string(),
        );
        self.secrets.borrow_mut().extend([access.clone(), refresh.clone()]);
        (access, refresh)
    }

    /// An admin API call with the token; every answer is JSON, never
    /// cached, and holds no token or secret the test saw.
    async fn admin(&self, method: Method, path: &str) -> Answer {
        let bearer = format!("Bearer {ADMIN_TOKEN}");
        let answer = self.app.admin.send(method, path, &[("Authorization", &bearer)]).await;
        assert_eq!(answer.header("cache-control").as_deref(), Some("no-store"), "{path}");
        answer.json();
        let upstream_tokens = self.app.upstream.issued_access_tokens();
        for secret in self.secrets.borrow().iter().chain(&upstream_tokens) {
            assert!(
                !answer.body.contains(secret.as_str()),
                "{path} answered a token: {}",
                answer.body
            );
        }
        answer
    }

    async fn admin_ok(&self, method: Method, path: &str) -> Value {
        let answer = self.admin(method, path).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.body);
        answer.json()
    }

    /// Every item of a listing, following `next_cursor` with pages of `limit`.
    async fn all_pages(&self, path: &str, limit: usize) -> (Vec<Value>, usize) {
        let join = if path.contains('?') { '&' } else { '?' };
        let (mut items, mut cursor, mut pages) = (Vec::new(), None::<String>, 0);
        for _ in 0..50 {
            let mut url = format!("{path}{join}limit={limit}");
            if let Some(cursor) = &cursor {
                url.push_str(&format!("&cursor={}", urlencode(cursor)));
            }
            let page = self.admin_ok(Method::GET, &url).await;
            let got = page["items"].as_array().unwrap();
            assert!(got.len() <= limit, "{url}: {page}");
            items.extend(got.iter().cloned());
            pages += 1;
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => {
                    assert!(page["next_cursor"].is_null(), "{page}");
                    return (items, pages);
                }
            }
        }
        panic!("{path}: the pages never ended");
    }

    async fn guarded(&self, access: &str) -> StatusCode {
        self.app.mcp_post(Some(access), ping()).await.status
    }
}

fn urlencode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

fn ids(items: &[Value], field: &str) -> HashSet<String> {
    let set: HashSet<String> = items
        .iter()
        .map(|item| item[field].as_str().unwrap().to_string())
        .collect();
    assert_eq!(set.len(), items.len(), "each listed once: {items:?}");
    set
}

fn set(values: &[&str]) -> HashSet<String> {
    values.iter().map(|v| v.to_string()).collect()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ---- The rules ----

async fn clients_are_listed_searched_shown_and_deleted(setup: Setup) {
    let started = now();
    let alpha = setup.client("Alpha Tool", REDIRECT_URI).await;
    let beta = setup.client("alpha beta", "https://app.example.com/cb").await;
    let gamma = setup.client("Gamma", "http://localhost:9/cb").await;
    let (access, refresh) = setup.sign_in(&alpha, "user-a").await;

    let (all, _) = setup.all_pages("/admin/clients", 50).await;
    assert_eq!(
        ids(&all, "client_id"),
        set(&[&alpha.client_id, &beta.client_id, &gamma.client_id])
    );
    let shown = setup
        .admin_ok(Method::GET, &format!("/admin/clients/{}", alpha.client_id))
        .await;
    assert_eq!(shown["client_name"], "Alpha Tool");
    assert_eq!(shown["redirect_uris"], json!([REDIRECT_URI]));
    assert_eq!(shown["grant_types"], json!(["authorization_code", "refresh_token"]));
    assert_eq!(shown["token_endpoint_auth_method"], "client_secret_basic");
    let registered = shown["registered_at"].as_u64().unwrap();
    assert!((started..=now()).contains(&registered), "{shown}");
    let used = shown["last_used_at"]
        .as_u64()
        .expect("a client that exchanged a code was used");
    assert!((registered..=now()).contains(&used), "{shown}");
    assert!(shown.get("client_secret").is_none() && shown.get("client_secret_hash").is_none());
    assert!(all.contains(&shown), "the listing shows the same object: {all:?}");
    let never_used = setup
        .admin_ok(Method::GET, &format!("/admin/clients/{}", gamma.client_id))
        .await;
    assert!(never_used["last_used_at"].is_null(), "{never_used}");

    // Search: a part of the name (any case), a redirect host, both.
    let search = async |query: &str| {
        ids(
            &setup.all_pages(&format!("/admin/clients?{query}"), 50).await.0,
            "client_id",
        )
    };
    assert_eq!(search("q=ALPHA").await, set(&[&alpha.client_id, &beta.client_id]));
    assert_eq!(search("redirect_host=app.example.com").await, set(&[&beta.client_id]));
    assert_eq!(
        search("q=alpha&redirect_host=127.0.0.1").await,
        set(&[&alpha.client_id])
    );
    assert_eq!(search("q=nobody").await, set(&[]));

    // Pages of two, then of one: every client once.
    let (paged, pages) = setup.all_pages("/admin/clients", 2).await;
    assert_eq!(ids(&paged, "client_id").len(), 3);
    assert!(pages >= 2, "three clients in pages of two");
    let (paged, pages) = setup.all_pages("/admin/clients", 1).await;
    assert_eq!(ids(&paged, "client_id").len(), 3);
    assert!(pages >= 3);

    for bad in ["limit=0", "limit=501", "limit=many"] {
        let answer = setup.admin(Method::GET, &format!("/admin/clients?{bad}")).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}: {}", answer.body);
        assert_eq!(answer.json()["error"], "invalid_request");
    }
    let unknown = setup.admin(Method::GET, "/admin/clients/no-such-client").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.json()["error"], "not_found");

    // Deleting a client revokes its grants.
    assert_eq!(setup.guarded(&access).await, StatusCode::OK);
    let deleted = setup
        .admin_ok(Method::DELETE, &format!("/admin/clients/{}", alpha.client_id))
        .await;
    assert_eq!(
        deleted,
        json!({ "client_id": alpha.client_id, "deleted": true, "grants_revoked": 1 })
    );
    assert_eq!(setup.guarded(&access).await, StatusCode::UNAUTHORIZED);
    let refreshed = setup.app.refresh(&alpha, &refresh).await;
    assert_ne!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    let gone = setup
        .admin(Method::GET, &format!("/admin/clients/{}", alpha.client_id))
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let again = setup
        .admin(Method::DELETE, &format!("/admin/clients/{}", alpha.client_id))
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(search("").await, set(&[&beta.client_id, &gamma.client_id]));
    let events = setup.app.proxy.audit().recent();
    let deleted: Vec<_> = events.iter().filter(|e| e.event == EventKind::ClientDeleted).collect();
    assert_eq!(deleted.len(), 1, "{deleted:#?}");
    assert_eq!(deleted[0].client_id.as_deref(), Some(alpha.client_id.as_str()));
    assert!(events
        .iter()
        .any(|e| e.event == EventKind::GrantRevoked && e.revoked_by == Some(RevokedBy::Admin)));
    setup.stop().await;
}

async fn grants_are_listed_by_user_by_client_and_both_and_shown(setup: Setup) {
    let (one, two) = (
        setup.client("One", REDIRECT_URI).await,
        setup.client("Two", REDIRECT_URI).await,
    );
    let started = now();
    setup.sign_in(&one, "user-a").await;
    let (_, refresh_a) = setup.sign_in(&one, "user-a").await;
    setup.sign_in(&two, "user-a").await;
    setup.sign_in(&one, "user-b").await;

    let listed = async |query: &str| setup.all_pages(&format!("/admin/grants?{query}"), 50).await.0;
    let by_a = listed("sub=user-a").await;
    assert_eq!(by_a.len(), 3, "{by_a:?}");
    assert!(by_a.iter().all(|g| g["subject"] == "user-a"));
    let by_one = listed(&format!("client_id={}", one.client_id)).await;
    assert_eq!(by_one.len(), 3, "{by_one:?}");
    assert!(by_one.iter().all(|g| g["client_id"] == one.client_id.as_str()));
    let both = listed(&format!("sub=user-a&client_id={}", one.client_id)).await;
    assert_eq!(both.len(), 2, "{both:?}");
    assert_eq!(listed("sub=user-b").await.len(), 1);
    assert_eq!(listed("sub=nobody").await.len(), 0);
    assert_eq!(
        listed(&format!("client_id={}&sub=user-b", two.client_id)).await.len(),
        0
    );
    let all = listed("").await;
    assert_eq!(ids(&all, "grant_id").len(), 4);

    let grant = &both[0];
    assert_eq!(grant["scopes"], json!(["email", "openid", "profile"]));
    assert!(
        grant["resource"].as_str().unwrap().starts_with(&setup.app.address),
        "{grant}"
    );
    let created = grant["created_at"].as_u64().unwrap();
    assert!((started..=now()).contains(&created), "{grant}");
    assert!(grant["last_refreshed_at"].is_null(), "{grant}");
    assert!(grant["expires_at"].as_u64().unwrap() > now(), "{grant}");
    let shown = setup
        .admin_ok(
            Method::GET,
            &format!("/admin/grants/{}", grant["grant_id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(&shown, grant);
    let unknown = setup.admin(Method::GET, "/admin/grants/no-such-grant").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.json()["error"], "not_found");

    // Pages: by user, by client and of every grant, each grant once.
    for (query, count) in [
        ("/admin/grants?sub=user-a".to_string(), 3),
        (format!("/admin/grants?client_id={}", one.client_id), 3),
        ("/admin/grants".to_string(), 4),
    ] {
        let (items, pages) = setup.all_pages(&query, 2).await;
        assert_eq!(ids(&items, "grant_id").len(), count, "{query}");
        assert!(pages >= 2, "{query}: {count} grants in pages of two");
    }

    // A refresh shows as the last refresh (swap mode rotates).
    let refreshed = setup.app.refresh(&one, &refresh_a).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    let swap = setup.app.proxy.config().token_swap;
    let after = listed(&format!("sub=user-a&client_id={}", one.client_id)).await;
    let refreshed_count = after.iter().filter(|g| g["last_refreshed_at"].is_u64()).count();
    assert_eq!(refreshed_count, if swap { 1 } else { 0 }, "{after:?}");
    let body = refreshed.json();
    setup.secrets.borrow_mut().extend(
        ["access_token", "refresh_token"]
            .iter()
            .filter_map(|name| body[*name].as_str().map(str::to_string)),
    );
    listed("").await;
    setup.stop().await;
}

async fn a_grant_revoked_by_the_admin_fails_at_the_gateway_and_at_refresh(setup: Setup) {
    let client = setup.client("Revoked", REDIRECT_URI).await;
    let (access, refresh) = setup.sign_in(&client, "user-a").await;
    let (other_access, _) = setup.sign_in(&client, "user-b").await;
    assert_eq!(setup.guarded(&access).await, StatusCode::OK);
    let listed = setup.admin_ok(Method::GET, "/admin/grants?sub=user-a").await;
    let grant_id = listed["items"][0]["grant_id"].as_str().unwrap().to_string();

    let revoked = setup
        .admin_ok(Method::DELETE, &format!("/admin/grants/{grant_id}"))
        .await;
    assert_eq!(revoked, json!({ "grant_id": grant_id, "revoked": true }));
    assert_eq!(setup.guarded(&access).await, StatusCode::UNAUTHORIZED);
    let refreshed = setup.app.refresh(&client, &refresh).await;
    assert_eq!(refreshed.status, StatusCode::BAD_REQUEST, "{}", refreshed.body);
    assert_eq!(refreshed.json()["error"], "invalid_grant");
    assert_eq!(
        setup.app.upstream.revoked_tokens().len(),
        1,
        "its upstream tokens revoked upstream"
    );
    assert_eq!(
        setup.guarded(&other_access).await,
        StatusCode::OK,
        "another grant stays"
    );
    let again = setup.admin(Method::DELETE, &format!("/admin/grants/{grant_id}")).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(
        setup.admin_ok(Method::GET, "/admin/grants?sub=user-a").await["items"],
        json!([])
    );
    setup.stop().await;
}

async fn revoking_a_user_revokes_every_grant_of_theirs_and_their_upstream_tokens(setup: Setup) {
    let (one, two) = (
        setup.client("One", REDIRECT_URI).await,
        setup.client("Two", REDIRECT_URI).await,
    );
    // A subject as upstreams make them, with characters a path must escape.
    let user = "auth0|a.b+c@example.com";
    let (a1, r1) = setup.sign_in(&one, user).await;
    let (a2, _) = setup.sign_in(&two, user).await;
    let (b1, _) = setup.sign_in(&one, "user-b").await;
    assert_eq!(setup.guarded(&a1).await, StatusCode::OK);

    let path = format!("/admin/subjects/{}/revoke", urlencode(user));
    let revoked = setup.admin_ok(Method::POST, &path).await;
    assert_eq!(
        revoked,
        json!({ "subject": user, "grants_revoked": 2, "upstream_revoked": 2 })
    );
    assert_eq!(setup.guarded(&a1).await, StatusCode::UNAUTHORIZED);
    assert_eq!(setup.guarded(&a2).await, StatusCode::UNAUTHORIZED);
    assert_eq!(setup.app.refresh(&one, &r1).await.json()["error"], "invalid_grant");
    assert_eq!(setup.guarded(&b1).await, StatusCode::OK, "another user's grant stays");
    assert_eq!(setup.app.upstream.revoked_tokens().len(), 2);
    let by_user = setup
        .admin_ok(Method::GET, &format!("/admin/grants?sub={}", urlencode(user)))
        .await;
    assert_eq!(by_user["items"], json!([]));
    assert_eq!(
        setup.admin_ok(Method::GET, "/admin/grants?sub=user-b").await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let again = setup.admin_ok(Method::POST, &path).await;
    assert_eq!(again["grants_revoked"], 0);
    // The audit trail names each grant the operator revoked, and whose.
    let by_admin: Vec<_> = setup
        .app
        .proxy
        .audit()
        .recent()
        .into_iter()
        .filter(|e| e.event == EventKind::GrantRevoked && e.revoked_by == Some(RevokedBy::Admin))
        .collect();
    assert_eq!(by_admin.len(), 2, "{by_admin:#?}");
    assert!(by_admin
        .iter()
        .all(|e| e.subject.as_deref() == Some(user) && e.grant_id.is_some()));
    setup.stop().await;
}

// ---- One test per (store, token mode, rule) ----

macro_rules! on_store {
    ($module:ident, $store:ident, $swap:expr; $($rule:ident),*) => {
        mod $module {
            $(
                #[actix_web::test]
                async fn $rule() {
                    super::$rule(super::Setup::start(super::Store::$store, $swap).await).await;
                }
            )*
        }
    };
}

macro_rules! suite {
    ($($rule:ident),* $(,)?) => {
        on_store!(memory, Memory, true; $($rule),*);
        on_store!(directory, Directory, true; $($rule),*);
        on_store!(redis, Redis, true; $($rule),*);
        on_store!(memory_pass_through, Memory, false; $($rule),*);
        on_store!(directory_pass_through, Directory, false; $($rule),*);
        on_store!(redis_pass_through, Redis, false; $($rule),*);
    };
}

suite!(
    clients_are_listed_searched_shown_and_deleted,
    grants_are_listed_by_user_by_client_and_both_and_shown,
    a_grant_revoked_by_the_admin_fails_at_the_gateway_and_at_refresh,
    revoking_a_user_revokes_every_grant_of_theirs_and_their_upstream_tokens,
);

// ---- Document clients (client ids that are a metadata document's URL) ----

async fn document_clients_are_listed_shown_and_deleted_with_their_grants(host: DocumentHost, setup: Setup) {
    let registered = setup.client("Alpha Tool", REDIRECT_URI).await;
    let document = host.public_client("/oauth/client.json", "Doc Client", REDIRECT_URI);
    let url = document.client_id.clone();
    let (registered_access, _) = setup.sign_in(&registered, "user-a").await;
    let (first_access, first_refresh) = setup.sign_in(&document, "user-a").await;

    // Listed with its URL, its kind and what its document said, among the
    // registered clients, on every page size.
    let (all, _) = setup.all_pages("/admin/clients", 50).await;
    assert_eq!(ids(&all, "client_id"), set(&[&registered.client_id, &url]));
    let listed = all.iter().find(|c| c["client_id"] == url.as_str()).unwrap();
    assert_eq!(listed["kind"], "document", "{listed}");
    assert_eq!(listed["client_name"], "Doc Client", "{listed}");
    assert_eq!(listed["redirect_uris"], json!([REDIRECT_URI]), "{listed}");
    assert_eq!(listed["token_endpoint_auth_method"], "none", "{listed}");
    assert_eq!(listed["host"], "127.0.0.1", "{listed}");
    assert!(listed["last_seen_at"].as_u64().unwrap() >= now() - 60, "{listed}");
    assert!(
        listed["last_used_at"].as_u64().is_some(),
        "its token exchange: {listed}"
    );
    let other = all
        .iter()
        .find(|c| c["client_id"] == registered.client_id.as_str())
        .unwrap();
    assert_eq!(other["kind"], "registered", "{other}");
    for limit in [1, 2] {
        let (paged, _) = setup.all_pages("/admin/clients", limit).await;
        assert_eq!(
            ids(&paged, "client_id"),
            set(&[&registered.client_id, &url]),
            "limit {limit}"
        );
    }
    let (found, _) = setup.all_pages("/admin/clients?q=doc", 50).await;
    assert_eq!(ids(&found, "client_id"), set(&[&url]));

    // The URL as a path segment, URL-encoded, round-trips.
    let path = format!("/admin/clients/{}", urlencode(&url));
    let shown = setup.admin_ok(Method::GET, &path).await;
    assert_eq!(shown["client_id"], url.as_str(), "{shown}");
    assert_eq!(shown["kind"], "document", "{shown}");

    // Its grants are listed by its URL and revoked like any other.
    let grants = setup
        .admin_ok(Method::GET, &format!("/admin/grants?client_id={}", urlencode(&url)))
        .await;
    let grants = grants["items"].as_array().unwrap().clone();
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert_eq!(grants[0]["client_id"], url.as_str());
    let grant_id = grants[0]["grant_id"].as_str().unwrap().to_string();
    setup
        .admin_ok(Method::DELETE, &format!("/admin/grants/{grant_id}"))
        .await;
    assert_eq!(setup.guarded(&first_access).await, StatusCode::UNAUTHORIZED);
    let refused = setup.app.refresh(&document, &first_refresh).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);

    // Deleting it revokes its grants and says it can sign in again.
    let (second_access, _) = setup.sign_in(&document, "user-b").await;
    let deleted = setup.admin_ok(Method::DELETE, &path).await;
    assert_eq!(deleted["client_id"], url.as_str(), "{deleted}");
    assert_eq!(deleted["deleted"], true, "{deleted}");
    assert_eq!(deleted["grants_revoked"], 1, "{deleted}");
    let note = deleted["note"].as_str().unwrap_or_default();
    assert!(note.contains("can sign in again"), "{deleted}");
    assert!(note.contains("OAUTH_PROXY_CIMD_ALLOWED_HOSTS"), "{deleted}");
    assert_eq!(setup.guarded(&second_access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(setup.guarded(&registered_access).await, StatusCode::OK);
    assert_eq!(setup.admin(Method::GET, &path).await.status, StatusCode::NOT_FOUND);
    assert_eq!(setup.admin(Method::DELETE, &path).await.status, StatusCode::NOT_FOUND);
    let (all, _) = setup.all_pages("/admin/clients", 50).await;
    assert_eq!(ids(&all, "client_id"), set(&[&registered.client_id]));

    let events = setup.app.proxy.audit().recent();
    let deleted_event = events.iter().find(|e| e.event == EventKind::ClientDeleted).unwrap();
    assert_eq!(deleted_event.client_id.as_deref(), Some(url.as_str()));
    assert_eq!(deleted_event.client_name.as_deref(), Some("Doc Client"));
    let by_admin: Vec<_> = events
        .iter()
        .filter(|e| e.event == EventKind::GrantRevoked && e.revoked_by == Some(RevokedBy::Admin))
        .collect();
    assert_eq!(by_admin.len(), 2, "{by_admin:#?}");
    for event in by_admin {
        assert_eq!(event.client_id.as_deref(), Some(url.as_str()), "{event:?}");
        assert_eq!(event.client_name.as_deref(), Some("Doc Client"), "{event:?}");
    }

    // Not blocked: it signs in again, and is listed again.
    let (third_access, _) = setup.sign_in(&document, "user-b").await;
    assert_eq!(setup.guarded(&third_access).await, StatusCode::OK);
    assert_eq!(setup.admin_ok(Method::GET, &path).await["kind"], "document");
    setup.stop().await;
    host.stop().await;
}

macro_rules! with_documents {
    ($($module:ident: $store:ident, $swap:expr;)*) => {
        $(
            mod $module {
                #[actix_web::test]
                async fn document_clients_are_listed_shown_and_deleted_with_their_grants() {
                    let host = crate::document_host::DocumentHost::start().await;
                    let setup =
                        super::Setup::start_with(super::Store::$store, $swap, host.proxy_settings()).await;
                    super::document_clients_are_listed_shown_and_deleted_with_their_grants(host, setup).await;
                }
            }
        )*
    };
}

with_documents! {
    memory_documents: Memory, true;
    directory_documents: Directory, true;
    redis_documents: Redis, true;
    memory_pass_through_documents: Memory, false;
}

#[actix_web::test]
async fn document_clients_beyond_the_client_cap_sign_in_but_are_not_listed() {
    let host = DocumentHost::start().await;
    let mut settings = host.proxy_settings();
    settings.push(("OAUTH_PROXY_MAX_CLIENTS", "1".to_string()));
    let setup = Setup::start_with(Store::Memory, true, settings).await;
    let first = host.public_client("/oauth/first.json", "First", REDIRECT_URI);
    let second = host.public_client("/oauth/second.json", "Second", REDIRECT_URI);
    let _ = setup.sign_in(&first, "user-a").await;
    let (access, _) = setup.sign_in(&second, "user-a").await;
    assert_eq!(setup.guarded(&access).await, StatusCode::OK, "the sign-in goes on");
    let (all, _) = setup.all_pages("/admin/clients", 50).await;
    assert_eq!(ids(&all, "client_id"), set(&[&first.client_id]));
    setup.stop().await;
    host.stop().await;
}

// ---- Authentication ----

fn endpoints() -> Vec<(Method, &'static str)> {
    vec![
        (Method::GET, "/admin/clients"),
        (Method::GET, "/admin/clients/some-client"),
        (Method::DELETE, "/admin/clients/some-client"),
        (Method::GET, "/admin/grants"),
        (Method::GET, "/admin/grants?sub=user-a"),
        (Method::GET, "/admin/grants/some-grant"),
        (Method::DELETE, "/admin/grants/some-grant"),
        (Method::POST, "/admin/subjects/user-a/revoke"),
    ]
}

#[actix_web::test]
async fn every_admin_endpoint_refuses_a_request_without_the_token_or_with_a_wrong_one() {
    let setup = Setup::start(Store::Memory, true).await;
    let client = setup.client("Kept", REDIRECT_URI).await;
    let (access, _) = setup.sign_in(&client, "user-a").await;
    let wrong = format!("Bearer {ADMIN_TOKEN}x");
    let basic = format!("Basic {ADMIN_TOKEN}");
    let short = "Bearer admin-token";
    for (method, path) in endpoints() {
        for headers in [
            vec![],
            vec![("Authorization", wrong.as_str())],
            vec![("Authorization", basic.as_str())],
            vec![("Authorization", short)],
        ] {
            let answer = setup.app.admin.send(method.clone(), path, &headers).await;
            assert_eq!(
                answer.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} {headers:?}: {}",
                answer.body
            );
            assert_eq!(
                answer.header("www-authenticate").as_deref(),
                Some("Bearer realm=\"mcp-oauth-proxy admin\"")
            );
            assert_eq!(answer.header("cache-control").as_deref(), Some("no-store"));
            assert_eq!(answer.json()["error"], "invalid_token");
        }
    }
    // Nothing was done: the grant and the client are there.
    assert_eq!(setup.guarded(&access).await, StatusCode::OK);
    assert_eq!(
        setup.admin_ok(Method::GET, "/admin/grants").await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    setup.stop().await;
}

#[actix_web::test]
async fn the_admin_api_is_refused_entirely_when_no_admin_token_is_configured() {
    let app = TestApp::spawn().await;
    for (method, path) in endpoints() {
        for headers in [vec![], vec![("Authorization", "Bearer anything-at-all-0123456789")]] {
            let answer = app.admin.send(method.clone(), path, &headers).await;
            assert_eq!(answer.status, StatusCode::FORBIDDEN, "{method} {path}: {}", answer.body);
            assert_eq!(
                answer.json(),
                json!({"error": "access_denied", "error_description": "the admin API is off: set OAUTH_PROXY_ADMIN_TOKEN"})
            );
            assert_eq!(answer.header("cache-control").as_deref(), Some("no-store"));
        }
    }
    app.stop().await;
}

#[actix_web::test]
async fn the_admin_api_is_not_served_on_the_main_listener() {
    let setup = Setup::start(Store::Memory, true).await;
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let answer = setup
        .app
        .send(Method::GET, "/admin/clients", &[("Authorization", &bearer)])
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.body);
    setup.stop().await;
}

// ---- Two instances on one Redis ----

/// The kill switch on instance A holds on instance B, which had the grant
/// in memory (its per-thread memo), as soon as Redis tells B.
#[actix_web::test]
async fn a_user_revoked_through_one_instance_is_refused_by_another_sharing_the_redis() {
    let redis = RedisServer::start().await;
    let backend = BackendDouble::start().await;
    let upstream = Rc::new(MockUpstream::start(MockUpstreamConfig::default()).await);
    let mut settings = redis_settings(&redis);
    settings.push(("OAUTH_PROXY_ADMIN_TOKEN", ADMIN_TOKEN.to_string()));
    settings.push(("OAUTH_PROXY_MCP_UPSTREAM_URL", backend.url.clone()));
    let a = TestApp::spawn_instance(&as_refs(&settings), upstream.clone()).await;
    settings.push(("OAUTH_PROXY_BASE_URL", a.address.clone()));
    let b = TestApp::spawn_instance(&as_refs(&settings), upstream).await;
    let client = a.register_confidential().await;
    let tokens = a.full_flow(&client).await;
    let access = tokens["access_token"].as_str().unwrap();
    until_guarded_requests_are_answered_from_memory(&b, &redis, access).await;

    let bearer = format!("Bearer {ADMIN_TOKEN}");
    // B lists what A wrote: the indexes live in Redis.
    let listed = b
        .admin
        .send(Method::GET, "/admin/grants?sub=user-123", &[("Authorization", &bearer)])
        .await;
    assert_eq!(listed.json()["items"].as_array().unwrap().len(), 1, "{}", listed.body);
    let revoked = a
        .admin
        .send(
            Method::POST,
            "/admin/subjects/user-123/revoke",
            &[("Authorization", &bearer)],
        )
        .await;
    assert_eq!(revoked.json()["grants_revoked"], 1, "{}", revoked.body);
    // As soon as Redis's invalidation push reaches B (RFC 7009 allows a
    // short propagation delay), as for a client's revocation.
    refused_within_300_ms(&b, access).await;
    a.stop().await;
    b.stop().await;
}
