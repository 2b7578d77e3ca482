//! Brute-force protection: every guess (a password, a token) is charged to token buckets
//! *before* it is verified, and refunded when it turns out right. So at most a bucket's
//! allowance of verifications can run at once for one client network, one user name or (when
//! configured) one method, however many requests arrive together; a key whose bucket is empty
//! is refused with 429 before any verification work until the bucket refills.
//!
//! Buckets: the client address aggregated to a prefix (`auth.rate_limit.ipv4_prefix`,
//! `ipv6_prefix`: an IPv6 client owns a /64, so one bucket per /64 by default), the Basic user
//! name, and optionally one per method shared by everyone (`auth.rate_limit.global`).
//!
//! `governor` (used before) has no refund, which charging ahead needs: these buckets are a few
//! lines of arithmetic under one lock per kind of key.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::RateLimitConfig;
use crate::identity::Method;

/// Keys remembered per kind; beyond, buckets that refilled are dropped (at most once a second),
/// and keys that still find no room share one overflow bucket.
const MAX_KEYS: usize = 100_000;

/// Which bucket refused a guess: the `bucket` label of the rate-limit metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Address,
    User,
    Global,
}

impl Bucket {
    pub const ALL: [Bucket; 3] = [Bucket::Address, Bucket::User, Bucket::Global];

    pub fn label(self) -> &'static str {
        match self {
            Bucket::Address => "address",
            Bucket::User => "user",
            Bucket::Global => "global",
        }
    }
}

/// A guess refused before verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub bucket: Bucket,
    /// Until the bucket holds a token again (at least 1 s).
    pub wait: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Level {
    tokens: f64,
    updated: Instant,
}

struct Table<K> {
    levels: HashMap<K, Level>,
    /// Shared by keys that found the table full.
    overflow: Level,
    last_prune: Option<Instant>,
}

/// Token buckets of one kind of key, all with the same burst and rate.
struct Buckets<K> {
    burst: f64,
    per_sec: f64,
    table: Mutex<Table<K>>,
}

impl<K: Hash + Eq> Buckets<K> {
    fn new(per_minute: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Buckets {
            burst,
            per_sec: f64::from(per_minute.max(1)) / 60.0,
            table: Mutex::new(Table {
                levels: HashMap::new(),
                overflow: Level {
                    tokens: burst,
                    updated: now,
                },
                last_prune: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table<K>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn refill(&self, level: &mut Level, now: Instant) {
        let elapsed = now.saturating_duration_since(level.updated).as_secs_f64();
        level.tokens = (level.tokens + elapsed * self.per_sec).min(self.burst);
        level.updated = now;
    }

    /// Take one token for `key`, or say how long until there is one.
    fn take<Q>(&self, key: &Q, now: Instant) -> Result<(), Duration>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let mut table = self.lock();
        let table = &mut *table;
        if table.levels.len() >= MAX_KEYS && !table.levels.contains_key(key) {
            self.prune(table, now);
        }
        if table.levels.len() < MAX_KEYS && !table.levels.contains_key(key) {
            let full = Level {
                tokens: self.burst,
                updated: now,
            };
            table.levels.insert(key.to_owned(), full);
        }
        let level = match table.levels.get_mut(key) {
            Some(level) => level,
            None => &mut table.overflow,
        };
        self.refill(level, now);
        if level.tokens >= 1.0 {
            level.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - level.tokens) / self.per_sec;
        Err(Duration::from_secs_f64(wait.min(86_400.0)).max(Duration::from_secs(1)))
    }

    /// Give back a token taken for `key` (a guess that turned out right).
    fn give_back<Q>(&self, key: &Q, now: Instant)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut table = self.lock();
        let table = &mut *table;
        // pruned meanwhile (it was full): the overflow bucket may have lent the token
        let level = match table.levels.get_mut(key) {
            Some(level) => level,
            None => &mut table.overflow,
        };
        self.refill(level, now);
        level.tokens = (level.tokens + 1.0).min(self.burst);
    }

    /// Drop the buckets that refilled completely (they are the same as no bucket).
    fn prune(&self, table: &mut Table<K>, now: Instant) {
        if table
            .last_prune
            .is_some_and(|at| now.saturating_duration_since(at) < Duration::from_secs(1))
        {
            return;
        }
        table.last_prune = Some(now);
        let (burst, per_sec) = (self.burst, self.per_sec);
        table.levels.retain(|_, level| {
            let elapsed = now.saturating_duration_since(level.updated).as_secs_f64();
            level.tokens + elapsed * per_sec < burst
        });
    }
}

pub struct FailureLimiter {
    by_addr: Buckets<IpAddr>,
    by_user: Buckets<String>,
    global: Option<Buckets<Method>>,
    ipv4_prefix: u8,
    ipv6_prefix: u8,
}

/// A guess charged to its buckets. `refund` gives the tokens back (the guess was right, or it
/// was never judged); dropped without `refund`, the charge stands as a failure.
#[must_use = "a charge is kept unless refunded"]
pub struct Charge<'a> {
    limiter: &'a FailureLimiter,
    method: Method,
    addr: Option<IpAddr>,
    user: Option<&'a str>,
    global: bool,
}

impl Charge<'_> {
    pub fn refund(self) {
        let now = Instant::now();
        let l = self.limiter;
        if let Some(addr) = self.addr {
            l.by_addr.give_back(&addr, now);
        }
        if let Some(user) = self.user {
            l.by_user.give_back(user, now);
        }
        if let (true, Some(global)) = (self.global, &l.global) {
            global.give_back(&self.method, now);
        }
    }
}

