//! `mcp-oauth-proxy check-config`: the configuration parsed exactly as the
//! service parses it ([`Config::from_lookup`], after `.env`), printed as
//! `NAME = value` lines grouped by section, defaults included.
//!
//! Secrets are never printed: `(set)`, `(from file PATH)` or `(generated)`
//! stand for them, and a password in a URL (Redis, the MCP server) shows as
//! `****`. Nothing is opened, bound or contacted: the store, the listeners and
//! the upstream's discovery document are left alone (start-up does those).

use secrecy::SecretString;
use url::Url;

use crate::config::{
    AuditSink, EncryptionSetting, JwtAlgorithm, KeySetting, LogFormat, StorageSetting, UpstreamAuthMethod,
    UpstreamEndpoints,
};
use crate::Config;

/// Runs `check-config` on the process environment: prints the settings and
/// returns 0, or one error line and 2.
pub fn run() -> u8 {
    let lookup = |name: &str| std::env::var(name).ok();
    match Config::from_lookup(lookup) {
        Ok(config) => {
            print!("{}", report(&config, &lookup));
            0
        }
        Err(e) => {
            eprintln!("mcp-oauth-proxy: configuration error: {e}");
            2
        }
    }
}

/// The effective settings of `config`; `lookup` (the variables it was read
/// from) tells which secrets came from a `_FILE` twin.
pub fn report(config: &Config, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = Report {
        text: String::new(),
        lookup,
    };
    let c = config;

    out.section("service");
    out.line("OAUTH_PROXY_BIND", c.bind);
    out.line("OAUTH_PROXY_WORKERS", c.workers);
    out.line("OAUTH_PROXY_BASE_URL", &c.issuer);
    out.line("OAUTH_PROXY_SCOPES", list(&c.scopes, " "));
    out.line("OAUTH_PROXY_REDIRECT_PATH", &c.redirect_path);
    out.line("OAUTH_PROXY_MCP_PATH", &c.mcp_path);
    out.line(
        "OAUTH_PROXY_ALLOWED_REDIRECT_URI_PATTERNS",
        c.allowed_redirect_uri_patterns
            .as_ref()
            .map_or_else(|| "(default: loopback and any https URI)".into(), |p| list(p, " ")),
    );
    out.line("OAUTH_PROXY_CONSENT_REQUIRED", c.consent_required);
    out.line("OAUTH_PROXY_ENABLE_TOKEN_SWAP", c.token_swap);
    out.line("OAUTH_PROXY_FORWARD_PKCE", c.forward_pkce);
    out.line("OAUTH_PROXY_STATIC_DIR", &c.static_dir);
    out.line("OAUTH_PROXY_DISABLE_THP", c.disable_transparent_huge_pages);
    out.line(
        "OAUTH_PROXY_EXTRA_CA_FILE",
        match out.raw("OAUTH_PROXY_EXTRA_CA_FILE") {
            None => "(unset: Mozilla's roots only)".to_string(),
            Some(path) => format!("{path} ({} roots added)", c.outbound_tls.extra_roots()),
        },
    );

    out.section("upstream");
    match &c.upstream.endpoints {
        UpstreamEndpoints::Discover { issuer } => {
            out.line(
                "OAUTH_PROXY_UPSTREAM_ISSUER",
                format!("{} (discovered at start-up)", url(issuer)),
            );
        }
        UpstreamEndpoints::Explicit {
            authorization_endpoint,
            token_endpoint,
        } => {
            out.line(
                "OAUTH_PROXY_UPSTREAM_AUTHORIZATION_ENDPOINT",
                url(authorization_endpoint),
            );
            out.line("OAUTH_PROXY_UPSTREAM_TOKEN_ENDPOINT", url(token_endpoint));
        }
    }
    out.line(
        "OAUTH_PROXY_UPSTREAM_USERINFO_ENDPOINT",
        optional_url(c.upstream.userinfo_endpoint.as_ref()),
    );
    out.line(
        "OAUTH_PROXY_UPSTREAM_REVOCATION_ENDPOINT",
        optional_url(c.upstream.revocation_endpoint.as_ref()),
    );
    out.line("OAUTH_PROXY_UPSTREAM_CLIENT_ID", &c.upstream.client_id);
    out.secret(
        "OAUTH_PROXY_UPSTREAM_CLIENT_SECRET",
        Some(&c.upstream.client_secret),
        "(unset)",
    );
    out.line("OAUTH_PROXY_UPSTREAM_SCOPES", list(&c.upstream.scopes, " "));
    out.line(
        "OAUTH_PROXY_UPSTREAM_TOKEN_ENDPOINT_AUTH_METHOD",
        match c.upstream.auth_method {
            UpstreamAuthMethod::ClientSecretBasic => "client_secret_basic",
            UpstreamAuthMethod::ClientSecretPost => "client_secret_post",
        },
    );
    out.line(
        "OAUTH_PROXY_UPSTREAM_EXTRA_AUTHORIZE_PARAMS",
        if c.upstream.extra_authorize_params.is_empty() {
            "(none)".to_string()
        } else {
            serde_urlencoded::to_string(&c.upstream.extra_authorize_params).unwrap_or_default()
        },
    );
    out.line("OAUTH_PROXY_UPSTREAM_TIMEOUT", c.upstream.timeout.as_secs());
    out.line("OAUTH_PROXY_UPSTREAM_NAME", &c.provider_name);

    out.section("tokens");
    let l = &c.lifetimes;
    out.line("OAUTH_PROXY_ACCESS_TOKEN_TTL", l.access_token.as_secs());
    out.line("OAUTH_PROXY_REFRESH_TOKEN_TTL", l.refresh_token.as_secs());
    out.line("OAUTH_PROXY_AUTHORIZATION_CODE_TTL", l.authorization_code.as_secs());
    out.line("OAUTH_PROXY_TRANSACTION_TTL", l.transaction.as_secs());
    out.line("OAUTH_PROXY_UNUSED_CLIENT_TTL", l.unused_client.as_secs());
    out.line("OAUTH_PROXY_GRANT_MAX_LIFETIME", l.grant_max.as_secs());
    out.line(
        "OAUTH_PROXY_JWT_ALGORITHM",
        match c.jwt.algorithm {
            JwtAlgorithm::Hs256 => "HS256",
            JwtAlgorithm::Es256 => "ES256",
            JwtAlgorithm::EdDsa => "EdDSA",
        },
    );
    if c.jwt.algorithm == JwtAlgorithm::Hs256 {
        out.key("OAUTH_PROXY_JWT_SIGNING_KEY", &c.jwt.signing_key);
    } else {
        out.secret(
            "OAUTH_PROXY_JWT_PRIVATE_KEY",
            c.jwt.private_key_pem.as_ref(),
            "(generated)",
        );
    }
    out.secret("OAUTH_PROXY_JWT_PREVIOUS_KEY", c.jwt.previous_key.as_ref(), "(unset)");
    match &c.encryption {
        EncryptionSetting::Key(key) => out.key("OAUTH_PROXY_ENCRYPTION_KEY", key),
        EncryptionSetting::Disabled => out.line("OAUTH_PROXY_ENCRYPTION_KEY", "false (records stored in clear)"),
    }
    out.key("OAUTH_PROXY_CONSENT_SIGNING_KEY", &c.consent_signing_key);
    out.line("OAUTH_PROXY_CUSTOM_CLAIMS", list(&c.custom_claims, " "));
    let allowed_users: Vec<String> = c
        .allowed_users
        .rules
        .iter()
        .map(|rule| format!("{}:{}", rule.claim, rule.pattern))
        .collect();
    out.line(
        "OAUTH_PROXY_ALLOWED_USERS",
        if allowed_users.is_empty() {
            "(anyone the upstream signs in)".to_string()
        } else {
            allowed_users.join(" ")
        },
    );
    out.secret(
        "OAUTH_PROXY_INTROSPECTION_SECRET",
        c.introspection_secret.as_ref(),
        "(unset: /introspect refused)",
    );

    out.section("storage");
    out.line(
        "OAUTH_PROXY_STORAGE",
        match &c.storage {
            StorageSetting::Memory => "memory".to_string(),
            StorageSetting::Directory(dir) => dir.display().to_string(),
            StorageSetting::Redis(raw) => Url::parse(raw).map_or_else(|_| "(a Redis URL)".into(), |u| url(&u)),
        },
    );

    out.section("gateway");
    out.line(
        "OAUTH_PROXY_MCP_UPSTREAM_URL",
        optional_url(c.gateway.upstream_url.as_ref()),
    );
    out.line("OAUTH_PROXY_MCP_CONNECT_TIMEOUT", c.gateway.connect_timeout.as_secs());
    out.line("OAUTH_PROXY_MCP_RESPONSE_TIMEOUT", c.gateway.response_timeout.as_secs());
    out.line("OAUTH_PROXY_MCP_MAX_BODY", c.gateway.max_body);
    out.line("OAUTH_PROXY_ALLOWED_ORIGINS", list(&c.gateway.allowed_origins, " "));
    out.line("OAUTH_PROXY_MCP_REQUIRED_SCOPES", list(&c.gateway.required_scopes, " "));

    out.section("limits");
    out.line("OAUTH_PROXY_MAX_CLIENTS", c.registration.max_clients);
    out.line("OAUTH_PROXY_REGISTRATION_RATE_LIMIT", c.registration.per_ip_per_minute);
    out.line("OAUTH_PROXY_AUTHORIZE_RATE_LIMIT", c.authorize_rate_limit);
    out.line("OAUTH_PROXY_MAX_PENDING_AUTHORIZATIONS", c.max_pending_authorizations);
    let trusted = out.raw("OAUTH_PROXY_TRUSTED_PROXIES");
    out.line(
        "OAUTH_PROXY_TRUSTED_PROXIES",
        trusted.unwrap_or_else(|| "(none: forwarding headers ignored)".into()),
    );

    out.section("operations");
    let o = &c.operations;
    out.line(
        "OAUTH_PROXY_AUDIT_LOG",
        match &o.audit_log {
            AuditSink::Off => "off".to_string(),
            AuditSink::Stdout => "stdout".to_string(),
            AuditSink::File(path) => path.display().to_string(),
        },
    );
    out.line("OAUTH_PROXY_AUDIT_REQUIRED", o.audit_required);
    out.line(
        "OAUTH_PROXY_ADMIN_BIND",
        o.admin_bind
            .map_or_else(|| "(unset: no admin listener)".to_string(), |b| b.to_string()),
    );
    out.secret(
        "OAUTH_PROXY_ADMIN_TOKEN",
        o.admin_token.as_ref(),
        "(unset: the admin API is refused)",
    );
    out.line(
        "OAUTH_PROXY_LOG_FORMAT",
        match o.log_format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        },
    );
    out.text.push_str(
        "\n# the configuration is valid (nothing was opened, bound or contacted: the store, the listeners \
         and the upstream are checked at start-up)\n",
    );
    out.text
}

