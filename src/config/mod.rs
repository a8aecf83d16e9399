//! Typed configuration, read once at start-up from the environment (and a
//! `.env` file loaded by `main`).
//!
//! Every value is parsed and validated here; a bad or missing value stops
//! start-up with one line naming the variable. Secrets are held in
//! [`secrecy::SecretString`]: `Debug` output never shows them, they are
//! zeroized on drop, and each use says `expose_secret()`.
//!
//! Every secret can come from its variable or from a file named by its
//! `_FILE` twin (`OAUTH_PROXY_JWT_SIGNING_KEY_FILE`, ...), never both. A
//! variable's value is always the secret itself, never guessed to be a path:
//! a base64 key may hold `/` and `.`.
//!
//! Each section is read by its own function, in its own file: `service`
//! (listener, public URL, paths, scopes, consent, outbound TLS), `upstream`,
//! `tokens` (lifetimes and keys), `storage`, `gateway`, `limits` and `access`
//! (who may sign in).
//! [`Config::from_lookup`] reads them in a fixed order, so with several bad
//! values the same one is reported every time.

use std::net::SocketAddr;

use secrecy::SecretString;
use url::Url;

use crate::client_address::TrustedProxies;
use crate::oauth::user_policy::AllowedUsers;
use crate::tls::OutboundTls;

/// A secret variable and its `_FILE` twin: `twin!("OAUTH_PROXY_X")` is
/// `("OAUTH_PROXY_X", "OAUTH_PROXY_X_FILE")`.
macro_rules! twin {
    ($name:literal) => {
        ($name, concat!($name, "_FILE"))
    };
}

mod access;
mod client_documents;
mod env;
mod gateway;
mod limits;
mod operations;
mod service;
mod storage;
mod tokens;
mod upstream;

#[cfg(test)]
mod tests;

pub use client_documents::{ClientDocumentSettings, RefreshTokenPolicy};
pub use gateway::GatewayConfig;
pub use limits::{RegistrationLimits, DEFAULT_MAX_PENDING_AUTHORIZATIONS};
pub use operations::{AuditSink, LogFormat, Operations};
pub use storage::StorageSetting;
pub use tokens::{EncryptionSetting, JwtAlgorithm, JwtConfig, KeySetting, Lifetimes, UNAPPROVED_TRANSACTION_TTL};
pub use upstream::{UpstreamAuthMethod, UpstreamConfig, UpstreamEndpoints};

use env::Env;

/// A configuration error: the variable and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
}

fn bad(variable: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        problem: problem.into(),
    }
}

