//! The on-disk record and its hash (the format is documented on [`Record`]).

use std::collections::BTreeMap;
use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use ring::digest;
use serde::{Deserialize, Serialize};

use crate::action::Action;
use crate::error::AuditError;
use crate::event::Event;

/// The `prev` of the first record: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The prefix hashed before every record's canonical JSON.
pub const HASH_DOMAIN: &[u8] = b"lanyard-audit-v1\n";

/// The longest line (record plus end of line) the log writes or accepts, in
/// bytes. Longer events are refused by [`append`](crate::AuditLog::append);
/// longer lines are reported as garbled, so a damaged file cannot make a
/// reader buffer without bound.
pub const MAX_LINE: usize = 64 * 1024;

/// One line of the audit log: an [`Event`] numbered, timed and chained.
///
/// # Hash
///
/// `hash = hex(SHA-256("lanyard-audit-v1\n" || canonical))`, where
/// `canonical` is the compact JSON (serde_json, no whitespace) of an object
/// with exactly these fields in exactly this order:
///
/// `seq`, `time`, `principal`, `action`, `subject`, `ticket`, `reason`,
/// `details`, `prev`
///
/// `ticket` and `reason` are `null` when absent, `details` is an object whose
/// keys are sorted (it is a `BTreeMap`), strings are escaped the way
/// serde_json escapes them (`"`, `\` and control characters; other
/// characters as UTF-8). The record as written to the file is the same
/// object with `hash` appended, on one line; a reader re-serializes what it
/// parsed, so the hash covers the record's content rather than the bytes of
/// its line; a line with a field not listed here is refused, since the hash
/// would not cover it. The domain prefix keeps these hashes from ever being
/// mistaken for hashes of anything else Lanyard computes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Position in the log, from 1, without gaps.
    pub seq: u64,
    /// When it was appended: RFC 3339, UTC, milliseconds
    /// (`2026-05-04T09:30:00.125Z`).
    pub time: String,
    /// See [`Event::principal`].
    pub principal: String,
    /// See [`Event::action`].
    pub action: Action,
    /// See [`Event::subject`].
    pub subject: String,
    /// See [`Event::ticket`].
    pub ticket: Option<String>,
    /// See [`Event::reason`].
    pub reason: Option<String>,
    /// See [`Event::details`].
    pub details: BTreeMap<String, String>,
    /// Lowercase hex SHA-256 hash of the previous record (its `hash`), or
    /// [`GENESIS`] for record 1.
    pub prev: String,
    /// Lowercase hex SHA-256 of this record, see [the format](Record#hash).
    pub hash: String,
}

/// The hashed view of a record: field order here IS the format.
#[derive(Serialize)]
struct Canonical<'a> {
    seq: u64,
    time: &'a str,
    principal: &'a str,
    action: Action,
    subject: &'a str,
    ticket: Option<&'a str>,
    reason: Option<&'a str>,
    details: &'a BTreeMap<String, String>,
    prev: &'a str,
}

/// Feeds serialized bytes straight into the digest.
struct DigestWriter(digest::Context);

impl io::Write for DigestWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Record {
    /// Recomputes this record's hash from its other fields (whatever its
    /// `hash` field says).
    ///
    /// # Errors
    ///
    /// [`AuditError::InvalidEvent`] if the record cannot be serialized,
    /// which the types here rule out in practice.
    pub fn compute_hash(&self) -> Result<String, AuditError> {
        let canonical = Canonical {
            seq: self.seq,
            time: &self.time,
            principal: &self.principal,
            action: self.action,
            subject: &self.subject,
            ticket: self.ticket.as_deref(),
            reason: self.reason.as_deref(),
            details: &self.details,
            prev: &self.prev,
        };
        let mut w = DigestWriter(digest::Context::new(&digest::SHA256));
        w.0.update(HASH_DOMAIN);
        serde_json::to_writer(&mut w, &canonical).map_err(|e| AuditError::InvalidEvent {
            reason: format!("cannot serialize the record: {e}"),
        })?;
        Ok(hex::encode(w.0.finish()))
    }

    /// [`time`](Record::time) as a `SystemTime`, or `None` if it is not a
    /// valid RFC 3339 UTC time (never the case in a verified log).
    pub fn timestamp(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339(&self.time).ok()
    }

    /// Numbers, times, chains and hashes an event.
    pub(crate) fn seal(
        seq: u64,
        now: SystemTime,
        event: Event,
        prev: String,
    ) -> Result<Self, AuditError> {
        let mut record = Record {
            seq,
            time: format_time(now)?,
            principal: event.principal,
            action: event.action,
            subject: event.subject,
            ticket: event.ticket,
            reason: event.reason,
            details: event.details,
            prev,
            hash: String::new(),
        };
        record.hash = record.compute_hash()?;
        Ok(record)
    }

    /// The record's line in the file, end of line included.
    pub(crate) fn to_line(&self) -> Result<Vec<u8>, AuditError> {
        let mut line = serde_json::to_vec(self).map_err(|e| AuditError::InvalidEvent {
            reason: format!("cannot serialize the record: {e}"),
        })?;
        line.push(b'\n');
        Ok(line)
    }

