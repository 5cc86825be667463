//! End-to-end: node attestation, agent standing and SVID signing against a
//! real `lanyard-server` process over real TLS.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lanyard_test_support as common;

use std::time::Duration;

use common::*;
use lanyard_ca::SvidKey;
use lanyard_proto::node::v1::{
    AttestRequest, BatchNewX509svidRequest, NewX509svidParams, RenewAgentRequest, SyncRequest,
    attest_request::Method, batch_new_x509svid_result::Result as R,
};
use rustls_pki_types::{CertificateDer, UnixTime};

fn agent_id(chain: &[CertificateDer<'_>]) -> String {
    lanyard_identity::check_x509_svid(&chain[0])
        .unwrap()
        .spiffe_id
        .to_string()
}

fn webpki_verify(bundle: &[CertificateDer<'_>], chain: &[CertificateDer<'_>]) {
    let anchors: Vec<_> = bundle
        .iter()
        .map(|c| webpki::anchor_from_trusted_cert(c).unwrap())
        .collect();
    let ee = webpki::EndEntityCert::try_from(&chain[0]).unwrap();
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &chain[1..],
        UnixTime::now(),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn join_token_attestation_issues_a_verifiable_agent_svid() {
    let server = Server::start();
    let token = server.token();
    let agent = attest(&server, &token).await.unwrap();
    let id = agent_id(&agent.chain);
    assert!(
        id.starts_with(&format!("spiffe://{TD}/lanyard/agent/join_token/")),
        "{id}"
    );
    // The secret itself never appears in the agent ID.
    assert!(!id.contains(&token[..16]));
    let bundle = server.bundle();
    webpki_verify(&bundle, &agent.chain);
    let (ok, text) = openssl_verify(server.dir.path(), &bundle, &agent.chain);
    assert!(ok, "openssl verify: {text}");

    let agents = server.cli_json(&["agent", "list"]);
    assert_eq!(agents.as_array().unwrap().len(), 1);
    assert_eq!(agents[0]["spiffe_id"], id.as_str());
    assert_eq!(agents[0]["attestation_type"], "join_token");
}

#[tokio::test(flavor = "multi_thread")]
async fn join_tokens_are_single_use_and_expire() {
    let server = Server::start();
    let token = server.token();
    attest(&server, &token).await.unwrap();
    let again = attest(&server, &token).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::PermissionDenied);
    assert!(
        again.message().contains("already used"),
        "{}",
        again.message()
    );

    let short = server
        .cli_ok(&["token", "generate", "--ttl", "1s"])
        .trim()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = attest(&server, &short).await.unwrap_err();
    assert_eq!(expired.code(), tonic::Code::PermissionDenied);
    assert!(
        expired.message().contains("expired"),
        "{}",
        expired.message()
    );

    let unknown = attest(&server, &"ab".repeat(32)).await.unwrap_err();
    assert!(
        unknown.message().contains("unknown"),
        "{}",
        unknown.message()
    );
    let malformed = attest(&server, "not-a-token").await.unwrap_err();
    assert_eq!(malformed.code(), tonic::Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_attestations_with_one_token_give_one_agent() {
    let server = Server::start();
    let token = server.token();
    let attempts = futures::future::join_all((0..50).map(|_| attest(&server, &token))).await;
    let ok = attempts.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "exactly one attestation must win");
    for r in attempts.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.code(), tonic::Code::PermissionDenied, "{r:?}");
    }
    assert_eq!(
        server
            .cli_json(&["agent", "list"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

fn create_entry(server: &Server, spiffe_id: &str, parent: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "entry",
        "create",
        "--spiffe-id",
        spiffe_id,
        "--parent-id",
        parent,
        "--selector",
        "unix:uid:1000",
    ];
    args.extend_from_slice(extra);
    server.cli_ok(&args).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_gets_svids_only_for_its_own_entries() {
    let server = Server::start();
    let agent = attest(&server, &server.token()).await.unwrap();
    let other = attest(&server, &server.token()).await.unwrap();
    let mine = create_entry(
        &server,
        &format!("spiffe://{TD}/web"),
        &agent_id(&agent.chain),
        &["--dns-name", "web.internal", "--x509-svid-ttl", "10m"],
    );
    let theirs = create_entry(
        &server,
        &format!("spiffe://{TD}/db"),
        &agent_id(&other.chain),
        &[],
    );

    let mut client = node_channel(&server, Some(&agent)).await.unwrap();
    let key = SvidKey::generate().unwrap();
    let csr = key.csr_der().unwrap();
    let resp = client
        .batch_new_x509svid(BatchNewX509svidRequest {
            params: vec![
                NewX509svidParams {
                    entry_id: mine.clone(),
                    csr: csr.clone(),
                },
                NewX509svidParams {
                    entry_id: theirs.clone(),
                    csr: csr.clone(),
                },
            ],
        })
        .await
        .unwrap()
        .into_inner();
    let Some(R::Svid(svid)) = &resp.results[0].result else {
        panic!("{:?}", resp.results[0])
    };
    let chain = chain_of(svid);
    let summary = lanyard_identity::check_x509_svid(&chain[0]).unwrap();
    assert_eq!(summary.spiffe_id.to_string(), format!("spiffe://{TD}/web"));
    assert_eq!(summary.dns_names, ["web.internal"]);
    assert!(summary.not_after - summary.not_before <= 600 + 60);
    let bundle = server.bundle();
    webpki_verify(&bundle, &chain);
    let (ok, text) = openssl_verify(server.dir.path(), &bundle, &chain);
    assert!(ok, "openssl verify: {text}");

    let Some(R::Error(e)) = &resp.results[1].result else {
        panic!("{:?}", resp.results[1])
    };
    assert_eq!(
        e.code,
        tonic::Code::PermissionDenied as i32,
        "{}",
        e.message
    );

    // The issued SVID is on record.
    let svids = server.cli_json(&["svid", "list", "--spiffe-id", &format!("spiffe://{TD}/web")]);
    assert_eq!(svids[0]["serial"], svid.serial.as_str());
    assert_eq!(svids[0]["entry_id"], mine.as_str());

    // No one may register the server's own ID (or anything under /lanyard/).
    let out = server.cli(&[
        "entry",
        "create",
        "--spiffe-id",
        &format!("spiffe://{TD}/lanyard/server"),
        "--parent-id",
        &agent_id(&agent.chain),
        "--selector",
        "unix:uid:0",
    ]);
    assert_eq!(exit_code(&out), 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("reserved"));

    // Calls without an agent SVID are refused.
    let mut anonymous = node_channel(&server, None).await.unwrap();
    let err = anonymous
        .batch_new_x509svid(BatchNewX509svidRequest { params: vec![] })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_csr_yields_only_the_entrys_fields() {
    let server = Server::start();
    let agent = attest(&server, &server.token()).await.unwrap();
    let entry = create_entry(
        &server,
        &format!("spiffe://{TD}/batch"),
        &agent_id(&agent.chain),
        &["--x509-svid-ttl", "5m"],
    );

    // A CSR that asks for a CA certificate, extra SANs, another SPIFFE ID
    // and ten years of validity.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["evil.example".to_owned()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.subject_alt_names.push(rcgen::SanType::URI(
        rcgen::string::Ia5String::try_from(format!("spiffe://{TD}/lanyard/server")).unwrap(),
    ));
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    params.not_after = rcgen::date_time_ymd(2040, 1, 1);
    let csr = params.serialize_request(&key).unwrap().der().to_vec();

    let mut client = node_channel(&server, Some(&agent)).await.unwrap();
    let resp = client
        .batch_new_x509svid(BatchNewX509svidRequest {
            params: vec![NewX509svidParams {
                entry_id: entry,
                csr,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let Some(R::Svid(svid)) = &resp.results[0].result else {
        panic!("{:?}", resp.results[0])
    };
    let chain = chain_of(svid);
    let summary = lanyard_identity::check_x509_svid(&chain[0]).unwrap();
    assert_eq!(
        summary.spiffe_id.to_string(),
        format!("spiffe://{TD}/batch")
    );
    assert!(summary.dns_names.is_empty());
    assert!(
        summary.not_after - summary.not_before <= 300 + 60,
        "TTL comes from the entry"
    );
    let (_, cert) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    assert!(!cert.is_ca());
    let san = cert.subject_alternative_name().unwrap().unwrap();
    assert_eq!(san.value.general_names.len(), 1, "only the entry's URI SAN");
    // The public key is the CSR's.
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn banned_agents_get_nothing_and_evicted_agents_must_reattest() {
    let server = Server::start();
    let agent = attest(&server, &server.token()).await.unwrap();
    let id = agent_id(&agent.chain);
    let entry = create_entry(&server, &format!("spiffe://{TD}/svc"), &id, &[]);
    let mut client = node_channel(&server, Some(&agent)).await.unwrap();
    let mut sync = client
        .sync(SyncRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = sync.message().await.unwrap().unwrap();
    assert_eq!(first.entries.len(), 1);

    server.cli_ok(&["agent", "ban", &id]);
    // The open Sync stream is closed with the reason.
    let end = tokio::time::timeout(Duration::from_secs(5), sync.message())
        .await
        .unwrap();
    let status = end.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert!(status.message().contains("banned"));
    let key = SvidKey::generate().unwrap();
    let err = client
        .batch_new_x509svid(BatchNewX509svidRequest {
            params: vec![NewX509svidParams {
                entry_id: entry,
                csr: key.csr_der().unwrap(),
            }],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert_eq!(server.cli_json(&["agent", "show", &id])["banned"], true);

    // Evicted: refused until it attests again with a new token.
    let other = attest(&server, &server.token()).await.unwrap();
    let other_id = agent_id(&other.chain);
    server.cli_ok(&["agent", "evict", &other_id]);
    let mut c2 = node_channel(&server, Some(&other)).await.unwrap();
    let err = c2
        .renew_agent(RenewAgentRequest {
            csr: key.csr_der().unwrap(),
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("evicted"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_pushes_entry_changes_and_renewal_rotates_the_agent_svid() {
    let server = Server::start();
    let agent = attest(&server, &server.token()).await.unwrap();
    let id = agent_id(&agent.chain);
    let mut client = node_channel(&server, Some(&agent)).await.unwrap();
    let mut sync = client
        .sync(SyncRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = sync.message().await.unwrap().unwrap();
    assert!(first.entries.is_empty());
    assert!(!first.bundle.is_empty());

    let entry = create_entry(&server, &format!("spiffe://{TD}/pushed"), &id, &[]);
    let update = tokio::time::timeout(Duration::from_secs(2), sync.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(update.entries.len(), 1);
    assert_eq!(update.entries[0].id, entry);
    server.cli_ok(&["entry", "delete", &entry]);
    let update = tokio::time::timeout(Duration::from_secs(2), sync.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(update.entries.is_empty());

    let key = SvidKey::generate().unwrap();
    let renewed = client
        .renew_agent(RenewAgentRequest {
            csr: key.csr_der().unwrap(),
        })
        .await
        .unwrap()
        .into_inner();
    let chain = chain_of(renewed.svid.as_ref().unwrap());
    assert_eq!(agent_id(&chain), id);
    assert_ne!(chain[0], agent.chain[0]);
    // The old SVID is superseded; the new one works.
    let err = client
        .renew_agent(RenewAgentRequest {
            csr: key.csr_der().unwrap(),
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("superseded"), "{}", err.message());
    let mut fresh = node_channel(&server, Some(&NodeIdentity { chain, key }))
        .await
        .unwrap();
    fresh.sync(SyncRequest::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn x509pop_attestation_proves_possession() {
    // A node CA and a node certificate, generated here.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "node CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let node_key = rcgen::KeyPair::generate().unwrap();
    let mut node_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    node_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "node-7");
    let node_cert = node_params.signed_by(&node_key, &issuer).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let bundle_path = dir.path().join("node-ca.pem");
    std::fs::write(&bundle_path, ca_cert.pem()).unwrap();
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!("[x509pop]\nca_bundle_path = {:?}\n", bundle_path),
    )
    .unwrap();
    let server = Server::start_with(&["--config", config.to_str().unwrap()]);

    let svid_key = SvidKey::generate().unwrap();
    let csr = svid_key.csr_der().unwrap();
    let challenge = lanyard_identity::x509pop_challenge(&csr);
    let signer = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &node_key.serialize_der(),
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    let signature = signer
        .sign(&ring::rand::SystemRandom::new(), &challenge)
        .unwrap()
        .as_ref()
        .to_vec();
    let attestation = |signature: Vec<u8>, csr: Vec<u8>| AttestRequest {
        method: Some(Method::X509pop(
            lanyard_proto::node::v1::X509PopAttestation {
                cert_chain: vec![node_cert.der().to_vec()],
                signature,
            },
        )),
        csr,
    };
    let mut client = node_channel(&server, None).await.unwrap();
    // A proof made for another CSR does not verify.
    let other_csr = SvidKey::generate().unwrap().csr_der().unwrap();
    let err = client
        .attest(attestation(signature.clone(), other_csr))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.message().contains("possession"), "{}", err.message());

    let resp = client
        .attest(attestation(signature, csr))
        .await
        .unwrap()
        .into_inner();
    let id = resp.svid.unwrap().spiffe_id;
    assert!(
        id.starts_with(&format!("spiffe://{TD}/lanyard/agent/x509pop/")),
        "{id}"
    );
    let agent = server.cli_json(&["agent", "show", &id]);
    assert_eq!(agent["selectors"][0], "x509pop:subject:cn:node-7");

    // A certificate that does not chain to the x509pop CAs (here the CA
    // itself, presented as a node) with a bogus proof is refused.
    let mut c = node_channel(&server, None).await.unwrap();
    let err = c
        .attest(AttestRequest {
            method: Some(Method::X509pop(
                lanyard_proto::node::v1::X509PopAttestation {
                    cert_chain: vec![ca_cert.der().to_vec()],
                    signature: vec![1, 2, 3],
                },
            )),
            csr: SvidKey::generate().unwrap().csr_der().unwrap(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
}
