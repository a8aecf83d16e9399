//! Client ID Metadata Documents: a client whose `client_id` is the https URL
//! of a JSON document describing it (MCP authorization 2026-07-28).

use std::time::{Duration, Instant};

use awc::http::StatusCode;
use serde_json::json;

use crate::document_host::{DocumentHost, Served};
use crate::helpers::{Pkce, TestApp, TestClient, REDIRECT_URI};
use crate::mock_upstream::MockUpstreamConfig;

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

/// The error page a browser gets for `client` at /authorize: 400, no
/// redirect.
async fn refusal_page(app: &TestApp, client: &TestClient) -> String {
    let answer = app.browser_get(&app.authorize_path(client, &Pkce::new(), "s")).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert!(answer.header("location").is_none());
    answer.body
}

/// A client whose id is `url` (no document needed to exist).
fn client_at(url: &str) -> TestClient {
    TestClient {
        client_id: url.to_string(),
        client_secret: None,
        redirect_uri: REDIRECT_URI.to_string(),
    }
}

/// Whether anything connected to `listener` (it never accepts, so the
/// kernel's backlog holds any connection made).
fn was_connected(listener: &std::net::TcpListener) -> bool {
    listener.set_nonblocking(true).unwrap();
    match listener.accept() {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(e) => panic!("{e}"),
    }
}

#[actix_web::test]
async fn a_document_without_client_name_redirect_uris_or_client_id_gets_a_page_naming_the_field() {
    let host = DocumentHost::start().await;
    let app = host.proxy(&[]).await;
    for field in ["client_name", "redirect_uris", "client_id"] {
        let path = format!("/missing-{field}.json");
        let mut document = json!({
            "client_id": host.url(&path),
            "client_name": "Document Client",
            "redirect_uris": [REDIRECT_URI],
        });
        document.as_object_mut().unwrap().remove(field);
        host.serve_json(&path, &document);
        let page = refusal_page(&app, &client_at(&host.url(&path))).await;
        assert!(page.contains(&format!("has no `{field}`")), "{field}: {page}");
    }
    app.stop().await;
    host.stop().await;
}

#[actix_web::test]
async fn a_redirect_uri_not_in_the_document_gets_the_invalid_redirect_uri_page() {
    let host = DocumentHost::start().await;
    let app = host.proxy(&[]).await;
    let mut client = host.public_client("/client.json", "Document Client", REDIRECT_URI);
    client.redirect_uri = "https://elsewhere.example/callback".to_string();
    let page = refusal_page(&app, &client).await;
    assert!(page.contains("Invalid redirect URI"), "{page}");
    assert!(page.contains("not listed in that document"), "{page}");
    app.stop().await;
    host.stop().await;
}

#[actix_web::test]
async fn a_portless_loopback_redirect_uri_in_the_document_matches_any_port() {
    let host = DocumentHost::start().await;
    let app = host.proxy(&[]).await;
    let mut client = host.public_client("/cli.json", "Command Line Client", "http://localhost/callback");
    client.redirect_uri = "http://localhost:54321/callback".to_string();
    let tokens = app.full_flow(&client).await;
    assert!(tokens["access_token"].is_string(), "{tokens}");

    // Another path on loopback is another redirect URI.
    client.redirect_uri = "http://localhost:54321/other".to_string();
    let page = refusal_page(&app, &client).await;
    assert!(page.contains("Invalid redirect URI"), "{page}");
    app.stop().await;
    host.stop().await;
}

