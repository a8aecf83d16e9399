//! Client ID Metadata Documents: a client whose `client_id` is the https URL
//! of a JSON document describing it (MCP authorization 2026-07-28).

use awc::http::StatusCode;

use crate::document_host::DocumentHost;
use crate::helpers::{Pkce, REDIRECT_URI};

#[actix_web::test]
async fn a_document_client_signs_in_without_registering() {
    let host = DocumentHost::start().await;
    let app = host.proxy(&[]).await;
    let client = host.public_client("/oauth/client.json", "Document Client", REDIRECT_URI);

    let metadata = app.get("/.well-known/oauth-authorization-server").await.json();
    assert_eq!(metadata["client_id_metadata_document_supported"], true);

    let tokens = app.full_flow(&client).await;
    assert!(tokens["access_token"].is_string(), "{tokens}");
    let refreshed = app.refresh(&client, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    app.stop().await;
    host.stop().await;
}

#[actix_web::test]
async fn a_document_that_does_not_name_itself_gets_an_error_page_saying_so() {
    let host = DocumentHost::start().await;
    let app = host.proxy(&[]).await;
    let mut client = host.public_client("/oauth/client.json", "Document Client", REDIRECT_URI);
    host.serve_json(
        "/oauth/client.json",
        &serde_json::json!({
            "client_id": host.url("/oauth/other.json"),
            "client_name": "Document Client",
            "redirect_uris": [REDIRECT_URI],
        }),
    );
    client.redirect_uri = REDIRECT_URI.to_string();
    let answer = app.browser_get(&app.authorize_path(&client, &Pkce::new(), "s")).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert!(answer.header("location").is_none());
    assert!(
        answer.body.contains("is not the URL it was fetched from"),
        "{}",
        answer.body
    );
    assert_eq!(host.hits("/oauth/client.json"), 1);
    app.stop().await;
    host.stop().await;
}
