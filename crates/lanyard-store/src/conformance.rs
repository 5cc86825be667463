//! The conformance suite every [`Datastore`] backend must pass.
//!
//! This is test-support code compiled into the library so that any backend
//! crate can run it from its own tests. Each property is a public function
//! taking a fresh, empty store; a failed property panics with a message that
//! says what the backend did wrong. [`run_all`] runs every property, each on
//! a store of its own.
//!
//! ```no_run
//! use lanyard_store::{conformance, Datastore, SledStore};
//! let root = std::env::temp_dir().join("lanyard-conformance");
//! let counter = std::sync::atomic::AtomicUsize::new(0);
//! conformance::run_all(&|| {
//!     let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
//!     let store = SledStore::open(&root.join(n.to_string())).unwrap();
//!     Box::new(store) as Box<dyn Datastore>
//! });
//! ```

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::Barrier;

use lanyard_identity::{Entry, EntryId, Selector, SpiffeId};

use crate::{
    AgentRecord, AgentStanding, Datastore, IssueBatch, IssueItem, JoinTokenRecord, Refusal,
    Revocation, StoreError, SvidRecord, Sweep, TaskRecord, TaskState, TaskTransition,
};

/// A property of the suite: a function that checks one behaviour on a
/// fresh, empty store.
pub type Property = fn(&dyn Datastore);

/// Every property with its name, in the order [`run_all`] runs them.
pub const PROPERTIES: &[(&str, Property)] = &[
    ("entry_crud", entry_crud),
    ("entry_uniqueness", entry_uniqueness),
    ("not_found_errors", not_found_errors),
    ("update_keeps_id", update_keeps_id),
    ("list_entries_order", list_entries_order),
    ("agents", agents),
    ("join_token_single_use", join_token_single_use),
    ("join_token_expired", join_token_expired),
    ("join_token_not_found", join_token_not_found),
    (
        "join_token_concurrent_consumers",
        join_token_concurrent_consumers,
    ),
    ("svid_records_and_prune", svid_records_and_prune),
    ("revocations_and_prune", revocations_and_prune),
    ("crl_number_monotonic", crl_number_monotonic),
    ("ca_journal_round_trip", ca_journal_round_trip),
    ("tasks", tasks),
    ("crl_number_raised", crl_number_raised),
    ("audit_head", audit_head),
    ("issue_checks_standing", issue_checks_standing),
    ("delete_entry_sweeps", delete_entry_sweeps),
    ("agent_standing_sweeps", agent_standing_sweeps),
    ("agent_renewal_cas", agent_renewal_cas),
    ("entry_update_cas_and_sweep", entry_update_cas_and_sweep),
    ("task_grants_atomic", task_grants_atomic),
    ("revoke_one_svid", revoke_one_svid),
    ("issuance_races_revocation", issuance_races_revocation),
    ("batch_entry_create", batch_entry_create),
    ("import_round_trip", import_round_trip),
];

/// Generates, in a backend's test file, one `#[test]` per property (so a
/// failure names it), each calling `$run(property)` with the property to
/// run on a fresh store, and a test that every property in [`PROPERTIES`]
/// has one.
///
/// ```no_run
/// use lanyard_store::{SledStore, conformance::Property};
///
/// fn run_property(property: Property) {
///     let dir = tempfile::tempdir().unwrap();
///     property(&SledStore::open(dir.path()).unwrap());
/// }
/// lanyard_store::conformance_tests!(run_property);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($run:expr) => {
        $crate::conformance_tests!(@each $run;
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
    };
    (@each $run:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                ($run)($crate::conformance::$name);
            }
        )*

        /// Every property listed in `conformance::PROPERTIES` has a test here.
        #[test]
        fn every_property_has_a_test() {
            let tested = [$(stringify!($name)),*];
            for (name, _) in $crate::conformance::PROPERTIES {
                assert!(tested.contains(name), "property {name} has no test in this file");
            }
            assert_eq!(tested.len(), $crate::conformance::PROPERTIES.len());
        }
    };
}

/// A fixed "now" for the properties; no property reads the clock.
const NOW: i64 = 1_700_000_000;

/// Runs every property in [`PROPERTIES`], each on a new store from `make`.
///
/// Panics at the first property the backend fails, naming it.
pub fn run_all(make: &dyn Fn() -> Box<dyn Datastore>) {
    for (name, property) in PROPERTIES {
        let store = make();
        tracing::debug!(property = name, "running conformance property");
        property(store.as_ref());
    }
}

// === helpers ===

fn ok<T>(what: &str, result: Result<T, StoreError>) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("{what}: expected success, got error: {e}"),
    }
}

fn err<T: Debug>(what: &str, result: Result<T, StoreError>) -> StoreError {
    match result {
        Ok(value) => panic!("{what}: expected an error, got Ok({value:?})"),
        Err(e) => e,
    }
}

fn spiffe_id(s: &str) -> SpiffeId {
    match SpiffeId::new(s) {
        Ok(id) => id,
        Err(e) => panic!("conformance fixture {s:?} is not a SPIFFE ID: {e}"),
    }
}

fn selector(s: &str) -> Selector {
    match s.parse::<Selector>() {
        Ok(sel) => sel,
        Err(e) => panic!("conformance fixture {s:?} is not a selector: {e}"),
    }
}

fn new_entry_id() -> EntryId {
    EntryId(uuid::Uuid::new_v4())
}

fn entry(path: &str, selectors: &[&str], created_at: i64) -> Entry {
    Entry {
        id: new_entry_id(),
        spiffe_id: spiffe_id(&format!("spiffe://example.org{path}")),
        parent_id: spiffe_id("spiffe://example.org/lanyard/agent/join_token/node1"),
        selectors: selectors.iter().map(|s| selector(s)).collect(),
        x509_svid_ttl_secs: Some(600),
        jwt_svid_ttl_secs: Some(120),
        dns_names: vec!["api.example.org".to_owned()],
        expires_at: None,
        hint: "conformance".to_owned(),
        revision: 0,
        created_at,
    }
}

fn agent(id: &str, serial: &str) -> AgentRecord {
    AgentRecord {
        spiffe_id: spiffe_id(&format!(
            "spiffe://example.org/lanyard/agent/join_token/{id}"
        )),
        attestation_type: "join_token".to_owned(),
        selectors: vec![selector(&format!("join_token:id:{id}"))],
        serial: serial.to_owned(),
        expires_at: NOW + 3600,
        attested_at: NOW,
        banned: false,
        evicted: false,
        revision: 0,
    }
}

