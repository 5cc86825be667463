//! End-to-end: issuance racing revocation, as races. Each test runs its race
//! at least 20 times against a real server and checks the invariant after
//! every round: once the revoking command has returned, every serial ever
//! recorded for the subject is on `GET /crl`, and none is recorded later
//! that is not.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lanyard_test_support as common;

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use common::{operators::*, *};
use lanyard_ca::SvidKey;
use lanyard_proto::node::v1::{
    BatchNewX509svidRequest, NewX509svidParams, RenewAgentRequest, SyncRequest,
    batch_new_x509svid_result::Result as R,
};

const ROUNDS: usize = 20;

/// The serials on `GET /crl`, lower-case hex as `svid list` prints them.
fn crl_serials(server: &Server) -> BTreeSet<String> {
    agent::crl_serials(&fetch_crl(server)).into_iter().collect()
}

/// Serials `svid list` shows whose `field` is `value`.
fn serials_where(server: &Server, field: &str, value: &str) -> BTreeSet<String> {
    let listed = server.cli_json(&["svid", "list", "--output", "json"]);
    listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s[field].as_str() == Some(value))
        .map(|s| s["serial"].as_str().unwrap().to_owned())
        .collect()
}

/// Every serial recorded for the subject is on the CRL.
fn assert_all_revoked(server: &Server, field: &str, value: &str, round: usize, when: &str) {
    let issued = serials_where(server, field, value);
    let revoked = crl_serials(server);
    let escaped: Vec<&String> = issued.difference(&revoked).collect();
    assert!(
        escaped.is_empty(),
        "round {round}, {when}: {} of {} serials for {field}={value} are not on GET /crl: {escaped:?}",
        escaped.len(),
        issued.len()
    );
}

fn agent_id(agent: &NodeIdentity) -> String {
    lanyard_identity::check_x509_svid(&agent.chain[0])
        .unwrap()
        .spiffe_id
        .to_string()
}

fn csrs(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|_| SvidKey::generate().unwrap().csr_der().unwrap())
        .collect()
}

/// Sends one batch of `csrs` for `entry`; returns how many SVIDs came back.
async fn batch(server: &Server, agent: &NodeIdentity, entry: &str, csrs: &[Vec<u8>]) -> usize {
    let mut client = node_channel(server, Some(agent)).await.unwrap();
    let params = csrs
        .iter()
        .map(|csr| NewX509svidParams {
            entry_id: entry.to_owned(),
            csr: csr.clone(),
        })
        .collect();
    match client
        .batch_new_x509svid(BatchNewX509svidRequest { params })
        .await
    {
        Ok(resp) => resp
            .into_inner()
            .results
            .iter()
            .filter(|r| matches!(r.result, Some(R::Svid(_))))
            .count(),
        Err(_) => 0,
    }
}

