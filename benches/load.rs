//! Load benchmark: `cargo bench --bench load`.
//!
//! Runs the proxy binary as its own process pinned to core 0 with one worker
//! (`taskset`), and this process (load generator, mock upstream OAuth
//! provider, fast mock MCP backend) pinned to core 1; the first row's bare
//! handler runs in a process of its own on core 0. Multi-step scenarios
//! (full flows, refresh chains) use the built-in async load generator;
//! single-request scenarios use `wrk` (Debian package `wrk`). Every
//! measurement is bounded in time and concurrency.
//!
//! Environment: `BENCH_DURATION` seconds per measurement (default 10),
//! `BENCH_SCENARIOS` a comma list of
//! `flow,refresh,register,metadata,mcp,mcp-scoped,mcp-real,memory,authorize,audit` (default all),
//! `BENCH_AUDIT_ROUNDS` alternating rounds of the audit on/off rows and of the
//! tool scopes on/off rows (`mcp-scoped`; default 4),
//! `BENCH_BACKENDS` a comma list of `memory,directory,redis` (default all),
//! `BENCH_GRANTS` grants stored for the memory scenario (default 100000),
//! `BENCH_AUTHORIZE_REQUESTS` valid `/authorize` requests of the authorize
//! scenario (default 100000; memory and directory backends),
//! `BENCH_REAL_CONCURRENCY` for the real MCP server rows (default 16) and
//! `BENCH_REAL_ROUNDS` their alternating rounds of half a `BENCH_DURATION`
//! each (default 6, at least 1), `BENCH_PROXY_BINARY` to measure another
//! build of the proxy (an A/B comparison on the same machine),
//! `BENCH_HISTOGRAM=1` to print a latency histogram of each multi-step row
//! (it showed the full-flow p99 comes from a separate cluster
//! of stalls, not from a slow tail of ordinary flows).

#[path = "load/driver.rs"]
mod driver;
#[path = "../tests/api/redis_server.rs"]
mod redis_server;
#[path = "load/upstream.rs"]
mod upstream;

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use actix_web::{web, App, HttpResponse, HttpServer};
use base64::Engine;
use driver::{Agent, Answer};
use redis_server::RedisServer;
use sha2::Digest;
use upstream::FastUpstream;
use url::Url;

const PROXY_BINARY: &str = env!("CARGO_BIN_EXE_mcp-oauth-proxy");
const REDIRECT: &str = "http://127.0.0.1:9/callback";
const FORM: &str = "application/x-www-form-urlencoded";
const VERIFIER: &str = "bench-verifier-0123456789-0123456789-0123456789";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn has_command(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Cores of the machine, read once before this process pins itself (after
/// that, `available_parallelism` sees only its own core).
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}

/// `taskset -c <core>` before a command, when there are two cores to split.
fn pinned(core: usize, program: &str) -> Command {
    if cores() >= 2 && has_command("taskset") {
        let mut command = Command::new("taskset");
        command.args(["-c", &core.to_string(), program]);
        command
    } else {
        Command::new(program)
    }
}

/// Pins this process (and every thread it starts from now on) to core 1.
fn pin_self() {
    if cores() >= 2 && has_command("taskset") {
        let _ = Command::new("taskset")
            .args(["-p", "-c", "1", &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status();
    }
}

// ---------------------------------------------------------------- services

/// A fast MCP backend: answers every JSON-RPC POST with a small result.
async fn fast_backend_answer(body: Bytes) -> HttpResponse {
    let id = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("id").cloned())
        .unwrap_or(serde_json::Value::Null);
    HttpResponse::Ok().json(serde_json::json!({"jsonrpc": "2.0", "id": id, "result": {}}))
}

/// A bare handler: what the load generator reaches with no work behind it.
async fn bare() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"ok": true}))
}

