//! Lanyard under an existing PKI, end to end with real processes: a root
//! made by `openssl req -x509` (no SPIFFE URI SAN), lanyard-server as its
//! intermediate, an agent told its trust domain, workloads fetching SVIDs
//! with the `spiffe` crate, lanyard-mtls handshakes, `openssl verify
//! -crl_check`, and a revocation made just after the intermediate rotates,
//! enforced by a peer whose own SVID predates the rotation.
//!
//! The only timing assert is the deadline: refused within 1 s.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lanyard_test_support as common;

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use common::{
    TD,
    agent::{Agent, eventually, register_self},
    fetch_crl,
    mtls::{echo, serve, until_refused},
    openssl_verify_crl,
    upstream::{activation_at, crl_signed_by, upstream_server},
};
use futures::StreamExt;
use lanyard_mtls::{Authorizer, TrustMaterial, WorkloadSource};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use spiffe::WorkloadApiClient;

/// The CA lives 90 s: prepared at 45 s, the next one active at 75 s.
const CA_TTL: &str = "90s";

/// The `spiffe` crate's view: the SVID for `id`, its chain (DER) and the
/// trust domain's bundle, polling until the agent serves it.
async fn fetch_with_spiffe(
    agent: &Agent,
    id: &str,
) -> (
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
    Vec<CertificateDer<'static>>,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let last = match WorkloadApiClient::connect_to(agent.endpoint()).await {
            Ok(client) => match client.fetch_x509_context().await {
                Ok(ctx) => {
                    let td = spiffe::TrustDomain::new(TD).unwrap();
                    let svid = ctx.svids().iter().find(|s| s.spiffe_id().to_string() == id);
                    if let (Some(svid), Some(bundle)) = (svid, ctx.bundle_set().get(&td)) {
                        return (
                            svid.cert_chain()
                                .iter()
                                .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
                                .collect(),
                            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                                svid.private_key().as_bytes().to_vec(),
                            )),
                            bundle
                                .authorities()
                                .iter()
                                .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
                                .collect(),
                        );
                    }
                    format!("{} SVIDs, none {id}", ctx.svids().len())
                }
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "no SVID for {id}: {last}\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client presenting the fetched SVID as is, trusting the fetched bundle,
/// accepting only `server_id`.
fn client_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    bundle: Vec<CertificateDer<'static>>,
    server_id: &str,
) -> Arc<rustls::ClientConfig> {
    let verifier = lanyard_mtls::SpiffeServerVerifier::new(
        Arc::new(TrustMaterial::new(bundle)),
        Authorizer::exact([server_id.parse().unwrap()]),
    );
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(verifier))
    .with_client_auth_cert(chain, key)
    .unwrap();
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

fn serial_of(cert: &CertificateDer<'_>) -> String {
    lanyard_identity::check_x509_svid(cert).unwrap().serial
}

/// The service's current SVID chain.
fn service_chain(source: &WorkloadSource) -> Vec<CertificateDer<'static>> {
    source
        .svid()
        .expect("the service has an SVID")
        .chain()
        .to_vec()
}

