//! `ClientRegistry`: dynamically registered clients (RFC 7591).
//!
//! Contract: a client secret is stored only as a hash; unused registrations
//! expire; registration is capped and rate limited per address, so an open
//! `/register` cannot exhaust memory or disk. A client record is written
//! once and never rewritten (keeping a used client only extends its expiry),
//! which is what lets lookups be memoized (`crate::proxy::memo`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::{purge_interval, sweep_every, Answer};
use crate::config::RegistrationLimits;
use crate::crypto::{random_token, sha256_b64url};
use crate::oauth::client::{RegisteredClient, ValidRegistration};
use crate::oauth::now_secs;
use crate::store::{SealedTable, StoreError};

/// Registrations per address in the current minute, shared by replicas.
type RecentRegistrations = Arc<Mutex<HashMap<IpAddr, (u64, u32)>>>;

/// How long a read count is trusted while the registry is less than half
/// full. Counting is a round trip with Redis (a tenth of a full flow's);
/// other instances' registrations in that second can only matter near the
/// cap, where every registration counts again.
const COUNT_TRUSTED_FOR: Duration = Duration::from_secs(1);

/// The client count as last read and when, plus this instance's
/// registrations since; shared by replicas.
#[derive(Clone, Default)]
struct SeenCount(Arc<Mutex<Option<(Instant, usize)>>>);

impl SeenCount {
    /// Whether the last count is recent and far enough below `max` to skip
    /// counting again.
    fn trusted(&self, max: usize) -> bool {
        self.0
            .lock()
            .ok()
            .and_then(|seen| *seen)
            .is_some_and(|(at, count)| at.elapsed() < COUNT_TRUSTED_FOR && count < max / 2)
    }

    fn counted(&self, count: usize) {
        if let Ok(mut seen) = self.0.lock() {
            *seen = Some((Instant::now(), count));
        }
    }

    fn registered_one(&self) {
        if let Ok(mut seen) = self.0.lock() {
            if let Some((_, count)) = seen.as_mut() {
                *count += 1;
            }
        }
    }
}

#[derive(Clone)]
pub struct ClientRegistry {
    clients: SealedTable<RegisteredClient>,
    limits: RegistrationLimits,
    unused_ttl: Duration,
    active_ttl: Duration,
    recent: RecentRegistrations,
    seen_count: SeenCount,
    /// Only the primary instance sweeps; replicas on worker threads do not.
    sweeping: bool,
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
            recent: Arc::new(Mutex::new(HashMap::new())),
            seen_count: SeenCount::default(),
            sweeping: true,
        }
    }

    /// A copy for another thread, sharing the tables and the rate limiter.
    pub fn replica(&self) -> Self {
        ClientRegistry {
            sweeping: false,
            ..self.clone()
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
        let Ok(mut recent) = self.recent.lock() else {
            return false;
        };
        let entry = recent.entry(ip).or_insert((minute, 0));
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
        if !self.sweeping {
            return;
        }
        sweep_every(
            ctx,
            purge_interval(self.unused_ttl),
            "client registry",
            self.clients.clone(),
        );
        ctx.run_interval(Duration::from_secs(60), |registry, _| {
            let minute = now_secs() / 60;
            if let Ok(mut recent) = registry.recent.lock() {
                recent.retain(|_, (m, _)| *m == minute);
            }
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
    type Result = Answer<Result<(RegisteredClient, Option<String>), RegisterError>>;

    fn handle(&mut self, msg: RegisterClient, _: &mut Self::Context) -> Self::Result {
        let limited = self.rate_limited(msg.client_ip);
        let (clients, max_clients, ttl) = (self.clients.clone(), self.limits.max_clients, self.unused_ttl);
        let seen_count = self.seen_count.clone();
        Answer::of(async move {
            if limited {
                return Err(RegisterError::RateLimited);
            }
            if !seen_count.trusted(max_clients) {
                let mut count = clients.count().await?;
                if count >= max_clients {
                    // Expired registrations may still be counted; sweep before refusing.
                    clients.purge_expired().await?;
                    count = clients.count().await?;
                    if count >= max_clients {
                        return Err(RegisterError::Full);
                    }
                }
                seen_count.counted(count);
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
            clients.put(&client.client_id, &client, ttl).await?;
            seen_count.registered_one();
            Ok((client, secret))
        })
    }
}

#[derive(Message)]
#[rtype(result = "Result<Option<RegisteredClient>, StoreError>")]
pub struct GetClient(pub String);

impl Handler<GetClient> for ClientRegistry {
    type Result = Answer<Result<Option<RegisteredClient>, StoreError>>;

    fn handle(&mut self, msg: GetClient, _: &mut Self::Context) -> Self::Result {
        let clients = self.clients.clone();
        Answer::of(async move { clients.get(&msg.0).await })
    }
}

/// A client completed a token exchange: keep it as long as its grants live.
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct MarkClientUsed(pub String);

impl Handler<MarkClientUsed> for ClientRegistry {
    type Result = Answer<Result<(), StoreError>>;

    fn handle(&mut self, msg: MarkClientUsed, _: &mut Self::Context) -> Self::Result {
        let (clients, ttl) = (self.clients.clone(), self.active_ttl);
        // Only the expiry changes: no read, decrypt and rewrite of the record.
        Answer::of(async move { clients.touch(&msg.0, ttl).await.map(|_| ()) })
    }
}

super::lifecycle_handlers!(ClientRegistry, clients);
