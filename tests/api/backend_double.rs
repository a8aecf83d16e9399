//! Stand-in MCP servers that record what reaches them: the `Authorization`
//! and `Cookie` headers of every request, whether a client that left an SSE
//! stream made the proxy drop the backend connection ([`BackendDouble`]),
//! and each request's raw request line and header lines ([`RawBackend`]).
//! Below `/mcp/list/json` and `/mcp/list/sse` it answers `tools/list` with
//! the tools named in the `tools` query parameter ([`tools_list_answer`]).

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::web::Bytes;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use futures_util::StreamExt;

#[derive(Default)]
pub struct Recorded {
    pub authorization: Mutex<Vec<Option<String>>>,
    pub cookies: Mutex<Vec<Option<String>>>,
    pub other_headers: Mutex<Vec<Vec<String>>>,
    /// SSE streams whose client went away (the stream was dropped).
    pub streams_dropped: AtomicUsize,
}

pub struct BackendDouble {
    pub url: String,
    pub recorded: Arc<Recorded>,
    handle: ServerHandle,
}

/// Counts a dropped stream.
struct DropGuard(Arc<Recorded>);
impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.streams_dropped.fetch_add(1, Ordering::SeqCst);
    }
}

async fn record(req: &HttpRequest, recorded: &Recorded) {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .map(|v| v.to_str().unwrap_or_default().to_string())
    };
    recorded.authorization.lock().unwrap().push(header("authorization"));
    recorded.cookies.lock().unwrap().push(header("cookie"));
    recorded
        .other_headers
        .lock()
        .unwrap()
        .push(req.headers().keys().map(|k| k.as_str().to_string()).collect());
}

async fn json_rpc(req: HttpRequest, body: Bytes, recorded: web::Data<Recorded>) -> HttpResponse {
    record(&req, &recorded).await;
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    HttpResponse::Ok()
        .insert_header(("Mcp-Session-Id", "session-1"))
        .insert_header(("Set-Cookie", "backend=1"))
        .json(serde_json::json!({"jsonrpc": "2.0", "id": request["id"], "result": {"echo": request["method"]}}))
}

/// An SSE stream of `count` events, `interval` apart, then the end.
async fn events(req: HttpRequest, recorded: web::Data<Recorded>) -> HttpResponse {
    record(&req, &recorded).await;
    let count: usize = req.match_info().get("count").and_then(|c| c.parse().ok()).unwrap_or(4);
    let guard = DropGuard(recorded.clone().into_inner());
    let stream = futures_util::stream::unfold((0usize, guard), move |(i, guard)| async move {
        if i >= count {
            return None;
        }
        if i > 0 {
            actix_rt::time::sleep(Duration::from_millis(300)).await;
        }
        let event = Bytes::from(format!("event: message\ndata: {{\"n\":{i}}}\n\n"));
        Some((Ok::<_, std::io::Error>(event), (i + 1, guard)))
    });
    HttpResponse::Ok().content_type("text/event-stream").streaming(stream)
}

/// The answer to a `tools/list` request `id` listing `names` (comma
/// separated), with a pagination cursor, `_meta` and a field MCP does not
/// define, all of which a filter must keep.
pub fn tools_list_answer(id: &serde_json::Value, names: &str) -> serde_json::Value {
    let tools: Vec<serde_json::Value> = names
        .split(',')
        .filter(|n| !n.is_empty())
        .map(|name| serde_json::json!({"name": name, "description": format!("the {name} tool"), "inputSchema": {"type": "object"}}))
        .collect();
    serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "result": {"tools": tools, "nextCursor": "page-2", "_meta": {"served-by": "double"}, "x-extra": [1, 2]},
    })
}

/// The tools named by the `tools` query parameter.
fn listed_tools(req: &HttpRequest) -> String {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "tools")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// What `/mcp` answers to anything but `tools/list`: the method echoed.
fn echo(request: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({"jsonrpc": "2.0", "id": request["id"], "result": {"echo": request["method"]}})
}

/// `tools/list` answered as JSON with [`tools_list_answer`] (pretty
/// printed, as some servers do); any other request echoed.
async fn list_json(req: HttpRequest, body: Bytes, recorded: web::Data<Recorded>) -> HttpResponse {
    record(&req, &recorded).await;
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let answer = if request["method"] == "tools/list" {
        tools_list_answer(&request["id"], &listed_tools(&req))
    } else {
        echo(&request)
    };
    HttpResponse::Ok()
        .content_type("application/json")
        .body(serde_json::to_string_pretty(&answer).unwrap())
}

/// `tools/list` answered as an SSE stream: a progress notification, then the
/// answer with CRLF line ends, its JSON over two `data` lines, sent in
/// chunks cut inside a line end and inside the JSON; any other request
/// answered with one event echoing it.
async fn list_sse(req: HttpRequest, body: Bytes, recorded: web::Data<Recorded>) -> HttpResponse {
    record(&req, &recorded).await;
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let stream = if request["method"] == "tools/list" {
        let answer = tools_list_answer(&request["id"], &listed_tools(&req)).to_string();
        let (head, tail) = answer.split_at(answer.find("\"result\"").unwrap());
        let progress =
            r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}"#;
        let text = format!(
            "event: message\r\ndata: {progress}\r\n\r\nid: 1\r\nevent: message\r\ndata: {head}\r\ndata: {tail}\r\n\r\n"
        );
        let cuts = [
            text.find("\r\n\r\n").unwrap() + 1,
            text.find("tools").unwrap() + 3,
            text.len(),
        ];
        let mut from = 0;
        cuts.iter()
            .map(|&cut| {
                let chunk = Bytes::from(text[from..cut].to_string());
                from = cut;
                chunk
            })
            .collect::<Vec<_>>()
    } else {
        vec![Bytes::from(format!("event: message\ndata: {}\n\n", echo(&request)))]
    };
    let stream = futures_util::stream::iter(stream).then(|chunk| async move {
        actix_rt::time::sleep(Duration::from_millis(20)).await;
        Ok::<_, std::io::Error>(chunk)
    });
    HttpResponse::Ok().content_type("text/event-stream").streaming(stream)
}