#[actix_web::test]
async fn document_redirect_uris_the_operator_refuses_are_dropped_and_none_left_is_refused_saying_why() {
    let host = DocumentHost::start().await;
    let app = host
        .proxy(&[("OAUTH_PROXY_ALLOWED_REDIRECT_URI_PATTERNS", "http://127.0.0.1:7777/*")])
        .await;
    let path = "/mixed.json";
    host.serve_json(
        path,
        &json!({
            "client_id": host.url(path),
            "client_name": "Mixed",
            "redirect_uris": ["https://elsewhere.example/callback", REDIRECT_URI],
        }),
    );
    let tokens = app.full_flow(&client_at(&host.url(path))).await;
    assert!(tokens["access_token"].is_string(), "{tokens}");

    let path = "/elsewhere.json";
    host.serve_json(
        path,
        &json!({
            "client_id": host.url(path),
            "client_name": "Elsewhere",
            "redirect_uris": ["https://elsewhere.example/callback"],
        }),
    );
    let mut client = client_at(&host.url(path));
    client.redirect_uri = "https://elsewhere.example/callback".to_string();
    let page = refusal_page(&app, &client).await;
    assert!(page.contains("none is acceptable to this server"), "{page}");
    assert!(page.contains("redirect URI patterns"), "{page}");
    app.stop().await;
    host.stop().await;
}

#[actix_web::test]
async fn with_documents_turned_off_a_document_client_id_gets_a_page_saying_so_and_nothing_is_fetched() {
    let host = DocumentHost::start().await;
    let app = host.proxy(&[("OAUTH_PROXY_CIMD", "false")]).await;
    let client = host.public_client("/client.json", "Document Client", REDIRECT_URI);
    let metadata = app.get("/.well-known/oauth-authorization-server").await.json();
    assert_ne!(metadata["client_id_metadata_document_supported"], true, "{metadata}");
    let page = refusal_page(&app, &client).await;
    assert!(page.contains("client metadata documents are not accepted"), "{page}");
    assert_eq!(host.hits("/client.json"), 0);
    app.stop().await;
    host.stop().await;
}

#[actix_web::test]
async fn a_host_outside_the_allow_list_is_refused_without_being_fetched() {
    let host = DocumentHost::start().await;
    let app = host
        .proxy(&[("OAUTH_PROXY_CIMD_ALLOWED_HOSTS", "claude.ai,*.127.0.0.1.example")])
        .await;
    let client = host.public_client("/client.json", "Document Client", REDIRECT_URI);
    let page = refusal_page(&app, &client).await;
    assert!(
        page.contains("documents from 127.0.0.1 are not allowed by this server"),
        "{page}"
    );
    assert_eq!(host.hits("/client.json"), 0);
    app.stop().await;

    let app = host
        .proxy(&[("OAUTH_PROXY_CIMD_ALLOWED_HOSTS", "claude.ai,127.0.0.1")])
        .await;
    let tokens = app.full_flow(&client).await;
    assert!(tokens["access_token"].is_string(), "{tokens}");
    app.stop().await;
    host.stop().await;
}

#[actix_web::test]
async fn a_fetched_document_is_cached_across_authorizations() {
    let host = DocumentHost::start().await;
    let app = host.proxy(&[]).await;
    let client = host.public_client("/client.json", "Document Client", REDIRECT_URI);
    for _ in 0..2 {
        let consent = app.get(&app.authorize_path(&client, &Pkce::new(), "s")).await;
        assert_eq!(consent.status, StatusCode::OK, "{}", consent.body);
    }
    assert_eq!(host.hits("/client.json"), 1);
    app.stop().await;
    host.stop().await;
}

#[actix_web::test]
async fn a_failed_fetch_is_not_cached() {
    let host = DocumentHost::start().await;
    let app = host.proxy(&[]).await;
    let client = host.public_client("/client.json", "Document Client", REDIRECT_URI);
    let document = host.site_page("/client.json");
    host.serve(
        "/client.json",
        Served {
            status: 500,
            ..document.clone()
        },
    );
    let page = refusal_page(&app, &client).await;
    assert!(page.contains("HTTP status 500 (200 is required)"), "{page}");

    host.serve("/client.json", document);
    let consent = app.get(&app.authorize_path(&client, &Pkce::new(), "s")).await;
    assert_eq!(consent.status, StatusCode::OK, "{}", consent.body);
    assert_eq!(host.hits("/client.json"), 2);
    app.stop().await;
    host.stop().await;
}

