//! The browser session of `/authorize`, `/consent` and the callback: one
//! private (encrypted and signed) actix-session cookie; and the signed
//! cookies of the previous release, which keep working and move into it.

use actix_web::cookie::{Cookie, CookieJar, Key, SameSite};
use awc::http::StatusCode;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use mcp_oauth_proxy::crypto::derive_key;

use crate::helpers::{query_param, Answer, Pkce, TestApp, REDIRECT_URI};
use crate::mock_upstream::MockUpstreamConfig;

const CONSENT_SIGNING_KEY: &str = "test-consent-signing-key-0123456789abcdef";

async fn spawn(extra: &[(&str, &str)]) -> TestApp {
    let mut settings = vec![("OAUTH_PROXY_CONSENT_SIGNING_KEY", CONSENT_SIGNING_KEY)];
    settings.extend_from_slice(extra);
    TestApp::spawn_with(&settings, MockUpstreamConfig::default()).await
}

/// A cookie value exactly as the previous release wrote it: the cookie
/// crate's signed jar, keyed with 64 bytes derived (HKDF-SHA256, label
/// `consent-cookie`) from `OAUTH_PROXY_CONSENT_SIGNING_KEY`, sent with
/// actix-web's `HttpResponseBuilder::cookie` (`Cookie::to_string`).
fn signed_by_the_previous_release(name: &str, value: &str) -> String {
    let key = Key::from(&derive_key::<64>(CONSENT_SIGNING_KEY.as_bytes(), "consent-cookie"));
    let mut jar = CookieJar::new();
    let cookie = Cookie::build(name.to_string(), value.to_string())
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .finish();
    jar.signed_mut(&key).add(cookie);
    let set_cookie = jar.get(name).unwrap().to_string();
    let pair = set_cookie.split(';').next().unwrap();
    pair.split_once('=').unwrap().1.to_string()
}

/// Every `Set-Cookie` of an answer naming `name`.
fn set_cookies(answer: &Answer, name: &str) -> Vec<String> {
    answer
        .headers
        .get_all("set-cookie")
        .map(|v| v.to_str().unwrap().to_string())
        .filter(|v| v.starts_with(&format!("{name}=")))
        .collect()
}

/// The attributes of a `Set-Cookie` value, lower-cased, without the pair.
fn attributes(set_cookie: &str) -> Vec<String> {
    set_cookie
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect()
}

fn is_removal(set_cookie: &str) -> bool {
    attributes(set_cookie).iter().any(|a| a == "max-age=0")
}

