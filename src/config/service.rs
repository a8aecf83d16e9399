//! The service itself: where it listens, its public URL (the issuer), its
//! paths, the scopes it advertises, consent, and the roots its outbound TLS
//! trusts.

use std::net::SocketAddr;

use url::Url;

use super::env::{check_path, parse_http_url, Env};
use super::{bad, ConfigError};
use crate::oauth::redirect_uri::pattern_pins_host;
use crate::tls::OutboundTls;

/// The listener and the public URL.
pub(super) struct Service {
    pub(super) bind: SocketAddr,
    pub(super) workers: usize,
    pub(super) issuer: String,
    pub(super) base_url: Url,
}

/// `OAUTH_PROXY_BIND`, `OAUTH_PROXY_WORKERS` and `OAUTH_PROXY_BASE_URL`.
pub(super) fn read_service(env: &Env) -> Result<Service, ConfigError> {
    let bind = env
        .parsed("OAUTH_PROXY_BIND", "an address like 127.0.0.1:8080", |v| {
            v.parse::<SocketAddr>().ok()
        })?
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));

    let default_workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let workers = env.number("OAUTH_PROXY_WORKERS", default_workers)?;
    if workers == 0 {
        return Err(bad("OAUTH_PROXY_WORKERS", "must be at least 1"));
    }

    let base_raw = env.required("OAUTH_PROXY_BASE_URL")?;
    let issuer = base_raw.trim_end_matches('/').to_string();
    let base_url = parse_http_url("OAUTH_PROXY_BASE_URL", &issuer)?;
    if base_url.query().is_some() || base_url.fragment().is_some() {
        return Err(bad(
            "OAUTH_PROXY_BASE_URL",
            "must not have a query or fragment (RFC 8414 §2)",
        ));
    }
    Ok(Service {
        bind,
        workers,
        issuer,
        base_url,
    })
}

/// The scopes advertised to clients, and the variable they came from (for
/// errors that point the operator at it).
pub(super) struct Scopes {
    pub(super) advertised: Vec<String>,
    pub(super) variable: &'static str,
}

/// `OAUTH_PROXY_SCOPES`, by default the upstream scopes.
pub(super) fn read_scopes(env: &Env, upstream_scopes: &[String]) -> Scopes {
    match env.get("OAUTH_PROXY_SCOPES") {
        Some(_) => Scopes {
            advertised: env.list("OAUTH_PROXY_SCOPES"),
            variable: "OAUTH_PROXY_SCOPES",
        },
        None => Scopes {
            advertised: upstream_scopes.to_vec(),
            variable: "OAUTH_PROXY_UPSTREAM_SCOPES",
        },
    }
}

/// The upstream callback path and the MCP endpoint's path.
pub(super) struct Paths {
    pub(super) redirect_path: String,
    pub(super) mcp_path: String,
}

/// `OAUTH_PROXY_REDIRECT_PATH` and `OAUTH_PROXY_MCP_PATH`.
pub(super) fn read_paths(env: &Env) -> Result<Paths, ConfigError> {
    let redirect_path = env
        .get("OAUTH_PROXY_REDIRECT_PATH")
        .unwrap_or_else(|| "/oauth/callback".into());
    check_path("OAUTH_PROXY_REDIRECT_PATH", &redirect_path)?;
    let mcp_path = env.get("OAUTH_PROXY_MCP_PATH").unwrap_or_else(|| "/mcp".into());
    check_path("OAUTH_PROXY_MCP_PATH", &mcp_path)?;
    let mcp_path = mcp_path.trim_end_matches('/').to_string();
    if mcp_path.is_empty() {
        return Err(bad("OAUTH_PROXY_MCP_PATH", "must not be `/`"));
    }
    Ok(Paths {
        redirect_path,
        mcp_path,
    })
}

/// Operator patterns for client redirect URIs; `None` keeps the defaults.
pub(super) fn read_redirect_uri_patterns(env: &Env) -> Option<Vec<String>> {
    env.get("OAUTH_PROXY_ALLOWED_REDIRECT_URI_PATTERNS")
        .map(|_| env.list("OAUTH_PROXY_ALLOWED_REDIRECT_URI_PATTERNS"))
}

/// `OAUTH_PROXY_CONSENT_REQUIRED`; off only when every redirect host is pinned.
pub(super) fn read_consent_required(
    env: &Env,
    allowed_redirect_uri_patterns: Option<&[String]>,
) -> Result<bool, ConfigError> {
    let consent_required = env.boolean("OAUTH_PROXY_CONSENT_REQUIRED", true)?;
    if !consent_required {
        // MCP authorization spec (security best practices, confused
        // deputy): a proxy with a static upstream client must ask for the
        // user's consent for each dynamically registered client. Without
        // consent, anyone who can register a redirect URI on a host they
        // control gets tokens for a signed-in user with one link.
        let open = match allowed_redirect_uri_patterns {
            None => Some("the default (loopback and any https URI)".to_string()),
            Some(patterns) => patterns
                .iter()
                .find(|p| !pattern_pins_host(p))
                .map(|p| format!("`{p}`")),
        };
        if let Some(open) = open {
            return Err(bad(
                "OAUTH_PROXY_CONSENT_REQUIRED",
                format!(
                    "false needs OAUTH_PROXY_ALLOWED_REDIRECT_URI_PATTERNS to pin every redirect host (e.g. `https://app.example.com/callback http://127.0.0.1:*`), but {open} lets any registered client receive codes without the user's consent; pin the hosts or keep consent on"
                ),
            ));
        }
    }
    Ok(consent_required)
}

/// `OAUTH_PROXY_EXTRA_CA_FILE`: roots added to Mozilla's for every outbound
/// TLS connection (upstream, MCP server, Redis).
pub(super) fn read_outbound_tls(env: &Env) -> Result<OutboundTls, ConfigError> {
    match env.get("OAUTH_PROXY_EXTRA_CA_FILE") {
        None => Ok(OutboundTls::default()),
        Some(path) => {
            let bundle = std::fs::read(&path)
                .map_err(|e| bad("OAUTH_PROXY_EXTRA_CA_FILE", format!("cannot read {path}: {e}")))?;
            OutboundTls::new(Some(&bundle))
                .map_err(|problem| bad("OAUTH_PROXY_EXTRA_CA_FILE", format!("{path} {problem}")))
        }
    }
}
