//! End to end: the agent's life around its entries and its server — entry
//! deletion reaches open streams, a restart needs no token, a stopped
//! server does not stop serving, refused and banned agents exit non-zero.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lanyard_test_support as common;

use std::time::Duration;

use common::{
    Server, TD,
    agent::{Agent, eventually, open_x509_stream, register_self, stream_serving},
};

fn served(agent: &Agent, id: &str) -> Option<String> {
    let out = agent.api(&["fetch", "x509"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success() && text.contains(id)).then_some(text)
}

fn wait_served(agent: &Agent, id: &str) -> String {
    eventually(
        Duration::from_secs(20),
        &format!("{id} to be served"),
        || served(agent, id),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_the_entry_ends_the_open_stream_with_no_identity_issued() {
    let server = Server::start();
    let agent = Agent::start(&server);
    let entry = register_self(&server, &agent, "e2e/deleted");
    let id = format!("spiffe://{TD}/e2e/deleted");
    let (mut stream, _) = stream_serving(&agent, &id).await;
    server.cli_ok(&["entry", "delete", &entry]);
    let status = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("stream ended without an error"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the deletion reached the stream");
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    assert_eq!(status.message(), "no identity issued");
    // And a new call is refused the same way.
    let out = agent.api(&["fetch", "x509"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no identity issued"));
}

/// SIGTERM with a workload's stream open: the stream is told the agent is
/// shutting down and the agent exits cleanly within its drain time, rather
/// than waiting for the workload to hang up.
#[tokio::test(flavor = "multi_thread")]
async fn shutdown_ends_open_streams_and_exits_promptly() {
    let server = Server::start();
    let mut agent = Agent::start(&server);
    register_self(&server, &agent, "e2e/shutdown");
    let id = format!("spiffe://{TD}/e2e/shutdown");
    let (mut stream, _) = stream_serving(&agent, &id).await;
    let started = std::time::Instant::now();
    let status = tokio::task::block_in_place(|| agent.terminate());
    let took = started.elapsed();
    assert!(
        status.success(),
        "graceful shutdown: {status}\n{}",
        agent.log()
    );
    assert!(
        took < Duration::from_secs(5),
        "took {took:?}\n{}",
        agent.log()
    );
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the stream ended");
    match ended {
        Err(status) => {
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
            assert!(status.message().contains("shutting down"), "{status:?}");
        }
        Ok(other) => panic!("stream went on after shutdown: {other:?}"),
    }
}

#[test]
fn restart_without_token_serves_again() {
    let server = Server::start();
    let mut agent = Agent::start(&server);
    register_self(&server, &agent, "e2e/restart");
    let id = format!("spiffe://{TD}/e2e/restart");
    wait_served(&agent, &id);
    let agent_id = agent.spiffe_id();

    let status = agent.terminate();
    assert!(
        status.success(),
        "graceful shutdown: {status}\n{}",
        agent.log()
    );
    agent.spawn(None, &[]);
    agent.wait_ready();
    wait_served(&agent, &id);
    assert_eq!(
        agent.spiffe_id(),
        agent_id,
        "the stored agent identity was re-used"
    );
}

#[test]
fn server_stopped_agent_keeps_serving_its_cached_svid() {
    let mut server = Server::start();
    let agent = Agent::start(&server);
    register_self(&server, &agent, "e2e/offline");
    let id = format!("spiffe://{TD}/e2e/offline");
    let before = wait_served(&agent, &id);
    server.kill();
    // New connections after the server is gone still get the cached SVID.
    for _ in 0..3 {
        let now = served(&agent, &id)
            .unwrap_or_else(|| panic!("not served with the server down:\n{}", agent.log()));
        assert_eq!(now, before);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(agent.healthy());

    // The server comes back: the agent reconnects and new entries reach it.
    server.spawn();
    register_self(&server, &agent, "e2e/back-online");
    let back = format!("spiffe://{TD}/e2e/back-online");
    eventually(
        Duration::from_secs(40),
        "an entry registered after the server restart",
        || served(&agent, &back),
    );
}

#[test]
fn refused_attestation_exits_non_zero_with_the_reason() {
    let server = Server::start();
    let mut agent = Agent::prepare(&server);
    let token = server.token();
    // Use it once, so the agent's attempt is refused as "already used".
    agent.spawn(Some(&token), &[]);
    agent.wait_ready();
    agent.kill();
    std::fs::remove_dir_all(agent.data_dir()).unwrap();
    agent.spawn(Some(&token), &[]);
    let status = agent.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "{}", agent.log());
    let log = agent.log();
    assert!(log.contains("attestation refused"), "{log}");
    assert!(log.contains("already used"), "{log}");
}

#[test]
fn banned_agent_stops_serving_and_exits() {
    let server = Server::start();
    let mut agent = Agent::start(&server);
    register_self(&server, &agent, "e2e/banned");
    let id = format!("spiffe://{TD}/e2e/banned");
    wait_served(&agent, &id);
    let agent_id = agent.spiffe_id();
    server.cli_ok(&["agent", "ban", &agent_id]);
    let status = agent.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "{}", agent.log());
    let log = agent.log();
    assert!(log.contains("banned"), "{log}");
    assert!(
        !agent.data_dir().join("agent_svid.key").exists(),
        "the stored agent key was removed"
    );
}

#[test]
fn evicted_agent_exits_and_attests_again_only_with_a_new_token() {
    let server = Server::start();
    let mut agent = Agent::start(&server);
    register_self(&server, &agent, "e2e/evicted");
    let id = format!("spiffe://{TD}/e2e/evicted");
    wait_served(&agent, &id);
    server.cli_ok(&["agent", "evict", &agent.spiffe_id()]);
    let status = agent.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "{}", agent.log());
    assert!(agent.log().contains("evicted"), "{}", agent.log());

    // Without a token there is nothing to attest with.
    agent.spawn(None, &[]);
    let status = agent.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "{}", agent.log());

    // A new token makes a new agent; entries for the old one do not apply.
    agent.spawn(Some(&server.token()), &[]);
    agent.wait_ready();
    register_self(&server, &agent, "e2e/evicted-again");
    wait_served(&agent, &format!("spiffe://{TD}/e2e/evicted-again"));
}

#[tokio::test(flavor = "multi_thread")]
async fn crl_change_is_pushed_to_open_streams() {
    let server = Server::start();
    let agent = Agent::start(&server);
    register_self(&server, &agent, "e2e/kept");
    let dropped = register_self(&server, &agent, "e2e/dropped");
    let kept = format!("spiffe://{TD}/e2e/kept");
    let both = format!("spiffe://{TD}/e2e/dropped");
    eventually(Duration::from_secs(20), "both SVIDs to be served", || {
        served(&agent, &kept).filter(|t| t.contains(&both))
    });
    let mut stream = open_x509_stream(&agent).await.unwrap();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.svids.len(), 2);
    let crl_before = first.crl.first().cloned().unwrap_or_default();
    // Deleting an entry revokes its SVID: the CRL changes and the stream of
    // a workload that keeps its other identity gets the new CRL at once.
    server.cli_ok(&["entry", "delete", &dropped]);
    let update = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let msg = stream.message().await.unwrap().expect("stream open");
            let crl = msg.crl.first().cloned().unwrap_or_default();
            if msg.svids.len() == 1 && !crl.is_empty() && crl != crl_before {
                return msg;
            }
        }
    })
    .await
    .expect("an update with one SVID and the new CRL");
    assert_eq!(update.svids[0].spiffe_id, kept);
    let (_, crl) = x509_parser::parse_x509_crl(&update.crl[0]).unwrap();
    assert!(crl.iter_revoked_certificates().count() >= 1);
}
