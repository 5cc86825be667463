//! The long-running loops stop cleanly on shutdown, also while the server
//! is unreachable, and the SVID manager publishes readiness correctly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use lanyard_ca::{CaConfig, CertificateAuthority, SvidKey, SvidRequest};
use lanyard_identity::{SpiffeId, TrustDomain};
use lanyard_mtls::TrustMaterial;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    AgentSvidRotator, DataDir, Metrics, NodeConnector, Readiness, Snapshot, SvidManager,
    SyncClient, SyncState, cache::EntryInfo, identity::AgentIdentity,
};

pub(crate) struct Fixture {
    _dir: tempfile::TempDir,
    pub(crate) ca: CertificateAuthority,
    pub(crate) data_dir: DataDir,
    pub(crate) connector: Arc<NodeConnector>,
    pub(crate) identity: AgentIdentity,
    pub(crate) td: TrustDomain,
}

/// An agent identity signed by a throw-away CA, and a connector to a port
/// nobody listens on.
pub(crate) fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let td = TrustDomain::new("loops.test").unwrap();
    let now = SystemTime::now();
    let ca = CertificateAuthority::load_or_create(
        CaConfig {
            jwt_algorithm: Default::default(),
            trust_domain: td.clone(),
            ca_ttl: Duration::from_secs(24 * 3600),
            key_dir: dir.path().join("ca"),
            upstream: None,
        },
        None,
        now,
    )
    .unwrap();
    let key = SvidKey::generate().unwrap();
    let id = SpiffeId::from_parts(&td, "/lanyard/agent/join_token/t").unwrap();
    let issued = ca
        .sign_x509_svid(
            &SvidRequest {
                csr_der: &key.csr_der().unwrap(),
                spiffe_id: &id,
                dns_names: &[],
                ttl: Duration::from_secs(3600),
            },
            now,
        )
        .unwrap();
    let identity = AgentIdentity::new(issued.cert_chain, Arc::new(key), now).unwrap();
    // Bound and dropped: connections to it are refused.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let trust = Arc::new(TrustMaterial::new(ca.trust_bundle()));
    let connector = Arc::new(NodeConnector::new(addr, trust, &td).unwrap());
    let data_dir = DataDir::open(&dir.path().join("data")).unwrap();
    Fixture {
        _dir: dir,
        ca,
        data_dir,
        connector,
        identity,
        td,
    }
}

async fn stops_within<F>(name: &str, shutdown: CancellationToken, task: F)
where
    F: Future<Output = Result<(), crate::AgentError>> + Send + 'static,
{
    let handle = tokio::spawn(task);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!handle.is_finished(), "{name} ended before shutdown");
    shutdown.cancel();
    let result = tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .unwrap_or_else(|_| panic!("{name} did not stop on shutdown"))
        .unwrap();
    assert!(result.is_ok(), "{name}: {result:?}");
}

#[tokio::test]
async fn identity_round_trips_through_the_data_dir() {
    let f = fixture();
    assert!(f.data_dir.load_identity().unwrap().is_none());
    f.data_dir.save_identity(&f.identity).unwrap();
    let back = f.data_dir.load_identity().unwrap().unwrap();
    assert_eq!(back.serial, f.identity.serial);
    assert_eq!(back.spiffe_id, f.identity.spiffe_id);
    assert!(f.data_dir.is_private());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(f.data_dir.path().join("agent_svid.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    f.data_dir.clear_identity().unwrap();
    assert!(f.data_dir.load_identity().unwrap().is_none());
    assert!(!format!("{:?}", f.identity).contains("PRIVATE"));
}

#[tokio::test]
async fn rotator_stops_on_shutdown() {
    let f = fixture();
    let (tx, _rx) = watch::channel(Arc::new(f.identity.clone()));
    let rotator = AgentSvidRotator::new(f.connector.clone(), f.data_dir.clone(), Arc::new(tx));
    let shutdown = CancellationToken::new();
    stops_within("rotator", shutdown.clone(), rotator.run(shutdown)).await;
}

#[tokio::test]
async fn sync_client_retries_an_unreachable_server_and_stops_on_shutdown() {
    let f = fixture();
    let (_id_tx, id_rx) = watch::channel(Arc::new(f.identity.clone()));
    let (sync_tx, sync_rx) = watch::channel(None);
    let client = SyncClient::new(
        f.connector.clone(),
        id_rx,
        sync_tx,
        f.data_dir.clone(),
        Metrics::new(),
    );
    let shutdown = CancellationToken::new();
    stops_within("sync", shutdown.clone(), client.run(shutdown)).await;
    assert!(sync_rx.borrow().is_none());
}

fn entry(id: &str) -> EntryInfo {
    EntryInfo {
        id: id.into(),
        spiffe_id: format!("spiffe://loops.test/{id}").parse().unwrap(),
        selectors: vec!["unix:uid:1".parse().unwrap()].into(),
        ttl_secs: 0,
        dns_names: vec![],
        hint: String::new(),
        revision: 1,
        created_at: 0,
    }
}

#[tokio::test]
async fn svid_manager_stays_unready_while_the_server_is_unreachable() {
    let f = fixture();
    let (_id_tx, id_rx) = watch::channel(Arc::new(f.identity.clone()));
    let state = SyncState {
        entries: [Arc::new(entry("a"))].into_iter().collect(),
        ..Default::default()
    };
    let (_sync_tx, sync_rx) = watch::channel(Some(Arc::new(state)));
    let (out, out_rx) = watch::channel(Arc::new(Snapshot::starting()));
    let manager = SvidManager::new(
        f.connector.clone(),
        id_rx,
        sync_rx,
        Arc::new(out),
        f.td.clone(),
        Metrics::new(),
    );
    let shutdown = CancellationToken::new();
    stops_within("SVID manager", shutdown.clone(), manager.run(shutdown)).await;
    assert_eq!(out_rx.borrow().readiness, Readiness::Starting);
}

#[tokio::test]
async fn svid_manager_with_no_entries_is_ready_and_never_overrides_stopped() {
    let f = fixture();
    let (_id_tx, id_rx) = watch::channel(Arc::new(f.identity.clone()));
    let (sync_tx, sync_rx) = watch::channel(Some(Arc::new(SyncState::default())));
    let (out, mut out_rx) = watch::channel(Arc::new(Snapshot::starting()));
    let out = Arc::new(out);
    let manager = SvidManager::new(
        f.connector.clone(),
        id_rx,
        sync_rx,
        out.clone(),
        f.td.clone(),
        Metrics::new(),
    );
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(manager.run(shutdown.clone()));
    tokio::time::timeout(
        Duration::from_secs(5),
        out_rx.wait_for(|s| s.readiness == Readiness::Ready),
    )
    .await
    .unwrap()
    .unwrap();
    // A ban stops serving; later updates must not revive it.
    out.send_replace(Arc::new(Snapshot::stopped("agent is banned")));
    sync_tx.send_replace(Some(Arc::new(SyncState {
        revision: 2,
        ..Default::default()
    })));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(matches!(out_rx.borrow().readiness, Readiness::Stopped(_)));
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}
