//! The 2026-07-28 request metadata headers at the gateway: `Mcp-Method`,
//! `Mcp-Name` (plain or in the `=?base64?…?=` form) and
//! `MCP-Protocol-Version` must agree with the JSON-RPC body, else 400 with
//! the `HeaderMismatch` error (-32020) and nothing is forwarded; requests of
//! earlier protocol versions, without the headers, pass.

use awc::http::{Method, StatusCode};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use crate::backend_double::BackendDouble;
use crate::helpers::{Answer, TestApp};
use crate::mock_upstream::MockUpstreamConfig;

const MODERN: &str = "2026-07-28";

struct Setup {
    app: TestApp,
    backend: BackendDouble,
    token: String,
}

impl Setup {
    async fn start() -> Setup {
        let backend = BackendDouble::start().await;
        let app = TestApp::spawn_with(
            &[("OAUTH_PROXY_MCP_UPSTREAM_URL", backend.url.as_str())],
            MockUpstreamConfig::default(),
        )
        .await;
        let client = app.register_public().await;
        let (token, _) = app.full_flow_tokens(&client).await;
        Setup { app, backend, token }
    }

    async fn post(&self, headers: &[(&str, &str)], body: Value) -> Answer {
        self.app
            .mcp_request(Method::POST, "/mcp", Some(&self.token), headers, Some(body))
            .await
    }

    fn forwarded(&self) -> usize {
        self.backend.recorded.authorization.lock().unwrap().len()
    }

    async fn stop(self) {
        self.app.stop().await;
        self.backend.stop().await;
    }
}

/// A 2026-07-28 request: the protocol version in `params._meta`.
fn modern(id: i64, method: &str, mut params: Value) -> Value {
    params["_meta"] = json!({"io.modelcontextprotocol/protocolVersion": MODERN});
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

fn assert_mismatch(answer: &Answer, id: Value, what: &str) {
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{what}: {}", answer.body);
    let body = answer.json();
    assert_eq!(body["jsonrpc"], "2.0", "{what}");
    assert_eq!(body["error"]["code"], -32020, "{what}: {body}");
    assert_eq!(body["id"], id, "{what}");
}

fn encoded(name: &str) -> String {
    format!("=?base64?{}?=", STANDARD.encode(name))
}

#[actix_web::test]
async fn an_mcp_method_header_that_disagrees_with_the_body_is_refused_before_forwarding() {
    let setup = Setup::start().await;
    let body = modern(3, "tools/list", json!({}));
    let answer = setup
        .post(
            &[("MCP-Protocol-Version", MODERN), ("Mcp-Method", "ping")],
            body.clone(),
        )
        .await;
    assert_mismatch(&answer, json!(3), "method");
    assert!(answer.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Mcp-Method"));
    // Header values are case-sensitive.
    let answer = setup
        .post(
            &[("MCP-Protocol-Version", MODERN), ("Mcp-Method", "Tools/List")],
            body.clone(),
        )
        .await;
    assert_mismatch(&answer, json!(3), "case");
    assert_eq!(setup.forwarded(), 0);
    let answer = setup
        .post(&[("MCP-Protocol-Version", MODERN), ("Mcp-Method", "tools/list")], body)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(setup.forwarded(), 1);
    setup.stop().await;
}

#[actix_web::test]
async fn an_mcp_name_header_that_disagrees_with_the_tool_prompt_or_resource_is_refused() {
    let setup = Setup::start().await;
    for (method, params, header) in [
        ("tools/call", json!({"name": "delete_repo", "arguments": {}}), "search"),
        ("prompts/get", json!({"name": "summarize"}), "translate"),
        (
            "resources/read",
            json!({"uri": "file:///secret.txt"}),
            "file:///public.txt",
        ),
        // A resource is named by its uri, not by a `name` beside it.
        (
            "resources/read",
            json!({"uri": "file:///secret.txt", "name": "file:///public.txt"}),
            "file:///public.txt",
        ),
    ] {
        let answer = setup
            .post(
                &[
                    ("MCP-Protocol-Version", MODERN),
                    ("Mcp-Method", method),
                    ("Mcp-Name", header),
                ],
                modern(5, method, params),
            )
            .await;
        assert_mismatch(&answer, json!(5), method);
    }
    // The name is required for these methods.
    let answer = setup
        .post(
            &[("MCP-Protocol-Version", MODERN), ("Mcp-Method", "tools/call")],
            modern(6, "tools/call", json!({"name": "search"})),
        )
        .await;
    assert_mismatch(&answer, json!(6), "no Mcp-Name");
    assert_eq!(setup.forwarded(), 0);
    setup.stop().await;
}

#[actix_web::test]
async fn an_encoded_non_ascii_name_is_decoded_before_it_is_compared() {
    let setup = Setup::start().await;
    let body = || modern(8, "tools/call", json!({"name": "météo", "arguments": {}}));
    let headers = |name: &str| {
        vec![
            ("MCP-Protocol-Version".to_string(), MODERN.to_string()),
            ("Mcp-Method".to_string(), "tools/call".to_string()),
            ("Mcp-Name".to_string(), name.to_string()),
        ]
    };
    for (what, header, status) in [
        ("the same name, encoded", encoded("météo"), StatusCode::OK),
        ("another name, encoded", encoded("meteo"), StatusCode::BAD_REQUEST),
        (
            "the encoded form, not decoded",
            "meteo".to_string(),
            StatusCode::BAD_REQUEST,
        ),
        ("not base64", "=?base64?***?=".to_string(), StatusCode::BAD_REQUEST),
    ] {
        let owned = headers(&header);
        let refs: Vec<(&str, &str)> = owned.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let answer = setup.post(&refs, body()).await;
        assert_eq!(answer.status, status, "{what}: {}", answer.body);
        if status == StatusCode::BAD_REQUEST {
            assert_mismatch(&answer, json!(8), what);
        }
    }
    // A plain name that looks like the encoded form must itself be encoded.
    let literal = "=?base64?bGl0ZXJhbA==?=";
    let answer = setup
        .post(
            &[
                ("MCP-Protocol-Version", MODERN),
                ("Mcp-Method", "tools/call"),
                ("Mcp-Name", literal),
            ],
            modern(9, "tools/call", json!({"name": literal})),
        )
        .await;
    assert_mismatch(&answer, json!(9), "the sentinel, not encoded");
    assert_eq!(setup.forwarded(), 1);
    setup.stop().await;
}

#[actix_web::test]
async fn a_protocol_version_header_that_disagrees_with_the_body_is_refused() {
    let setup = Setup::start().await;
    let body = modern(10, "tools/list", json!({}));
    let answer = setup
        .post(
            &[("MCP-Protocol-Version", "2025-11-25"), ("Mcp-Method", "tools/list")],
            body.clone(),
        )
        .await;
    assert_mismatch(&answer, json!(10), "version");
    // The body names the version; the header is required with it.
    let answer = setup.post(&[("Mcp-Method", "tools/list")], body).await;
    assert_mismatch(&answer, json!(10), "no version header");
    // A 2026-07-28 request must say its method in the header.
    let answer = setup
        .post(&[("MCP-Protocol-Version", MODERN)], modern(11, "tools/list", json!({})))
        .await;
    assert_mismatch(&answer, json!(11), "no Mcp-Method");
    assert_eq!(setup.forwarded(), 0);
    setup.stop().await;
}

#[actix_web::test]
async fn a_batch_cannot_carry_the_headers_of_a_single_request() {
    let setup = Setup::start().await;
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "search"}},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "delete_repo"}},
    ]);
    let answer = setup
        .post(&[("Mcp-Method", "tools/call"), ("Mcp-Name", "search")], batch.clone())
        .await;
    assert_mismatch(&answer, Value::Null, "batch");
    assert_eq!(setup.forwarded(), 0);
    // Without them (an earlier protocol version), a batch passes.
    let answer = setup.post(&[], batch).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(setup.forwarded(), 1);
    setup.stop().await;
}

