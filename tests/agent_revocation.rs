//! End to end: revoking a workload's SVID with the operator CLI makes the
//! agent drop it from every open Workload API stream and issue a new one,
//! pushed with the CRL that lists the old serial; revoking the agent's own
//! SVID stops the agent.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lanyard_test_support as common;

use std::time::Duration;

use common::{
    Server, TD,
    agent::{
        Agent, crl_serials, leaf_serial, open_bundles_stream, open_x509_stream, register_self,
        stream_serving,
    },
};
use lanyard_proto::workload::X509svidResponse;

/// Generous: a deadline for polling, not a measurement.
const DEADLINE: Duration = Duration::from_secs(30);

fn serials(msg: &X509svidResponse) -> Vec<String> {
    msg.svids
        .iter()
        .map(|s| leaf_serial(&s.x509_svid))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_svid_is_replaced_on_the_open_stream_and_never_served_again() {
    let server = Server::start();
    let agent = Agent::start(&server);
    register_self(&server, &agent, "e2e/revoked");
    let id = format!("spiffe://{TD}/e2e/revoked");

    let (mut stream, first) = stream_serving(&agent, &id).await;
    assert_eq!(first.svids.len(), 1);
    let revoked = leaf_serial(&first.svids[0].x509_svid);
    let mut bundles = open_bundles_stream(&agent).await.unwrap();
    let first_bundles = bundles.message().await.unwrap().unwrap();
    assert!(
        first_bundles
            .crl
            .iter()
            .all(|c| !crl_serials(c).contains(&revoked))
    );

    server.cli_ok(&["svid", "revoke", "--serial", &revoked.to_uppercase()]);

    // The next message the stream carries replaces the revoked SVID.
    let replaced = tokio::time::timeout(DEADLINE, async {
        loop {
            let msg = stream
                .message()
                .await
                .unwrap()
                .expect("the stream stays open while the SVID is re-issued");
            assert!(
                !serials(&msg).contains(&revoked),
                "the revoked SVID was served again: {:?}",
                serials(&msg)
            );
            if !msg.svids.is_empty() {
                return msg;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no new SVID on the stream\n{}", agent.log()));
    assert_eq!(replaced.svids.len(), 1);
    assert_eq!(replaced.svids[0].spiffe_id, id);
    let renewed = leaf_serial(&replaced.svids[0].x509_svid);
    assert_ne!(renewed, revoked);
    assert_eq!(replaced.crl.len(), 1, "the trust domain's CRL");
    let listed = crl_serials(&replaced.crl[0]);
    assert!(listed.contains(&revoked), "{listed:?} lacks {revoked}");
    assert!(!listed.contains(&renewed));

    // FetchX509Bundles streams get the new CRL too.
    let with_crl = tokio::time::timeout(DEADLINE, async {
        loop {
            let msg = bundles.message().await.unwrap().expect("stream open");
            if msg.crl.iter().any(|c| crl_serials(c).contains(&revoked)) {
                return msg;
            }
        }
    })
    .await
    .expect("a bundles message with the new CRL");
    assert!(with_crl.bundles.contains_key(&format!("spiffe://{TD}")));

    // A new caller gets the new SVID, never the revoked one.
    let mut fresh = open_x509_stream(&agent).await.unwrap();
    let msg = fresh.message().await.unwrap().unwrap();
    assert_eq!(serials(&msg), std::slice::from_ref(&renewed));

    // Nothing more arrives on the old stream that brings the revoked SVID
    // back (a short look, not a timing assertion).
    if let Ok(next) = tokio::time::timeout(Duration::from_secs(2), stream.message()).await
        && let Some(msg) = next.unwrap()
    {
        assert!(!serials(&msg).contains(&revoked));
    }
    let log = agent.log();
    assert!(log.contains("SVID is on the CRL"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_the_agent_svid_stops_the_agent_with_a_clear_reason() {
    let server = Server::start();
    let mut agent = Agent::start(&server);
    register_self(&server, &agent, "e2e/orphan");
    let id = format!("spiffe://{TD}/e2e/orphan");
    let (mut stream, _) = stream_serving(&agent, &id).await;

    let pem = std::fs::read(agent.data_dir().join("agent_svid.pem")).unwrap();
    let chain: Vec<rustls_pki_types::CertificateDer<'static>> =
        rustls_pki_types::pem::PemObject::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .unwrap();
    let agent_serial = leaf_serial(&chain[0]);
    server.cli_ok(&["svid", "revoke", "--serial", &agent_serial]);

    // Serving stops: the open stream ends with Unavailable.
    let ended = tokio::time::timeout(DEADLINE, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
    .await
    .expect("the stream ends");
    if let Some(status) = ended {
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    }
    let status = agent.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(1), "{}", agent.log());
    let log = agent.log();
    assert!(log.contains("agent SVID was revoked"), "{log}");
    assert!(log.contains(&agent_serial), "{log}");
    assert!(
        !agent.data_dir().join("agent_svid.key").exists(),
        "the revoked agent SVID is forgotten"
    );
}
