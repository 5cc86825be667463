//! The open, appendable log file.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, BufReader, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustix::fs::{FlockOperation, flock};

use crate::error::AuditError;
use crate::event::Event;
use crate::record::{MAX_LINE, Record};
use crate::verify::walk;

/// An audit log file, verified when opened, that records are appended to.
///
/// It holds an exclusive `flock` on the file for as long as it is open, so a
/// second process (or a second `AuditLog` in this one) cannot fork the chain.
/// Appends take `&mut self`: a server shares it behind a mutex.
#[derive(Debug)]
pub struct AuditLog {
    file: File,
    path: PathBuf,
    state: State,
}

/// What the log knows about its file's end.
#[derive(Clone, Debug, PartialEq, Eq)]
struct State {
    /// The last record's `seq` (0 when empty).
    seq: u64,
    /// The last record's hash.
    hash: String,
    /// The file's length: complete, verified lines only.
    len: u64,
    /// A failed append left bytes that could not be cut off.
    poisoned: bool,
}

// === impl AuditLog ===

impl AuditLog {
    /// Opens the log at `path`, creating it if it is missing, and verifies
    /// the whole existing chain: a broken log refuses to open (fail closed),
    /// naming the first bad record.
    ///
    /// A new file is created with mode 0600 whatever the umask; its parent
    /// directory must exist, and is synced so the new file survives a crash.
    /// An existing file keeps its mode (a warning is logged if group or
    /// others can access it).
    ///
    /// `expected_head` is the `(seq, hash)` the caller recorded elsewhere
    /// after its last append, checked as [`verify`](crate::verify) does: a
    /// log that ends before it (a dropped tail), holds another record there
    /// (a rewritten chain) or goes on past it refuses to open. The last case,
    /// [`Problem::BeyondHead`](crate::Problem::BeyondHead), is also what a
    /// crash between an append and recording its head looks like; the error
    /// says so, and deciding whether to trust those records is the
    /// operator's call (open with `None` after checking them).
    ///
    /// # Errors
    ///
    /// [`AuditError::Io`] if the file cannot be created, opened, locked
    /// (another `AuditLog` holds it) or read; [`AuditError::Broken`] if it
    /// fails verification.
    pub fn open(path: &Path, expected_head: Option<(u64, &str)>) -> Result<Self, AuditError> {
        let io_err = |source| AuditError::Io {
            path: path.to_owned(),
            source,
        };
        let created = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        let (file, created) = match created {
            Ok(file) => (file, true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let file = OpenOptions::new()
                    .read(true)
                    .append(true)
                    .open(path)
                    .map_err(io_err)?;
                (file, false)
            }
            Err(e) => return Err(io_err(e)),
        };
        flock(&file, FlockOperation::NonBlockingLockExclusive).map_err(|errno| {
            let source = io::Error::from(errno);
            io_err(io::Error::new(
                source.kind(),
                format!("cannot lock it, is another server using it? ({source})"),
            ))
        })?;

        if created {
            // The umask may have taken bits off 0600 (even the owner's).
            file.set_permissions(Permissions::from_mode(0o600))
                .map_err(io_err)?;
            sync_parent(path)?;
            tracing::info!(path = %path.display(), "created the audit log");
        } else {
            let meta = file.metadata().map_err(io_err)?;
            if !meta.is_file() {
                return Err(io_err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a regular file",
                )));
            }
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format_args!("{mode:04o}"),
                    "the audit log can be accessed by other users than its owner"
                );
            }
        }

        let walked = walk(BufReader::new(&file), expected_head, |_| {}).map_err(|e| match e {
            AuditError::Read { source } => io_err(source),
            other => other,
        })?;
        tracing::debug!(path = %path.display(), records = walked.seq, "verified the audit log");
        Ok(Self {
            file,
            path: path.to_owned(),
            state: State {
                seq: walked.seq,
                hash: walked.hash,
                len: walked.bytes,
                poisoned: false,
            },
        })
    }

    /// Appends one record for `event`, timed `now`, and syncs it to disk
    /// (`fdatasync`) before returning it: acknowledge the action only after
    /// this returns `Ok`.
    ///
    /// A failed append changes nothing in memory and cuts the file back to
    /// its previous length; if even that fails, the log refuses further
    /// appends ([`AuditError::Poisoned`]) and a reopen reports the partial
    /// line.
    ///
    /// # Errors
    ///
    /// [`AuditError::InvalidEvent`] for an empty principal or subject or an
    /// oversized record, [`AuditError::ClockOutOfRange`] for an unwritable
    /// `now`, [`AuditError::Io`] if writing or syncing fails,
    /// [`AuditError::Poisoned`] after an append that could not be undone.
    pub fn append(&mut self, event: Event, now: SystemTime) -> Result<Record, AuditError> {
        let mut records = append_to(
            &mut self.state,
            &mut &self.file,
            &self.path,
            vec![event],
            now,
        )?;
        records.pop().ok_or_else(|| AuditError::InvalidEvent {
            reason: "nothing was appended".to_owned(),
        })
    }

    /// Appends one record per event, all timed `now`, and syncs them to disk
    /// once (group commit): either all of them are in the log when this
    /// returns `Ok`, or none is. Errors as [`append`](Self::append).
    pub fn append_all(
        &mut self,
        events: Vec<Event>,
        now: SystemTime,
    ) -> Result<Vec<Record>, AuditError> {
        append_to(&mut self.state, &mut &self.file, &self.path, events, now)
    }

    /// The last record's `(seq, hash)`: `(0, GENESIS)` for an empty log.
    /// Keep it outside the log (in the datastore) after each append and pass
    /// it to the next [`open`](Self::open) or [`verify`](crate::verify).
    pub fn head(&self) -> (u64, String) {
        (self.state.seq, self.state.hash.clone())
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Syncs the directory holding a new log, so its entry survives a crash.
fn sync_parent(path: &Path) -> Result<(), AuditError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| AuditError::Io {
            path: dir.to_owned(),
            source,
        })
}

