//! `ClientRegistry`: dynamically registered clients (RFC 7591).
//!
//! Contract: a client secret is stored only as a hash; unused registrations
//! expire; registration is capped and rate limited per client address (see
//! [`crate::client_address`]), so an open `/register` cannot exhaust memory
//! or disk. A client record is written once and never rewritten (keeping a
//! used client only extends its expiry), which is what lets lookups be
//! memoized (`crate::proxy::memo`).
//!
//! At the cap, the oldest never-used registration (registered, never
//! completed a token exchange) is evicted to make room; only when there is
//! none is the registration refused. Never-used clients are marked in a
//! table of their own (`client_unused`, same lifetime as the registration),
//! whose marker a client's first token exchange deletes: the soonest
//! expiring marker is the oldest never-used client, on every backend and
//! across instances sharing Redis (oldest to the millisecond). Taking the
//! marker decides the race between an eviction and that first exchange, or
//! another instance's eviction: only one of them gets it. An evicted client
//! may still be served from a worker's memo for up to a second, as one
//! that expires by time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::{purge_interval, store_messages};
use crate::audit::{Event, EventKind, Outcome, RequestContext};
use crate::client_address::RateKey;
use crate::config::RegistrationLimits;
use crate::crypto::{random_token, sha256_b64url};
use crate::oauth::client::{RegisteredClient, TokenEndpointAuthMethod, ValidRegistration};
use crate::oauth::client_document::document_url;
use crate::oauth::now_secs;
use crate::proxy::Recorder;
use crate::rate_limit::KeyedLimit;
use crate::store::{SealedTable, StoreError, Table};

/// Never-used markers read per eviction attempt (the oldest first).
const EVICTION_SAMPLE: usize = 16;

/// Evictions one registration may make (the cap may have been lowered
/// below the number of clients held).
const MAX_EVICTIONS_PER_REGISTRATION: usize = 4;

/// How long a read count is trusted while the registry is less than half
/// full. Counting is a round trip with Redis; other instances'
/// registrations in that second can only matter near the cap, where every
/// registration counts again.
const COUNT_TRUSTED_FOR: Duration = Duration::from_secs(1);

/// How often one instance writes a document client's listing at most.
const DOCUMENT_LISTING_EVERY: Duration = Duration::from_secs(60);

/// Document clients whose last listing write an instance remembers (for
/// [`DOCUMENT_LISTING_EVERY`]); beyond it, old entries are dropped.
const DOCUMENT_LISTINGS_REMEMBERED: usize = 4096;

/// What the admin listings show of a document client (see the module
/// docs): what its document said when last seen, and when.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DocumentListing {
    /// The document URL (the client id).
    pub client_id: String,
    pub client_name: Option<String>,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    pub token_endpoint_auth_method: TokenEndpointAuthMethod,
    /// The document's host.
    pub host: String,
    /// Unix seconds.
    pub first_seen: u64,
    pub last_seen: u64,
}

impl DocumentListing {
    /// The listing of a document client seen now (`None` for a registered one).
    pub fn of(client: &RegisteredClient) -> Option<Self> {
        let facts = client.document.as_ref()?;
        let now = now_secs();
        Some(DocumentListing {
            client_id: client.client_id.clone(),
            client_name: client.client_name.clone(),
            redirect_uris: client.redirect_uris.clone(),
            grant_types: client.grant_types.clone(),
            token_endpoint_auth_method: client.token_endpoint_auth_method,
            host: facts.host.clone(),
            first_seen: now,
            last_seen: now,
        })
    }
}

/// A client as the admin listings find it, with when it last completed a
/// token exchange.
#[derive(Debug, Clone)]
pub enum ListedClient {
    Registered(RegisteredClient, Option<u64>),
    Document(DocumentListing, Option<u64>),
}

/// When this instance last wrote each document client's listing; shared by
/// replicas.
#[derive(Clone, Default)]
struct ListingWrites(Arc<Mutex<HashMap<String, Instant>>>);

