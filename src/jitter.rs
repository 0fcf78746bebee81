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
    unit_from_bits(h.finish())
}

/// 64 random bits to a uniform value in [0, 1): the top 53 bits, all an f64 holds, so
/// every value is equally likely and 1.0 is never reached. `make fleet-sim` feeds it from
/// a seeded generator, so the simulated fleet draws exactly as the agent does.
pub fn unit_from_bits(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
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

    #[test]
    fn bits_map_onto_the_whole_unit_interval_without_reaching_one() {
        use super::unit_from_bits;
        assert_eq!(unit_from_bits(0), 0.0);
        assert_eq!(
            unit_from_bits(u64::MAX >> 1),
            0.5 - 1.0 / (1u64 << 53) as f64
        );
        assert_eq!(unit_from_bits(1 << 63), 0.5);
        assert!(unit_from_bits(u64::MAX) < 1.0);
        assert_eq!(unit_from_bits(u64::MAX), 1.0 - 1.0 / (1u64 << 53) as f64);
    }
}
