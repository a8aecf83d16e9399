//! `private_key_jwt` (RFC 7523 §2.2, RFC 7521 §4.2): a document client with
//! `jwks` or `jwks_uri` authenticates at `/token` and `/revoke` with a
//! client assertion it signs; each assertion is used once, across instances.

use std::rc::Rc;

use awc::http::StatusCode;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::document_host::DocumentHost;
use crate::helpers::{Answer, Pkce, TestApp, TestClient, REDIRECT_URI};
use crate::mock_upstream::{MockUpstream, MockUpstreamConfig};
use crate::redis_server::RedisServer;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

fn now() -> u64 {
    mcp_oauth_proxy::oauth::now_secs()
}

#[path = "../../src/oauth/client_assertion/test_keys.rs"]
mod test_keys;
use test_keys::{b64, TestKey as ClientKey};

/// What the tests do with a client's key: sign assertions.
trait Assertions {
    fn claims(client_id: &str, aud: &str) -> Value;
    fn sign(&self, claims: &Value) -> String;
}

impl Assertions for ClientKey {
    /// The claims of a valid assertion by `client_id` for `aud`.
    fn claims(client_id: &str, aud: &str) -> Value {
        json!({
            "iss": client_id,
            "sub": client_id,
            "aud": aud,
            "iat": now(),
            "exp": now() + 60,
            "jti": mcp_oauth_proxy::crypto::random_token(16),
        })
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.signing).unwrap()
    }
}

/// A JWT with this header and claims, and `signature` as its signature.
fn forged(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(signature)
    )
}

/// Serves a `private_key_jwt` client's document at `path`, with `keys`
/// inline (`jwks`) or, when `jwks_path` is given, at that path (`jwks_uri`).
fn signing_client(host: &DocumentHost, path: &str, keys: &[&ClientKey], jwks_path: Option<&str>) -> TestClient {
    let client_id = host.url(path);
    let set = json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
    let mut document = json!({
        "client_id": client_id,
        "client_name": "Signing Client",
        "redirect_uris": [REDIRECT_URI],
        "token_endpoint_auth_method": "private_key_jwt",
    });
    match jwks_path {
        Some(jwks_path) => {
            host.serve_json(jwks_path, &set);
            document["jwks_uri"] = json!(host.url(jwks_path));
        }
        None => document["jwks"] = set,
    }
    host.serve_json(path, &document);
    TestClient {
        client_id,
        client_secret: None,
        redirect_uri: REDIRECT_URI.to_string(),
    }
}

fn token_endpoint(app: &TestApp) -> String {
    app.proxy.config().url_for("/token")
}

fn issuer(app: &TestApp) -> String {
    app.proxy.config().issuer.clone()
}

/// A token request with `form` plus the assertion (and no client_id).
async fn with_assertion(app: &TestApp, path: &str, form: &[(&str, &str)], assertion: &str) -> Answer {
    let mut form = form.to_vec();
    form.push(("client_assertion_type", JWT_BEARER));
    form.push(("client_assertion", assertion));
    app.post_form(path, &form, None).await
}

/// A code exchange that gets past client authentication fails on the code
/// (400 `invalid_grant`); one that does not is a 401 `invalid_client`.
async fn exchange_bogus_code(app: &TestApp, assertion: &str) -> Answer {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", "not-a-code"),
        ("redirect_uri", REDIRECT_URI),
        ("code_verifier", "v".repeat(43).leak()),
    ];
    with_assertion(app, "/token", &form, assertion).await
}

fn assert_authenticated(answer: &Answer) {
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert_eq!(answer.json()["error"], "invalid_grant", "{}", answer.body);
}

fn assert_refused(answer: &Answer, description: &str) {
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
    let body = answer.json();
    assert_eq!(body["error"], "invalid_client", "{}", answer.body);
    let said = body["error_description"].as_str().unwrap_or_default();
    assert!(said.contains(description), "expected `{description}` in `{said}`");
}

