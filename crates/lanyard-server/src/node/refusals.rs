//! Audit records for refused attestations, aggregated per peer IP.
//!
//! Every refused `Attest` used to cost one fsynced audit record, so a
//! client looping on a bad token could make the server fsync as fast as it
//! could call. Now, per source (the peer's IP address) and per window
//! (`attestation_refusal_window`, default 60 s): the first refusal of a
//! window is recorded at once; later ones in the same window are only
//! counted, and written as one record carrying the count at the next
//! refusal (from any source) after the window has closed, or when the
//! server shuts down ([`RefusalAudit::flush`]). Pure: the caller gives the
//! time, the events to write come back.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use lanyard_audit::{Action, Event};

/// The principal of a refused attestation: nothing authenticated it.
const PRINCIPAL: &str = "anonymous node";

/// One source's open window.
#[derive(Debug)]
struct Window {
    /// When the window opened (its first refusal), unix seconds.
    opened_at: i64,
    /// Refusals after the first, not yet written.
    counted: u64,
    /// Method and reason of the last counted refusal.
    last_method: &'static str,
    last_reason: String,
}

/// Per-source windows of refused attestations.
#[derive(Debug)]
pub(crate) struct RefusalAudit {
    window_secs: i64,
    windows: Mutex<HashMap<String, Window>>,
}

impl RefusalAudit {
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window_secs: i64::try_from(window.as_secs()).unwrap_or(i64::MAX).max(1),
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Notes one refusal from `source` at `now`; returns the audit events to
    /// write for it now (possibly none): summaries of windows that have
    /// closed, then this refusal if it opens a new window.
    pub(crate) fn refused(
        &self,
        source: &str,
        method: &'static str,
        reason: &str,
        now: i64,
    ) -> Vec<Event> {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let mut events = Vec::new();
        let window_secs = self.window_secs;
        windows.retain(|src, w| {
            if now < w.opened_at.saturating_add(window_secs) {
                return true;
            }
            if w.counted > 0 {
                events.push(summary(src, w, window_secs));
            }
            false
        });
        match windows.get_mut(source) {
            Some(w) => {
                w.counted += 1;
                w.last_method = method;
                w.last_reason = reason.to_owned();
            }
            None => {
                windows.insert(
                    source.to_owned(),
                    Window {
                        opened_at: now,
                        counted: 0,
                        last_method: method,
                        last_reason: String::new(),
                    },
                );
                events.push(
                    Event::new(PRINCIPAL, Action::AttestationRefused, method)
                        .reason(reason)
                        .detail("source", source.to_owned()),
                );
            }
        }
        events
    }

    /// The counts of every open window, as audit events, and forgets them:
    /// what the server writes when it stops, so that no count is lost.
    pub(crate) fn flush(&self) -> Vec<Event> {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let window_secs = self.window_secs;
        let mut sources: Vec<_> = windows.drain().filter(|(_, w)| w.counted > 0).collect();
        sources.sort_by(|a, b| (a.1.opened_at, &a.0).cmp(&(b.1.opened_at, &b.0)));
        sources
            .iter()
            .map(|(source, w)| summary(source, w, window_secs))
            .collect()
    }
}

fn summary(source: &str, w: &Window, window_secs: i64) -> Event {
    Event::new(PRINCIPAL, Action::AttestationRefused, w.last_method)
        .reason(format!(
            "{} more refused attestations from {source} in the {window_secs}s window \
             opened at {}; last: {}",
            w.counted, w.opened_at, w.last_reason
        ))
        .detail("source", source.to_owned())
        .detail("count", w.counted.to_string())
        .detail("window_start", w.opened_at.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn count_of(e: &Event) -> Option<u64> {
        e.details.get("count").map(|v| v.parse().unwrap())
    }

    #[test]
    fn the_first_refusal_of_a_window_is_recorded_the_rest_counted_once() {
        let audit = RefusalAudit::new(Duration::from_secs(60));
        assert_eq!(
            audit
                .refused("10.0.0.1", "join_token", "unknown", 1000)
                .len(),
            1
        );
        for t in 1001..1100 {
            let now = t.min(1059);
            assert!(
                audit
                    .refused("10.0.0.1", "join_token", "unknown", now)
                    .is_empty()
            );
        }
        // Another source has its own window.
        assert_eq!(audit.refused("10.0.0.2", "x509pop", "bad", 1010).len(), 1);
        // The next refusal after the window: the count, then a new first.
        let events = audit.refused("10.0.0.1", "join_token", "used", 1060);
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(count_of(&events[0]), Some(99));
        assert!(
            events[0]
                .reason
                .as_deref()
                .unwrap()
                .contains("last: unknown"),
            "{:?}",
            events[0]
        );
        assert_eq!(count_of(&events[1]), None);
    }

    #[test]
    fn flush_writes_every_open_count_once() {
        let audit = RefusalAudit::new(Duration::from_secs(60));
        for _ in 0..4 {
            audit.refused("10.0.0.1", "join_token", "unknown", 1000);
        }
        audit.refused("10.0.0.2", "x509pop", "bad", 1001);
        let events = audit.flush();
        // 10.0.0.2 had only its first refusal, already written.
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(count_of(&events[0]), Some(3));
        assert_eq!(
            events[0].details.get("source").map(String::as_str),
            Some("10.0.0.1")
        );
        assert!(audit.flush().is_empty());
    }

    #[test]
    fn a_closed_window_is_written_at_a_refusal_from_another_source() {
        let audit = RefusalAudit::new(Duration::from_secs(1));
        audit.refused("a", "join_token", "r", 0);
        audit.refused("a", "join_token", "r", 0);
        audit.refused("a", "join_token", "r", 0);
        let events = audit.refused("b", "join_token", "r", 5);
        assert_eq!(events.len(), 2);
        assert_eq!(count_of(&events[0]), Some(2));
        // A window with nothing counted closes silently.
        assert_eq!(audit.refused("c", "join_token", "r", 10).len(), 1);
    }
}
