//! Typed configuration, read once at start-up from the environment (and a
//! `.env` file loaded by `main`).
//!
//! Every value is parsed and validated here; a bad or missing value stops
//! start-up with one line naming the variable. Secrets are wrapped in
//! [`Secret`] so `Debug` output never shows them.
//!
//! Every secret can come from its variable or from a file named by its
//! `_FILE` twin (`OAUTH_PROXY_JWT_SIGNING_KEY_FILE`, ...), never both. A
//! variable's value is always the secret itself, never guessed to be a path:
//! a base64 key may hold `/` and `.`.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use url::Url;

use crate::oauth::redirect_uri::pattern_pins_host;
use crate::tls::OutboundTls;

/// A secret variable and its `_FILE` twin: `twin!("OAUTH_PROXY_X")` is
/// `("OAUTH_PROXY_X", "OAUTH_PROXY_X_FILE")`.
macro_rules! twin {
    ($name:literal) => {
        ($name, concat!($name, "_FILE"))
    };
}

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

/// A secret string; `Debug` prints a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(**redacted**)")
    }
}

/// How the proxy authenticates to the upstream token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamAuthMethod {
    /// RFC 6749 §2.3.1: HTTP Basic with form-urlencoded id and secret.
    ClientSecretBasic,
    /// Credentials in the form body.
    ClientSecretPost,
}

/// Where the upstream endpoints come from.
#[derive(Debug, Clone)]
pub enum UpstreamEndpoints {
    /// Given explicitly.
    Explicit {
        authorization_endpoint: Url,
        token_endpoint: Url,
    },
    /// Filled at start-up from the issuer's discovery document.
    Discover { issuer: Url },
}

/// The upstream OAuth provider and the proxy's pre-registered client there.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub endpoints: UpstreamEndpoints,
    pub userinfo_endpoint: Option<Url>,
    pub revocation_endpoint: Option<Url>,
    pub client_id: String,
    pub client_secret: Secret,
    pub scopes: Vec<String>,
    pub auth_method: UpstreamAuthMethod,
    pub extra_authorize_params: Vec<(String, String)>,
    /// Connect + response timeout for every upstream call.
    pub timeout: Duration,
}

/// A key given by the operator, or to be generated at start-up.
#[derive(Debug, Clone)]
pub enum KeySetting {
    Given(Secret),
    Generate,
}

/// The key for upstream tokens at rest.
#[derive(Debug, Clone)]
pub enum EncryptionSetting {
    Key(KeySetting),
    /// `OAUTH_PROXY_ENCRYPTION_KEY=false`: records are stored in clear.
    Disabled,
}

/// How proxy JWTs are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    /// A shared secret (`OAUTH_PROXY_JWT_SIGNING_KEY`).
    Hs256,
    /// ECDSA P-256; the public key is served at `/jwks.json`.
    Es256,
    /// Ed25519; the public key is served at `/jwks.json`.
    EdDsa,
}

/// The JWT signing set-up.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    pub algorithm: JwtAlgorithm,
    /// HS256: the shared secret.
    pub signing_key: KeySetting,
    /// ES256 / EdDSA: the private key PEM (from the variable or its file).
    pub private_key_pem: Option<Secret>,
    /// A previous verification key kept during rotation: the old HS256 secret,
    /// or the old public (or private) key PEM.
    pub previous_key: Option<Secret>,
}

/// The guarded MCP endpoint and the server behind it.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The MCP server (streamable HTTP) requests are forwarded to.
    pub upstream_url: Option<Url>,
    pub connect_timeout: Duration,
    /// Longest wait for the backend's response to start (headers); also the
    /// longest a client may take to send a request body.
    pub response_timeout: Duration,
    /// Largest request body accepted (`OAUTH_PROXY_MCP_MAX_BODY`); 413 above.
    pub max_body: usize,
    /// Browser origins allowed to call the MCP endpoint besides the proxy's own.
    pub allowed_origins: Vec<String>,
    /// Scopes a token must carry to use the MCP endpoint.
    pub required_scopes: Vec<String>,
}

/// Where the stores keep their data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageSetting {
    /// In this process only (tests, throwaway runs).
    Memory,
    /// The embedded store in this directory; generated keys are kept there.
    Directory(std::path::PathBuf),
    /// Redis, shared by several instances (`redis://` or `rediss://`).
    Redis(String),
}

/// Expiry of each kind of record.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    pub access_token: Duration,
    pub refresh_token: Duration,
    pub authorization_code: Duration,
    pub transaction: Duration,
    /// A pending authorization that has not been approved on the consent page
    /// yet lives this long (at most `transaction`); the full `transaction`
    /// lifetime starts when the user approves or consent is skipped. Not an
    /// environment variable: two minutes is enough to read the consent page,
    /// and tests shorten it through this field.
    pub unapproved_transaction: Duration,
    /// A registration that never completes a token exchange expires after this.
    pub unused_client: Duration,
    /// Absolute lifetime of a grant from its sign-in, however often it is
    /// refreshed (`OAUTH_PROXY_GRANT_MAX_LIFETIME`).
    pub grant_max: Duration,
}

/// How long an authorization waits on the consent page before it expires.
pub const UNAPPROVED_TRANSACTION_TTL: Duration = Duration::from_secs(120);

/// Default cap on live pending authorizations (all clients together). A
/// pending authorization is at most about 2 KiB (its `state` is capped at
/// 1 KiB), so the cap bounds them to about 20 MiB of memory or disk, and
/// 10 000 sign-ins in flight at once (about 80 a second started within the
/// two minutes an unapproved one lives) is far beyond what one proxy in front
/// of one MCP server sees.
pub const DEFAULT_MAX_PENDING_AUTHORIZATIONS: usize = 10_000;