#[actix_web::test]
async fn matching_headers_and_requests_without_them_pass_with_every_mcp_param_header() {
    let setup = Setup::start().await;
    let answer = setup
        .post(
            &[
                ("MCP-Protocol-Version", MODERN),
                ("Mcp-Method", "tools/call"),
                ("Mcp-Name", "execute_sql"),
                ("Mcp-Param-Region", "us-west1"),
            ],
            modern(
                12,
                "tools/call",
                json!({"name": "execute_sql", "arguments": {"region": "us-west1"}}),
            ),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let seen = setup.backend.recorded.other_headers.lock().unwrap().clone();
    for name in ["mcp-method", "mcp-name", "mcp-param-region", "mcp-protocol-version"] {
        assert!(seen[0].iter().any(|h| h == name), "{name} forwarded: {:?}", seen[0]);
    }
    // Earlier protocol versions: no Mcp-Method, no _meta version.
    let legacy = json!({"jsonrpc": "2.0", "id": 13, "method": "tools/call", "params": {"name": "x"}});
    let answer = setup
        .post(&[("MCP-Protocol-Version", "2025-06-18")], legacy.clone())
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let answer = setup.post(&[], legacy).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    // ...but one that sends Mcp-Method must send the right one.
    let answer = setup
        .post(
            &[("MCP-Protocol-Version", "2025-06-18"), ("Mcp-Method", "ping")],
            json!({"jsonrpc": "2.0", "id": 14, "method": "tools/list"}),
        )
        .await;
    assert_mismatch(&answer, json!(14), "a legacy request with a wrong Mcp-Method");
    assert_eq!(setup.forwarded(), 3);
    setup.stop().await;
}
