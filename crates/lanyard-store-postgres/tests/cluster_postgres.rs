//! What several servers on one database rely on beyond the `Datastore`
//! trait: changes committed through one store are announced to another's
//! listener, cluster locks exclude each other across stores, and a
//! published CRL never goes backwards whichever store publishes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use lanyard_identity::{Entry, EntryId};
use lanyard_store::{Datastore, Revocation};
use lanyard_store_postgres::{Change, ClusterJob, PostgresConfig, PostgresStore};

fn two_stores() -> [PostgresStore; 2] {
    let url = lanyard_test_postgres::shared().create_database();
    let open = || PostgresStore::open(&PostgresConfig::new(url.clone())).unwrap();
    [open(), open()]
}

/// The next change other than `Listening`, waiting up to a generous deadline.
fn next_change(rx: &mut tokio::sync::mpsc::Receiver<Change>) -> Change {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match rx.try_recv() {
            Ok(Change::Listening { .. }) => {}
            Ok(change) => return change,
            Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {
                assert!(std::time::Instant::now() < deadline, "no change announced");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("listener stopped: {e}"),
        }
    }
}

fn entry(path: &str) -> Entry {
    serde_json::from_value(serde_json::json!({
        "id": EntryId::new_random().to_string(),
        "spiffe_id": format!("spiffe://td.test/{path}"),
        "parent_id": "spiffe://td.test/lanyard/agent/join_token/x",
        "selectors": ["unix:uid:1"],
        "created_at": 0,
    }))
    .unwrap_or_else(|e| panic!("entry fixture: {e}"))
}

#[test]
fn a_change_committed_by_one_store_is_announced_to_another() {
    let [one, two] = two_stores();
    let mut changes = two.listen().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Change::Listening { reconnected }) = changes.try_recv() {
            assert!(!reconnected);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never listening");
        std::thread::sleep(Duration::from_millis(10));
    }
    let e = entry("notified");
    one.create_entry(&e).unwrap();
    assert_eq!(next_change(&mut changes), Change::Entry(e.id));

    one.put_ca_journal(b"{}").unwrap();
    assert_eq!(next_change(&mut changes), Change::Ca);

    let (_, number) = one.next_crl(0).unwrap();
    one.publish_crl(number, b"crl").unwrap();
    assert_eq!(next_change(&mut changes), Change::Crl(number));
}

#[test]
fn a_cluster_lock_is_held_by_one_store_at_a_time() {
    let [one, two] = two_stores();
    let held = one.lock(ClusterJob::Ca).unwrap();
    assert!(two.try_lock(ClusterJob::Ca).unwrap().is_none());
    assert!(
        two.try_lock(ClusterJob::Tasks).unwrap().is_some(),
        "another job's lock is free"
    );
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while two.try_lock(ClusterJob::Ca).unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "lock never released");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_published_crl_never_goes_backwards() {
    let [one, two] = two_stores();
    let (_, low) = one.next_crl(0).unwrap();
    let (_, high) = two.next_crl(0).unwrap();
    assert!(high > low);
    assert_eq!(
        two.publish_crl(high, b"high").unwrap(),
        (high, b"high".to_vec())
    );
    // The lower number, signed earlier but published later, loses.
    assert_eq!(
        one.publish_crl(low, b"low").unwrap(),
        (high, b"high".to_vec())
    );
    assert_eq!(one.published_crl().unwrap(), Some((high, b"high".to_vec())));
}

#[test]
fn a_higher_crl_number_lists_every_revocation_committed_before_a_lower_one() {
    let [one, two] = two_stores();
    let revoke = |store: &PostgresStore, n: u32| {
        store
            .put_revocation(&Revocation {
                serial: format!("{n:x}"),
                revoked_at: 1,
                not_after: i64::MAX,
                reason: "keyCompromise".into(),
            })
            .unwrap();
    };
    let mut last: Option<(u64, usize)> = None;
    for n in 1..=20u32 {
        let store = if n % 2 == 0 { &one } else { &two };
        revoke(store, n);
        let (listed, number) = store.next_crl(0).unwrap();
        if let Some((prev_number, prev_len)) = last {
            assert!(number > prev_number);
            assert!(listed.len() >= prev_len);
        }
        assert_eq!(listed.len(), n as usize);
        last = Some((number, listed.len()));
    }
}
