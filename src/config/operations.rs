//! What the operator watches and controls the service with: the audit
//! trail, the admin listener (metrics, readiness, the admin API) and the
//! log format.

use std::net::SocketAddr;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};

use super::env::Env;
use super::{bad, ConfigError, StorageSetting};

/// Where audit events go (`OAUTH_PROXY_AUDIT_LOG`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditSink {
    Off,
    Stdout,
    File(PathBuf),
}

/// `OAUTH_PROXY_LOG_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    /// One JSON object per line.
    Json,
}

/// Shortest admin token accepted: it guards the kill switch.
const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// The operations section, as read.
#[derive(Debug, Clone)]
pub struct Operations {
    pub audit_log: AuditSink,
    /// `true`: a request whose audit event cannot be queued fails (503).
    pub audit_required: bool,
    /// The admin listener (`/metrics`, `/readyz`, `/admin`); `None`: none.
    pub admin_bind: Option<SocketAddr>,
    /// The bearer token the admin API requires; `None`: the API is refused.
    pub admin_token: Option<SecretString>,
    pub log_format: LogFormat,
}

/// `OAUTH_PROXY_AUDIT_LOG`, `OAUTH_PROXY_AUDIT_REQUIRED`,
/// `OAUTH_PROXY_ADMIN_BIND`, `OAUTH_PROXY_ADMIN_TOKEN` (or its `_FILE`
/// twin) and `OAUTH_PROXY_LOG_FORMAT`.
pub(super) fn read_operations(env: &Env, storage: &StorageSetting) -> Result<Operations, ConfigError> {
    let audit_log = match env.get("OAUTH_PROXY_AUDIT_LOG").as_deref() {
        Some("off") => AuditSink::Off,
        Some("stdout") => AuditSink::Stdout,
        Some("") => return Err(bad("OAUTH_PROXY_AUDIT_LOG", "use `off`, `stdout` or a file path")),
        Some(path) => AuditSink::File(path.into()),
        None => match storage {
            StorageSetting::Directory(dir) => AuditSink::File(dir.join("audit.jsonl")),
            _ => AuditSink::Stdout,
        },
    };
    let audit_required = env.boolean("OAUTH_PROXY_AUDIT_REQUIRED", false)?;
    if audit_required && audit_log == AuditSink::Off {
        return Err(bad(
            "OAUTH_PROXY_AUDIT_REQUIRED",
            "is true but OAUTH_PROXY_AUDIT_LOG is off: name where audit events go",
        ));
    }
    let admin_bind = env.parsed(
        "OAUTH_PROXY_ADMIN_BIND",
        "an address and port (e.g. 127.0.0.1:9090)",
        |raw| raw.parse::<SocketAddr>().ok(),
    )?;
    let admin_token = match env.secret(twin!("OAUTH_PROXY_ADMIN_TOKEN"))? {
        Some(given) if given.value.expose_secret().len() < MIN_ADMIN_TOKEN_LEN => {
            return Err(bad(
                given.variable,
                format!("must be at least {MIN_ADMIN_TOKEN_LEN} characters (e.g. `openssl rand -base64 32`)"),
            ))
        }
        Some(given) => Some(given.value),
        None => None,
    };
    let log_format = match env.get("OAUTH_PROXY_LOG_FORMAT").as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(_) => return Err(bad("OAUTH_PROXY_LOG_FORMAT", "use `text` or `json`")),
    };
    Ok(Operations {
        audit_log,
        audit_required,
        admin_bind,
        admin_token,
        log_format,
    })
}
