//! Load benchmark: `cargo bench --bench load`.
//!
//! Starts a mock upstream OAuth provider and a fast mock MCP backend in this
//! process, the proxy (the release binary) as its own process pinned to one
//! core with `taskset`, obtains a token through a real authorization flow,
//! and drives HTTP load with `wrk` (Debian package `wrk`) on the other core.
//! Every run is bounded in time and concurrency.
//!
//! Options (environment): `BENCH_DURATION` seconds per measurement (default 10),
//! `BENCH_CONCURRENCY` (default 16).

#[path = "../tests/api/mock_upstream.rs"]
mod mock_upstream;

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use actix_web::{web, App, HttpResponse, HttpServer};
use mock_upstream::{MockUpstream, MockUpstreamConfig};
use url::Url;

const PROXY_BINARY: &str = env!("CARGO_BIN_EXE_mcp-oauth-proxy");

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A fast MCP backend: answers every JSON-RPC POST with a small result.
async fn fast_backend_answer(body: Bytes) -> HttpResponse {
    let id = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("id").cloned())
        .unwrap_or(serde_json::Value::Null);
    HttpResponse::Ok().json(serde_json::json!({"jsonrpc": "2.0", "id": id, "result": {}}))
}

fn start_fast_backend() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}/mcp", listener.local_addr().unwrap().port());
    let server = HttpServer::new(|| App::new().route("/mcp", web::post().to(fast_backend_answer)))
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
    actix_rt::spawn(server);
    url
}

/// The proxy process, killed by its PID when dropped.
struct ProxyProcess {
    child: Child,
    base: String,
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn has_command(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

async fn start_proxy(upstream: &MockUpstream, backend: &str, extra: &[(&str, &str)]) -> ProxyProcess {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut command = if has_command("taskset") {
        let mut c = Command::new("taskset");
        c.args(["-c", "0", PROXY_BINARY]);
        c
    } else {
        Command::new(PROXY_BINARY)
    };
    command
        .env_clear()
        .env("RUST_LOG", "error")
        .env("OAUTH_PROXY_BIND", format!("127.0.0.1:{port}"))
        .env("OAUTH_PROXY_BASE_URL", &base)
        .env("OAUTH_PROXY_WORKERS", "1")
        .env(
            "OAUTH_PROXY_UPSTREAM_AUTHORIZATION_ENDPOINT",
            upstream.authorization_endpoint(),
        )
        .env("OAUTH_PROXY_UPSTREAM_TOKEN_ENDPOINT", upstream.token_endpoint())
        .env("OAUTH_PROXY_UPSTREAM_CLIENT_ID", "upstream-client")
        .env(
            "OAUTH_PROXY_UPSTREAM_CLIENT_SECRET",
            MockUpstreamConfig::default().client_secret,
        )
        .env("OAUTH_PROXY_CONSENT_REQUIRED", "false")
        .env("OAUTH_PROXY_REGISTRATION_RATE_LIMIT", "0")
        .env("OAUTH_PROXY_MAX_CLIENTS", "1000000")
        .env("OAUTH_PROXY_MCP_UPSTREAM_URL", backend)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in extra {
        command.env(k, v);
    }
    let child = command.spawn().expect("the proxy binary starts");
    let proxy = ProxyProcess { child, base };
    let client = awc::Client::default();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get(format!("{}/healthz", proxy.base)).send().await.is_err() {
        assert!(Instant::now() < deadline, "the proxy did not come up");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    proxy
}

/// Register → authorize → upstream → callback → token, consent off: an
/// access token for the benchmark.
async fn obtain_access_token(proxy: &ProxyProcess) -> String {
    let http = awc::Client::builder().disable_redirects().finish();
    let base = &proxy.base;
    let redirect = "http://127.0.0.1:9/callback";
    let mut registered = http
        .post(format!("{base}/register"))
        .send_json(&serde_json::json!({"redirect_uris": [redirect], "token_endpoint_auth_method": "none"}))
        .await
        .unwrap();
    let client: serde_json::Value = registered.json().await.unwrap();
    let client_id = client["client_id"].as_str().unwrap().to_string();
    let verifier = "bench-verifier-0123456789-0123456789-0123456789";
    let challenge = {
        use base64::Engine;
        use sha2::Digest;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()))
    };
    let authorize = format!(
        "{base}/authorize?response_type=code&client_id={client_id}&redirect_uri={redirect}&state=s&code_challenge={challenge}&code_challenge_method=S256"
    );
    let response = http.get(authorize).send().await.unwrap();
    let cookie = response
        .headers()
        .get_all("set-cookie")
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("; ");
    let to_upstream = response
        .headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let upstream_answer = http.get(to_upstream).send().await.unwrap();
    let callback = upstream_answer
        .headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let back = http
        .get(callback)
        .insert_header(("Cookie", cookie))
        .send()
        .await
        .unwrap();
    let location = Url::parse(back.headers().get("location").unwrap().to_str().unwrap()).unwrap();
    let code = location.query_pairs().find(|(k, _)| k == "code").unwrap().1.to_string();
    let mut token = http
        .post(format!("{base}/token"))
        .send_form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect),
            ("code_verifier", verifier),
            ("client_id", &client_id),
        ])
        .await
        .unwrap();
    let tokens: serde_json::Value = token.json().await.unwrap();
    tokens["access_token"].as_str().expect("an access token").to_string()
}

