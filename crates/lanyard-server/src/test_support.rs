//! An in-process server state over a real sled store, CA and audit log in a
//! temporary directory, for unit tests of the domain modules and loops.

use std::{sync::Arc, time::SystemTime};

use lanyard_audit::AuditLog;
use lanyard_ca::{CaConfig, CertificateAuthority};
use lanyard_store::{Datastore, SledStore};
use tokio_util::sync::CancellationToken;

use crate::{ConfigFile, issuance::Pending, state::ServerState};

/// A server state and what keeps it alive.
pub(crate) struct TestState {
    pub state: Arc<ServerState>,
    pub queue: Option<tokio::sync::mpsc::Receiver<Pending>>,
    pub shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

/// A fresh state for trust domain `test.example` with `extra` config lines.
#[allow(clippy::unwrap_used)]
pub(crate) fn state(extra: &str) -> TestState {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ConfigFile::parse(&format!(
        "trust_domain = \"test.example\"\ndata_dir = {:?}\n{extra}",
        dir.path().join("data")
    ))
    .unwrap()
    .validate()
    .unwrap();
    std::fs::create_dir_all(&cfg.data_dir).unwrap();
    let store: Arc<dyn Datastore> = Arc::new(SledStore::open(&cfg.data_dir.join("store")).unwrap());
    let ca = CertificateAuthority::load_or_create(
        CaConfig {
            jwt_algorithm: Default::default(),
            trust_domain: cfg.trust_domain.clone(),
            ca_ttl: cfg.ca_ttl,
            key_dir: cfg.data_dir.join("ca"),
            upstream: None,
        },
        None,
        SystemTime::now(),
    )
    .unwrap();
    let audit = AuditLog::open(&cfg.data_dir.join("audit.log"), None).unwrap();
    let shutdown = CancellationToken::new();
    let (state, queue) = ServerState::new(
        cfg,
        store,
        crate::cluster::Cluster::default(),
        ca,
        crate::state::AuditSink::File(Arc::new(std::sync::Mutex::new(audit))),
        None,
        shutdown.clone(),
    );
    TestState {
        state,
        queue: Some(queue),
        shutdown,
        _dir: dir,
    }
}

/// An agent record of `id`, attested by join token `abc`, current serial
/// `01`, in good standing.
#[allow(clippy::unwrap_used)]
pub(crate) fn agent_record(id: &str) -> lanyard_store::AgentRecord {
    lanyard_store::AgentRecord {
        spiffe_id: id.parse().unwrap(),
        attestation_type: "join_token".into(),
        selectors: vec!["join_token:id:abc".parse().unwrap()],
        serial: "01".into(),
        expires_at: 0,
        attested_at: 0,
        banned: false,
        evicted: false,
        revision: 1,
    }
}

/// An entry of SPIFFE ID `id` under `parent`, with `selectors`.
#[allow(clippy::unwrap_used)]
pub(crate) fn entry(
    id: &str,
    parent: &str,
    selectors: &[&str],
    expires_at: Option<i64>,
) -> lanyard_identity::Entry {
    lanyard_identity::Entry {
        id: lanyard_identity::EntryId::new_random(),
        spiffe_id: id.parse().unwrap(),
        parent_id: parent.parse().unwrap(),
        selectors: selectors.iter().map(|s| s.parse().unwrap()).collect(),
        x509_svid_ttl_secs: None,
        jwt_svid_ttl_secs: None,
        dns_names: vec![],
        expires_at,
        hint: String::new(),
        revision: 0,
        created_at: 0,
    }
}
