//! Non-cryptographic randomness for backoff jitter and reconnect spreading.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A uniform value in [0, 1). std's `RandomState` is seeded from the OS once per
/// process; hashing a counter with it is random enough to keep a fleet of agents
/// from reconnecting in lockstep, and costs no dependency.
pub fn unit() -> f64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    #[test]
    fn stays_in_range_and_varies() {
        let xs: Vec<f64> = (0..1000).map(|_| super::unit()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((0.4..0.6).contains(&mean), "mean {mean}");
    }
}
