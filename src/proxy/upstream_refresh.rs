//! [`RefreshFlights`]: the one path by which the proxy spends an upstream
//! refresh token, for the MCP gateway (an expired upstream access token) and
//! for `/token` (a proxy refresh refreshes upstream too).
//!
//! Not an actor: the flights are shared by every worker thread behind a
//! mutex held for a map lookup, and the refresh itself runs on the thread of
//! the request that started it. An actor on the System thread cost every
//! `/token` refresh two thread hops and put every upstream call on one
//! thread (docs/performance.md).
//!
//! Contract:
//! - Concurrent requests that need the same upstream refresh token spent
//!   share one upstream refresh; requests that arrive just after it completed
//!   (holding the old token) get its result instead of refreshing again, so
//!   an upstream that rotates refresh tokens never sees the old one twice
//!   from this instance.
//! - Across instances (Redis), the refreshed tokens are written only if the
//!   grant still holds the token that was spent (compare-and-swap). An
//!   instance that lost the race, or whose refresh the upstream refused
//!   because another instance had spent the token first, takes the tokens
//!   the winner stored instead of failing.
//! - Only a refusal, or a success that rotated the refresh token, is
//!   remembered; after a passing failure the next request tries again, and a
//!   token the upstream did not rotate may be spent again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::Addr;
use tokio::sync::oneshot;

use super::Recorder;
use crate::actors::token_vault::{GetGrant, TokenVault, UpdateUpstreamTokens, UpstreamUpdate};
use crate::audit::{Event, EventKind, Outcome, RequestContext};
use crate::crypto::sha256_b64url;
use crate::records::UpstreamTokens;
use crate::upstream::Upstream;

/// How long a finished refresh answers late gateway requests holding the
/// old token (they may have read the grant just before it changed).
pub const GATEWAY_LATE_WINDOW: Duration = Duration::from_secs(60);

/// The same for a refresh `/token` started: the grant is rewritten with the
/// new tokens before `/token` answers, so only requests that read it just
/// before can come late. Short, as every proxy refresh leaves one entry.
pub const TOKEN_LATE_WINDOW: Duration = Duration::from_secs(5);

/// How often finished refreshes past their window are forgotten.
const FORGET_EVERY: Duration = Duration::from_secs(5);

/// When the upstream refuses a refresh token the grant still holds, the
/// grant is read again after each of these pauses: another instance that
/// spent the token first stores its tokens right after the upstream answers
/// it. About half a second in all, and only before giving up on a grant.
const WINNER_PAUSES: [Duration; 4] = [
    Duration::ZERO,
    Duration::from_millis(100),
    Duration::from_millis(150),
    Duration::from_millis(250),
];

type RefreshResult = Result<UpstreamTokens, RefreshFailed>;

/// Why an upstream refresh failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RefreshFailed {
    /// The upstream refused the grant, or the grant is gone: the client must
    /// authorize again.
    #[error("the upstream refused the refresh: {0}")]
    Refused(String),
    /// A failure the client cannot fix by signing in again.
    #[error("the upstream refresh failed: {0}")]
    Unavailable(Failure),
}

/// What went wrong in an [`RefreshFailed::Unavailable`] refresh.
#[derive(Debug, Clone)]
pub struct Failure {
    pub reason: String,
    /// Trying again later may succeed (timeout, 5xx, storage); otherwise the
    /// upstream is misconfigured or broken.
    pub transient: bool,
}

