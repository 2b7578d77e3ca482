//! Brute-force protection: failed password/token attempts are limited per client address and
//! per user name (token buckets from `governor`). Once a key is over its limit, its requests are
//! refused with 429 before any verification work until the bucket refills. Clients that
//! authenticate correctly never consume from the buckets.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::RateLimitConfig;

/// Bound on remembered blocked keys; expired ones are dropped first when it is reached.
const MAX_BLOCKED: usize = 100_000;

struct Limiter<K: Hash + Eq + Clone> {
    buckets: DefaultKeyedRateLimiter<K>,
    blocked: Mutex<HashMap<K, Instant>>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    fn new(quota: Quota) -> Self {
        Limiter {
            buckets: RateLimiter::keyed(quota),
            blocked: Mutex::new(HashMap::new()),
        }
    }

    fn blocked_for(&self, key: &K, now: Instant) -> Option<Duration> {
        let blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        blocked
            .get(key)
            .and_then(|until| until.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    /// Count one failure; `Some(wait)` when the key is now over its limit.
    fn fail(&self, key: &K, now: Instant) -> Option<Duration> {
        let clock = DefaultClock::default();
        let wait = match self.buckets.check_key(key) {
            Ok(()) => return None,
            Err(not_until) => not_until.wait_time_from(clock.now()),
        };
        let wait = wait.max(Duration::from_secs(1));
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        if blocked.len() >= MAX_BLOCKED {
            blocked.retain(|_, until| *until > now);
            self.buckets.retain_recent();
        }
        if blocked.len() < MAX_BLOCKED {
            blocked.insert(key.clone(), now + wait);
        }
        Some(wait)
    }
}

pub struct FailureLimiter {
    by_addr: Limiter<IpAddr>,
    by_user: Limiter<String>,
}

impl FailureLimiter {
    pub fn from_config(config: &RateLimitConfig) -> Self {
        let per_minute =
            NonZeroU32::new(config.failures_per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_minute(per_minute).allow_burst(burst);
        FailureLimiter {
            by_addr: Limiter::new(quota),
            by_user: Limiter::new(quota),
        }
    }

    /// How long to wait if this client address or user name is over its failure limit.
    pub fn blocked(&self, addr: Option<IpAddr>, user: Option<&str>) -> Option<Duration> {
        let now = Instant::now();
        let by_addr = addr.and_then(|a| self.by_addr.blocked_for(&a, now));
        let by_user = user.and_then(|u| self.by_user.blocked_for(&u.to_owned(), now));
        by_addr.max(by_user)
    }

    /// Record a failed attempt; `Some(wait)` when this failure crossed a limit.
    pub fn record_failure(&self, addr: Option<IpAddr>, user: Option<&str>) -> Option<Duration> {
        let now = Instant::now();
        let by_addr = addr.and_then(|a| self.by_addr.fail(&a, now));
        let by_user = user.and_then(|u| self.by_user.fail(&u.to_owned(), now));
        by_addr.max(by_user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_burst_per_address_and_per_user() {
        let l = FailureLimiter::from_config(&RateLimitConfig {
            failures_per_minute: 1,
            burst: 3,
        });
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(l.record_failure(Some(a), Some("u1")), None);
        }
        assert!(l.blocked(Some(a), None).is_none());
        let wait = l
            .record_failure(Some(a), Some("u1"))
            .expect("over the limit");
        assert!(wait >= Duration::from_secs(1));
        assert!(l.blocked(Some(a), None).is_some());
        // another address guessing the same user is blocked by the user's bucket
        assert!(l.blocked(Some(b), Some("u1")).is_some());
        assert!(l.blocked(Some(b), Some("u2")).is_none());
    }
}