fn token(token_id: &str, expires_at: i64) -> JoinTokenRecord {
    JoinTokenRecord {
        token_id: token_id.to_owned(),
        expires_at,
        created_at: NOW - 60,
        spiffe_id: None,
    }
}

fn svid(serial: &str, not_after: i64) -> SvidRecord {
    SvidRecord {
        serial: serial.to_owned(),
        spiffe_id: spiffe_id("spiffe://example.org/billing/api"),
        entry_id: Some(new_entry_id()),
        agent_id: Some(spiffe_id(
            "spiffe://example.org/lanyard/agent/join_token/node1",
        )),
        task_id: None,
        issued_at: not_after - 600,
        not_after,
    }
}

fn revocation(serial: &str, not_after: i64) -> Revocation {
    Revocation {
        serial: serial.to_owned(),
        revoked_at: NOW,
        not_after,
        reason: "entry deleted".to_owned(),
    }
}

fn assert_already_exists(what: &str, e: &StoreError, expected_kind: &str) {
    match e {
        StoreError::AlreadyExists { kind, .. } if *kind == expected_kind => {}
        other => panic!("{what}: expected AlreadyExists for {expected_kind}, got {other:?}"),
    }
}

fn assert_not_found(what: &str, e: &StoreError, expected_kind: &str, expected_key: &str) {
    match e {
        StoreError::NotFound { kind, key } if *kind == expected_kind && key == expected_key => {}
        other => {
            panic!("{what}: expected NotFound for {expected_kind} {expected_key:?}, got {other:?}")
        }
    }
}

fn entry_key(id: &EntryId) -> String {
    id.0.hyphenated().to_string()
}

// === properties ===

/// An entry reads back exactly as created, updates replace it, and delete
/// returns it and removes it.
pub fn entry_crud(store: &dyn Datastore) {
    assert!(
        ok("list_entries on an empty store", store.list_entries()).is_empty(),
        "a new store must have no entries"
    );
    let created = entry("/billing/api", &["unix:uid:1000", "unix:gid:1000"], NOW);
    ok("create_entry", store.create_entry(&created));
    assert_eq!(
        ok("get_entry", store.get_entry(&created.id)),
        Some(created.clone()),
        "get_entry must return the entry exactly as created"
    );
    assert_eq!(
        ok("list_entries", store.list_entries()),
        vec![created.clone()]
    );

    let mut updated = created.clone();
    updated.selectors.push(selector("unix:user:billing"));
    updated.hint = "updated".to_owned();
    let (stored, revoked) = ok("update_entry", store.update_entry(&updated, &sweep()));
    updated.revision = 1;
    assert_eq!(stored, updated, "update_entry must store the next revision");
    assert!(revoked.is_empty(), "an entry without SVIDs revokes nothing");
    assert_eq!(
        ok("get_entry after update", store.get_entry(&created.id)),
        Some(updated.clone()),
        "get_entry must return the entry exactly as updated"
    );

    let (deleted, _) = ok("delete_entry", store.delete_entry(&created.id, &sweep()));
    assert_eq!(
        deleted, updated,
        "delete_entry must return the deleted entry"
    );
    assert_eq!(
        ok("get_entry after delete", store.get_entry(&created.id)),
        None,
        "a deleted entry must be gone"
    );
    assert!(ok("list_entries after delete", store.list_entries()).is_empty());
}

/// No two entries share an ID, or a (SPIFFE ID, parent ID, selector set);
/// selector order and duplicates do not make an entry different.
pub fn entry_uniqueness(store: &dyn Datastore) {
    let first = entry("/billing/api", &["unix:uid:1000", "unix:gid:1000"], NOW);
    ok("create first entry", store.create_entry(&first));

    let mut same_id = entry("/other", &["unix:uid:1"], NOW);
    same_id.id = first.id;
    let e = err("create with an existing ID", store.create_entry(&same_id));
    assert_already_exists("create with an existing ID", &e, "entry");

    let mut reordered = entry(
        "/billing/api",
        &["unix:gid:1000", "unix:uid:1000", "unix:uid:1000"],
        NOW,
    );
    reordered.hint = "different hint, same identity".to_owned();
    let e = err(
        "create with the same spiffe_id, parent_id and selector set in another order",
        store.create_entry(&reordered),
    );
    assert_already_exists("create duplicate selector set", &e, "entry");

    let narrower = entry("/billing/api", &["unix:uid:1000"], NOW);
    ok(
        "create with a different selector set",
        store.create_entry(&narrower),
    );
    let mut other_parent = entry("/billing/api", &["unix:uid:1000", "unix:gid:1000"], NOW);
    other_parent.parent_id = spiffe_id("spiffe://example.org/lanyard/agent/join_token/node2");
    ok(
        "create with a different parent_id",
        store.create_entry(&other_parent),
    );
    let other_id = entry("/billing/worker", &["unix:uid:1000", "unix:gid:1000"], NOW);
    ok(
        "create with a different spiffe_id",
        store.create_entry(&other_id),
    );

    // Updating into another entry's identity is refused and changes nothing.
    let mut collide = narrower.clone();
    collide.selectors = first.selectors.clone();
    let e = err(
        "update into another entry's selector set",
        store.update_entry(&collide, &sweep()),
    );
    assert_already_exists("update into another entry's selector set", &e, "entry");
    assert_eq!(
        ok(
            "get_entry after refused update",
            store.get_entry(&narrower.id)
        ),
        Some(narrower.clone()),
        "a refused update must leave the entry unchanged"
    );

    // Updating an entry without changing its identity is not a collision.
    let mut same_identity = first.clone();
    same_identity.selectors.reverse();
    same_identity.x509_svid_ttl_secs = Some(60);
    ok(
        "update keeping the same spiffe_id, parent_id and selector set",
        store.update_entry(&same_identity, &sweep()),
    );

    // Once an entry is deleted, or moved away by an update, its identity is free.
    ok(
        "delete first entry",
        store.delete_entry(&first.id, &sweep()),
    );
    let again = entry("/billing/api", &["unix:uid:1000", "unix:gid:1000"], NOW);
    ok(
        "create an entry whose twin was deleted",
        store.create_entry(&again),
    );
    let mut moved = narrower.clone();
    moved.selectors = vec![selector("unix:uid:2000")];
    ok(
        "update to a free selector set",
        store.update_entry(&moved, &sweep()),
    );
    let reuse = entry("/billing/api", &["unix:uid:1000"], NOW);
    ok(
        "create with the selector set an update released",
        store.create_entry(&reuse),
    );
    assert_eq!(ok("list_entries", store.list_entries()).len(), 5);
}