impl Failure {
    pub fn transient(reason: impl Into<String>) -> Self {
        Failure {
            reason: reason.into(),
            transient: true,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Refreshes in flight and just finished, shared by every worker thread.
#[derive(Clone, Default)]
pub struct RefreshFlights {
    state: Arc<Mutex<Flights>>,
    /// Records each upstream refresh made (`upstream.token_refreshed`).
    recorder: Option<Recorder>,
}

#[derive(Default)]
struct Flights {
    /// Waiters per refresh in flight, by grant and old refresh token hash.
    in_flight: HashMap<String, Vec<oneshot::Sender<RefreshResult>>>,
    /// Finished refreshes, by the same key, with the time they stop answering.
    recent: HashMap<String, (Instant, RefreshResult)>,
    /// When `recent` was last swept of entries past their time.
    swept: Option<Instant>,
}

impl Flights {
    fn sweep(&mut self, now: Instant) {
        if self.swept.is_none_or(|at| now.duration_since(at) >= FORGET_EVERY) {
            self.recent.retain(|_, (until, _)| *until > now);
            self.swept = Some(now);
        }
    }
}

/// Refreshes the upstream tokens of a grant and stores the new set.
pub struct RefreshUpstream {
    pub grant_id: String,
    /// The upstream refresh token to spend (the one the grant holds).
    pub refresh_token: String,
    /// Pass-through mode: the client will hold the new tokens (the vault
    /// records their hashes).
    pub passthrough: bool,
    /// How long the result answers requests that come late holding the old
    /// token ([`GATEWAY_LATE_WINDOW`], [`TOKEN_LATE_WINDOW`]).
    pub late_window: Duration,
    /// For the audit event: the request that asked first, and whose grant.
    pub context: RequestContext,
    pub client_id: String,
    pub subject: String,
}

impl RefreshFlights {
    pub fn new(recorder: Recorder) -> Self {
        RefreshFlights {
            recorder: Some(recorder),
            ..RefreshFlights::default()
        }
    }

    /// Records the outcome of one upstream refresh (requests that shared
    /// it are not recorded again). The store has already changed, so a
    /// required trail that cannot take it is logged only.
    fn record(&self, msg: &RefreshAudit, result: &RefreshResult) {
        let Some(recorder) = &self.recorder else {
            return;
        };
        let (outcome, reason) = match result {
            Ok(_) => (Outcome::Success, None),
            Err(RefreshFailed::Refused(why)) => (Outcome::Refused, Some(why.clone())),
            Err(RefreshFailed::Unavailable(failure)) => (Outcome::Failure, Some(failure.reason.clone())),
        };
        let mut event = Event::new(EventKind::UpstreamTokenRefreshed, outcome, &msg.context)
            .client(msg.client_id.clone(), None)
            .subject(msg.subject.clone(), None)
            .grant(msg.grant_id.clone());
        event.reason = reason;
        if let Err(e) = recorder.record(event) {
            log::warn!("upstream refresh not audited: {e}");
        }
    }
    /// Spends `msg.refresh_token` upstream once, however many requests ask
    /// at once, and stores the new tokens through `vault`. The refresh runs
    /// as a task of this thread, so it completes (and answers the others
    /// waiting) even if the request that started it goes away.
    pub async fn refresh(
        &self,
        upstream: &Upstream,
        vault: &Addr<TokenVault>,
        mut msg: RefreshUpstream,
    ) -> RefreshResult {
        let spent_hash = sha256_b64url(msg.refresh_token.as_bytes());
        let key = format!("{}.{spent_hash}", msg.grant_id);
        let (sender, receiver) = oneshot::channel();
        let start = {
            let mut flights = self.lock();
            let now = Instant::now();
            flights.sweep(now);
            if let Some((until, result)) = flights.recent.get(&key) {
                if *until > now {
                    return result.clone();
                }
            }
            match flights.in_flight.get_mut(&key) {
                Some(waiters) => {
                    waiters.push(sender);
                    false
                }
                None => {
                    flights.in_flight.insert(key.clone(), vec![sender]);
                    true
                }
            }
        };
        if start {
            let (flights, upstream, vault) = (self.clone(), upstream.clone(), vault.clone());
            actix::spawn(async move {
                let late_window = msg.late_window;
                let audit = RefreshAudit {
                    context: std::mem::take(&mut msg.context),
                    client_id: std::mem::take(&mut msg.client_id),
                    subject: std::mem::take(&mut msg.subject),
                    grant_id: msg.grant_id.clone(),
                };
                let result = refresh(upstream, vault, msg).await;
                flights.record(&audit, &result);
                flights.finish(key, spent_hash, late_window, result);
            });
        }
        receiver.await.unwrap_or_else(|_| {
            Err(RefreshFailed::Unavailable(Failure::transient(
                "the refresh was abandoned",
            )))
        })
    }

    /// Answers everyone waiting for the refresh of `key`, and remembers a
    /// refusal or a rotation for requests that come late with the old token.
    fn finish(&self, key: String, spent_hash: String, late_window: Duration, result: RefreshResult) {
        let remember = match &result {
            Ok(tokens) => tokens
                .refresh_token
                .as_deref()
                .is_none_or(|new| sha256_b64url(new.as_bytes()) != spent_hash),
            Err(RefreshFailed::Refused(_)) => true,
            Err(RefreshFailed::Unavailable(_)) => false,
        };
        let waiters = {
            let mut flights = self.lock();
            if remember {
                flights
                    .recent
                    .insert(key.clone(), (Instant::now() + late_window, result.clone()));
            }
            flights.in_flight.remove(&key).unwrap_or_default()
        };
        for waiter in waiters {
            let _ = waiter.send(result.clone());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Flights> {
        // A panic while holding it leaves the maps consistent (each update is
        // one insert or remove), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Who an upstream refresh was for, kept for its audit event.
struct RefreshAudit {
    context: RequestContext,
    client_id: String,
    subject: String,
    grant_id: String,
}

/// One upstream refresh and the compare-and-swap that stores its tokens.
async fn refresh(upstream: Upstream, vault: Addr<TokenVault>, msg: RefreshUpstream) -> RefreshResult {
    let storage = |e: &dyn std::fmt::Display| RefreshFailed::Unavailable(Failure::transient(e.to_string()));
    let tokens = match upstream.refresh(&msg.refresh_token).await {
        Ok(tokens) => tokens,
        Err(e) if e.is_grant_refused() => {
            // Another instance may have spent the token first (an upstream
            // that rotates refresh tokens then refuses it): its tokens are,
            // or in a moment will be, in the grant. Only on this rare path.
            for pause in WINNER_PAUSES {
                actix::clock::sleep(pause).await;
                let grant = vault
                    .send(GetGrant(msg.grant_id.clone()))
                    .await
                    .map_err(|e| storage(&e))?;
                match grant.map_err(|e| storage(&e))? {
                    Some(grant) if grant.upstream.refresh_token.as_deref() != Some(msg.refresh_token.as_str()) => {
                        return Ok(grant.upstream);
                    }
                    Some(_) => continue,
                    None => break,
                }
            }
            return Err(RefreshFailed::Refused(e.to_string()));
        }
        Err(e) => {
            return Err(RefreshFailed::Unavailable(Failure {
                reason: e.to_string(),
                transient: e.is_transient(),
            }))
        }
    };
    let passthrough_hashes = msg.passthrough.then(|| {
        (
            sha256_b64url(tokens.access_token.as_bytes()),
            tokens.refresh_token.as_deref().map(|t| sha256_b64url(t.as_bytes())),
        )
    });
    let update = vault
        .send(UpdateUpstreamTokens {
            grant_id: msg.grant_id,
            spent_refresh_token: msg.refresh_token,
            upstream: tokens.clone(),
            passthrough_hashes,
        })
        .await
        .map_err(|e| storage(&e))?
        .map_err(|e| storage(&e))?;
    match update {
        UpstreamUpdate::Written => Ok(tokens),
        UpstreamUpdate::Superseded(winner) => Ok(winner),
        UpstreamUpdate::Gone => Err(RefreshFailed::Refused("the grant was revoked or has ended".into())),
    }
}
