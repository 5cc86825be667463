//! A damaged, foreign or incomplete store is refused with an error that says
//! what is wrong, and never opened as an empty (or shortened) store.
//!
//! What the sled 0.34 files tolerate, as these tests show:
//! - `db` truncated, or overwritten in its live part: sled recovers its log
//!   only up to the first damaged message and drops the rest without an
//!   error; the seal file catches the lost writes (`Corrupt`).
//! - `db` header overwritten or zeroed: sled recovers nothing and starts a
//!   new database, or panics; refused (`Corrupt`, then `NotAStore` on later
//!   opens because the marker is gone).
//! - `conf` garbage or altered: sled refuses to open (`Open`). `conf`
//!   removed: sled would write a new one silently, so we refuse (`NotAStore`).
//! - bytes overwritten in a part of `db` sled no longer uses (segments it
//!   has rewritten elsewhere): nothing is lost, and the store opens with
//!   every record; `verify` on open reads every record to make sure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use common::{after_lock_release, populate, refused};
use lanyard_store::{FORMAT_VERSION, StoreError};

fn store_dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    (dir, path)
}

fn overwrite(file: &Path, at: u64, bytes: &[u8]) {
    let mut f = OpenOptions::new().write(true).open(file).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(bytes).unwrap();
    f.sync_all().unwrap();
}

fn len(file: &Path) -> u64 {
    fs::metadata(file).unwrap().len()
}

/// Refused now, and still refused on every later attempt: a failed open
/// must not leave behind something that opens as a valid store.
fn refused_twice(path: &Path) -> StoreError {
    let first = refused(path);
    let again = refused(path);
    eprintln!("first open: {first}\nlater open: {again}");
    first
}

fn assert_corrupt(e: &StoreError) {
    assert!(
        matches!(e, StoreError::Corrupt { .. }),
        "expected Corrupt, got {e:?}"
    );
}

fn assert_not_a_store(e: &StoreError, mentioning: &str) {
    match e {
        StoreError::NotAStore { reason, .. } => assert!(
            reason.contains(mentioning),
            "the reason must mention {mentioning:?}: {reason}"
        ),
        other => panic!("expected NotAStore mentioning {mentioning:?}, got {other:?}"),
    }
}

// === sled's own files ===

#[test]
fn missing_conf_is_refused() {
    let (_t, path) = store_dir();
    populate(&path, 5);
    fs::remove_file(path.join("conf")).unwrap();
    assert_not_a_store(&refused_twice(&path), "conf");
    assert!(!path.join("conf").exists(), "open must not recreate `conf`");
}

#[test]
fn garbage_conf_is_refused() {
    let (_t, path) = store_dir();
    populate(&path, 5);
    fs::write(path.join("conf"), b"not a sled configuration file\n1234").unwrap();
    assert!(matches!(refused_twice(&path), StoreError::Open { .. }));
}

#[test]
fn altered_conf_is_refused() {
    let (_t, path) = store_dir();
    populate(&path, 5);
    // "segment_size: 524288" becomes "... 594288".
    overwrite(&path.join("conf"), 15, b"9");
    match refused_twice(&path) {
        StoreError::Open { reason, .. } => assert!(reason.contains("sled"), "{reason}"),
        other => panic!("expected Open, got {other:?}"),
    }
}

#[test]
fn missing_data_file_is_refused() {
    let (_t, path) = store_dir();
    populate(&path, 5);
    fs::remove_file(path.join("db")).unwrap();
    assert_not_a_store(&refused_twice(&path), "db");
}

#[test]
fn empty_data_file_is_refused() {
    let (_t, path) = store_dir();
    populate(&path, 5);
    OpenOptions::new()
        .write(true)
        .open(path.join("db"))
        .unwrap()
        .set_len(0)
        .unwrap();
    assert_not_a_store(&refused_twice(&path), "empty");
}

#[test]
fn truncated_data_file_is_refused() {
    for keep in [2, 3] {
        let (_t, path) = store_dir();
        populate(&path, 20);
        let db = path.join("db");
        let cut = len(&db) * (keep - 1) / keep;
        OpenOptions::new()
            .write(true)
            .open(&db)
            .unwrap()
            .set_len(cut)
            .unwrap();
        assert_corrupt(&refused_twice(&path));
    }
}

#[test]
fn truncated_to_its_first_bytes_is_refused() {
    let (_t, path) = store_dir();
    populate(&path, 20);
    OpenOptions::new()
        .write(true)
        .open(path.join("db"))
        .unwrap()
        .set_len(100)
        .unwrap();
    let e = refused_twice(&path);
    assert!(
        matches!(e, StoreError::Corrupt { .. } | StoreError::NotAStore { .. }),
        "{e:?}"
    );
}

#[test]
fn bytes_overwritten_in_the_middle_of_the_data_file_are_refused() {
    for (size, pattern) in [(16, 0x55), (4096, 0xAA), (1, 0x00)] {
        let (_t, path) = store_dir();
        populate(&path, 20);
        let db = path.join("db");
        overwrite(&db, len(&db) / 2, &vec![pattern; size]);
        assert_corrupt(&refused_twice(&path));
    }
}

#[test]
fn overwritten_header_is_refused() {
    for at in [0, 200] {
        let (_t, path) = store_dir();
        populate(&path, 20);
        overwrite(&path.join("db"), at, &[0xAA; 64]);
        let e = refused_twice(&path);
        assert!(
            matches!(e, StoreError::Corrupt { .. } | StoreError::NotAStore { .. }),
            "{e:?}"
        );
    }
}

