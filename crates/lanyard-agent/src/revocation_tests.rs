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
    let client = SyncClient::new(
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
    let client = SyncClient::new(
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
