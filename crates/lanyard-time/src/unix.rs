//! `SystemTime` and Unix seconds, both ways.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch; times before it give 0, times past
/// `i64::MAX` seconds give `i64::MAX`.
pub fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The `SystemTime` of a Unix timestamp; negative timestamps clamp to the
/// epoch.
pub fn from_unix(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

/// Seconds since the Unix epoch, by the system clock.
pub fn now_unix() -> i64 {
    unix(SystemTime::now())
}

/// How long from `now` until `t` (zero if it has passed).
pub fn until(t: SystemTime, now: SystemTime) -> Duration {
    t.duration_since(now).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_both_ways_and_clamped_at_the_ends() {
        assert_eq!(unix(UNIX_EPOCH + Duration::from_secs(42)), 42);
        assert_eq!(unix(UNIX_EPOCH - Duration::from_secs(1)), 0);
        assert_eq!(from_unix(42), UNIX_EPOCH + Duration::from_secs(42));
        assert_eq!(from_unix(-5), UNIX_EPOCH);
        assert_eq!(unix(from_unix(i64::MAX)), i64::MAX);
    }

    #[test]
    fn until_is_never_negative() {
        let now = from_unix(100);
        assert_eq!(until(from_unix(130), now), Duration::from_secs(30));
        assert_eq!(until(from_unix(70), now), Duration::ZERO);
    }
}
