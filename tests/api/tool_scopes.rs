//! Per-tool scopes at the gateway (`OAUTH_PROXY_MCP_TOOL_SCOPES`): a call
//! whose token lacks a scope its tool, prompt or resource needs gets 403
//! `insufficient_scope` naming every scope the call needs, and never reaches
//! the MCP server; a token from a second authorization with the larger scope
//! gets through (step-up).

use awc::http::{Method, StatusCode};
use mcp_oauth_proxy::audit::{EventKind, Outcome};
use serde_json::{json, Value};

use crate::backend_double::BackendDouble;
use crate::helpers::{bearer_challenge, Answer, TestApp};
use crate::mock_upstream::MockUpstreamConfig;

const SCOPES: &str = "openid repo:read repo:write repo:admin offline_access";
const RULES: &str = "delete_*=repo:admin write_*=repo:write summarize_?=repo:write file:///secret/*=repo:admin";

async fn spawn(extra: &[(&str, &str)]) -> (TestApp, BackendDouble) {
    let backend = BackendDouble::start().await;
    let mut settings = vec![
        ("OAUTH_PROXY_MCP_UPSTREAM_URL", backend.url.as_str()),
        ("OAUTH_PROXY_SCOPES", SCOPES),
        ("OAUTH_PROXY_MCP_TOOL_SCOPES", RULES),
    ];
    settings.extend_from_slice(extra);
    let app = TestApp::spawn_with(&settings, MockUpstreamConfig::default()).await;
    (app, backend)
}

