//! The shared backend: Redis, so several proxy instances behind a load
//! balancer share every client, transaction, code and grant.
//!
//! - Expiry is Redis's own (`SET … PX`); a sorted-set index per table (score:
//!   expiry) lets `len` count live records without scanning the keyspace.
//! - Every operation is one round trip and atomic on the server where it
//!   must be: `take` is `GETDEL`, and compare-and-swap is a Lua script that
//!   compares and writes in one step. That makes single-use codes and refresh
//!   rotation atomic across instances. Plain writes are pipelined native
//!   commands (record, then index entry), cheaper for Redis than a script.
//! - Keys carry the table as a hash tag (`mcp-oauth-proxy:{grant}:…`), so a
//!   record and its index live in one Redis Cluster slot.
//! - The connection manager reconnects by itself after a Redis restart; until
//!   then calls fail fast with [`StoreError::Unavailable`] (HTTP 503).
//! - A table whose reads are remembered (the grants, read by every guarded
//!   request) follows Redis's invalidations: see [`Invalidations`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncConnectionConfig, ProtocolVersion, PushInfo, PushKind, Script};

use super::{IndexEntry, Page, StoreError, StoreFuture, Table};
use crate::tls::OutboundTls;

const PREFIX: &str = "mcp-oauth-proxy";

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

struct Scripts {
    swap: Script,
    purge: Script,
    put_indexed: Script,
    index_scan: Script,
    index_remove: Script,
    index_add: Script,
    scan: Script,
}

fn scripts() -> &'static Scripts {
    static SCRIPTS: std::sync::OnceLock<Scripts> = std::sync::OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        swap: Script::new(
            "local cur = redis.call('GET', KEYS[1]) \
             if ARGV[1] == '1' then if cur ~= ARGV[2] then return 0 end \
             elseif cur then return 0 end \
             if ARGV[3] == '1' then \
               redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[5]) \
               redis.call('ZADD', KEYS[2], ARGV[6], KEYS[1]) \
             else \
               redis.call('DEL', KEYS[1]) redis.call('ZREM', KEYS[2], KEYS[1]) \
             end return 1",
        ),
        purge: Script::new("return redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])"),
        // KEYS: the record, the table's expiry index, then one sorted set
        // per index. ARGV: value, ttl, expiry, key, now, then each entry's
        // expiry. An index is a sorted set of `<key>|<expiry>` (score 0, so
        // in byte order) that lives as long as its longest-lived entry.
        put_indexed: Script::new(
            "redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) \
             redis.call('ZADD', KEYS[2], ARGV[3], KEYS[1]) \
             local now = tonumber(ARGV[5]) \
             for i = 3, #KEYS do \
               local at = tonumber(ARGV[i + 3]) \
               redis.call('ZREMRANGEBYLEX', KEYS[i], '[' .. ARGV[4] .. '|', '(' .. ARGV[4] .. '}') \
               redis.call('ZADD', KEYS[i], 0, ARGV[4] .. '|' .. ARGV[i + 3]) \
               local left = redis.call('PTTL', KEYS[i]) \
               if left < 0 or now + left < at then redis.call('PEXPIREAT', KEYS[i], ARGV[i + 3]) end \
             end return 1",
        ),
        // KEYS: an index. ARGV: where to start (`-` or `(<member>`), now,
        // limit. Answers the live members read and the last member seen;
        // expired ones are removed on the way.
        index_scan: Script::new(
            "local out = {} local start = ARGV[1] local now = tonumber(ARGV[2]) \
             local limit = tonumber(ARGV[3]) local last = false \
             while #out < limit do \
               local batch = redis.call('ZRANGEBYLEX', KEYS[1], start, '+', 'LIMIT', 0, limit - #out) \
               if #batch == 0 then break end \
               for _, m in ipairs(batch) do \
                 last = m \
                 local at = tonumber(string.match(m, '|(%d+)$')) \
                 if at and at > now then out[#out + 1] = m else redis.call('ZREM', KEYS[1], m) end \
               end \
               start = '(' .. last \
             end return {out, last}",
        ),
        index_remove: Script::new(
            "return redis.call('ZREMRANGEBYLEX', KEYS[1], '[' .. ARGV[1] .. '|', '(' .. ARGV[1] .. '}')",
        ),
        // KEYS: an index. ARGV: the key, the entry's expiry, now. Keeps the
        // later of the entry's expiries (compared as numbers, written as
        // given); answers 1 when no live entry was there.
        index_add: Script::new(
            "local low, high = '[' .. ARGV[1] .. '|', '(' .. ARGV[1] .. '}' \
             local at, best = tonumber(ARGV[2]), ARGV[2] local now = tonumber(ARGV[3]) local live = 0 \
             for _, m in ipairs(redis.call('ZRANGEBYLEX', KEYS[1], low, high)) do \
               local seen = string.match(m, '|(%d+)$') \
               if seen and tonumber(seen) > now then live = 1 end \
               if seen and tonumber(seen) > at then at, best = tonumber(seen), seen end \
             end \
             redis.call('ZREMRANGEBYLEX', KEYS[1], low, high) \
             redis.call('ZADD', KEYS[1], 0, ARGV[1] .. '|' .. best) \
             local left = redis.call('PTTL', KEYS[1]) \
             if left < 0 or now + left < at then redis.call('PEXPIREAT', KEYS[1], best) end \
             return 1 - live",
        ),
        // KEYS: the table's expiry index. ARGV: now, whether there is a
        // cursor, its score and member, limit. Pages through the live keys
        // by (expiry, key): members of one score come in byte order.
        scan: Script::new(
            "local function after(a, b) \
               local n = math.min(#a, #b) \
               for i = 1, n do \
                 local x, y = string.byte(a, i), string.byte(b, i) \
                 if x ~= y then return x > y end \
               end return #a > #b end \
             local out = {} local limit = tonumber(ARGV[5]) local low = '(' .. ARGV[1] \
             if ARGV[2] == '1' and tonumber(ARGV[3]) > tonumber(ARGV[1]) then \
               for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[3], ARGV[3])) do \
                 if #out < 2 * limit and after(m, ARGV[4]) then \
                   out[#out + 1] = m out[#out + 1] = ARGV[3] end \
               end \
               low = '(' .. ARGV[3] \
             end \
             if #out < 2 * limit then \
               local rest = redis.call('ZRANGEBYSCORE', KEYS[1], low, '+inf', 'WITHSCORES', 'LIMIT', 0, limit - #out / 2) \
               for _, v in ipairs(rest) do out[#out + 1] = v end \
             end return out",
        ),
    })
}

