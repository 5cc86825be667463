//! When to renew a certificate and how long to wait before retrying: pure
//! functions of the certificate lifetime (and a jitter value the caller
//! draws), so they are tested without clocks.

use std::time::{Duration, SystemTime};

/// How far, as a fraction of the lifetime, jitter moves the refresh point
/// away from half-life (either way).
const JITTER_FRACTION: f64 = 0.1;
/// Never refresh sooner than this after the certificate became usable.
const MIN_REFRESH_DELAY: Duration = Duration::from_secs(1);
/// Always leave at least this fraction of the lifetime (and at most
/// [`MAX_SAFETY_MARGIN`]) between the refresh point and expiry.
const SAFETY_FRACTION: f64 = 0.2;
/// Upper bound of the safety margin before expiry.
const MAX_SAFETY_MARGIN: Duration = Duration::from_secs(300);

/// The moment a certificate valid from `valid_from` to `not_after` should be
/// renewed: at half its life, moved by `jitter` (in `[-1, 1]`, clamped)
/// times a tenth of the life, and clamped between a second after
/// `valid_from` and a safety margin before `not_after`.
///
/// `valid_from` is when the certificate became usable by us: the later of
/// its NotBefore and the time we received it, because issuers backdate
/// NotBefore to absorb clock skew and counting that in would renew a
/// short-lived SVID far too early.
pub fn refresh_at(valid_from: SystemTime, not_after: SystemTime, jitter: f64) -> SystemTime {
    let Ok(life) = not_after.duration_since(valid_from) else {
        // Already expired (or inverted): renew now.
        return valid_from;
    };
    let jitter = if jitter.is_finite() {
        jitter.clamp(-1.0, 1.0)
    } else {
        0.0
    };
    let half = life.as_secs_f64() / 2.0;
    let offset = half + jitter * JITTER_FRACTION * life.as_secs_f64();
    let margin = (life.as_secs_f64() * SAFETY_FRACTION).min(MAX_SAFETY_MARGIN.as_secs_f64());
    let latest = (life.as_secs_f64() - margin).max(0.0);
    let earliest = MIN_REFRESH_DELAY.as_secs_f64().min(latest);
    valid_from + Duration::from_secs_f64(offset.clamp(earliest, latest))
}

pub use lanyard_time::{from_unix, random_unit, unix as to_unix};

/// Exponential backoff for retries (see [`lanyard_time::Backoff`]).
pub fn backoff(attempt: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    lanyard_time::Backoff::new(base, max).delay(attempt, jitter)
}

/// How long from now until `t` (zero if it has passed).
pub fn until(t: SystemTime) -> Duration {
    lanyard_time::until(t, SystemTime::now())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn offset(t: SystemTime) -> f64 {
        t.duration_since(at(1000)).unwrap().as_secs_f64()
    }

    #[test]
    fn half_life_without_jitter() {
        assert_eq!(refresh_at(at(1000), at(1020), 0.0), at(1010));
        assert_eq!(refresh_at(at(1000), at(1000 + 3600), 0.0), at(1000 + 1800));
    }

    #[test]
    fn jitter_moves_by_a_tenth_of_the_life_at_most() {
        assert_eq!(offset(refresh_at(at(1000), at(1020), 1.0)), 12.0);
        assert_eq!(offset(refresh_at(at(1000), at(1020), -1.0)), 8.0);
        // Out-of-range and non-finite jitter is clamped / ignored.
        assert_eq!(offset(refresh_at(at(1000), at(1020), 7.0)), 12.0);
        assert_eq!(offset(refresh_at(at(1000), at(1020), f64::NAN)), 10.0);
    }

    #[test]
    fn clamped_inside_the_lifetime() {
        // Very short lifetimes: never later than the safety margin before expiry.
        let t = refresh_at(at(1000), at(1002), 1.0);
        assert!(offset(t) <= 1.6, "{}", offset(t));
        // Long lifetimes: the margin before expiry is capped at five minutes,
        // so half-life (plus jitter) is kept.
        let day = 86_400;
        assert_eq!(
            offset(refresh_at(at(1000), at(1000 + day), 1.0)),
            0.6 * day as f64
        );
        // Expired or inverted: now.
        assert_eq!(refresh_at(at(1000), at(900), 0.0), at(1000));
        assert_eq!(refresh_at(at(1000), at(1000), 0.0), at(1000));
    }

    #[test]
    fn never_before_one_second() {
        let t = refresh_at(at(1000), at(1010), -1.0);
        assert!(offset(t) >= 1.0);
    }
}