/// Where appended lines go: the log file, or a failing stand-in in tests.
trait Sink {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    fn sync_data(&self) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
}

impl Sink for &File {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        Write::write_all(self, buf)
    }

    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
}

/// Numbers, times, chains and hashes `events` as the records that follow
/// the record `head` (`(0, GENESIS)` for an empty chain), and returns each
/// with its line (without the end of line), as [`AuditLog`] appends them.
/// For a chain kept elsewhere than in a file (a database shared by several
/// servers), checked later with [`verify`](crate::verify) like a file.
///
/// # Errors
///
/// [`AuditError::InvalidEvent`] for an empty principal or subject or an
/// oversized record, [`AuditError::ClockOutOfRange`] for an unwritable
/// `now`.
pub fn chain(
    head: (u64, &str),
    events: Vec<Event>,
    now: SystemTime,
) -> Result<Vec<(Record, String)>, AuditError> {
    let invalid = |reason: &str| AuditError::InvalidEvent {
        reason: reason.to_owned(),
    };
    let (mut seq, mut hash) = (head.0, head.1.to_owned());
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        if event.principal.trim().is_empty() {
            return Err(invalid("the principal is empty"));
        }
        if event.subject.trim().is_empty() {
            return Err(invalid("the subject is empty"));
        }
        seq = seq
            .checked_add(1)
            .ok_or_else(|| invalid("the log is full"))?;
        let record = Record::seal(seq, now, event, hash)?;
        let mut line = record.to_line()?;
        if line.len() > MAX_LINE {
            return Err(AuditError::InvalidEvent {
                reason: format!(
                    "the record takes {} bytes, more than the {MAX_LINE} allowed",
                    line.len()
                ),
            });
        }
        line.pop();
        hash = record.hash.clone();
        let line = String::from_utf8(line).map_err(|_| invalid("the record is not UTF-8"))?;
        out.push((record, line));
    }
    Ok(out)
}

