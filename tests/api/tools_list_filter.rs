//! `OAUTH_PROXY_MCP_FILTER_TOOLS_LIST=true`: the MCP server's `tools/list`
//! answer, as JSON or as SSE, lists only the tools the token may call under
//! `OAUTH_PROXY_MCP_TOOL_SCOPES`; everything else in it, and every other
//! answer, is left as the MCP server sent it.

use awc::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::backend_double::BackendDouble;
use crate::helpers::TestApp;
use crate::mock_upstream::MockUpstreamConfig;

const TOOLS: &str = "read_file,search,write_file,delete_repo";

fn list_path(format: &str) -> String {
    format!("/mcp/list/{format}?tools={TOOLS}")
}

fn tools_list() -> Value {
    json!({"jsonrpc": "2.0", "id": 41, "method": "tools/list", "params": {}})
}

/// The proxy with tool scopes (and the filter when `filter`) in front of
/// the backend double.
async fn spawn(filter: bool) -> (TestApp, BackendDouble) {
    let backend = BackendDouble::start().await;
    let settings = [
        ("OAUTH_PROXY_MCP_UPSTREAM_URL", backend.url.as_str()),
        ("OAUTH_PROXY_SCOPES", "openid mcp:read mcp:write mcp:admin"),
        ("OAUTH_PROXY_MCP_TOOL_SCOPES", "delete_*=mcp:admin write_*=mcp:write"),
        (
            "OAUTH_PROXY_MCP_FILTER_TOOLS_LIST",
            if filter { "true" } else { "false" },
        ),
    ];
    let app = TestApp::spawn_with(&settings, MockUpstreamConfig::default()).await;
    (app, backend)
}

/// An access token granted exactly `scope`, through the whole flow.
async fn token_with_scope(app: &TestApp, scope: &str) -> String {
    let client = app.register_public().await;
    app.token_with_scope(&client, scope).await
}

async fn post(app: &TestApp, path: &str, token: &str, body: Value) -> crate::helpers::Answer {
    app.mcp_request(Method::POST, path, Some(token), &[], Some(body)).await
}

/// The same request straight to the backend double (no proxy).
async fn direct(backend: &BackendDouble, path: &str, body: &Value) -> String {
    let url = format!("{}{}", backend.url, path.strip_prefix("/mcp").unwrap());
    let mut response = awc::Client::default()
        .post(url)
        .insert_header(("Accept", "application/json, text/event-stream"))
        .send_json(body)
        .await
        .unwrap();
    String::from_utf8(response.body().await.unwrap().to_vec()).unwrap()
}

/// The JSON-RPC messages of an SSE body (CRLF or LF), each event's data
/// lines joined.
fn sse_messages(body: &str) -> Vec<Value> {
    body.replace("\r\n", "\n")
        .split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .map(|value| value.strip_prefix(' ').unwrap_or(value))
                .collect();
            (!data.is_empty()).then(|| serde_json::from_str(&data.join("\n")).unwrap())
        })
        .collect()
}

fn names(answer: &Value) -> Vec<&str> {
    answer["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools in {answer}"))
        .iter()
        .map(|tool| tool["name"].as_str().unwrap())
        .collect()
}

/// Everything but the tools is as the MCP server sent it.
fn assert_rest_kept(answer: &Value) {
    assert_eq!(answer["id"], 41);
    assert_eq!(answer["result"]["nextCursor"], "page-2");
    assert_eq!(answer["result"]["_meta"], json!({"served-by": "double"}));
    assert_eq!(answer["result"]["x-extra"], json!([1, 2]));
    for tool in answer["result"]["tools"].as_array().unwrap() {
        assert_eq!(tool["inputSchema"], json!({"type": "object"}));
        assert_eq!(
            tool["description"],
            format!("the {} tool", tool["name"].as_str().unwrap())
        );
    }
}

#[actix_web::test]
async fn a_json_tools_list_answer_shows_a_token_only_the_tools_its_scopes_may_call() {
    let (app, backend) = spawn(true).await;
    let reader = token_with_scope(&app, "openid mcp:read").await;
    let writer = token_with_scope(&app, "openid mcp:read mcp:write").await;

    let answer = post(&app, &list_path("json"), &reader, tools_list()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(names(&answer.json()), ["read_file", "search"]);
    assert_rest_kept(&answer.json());
    // The length announced is the length of the rewritten body.
    let length = answer.header("content-length").map(|l| l.parse::<usize>().unwrap());
    assert_eq!(length, Some(answer.body.len()));
    assert!(answer.header("content-type").unwrap().starts_with("application/json"));

    let answer = post(&app, &list_path("json"), &writer, tools_list()).await;
    assert_eq!(names(&answer.json()), ["read_file", "search", "write_file"]);
    assert_rest_kept(&answer.json());
    app.stop().await;
    backend.stop().await;
}

#[actix_web::test]
async fn an_sse_tools_list_answer_shows_a_token_only_the_tools_its_scopes_may_call() {
    let (app, backend) = spawn(true).await;
    let reader = token_with_scope(&app, "openid mcp:read").await;
    let answer = post(&app, &list_path("sse"), &reader, tools_list()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(answer.header("content-type").unwrap().starts_with("text/event-stream"));
    let messages = sse_messages(&answer.body);
    assert_eq!(messages.len(), 2, "{}", answer.body);
    assert_eq!(messages[0]["method"], "notifications/progress");
    assert_eq!(names(&messages[1]), ["read_file", "search"]);
    assert_rest_kept(&messages[1]);
    // The event before the answer and the answer's other fields go out as
    // the MCP server sent them (CRLF line ends included).
    let sent = direct(&backend, &list_path("sse"), &tools_list()).await;
    let progress_event = &sent[..sent.find("\r\n\r\n").unwrap() + 4];
    assert!(answer.body.starts_with(progress_event), "{}", answer.body);
    assert!(
        answer.body.contains("\r\nid: 1\r\nevent: message\r\ndata: "),
        "{}",
        answer.body
    );
    assert!(!answer.body.contains("write_file") && !answer.body.contains("delete_repo"));
    app.stop().await;
    backend.stop().await;
}

#[actix_web::test]
async fn a_token_with_every_scope_gets_the_tools_list_answer_byte_for_byte() {
    let (app, backend) = spawn(true).await;
    let admin = token_with_scope(&app, "openid mcp:read mcp:write mcp:admin").await;
    let reader = token_with_scope(&app, "openid mcp:read").await;
    for format in ["json", "sse"] {
        let sent = direct(&backend, &list_path(format), &tools_list()).await;
        let answer = post(&app, &list_path(format), &admin, tools_list()).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body, sent, "{format}");
        // Proof the filter is on: the reader's answer differs.
        let filtered = post(&app, &list_path(format), &reader, tools_list()).await;
        assert_ne!(filtered.body, sent, "{format}");
    }
    app.stop().await;
    backend.stop().await;
}

#[actix_web::test]
async fn with_the_filter_off_a_tools_list_answer_lists_every_tool() {
    let (app, backend) = spawn(false).await;
    let reader = token_with_scope(&app, "openid mcp:read").await;
    for format in ["json", "sse"] {
        let sent = direct(&backend, &list_path(format), &tools_list()).await;
        let answer = post(&app, &list_path(format), &reader, tools_list()).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body, sent, "{format}");
    }
    app.stop().await;
    backend.stop().await;
}