/// Reads of absent records return `None`; updates, deletes and consumes of
/// absent records fail with `NotFound` naming the kind and key.
pub fn not_found_errors(store: &dyn Datastore) {
    let missing = entry("/nowhere", &["unix:uid:1"], NOW);
    assert_eq!(
        ok("get_entry of unknown id", store.get_entry(&missing.id)),
        None
    );
    let key = entry_key(&missing.id);
    let e = err(
        "update_entry of unknown id",
        store.update_entry(&missing, &sweep()),
    );
    assert_not_found("update_entry of unknown id", &e, "entry", &key);
    let e = err(
        "delete_entry of unknown id",
        store.delete_entry(&missing.id, &sweep()),
    );
    assert_not_found("delete_entry of unknown id", &e, "entry", &key);

    let unknown_agent = spiffe_id("spiffe://example.org/lanyard/agent/join_token/none");
    assert_eq!(
        ok("get_agent of unknown id", store.get_agent(&unknown_agent)),
        None
    );
    assert_eq!(
        ok("get_svid of unknown serial", store.get_svid("00ff")),
        None
    );
    assert_eq!(
        ok("get_ca_journal on a new store", store.get_ca_journal()),
        None
    );

    let e = err(
        "consume_join_token of unknown token",
        store.consume_join_token("deadbeef", NOW),
    );
    assert_not_found(
        "consume_join_token of unknown token",
        &e,
        "join token",
        "deadbeef",
    );

    // A deleted entry is NotFound afterwards too.
    let created = entry("/billing/api", &["unix:uid:1000"], NOW);
    ok("create_entry", store.create_entry(&created));
    ok("delete_entry", store.delete_entry(&created.id, &sweep()));
    let e = err(
        "second delete_entry",
        store.delete_entry(&created.id, &sweep()),
    );
    assert_not_found("second delete_entry", &e, "entry", &entry_key(&created.id));
}

/// An update keeps the entry's ID: it replaces the record under that ID and
/// adds none.
pub fn update_keeps_id(store: &dyn Datastore) {
    let created = entry("/billing/api", &["unix:uid:1000"], NOW);
    ok("create_entry", store.create_entry(&created));
    let mut updated = created.clone();
    updated.spiffe_id = spiffe_id("spiffe://example.org/billing/api-v2");
    updated.selectors = vec![selector("unix:uid:1001")];
    ok("update_entry", store.update_entry(&updated, &sweep()));
    updated.revision = created.revision + 1;

    let listed = ok("list_entries", store.list_entries());
    assert_eq!(listed.len(), 1, "an update must not add an entry");
    assert_eq!(
        listed[0].id, created.id,
        "an update must keep the entry's ID"
    );
    assert_eq!(
        listed[0], updated,
        "the stored entry must be the updated one"
    );
}

/// `list_entries` is ordered by `created_at`, then by ID, whatever the
/// insertion order.
pub fn list_entries_order(store: &dyn Datastore) {
    let mut entries = vec![
        entry("/c", &["unix:uid:3"], NOW + 20),
        entry("/a", &["unix:uid:1"], NOW),
        entry("/b1", &["unix:uid:2"], NOW + 10),
        entry("/b2", &["unix:uid:22"], NOW + 10),
        entry("/b3", &["unix:uid:222"], NOW + 10),
        entry("/z", &["unix:uid:0"], NOW - 100),
    ];
    for e in &entries {
        ok("create_entry", store.create_entry(e));
    }
    entries.sort_by_key(|e| (e.created_at, e.id));
    assert_eq!(
        ok("list_entries", store.list_entries()),
        entries,
        "list_entries must be ordered by created_at, then by ID"
    );
}

/// Agents are stored by SPIFFE ID and listed in SPIFFE ID order; a put
/// never overwrites (only the atomic operations change an agent).
pub fn agents(store: &dyn Datastore) {
    assert!(ok("list_agents on a new store", store.list_agents()).is_empty());
    let b = agent("node-b", "0b");
    let a = agent("node-a", "0a");
    ok("put_agent b", store.put_agent(&b));
    ok("put_agent a", store.put_agent(&a));
    assert_eq!(
        ok("get_agent a", store.get_agent(&a.spiffe_id)),
        Some(a.clone())
    );
    assert_eq!(
        ok("list_agents", store.list_agents()),
        vec![a.clone(), b.clone()],
        "list_agents must be ordered by SPIFFE ID"
    );
    let mut banned = b.clone();
    banned.banned = true;
    let e = err("put_agent over an existing agent", store.put_agent(&banned));
    assert_already_exists("put_agent over an existing agent", &e, "agent");
    assert_eq!(
        ok(
            "get_agent b after refused put",
            store.get_agent(&b.spiffe_id)
        ),
        Some(b.clone()),
        "a refused put must change nothing"
    );
}

/// A join token is consumed once: the first consume returns it, every later
/// one says `TokenUsed`. Token IDs are unique.
pub fn join_token_single_use(store: &dyn Datastore) {
    let mut t = token("0123456789abcdef0123456789abcdef", NOW + 600);
    t.spiffe_id = Some(spiffe_id("spiffe://example.org/lanyard/agent/custom"));
    ok("create_join_token", store.create_join_token(&t));
    let e = err("create_join_token twice", store.create_join_token(&t));
    assert_already_exists("create_join_token twice", &e, "join token");

    assert_eq!(
        ok("first consume", store.consume_join_token(&t.token_id, NOW)),
        t,
        "consume must return the token as created"
    );
    for attempt in 0..2 {
        match store.consume_join_token(&t.token_id, NOW + attempt) {
            Err(StoreError::TokenUsed) => {}
            other => panic!("consume of a used token must be TokenUsed, got {other:?}"),
        }
    }
    // Even after it would have expired, a used token reports that it was used.
    match store.consume_join_token(&t.token_id, NOW + 10_000) {
        Err(StoreError::TokenUsed) => {}
        other => panic!("consume of a used, expired token must be TokenUsed, got {other:?}"),
    }
    let e = err(
        "create_join_token reusing a used token's ID",
        store.create_join_token(&t),
    );
    assert_already_exists("create_join_token reusing a used ID", &e, "join token");
}

