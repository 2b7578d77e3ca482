//! One memory budget for the bytes the proxy holds on behalf of clients and the CSE
//! (`limits.buffer_budget`): WebSocket messages being reassembled and on their way to the CSE,
//! bodies read whole for `poa` rewriting (request and response, ingress and egress). Whatever
//! would take more than the budget is refused (WebSocket close 1013, HTTP 503), so that a
//! crowd of slow or large senders cannot grow the process until the container's memory limit
//! kills it (and the CSE with it).
//!
//! Each holder owns a [`Held`], sized to what it really holds (capacity, not length); dropping it
//! gives the bytes back. Pingora's own per-connection buffers are not counted.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

use crate::metrics;

/// The default when no container memory limit is visible.
pub const FIXED_DEFAULT: usize = 256 * 1024 * 1024;

/// The default share of a container memory limit.
pub const LIMIT_SHARE: usize = 4;

pub struct BufferBudget {
    limit: AtomicUsize,
    used: AtomicUsize,
    /// The most used since the last [`BufferBudget::take_peak`].
    peak: AtomicUsize,
}

/// The process's budget, sized at start ([`BufferBudget::set_limit`]).
pub static BUDGET: BufferBudget = BufferBudget::new(FIXED_DEFAULT);

/// Taking the bytes would exceed the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted;

impl std::fmt::Display for Exhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("proxy buffer budget exhausted (limits.buffer_budget)")
    }
}

impl BufferBudget {
    pub const fn new(limit: usize) -> Self {
        BufferBudget {
            limit: AtomicUsize::new(limit),
            used: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Bytes held now, by everyone.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The most held since the last call (the first call: since start).
    pub fn take_peak(&self) -> usize {
        self.peak.swap(self.used(), Ordering::AcqRel)
    }

    fn take(&self, n: usize) -> Result<(), Exhausted> {
        let before = self.used.fetch_add(n, Ordering::AcqRel);
        if before.saturating_add(n) > self.limit() {
            self.used.fetch_sub(n, Ordering::AcqRel);
            return Err(Exhausted);
        }
        self.peak.fetch_max(before + n, Ordering::AcqRel);
        metrics::buffered_bytes(n as i64);
        Ok(())
    }

    /// Counted even beyond the limit (bytes already in hand): later takes are refused.
    fn force(&self, n: usize) {
        let before = self.used.fetch_add(n, Ordering::AcqRel);
        self.peak
            .fetch_max(before.saturating_add(n), Ordering::AcqRel);
        metrics::buffered_bytes(n as i64);
    }

    fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
        metrics::buffered_bytes(-(n as i64));
    }
}

/// What one holder has of the budget.
pub struct Held {
    budget: &'static BufferBudget,
    bytes: usize,
}

impl Default for Held {
    fn default() -> Self {
        Held::new(&BUDGET)
    }
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Held({})", self.bytes)
    }
}

impl Held {
    pub fn new(budget: &'static BufferBudget) -> Self {
        Held { budget, bytes: 0 }
    }

    /// Hold exactly `bytes` from now on: more is taken from the budget (refused beyond it, and
    /// then nothing changes), less is given back.
    pub fn resize(&mut self, bytes: usize) -> Result<(), Exhausted> {
        if bytes > self.bytes {
            self.budget.take(bytes - self.bytes)?;
        } else {
            self.budget.give(self.bytes - bytes);
        }
        self.bytes = bytes;
        Ok(())
    }

    /// Hold exactly `bytes` that are in hand already: counted even beyond the limit (then
    /// what others ask for next is refused).
    pub fn set_in_hand(&mut self, bytes: usize) {
        if bytes > self.bytes {
            self.budget.force(bytes - self.bytes);
        } else {
            self.budget.give(self.bytes - bytes);
        }
        self.bytes = bytes;
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.budget.give(self.bytes);
        }
    }
}

/// Bytes that count against the budget for as long as any copy of them is alive (in Pingora's
/// queues, on the way to a peer that reads slowly). Counted even beyond the limit: they are in
/// hand already; what comes next is refused.
pub fn counted(bytes: Bytes) -> Bytes {
    counted_in(&BUDGET, bytes)
}

fn counted_in(budget: &'static BufferBudget, bytes: Bytes) -> Bytes {
    if bytes.is_empty() {
        return bytes;
    }
    budget.force(bytes.len());
    let held = Held {
        budget,
        bytes: bytes.len(),
    };
    Bytes::from_owner(Owned { bytes, _held: held })
}

struct Owned {
    bytes: Bytes,
    _held: Held,
}

impl AsRef<[u8]> for Owned {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// The default budget: a share of the container's memory limit when one is visible (cgroup v2
/// `memory.max`, or v1 `memory.limit_in_bytes`), else [`FIXED_DEFAULT`]. Returns it with where
/// it came from, for `check` and the log.
pub fn default_budget() -> (usize, String) {
    match container_memory_limit() {
        Some(limit) => (
            (limit / LIMIT_SHARE as u64)
                .try_into()
                .unwrap_or(usize::MAX),
            format!("1/{LIMIT_SHARE} of the container memory limit ({limit} bytes)"),
        ),
        None => (FIXED_DEFAULT, "no container memory limit seen".to_owned()),
    }
}

fn container_memory_limit() -> Option<u64> {
    const FILES: [&str; 2] = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ];
    FILES
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .find_map(|text| parse_limit(&text))
}

/// A cgroup memory limit, `None` for "max" or the "unlimited" values of cgroup v1 (near 2^63).
fn parse_limit(text: &str) -> Option<u64> {
    let limit: u64 = text.trim().parse().ok()?;
    (limit > 0 && limit < 1 << 60).then_some(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_take_and_give_back_and_nobody_goes_over() {
        static B: BufferBudget = BufferBudget::new(100);
        let mut a = Held::new(&B);
        let mut b = Held::new(&B);
        a.resize(60).unwrap();
        assert_eq!(b.resize(50), Err(Exhausted));
        assert_eq!(b.bytes(), 0, "a refused resize changes nothing");
        b.resize(40).unwrap();
        assert_eq!(B.used(), 100);
        a.resize(10).unwrap();
        assert_eq!(B.used(), 50);
        drop(a);
        drop(b);
        assert_eq!(B.used(), 0);
    }

    #[test]
    fn counted_bytes_hold_the_budget_until_the_last_copy_is_gone() {
        static B: BufferBudget = BufferBudget::new(100);
        let bytes = counted_in(&B, Bytes::from(vec![7u8; 1000]));
        let copy = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(B.used(), 1000, "over the limit: counted all the same");
        assert_eq!(
            Held::new(&B).resize(1),
            Err(Exhausted),
            "the next is refused"
        );
        assert_eq!(&copy[..], &[7u8; 10]);
        drop(copy);
        assert_eq!(B.used(), 0);
    }

    #[test]
    fn cgroup_limits_are_read_and_unlimited_is_none() {
        assert_eq!(parse_limit("536870912\n"), Some(536_870_912));
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit("0"), None);
    }
}