impl FailureLimiter {
    pub fn from_config(config: &RateLimitConfig) -> Self {
        let now = Instant::now();
        let (per_minute, burst) = (config.failures_per_minute, config.burst);
        FailureLimiter {
            by_addr: Buckets::new(per_minute, burst, now),
            by_user: Buckets::new(per_minute, burst, now),
            global: config
                .global
                .map(|g| Buckets::new(g.failures_per_minute, g.burst, now)),
            ipv4_prefix: config.ipv4_prefix.min(32),
            ipv6_prefix: config.ipv6_prefix.min(128),
        }
    }

    /// The bucket key of a client address: its network of the configured prefix length
    /// (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn network(&self, addr: IpAddr) -> IpAddr {
        match addr.to_canonical() {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.ipv4_prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.ipv6_prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        }
    }

    /// Charge one guess to the method's global budget (if configured), the client's network
    /// and the user name (if any); refused, with nothing charged, when any is empty.
    pub fn charge<'a>(
        &'a self,
        method: Method,
        addr: Option<IpAddr>,
        user: Option<&'a str>,
    ) -> Result<Charge<'a>, Refused> {
        let now = Instant::now();
        let mut charge = Charge {
            limiter: self,
            method,
            addr: None,
            user: None,
            global: false,
        };
        let refused = |charge: Charge<'a>, bucket, wait| {
            charge.refund();
            Err(Refused { bucket, wait })
        };
        if let Some(global) = &self.global {
            if let Err(wait) = global.take(&method, now) {
                return refused(charge, Bucket::Global, wait);
            }
            charge.global = true;
        }
        if let Some(a) = addr.map(|a| self.network(a)) {
            if let Err(wait) = self.by_addr.take(&a, now) {
                return refused(charge, Bucket::Address, wait);
            }
            charge.addr = Some(a);
        }
        if let Some(u) = user {
            if let Err(wait) = self.by_user.take(u, now) {
                return refused(charge, Bucket::User, wait);
            }
            charge.user = Some(u);
        }
        Ok(charge)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::auth::Budget;

    fn limiter(per_minute: u32, burst: u32) -> FailureLimiter {
        FailureLimiter::from_config(&RateLimitConfig {
            failures_per_minute: per_minute,
            burst,
            ..RateLimitConfig::default()
        })
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn charges_per_address_and_per_user_and_refunds_right_guesses() {
        let l = limiter(1, 3);
        for _ in 0..3 {
            drop(
                l.charge(Method::Basic, ip("127.0.0.1"), Some("u1"))
                    .unwrap(),
            );
        }
        let refused = l
            .charge(Method::Basic, ip("127.0.0.1"), Some("u2"))
            .err()
            .expect("the address is out of tokens");
        assert_eq!(refused.bucket, Bucket::Address);
        assert!(refused.wait >= Duration::from_secs(1));
        // another address guessing the same user is refused by the user's bucket
        let refused = l
            .charge(Method::Basic, ip("127.0.0.2"), Some("u1"))
            .err()
            .unwrap();
        assert_eq!(refused.bucket, Bucket::User);
        // ... and that refusal took nothing from 127.0.0.2
        for _ in 0..3 {
            l.charge(Method::Basic, ip("127.0.0.2"), Some("u2"))
                .unwrap()
                .refund();
        }
        for _ in 0..10 {
            l.charge(Method::Basic, ip("127.0.0.2"), Some("u3"))
                .unwrap()
                .refund();
        }
    }

    #[test]
    fn guesses_in_flight_hold_their_tokens() {
        let l = limiter(1, 5);
        let in_flight: Vec<_> = (0..5)
            .map(|_| l.charge(Method::Bearer, ip("10.0.0.1"), None).unwrap())
            .collect();
        assert!(l.charge(Method::Bearer, ip("10.0.0.1"), None).is_err());
        for c in in_flight {
            c.refund();
        }
        assert!(l.charge(Method::Bearer, ip("10.0.0.1"), None).is_ok());
    }

    #[test]
    fn addresses_share_a_bucket_per_prefix() {
        let l = limiter(1, 2);
        for a in ["2001:db8:1:2::1", "2001:db8:1:2:ffff::7"] {
            drop(l.charge(Method::Bearer, ip(a), None).unwrap());
        }
        let refused = l
            .charge(Method::Bearer, ip("2001:db8:1:2:aaaa::1"), None)
            .err()
            .expect("same /64");
        assert_eq!(refused.bucket, Bucket::Address);
        assert!(l
            .charge(Method::Bearer, ip("2001:db8:1:3::1"), None)
            .is_ok());
        // IPv4 stays per address by default, and a mapped address is the same client
        drop(l.charge(Method::Bearer, ip("192.0.2.1"), None).unwrap());
        drop(
            l.charge(Method::Bearer, ip("::ffff:192.0.2.1"), None)
                .unwrap(),
        );
        assert!(l.charge(Method::Bearer, ip("192.0.2.1"), None).is_err());
        assert!(l.charge(Method::Bearer, ip("192.0.2.2"), None).is_ok());

        let l = FailureLimiter::from_config(&RateLimitConfig {
            ipv4_prefix: 24,
            ipv6_prefix: 48,
            ..RateLimitConfig::default()
        });
        assert_eq!(
            l.network("192.0.2.77".parse().unwrap()),
            ip("192.0.2.0").unwrap()
        );
        assert_eq!(
            l.network("2001:db8:1:2::1".parse().unwrap()),
            ip("2001:db8:1::").unwrap()
        );
        let l = FailureLimiter::from_config(&RateLimitConfig {
            ipv4_prefix: 0,
            ipv6_prefix: 128,
            ..RateLimitConfig::default()
        });
        assert_eq!(
            l.network("192.0.2.77".parse().unwrap()),
            ip("0.0.0.0").unwrap()
        );
        assert_eq!(l.network("::5".parse().unwrap()), ip("::5").unwrap());
    }

    #[test]
    fn a_global_budget_per_method_bounds_all_clients_together() {
        let l = FailureLimiter::from_config(&RateLimitConfig {
            global: Some(Budget {
                failures_per_minute: 1,
                burst: 3,
            }),
            ..RateLimitConfig::default()
        });
        for i in 0..3 {
            drop(
                l.charge(Method::Bearer, ip(&format!("10.0.0.{i}")), None)
                    .unwrap(),
            );
        }
        let refused = l
            .charge(Method::Bearer, ip("10.0.0.9"), None)
            .err()
            .unwrap();
        assert_eq!(refused.bucket, Bucket::Global);
        // per method: Basic has its own
        assert!(l.charge(Method::Basic, ip("10.0.0.9"), Some("u")).is_ok());
    }

    #[test]
    fn a_refused_charge_gives_back_what_it_took() {
        let l = FailureLimiter::from_config(&RateLimitConfig {
            burst: 1,
            global: Some(Budget {
                failures_per_minute: 1,
                burst: 2,
            }),
            ..RateLimitConfig::default()
        });
        drop(l.charge(Method::Basic, ip("10.0.0.1"), Some("u")).unwrap());
        // user `u` is empty: the address and global tokens taken first are given back
        let refused = l
            .charge(Method::Basic, ip("10.0.0.2"), Some("u"))
            .err()
            .unwrap();
        assert_eq!(refused.bucket, Bucket::User);
        assert!(l.charge(Method::Basic, ip("10.0.0.2"), Some("v")).is_ok());
    }

    #[test]
    fn buckets_refill_over_time_and_full_ones_are_pruned() {
        let now = Instant::now();
        let b: Buckets<u32> = Buckets::new(60, 2, now);
        assert!(b.take(&1, now).is_ok());
        assert!(b.take(&1, now).is_ok());
        let wait = b.take(&1, now).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        assert!(b.take(&1, now + Duration::from_secs(1)).is_ok());
        let mut table = b.lock();
        b.prune(&mut table, now + Duration::from_secs(10));
        assert!(table.levels.is_empty(), "refilled buckets are dropped");
    }
}