    /// Checks what the hash cannot: that the fields hold values a writer
    /// produces. Returns why not.
    pub(crate) fn check_form(&self) -> Result<(), String> {
        if self.seq == 0 {
            return Err("seq is 0 (records count from 1)".into());
        }
        if !is_hex_hash(&self.hash) {
            return Err("hash is not 64 lowercase hex digits".into());
        }
        if !is_hex_hash(&self.prev) {
            return Err("prev is not 64 lowercase hex digits".into());
        }
        let canonical_time = self
            .timestamp()
            .and_then(|t| format_time(t).ok())
            .is_some_and(|t| t == self.time);
        if !canonical_time {
            return Err(format!(
                "time {:?} is not an RFC 3339 UTC time with milliseconds",
                self.time
            ));
        }
        Ok(())
    }
}

/// RFC 3339, UTC, milliseconds. Refuses times humantime cannot format
/// (it would panic before 1970 and fail after 9999).
pub(crate) fn format_time(now: SystemTime) -> Result<String, AuditError> {
    const YEAR_10000: u64 = 253_402_300_800;
    match now.duration_since(UNIX_EPOCH) {
        Ok(d) if d.as_secs() < YEAR_10000 => Ok(humantime::format_rfc3339_millis(now).to_string()),
        _ => Err(AuditError::ClockOutOfRange { now }),
    }
}

fn is_hex_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn times_are_utc_with_milliseconds() {
        assert_eq!(
            format_time(at(1_777_887_000_125)).unwrap(),
            "2026-05-04T09:30:00.125Z"
        );
        // Sub-millisecond precision is cut, not rounded.
        let t = at(1_777_887_000_125) + Duration::from_micros(999);
        assert_eq!(format_time(t).unwrap(), "2026-05-04T09:30:00.125Z");
        assert_eq!(format_time(UNIX_EPOCH).unwrap(), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn unrepresentable_times_are_an_error_not_a_panic() {
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert!(matches!(
            format_time(before),
            Err(AuditError::ClockOutOfRange { .. })
        ));
        let after = UNIX_EPOCH + Duration::from_secs(253_402_300_800);
        assert!(matches!(
            format_time(after),
            Err(AuditError::ClockOutOfRange { .. })
        ));
    }

    /// Pins the hash format: if this changes, every existing log stops
    /// verifying, so it must not change without a new domain prefix.
    #[test]
    fn hash_format_is_pinned() {
        let event = Event::new("uid:1001(alice)", Action::TaskRequested, "task-1")
            .ticket("CHG-1")
            .detail("ttl", "1h")
            .detail("audience", "spiffe://example.org/db");
        let record = Record::seal(1, at(1_777_887_000_125), event, GENESIS.into()).unwrap();
        let canonical = concat!(
            r#"{"seq":1,"time":"2026-05-04T09:30:00.125Z","principal":"uid:1001(alice)","#,
            r#""action":"task_requested","subject":"task-1","ticket":"CHG-1","reason":null,"#,
            r#""details":{"audience":"spiffe://example.org/db","ttl":"1h"},"#,
            r#""prev":"0000000000000000000000000000000000000000000000000000000000000000"}"#
        );
        let mut input = HASH_DOMAIN.to_vec();
        input.extend_from_slice(canonical.as_bytes());
        let expected = hex::encode(digest::digest(&digest::SHA256, &input));
        assert_eq!(record.hash, expected);
        assert_eq!(record.hash, PINNED);

        let line = String::from_utf8(record.to_line().unwrap()).unwrap();
        assert_eq!(
            line,
            format!(
                "{},\"hash\":\"{PINNED}\"}}\n",
                &canonical[..canonical.len() - 1]
            )
        );
    }

    /// `printf 'lanyard-audit-v1\n%s' "$canonical" | sha256sum`, computed outside Rust.
    const PINNED: &str = "52547cc784f9a255db909e94ce5c7a81ef59ccadee8601f96b0ef6b96ddc4cb9";

    #[test]
    fn every_field_is_covered_by_the_hash() {
        let event = Event::new("p", Action::SvidIssued, "s");
        let base = Record::seal(3, at(1000), event, "ab".repeat(32)).unwrap();
        let variants: [fn(&mut Record); 9] = [
            |r| r.seq += 1,
            |r| r.time = "1970-01-01T00:00:01.001Z".into(),
            |r| r.principal.push('x'),
            |r| r.action = Action::SvidRevoked,
            |r| r.subject.push('x'),
            |r| r.ticket = Some(String::new()),
            |r| r.reason = Some(String::new()),
            |r| {
                r.details.insert("k".into(), "v".into());
            },
            |r| r.prev = GENESIS.into(),
        ];
        for change in variants {
            let mut r = base.clone();
            change(&mut r);
            assert_ne!(r.compute_hash().unwrap(), base.hash);
        }
    }

    #[test]
    fn form_checks() {
        let good = Record::seal(
            1,
            at(5),
            Event::new("p", Action::TokenUsed, "t"),
            GENESIS.into(),
        )
        .unwrap();
        assert_eq!(good.check_form(), Ok(()));
        let mut r = good.clone();
        r.time = "1970-01-01T00:00:00.005+00:00".into();
        assert!(r.check_form().unwrap_err().contains("RFC 3339"));
        let mut r = good.clone();
        r.hash = r.hash.to_uppercase();
        assert!(r.check_form().unwrap_err().contains("hash"));
        let mut r = good.clone();
        r.prev = "00".into();
        assert!(r.check_form().unwrap_err().contains("prev"));
        let mut r = good;
        r.seq = 0;
        assert!(r.check_form().unwrap_err().contains("seq is 0"));
    }
}