impl ListingWrites {
    /// Whether `client_id`'s listing is due a write now; if so, counts it
    /// as written.
    fn due(&self, client_id: &str) -> bool {
        let Ok(mut writes) = self.0.lock() else {
            return true;
        };
        let now = Instant::now();
        if writes
            .get(client_id)
            .is_some_and(|at| now.duration_since(*at) < DOCUMENT_LISTING_EVERY)
        {
            return false;
        }
        if writes.len() >= DOCUMENT_LISTINGS_REMEMBERED {
            writes.retain(|_, at| now.duration_since(*at) < DOCUMENT_LISTING_EVERY);
            if writes.len() >= DOCUMENT_LISTINGS_REMEMBERED {
                // Many clients in a minute: write without remembering.
                return true;
            }
        }
        writes.insert(client_id.to_string(), now);
        true
    }

    fn forget(&self, client_id: &str) {
        if let Ok(mut writes) = self.0.lock() {
            writes.remove(client_id);
        }
    }
}

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
    tables: RegistryTables,
    /// Only the primary instance sweeps; replicas on worker threads do not.
    sweeping: bool,
}

/// The registry's tables, settings and in-process counters, cloned into
/// each message's future.
#[derive(Clone)]
struct RegistryTables {
    clients: SealedTable<RegisteredClient>,
    /// Never-used clients: client id → registration time (Unix µs), with
    /// the registration's lifetime (see the module docs).
    unused: Arc<dyn Table>,
    /// When each client last completed a token exchange: client id → Unix
    /// seconds (8 bytes, big-endian), as long as the client is kept. A
    /// table of its own: the client record is never rewritten.
    used: Arc<dyn Table>,
    /// Document clients' listings (see the module docs): document URL →
    /// [`DocumentListing`].
    documents: SealedTable<DocumentListing>,
    listing_writes: ListingWrites,
    limits: RegistrationLimits,
    unused_ttl: Duration,
    active_ttl: Duration,
    /// Registrations per client address, shared by replicas.
    rate: Option<Arc<KeyedLimit>>,
    seen_count: SeenCount,
    /// Records `client.expired` (the sweep, evictions at the cap).
    recorder: Option<Recorder>,
}

impl ClientRegistry {
    pub fn new(
        clients: SealedTable<RegisteredClient>,
        unused: Arc<dyn Table>,
        used: Arc<dyn Table>,
        documents: SealedTable<DocumentListing>,
        limits: RegistrationLimits,
        unused_ttl: Duration,
        active_ttl: Duration,
    ) -> Self {
        ClientRegistry {
            tables: RegistryTables {
                clients,
                unused,
                used,
                documents,
                listing_writes: ListingWrites::default(),
                limits,
                unused_ttl,
                active_ttl,
                rate: KeyedLimit::per_minute(limits.per_ip_per_minute).map(Arc::new),
                seen_count: SeenCount::default(),
                recorder: None,
            },
            sweeping: true,
        }
    }

    /// Records expired and evicted registrations in the audit trail.
    pub fn recording(mut self, recorder: Recorder) -> Self {
        self.tables.recorder = Some(recorder);
        self
    }

    /// A copy for another thread, sharing the tables and the rate limiter.
    pub fn replica(&self) -> Self {
        ClientRegistry {
            sweeping: false,
            ..self.clone()
        }
    }
}

impl RegistryTables {
    /// Counts a registration from `client`; whether it is over the limit.
    /// Records a `client.expired` event (no request caused it). A required
    /// trail that cannot take it is logged: the store has already changed.
    fn record_expired(&self, client_id: Option<&str>, reason: String) {
        let Some(recorder) = &self.recorder else {
            return;
        };
        let mut event =
            Event::new(EventKind::ClientExpired, Outcome::Success, &RequestContext::default()).reason(reason);
        event.client_id = client_id.map(str::to_string);
        if let Err(e) = recorder.record(event) {
            log::warn!("client expiry not audited: {e}");
        }
    }

    fn rate_limited(&self, client: Option<RateKey>) -> bool {
        let (Some(limit), Some(key)) = (&self.rate, client) else {
            return false;
        };
        let limited = limit.check(key).is_err();
        if limited {
            limit.log_refusal("/register", key);
        }
        limited
    }
}

/// Deletes the oldest never-used client; the one that went.
async fn evict_oldest_unused(
    clients: &SealedTable<RegisteredClient>,
    unused: &dyn Table,
) -> Result<Option<String>, StoreError> {
    for client_id in unused.soonest_expiring(EVICTION_SAMPLE).await? {
        // Only one taker: a first token exchange (which deletes the marker)
        // or another eviction that got here first makes this `None`.
        if unused.take(&client_id).await?.is_some() && clients.delete(&client_id).await? {
            log::info!("registration cap reached: evicted never-used client {client_id}");
            return Ok(Some(client_id));
        }
    }
    Ok(None)
}

