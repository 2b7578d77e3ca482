//! A cap on expensive verifications running at once (password hashes on a cache miss, calls to
//! the introspection endpoint), with a bounded queue in front: beyond both, a request is
//! refused at once (503) without doing the work, so a flood of guesses from many addresses
//! cannot take every CPU or open every connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics;

pub struct VerifyQueue {
    /// The `queue` label of its metrics.
    name: &'static str,
    permits: Arc<Semaphore>,
    max_queued: usize,
    queued: AtomicUsize,
}

/// The queue is full: refused without verifying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// One verification running; the slot is free again when this is dropped (move it into the
/// blocking task that does the work, so a request that goes away does not free it early).
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    name: &'static str,
}

impl Drop for Slot {
    fn drop(&mut self) {
        metrics::verification_finished(self.name);
    }
}

/// Counts a waiter for as long as it waits (also when its request goes away meanwhile).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl VerifyQueue {
    /// `max_concurrent` at once (at least 1), `max_queued` waiting for a turn.
    pub fn new(name: &'static str, max_concurrent: usize, max_queued: usize) -> Self {
        VerifyQueue {
            name,
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            max_queued,
            queued: AtomicUsize::new(0),
        }
    }

    /// A slot to verify in: at once, after a wait in the queue, or `Busy` when the queue is
    /// full (counted).
    pub async fn enter(&self) -> Result<Slot, Busy> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if self.queued.fetch_add(1, Ordering::AcqRel) >= self.max_queued {
                    self.queued.fetch_sub(1, Ordering::AcqRel);
                    metrics::verification_refused(self.name);
                    return Err(Busy);
                }
                let _waiting = Waiting(&self.queued);
                // the semaphore is never closed
                self.permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| Busy)?
            }
        };
        metrics::verification_started(self.name);
        Ok(Slot {
            _permit: permit,
            name: self.name,
        })
    }

    /// Verifications waiting for a slot.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn beyond_the_slots_and_the_queue_a_verification_is_refused() {
        let q = Arc::new(VerifyQueue::new("test", 2, 1));
        let a = q.enter().await.unwrap();
        let _b = q.enter().await.unwrap();
        let waiter = {
            let q = q.clone();
            tokio::spawn(async move { q.enter().await.map(|_| ()) })
        };
        // the third waits in the queue; the fourth finds it full
        while q.queued() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(q.enter().await.err(), Some(Busy));
        drop(a);
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert_eq!(q.queued(), 0);
    }

    #[tokio::test]
    async fn a_waiter_that_goes_away_leaves_the_queue() {
        let q = VerifyQueue::new("test", 1, 1);
        let _held = q.enter().await.unwrap();
        let wait = tokio::time::timeout(std::time::Duration::from_millis(10), q.enter()).await;
        assert!(wait.is_err(), "still waiting");
        assert_eq!(q.queued(), 0, "the dropped waiter no longer counts");
    }
}