/// A token presented at or after `expires_at` is refused with
/// `TokenExpired` carrying that time, and is not consumed by the attempt.
pub fn join_token_expired(store: &dyn Datastore) {
    let t = token("expiring", NOW + 10);
    ok("create_join_token", store.create_join_token(&t));
    for now in [NOW + 10, NOW + 11, NOW + 100_000] {
        match store.consume_join_token(&t.token_id, now) {
            Err(StoreError::TokenExpired { expired_at }) => assert_eq!(
                expired_at, t.expires_at,
                "TokenExpired must carry the token's expires_at"
            ),
            other => panic!(
                "consume at {now} of a token expiring at {} must be TokenExpired, got {other:?}",
                t.expires_at
            ),
        }
    }
    // A token still valid one second before expiry is accepted.
    let fresh = token("fresh", NOW + 10);
    ok("create_join_token", store.create_join_token(&fresh));
    ok(
        "consume one second before expiry",
        store.consume_join_token(&fresh.token_id, NOW + 9),
    );
}

/// Consuming a token that was never created is `NotFound`, and does not
/// create it.
pub fn join_token_not_found(store: &dyn Datastore) {
    for _ in 0..2 {
        let e = err(
            "consume unknown token",
            store.consume_join_token("unknown", NOW),
        );
        assert_not_found("consume unknown token", &e, "join token", "unknown");
    }
    let t = token("known", NOW + 600);
    ok("create_join_token", store.create_join_token(&t));
    let e = err(
        "consume a token ID differing in case",
        store.consume_join_token("KNOWN", NOW),
    );
    assert_not_found(
        "consume a token ID differing in case",
        &e,
        "join token",
        "KNOWN",
    );
    ok(
        "consume the known token",
        store.consume_join_token("known", NOW),
    );
}

/// Of 50 threads consuming one token at once, exactly one gets `Ok`; the
/// others get `TokenUsed`.
pub fn join_token_concurrent_consumers(store: &dyn Datastore) {
    const CALLERS: usize = 50;
    let t = token("contended", NOW + 600);
    ok("create_join_token", store.create_join_token(&t));
    let barrier = Barrier::new(CALLERS);
    let results: Vec<Result<JoinTokenRecord, StoreError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..CALLERS)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    store.consume_join_token(&t.token_id, NOW)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(result) => result,
                Err(_) => panic!("a consuming thread panicked"),
            })
            .collect()
    });
    let winners = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(
        winners, 1,
        "exactly one of {CALLERS} concurrent consumers must succeed, {winners} did"
    );
    for result in &results {
        match result {
            Ok(record) => assert_eq!(record, &t, "the winner must get the token record"),
            Err(StoreError::TokenUsed) => {}
            Err(other) => panic!("a losing consumer must get TokenUsed, got {other:?}"),
        }
    }
}

/// SVID records read back, a serial cannot be reused for a different
/// record (the identical one is idempotent), and pruning removes exactly
/// those expired before the cut-off.
pub fn svid_records_and_prune(store: &dyn Datastore) {
    assert!(ok("list_svids on a new store", store.list_svids()).is_empty());
    let old = svid("01", NOW - 10);
    let boundary = svid("02", NOW);
    let live = svid("0a", NOW + 3600);
    let mut server_own = svid("ff", NOW + 7200);
    server_own.entry_id = None;
    server_own.agent_id = None;
    for s in [&live, &old, &server_own, &boundary] {
        ok("record_svid", store.record_svid(s));
    }
    assert_eq!(ok("get_svid", store.get_svid("0a")), Some(live.clone()));
    assert_eq!(
        ok("get_svid server", store.get_svid("ff")),
        Some(server_own.clone())
    );
    assert_eq!(
        ok("list_svids", store.list_svids()),
        vec![
            old.clone(),
            boundary.clone(),
            live.clone(),
            server_own.clone()
        ],
        "list_svids must be ordered by serial"
    );

    ok("record the identical svid again", store.record_svid(&live));
    let mut conflicting = live.clone();
    conflicting.spiffe_id = spiffe_id("spiffe://example.org/other");
    let e = err(
        "record a different svid under a used serial",
        store.record_svid(&conflicting),
    );
    assert_already_exists("record a different svid under a used serial", &e, "svid");
    assert_eq!(
        ok("get_svid after refused record", store.get_svid("0a")),
        Some(live.clone())
    );

    assert_eq!(
        ok("prune_svids", store.prune_svids(NOW)),
        1,
        "only SVIDs with not_after before the cut-off are pruned"
    );
    assert_eq!(ok("get_svid pruned", store.get_svid("01")), None);
    assert_eq!(
        ok("list_svids after prune", store.list_svids()),
        vec![boundary, live, server_own]
    );
    assert_eq!(ok("prune_svids again", store.prune_svids(NOW)), 0);
    assert_eq!(ok("prune_svids everything", store.prune_svids(i64::MAX)), 3);
    assert!(ok("list_svids after full prune", store.list_svids()).is_empty());
}

/// Revocations are listed, replaced by serial, and pruned once their
/// certificate has expired.
pub fn revocations_and_prune(store: &dyn Datastore) {
    assert!(ok("list_revocations on a new store", store.list_revocations()).is_empty());
    let expired = revocation("0001", NOW - 1);
    let live = revocation("00aa", NOW + 3600);
    ok("put_revocation", store.put_revocation(&live));
    ok("put_revocation", store.put_revocation(&expired));
    assert_eq!(
        ok("list_revocations", store.list_revocations()),
        vec![expired.clone(), live.clone()],
        "list_revocations must be ordered by serial"
    );

    let mut again = live.clone();
    again.reason = "task completed".to_owned();
    ok("put_revocation replacing", store.put_revocation(&again));
    assert_eq!(
        ok("list_revocations after replace", store.list_revocations()),
        vec![expired, again.clone()],
        "put_revocation must replace the revocation of the same serial"
    );

    assert_eq!(ok("prune_revocations", store.prune_revocations(NOW)), 1);
    assert_eq!(
        ok("list_revocations after prune", store.list_revocations()),
        vec![again]
    );
    assert_eq!(
        ok("prune_revocations again", store.prune_revocations(NOW)),
        0
    );
}