impl Actor for ClientRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if !self.sweeping {
            return;
        }
        let interval = purge_interval(self.tables.unused_ttl);
        // The sweep learns only how many registrations expired, not which.
        ctx.run_interval(interval, |registry, ctx| {
            let tables = registry.tables.clone();
            ctx.spawn(actix::fut::wrap_future(async move {
                match tables.clients.purge_expired().await {
                    Ok(0) => {}
                    Ok(expired) => tables.record_expired(
                        None,
                        format!("{expired} client registration(s) expired: never used within OAUTH_PROXY_UNUSED_CLIENT_TTL, or unused since their grants ended"),
                    ),
                    Err(e) => log::error!("client registry sweep failed: {e}"),
                }
            }));
        });
        ctx.run_interval(interval, |registry, ctx| {
            let (unused, documents) = (registry.tables.unused.clone(), registry.tables.documents.clone());
            ctx.spawn(actix::fut::wrap_future(async move {
                if let Err(e) = unused.purge_expired().await {
                    log::error!("never-used client marker sweep failed: {e}");
                }
                if let Err(e) = documents.purge_expired().await {
                    log::error!("document client listing sweep failed: {e}");
                }
            }));
        });
    }
}

/// When a client last completed a token exchange, if it has.
async fn last_used(used: &dyn Table, client_id: &str) -> Result<Option<u64>, StoreError> {
    Ok(used
        .get(client_id)
        .await?
        .and_then(|bytes| bytes.try_into().ok())
        .map(u64::from_be_bytes))
}

/// Which clients an admin listing shows.
#[derive(Debug, Clone, Default)]
pub struct ClientFilter {
    /// A part of the client name, compared without regard to case.
    pub name_contains: Option<String>,
    /// A host one of its redirect URIs points at.
    pub redirect_host: Option<String>,
}

impl ClientFilter {
    pub fn accepts(&self, client: &RegisteredClient) -> bool {
        self.accepts_parts(client.client_name.as_deref(), &client.redirect_uris)
    }

    pub fn accepts_document(&self, listing: &DocumentListing) -> bool {
        self.accepts_parts(listing.client_name.as_deref(), &listing.redirect_uris)
    }