/// One wrk measurement.
struct Measurement {
    requests_per_sec: f64,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    non_2xx: u64,
}

fn wrk_script(method: &str, body: &str, headers: &HashMap<&str, String>) -> tempfile_path::TempPath {
    let mut script = format!("wrk.method = \"{method}\"\nwrk.body = [[{body}]]\n");
    for (name, value) in headers {
        script.push_str(&format!("wrk.headers[\"{name}\"] = \"{value}\"\n"));
    }
    // Percentiles and the error count, machine-readable.
    script.push_str(
        "done = function(summary, latency, requests)\n  io.write(string.format(\"WRK p50=%f p99=%f non2xx=%d\\n\", latency:percentile(50)/1000, latency:percentile(99)/1000, summary.errors.status))\nend\n",
    );
    tempfile_path::write(&script)
}

fn run_wrk(url: &str, concurrency: u64, seconds: u64, script: &std::path::Path) -> Measurement {
    let mut command = if has_command("taskset") {
        let mut c = Command::new("taskset");
        c.args(["-c", "1", "wrk"]);
        c
    } else {
        Command::new("wrk")
    };
    let output = command
        .args([
            "-t1",
            &format!("-c{concurrency}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .expect("wrk runs (apt-get install wrk)");
    let text = String::from_utf8_lossy(&output.stdout);
    let requests_per_sec = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("wrk output without Requests/sec: {text}"));
    let summary = text.lines().find_map(|l| l.strip_prefix("WRK ")).unwrap_or_default();
    let field = |name: &str| -> f64 {
        summary
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    Measurement {
        requests_per_sec,
        latency_p50_ms: field("p50"),
        latency_p99_ms: field("p99"),
        non_2xx: field("non2xx") as u64,
    }
}

/// Temporary files for wrk scripts, removed on drop.
mod tempfile_path {
    use std::path::{Path, PathBuf};

    pub struct TempPath(PathBuf);

    impl std::ops::Deref for TempPath {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    pub fn write(content: &str) -> TempPath {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "mcp-oauth-proxy-bench-{}-{}.lua",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::write(&path, content).unwrap();
        TempPath(path)
    }
}

fn print_row(name: &str, m: &Measurement, ratio: Option<f64>) {
    let ratio = ratio.map(|r| format!("{:.0}%", r * 100.0)).unwrap_or_default();
    println!(
        "| {name:<44} | {:>10.0} | {:>8.2} | {:>8.2} | {:>6} | {ratio:>6} |",
        m.requests_per_sec, m.latency_p50_ms, m.latency_p99_ms, m.non_2xx
    );
}

#[actix_rt::main]
async fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` does not: skip then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("load benchmark: run it with `cargo bench --bench load`");
        return;
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    if !has_command("wrk") {
        eprintln!("the load benchmark needs wrk: apt-get install -y wrk");
        std::process::exit(2);
    }
    let seconds = env_number("BENCH_DURATION", 10);
    let concurrency = env_number("BENCH_CONCURRENCY", 16);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);

    let upstream = MockUpstream::start(MockUpstreamConfig::default()).await;
    let backend = start_fast_backend();
    let proxy = start_proxy(&upstream, &backend, &[]).await;
    let token = obtain_access_token(&proxy).await;

    println!();
    println!(
        "mcp-oauth-proxy load benchmark: {cores} cores, proxy pinned to core 0 with 1 worker, wrk on core 1, c={concurrency}, {seconds}s each"
    );
    println!(
        "| {:<44} | {:>10} | {:>8} | {:>8} | {:>6} | {:>6} |",
        "scenario", "req/s", "p50 ms", "p99 ms", "non2xx", "ratio"
    );
    println!(
        "|{:-<46}|{:-<12}|{:-<10}|{:-<10}|{:-<8}|{:-<8}|",
        "", "", "", "", "", ""
    );
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let mut headers = HashMap::from([("Content-Type", "application/json".to_string())]);
    let direct_script = wrk_script("POST", body, &headers);
    let direct = run_wrk(&backend, concurrency, seconds, &direct_script);
    print_row("MCP POST, backend called directly", &direct, None);
    headers.insert("Authorization", format!("Bearer {token}"));
    let proxy_script = wrk_script("POST", body, &headers);
    let through = run_wrk(&format!("{}/mcp", proxy.base), concurrency, seconds, &proxy_script);
    print_row(
        "MCP POST through the proxy (token swap)",
        &through,
        Some(through.requests_per_sec / direct.requests_per_sec),
    );
    let _ = std::io::stdout().flush();
    drop(proxy);
    upstream.stop().await;
}
