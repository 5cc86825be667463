//! Checking a log from the top, and reading it back.

use std::io::{BufRead, Read};
use std::time::SystemTime;

use serde::Deserialize;

use crate::error::{AuditError, Problem};
use crate::record::{GENESIS, MAX_LINE, Record};

/// What a successful [`verify`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// How many records the log holds (the last `seq`; 0 when empty).
    pub records: u64,
    /// The last record's hash ([`GENESIS`] when empty): record it elsewhere
    /// to detect a rewritten or truncated log later.
    pub head_hash: String,
}

/// Which records [`read`] keeps.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only records appended at or after this time.
    pub since: Option<SystemTime>,
    /// Only records with exactly this ticket.
    pub ticket: Option<String>,
}

impl Filter {
    /// Whether `record` passes every condition that is set.
    pub fn matches(&self, record: &Record) -> bool {
        let since_ok = self
            .since
            .is_none_or(|since| record.timestamp().is_some_and(|t| t >= since));
        let ticket_ok = self
            .ticket
            .as_deref()
            .is_none_or(|ticket| record.ticket.as_deref() == Some(ticket));
        since_ok && ticket_ok
    }
}

/// Verifies a whole log, for example a copy handed over for review.
///
/// Every line must be a complete record (ending in a newline), whose hash
/// recomputes, whose `seq` is 1, 2, 3... and whose `prev` is the previous
/// record's hash. The first line that fails is reported as
/// [`AuditError::Broken`] with its line number, its `seq` if readable, and a
/// [`Problem`] saying what is wrong; the checks and their order are listed
/// there.
///
/// The chain alone cannot tell a log whose tail was cut off, or one that was
/// rewritten from some record on with every hash recomputed, from an honest
/// shorter log. Passing `expected_head`, the `(seq, hash)` that
/// [`AuditLog::head`](crate::AuditLog::head) returned after the last append
/// and that was kept somewhere the log's editor cannot reach, closes both
/// gaps: the log must reach record `seq` ([`Problem::TailMissing`]), that
/// record must have that hash ([`Problem::HeadMismatch`]), and it must be the
/// last one ([`Problem::BeyondHead`], reported only once the rest of the
/// chain has verified: records appended behind the writer's back, or a crash
/// between an append and the caller recording its new head).
///
/// # Errors
///
/// [`AuditError::Broken`] for the first bad record, [`AuditError::Read`] if
/// reading fails.
pub fn verify(
    reader: impl BufRead,
    expected_head: Option<(u64, &str)>,
) -> Result<VerifyReport, AuditError> {
    let walked = walk(reader, expected_head, |_| {})?;
    Ok(VerifyReport {
        records: walked.seq,
        head_hash: walked.hash,
    })
}

/// Reads a log, verifying all of it as [`verify`] does, and returns the
/// records that match `filter`, in log order.
///
/// A log that fails verification anywhere returns the error and no records,
/// so an export never mixes trusted and untrusted lines.
///
/// # Errors
///
/// As [`verify`].
pub fn read(reader: impl BufRead, filter: &Filter) -> Result<Vec<Record>, AuditError> {
    let mut kept = Vec::new();
    walk(reader, None, |record| {
        if filter.matches(&record) {
            kept.push(record);
        }
    })?;
    Ok(kept)
}

/// Where a verified log ends.
#[derive(Debug)]
pub(crate) struct Walked {
    /// The last `seq` (0 when empty).
    pub(crate) seq: u64,
    /// The last hash ([`GENESIS`] when empty).
    pub(crate) hash: String,
    /// The bytes read, all of them complete lines.
    pub(crate) bytes: u64,
}

