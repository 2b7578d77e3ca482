//! Randomness, with one policy: keys and salts are drawn at start-up, where a failing random
//! source is an error and the proxy does not start; the request path never asks the operating
//! system and never panics. A leaf module.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

#[derive(Debug, Clone, thiserror::Error)]
#[error("the operating system's random number generator is unavailable: {0}")]
pub struct RandomUnavailable(String);

/// A fresh 256-bit key or salt (start-up only).
pub fn key() -> Result<[u8; 32], RandomUnavailable> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| RandomUnavailable(e.to_string()))?;
    Ok(key)
}

static PROCESS_SEED: OnceLock<[u8; 32]> = OnceLock::new();
static DRAWN: AtomicU64 = AtomicU64::new(0);

/// Draw the process seed that [`connection_seed`] derives from. Called once at start-up.
pub fn init() -> Result<(), RandomUnavailable> {
    let seed = key()?;
    let _ = PROCESS_SEED.set(seed);
    Ok(())
}

/// A per-connection value that is unpredictable to clients (WebSocket masking keys), derived
/// from the process seed without a system call. Before [`init`] (unit tests, fuzzing) the seed
/// is all zeros: the values are then only distinct, which is all those callers need.
pub fn connection_seed() -> u64 {
    let n = DRAWN.fetch_add(1, Ordering::Relaxed);
    let seed = PROCESS_SEED.get().copied().unwrap_or_default();
    let digest = Sha256::new()
        .chain_update(seed)
        .chain_update(n.to_le_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_seeds_differ() {
        init().unwrap();
        assert_ne!(connection_seed(), connection_seed());
        assert_ne!(key().unwrap(), key().unwrap());
    }
}
