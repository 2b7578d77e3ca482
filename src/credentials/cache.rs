//! Cache of successful password verifications: bcrypt is slow on purpose, and a client sending
//! its Basic credentials with every request should not pay for it every time.
//!
//! Entries are keyed by HMAC-SHA256 of (user, password) under a random key made when the cache
//! is created, so neither passwords nor stored hashes are held. Each entry remembers a keyed
//! hash of its user and the fingerprint of the user's htpasswd entry when it was verified: a
//! lookup against a file where that entry changed (or is gone) is a miss.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::htpasswd::HtpasswdFile;
use crate::random::RandomUnavailable;

type Tag = [u8; 32];

pub struct VerifyCache {
    mac: Hmac<Sha256>,
    max_entries: usize,
    ttl: Duration,
    inner: Mutex<Inner>,
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Tag, Cached>,
    /// Insertion order, oldest first, for eviction. Records of entries removed otherwise stay
    /// until they reach the front or the queue is compacted.
    order: VecDeque<(Tag, u64)>,
    next_seq: u64,
}

struct Cached {
    fingerprint: u64,
    expires: Instant,
    seq: u64,
}

impl VerifyCache {
    /// `max_entries == 0` or a zero `ttl` disables caching (every check verifies).
    pub fn new(max_entries: usize, ttl: Duration) -> Result<Self, RandomUnavailable> {
        // HMAC zero-pads short keys to its block size; padding here avoids a fallible call
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&crate::random::key()?);
        let mac = <Hmac<Sha256> as KeyInit>::new(&block.into());
        Ok(VerifyCache {
            mac,
            max_entries,
            ttl,
            inner: Mutex::new(Inner::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// Verify a password, from the cache when this user and password were verified recently
    /// against the same entry, else with `file.verify` (remembered on success).
    pub fn check(&self, file: &HtpasswdFile, user: &str, password: &[u8]) -> bool {
        self.check_at(file, user, password, Instant::now())
    }

    fn check_at(&self, file: &HtpasswdFile, user: &str, password: &[u8], now: Instant) -> bool {
        let fingerprint = file.entry_fingerprint(user);
        let (Some(fingerprint), true) = (fingerprint, self.enabled()) else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return file.verify(user, password);
        };
        let key = self.pair_tag(user, password);
        if self.lookup(&key, fingerprint, now, true) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        // The lock is not held here: verification can take tens of milliseconds.
        if !file.verify(user, password) {
            return false;
        }
        self.insert(key, fingerprint, now);
        true
    }

    /// Whether `check` would answer from the cache (no verification); counts nothing.
    pub fn contains(&self, file: &HtpasswdFile, user: &str, password: &[u8]) -> bool {
        match file.entry_fingerprint(user) {
            Some(fingerprint) if self.enabled() => self.lookup(
                &self.pair_tag(user, password),
                fingerprint,
                Instant::now(),
                false,
            ),
            _ => false,
        }
    }

    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.entries.clear();
        inner.order.clear();
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks answered from the cache.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Checks that had to verify (including failed ones and unknown users).
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    fn enabled(&self) -> bool {
        self.max_entries > 0 && !self.ttl.is_zero()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The maps stay consistent even if a holder panicked.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn pair_tag(&self, user: &str, password: &[u8]) -> Tag {
        let mut mac = self.mac.clone();
        mac.update(b"pair");
        // length prefix: ("ab", "c") and ("a", "bc") must differ
        mac.update(&(user.len() as u64).to_be_bytes());
        mac.update(user.as_bytes());
        mac.update(password);
        mac.finalize().into_bytes().into()
    }

    fn lookup(&self, key: &Tag, fingerprint: u64, now: Instant, drop_stale: bool) -> bool {
        let mut inner = self.lock();
        let fresh = match inner.entries.get(key) {
            None => return false,
            Some(cached) => cached.fingerprint == fingerprint && now < cached.expires,
        };
        if !fresh && drop_stale {
            inner.entries.remove(key);
        }
        fresh
    }

    fn insert(&self, key: Tag, fingerprint: u64, now: Instant) {
        let Some(expires) = now.checked_add(self.ttl) else {
            return;
        };
        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.entries.insert(
            key,
            Cached {
                fingerprint,
                expires,
                seq,
            },
        );
        inner.order.push_back((key, seq));
        // Evict the oldest; with one TTL for all, that is also the first to expire.
        while inner.entries.len() > self.max_entries {
            let Some((old, old_seq)) = inner.order.pop_front() else {
                break;
            };
            if inner.entries.get(&old).is_some_and(|c| c.seq == old_seq) {
                inner.entries.remove(&old);
            }
        }
        // Stale records pile up after expiries and changed entries; drop them now and then.
        if inner.order.len() > 2 * self.max_entries + 64 {
            let Inner { entries, order, .. } = &mut *inner;
            order.retain(|(k, s)| entries.get(k).is_some_and(|c| c.seq == *s));
        }
    }
}

impl fmt::Debug for VerifyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyCache")
            .field("entries", &self.len())
            .field("max_entries", &self.max_entries)
            .field("ttl", &self.ttl)
            .field("hits", &self.hits())
            .field("misses", &self.misses())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::hashes::tests::{take_verified, FIXTURES};
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    fn file(content: &str) -> HtpasswdFile {
        HtpasswdFile::parse(Path::new("htpasswd"), content, true).expect("valid")
    }

    /// alice (bcrypt cost 5) and bob (bcrypt cost 10); the timing floor below both, so that a
    /// check is one verification.
    fn bcrypt_file() -> HtpasswdFile {
        file(&format!("alice:{}\nbob:{}\n", FIXTURES[0].0, FIXTURES[1].0))
            .with_timing_floor(Some(4))
    }

    /// Cheap entries u0..u{n-1} with password p{i}.
    fn many_users(n: usize) -> HtpasswdFile {
        file(
            &(0..n)
                .map(|i| format!("u{i}:{{PLAIN}}p{i}\n"))
                .collect::<String>(),
        )
    }

    fn verifications() -> usize {
        take_verified().len()
    }

    #[test]
    fn successful_verifications_are_cached() {
        let cache = VerifyCache::new(10, TTL).unwrap();
        let file = bcrypt_file();
        take_verified();
        assert!(!cache.contains(&file, "alice", b"correct horse"));
        assert!(cache.check(&file, "alice", b"correct horse"));
        assert_eq!(verifications(), 1);
        assert!(cache.contains(&file, "alice", b"correct horse"));
        assert!(cache.check(&file, "alice", b"correct horse"));
        assert_eq!(verifications(), 0);
        assert_eq!((cache.hits(), cache.misses(), cache.len()), (1, 1, 1));
        // a different password for a cached user is not a hit
        assert!(!cache.check(&file, "alice", b"correct horse "));
        assert_eq!(verifications(), 1);
    }

    #[test]
    fn failures_and_unknown_users_are_not_cached() {
        let cache = VerifyCache::new(10, TTL).unwrap();
        let file = bcrypt_file();
        take_verified();
        for _ in 0..2 {
            assert!(!cache.check(&file, "alice", b"wrong"));
            assert!(!cache.check(&file, "nobody", b"correct horse"));
        }
        assert_eq!(verifications(), 4);
        assert_eq!((cache.hits(), cache.misses(), cache.len()), (0, 4, 0));
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let cache = VerifyCache::new(10, TTL).unwrap();
        let file = many_users(1);
        let now = Instant::now();
        assert!(cache.check_at(&file, "u0", b"p0", now));
        take_verified();
        assert!(cache.check_at(&file, "u0", b"p0", now + TTL - Duration::from_millis(1)));
        assert_eq!(verifications(), 0);
        assert!(cache.check_at(&file, "u0", b"p0", now + TTL));
        assert_eq!(verifications(), 1);
    }

    #[test]
    fn size_is_bounded_and_oldest_evicted() {
        let cache = VerifyCache::new(3, TTL).unwrap();
        let file = many_users(10);
        for i in 0..10 {
            assert!(cache.check(&file, &format!("u{i}"), format!("p{i}").as_bytes()));
            assert!(cache.len() <= 3);
        }
        take_verified();
        assert!(cache.check(&file, "u9", b"p9"));
        assert!(cache.check(&file, "u7", b"p7"));
        assert_eq!(verifications(), 0);
        assert!(cache.check(&file, "u0", b"p0"));
        assert_eq!(verifications(), 1);
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn eviction_queue_stays_bounded_when_entries_expire() {
        let cache = VerifyCache::new(2, TTL).unwrap();
        let file = many_users(1);
        let start = Instant::now();
        for round in 0..1000u32 {
            // each round's entry has expired by the next: dropped, verified and inserted again
            let now = start + TTL * 2 * round;
            assert!(cache.check_at(&file, "u0", b"p0", now));
        }
        assert!(cache.lock().order.len() <= 2 * 2 + 64 + 1);
    }

    #[test]
    fn changed_or_removed_entry_is_a_miss() {
        let cache = VerifyCache::new(10, TTL).unwrap();
        let old = bcrypt_file();
        assert!(cache.check(&old, "alice", b"correct horse"));
        // alice's password changed; the old one must stop working at once
        let changed = file(&format!("alice:{}\nbob:{}\n", FIXTURES[6].0, FIXTURES[1].0));
        assert!(!cache.contains(&changed, "alice", b"correct horse"));
        assert!(!cache.check(&changed, "alice", b"correct horse"));
        assert!(cache.check(&changed, "alice", b"sha1-secret"));
        let removed = file(&format!("bob:{}\n", FIXTURES[1].0));
        assert!(!cache.check(&removed, "alice", b"sha1-secret"));
    }

    #[test]
    fn disabled_cache_always_verifies() {
        let file = many_users(1);
        for cache in [
            VerifyCache::new(0, TTL).unwrap(),
            VerifyCache::new(10, Duration::ZERO).unwrap(),
        ] {
            take_verified();
            assert!(cache.check(&file, "u0", b"p0"));
            assert!(cache.check(&file, "u0", b"p0"));
            assert_eq!(verifications(), 2);
            assert!(cache.is_empty());
            assert!(!cache.contains(&file, "u0", b"p0"));
        }
    }

    #[test]
    fn tags_separate_user_and_password() {
        let cache = VerifyCache::new(10, TTL).unwrap();
        assert_ne!(cache.pair_tag("ab", b"c"), cache.pair_tag("a", b"bc"));
        let other = VerifyCache::new(10, TTL).unwrap();
        assert_ne!(cache.pair_tag("a", b"b"), other.pair_tag("a", b"b"));
    }

    #[test]
    fn concurrent_checks() {
        let cache = VerifyCache::new(4, TTL).unwrap();
        let file = many_users(8);
        std::thread::scope(|s| {
            for t in 0..8 {
                let (cache, file) = (&cache, &file);
                s.spawn(move || {
                    for i in 0..200 {
                        let u = (t + i) % 8;
                        let ok = cache.check(file, &format!("u{u}"), format!("p{u}").as_bytes());
                        assert!(ok);
                    }
                });
            }
        });
        assert!(cache.len() <= 4);
        assert_eq!(cache.hits() + cache.misses(), 1600);
    }
}
