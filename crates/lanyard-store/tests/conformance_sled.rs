//! The conformance suite against `SledStore`, one test per property so a
//! failure names the property, plus the whole suite through `run_all`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};

use lanyard_store::{Datastore, SledStore, conformance};

fn run_property(property: conformance::Property) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    property(&store);
}

macro_rules! properties {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run_property(conformance::$name);
            }
        )*

        /// Every property listed in `conformance::PROPERTIES` has a test here.
        #[test]
        fn every_property_has_a_test() {
            let tested = [$(stringify!($name)),*];
            for (name, _) in conformance::PROPERTIES {
                assert!(tested.contains(name), "property {name} has no test in this file");
            }
            assert_eq!(tested.len(), conformance::PROPERTIES.len());
        }
    };
}

properties!(
    entry_crud,
    entry_uniqueness,
    not_found_errors,
    update_keeps_id,
    list_entries_order,
    agents,
    join_token_single_use,
    join_token_expired,
    join_token_not_found,
    join_token_concurrent_consumers,
    svid_records_and_prune,
    revocations_and_prune,
    crl_number_monotonic,
    ca_journal_round_trip,
    tasks,
    crl_number_raised,
    audit_head,
    issue_checks_standing,
    delete_entry_sweeps,
    agent_standing_sweeps,
    agent_renewal_cas,
    entry_update_cas_and_sweep,
    task_grants_atomic,
    revoke_one_svid,
    issuance_races_revocation,
    batch_entry_create,
    import_round_trip,
);

#[test]
fn run_all_on_fresh_sled_stores() {
    let root = tempfile::tempdir().unwrap();
    let made = AtomicUsize::new(0);
    conformance::run_all(&|| {
        let n = made.fetch_add(1, Ordering::Relaxed);
        let store = SledStore::open(&root.path().join(format!("store-{n}"))).unwrap();
        Box::new(store) as Box<dyn Datastore>
    });
    assert_eq!(
        made.load(Ordering::Relaxed),
        conformance::PROPERTIES.len(),
        "run_all must give each property a store of its own"
    );
}
