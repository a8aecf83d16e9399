//! `UpstreamRefresher`: refreshes expired upstream access tokens for the MCP
//! gateway.
//!
//! Contract: concurrent requests that find the same expired upstream token
//! share one upstream refresh; requests that arrive just after it completed
//! (holding the old token) get its result instead of refreshing again, so an
//! upstream that rotates refresh tokens never sees the old one twice.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::oneshot;

use super::token_vault::{TokenVault, UpdateUpstreamTokens, UpstreamTokens};
use crate::crypto::sha256_b64url;
use crate::upstream::Upstream;

/// How long a finished refresh answers late requests holding the old token.
const RECENT_RESULT_TTL: Duration = Duration::from_secs(60);

type RefreshResult = Result<UpstreamTokens, RefreshFailed>;

/// Why an upstream refresh failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RefreshFailed {
    /// The upstream refused the grant: the client must authorize again.
    #[error("the upstream refused the refresh: {0}")]
    Refused(String),
    /// A passing failure (timeout, 5xx, storage).
    #[error("the upstream refresh failed: {0}")]
    Unavailable(String),
}

pub struct UpstreamRefresher {
    upstream: Upstream,
    vault: Addr<TokenVault>,
    /// Waiters per refresh in flight, by grant and old refresh token hash.
    in_flight: HashMap<String, Vec<oneshot::Sender<RefreshResult>>>,
    recent: HashMap<String, (Instant, RefreshResult)>,
}

impl UpstreamRefresher {
    pub fn new(upstream: Upstream, vault: Addr<TokenVault>) -> Self {
        UpstreamRefresher {
            upstream,
            vault,
            in_flight: HashMap::new(),
            recent: HashMap::new(),
        }
    }
}

impl Actor for UpstreamRefresher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(RECENT_RESULT_TTL, |refresher, _| {
            refresher.recent.retain(|_, (at, _)| at.elapsed() < RECENT_RESULT_TTL);
        });
    }
}

/// Refreshes the upstream tokens of a grant and stores the new set.
#[derive(Message)]
#[rtype(result = "Result<UpstreamTokens, RefreshFailed>")]
pub struct RefreshUpstream {
    pub grant_id: String,
    pub refresh_token: String,
}

impl Handler<RefreshUpstream> for UpstreamRefresher {
    type Result = ResponseFuture<RefreshResult>;

    fn handle(&mut self, msg: RefreshUpstream, ctx: &mut Self::Context) -> Self::Result {
        let key = format!("{}.{}", msg.grant_id, sha256_b64url(msg.refresh_token.as_bytes()));
        if let Some((at, result)) = self.recent.get(&key) {
            if at.elapsed() < RECENT_RESULT_TTL {
                let result = result.clone();
                return Box::pin(async move { result });
            }
        }
        let (sender, receiver) = oneshot::channel();
        let waiting = async move {
            receiver
                .await
                .unwrap_or_else(|_| Err(RefreshFailed::Unavailable("the refresh was abandoned".into())))
        };
        if let Some(waiters) = self.in_flight.get_mut(&key) {
            waiters.push(sender);
            return Box::pin(waiting);
        }
        self.in_flight.insert(key.clone(), vec![sender]);

        let upstream = self.upstream.clone();
        let vault = self.vault.clone();
        let refresh = async move {
            let tokens = upstream.refresh(&msg.refresh_token).await.map_err(|e| {
                if e.is_grant_refused() {
                    RefreshFailed::Refused(e.to_string())
                } else {
                    RefreshFailed::Unavailable(e.to_string())
                }
            })?;
            vault
                .send(UpdateUpstreamTokens {
                    grant_id: msg.grant_id,
                    upstream: tokens.clone(),
                    passthrough_hashes: None,
                })
                .await
                .map_err(|e| RefreshFailed::Unavailable(e.to_string()))?
                .map_err(|e| RefreshFailed::Unavailable(e.to_string()))?;
            Ok(tokens)
        };
        ctx.spawn(
            refresh
                .into_actor(self)
                .map(move |result: RefreshResult, refresher, _| {
                    for waiter in refresher.in_flight.remove(&key).unwrap_or_default() {
                        let _ = waiter.send(result.clone());
                    }
                    refresher.recent.insert(key, (Instant::now(), result));
                }),
        );
        Box::pin(waiting)
    }
}

impl Handler<super::Shutdown> for UpstreamRefresher {
    type Result = ();

    fn handle(&mut self, _: super::Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
