//! Each way of tampering with a copy of a real log, and the first bad record
//! `verify` (and `AuditLog::open`, which fails closed) names for it.
// A failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::{lines, parse, reseal, verify_file, write_lines, write_story};
use lanyard_audit::{AuditError, AuditLog, GENESIS, Problem};
use tempfile::TempDir;

/// A tampered copy of a real 8-record log.
struct Copy {
    _dir: TempDir,
    path: PathBuf,
    head: (u64, String),
}

impl Copy {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (original, head) = write_story(dir.path());
        let path = dir.path().join("copy.log");
        std::fs::copy(&original, &path).unwrap();
        assert_eq!(
            verify_file(&path, Some((head.0, &head.1))).unwrap().records,
            8
        );
        Self {
            _dir: dir,
            path,
            head,
        }
    }

    fn edit(&self, change: impl FnOnce(&mut Vec<String>)) {
        let mut lines = lines(&self.path);
        change(&mut lines);
        write_lines(&self.path, &lines);
    }

    fn head(&self) -> Option<(u64, &str)> {
        Some((self.head.0, &self.head.1))
    }
}

/// Checks that `verify` (with and without the head, unless `needs_head`)
/// and `AuditLog::open` all report the same first bad record.
fn assert_broken(
    path: &Path,
    head: Option<(u64, &str)>,
    needs_head: bool,
    want_line: u64,
    want_seq: Option<u64>,
    want: &Problem,
    message: &str,
) {
    let mut errors = vec![verify_file(path, head).unwrap_err()];
    if !needs_head {
        errors.push(verify_file(path, None).unwrap_err());
    }
    errors.push(AuditLog::open(path, head).unwrap_err());
    for err in errors {
        assert_eq!(err.to_string(), message);
        match err {
            AuditError::Broken { line, seq, problem } => {
                assert_eq!((line, seq), (want_line, want_seq), "{problem}");
                assert_eq!(&problem, want);
            }
            other => panic!("expected a broken log, got {other:?}"),
        }
    }
}

#[test]
fn an_edited_record_is_named() {
    let copy = Copy::new();
    copy.edit(|lines| lines[3] = lines[3].replace("uid:1002(bob)", "uid:1001(alice)"));
    assert_broken(
        &copy.path,
        copy.head(),
        false,
        4,
        Some(4),
        &Problem::Edited,
        "audit log broken at line 4 (record 4): record was edited (hash mismatch)",
    );
}

#[test]
fn an_edited_record_with_its_own_hash_fixed_breaks_the_next_link() {
    let copy = Copy::new();
    copy.edit(|lines| {
        let mut r = parse(&lines[3]);
        r.principal = "uid:1001(alice)".into();
        lines[3] = reseal(r);
    });
    assert_broken(
        &copy.path,
        copy.head(),
        false,
        5,
        Some(5),
        &Problem::PrevMismatch,
        "audit log broken at line 5 (record 5): record does not chain to the one before it \
         (prev mismatch): a record was inserted or replaced",
    );
}

#[test]
fn a_deleted_record_is_named_by_the_one_after_it() {
    let copy = Copy::new();
    copy.edit(|lines| {
        lines.remove(4);
    });
    assert_broken(
        &copy.path,
        copy.head(),
        false,
        5,
        Some(6),
        &Problem::Dropped {
            expected_seq: 5,
            found: 6,
        },
        "audit log broken at line 5 (record 6): record 5 is missing (found 6 after 4): \
         a record was dropped",
    );
}

#[test]
fn a_deleted_first_record_is_named() {
    let copy = Copy::new();
    copy.edit(|lines| {
        lines.remove(0);
    });
    assert_broken(
        &copy.path,
        copy.head(),
        false,
        1,
        Some(2),
        &Problem::Dropped {
            expected_seq: 1,
            found: 2,
        },
        "audit log broken at line 1 (record 2): record 1 is missing (found 2 at the start): \
         a record was dropped",
    );
}

