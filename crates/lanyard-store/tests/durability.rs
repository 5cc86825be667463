//! Data written through `SledStore` survives closing and reopening it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{NOW, after_lock_release, populate, snapshot};
use lanyard_store::{Datastore, SledStore, StoreError};

#[test]
fn everything_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let written = populate(&path, 5);

    for _ in 0..2 {
        let store = after_lock_release(|| SledStore::open(&path)).unwrap();
        assert_eq!(
            snapshot(&store),
            written,
            "a reopened store must hold what was written"
        );

        // The used token's tombstone, the entry index and the CRL number are durable too.
        assert!(matches!(
            store.consume_join_token("used", NOW),
            Err(StoreError::TokenUsed)
        ));
        let twin = {
            let mut e = written.entries[0].clone();
            e.id = common::entry(99).id;
            e
        };
        assert!(matches!(
            store.create_entry(&twin),
            Err(StoreError::AlreadyExists { kind: "entry", .. })
        ));
        let counts = store.verify().unwrap();
        assert_eq!(counts.entries, 3);
        assert_eq!(counts.revocations, 5);
    }

    let store = after_lock_release(|| SledStore::open(&path)).unwrap();
    assert_eq!(
        store.next_crl_number().unwrap(),
        2,
        "the CRL number must continue after a restart"
    );
    drop(store);
    assert_eq!(
        after_lock_release(|| SledStore::open(&path))
            .unwrap()
            .next_crl_number()
            .unwrap(),
        3
    );
}

#[test]
fn a_new_store_is_created_in_an_absent_or_empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(store.path(), dir.path());
    assert!(store.list_entries().unwrap().is_empty());
    drop(store);

    let nested = dir.path().join("a/b/c");
    let store = SledStore::open(&nested).unwrap();
    assert_eq!(store.next_crl_number().unwrap(), 1);
    drop(store);
    // An untouched new store reopens as an existing one.
    assert_eq!(
        after_lock_release(|| SledStore::open(&nested))
            .unwrap()
            .next_crl_number()
            .unwrap(),
        2
    );
}

#[test]
fn a_store_open_elsewhere_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = SledStore::open(dir.path()).unwrap();
    match SledStore::open(dir.path()) {
        Err(StoreError::Open { reason, .. }) => {
            assert!(
                reason.contains("lock"),
                "the error must say the store is locked: {reason}"
            )
        }
        other => panic!("a second open of a store in use must fail, got {other:?}"),
    }
}

#[test]
fn usable_as_a_shared_trait_object() {
    let dir = tempfile::tempdir().unwrap();
    let store: std::sync::Arc<dyn Datastore> =
        std::sync::Arc::new(SledStore::open(dir.path()).unwrap());
    let clone = std::sync::Arc::clone(&store);
    std::thread::spawn(move || clone.next_crl_number().unwrap())
        .join()
        .unwrap();
    assert_eq!(store.next_crl_number().unwrap(), 2);
}
