//! SPIFFE mTLS with CRL enforcement: real rustls handshakes between
//! configurations built by this crate, over an in-memory pipe.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use lanyard_mtls::{Authorizer, CrlError, MtlsError, TrustMaterial, client_config, server_config};
use rustls::{AlertDescription, CertificateError};
use support::{Ca, Svid, handshake};
use time::{Duration, OffsetDateTime};

const SERVER_ID: &str = "spiffe://example.org/echo/server";
const CLIENT_ID: &str = "spiffe://example.org/echo/client";

struct Pair {
    trust: Arc<TrustMaterial>,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

/// Server and client share one TrustMaterial, as two workloads of one
/// trust domain fed by the same agent would.
fn pair(
    bundle: Vec<rustls_pki_types::CertificateDer<'static>>,
    server_svid: &Svid,
    client_svid: &Svid,
    server_allows: Authorizer,
    client_allows: Authorizer,
) -> Pair {
    let trust = Arc::new(TrustMaterial::new(bundle));
    let server = server_config(trust.clone(), server_allows, server_svid.resolver()).unwrap();
    let client = client_config(trust.clone(), client_allows, client_svid.resolver()).unwrap();
    Pair {
        trust,
        server: Arc::new(server),
        client: Arc::new(client),
    }
}

fn exact(id: &str) -> Authorizer {
    Authorizer::exact([id.parse().unwrap()])
}

fn default_pair(ca: &Ca, server: &Svid, client: &Svid) -> Pair {
    pair(
        vec![ca.cert.clone()],
        server,
        client,
        exact(CLIENT_ID),
        exact(SERVER_ID),
    )
}

#[tokio::test]
async fn authorized_peers_complete_a_full_handshake() {
    let ca = Ca::new();
    let (server, client) = (ca.svid(SERVER_ID), ca.svid(CLIENT_ID));
    let p = default_pair(&ca, &server, &client);
    let out = handshake(p.server.clone(), p.client.clone()).await;
    assert!(out.ok(), "{out:?}");
    assert_eq!(out.client_full_handshake, Some(true));
}

#[tokio::test]
async fn wrong_spiffe_id_is_refused_by_the_server() {
    let ca = Ca::new();
    let server = ca.svid(SERVER_ID);
    let intruder = ca.svid("spiffe://example.org/someone/else");
    let p = default_pair(&ca, &server, &intruder);
    let out = handshake(p.server, p.client).await;
    assert!(matches!(
        out.server_tls_error(),
        Some(rustls::Error::InvalidCertificate(
            CertificateError::ApplicationVerificationFailure
        ))
    ));
}

#[tokio::test]
async fn wrong_server_id_is_refused_by_the_client() {
    let ca = Ca::new();
    let impostor = ca.svid("spiffe://example.org/not/the/server");
    let client = ca.svid(CLIENT_ID);
    let p = default_pair(&ca, &impostor, &client);
    let out = handshake(p.server, p.client).await;
    assert!(matches!(
        out.client_tls_error(),
        Some(rustls::Error::InvalidCertificate(
            CertificateError::ApplicationVerificationFailure
        ))
    ));
}

#[tokio::test]
async fn peer_from_a_foreign_ca_is_refused() {
    let ca = Ca::new();
    let foreign = Ca::named("Some other CA");
    let server = ca.svid(SERVER_ID);
    let client = foreign.svid(CLIENT_ID);
    let p = default_pair(&ca, &server, &client);
    let out = handshake(p.server, p.client).await;
    assert!(!out.ok());
    let err = out.server_tls_error().expect("server refused the client");
    assert!(
        matches!(err, rustls::Error::InvalidCertificate(_)),
        "{err:?}"
    );
}

#[tokio::test]
async fn revoked_client_is_refused_with_revoked() {
    let ca = Ca::new();
    let (server, client) = (ca.svid(SERVER_ID), ca.svid(CLIENT_ID));
    let p = default_pair(&ca, &server, &client);
    p.trust.set_crl(Some(ca.crl(1, &[&client]))).unwrap();
    let out = handshake(p.server, p.client).await;
    assert!(matches!(
        out.server_tls_error(),
        Some(rustls::Error::InvalidCertificate(CertificateError::Revoked))
    ));
    // The client learns why from the alert.
    assert!(matches!(
        out.client_tls_error(),
        Some(rustls::Error::AlertReceived(
            AlertDescription::CertificateRevoked
        ))
    ));
    assert!(
        out.client
            .unwrap_err()
            .to_string()
            .contains("CertificateRevoked")
    );
}

#[tokio::test]
async fn revoked_server_is_refused_with_revoked() {
    let ca = Ca::new();
    let (server, client) = (ca.svid(SERVER_ID), ca.svid(CLIENT_ID));
    let p = default_pair(&ca, &server, &client);
    p.trust.set_crl(Some(ca.crl(1, &[&server]))).unwrap();
    let out = handshake(p.server, p.client).await;
    assert!(matches!(
        out.client_tls_error(),
        Some(rustls::Error::InvalidCertificate(CertificateError::Revoked))
    ));
    assert!(matches!(
        out.server_tls_error(),
        Some(rustls::Error::AlertReceived(
            AlertDescription::CertificateRevoked
        ))
    ));
}

#[tokio::test]
async fn crl_listing_other_serials_lets_peers_in() {
    let ca = Ca::new();
    let (server, client) = (ca.svid(SERVER_ID), ca.svid(CLIENT_ID));
    let other = ca.svid("spiffe://example.org/other");
    let p = default_pair(&ca, &server, &client);
    p.trust.set_crl(Some(ca.crl(1, &[&other]))).unwrap();
    let out = handshake(p.server, p.client).await;
    assert!(out.ok(), "{out:?}");
}

#[tokio::test]
async fn revocation_applies_to_the_next_handshake_on_the_same_configs() {
    let ca = Ca::new();
    let (server, client) = (ca.svid(SERVER_ID), ca.svid(CLIENT_ID));
    let p = default_pair(&ca, &server, &client);
    p.trust.set_crl(Some(ca.crl(1, &[]))).unwrap();

    let first = handshake(p.server.clone(), p.client.clone()).await;
    assert!(first.ok(), "{first:?}");
    let second = handshake(p.server.clone(), p.client.clone()).await;
    assert!(second.ok(), "{second:?}");
    assert_eq!(
        second.client_full_handshake,
        Some(true),
        "no session may be resumed"
    );

    p.trust.set_crl(Some(ca.crl(2, &[&client]))).unwrap();
    let third = handshake(p.server.clone(), p.client.clone()).await;
    assert!(matches!(
        third.server_tls_error(),
        Some(rustls::Error::InvalidCertificate(CertificateError::Revoked))
    ));
}

#[test]
fn crl_from_a_foreign_ca_is_rejected_at_set_time() {
    let ca = Ca::new();
    // Same subject name, different key: only the signature tells them apart.
    let foreign = Ca::new();
    let victim = ca.svid(CLIENT_ID);
    let trust = TrustMaterial::new(vec![ca.cert.clone()]);
    trust.set_crl(Some(ca.crl(1, &[]))).unwrap();

    let err = trust.set_crl(Some(foreign.crl(2, &[&victim]))).unwrap_err();
    assert!(
        matches!(
            err,
            MtlsError::Crl(CrlError::UntrustedSigner { bundle_len: 1, .. })
        ),
        "{err:?}"
    );
    let kept = trust.crl().expect("previous CRL kept");
    assert_eq!(kept.number(), Some("01"));
    assert!(!kept.is_revoked(&victim.serial));
}

#[test]
fn malformed_and_rolled_back_crls_are_rejected() {
    let ca = Ca::new();
    let trust = TrustMaterial::new(vec![ca.cert.clone()]);
    let err = trust.set_crl(Some(b"not a crl".to_vec())).unwrap_err();
    assert!(
        matches!(err, MtlsError::Crl(CrlError::Malformed { .. })),
        "{err:?}"
    );

    trust.set_crl(Some(ca.crl(7, &[]))).unwrap();
    let err = trust.set_crl(Some(ca.crl(6, &[]))).unwrap_err();
    assert!(
        matches!(&err, MtlsError::Crl(CrlError::Rollback { current, offered })
            if current == "07" && offered == "06"),
        "{err:?}"
    );
    trust.set_crl(Some(ca.crl(7, &[]))).unwrap();
    trust.set_crl(Some(ca.crl(300, &[]))).unwrap();
    assert_eq!(trust.crl().unwrap().number(), Some("012c"));
    trust.set_crl(None).unwrap();
    assert!(trust.crl().is_none());
}

#[tokio::test]
async fn svids_of_a_rotated_out_ca_are_checked_against_the_new_cas_crl() {
    // Two CAs with the SAME subject name, as across a CA rotation.
    let old_ca = Ca::new();
    let new_ca = Ca::new();
    let server = new_ca.svid(SERVER_ID);
    let old_client = old_ca.svid(CLIENT_ID);
    let other_old = old_ca.svid("spiffe://example.org/other");
    let p = pair(
        vec![old_ca.cert.clone(), new_ca.cert.clone()],
        &server,
        &old_client,
        exact(CLIENT_ID),
        exact(SERVER_ID),
    );
    // The CRL is signed by the new (active) key and lists an unrelated old
    // SVID: the old-CA client must still be accepted ...
    p.trust.set_crl(Some(new_ca.crl(1, &[&other_old]))).unwrap();
    let out = handshake(p.server.clone(), p.client.clone()).await;
    assert!(out.ok(), "{out:?}");
    // ... and refused once its serial is on the new key's CRL.
    p.trust
        .set_crl(Some(new_ca.crl(2, &[&other_old, &old_client])))
        .unwrap();
    let out = handshake(p.server, p.client).await;
    assert!(matches!(
        out.server_tls_error(),
        Some(rustls::Error::InvalidCertificate(CertificateError::Revoked))
    ));
}

#[tokio::test]
async fn bundle_and_crl_swap_together() {
    let old_ca = Ca::new();
    let new_ca = Ca::new();
    let server = new_ca.svid(SERVER_ID);
    let client = new_ca.svid(CLIENT_ID);
    let p = default_pair(&old_ca, &server, &client);
    // New-CA peers do not chain to the old bundle.
    assert!(!handshake(p.server.clone(), p.client.clone()).await.ok());
    // A CRL from the new CA is refused against the old bundle ...
    assert!(p.trust.set_crl(Some(new_ca.crl(1, &[]))).is_err());
    // ... but accepted together with the bundle that carries its signer.
    p.trust
        .set(
            vec![old_ca.cert.clone(), new_ca.cert.clone()],
            Some(new_ca.crl(1, &[&client])),
        )
        .unwrap();
    let out = handshake(p.server, p.client).await;
    assert!(matches!(
        out.server_tls_error(),
        Some(rustls::Error::InvalidCertificate(CertificateError::Revoked))
    ));
}

#[test]
fn refused_crl_in_set_still_installs_the_bundle() {
    let ca = Ca::new();
    let foreign = Ca::named("Foreign");
    let trust = TrustMaterial::new(vec![]);
    let err = trust
        .set(vec![ca.cert.clone()], Some(foreign.crl(1, &[])))
        .unwrap_err();
    assert!(matches!(
        err,
        MtlsError::Crl(CrlError::UntrustedSigner { .. })
    ));
    assert_eq!(trust.bundle().len(), 1);
    assert!(trust.crl().is_none());
}

#[tokio::test]
async fn an_expired_crl_is_still_enforced() {
    let ca = Ca::new();
    let (server, client) = (ca.svid(SERVER_ID), ca.svid(CLIENT_ID));
    let p = default_pair(&ca, &server, &client);
    let now = OffsetDateTime::now_utc();
    let stale = ca.crl_at(
        1,
        &[&client],
        now - Duration::hours(2),
        now - Duration::hours(1),
    );
    p.trust.set_crl(Some(stale)).unwrap();
    assert!(
        p.trust
            .crl()
            .unwrap()
            .is_stale(rustls_pki_types::UnixTime::now())
    );
    let out = handshake(p.server, p.client).await;
    assert!(matches!(
        out.server_tls_error(),
        Some(rustls::Error::InvalidCertificate(CertificateError::Revoked))
    ));
}

#[test]
fn revoked_serials_match_the_identity_crates_normalization() {
    let ca = Ca::new();
    let svid = ca.svid(CLIENT_ID);
    let trust = TrustMaterial::new(vec![ca.cert.clone()]);
    trust.set_crl(Some(ca.crl(1, &[&svid]))).unwrap();
    let summary = lanyard_identity::check_x509_svid(&svid.chain[0]).unwrap();
    let crl = trust.crl().unwrap();
    assert!(crl.is_revoked(&summary.serial));
    assert!(crl.is_revoked(&summary.serial.to_uppercase()));
    assert_eq!(crl.len(), 1);
}