/// The browser part of a flow, then the code exchanged with an assertion.
async fn sign_in(app: &TestApp, client: &TestClient, key: &ClientKey, aud: &str) -> Answer {
    let pkce = Pkce::new();
    let code = app.code_for(client, &pkce).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT_URI),
        ("code_verifier", pkce.verifier.as_str()),
    ];
    let assertion = key.sign(&ClientKey::claims(&client.client_id, aud));
    with_assertion(app, "/token", &form, &assertion).await
}

#[actix_web::test]
async fn a_client_with_inline_keys_signs_in_and_refreshes_with_assertions() {
    let host = DocumentHost::start().await;
    let app = host.proxy(&[]).await;
    let key = ClientKey::es256("k1");
    let client = signing_client(&host, "/pkj/inline.json", &[&key], None);

    let metadata = app.get("/.well-known/oauth-authorization-server").await.json();
    for member in [
        "token_endpoint_auth_methods_supported",
        "revocation_endpoint_auth_methods_supported",
    ] {
        let methods = metadata[member].as_array().unwrap();
        assert!(methods.contains(&json!("private_key_jwt")), "{member}: {methods:?}");
        assert!(methods.contains(&json!("none")), "{member}: {methods:?}");
    }
    // Introspection takes confidential clients only: no `none` there.
    let methods = metadata["introspection_endpoint_auth_methods_supported"]
        .as_array()
        .unwrap();
    assert!(methods.contains(&json!("private_key_jwt")), "{methods:?}");
    assert!(!methods.contains(&json!("none")), "{methods:?}");
    for member in [
        "token_endpoint_auth_signing_alg_values_supported",
        "revocation_endpoint_auth_signing_alg_values_supported",
        "introspection_endpoint_auth_signing_alg_values_supported",
    ] {
        assert_eq!(
            metadata[member],
            json!(["ES256", "EdDSA", "RS256", "PS256"]),
            "{member}"
        );
    }

    let tokens = sign_in(&app, &client, &key, &token_endpoint(&app)).await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.body);
    let tokens = tokens.json();
    assert!(tokens["access_token"].is_string(), "{tokens}");
    // A refresh with a new assertion (aud: the issuer this time) and the
    // optional client_id in the body.
    let assertion = key.sign(&ClientKey::claims(&client.client_id, &issuer(&app)));
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
        ("client_id", client.client_id.as_str()),
    ];
    let refreshed = with_assertion(&app, "/token", &form, &assertion).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    app.stop().await;
    host.stop().await;
}

#[actix_web::test]
async fn a_client_with_a_jwks_uri_signs_in_with_an_ed25519_or_an_rsa_key() {
    let host = DocumentHost::start().await;
    let app = host.proxy(&[]).await;
    let ed = ClientKey::ed25519("ed");
    let rsa = ClientKey::rsa("rsa", Algorithm::PS256);
    let client = signing_client(&host, "/pkj/uri.json", &[&ed, &rsa], Some("/pkj/keys.json"));
    for key in [&ed, &rsa] {
        let tokens = sign_in(&app, &client, key, &token_endpoint(&app)).await;
        assert_eq!(tokens.status, StatusCode::OK, "{:?}: {}", key.algorithm, tokens.body);
    }
    assert!(host.hits("/pkj/keys.json") >= 1);
    app.stop().await;
    host.stop().await;
}

