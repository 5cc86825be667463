//! The crate's one error type and the typed reason a log is broken.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::SystemTime;

/// Everything that can go wrong opening, appending to, verifying or reading
/// an audit log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// Opening, reading, writing or syncing the log file failed.
    #[error("audit log {}: {source}", path.display())]
    Io {
        /// The log file (or, when creating it, its parent directory).
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// Reading a log handed to [`verify`](crate::verify) or
    /// [`read`](crate::read) failed.
    #[error("reading the audit log: {source}")]
    Read {
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The log fails verification: `line` is the first bad line (from 1) and
    /// `seq` the sequence number written on it, when it could be read.
    #[error("audit log broken at line {line}{}: {problem}", RecordNo(*.seq))]
    Broken {
        /// The first bad line, counting from 1.
        line: u64,
        /// The sequence number the bad line claims, if it could be parsed.
        seq: Option<u64>,
        /// What is wrong with it.
        problem: Problem,
    },

    /// The event cannot be recorded as given (an empty principal or subject,
    /// or a record longer than [`MAX_LINE`](crate::MAX_LINE)).
    #[error("refusing to audit this event: {reason}")]
    InvalidEvent {
        /// Why.
        reason: String,
    },

    /// The clock reads a time that cannot be written as RFC 3339 (before
    /// 1970 or after 9999).
    #[error("the clock reads {now:?}, which cannot be recorded in the audit log")]
    ClockOutOfRange {
        /// The time that was passed to [`append`](crate::AuditLog::append).
        now: SystemTime,
    },

    /// An earlier append failed and its partial line could not be removed, so
    /// the file no longer matches the log in memory; reopen it (which
    /// verifies it) to go on.
    #[error(
        "audit log {} is unusable: an earlier append failed and could not be undone",
        path.display()
    )]
    Poisoned {
        /// The log file.
        path: PathBuf,
    },

    /// A name that is not one of the [`Action`](crate::Action)s.
    #[error("unknown audit action {name:?}")]
    UnknownAction {
        /// The name that was parsed.
        name: String,
    },
}

/// Why the first bad record of a log is bad.
///
/// Verification reads the log from the top and stops at the first line that
/// fails, checking in this order: the line is complete and parses as a
/// record ([`Garbled`](Problem::Garbled)), its hash recomputes
/// ([`Edited`](Problem::Edited)), its `seq` is the next one
/// ([`Dropped`](Problem::Dropped), [`Reordered`](Problem::Reordered),
/// [`Inserted`](Problem::Inserted)), and its `prev` is the previous record's
/// hash ([`PrevMismatch`](Problem::PrevMismatch)). After the last line the
/// caller's recorded head is checked ([`TailMissing`](Problem::TailMissing),
/// [`HeadMismatch`](Problem::HeadMismatch), [`BeyondHead`](Problem::BeyondHead)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The line is incomplete (no end of line: a partial write or a cut
    /// copy), is not a well-formed record, or holds a value no writer
    /// produces.
    Garbled {
        /// What is wrong with it.
        reason: String,
    },
    /// The record's content does not hash to its `hash` field: it was
    /// changed after it was written.
    Edited,
    /// A record is missing: the line holds `found` where `expected_seq` was
    /// due, and `expected_seq` appears nowhere further down.
    Dropped {
        /// The sequence number that was due.
        expected_seq: u64,
        /// The sequence number the line holds.
        found: u64,
    },
    /// The line repeats the sequence number of the record just before it:
    /// a second record was slipped in under an existing number.
    Inserted {
        /// The repeated sequence number.
        seq: u64,
    },
    /// Records are out of order: record `seq` comes (or would come) after
    /// record `after`.
    Reordered {
        /// The record that is out of place.
        seq: u64,
        /// The record it is placed after.
        after: u64,
    },
    /// The record's `prev` is not the hash of the record before it (for the
    /// first record: not 64 zeros), so something before it was replaced or a
    /// record was inserted with a number that fits.
    PrevMismatch,
    /// The log ends at `last_seq`, before the head the caller recorded
    /// (`expected_seq`): its tail was cut off.
    TailMissing {
        /// The sequence number the caller recorded as the head.
        expected_seq: u64,
        /// The last sequence number in the log (0 when it is empty).
        last_seq: u64,
    },
    /// The log goes on past the caller's recorded head: `line` is the first
    /// record after it. The chain itself verified, so these are either
    /// records appended behind the writer's back, or the writer stopped
    /// (crashed) between an append and recording its new head.
    BeyondHead {
        /// The sequence number the caller recorded as the head.
        head_seq: u64,
        /// The last sequence number in the log.
        last_seq: u64,
    },
    /// The record at the caller's recorded head has another hash: the chain
    /// was rewritten from some point on, hashes recomputed and all.
    HeadMismatch {
        /// The recorded head's sequence number.
        seq: u64,
        /// The hash the caller recorded.
        expected: String,
        /// The hash in the log.
        found: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Garbled { reason } => write!(f, "garbled line: {reason}"),
            Problem::Edited => f.write_str("record was edited (hash mismatch)"),
            Problem::Dropped {
                expected_seq: 1,
                found,
            } => write!(
                f,
                "record 1 is missing (found {found} at the start): a record was dropped"
            ),
            Problem::Dropped {
                expected_seq,
                found,
            } => write!(
                f,
                "record {expected_seq} is missing (found {found} after {}): a record was dropped",
                expected_seq - 1
            ),
            Problem::Inserted { seq } => {
                write!(f, "record {seq} appears twice: a record was inserted")
            }
            Problem::Reordered { seq, after } => {
                write!(f, "records out of order: {seq} after {after}")
            }
            Problem::PrevMismatch => f.write_str(
                "record does not chain to the one before it (prev mismatch): \
                 a record was inserted or replaced",
            ),
            Problem::TailMissing {
                expected_seq,
                last_seq,
            } => write!(
                f,
                "the log ends at record {last_seq} but its head was recorded as record \
                 {expected_seq}: the tail was cut off"
            ),
            Problem::BeyondHead { head_seq, last_seq } => write!(
                f,
                "the log goes on to record {last_seq} past its recorded head, record \
                 {head_seq}: records were appended behind its writer's back, or the writer \
                 stopped before recording its new head"
            ),
            Problem::HeadMismatch {
                seq,
                expected,
                found,
            } => write!(
                f,
                "record {seq} has hash {found} but {expected} was recorded for it: \
                 the chain was rewritten"
            ),
        }
    }
}

/// Formats ` (record N)` when the sequence number is known.
struct RecordNo(Option<u64>);

impl fmt::Display for RecordNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(seq) => write!(f, " (record {seq})"),
            None => Ok(()),
        }
    }
}