/// A connection to Redis shared by every table.
#[derive(Clone)]
pub struct RedisStore {
    /// Boxed: with TLS its connection info carries a root store.
    client: Arc<redis::Client>,
    connection: ConnectionManager,
}

impl RedisStore {
    /// Connects lazily: the service starts while Redis is down and serves
    /// 503s until it is back. A `rediss://` URL trusts the roots of `tls`
    /// (Mozilla's and `OAUTH_PROXY_EXTRA_CA_FILE`), and its certificate is
    /// checked here, once: a certificate Redis's clients would never accept
    /// is a configuration error, not an outage.
    pub fn connect(url: &str, tls: &OutboundTls) -> Result<RedisStore, StoreError> {
        let client = if url.starts_with("rediss://") {
            let certificates = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(tls.roots_pem().to_vec()),
            };
            let client = redis::Client::build_with_tls(url, certificates).map_err(unavailable)?;
            check_tls(&client)?;
            client
        } else {
            redis::Client::open(url).map_err(unavailable)?
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(unavailable)?;
        Ok(RedisStore {
            client: Arc::new(client),
            connection,
        })
    }

    /// One `PING` round trip (readiness); fails while Redis is down.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    pub fn table(&self, name: &'static str) -> RedisTable {
        RedisTable {
            prefix: format!("{PREFIX}:{{{name}}}:"),
            index: format!("{PREFIX}:{{{name}}}:~index"),
            connection: self.connection.clone(),
            invalidations: None,
        }
    }

    /// A table whose reads callers remember: it has a generation while a
    /// connection of its own follows Redis's invalidations of its keys.
    pub fn followed_table(&self, name: &'static str) -> RedisTable {
        let mut table = self.table(name);
        let invalidations = Arc::new(Invalidations::default());
        let info = self.client.get_connection_info().clone();
        let resp3 = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
        match redis::Client::open(info.set_redis_settings(resp3)) {
            Ok(client) => invalidations.follow(client, table.prefix.clone()),
            Err(e) => log::warn!("redis: not following invalidations of {name} records: {e}"),
        }
        table.invalidations = Some(invalidations);
        table
    }
}