/// Whether `leaf` is an SVID for `id` other than `old_serial`.
fn is_new(leaf: &CertificateDer<'_>, id: &str, old_serial: &str) -> bool {
    let summary = lanyard_identity::check_x509_svid(leaf).unwrap();
    summary.spiffe_id.to_string() == id && summary.serial != old_serial
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test(flavor = "multi_thread")]
async fn lanyard_as_the_intermediate_of_an_operator_root() {
    let (server, root) = upstream_server(&[
        "--ca-ttl",
        CA_TTL,
        "--default-x509-svid-ttl",
        "20s",
        "--agent-svid-ttl",
        "40s",
    ]);
    assert_eq!(server.bundle(), vec![root.cert.clone()], "bundle show");
    let mut agent = Agent::prepare(&server);
    agent.spawn(Some(&server.token()), &["--trust-domain", TD]);
    agent.wait_ready();

    // The service ("db") in this process, fed live by the Workload API. Its
    // entry is the older one, so it stays this uid's default SVID.
    let db_id = format!("spiffe://{TD}/db");
    let client_id = format!("spiffe://{TD}/client");
    register_self(&server, &agent, "db");
    let source = WorkloadSource::connect(agent.socket.to_str().unwrap())
        .await
        .unwrap();
    assert_eq!(source.spiffe_id().unwrap().to_string(), db_id);
    let db: SocketAddr = serve(
        source
            .server_config(Authorizer::TrustDomain(TD.parse().unwrap()))
            .unwrap(),
    )
    .await;
    // created_at has one-second resolution: keep "client" strictly younger.
    std::thread::sleep(Duration::from_millis(1100));
    register_self(&server, &agent, "client");

    // 1. The spiffe crate fetches the client's SVID: leaf, then Lanyard's
    //    intermediate; the bundle is the operator's root.
    let (chain, key, bundle) = fetch_with_spiffe(&agent, &client_id).await;
    assert_eq!(bundle, vec![root.cert.clone()]);
    assert_eq!(chain.len(), 2, "leaf and intermediate");
    let intermediate = chain[1].clone();
    assert_eq!(service_chain(&source)[1], intermediate);
    let serial = serial_of(&chain[0]);
    let config = client_config(chain.clone(), key, bundle, &db_id);
    assert_eq!(echo(config.clone(), db).await.unwrap(), "echo: hi\n");

    // A JWT-SVID signed before the rotation, and the JWT bundle stream
    // (the spiffe crate's), which must carry every key change.
    let jwt_client = WorkloadApiClient::connect_to(agent.endpoint())
        .await
        .unwrap();
    let client_spiffe_id = spiffe::SpiffeId::new(&client_id).unwrap();
    let jwt_before = jwt_client
        .fetch_jwt_svid(["before"], Some(&client_spiffe_id))
        .await
        .unwrap();
    let mut jwt_bundles = jwt_client.stream_jwt_bundles().await.unwrap();
    let td: spiffe::TrustDomain = TD.parse().unwrap();
    let kids = |set: &spiffe::JwtBundleSet| -> Vec<String> {
        set.get(&td)
            .map(|b| b.jwt_authorities().map(|a| a.key_id().to_owned()).collect())
            .unwrap_or_default()
    };
    let first = jwt_bundles.next().await.unwrap().unwrap();
    assert_eq!(kids(&first), [jwt_before.key_id().to_owned()]);

    // 2. openssl, with the root, the intermediate chain and GET /crl.
    let dir = agent.dir.path().to_path_buf();
    let (ok, out) = openssl_verify_crl(
        &dir,
        std::slice::from_ref(&root.cert),
        &chain,
        Some(&fetch_crl(&server)),
    );
    assert!(ok, "openssl verify -crl_check before revocation: {out}");
    server.cli_ok(&["svid", "revoke", "--serial", &serial]);
    let revoked_at = Instant::now();
    let (ok, out) = openssl_verify_crl(
        &dir,
        std::slice::from_ref(&root.cert),
        &chain,
        Some(&fetch_crl(&server)),
    );
    assert!(!ok && out.contains("certificate revoked"), "{out}");
    let took = until_refused(&config, db, &["certificate revoked"], revoked_at).await;
    println!("upstream: revoked → refused in {took:?}");

    // 3. The intermediate rotates. Just before, the service's SVID is
    //    issued again (by revoking it), so that it predates the rotation
    //    and is not due for renewal until seconds after it.
    let activation = activation_at(&intermediate);
    let wait = activation as f64 - 1.5 - unix_now();
    assert!(
        wait > 0.0,
        "the intermediate activates at {activation}, too soon after the start"
    );
    tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    let old_db_serial = serial_of(&service_chain(&source)[0]);
    server.cli_ok(&["svid", "revoke", "--serial", &old_db_serial]);
    let mut updates = source.updates();
    let db_chain = loop {
        let current = source.svid().map(|s| s.chain().to_vec());
        match current {
            // While the service's SVID is re-issued, the stream briefly
            // carries only this uid's other SVID ("client"): wait for "db".
            Some(chain) if is_new(&chain[0], &db_id, &old_db_serial) => break chain,
            _ => tokio::time::timeout(Duration::from_secs(10), updates.changed())
                .await
                .expect("the service gets its SVID again")
                .unwrap(),
        }
    };
    assert_eq!(
        db_chain[1], intermediate,
        "the service's SVID must be issued before the rotation"
    );
    let db_serial = serial_of(&db_chain[0]);

    // The rotation: the CRL is re-signed by the new intermediate.
    let new_crl = eventually(Duration::from_secs(20), "the next intermediate", || {
        let crl = fetch_crl(&server);
        (!crl_signed_by(&crl, &intermediate)).then_some(crl)
    });
    let (client_chain, key, bundle) = fetch_with_spiffe(&agent, &client_id).await;
    let client_serial = serial_of(&client_chain[0]);
    let config = client_config(client_chain, key, bundle, &db_id);
    assert_eq!(echo(config.clone(), db).await.unwrap(), "echo: hi\n");
    // What was revoked before the rotation (and has not expired) stays
    // revoked on the new intermediate's CRL.
    assert!(common::agent::crl_serials(&new_crl).contains(&old_db_serial));

    // JWT keys rotate with the CA: a new token is signed by the new key,
    // the stream has pushed it, and the old token stays valid.
    let jwt_after = jwt_client
        .fetch_jwt_svid(["after"], Some(&client_spiffe_id))
        .await
        .unwrap();
    assert_ne!(jwt_after.key_id(), jwt_before.key_id());
    let pushed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let set = jwt_bundles.next().await.unwrap().unwrap();
            if kids(&set).iter().any(|k| k == jwt_after.key_id()) {
                return set;
            }
        }
    })
    .await
    .expect("FetchJWTBundles pushes the new key");
    assert!(kids(&pushed).iter().any(|k| k == jwt_before.key_id()));
    jwt_client
        .validate_jwt_token("before", jwt_before.token())
        .await
        .unwrap();

    // 4. A revocation just after the rotation: the service, still holding
    //    an SVID of the previous intermediate, refuses the client within 1 s.
    server.cli_ok(&["svid", "revoke", "--serial", &client_serial]);
    let revoked_at = Instant::now();
    let took = until_refused(&config, db, &["certificate revoked"], revoked_at).await;
    println!("upstream, just after the rotation: revoked → refused in {took:?}");
    let held = service_chain(&source);
    assert_eq!(
        serial_of(&held[0]),
        db_serial,
        "the service's SVID was renewed before the check: it no longer predates the rotation"
    );
    assert_eq!(held[1], intermediate);
    assert!(
        took < Duration::from_secs(1),
        "a revocation just after the rotation took {took:?} to be enforced"
    );
}
