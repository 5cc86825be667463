//! The CA rotation schedule: a pure function of the slots' validity and the
//! time the caller passes in.
//!
//! Following SPIRE's habit, the next CA is prepared (and published in the
//! trust bundle) at half the active CA's life, and activated at five sixths
//! of it. Verifiers therefore learn the next CA a third of a CA lifetime
//! before the first SVID it signs appears. A retired CA stays in the bundle
//! until its own NotAfter, which is no earlier than the NotAfter of any SVID
//! it signed, because SVID lifetimes are capped to their CA's.

/// What one call to `CertificateAuthority::rotate` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// Nothing was due.
    Unchanged,
    /// A next CA was minted and published in the trust bundle.
    Prepared,
    /// The prepared CA became active; the previously active one is retired.
    Activated,
    /// Expired CAs (retired ones, or an unused prepared one) were dropped.
    Pruned,
}

/// The validity window of one CA generation, in Unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
}

impl Window {
    fn life(self) -> i64 {
        (self.not_after - self.not_before).max(0)
    }

    /// When the next CA should be prepared: half-way through this one's life.
    pub(crate) fn prepare_at(self) -> i64 {
        self.not_before + self.life() / 2
    }

    /// When the prepared CA should take over: five sixths into this one's life.
    pub(crate) fn activate_at(self) -> i64 {
        // i128 so that very long lifetimes cannot overflow the multiplication.
        let offset = i128::from(self.life()) * 5 / 6;
        self.not_before + i64::try_from(offset).unwrap_or(i64::MAX - self.not_before)
    }
}

/// The next step due at `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing is due.
    None,
    /// Mint the next CA.
    Prepare,
    /// Make the prepared CA active and retire the active one.
    Activate,
    /// Drop the CAs that are no longer valid.
    Prune,
}

/// The slots as the schedule sees them.
pub(crate) struct Schedule<'a> {
    pub(crate) active: Window,
    pub(crate) prepared: Option<Window>,
    pub(crate) retired: &'a [Window],
}

impl Schedule<'_> {
    /// The one step due at `now`, most urgent first. An unused prepared CA
    /// that has itself expired (possible only after a very long outage) is
    /// pruned rather than activated.
    pub(crate) fn step(&self, now: i64) -> Step {
        match self.prepared {
            Some(p) if now >= p.not_after => return Step::Prune,
            Some(_) if now >= self.active.activate_at() || now >= self.active.not_after => {
                return Step::Activate;
            }
            None if now >= self.active.prepare_at() => return Step::Prepare,
            _ => {}
        }
        if self.retired.iter().any(|r| now >= r.not_after) {
            return Step::Prune;
        }
        Step::None
    }

    /// The earliest time at which [`Schedule::step`] will return something
    /// other than [`Step::None`].
    pub(crate) fn next_at(&self) -> i64 {
        let own = match self.prepared {
            Some(p) => self.active.activate_at().min(p.not_after),
            None => self.active.prepare_at(),
        };
        self.retired.iter().map(|r| r.not_after).fold(own, i64::min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3600;

    fn w(not_before: i64, not_after: i64) -> Window {
        Window {
            not_before,
            not_after,
        }
    }

    #[test]
    fn thresholds_are_half_and_five_sixths() {
        let a = w(0, 24 * HOUR);
        assert_eq!(a.prepare_at(), 12 * HOUR);
        assert_eq!(a.activate_at(), 20 * HOUR);
    }

    #[test]
    fn steps_follow_the_life_cycle() {
        let active = w(0, 24 * HOUR);
        let fresh = Schedule {
            active,
            prepared: None,
            retired: &[],
        };
        assert_eq!(fresh.step(0), Step::None);
        assert_eq!(fresh.step(12 * HOUR - 1), Step::None);
        assert_eq!(fresh.step(12 * HOUR), Step::Prepare);
        assert_eq!(fresh.next_at(), 12 * HOUR);

        let prepared = Schedule {
            active,
            prepared: Some(w(12 * HOUR, 36 * HOUR)),
            retired: &[],
        };
        assert_eq!(prepared.step(12 * HOUR), Step::None);
        assert_eq!(prepared.step(20 * HOUR - 1), Step::None);
        assert_eq!(prepared.step(20 * HOUR), Step::Activate);
        assert_eq!(prepared.next_at(), 20 * HOUR);

        let retired = [active];
        let after = Schedule {
            active: w(12 * HOUR, 36 * HOUR),
            prepared: None,
            retired: &retired,
        };
        assert_eq!(after.step(20 * HOUR), Step::None);
        assert_eq!(after.next_at(), 24 * HOUR);
        assert_eq!(
            after.step(24 * HOUR),
            Step::Prepare,
            "24h is also the new CA's half life"
        );
    }

    #[test]
    fn expired_prepared_ca_is_pruned_not_activated() {
        let s = Schedule {
            active: w(0, 10),
            prepared: Some(w(5, 15)),
            retired: &[],
        };
        assert_eq!(s.step(100), Step::Prune);
        assert_eq!(s.next_at(), 8);
    }

    #[test]
    fn huge_lifetimes_do_not_overflow() {
        let a = w(0, i64::MAX);
        assert!(a.activate_at() > a.prepare_at());
    }
}