/// Connects once, with a short timeout, to see the server's certificate: a
/// TLS failure (unknown issuer, wrong name, not TLS at all) stops start-up
/// with what to do; any other failure (Redis down, refused, a bad password)
/// is left to the lazy connection, as with `redis://`.
fn check_tls(client: &redis::Client) -> Result<(), StoreError> {
    let Err(e) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
        return Ok(());
    };
    match tls_failure(&e) {
        Some(problem) => Err(StoreError::Unavailable(format!(
            "redis: the TLS handshake failed: {problem}. If Redis's certificate is signed by a private CA, \
             set OAUTH_PROXY_EXTRA_CA_FILE to that CA's PEM; check the host name in the rediss:// URL \
             matches the certificate"
        ))),
        None => {
            log::warn!("redis: not reachable at start-up ({e}); requests get 503 until it is");
            Ok(())
        }
    }
}

/// The TLS error inside a connection error, if that is what it is: the
/// redis crate keeps the I/O error behind an `Arc`, and the I/O error keeps
/// rustls's (reachable with `get_ref`, not `source`).
fn tls_failure(error: &redis::RedisError) -> Option<String> {
    type Shared = Arc<dyn std::error::Error + Send + Sync>;
    fn rustls_in<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = error.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            return rustls_in(inner);
        }
        if let Some(shared) = error.downcast_ref::<Shared>() {
            return rustls_in(shared.as_ref());
        }
        None
    }
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = next {
        if let Some(tls) = rustls_in(current) {
            return Some(tls.to_string());
        }
        next = current.source();
    }
    None
}

/// What this process knows of writes to one table's keys by other
/// processes, through Redis's server-assisted client-side caching: a
/// connection of its own (RESP3) asks for a push for every write under the
/// table's prefix (`CLIENT TRACKING ON BCAST PREFIX`), and every push, like
/// every write made here, moves the generation on. While that connection is
/// not set up the table has no generation, so nothing is remembered. A push
/// arrives a moment after the write it reports; if the connection hangs
/// without closing, the memo's one-second limit bounds what is served.
#[derive(Default)]
struct Invalidations {
    generation: AtomicU64,
    following: AtomicBool,
}

impl Invalidations {
    fn generation(&self) -> Option<u64> {
        self.following
            .load(Ordering::Acquire)
            .then(|| self.generation.load(Ordering::Acquire))
    }