#[actix_web::test]
async fn with_the_filter_on_other_methods_are_answered_byte_for_byte() {
    let (app, backend) = spawn(true).await;
    let reader = token_with_scope(&app, "openid mcp:read").await;
    let requests = [
        json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "search"}}),
        // A notification gets no answer to filter.
        json!({"jsonrpc": "2.0", "method": "tools/list"}),
    ];
    for format in ["json", "sse"] {
        for request in &requests {
            let sent = direct(&backend, &list_path(format), request).await;
            let answer = post(&app, &list_path(format), &reader, request.clone()).await;
            assert_eq!(answer.body, sent, "{format} {request}");
        }
    }
    app.stop().await;
    backend.stop().await;
}

#[actix_web::test]
async fn a_tools_list_answer_the_proxy_cannot_read_is_a_502_not_the_full_list() {
    // A compressed answer: the proxy cannot read the tools in it.
    let backend = crate::backend_double::RawBackend::answering_with(&[("content-encoding", "gzip")]);
    let settings = [
        ("OAUTH_PROXY_MCP_UPSTREAM_URL", backend.url.as_str()),
        ("OAUTH_PROXY_SCOPES", "openid mcp:read mcp:write mcp:admin"),
        ("OAUTH_PROXY_MCP_TOOL_SCOPES", "delete_*=mcp:admin write_*=mcp:write"),
        ("OAUTH_PROXY_MCP_FILTER_TOOLS_LIST", "true"),
    ];
    let app = TestApp::spawn_with(&settings, MockUpstreamConfig::default()).await;
    let reader = token_with_scope(&app, "openid mcp:read").await;
    let answer = post(&app, "/mcp", &reader, tools_list()).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.body);
    let error = answer.json();
    assert_eq!(error["id"], 41);
    assert_eq!(error["error"]["code"], -32603);
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .contains("could not be filtered"));
    // Any other method is passed as the MCP server answered.
    let ping = post(
        &app,
        "/mcp",
        &reader,
        json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}),
    )
    .await;
    assert_eq!(ping.status, StatusCode::OK);
    app.stop().await;
}

/// A GET stream resumed with `Last-Event-ID` replays answers to requests
/// made before (here `tools/list`, id 41) whose ids the proxy never saw on
/// this request: every answer on it with a `tools` list is filtered. (The
/// server sends it with a `Content-Length`: the filtered stream is framed
/// anew.)
#[actix_web::test]
async fn a_tools_list_answer_replayed_on_a_resumed_get_stream_is_filtered_too() {
    let (app, backend) = spawn(true).await;
    let reader = token_with_scope(&app, "openid mcp:read").await;
    let resume = [("Accept", "text/event-stream"), ("Last-Event-ID", "1")];
    let answer = app
        .mcp_request(Method::GET, &list_path("sse"), Some(&reader), &resume, None)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let messages = sse_messages(&answer.body);
    assert_eq!(messages.len(), 2, "{}", answer.body);
    assert_eq!(names(&messages[0]), ["read_file", "search"]);
    assert_rest_kept(&messages[0]);
    assert_eq!(messages[1]["method"], "notifications/tools/list_changed");
    assert!(
        answer.body.starts_with("id: 2\nevent: message\ndata: "),
        "{}",
        answer.body
    );
    // Without the filter the replay lists every tool (what the test guards).
    let (unfiltered, unfiltered_backend) = spawn(false).await;
    let token = token_with_scope(&unfiltered, "openid mcp:read").await;
    let answer = unfiltered
        .mcp_request(Method::GET, &list_path("sse"), Some(&token), &resume, None)
        .await;
    assert_eq!(names(&sse_messages(&answer.body)[0]).len(), 4, "{}", answer.body);
    for (app, backend) in [(app, backend), (unfiltered, unfiltered_backend)] {
        app.stop().await;
        backend.stop().await;
    }
}