struct Report<'a> {
    text: String,
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Report<'_> {
    fn section(&mut self, name: &str) {
        if !self.text.is_empty() {
            self.text.push('\n');
        }
        self.text.push_str(&format!("[{name}]\n"));
    }

    fn line(&mut self, name: &str, value: impl std::fmt::Display) {
        self.text.push_str(&format!("{name} = {value}\n"));
    }

    /// The variable's trimmed value, when set.
    fn raw(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    /// A secret by where it came from, never its value.
    fn secret(&mut self, name: &str, value: Option<&SecretString>, unset: &str) {
        let shown = match (value, self.raw(&format!("{name}_FILE"))) {
            (None, _) => unset.to_string(),
            (Some(_), Some(path)) => format!("(from file {path})"),
            (Some(_), None) => "(set)".to_string(),
        };
        self.line(name, shown);
    }

    fn key(&mut self, name: &str, key: &KeySetting) {
        match key {
            KeySetting::Given(secret) => self.secret(name, Some(secret), ""),
            KeySetting::Generate => self.line(name, "(generated)"),
        }
    }
}

fn list(items: &[String], sep: &str) -> String {
    if items.is_empty() {
        "(none)".into()
    } else {
        items.join(sep)
    }
}

/// A URL with any password replaced by `****`.
fn url(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("****"));
    }
    shown.to_string()
}

