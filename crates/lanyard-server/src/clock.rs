//! Time, injected: domain code asks the server's [`Clock`], so tests can
//! hold it still or move it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Where the server reads the time.
pub(crate) trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Seconds since the Unix epoch (0 before it).
pub(crate) fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_seconds() {
        assert_eq!(unix(UNIX_EPOCH + std::time::Duration::from_secs(42)), 42);
        assert_eq!(unix(UNIX_EPOCH - std::time::Duration::from_secs(1)), 0);
    }
}