    fn moved_on(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Follows on a thread of its own (it sleeps between pushes), setting
    /// the tracking up again a second after the connection is lost, until
    /// the table is dropped (the thread holds only a weak reference).
    fn follow(self: &Arc<Self>, client: redis::Client, prefix: String) {
        let followed = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("redis-invalidations".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(e) => return log::warn!("redis: not following invalidations: {e}"),
                };
                runtime.block_on(async move {
                    let mut warned = false;
                    while followed.strong_count() > 0 {
                        if let Err(e) = follow_one_connection(&followed, &client, &prefix).await {
                            // Once: with a Redis that cannot track, this repeats every second.
                            if !std::mem::replace(&mut warned, true) {
                                log::warn!(
                                    "redis: invalidations not followed, so every guarded request reads its grant: {e}"
                                );
                            }
                        }
                        if let Some(invalidations) = followed.upgrade() {
                            invalidations.following.store(false, Ordering::Release);
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                });
            });
        if let Err(e) = spawned {
            log::warn!("redis: not following invalidations: {e}");
        }
    }
}

/// Sets the tracking up on a new connection; returns when it closes, or
/// when the table is gone.
async fn follow_one_connection(
    followed: &std::sync::Weak<Invalidations>,
    client: &redis::Client,
    prefix: &str,
) -> redis::RedisResult<()> {
    let closed = Arc::new(tokio::sync::Notify::new());
    let (on_push, on_close) = (followed.clone(), closed.clone());
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_push_sender(move |push: PushInfo| {
            // An invalidation, or the connection's end: either way what was
            // remembered may be stale.
            if let Some(invalidations) = on_push.upgrade() {
                invalidations.moved_on();
                if push.kind == PushKind::Disconnection {
                    invalidations.following.store(false, Ordering::Release);
                }
            }
            if push.kind == PushKind::Disconnection {
                on_close.notify_one();
            }
            Ok::<(), std::convert::Infallible>(())
        });
    let mut connection = client.get_multiplexed_async_connection_with_config(&config).await?;
    redis::cmd("CLIENT")
        .arg("TRACKING")
        .arg("ON")
        .arg("BCAST")
        .arg("PREFIX")
        .arg(prefix)
        .query_async::<()>(&mut connection)
        .await?;
    match followed.upgrade() {
        Some(invalidations) => {
            invalidations.moved_on();
            invalidations.following.store(true, Ordering::Release);
        }
        None => return Ok(()),
    }
    let mut closing = std::pin::pin!(closed.notified());
    // Wakes once a second to see whether the table is still there.
    while tokio::time::timeout(Duration::from_secs(1), closing.as_mut())
        .await
        .is_err()
    {
        if followed.strong_count() == 0 {
            break;
        }
    }
    Ok(())
}

/// One table: keys `mcp-oauth-proxy:{name}:<key>`.
pub struct RedisTable {
    prefix: String,
    index: String,
    connection: ConnectionManager,
    /// For a followed table (see [`RedisStore::followed_table`]).
    invalidations: Option<Arc<Invalidations>>,
}

impl RedisTable {
    /// A write's future, which moves a followed table's generation on once
    /// the write is done (or failed, when it may still have been made):
    /// this process's own pushes arrive a moment later.
    fn write<T: 'static>(
        &self,
        write: impl std::future::Future<Output = Result<T, StoreError>> + 'static,
    ) -> StoreFuture<T> {
        match self.invalidations.clone() {
            None => write.boxed_local().into(),
            Some(invalidations) => async move {
                let answer = write.await;
                invalidations.moved_on();
                answer
            }
            .boxed_local()
            .into(),
        }
    }

    /// `<command> <key>` (GETDEL or DEL), then the key's index entry removed,
    /// in one round trip; only the command's answer is returned.
    fn removing(&self, command: &str, key: &str) -> (redis::Pipeline, ConnectionManager) {
        let key = format!("{}{key}", self.prefix);
        let mut pipeline = redis::pipe();
        pipeline
            .cmd(command)
            .arg(&key)
            .cmd("ZREM")
            .arg(&self.index)
            .arg(&key)
            .ignore();
        (pipeline, self.connection.clone())
    }
}

impl RedisTable {
    /// The sorted set of one index: `mcp-oauth-proxy:{name}:~ix:<index>`
    /// (in the table's slot; `~` keeps it apart from record keys).
    fn index_key(&self, index: &str) -> String {
        format!("{}~ix:{index}", self.prefix)
    }
}

fn ttl_millis(ttl: Duration) -> u64 {
    (ttl.as_millis() as u64).max(1)
}

impl Table for RedisTable {
    fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> StoreFuture<()> {
        let key = format!("{}{key}", self.prefix);
        let mut pipeline = redis::pipe();
        pipeline
            .cmd("SET")
            .arg(&key)
            .arg(value)
            .arg("PX")
            .arg(ttl_millis(ttl))
            .ignore()
            .cmd("ZADD")
            .arg(&self.index)
            .arg(now_millis() + ttl_millis(ttl))
            .arg(&key)
            .ignore();
        let mut connection = self.connection.clone();
        self.write(async move { pipeline.query_async::<()>(&mut connection).await.map_err(unavailable) })
    }

    fn get(&self, key: &str) -> StoreFuture<Option<Vec<u8>>> {
        let mut connection = self.connection.clone();
        let key = format!("{}{key}", self.prefix);
        async move {
            redis::cmd("GET")
                .arg(key)
                .query_async::<Option<Vec<u8>>>(&mut connection)
                .await
                .map_err(unavailable)
        }
        .boxed_local()
        .into()
    }