/// A GET stream resumed with `Last-Event-ID`: the server replays what it
/// sent after that event on the stream of an earlier `tools/list` request
/// (id 41: the answer), then a change notification; a GET without the
/// header gets the notification only.
async fn list_resumed(req: HttpRequest, recorded: web::Data<Recorded>) -> HttpResponse {
    record(&req, &recorded).await;
    let notification = r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#;
    let mut text = String::new();
    if req.headers().contains_key("last-event-id") {
        let answer = tools_list_answer(&serde_json::json!(41), &listed_tools(&req));
        text.push_str(&format!("id: 2\nevent: message\ndata: {answer}\n\n"));
    }
    text.push_str(&format!("id: 3\nevent: message\ndata: {notification}\n\n"));
    HttpResponse::Ok().content_type("text/event-stream").body(text)
}

async fn slow(req: HttpRequest, recorded: web::Data<Recorded>) -> HttpResponse {
    record(&req, &recorded).await;
    actix_rt::time::sleep(Duration::from_secs(5)).await;
    HttpResponse::Ok().finish()
}

async fn refuse(req: HttpRequest, recorded: web::Data<Recorded>) -> HttpResponse {
    record(&req, &recorded).await;
    HttpResponse::Unauthorized()
        .insert_header(("WWW-Authenticate", "Bearer realm=\"backend\""))
        .finish()
}

impl BackendDouble {
    pub async fn start() -> BackendDouble {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://127.0.0.1:{}/mcp", listener.local_addr().unwrap().port());
        let recorded = Arc::new(Recorded::default());
        let data = web::Data::from(recorded.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/mcp/events/{count}", web::get().to(events))
                .route("/mcp/slow", web::to(slow))
                .route("/mcp/refuse", web::to(refuse))
                .route("/mcp/list/json", web::post().to(list_json))
                .route("/mcp/list/sse", web::post().to(list_sse))
                .route("/mcp/list/sse", web::get().to(list_resumed))
                .route("/mcp", web::to(json_rpc))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_rt::spawn(server);
        BackendDouble { url, recorded, handle }
    }

    pub fn last_authorization(&self) -> Option<String> {
        self.recorded.authorization.lock().unwrap().last().cloned().flatten()
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

/// One request as it reached [`RawBackend`], before any HTTP library
/// parsed it.
#[derive(Debug, Clone)]
pub struct RawRequest {
    /// The request line, e.g. `POST /mcp/sub?x=1 HTTP/1.1`.
    pub line: String,
    /// Every header line in arrival order, name lowercased, value as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawRequest {
    /// Every value of a header (lowercase name), in arrival order.
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A stand-in MCP server on a bare socket that records each request's raw
/// request line, header lines (in the order they arrived, which an HTTP
/// library's header map would not keep) and body. Answers every request
/// with a small JSON-RPC result and the extra response headers it was
/// started with.
pub struct RawBackend {
    pub url: String,
    pub requests: Arc<Mutex<Vec<RawRequest>>>,
}

impl RawBackend {
    pub fn start() -> RawBackend {
        RawBackend::answering_with(&[])
    }

    /// Adds `extra` (name, value) lines to every response head.
    pub fn answering_with(extra: &[(&str, &str)]) -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        let extra: String = extra.iter().map(|(n, v)| format!("{n}: {v}\r\n")).collect();
        // Lives as long as the test process; each connection gets a thread.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let recorded = recorded.clone();
                let extra = extra.clone();
                std::thread::spawn(move || serve_raw(stream, &recorded, &extra));
            }
        });
        RawBackend { url, requests }
    }

    /// The header names of each request, in arrival order.
    pub fn header_orders(&self) -> Vec<Vec<String>> {
        let requests = self.requests.lock().unwrap();
        requests
            .iter()
            .map(|r| r.headers.iter().map(|(n, _)| n.clone()).collect())
            .collect()
    }

    pub fn recorded(&self) -> Vec<RawRequest> {
        self.requests.lock().unwrap().clone()
    }
}

/// A line up to its `\n`, bytes that are not UTF-8 replaced.
fn read_raw_line(reader: &mut impl std::io::BufRead) -> Option<String> {
    let mut line = Vec::new();
    match reader.read_until(b'\n', &mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(
            String::from_utf8_lossy(&line)
                .trim_end_matches(['\r', '\n'])
                .to_string(),
        ),
    }
}

/// Keep-alive HTTP/1.1 requests with `Content-Length` bodies, until the
/// client closes the connection.
fn serve_raw(stream: std::net::TcpStream, recorded: &Mutex<Vec<RawRequest>>, extra: &str) {
    use std::io::{BufReader, Read, Write};
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let Some(line) = read_raw_line(&mut reader) else {
            return;
        };
        let (mut headers, mut length) = (Vec::new(), 0);
        loop {
            let Some(header) = read_raw_line(&mut reader) else {
                return;
            };
            let Some((name, value)) = header.split_once(':') else {
                break;
            };
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
            headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        recorded.lock().unwrap().push(RawRequest { line, headers, body });
        let answer = r#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n",
            answer.len()
        );
        if writer.write_all(format!("{head}{answer}").as_bytes()).is_err() {
            return;
        }
    }
}
