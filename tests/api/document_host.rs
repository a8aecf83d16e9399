//! A website serving client metadata documents (and key sets) over https on
//! 127.0.0.1, with a certificate from a CA made for the test: the proxy
//! trusts it through `OAUTH_PROXY_EXTRA_CA_FILE` and may fetch from loopback
//! only with `OAUTH_PROXY_CIMD_ALLOW_PRIVATE_NETWORKS=true`.

use std::collections::HashMap;
use std::net::TcpListener;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use awc::http::StatusCode;
use futures_util::StreamExt;
use mcp_oauth_proxy::Config;
use serde_json::{json, Value};

use crate::helpers::{TestApp, TestClient};
use crate::mock_upstream::{MockUpstream, MockUpstreamConfig};
use crate::tls::TestPki;

/// What one path answers.
#[derive(Clone)]
pub struct Served {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
    /// Wait this long before answering (a slow server).
    pub delay: Option<Duration>,
}

impl Served {
    pub fn json(body: &Value) -> Served {
        Served {
            status: 200,
            content_type: "application/json",
            body: body.to_string().into_bytes(),
            headers: Vec::new(),
            delay: None,
        }
    }
}

/// A body sent in chunks with no `Content-Length` (chunked encoding).
#[derive(Clone)]
struct Streamed {
    chunks: Vec<Vec<u8>>,
    /// Wait this long before each chunk (a server that trickles).
    pause: Duration,
}

#[derive(Default)]
struct Site {
    pages: HashMap<String, Served>,
    streams: HashMap<String, Streamed>,
    hits: HashMap<String, usize>,
}

/// The https website (see the module docs).
pub struct DocumentHost {
    /// `https://127.0.0.1:PORT`
    pub base: String,
    pub pki: TestPki,
    site: Arc<Mutex<Site>>,
    handle: ServerHandle,
}

impl DocumentHost {
    pub async fn start() -> DocumentHost {
        let pki = TestPki::new("documents");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("https://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let site = Arc::new(Mutex::new(Site::default()));
        let shared = web::Data::from(site.clone());
        let server = HttpServer::new(move || App::new().app_data(shared.clone()).default_service(web::to(answer)))
            .workers(1)
            .disable_signals()
            .shutdown_timeout(1)
            .listen_rustls_0_23(listener, pki.server_config())
            .unwrap()
            .run();
        let handle = server.handle();
        actix_rt::spawn(server);
        DocumentHost {
            base,
            pki,
            site,
            handle,
        }
    }

    /// The absolute URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Serves `served` at `path` from now on.
    pub fn serve(&self, path: &str, served: Served) {
        self.site.lock().unwrap().pages.insert(path.to_string(), served);
    }

    /// Serves `body` as JSON at `path` in `chunks` equal chunks with no
    /// `Content-Length`, pausing `pause` before each.
    pub fn serve_chunked(&self, path: &str, body: &[u8], chunks: usize, pause: Duration) {
        let size = body.len().div_ceil(chunks.max(1)).max(1);
        let streamed = Streamed {
            chunks: body.chunks(size).map(<[u8]>::to_vec).collect(),
            pause,
        };
        self.site.lock().unwrap().streams.insert(path.to_string(), streamed);
    }

    /// Serves `document` as JSON at `path`.
    pub fn serve_json(&self, path: &str, document: &Value) {
        self.serve(path, Served::json(document));
    }

    /// What `path` serves now.
    pub fn site_page(&self, path: &str) -> Served {
        self.site.lock().unwrap().pages.get(path).cloned().unwrap()
    }

    /// How many requests `path` received.
    pub fn hits(&self, path: &str) -> usize {
        self.site.lock().unwrap().hits.get(path).copied().unwrap_or(0)
    }

    /// Serves a valid public client's document at `path` (redirecting to
    /// `redirect_uri`) and returns that client.
    pub fn public_client(&self, path: &str, name: &str, redirect_uri: &str) -> TestClient {
        let client_id = self.url(path);
        self.serve_json(
            path,
            &json!({
                "client_id": client_id,
                "client_name": name,
                "redirect_uris": [redirect_uri],
                "token_endpoint_auth_method": "none",
            }),
        );
        TestClient {
            client_id,
            client_secret: None,
            redirect_uri: redirect_uri.to_string(),
        }
    }

    /// The settings a proxy needs to fetch from this host: its CA trusted,
    /// loopback allowed.
    pub fn proxy_settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("OAUTH_PROXY_EXTRA_CA_FILE", self.pki.ca_file()),
            ("OAUTH_PROXY_CIMD_ALLOW_PRIVATE_NETWORKS", "true".to_string()),
        ]
    }

    /// A proxy (with the default mock upstream) that fetches from this host,
    /// plus `extra` settings.
    pub async fn proxy(&self, extra: &[(&str, &str)]) -> TestApp {
        let owned = self.proxy_settings();
        let mut settings: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
        settings.extend_from_slice(extra);
        TestApp::spawn_with(&settings, MockUpstreamConfig::default()).await
    }

    /// [`DocumentHost::proxy`] with a last change to the parsed
    /// configuration (a shorter fetch timeout).
    pub async fn proxy_adjusted(&self, extra: &[(&str, &str)], adjust: impl FnOnce(&mut Config)) -> TestApp {
        let owned = self.proxy_settings();
        let mut settings: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
        settings.extend_from_slice(extra);
        let upstream = Rc::new(MockUpstream::start(MockUpstreamConfig::default()).await);
        TestApp::spawn_adjusted(&settings, upstream, adjust).await
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

async fn answer(request: HttpRequest, site: web::Data<Mutex<Site>>) -> HttpResponse {
    let path = request.uri().path().to_string();
    let (served, streamed) = {
        let mut site = site.lock().unwrap();
        *site.hits.entry(path.clone()).or_default() += 1;
        (site.pages.get(&path).cloned(), site.streams.get(&path).cloned())
    };
    if let Some(streamed) = streamed {
        let chunks = futures_util::stream::iter(streamed.chunks).then(move |chunk| async move {
            actix_rt::time::sleep(streamed.pause).await;
            Ok::<_, actix_web::Error>(web::Bytes::from(chunk))
        });
        return HttpResponse::Ok().content_type("application/json").streaming(chunks);
    }
    let Some(served) = served else {
        return HttpResponse::NotFound().finish();
    };
    if let Some(delay) = served.delay {
        actix_rt::time::sleep(delay).await;
    }
    let mut response = HttpResponse::build(StatusCode::from_u16(served.status).unwrap());
    response.content_type(served.content_type);
    for (name, value) in &served.headers {
        response.insert_header((*name, value.as_str()));
    }
    response.body(served.body)
}