    fn accepts_parts(&self, client_name: Option<&str>, redirect_uris: &[String]) -> bool {
        let name_matches = self
            .name_contains
            .as_deref()
            .is_none_or(|part| client_name.is_some_and(|name| name.to_lowercase().contains(&part.to_lowercase())));
        let host_matches = self.redirect_host.as_deref().is_none_or(|host| {
            redirect_uris.iter().any(|uri| {
                url::Url::parse(uri)
                    .ok()
                    .and_then(|url| {
                        url.host_str().map(|h| {
                            h.eq_ignore_ascii_case(host.trim_matches(['[', ']'])) || h.eq_ignore_ascii_case(host)
                        })
                    })
                    .unwrap_or(false)
            })
        });
        name_matches && host_matches
    }
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

store_messages! {
    ClientRegistry: |t = tables, msg|

    /// Registers a client; answers the record and the clear secret (once).
    RegisterClient {
        pub registration: ValidRegistration,
        /// The client's address (see [`crate::client_address::ClientAddress`]).
        pub client_ip: Option<std::net::IpAddr>,
    } -> Result<(RegisteredClient, Option<String>), RegisterError> {
        // Before the first `.await`: counted inside the handler.
        if t.rate_limited(msg.client_ip.map(RateKey::of)) {
            return Err(RegisterError::RateLimited);
        }
        let (clients, unused) = (&t.clients, &t.unused);
        let (max_clients, ttl) = (t.limits.max_clients, t.unused_ttl);
        if !t.seen_count.trusted(max_clients) {
            let mut count = clients.count().await?;
            if count >= max_clients {
                // Expired registrations may still be counted; sweep before evicting.
                clients.purge_expired().await?;
                count = clients.count().await?;
                let mut evictions = 0;
                while count >= max_clients {
                    let evicted = match evictions < MAX_EVICTIONS_PER_REGISTRATION {
                        true => evict_oldest_unused(clients, &**unused).await?,
                        false => None,
                    };
                    let Some(evicted) = evicted else {
                        return Err(RegisterError::Full);
                    };
                    t.record_expired(
                        Some(&evicted),
                        "never used, evicted at the registration cap (OAUTH_PROXY_MAX_CLIENTS)".into(),
                    );
                    evictions += 1;
                    count -= 1;
                }
            }
            t.seen_count.counted(count);
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
            document: None,
        };
        let registered_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        // Independent writes: issued together, they share one commit.
        let (stored, marked) = futures_util::future::join(
            clients.put(&client.client_id, &client, ttl),
            unused.put(&client.client_id, registered_at.to_be_bytes().to_vec(), ttl),
        )
        .await;
        stored?;
        marked?;
        t.seen_count.registered_one();
        Ok((client, secret))
    }

    /// Looks up a registered client.
    GetClient(pub String) -> Result<Option<RegisteredClient>, StoreError> {
        t.clients.get(&msg.0).await
    }

    /// A client completed a token exchange: keep it as long as its grants live.
    MarkClientUsed(pub String) -> Result<(), StoreError> {
        // Only the expiry changes: no read, decrypt and rewrite of the record.
        // The never-used marker and the time of use go with the same commit.
        if document_url(&msg.0).is_some() {
            // A document client: no registration, its listing is kept instead.
            let (touched, noted) = futures_util::future::join(
                t.documents.touch(&msg.0, t.active_ttl),
                t.used.put(&msg.0, now_secs().to_be_bytes().to_vec(), t.active_ttl),
            )
            .await;
            return touched.and(noted).map(|_| ());
        }
        let (touched, unmarked, noted) = futures_util::future::join3(
            t.clients.touch(&msg.0, t.active_ttl),
            t.unused.delete(&msg.0),
            t.used.put(&msg.0, now_secs().to_be_bytes().to_vec(), t.active_ttl),
        )
        .await;
        touched.and(unmarked).and(noted).map(|_| ())
    }

    /// A document client's authorization started: lists it (see the module
    /// docs; at most once a minute per client on this instance).
    SeenDocumentClient(pub DocumentListing) -> Result<(), StoreError> {
        let mut listing = msg.0;
        if !t.listing_writes.due(&listing.client_id) {
            return Ok(());
        }
        match t.documents.get(&listing.client_id).await? {
            Some(known) => listing.first_seen = known.first_seen.min(listing.first_seen),
            None => {
                if t.documents.count().await? >= t.limits.max_clients {
                    log::warn!(
                        "document client {} not listed: {} document clients are listed (OAUTH_PROXY_MAX_CLIENTS)",
                        listing.client_id,
                        t.limits.max_clients
                    );
                    return Ok(());
                }
            }
        }
        t.documents.put(&listing.client_id.clone(), &listing, t.active_ttl).await
    }

    /// A client and when it last completed a token exchange (the admin API).
    ClientUsage(pub String) -> Result<Option<ListedClient>, StoreError> {
        if document_url(&msg.0).is_some() {
            let Some(listing) = t.documents.get(&msg.0).await? else {
                return Ok(None);
            };
            return Ok(Some(ListedClient::Document(listing, last_used(&*t.used, &msg.0).await?)));
        }
        let Some(client) = t.clients.get(&msg.0).await? else {
            return Ok(None);
        };
        Ok(Some(ListedClient::Registered(client, last_used(&*t.used, &msg.0).await?)))
    }

    /// A page of clients that `filter` accepts (the admin API), from
    /// `cursor` on, up to `limit`, with the cursor of the next page:
    /// registered clients, then listed document clients. Reads the tables
    /// (both are capped). Cursors are `r.<registrations' cursor>` or
    /// `d.<listings' cursor>` (`d.` alone: the listings from their start).
    ListClients {
        pub filter: ClientFilter,
        pub cursor: Option<String>,
        pub limit: usize,
    } -> Result<(Vec<ListedClient>, Option<String>), StoreError> {
        let unknown = || StoreError::Encoding("not a client listing cursor".into());
        let (in_documents, mut cursor) = match msg.cursor.as_deref() {
            None => (false, None),
            Some(given) => match (given.strip_prefix("r."), given.strip_prefix("d.")) {
                (Some(registered), _) if !registered.is_empty() => (false, Some(registered.to_string())),
                (_, Some(documents)) => (true, Some(documents.to_string()).filter(|c| !c.is_empty())),
                _ => return Err(unknown()),
            },
        };
        let mut found = Vec::new();
        if !in_documents {
            while found.len() < msg.limit {
                let page = t.clients.scan(cursor.as_deref(), msg.limit - found.len()).await?;
                for client_id in page.keys {
                    if let Some(client) = t.clients.get(&client_id).await?.filter(|c| msg.filter.accepts(c)) {
                        let used = last_used(&*t.used, &client_id).await?;
                        found.push(ListedClient::Registered(client, used));
                    }
                }
                cursor = page.next;
                if cursor.is_none() {
                    break;
                }
            }
            if let Some(next) = cursor {
                return Ok((found, Some(format!("r.{next}"))));
            }
            if found.len() >= msg.limit {
                return Ok((found, Some("d.".to_string())));
            }
        }
        while found.len() < msg.limit {
            let page = t.documents.scan(cursor.as_deref(), msg.limit - found.len()).await?;
            for client_id in page.keys {
                let listing = t.documents.get(&client_id).await?;
                if let Some(listing) = listing.filter(|l| msg.filter.accepts_document(l)) {
                    let used = last_used(&*t.used, &client_id).await?;
                    found.push(ListedClient::Document(listing, used));
                }
            }
            cursor = page.next;
            if cursor.is_none() {
                break;
            }
        }
        Ok((found, cursor.map(|next| format!("d.{next}"))))
    }

    /// Deletes a client (the admin API; its grants are revoked by the
    /// caller); answers whether it was registered.
    DeleteClient(pub String) -> Result<bool, StoreError> {
        if document_url(&msg.0).is_some() {
            // Its listing: a new sign-in lists it again at once.
            t.listing_writes.forget(&msg.0);
            let (deleted, forgotten) =
                futures_util::future::join(t.documents.delete(&msg.0), t.used.delete(&msg.0)).await;
            forgotten?;
            return deleted;
        }
        let (deleted, unmarked, forgotten) = futures_util::future::join3(
            t.clients.delete(&msg.0),
            t.unused.delete(&msg.0),
            t.used.delete(&msg.0),
        )
        .await;
        unmarked?;
        forgotten?;
        deleted
    }
}

super::lifecycle_handlers!(ClientRegistry, tables.clients);

/// How many document clients are listed (for `/metrics`).
#[derive(Message)]
#[rtype(result = "Result<usize, StoreError>")]
pub struct CountDocumentClients;

impl Handler<CountDocumentClients> for ClientRegistry {
    type Result = super::Answer<Result<usize, StoreError>>;

