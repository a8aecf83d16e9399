//! Client ID Metadata Documents (MCP authorization 2026-07-28): whether
//! `https://` client ids are accepted, and where their documents may come
//! from.

use super::env::Env;
use super::{bad, ConfigError};

/// `OAUTH_PROXY_CIMD*`, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientDocumentSettings {
    /// `OAUTH_PROXY_CIMD`: accept document client ids (and advertise it).
    pub enabled: bool,
    /// `OAUTH_PROXY_CIMD_ALLOWED_HOSTS`: host patterns, lower case, each a
    /// host (`claude.ai`) or a wildcard over its subdomains
    /// (`*.example.com`); `None`: any public host.
    pub allowed_hosts: Option<Vec<String>>,
    /// `OAUTH_PROXY_CIMD_ALLOW_PRIVATE_NETWORKS`: documents may live on
    /// loopback, private and link-local addresses (intranets, tests).
    pub allow_private_networks: bool,
    /// How long one fetch may take, connection, headers and body together.
    /// No variable sets it (tests shorten it).
    pub fetch_timeout: std::time::Duration,
}

impl Default for ClientDocumentSettings {
    fn default() -> Self {
        ClientDocumentSettings {
            enabled: true,
            allowed_hosts: None,
            allow_private_networks: false,
            fetch_timeout: std::time::Duration::from_secs(5),
        }
    }
}

/// When a refresh token is issued (`OAUTH_PROXY_REFRESH_TOKENS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RefreshTokenPolicy {
    /// With every code exchange (claude.ai never asks for `offline_access`).
    #[default]
    Always,
    /// Only when the authorization asked for the `offline_access` scope.
    OfflineAccess,
}

pub(super) fn read_client_documents(env: &Env) -> Result<ClientDocumentSettings, ConfigError> {
    const HOSTS: &str = "OAUTH_PROXY_CIMD_ALLOWED_HOSTS";
    let patterns = env.list(HOSTS);
    for pattern in &patterns {
        if !is_host_pattern(pattern) {
            return Err(bad(
                HOSTS,
                format!("`{pattern}` is not a host pattern (use `claude.ai` or `*.example.com`)"),
            ));
        }
    }
    Ok(ClientDocumentSettings {
        enabled: env.boolean("OAUTH_PROXY_CIMD", true)?,
        allowed_hosts: (!patterns.is_empty()).then(|| patterns.iter().map(|p| p.to_ascii_lowercase()).collect()),
        allow_private_networks: env.boolean("OAUTH_PROXY_CIMD_ALLOW_PRIVATE_NETWORKS", false)?,
        ..ClientDocumentSettings::default()
    })
}

pub(super) fn read_refresh_tokens(env: &Env) -> Result<RefreshTokenPolicy, ConfigError> {
    Ok(env
        .parsed(
            "OAUTH_PROXY_REFRESH_TOKENS",
            "`always` or `offline_access`",
            |v| match v.to_ascii_lowercase().as_str() {
                "always" => Some(RefreshTokenPolicy::Always),
                "offline_access" => Some(RefreshTokenPolicy::OfflineAccess),
                _ => None,
            },
        )?
        .unwrap_or_default())
}

/// A host name, or `*.` followed by one: letters, digits, `-` and `.`, no
/// empty label.
fn is_host_pattern(pattern: &str) -> bool {
    let host = pattern.strip_prefix("*.").unwrap_or(pattern);
    !host.is_empty()
        && host
            .split('.')
            .all(|label| !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns_are_hosts_or_a_leading_wildcard() {
        for good in ["claude.ai", "*.example.com", "intranet", "a-b.c"] {
            assert!(is_host_pattern(good), "{good}");
        }
        for wrong in [
            "",
            "*",
            "*.",
            "a*.example.com",
            "example..com",
            "https://claude.ai",
            "host:443",
            "*.*.a",
        ] {
            assert!(!is_host_pattern(wrong), "{wrong}");
        }
    }
}
