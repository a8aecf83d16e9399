//! Limits that keep an open service from being exhausted: registration caps
//! and rates, the `/authorize` rate, the pending-authorization cap, and the
//! proxies whose forwarding headers name the client address those limits key on.

use super::env::Env;
use super::{bad, ConfigError};
use crate::client_address::TrustedProxies;

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

/// The limits section, as read.
pub(super) struct Limits {
    pub(super) registration: RegistrationLimits,
    pub(super) trusted_proxies: TrustedProxies,
    pub(super) authorize_rate_limit: u32,
    pub(super) max_pending_authorizations: usize,
}

/// `OAUTH_PROXY_MAX_CLIENTS`, the rate limits, `OAUTH_PROXY_TRUSTED_PROXIES`
/// and `OAUTH_PROXY_MAX_PENDING_AUTHORIZATIONS`.
pub(super) fn read_limits(env: &Env) -> Result<Limits, ConfigError> {
    let registration = RegistrationLimits {
        max_clients: env.number("OAUTH_PROXY_MAX_CLIENTS", 10_000)?,
        per_ip_per_minute: env.number("OAUTH_PROXY_REGISTRATION_RATE_LIMIT", 60)?,
    };

    let trusted_proxies = match env.get("OAUTH_PROXY_TRUSTED_PROXIES") {
        None => TrustedProxies::default(),
        Some(raw) => TrustedProxies::parse(&raw).map_err(|problem| bad("OAUTH_PROXY_TRUSTED_PROXIES", problem))?,
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
    Ok(Limits {
        registration,
        trusted_proxies,
        authorize_rate_limit,
        max_pending_authorizations,
    })
}
