//! A large backup imports in one transaction, every record readable after,
//! and a failing record leaves nothing behind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lanyard_identity::SpiffeId;
use lanyard_store::{Datastore, Records, Revocation, StoreError, SvidRecord};
use lanyard_store_postgres::{PostgresConfig, PostgresStore};

const SVIDS: usize = 5_000;

fn svid(n: usize) -> SvidRecord {
    SvidRecord {
        serial: format!("{n:032x}"),
        spiffe_id: SpiffeId::new("spiffe://example.org/bulk").unwrap(),
        entry_id: None,
        agent_id: None,
        task_id: None,
        issued_at: 1,
        not_after: 2_000_000_000,
    }
}

fn store() -> PostgresStore {
    let url = lanyard_test_postgres::shared().create_database();
    PostgresStore::open(&PostgresConfig::new(url)).unwrap()
}

#[test]
fn thousands_of_records_import_at_once() {
    let store = store();
    let records = Records {
        svids: (0..SVIDS).map(svid).collect(),
        revocations: (0..SVIDS)
            .step_by(2)
            .map(|n| Revocation {
                serial: svid(n).serial,
                revoked_at: 1,
                not_after: 2_000_000_000,
                reason: "keyCompromise".into(),
            })
            .collect(),
        ..Records::default()
    };
    store.import(&records).unwrap();
    assert_eq!(store.list_svids().unwrap(), records.svids);
    assert_eq!(store.list_revocations().unwrap(), records.revocations);
}

#[test]
fn an_import_the_database_refuses_half_way_writes_nothing() {
    let store = store();
    let records = Records {
        svids: (0..SVIDS).map(svid).collect(),
        // PostgreSQL text cannot hold NUL: the last statement fails, after
        // every SVID was sent.
        revocations: vec![Revocation {
            serial: svid(0).serial,
            revoked_at: 1,
            not_after: 2_000_000_000,
            reason: "bad\0reason".into(),
        }],
        ..Records::default()
    };
    let e = store.import(&records).unwrap_err();
    assert!(matches!(e, StoreError::Backend(_)), "{e:?}");
    assert!(
        store.list_svids().unwrap().is_empty(),
        "a failed import left SVIDs behind"
    );
}
