//! Appending across reopens, reading back with filters, locking.
// A failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::BufReader;
use std::time::Duration;

use common::{at, story, verify_file, write_story};
use lanyard_audit::{Action, AuditError, AuditLog, Event, Filter, GENESIS, Record, read};

fn read_file(path: &std::path::Path, filter: &Filter) -> Vec<Record> {
    read(BufReader::new(std::fs::File::open(path).unwrap()), filter).unwrap()
}

#[test]
fn many_appends_across_reopens_read_back_identically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let mut written = Vec::new();
    let mut head: Option<(u64, String)> = None;
    for round in 0..5u64 {
        let mut log = AuditLog::open(&path, head.as_ref().map(|(s, h)| (*s, h.as_str()))).unwrap();
        assert_eq!(log.path(), path);
        assert_eq!(log.head().0, round * 40);
        for i in 0..40u64 {
            let n = round * 40 + i;
            let action = Action::ALL[n as usize % Action::ALL.len()];
            let mut event = Event::new(format!("uid:{n}"), action, format!("subject-{n}"))
                .detail("n", n.to_string())
                .detail("quote", "\"tab\t newline\n ünïcode\"");
            if n % 3 == 0 {
                event = event.ticket(format!("CHG-{}", n % 7));
            }
            if n % 5 == 0 {
                event = event.reason("because");
            }
            let record = log.append(event.clone(), at(n)).unwrap();
            assert_eq!(record.seq, n + 1);
            assert_eq!(
                record.prev,
                written.last().map_or(GENESIS, |r: &Record| &r.hash)
            );
            assert_eq!(
                (
                    record.principal.as_str(),
                    record.action,
                    record.subject.as_str()
                ),
                (
                    event.principal.as_str(),
                    event.action,
                    event.subject.as_str()
                )
            );
            assert_eq!(
                (&record.ticket, &record.reason, &record.details),
                (&event.ticket, &event.reason, &event.details)
            );
            assert_eq!(log.head(), (record.seq, record.hash.clone()));
            written.push(record);
        }
        head = Some(log.head());
    }

    let (seq, hash) = head.unwrap();
    let report = verify_file(&path, Some((seq, &hash))).unwrap();
    assert_eq!((report.records, report.head_hash), (200, hash));
    assert_eq!(read_file(&path, &Filter::default()), written);
    // Exactly one line per record.
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 200);
}

#[test]
fn a_new_log_is_empty_and_its_head_is_genesis() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path, None).unwrap();
    assert_eq!(log.head(), (0, GENESIS.to_owned()));
    drop(log);
    AuditLog::open(&path, Some((0, GENESIS))).unwrap();
    assert!(AuditLog::open(&path, Some((0, &"1".repeat(64)))).is_err());
    assert!(AuditLog::open(&path, Some((1, &"1".repeat(64)))).is_err());
}

#[test]
fn a_missing_parent_directory_is_an_io_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope").join("audit.log");
    let err = AuditLog::open(&path, None).unwrap_err();
    assert!(
        matches!(&err, AuditError::Io { path: p, .. } if *p == path),
        "{err}"
    );
}

#[test]
fn a_second_writer_is_refused_while_the_first_holds_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let first = AuditLog::open(&path, None).unwrap();
    let err = AuditLog::open(&path, None).unwrap_err();
    assert!(err.to_string().contains("cannot lock it"), "{err}");
    drop(first);
    AuditLog::open(&path, None).unwrap();
}

#[test]
fn read_filters_by_ticket() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_story(dir.path());
    let filter = Filter {
        ticket: Some("CHG-1".into()),
        ..Filter::default()
    };
    let actions: Vec<_> = read_file(&path, &filter).iter().map(|r| r.action).collect();
    assert_eq!(
        actions,
        [
            Action::TaskRequested,
            Action::TaskApproved,
            Action::TaskActivated,
            Action::SvidIssued,
            Action::TaskCompleted,
            Action::SvidRevoked,
        ]
    );
    let none = Filter {
        ticket: Some("CHG-2".into()),
        ..Filter::default()
    };
    assert!(read_file(&path, &none).is_empty());
}

#[test]
fn read_filters_by_time_inclusively_and_combines_filters() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_story(dir.path());
    // Record n was appended at at(10 * n).
    let since = |t| Filter {
        since: Some(t),
        ..Filter::default()
    };
    let seqs = |f: &Filter| {
        read_file(&path, f)
            .iter()
            .map(|r| r.seq)
            .collect::<Vec<_>>()
    };
    assert_eq!(seqs(&since(at(60))), [6, 7, 8]);
    assert_eq!(seqs(&since(at(60) + Duration::from_millis(1))), [7, 8]);
    assert_eq!(seqs(&since(at(0))), (1..=8).collect::<Vec<_>>());
    assert!(seqs(&since(at(81))).is_empty());
    let both = Filter {
        since: Some(at(45)),
        ticket: Some("CHG-1".into()),
    };
    assert_eq!(seqs(&both), [5, 6, 7, 8]);
    assert_eq!(story().len(), 8);
}

#[test]
fn read_refuses_a_broken_log_even_when_the_damage_is_past_the_matches() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_story(dir.path());
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("task completed", "task abandoned")).unwrap();
    let filter = Filter {
        ticket: Some("CHG-1".into()),
        ..Filter::default()
    };
    let err = read(BufReader::new(std::fs::File::open(&path).unwrap()), &filter).unwrap_err();
    assert_eq!(
        err.to_string(),
        "audit log broken at line 8 (record 8): record was edited (hash mismatch)"
    );
}

#[test]
fn records_carry_millisecond_utc_times() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let mut log = AuditLog::open(&path, None).unwrap();
    let t = at(0) + Duration::from_micros(125_999);
    let record = log
        .append(Event::new("uid:0(root)", Action::BreakGlass, "task-1"), t)
        .unwrap();
    assert_eq!(record.time, "2026-05-04T09:30:00.125Z");
    assert_eq!(record.timestamp(), Some(at(0) + Duration::from_millis(125)));
}

#[test]
fn append_all_writes_a_chained_group_with_one_sync() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let mut log = AuditLog::open(&path, None).unwrap();
    log.append(
        Event::new("uid:0", Action::EntryCreated, "e-0"),
        std::time::SystemTime::now(),
    )
    .unwrap();
    let events = (1..=3)
        .map(|n| Event::new("agent", Action::SvidIssued, format!("s-{n}")))
        .collect();
    let records = log
        .append_all(events, std::time::SystemTime::now())
        .unwrap();
    assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), [2, 3, 4]);
    assert_eq!(log.head(), (4, records[2].hash.clone()));
    assert!(
        log.append_all(Vec::new(), std::time::SystemTime::now())
            .unwrap()
            .is_empty()
    );
    drop(log);
    let report = lanyard_audit::verify(
        BufReader::new(std::fs::File::open(&path).unwrap()),
        Some((4, records[2].hash.as_str())),
    )
    .unwrap();
    assert_eq!(report.records, 4);
}
