//! A redis-server of a test's (or the load benchmark's) own on a free
//! loopback port, stopped by its PID; `INFO` figures read with redis-cli.
//! Shared by `tests/api/storage.rs` and `benches/load.rs` (by `#[path]`).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    /// redis-server's arguments besides the defaults below.
    server_args: Vec<String>,
    /// How redis-cli reaches it.
    cli_args: Vec<String>,
}

/// A TLS-only redis-server's files and the user the proxy signs in as.
#[allow(dead_code)] // the tests'
pub struct TlsSetup<'a> {
    pub cert_file: &'a str,
    pub key_file: &'a str,
    pub ca_file: &'a str,
    /// `requirepass` (the `default` user's password).
    pub password: &'a str,
    /// An ACL user with every right: (name, password).
    pub user: (&'a str, &'a str),
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = RedisServer {
            child: None,
            port,
            server_args: vec!["--port".into(), port.to_string()],
            cli_args: vec!["-p".into(), port.to_string()],
        };
        server.restart().await;
        server
    }

    /// One that speaks only TLS on its port, with a password and an ACL user.
    #[allow(dead_code)] // the tests'
    pub async fn start_tls(tls: TlsSetup<'_>) -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (user, user_password) = tls.user;
        let server_args = [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            tls.cert_file,
            "--tls-key-file",
            tls.key_file,
            "--tls-ca-cert-file",
            tls.ca_file,
            "--tls-auth-clients",
            "no",
            "--requirepass",
            tls.password,
            "--user",
            user,
            "on",
            &format!(">{user_password}"),
            "~*",
            "&*",
            "+@all",
        ];
        let cli_args = [
            "--tls",
            "--cacert",
            tls.ca_file,
            "-p",
            &port.to_string(),
            "--user",
            user,
            "--pass",
            user_password,
            "--no-auth-warning",
        ];
        let mut server = RedisServer {
            child: None,
            port,
            server_args: server_args.iter().map(|a| a.to_string()).collect(),
            cli_args: cli_args.iter().map(|a| a.to_string()).collect(),
        };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// (Re)starts it on the same port, empty, and waits until it answers.
    pub async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(&self.server_args)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test.sh installs the redis-server package)");
        self.child = Some(child);
        let started = Instant::now();
        loop {
            let pong = Command::new("redis-cli").args(&self.cli_args).arg("ping").output();
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
        self.cli(&["info", section])
    }

    /// What redis-cli prints for a command.
    pub fn cli(&self, command: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(&self.cli_args)
            .args(command)
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
