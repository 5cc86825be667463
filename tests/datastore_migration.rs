//! The migration path between backends: `datastore export` from a server on
//! sled, `datastore import --config` into an empty PostgreSQL database, and
//! a server started on that database serves the same entries, agents, SVID
//! records, revocations and CA, with CRL numbers that go on from the
//! backup's. The way back (PostgreSQL to sled) works the same.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lanyard_test_support as common;

use std::collections::BTreeSet;

use common::{postgres::postgres_config, *};
use lanyard_ca::SvidKey;
use lanyard_proto::node::v1::{
    BatchNewX509svidRequest, NewX509svidParams, batch_new_x509svid_result::Result as R,
};
use serde_json::Value;

/// Every value of `key` in a JSON array the CLI printed.
fn column(list: &Value, key: &str) -> BTreeSet<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|item| item[key].as_str().unwrap().to_owned())
        .collect()
}

/// What must survive a move between backends.
#[derive(Debug, PartialEq)]
struct State {
    entries: BTreeSet<String>,
    agents: BTreeSet<String>,
    svids: BTreeSet<String>,
    revoked: BTreeSet<String>,
}

fn state(server: &Server) -> State {
    State {
        entries: column(&server.cli_json(&["entry", "list"]), "id"),
        agents: column(&server.cli_json(&["agent", "list"]), "spiffe_id"),
        svids: column(&server.cli_json(&["svid", "list"]), "serial"),
        revoked: column(&server.cli_json(&["crl", "show"])["revoked"], "serial"),
    }
}

/// `after` holds everything `before` did; a started server records one
/// more SVID, its own.
fn assert_carried(before: &State, after: &State) {
    assert_eq!(after.entries, before.entries);
    assert_eq!(after.agents, before.agents);
    assert_eq!(after.revoked, before.revoked);
    assert!(
        after.svids.is_superset(&before.svids),
        "SVID records lost: {:?}",
        before.svids.difference(&after.svids).collect::<Vec<_>>()
    );
}

fn crl_number(server: &Server) -> u64 {
    server.cli_json(&["crl", "show"])["crl_number"]
        .as_u64()
        .unwrap()
}

/// Issues one SVID for `entry` to `agent` over the Node API; its serial.
async fn issue(server: &Server, agent: &NodeIdentity, entry: &str) -> String {
    let mut client = node_channel(server, Some(agent)).await.unwrap();
    let resp = client
        .batch_new_x509svid(BatchNewX509svidRequest {
            params: vec![NewX509svidParams {
                entry_id: entry.to_owned(),
                csr: SvidKey::generate().unwrap().csr_der().unwrap(),
            }],
        })
        .await
        .unwrap()
        .into_inner();
    match &resp.results[0].result {
        Some(R::Svid(svid)) => svid.serial.clone(),
        other => panic!("no SVID for {entry}: {other:?}"),
    }
}

/// Exports `from`, stops `into`, wipes its data dir, imports the backup
/// with `into`'s flags (its `--config`), and starts it again.
fn move_into(from: &Server, into: &mut Server, import_flags: &[&str]) {
    let backup = from.dir.path().join("backup.json");
    from.cli_ok(&["datastore", "export", "--file", backup.to_str().unwrap()]);
    into.kill();
    std::fs::remove_dir_all(into.data_dir()).unwrap();
    let out = import_backup_with(&backup, &into.data_dir(), import_flags);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A second import into the same (now non-empty) store is refused.
    let again = import_backup_with(&backup, &into.data_dir(), import_flags);
    assert_eq!(
        exit_code(&again),
        1,
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    into.spawn();
}

#[tokio::test(flavor = "multi_thread")]
async fn sled_to_postgres_and_back_keeps_every_record_and_the_crl_number() {
    let sled = Server::start();
    let agent = attest(&sled, &sled.token()).await.unwrap();
    let agent_id = lanyard_identity::check_x509_svid(&agent.chain[0])
        .unwrap()
        .spiffe_id
        .to_string();
    let mut serials = Vec::new();
    for path in ["billing", "ledger"] {
        let entry = sled
            .cli_ok(&[
                "entry",
                "create",
                "--spiffe-id",
                &format!("spiffe://{TD}/{path}"),
                "--parent-id",
                &agent_id,
                "--selector",
                &format!("unix:user:{path}"),
            ])
            .trim()
            .to_owned();
        serials.push(issue(&sled, &agent, &entry).await);
    }
    sled.cli_ok(&["svid", "revoke", "--serial", &serials[0]]);
    let before = state(&sled);
    assert_eq!((before.entries.len(), before.agents.len()), (2, 1));
    assert!(before.svids.is_superset(&serials.iter().cloned().collect()));
    assert!(before.revoked.contains(&serials[0]));
    let sled_crl_number = crl_number(&sled);

    // Onto PostgreSQL: the restored server's data dir keeps the CA keys and
    // the audit log, the database every record.
    let pg_dir = tempfile::tempdir().unwrap();
    let pg_config = postgres_config(&pg_dir);
    let flags = ["--config", pg_config.to_str().unwrap()];
    let mut pg = Server::start();
    pg.extra = flags.iter().map(|s| s.to_string()).collect();
    move_into(&sled, &mut pg, &flags);
    assert!(pg.log().contains("datastore: PostgreSQL"), "{}", pg.log());
    assert_carried(&before, &state(&pg));
    assert_eq!(pg.bundle(), sled.bundle(), "same CA");
    let pg_crl_number = crl_number(&pg);
    assert!(
        pg_crl_number > sled_crl_number,
        "CRL numbers go on from the backup: {sled_crl_number} then {pg_crl_number}"
    );
    assert!(pg.cli_ok(&["audit", "verify"]).starts_with("audit log OK"));
    // The restored records are live: the agent's remaining SVID can be revoked.
    pg.cli_ok(&["svid", "revoke", "--serial", &serials[1]]);
    let on_pg = state(&pg);
    assert!(on_pg.revoked.contains(&serials[1]));

    // And back onto sled.
    let mut back = Server::start();
    move_into(&pg, &mut back, &[]);
    assert_carried(&on_pg, &state(&back));
    assert!(crl_number(&back) > pg_crl_number);
    assert_eq!(back.bundle(), sled.bundle());
}
