//! Percentiles of latency samples.

use std::time::Duration;

/// The `p`-th percentile (0 < p <= 100) of `sorted` by the nearest-rank
/// method: the smallest sample such that at least `p` % of the samples are
/// at or below it. `None` for no samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    // Nearest rank, 1-based: ceil(p/100 * n), clamped to 1..=n.
    let rank = (p / 100.0 * n as f64).ceil();
    let rank = if rank.is_finite() && rank >= 1.0 {
        (rank as usize).min(n)
    } else {
        1
    };
    sorted.get(rank - 1).copied()
}

/// p50, p99 and max of a set of samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// How many samples.
    pub count: usize,
    /// Median (nearest rank).
    pub p50: Duration,
    /// 99th percentile (nearest rank).
    pub p99: Duration,
    /// The slowest sample.
    pub max: Duration,
}

impl Summary {
    /// Summarizes `samples` (any order); `None` for no samples.
    pub fn of(samples: &[Duration]) -> Option<Self> {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        Some(Self {
            count: sorted.len(),
            p50: percentile(&sorted, 50.0)?,
            p99: percentile(&sorted, 99.0)?,
            max: *sorted.last()?,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let s = ms(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&s, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&s, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&s, 100.0), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&s, 0.1), Some(Duration::from_millis(1)));
        // With fewer than 100 samples p99 is the maximum.
        let s = ms(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(percentile(&s, 99.0), Some(Duration::from_millis(10)));
        assert_eq!(percentile(&s, 50.0), Some(Duration::from_millis(5)));
        assert_eq!(percentile(&ms(&[7]), 50.0), Some(Duration::from_millis(7)));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn summary_sorts_its_input() {
        let s = Summary::of(&ms(&[30, 10, 20])).unwrap();
        assert_eq!(s.count, 3);
        assert_eq!(s.p50, Duration::from_millis(20));
        assert_eq!(s.p99, Duration::from_millis(30));
        assert_eq!(s.max, Duration::from_millis(30));
        assert_eq!(Summary::of(&[]), None);
    }
}