#[actix_web::test]
async fn a_browser_with_only_the_previous_releases_remembered_consent_cookie_skips_the_consent_page() {
    let app = spawn(&[]).await;
    let client = app.register_confidential().await;
    let other = app.register_confidential().await;
    let remembered = serde_json::to_string(&[&client.client_id]).unwrap();
    app.set_cookie(
        "mcp_proxy_consent",
        &signed_by_the_previous_release("mcp_proxy_consent", &remembered),
    );

    let first = app.browser_get(&app.authorize_path(&client, &Pkce::new(), "s")).await;
    assert_eq!(
        first.status,
        StatusCode::FOUND,
        "remembered: straight upstream: {}",
        first.body
    );
    assert!(first
        .location()
        .as_str()
        .starts_with(&app.upstream.authorization_endpoint()));
    // Moved into the session; the old cookie is expired.
    assert_eq!(set_cookies(&first, "mcp_proxy_session").len(), 1);
    let old = set_cookies(&first, "mcp_proxy_consent");
    assert!(old.len() == 1 && is_removal(&old[0]), "{old:?}");
    let back = app.through_upstream(&first).await;
    assert_eq!(back.status, StatusCode::FOUND, "callback: {}", back.body);
    assert!(back.location().as_str().starts_with(REDIRECT_URI));
    assert!(query_param(&back.location(), "code").is_some());

    // The approval is in the session now (the old cookie is gone), and only
    // for that client.
    assert_eq!(app.cookie("mcp_proxy_consent").as_deref(), Some(""));
    let again = app.browser_get(&app.authorize_path(&client, &Pkce::new(), "s")).await;
    assert_eq!(again.status, StatusCode::FOUND, "{}", again.body);
    let other_page = app.browser_get(&app.authorize_path(&other, &Pkce::new(), "s")).await;
    assert_eq!(
        other_page.status,
        StatusCode::OK,
        "another client sees the consent page"
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_forged_previous_release_consent_cookie_is_ignored() {
    let app = spawn(&[]).await;
    let client = app.register_confidential().await;
    let remembered = serde_json::to_string(&[&client.client_id]).unwrap();
    // The value with another MAC (its first 44 characters).
    let genuine = signed_by_the_previous_release("mcp_proxy_consent", &remembered);
    let forged = format!("{}={}", "A".repeat(43), &genuine[44..]);
    app.set_cookie("mcp_proxy_consent", &forged);
    let page = app.browser_get(&app.authorize_path(&client, &Pkce::new(), "s")).await;
    assert_eq!(page.status, StatusCode::OK, "the consent page shows: {}", page.body);
    app.stop().await;
}

#[actix_web::test]
async fn a_previous_release_browser_binding_cookie_alone_completes_consent_and_the_callback() {
    let app = spawn(&[]).await;
    let client = app.register_confidential().await;
    let old = signed_by_the_previous_release("mcp_proxy_browser", "browser-id-from-the-previous-release");
    // The browser carries only what the previous release gave it, at every
    // step: the new session cookie and the removals are dropped each time.
    let only_the_old_cookie = || {
        app.clear_cookies();
        app.set_cookie("mcp_proxy_browser", &old);
    };
    only_the_old_cookie();
    let page = app.browser_get(&app.authorize_path(&client, &Pkce::new(), "s")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    only_the_old_cookie();
    let to_upstream = app.approve(&page).await;
    assert_eq!(
        to_upstream.status,
        StatusCode::SEE_OTHER,
        "same browser: {}",
        to_upstream.body
    );
    only_the_old_cookie();
    let upstream_answer = app.browser_get(to_upstream.location().as_str()).await;
    assert_eq!(upstream_answer.status, StatusCode::FOUND, "{}", upstream_answer.body);
    only_the_old_cookie();
    let back = app.browser_get(upstream_answer.location().as_str()).await;
    assert_eq!(back.status, StatusCode::FOUND, "callback: {}", back.body);
    assert!(back.location().as_str().starts_with(REDIRECT_URI));
    assert!(query_param(&back.location(), "code").is_some());
    // Each answer moved the binding into the session and expired the old cookie.
    let removal = set_cookies(&back, "mcp_proxy_browser");
    assert!(removal.len() == 1 && is_removal(&removal[0]), "{removal:?}");
    assert_eq!(set_cookies(&back, "mcp_proxy_session").len(), 1);
    app.stop().await;
}

#[actix_web::test]
async fn on_an_https_issuer_the_session_cookie_is_host_prefixed_secure_http_only_lax_and_encrypted() {
    let app = spawn(&[("OAUTH_PROXY_BASE_URL", "https://mcp.example")]).await;
    let client = app.register_confidential().await;
    let page = app.browser_get(&app.authorize_path(&client, &Pkce::new(), "s")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let approved = app.approve(&page).await;
    assert_eq!(approved.status, StatusCode::SEE_OTHER, "{}", approved.body);
    // The approval (remembered) rewrote the session: it holds the client id.
    let cookies = set_cookies(&approved, "__Host-mcp_proxy_session");
    assert_eq!(cookies.len(), 1, "{:?}", approved.headers);
    let attributes = attributes(&cookies[0]);
    for wanted in ["secure", "httponly", "samesite=lax", "path=/"] {
        assert!(attributes.iter().any(|a| a == wanted), "{wanted} in {cookies:?}");
    }
    assert!(!attributes.iter().any(|a| a.starts_with("domain")), "{cookies:?}");
    assert!(set_cookies(&approved, "mcp_proxy_session").is_empty());

    let value = app.cookie("__Host-mcp_proxy_session").unwrap();
    let decoded = Cookie::parse_encoded(format!("v={value}")).unwrap().value().to_string();
    let raw = STANDARD
        .decode(decoded.as_bytes())
        .expect("base64 of nonce, ciphertext and tag");
    for clear in [client.client_id.as_bytes(), b"consent", b"browser"] {
        assert!(!value.as_bytes().windows(clear.len()).any(|w| w == clear), "{value}");
        assert!(!raw.windows(clear.len()).any(|w| w == clear));
    }
    // The remembered approval is read back from it.
    let again = app.browser_get(&app.authorize_path(&client, &Pkce::new(), "s")).await;
    assert_eq!(again.status, StatusCode::FOUND, "{}", again.body);
    app.stop().await;
}

#[actix_web::test]
async fn on_an_http_issuer_the_session_cookie_has_a_plain_name_and_is_not_secure() {
    let app = spawn(&[]).await;
    let client = app.register_confidential().await;
    let page = app.browser_get(&app.authorize_path(&client, &Pkce::new(), "s")).await;
    let cookies = set_cookies(&page, "mcp_proxy_session");
    assert_eq!(cookies.len(), 1, "{:?}", page.headers);
    let attributes = attributes(&cookies[0]);
    assert!(!attributes.iter().any(|a| a == "secure"), "{cookies:?}");
    assert!(attributes.iter().any(|a| a == "httponly"), "{cookies:?}");
    assert!(attributes.iter().any(|a| a == "samesite=lax"), "{cookies:?}");
    app.stop().await;
}

#[actix_web::test]
async fn a_tampered_session_cookie_is_ignored_and_the_consent_page_shows_again() {
    let app = spawn(&[]).await;
    let client = app.register_confidential().await;
    let _ = app.code_for(&client, &Pkce::new()).await;
    let remembered = app.browser_get(&app.authorize_path(&client, &Pkce::new(), "s")).await;
    assert_eq!(remembered.status, StatusCode::FOUND, "remembered before tampering");

    let value = app.cookie("mcp_proxy_session").unwrap();
    let middle = value.len() / 2;
    let flipped = if &value[middle..middle + 1] == "A" { "B" } else { "A" };
    app.set_cookie(
        "mcp_proxy_session",
        &format!("{}{flipped}{}", &value[..middle], &value[middle + 1..]),
    );
    let page = app.browser_get(&app.authorize_path(&client, &Pkce::new(), "s")).await;
    assert_eq!(
        page.status,
        StatusCode::OK,
        "a new browser: the consent page: {}",
        page.body
    );
    assert_eq!(set_cookies(&page, "mcp_proxy_session").len(), 1, "a new session");
    // The new session works end to end.
    let to_upstream = app.approve(&page).await;
    let back = app.through_upstream(&to_upstream).await;
    assert_eq!(back.status, StatusCode::FOUND, "callback: {}", back.body);
    assert!(query_param(&back.location(), "code").is_some());
    app.stop().await;
}

#[actix_web::test]
async fn routes_that_are_not_browser_facing_set_no_session_cookie() {
    let app = spawn(&[]).await;
    let client = app.register_confidential().await;
    let tokens = app.full_flow(&client).await;
    let refresh = app.refresh(&client, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refresh.status, StatusCode::OK);
    assert!(refresh.headers.get("set-cookie").is_none());
    let metadata = app.browser_get("/.well-known/oauth-authorization-server").await;
    assert!(metadata.headers.get("set-cookie").is_none());
    app.stop().await;
}

#[actix_web::test]
async fn a_site_cookie_the_cookie_parser_refuses_does_not_cost_the_browser_its_session() {
    let app = spawn(&[]).await;
    let client = app.register_confidential().await;
    // A nameless cookie (`document.cookie = "x"`), an empty name, bad
    // percent-encoding: browsers send such cookies of the host.
    let (before, after) = ("nameless; =novalue", "bad=%ff; lang=en");
    let page = app
        .browser_get_among(&app.authorize_path(&client, &Pkce::new(), "s"), before, after)
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let to_upstream = app.approve(&page).await;
    assert_eq!(
        to_upstream.status,
        StatusCode::SEE_OTHER,
        "same browser: {}",
        to_upstream.body
    );
    let upstream_answer = app.browser_get(to_upstream.location().as_str()).await;
    let back = app
        .browser_get_among(upstream_answer.location().as_str(), before, after)
        .await;
    assert_eq!(back.status, StatusCode::FOUND, "callback: {}", back.body);
    assert!(query_param(&back.location(), "code").is_some());
    app.stop().await;
}
