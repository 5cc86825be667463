//! The conformance suite against `PostgresStore`, unchanged: one test per
//! property, each on a fresh database of the one cluster this test binary
//! starts, plus the whole suite through `run_all`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};

use lanyard_store::{Datastore, conformance};
use lanyard_store_postgres::{PostgresConfig, PostgresStore};

fn fresh_store() -> PostgresStore {
    let url = lanyard_test_postgres::shared().create_database();
    PostgresStore::open(&PostgresConfig::new(url)).unwrap()
}

fn run_property(property: conformance::Property) {
    property(&fresh_store());
}

lanyard_store::conformance_tests!(run_property);

#[test]
fn run_all_on_fresh_databases() {
    let made = AtomicUsize::new(0);
    conformance::run_all(&|| {
        made.fetch_add(1, Ordering::Relaxed);
        Box::new(fresh_store()) as Box<dyn Datastore>
    });
    assert_eq!(made.load(Ordering::Relaxed), conformance::PROPERTIES.len());
}
