//! End to end: with a 20 s SVID TTL a streaming Workload API client (the
//! `spiffe` crate, unmodified) sees the SVID rotate at least twice, each
//! SVID valid when it arrives and before the previous one expires.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lanyard_test_support as common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{
    Server, TD,
    agent::{Agent, eventually, register_self},
};
use futures::StreamExt;
use spiffe::WorkloadApiClient;

fn validity(der: &[u8]) -> (String, i64, i64) {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    (
        cert.raw_serial_as_string(),
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    )
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_sees_two_rotations_without_gap() {
    let server = Server::start_with(&["--default-x509-svid-ttl", "20s"]);
    let agent = Agent::start(&server);
    register_self(&server, &agent, "e2e/rotating");
    let id = format!("spiffe://{TD}/e2e/rotating");
    // Wait until the entry has reached the agent and its SVID is served.
    eventually(Duration::from_secs(20), "the SVID to be served", || {
        let out = agent.api(&["fetch", "x509"]);
        String::from_utf8_lossy(&out.stdout)
            .contains(&id)
            .then_some(())
    });

    let client = WorkloadApiClient::connect_to(agent.endpoint())
        .await
        .unwrap();
    let mut stream = client.stream_x509_contexts().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(75);
    let mut serials: Vec<String> = Vec::new();
    let mut previous_not_after: Option<i64> = None;
    while serials.len() < 3 {
        let ctx = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("only {} SVIDs seen:\n{}", serials.len(), agent.log()))
            .expect("stream ended")
            .expect("stream error");
        let svid = ctx.default_svid().expect("an SVID");
        assert_eq!(svid.spiffe_id().to_string(), id);
        let (serial, not_before, not_after) = validity(svid.leaf().as_bytes());
        let t = now();
        assert!(
            not_before <= t && t < not_after,
            "SVID {serial} not valid at {t}: {not_before}..{not_after}"
        );
        if let Some(prev) = previous_not_after {
            assert!(
                t < prev,
                "gap: new SVID arrived at {t}, the previous one expired at {prev}"
            );
        }
        if serials.last() != Some(&serial) {
            serials.push(serial);
            previous_not_after = Some(not_after);
        }
    }
    assert_eq!(serials.len(), 3, "{serials:?}");
}
