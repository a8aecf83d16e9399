//! The service binary: configuration errors stop start-up with one clear
//! line, and SIGTERM shuts it down cleanly (the original `destroy`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{free_port, upstream_settings};
use crate::mock_upstream::{MockUpstream, MockUpstreamConfig};

const BINARY: &str = env!("CARGO_BIN_EXE_mcp-oauth-proxy");

pub fn service() -> Command {
    let mut command = Command::new(BINARY);
    // An empty directory, so no developer `.env` leaks into the test.
    let dir = std::env::temp_dir().join(format!("mcp-oauth-proxy-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    command.current_dir(dir).env_clear().env("RUST_LOG", "info");
    command
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
    // Memory storage: other tests run the binary in the same directory.
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