/// CRL numbers start at 1 and strictly increase, also across concurrent
/// callers (no number is handed out twice).
pub fn crl_number_monotonic(store: &dyn Datastore) {
    let mut last = 0;
    for expected in 1..=5 {
        let n = ok("next_crl_number", store.next_crl_number());
        assert_eq!(
            n, expected,
            "CRL numbers must start at 1 and count up by one"
        );
        last = n;
    }
    const THREADS: usize = 4;
    const EACH: usize = 10;
    let numbers: Vec<u64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::with_capacity(EACH);
                    for _ in 0..EACH {
                        let n = ok("concurrent next_crl_number", store.next_crl_number());
                        if let Some(prev) = mine.last() {
                            assert!(
                                n > *prev,
                                "a caller's CRL numbers must increase: {prev} then {n}"
                            );
                        }
                        mine.push(n);
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(numbers) => numbers,
                Err(_) => panic!("a CRL numbering thread panicked"),
            })
            .collect()
    });
    let distinct: BTreeSet<u64> = numbers.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        THREADS * EACH,
        "concurrent callers must never get the same CRL number"
    );
    assert_eq!(distinct.first().copied(), Some(last + 1));
    assert_eq!(
        distinct.last().copied(),
        Some(last + (THREADS * EACH) as u64)
    );
    assert_eq!(
        ok("next_crl_number after concurrency", store.next_crl_number()),
        last + (THREADS * EACH) as u64 + 1
    );
}

/// The CA journal is absent on a new store, reads back byte for byte, and
/// is replaced by a later put.
pub fn ca_journal_round_trip(store: &dyn Datastore) {
    assert_eq!(
        ok("get_ca_journal on a new store", store.get_ca_journal()),
        None
    );
    let first: Vec<u8> = (0..=255u8).collect();
    ok("put_ca_journal", store.put_ca_journal(&first));
    assert_eq!(ok("get_ca_journal", store.get_ca_journal()), Some(first));
    let second = b"{\"active\":\"ca-2\"}".to_vec();
    ok("put_ca_journal replacing", store.put_ca_journal(&second));
    assert_eq!(
        ok("get_ca_journal after replace", store.get_ca_journal()),
        Some(second)
    );
    ok("put_ca_journal empty", store.put_ca_journal(&[]));
    assert_eq!(
        ok("get_ca_journal empty", store.get_ca_journal()),
        Some(Vec::new()),
        "an empty journal is still a journal"
    );
}

/// Tasks: put replaces by ID, get and list (ordered by ID) return exactly
/// what was stored.
pub fn tasks(store: &dyn Datastore) {
    assert!(ok("list_tasks on a new store", store.list_tasks()).is_empty());
    assert_eq!(ok("get_task unknown", store.get_task("task-00")), None);
    let task = |id: &str| TaskRecord {
        id: id.to_owned(),
        ticket: "CHG-1".to_owned(),
        purpose: "rotate disks".to_owned(),
        spiffe_id: spiffe_id("spiffe://example.org/maint"),
        parent_id: spiffe_id("spiffe://example.org/lanyard/agent/join_token/n1"),
        selectors: vec![selector("unix:uid:1000")],
        dns_names: vec![],
        audiences: vec![spiffe_id("spiffe://example.org/db")],
        starts_at: NOW,
        ends_at: NOW + 900,
        state: TaskState::Requested,
        history: vec![TaskTransition {
            state: TaskState::Requested,
            at: NOW,
            principal: "uid:1000(alice)".to_owned(),
            note: None,
        }],
        entry_id: None,
        break_glass: false,
        reviewed: None,
        // Policy fields round-trip like the rest.
        approvals_required: 2,
        approver_groups: vec!["change-board".to_owned()],
        approvals: vec![TaskTransition {
            state: TaskState::Requested,
            at: NOW,
            principal: "uid:1001(bob)".to_owned(),
            note: Some("ok".to_owned()),
        }],
        policy_sha256: "ab".repeat(32),
        policy_rule: "production".to_owned(),
    };
    let b = task("task-bb");
    let a = task("task-aa");
    ok("put_task b", store.put_task(&b));
    ok("put_task a", store.put_task(&a));
    assert_eq!(ok("get_task a", store.get_task("task-aa")), Some(a.clone()));
    let mut approved = b.clone();
    approved.state = TaskState::Approved;
    approved.history.push(TaskTransition {
        state: TaskState::Approved,
        at: NOW + 1,
        principal: "uid:1001(bob)".to_owned(),
        note: Some("ok".to_owned()),
    });
    approved.entry_id = Some(new_entry_id());
    ok("put_task replacing b", store.put_task(&approved));
    assert_eq!(
        ok("list_tasks", store.list_tasks()),
        vec![a, approved],
        "list_tasks must be ordered by ID and reflect the replacement"
    );
}

/// The audit head round-trips and is replaced by the latest put.
pub fn audit_head(store: &dyn Datastore) {
    assert_eq!(
        ok("get_audit_head on a new store", store.get_audit_head()),
        None
    );
    ok("put_audit_head 1", store.put_audit_head(1, "aa"));
    ok("put_audit_head 2", store.put_audit_head(2, "bb"));
    assert_eq!(
        ok("get_audit_head", store.get_audit_head()),
        Some((2, "bb".to_owned()))
    );
}

/// Raising the CRL counter (backup restore) moves it forward, never back.
pub fn crl_number_raised(store: &dyn Datastore) {
    assert_eq!(ok("next_crl_number", store.next_crl_number()), 1);
    ok("raise_crl_number to 40", store.raise_crl_number(40));
    assert_eq!(
        ok("next_crl_number after raise", store.next_crl_number()),
        41
    );
    ok("raise_crl_number to 5", store.raise_crl_number(5));
    assert_eq!(
        ok(
            "next_crl_number after a lower raise",
            store.next_crl_number()
        ),
        42,
        "raise_crl_number must never lower the counter"
    );
}

// === issuance against revocation ===

const AGENT: &str = "spiffe://example.org/lanyard/agent/join_token/node1";
const SERVER: &str = "spiffe://example.org/lanyard/server";

fn sweep() -> Sweep {
    Sweep {
        revoked_at: NOW,
        reason: "cessationOfOperation".to_owned(),
    }
}

/// Attests the agent `node1` with SVID serial `a0` and returns it.
fn attested(store: &dyn Datastore) -> AgentRecord {
    let record = agent("node1", "a0");
    let mut own = svid("a0", NOW + 3600);
    own.spiffe_id = record.spiffe_id.clone();
    own.entry_id = None;
    ok("attest_agent", store.attest_agent(&record, &own))
}

fn item(entry: &Entry, serial: &str, not_after: i64) -> IssueItem {
    IssueItem {
        entry_id: entry.id,
        entry_revision: entry.revision,
        serial: serial.to_owned(),
        spiffe_id: entry.spiffe_id.clone(),
        not_after,
    }
}

