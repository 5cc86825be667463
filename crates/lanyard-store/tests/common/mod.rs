//! Fixtures shared by the durability and damage tests: a store filled with
//! some of every kind of record, and a snapshot to compare a reopened store
//! against.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::Path;

use lanyard_identity::{Entry, EntryId, Selector, SpiffeId};
use lanyard_store::{
    AgentRecord, Datastore, JoinTokenRecord, Revocation, SledStore, StoreError, SvidRecord,
};

pub const NOW: i64 = 1_700_000_000;

/// Everything a store holds, as read through the trait.
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    pub entries: Vec<Entry>,
    pub agents: Vec<AgentRecord>,
    pub svids: Vec<SvidRecord>,
    pub revocations: Vec<Revocation>,
    pub ca_journal: Option<Vec<u8>>,
}

pub fn snapshot(store: &dyn Datastore) -> Snapshot {
    Snapshot {
        entries: store.list_entries().unwrap(),
        agents: store.list_agents().unwrap(),
        svids: store.list_svids().unwrap(),
        revocations: store.list_revocations().unwrap(),
        ca_journal: store.get_ca_journal().unwrap(),
    }
}

pub fn id(s: &str) -> SpiffeId {
    SpiffeId::new(s).unwrap()
}

pub fn entry(n: usize) -> Entry {
    Entry {
        id: EntryId(uuid::Uuid::new_v4()),
        spiffe_id: id(&format!("spiffe://example.org/workload/{n}")),
        parent_id: id("spiffe://example.org/lanyard/agent/join_token/node1"),
        selectors: vec![format!("unix:uid:{n}").parse::<Selector>().unwrap()],
        x509_svid_ttl_secs: None,
        jwt_svid_ttl_secs: None,
        dns_names: Vec::new(),
        expires_at: None,
        hint: String::new(),
        revision: 0,
        created_at: NOW + n as i64,
    }
}

/// Creates a store in `dir` holding `revocations` revocations and a few of
/// every other record, closes it, and returns what it holds.
pub fn populate(dir: &Path, revocations: usize) -> Snapshot {
    let store = after_lock_release(|| SledStore::open(dir)).unwrap();
    for n in 0..3 {
        store.create_entry(&entry(n)).unwrap();
    }
    store
        .put_agent(&AgentRecord {
            spiffe_id: id("spiffe://example.org/lanyard/agent/join_token/node1"),
            attestation_type: "join_token".into(),
            selectors: vec!["join_token:id:node1".parse().unwrap()],
            serial: "0a".into(),
            expires_at: NOW + 3600,
            attested_at: NOW,
            banned: false,
            evicted: false,
            revision: 1,
        })
        .unwrap();
    store
        .create_join_token(&JoinTokenRecord {
            token_id: "used".into(),
            expires_at: NOW + 600,
            created_at: NOW,
            spiffe_id: None,
        })
        .unwrap();
    store.consume_join_token("used", NOW).unwrap();
    store
        .record_svid(&SvidRecord {
            serial: "0b".into(),
            spiffe_id: id("spiffe://example.org/workload/0"),
            entry_id: None,
            agent_id: Some(id("spiffe://example.org/lanyard/agent/join_token/node1")),
            task_id: None,
            issued_at: NOW,
            not_after: NOW + 3600,
        })
        .unwrap();
    for n in 0..revocations {
        store
            .put_revocation(&Revocation {
                serial: format!("{n:08x}"),
                revoked_at: NOW,
                not_after: NOW + 3600,
                reason: "entry deleted".repeat(10),
            })
            .unwrap();
    }
    assert_eq!(store.next_crl_number().unwrap(), 1);
    store.put_ca_journal(b"ca journal").unwrap();
    let snap = snapshot(&store);
    drop(store);
    snap
}

/// Opens the store in `dir` expecting it to be refused, and returns why.
/// Retries `open` while the error is sled's file lock still held by a
/// database this process just dropped (sled releases it from a background
/// epoch a moment later, most visibly on a loaded machine); any other
/// outcome is returned at once.
pub fn after_lock_release<T, E: std::fmt::Debug>(
    mut open: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match open() {
            Err(e)
                if format!("{e:?}").contains("WouldBlock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

pub fn refused(dir: &Path) -> StoreError {
    match after_lock_release(|| SledStore::open(dir)) {
        Ok(store) => panic!(
            "a damaged store was opened; it holds {:?}",
            snapshot(&store)
        ),
        Err(e) => e,
    }
}