fn call(id: i64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

fn tool(id: i64, name: &str) -> Value {
    call(id, "tools/call", json!({"name": name, "arguments": {}}))
}

fn forwarded(backend: &BackendDouble) -> usize {
    backend.recorded.authorization.lock().unwrap().len()
}

/// The answer is the step-up challenge naming `scope`, with a JSON-RPC
/// error body echoing `id`.
fn assert_step_up(app: &TestApp, answer: &Answer, scope: &str, id: Value) {
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    let challenge = bearer_challenge(answer);
    assert_eq!(challenge["error"], "insufficient_scope");
    assert_eq!(challenge["scope"], scope);
    assert_eq!(
        challenge["resource_metadata"],
        format!("{}/.well-known/oauth-protected-resource/mcp", app.address)
    );
    let body = answer.json();
    assert_eq!(body["jsonrpc"], "2.0");
    assert_eq!(body["id"], id);
    assert!(body["error"]["code"].is_i64(), "{body}");
    assert_eq!(body["error"]["data"]["scope"], scope, "{body}");
}

#[actix_web::test]
async fn a_call_whose_token_has_the_tools_scope_is_forwarded_and_only_such_a_call() {
    let (app, backend) = spawn(&[]).await;
    let client = app.register_public().await;
    let token = app.token_with_scope(&client, "openid repo:read repo:write").await;
    let answer = app.mcp_post(Some(&token), tool(1, "write_file")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.json()["result"]["echo"], "tools/call");
    // A tool no rule names needs no more than the endpoint does.
    let answer = app.mcp_post(Some(&token), tool(2, "search")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    // The same token, a tool whose scope it lacks.
    let answer = app.mcp_post(Some(&token), tool(3, "delete_repo")).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    assert_eq!(forwarded(&backend), 2);
    app.stop().await;
    backend.stop().await;
}

#[actix_web::test]
async fn a_call_whose_token_lacks_the_tools_scope_gets_the_step_up_challenge_and_is_not_forwarded() {
    let (app, backend) = spawn(&[]).await;
    let client = app.register_public().await;
    let token = app.token_with_scope(&client, "openid repo:read").await;
    let answer = app.mcp_post(Some(&token), tool(7, "delete_repo")).await;
    // The baseline (every advertised scope no rule is about, without
    // offline_access) and the scope the tool needs.
    assert_step_up(&app, &answer, "openid repo:read repo:admin", json!(7));
    assert_eq!(forwarded(&backend), 0, "nothing reached the MCP server");
    // The audit trail: a request.refused event with the status and the tool.
    let refused: Vec<_> = app
        .proxy
        .audit()
        .recent()
        .into_iter()
        .filter(|e| e.event == EventKind::RequestRefused)
        .collect();
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!(refused[0].outcome, Outcome::Refused);
    assert_eq!(refused[0].status, Some(403));
    let mcp = refused[0].mcp.as_ref().expect("the call is recorded");
    assert_eq!(mcp.method.as_deref(), Some("tools/call"));
    assert_eq!(mcp.name.as_deref(), Some("delete_repo"));
    assert!(!app
        .proxy
        .audit()
        .recent()
        .iter()
        .any(|e| e.event == EventKind::McpRequest));
    app.stop().await;
    backend.stop().await;
}

#[actix_web::test]
async fn the_401_challenge_names_the_baseline_scopes_not_the_tools_ones() {
    let (app, backend) = spawn(&[]).await;
    let answer = app.mcp_post(None, tool(1, "delete_repo")).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(bearer_challenge(&answer)["scope"], "openid repo:read");
    app.stop().await;
    backend.stop().await;
}

#[actix_web::test]
async fn with_required_scopes_the_challenge_names_them_and_every_scope_the_tool_needs() {
    let (app, backend) = spawn(&[("OAUTH_PROXY_MCP_REQUIRED_SCOPES", "repo:read")]).await;
    let client = app.register_public().await;
    let token = app.token_with_scope(&client, "repo:read repo:write").await;
    let unauthenticated = app.mcp_post(None, tool(1, "delete_repo")).await;
    assert_eq!(bearer_challenge(&unauthenticated)["scope"], "repo:read");
    // The required scopes and the one the tool needs.
    let answer = app.mcp_post(Some(&token), tool(3, "delete_repo")).await;
    assert_step_up(&app, &answer, "repo:read repo:admin", json!(3));
    assert_eq!(forwarded(&backend), 0);
    app.stop().await;
    backend.stop().await;
}

#[actix_web::test]
async fn a_batch_with_one_refused_element_is_refused_whole() {
    let (app, backend) = spawn(&[]).await;
    let client = app.register_public().await;
    let token = app.token_with_scope(&client, "openid repo:read repo:write").await;
    let batch = json!([
        tool(1, "write_file"),
        call(2, "ping", json!({})),
        tool(3, "delete_repo")
    ]);
    let answer = app.mcp_post(Some(&token), batch).await;
    // Every scope the batch needs; no single id to echo.
    assert_step_up(&app, &answer, "openid repo:read repo:admin repo:write", Value::Null);
    assert!(answer.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("delete_repo"));
    assert_eq!(forwarded(&backend), 0);
    // The same batch without the refused element goes through.
    let batch = json!([tool(1, "write_file"), call(2, "ping", json!({}))]);
    let answer = app.mcp_post(Some(&token), batch).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(forwarded(&backend), 1);
    app.stop().await;
    backend.stop().await;
}

#[actix_web::test]
async fn a_batch_longer_than_the_gateway_checks_is_refused() {
    let (app, backend) = spawn(&[]).await;
    let client = app.register_public().await;
    let token = app
        .token_with_scope(&client, "openid repo:read repo:write repo:admin")
        .await;
    let batch: Vec<Value> = (0..101).map(|i| call(i, "ping", json!({}))).collect();
    let answer = app.mcp_post(Some(&token), Value::Array(batch)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert_eq!(answer.json()["error"]["code"], -32600);
    assert_eq!(forwarded(&backend), 0);
    let batch: Vec<Value> = (0..100).map(|i| call(i, "ping", json!({}))).collect();
    let answer = app.mcp_post(Some(&token), Value::Array(batch)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    app.stop().await;
    backend.stop().await;
}

#[actix_web::test]
async fn glob_patterns_match_whole_names() {
    let (app, backend) = spawn(&[]).await;
    let client = app.register_public().await;
    let token = app.token_with_scope(&client, "openid repo:read").await;
    // `summarize_?` is one character after the underscore; `delete_*` a prefix.
    for (name, allowed) in [
        ("summarize_a", false),
        ("summarize_ab", true),
        ("delete_", false),
        ("undelete_repo", true),
        ("write_", false),
    ] {
        let answer = app.mcp_post(Some(&token), tool(1, name)).await;
        let expected = if allowed { StatusCode::OK } else { StatusCode::FORBIDDEN };
        assert_eq!(answer.status, expected, "{name}: {}", answer.body);
    }
    assert_eq!(forwarded(&backend), 2);
    app.stop().await;
    backend.stop().await;
}

#[actix_web::test]
async fn prompts_by_name_and_resources_by_uri_are_checked_too() {
    let (app, backend) = spawn(&[]).await;
    let client = app.register_public().await;
    let token = app.token_with_scope(&client, "openid repo:read").await;
    let prompt = call(4, "prompts/get", json!({"name": "write_summary"}));
    assert_step_up(
        &app,
        &app.mcp_post(Some(&token), prompt).await,
        "openid repo:read repo:write",
        json!(4),
    );
    for method in ["resources/read", "resources/subscribe"] {
        let read = call(5, method, json!({"uri": "file:///secret/keys.txt"}));
        assert_step_up(
            &app,
            &app.mcp_post(Some(&token), read).await,
            "openid repo:read repo:admin",
            json!(5),
        );
    }
    // A tool's `name` is not a resource's `uri`, and an argument called
    // `name` is not the tool's name.
    let public = call(
        6,
        "resources/read",
        json!({"uri": "file:///public/a.txt", "name": "delete_x"}),
    );
    assert_eq!(app.mcp_post(Some(&token), public).await.status, StatusCode::OK);
    let argument = call(
        7,
        "tools/call",
        json!({"arguments": {"name": "delete_x"}, "name": "search"}),
    );
    assert_eq!(app.mcp_post(Some(&token), argument).await.status, StatusCode::OK);
    assert_eq!(forwarded(&backend), 2);
    app.stop().await;
    backend.stop().await;
}

/// Completing a prompt's or a resource template's arguments uses it: a
/// completion is checked by the prompt or resource its `ref` names.
#[actix_web::test]
async fn a_completion_is_checked_by_the_prompt_or_resource_its_reference_names() {
    let (app, backend) = spawn(&[]).await;
    let client = app.register_public().await;
    let token = app.token_with_scope(&client, "openid repo:read").await;
    let complete = |id: i64, reference: Value| {
        call(
            id,
            "completion/complete",
            json!({"ref": reference, "argument": {"name": "style", "value": "b"}}),
        )
    };
    let prompt = complete(8, json!({"type": "ref/prompt", "name": "write_summary"}));
    assert_step_up(
        &app,
        &app.mcp_post(Some(&token), prompt).await,
        "openid repo:read repo:write",
        json!(8),
    );
    let template = complete(9, json!({"type": "ref/resource", "uri": "file:///secret/{name}"}));
    assert_step_up(
        &app,
        &app.mcp_post(Some(&token), template).await,
        "openid repo:read repo:admin",
        json!(9),
    );
    // A reference the gateway cannot tell apart is not one it can allow.
    let unknown = complete(10, json!({"type": "ref/other", "name": "search"}));
    let answer = app.mcp_post(Some(&token), unknown).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert_eq!(answer.json()["error"]["code"], -32602);
    assert_eq!(forwarded(&backend), 0);
    // A completion for a prompt no rule names goes through.
    let open = complete(11, json!({"type": "ref/prompt", "name": "greet"}));
    assert_eq!(app.mcp_post(Some(&token), open).await.status, StatusCode::OK);
    assert_eq!(forwarded(&backend), 1);
    app.stop().await;
    backend.stop().await;
}

#[actix_web::test]
async fn a_body_that_could_hide_the_name_from_the_gateway_is_refused() {
    let (app, backend) = spawn(&[]).await;
    let client = app.register_public().await;
    let token = app.token_with_scope(&client, "openid repo:read").await;
    // The last of duplicate keys counts (as in JavaScript's JSON.parse).
    let duplicate = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","name":"delete_repo"}}"#;
    // A lone surrogate: JSON.parse takes it, the gateway cannot read it.
    let surrogate = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_\ud800"}}"#;
    // A name that is not a string.
    let not_text = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":["delete_repo"]}}"#;
    // Positional params: nothing the gateway can read a name from.
    let positional = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["delete_repo",{}]}"#;
    for (what, body, status) in [
        ("positional params", positional, StatusCode::BAD_REQUEST),
        ("duplicate keys", duplicate, StatusCode::FORBIDDEN),
        ("lone surrogate", surrogate, StatusCode::BAD_REQUEST),
        ("name not a string", not_text, StatusCode::BAD_REQUEST),
    ] {
        let answer = raw_post(&app, &token, body).await;
        assert_eq!(answer.status, status, "{what}: {}", answer.body);
    }
    assert_eq!(forwarded(&backend), 0);
    app.stop().await;
    backend.stop().await;
}

async fn raw_post(app: &TestApp, token: &str, body: &str) -> Answer {
    let mut response = app
        .http()
        .post(format!("{}/mcp", app.address))
        .insert_header(("Authorization", format!("Bearer {token}")))
        .insert_header(("Content-Type", "application/json"))
        .insert_header(("Accept", "application/json, text/event-stream"))
        .send_body(body.to_string())
        .await
        .unwrap();
    let body = response.body().await.unwrap();
    Answer {
        status: response.status(),
        headers: response.headers().clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

#[actix_web::test]
async fn after_the_challenge_a_second_authorization_with_the_larger_scope_gets_the_call_through() {
    let (app, backend) = spawn(&[]).await;
    let client = app.register_public().await;
    let first = app.token_with_scope(&client, "openid repo:read").await;
    let answer = app.mcp_post(Some(&first), tool(1, "delete_repo")).await;
    let challenged = bearer_challenge(&answer)["scope"].clone();
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(forwarded(&backend), 0);
    // The client authorizes again with the scopes it had and the challenged ones.
    let stepped_up = app
        .token_with_scope(&client, &format!("openid repo:read {challenged}"))
        .await;
    let answer = app
        .mcp_request(
            Method::POST,
            "/mcp",
            Some(&stepped_up),
            &[],
            Some(tool(1, "delete_repo")),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.json()["result"]["echo"], "tools/call");
    assert_eq!(forwarded(&backend), 1);
    app.stop().await;
    backend.stop().await;
}
