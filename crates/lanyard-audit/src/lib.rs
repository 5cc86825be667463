//! Lanyard's tamper-evident audit log.
//!
//! Every security decision the server takes (a join token created or used,
//! an agent attested, evicted or banned, an entry changed, an SVID issued or
//! revoked, a task grant requested, approved, denied, activated, completed,
//! expired, revoked or reviewed, a break-glass) is one [`Record`]: one line
//! of JSON appended to a file, synced to disk before the decision is
//! acknowledged.
//!
//! Each record carries its position (`seq`, from 1), the time, who decided
//! (`principal`), the [`Action`], what it was about (`subject`), the change
//! ticket and reason, free-form details, and two SHA-256 hashes: `prev`, the
//! hash of the record before it, and `hash`, its own, computed over all of
//! its other fields (the format is documented on [`Record`] and
//! pinned by a test). Changing, removing, adding or moving any record therefore
//! breaks the chain at a point [`verify`] reports: [`AuditError::Broken`]
//! names the first bad line, its record number, and a [`Problem`].
//!
//! What a chain cannot show by itself is a cut-off tail, or a log rewritten
//! from some record on with every hash recomputed. For those, keep the
//! [`AuditLog::head`] returned after each append somewhere the log's editor
//! cannot reach (the server keeps it in its datastore) and pass it as
//! `expected_head`.
//!
//! [`AuditLog::open`] verifies the whole file before it accepts appends, and
//! refuses a broken one: the server fails closed rather than extend a log it
//! cannot vouch for. [`read`] verifies while it filters, for `audit export`.
//!
//! ```no_run
//! use std::path::Path;
//! use std::time::SystemTime;
//! use lanyard_audit::{Action, AuditLog, Event, Filter, AuditError};
//!
//! # fn main() -> Result<(), AuditError> {
//! let path = Path::new("/var/lib/lanyard/audit.log");
//! // The head recorded after the last append, e.g. read from the datastore.
//! let recorded: Option<(u64, String)> = None;
//! let mut log = AuditLog::open(path, recorded.as_ref().map(|(s, h)| (*s, h.as_str())))?;
//!
//! let record = log.append(
//!     Event::new("uid:1002(bob)", Action::TaskApproved, "task-7f3a")
//!         .ticket("CHG-1234")
//!         .reason("maintenance window agreed with the DBA team"),
//!     SystemTime::now(),
//! )?;
//! // Only now acknowledge the approval; remember the new head.
//! let (seq, hash) = log.head();
//! assert_eq!((seq, hash.as_str()), (record.seq, record.hash.as_str()));
//!
//! // Later: everything about one ticket, verified.
//! let file = std::io::BufReader::new(std::fs::File::open(path).map_err(|source| {
//!     AuditError::Io { path: path.to_owned(), source }
//! })?);
//! let filter = Filter { ticket: Some("CHG-1234".into()), ..Filter::default() };
//! for record in lanyard_audit::read(file, &filter)? {
//!     println!("{} {} {} {}", record.time, record.principal, record.action, record.subject);
//! }
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod action;
mod error;
mod event;
mod log;
mod record;
mod verify;

pub use self::{
    action::Action,
    error::{AuditError, Problem},
    event::Event,
    log::{AuditLog, chain},
    record::{GENESIS, HASH_DOMAIN, MAX_LINE, Record},
    verify::{Filter, VerifyReport, read, verify},
};
