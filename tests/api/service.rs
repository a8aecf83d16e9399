//! The service binary: configuration errors stop start-up with one clear
//! line, and SIGTERM shuts it down cleanly (the original `destroy`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use awc::http::StatusCode;

use crate::helpers::{free_port, jwt_payload, upstream_settings, TestApp};
use crate::mock_upstream::{MockUpstream, MockUpstreamConfig};

const BINARY: &str = env!("CARGO_BIN_EXE_mcp-oauth-proxy");

/// The binary as a command run in an empty directory of its own (so no
/// developer `.env` leaks into the test, and no two runs share a working
/// directory), removed when this is dropped.
pub struct Service {
    command: Command,
    _cwd: tempfile::TempDir,
}

impl std::ops::Deref for Service {
    type Target = Command;

    fn deref(&self) -> &Command {
        &self.command
    }
}

impl std::ops::DerefMut for Service {
    fn deref_mut(&mut self) -> &mut Command {
        &mut self.command
    }
}

pub fn service() -> Service {
    let cwd = tempfile::tempdir().unwrap();
    let mut command = Command::new(BINARY);
    command.current_dir(cwd.path()).env_clear().env("RUST_LOG", "info");
    Service { command, _cwd: cwd }
}

#[actix_web::test]
async fn a_missing_variable_stops_start_up_with_a_line_naming_it() {
    let output = service().env("OAUTH_PROXY_UPSTREAM_CLIENT_ID", "id").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("OAUTH_PROXY_BASE_URL: is required"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

#[actix_web::test]
async fn a_bad_value_stops_start_up_naming_the_variable() {
    let output = service()
        .env("OAUTH_PROXY_BASE_URL", "http://127.0.0.1:1")
        .env(
            "OAUTH_PROXY_UPSTREAM_AUTHORIZATION_ENDPOINT",
            "https://up.example/authorize",
        )
        .env("OAUTH_PROXY_UPSTREAM_TOKEN_ENDPOINT", "https://up.example/token")
        .env("OAUTH_PROXY_UPSTREAM_CLIENT_ID", "id")
        .env("OAUTH_PROXY_UPSTREAM_CLIENT_SECRET", "secret")
        .env("OAUTH_PROXY_REFRESH_TOKEN_TTL", "forever")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("OAUTH_PROXY_REFRESH_TOKEN_TTL"), "{stderr}");
}

#[actix_web::test]
async fn sigterm_stops_the_service_cleanly() {
    let upstream = MockUpstream::start(MockUpstreamConfig::default()).await;
    let service = RunningService::start(free_port(), &upstream_settings(&upstream)).await;
    let status = service.stop_with("TERM").await;
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");
    upstream.stop().await;
}

/// `THP_enabled` of a process (Linux reports it in /proc/<pid>/status).
#[cfg(target_os = "linux")]
fn thp_enabled(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("THP_enabled:"))
        .expect("Linux reports THP_enabled")
        .trim()
        .to_string()
}

/// khugepaged stalls the proxy for milliseconds where THP is `always`: the
/// service opts its own process out, unless OAUTH_PROXY_DISABLE_THP=false.
#[cfg(target_os = "linux")]
#[actix_web::test]
async fn the_service_opts_its_process_out_of_transparent_huge_pages() {
    let upstream = MockUpstream::start(MockUpstreamConfig::default()).await;
    // Memory storage: the test needs nothing on disk.
    let mut settings = upstream_settings(&upstream);
    settings.push(("OAUTH_PROXY_STORAGE", "memory".to_string()));
    let service = RunningService::start(free_port(), &settings).await;
    assert_eq!(thp_enabled(service.pid()), "0");
    drop(service);

    settings.push(("OAUTH_PROXY_DISABLE_THP", "false".to_string()));
    let service = RunningService::start(free_port(), &settings).await;
    assert_eq!(
        thp_enabled(service.pid()),
        thp_enabled(std::process::id()),
        "left as the parent's"
    );
    drop(service);
    upstream.stop().await;
}

#[test]
fn the_env_example_is_a_valid_configuration() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".env.example");
    let values: std::collections::HashMap<String, String> = dotenvy::from_path_iter(&path)
        .expect(".env.example exists")
        .map(|item| item.expect(".env.example parses as a .env file"))
        .collect();
    let config = mcp_oauth_proxy::Config::from_lookup(|name| values.get(name).cloned()).expect("a valid configuration");
    assert_eq!(config.upstream.scopes, ["read:user", "user:email"]);
    assert_eq!(config.provider_name, "GitHub");
}