#[actix_web::test]
async fn assertions_with_a_wrong_audience_expired_or_living_too_long_are_refused() {
    let host = DocumentHost::start().await;
    let app = host.proxy(&[]).await;
    let key = ClientKey::es256("k1");
    let client = signing_client(&host, "/pkj/inline.json", &[&key], None);
    let aud = token_endpoint(&app);

    let mut wrong_aud = ClientKey::claims(&client.client_id, "https://elsewhere.example/token");
    assert_refused(&exchange_bogus_code(&app, &key.sign(&wrong_aud)).await, "aud");
    wrong_aud["aud"] = json!(app.proxy.config().url_for("/authorize"));
    assert_refused(&exchange_bogus_code(&app, &key.sign(&wrong_aud)).await, "aud");

    let mut expired = ClientKey::claims(&client.client_id, &aud);
    expired["exp"] = json!(now() - 120);
    assert_refused(&exchange_bogus_code(&app, &key.sign(&expired)).await, "expired");

    let mut too_long = ClientKey::claims(&client.client_id, &aud);
    too_long["exp"] = json!(now() + 3600);
    assert_refused(&exchange_bogus_code(&app, &key.sign(&too_long)).await, "seconds ahead");

    let mut no_jti = ClientKey::claims(&client.client_id, &aud);
    no_jti.as_object_mut().unwrap().remove("jti");
    assert_refused(&exchange_bogus_code(&app, &key.sign(&no_jti)).await, "jti");

    // The control: the same client with a valid assertion gets past
    // authentication.
    assert_authenticated(&exchange_bogus_code(&app, &key.sign(&ClientKey::claims(&client.client_id, &aud))).await);
    app.stop().await;
    host.stop().await;
}

#[actix_web::test]
async fn an_assertion_is_used_once() {
    let host = DocumentHost::start().await;
    let app = host.proxy(&[]).await;
    let key = ClientKey::es256("k1");
    let client = signing_client(&host, "/pkj/inline.json", &[&key], None);
    let assertion = key.sign(&ClientKey::claims(&client.client_id, &token_endpoint(&app)));
    assert_authenticated(&exchange_bogus_code(&app, &assertion).await);
    assert_refused(&exchange_bogus_code(&app, &assertion).await, "assertion replayed");
    // A new jti from the same client is fine.
    let fresh = key.sign(&ClientKey::claims(&client.client_id, &token_endpoint(&app)));
    assert_authenticated(&exchange_bogus_code(&app, &fresh).await);
    app.stop().await;
    host.stop().await;
}

#[actix_web::test]
async fn an_assertion_used_at_one_instance_is_refused_at_another_on_the_same_redis() {
    let host = DocumentHost::start().await;
    let redis = RedisServer::start().await;
    let upstream = Rc::new(MockUpstream::start(MockUpstreamConfig::default()).await);
    let mut settings: Vec<(&str, String)> = host.proxy_settings();
    settings.extend([
        ("OAUTH_PROXY_STORAGE", redis.url()),
        (
            "OAUTH_PROXY_ENCRYPTION_KEY",
            "test-encryption-key-test-encryption-key".to_string(),
        ),
        (
            "OAUTH_PROXY_CONSENT_SIGNING_KEY",
            "test-consent-key-test-consent-key-01234".to_string(),
        ),
    ]);
    let a = TestApp::spawn_instance(&as_refs(&settings), upstream.clone()).await;
    // Both instances behind one issuer URL (A's).
    settings.push(("OAUTH_PROXY_BASE_URL", a.address.clone()));
    let b = TestApp::spawn_instance(&as_refs(&settings), upstream).await;

    let key = ClientKey::es256("k1");
    let client = signing_client(&host, "/pkj/inline.json", &[&key], None);
    let assertion = key.sign(&ClientKey::claims(&client.client_id, &issuer(&a)));
    assert_authenticated(&exchange_bogus_code(&a, &assertion).await);
    assert_refused(&exchange_bogus_code(&b, &assertion).await, "assertion replayed");
    assert_refused(&exchange_bogus_code(&a, &assertion).await, "assertion replayed");
    let fresh = key.sign(&ClientKey::claims(&client.client_id, &issuer(&a)));
    assert_authenticated(&exchange_bogus_code(&b, &fresh).await);
    a.stop().await;
    b.stop().await;
    host.stop().await;
}