fn optional_url(value: Option<&Url>) -> String {
    value.map_or_else(|| "(unset)".into(), url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> (Config, HashMap<String, String>) {
        let mut vars: HashMap<String, String> = [
            ("OAUTH_PROXY_BASE_URL", "https://proxy.example"),
            (
                "OAUTH_PROXY_UPSTREAM_AUTHORIZATION_ENDPOINT",
                "https://up.example/authorize",
            ),
            ("OAUTH_PROXY_UPSTREAM_TOKEN_ENDPOINT", "https://up.example/token"),
            ("OAUTH_PROXY_UPSTREAM_CLIENT_ID", "id"),
            ("OAUTH_PROXY_UPSTREAM_CLIENT_SECRET", "upstream-secret-value"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in pairs {
            vars.insert(k.to_string(), v.to_string());
        }
        let config = Config::from_lookup(|n| vars.get(n).cloned()).unwrap();
        (config, vars)
    }

    #[test]
    fn a_redis_password_is_masked_and_keys_are_never_shown() {
        let key = "k".repeat(40);
        let (config, vars) = config(&[
            ("OAUTH_PROXY_STORAGE", "redis://:redis-password-9@127.0.0.1:6379/0"),
            ("OAUTH_PROXY_JWT_SIGNING_KEY", &key),
            ("OAUTH_PROXY_ENCRYPTION_KEY", &key),
            ("OAUTH_PROXY_CONSENT_SIGNING_KEY", &key),
        ]);
        let text = report(&config, &|n| vars.get(n).cloned());
        assert!(
            text.contains("OAUTH_PROXY_STORAGE = redis://:****@127.0.0.1:6379/0"),
            "{text}"
        );
        assert!(!text.contains("redis-password-9") && !text.contains(&key), "{text}");
        assert!(!text.contains("upstream-secret-value"), "{text}");
        assert!(text.contains("OAUTH_PROXY_UPSTREAM_CLIENT_SECRET = (set)"), "{text}");
        assert!(text.contains("OAUTH_PROXY_AUDIT_LOG = stdout"), "{text}");
    }
}
