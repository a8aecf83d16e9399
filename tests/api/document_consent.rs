//! The consent page and remembered approvals of document clients (client
//! ids that are the https URL of a metadata document), and their audit
//! events.

use awc::http::StatusCode;
use mcp_oauth_proxy::audit::{Event, EventKind};
use serde_json::json;

use crate::document_host::DocumentHost;
use crate::helpers::{Answer, Pkce, TestApp, TestClient, REDIRECT_URI};

const WEB_REDIRECT: &str = "https://app.example.com/oauth/callback";
const LOCAL_APP_WARNING: &str = "anyone's program can claim this name";

/// Serves a document listing `redirect_uris`; the client asks for the first.
fn document_client(host: &DocumentHost, path: &str, name: &str, redirect_uris: &[&str]) -> TestClient {
    let client_id = host.url(path);
    host.serve_json(
        path,
        &json!({
            "client_id": client_id,
            "client_name": name,
            "redirect_uris": redirect_uris,
            "token_endpoint_auth_method": "none",
        }),
    );
    TestClient {
        client_id,
        client_secret: None,
        redirect_uri: redirect_uris[0].to_string(),
    }
}

fn asking_for(client: &TestClient, redirect_uri: &str) -> TestClient {
    TestClient {
        redirect_uri: redirect_uri.to_string(),
        ..client.clone()
    }
}

async fn authorize(app: &TestApp, client: &TestClient) -> Answer {
    app.browser_get(&app.authorize_path(client, &Pkce::new(), "s")).await
}

/// Whether a remembered approval sent the browser straight upstream.
fn went_upstream(app: &TestApp, answer: &Answer) -> bool {
    answer.status == StatusCode::FOUND
        && answer
            .location()
            .as_str()
            .starts_with(&app.upstream.authorization_endpoint())
}