fn as_refs<'a>(settings: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    settings.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[actix_web::test]
async fn alg_none_and_hs256_keyed_with_the_public_key_are_refused() {
    let host = DocumentHost::start().await;
    let app = host.proxy(&[]).await;
    let key = ClientKey::es256("k1");
    let client = signing_client(&host, "/pkj/inline.json", &[&key], None);
    let claims = || ClientKey::claims(&client.client_id, &token_endpoint(&app));

    let none = forged(&json!({"alg": "none", "kid": "k1"}), &claims(), b"");
    assert_refused(&exchange_bogus_code(&app, &none).await, "alg `none` is not accepted");

    // The public key as published (its JWK, its x coordinate, its whole
    // document entry) used as an HMAC secret.
    let x = key.jwk["x"].as_str().unwrap().to_string();
    for secret in [key.jwk.to_string(), x] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let hmac = jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(secret.as_bytes())).unwrap();
        assert_refused(&exchange_bogus_code(&app, &hmac).await, "alg `HS256` is not accepted");
    }
    app.stop().await;
    host.stop().await;
}

#[actix_web::test]
async fn a_key_rotated_in_at_the_jwks_uri_is_accepted_and_unknown_kids_refetch_at_most_once_a_minute() {
    let host = DocumentHost::start().await;
    let app = host.proxy(&[]).await;
    let old = ClientKey::es256("old");
    let client = signing_client(&host, "/pkj/uri.json", &[&old], Some("/pkj/keys.json"));
    let aud = token_endpoint(&app);
    assert_authenticated(&exchange_bogus_code(&app, &old.sign(&ClientKey::claims(&client.client_id, &aud))).await);
    assert_eq!(
        host.hits("/pkj/keys.json"),
        1,
        "the key set is fetched once, then cached"
    );

    // The client publishes a new key; an assertion naming it makes the
    // proxy fetch the key set again, past its cache, and is accepted.
    let new = ClientKey::ed25519("new");
    host.serve_json("/pkj/keys.json", &json!({"keys": [old.jwk, new.jwk]}));
    assert_authenticated(&exchange_bogus_code(&app, &new.sign(&ClientKey::claims(&client.client_id, &aud))).await);
    assert_eq!(host.hits("/pkj/keys.json"), 2);

    // A kid nobody published is refused, and within the minute it does not
    // make the proxy fetch again (made-up kids cannot drive fetches).
    let stranger = ClientKey::es256("stranger");
    for _ in 0..3 {
        assert_refused(
            &exchange_bogus_code(&app, &stranger.sign(&ClientKey::claims(&client.client_id, &aud))).await,
            "kid",
        );
    }
    assert_eq!(host.hits("/pkj/keys.json"), 2);
    app.stop().await;
    host.stop().await;
}

#[actix_web::test]
async fn a_private_key_jwt_client_without_an_assertion_is_refused() {
    let host = DocumentHost::start().await;
    let app = host.proxy(&[]).await;
    let key = ClientKey::es256("k1");
    let client = signing_client(&host, "/pkj/inline.json", &[&key], None);
    let form = |extra: Option<(&'static str, &'static str)>| {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", "not-a-code"),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", "v".repeat(43).leak() as &str),
            ("client_id", client.client_id.as_str()),
        ];
        form.extend(extra);
        form
    };
    let nothing = app.post_form("/token", &form(None), None).await;
    assert_refused(&nothing, "private_key_jwt");
    let secret = app
        .post_form("/token", &form(Some(("client_secret", "guess"))), None)
        .await;
    assert_refused(&secret, "private_key_jwt");
    let basic = app
        .post_form("/token", &form(None), Some((&client.client_id, "guess")))
        .await;
    assert_refused(&basic, "private_key_jwt");
    app.stop().await;
    host.stop().await;
}

