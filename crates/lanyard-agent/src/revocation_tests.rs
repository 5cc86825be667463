//! The Sync loop's handling of CRLs: only one a bundle CA signed is put in
//! force, never an older one, and one listing the agent's own SVID stops it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use lanyard_ca::{CaConfig, CertificateAuthority, RevocationReason, RevokedSerial};
use lanyard_proto::node::v1::SyncResponse;
use tokio::sync::watch;

use crate::{AgentError, Metrics, SyncClient, SyncState, tasks_tests::fixture};

fn crl(ca: &CertificateAuthority, serials: &[&str], number: u64) -> Vec<u8> {
    let revoked: Vec<_> = serials
        .iter()
        .map(|s| RevokedSerial {
            serial: (*s).to_owned(),
            revoked_at: 1_700_000_000,
            reason: RevocationReason::Unspecified,
        })
        .collect();
    ca.sign_crl(
        &revoked,
        number,
        SystemTime::now(),
        Duration::from_secs(600),
    )
    .unwrap()
}

fn message(ca: &CertificateAuthority, crl: Vec<u8>) -> SyncResponse {
    SyncResponse {
        entries: vec![],
        bundle: ca.trust_bundle().iter().map(|c| c.to_vec()).collect(),
        crl,
        revision: 1,
        crl_issuers: ca.intermediates().iter().map(|c| c.to_vec()).collect(),
        ..SyncResponse::default()
    }
}

fn crl_number(out: &watch::Receiver<Option<Arc<SyncState>>>) -> Option<i64> {
    out.borrow()
        .as_ref()
        .and_then(|s| s.crl.as_ref())
        .and_then(|c| c.number())
}

#[tokio::test]
async fn only_a_crl_signed_by_the_bundle_and_not_older_is_put_in_force() {
    let f = fixture();
    let foreign_dir = tempfile::tempdir().unwrap();
    let foreign = CertificateAuthority::load_or_create(
        CaConfig {
            jwt_algorithm: Default::default(),
            trust_domain: f.td.clone(),
            ca_ttl: Duration::from_secs(3600),
            key_dir: foreign_dir.path().to_path_buf(),
            upstream: None,
        },
        None,
        SystemTime::now(),
    )
    .unwrap();
    let (_id_tx, id_rx) = watch::channel(Arc::new(f.identity.clone()));
    let (tx, rx) = watch::channel(None);
    let metrics = Metrics::new();
    let mut client = SyncClient::new(
        f.connector.clone(),
        id_rx,
        tx,
        f.data_dir.clone(),
        metrics.clone(),
    );

    client
        .apply(message(&f.ca, crl(&f.ca, &["0b22"], 2)))
        .unwrap();
    assert_eq!(crl_number(&rx), Some(2));
    let state = rx.borrow().clone().unwrap();
    assert!(state.crl.as_ref().unwrap().is_revoked("0b22"));
    // Signed by a CA outside the bundle: ignored, the previous stays.
    client
        .apply(message(&f.ca, crl(&foreign, &["0c33"], 3)))
        .unwrap();
    assert_eq!(crl_number(&rx), Some(2));
    // Older than the one in force: ignored too.
    client.apply(message(&f.ca, crl(&f.ca, &[], 1))).unwrap();
    assert_eq!(crl_number(&rx), Some(2));
    // No CRL in a message never lifts the one in force.
    client.apply(message(&f.ca, vec![])).unwrap();
    assert_eq!(crl_number(&rx), Some(2));
    let text = metrics.render(0, SystemTime::now()).unwrap();
    assert!(text.contains("lanyard_agent_crl_number 2"), "{text}");
    assert!(
        text.contains("lanyard_agent_sync_updates_total 4"),
        "{text}"
    );
}

#[tokio::test]
async fn a_crl_listing_the_agents_own_svid_stops_the_agent() {
    let f = fixture();
    let (_id_tx, id_rx) = watch::channel(Arc::new(f.identity.clone()));
    let (tx, rx) = watch::channel(None);
    let mut client = SyncClient::new(
        f.connector.clone(),
        id_rx,
        tx,
        f.data_dir.clone(),
        Metrics::new(),
    );
    let own = f.identity.serial.clone();
    let err = client
        .apply(message(&f.ca, crl(&f.ca, &[&own], 2)))
        .unwrap_err();
    assert!(matches!(err, AgentError::AgentSvidRevoked(_)), "{err}");
    assert!(err.is_refusal());
    assert!(err.to_string().contains(&own), "{err}");
    // Nothing was published from that message.
    assert!(rx.borrow().is_none());
}

/// Upstream mode, as an operator sets it up: a root with no SPIFFE URI SAN
/// and Lanyard's CA as its intermediate, started `age` ago.
struct Upstream {
    _dir: tempfile::TempDir,
    root: rustls_pki_types::CertificateDer<'static>,
    ca: CertificateAuthority,
}

