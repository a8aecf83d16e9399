//! A real MCP server behind the proxy: the small server in `tests/mcp-server`,
//! built on the official MCP TypeScript SDK, spoken to through the proxy with
//! streamable HTTP (initialize, tools/list, tool calls, an SSE stream that
//! delivers events over time, the GET stream, DELETE of the session).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use awc::http::StatusCode;
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::helpers::TestApp;
use crate::mock_upstream::MockUpstreamConfig;

fn mcp_server_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mcp-server");
    assert!(
        dir.join("node_modules").is_dir(),
        "tests/mcp-server/node_modules is missing: run `npm ci` there (scripts/test.sh does)"
    );
    dir
}

/// `node <script>` in tests/mcp-server.
pub fn node_tool(script: &str) -> Command {
    let mut command = Command::new("node");
    command.current_dir(mcp_server_dir()).arg(script);
    command
}

/// The Node MCP server, killed (by its own PID) when dropped.
struct NodeServer {
    child: Child,
    url: String,
}

impl NodeServer {
    fn start() -> NodeServer {
        let mut child = node_tool("server.mjs")
            .args(["--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("LISTENING ")
            .unwrap_or_else(|| panic!("unexpected: {line}"));
        NodeServer {
            url: format!("http://127.0.0.1:{port}/mcp"),
            child,
        }
    }
}

impl Drop for NodeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The JSON-RPC messages in an SSE body.
fn sse_messages(body: &str) -> Vec<Value> {
    body.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str(data.trim()).ok())
        .collect()
}

struct Session<'a> {
    app: &'a TestApp,
    token: String,
    id: Option<String>,
}

impl Session<'_> {
    async fn post(&self, message: Value) -> (StatusCode, Option<String>, String) {
        let mut request = self
            .app
            .http()
            .post(format!("{}/mcp", self.app.address))
            .insert_header(("Authorization", format!("Bearer {}", self.token)))
            .insert_header(("Accept", "application/json, text/event-stream"))
            .insert_header(("MCP-Protocol-Version", "2025-06-18"));
        if let Some(id) = &self.id {
            request = request.insert_header(("Mcp-Session-Id", id.as_str()));
        }
        let mut response = request.send_json(&message).await.unwrap();
        let session = response
            .headers()
            .get("mcp-session-id")
            .map(|v| v.to_str().unwrap().to_string());
        let body = response.body().await.unwrap();
        (response.status(), session, String::from_utf8_lossy(&body).to_string())
    }

    async fn call(&self, id: u64, method: &str, params: Value) -> Value {
        let (status, _, body) = self
            .post(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        assert_eq!(status, StatusCode::OK, "{method}: {body}");
        sse_messages(&body)
            .into_iter()
            .find(|m| m["id"] == id)
            .unwrap_or_else(|| panic!("no answer in {body}"))
    }
}

#[actix_web::test]
async fn a_real_mcp_server_works_through_the_proxy() {
    let server = NodeServer::start();
    let app = TestApp::spawn_with(
        &[("OAUTH_PROXY_MCP_UPSTREAM_URL", &server.url)],
        MockUpstreamConfig::default(),
    )
    .await;
    let client = app.register_public().await;
    let token = app.full_flow(&client).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut session = Session {
        app: &app,
        token,
        id: None,
    };

    // initialize
    let (status, id, body) = session
        .post(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "proxy-test", "version": "1"}}}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(sse_messages(&body)[0]["result"]["protocolVersion"], "2025-06-18");
    session.id = Some(id.expect("Mcp-Session-Id comes back through the proxy"));
    let (status, _, _) = session
        .post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    // tools/list and calls
    let tools = session.call(2, "tools/list", json!({})).await;
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"echo") && names.contains(&"whoami") && names.contains(&"stream_events"),
        "{names:?}"
    );
    let echo = session
        .call(3, "tools/call", json!({"name": "echo", "arguments": {"text": "hi"}}))
        .await;
    assert_eq!(echo["result"]["content"][0]["text"], "echo: hi");
    let whoami = session
        .call(4, "tools/call", json!({"name": "whoami", "arguments": {}}))
        .await;
    let seen: Value = serde_json::from_str(whoami["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    let upstream_token = app.upstream.issued_access_tokens()[0].clone();
    assert_eq!(
        seen["authorization"],
        format!("Bearer {upstream_token}"),
        "the upstream token reached the MCP server"
    );
    assert_eq!(seen["cookie"], Value::Null);

    // A tool call whose SSE answer carries events spread over time.
    let started = Instant::now();
    let mut response = app
        .http()
        .post(format!("{}/mcp", app.address))
        .insert_header(("Authorization", format!("Bearer {}", session.token)))
        .insert_header(("Accept", "application/json, text/event-stream"))
        .insert_header(("Mcp-Session-Id", session.id.clone().unwrap()))
        .send_json(&json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
            "params": {"name": "stream_events", "arguments": {"count": 4, "interval_ms": 400}}}))
        .await
        .unwrap();
    assert_eq!(response.headers().get("content-type").unwrap(), "text/event-stream");
    let (mut text, mut arrivals) = (String::new(), Vec::new());
    while let Some(chunk) = response.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while sse_messages(&text).len() > arrivals.len() {
            arrivals.push(started.elapsed());
        }
    }
    let messages = sse_messages(&text);
    assert_eq!(messages.len(), 5, "4 events and the result: {text}");
    assert_eq!(messages[0]["params"]["data"], "event 1");
    assert_eq!(messages[4]["result"]["content"][0]["text"], "sent 4 events");
    assert!(
        arrivals[3] - arrivals[0] >= Duration::from_millis(1000),
        "events arrived as sent: {arrivals:?}"
    );

    // The standalone GET stream opens.
    let get = app
        .http()
        .get(format!("{}/mcp", app.address))
        .insert_header(("Authorization", format!("Bearer {}", session.token)))
        .insert_header(("Accept", "text/event-stream"))
        .insert_header(("Mcp-Session-Id", session.id.clone().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), StatusCode::OK);
    assert_eq!(get.headers().get("content-type").unwrap(), "text/event-stream");
    drop(get);

    // DELETE ends the session.
    let delete = app
        .http()
        .delete(format!("{}/mcp", app.address))
        .insert_header(("Authorization", format!("Bearer {}", session.token)))
        .insert_header(("Mcp-Session-Id", session.id.clone().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), StatusCode::OK);
    let (status, _, _) = session
        .post(json!({"jsonrpc": "2.0", "id": 6, "method": "tools/list"}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the session is gone");
    app.stop().await;
}