#[actix_web::test]
async fn a_client_of_another_method_sending_an_assertion_is_refused() {
    let host = DocumentHost::start().await;
    let app = host.proxy(&[]).await;
    let key = ClientKey::es256("k1");
    let aud = token_endpoint(&app);
    let registered = app.register_public().await;
    let assertion = key.sign(&ClientKey::claims(&registered.client_id, &aud));
    assert_refused(
        &exchange_bogus_code(&app, &assertion).await,
        "not registered for private_key_jwt",
    );

    let document = host.public_client("/pkj/public.json", "Public Document Client", REDIRECT_URI);
    let assertion = key.sign(&ClientKey::claims(&document.client_id, &aud));
    assert_refused(
        &exchange_bogus_code(&app, &assertion).await,
        "not registered for private_key_jwt",
    );
    app.stop().await;
    host.stop().await;
}

#[actix_web::test]
async fn an_assertion_is_one_method_and_names_the_client_of_the_body() {
    let host = DocumentHost::start().await;
    let app = host.proxy(&[]).await;
    let key = ClientKey::es256("k1");
    let client = signing_client(&host, "/pkj/inline.json", &[&key], None);
    let aud = token_endpoint(&app);
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", "not-a-code"),
        ("code_verifier", "v".repeat(43).leak() as &str),
        ("client_assertion_type", JWT_BEARER),
    ];
    let assertion = key.sign(&ClientKey::claims(&client.client_id, &aud));
    form.push(("client_assertion", &assertion));

    let with_secret = [form.clone(), vec![("client_secret", "s")]].concat();
    let refused = app.post_form("/token", &with_secret, None).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(
        refused.body.contains("one client authentication method"),
        "{}",
        refused.body
    );
    let refused = app.post_form("/token", &form, Some((&client.client_id, "s"))).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(
        refused.body.contains("one client authentication method"),
        "{}",
        refused.body
    );

    let other_id = [form.clone(), vec![("client_id", "someone-else")]].concat();
    let refused = app.post_form("/token", &other_id, None).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert!(refused.body.contains("sub"), "{}", refused.body);

    let mut wrong_type = form.clone();
    wrong_type[3] = (
        "client_assertion_type",
        "urn:ietf:params:oauth:client-assertion-type:saml2-bearer",
    );
    assert_refused(
        &app.post_form("/token", &wrong_type, None).await,
        "client_assertion_type",
    );
    app.stop().await;
    host.stop().await;
}

#[actix_web::test]
async fn revoke_and_introspect_accept_a_client_assertion() {
    let host = DocumentHost::start().await;
    let app = host.proxy(&[]).await;
    let key = ClientKey::ed25519("k1");
    let client = signing_client(&host, "/pkj/uri.json", &[&key], Some("/pkj/keys.json"));
    let tokens = sign_in(&app, &client, &key, &token_endpoint(&app)).await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.body);
    let refresh_token = tokens.json()["refresh_token"].as_str().unwrap().to_string();

    let assertion = key.sign(&ClientKey::claims(&client.client_id, &issuer(&app)));
    let revoked = with_assertion(&app, "/revoke", &[("token", refresh_token.as_str())], &assertion).await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    // The same assertion cannot be used again, at /revoke either.
    let replayed = with_assertion(&app, "/revoke", &[("token", refresh_token.as_str())], &assertion).await;
    assert_refused(&replayed, "assertion replayed");
    // Introspection authenticates the client the same way: the revoked
    // token is inactive.
    let assertion = key.sign(&ClientKey::claims(&client.client_id, &issuer(&app)));
    let introspected = with_assertion(&app, "/introspect", &[("token", refresh_token.as_str())], &assertion).await;
    assert_eq!(introspected.status, StatusCode::OK, "{}", introspected.body);
    assert_eq!(introspected.json()["active"], false, "{}", introspected.body);

    let assertion = key.sign(&ClientKey::claims(&client.client_id, &token_endpoint(&app)));
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token.as_str()),
    ];
    let refused = with_assertion(&app, "/token", &form, &assertion).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert_eq!(
        refused.json()["error"],
        "invalid_grant",
        "the token was revoked: {}",
        refused.body
    );
    app.stop().await;
    host.stop().await;
}