#[actix_web::test]
async fn the_consent_page_shows_a_document_clients_host_as_verified_its_name_as_that_hosts_claim_and_where_the_user_goes(
) {
    let host = DocumentHost::start().await;
    let app = host.proxy(&[]).await;
    let client = document_client(&host, "/oauth/client.json", "Claude <Beta>", &[WEB_REDIRECT]);

    let page = authorize(&app, &client).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let body = &page.body;
    assert!(
        body.contains(r#"Verified: the client's metadata is published at <strong class="host">127.0.0.1</strong>"#),
        "{body}"
    );
    assert!(
        body.contains(r#"Claude &#60;Beta&#62; — as named by <strong class="host">127.0.0.1</strong>"#),
        "{body}"
    );
    assert!(!body.contains("<Beta>"), "the document's name is escaped: {body}");
    assert!(
        body.contains(r#"sent back to <strong class="host">app.example.com</strong>"#),
        "{body}"
    );
    assert!(body.contains(&client.client_id), "{body}");
    assert!(
        !body.contains(LOCAL_APP_WARNING),
        "a web client is no local app: {body}"
    );
    assert!(!body.contains("<img"), "no logo: {body}");

    // A registered client's page claims no verified origin.
    let registered = app.register_public().await;
    let page = authorize(&app, &registered).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(!page.body.contains("Verified:"), "{}", page.body);
    assert!(!page.body.contains("as named by"), "{}", page.body);
    assert!(
        page.body
            .contains(r#"sent back to <strong class="host">127.0.0.1</strong>"#),
        "{}",
        page.body
    );
    app.stop().await;
    host.stop().await;
}

#[actix_web::test]
async fn the_consent_page_warns_that_anyone_can_claim_the_name_of_a_document_client_with_only_loopback_redirect_uris() {
    let host = DocumentHost::start().await;
    let app = host.proxy(&[]).await;
    let local = document_client(
        &host,
        "/oauth/local.json",
        "Claude Code",
        &[REDIRECT_URI, "http://localhost/callback"],
    );
    let page = authorize(&app, &local).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains(LOCAL_APP_WARNING), "{}", page.body);
    assert!(
        page.body
            .contains("Continue only if you just started Claude Code yourself"),
        "{}",
        page.body
    );

    // One web redirect URI among loopback ones: not only a local app.
    let mixed = document_client(&host, "/oauth/mixed.json", "Mixed", &[REDIRECT_URI, WEB_REDIRECT]);
    let page = authorize(&app, &mixed).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("Verified:"), "{}", page.body);
    assert!(!page.body.contains(LOCAL_APP_WARNING), "{}", page.body);
    app.stop().await;
    host.stop().await;
}

#[actix_web::test]
async fn a_remembered_approval_of_a_document_client_holds_for_its_redirect_uri_only() {
    let host = DocumentHost::start().await;
    let app = host.proxy(&[]).await;
    let other_redirect = "https://other.example.com/oauth/callback";
    let client = document_client(
        &host,
        "/oauth/client.json",
        "Web Client",
        &[WEB_REDIRECT, other_redirect],
    );

    let _ = app.code_for(&client, &Pkce::new()).await;
    let again = authorize(&app, &client).await;
    assert!(
        went_upstream(&app, &again),
        "remembered for this redirect URI: {}",
        again.status
    );

    let other = authorize(&app, &asking_for(&client, other_redirect)).await;
    assert_eq!(
        other.status,
        StatusCode::OK,
        "the same document id with another redirect URI asks again"
    );
    assert!(other.body.contains("other.example.com"), "{}", other.body);
    app.stop().await;
    host.stop().await;
}

#[actix_web::test]
async fn a_remembered_approval_of_a_local_document_client_holds_on_any_port_but_not_for_another_path() {
    let host = DocumentHost::start().await;
    let app = host.proxy(&[]).await;
    // Claude Code lists a portless loopback URI and listens on a new port each run.
    let client = document_client(
        &host,
        "/oauth/claude-code.json",
        "Claude Code",
        &["http://127.0.0.1/callback", "http://127.0.0.1/other"],
    );
    let first_run = asking_for(&client, "http://127.0.0.1:40101/callback");
    let _ = app.code_for(&first_run, &Pkce::new()).await;

    let next_run = authorize(&app, &asking_for(&client, "http://127.0.0.1:40202/callback")).await;
    assert!(
        went_upstream(&app, &next_run),
        "another ephemeral port is the same approval: {} {}",
        next_run.status,
        next_run.body
    );
    let other_path = authorize(&app, &asking_for(&client, "http://127.0.0.1:40202/other")).await;
    assert_eq!(other_path.status, StatusCode::OK, "another redirect URI asks again");
    app.stop().await;
    host.stop().await;
}

fn events_of(app: &TestApp, kind: EventKind) -> Vec<Event> {
    app.proxy
        .audit()
        .recent()
        .into_iter()
        .filter(|e| e.event == kind)
        .collect()
}

#[actix_web::test]
async fn audit_events_of_a_document_client_carry_its_url_and_the_name_its_document_states() {
    let host = DocumentHost::start().await;
    let app = host.proxy(&[]).await;
    let client = document_client(&host, "/oauth/client.json", "Document Client", &[REDIRECT_URI]);

    let (access, refresh) = app.full_flow_tokens(&client).await;
    // Revocation by the client works as for a registered client.
    for token in [&access, &refresh] {
        let revoked = app
            .post_form("/revoke", &[("token", token), ("client_id", &client.client_id)], None)
            .await;
        assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    }
    let refused = app.refresh(&client, &refresh).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);

    for kind in [
        EventKind::AuthorizationStarted,
        EventKind::ConsentApproved,
        EventKind::CodeIssued,
        EventKind::CodeRedeemed,
        EventKind::TokensIssued,
        EventKind::TokenRevoked,
        EventKind::GrantRevoked,
    ] {
        let found = events_of(&app, kind);
        assert_eq!(found.len(), 1, "one {kind:?}: {found:#?}");
        let event = &found[0];
        assert_eq!(event.client_id.as_deref(), Some(client.client_id.as_str()), "{event:?}");
        assert_eq!(event.client_name.as_deref(), Some("Document Client"), "{event:?}");
    }
    app.stop().await;
    host.stop().await;
}