#[actix_web::test]
async fn concurrent_first_authorizations_for_one_document_fetch_it_once() {
    let host = DocumentHost::start().await;
    let app = host.proxy(&[("OAUTH_PROXY_WORKERS", "4")]).await;
    let client = host.public_client("/client.json", "Document Client", REDIRECT_URI);
    let document = host.site_page("/client.json");
    host.serve(
        "/client.json",
        Served {
            delay: Some(Duration::from_millis(500)),
            ..document
        },
    );
    let paths: Vec<String> = (0..8).map(|_| app.authorize_path(&client, &Pkce::new(), "s")).collect();
    let answers = futures_util::future::join_all(paths.iter().map(|path| app.get(path))).await;
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }
    assert_eq!(host.hits("/client.json"), 1);
    app.stop().await;
    host.stop().await;
}

#[actix_web::test]
async fn a_document_over_5_kib_is_refused_with_or_without_a_content_length() {
    let host = DocumentHost::start().await;
    let app = host.proxy(&[]).await;
    let big = |path: &str| {
        json!({
            "client_id": host.url(path),
            "client_name": "Big",
            "redirect_uris": [REDIRECT_URI],
            "padding": "x".repeat(6 * 1024),
        })
        .to_string()
    };
    host.serve_json("/sized.json", &serde_json::from_str(&big("/sized.json")).unwrap());
    let page = refusal_page(&app, &client_at(&host.url("/sized.json"))).await;
    assert!(page.contains("larger than 5120 bytes"), "{page}");

    host.serve_chunked("/chunked.json", big("/chunked.json").as_bytes(), 8, Duration::ZERO);
    let page = refusal_page(&app, &client_at(&host.url("/chunked.json"))).await;
    assert!(page.contains("larger than 5120 bytes"), "{page}");
    app.stop().await;
    host.stop().await;
}

