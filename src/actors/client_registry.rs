//! `ClientRegistry`: dynamically registered clients (RFC 7591).
//!
//! Contract: a client secret is stored only as a hash; unused registrations
//! expire; registration is capped and rate limited per address, so an open
//! `/register` cannot exhaust memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use actix::prelude::*;

use super::purge_interval;
use crate::config::RegistrationLimits;
use crate::crypto::{random_token, sha256_b64url};
use crate::oauth::client::{RegisteredClient, ValidRegistration};
use crate::oauth::now_secs;
use crate::store::{SealedTable, StoreError};

pub struct ClientRegistry {
    clients: SealedTable<RegisteredClient>,
    limits: RegistrationLimits,
    unused_ttl: Duration,
    active_ttl: Duration,
    /// Registrations per address in the current minute.
    recent: HashMap<IpAddr, (u64, u32)>,
}

impl ClientRegistry {
    pub fn new(
        clients: SealedTable<RegisteredClient>,
        limits: RegistrationLimits,
        unused_ttl: Duration,
        active_ttl: Duration,
    ) -> Self {
        ClientRegistry {
            clients,
            limits,
            unused_ttl,
            active_ttl,
            recent: HashMap::new(),
        }
    }

    fn rate_limited(&mut self, ip: Option<IpAddr>) -> bool {
        let (Some(ip), limit) = (ip, self.limits.per_ip_per_minute) else {
            return false;
        };
        if limit == 0 {
            return false;
        }
        let minute = now_secs() / 60;
        let entry = self.recent.entry(ip).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        entry.1 += 1;
        entry.1 > limit
    }
}

impl Actor for ClientRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(purge_interval(self.unused_ttl), |registry, _| {
            if let Err(e) = registry.clients.purge_expired() {
                log::error!("client registry sweep failed: {e}");
            }
            let minute = now_secs() / 60;
            registry.recent.retain(|_, (m, _)| *m == minute);
        });
    }
}

/// Registers a client; answers the record and the clear secret (once).
#[derive(Message)]
#[rtype(result = "Result<(RegisteredClient, Option<String>), RegisterError>")]
pub struct RegisterClient {
    pub registration: ValidRegistration,
    pub client_ip: Option<IpAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("too many registrations from this address; try again in a minute")]
    RateLimited,
    #[error("the client registry is full")]
    Full,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Handler<RegisterClient> for ClientRegistry {
    type Result = Result<(RegisteredClient, Option<String>), RegisterError>;

    fn handle(&mut self, msg: RegisterClient, _: &mut Self::Context) -> Self::Result {
        if self.rate_limited(msg.client_ip) {
            return Err(RegisterError::RateLimited);
        }
        if self.clients.len()? >= self.limits.max_clients {
            // Expired registrations may still be counted; sweep before refusing.
            self.clients.purge_expired()?;
            if self.clients.len()? >= self.limits.max_clients {
                return Err(RegisterError::Full);
            }
        }
        let reg = msg.registration;
        let secret = reg.auth_method.is_confidential().then(|| random_token(32));
        let client = RegisteredClient {
            client_id: random_token(16),
            client_secret_hash: secret.as_deref().map(|s| sha256_b64url(s.as_bytes())),
            redirect_uris: reg.redirect_uris,
            token_endpoint_auth_method: reg.auth_method,
            grant_types: reg.grant_types,
            client_name: reg.client_name,
            client_uri: reg.client_uri,
            scope: reg.scope,
            issued_at: now_secs(),
        };
        self.clients.put(&client.client_id, &client, self.unused_ttl)?;
        Ok((client, secret))
    }
}

#[derive(Message)]
#[rtype(result = "Result<Option<RegisteredClient>, StoreError>")]
pub struct GetClient(pub String);

impl Handler<GetClient> for ClientRegistry {
    type Result = Result<Option<RegisteredClient>, StoreError>;

    fn handle(&mut self, msg: GetClient, _: &mut Self::Context) -> Self::Result {
        self.clients.get(&msg.0)
    }
}

/// A client completed a token exchange: keep it as long as its grants live.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct MarkClientUsed(pub String);

impl Handler<MarkClientUsed> for ClientRegistry {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, msg: MarkClientUsed, _: &mut Self::Context) -> Self::Result {
        if let Some(client) = self.clients.get(&msg.0)? {
            self.clients.put(&msg.0, &client, self.active_ttl)?;
        }
        Ok(())
    }
}

super::lifecycle_handlers!(ClientRegistry, clients);