/// The service binary running as its own process, stopped by its PID.
pub struct RunningService {
    child: std::process::Child,
    pub address: String,
    /// Its working directory, removed after the process is stopped.
    _command: Service,
}

impl RunningService {
    /// Starts the binary with these variables on `port` and waits for `/healthz`.
    pub async fn start(port: u16, variables: &[(&str, String)]) -> RunningService {
        let address = format!("127.0.0.1:{port}");
        let mut command = service();
        command
            .env("OAUTH_PROXY_BIND", &address)
            .env("OAUTH_PROXY_BASE_URL", format!("http://{address}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (name, value) in variables {
            command.env(name, value);
        }
        let child = command.spawn().unwrap();
        let service = RunningService {
            child,
            address: format!("http://{address}"),
            _command: command,
        };
        let client = awc::Client::default();
        let started = Instant::now();
        while client.get(format!("{}/healthz", service.address)).send().await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the service did not come up"
            );
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
        service
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it with a signal (`TERM` or `KILL`) and waits for it to exit.
    pub async fn stop_with(mut self, signal: &str) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                return exit;
            }
            assert!(Instant::now() < deadline, "the service did not stop after SIG{signal}");
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RunningService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary on `port` with the memory store and a placeholder upstream
/// (never called): what start-up checks and the access log need.
pub fn service_on(port: u16) -> Service {
    let mut command = service();
    command
        .env("OAUTH_PROXY_BIND", format!("127.0.0.1:{port}"))
        .env("OAUTH_PROXY_BASE_URL", format!("http://127.0.0.1:{port}"))
        .env(
            "OAUTH_PROXY_UPSTREAM_AUTHORIZATION_ENDPOINT",
            "https://up.example/authorize",
        )
        .env("OAUTH_PROXY_UPSTREAM_TOKEN_ENDPOINT", "https://up.example/token")
        .env("OAUTH_PROXY_UPSTREAM_CLIENT_ID", "id")
        .env("OAUTH_PROXY_UPSTREAM_CLIENT_SECRET", "secret")
        .env("OAUTH_PROXY_STORAGE", "memory");
    command
}

/// The binary's exit code and stderr for these variables (besides a valid
/// upstream); a service that is still up after 10 s is stopped (by its PID)
/// and counts as a failed test.
async fn start_up_failure(variables: &[(&str, &str)]) -> (Option<i32>, String) {
    let port = free_port();
    let mut command = service_on(port);
    command.stdout(Stdio::null()).stderr(Stdio::piped());
    for (name, value) in variables {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the service started instead of refusing to");
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.code(), stderr)
}

#[actix_web::test]
async fn consent_off_with_any_open_redirect_host_stops_start_up_naming_both_variables() {
    for patterns in [
        None,
        Some("https://*"),
        Some("http://127.0.0.1:* https://*.example.com/cb"),
    ] {
        let mut variables = vec![("OAUTH_PROXY_CONSENT_REQUIRED", "false")];
        if let Some(patterns) = patterns {
            variables.push(("OAUTH_PROXY_ALLOWED_REDIRECT_URI_PATTERNS", patterns));
        }
        let (code, stderr) = start_up_failure(&variables).await;
        assert_eq!(code, Some(2), "{patterns:?}: {stderr}");
        assert!(stderr.contains("OAUTH_PROXY_CONSENT_REQUIRED"), "{stderr}");
        assert!(stderr.contains("OAUTH_PROXY_ALLOWED_REDIRECT_URI_PATTERNS"), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
}

#[actix_web::test]
async fn consent_off_with_pinned_redirect_hosts_starts() {
    let upstream = MockUpstream::start(MockUpstreamConfig::default()).await;
    let mut settings = upstream_settings(&upstream);
    settings.extend([
        ("OAUTH_PROXY_STORAGE", "memory".to_string()),
        ("OAUTH_PROXY_CONSENT_REQUIRED", "false".to_string()),
        (
            "OAUTH_PROXY_ALLOWED_REDIRECT_URI_PATTERNS",
            "https://app.example.com/callback http://127.0.0.1:*".to_string(),
        ),
    ]);
    let service = RunningService::start(free_port(), &settings).await;
    let status = service.stop_with("TERM").await;
    assert!(status.success(), "{status:?}");
    upstream.stop().await;
}

#[actix_web::test]
async fn required_mcp_scopes_that_are_not_advertised_stop_start_up_naming_both_variables() {
    let (code, stderr) = start_up_failure(&[
        ("OAUTH_PROXY_UPSTREAM_SCOPES", "read:user user:email"),
        ("OAUTH_PROXY_MCP_REQUIRED_SCOPES", "repo"),
    ])
    .await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("OAUTH_PROXY_MCP_REQUIRED_SCOPES"), "{stderr}");
    assert!(stderr.contains("OAUTH_PROXY_UPSTREAM_SCOPES"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

#[actix_web::test]
async fn a_secret_and_its_file_twin_together_stop_start_up_naming_both() {
    let secret = secret_file("both", "a-consent-key-from-a-file-0123456789abcdef");
    let file = secret.path().display().to_string();
    let (code, stderr) = start_up_failure(&[
        (
            "OAUTH_PROXY_CONSENT_SIGNING_KEY",
            "a-consent-key-from-the-variable-0123456789",
        ),
        ("OAUTH_PROXY_CONSENT_SIGNING_KEY_FILE", &file),
    ])
    .await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("OAUTH_PROXY_CONSENT_SIGNING_KEY: and OAUTH_PROXY_CONSENT_SIGNING_KEY_FILE are both set"),
        "{stderr}"
    );
}

/// A secret written to a temporary file the way `echo` writes it (one
/// newline); the file is removed when the returned handle is dropped.
fn secret_file(name: &str, secret: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::with_prefix(format!("mcp-oauth-proxy-secret-{name}-")).unwrap();
    std::fs::write(file.path(), format!("{secret}\n")).unwrap();
    file
}

#[actix_web::test]
async fn a_proxy_reads_its_signing_key_from_a_file_and_its_tokens_verify_with_that_key() {
    const KEY: &str = "a-signing-key-kept-in-a-secrets-file-0123";
    let secret = secret_file("jwt-signing-key", KEY);
    let file = secret.path().display().to_string();
    let app = TestApp::spawn_with(
        &[
            ("OAUTH_PROXY_JWT_SIGNING_KEY", ""),
            ("OAUTH_PROXY_JWT_SIGNING_KEY_FILE", &file),
        ],
        MockUpstreamConfig::default(),
    )
    .await;
    let client = app.register_confidential().await;
    let tokens = app.full_flow(&client).await;
    let token = tokens["access_token"].as_str().unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&[format!("{}/mcp", app.address)]);
    validation.set_issuer(&[&app.address]);
    let verified = jsonwebtoken::decode::<serde_json::Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(KEY.as_bytes()),
        &validation,
    );
    assert!(verified.is_ok(), "verifies with the file's key: {verified:?}");
    // The file's trailing newline is not part of the key.
    let with_newline = jsonwebtoken::decode::<serde_json::Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(format!("{KEY}\n").as_bytes()),
        &validation,
    );
    assert!(with_newline.is_err());
    app.stop().await;
}

/// The token's header and payload signed again, HS256, with `key`.
fn signed_again(token: &str, key: &str) -> String {
    let payload = jwt_payload(token);
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    jsonwebtoken::encode(
        &header,
        &payload,
        &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
    )
    .unwrap()
}

#[actix_web::test]
async fn a_previous_key_with_a_slash_is_used_as_given_and_tokens_it_signed_stay_valid() {
    // `openssl rand -base64 32` output: 44 characters, here with `/` and `+`.
    const PREVIOUS: &str = "q8Vh/3kR+Zt0bWc9/Lp2mXn4sYe7uJg1aD6fHi5oKrQ=";
    const INTROSPECTION: &str = "a-resource-server-introspection-secret-01";
    assert_eq!(PREVIOUS.len(), 44);
    let app = TestApp::spawn_with(
        &[
            ("OAUTH_PROXY_JWT_PREVIOUS_KEY", PREVIOUS),
            ("OAUTH_PROXY_INTROSPECTION_SECRET", INTROSPECTION),
        ],
        MockUpstreamConfig::default(),
    )
    .await;
    let client = app.register_confidential().await;
    let tokens = app.full_flow(&client).await;
    let current = tokens["access_token"].as_str().unwrap();
    let introspect = |token: String| {
        let app = &app;
        async move {
            let mut response = app
                .http()
                .post(format!("{}/introspect", app.address))
                .insert_header(("Authorization", format!("Bearer {INTROSPECTION}")))
                .send_form(&[("token", token)])
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.json::<serde_json::Value>().await.unwrap()
        }
    };
    assert_eq!(introspect(current.to_string()).await["active"], true);
    assert_eq!(
        introspect(signed_again(current, PREVIOUS)).await["active"],
        true,
        "signed with the previous key"
    );
    assert_eq!(
        introspect(signed_again(current, "some-other-key-that-was-never-configured")).await["active"],
        false,
        "signed with a key never configured"
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_failed_discovery_stops_start_up_saying_what_to_check() {
    let (code, stderr) = start_up_failure(&[
        ("OAUTH_PROXY_UPSTREAM_AUTHORIZATION_ENDPOINT", ""),
        ("OAUTH_PROXY_UPSTREAM_TOKEN_ENDPOINT", ""),
        (
            "OAUTH_PROXY_UPSTREAM_ISSUER",
            &format!("http://127.0.0.1:{}", free_port()),
        ),
    ])
    .await;
    assert_eq!(code, Some(1), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("mcp-oauth-proxy: cannot start"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains("could not be discovered"), "{line}");
    assert!(line.contains("check OAUTH_PROXY_UPSTREAM_ISSUER"), "{line}");
    assert!(line.contains("OAUTH_PROXY_EXTRA_CA_FILE"), "{line}");
}

/// A port already in use stops start-up with one line naming the variable
/// and exit code 1: before the store is opened, and without the panics a
/// runtime dropped under running actors prints.
#[actix_web::test]
async fn a_port_in_use_stops_start_up_naming_the_variable_without_a_panic() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_address = taken.local_addr().unwrap().to_string();
    for variable in ["OAUTH_PROXY_BIND", "OAUTH_PROXY_ADMIN_BIND"] {
        let mut variables = vec![(variable, taken_address.as_str())];
        if variable == "OAUTH_PROXY_ADMIN_BIND" {
            variables.push(("OAUTH_PROXY_ADMIN_TOKEN", "an-admin-token-of-32-characters-at-least"));
        }
        let (code, stderr) = start_up_failure(&variables).await;
        assert_eq!(code, Some(1), "{variable}: {stderr}");
        assert!(!stderr.contains("panicked"), "{variable}: {stderr}");
        let line = stderr.trim();
        assert_eq!(line.lines().count(), 1, "one line: {stderr}");
        assert!(
            line.contains(&format!("cannot listen on {taken_address} ({variable})")),
            "{line}"
        );
    }
}

/// The access log names the client as the rest of the proxy sees it: behind
/// a trusted proxy, the forwarded address; from anyone else, the socket
/// peer, whatever they claim. Paths only: a query string (which may carry a
/// code or a state) is never logged.
#[actix_web::test]
async fn the_access_log_names_the_client_address_behind_trusted_proxies_and_never_the_query() {
    for (trusted, expected, spoofed_shown) in [("127.0.0.1/32", "198.51.100.7", true), ("", "127.0.0.1", false)] {
        let port = free_port();
        let log_dir = tempfile::tempdir().unwrap();
        let log_path = log_dir.path().join("access.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut command = service_on(port);
        command
            .env("OAUTH_PROXY_TRUSTED_PROXIES", trusted)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        let mut child = command.spawn().unwrap();
        let client = awc::Client::default();
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while client.get(format!("{base}/healthz")).send().await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the service did not come up"
            );
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
        let answer = client
            .get(format!(
                "{base}/.well-known/oauth-authorization-server?code=secret-code-123"
            ))
            .insert_header(("X-Forwarded-For", "198.51.100.7"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        let mut logged = String::new();
        for _ in 0..50 {
            logged = std::fs::read_to_string(&log_path).unwrap();
            if logged.contains("/.well-known/oauth-authorization-server") {
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        let line = logged
            .lines()
            .find(|line| line.contains("/.well-known/oauth-authorization-server"))
            .unwrap_or_else(|| panic!("no access log line for the request:\n{logged}"));
        assert!(line.contains(expected), "trusted={trusted:?}: {line}");
        assert_eq!(
            line.contains("198.51.100.7"),
            spoofed_shown,
            "trusted={trusted:?}: {line}"
        );
        assert!(
            !logged.contains("secret-code-123"),
            "the query string was logged: {line}"
        );
    }
}