/// The forger builds a well-formed record that chains to record 3, takes
/// number 4 and hashes it, but cannot fix the records after it without
/// rewriting the whole chain.
#[test]
fn an_inserted_record_is_named() {
    let copy = Copy::new();
    copy.edit(|lines| {
        let third = parse(&lines[2]);
        let mut forged = parse(&lines[3]);
        forged.principal = "uid:1003(mallory)".into();
        forged.prev = third.hash;
        lines.insert(3, reseal(forged));
    });
    // The forgery itself verifies; the original record 4 after it does not.
    assert_broken(
        &copy.path,
        copy.head(),
        false,
        5,
        Some(4),
        &Problem::Inserted { seq: 4 },
        "audit log broken at line 5 (record 4): record 4 appears twice: a record was inserted",
    );
}

#[test]
fn an_inserted_record_that_does_not_chain_is_named() {
    let copy = Copy::new();
    copy.edit(|lines| {
        let mut forged = parse(&lines[3]);
        forged.seq = 4;
        forged.prev = GENESIS.into();
        lines.insert(3, reseal(forged));
    });
    assert_broken(
        &copy.path,
        copy.head(),
        false,
        4,
        Some(4),
        &Problem::PrevMismatch,
        "audit log broken at line 4 (record 4): record does not chain to the one before it \
         (prev mismatch): a record was inserted or replaced",
    );
}

#[test]
fn swapped_records_are_named_at_the_first_of_them() {
    let copy = Copy::new();
    copy.edit(|lines| lines.swap(3, 4));
    assert_broken(
        &copy.path,
        copy.head(),
        false,
        4,
        Some(5),
        &Problem::Reordered { seq: 4, after: 5 },
        "audit log broken at line 4 (record 5): records out of order: 4 after 5",
    );
}

#[test]
fn a_record_moved_to_the_end_is_named_where_it_went_missing() {
    let copy = Copy::new();
    copy.edit(|lines| {
        let second = lines.remove(1);
        lines.push(second);
    });
    assert_broken(
        &copy.path,
        copy.head(),
        false,
        2,
        Some(3),
        &Problem::Reordered { seq: 2, after: 3 },
        "audit log broken at line 2 (record 3): records out of order: 2 after 3",
    );
}

#[test]
fn a_record_repeated_further_down_is_out_of_order() {
    let copy = Copy::new();
    copy.edit(|lines| {
        let second = lines[1].clone();
        lines.insert(5, second);
    });
    assert_broken(
        &copy.path,
        copy.head(),
        false,
        6,
        Some(2),
        &Problem::Reordered { seq: 2, after: 5 },
        "audit log broken at line 6 (record 2): records out of order: 2 after 5",
    );
}

/// Cutting whole records off the end leaves a valid, shorter chain: only
/// the head recorded elsewhere shows it.
#[test]
fn a_truncated_tail_is_caught_only_with_the_recorded_head() {
    let copy = Copy::new();
    copy.edit(|lines| lines.truncate(6));
    let report = verify_file(&copy.path, None).unwrap();
    assert_eq!(report.records, 6);
    assert_ne!(report.head_hash, copy.head.1);
    assert_broken(
        &copy.path,
        copy.head(),
        true,
        7,
        None,
        &Problem::TailMissing {
            expected_seq: 8,
            last_seq: 6,
        },
        "audit log broken at line 7: the log ends at record 6 but its head was recorded as \
         record 8: the tail was cut off",
    );
}

#[test]
fn an_emptied_log_is_caught_only_with_the_recorded_head() {
    let copy = Copy::new();
    std::fs::write(&copy.path, "").unwrap();
    assert_eq!(verify_file(&copy.path, None).unwrap().records, 0);
    assert_broken(
        &copy.path,
        copy.head(),
        true,
        1,
        None,
        &Problem::TailMissing {
            expected_seq: 8,
            last_seq: 0,
        },
        "audit log broken at line 1: the log ends at record 0 but its head was recorded as \
         record 8: the tail was cut off",
    );
}

/// A partial write: the last line stops mid-record, without an end of line.
#[test]
fn a_partially_written_last_line_is_named() {
    let copy = Copy::new();
    let text = std::fs::read_to_string(&copy.path).unwrap();
    std::fs::write(&copy.path, &text[..text.len() - 30]).unwrap();
    assert_broken(
        &copy.path,
        copy.head(),
        false,
        8,
        None,
        &Problem::Garbled {
            reason: "incomplete line (no end of line): a partial write or a cut copy".into(),
        },
        "audit log broken at line 8: garbled line: incomplete line (no end of line): a partial \
         write or a cut copy",
    );
}