fn batch(agent_serial: &str, items: Vec<IssueItem>) -> IssueBatch {
    IssueBatch {
        agent_id: spiffe_id(AGENT),
        agent_serial: agent_serial.to_owned(),
        server_id: spiffe_id(SERVER),
        items,
    }
}

/// Issues one item as `node1` (current serial `a0`) and returns its result.
fn issue_one(store: &dyn Datastore, item: IssueItem) -> Result<Option<String>, Refusal> {
    let mut results = ok(
        "issue_svids",
        store.issue_svids(&[batch("a0", vec![item])], NOW),
    );
    assert_eq!(results.len(), 1, "one result list per batch");
    assert_eq!(results[0].len(), 1, "one result per item");
    results.remove(0).remove(0).map(|issued| issued.task_id)
}

fn revoked_serials(store: &dyn Datastore) -> BTreeSet<String> {
    ok("list_revocations", store.list_revocations())
        .into_iter()
        .map(|r| r.serial)
        .collect()
}

/// `issue_svids` records an accepted item with its entry and agent, and
/// refuses (recording nothing) what the agent, entry or serial forbid.
pub fn issue_checks_standing(store: &dyn Datastore) {
    let node = attested(store);
    assert_eq!(node.revision, 1, "a first attestation stores revision 1");
    let direct = entry("/direct", &["unix:uid:1"], NOW);
    ok("create direct entry", store.create_entry(&direct));
    assert_eq!(issue_one(store, item(&direct, "01", NOW + 600)), Ok(None));
    let Some(recorded) = ok("get_svid 01", store.get_svid("01")) else {
        panic!("an accepted serial must be recorded");
    };
    assert_eq!(recorded.entry_id, Some(direct.id));
    assert_eq!(recorded.agent_id, Some(spiffe_id(AGENT)));
    assert_eq!((recorded.issued_at, recorded.not_after), (NOW, NOW + 600));

    let mut stale = item(&direct, "02", NOW + 600);
    stale.entry_revision = 7;
    assert!(matches!(
        issue_one(store, stale),
        Err(Refusal::EntryChanged {
            expected: 7,
            found: 0,
            ..
        })
    ));
    let ghost = entry("/ghost", &["unix:uid:9"], NOW);
    assert!(matches!(
        issue_one(store, item(&ghost, "03", NOW + 600)),
        Err(Refusal::EntryNotFound { .. })
    ));
    let mut foreign = entry("/foreign", &["unix:uid:1"], NOW);
    foreign.parent_id = spiffe_id("spiffe://example.org/lanyard/agent/join_token/other");
    ok("create foreign entry", store.create_entry(&foreign));
    assert!(matches!(
        issue_one(store, item(&foreign, "04", NOW + 600)),
        Err(Refusal::NotAuthorized { .. })
    ));
    let mut expired = entry("/expired", &["unix:uid:1"], NOW);
    expired.expires_at = Some(NOW);
    ok("create expired entry", store.create_entry(&expired));
    assert!(matches!(
        issue_one(store, item(&expired, "05", NOW + 600)),
        Err(Refusal::EntryExpired { .. })
    ));
    assert_eq!(
        issue_one(store, item(&direct, "01", NOW + 600)),
        Err(Refusal::SerialTaken {
            serial: "01".to_owned()
        })
    );

    // Node aliasing: an entry parented to the server whose selectors the
    // agent has makes entries parented to the alias the agent's.
    let mut alias = entry("/node/web", &["join_token:id:node1"], NOW);
    alias.parent_id = spiffe_id(SERVER);
    ok("create alias", store.create_entry(&alias));
    let mut via_alias = entry("/via-alias", &["unix:uid:2"], NOW);
    via_alias.parent_id = alias.spiffe_id.clone();
    ok("create entry under alias", store.create_entry(&via_alias));
    assert_eq!(
        issue_one(store, item(&via_alias, "06", NOW + 600)),
        Ok(None)
    );
    assert!(
        matches!(
            issue_one(store, item(&alias, "07", NOW + 600)),
            Err(Refusal::NotAuthorized { .. })
        ),
        "an alias entry itself is never issued"
    );

    let results = ok(
        "issue_svids with a superseded agent SVID",
        store.issue_svids(&[batch("99", vec![item(&direct, "08", NOW + 600)])], NOW),
    );
    assert!(matches!(
        results[0][0],
        Err(Refusal::AgentSuperseded { .. })
    ));
    let recorded: BTreeSet<String> = ok("list_svids", store.list_svids())
        .into_iter()
        .map(|s| s.serial)
        .collect();
    let expected: BTreeSet<String> = ["01", "06", "a0"].iter().map(|s| s.to_string()).collect();
    assert_eq!(recorded, expected, "refused items must record nothing");
}

/// Deleting an entry revokes every unexpired SVID recorded for it in the
/// same operation; nothing is issued for it afterwards.
pub fn delete_entry_sweeps(store: &dyn Datastore) {
    attested(store);
    let e = entry("/billing", &["unix:uid:1"], NOW);
    let other = entry("/other", &["unix:uid:2"], NOW);
    ok(
        "create entries",
        store.create_entry(&e).and(store.create_entry(&other)),
    );
    for (serial, not_after) in [("11", NOW + 600), ("12", NOW + 60), ("13", NOW)] {
        assert_eq!(issue_one(store, item(&e, serial, not_after)), Ok(None));
    }
    assert_eq!(issue_one(store, item(&other, "21", NOW + 600)), Ok(None));
    let (_, revoked) = ok("delete_entry", store.delete_entry(&e.id, &sweep()));
    let serials: BTreeSet<String> = revoked.iter().map(|r| r.serial.clone()).collect();
    let expected: BTreeSet<String> = ["11", "12"].iter().map(|s| s.to_string()).collect();
    assert_eq!(
        serials, expected,
        "every unexpired serial, and only the entry's"
    );
    assert_eq!(
        revoked_serials(store),
        expected,
        "the revocations are stored"
    );
    assert!(
        revoked
            .iter()
            .all(|r| r.revoked_at == NOW && r.reason == "cessationOfOperation")
    );
    assert!(matches!(
        issue_one(store, item(&e, "14", NOW + 600)),
        Err(Refusal::EntryNotFound { .. })
    ));
}