    fn take(&self, key: &str) -> StoreFuture<Option<Vec<u8>>> {
        let (pipeline, mut connection) = self.removing("GETDEL", key);
        self.write(async move {
            pipeline
                .query_async::<(Option<Vec<u8>>,)>(&mut connection)
                .await
                .map(|(value,)| value)
                .map_err(unavailable)
        })
    }

    fn delete(&self, key: &str) -> StoreFuture<bool> {
        let (pipeline, mut connection) = self.removing("DEL", key);
        self.write(async move {
            pipeline
                .query_async::<(i64,)>(&mut connection)
                .await
                .map(|(removed,)| removed > 0)
                .map_err(unavailable)
        })
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Option<(Vec<u8>, Duration)>,
    ) -> StoreFuture<bool> {
        let mut invocation = scripts().swap.prepare_invoke();
        invocation.key(format!("{}{key}", self.prefix)).key(&self.index);
        match expected {
            Some(expected) => invocation.arg("1").arg(expected),
            None => invocation.arg("0").arg(""),
        };
        match new {
            Some((value, ttl)) => invocation
                .arg("1")
                .arg(value)
                .arg(ttl_millis(ttl))
                .arg(now_millis() + ttl_millis(ttl)),
            None => invocation.arg("0").arg("").arg(0).arg(0),
        };
        let mut connection = self.connection.clone();
        self.write(async move {
            invocation
                .invoke_async::<i64>(&mut connection)
                .await
                .map(|n| n == 1)
                .map_err(unavailable)
        })
    }