#[actix_web::test]
async fn a_server_slow_to_answer_or_trickling_its_body_times_out() {
    let host = DocumentHost::start().await;
    let app = host
        .proxy_adjusted(&[], |config| {
            config.client_documents.fetch_timeout = Duration::from_secs(1)
        })
        .await;
    let client = host.public_client("/slow.json", "Slow", REDIRECT_URI);
    let document = host.site_page("/slow.json");
    host.serve(
        "/slow.json",
        Served {
            delay: Some(Duration::from_secs(4)),
            ..document.clone()
        },
    );
    let started = Instant::now();
    let page = refusal_page(&app, &client).await;
    assert!(page.contains("took longer than 1 s"), "{page}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());

    // Headers at once, then the body one chunk every 400 ms.
    host.serve_chunked("/trickle.json", &document.body, 10, Duration::from_millis(400));
    let started = Instant::now();
    let page = refusal_page(&app, &client_at(&host.url("/trickle.json"))).await;
    assert!(page.contains("took longer than 1 s"), "{page}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    app.stop().await;
    host.stop().await;
}

#[actix_web::test]
async fn a_redirect_from_the_document_server_is_refused() {
    let host = DocumentHost::start().await;
    let app = host.proxy(&[]).await;
    let client = host.public_client("/moved.json", "Moved", REDIRECT_URI);
    host.public_client("/target.json", "Moved", REDIRECT_URI);
    host.serve(
        "/moved.json",
        Served {
            status: 302,
            content_type: "text/plain",
            body: Vec::new(),
            headers: vec![("location", host.url("/target.json"))],
            delay: None,
        },
    );
    let page = refusal_page(&app, &client).await;
    assert!(
        page.contains("answered with a redirect, which is not followed"),
        "{page}"
    );
    assert_eq!(host.hits("/target.json"), 0);
    app.stop().await;
    host.stop().await;
}

#[actix_web::test]
async fn a_document_that_is_not_json_or_not_sent_as_json_is_refused() {
    let host = DocumentHost::start().await;
    let app = host.proxy(&[]).await;
    let client = host.public_client("/html.json", "Html", REDIRECT_URI);
    let document = host.site_page("/html.json");
    host.serve(
        "/html.json",
        Served {
            content_type: "text/html",
            ..document
        },
    );
    let page = refusal_page(&app, &client).await;
    assert!(page.contains("sent it as text/html, not JSON"), "{page}");

    host.serve(
        "/broken.json",
        Served {
            status: 200,
            content_type: "application/json",
            body: b"<html>not json</html>".to_vec(),
            headers: Vec::new(),
            delay: None,
        },
    );
    let page = refusal_page(&app, &client_at(&host.url("/broken.json"))).await;
    assert!(page.contains("the document is not JSON"), "{page}");
    app.stop().await;
    host.stop().await;
}

/// A proxy trusting `host`'s CA but with the default address rules.
async fn proxy_without_private_networks(host: &DocumentHost) -> TestApp {
    let ca = host.pki.ca_file();
    TestApp::spawn_with(
        &[("OAUTH_PROXY_EXTRA_CA_FILE", ca.as_str())],
        MockUpstreamConfig::default(),
    )
    .await
}

#[actix_web::test]
async fn a_document_on_a_loopback_address_is_refused_without_a_connection() {
    let host = DocumentHost::start().await;
    let app = proxy_without_private_networks(&host).await;
    let client = host.public_client("/client.json", "Loopback", REDIRECT_URI);
    let page = refusal_page(&app, &client).await;
    assert!(page.contains("is at 127.0.0.1, a loopback address"), "{page}");
    assert_eq!(host.hits("/client.json"), 0);

    // An IPv4 listener behind its IPv4-mapped IPv6 form, and behind a name.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mapped = format!("https://[::ffff:7f00:1]:{port}/client.json");
    let page = refusal_page(&app, &client_at(&mapped)).await;
    assert!(page.contains("is at ::ffff:127.0.0.1, a loopback address"), "{page}");
    let named = format!("https://localhost:{port}/client.json");
    let page = refusal_page(&app, &client_at(&named)).await;
    assert!(page.contains("host localhost is at"), "{page}");
    assert!(page.contains("a loopback address"), "{page}");
    assert!(!was_connected(&listener), "a refused address was connected to");

    // IPv6 loopback, where the machine has it.
    if let Ok(listener) = std::net::TcpListener::bind("[::1]:0") {
        let port = listener.local_addr().unwrap().port();
        let page = refusal_page(&app, &client_at(&format!("https://[::1]:{port}/client.json"))).await;
        assert!(page.contains("is at ::1, a loopback address"), "{page}");
        assert!(!was_connected(&listener), "a refused address was connected to");
    }
    app.stop().await;
    host.stop().await;
}

#[actix_web::test]
async fn documents_on_private_and_cloud_metadata_addresses_are_refused_at_once() {
    let app = TestApp::spawn().await;
    for (url, says) in [
        ("https://10.0.0.1/client.json", "is at 10.0.0.1, a private address"),
        (
            "https://169.254.169.254/latest/meta-data",
            "is at 169.254.169.254, a link-local address",
        ),
        ("https://[fd00::1]/client.json", "is at fd00::1, a private address"),
        ("https://100.64.0.1/client.json", "a carrier-grade NAT address"),
    ] {
        let started = Instant::now();
        let page = refusal_page(&app, &client_at(url)).await;
        assert!(page.contains(says), "{url}: {page}");
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{url}: {:?}",
            started.elapsed()
        );
    }
    app.stop().await;
}

#[actix_web::test]
async fn at_the_token_endpoint_an_unusable_document_is_invalid_client_saying_why() {
    let host = DocumentHost::start().await;
    let app = host.proxy(&[]).await;
    let client = host.public_client("/oauth/token-client.json", "Token Client", REDIRECT_URI);
    host.serve_json(
        "/oauth/token-client.json",
        &json!({"client_id": client.client_id, "redirect_uris": [REDIRECT_URI]}),
    );
    let answer = app.exchange_code(&client, "not-a-code", &"v".repeat(43)).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
    assert_eq!(answer.json()["error"], "invalid_client");
    let description = answer.json()["error_description"].as_str().unwrap().to_string();
    assert!(description.contains("client_name"), "{description}");
    app.stop().await;
    host.stop().await;
}
