//! A real log written by `AuditLog`, and the tools a forger would use on it.
#![allow(dead_code, reason = "each test binary uses a different part")]

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lanyard_audit::{Action, AuditError, AuditLog, Event, Record, VerifyReport};

/// 2026-05-04T09:30:00Z plus `s` seconds.
pub fn at(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_777_887_000 + s)
}

/// The events of a maintenance task, in order; record `i + 1` is
/// `STORY[i]`, appended at `at(10 * (i + 1))`.
pub fn story() -> Vec<Event> {
    let task = "task-7f3a";
    vec![
        Event::new("uid:0(root)", Action::TokenCreated, "token-1").detail("ttl", "10m"),
        Event::new(
            "spiffe://example.org/agent/n1",
            Action::TokenUsed,
            "token-1",
        ),
        Event::new("uid:1001(alice)", Action::TaskRequested, task)
            .ticket("CHG-1")
            .reason("rotate the database keys"),
        Event::new("uid:1002(bob)", Action::TaskApproved, task).ticket("CHG-1"),
        Event::new("server", Action::TaskActivated, task).ticket("CHG-1"),
        Event::new(
            "spiffe://example.org/agent/n1",
            Action::SvidIssued,
            "serial:0a1b",
        )
        .ticket("CHG-1")
        .detail("task", task),
        Event::new("uid:1001(alice)", Action::TaskCompleted, task).ticket("CHG-1"),
        Event::new("server", Action::SvidRevoked, "serial:0a1b")
            .ticket("CHG-1")
            .reason("task completed"),
    ]
}

/// Writes [`story`] to `dir/audit.log` with a real `AuditLog`; returns the
/// path and the recorded head.
pub fn write_story(dir: &Path) -> (PathBuf, (u64, String)) {
    let path = dir.join("audit.log");
    let mut log = AuditLog::open(&path, None).unwrap();
    for (i, event) in story().into_iter().enumerate() {
        log.append(event, at(10 * (i as u64 + 1))).unwrap();
    }
    let head = log.head();
    (path, head)
}

/// The lines of a log file, without their ends of line.
pub fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Writes lines back, each ended by a newline.
pub fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

pub fn parse(line: &str) -> Record {
    serde_json::from_str(line).unwrap()
}

/// A record's line, its hash recomputed as a forger would.
pub fn reseal(mut record: Record) -> String {
    record.hash = record.compute_hash().unwrap();
    serde_json::to_string(&record).unwrap()
}

/// Verifies the file at `path`.
pub fn verify_file(path: &Path, head: Option<(u64, &str)>) -> Result<VerifyReport, AuditError> {
    let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    lanyard_audit::verify(file, head)
}
