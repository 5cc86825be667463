//! Upstream mode: the bundle holds the upstream root; Lanyard's
//! intermediate signs SVIDs and the CRL. The CRL is accepted when the
//! intermediate comes from the holder's own chain and chains to the bundle.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use lanyard_mtls::{Authorizer, MtlsError, TrustMaterial, client_config, server_config};
use rustls::CertificateError;
use support::{Ca, handshake};

const SERVER_ID: &str = "spiffe://example.org/db";
const CLIENT_ID: &str = "spiffe://example.org/app";

#[test]
fn a_crl_signed_by_the_intermediate_needs_it_as_signer() {
    let root = Ca::named("upstream root");
    let lanyard = root.intermediate("Lanyard CA example.org");
    let leaf = lanyard.svid(CLIENT_ID);
    let crl = lanyard.crl(2, &[&leaf]);
    let trust = TrustMaterial::new(vec![root.cert.clone()]);
    // The bundle alone does not vouch for the intermediate's CRL.
    assert!(matches!(
        trust.set_crl(Some(crl.clone())),
        Err(MtlsError::Crl(_))
    ));
    trust.set_crl_signers(vec![lanyard.cert.clone()]);
    trust.set_crl(Some(crl)).unwrap();
    assert!(trust.crl().unwrap().is_revoked(&leaf.serial));
    // The CRL names the intermediate that signed it, so an agent can pass
    // it on with the CRL.
    assert_eq!(
        trust.crl().unwrap().signing_intermediate(),
        Some(&lanyard.cert)
    );
}

#[test]
fn an_intermediate_that_does_not_chain_to_the_bundle_is_no_signer() {
    let root = Ca::named("upstream root");
    let rogue_root = Ca::named("someone else");
    let rogue = rogue_root.intermediate("Lanyard CA example.org");
    let leaf = rogue.svid(CLIENT_ID);
    let trust = TrustMaterial::new(vec![root.cert.clone()]);
    trust.set_crl_signers(vec![rogue.cert.clone()]);
    assert!(trust.set_crl(Some(rogue.crl(2, &[&leaf]))).is_err());
}

#[tokio::test]
async fn a_revoked_peer_is_refused_in_upstream_mode() {
    let root = Ca::named("upstream root");
    let lanyard = root.intermediate("Lanyard CA example.org");
    let mut server_svid = lanyard.svid(SERVER_ID);
    let mut client_svid = lanyard.svid(CLIENT_ID);
    // SVID chains are [leaf, intermediate] in upstream mode.
    server_svid.chain.push(lanyard.cert.clone());
    client_svid.chain.push(lanyard.cert.clone());
    let trust = Arc::new(TrustMaterial::new(vec![root.cert.clone()]));
    let server = server_config(
        trust.clone(),
        Authorizer::exact([CLIENT_ID.parse().unwrap()]),
        server_svid.resolver(),
    )
    .unwrap();
    let client = client_config(
        trust.clone(),
        Authorizer::exact([SERVER_ID.parse().unwrap()]),
        client_svid.resolver(),
    )
    .unwrap();
    let (server, client) = (Arc::new(server), Arc::new(client));
    assert!(handshake(server.clone(), client.clone()).await.ok());

    trust.set_crl_signers(server_svid.chain[1..].to_vec());
    trust
        .set_crl(Some(lanyard.crl(2, &[&client_svid])))
        .unwrap();
    let out = handshake(server, client).await;
    assert!(
        matches!(
            out.server_tls_error(),
            Some(rustls::Error::InvalidCertificate(CertificateError::Revoked))
        ),
        "{out:?}"
    );
}
