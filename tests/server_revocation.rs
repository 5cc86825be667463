//! End-to-end: revocation on the server: the CLI, the triggers, the CRL on
//! `GET /crl` checked with openssl, the push on Sync, and durability.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lanyard_test_support as common;

use std::{
    io::{Read, Write},
    time::Duration,
};

use common::*;
use lanyard_ca::SvidKey;
use lanyard_proto::node::v1::{
    BatchNewX509svidRequest, NewX509svidParams, SyncRequest, batch_new_x509svid_result::Result as R,
};
use rustls_pki_types::CertificateDer;

fn crl_number(der: &[u8]) -> u64 {
    use x509_parser::prelude::FromDer;
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(der).unwrap();
    crl.crl_number().unwrap().to_string().parse().unwrap()
}

async fn issue(
    server: &Server,
    agent: &NodeIdentity,
    entry: &str,
) -> (String, Vec<CertificateDer<'static>>) {
    let mut client = node_channel(server, Some(agent)).await.unwrap();
    let resp = client
        .batch_new_x509svid(BatchNewX509svidRequest {
            params: vec![NewX509svidParams {
                entry_id: entry.into(),
                csr: SvidKey::generate().unwrap().csr_der().unwrap(),
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let Some(R::Svid(svid)) = &resp.results[0].result else {
        panic!("{:?}", resp.results[0])
    };
    (svid.serial.clone(), chain_of(svid))
}

fn agent_id(agent: &NodeIdentity) -> String {
    lanyard_identity::check_x509_svid(&agent.chain[0])
        .unwrap()
        .spiffe_id
        .to_string()
}

fn entry(server: &Server, path: &str, parent: &str) -> String {
    server
        .cli_ok(&[
            "entry",
            "create",
            "--spiffe-id",
            &format!("spiffe://{TD}{path}"),
            "--parent-id",
            parent,
            "--selector",
            "unix:uid:1000",
        ])
        .trim()
        .to_owned()
}

fn openssl_crl_check(server: &Server, chain: &[CertificateDer<'_>], crl_der: &[u8]) -> String {
    openssl_verify_crl(server.dir.path(), &server.bundle(), chain, Some(crl_der)).1
}

#[tokio::test(flavor = "multi_thread")]
async fn revoked_svid_is_on_the_crl_that_openssl_enforces() {
    let server = Server::start();
    let agent = attest(&server, &server.token()).await.unwrap();
    let e = entry(&server, "/payments", &agent_id(&agent));
    let (bad, bad_chain) = issue(&server, &agent, &e).await;
    let (_good, good_chain) = issue(&server, &agent, &e).await;
    let before = crl_number(&fetch_crl(&server));

    // Accepted in any case, with colons.
    let with_colons: String = bad
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    let out = server.cli_json(&[
        "svid",
        "revoke",
        "--serial",
        &with_colons,
        "--reason",
        "key-compromise",
    ]);
    assert_eq!(out["serials"][0], bad.as_str());
    // Revoking twice is harmless.
    let again = server.cli_json(&["svid", "revoke", "--serial", &bad]);
    assert_eq!(again["serials"], serde_json::json!([]));

    let crl = fetch_crl(&server);
    assert!(crl_number(&crl) > before, "CRL number moves forward");
    let text = openssl_crl_check(&server, &bad_chain, &crl);
    assert!(text.contains("certificate revoked"), "{text}");
    let text = openssl_crl_check(&server, &good_chain, &crl);
    assert!(text.contains(": OK"), "{text}");

    let shown = server.cli_ok(&["crl", "show"]);
    assert!(
        shown.contains(&bad) && shown.contains("key-compromise"),
        "{shown}"
    );
    let pem = server.cli_ok(&["crl", "show", "--format", "pem"]);
    assert!(pem.starts_with("-----BEGIN X509 CRL-----"));
    let svids = server.cli_json(&[
        "svid",
        "list",
        "--spiffe-id",
        &format!("spiffe://{TD}/payments"),
    ]);
    let revoked: Vec<bool> = svids
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["revoked"].as_bool().unwrap())
        .collect();
    assert_eq!(revoked.iter().filter(|r| **r).count(), 1);

    // Bad input says what is accepted.
    let out = server.cli(&["svid", "revoke", "--serial", "xyz"]);
    assert_eq!(exit_code(&out), 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("hexadecimal"));
    let out = server.cli(&[
        "svid",
        "revoke",
        "--serial",
        "abcdef0123",
        "--reason",
        "because",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("key-compromise"));
    let out = server.cli(&["svid", "revoke", "--serial", "abcdef0123"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no SVID with serial"));
}

#[tokio::test(flavor = "multi_thread")]
async fn revocation_survives_sigkill_and_the_crl_number_never_goes_back() {
    let mut server = Server::start();
    let agent = attest(&server, &server.token()).await.unwrap();
    let e = entry(&server, "/kept", &agent_id(&agent));
    let (serial, _) = issue(&server, &agent, &e).await;
    server.cli_ok(&["svid", "revoke", "--serial", &serial]);
    let before = crl_number(&fetch_crl(&server));
    server.restart();
    let crl = fetch_crl(&server);
    assert!(
        crl_number(&crl) > before,
        "number after restart {} <= {before}",
        crl_number(&crl)
    );
    assert!(server.cli_ok(&["crl", "show"]).contains(&serial));
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_an_entry_and_banning_an_agent_revoke_what_they_issued() {
    let server = Server::start();
    let agent = attest(&server, &server.token()).await.unwrap();
    let id = agent_id(&agent);
    let e1 = entry(&server, "/one", &id);
    let e2 = entry(&server, "/two", &id);
    let (s1, _) = issue(&server, &agent, &e1).await;
    let (s2, _) = issue(&server, &agent, &e2).await;

    let mut client = node_channel(&server, Some(&agent)).await.unwrap();
    let mut sync = client
        .sync(SyncRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = sync.message().await.unwrap().unwrap();
    assert!(!first.crl.is_empty(), "Sync carries the CRL");

    server.cli_ok(&["entry", "delete", &e1]);
    // The push carries the new CRL (and the entry is gone).
    let mut pushed = None;
    for _ in 0..3 {
        let m = tokio::time::timeout(Duration::from_secs(2), sync.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if m.crl != first.crl {
            pushed = Some(m);
            break;
        }
    }
    let pushed = pushed.expect("a Sync message with the new CRL");
    assert!(crl_number(&pushed.crl) > crl_number(&first.crl));
    let shown = server.cli_ok(&["crl", "show"]);
    assert!(shown.contains(&s1) && !shown.contains(&s2), "{shown}");

    let agent_serial = lanyard_identity::check_x509_svid(&agent.chain[0])
        .unwrap()
        .serial;
    server.cli_ok(&["agent", "ban", &id]);
    let shown = server.cli_ok(&["crl", "show"]);
    assert!(
        shown.contains(&s2) && shown.contains(&agent_serial),
        "agent SVID and its SVIDs: {shown}"
    );
}

/// `GET /metrics` after an attestation, a signing and a revocation.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_what_happened() {
    let server = Server::start();
    let agent = attest(&server, &server.token()).await.unwrap();
    let e = entry(&server, "/metered", &agent_id(&agent));
    let (serial, _) = issue(&server, &agent, &e).await;
    server.cli_ok(&["svid", "revoke", "--serial", &serial]);
    let _ = attest(&server, "00".repeat(32).as_str()).await.unwrap_err();

    let mut s = std::net::TcpStream::connect(server.http_addr).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
    };
    assert_eq!(
        value("lanyard_server_svids_issued_total{kind=\"workload\"}"),
        1.0
    );
    assert!(value("lanyard_server_svids_issued_total{kind=\"agent\"}") >= 1.0);
    assert!(value("lanyard_server_svids_issued_total{kind=\"server\"}") >= 1.0);
    assert_eq!(
        value("lanyard_server_attestations_total{method=\"join_token\",outcome=\"ok\"}"),
        1.0
    );
    assert_eq!(
        value("lanyard_server_attestations_total{method=\"join_token\",outcome=\"refused\"}"),
        1.0
    );
    assert_eq!(value("lanyard_server_revocations_total"), 1.0);
    assert_eq!(value("lanyard_server_crl_revoked_serials"), 1.0);
    assert!(value("lanyard_server_crl_number") >= 2.0);
    assert!(value("lanyard_server_crl_size_bytes") > 100.0);
    assert!(value("lanyard_server_crl_published_timestamp_seconds") > 1.7e9);
    assert!(value("lanyard_server_svid_signing_duration_seconds_count") >= 3.0);
}