/// Limits that keep an open `/register` from exhausting memory.
#[derive(Debug, Clone, Copy)]
pub struct RegistrationLimits {
    pub max_clients: usize,
    /// Registrations per client IP per minute; 0 turns the limit off.
    pub per_ip_per_minute: u32,
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
    pub introspection_secret: Option<Secret>,
    pub registration: RegistrationLimits,
    /// Peers whose forwarding headers are believed (`OAUTH_PROXY_TRUSTED_PROXIES`).
    pub trusted_proxies: crate::client_address::TrustedProxies,
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
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration from any lookup function (tests pass a map).
    pub fn from_lookup<F>(lookup: F) -> Result<Config, ConfigError>
    where
        F: Fn(&str) -> Option<String>,
    {
        let env = Env { lookup: &lookup };

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

        let authorization = env.url("OAUTH_PROXY_UPSTREAM_AUTHORIZATION_ENDPOINT")?;
        let token = env.url("OAUTH_PROXY_UPSTREAM_TOKEN_ENDPOINT")?;
        let upstream_issuer = env.url("OAUTH_PROXY_UPSTREAM_ISSUER")?;
        let endpoints = match (authorization, token, upstream_issuer) {
            (Some(authorization_endpoint), Some(token_endpoint), _) => UpstreamEndpoints::Explicit {
                authorization_endpoint,
                token_endpoint,
            },
            (None, None, Some(issuer)) => UpstreamEndpoints::Discover { issuer },
            (Some(_), None, _) | (None, Some(_), Some(_)) => {
                return Err(bad(
                    "OAUTH_PROXY_UPSTREAM_TOKEN_ENDPOINT",
                    "set both upstream endpoints, or only OAUTH_PROXY_UPSTREAM_ISSUER",
                ))
            }
            (None, _, None) => {
                return Err(bad(
                    "OAUTH_PROXY_UPSTREAM_AUTHORIZATION_ENDPOINT",
                    "is required (or set OAUTH_PROXY_UPSTREAM_ISSUER to use discovery)",
                ))
            }
        };

        let upstream_scopes = env.list("OAUTH_PROXY_UPSTREAM_SCOPES");
        let auth_method = match env.get("OAUTH_PROXY_UPSTREAM_TOKEN_ENDPOINT_AUTH_METHOD").as_deref() {
            None | Some("client_secret_basic") => UpstreamAuthMethod::ClientSecretBasic,
            Some("client_secret_post") => UpstreamAuthMethod::ClientSecretPost,
            Some(other) => {
                return Err(bad(
                    "OAUTH_PROXY_UPSTREAM_TOKEN_ENDPOINT_AUTH_METHOD",
                    format!("`{other}` is not client_secret_basic or client_secret_post"),
                ))
            }
        };
        let extra_authorize_params = match env.get("OAUTH_PROXY_UPSTREAM_EXTRA_AUTHORIZE_PARAMS") {
            None => Vec::new(),
            Some(raw) => {
                serde_urlencoded::from_str::<Vec<(String, String)>>(raw.trim_start_matches('?')).map_err(|e| {
                    bad(
                        "OAUTH_PROXY_UPSTREAM_EXTRA_AUTHORIZE_PARAMS",
                        format!("not a query string like access_type=offline&prompt=consent: {e}"),
                    )
                })?
            }
        };
        const RESERVED: [&str; 7] = [
            "response_type",
            "client_id",
            "redirect_uri",
            "state",
            "code_challenge",
            "code_challenge_method",
            "scope",
        ];
        if let Some((name, _)) = extra_authorize_params
            .iter()
            .find(|(name, _)| RESERVED.contains(&name.as_str()))
        {
            return Err(bad(
                "OAUTH_PROXY_UPSTREAM_EXTRA_AUTHORIZE_PARAMS",
                format!("`{name}` is set by the proxy itself"),
            ));
        }

        let upstream = UpstreamConfig {
            endpoints,
            userinfo_endpoint: env.url("OAUTH_PROXY_UPSTREAM_USERINFO_ENDPOINT")?,
            revocation_endpoint: env.url("OAUTH_PROXY_UPSTREAM_REVOCATION_ENDPOINT")?,
            client_id: env.required("OAUTH_PROXY_UPSTREAM_CLIENT_ID")?,
            client_secret: env
                .secret(twin!("OAUTH_PROXY_UPSTREAM_CLIENT_SECRET"))?
                .map(|given| given.value)
                .ok_or_else(|| {
                    bad(
                        "OAUTH_PROXY_UPSTREAM_CLIENT_SECRET",
                        "is required (or OAUTH_PROXY_UPSTREAM_CLIENT_SECRET_FILE naming a file that holds it)",
                    )
                })?,
            scopes: upstream_scopes.clone(),
            auth_method,
            extra_authorize_params,
            timeout: env.seconds("OAUTH_PROXY_UPSTREAM_TIMEOUT", 10)?,
        };

        let (scopes, scopes_variable) = match env.get("OAUTH_PROXY_SCOPES") {
            Some(_) => (env.list("OAUTH_PROXY_SCOPES"), "OAUTH_PROXY_SCOPES"),
            None => (upstream_scopes, "OAUTH_PROXY_UPSTREAM_SCOPES"),
        };

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

        let allowed_redirect_uri_patterns = env
            .get("OAUTH_PROXY_ALLOWED_REDIRECT_URI_PATTERNS")
            .map(|_| env.list("OAUTH_PROXY_ALLOWED_REDIRECT_URI_PATTERNS"));

        let lifetimes = Lifetimes {
            access_token: env.seconds("OAUTH_PROXY_ACCESS_TOKEN_TTL", 3600)?,
            refresh_token: env.seconds("OAUTH_PROXY_REFRESH_TOKEN_TTL", 2_592_000)?,
            authorization_code: env.seconds("OAUTH_PROXY_AUTHORIZATION_CODE_TTL", 300)?,
            transaction: env.seconds("OAUTH_PROXY_TRANSACTION_TTL", 600)?,
            unapproved_transaction: UNAPPROVED_TRANSACTION_TTL,
            unused_client: env.seconds("OAUTH_PROXY_UNUSED_CLIENT_TTL", 86_400)?,
            grant_max: env.seconds("OAUTH_PROXY_GRANT_MAX_LIFETIME", 7_776_000)?,
        };

        let jwt_signing_key = key(env.secret(twin!("OAUTH_PROXY_JWT_SIGNING_KEY"))?)?;
        let encryption = match env.secret(twin!("OAUTH_PROXY_ENCRYPTION_KEY"))? {
            Some(given) if given.value.expose() == "false" => EncryptionSetting::Disabled,
            given => EncryptionSetting::Key(key(given)?),
        };
        let consent_signing_key = key(env.secret(twin!("OAUTH_PROXY_CONSENT_SIGNING_KEY"))?)?;

        let storage = match env.get("OAUTH_PROXY_STORAGE") {
            None => StorageSetting::Directory("./data".into()),
            Some(value) if value == "memory" => StorageSetting::Memory,
            Some(value) if value.starts_with("redis://") || value.starts_with("rediss://") => {
                StorageSetting::Redis(value)
            }
            Some(value) if value.contains("://") => {
                return Err(bad(
                    "OAUTH_PROXY_STORAGE",
                    "use `memory`, a directory path, or a redis:// / rediss:// URL",
                ))
            }
            Some(dir) => StorageSetting::Directory(dir.into()),
        };
        if let StorageSetting::Redis(_) = storage {
            // Every instance must sign and encrypt with the same keys.
            for (name, setting) in [
                ("OAUTH_PROXY_JWT_SIGNING_KEY", Some(&jwt_signing_key)),
                ("OAUTH_PROXY_CONSENT_SIGNING_KEY", Some(&consent_signing_key)),
                (
                    "OAUTH_PROXY_ENCRYPTION_KEY",
                    match &encryption {
                        EncryptionSetting::Key(key) => Some(key),
                        EncryptionSetting::Disabled => None,
                    },
                ),
            ] {
                if let Some(KeySetting::Generate) = setting {
                    return Err(bad(
                        name,
                        "is required with Redis storage: every instance needs the same key (e.g. `openssl rand -base64 32`; or the variable's _FILE twin naming a file that holds it)",
                    ));
                }
            }
        }

        let custom_claims = match env.get("OAUTH_PROXY_CUSTOM_CLAIMS") {
            Some(_) => env.list("OAUTH_PROXY_CUSTOM_CLAIMS"),
            None => ["sub", "email", "name", "preferred_username"]
                .map(String::from)
                .to_vec(),
        };

        let algorithm = match env.get("OAUTH_PROXY_JWT_ALGORITHM").as_deref() {
            None | Some("HS256") => JwtAlgorithm::Hs256,
            Some("ES256") => JwtAlgorithm::Es256,
            Some("EdDSA") => JwtAlgorithm::EdDsa,
            Some(other) => {
                return Err(bad(
                    "OAUTH_PROXY_JWT_ALGORITHM",
                    format!("`{other}` is not HS256, ES256 or EdDSA"),
                ))
            }
        };
        let private_key_pem = match env.secret(twin!("OAUTH_PROXY_JWT_PRIVATE_KEY"))? {
            None => None,
            Some(given) => Some(pem(given, "OAUTH_PROXY_JWT_PRIVATE_KEY_FILE", "a PEM private key")?),
        };
        let previous_key = match env.secret(twin!("OAUTH_PROXY_JWT_PREVIOUS_KEY"))? {
            None => None,
            Some(given) if algorithm != JwtAlgorithm::Hs256 => Some(pem(
                given,
                "OAUTH_PROXY_JWT_PREVIOUS_KEY_FILE",
                "the previous public (or private) key as PEM",
            )?),
            Some(given) if given.value.expose().len() < 32 => {
                return Err(bad(
                    given.variable,
                    "must be at least 32 characters: the previous OAUTH_PROXY_JWT_SIGNING_KEY, as it was given",
                ))
            }
            Some(given) => Some(given.value),
        };
        let jwt = JwtConfig {
            algorithm,
            signing_key: jwt_signing_key,
            private_key_pem,
            previous_key,
        };
        if jwt.algorithm != JwtAlgorithm::Hs256
            && jwt.private_key_pem.is_none()
            && matches!(storage, StorageSetting::Redis(_))
        {
            return Err(bad(
                "OAUTH_PROXY_JWT_PRIVATE_KEY",
                "is required with Redis storage: every instance needs the same signing key",
            ));
        }
        if jwt.algorithm == JwtAlgorithm::Hs256 && jwt.private_key_pem.is_some() {
            return Err(bad(
                "OAUTH_PROXY_JWT_PRIVATE_KEY",
                "is only used with OAUTH_PROXY_JWT_ALGORITHM=ES256 or EdDSA",
            ));
        }

        let mcp_upstream_url = env.url("OAUTH_PROXY_MCP_UPSTREAM_URL")?;
        if mcp_upstream_url
            .as_ref()
            .is_some_and(|url| url.query().is_some() || url.fragment().is_some())
        {
            // Paths below the MCP endpoint are appended to it.
            return Err(bad("OAUTH_PROXY_MCP_UPSTREAM_URL", "must not have a query or fragment"));
        }
        let max_body = env.number("OAUTH_PROXY_MCP_MAX_BODY", 4 * 1024 * 1024)?;
        if max_body == 0 {
            return Err(bad("OAUTH_PROXY_MCP_MAX_BODY", "must be at least 1 byte"));
        }
        let gateway = GatewayConfig {
            upstream_url: mcp_upstream_url,
            connect_timeout: env.seconds("OAUTH_PROXY_MCP_CONNECT_TIMEOUT", 5)?,
            response_timeout: env.seconds("OAUTH_PROXY_MCP_RESPONSE_TIMEOUT", 60)?,
            max_body,
            allowed_origins: env
                .list("OAUTH_PROXY_ALLOWED_ORIGINS")
                .into_iter()
                .map(|o| o.trim_end_matches('/').to_string())
                .collect(),
            required_scopes: env.list("OAUTH_PROXY_MCP_REQUIRED_SCOPES"),
        };
        if !scopes.is_empty() {
            if let Some(missing) = gateway.required_scopes.iter().find(|s| !scopes.contains(s)) {
                return Err(bad(
                    "OAUTH_PROXY_MCP_REQUIRED_SCOPES",
                    format!(
                        "`{missing}` is not among the advertised scopes ({scopes_variable}={}): no client could ever get a token for the MCP endpoint; add it to {scopes_variable} or drop it here",
                        scopes.join(" ")
                    ),
                ));
            }
        }
        let introspection_secret = match env.secret(twin!("OAUTH_PROXY_INTROSPECTION_SECRET"))? {
            Some(given) if given.value.expose().len() < 32 => {
                return Err(bad(given.variable, "must be at least 32 characters"))
            }
            other => other.map(|given| given.value),
        };

        let consent_required = env.boolean("OAUTH_PROXY_CONSENT_REQUIRED", true)?;
        if !consent_required {
            // MCP authorization spec (security best practices, confused
            // deputy): a proxy with a static upstream client must ask for the
            // user's consent for each dynamically registered client. Without
            // consent, anyone who can register a redirect URI on a host they
            // control gets tokens for a signed-in user with one link.
            let open = match &allowed_redirect_uri_patterns {
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

        let outbound_tls = match env.get("OAUTH_PROXY_EXTRA_CA_FILE") {
            None => OutboundTls::default(),
            Some(path) => {
                let bundle = std::fs::read(&path)
                    .map_err(|e| bad("OAUTH_PROXY_EXTRA_CA_FILE", format!("cannot read {path}: {e}")))?;
                OutboundTls::new(Some(&bundle))
                    .map_err(|problem| bad("OAUTH_PROXY_EXTRA_CA_FILE", format!("{path} {problem}")))?
            }
        };

        let registration = RegistrationLimits {
            max_clients: env.number("OAUTH_PROXY_MAX_CLIENTS", 10_000)?,
            per_ip_per_minute: env.number("OAUTH_PROXY_REGISTRATION_RATE_LIMIT", 60)?,
        };

        let trusted_proxies = match env.get("OAUTH_PROXY_TRUSTED_PROXIES") {
            None => crate::client_address::TrustedProxies::default(),
            Some(raw) => crate::client_address::TrustedProxies::parse(&raw)
                .map_err(|problem| bad("OAUTH_PROXY_TRUSTED_PROXIES", problem))?,
        };
        // Generous: everyone behind one NAT (an office, a campus) shares it.
        let authorize_rate_limit = env.number("OAUTH_PROXY_AUTHORIZE_RATE_LIMIT", 120)?;
        let max_pending_authorizations = env.number(
            "OAUTH_PROXY_MAX_PENDING_AUTHORIZATIONS",
            DEFAULT_MAX_PENDING_AUTHORIZATIONS,
        )?;
        if max_pending_authorizations == 0 {
            return Err(bad(
                "OAUTH_PROXY_MAX_PENDING_AUTHORIZATIONS",
                "must be at least 1 (the cap cannot be turned off)",
            ));
        }

        let provider_name = match env.get("OAUTH_PROXY_UPSTREAM_NAME") {
            Some(name) => name,
            None => match &upstream.endpoints {
                UpstreamEndpoints::Explicit {
                    authorization_endpoint, ..
                } => authorization_endpoint.host_str().unwrap_or("the provider").to_string(),
                UpstreamEndpoints::Discover { issuer } => issuer.host_str().unwrap_or("the provider").to_string(),
            },
        };

        Ok(Config {
            bind,
            workers,
            issuer,
            base_url,
            upstream,
            scopes,
            token_swap: env.boolean("OAUTH_PROXY_ENABLE_TOKEN_SWAP", true)?,
            consent_required,
            redirect_path,
            allowed_redirect_uri_patterns,
            lifetimes,
            jwt,
            encryption,
            consent_signing_key,
            storage,
            custom_claims,
            forward_pkce: env.boolean("OAUTH_PROXY_FORWARD_PKCE", false)?,
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

struct Env<'a, F: Fn(&str) -> Option<String>> {
    lookup: &'a F,
}

impl<F: Fn(&str) -> Option<String>> Env<'_, F> {
    /// The trimmed value; an empty value counts as unset.
    fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.get(name).ok_or_else(|| bad(name, "is required"))
    }

    fn parsed<T>(
        &self,
        name: &'static str,
        expected: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some(raw) => parse(&raw)
                .map(Some)
                .ok_or_else(|| bad(name, format!("`{raw}` is not {expected}"))),
        }
    }

    fn url(&self, name: &'static str) -> Result<Option<Url>, ConfigError> {
        match self.get(name) {
            None => Ok(None),
            Some(raw) => parse_http_url(name, &raw).map(Some),
        }
    }

    fn list(&self, name: &str) -> Vec<String> {
        self.get(name)
            .map(|raw| {
                raw.split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn boolean(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        Ok(self
            .parsed(name, "true or false", |v| match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Some(true),
                "false" | "0" | "no" | "off" => Some(false),
                _ => None,
            })?
            .unwrap_or(default))
    }

    fn number<T: std::str::FromStr>(&self, name: &'static str, default: T) -> Result<T, ConfigError> {
        Ok(self
            .parsed(name, "a whole number", |v| v.parse::<T>().ok())?
            .unwrap_or(default))
    }

    fn seconds(&self, name: &'static str, default: u64) -> Result<Duration, ConfigError> {
        let secs = self.number(name, default)?;
        if secs == 0 {
            return Err(bad(name, "must be at least 1 second"));
        }
        Ok(Duration::from_secs(secs))
    }

    /// A secret from `name`, or from the file its `_FILE` twin names; an
    /// error when both are set. The variable's value is used as given; a
    /// file's content loses one trailing newline (`echo` writes one).
    fn secret(&self, (name, file_name): (&'static str, &'static str)) -> Result<Option<Given>, ConfigError> {
        match (self.get(name), self.get(file_name)) {
            (Some(_), Some(_)) => Err(bad(name, format!("and {file_name} are both set: set only one of them"))),
            (Some(value), None) => Ok(Some(Given {
                value: Secret::new(value),
                variable: name,
            })),
            (None, Some(path)) => Ok(Some(Given {
                value: read_secret_file(file_name, &path)?,
                variable: file_name,
            })),
            (None, None) => Ok(None),
        }
    }
}

/// A secret as configured, and the variable that gave it (for errors).
struct Given {
    value: Secret,
    variable: &'static str,
}

/// The content of a secrets file, less one trailing `\n` or `\r\n`.
fn read_secret_file(variable: &'static str, path: &str) -> Result<Secret, ConfigError> {
    let mut content = std::fs::read_to_string(path).map_err(|e| bad(variable, format!("cannot read {path}: {e}")))?;
    if content.ends_with("\r\n") {
        content.truncate(content.len() - 2);
    } else if content.ends_with('\n') {
        content.truncate(content.len() - 1);
    }
    if content.is_empty() {
        return Err(bad(variable, format!("{path} is empty")));
    }
    Ok(Secret::new(content))
}

/// A key given (at least 32 characters) or to be generated.
fn key(given: Option<Given>) -> Result<KeySetting, ConfigError> {
    match given {
        None => Ok(KeySetting::Generate),
        Some(given) if given.value.expose().len() < 32 => Err(bad(
            given.variable,
            "must be at least 32 characters (e.g. `openssl rand -base64 32`)",
        )),
        Some(given) => Ok(KeySetting::Given(given.value)),
    }
}

/// A PEM secret. Given in the variable itself, `\n` written literally (as
/// environment files often carry PEMs) stands for a line break.
fn pem(given: Given, file_variable: &'static str, what: &str) -> Result<Secret, ConfigError> {
    let text = given.value.expose();
    if !text.contains("-----BEGIN") {
        let hint = if given.variable == file_variable {
            String::new()
        } else {
            format!("; to read it from a file, set {file_variable} to the file's path instead")
        };
        return Err(bad(given.variable, format!("must be {what} (`-----BEGIN ...`){hint}")));
    }
    if given.variable == file_variable {
        Ok(given.value)
    } else {
        Ok(Secret::new(text.replace("\\n", "\n")))
    }
}

fn parse_http_url(name: &'static str, raw: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(raw).map_err(|e| bad(name, format!("`{raw}` is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(bad(name, format!("`{raw}` must be an http(s) URL with a host")));
    }
    Ok(url)
}

fn check_path(name: &'static str, path: &str) -> Result<(), ConfigError> {
    if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
        return Err(bad(name, format!("`{path}` must be a path starting with `/`")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config_from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut map: HashMap<String, String> = [
            ("OAUTH_PROXY_BASE_URL", "https://mcp.example.com"),
            (
                "OAUTH_PROXY_UPSTREAM_AUTHORIZATION_ENDPOINT",
                "https://github.com/login/oauth/authorize",
            ),
            (
                "OAUTH_PROXY_UPSTREAM_TOKEN_ENDPOINT",
                "https://github.com/login/oauth/access_token",
            ),
            ("OAUTH_PROXY_UPSTREAM_CLIENT_ID", "id"),
            ("OAUTH_PROXY_UPSTREAM_CLIENT_SECRET", "secret"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in pairs {
            map.insert(k.to_string(), v.to_string());
        }
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_follow_the_contract() {
        let config = config_from(&[]).unwrap();
        assert_eq!(config.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(config.issuer, "https://mcp.example.com");
        assert_eq!(config.resource(), "https://mcp.example.com/mcp");
        assert_eq!(config.redirect_path, "/oauth/callback");
        assert!(config.token_swap && config.consent_required && !config.forward_pkce);
        assert_eq!(config.lifetimes.access_token, Duration::from_secs(3600));
        assert_eq!(config.lifetimes.refresh_token, Duration::from_secs(2_592_000));
        assert_eq!(config.lifetimes.authorization_code, Duration::from_secs(300));
        assert_eq!(config.lifetimes.transaction, Duration::from_secs(600));
        assert_eq!(config.lifetimes.grant_max, Duration::from_secs(7_776_000));
        assert_eq!(config.lifetimes.unapproved_transaction, Duration::from_secs(120));
        assert_eq!(config.max_pending_authorizations, 10_000);
        assert_eq!(config.upstream.auth_method, UpstreamAuthMethod::ClientSecretBasic);
        assert_eq!(config.custom_claims, ["sub", "email", "name", "preferred_username"]);
        assert_eq!(config.provider_name, "github.com");
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let err = config_from(&[("OAUTH_PROXY_ACCESS_TOKEN_TTL", "soon")]).unwrap_err();
        assert_eq!(err.variable, "OAUTH_PROXY_ACCESS_TOKEN_TTL");
        let err = config_from(&[("OAUTH_PROXY_JWT_SIGNING_KEY", "short")]).unwrap_err();
        assert_eq!(err.variable, "OAUTH_PROXY_JWT_SIGNING_KEY");
        let err = config_from(&[("OAUTH_PROXY_BASE_URL", "")]).unwrap_err();
        assert_eq!(err.variable, "OAUTH_PROXY_BASE_URL");
        let err = config_from(&[("OAUTH_PROXY_UPSTREAM_EXTRA_AUTHORIZE_PARAMS", "state=x")]).unwrap_err();
        assert_eq!(err.variable, "OAUTH_PROXY_UPSTREAM_EXTRA_AUTHORIZE_PARAMS");
    }

    #[test]
    fn the_grant_max_lifetime_is_whole_seconds_and_never_zero() {
        let config = config_from(&[("OAUTH_PROXY_GRANT_MAX_LIFETIME", "86400")]).unwrap();
        assert_eq!(config.lifetimes.grant_max, Duration::from_secs(86_400));
        for bad in ["0", "-1", "90d", "1.5"] {
            let err = config_from(&[("OAUTH_PROXY_GRANT_MAX_LIFETIME", bad)]).unwrap_err();
            assert_eq!(err.variable, "OAUTH_PROXY_GRANT_MAX_LIFETIME", "`{bad}`");
        }
    }

    #[test]
    fn lists_split_on_commas_and_spaces() {
        let config = config_from(&[("OAUTH_PROXY_UPSTREAM_SCOPES", "read:user, user:email  repo")]).unwrap();
        assert_eq!(config.upstream.scopes, ["read:user", "user:email", "repo"]);
        assert_eq!(config.scopes, config.upstream.scopes);
    }

    #[test]
    fn trusted_proxies_are_a_cidr_list_and_a_bad_entry_stops_start_up() {
        let config = config_from(&[("OAUTH_PROXY_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.1 2001:db8::/32")]).unwrap();
        assert!(config.trusted_proxies.contains("10.1.1.1".parse().unwrap()));
        assert!(config.trusted_proxies.contains("192.0.2.1".parse().unwrap()));
        assert!(config.trusted_proxies.contains("2001:db8::7".parse().unwrap()));
        assert!(!config.trusted_proxies.contains("192.0.2.2".parse().unwrap()));
        assert!(
            config_from(&[]).unwrap().trusted_proxies.is_empty(),
            "unset: no proxy is trusted"
        );
        let err = config_from(&[("OAUTH_PROXY_TRUSTED_PROXIES", "10.0.0.0/8, lb.internal")]).unwrap_err();
        assert_eq!(err.variable, "OAUTH_PROXY_TRUSTED_PROXIES");
        assert!(err.problem.contains("lb.internal"), "{}", err.problem);
    }

    #[test]
    fn the_authorize_rate_limit_is_generous_by_default_and_0_turns_it_off() {
        assert_eq!(config_from(&[]).unwrap().authorize_rate_limit, 120);
        let config = config_from(&[("OAUTH_PROXY_AUTHORIZE_RATE_LIMIT", "0")]).unwrap();
        assert_eq!(config.authorize_rate_limit, 0);
        let err = config_from(&[("OAUTH_PROXY_AUTHORIZE_RATE_LIMIT", "-1")]).unwrap_err();
        assert_eq!(err.variable, "OAUTH_PROXY_AUTHORIZE_RATE_LIMIT");
    }

    #[test]
    fn secrets_are_hidden_in_debug_output() {
        let config = config_from(&[("OAUTH_PROXY_JWT_SIGNING_KEY", "a-signing-key-that-is-long-enough-123")]).unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("a-signing-key-that-is-long-enough-123"));
        assert!(!printed.contains("\"secret\""));
    }

    /// A file under the temp directory holding `content`, unique to the test.
    fn temp_file(name: &str, content: &[u8]) -> String {
        let path = std::env::temp_dir().join(format!("mcp-oauth-proxy-config-{}-{name}", std::process::id()));
        std::fs::write(&path, content).unwrap();
        path.display().to_string()
    }

    const SLASHED_KEY: &str = "ab/cd+ef.gh/ij+kl/mn+op/qr+st/uv+wx/yz+01/2=";

    #[test]
    fn a_secret_value_with_slashes_and_dots_is_used_as_given() {
        assert_eq!(SLASHED_KEY.len(), 44);
        let config = config_from(&[
            ("OAUTH_PROXY_JWT_PREVIOUS_KEY", SLASHED_KEY),
            ("OAUTH_PROXY_JWT_SIGNING_KEY", SLASHED_KEY),
            ("OAUTH_PROXY_ENCRYPTION_KEY", "./looks/like/a/path/but/is/a/key.0123"),
            ("OAUTH_PROXY_INTROSPECTION_SECRET", SLASHED_KEY),
        ])
        .unwrap();
        assert_eq!(config.jwt.previous_key.unwrap().expose(), SLASHED_KEY);
        assert!(matches!(config.jwt.signing_key, KeySetting::Given(ref k) if k.expose() == SLASHED_KEY));
        assert!(matches!(
            config.encryption,
            EncryptionSetting::Key(KeySetting::Given(ref k)) if k.expose() == "./looks/like/a/path/but/is/a/key.0123"
        ));
        assert_eq!(config.introspection_secret.unwrap().expose(), SLASHED_KEY);
    }

    #[test]
    fn every_secret_can_come_from_its_file_twin_less_one_trailing_newline() {
        let unix = temp_file("unix-newline", format!("{SLASHED_KEY}\n").as_bytes());
        let windows = temp_file("windows-newline", format!("{SLASHED_KEY}\r\n").as_bytes());
        let two = temp_file("two-newlines", format!("{SLASHED_KEY}\n\n").as_bytes());
        let config = config_from(&[
            ("OAUTH_PROXY_UPSTREAM_CLIENT_SECRET", ""),
            ("OAUTH_PROXY_UPSTREAM_CLIENT_SECRET_FILE", &unix),
            ("OAUTH_PROXY_JWT_SIGNING_KEY_FILE", &windows),
            ("OAUTH_PROXY_ENCRYPTION_KEY_FILE", &unix),
            ("OAUTH_PROXY_CONSENT_SIGNING_KEY_FILE", &windows),
            ("OAUTH_PROXY_JWT_PREVIOUS_KEY_FILE", &unix),
            ("OAUTH_PROXY_INTROSPECTION_SECRET_FILE", &two),
        ])
        .unwrap();
        assert_eq!(config.upstream.client_secret.expose(), SLASHED_KEY);
        for setting in [
            &config.jwt.signing_key,
            &config.consent_signing_key,
            match &config.encryption {
                EncryptionSetting::Key(key) => key,
                EncryptionSetting::Disabled => panic!("encryption stays on"),
            },
        ] {
            assert!(matches!(setting, KeySetting::Given(k) if k.expose() == SLASHED_KEY));
        }
        assert_eq!(config.jwt.previous_key.unwrap().expose(), SLASHED_KEY);
        // Only one newline goes: the second is the secret's.
        assert_eq!(
            config.introspection_secret.unwrap().expose(),
            format!("{SLASHED_KEY}\n")
        );
    }

    #[test]
    fn a_private_key_pem_comes_from_its_file_as_written() {
        let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n";
        let file = temp_file("private.pem", pem.as_bytes());
        let config = config_from(&[
            ("OAUTH_PROXY_JWT_ALGORITHM", "EdDSA"),
            ("OAUTH_PROXY_JWT_PRIVATE_KEY_FILE", &file),
        ])
        .unwrap();
        assert_eq!(config.jwt.private_key_pem.unwrap().expose(), pem.trim_end_matches('\n'));
        // Given directly, a PEM with literal `\n` keeps working as before.
        let config = config_from(&[
            ("OAUTH_PROXY_JWT_ALGORITHM", "EdDSA"),
            (
                "OAUTH_PROXY_JWT_PRIVATE_KEY",
                "-----BEGIN PRIVATE KEY-----\\nMC4CAQAwBQYDK2VwBCIEIA==\\n-----END PRIVATE KEY-----",
            ),
        ])
        .unwrap();
        assert!(config.jwt.private_key_pem.unwrap().expose().contains("-----\nMC4"));
    }

    #[test]
    fn a_path_in_a_pem_variable_points_at_its_file_twin() {
        for (name, path) in [
            ("OAUTH_PROXY_JWT_PRIVATE_KEY", "/etc/mcp-oauth-proxy/jwt.pem"),
            ("OAUTH_PROXY_JWT_PREVIOUS_KEY", "/etc/mcp-oauth-proxy/old-jwt.pem"),
        ] {
            let err = config_from(&[("OAUTH_PROXY_JWT_ALGORITHM", "ES256"), (name, path)]).unwrap_err();
            assert_eq!(err.variable, name);
            assert!(err.problem.contains(&format!("{name}_FILE")), "{err}");
        }
    }

    #[test]
    fn a_secret_and_its_file_twin_together_are_refused_naming_both() {
        let file = temp_file("both", SLASHED_KEY.as_bytes());
        for name in [
            "OAUTH_PROXY_JWT_SIGNING_KEY",
            "OAUTH_PROXY_ENCRYPTION_KEY",
            "OAUTH_PROXY_CONSENT_SIGNING_KEY",
            "OAUTH_PROXY_UPSTREAM_CLIENT_SECRET",
            "OAUTH_PROXY_JWT_PRIVATE_KEY",
            "OAUTH_PROXY_JWT_PREVIOUS_KEY",
            "OAUTH_PROXY_INTROSPECTION_SECRET",
        ] {
            let twin = format!("{name}_FILE");
            let err = config_from(&[(name, SLASHED_KEY), (&twin, &file)]).unwrap_err();
            assert_eq!(err.variable, name);
            assert!(err.to_string().contains(&twin), "{err}");
        }
    }

    #[test]
    fn an_unreadable_or_empty_secret_file_is_refused_naming_the_file_variable() {
        let empty = temp_file("empty", b"");
        let newline_only = temp_file("newline-only", b"\n");
        for path in [empty.as_str(), newline_only.as_str(), "/nonexistent/secret"] {
            let err = config_from(&[("OAUTH_PROXY_CONSENT_SIGNING_KEY_FILE", path)]).unwrap_err();
            assert_eq!(err.variable, "OAUTH_PROXY_CONSENT_SIGNING_KEY_FILE", "{err}");
            assert!(err.problem.contains(path), "{err}");
        }
        // A short key from a file is refused naming the file variable.
        let short = temp_file("short", b"short\n");
        let err = config_from(&[("OAUTH_PROXY_JWT_SIGNING_KEY_FILE", &short)]).unwrap_err();
        assert_eq!(err.variable, "OAUTH_PROXY_JWT_SIGNING_KEY_FILE");
    }

    #[test]
    fn consent_off_is_refused_while_any_redirect_host_is_open() {
        for patterns in [
            None,
            Some("https://*"),
            Some("https://app.example.com/cb https://*.example.com/cb"),
            Some("http://127.0.0.1:* cursor://*"),
        ] {
            let mut settings = vec![("OAUTH_PROXY_CONSENT_REQUIRED", "false")];
            if let Some(patterns) = patterns {
                settings.push(("OAUTH_PROXY_ALLOWED_REDIRECT_URI_PATTERNS", patterns));
            }
            let err = config_from(&settings).unwrap_err();
            assert_eq!(err.variable, "OAUTH_PROXY_CONSENT_REQUIRED", "{patterns:?}");
            assert!(
                err.problem.contains("OAUTH_PROXY_ALLOWED_REDIRECT_URI_PATTERNS"),
                "{err}"
            );
            assert_eq!(err.to_string().lines().count(), 1);
        }
    }

    #[test]
    fn consent_off_is_allowed_with_pinned_or_loopback_redirect_hosts() {
        let config = config_from(&[
            ("OAUTH_PROXY_CONSENT_REQUIRED", "false"),
            (
                "OAUTH_PROXY_ALLOWED_REDIRECT_URI_PATTERNS",
                "https://app.example.com/cb http://127.0.0.1:* http://localhost:*/callback",
            ),
        ])
        .unwrap();
        assert!(!config.consent_required);
        // With consent on, open patterns stay allowed.
        assert!(config_from(&[("OAUTH_PROXY_ALLOWED_REDIRECT_URI_PATTERNS", "https://*")]).is_ok());
    }

    #[test]
    fn required_mcp_scopes_must_be_advertised() {
        let err = config_from(&[
            ("OAUTH_PROXY_UPSTREAM_SCOPES", "read:user user:email"),
            ("OAUTH_PROXY_MCP_REQUIRED_SCOPES", "read:user repo"),
        ])
        .unwrap_err();
        assert_eq!(err.variable, "OAUTH_PROXY_MCP_REQUIRED_SCOPES");
        assert!(
            err.problem.contains("`repo`") && err.problem.contains("OAUTH_PROXY_UPSTREAM_SCOPES"),
            "{err}"
        );
        let err = config_from(&[
            ("OAUTH_PROXY_UPSTREAM_SCOPES", "read:user repo"),
            ("OAUTH_PROXY_SCOPES", "mcp:read"),
            ("OAUTH_PROXY_MCP_REQUIRED_SCOPES", "repo"),
        ])
        .unwrap_err();
        assert!(err.problem.contains("OAUTH_PROXY_SCOPES="), "{err}");
        // A subset, or nothing advertised at all, is fine.
        assert!(config_from(&[
            ("OAUTH_PROXY_SCOPES", "mcp:read mcp:write"),
            ("OAUTH_PROXY_MCP_REQUIRED_SCOPES", "mcp:read"),
        ])
        .is_ok());
        assert!(config_from(&[("OAUTH_PROXY_MCP_REQUIRED_SCOPES", "mcp:read")]).is_ok());
    }

    #[test]
    fn a_bad_extra_ca_file_is_refused_naming_the_variable() {
        let empty = temp_file("ca-empty.pem", b"");
        let not_pem = temp_file("ca-not-pem.pem", b"hello\n");
        for path in [empty.as_str(), not_pem.as_str(), "/nonexistent/ca.pem"] {
            let err = config_from(&[("OAUTH_PROXY_EXTRA_CA_FILE", path)]).unwrap_err();
            assert_eq!(err.variable, "OAUTH_PROXY_EXTRA_CA_FILE");
            assert!(err.problem.contains(path), "{err}");
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = temp_file("ca.pem", params.self_signed(&key).unwrap().pem().as_bytes());
        let config = config_from(&[("OAUTH_PROXY_EXTRA_CA_FILE", &ca)]).unwrap();
        assert_eq!(config.outbound_tls.extra_roots(), 1);
        assert_eq!(config_from(&[]).unwrap().outbound_tls.extra_roots(), 0);
    }

    #[test]
    fn the_gateway_body_cap_defaults_to_4_mib_and_must_be_positive() {
        assert_eq!(config_from(&[]).unwrap().gateway.max_body, 4_194_304);
        let set = config_from(&[("OAUTH_PROXY_MCP_MAX_BODY", "1024")]).unwrap();
        assert_eq!(set.gateway.max_body, 1024);
        for bad in ["0", "-1", "4MiB"] {
            let error = config_from(&[("OAUTH_PROXY_MCP_MAX_BODY", bad)]).unwrap_err();
            assert_eq!(error.variable, "OAUTH_PROXY_MCP_MAX_BODY", "{bad}");
        }
    }

    #[test]
    fn the_mcp_server_url_may_not_carry_a_query_or_fragment() {
        for url in ["http://127.0.0.1:3000/mcp?key=1", "http://127.0.0.1:3000/mcp#x"] {
            let error = config_from(&[("OAUTH_PROXY_MCP_UPSTREAM_URL", url)]).unwrap_err();
            assert_eq!(error.variable, "OAUTH_PROXY_MCP_UPSTREAM_URL", "{url}");
        }
        assert!(config_from(&[("OAUTH_PROXY_MCP_UPSTREAM_URL", "http://127.0.0.1:3000/mcp")]).is_ok());
    }

    #[test]
    fn the_pending_authorization_cap_is_read_and_cannot_be_turned_off() {
        let config = config_from(&[("OAUTH_PROXY_MAX_PENDING_AUTHORIZATIONS", "250")]).unwrap();
        assert_eq!(config.max_pending_authorizations, 250);
        for bad_value in ["0", "-1", "many"] {
            let err = config_from(&[("OAUTH_PROXY_MAX_PENDING_AUTHORIZATIONS", bad_value)]).unwrap_err();
            assert_eq!(err.variable, "OAUTH_PROXY_MAX_PENDING_AUTHORIZATIONS", "{bad_value}");
        }
    }
}