/// Banning or evicting an agent revokes its own SVIDs and every SVID issued
/// through it; afterwards it gets nothing, renews nothing, and a banned
/// agent cannot attest again.
pub fn agent_standing_sweeps(store: &dyn Datastore) {
    attested(store);
    let e = entry("/billing", &["unix:uid:1"], NOW);
    ok("create entry", store.create_entry(&e));
    assert_eq!(issue_one(store, item(&e, "31", NOW + 600)), Ok(None));
    let (banned, revoked) = ok(
        "ban",
        store.set_agent_standing(&spiffe_id(AGENT), AgentStanding::Banned, &sweep()),
    );
    assert!(banned.banned && banned.revision == 2);
    let serials: BTreeSet<String> = revoked.into_iter().map(|r| r.serial).collect();
    let expected: BTreeSet<String> = ["31", "a0"].iter().map(|s| s.to_string()).collect();
    assert_eq!(
        serials, expected,
        "the agent's own SVID and those issued through it"
    );
    assert!(matches!(
        issue_one(store, item(&e, "32", NOW + 600)),
        Err(Refusal::AgentBanned { .. })
    ));
    let mut renewal = svid("33", NOW + 3600);
    renewal.entry_id = None;
    let e2 = err(
        "renew a banned agent",
        store.renew_agent(&spiffe_id(AGENT), "a0", &renewal),
    );
    assert!(
        matches!(e2, StoreError::Refused(Refusal::AgentBanned { .. })),
        "{e2:?}"
    );
    let e3 = err(
        "attest a banned agent",
        store.attest_agent(&agent("node1", "34"), &renewal),
    );
    assert!(
        matches!(e3, StoreError::Refused(Refusal::AgentBanned { .. })),
        "{e3:?}"
    );
    assert_eq!(
        ok("get_svid 33", store.get_svid("33")),
        None,
        "refused: nothing recorded"
    );

    let other = agent("node2", "b0");
    let mut own = svid("b0", NOW + 3600);
    own.agent_id = Some(other.spiffe_id.clone());
    ok("attest node2", store.attest_agent(&other, &own));
    let (evicted, revoked) = ok(
        "evict",
        store.set_agent_standing(&other.spiffe_id, AgentStanding::Evicted, &sweep()),
    );
    assert!(evicted.evicted && !evicted.banned);
    assert_eq!(revoked.len(), 1);
    let mut again = svid("b1", NOW + 3600);
    again.agent_id = Some(other.spiffe_id.clone());
    let back = ok(
        "an evicted agent may attest again",
        store.attest_agent(&other, &again),
    );
    assert!(!back.evicted && back.revision == 3 && back.serial == "b0");
}

/// A renewal is recorded only with the agent's current serial, and makes
/// the new SVID current.
pub fn agent_renewal_cas(store: &dyn Datastore) {
    attested(store);
    let mut next = svid("a1", NOW + 7200);
    next.entry_id = None;
    let renewed = ok("renew", store.renew_agent(&spiffe_id(AGENT), "a0", &next));
    assert_eq!(
        (
            renewed.serial.as_str(),
            renewed.expires_at,
            renewed.revision
        ),
        ("a1", NOW + 7200, 2)
    );
    let mut stale = svid("a2", NOW + 7200);
    stale.entry_id = None;
    let e = err(
        "renew with the old serial",
        store.renew_agent(&spiffe_id(AGENT), "a0", &stale),
    );
    assert!(
        matches!(e, StoreError::Refused(Refusal::AgentSuperseded { .. })),
        "{e:?}"
    );
    let unknown = spiffe_id("spiffe://example.org/lanyard/agent/join_token/none");
    let e = err(
        "renew an unknown agent",
        store.renew_agent(&unknown, "00", &stale),
    );
    assert!(
        matches!(e, StoreError::Refused(Refusal::AgentUnknown { .. })),
        "{e:?}"
    );
}

/// Entry updates are compare-and-swap on the revision; changing the SPIFFE
/// ID, parent or selectors revokes the entry's SVIDs, other fields do not.
pub fn entry_update_cas_and_sweep(store: &dyn Datastore) {
    attested(store);
    let e = entry("/billing", &["unix:uid:1"], NOW);
    ok("create entry", store.create_entry(&e));
    assert_eq!(issue_one(store, item(&e, "41", NOW + 600)), Ok(None));
    let mut hint = e.clone();
    hint.hint = "renamed".to_owned();
    let (stored, revoked) = ok("update hint", store.update_entry(&hint, &sweep()));
    assert!(revoked.is_empty(), "a hint change revokes nothing");
    let e2 = err(
        "update from a stale revision",
        store.update_entry(&hint, &sweep()),
    );
    assert!(
        matches!(
            e2,
            StoreError::Conflict {
                expected: 0,
                found: 1,
                ..
            }
        ),
        "{e2:?}"
    );
    let mut narrower = stored.clone();
    narrower.selectors.push(selector("unix:gid:1"));
    let (_, revoked) = ok("update selectors", store.update_entry(&narrower, &sweep()));
    assert_eq!(
        revoked.len(),
        1,
        "a selector change revokes the entry's SVIDs"
    );
    assert!(matches!(
        issue_one(store, item(&e, "42", NOW + 600)),
        Err(Refusal::EntryChanged { .. })
    ));
}

/// A task's entry is created with the task and issues task SVIDs only while
/// the task is active and within its window; ending the task removes the
/// entry and revokes its SVIDs at once.
pub fn task_grants_atomic(store: &dyn Datastore) {
    attested(store);
    let grant = entry("/maint", &["unix:uid:7"], NOW);
    let task = TaskRecord {
        id: "task-01".to_owned(),
        ticket: "CHG-7".to_owned(),
        purpose: "disks".to_owned(),
        spiffe_id: grant.spiffe_id.clone(),
        parent_id: grant.parent_id.clone(),
        selectors: grant.selectors.clone(),
        dns_names: vec![],
        audiences: vec![],
        starts_at: NOW - 10,
        ends_at: NOW + 900,
        state: TaskState::Active,
        history: vec![],
        entry_id: Some(grant.id),
        break_glass: false,
        reviewed: None,
        approvals_required: 0,
        approver_groups: vec![],
        approvals: vec![],
        policy_sha256: String::new(),
        policy_rule: String::new(),
    };
    ok("activate_task", store.activate_task(&task, &grant));
    // A restore stores the same task again with put_task: it stays linked.
    ok("put_task of the active task", store.put_task(&task));
    assert_eq!(
        ok("get_task", store.get_task("task-01")),
        Some(task.clone())
    );
    assert_eq!(
        issue_one(store, item(&grant, "51", NOW + 600)),
        Ok(Some("task-01".to_owned())),
        "a task entry's SVID is recorded with its task"
    );
    assert_eq!(
        ok("get_svid", store.get_svid("51")).and_then(|s| s.task_id),
        Some("task-01".to_owned())
    );
    assert!(matches!(
        issue_one(store, item(&grant, "52", NOW + 901)),
        Err(Refusal::OutsideTaskWindow { ends_at, .. }) if ends_at == NOW + 900
    ));
    // An entry stored with an active task (a restored backup) is the task's.
    let restored = entry("/maint-restored", &["unix:uid:8"], NOW);
    let mut restored_task = task.clone();
    restored_task.id = "task-02".to_owned();
    restored_task.entry_id = Some(restored.id);
    ok("create restored entry", store.create_entry(&restored));
    ok("put restored task", store.put_task(&restored_task));
    assert_eq!(
        issue_one(store, item(&restored, "54", NOW + 600)),
        Ok(Some("task-02".to_owned())),
        "a restored task entry must still be bound to its task"
    );
    let mut done = task.clone();
    done.state = TaskState::Completed;
    let revoked = ok("end_task", store.end_task(&done, &sweep()));
    assert_eq!(revoked.len(), 1);
    assert_eq!(ok("entry gone", store.get_entry(&grant.id)), None);
    assert_eq!(ok("task stored", store.get_task("task-01")), Some(done));
    assert!(matches!(
        issue_one(store, item(&grant, "53", NOW + 600)),
        Err(Refusal::EntryNotFound { .. })
    ));
}