/// The load generator's ceiling: a bare handler in a process of its own,
/// this benchmark re-run with `--bare-server`, pinned to core 0 where the
/// proxy runs, so wrk has core 1 to itself as it has against the proxy.
/// (Run on core 1 beside wrk, the row measured the two sharing a core, and
/// on some hosts read below the proxy's own metadata row.)
fn start_bare_server() -> (Process, String) {
    let port = free_port();
    let benchmark = std::env::current_exe().expect("the benchmark knows its own path");
    let child = pinned(0, &benchmark.to_string_lossy())
        .args(["--bare-server", &port.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .expect("the bare server starts");
    (Process(child), format!("http://127.0.0.1:{port}"))
}

/// The bare server's own process: one worker, the bare handler, until killed.
async fn run_bare_server(port: &str) {
    HttpServer::new(|| App::new().route("/bare", web::get().to(bare)))
        .workers(1)
        .bind(("127.0.0.1", port.parse::<u16>().expect("a port number")))
        .expect("the bare server's port is free")
        .run()
        .await
        .expect("the bare server runs");
}

fn start_fast_backend() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let server = HttpServer::new(|| {
        App::new()
            .route("/mcp", web::post().to(fast_backend_answer))
            .route("/bare", web::get().to(bare))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    actix_rt::spawn(server);
    url
}

/// A child process killed by its PID when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Proxy {
    process: Process,
    base: String,
}

async fn wait_until_up(url: &str) {
    let client = awc::Client::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(url).send().await.is_err() {
        assert!(Instant::now() < deadline, "{url} did not come up");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn start_proxy(upstream: &FastUpstream, backend: &str, storage: &str, core: usize) -> Proxy {
    start_server(&proxy_binary(), upstream, backend, storage, core, &[]).await
}

/// The proxy binary to measure: this build's, or `BENCH_PROXY_BINARY` (so
/// another build can be measured against this one's load).
fn proxy_binary() -> String {
    std::env::var("BENCH_PROXY_BINARY").unwrap_or_else(|_| PROXY_BINARY.to_string())
}

/// The flow floor (`examples/flow_floor.rs`), when it has been built next
/// to the proxy binary: the same requests on the same stack with none of the
/// OAuth work, so the full-flow rows can be read against what HTTP alone
/// costs on this machine.
fn flow_floor_binary() -> Option<PathBuf> {
    let binary = Path::new(PROXY_BINARY).parent()?.join("examples").join("flow_floor");
    binary.exists().then_some(binary)
}

/// Starts `binary` with the proxy's environment (the proxy, or the flow floor);
/// `extra` variables are added to (or override) the benchmark's.
async fn start_server(
    binary: &str,
    upstream: &FastUpstream,
    backend: &str,
    storage: &str,
    core: usize,
    extra: &[(&str, &str)],
) -> Proxy {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut command = pinned(core, binary);
    command
        .env_clear()
        .env("RUST_LOG", "error")
        .env("OAUTH_PROXY_BIND", format!("127.0.0.1:{port}"))
        .env("OAUTH_PROXY_BASE_URL", &base)
        .env("OAUTH_PROXY_WORKERS", "1")
        .env("OAUTH_PROXY_STORAGE", storage)
        .env(
            "OAUTH_PROXY_JWT_SIGNING_KEY",
            "bench-signing-key-bench-signing-key-0123",
        )
        .env(
            "OAUTH_PROXY_ENCRYPTION_KEY",
            "bench-encryption-key-bench-encryption-key",
        )
        .env(
            "OAUTH_PROXY_CONSENT_SIGNING_KEY",
            "bench-consent-key-bench-consent-key-0123",
        )
        .env(
            "OAUTH_PROXY_UPSTREAM_AUTHORIZATION_ENDPOINT",
            upstream.authorization_endpoint(),
        )
        .env("OAUTH_PROXY_UPSTREAM_TOKEN_ENDPOINT", upstream.token_endpoint())
        .env("OAUTH_PROXY_UPSTREAM_CLIENT_ID", upstream::CLIENT_ID)
        .env("OAUTH_PROXY_UPSTREAM_CLIENT_SECRET", upstream::CLIENT_SECRET)
        .env("OAUTH_PROXY_CONSENT_REQUIRED", "false")
        // Consent off needs every redirect host pinned (REDIRECT is loopback).
        .env("OAUTH_PROXY_ALLOWED_REDIRECT_URI_PATTERNS", "http://127.0.0.1:*")
        .env("OAUTH_PROXY_REGISTRATION_RATE_LIMIT", "0")
        // Every simulated user comes from 127.0.0.1.
        .env("OAUTH_PROXY_AUTHORIZE_RATE_LIMIT", "0")
        .env("OAUTH_PROXY_MAX_CLIENTS", "10000000")
        .env("OAUTH_PROXY_MCP_UPSTREAM_URL", format!("{backend}/mcp"))
        .envs(extra.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let process = Process(command.spawn().expect("the proxy binary starts"));
    wait_until_up(&format!("{base}/healthz")).await;
    Proxy { process, base }
}

/// CPU time (user + system) of a process so far, in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // Fields after the command name, which is in parentheses.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// Measures the share of one core a process used while `work` ran.
async fn with_cpu<T>(pid: u32, work: impl std::future::Future<Output = T>) -> (T, f64) {
    let (ticks, started) = (cpu_ticks(pid), Instant::now());
    let result = work.await;
    let used = (cpu_ticks(pid) - ticks) as f64 / 100.0;
    (result, used / started.elapsed().as_secs_f64())
}

fn resident_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next().map(String::from))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// nginx (Debian's nginx-light) as a plain reverse proxy to the backend, one
/// process pinned to core 0 like the proxy: the reference hop.
struct Nginx {
    _process: Process,
    base: String,
    _dir: tempfile::TempDir,
}

async fn start_nginx(backend: &str, core: usize) -> Option<Nginx> {
    let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let port = free_port();
    let temp = tempfile::Builder::new()
        .prefix("mcp-oauth-proxy-bench-nginx-")
        .tempdir()
        .ok()?;
    let dir = temp.path();
    let backend = backend.trim_start_matches("http://");
    let d = dir.display();
    let config = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
           upstream backend {{ server {backend}; keepalive 64; }}\n\
           server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://backend; proxy_http_version 1.1; \
           proxy_set_header Connection \"\"; }} }}\n}}\n"
    );
    let config_path = dir.join("nginx.conf");
    std::fs::write(&config_path, config).ok()?;
    let process = Process(
        pinned(core, binary)
            .arg("-c")
            .arg(&config_path)
            .arg("-p")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?,
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = awc::Client::default();
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.post(format!("{base}/mcp")).send_body("{}").await.is_err() {
        if Instant::now() > deadline {
            return None;
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    Some(Nginx {
        _process: process,
        base,
        _dir: temp,
    })
}

// ---------------------------------------------------------- flows and load

fn challenge() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(VERIFIER.as_bytes()))
}

/// What a flow ends with.
struct Tokens {
    client_id: String,
    access_token: String,
    refresh_token: String,
}

#[derive(serde::Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    refresh_token: Option<String>,
}

fn location(answer: &Answer) -> Result<&str, String> {
    answer
        .location
        .as_deref()
        .ok_or_else(|| format!("no Location (HTTP {})", answer.status))
}

fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// One full flow with consent off: register → authorize → upstream →
/// callback → token.
async fn full_flow(agent: &mut Agent, base: &str) -> Result<Tokens, String> {
    let registration = format!(r#"{{"redirect_uris":["{REDIRECT}"],"token_endpoint_auth_method":"none"}}"#);
    let registered = agent
        .post(&format!("{base}/register"), "application/json", registration.as_bytes())
        .await?;
    let client: serde_json::Value = serde_json::from_slice(&registered.body).map_err(|e| e.to_string())?;
    let client_id = client["client_id"]
        .as_str()
        .ok_or_else(|| format!("registration failed: {client}"))?;
    authorization(agent, base, client_id).await
}

/// Authorize → upstream → callback → token for a registered client.
async fn authorization(agent: &mut Agent, base: &str, client_id: &str) -> Result<Tokens, String> {
    let authorize = format!(
        "{base}/authorize?response_type=code&client_id={client_id}&redirect_uri={REDIRECT}&state=s&code_challenge={}&code_challenge_method=S256",
        challenge()
    );
    let answer = agent.get(&authorize, None).await?;
    let cookie = answer.cookies.join("; ");
    let upstream = agent.get(location(&answer)?, None).await?;
    let back = agent.get(location(&upstream)?, Some(&cookie)).await?;
    let to_client = Url::parse(location(&back)?).map_err(|e| e.to_string())?;
    let code = to_client
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.to_string())
        .ok_or("no code")?;
    let body = form(&[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
        ("client_id", client_id),
    ]);
    let answer = agent.post(&format!("{base}/token"), FORM, body.as_bytes()).await?;
    let tokens = token_answer(&answer)?;
    Ok(Tokens {
        client_id: client_id.to_string(),
        access_token: tokens.access_token.ok_or("no access_token")?,
        refresh_token: tokens.refresh_token.ok_or("no refresh_token")?,
    })
}

fn token_answer(answer: &Answer) -> Result<TokenAnswer, String> {
    if answer.status != 200 {
        return Err(format!(
            "token failed (HTTP {}): {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        ));
    }
    serde_json::from_slice(&answer.body).map_err(|e| e.to_string())
}

/// One refresh; the new refresh token.
async fn refresh(agent: &mut Agent, base: &str, client_id: &str, refresh_token: &str) -> Result<String, String> {
    let body = form(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", client_id),
    ]);
    let answer = agent.post(&format!("{base}/token"), FORM, body.as_bytes()).await?;
    token_answer(&answer)?
        .refresh_token
        .ok_or_else(|| "refresh failed: no refresh_token".into())
}

/// Completed operations per second and latency percentiles.
struct Measurement {
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    /// Share of its core the proxy used (1.0 = saturated), when measured.
    proxy_cpu: Option<f64>,
    /// Share of core 1 this process used (load generator, mock upstream and
    /// mock backend), for the rows it drives itself.
    load_cpu: Option<f64>,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 * p / 100.0).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index].as_secs_f64() * 1000.0
}

/// What one operation of a load loop came to.
enum Step {
    Done,
    Failed(String),
    /// The loop has nothing more to do.
    Stop,
}

impl From<Result<(), String>> for Step {
    fn from(result: Result<(), String>) -> Step {
        match result {
            Ok(()) => Step::Done,
            Err(e) => Step::Failed(e),
        }
    }
}

/// Runs `concurrency` loops of `operation` for `seconds` (or until they
/// stop); each loop keeps its own state (`T`), e.g. its current refresh token.
async fn run_load<T, F, Fut>(concurrency: usize, seconds: u64, states: Vec<T>, operation: F) -> Measurement
where
    T: 'static,
    F: Fn(T) -> Fut + 'static,
    Fut: std::future::Future<Output = (T, Step)> + 'static,
{
    let operation = Rc::new(operation);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (started, own_ticks) = (Instant::now(), cpu_ticks(std::process::id()));
    let mut tasks = Vec::new();
    for state in states.into_iter().take(concurrency) {
        let operation = operation.clone();
        tasks.push(actix_rt::spawn(async move {
            let (mut latencies, mut errors, mut state) = (Vec::new(), 0u64, state);
            while Instant::now() < deadline {
                let began = Instant::now();
                let (next, result) = operation(state).await;
                state = next;
                match result {
                    Step::Done => latencies.push(began.elapsed()),
                    Step::Failed(e) => {
                        errors += 1;
                        if errors == 1 {
                            eprintln!("load error: {e}");
                        }
                    }
                    Step::Stop => break,
                }
            }
            (latencies, errors)
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for task in tasks {
        let (latencies, task_errors) = task.await.unwrap();
        all.extend(latencies);
        errors += task_errors;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    if std::env::var("BENCH_HISTOGRAM").is_ok() {
        let edges = [
            0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0,
        ];
        let mut line = String::from("HIST");
        let mut previous = 0.0;
        for edge in edges {
            let n = all
                .iter()
                .filter(|d| {
                    let ms = d.as_secs_f64() * 1000.0;
                    ms >= previous && ms < edge
                })
                .count();
            line.push_str(&format!(" [{previous}-{edge}):{n}"));
            previous = edge;
        }
        println!("{line}");
    }
    Measurement {
        per_sec: all.len() as f64 / elapsed,
        p50_ms: percentile(&all, 50.0),
        p99_ms: percentile(&all, 99.0),
        errors,
        proxy_cpu: None,
        load_cpu: Some((cpu_ticks(std::process::id()) - own_ticks) as f64 / 100.0 / elapsed),
    }
}

fn load_client(concurrency: usize) -> awc::Client {
    awc::Client::builder()
        .disable_redirects()
        .timeout(Duration::from_secs(30))
        .connector(awc::Connector::new().limit(concurrency * 4))
        .finish()
}

async fn measure_flows(base: &str, concurrency: usize, seconds: u64) -> Measurement {
    let base = base.to_string();
    let agents = (0..concurrency).map(|_| Agent::default()).collect();
    run_load(concurrency, seconds, agents, move |mut agent: Agent| {
        let base = base.clone();
        async move {
            let result = full_flow(&mut agent, &base).await.map(|_| ()).into();
            (agent, result)
        }
    })
    .await
}

async fn measure_refresh(base: &str, concurrency: usize, seconds: u64) -> Measurement {
    let mut chains = Vec::new();
    for _ in 0..concurrency {
        let mut agent = Agent::default();
        let tokens = full_flow(&mut agent, base).await.expect("a flow for the refresh chain");
        chains.push((agent, tokens));
    }
    let base = base.to_string();
    run_load(
        concurrency,
        seconds,
        chains,
        move |(mut agent, mut tokens): (Agent, Tokens)| {
            let base = base.clone();
            async move {
                match refresh(&mut agent, &base, &tokens.client_id, &tokens.refresh_token).await {
                    Ok(next) => {
                        tokens.refresh_token = next;
                        ((agent, tokens), Step::Done)
                    }
                    Err(e) => ((agent, tokens), Step::Failed(e)),
                }
            }
        },
    )
    .await
}

// -------------------------------------------------------------------- wrk

/// A wrk Lua script in a temporary file, removed when dropped.
fn wrk_script(method: &str, body: &str, headers: &HashMap<&str, String>) -> tempfile::NamedTempFile {
    let mut script = format!("wrk.method = \"{method}\"\nwrk.body = [[{body}]]\n");
    for (name, value) in headers {
        script.push_str(&format!("wrk.headers[\"{name}\"] = \"{value}\"\n"));
    }
    script.push_str(
        "done = function(summary, latency, requests)\n  io.write(string.format(\"WRK p50=%f p99=%f non2xx=%d\\n\", latency:percentile(50)/1000, latency:percentile(99)/1000, summary.errors.status))\nend\n",
    );
    let file = tempfile::Builder::new()
        .prefix("mcp-oauth-proxy-bench-")
        .suffix(".lua")
        .tempfile()
        .unwrap();
    std::fs::write(file.path(), script).unwrap();
    file
}

/// Runs wrk on core 1 from the blocking pool: the mock upstream answers on
/// this thread meanwhile.
async fn run_wrk(url: &str, concurrency: usize, seconds: u64, script: &Path) -> Measurement {
    let (url, script) = (url.to_string(), script.to_path_buf());
    tokio::task::spawn_blocking(move || run_wrk_blocking(&url, concurrency, seconds, &script))
        .await
        .expect("the wrk run finishes")
}

fn run_wrk_blocking(url: &str, concurrency: usize, seconds: u64, script: &Path) -> Measurement {
    let output = pinned(1, "wrk")
        .args(["-t1", &format!("-c{concurrency}"), &format!("-d{seconds}s"), "-s"])
        .arg(script)
        .arg(url)
        .output()
        .expect("wrk runs (apt-get install wrk)");
    let text = String::from_utf8_lossy(&output.stdout);
    let per_sec = text
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
        per_sec,
        p50_ms: field("p50"),
        p99_ms: field("p99"),
        errors: field("non2xx") as u64,
        proxy_cpu: None,
        load_cpu: None,
    }
}

// ------------------------------------------------------------------ report

fn header() {
    println!(
        "| {:<66} | {:>9} | {:>7} | {:>7} | {:>6} | {:>9} | {:>8} | {:>6} |",
        "scenario", "per sec", "p50 ms", "p99 ms", "errors", "proxy CPU", "load CPU", "ratio"
    );
    println!(
        "|{:-<68}|{:-<11}|{:-<9}|{:-<9}|{:-<8}|{:-<11}|{:-<10}|{:-<8}|",
        "", "", "", "", "", "", "", ""
    );
}

fn row(name: &str, m: &Measurement, ratio: Option<f64>) {
    let ratio = ratio.map(|r| format!("{:.0}%", r * 100.0)).unwrap_or_default();
    let share = |c: Option<f64>| c.map(|c| format!("{:.0}%", c * 100.0)).unwrap_or_default();
    let (cpu, load) = (share(m.proxy_cpu), share(m.load_cpu));
    println!(
        "| {name:<66} | {:>9.0} | {:>7.2} | {:>7.2} | {:>6} | {cpu:>9} | {load:>8} | {ratio:>6} |",
        m.per_sec, m.p50_ms, m.p99_ms, m.errors
    );
    let _ = std::io::stdout().flush();
}

/// Opens an MCP session (initialize + initialized) at `url`; its id.
async fn mcp_session(http: &awc::Client, url: &str, token: Option<&str>) -> Option<String> {
    let mut request = http
        .post(url)
        .insert_header(("Accept", "application/json, text/event-stream"))
        .insert_header(("Content-Type", "application/json"));
    if let Some(token) = token {
        request = request.insert_header(("Authorization", format!("Bearer {token}")));
    }
    let initialize = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}});
    let mut response = request.send_json(&initialize).await.ok()?;
    let session = response.headers().get("mcp-session-id")?.to_str().ok()?.to_string();
    let _ = response.body().await;
    let mut notify = http
        .post(url)
        .insert_header(("Accept", "application/json, text/event-stream"))
        .insert_header(("Mcp-Session-Id", session.as_str()));
    if let Some(token) = token {
        notify = notify.insert_header(("Authorization", format!("Bearer {token}")));
    }
    let _ = notify
        .send_json(&serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await
        .ok()?
        .body()
        .await;
    Some(session)
}

/// tools/list against the official-SDK MCP server in tests/mcp-server,
/// directly and through the proxy (target: the proxy keeps 95% of it).
///
/// The MCP server is the bottleneck here, so it gets core 0 to itself in
/// every row, as it would in a deployment; the proxy (and the nginx
/// reference hop) run on core 1 beside the load generator. Sharing the
/// server's core with the load generator instead measures how the scheduler
/// interleaves them: even an nginx hop then loses a quarter of the server's
/// throughput.
async fn real_mcp_server(upstream: &FastUpstream, seconds: u64) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp-server");
    if !dir.join("node_modules").is_dir() || !has_command("node") {
        println!("| real MCP server: run `npm ci` in tests/mcp-server first (scripts/test.sh does): no row");
        return;
    }
    let mut child = pinned(0, "node")
        .current_dir(&dir)
        .args(["server.mjs", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node starts");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    let node = Process(child);
    let port = line.trim().trim_start_matches("LISTENING ").to_string();
    let server = format!("http://127.0.0.1:{port}");
    let proxy = start_proxy(upstream, &server, "memory", 1).await;
    let http = load_client(1);
    let token = full_flow(&mut Agent::default(), &proxy.base)
        .await
        .expect("a token")
        .access_token;
    let direct_session = mcp_session(&http, &format!("{server}/mcp"), None)
        .await
        .expect("a direct session");
    let proxied_session = mcp_session(&http, &format!("{}/mcp", proxy.base), Some(&token))
        .await
        .expect("a session through the proxy");
    let body = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let mut headers = HashMap::from([
        ("Content-Type", "application/json".to_string()),
        ("Accept", "application/json, text/event-stream".to_string()),
        ("MCP-Protocol-Version", "2025-06-18".to_string()),
        ("Mcp-Session-Id", direct_session),
    ]);
    let concurrency = env_number("BENCH_REAL_CONCURRENCY", 16) as usize;
    let direct_script = wrk_script("POST", body, &headers);
    headers.insert("Mcp-Session-Id", proxied_session);
    headers.insert("Authorization", format!("Bearer {token}"));
    let proxy_script = wrk_script("POST", body, &headers);
    let nginx = start_nginx(&server, 1).await;
    let mut paths = vec![
        (
            format!("directly, c={concurrency}"),
            format!("{server}/mcp"),
            direct_script.path(),
            None,
        ),
        (
            format!("through the proxy, c={concurrency} (target 95%)"),
            format!("{}/mcp", proxy.base),
            proxy_script.path(),
            Some(proxy.process.0.id()),
        ),
    ];
    if let Some(nginx) = &nginx {
        paths.push((
            "through nginx, no auth".to_string(),
            format!("{}/mcp", nginx.base),
            direct_script.path(),
            None,
        ));
    }
    // Node compiles its hot paths during the first seconds: warm it up first.
    run_wrk(&paths[0].1, concurrency, 3, paths[0].2).await;
    // Node's own throughput drifts by several percent from second to second
    // (GC, JIT): many short rounds that alternate the paths share that drift
    // between them, where two long ones did not.
    let rounds = env_number("BENCH_REAL_ROUNDS", 6).max(1) as usize;
    let round_seconds = (seconds / 2).max(2);
    // Per path, each round's measurement and the server's CPU share.
    let mut runs: Vec<Vec<(Measurement, f64)>> = paths.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for ((_, url, script, proxy_pid), path_runs) in paths.iter().zip(&mut runs) {
            let run = with_cpu(node.0.id(), async {
                match proxy_pid {
                    Some(pid) => {
                        let (mut m, cpu) =
                            with_cpu(*pid, async { run_wrk(url, concurrency, round_seconds, script).await }).await;
                        m.proxy_cpu = Some(cpu);
                        m
                    }
                    None => run_wrk(url, concurrency, round_seconds, script).await,
                }
            })
            .await;
            path_runs.push(run);
        }
    }
    let mut direct_rate = None;
    for ((name, ..), path_runs) in paths.iter().zip(&runs) {
        let m = mean(path_runs.iter().map(|(m, _)| m));
        let server_cpu = path_runs.iter().map(|(_, cpu)| cpu).sum::<f64>() / path_runs.len() as f64;
        let ratio = direct_rate.map(|direct| m.per_sec / direct);
        direct_rate.get_or_insert(m.per_sec);
        row(
            &format!(
                "real MCP server (its CPU {:.0}%), tools/list {name}",
                100.0 * server_cpu
            ),
            &m,
            ratio,
        );
    }
    // Each round's ratio to the direct call of the same round: the spread
    // says how far to trust the mean above.
    for ((name, ..), path_runs) in paths.iter().zip(&runs).skip(1) {
        let mut ratios: Vec<f64> = path_runs
            .iter()
            .zip(&runs[0])
            .map(|((m, _), (direct, _))| m.per_sec / direct.per_sec)
            .collect();
        ratios.sort_by(f64::total_cmp);
        let listed: Vec<String> = ratios.iter().map(|r| format!("{:.0}%", r * 100.0)).collect();
        println!(
            "|   per round, {name}: {} (median {:.0}%)",
            listed.join(" "),
            100.0 * (ratios[(ratios.len() - 1) / 2] + ratios[ratios.len() / 2]) / 2.0
        );
    }
}

/// The mean of several measurements of one scenario (errors are summed).
fn mean<'a>(runs: impl Iterator<Item = &'a Measurement>) -> Measurement {
    let runs: Vec<&Measurement> = runs.collect();
    let n = runs.len() as f64;
    let average = |field: fn(&Measurement) -> f64| runs.iter().map(|m| field(m)).sum::<f64>() / n;
    let present = |field: fn(&Measurement) -> Option<f64>| {
        let values: Vec<f64> = runs.iter().filter_map(|m| field(m)).collect();
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    };
    Measurement {
        per_sec: average(|m| m.per_sec),
        p50_ms: average(|m| m.p50_ms),
        p99_ms: average(|m| m.p99_ms),
        errors: runs.iter().map(|m| m.errors).sum(),
        proxy_cpu: present(|m| m.proxy_cpu),
        load_cpu: present(|m| m.load_cpu),
    }
}

/// Bytes of every file below `dir`, recursively.
fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Disk use of a directory as `du -sk` reports it (allocated blocks), in KiB.
fn du_kib(dir: &Path) -> u64 {
    Command::new("du")
        .arg("-sk")
        .arg(dir)
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|out| out.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Security review item 1: `BENCH_AUTHORIZE_REQUESTS` (default 100 000)
/// valid `/authorize` requests from one address, consent on (each stores a
/// pending authorization and answers the consent page) and the per-address
/// rate limit off, into a fresh proxy. The pending-authorization cap
/// (default 10 000) bounds what they store: memory must grow by at most
/// 32 MiB, and the directory store's size stays bounded.
async fn authorize_flood(upstream: &FastUpstream, backend: &str, storage_kind: &str) {
    let data = tempfile::Builder::new()
        .prefix("mcp-oauth-proxy-bench-authorize-")
        .tempdir()
        .unwrap();
    let data_dir = data.path().join("data");
    let storage = match storage_kind {
        "directory" => data_dir.display().to_string(),
        _ => "memory".to_string(),
    };
    let proxy = start_server(
        &proxy_binary(),
        upstream,
        backend,
        &storage,
        0,
        &[
            ("OAUTH_PROXY_CONSENT_REQUIRED", "true"),
            ("OAUTH_PROXY_AUTHORIZE_RATE_LIMIT", "0"),
        ],
    )
    .await;
    let (base, pid) = (proxy.base.clone(), proxy.process.0.id());
    let registration = format!(r#"{{"redirect_uris":["{REDIRECT}"],"token_endpoint_auth_method":"none"}}"#);
    let registered = Agent::default()
        .post(&format!("{base}/register"), "application/json", registration.as_bytes())
        .await
        .expect("a registration");
    let client: serde_json::Value = serde_json::from_slice(&registered.body).expect("client information");
    let client_id = client["client_id"].as_str().expect("a client_id").to_string();
    let authorize = Rc::new(format!(
        "{base}/authorize?response_type=code&client_id={client_id}&redirect_uri={REDIRECT}&state=s&code_challenge={}&code_challenge_method=S256",
        challenge()
    ));
    let requests = env_number("BENCH_AUTHORIZE_REQUESTS", 100_000) as usize;
    let (sent, pages, refused) = (
        Rc::new(std::cell::Cell::new(0usize)),
        Rc::new(std::cell::Cell::new(0usize)),
        Rc::new(std::cell::Cell::new(0usize)),
    );
    let (rss_before, disk_before) = (resident_kib(pid), du_kib(&data_dir));
    let counters = (sent.clone(), pages.clone(), refused.clone());
    let agents = (0..16).map(|_| Agent::default()).collect();
    let m = run_load(16, 600, agents, move |mut agent: Agent| {
        let (authorize, (sent, pages, refused)) = (authorize.clone(), counters.clone());
        async move {
            if sent.get() >= requests {
                return (agent, Step::Stop);
            }
            sent.set(sent.get() + 1);
            let step = match agent.get(&authorize, None).await {
                Ok(answer) if answer.status == 200 => {
                    pages.set(pages.get() + 1);
                    Step::Done
                }
                Ok(answer) if answer.status == 503 => {
                    refused.set(refused.get() + 1);
                    Step::Done
                }
                Ok(answer) => Step::Failed(format!("/authorize answered {}", answer.status)),
                Err(e) => Step::Failed(e),
            };
            (agent, step)
        }
    })
    .await;
    let (rss_after, disk_after) = (resident_kib(pid), du_kib(&data_dir));
    row(
        &format!("[{storage_kind}] /authorize flood, consent on, one address, c=16"),
        &m,
        None,
    );
    let grown = rss_after.saturating_sub(rss_before) as f64 / 1024.0;
    println!(
        "|   [{storage_kind}] {} valid /authorize requests: {} consent pages, {} answered 503 (pending cap); \
         proxy RSS {:.1} MiB before, {:.1} MiB after: +{grown:.1} MiB (target <= 32 MiB: {})",
        sent.get().min(requests),
        pages.get(),
        refused.get(),
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        if grown <= 32.0 { "met" } else { "MISSED" },
    );
    if storage_kind == "directory" {
        println!(
            "|   [directory] data directory (du -sk): {disk_before} KiB before, {disk_after} KiB after ({} bytes apparent)",
            dir_size(&data_dir)
        );
    }
    drop(proxy);
    drop(data);
}

/// A guarded MCP request's body.
const MCP_BODY: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

/// The references for the guarded hop, measured once and printed as rows:
/// the fast backend called directly, and through nginx when installed.
async fn measure_hop_references(
    backend: &str,
    json_headers: &HashMap<&str, String>,
    seconds: u64,
) -> (Measurement, Option<Measurement>) {
    let direct_script = wrk_script("POST", MCP_BODY, json_headers);
    let direct = run_wrk(&format!("{backend}/mcp"), 16, seconds, direct_script.path()).await;
    row("MCP POST, backend called directly (wrk), c=16", &direct, None);
    let nginx = start_nginx(backend, 0).await;
    let via_nginx = match &nginx {
        Some(n) => Some(run_wrk(&format!("{}/mcp", n.base), 16, seconds, direct_script.path()).await),
        None => None,
    };
    match &via_nginx {
        Some(m) => row(
            "MCP POST through nginx proxy_pass, no auth (wrk), c=16",
            m,
            Some(m.per_sec / direct.per_sec),
        ),
        None => println!("| nginx not found (apt-get install nginx-light): no nginx row"),
    }
    (direct, via_nginx)
}

/// Issue 22: the full-flow and guarded-hop rows with the audit trail off and
/// written to a file, in the same run. Two proxies (memory store) stay up
/// side by side on core 0; the rows alternate between them for
/// `BENCH_AUDIT_ROUNDS` rounds (default 4) of half a `BENCH_DURATION` each,
/// so drift of the machine falls on both alike.
async fn audit_on_and_off(upstream: &FastUpstream, backend: &str, seconds: u64) {
    let rounds = env_number("BENCH_AUDIT_ROUNDS", 4).max(1) as usize;
    let half = (seconds / 2).max(1);
    let dir = tempfile::Builder::new()
        .prefix("mcp-oauth-proxy-bench-audit-")
        .tempdir()
        .unwrap();
    let audit_file = dir.path().join("audit.jsonl");
    let audit_file = audit_file.display().to_string();
    let off = start_server(
        &proxy_binary(),
        upstream,
        backend,
        "memory",
        0,
        &[("OAUTH_PROXY_AUDIT_LOG", "off")],
    )
    .await;
    let on = start_server(
        &proxy_binary(),
        upstream,
        backend,
        "memory",
        0,
        &[("OAUTH_PROXY_AUDIT_LOG", audit_file.as_str())],
    )
    .await;
    let json_headers = HashMap::from([("Content-Type", "application/json".to_string())]);
    let mut scripts = Vec::new();
    for proxy in [&off, &on] {
        let token = full_flow(&mut Agent::default(), &proxy.base)
            .await
            .expect("a token")
            .access_token;
        let mut headers = json_headers.clone();
        headers.insert("Authorization", format!("Bearer {token}"));
        scripts.push(wrk_script("POST", MCP_BODY, &headers));
    }
    let (mut flows, mut hops): ([Vec<Measurement>; 2], [Vec<Measurement>; 2]) = Default::default();
    for round in 0..rounds {
        // Alternate which goes first, so neither always follows the other.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let proxy = [&off, &on][i];
            let pid = proxy.process.0.id();
            let (mut m, cpu) = with_cpu(pid, measure_flows(&proxy.base, 16, half)).await;
            m.proxy_cpu = Some(cpu);
            flows[i].push(m);
            let url = format!("{}/mcp", proxy.base);
            let (mut m, cpu) = with_cpu(pid, async { run_wrk(&url, 16, half, scripts[i].path()).await }).await;
            m.proxy_cpu = Some(cpu);
            hops[i].push(m);
        }
    }
    let lines = std::fs::read_to_string(&audit_file)
        .map(|text| text.lines().count())
        .unwrap_or(0);
    for (what, runs) in [
        ("full flow, c=16", &flows),
        ("MCP POST through the proxy (wrk), c=16", &hops),
    ] {
        let (off_mean, on_mean) = (mean(runs[0].iter()), mean(runs[1].iter()));
        row(&format!("[memory] {what}, audit trail off"), &off_mean, None);
        row(
            &format!("[memory] {what}, audit trail to a file"),
            &on_mean,
            Some(on_mean.per_sec / off_mean.per_sec),
        );
        println!(
            "|   [memory] {what}: audit on / off {:.1}% (target >= 90%; {rounds} alternating rounds of {half}s)",
            100.0 * on_mean.per_sec / off_mean.per_sec
        );
    }
    println!("|   audit file: {lines} lines written during the rows");
    drop(on);
    drop(off);
}

/// A guarded `tools/call` (2026-07-28: with its mirrored headers) that the
/// scoped proxy's rules cover.
const MCP_TOOL_CALL_BODY: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"write_file","arguments":{"path":"a.txt","text":"hello"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;

/// The scopes the scoped proxy advertises, and its per-tool rules.
const SCOPED_SCOPES: &str = "openid mcp:read mcp:write mcp:admin";
const SCOPED_RULES: &str = "delete_*=mcp:admin write_*=mcp:write search*=mcp:read";

/// Issue 24: the guarded hop with `OAUTH_PROXY_MCP_TOOL_SCOPES` (and
/// `OAUTH_PROXY_ALLOWED_USERS`, which checks a grant's kept claims again when
/// the grant is read)
/// against the same hop without, in the same run: two proxies (memory store) side by
/// side on core 0, the same `tools/call` body and headers, the token holding
/// every scope (the call is allowed and forwarded); the rows alternate for
/// `BENCH_AUDIT_ROUNDS` rounds of half a `BENCH_DURATION` each.
async fn tool_scopes_on_and_off(upstream: &FastUpstream, backend: &str, seconds: u64) {
    let rounds = env_number("BENCH_AUDIT_ROUNDS", 4).max(1) as usize;
    let half = (seconds / 2).max(1);
    let scopes = [("OAUTH_PROXY_SCOPES", SCOPED_SCOPES)];
    let off = start_server(&proxy_binary(), upstream, backend, "memory", 0, &scopes).await;
    let on = start_server(
        &proxy_binary(),
        upstream,
        backend,
        "memory",
        0,
        &[
            scopes[0],
            ("OAUTH_PROXY_MCP_TOOL_SCOPES", SCOPED_RULES),
            ("OAUTH_PROXY_ALLOWED_USERS", "email:*@example.com"),
        ],
    )
    .await;
    let mut scripts = Vec::new();
    for proxy in [&off, &on] {
        let token = full_flow(&mut Agent::default(), &proxy.base)
            .await
            .expect("a token")
            .access_token;
        let headers = HashMap::from([
            ("Content-Type", "application/json".to_string()),
            ("Authorization", format!("Bearer {token}")),
            ("MCP-Protocol-Version", "2026-07-28".to_string()),
            ("Mcp-Method", "tools/call".to_string()),
            ("Mcp-Name", "write_file".to_string()),
        ]);
        scripts.push(wrk_script("POST", MCP_TOOL_CALL_BODY, &headers));
    }
    let mut hops: [Vec<Measurement>; 2] = Default::default();
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let proxy = [&off, &on][i];
            let url = format!("{}/mcp", proxy.base);
            let (mut m, cpu) = with_cpu(proxy.process.0.id(), async {
                run_wrk(&url, 16, half, scripts[i].path()).await
            })
            .await;
            m.proxy_cpu = Some(cpu);
            hops[i].push(m);
        }
    }
    let (off_mean, on_mean) = (mean(hops[0].iter()), mean(hops[1].iter()));
    row(
        "[memory] MCP POST tools/call through the proxy (wrk), c=16, no tool scopes",
        &off_mean,
        None,
    );
    row(
        "[memory] MCP POST tools/call through the proxy (wrk), c=16, 3 tool-scope rules + OAUTH_PROXY_ALLOWED_USERS",
        &on_mean,
        Some(on_mean.per_sec / off_mean.per_sec),
    );
    let ratio = on_mean.per_sec / off_mean.per_sec;
    println!(
        "|   [memory] access policy on / off {:.1}% (target >= 90%: {}; {rounds} alternating rounds of {half}s)",
        100.0 * ratio,
        if ratio >= 0.9 { "met" } else { "MISSED" }
    );
    drop(on);
    drop(off);
}

#[actix_rt::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--bare-server") {
        run_bare_server(args.get(at + 1).map(String::as_str).unwrap_or_default()).await;
        return;
    }
    // `cargo bench` passes --bench; `cargo test --benches` does not: skip then.
    if !args.iter().any(|a| a == "--bench") {
        println!("load benchmark: run it with `cargo bench --bench load`");
        return;
    }
    let _ = cores();
    pin_self();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let seconds = env_number("BENCH_DURATION", 10);
    let scenarios = env_list(
        "BENCH_SCENARIOS",
        "flow,refresh,register,metadata,mcp,mcp-scoped,mcp-real,memory,authorize,audit",
    );
    let backends = env_list("BENCH_BACKENDS", "memory,directory,redis");
    let wants = |s: &str| scenarios.iter().any(|x| x == s);
    if !has_command("wrk") {
        eprintln!("the load benchmark needs wrk: apt-get install -y wrk");
        std::process::exit(2);
    }

    let upstream = FastUpstream::start();
    let backend = start_fast_backend();
    wait_until_up(&format!("{backend}/bare")).await;
    println!();
    println!(
        "mcp-oauth-proxy load benchmark: {} cores; proxy pinned to core 0 with 1 worker; load generator, mock upstream and mock backend on core 1; {seconds}s per row",
        cores()
    );
    header();
    let json_headers = HashMap::from([("Content-Type", "application/json".to_string())]);
    let bare_script = wrk_script("GET", "", &HashMap::new());
    let (bare_server, bare_url) = start_bare_server();
    wait_until_up(&format!("{bare_url}/bare")).await;
    let bare = run_wrk(&format!("{bare_url}/bare"), 16, seconds, bare_script.path()).await;
    drop(bare_server);
    row(
        "load generator ceiling: wrk -> bare actix handler on core 0 (c=16)",
        &bare,
        None,
    );
    // The mock upstream's headroom: each flow and each refresh costs it one
    // /token call (and a flow one /authorize), on the load generator's core.
    let token_script = wrk_script(
        "POST",
        &format!("grant_type=refresh_token&refresh_token={}", upstream.a_refresh_token()),
        &HashMap::from([
            ("Content-Type", "application/x-www-form-urlencoded".to_string()),
            ("Authorization", upstream::basic_authorization()),
        ]),
    );
    let upstream_token = run_wrk(&upstream.token_endpoint(), 16, seconds, token_script.path()).await;
    row(
        "mock upstream headroom: wrk -> its /token, refresh grant (c=16)",
        &upstream_token,
        None,
    );
    let authorize_url = format!(
        "{}?response_type=code&client_id={}&redirect_uri={REDIRECT}&state=s&code_challenge={}&code_challenge_method=S256",
        upstream.authorization_endpoint(),
        upstream::CLIENT_ID,
        challenge()
    );
    let upstream_authorize = run_wrk(&authorize_url, 16, seconds, bare_script.path()).await;
    row(
        "mock upstream headroom: wrk -> its /authorize (c=16)",
        &upstream_authorize,
        None,
    );

    if wants("flow") {
        match flow_floor_binary() {
            Some(binary) => {
                let floor = start_server(&binary.display().to_string(), &upstream, &backend, "memory", 0, &[]).await;
                let pid = floor.process.0.id();
                let (mut m, cpu) = with_cpu(pid, measure_flows(&floor.base, 16, seconds)).await;
                m.proxy_cpu = Some(cpu);
                row("flow floor: the same requests, no OAuth work (c=16)", &m, None);
                println!(
                    "|   flow floor: {:.0} µs of its core per flow; the proxy's rows below, read the same way, give what the OAuth work adds",
                    cpu * 1e6 / m.per_sec.max(1.0)
                );
            }
            None => {
                println!("|   (no flow floor row: build it first with `cargo build --release --example flow_floor`)")
            }
        }
    }

    if wants("memory") && backends.iter().any(|b| b == "memory") {
        // A fresh proxy, so nothing but the stored grants grows its memory.
        let proxy = start_proxy(&upstream, &backend, "memory", 0).await;
        let (base, pid) = (proxy.base.clone(), proxy.process.0.id());
        let count = env_number("BENCH_GRANTS", 100_000) as usize;
        let started = Instant::now();
        let done = Rc::new(std::cell::Cell::new(0usize));
        let counter = done.clone();
        let base_for = base.clone();
        // Sixteen clients (one per load loop), each authorized again and again:
        // the stored grants are what grows.
        let mut clients = Vec::new();
        for _ in 0..16 {
            let mut agent = Agent::default();
            let tokens = full_flow(&mut agent, &base).await.expect("a client");
            clients.push((agent, tokens.client_id));
        }
        let before = resident_kib(pid);
        let stored = run_load(16, 600, clients, move |(mut agent, client_id): (Agent, String)| {
            let (base, counter) = (base_for.clone(), counter.clone());
            async move {
                if counter.get() >= count {
                    return ((agent, client_id), Step::Stop);
                }
                counter.set(counter.get() + 1);
                let result = authorization(&mut agent, &base, &client_id).await.map(|_| ()).into();
                ((agent, client_id), result)
            }
        })
        .await;
        let after = resident_kib(pid);
        let grants = (done.get().min(count) as u64).saturating_sub(stored.errors) as f64;
        let _ = started;
        let per_grant = (after.saturating_sub(before) as f64 * 1024.0) / grants.max(1.0);
        let upstream_bytes = upstream.token_set_bytes(grants as u64);
        println!(
            "| [memory] resident memory of a fresh proxy: {:.1} MiB before, {:.1} MiB after {grants:.0} stored grants \
             (from 16 clients; each grant's redeemed code kept until it expires): {per_grant:.0} bytes per grant, \
             of which {upstream_bytes} are the upstream's tokens: {:.0} bytes of the proxy's own",
            before as f64 / 1024.0,
            after as f64 / 1024.0,
            per_grant - upstream_bytes as f64
        );
        drop(proxy);
    }

    if wants("authorize") {
        for storage_kind in backends.iter().filter(|b| *b == "memory" || *b == "directory") {
            authorize_flood(&upstream, &backend, storage_kind).await;
        }
    }

    if wants("mcp-real") {
        real_mcp_server(&upstream, seconds).await;
    }

    if wants("audit") {
        audit_on_and_off(&upstream, &backend, seconds).await;
    }
    if wants("mcp-scoped") {
        tool_scopes_on_and_off(&upstream, &backend, seconds).await;
    }

    for storage_kind in &backends {
        let data = tempfile::Builder::new()
            .prefix("mcp-oauth-proxy-bench-")
            .tempdir()
            .unwrap();
        let data_dir = data.path().join("data");
        let redis = if storage_kind == "redis" {
            Some(RedisServer::start().await)
        } else {
            None
        };
        let storage = match storage_kind.as_str() {
            "memory" => "memory".to_string(),
            "directory" => data_dir.display().to_string(),
            "redis" => redis.as_ref().unwrap().url(),
            other => panic!("unknown backend {other}"),
        };
        let proxy = start_proxy(&upstream, &backend, &storage, 0).await;
        let base = proxy.base.clone();
        let pid = proxy.process.0.id();
        let redis_before = redis.as_ref().map(|r| r.used_memory()).unwrap_or(0);
        let mut flows_done = 0.0;
        if wants("flow") {
            for concurrency in [1, 16, 64] {
                let (mut m, cpu) = with_cpu(pid, measure_flows(&base, concurrency, seconds)).await;
                m.proxy_cpu = Some(cpu);
                flows_done += m.per_sec * seconds as f64;
                row(
                    &format!("[{storage_kind}] full flow (4 proxy requests + 1 upstream call), c={concurrency}"),
                    &m,
                    None,
                );
                if concurrency == 16 {
                    println!(
                        "|   [{storage_kind}] full flow, c=16: {:.0} µs of the proxy's core per flow",
                        cpu * 1e6 / m.per_sec.max(1.0)
                    );
                }
            }
        }
        if wants("refresh") {
            let (mut m, cpu) = with_cpu(pid, measure_refresh(&base, 16, seconds)).await;
            m.proxy_cpu = Some(cpu);
            row(
                &format!("[{storage_kind}] refresh grant (+ upstream refresh), c=16"),
                &m,
                None,
            );
        }
        // Before the guarded requests and registrations, which store more.
        if flows_done > 0.0 {
            let grants = flows_done;
            let per_grant = match storage_kind.as_str() {
                "directory" => Some(("on disk", dir_size(&data_dir) as f64 / grants)),
                "redis" => Some((
                    "in Redis",
                    (redis.as_ref().unwrap().used_memory() - redis_before) as f64 / grants,
                )),
                _ => None,
            };
            if let Some((place, bytes)) = per_grant {
                println!(
                    "| [{storage_kind}] bytes {place} per completed flow (client + grant + code + indexes): {bytes:.0} over {grants:.0} flows"
                );
            }
        }
        // Before the registrations, whose writes a disk store is still
        // flushing and compacting for a while after they are answered.
        if wants("mcp") {
            // Measured next to each backend's row: the machine drifts.
            let (direct, via_nginx) = measure_hop_references(&backend, &json_headers, seconds).await;
            let token = full_flow(&mut Agent::default(), &base)
                .await
                .expect("a token")
                .access_token;
            let mut headers = json_headers.clone();
            headers.insert("Authorization", format!("Bearer {token}"));
            let proxy_script = wrk_script("POST", MCP_BODY, &headers);
            let (mut through, cpu) = with_cpu(pid, async {
                run_wrk(&format!("{base}/mcp"), 16, seconds, proxy_script.path()).await
            })
            .await;
            through.proxy_cpu = Some(cpu);
            row(
                &format!("[{storage_kind}] MCP POST through the proxy, token swap (wrk), c=16"),
                &through,
                Some(through.per_sec / direct.per_sec),
            );
            if let Some(nginx) = &via_nginx {
                println!(
                    "|   [{storage_kind}] proxy / nginx hop: {:.0}% (target >= 75%)",
                    100.0 * through.per_sec / nginx.per_sec
                );
            }
        }
        if wants("register") {
            let script = wrk_script(
                "POST",
                r#"{"redirect_uris":["http://127.0.0.1:9/cb"],"token_endpoint_auth_method":"none"}"#,
                &json_headers,
            );
            row(
                &format!("[{storage_kind}] registrations (wrk), c=16"),
                &run_wrk(&format!("{base}/register"), 16, seconds, script.path()).await,
                None,
            );
        }
        if wants("metadata") && storage_kind == "memory" {
            let script = wrk_script("GET", "", &HashMap::new());
            let url = format!("{base}/.well-known/oauth-authorization-server");
            row(
                "[memory] metadata GETs (wrk), c=16",
                &run_wrk(&url, 16, seconds, script.path()).await,
                None,
            );
        }
        drop(proxy);
        drop(data);
    }
    upstream.stop().await;
}
