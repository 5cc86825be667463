//! End-to-end: a flood of refused `Attest` calls from one source costs a
//! handful of audit records, not one fsynced record each; the first refusal
//! is recorded at once and the counts add up.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lanyard_test_support as common;

use std::time::{Duration, Instant};

use common::*;
use lanyard_ca::SvidKey;
use lanyard_proto::node::v1::{AttestRequest, JoinTokenAttestation, attest_request::Method};

const FLOOD: u64 = 300;

#[tokio::test(flavor = "multi_thread")]
async fn refused_attestations_are_audited_once_per_source_and_window() {
    let server = Server::start_with(&["--attestation-refusal-window", "2s"]);
    let key = SvidKey::generate().unwrap();
    let mut client = node_channel(&server, None).await.unwrap();
    let started = Instant::now();
    let refuse = |i: u64| AttestRequest {
        method: Some(Method::JoinToken(JoinTokenAttestation {
            token: format!("{i:064x}"),
        })),
        csr: key.csr_der().unwrap(),
    };
    for i in 0..FLOOD {
        let err = client.attest(refuse(i)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    }
    let flood_took = started.elapsed();

    // The first refusal is on record at once.
    let records = |server: &Server| -> Vec<serde_json::Value> {
        server
            .cli_ok(&["audit", "export"])
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|r| r["action"] == "attestation_refused")
            .collect()
    };
    let during = records(&server);
    assert!(!during.is_empty(), "the first refusal was not recorded");
    assert_eq!(
        during[0]["details"]["source"], "127.0.0.1",
        "{:?}",
        during[0]
    );
    assert!(
        during[0]["details"].get("count").is_none(),
        "{:?}",
        during[0]
    );

    // After the window closes, the next refusal writes the count.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    client.attest(refuse(FLOOD)).await.unwrap_err();
    let after = records(&server);
    let windows = flood_took.as_secs() / 2 + 2;
    assert!(
        after.len() as u64 <= 2 * windows + 1,
        "{} records for {} refusals in {flood_took:?}",
        after.len(),
        FLOOD + 1
    );
    let total: u64 = after
        .iter()
        .map(|r| match r["details"].get("count") {
            Some(c) => c.as_str().unwrap().parse::<u64>().unwrap(),
            None => 1,
        })
        .sum();
    assert_eq!(total, FLOOD + 1, "{after:#?}");
    server.cli_ok(&["audit", "verify"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn open_refusal_counts_are_audited_at_shutdown() {
    const REFUSED: u64 = 50;
    // A window far longer than the test: only the shutdown can write it.
    let mut server = Server::start_with(&["--attestation-refusal-window", "1h"]);
    let key = SvidKey::generate().unwrap();
    let mut client = node_channel(&server, None).await.unwrap();
    for i in 0..REFUSED {
        let request = AttestRequest {
            method: Some(Method::JoinToken(JoinTokenAttestation {
                token: format!("{i:064x}"),
            })),
            csr: key.csr_der().unwrap(),
        };
        client.attest(request).await.unwrap_err();
    }
    drop(client);
    assert!(server.terminate().success(), "{}", server.log());
    server.spawn();

    let refused: Vec<serde_json::Value> = server
        .cli_ok(&["audit", "export"])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["action"] == "attestation_refused")
        .collect();
    assert_eq!(refused.len(), 2, "{refused:#?}");
    assert_eq!(refused[1]["details"]["count"], (REFUSED - 1).to_string());
    assert_eq!(refused[1]["details"]["source"], "127.0.0.1");
    server.cli_ok(&["audit", "verify"]);
}
