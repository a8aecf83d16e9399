//! Per-client-address rate limits: registrations (`/register`) and
//! authorization requests (`/authorize`), keyed by [`RateKey`] (an IPv4
//! address or an IPv6 /64, see [`crate::client_address`]).
//!
//! A limit of `n` per minute is a GCRA bucket (`governor`) of `n` requests
//! refilled at `n` per minute: a burst of `n`, then one every `60 / n`
//! seconds. Limits are per instance (several instances behind a load
//! balancer each count their own).
//!
//! Memory is bounded: the limiter holds one small state per key seen, and
//! every [`RETAIN_EVERY`] checks it drops the keys whose bucket is full again
//! (`retain_recent`), so it holds the keys seen in about the last minute
//! plus at most [`RETAIN_EVERY`] more. Nothing grows without checks, so no
//! timer is needed.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::client_address::{ClientAddress, RateKey};
use crate::proxy::OAuthProxy;

/// Checks between two sweeps of recovered keys.
pub const RETAIN_EVERY: u64 = 1024;

/// One limit per client address.
pub struct KeyedLimit {
    limiter: DefaultKeyedRateLimiter<RateKey>,
    checks: AtomicU64,
    /// Refusals since the last log line, and when that was (Unix seconds).
    refused: AtomicU64,
    logged_at: AtomicU64,
}

impl KeyedLimit {
    /// `per_minute` requests per key and minute; `None` when 0 (no limit).
    pub fn per_minute(per_minute: u32) -> Option<KeyedLimit> {
        let rate = NonZeroU32::new(per_minute)?;
        Some(KeyedLimit {
            limiter: RateLimiter::keyed(Quota::per_minute(rate).allow_burst(rate)),
            checks: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            logged_at: AtomicU64::new(0),
        })
    }

    /// Counts one request of `key`; `Err` with how long until the next one
    /// is allowed.
    pub fn check(&self, key: RateKey) -> Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % RETAIN_EVERY == RETAIN_EVERY - 1 {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }

    /// Keys currently held (tests and metrics).
    pub fn keys_held(&self) -> usize {
        self.limiter.len()
    }

    /// Logs a refusal, at most one line per 10 seconds (a flood of refused
    /// requests must not flood the log); the line counts those left out.
    pub fn log_refusal(&self, what: &str, key: RateKey) {
        const EVERY_SECS: u64 = 10;
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let now = crate::oauth::now_secs();
        let last = self.logged_at.load(Ordering::Relaxed);
        if now >= last + EVERY_SECS
            && self
                .logged_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.refused.fetch_sub(refused, Ordering::Relaxed);
            log::warn!("{what}: rate limit reached for {key} ({refused} refused since the last such line)");
        }
    }
}

/// Whole seconds to wait, at least one (RFC 9110 §10.2.3 `Retry-After`).
pub fn retry_after_secs(wait: Duration) -> u64 {
    u64::try_from(wait.as_nanos().div_ceil(1_000_000_000))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// The `/authorize` limit (`OAUTH_PROXY_AUTHORIZE_RATE_LIMIT`): `Some`
/// answer (429, an HTML page with `Retry-After`) when this client address
/// is over it. The first thing the `/authorize` handler does.
pub fn authorize_refusal(req: &HttpRequest, proxy: &OAuthProxy) -> Option<HttpResponse> {
    let limit = proxy.authorize_limit()?;
    let key = ClientAddress::of(req).rate_key()?;
    let wait = limit.check(key).err()?;
    limit.log_refusal("/authorize", key);
    let mut response = crate::routes::errors::error_page(&crate::error::PageReason::TooManyAttempts);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(retry_after_secs(wait)));
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn key(text: &str) -> RateKey {
        RateKey::of(text.parse::<IpAddr>().unwrap())
    }

    #[test]
    fn a_limit_allows_its_burst_per_key_then_says_how_long_to_wait() {
        let limit = KeyedLimit::per_minute(3).unwrap();
        for _ in 0..3 {
            assert!(limit.check(key("192.0.2.1")).is_ok());
        }
        let wait = limit.check(key("192.0.2.1")).unwrap_err();
        assert!(
            wait > Duration::from_secs(15) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(
            limit.check(key("192.0.2.2")).is_ok(),
            "another address has its own bucket"
        );
        assert!(KeyedLimit::per_minute(0).is_none(), "0 turns the limit off");
    }

    #[test]
    fn keys_whose_bucket_refilled_are_dropped_every_so_many_checks() {
        // 60 000 per minute: a bucket of one request refills in a millisecond.
        let limit = KeyedLimit::per_minute(60_000).unwrap();
        for i in 0..(RETAIN_EVERY - 1) {
            let _ = limit.check(key(&format!("10.0.{}.{}", i / 256, i % 256)));
        }
        assert_eq!(limit.keys_held(), (RETAIN_EVERY - 1) as usize);
        std::thread::sleep(Duration::from_millis(20));
        let _ = limit.check(key("192.0.2.1"));
        assert!(limit.keys_held() <= 1, "{} keys still held", limit.keys_held());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
    }
}
