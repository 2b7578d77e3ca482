//! Giving memory back to the system after a burst (glibc's allocator keeps what it freed).
//!
//! Measured (BENCHMARKS.md, issue 28): after 1 000 WebSockets each held a 1 MiB partial frame,
//! RSS stayed at the peak once they closed. Two settings bring it back:
//! - a fixed mmap threshold (128 KiB): glibc raises it on its own once a large block is freed,
//!   after which 1 MiB buffers come from the heap and stay there; fixed, every large buffer is
//!   its own mapping and goes back to the system when freed;
//! - `malloc_trim` after a burst: the small blocks (TLS and HTTP buffers of many connections)
//!   freed in the middle of the heap go back too. Run from a background task, only when the
//!   buffered bytes or the open connections fell by a margin since the last look.

use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::buffers::BUDGET;
use crate::metrics;

/// Large blocks from this size on are mappings of their own.
const MMAP_THRESHOLD: i32 = 128 * 1024;

/// A drop of this many buffered bytes since the last look is worth a trim.
const TRIM_AFTER_BYTES: usize = 8 * 1024 * 1024;

/// ... or of this many open connections.
const TRIM_AFTER_CONNECTIONS: usize = 64;

const LOOK_EVERY: Duration = Duration::from_secs(5);

/// Fix the mmap threshold (at start, before the worker threads allocate).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes the allocator's parameters; any value is accepted.
        let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
        if ok != 1 {
            log::warn!("mallopt(M_MMAP_THRESHOLD) refused; memory may stay high after bursts");
        }
    }
}

/// Return free memory to the system; `true` if the allocator released some.
fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only releases free memory of the allocator.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Whether a look at (peak, now) of buffered bytes and connections calls for a trim.
fn burst_over(buffered: (usize, usize), connections: (usize, usize)) -> bool {
    buffered.0.saturating_sub(buffered.1) >= TRIM_AFTER_BYTES
        || connections.0.saturating_sub(connections.1) >= TRIM_AFTER_CONNECTIONS
}

/// Trims after bursts (see the module doc).
pub struct TrimService;

#[async_trait]
impl BackgroundService for TrimService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut look = tokio::time::interval(LOOK_EVERY);
        let mut peak_connections = metrics::open_connections();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = look.tick() => {}
            }
            let connections = metrics::open_connections();
            peak_connections = peak_connections.max(connections);
            let buffered = (BUDGET.take_peak(), BUDGET.used());
            if burst_over(buffered, (peak_connections, connections)) {
                let released = tokio::task::spawn_blocking(trim).await.unwrap_or(false);
                log::debug!("malloc_trim after a burst: released {released}");
                peak_connections = connections;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trim_follows_a_drop_in_buffers_or_connections_only() {
        assert!(!burst_over((1000, 0), (10, 10)));
        assert!(burst_over((TRIM_AFTER_BYTES, 0), (10, 10)));
        assert!(burst_over((0, 0), (1000, 900)));
        assert!(!burst_over((0, 0), (1000, 990)));
        assert!(!burst_over((5, 10), (3, 7)), "growth is no burst over");
    }

    #[test]
    fn tuning_and_trimming_are_harmless_to_call() {
        tune_allocator();
        let _ = trim();
    }
}
