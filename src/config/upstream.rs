//! The upstream OAuth provider: its endpoints (given or discovered), the
//! proxy's pre-registered client there, and how it is named to the user.

use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use super::env::Env;
use super::{bad, ConfigError};

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
    pub client_secret: SecretString,
    pub scopes: Vec<String>,
    pub auth_method: UpstreamAuthMethod,
    pub extra_authorize_params: Vec<(String, String)>,
    /// Connect + response timeout for every upstream call.
    pub timeout: Duration,
}

/// Parameters the proxy sets on the upstream authorization request itself.
const RESERVED: [&str; 7] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "state",
    "code_challenge",
    "code_challenge_method",
    "scope",
];

/// The `OAUTH_PROXY_UPSTREAM_*` variables.
pub(super) fn read_upstream(env: &Env) -> Result<UpstreamConfig, ConfigError> {
    let endpoints = read_endpoints(env)?;
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
    let extra_authorize_params = read_extra_authorize_params(env)?;
    Ok(UpstreamConfig {
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
        scopes: env.list("OAUTH_PROXY_UPSTREAM_SCOPES"),
        auth_method,
        extra_authorize_params,
        timeout: env.seconds("OAUTH_PROXY_UPSTREAM_TIMEOUT", 10)?,
    })
}

/// Both endpoints given, or only the issuer (discovery).
fn read_endpoints(env: &Env) -> Result<UpstreamEndpoints, ConfigError> {
    let authorization = env.url("OAUTH_PROXY_UPSTREAM_AUTHORIZATION_ENDPOINT")?;
    let token = env.url("OAUTH_PROXY_UPSTREAM_TOKEN_ENDPOINT")?;
    let upstream_issuer = env.url("OAUTH_PROXY_UPSTREAM_ISSUER")?;
    match (authorization, token, upstream_issuer) {
        (Some(authorization_endpoint), Some(token_endpoint), _) => Ok(UpstreamEndpoints::Explicit {
            authorization_endpoint,
            token_endpoint,
        }),
        (None, None, Some(issuer)) => Ok(UpstreamEndpoints::Discover { issuer }),
        (Some(_), None, _) | (None, Some(_), Some(_)) => Err(bad(
            "OAUTH_PROXY_UPSTREAM_TOKEN_ENDPOINT",
            "set both upstream endpoints, or only OAUTH_PROXY_UPSTREAM_ISSUER",
        )),
        (None, _, None) => Err(bad(
            "OAUTH_PROXY_UPSTREAM_AUTHORIZATION_ENDPOINT",
            "is required (or set OAUTH_PROXY_UPSTREAM_ISSUER to use discovery)",
        )),
    }
}

/// Fixed parameters added to the upstream authorization request; never one
/// the proxy sets itself.
fn read_extra_authorize_params(env: &Env) -> Result<Vec<(String, String)>, ConfigError> {
    let extra_authorize_params = match env.get("OAUTH_PROXY_UPSTREAM_EXTRA_AUTHORIZE_PARAMS") {
        None => Vec::new(),
        Some(raw) => serde_urlencoded::from_str::<Vec<(String, String)>>(raw.trim_start_matches('?')).map_err(|e| {
            bad(
                "OAUTH_PROXY_UPSTREAM_EXTRA_AUTHORIZE_PARAMS",
                format!("not a query string like access_type=offline&prompt=consent: {e}"),
            )
        })?,
    };
    if let Some((name, _)) = extra_authorize_params
        .iter()
        .find(|(name, _)| RESERVED.contains(&name.as_str()))
    {
        return Err(bad(
            "OAUTH_PROXY_UPSTREAM_EXTRA_AUTHORIZE_PARAMS",
            format!("`{name}` is set by the proxy itself"),
        ));
    }
    Ok(extra_authorize_params)
}

/// How the upstream is named on the consent page: `OAUTH_PROXY_UPSTREAM_NAME`,
/// or the host of its authorization endpoint (or issuer).
pub(super) fn read_provider_name(env: &Env, upstream: &UpstreamConfig) -> String {
    match env.get("OAUTH_PROXY_UPSTREAM_NAME") {
        Some(name) => name,
        None => match &upstream.endpoints {
            UpstreamEndpoints::Explicit {
                authorization_endpoint, ..
            } => authorization_endpoint.host_str().unwrap_or("the provider").to_string(),
            UpstreamEndpoints::Discover { issuer } => issuer.host_str().unwrap_or("the provider").to_string(),
        },
    }
}
