//! The cache of fetched documents and key sets, shared by every worker
//! thread, with a single flight per URL.
//!
//! - A value lives for its `Cache-Control: max-age`, clamped to
//!   [`MIN_LIFETIME`, `MAX_LIFETIME`]; no max-age (or `no-cache` /
//!   `no-store`) gets the minimum: documents change rarely, and refetching on
//!   every authorization would let any page view make the proxy fetch.
//! - At most `capacity` entries: expired ones go first, then the one that
//!   would expire soonest.
//! - A failure is never cached: the next request fetches again.
//! - Concurrent first requests for one URL fetch it once, on whichever
//!   worker came first; the others (on any thread) wait for that fetch's
//!   outcome, success or failure, through a `watch` channel.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::oauth::client_document::DocumentError;

/// Shortest time a fetched value is kept.
pub const MIN_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// Longest time a fetched value is kept, whatever its max-age says.
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// Entries per cache.
pub const CAPACITY: usize = 1024;

/// How long a value with `max_age` is kept.
pub fn lifetime(max_age: Option<Duration>) -> Duration {
    max_age.unwrap_or(MIN_LIFETIME).clamp(MIN_LIFETIME, MAX_LIFETIME)
}

/// A fetch's outcome as its waiters see it (`None`: not yet).
type Outcome<V> = Option<Result<V, DocumentError>>;

/// A cache of `V` by URL (see the module docs).
pub struct Store<V> {
    state: Mutex<State<V>>,
    capacity: usize,
}

struct State<V> {
    entries: HashMap<String, Entry<V>>,
    /// URLs being fetched, and where their outcome will appear.
    flights: HashMap<String, watch::Receiver<Outcome<V>>>,
}

struct Entry<V> {
    value: V,
    expires: Instant,
}