/// A delay that differs from round to round, so that either side of a race
/// goes first in some rounds.
fn jitter(round: usize) -> Duration {
    Duration::from_millis((round as u64 * 37) % 400)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_1000_csr_batch_during_entry_delete() {
    let server = Server::start();
    let agent = attest(&server, &server.token()).await.unwrap();
    let parent = agent_id(&agent);
    let csrs = csrs(1000);
    let mut batch_first = 0;
    for round in 0..ROUNDS {
        let entry = server
            .cli_ok(&[
                "entry",
                "create",
                "--spiffe-id",
                &format!("spiffe://{TD}/race/{round}"),
                "--parent-id",
                &parent,
                "--selector",
                "unix:uid:1000",
            ])
            .trim()
            .to_owned();
        let sending = {
            let (server, agent, entry, csrs) = (&server, &agent, entry.clone(), &csrs);
            async move { batch(server, agent, &entry, csrs).await }
        };
        let deleting = async {
            tokio::time::sleep(jitter(round)).await;
            let server = &server;
            let entry = entry.clone();
            tokio::task::block_in_place(|| server.cli_ok(&["entry", "delete", &entry]));
            // The delete has returned: everything recorded so far is revoked.
            assert_all_revoked(
                server,
                "entry_id",
                &entry,
                round,
                "right after entry delete",
            );
        };
        let (issued, ()) = tokio::join!(sending, deleting);
        if issued > 0 {
            batch_first += 1;
        }
        // The batch has ended too: nothing recorded after the delete escapes.
        assert_all_revoked(&server, "entry_id", &entry, round, "after the batch ended");
    }
    // The batch is recorded in one transaction: all of it lands before the
    // delete (and is swept by it) or none of it after.
    eprintln!("the batch was recorded first in {batch_first} of {ROUNDS} rounds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn renewals_in_flight_during_agent_ban() {
    let server = Server::start();
    for round in 0..ROUNDS {
        let agent = attest(&server, &server.token()).await.unwrap();
        let id = agent_id(&agent);
        let renewing = (0..4).map(|_| {
            let (server, agent) = (&server, &agent);
            async move {
                let mut renewed = 0;
                for _ in 0..5 {
                    let Ok(mut client) = node_channel(server, Some(agent)).await else {
                        break;
                    };
                    let csr = SvidKey::generate().unwrap().csr_der().unwrap();
                    match client.renew_agent(RenewAgentRequest { csr }).await {
                        Ok(_) => renewed += 1,
                        Err(_) => break,
                    }
                }
                renewed
            }
        });
        let banning = async {
            tokio::time::sleep(jitter(round) / 4).await;
            let server = &server;
            tokio::task::block_in_place(|| server.cli_ok(&["agent", "ban", &id]));
            let shown = server.cli_json(&["agent", "show", &id, "--output", "json"]);
            assert_eq!(
                shown["banned"], true,
                "round {round}: agent show after ban: {shown}"
            );
            assert_all_revoked(server, "agent_id", &id, round, "right after agent ban");
        };
        let (_, ()) = tokio::join!(futures::future::join_all(renewing), banning);
        let shown = server.cli_json(&["agent", "show", &id, "--output", "json"]);
        assert_eq!(
            shown["banned"], true,
            "round {round}: a renewal undid the ban: {shown}"
        );
        assert_all_revoked(&server, "agent_id", &id, round, "after the renewals ended");
        // The banned agent gets nothing more.
        let mut client = node_channel(&server, Some(&agent)).await.unwrap();
        let csr = SvidKey::generate().unwrap().csr_der().unwrap();
        assert!(client.renew_agent(RenewAgentRequest { csr }).await.is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_during_task_complete() {
    let server = task_server();
    let agent = attest(&server, &server.token()).await.unwrap();
    let parent = agent_id(&agent);
    let csrs = csrs(300);
    for round in 0..ROUNDS {
        let task = ok_as(
            &server,
            ALICE,
            &[
                "task",
                "request",
                "--ticket",
                &format!("CHG-{round}"),
                "--purpose",
                "race",
                "--spiffe-id",
                "spiffe://e2e.test/maint/race",
                "--parent-id",
                &parent,
                "--selector",
                "unix:uid:1000",
                "--ttl",
                "15m",
            ],
        )
        .trim()
        .to_owned();
        ok_as(&server, BOB, &["task", "approve", &task]);
        let entry = wait_entry(&server, &task);
        let sending = {
            let (server, agent, entry, csrs) = (&server, &agent, entry.clone(), &csrs);
            async move { batch(server, agent, &entry, csrs).await }
        };
        let completing = async {
            tokio::time::sleep(jitter(round)).await;
            let (server, task) = (&server, &task);
            tokio::task::block_in_place(|| ok_as(server, ALICE, &["task", "complete", task]));
            assert_all_revoked(
                server,
                "entry_id",
                &entry,
                round,
                "right after task complete",
            );
        };
        tokio::join!(sending, completing);
        assert_all_revoked(&server, "entry_id", &entry, round, "after the batch ended");
    }
}

/// The entry of an approved task, once the scheduler has activated it.
fn wait_entry(server: &Server, task: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let shown = json_as(server, BOB, &["task", "show", task, "--output", "json"]);
        if shown["state"] == "active" {
            return shown["entry_id"].as_str().unwrap().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "task never became active: {shown}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_never_creates_a_node_alias() {
    let server = task_server();
    let out = refused_as(
        &server,
        CAROL,
        &[
            "task",
            "request",
            "--ticket",
            "CHG-9",
            "--spiffe-id",
            "spiffe://e2e.test/node/x",
            "--parent-id",
            "spiffe://e2e.test/lanyard/server",
            "--selector",
            "join_token:id:abc",
            "--ttl",
            "5m",
            "--break-glass",
            "--reason",
            "outage",
        ],
    );
    assert!(out.contains("not an attested agent"), "{out}");
    assert!(out.contains("never the server"), "{out}");
    let listed = json_as(&server, BOB, &["task", "list", "--output", "json"]);
    assert_eq!(
        listed.as_array().unwrap().len(),
        0,
        "nothing was recorded: {listed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_exits_within_a_second_of_sigterm_with_agents_connected() {
    let mut server = Server::start();
    let agent = attest(&server, &server.token()).await.unwrap();
    let mut client = node_channel(&server, Some(&agent)).await.unwrap();
    let mut sync = client
        .sync(SyncRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        sync.message().await.unwrap().is_some(),
        "the Sync stream is open"
    );
    let started = Instant::now();
    let status = tokio::task::block_in_place(|| server.terminate());
    let took = started.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        took < Duration::from_secs(1),
        "SIGTERM to exit took {took:?}"
    );
    assert!(!server.log().contains("did not drain"), "{}", server.log());
}
