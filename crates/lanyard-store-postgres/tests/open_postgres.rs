//! Opening a database: the schema is created once under concurrency, kept
//! across reopening, and a foreign, newer or unreachable database stops the
//! store with an error that names it and never shows the password.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lanyard_store::{Datastore, JoinTokenRecord, StoreError};
use lanyard_store_postgres::{PostgresConfig, PostgresStore, SCHEMA_VERSION};

fn open(url: &str) -> Result<PostgresStore, StoreError> {
    PostgresStore::open(&PostgresConfig::new(url))
}

/// The database name at the end of a test cluster URL's path.
fn db_name(url: &str) -> &str {
    let path = url.split('?').next().unwrap();
    path.rsplit('/').next().unwrap()
}

#[test]
fn servers_opening_one_new_database_at_once_create_the_schema_once() {
    let url = lanyard_test_postgres::shared().create_database();
    let stores: Vec<PostgresStore> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8).map(|_| scope.spawn(|| open(&url))).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect()
    });
    let cluster = lanyard_test_postgres::shared();
    assert_eq!(
        cluster
            .psql(db_name(&url), "SELECT version FROM lanyard_schema")
            .trim(),
        SCHEMA_VERSION.to_string()
    );
    // Every store sees the others' writes: one counter for all.
    let numbers: Vec<u64> = stores
        .iter()
        .map(|s| s.next_crl_number().unwrap())
        .collect();
    assert_eq!(numbers, (1..=8).collect::<Vec<u64>>());
}

#[test]
fn a_reopened_database_keeps_its_records() {
    let url = lanyard_test_postgres::shared().create_database();
    let token = JoinTokenRecord {
        token_id: "kept".into(),
        expires_at: i64::MAX,
        created_at: 0,
        spiffe_id: None,
    };
    open(&url).unwrap().create_join_token(&token).unwrap();
    let again = open(&url).unwrap();
    assert_eq!(again.consume_join_token("kept", 1).unwrap(), token);
}

#[test]
fn a_database_with_tables_but_no_version_row_is_refused_and_left_alone() {
    let cluster = lanyard_test_postgres::shared();
    let url = cluster.create_database();
    cluster.psql(
        db_name(&url),
        "CREATE TABLE payroll (id int); INSERT INTO payroll VALUES (1)",
    );
    let e = open(&url).unwrap_err();
    assert!(matches!(e, StoreError::NotADatabase { .. }), "{e:?}");
    assert!(e.to_string().contains("payroll"), "{e}");
    assert_eq!(
        cluster
            .psql(
                db_name(&url),
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
            )
            .trim(),
        "1",
        "nothing may be created next to someone else's tables"
    );
}

#[test]
fn a_newer_schema_version_is_refused_with_both_versions() {
    let cluster = lanyard_test_postgres::shared();
    let url = cluster.create_database();
    drop(open(&url).unwrap());
    cluster.psql(
        db_name(&url),
        "UPDATE lanyard_schema SET version = version + 41",
    );
    let e = open(&url).unwrap_err();
    match &e {
        StoreError::UnsupportedSchema {
            found, expected, ..
        } => {
            assert_eq!((*found, *expected), (SCHEMA_VERSION + 41, SCHEMA_VERSION));
        }
        other => panic!("expected UnsupportedSchema, got {other:?}"),
    }
    assert!(
        e.to_string()
            .contains(&format!("version {}", SCHEMA_VERSION + 41)),
        "{e}"
    );
}

#[test]
fn an_unreachable_database_is_named_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "postgresql://lanyard:hunter2@localhost/lanyard?host={}&port=1",
        dir.path().display()
    );
    let e = open(&url).unwrap_err();
    assert!(matches!(e, StoreError::Unreachable { .. }), "{e:?}");
    let message = e.to_string();
    assert!(!message.contains("hunter2"), "{message}");
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
}

#[test]
fn the_store_may_be_called_and_dropped_on_an_async_thread() {
    let url = lanyard_test_postgres::shared().create_database();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // The server reads the CA journal and anchors the audit log from
        // async code, not only from spawn_blocking.
        let store = open(&url).unwrap();
        store.put_ca_journal(b"{}").unwrap();
        assert_eq!(store.get_ca_journal().unwrap(), Some(b"{}".to_vec()));
        drop(store);
    });
}