/// The body of [`AuditLog::append_all`], over any [`Sink`].
fn append_to(
    state: &mut State,
    sink: &mut impl Sink,
    path: &Path,
    events: Vec<Event>,
    now: SystemTime,
) -> Result<Vec<Record>, AuditError> {
    if state.poisoned {
        return Err(AuditError::Poisoned {
            path: path.to_owned(),
        });
    }
    let chained = chain((state.seq, &state.hash), events, now)?;
    let mut records = Vec::with_capacity(chained.len());
    let mut lines = Vec::new();
    for (record, line) in chained {
        lines.extend_from_slice(line.as_bytes());
        lines.push(b'\n');
        records.push(record);
    }
    if records.is_empty() {
        return Ok(records);
    }

    let written = sink.write_all(&lines).and_then(|()| sink.sync_data());
    if let Err(source) = written {
        // Cut off whatever part of the lines reached the file, so the next
        // append does not land after a fragment.
        if let Err(undo) = sink.set_len(state.len) {
            state.poisoned = true;
            tracing::error!(
                path = %path.display(),
                error = %undo,
                "could not undo a failed audit append; refusing further appends"
            );
        }
        return Err(AuditError::Io {
            path: path.to_owned(),
            source,
        });
    }
    if let Some(last) = records.last() {
        state.seq = last.seq;
        state.hash = last.hash.clone();
    }
    state.len += lines.len() as u64;
    Ok(records)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::{Action, Problem, verify};

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_777_000_000 + s)
    }

    fn ev(n: u64) -> Event {
        Event::new("uid:0(root)", Action::EntryCreated, format!("entry-{n}"))
    }

    /// Writes the first `keep` bytes of a line, then fails; `undo` decides
    /// whether cutting the file back works.
    struct Failing<'a> {
        file: &'a File,
        keep: usize,
        undo: bool,
    }

    impl Sink for Failing<'_> {
        fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
            let mut file = self.file;
            Write::write_all(&mut file, &buf[..self.keep.min(buf.len())])?;
            Err(io::Error::other("disk on fire"))
        }

        fn sync_data(&self) -> io::Result<()> {
            Ok(())
        }

        fn set_len(&self, len: u64) -> io::Result<()> {
            if self.undo {
                self.file.set_len(len)
            } else {
                Err(io::Error::other("still on fire"))
            }
        }
    }

    #[test]
    fn a_failed_write_is_undone_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut log = AuditLog::open(&path, None).unwrap();
        log.append(ev(1), at(1)).unwrap();
        let before = log.state.clone();

        let mut sink = Failing {
            file: &log.file,
            keep: 40,
            undo: true,
        };
        let err = append_to(&mut log.state, &mut sink, &path, vec![ev(2)], at(2)).unwrap_err();
        assert!(matches!(err, AuditError::Io { .. }), "{err}");
        assert_eq!(log.state, before);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), before.len);

        let second = log.append(ev(2), at(3)).unwrap();
        assert_eq!(second.seq, 2);
        drop(log);
        let file = std::fs::read(&path).unwrap();
        assert_eq!(
            verify(&file[..], Some((2, &second.hash))).unwrap().records,
            2
        );
    }

    #[test]
    fn a_failed_write_that_cannot_be_undone_poisons_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut log = AuditLog::open(&path, None).unwrap();
        log.append(ev(1), at(1)).unwrap();

        let mut sink = Failing {
            file: &log.file,
            keep: 40,
            undo: false,
        };
        append_to(&mut log.state, &mut sink, &path, vec![ev(2)], at(2)).unwrap_err();
        let err = log.append(ev(2), at(3)).unwrap_err();
        assert!(matches!(err, AuditError::Poisoned { .. }), "{err}");
        assert_eq!(log.head().0, 1);
        drop(log);

        // The fragment is on disk: reopening names it instead of accepting it.
        let err = AuditLog::open(&path, None).unwrap_err();
        match err {
            AuditError::Broken {
                line: 2,
                seq: None,
                problem: Problem::Garbled { reason },
            } => assert!(reason.contains("incomplete line"), "{reason}"),
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn empty_principal_or_subject_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = AuditLog::open(&dir.path().join("a.log"), None).unwrap();
        let err = log
            .append(Event::new(" ", Action::TokenUsed, "t"), at(0))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "refusing to audit this event: the principal is empty"
        );
        let err = log
            .append(Event::new("p", Action::TokenUsed, ""), at(0))
            .unwrap_err();
        assert!(matches!(err, AuditError::InvalidEvent { .. }));
        let huge = ev(1).detail("blob", "x".repeat(MAX_LINE));
        let err = log.append(huge, at(0)).unwrap_err();
        assert!(err.to_string().contains("bytes, more than"), "{err}");
        let err = log
            .append(ev(1), UNIX_EPOCH - Duration::from_secs(1))
            .unwrap_err();
        assert!(matches!(err, AuditError::ClockOutOfRange { .. }));
        assert_eq!(log.head(), (0, crate::GENESIS.to_owned()));
        assert_eq!(log.state.len, 0);
    }
}
