//! Exponential backoff with jitter, so that many retrying clients (agents
//! reconnecting to a server, workloads to their agent, transactions that
//! collided) spread out instead of retrying in step.

use std::{
    hash::{BuildHasher, Hasher},
    time::Duration,
};

/// Retry delays: `base * 2^attempt`, capped at `max`, of which the lower half
/// is fixed and the upper half scaled by a jitter in `[0, 1]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

impl Backoff {
    /// Delays that start at `base` and never exceed `max`.
    pub const fn new(base: Duration, max: Duration) -> Self {
        Self { base, max }
    }

    /// The delay before retry `attempt` (0 for the first retry), spread by
    /// `jitter` in `[0, 1]` (values outside are clamped; NaN counts as 0.5).
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.max);
        let jitter = if jitter.is_nan() {
            0.5
        } else {
            jitter.clamp(0.0, 1.0)
        };
        ceiling.mul_f64(0.5 + 0.5 * jitter)
    }

    /// [`Self::delay`] with a fresh [`random_unit`] jitter.
    pub fn random_delay(&self, attempt: u32) -> Duration {
        self.delay(attempt, random_unit())
    }
}

/// A number in `[0, 1)` for jitter. Std's randomly keyed hasher is plenty
/// for spreading retries; nothing secret depends on it.
pub fn random_unit() -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETRY: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

    #[test]
    fn grows_then_caps_and_jitter_spreads_the_upper_half() {
        assert_eq!(RETRY.delay(0, 0.0), Duration::from_millis(50));
        assert_eq!(RETRY.delay(0, 1.0), Duration::from_millis(100));
        assert_eq!(RETRY.delay(3, 1.0), Duration::from_millis(800));
        assert_eq!(RETRY.delay(10, 1.0), Duration::from_secs(5));
        assert_eq!(RETRY.delay(u32::MAX, 0.0), Duration::from_millis(2500));
        assert_eq!(RETRY.delay(1, f64::NAN), Duration::from_millis(150));
        assert_eq!(RETRY.delay(1, 7.0), Duration::from_millis(200));
    }

    #[test]
    fn random_units_are_fractions_and_vary() {
        let draws: Vec<f64> = (0..64).map(|_| random_unit()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        assert!(draws.windows(2).any(|w| w[0] != w[1]));
        let d = RETRY.random_delay(2);
        assert!(d >= Duration::from_millis(200) && d <= Duration::from_millis(400));
    }
}
