//! The audit trail written by the service binary: a hash chain that goes on
//! across a restart and a rotation (SIGHUP), checked by `audit verify`.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::helpers::{free_port, upstream_settings};
use crate::mock_upstream::{MockUpstream, MockUpstreamConfig};
use crate::service::{service, RunningService};

/// `mcp-oauth-proxy audit verify FILES...` with these variables.
fn audit_verify(files: &[&Path], variables: &[(&str, String)]) -> Output {
    let mut command = service();
    command.arg("audit").arg("verify").args(files);
    for (name, value) in variables {
        command.env(name, value);
    }
    command.output().unwrap()
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect()
}

fn events(path: &Path) -> Vec<String> {
    lines(path)
        .iter()
        .map(|line| line["event"].as_str().unwrap().to_string())
        .collect()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

struct Setup {
    dir: tempfile::TempDir,
    variables: Vec<(&'static str, String)>,
}

impl Setup {
    /// The directory store (its generated keys kept in `data/keys.json`) and
    /// the audit log in `audit.jsonl`, both in a temporary directory.
    fn new(upstream: &MockUpstream) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        let mut variables = upstream_settings(upstream);
        variables.push(("OAUTH_PROXY_STORAGE", dir.path().join("data").display().to_string()));
        variables.push((
            "OAUTH_PROXY_AUDIT_LOG",
            dir.path().join("audit.jsonl").display().to_string(),
        ));
        Setup { dir, variables }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// What `audit verify` needs to load the configuration as the service does.
    fn verify_variables(&self) -> Vec<(&'static str, String)> {
        let mut variables = self.variables.clone();
        variables.push(("OAUTH_PROXY_BASE_URL", "http://127.0.0.1:1".to_string()));
        variables
    }
}

#[actix_web::test]
async fn the_audit_chain_goes_on_across_a_restart_and_a_rotation_and_audit_verify_accepts_it() {
    let upstream = MockUpstream::start(MockUpstreamConfig::default()).await;
    let setup = Setup::new(&upstream);
    let log = setup.path("audit.jsonl");
    let rotated = setup.path("audit.jsonl.1");

    let first = RunningService::start(free_port(), &setup.variables).await;
    assert!(first.stop_with("TERM").await.success());
    assert_eq!(events(&log), ["service.started", "service.stopped", "audit.checkpoint"]);

    // A restart appends to the same file, continuing its chain.
    let second = RunningService::start(free_port(), &setup.variables).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while events(&log).len() < 4 {
        assert!(Instant::now() < deadline, "service.started was not written");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(lines(&log)[3]["seq"], 4);
    assert_ne!(lines(&log)[3]["instance"], lines(&log)[0]["instance"]);

    // logrotate: move the file, then SIGHUP; the service writes on in a new file.
    std::fs::rename(&log, &rotated).unwrap();
    let hup = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(second.pid().to_string())
        .status()
        .unwrap();
    assert!(hup.success());
    while !log.exists() {
        assert!(Instant::now() < deadline, "the audit log was not reopened after SIGHUP");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        second.stop_with("TERM").await.success(),
        "SIGHUP does not stop the service"
    );
    assert_eq!(events(&rotated).len(), 4, "nothing more in the rotated file");
    assert_eq!(events(&log), ["service.stopped", "audit.checkpoint"]);
    assert_eq!(lines(&log)[0]["seq"], 5, "the new file continues the chain");

    let keys_before = std::fs::read(setup.path("data/keys.json")).unwrap();
    let output = audit_verify(&[&rotated, &log], &setup.verify_variables());
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(
        stdout(&output).contains("audit chain intact: 6 lines in 2 files, 2 checkpoints verified"),
        "{output:?}"
    );
    assert_eq!(
        std::fs::read(setup.path("data/keys.json")).unwrap(),
        keys_before,
        "verify leaves the key file alone"
    );

    // The new file alone continues a chain begun elsewhere: accepted, and said.
    let output = audit_verify(&[&log], &setup.verify_variables());
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("continues a chain begun in a file not given"),
        "{output:?}"
    );

    // Without the service's configuration the key is out of reach: the chain
    // is still checked, and the summary says the checkpoints were not.
    let output = audit_verify(&[&rotated, &log], &[]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(stdout(&output).contains("2 checkpoints NOT checked"), "{output:?}");
    upstream.stop().await;
}

#[actix_web::test]
async fn audit_verify_names_the_line_edited_in_a_copy_and_exits_1() {
    let upstream = MockUpstream::start(MockUpstreamConfig::default()).await;
    let setup = Setup::new(&upstream);
    let log = setup.path("audit.jsonl");
    for _ in 0..2 {
        let running = RunningService::start(free_port(), &setup.variables).await;
        assert!(running.stop_with("TERM").await.success());
    }
    assert_eq!(events(&log).len(), 6);
    let output = audit_verify(&[&log], &setup.verify_variables());
    assert_eq!(output.status.code(), Some(0), "{output:?}");

    // The copy's second line (the first run's stop) claims another instance.
    let copy = setup.path("copy.jsonl");
    let original = std::fs::read_to_string(&log).unwrap();
    let mut edited: Vec<String> = original.lines().map(str::to_string).collect();
    let instance = lines(&log)[1]["instance"].as_str().unwrap().to_string();
    edited[1] = edited[1].replace(&format!(r#""instance":"{instance}""#), r#""instance":"someone-else""#);
    assert_ne!(edited[1], original.lines().nth(1).unwrap());
    std::fs::write(&copy, edited.join("\n") + "\n").unwrap();

    let output = audit_verify(&[&copy], &setup.verify_variables());
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(
        stdout(&output).contains(&format!("{}:2: edited", copy.display())),
        "{output:?}"
    );
    upstream.stop().await;
}

#[actix_web::test]
async fn audit_verify_exits_2_for_a_file_it_cannot_read_or_no_file() {
    let output = audit_verify(&[Path::new("/nonexistent/audit.jsonl")], &[]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("cannot read /nonexistent/audit.jsonl"),
        "{output:?}"
    );
    let output = service().arg("audit").arg("verify").output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}

#[actix_web::test]
async fn the_service_does_not_start_when_the_audit_log_directory_is_missing() {
    let upstream = MockUpstream::start(MockUpstreamConfig::default()).await;
    let setup = Setup::new(&upstream);
    let missing = setup.path("missing/audit.jsonl");
    let mut command = service();
    command
        .env("OAUTH_PROXY_BASE_URL", "http://127.0.0.1:1")
        .env("OAUTH_PROXY_BIND", format!("127.0.0.1:{}", free_port()));
    for (name, value) in &setup.variables {
        command.env(name, value);
    }
    command
        .env("OAUTH_PROXY_AUDIT_LOG", &missing)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the service started without its audit log");
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("OAUTH_PROXY_AUDIT_LOG") && stderr.contains("does not exist"),
        "{stderr}"
    );
    upstream.stop().await;
}