/// Verifies `reader` line by line, handing each good record to `each`.
pub(crate) fn walk<R: BufRead>(
    mut reader: R,
    expected_head: Option<(u64, &str)>,
    mut each: impl FnMut(Record),
) -> Result<Walked, AuditError> {
    let mut line_no = 0u64;
    let mut seq = 0u64;
    let mut hash = GENESIS.to_owned();
    let mut bytes = 0u64;
    // The line after the caller's head, if the log goes on past it.
    let mut beyond_head_at = None;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = read_line(&mut reader, &mut buf)?;
        if n == 0 {
            break;
        }
        line_no += 1;
        bytes += n as u64;
        let broken = |seq, problem| AuditError::Broken {
            line: line_no,
            seq,
            problem,
        };
        let garbled = |reason: String| broken(None, Problem::Garbled { reason });

        let Some(body) = buf.strip_suffix(b"\n") else {
            return Err(garbled(if buf.len() > MAX_LINE {
                format!("longer than {MAX_LINE} bytes")
            } else {
                "incomplete line (no end of line): a partial write or a cut copy".to_owned()
            }));
        };
        let record: Record = serde_json::from_slice(body)
            .map_err(|e| garbled(format!("not a well-formed record: {e}")))?;
        let this = Some(record.seq);
        if record.compute_hash()? != record.hash {
            return Err(broken(this, Problem::Edited));
        }
        if let Err(reason) = record.check_form() {
            return Err(broken(this, Problem::Garbled { reason }));
        }
        let expected = seq + 1;
        if record.seq > expected {
            let problem = if seq_appears_later(&mut reader, expected)? {
                Problem::Reordered {
                    seq: expected,
                    after: record.seq,
                }
            } else {
                Problem::Dropped {
                    expected_seq: expected,
                    found: record.seq,
                }
            };
            return Err(broken(this, problem));
        }
        if record.seq == seq {
            return Err(broken(this, Problem::Inserted { seq }));
        }
        if record.seq < seq {
            let problem = Problem::Reordered {
                seq: record.seq,
                after: seq,
            };
            return Err(broken(this, problem));
        }
        if record.prev != hash {
            return Err(broken(this, Problem::PrevMismatch));
        }
        if let Some((head_seq, head_hash)) = expected_head
            && head_seq == record.seq
            && head_hash != record.hash
        {
            let problem = Problem::HeadMismatch {
                seq: head_seq,
                expected: head_hash.to_owned(),
                found: record.hash,
            };
            return Err(broken(this, problem));
        }
        if let Some((head_seq, _)) = expected_head
            && record.seq == head_seq + 1
        {
            beyond_head_at = Some(line_no);
        }
        seq = record.seq;
        hash.clone_from(&record.hash);
        each(record);
    }

    if let (Some((head_seq, _)), Some(line)) = (expected_head, beyond_head_at) {
        return Err(AuditError::Broken {
            line,
            seq: Some(head_seq + 1),
            problem: Problem::BeyondHead {
                head_seq,
                last_seq: seq,
            },
        });
    }
    match expected_head {
        Some((head_seq, _)) if head_seq > seq => Err(AuditError::Broken {
            line: line_no + 1,
            seq: None,
            problem: Problem::TailMissing {
                expected_seq: head_seq,
                last_seq: seq,
            },
        }),
        Some((0, head_hash)) if head_hash != GENESIS => Err(AuditError::Broken {
            line: 1,
            seq: None,
            problem: Problem::HeadMismatch {
                seq: 0,
                expected: head_hash.to_owned(),
                found: GENESIS.to_owned(),
            },
        }),
        _ => Ok(Walked { seq, hash, bytes }),
    }
}

/// Reads one line, end of line included, but never more than
/// [`MAX_LINE`]` + 1` bytes, so a damaged file cannot exhaust memory.
fn read_line<R: BufRead>(reader: &mut R, buf: &mut Vec<u8>) -> Result<usize, AuditError> {
    Read::take(&mut *reader, MAX_LINE as u64 + 1)
        .read_until(b'\n', buf)
        .map_err(|source| AuditError::Read { source })
}

/// After a line that skips ahead of `wanted`: does `wanted` turn up further
/// down? Then records were reordered, else one was dropped. Only the `seq`
/// of the remaining lines is looked at; lines that do not parse are skipped.
fn seq_appears_later<R: BufRead>(reader: &mut R, wanted: u64) -> Result<bool, AuditError> {
    #[derive(Deserialize)]
    struct SeqOnly {
        seq: u64,
    }
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if read_line(reader, &mut buf)? == 0 {
            return Ok(false);
        }
        let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if serde_json::from_slice::<SeqOnly>(body).is_ok_and(|r| r.seq == wanted) {
            return Ok(true);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn an_empty_log_verifies_with_genesis_as_head() {
        let report = verify(&b""[..], Some((0, GENESIS))).unwrap();
        assert_eq!(
            report,
            VerifyReport {
                records: 0,
                head_hash: GENESIS.to_owned()
            }
        );
    }

    #[test]
    fn an_overlong_line_is_garbled_without_being_buffered_whole() {
        let mut log = vec![b'x'; MAX_LINE * 3];
        log.push(b'\n');
        let err = verify(&log[..], None).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("audit log broken at line 1: garbled line: longer than {MAX_LINE} bytes")
        );
    }

    #[test]
    fn read_errors_are_reported_as_such() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("unplugged"))
            }
        }
        let err = verify(std::io::BufReader::new(Failing), None).unwrap_err();
        assert_eq!(err.to_string(), "reading the audit log: unplugged");
    }
}
