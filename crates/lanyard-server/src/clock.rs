//! Time, injected: domain code asks the server's [`Clock`], so tests can
//! hold it still or move it.

use std::time::SystemTime;

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

pub(crate) use lanyard_time::unix;