    fn handle(&mut self, _: CountDocumentClients, _: &mut Self::Context) -> Self::Result {
        let documents = self.tables.documents.clone();
        super::Answer::of(async move { documents.count().await })
    }
}

#[cfg(test)]
mod tests {
    use super::ClientFilter;
    use crate::oauth::client::{RegisteredClient, TokenEndpointAuthMethod};

    fn client(name: Option<&str>, redirect_uri: &str) -> RegisteredClient {
        RegisteredClient {
            client_id: "c".into(),
            client_secret_hash: None,
            redirect_uris: vec![redirect_uri.into()],
            token_endpoint_auth_method: TokenEndpointAuthMethod::None,
            grant_types: vec![],
            client_name: name.map(String::from),
            client_uri: None,
            scope: None,
            issued_at: 0,
            document: None,
        }
    }

    #[test]
    fn the_client_filter_matches_a_part_of_the_name_in_any_case_and_a_redirect_host() {
        let cursor = client(Some("Cursor IDE"), "https://app.Example.com/cb");
        let filter = |name: Option<&str>, host: Option<&str>| ClientFilter {
            name_contains: name.map(String::from),
            redirect_host: host.map(String::from),
        };
        assert!(filter(None, None).accepts(&cursor));
        assert!(filter(Some("cursor"), None).accepts(&cursor));
        assert!(filter(Some("R ID"), None).accepts(&cursor));
        assert!(!filter(Some("claude"), None).accepts(&cursor));
        assert!(filter(None, Some("app.example.com")).accepts(&cursor));
        assert!(
            !filter(None, Some("example.com")).accepts(&cursor),
            "the host, not a suffix"
        );
        assert!(!filter(Some("cursor"), Some("other.example")).accepts(&cursor));
        assert!(!filter(Some("x"), None).accepts(&client(None, "http://127.0.0.1/cb")));
        assert!(filter(None, Some("[::1]")).accepts(&client(None, "http://[::1]:8080/cb")));
    }
}