/// Even a complete record is refused without its end of line: the next
/// append would otherwise be glued to it.
#[test]
fn a_last_line_without_its_end_of_line_is_named() {
    let copy = Copy::new();
    let text = std::fs::read_to_string(&copy.path).unwrap();
    std::fs::write(&copy.path, text.trim_end()).unwrap();
    let err = verify_file(&copy.path, None).unwrap_err();
    assert!(
        matches!(
            err,
            AuditError::Broken {
                line: 8,
                seq: None,
                problem: Problem::Garbled { .. }
            }
        ),
        "{err}"
    );
}

#[test]
fn a_garbled_line_in_the_middle_is_named() {
    let copy = Copy::new();
    copy.edit(|lines| lines[2] = lines[2].replacen('{', "[", 1));
    let err = verify_file(&copy.path, None).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("audit log broken at line 3: garbled line: not a well-formed record"),
        "{msg}"
    );
    copy.edit(|lines| lines[2] = String::new());
    let err = verify_file(&copy.path, None).unwrap_err();
    assert!(
        matches!(
            err,
            AuditError::Broken {
                line: 3,
                seq: None,
                ..
            }
        ),
        "{err}"
    );
}

/// A field the format does not have would not be covered by the hash, so
/// it is refused even when the forger recomputes the hash.
#[test]
fn an_added_field_is_refused() {
    let copy = Copy::new();
    copy.edit(|lines| {
        let sealed = reseal(parse(&lines[1]));
        lines[1] = sealed.replacen('{', r#"{"approved_by":"uid:1003(mallory)","#, 1);
    });
    let err = verify_file(&copy.path, None).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("audit log broken at line 2: garbled line: not a well-formed record: unknown field `approved_by`"),
        "{err}"
    );
}

/// A forger who recomputes every hash from the edited record on leaves a
/// valid chain: only the head recorded elsewhere catches it.
#[test]
fn a_rewritten_chain_is_caught_only_with_the_recorded_head() {
    let copy = Copy::new();
    copy.edit(|lines| {
        let mut prev = parse(&lines[2]).hash;
        for line in &mut lines[3..] {
            let mut r = parse(line);
            if r.seq == 4 {
                r.principal = "uid:1001(alice)".into();
            }
            r.prev = prev;
            *line = reseal(r);
            prev = parse(line).hash;
        }
    });
    let report = verify_file(&copy.path, None).unwrap();
    assert_eq!(report.records, 8);
    assert_ne!(report.head_hash, copy.head.1);
    AuditLog::open(&copy.path, None).unwrap();

    let err = verify_file(&copy.path, copy.head()).unwrap_err();
    match &err {
        AuditError::Broken {
            line: 8,
            seq: Some(8),
            problem:
                Problem::HeadMismatch {
                    seq: 8,
                    expected,
                    found,
                },
        } => {
            assert_eq!(expected, &copy.head.1);
            assert_eq!(found, &report.head_hash);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        err.to_string().ends_with("the chain was rewritten"),
        "{err}"
    );
    assert!(AuditLog::open(&copy.path, copy.head()).is_err());
}

/// Records appended with a valid chain behind the writer's back are caught
/// only with the recorded head; the same error covers a crash between an
/// append and recording its head.
#[test]
fn records_beyond_the_recorded_head_are_caught_only_with_it() {
    let copy = Copy::new();
    copy.edit(|lines| {
        let last = parse(&lines[7]);
        let mut forged = last.clone();
        forged.seq = 9;
        forged.principal = "uid:1003(mallory)".into();
        forged.prev = last.hash;
        let forged = reseal(forged);
        let mut second = parse(&forged);
        second.seq = 10;
        second.prev = second.hash.clone();
        lines.push(forged);
        lines.push(reseal(second));
    });
    assert_eq!(verify_file(&copy.path, None).unwrap().records, 10);
    assert_broken(
        &copy.path,
        copy.head(),
        true,
        9,
        Some(9),
        &Problem::BeyondHead {
            head_seq: 8,
            last_seq: 10,
        },
        "audit log broken at line 9 (record 9): the log goes on to record 10 past its recorded \
         head, record 8: records were appended behind its writer's back, or the writer stopped \
         before recording its new head",
    );
}
