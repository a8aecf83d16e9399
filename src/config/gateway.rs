//! The guarded MCP endpoint and the MCP server behind it.

use std::time::Duration;

use url::Url;

use super::env::Env;
use super::service::Scopes;
use super::{bad, ConfigError};
use crate::gateway::policy::ToolScopes;

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
    /// `OAUTH_PROXY_MCP_TOOL_SCOPES`: scopes per tool, prompt and resource
    /// name (token swap only).
    pub tool_scopes: ToolScopes,
    /// `OAUTH_PROXY_MCP_FILTER_TOOLS_LIST`: `tools/list` answers show only
    /// the tools the token may call.
    pub filter_tools_list: bool,
}

/// The `OAUTH_PROXY_MCP_*` variables and `OAUTH_PROXY_ALLOWED_ORIGINS`; the
/// required scopes must be among the advertised ones.
pub(super) fn read_gateway(env: &Env, scopes: &Scopes, token_swap: bool) -> Result<GatewayConfig, ConfigError> {
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
        tool_scopes: ToolScopes::parse(&env.get("OAUTH_PROXY_MCP_TOOL_SCOPES").unwrap_or_default())
            .map_err(|why| bad("OAUTH_PROXY_MCP_TOOL_SCOPES", why))?,
        filter_tools_list: env.boolean("OAUTH_PROXY_MCP_FILTER_TOOLS_LIST", false)?,
    };
    if !gateway.tool_scopes.is_empty() && !token_swap {
        // A pass-through token is the upstream's: the proxy cannot read
        // which of its scopes it carries.
        return Err(bad(
            "OAUTH_PROXY_MCP_TOOL_SCOPES",
            "needs token swap (OAUTH_PROXY_ENABLE_TOKEN_SWAP=true): the scopes of an upstream token cannot be read",
        ));
    }
    let Scopes {
        advertised: scopes,
        variable: scopes_variable,
    } = scopes;
    // A scope a client could never be granted makes step-up impossible.
    if let Some(missing) = gateway.tool_scopes.scopes().find(|s| !scopes.contains(&s.to_string())) {
        return Err(bad(
            "OAUTH_PROXY_MCP_TOOL_SCOPES",
            format!(
                "`{missing}` is not among the advertised scopes ({scopes_variable}={}): no client could step up to it; add it to {scopes_variable}",
                scopes.join(" ")
            ),
        ));
    }
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
    Ok(gateway)
}
