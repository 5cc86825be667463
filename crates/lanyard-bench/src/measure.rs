//! Timing loops.

use std::time::{Duration, Instant};

/// How many operations ran in how long.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Operations completed.
    pub ops: u64,
    /// Wall-clock time they took.
    pub elapsed: Duration,
}

impl Sample {
    /// Operations per second.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ops as f64 / secs
        } else {
            0.0
        }
    }
}

/// Runs `op` repeatedly for at least `budget` (checking the clock every
/// `batch` operations so the clock read stays out of the measurement), and
/// stops at the first error.
pub fn run_for<E>(
    budget: Duration,
    batch: u64,
    mut op: impl FnMut(u64) -> Result<(), E>,
) -> Result<Sample, E> {
    let start = Instant::now();
    let mut ops = 0u64;
    loop {
        for _ in 0..batch {
            op(ops)?;
            ops += 1;
        }
        let elapsed = start.elapsed();
        if elapsed >= budget {
            return Ok(Sample { ops, elapsed });
        }
    }
}
