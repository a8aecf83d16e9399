//! A stand-in MCP server that records what reaches it: the `Authorization`
//! and `Cookie` headers of every request, and whether a client that left
//! an SSE stream made the proxy drop the backend connection.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::web::Bytes;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

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

/// A stand-in MCP server on a bare socket that records the header names of
/// every request in the order they arrived, which an HTTP library's header
/// map would not keep. Answers every request with a small JSON-RPC result.
pub struct HeaderOrderBackend {
    pub url: String,
    pub orders: Arc<Mutex<Vec<Vec<String>>>>,
}

impl HeaderOrderBackend {
    pub fn start() -> HeaderOrderBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        let orders = Arc::new(Mutex::new(Vec::new()));
        let recorded = orders.clone();
        // Lives as long as the test process; each connection gets a thread.
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let recorded = recorded.clone();
                std::thread::spawn(move || serve_recording_order(stream, &recorded));
            }
        });
        HeaderOrderBackend { url, orders }
    }
}

/// Keep-alive HTTP/1.1 requests with `Content-Length` bodies, until the
/// client closes the connection.
fn serve_recording_order(stream: std::net::TcpStream, recorded: &Mutex<Vec<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let (mut names, mut length) = (Vec::new(), 0);
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let Some((name, value)) = line.trim_end().split_once(':') else {
                break;
            };
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap();
            }
            names.push(name.to_ascii_lowercase());
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        recorded.lock().unwrap().push(names);
        let answer = r#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            answer.len()
        );
        if writer.write_all(format!("{head}{answer}").as_bytes()).is_err() {
            return;
        }
    }
}
