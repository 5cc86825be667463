//! End to end on PostgreSQL: a real `lanyard-server` whose `[datastore]` is
//! a fresh database of a throwaway cluster serves the normal flow. An agent
//! attests with a join token, a workload gets its SVID over the Workload
//! API, and a revoked serial is on the CRL that `/crl` serves and the agent
//! pushes.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lanyard_test_support as common;

use std::time::Duration;

use common::{
    Server, TD,
    agent::{Agent, crl_serials, eventually, leaf_serial, register_self, stream_serving},
    fetch_crl,
    postgres::{postgres_config_for, start_on_postgres},
};

/// Generous: a deadline for polling, not a measurement.
const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn a_server_on_postgres_attests_issues_and_revokes() {
    let server = start_on_postgres();
    assert!(
        server.log().contains("datastore: PostgreSQL"),
        "{}",
        server.log()
    );
    let agent = Agent::start(&server);
    register_self(&server, &agent, "pg/workload");
    let id = format!("spiffe://{TD}/pg/workload");

    let (mut stream, first) = stream_serving(&agent, &id).await;
    let serial = leaf_serial(&first.svids[0].x509_svid);
    let listed = server.cli_json(&["svid", "list", "--spiffe-id", &id]);
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["serial"] == serial.as_str()),
        "the issued serial is recorded in the database: {listed}"
    );
    let agents = server.cli_json(&["agent", "list"]);
    assert_eq!(agents.as_array().unwrap().len(), 1, "{agents}");

    server.cli_ok(&["svid", "revoke", "--serial", &serial]);
    eventually(DEADLINE, "the revoked serial on /crl", || {
        crl_serials(&fetch_crl(&server))
            .contains(&serial)
            .then_some(())
    });
    // The agent pushes the CRL and replaces the revoked SVID on the stream.
    let pushed = tokio::time::timeout(DEADLINE, async {
        loop {
            let msg = stream
                .message()
                .await
                .unwrap()
                .expect("the stream stays open");
            if msg.crl.iter().any(|crl| crl_serials(crl).contains(&serial)) {
                return msg;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the agent never pushed the CRL\n{}", agent.log()));
    assert!(
        pushed
            .svids
            .iter()
            .all(|s| leaf_serial(&s.x509_svid) != serial),
        "the revoked SVID was served again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_server_on_postgres_keeps_its_state() {
    let mut server = start_on_postgres();
    let agent = Agent::start(&server);
    let entry = register_self(&server, &agent, "pg/kept");
    let before = server.cli_json(&["crl", "show"])["crl_number"]
        .as_u64()
        .unwrap();
    server.restart();
    assert_eq!(server.cli_json(&["entry", "list"])[0]["id"], entry.as_str());
    let after = server.cli_json(&["crl", "show"])["crl_number"]
        .as_u64()
        .unwrap();
    assert!(
        after > before,
        "CRL numbers go on across a restart: {before} then {after}"
    );
    assert!(
        server
            .cli_ok(&["audit", "verify"])
            .starts_with("audit log OK")
    );
}

#[test]
fn an_unreachable_database_stops_the_server_with_a_message_without_the_password() {
    let mut server = Server::start();
    server.kill();
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "postgresql://lanyard:hunter2@localhost/lanyard?host={}&port=1",
        dir.path().display()
    );
    let config = postgres_config_for(&dir, &url);
    server.extra = vec!["--config".into(), config.display().to_string()];
    let out = server.run_command().output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach the database at postgresql://lanyard@"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}