#[test]
fn zeroed_data_file_is_refused() {
    let (_t, path) = store_dir();
    populate(&path, 20);
    let db = path.join("db");
    overwrite(&db, 0, &vec![0; len(&db) as usize]);
    assert_corrupt(&refused(&path));
    // sled started a new database over the zeros; it has no marker.
    assert_not_a_store(&refused(&path), "marker");
}

// === the store's own marker, seal and records ===

#[test]
fn missing_seal_is_refused() {
    let (_t, path) = store_dir();
    populate(&path, 5);
    fs::remove_file(path.join("lanyard.seal")).unwrap();
    assert_not_a_store(&refused_twice(&path), "seal");
}

#[test]
fn garbage_seal_is_refused() {
    let (_t, path) = store_dir();
    populate(&path, 5);
    fs::write(path.join("lanyard.seal"), b"lanyard-seal zzzz\n").unwrap();
    assert_corrupt(&refused_twice(&path));
}

#[test]
fn a_seal_ahead_of_the_data_is_refused() {
    // The same situation as a data file that lost its latest writes.
    let (_t, path) = store_dir();
    populate(&path, 5);
    fs::write(
        path.join("lanyard.seal"),
        b"lanyard-seal 00000000000f4240\n",
    )
    .unwrap();
    match refused_twice(&path) {
        StoreError::Corrupt { what } => {
            assert!(what.contains("1000000 writes were acknowledged"), "{what}")
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// Changes the store's sled database directly, bypassing `SledStore`.
fn tamper(path: &Path, change: impl FnOnce(&sled::Db)) {
    // No background flusher: its thread holds the database (and its file
    // lock) for a moment after `db` is dropped, and the store opened next
    // would find the lock taken instead of the damage.
    let db =
        after_lock_release(|| sled::Config::new().path(path).flush_every_ms(None).open()).unwrap();
    change(&db);
    db.flush().unwrap();
}

#[test]
fn wiped_marker_is_refused() {
    let (_t, path) = store_dir();
    populate(&path, 5);
    tamper(&path, |db| {
        db.open_tree("meta")
            .unwrap()
            .remove("format_version")
            .unwrap();
    });
    assert_not_a_store(&refused_twice(&path), "marker");
}

#[test]
fn unknown_format_version_is_refused() {
    let (_t, path) = store_dir();
    populate(&path, 5);
    tamper(&path, |db| {
        db.open_tree("meta")
            .unwrap()
            .insert("format_version", "lanyard-store/99")
            .unwrap();
    });
    match refused_twice(&path) {
        StoreError::UnsupportedFormat {
            found, expected, ..
        } => {
            assert_eq!(found, "lanyard-store/99");
            assert_eq!(expected, FORMAT_VERSION);
        }
        other => panic!("expected UnsupportedFormat, got {other:?}"),
    }
}

#[test]
fn a_sled_database_of_something_else_is_refused() {
    let (_t, path) = store_dir();
    tamper(&path, |db| {
        db.insert("unrelated", "data").unwrap();
    });
    assert_not_a_store(&refused_twice(&path), "meta");
}

#[test]
fn a_missing_tree_is_refused() {
    let (_t, path) = store_dir();
    populate(&path, 5);
    tamper(&path, |db| {
        assert!(db.drop_tree("svids").unwrap());
    });
    match refused_twice(&path) {
        StoreError::Corrupt { what } => assert!(what.contains("svids"), "{what}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn an_undecodable_record_is_refused_naming_tree_and_key() {
    for tree in ["entries", "agents", "join_tokens", "svids", "revocations"] {
        let (_t, path) = store_dir();
        populate(&path, 5);
        tamper(&path, |db| {
            db.open_tree(tree)
                .unwrap()
                .insert("damaged-key", &b"{not json"[..])
                .unwrap();
        });
        match refused(&path) {
            StoreError::Corrupt { what } => {
                assert!(
                    what.contains(tree) && what.contains("damaged-key"),
                    "{what}"
                )
            }
            other => panic!("expected Corrupt for tree {tree}, got {other:?}"),
        }
    }
}

#[test]
fn a_record_under_the_wrong_key_is_refused() {
    let (_t, path) = store_dir();
    populate(&path, 5);
    tamper(&path, |db| {
        let svids = db.open_tree("svids").unwrap();
        let record = svids.get("0b").unwrap().unwrap();
        svids.insert("0c", record).unwrap();
    });
    match refused(&path) {
        StoreError::Corrupt { what } => assert!(what.contains("\"0c\""), "{what}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn an_entry_missing_from_the_index_is_refused() {
    let (_t, path) = store_dir();
    populate(&path, 5);
    tamper(&path, |db| {
        db.open_tree("entry_index").unwrap().clear().unwrap();
    });
    match refused(&path) {
        StoreError::Corrupt { what } => assert!(what.contains("entry_index"), "{what}"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

// === directories that are not stores ===

#[test]
fn a_non_empty_foreign_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("notes.txt"), b"operator notes").unwrap();
    assert_not_a_store(&refused(dir.path()), "db");
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "open must not write into a foreign directory"
    );
}

#[test]
fn a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("store");
    fs::write(&file, b"x").unwrap();
    assert_not_a_store(&refused(&file), "not a directory");
}

#[test]
fn errors_say_what_is_wrong() {
    let (_t, path) = store_dir();
    populate(&path, 5);
    fs::remove_file(path.join("conf")).unwrap();
    let message = refused(&path).to_string();
    assert!(
        message.contains(&path.display().to_string()) && message.contains("`conf` is missing"),
        "{message}"
    );
}