/// The whole service configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    /// HTTP worker threads (default: one per CPU).
    pub workers: usize,
    /// The issuer: exactly the configured base URL, without a trailing slash.
    pub issuer: String,
    pub base_url: Url,
    pub upstream: UpstreamConfig,
    /// Scopes advertised to clients and granted by default.
    pub scopes: Vec<String>,
    pub token_swap: bool,
    pub consent_required: bool,
    pub redirect_path: String,
    /// Operator patterns for client redirect URIs; `None` keeps the defaults.
    pub allowed_redirect_uri_patterns: Option<Vec<String>>,
    pub lifetimes: Lifetimes,
    pub jwt: JwtConfig,
    pub encryption: EncryptionSetting,
    pub consent_signing_key: KeySetting,
    pub storage: StorageSetting,
    pub custom_claims: Vec<String>,
    pub forward_pkce: bool,
    pub mcp_path: String,
    pub gateway: GatewayConfig,
    /// Secret a resource server presents (as a Bearer token) to `/introspect`.
    pub introspection_secret: Option<SecretString>,
    pub registration: RegistrationLimits,
    /// Peers whose forwarding headers are believed (`OAUTH_PROXY_TRUSTED_PROXIES`).
    pub trusted_proxies: TrustedProxies,
    /// `/authorize` requests per client address per minute; 0 turns the limit off.
    pub authorize_rate_limit: u32,
    /// Live pending authorizations (transactions), all clients together;
    /// `/authorize` answers 503 above it (`OAUTH_PROXY_MAX_PENDING_AUTHORIZATIONS`).
    pub max_pending_authorizations: usize,
    /// Directory of static assets served under `/static` (the embedded
    /// defaults are used for files missing there).
    pub static_dir: String,
    /// How the upstream is named on the consent page.
    pub provider_name: String,
    /// Opt the service's process out of transparent huge pages (Linux).
    pub disable_transparent_huge_pages: bool,
    /// The roots every outbound TLS connection trusts (upstream, MCP server,
    /// Redis): Mozilla's plus `OAUTH_PROXY_EXTRA_CA_FILE`.
    pub outbound_tls: OutboundTls,
    /// The audit trail, the admin listener and the log format.
    pub operations: Operations,
    /// Client ID Metadata Documents (`OAUTH_PROXY_CIMD*`).
    pub client_documents: ClientDocumentSettings,
    /// `OAUTH_PROXY_REFRESH_TOKENS`.
    pub refresh_tokens: RefreshTokenPolicy,
    /// `OAUTH_PROXY_ALLOWED_USERS`: who may finish sign-in (empty: anyone
    /// the upstream signs in).
    pub allowed_users: AllowedUsers,
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration from any lookup function (tests pass a map).
    ///
    /// The sections are read in this order, which decides the variable named
    /// when several are wrong; a check across sections (Redis needs given
    /// keys, required MCP scopes must be advertised, consent off needs
    /// pinned redirect hosts) takes what it needs from sections read before.
    pub fn from_lookup<F>(lookup: F) -> Result<Config, ConfigError>
    where
        F: Fn(&str) -> Option<String>,
    {
        let env = Env { lookup: &lookup };

        let service::Service {
            bind,
            workers,
            issuer,
            base_url,
        } = service::read_service(&env)?;
        let upstream = upstream::read_upstream(&env)?;
        let scopes = service::read_scopes(&env, &upstream.scopes);
        let service::Paths {
            redirect_path,
            mcp_path,
        } = service::read_paths(&env)?;
        let allowed_redirect_uri_patterns = service::read_redirect_uri_patterns(&env);
        let lifetimes = tokens::read_lifetimes(&env)?;
        let keys = tokens::read_keys(&env)?;
        let storage = storage::read_storage(&env, &keys)?;
        let custom_claims = tokens::read_custom_claims(&env);
        let jwt = tokens::read_jwt(&env, keys.jwt_signing_key, &storage)?;
        let token_swap = env.boolean("OAUTH_PROXY_ENABLE_TOKEN_SWAP", true)?;
        let gateway = gateway::read_gateway(&env, &scopes, token_swap)?;
        let introspection_secret = tokens::read_introspection_secret(&env)?;
        let consent_required = service::read_consent_required(&env, allowed_redirect_uri_patterns.as_deref())?;
        let outbound_tls = service::read_outbound_tls(&env)?;
        let limits::Limits {
            registration,
            trusted_proxies,
            authorize_rate_limit,
            max_pending_authorizations,
        } = limits::read_limits(&env)?;
        let provider_name = upstream::read_provider_name(&env, &upstream);
        let operations = operations::read_operations(&env, &storage)?;
        let client_documents = client_documents::read_client_documents(&env)?;
        let refresh_tokens = client_documents::read_refresh_tokens(&env)?;
        let forward_pkce = env.boolean("OAUTH_PROXY_FORWARD_PKCE", false)?;
        let allowed_users = access::read_allowed_users(&env, forward_pkce)?;

        Ok(Config {
            bind,
            workers,
            issuer,
            base_url,
            upstream,
            scopes: scopes.advertised,
            token_swap,
            consent_required,
            redirect_path,
            allowed_redirect_uri_patterns,
            lifetimes,
            jwt,
            encryption: keys.encryption,
            consent_signing_key: keys.consent_signing_key,
            storage,
            custom_claims,
            forward_pkce,
            mcp_path,
            gateway,
            introspection_secret,
            registration,
            trusted_proxies,
            authorize_rate_limit,
            max_pending_authorizations,
            static_dir: env.get("OAUTH_PROXY_STATIC_DIR").unwrap_or_else(|| "static".into()),
            provider_name,
            disable_transparent_huge_pages: env.boolean("OAUTH_PROXY_DISABLE_THP", true)?,
            outbound_tls,
            operations,
            client_documents,
            refresh_tokens,
            allowed_users,
        })
    }

    /// The canonical MCP resource URL (RFC 8707 / RFC 9728), no trailing slash.
    pub fn resource(&self) -> String {
        format!("{}{}", self.issuer, self.mcp_path)
    }

    /// Absolute URL of a path under the base URL.
    pub fn url_for(&self, path: &str) -> String {
        format!("{}{}", self.issuer, path)
    }

    /// The upstream callback URL registered with the upstream client.
    pub fn callback_url(&self) -> String {
        self.url_for(&self.redirect_path)
    }

    /// Whether cookies must be `Secure` (the public URL is https).
    pub fn secure_cookies(&self) -> bool {
        self.base_url.scheme() == "https"
    }
}
