//! A redis-server of a test's (or the load benchmark's) own on a free
//! loopback port, stopped by its PID; `INFO` figures read with redis-cli.
//! Shared by `tests/api/storage.rs` and `benches/load.rs` (by `#[path]`).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = RedisServer { child: None, port };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// (Re)starts it on the same port, empty, and waits until it answers.
    pub async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs the redis-server package)");
        self.child = Some(child);
        let started = Instant::now();
        loop {
            let pong = Command::new("redis-cli")
                .args(["-p", &self.port.to_string(), "ping"])
                .output();
            if pong.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG") {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            actix_rt::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills it (SIGKILL, by its PID).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The text of `INFO <section>`.
    fn info(&self, section: &str) -> String {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "info", section])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Bytes Redis uses (`used_memory`).
    #[allow(dead_code)] // the benchmark's
    pub fn used_memory(&self) -> u64 {
        self.info("memory")
            .lines()
            .find_map(|line| line.strip_prefix("used_memory:"))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Calls of a command so far (`INFO commandstats`).
    #[allow(dead_code)] // the tests'
    pub fn calls(&self, command: &str) -> u64 {
        self.info("commandstats")
            .lines()
            .find_map(|line| line.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next()?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