/// `revoke_svid` revokes a recorded serial once.
pub fn revoke_one_svid(store: &dyn Datastore) {
    ok("record", store.record_svid(&svid("61", NOW + 600)));
    ok("record expired", store.record_svid(&svid("62", NOW)));
    let first = ok("revoke", store.revoke_svid("61", &sweep()));
    assert_eq!(
        first.map(|r| (r.serial, r.not_after)),
        Some(("61".to_owned(), NOW + 600))
    );
    assert_eq!(ok("revoke again", store.revoke_svid("61", &sweep())), None);
    assert_eq!(
        ok("revoke expired", store.revoke_svid("62", &sweep())),
        None
    );
    let e = err("revoke unknown", store.revoke_svid("63", &sweep()));
    assert_not_found("revoke unknown", &e, "svid", "63");
}

/// Issuance racing an entry delete: whatever the interleaving, once the
/// delete has returned every serial recorded for the entry is revoked, and
/// no issuance after it succeeds.
pub fn issuance_races_revocation(store: &dyn Datastore) {
    attested(store);
    for round in 0..20 {
        let e = entry(&format!("/race/{round}"), &["unix:uid:1"], NOW);
        ok("create entry", store.create_entry(&e));
        let barrier = Barrier::new(2);
        let deleted = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                barrier.wait();
                for n in 0..40 {
                    let after_delete = deleted.load(std::sync::atomic::Ordering::SeqCst);
                    let result =
                        issue_one(store, item(&e, &format!("{round:02x}{n:04x}"), NOW + 600));
                    if after_delete {
                        assert!(
                            result.is_err(),
                            "round {round}: issued after the delete returned"
                        );
                    }
                }
            });
            barrier.wait();
            ok(
                "delete racing issuance",
                store.delete_entry(&e.id, &sweep()),
            );
            deleted.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let revoked = revoked_serials(store);
        for s in ok("list_svids", store.list_svids()) {
            if s.entry_id == Some(e.id) {
                assert!(
                    revoked.contains(&s.serial),
                    "round {round}: serial {} escaped the sweep",
                    s.serial
                );
            }
        }
    }
}

/// `create_entries` writes every entry that passes the single-entry checks
/// (against the store and earlier entries of the batch) and reports the
/// others, in order.
pub fn batch_entry_create(store: &dyn Datastore) {
    let existing = entry("/a", &["unix:uid:1"], NOW);
    ok("create", store.create_entry(&existing));
    let fresh = entry("/b", &["unix:uid:2"], NOW);
    let twin = entry("/b", &["unix:uid:2"], NOW);
    let clash = entry("/a", &["unix:uid:1"], NOW);
    let other = entry("/c", &["unix:uid:3"], NOW);
    let results = ok(
        "create_entries",
        store.create_entries(&[fresh.clone(), twin, clash, other.clone()]),
    );
    assert_eq!(results.len(), 4);
    assert!(results[0].is_ok() && results[3].is_ok(), "{results:?}");
    assert!(
        matches!(results[1], Err(StoreError::AlreadyExists { .. })),
        "{results:?}"
    );
    assert!(
        matches!(results[2], Err(StoreError::AlreadyExists { .. })),
        "{results:?}"
    );
    let mut listed: Vec<EntryId> = ok("list", store.list_entries())
        .into_iter()
        .map(|e| e.id)
        .collect();
    listed.sort();
    let mut want = vec![existing.id, fresh.id, other.id];
    want.sort();
    assert_eq!(listed, want);
}

/// `import` writes a backup's records into an empty store, indexes
/// included (a restored entry's SVIDs are swept when it is deleted, a
/// restored task's entry stays bound to it); a second import is refused.
pub fn import_round_trip(store: &dyn Datastore) {
    let node = agent("node1", "a0");
    let e = entry("/restored", &["unix:uid:1"], NOW);
    let mut issued = svid("71", NOW + 600);
    issued.entry_id = Some(e.id);
    let records = crate::Records {
        entries: vec![e.clone()],
        agents: vec![node.clone()],
        svids: vec![issued.clone()],
        revocations: vec![revocation("72", NOW + 600)],
        tasks: Vec::new(),
    };
    let mut twice = records.clone();
    twice.svids.push(issued.clone());
    let refused = err("import with a repeated serial", store.import(&twice));
    assert_already_exists("import with a repeated serial", &refused, "record");
    assert!(ok("list after refused import", store.list_entries()).is_empty());
    ok("import", store.import(&records));
    assert_eq!(ok("list_entries", store.list_entries()), records.entries);
    assert_eq!(ok("list_agents", store.list_agents()), records.agents);
    assert_eq!(ok("list_svids", store.list_svids()), records.svids);
    assert_eq!(
        ok("list_revocations", store.list_revocations()),
        records.revocations
    );
    let (_, revoked) = ok("delete restored entry", store.delete_entry(&e.id, &sweep()));
    assert_eq!(
        revoked.len(),
        1,
        "the restored SVID is indexed under its entry"
    );
    let again = err("second import", store.import(&records));
    assert_already_exists("second import", &again, "store");
}
