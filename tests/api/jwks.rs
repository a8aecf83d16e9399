//! ES256 / EdDSA signing: the public key at `/jwks.json`, checked by an
//! independent JWT library (jose, in Node), and key rotation.

use std::path::{Path, PathBuf};
use std::process::Command;

use awc::http::StatusCode;

use crate::helpers::{jwt_payload, TestApp};
use crate::mcp_server::node_tool;
use crate::mock_upstream::MockUpstreamConfig;

/// A fresh private key PEM file from openssl in `dir`, and its public key
/// PEM file.
fn openssl_key(dir: &Path, algorithm: &str, name: &str) -> (PathBuf, PathBuf) {
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    let mut generate = Command::new("openssl");
    generate.arg("genpkey");
    match algorithm {
        "ES256" => generate.args(["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]),
        _ => generate.args(["-algorithm", "ed25519"]),
    };
    assert!(generate.arg("-out").arg(&private).status().unwrap().success());
    let status = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .status()
        .unwrap();
    assert!(status.success());
    (private, public)
}

/// Verifies a token with jose against a JWKS URL; the verified payload.
fn verify_with_jose(jwks_url: &str, issuer: &str, audience: &str, token: &str) -> Result<serde_json::Value, String> {
    let output = node_tool("verify-jwt.mjs")
        .args([jwks_url, issuer, audience, token])
        .output()
        .expect("node runs");
    if output.status.success() {
        Ok(serde_json::from_slice(&output.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).to_string())
    }
}

async fn token_from(app: &TestApp) -> String {
    let client = app.register_public().await;
    app.full_flow(&client).await["access_token"]
        .as_str()
        .unwrap()
        .to_string()
}

#[actix_web::test]
async fn es256_and_eddsa_tokens_verify_against_the_published_jwks_with_an_independent_library() {
    for algorithm in ["ES256", "EdDSA"] {
        let keys = tempfile::tempdir().unwrap();
        let (private, _) = openssl_key(keys.path(), algorithm, &format!("current-{algorithm}"));
        let app = TestApp::spawn_with(
            &[
                ("OAUTH_PROXY_JWT_ALGORITHM", algorithm),
                ("OAUTH_PROXY_JWT_PRIVATE_KEY_FILE", private.to_str().unwrap()),
            ],
            MockUpstreamConfig::default(),
        )
        .await;
        let metadata = app.get("/.well-known/oauth-authorization-server").await.json();
        let jwks_uri = metadata["jwks_uri"]
            .as_str()
            .expect("jwks_uri in the metadata")
            .to_string();
        let jwks = app.get(&jwks_uri).await;
        assert_eq!(jwks.status, StatusCode::OK);
        let keys = jwks.json()["keys"].as_array().unwrap().clone();
        assert_eq!(keys.len(), 1);
        assert!(keys[0].get("d").is_none(), "no private part in the JWKS");
        let token = token_from(&app).await;
        let audience = format!("{}/mcp", app.address);
        let verified = verify_with_jose(&jwks_uri, &app.address, &audience, &token).expect("jose verifies the token");
        assert_eq!(verified["alg"], algorithm);
        assert_eq!(verified["kid"], keys[0]["kid"]);
        assert_eq!(verified["payload"]["sub"], "user-123");
        // A tampered token fails the same independent check.
        // Change a signature character in the middle (the last one may only
        // carry padding bits).
        let signature_start = token.rfind('.').unwrap() + 1;
        let mut tampered = token.clone();
        let at = signature_start + 10;
        let replacement = if &token[at..at + 1] == "A" { "B" } else { "A" };
        tampered.replace_range(at..at + 1, replacement);
        assert!(verify_with_jose(&jwks_uri, &app.address, &audience, &tampered).is_err());
        app.stop().await;
    }
}

#[actix_web::test]
async fn a_previous_key_stays_published_and_accepted_during_rotation() {
    let keys = tempfile::tempdir().unwrap();
    let (old_private, old_public) = openssl_key(keys.path(), "ES256", "old");
    let (new_private, _) = openssl_key(keys.path(), "ES256", "new");
    let old_app = TestApp::spawn_with(
        &[
            ("OAUTH_PROXY_JWT_ALGORITHM", "ES256"),
            ("OAUTH_PROXY_JWT_PRIVATE_KEY_FILE", old_private.to_str().unwrap()),
        ],
        MockUpstreamConfig::default(),
    )
    .await;
    let old_token = token_from(&old_app).await;
    old_app.stop().await;

    let app = TestApp::spawn_with(
        &[
            ("OAUTH_PROXY_JWT_ALGORITHM", "ES256"),
            ("OAUTH_PROXY_JWT_PRIVATE_KEY_FILE", new_private.to_str().unwrap()),
            ("OAUTH_PROXY_JWT_PREVIOUS_KEY_FILE", old_public.to_str().unwrap()),
        ],
        MockUpstreamConfig::default(),
    )
    .await;
    let keys = app.get("/jwks.json").await.json()["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 2, "current and previous key");
    let new_token = token_from(&app).await;
    let jwks_uri = format!("{}/jwks.json", app.address);
    // jose checks iss and aud: both apps share neither, so compare kids and signatures only.
    let old_claims = jwt_payload(&old_token);
    let old_verified = verify_with_jose(
        &jwks_uri,
        old_claims["iss"].as_str().unwrap(),
        old_claims["aud"].as_str().unwrap(),
        &old_token,
    )
    .expect("a token signed with the previous key still verifies");
    assert_eq!(old_verified["kid"], keys[1]["kid"]);
    let new_verified = verify_with_jose(&jwks_uri, &app.address, &format!("{}/mcp", app.address), &new_token).unwrap();
    assert_eq!(new_verified["kid"], keys[0]["kid"]);
    app.stop().await;
}

#[actix_web::test]
async fn an_asymmetric_algorithm_without_a_key_generates_one() {
    let app = TestApp::spawn_with(&[("OAUTH_PROXY_JWT_ALGORITHM", "EdDSA")], MockUpstreamConfig::default()).await;
    let token = token_from(&app).await;
    let jwks_uri = format!("{}/jwks.json", app.address);
    assert!(verify_with_jose(&jwks_uri, &app.address, &format!("{}/mcp", app.address), &token).is_ok());
    app.stop().await;
}
