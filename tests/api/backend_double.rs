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
