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

lanyard_store::conformance_tests!(run_property);

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