fn upstream(age: Duration) -> Upstream {
    let dir = tempfile::tempdir().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Corp Root CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let key = rcgen::KeyPair::generate().unwrap();
    let root = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.path().join("root.crt"), dir.path().join("root.key"));
    std::fs::write(&cert_path, root.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let ca = CertificateAuthority::load_or_create(
        CaConfig {
            jwt_algorithm: Default::default(),
            trust_domain: lanyard_identity::TrustDomain::new("loops.test").unwrap(),
            ca_ttl: Duration::from_secs(600),
            key_dir: dir.path().join("ca"),
            upstream: Some(lanyard_ca::UpstreamCa {
                cert_path,
                key_path,
            }),
        },
        None,
        SystemTime::now() - age,
    )
    .unwrap();
    Upstream {
        root: root.der().clone(),
        _dir: dir,
        ca,
    }
}

/// The agent's own SVID (and so its chain) predates a CA rotation; the CRL
/// the new intermediate signs is accepted because its issuer came with it.
#[tokio::test]
async fn a_crl_from_a_freshly_activated_intermediate_is_accepted_with_its_issuer() {
    let f = fixture();
    let mut up = upstream(Duration::from_secs(500));
    let key = lanyard_ca::SvidKey::generate().unwrap();
    let agent_id = "spiffe://loops.test/lanyard/agent/join_token/t"
        .parse()
        .unwrap();
    let issued_at = SystemTime::now() - Duration::from_secs(500);
    let issued = up
        .ca
        .sign_x509_svid(
            &lanyard_ca::SvidRequest {
                csr_der: &key.csr_der().unwrap(),
                spiffe_id: &agent_id,
                dns_names: &[],
                ttl: Duration::from_secs(3600),
            },
            issued_at,
        )
        .unwrap();
    let old_intermediate = issued.cert_chain[1].clone();
    let identity =
        crate::identity::AgentIdentity::new(issued.cert_chain, Arc::new(key), issued_at).unwrap();
    // Half-way: the next intermediate is prepared; at five sixths, active.
    let t = |ago: u64| SystemTime::now() - Duration::from_secs(ago);
    assert_eq!(
        up.ca.rotate(t(200)).unwrap(),
        lanyard_ca::Rotation::Prepared
    );
    assert_eq!(up.ca.rotate(t(0)).unwrap(), lanyard_ca::Rotation::Activated);
    let new_intermediate = up.ca.active_certificate();
    assert_ne!(new_intermediate, old_intermediate);

    let trust = Arc::new(lanyard_mtls::TrustMaterial::new(vec![up.root.clone()]));
    let connector = Arc::new(
        crate::NodeConnector::new(
            "127.0.0.1:9".parse().unwrap(),
            trust,
            &"loops.test".parse().unwrap(),
        )
        .unwrap(),
    );
    let (_id_tx, id_rx) = watch::channel(Arc::new(identity));
    let (tx, rx) = watch::channel(None);
    let mut client = SyncClient::new(connector, id_rx, tx, f.data_dir.clone(), Metrics::new());
    let message = |crl: Vec<u8>, issuers: Vec<Vec<u8>>| SyncResponse {
        entries: vec![],
        bundle: vec![up.root.to_vec()],
        crl,
        revision: 1,
        crl_issuers: issuers,
        ..SyncResponse::default()
    };

    // Without its issuer, our own chain (the old intermediate) cannot vouch
    // for the new CRL: the state of the bug.
    client
        .apply(message(crl(&up.ca, &["0b22"], 2), vec![]))
        .unwrap();
    assert_eq!(crl_number(&rx), None);
    // With it, accepted at once, and it names the intermediate to pass on.
    let issuers: Vec<Vec<u8>> = up.ca.intermediates().iter().map(|c| c.to_vec()).collect();
    client
        .apply(message(crl(&up.ca, &["0b22"], 3), issuers))
        .unwrap();
    assert_eq!(crl_number(&rx), Some(3));
    let state = rx.borrow().clone().unwrap();
    let crl_in_force = state.crl.as_ref().unwrap();
    assert!(crl_in_force.is_revoked("0b22"));
    assert_eq!(crl_in_force.signing_intermediate(), Some(&new_intermediate));

    // An intermediate of another root is no issuer, even when sent along.
    let rogue = upstream(Duration::from_secs(0));
    let rogue_issuers = rogue
        .ca
        .intermediates()
        .iter()
        .map(|c| c.to_vec())
        .collect();
    client
        .apply(message(crl(&rogue.ca, &["0c33"], 4), rogue_issuers))
        .unwrap();
    assert_eq!(crl_number(&rx), Some(3));
}