    /// Records expire by themselves; this trims the index.
    fn touch(&self, key: &str, ttl: Duration) -> StoreFuture<bool> {
        let key = format!("{}{key}", self.prefix);
        let mut pipeline = redis::pipe();
        // PEXPIRE only acts on a live key; XX only moves an index entry
        // that is there.
        pipeline
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ttl_millis(ttl))
            .cmd("ZADD")
            .arg(&self.index)
            .arg("XX")
            .arg(now_millis() + ttl_millis(ttl))
            .arg(&key)
            .ignore();
        let mut connection = self.connection.clone();
        async move {
            pipeline
                .query_async::<(i64,)>(&mut connection)
                .await
                .map(|(extended,)| extended == 1)
                .map_err(unavailable)
        }
        .boxed_local()
        .into()
    }

    fn purge_expired(&self) -> StoreFuture<usize> {
        let mut invocation = scripts().purge.prepare_invoke();
        invocation.key(&self.index).arg(now_millis());
        let mut connection = self.connection.clone();
        async move {
            invocation
                .invoke_async::<usize>(&mut connection)
                .await
                .map_err(unavailable)
        }
        .boxed_local()
        .into()
    }

    fn generation(&self) -> Option<u64> {
        self.invalidations.as_ref()?.generation()
    }

    fn soonest_expiring(&self, limit: usize) -> StoreFuture<Vec<String>> {
        let mut connection = self.connection.clone();
        let (index, prefix) = (self.index.clone(), self.prefix.clone());
        async move {
            // ZRANGEBYSCORE rather than ZRANGE … BYSCORE: Redis before 6.2 too.
            let keys = redis::cmd("ZRANGEBYSCORE")
                .arg(index)
                .arg(now_millis())
                .arg("+inf")
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .query_async::<Vec<String>>(&mut connection)
                .await
                .map_err(unavailable)?;
            Ok(keys
                .into_iter()
                .filter_map(|key| key.strip_prefix(&prefix).map(str::to_string))
                .collect())
        }
        .boxed_local()
        .into()
    }

    fn scan(&self, cursor: Option<&str>, limit: usize) -> StoreFuture<Page> {
        let mut invocation = scripts().scan.prepare_invoke();
        invocation.key(&self.index).arg(now_millis());
        match cursor.map(|c| c.split_once('|').filter(|(score, _)| score.parse::<u64>().is_ok())) {
            Some(Some((score, key))) => invocation.arg("1").arg(score).arg(format!("{}{key}", self.prefix)),
            Some(None) => return StoreFuture::ready(Err(StoreError::Encoding("not a cursor of this table".into()))),
            None => invocation.arg("0").arg(0).arg(""),
        };
        invocation.arg(limit);
        let mut connection = self.connection.clone();
        let prefix = self.prefix.clone();
        async move {
            let flat = invocation
                .invoke_async::<Vec<String>>(&mut connection)
                .await
                .map_err(unavailable)?;
            let pairs: Vec<(String, String)> = flat
                .chunks_exact(2)
                .filter_map(|pair| Some((pair[0].strip_prefix(&prefix)?.to_string(), pair[1].clone())))
                .collect();
            let next = (pairs.len() == limit && limit > 0)
                .then(|| pairs.last().map(|(key, score)| format!("{score}|{key}")))
                .flatten();
            Ok(Page {
                keys: pairs.into_iter().map(|(key, _)| key).collect(),
                next,
            })
        }
        .boxed_local()
        .into()
    }

    fn put_indexed(&self, key: &str, value: Vec<u8>, ttl: Duration, entries: &[IndexEntry]) -> StoreFuture<()> {
        let now = now_millis();
        let mut invocation = scripts().put_indexed.prepare_invoke();
        invocation.key(format!("{}{key}", self.prefix)).key(&self.index);
        for entry in entries {
            invocation.key(self.index_key(&entry.index));
        }
        invocation
            .arg(value)
            .arg(ttl_millis(ttl))
            .arg(now + ttl_millis(ttl))
            .arg(key)
            .arg(now);
        for entry in entries {
            invocation.arg(now + ttl_millis(entry.ttl));
        }
        let mut connection = self.connection.clone();
        self.write(async move {
            invocation
                .invoke_async::<i64>(&mut connection)
                .await
                .map(|_| ())
                .map_err(unavailable)
        })
    }

    fn index_scan(&self, index: &str, cursor: Option<&str>, limit: usize) -> StoreFuture<Page> {
        let mut invocation = scripts().index_scan.prepare_invoke();
        invocation
            .key(self.index_key(index))
            .arg(cursor.map_or_else(|| "-".to_string(), |after| format!("({after}")))
            .arg(now_millis())
            .arg(limit);
        let mut connection = self.connection.clone();
        async move {
            let (members, last) = invocation
                .invoke_async::<(Vec<String>, Option<String>)>(&mut connection)
                .await
                .map_err(unavailable)?;
            let full = members.len() == limit && limit > 0;
            let keys = members
                .iter()
                .filter_map(|member| member.rsplit_once('|').map(|(key, _)| key.to_string()))
                .collect();
            Ok(Page {
                keys,
                next: if full { last } else { None },
            })
        }
        .boxed_local()
        .into()
    }

    fn index_remove(&self, index: &str, key: &str) -> StoreFuture<bool> {
        let mut invocation = scripts().index_remove.prepare_invoke();
        invocation.key(self.index_key(index)).arg(key);
        let mut connection = self.connection.clone();
        async move {
            invocation
                .invoke_async::<i64>(&mut connection)
                .await
                .map(|removed| removed > 0)
                .map_err(unavailable)
        }
        .boxed_local()
        .into()
    }

    fn index_add(&self, index: &str, key: &str, ttl: Duration) -> StoreFuture<bool> {
        let now = now_millis();
        let mut invocation = scripts().index_add.prepare_invoke();
        invocation
            .key(self.index_key(index))
            .arg(key)
            .arg(now + ttl_millis(ttl))
            .arg(now);
        let mut connection = self.connection.clone();
        async move {
            invocation
                .invoke_async::<i64>(&mut connection)
                .await
                .map(|added| added == 1)
                .map_err(unavailable)
        }
        .boxed_local()
        .into()
    }

    fn count(&self) -> StoreFuture<usize> {
        let mut connection = self.connection.clone();
        let index = self.index.clone();
        async move {
            redis::cmd("ZCOUNT")
                .arg(index)
                .arg(now_millis())
                .arg("+inf")
                .query_async::<usize>(&mut connection)
                .await
                .map_err(unavailable)
        }
        .boxed_local()
        .into()
    }
}