impl<V: Clone + Send + Sync + 'static> Store<V> {
    pub fn new(capacity: usize) -> Store<V> {
        Store {
            state: Mutex::new(State {
                entries: HashMap::new(),
                flights: HashMap::new(),
            }),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<V>> {
        // A panic while holding the lock leaves the maps consistent (each
        // change is one insert or remove).
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The value for `key` if it is still fresh at `now`.
    #[cfg(test)]
    pub fn lookup_at(&self, key: &str, now: Instant) -> Option<V> {
        self.lock().fresh(key, now)
    }

    /// Keeps `value` for `lifetime` from `now`.
    #[cfg(test)]
    pub fn insert_at(&self, key: &str, value: V, lifetime: Duration, now: Instant) {
        let capacity = self.capacity;
        self.lock().insert(key, value, now + lifetime, now, capacity);
    }

    /// Drops `key`'s value, so the next request fetches it.
    pub fn forget(&self, key: &str) {
        self.lock().entries.remove(key);
    }

    /// How many values are kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// The value for `key`: the cached one, the outcome of a fetch already
    /// under way, or the outcome of `fetch` (run on this worker; it answers
    /// the value and how long to keep it).
    pub async fn get_or_fetch<F, Fut>(self: &Arc<Self>, key: &str, fetch: F) -> Result<V, DocumentError>
    where
        F: FnOnce() -> Fut + 'static,
        Fut: Future<Output = Result<(V, Duration), DocumentError>> + 'static,
    {
        let mut outcome = {
            let mut state = self.lock();
            if let Some(value) = state.fresh(key, Instant::now()) {
                return Ok(value);
            }
            match state.flights.get(key) {
                // A flight whose fetcher is gone (its worker stopped) is
                // abandoned: lead a new one.
                Some(flight) if flight.has_changed().is_ok() => flight.clone(),
                _ => {
                    let (sender, receiver) = watch::channel(None);
                    state.flights.insert(key.to_string(), receiver.clone());
                    let store = Arc::clone(self);
                    let key = key.to_string();
                    // Spawned, so the fetch completes for its waiters even
                    // if the request that started it goes away.
                    actix_web::rt::spawn(async move {
                        let outcome = fetch().await;
                        let answer = {
                            let mut state = store.lock();
                            state.flights.remove(&key);
                            outcome.map(|(value, lifetime)| {
                                let now = Instant::now();
                                state.insert(&key, value.clone(), now + lifetime, now, store.capacity);
                                value
                            })
                        };
                        let _ = sender.send(Some(answer));
                    });
                    receiver
                }
            }
        };
        let answer = outcome.wait_for(Option::is_some).await.map(|seen| seen.clone());
        match answer {
            Ok(Some(result)) => result,
            _ => Err(DocumentError::Unreachable("the fetch was interrupted".into())),
        }
    }
}

impl<V: Clone> State<V> {
    fn fresh(&mut self, key: &str, now: Instant) -> Option<V> {
        match self.entries.get(key) {
            Some(entry) if entry.expires > now => Some(entry.value.clone()),
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    fn insert(&mut self, key: &str, value: V, expires: Instant, now: Instant, capacity: usize) {
        if self.entries.len() >= capacity && !self.entries.contains_key(key) {
            self.entries.retain(|_, entry| entry.expires > now);
            while self.entries.len() >= capacity {
                let Some(soonest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, entry)| entry.expires)
                    .map(|(key, _)| key.clone())
                else {
                    break;
                };
                self.entries.remove(&soonest);
            }
        }
        self.entries.insert(key.to_string(), Entry { value, expires });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn max_age_is_clamped_between_five_minutes_and_a_day() {
        assert_eq!(lifetime(None), 5 * MINUTE);
        assert_eq!(lifetime(Some(Duration::ZERO)), 5 * MINUTE);
        assert_eq!(lifetime(Some(MINUTE)), 5 * MINUTE);
        assert_eq!(lifetime(Some(60 * MINUTE)), 60 * MINUTE);
        assert_eq!(lifetime(Some(7 * 24 * 60 * MINUTE)), 24 * 60 * MINUTE);
    }

    #[test]
    fn a_value_is_fresh_until_its_lifetime_ends() {
        let store = Store::new(4);
        let start = Instant::now();
        store.insert_at("https://a.example/doc", 1, lifetime(None), start);
        assert_eq!(store.lookup_at("https://a.example/doc", start + 4 * MINUTE), Some(1));
        assert_eq!(store.lookup_at("https://a.example/doc", start + 5 * MINUTE), None);
        assert_eq!(store.len(), 0, "an expired value is dropped when seen");
    }

    #[test]
    fn a_full_cache_drops_expired_values_then_the_soonest_to_expire() {
        let store = Store::new(2);
        let start = Instant::now();
        store.insert_at("short", 1, 5 * MINUTE, start);
        store.insert_at("long", 2, 60 * MINUTE, start);
        store.insert_at("new", 3, 30 * MINUTE, start);
        assert_eq!(store.len(), 2);
        assert_eq!(store.lookup_at("short", start), None);
        assert_eq!(store.lookup_at("long", start), Some(2));
        assert_eq!(store.lookup_at("new", start), Some(3));

        // Later: "new" expired, so it goes first and "long" stays.
        let later = start + 40 * MINUTE;
        store.insert_at("newer", 4, 30 * MINUTE, later);
        assert_eq!(store.lookup_at("long", later), Some(2));
        assert_eq!(store.lookup_at("newer", later), Some(4));
    }

    #[actix_web::test]
    async fn concurrent_requests_share_one_fetch_and_a_failure_is_not_kept() {
        let store: Arc<Store<u32>> = Arc::new(Store::new(4));
        let fetches = Arc::new(AtomicUsize::new(0));
        let fetch = |answer: Result<u32, DocumentError>| {
            let fetches = fetches.clone();
            move || async move {
                fetches.fetch_add(1, Ordering::SeqCst);
                actix_web::rt::time::sleep(Duration::from_millis(50)).await;
                answer.map(|value| (value, MINUTE))
            }
        };
        let failed = futures_util::future::join_all(
            (0..5).map(|_| store.get_or_fetch("u", fetch(Err(DocumentError::Status(500))))),
        )
        .await;
        assert!(
            failed.iter().all(|r| *r == Err(DocumentError::Status(500))),
            "{failed:?}"
        );
        assert_eq!(fetches.load(Ordering::SeqCst), 1);

        let answers = futures_util::future::join_all((0..5).map(|_| store.get_or_fetch("u", fetch(Ok(7))))).await;
        assert!(answers.iter().all(|r| *r == Ok(7)), "{answers:?}");
        assert_eq!(fetches.load(Ordering::SeqCst), 2, "the failure was not kept");
        assert_eq!(store.get_or_fetch("u", fetch(Ok(8))).await, Ok(7), "the value was kept");
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }
}
