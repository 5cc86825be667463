//! Several servers on one PostgreSQL database: two real `lanyard-server`
//! processes share a database and one CA (its keys sealed in the database
//! under a key-encryption key both hold), each with an agent attached.
//! An entry made on one server reaches the other's agent, a revocation on
//! one is on the CRL the other's agent enforces, and when a server is
//! SIGKILLed its agent fails over to the other and keeps serving. One join
//! token raced across both servers yields one agent.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lanyard_test_support as common;

use std::{
    collections::BTreeSet,
    path::PathBuf,
    time::{Duration, Instant},
};

use common::{
    Server, TD,
    agent::{Agent, crl_serials, eventually, leaf_serial, my_uid, register, stream_serving},
    fetch_crl, node_channel,
    postgres::postgres_config_for,
};
use lanyard_proto::node::v1::{AttestRequest, JoinTokenAttestation, attest_request::Method};

/// Generous: a deadline for polling, not a measurement.
const DEADLINE: Duration = Duration::from_secs(30);

/// A 256-bit key-encryption key in a 0600 file of `dir`.
fn kek_file(dir: &tempfile::TempDir) -> PathBuf {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut key)
        .unwrap();
    let path = dir.path().join("kek");
    std::fs::write(&path, format!("{}\n", hex::encode(key))).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Two servers on one new database, sharing one KEK.
fn two_servers() -> (Server, Server) {
    two_servers_on(&lanyard_test_postgres::shared().create_database())
}

fn two_servers_on(url: &str) -> (Server, Server) {
    let secrets = tempfile::tempdir().unwrap();
    let kek = kek_file(&secrets);
    let start = || {
        let dir = tempfile::tempdir().unwrap();
        let config = postgres_config_for(&dir, url);
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str(&format!("kek_file = {:?}\n", kek.display().to_string()));
        std::fs::write(&config, text).unwrap();
        let mut server = Server::start_with(&["--config", config.to_str().unwrap()]);
        server.keep.push(dir);
        server
    };
    let a = start();
    let mut b = start();
    b.keep.push(secrets);
    (a, b)
}

fn crl_number(der: &[u8]) -> u64 {
    use x509_parser::prelude::FromDer;
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(der).unwrap();
    crl.crl_number()
        .unwrap()
        .to_u64_digits()
        .first()
        .copied()
        .unwrap_or(0)
}

fn serials(server: &Server) -> BTreeSet<String> {
    server
        .cli_json(&["svid", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["serial"].as_str().unwrap().to_owned())
        .collect()
}

/// The next message of `stream` that satisfies `want`.
async fn next_where(
    stream: &mut tonic::Streaming<lanyard_proto::workload::X509svidResponse>,
    agent: &Agent,
    what: &str,
    want: impl Fn(&lanyard_proto::workload::X509svidResponse) -> bool,
) -> lanyard_proto::workload::X509svidResponse {
    tokio::time::timeout(DEADLINE, async {
        loop {
            let msg = stream
                .message()
                .await
                .unwrap()
                .expect("the stream stays open");
            if want(&msg) {
                return msg;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no message with {what}\n{}", agent.log()))
}

#[tokio::test(flavor = "multi_thread")]
async fn two_servers_serve_one_trust_domain_and_agents_fail_over() {
    let (mut a, b) = two_servers();
    assert_eq!(a.bundle(), b.bundle(), "one CA: the same trust bundle");
    assert!(
        b.log().contains("CA keys opened from the database"),
        "{}",
        b.log()
    );

    // Agent A knows both servers, A first; agent B only server B.
    let mut agent_a = Agent::prepare(&a);
    let b_addr = b.node_addr.to_string();
    agent_a.spawn(Some(&a.token()), &["--server-address", &b_addr]);
    agent_a.wait_ready();
    let agent_b = Agent::start(&b);

    // An entry created on A is served by the agent on B.
    let uid = format!("unix:uid:{}", my_uid());
    register(&a, &agent_b, "cluster/on-b", &uid, &[]);
    let on_b = format!("spiffe://{TD}/cluster/on-b");
    let (_stream_b, _) = stream_serving(&agent_b, &on_b).await;

    // A revocation on B is on the CRL that A's agent enforces.
    register(&b, &agent_a, "cluster/on-a", &uid, &[]);
    let on_a = format!("spiffe://{TD}/cluster/on-a");
    let (mut stream_a, first) = stream_serving(&agent_a, &on_a).await;
    let serial = leaf_serial(&first.svids[0].x509_svid);
    let revoked_at = Instant::now();
    b.cli_ok(&["svid", "revoke", "--serial", &serial]);
    let pushed = next_where(
        &mut stream_a,
        &agent_a,
        "the revoked serial on the CRL",
        |m| m.crl.iter().any(|crl| crl_serials(crl).contains(&serial)),
    )
    .await;
    // A figure for the log, not an assertion (lanyard-bench measures).
    eprintln!(
        "revocation on server B reached the agent of server A in {:?}",
        revoked_at.elapsed()
    );
    assert!(
        pushed
            .svids
            .iter()
            .all(|s| leaf_serial(&s.x509_svid) != serial),
        "the revoked SVID was served again"
    );
    // Both servers publish the same CRL.
    eventually(DEADLINE, "the same CRL on both servers", || {
        let (crl_a, crl_b) = (fetch_crl(&a), fetch_crl(&b));
        (crl_a == crl_b && crl_serials(&crl_a).contains(&serial)).then_some(())
    });

    let before_kill = serials(&a);
    let crl_before = crl_number(&fetch_crl(&b));
    let current = leaf_serial(&pushed.svids[0].x509_svid);
    assert!(before_kill.contains(&current));

    // Server A dies without a chance to clean up.
    a.kill();
    // Its agent keeps serving the cached SVID meanwhile...
    let (_, cached) = stream_serving(&agent_a, &on_a).await;
    assert!(cached.svids.iter().any(|s| s.spiffe_id == on_a));
    // ...and fails over to B: an entry made on B now reaches it, with no
    // new token (it runs on, attested once).
    register(&b, &agent_a, "cluster/after-failover", &uid, &[]);
    let after = format!("spiffe://{TD}/cluster/after-failover");
    stream_serving(&agent_a, &after).await;
    eventually(DEADLINE, "the agent's failover in its log", || {
        agent_a
            .log()
            .contains("failed over to another server")
            .then_some(())
    });
    // No serial is lost from `svid list`.
    let after_kill = serials(&b);
    let lost: Vec<_> = before_kill.difference(&after_kill).collect();
    assert!(lost.is_empty(), "serials lost after the failover: {lost:?}");
    // CRL numbers do not go backwards.
    assert!(crl_number(&fetch_crl(&b)) >= crl_before);
    assert_eq!(
        b.cli_json(&["agent", "list"]).as_array().unwrap().len(),
        2,
        "no agent attested again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_join_token_raced_across_two_servers_gives_one_agent() {
    const ATTEMPTS: usize = 50;
    let (a, b) = two_servers();
    let token = a.token();
    // Connect first, then send every Attest at once.
    let mut clients = Vec::new();
    for i in 0..ATTEMPTS {
        let server = if i % 2 == 0 { &a } else { &b };
        clients.push(node_channel(server, None).await.unwrap());
    }
    let attempts = clients.into_iter().map(|mut client| {
        let token = token.clone();
        tokio::spawn(async move {
            let key = lanyard_ca::SvidKey::generate().unwrap();
            client
                .attest(AttestRequest {
                    method: Some(Method::JoinToken(JoinTokenAttestation { token })),
                    csr: key.csr_der().unwrap(),
                })
                .await
        })
    });
    let results = futures::future::join_all(attempts).await;
    let won = results
        .iter()
        .filter(|r| r.as_ref().unwrap().is_ok())
        .count();
    let refusals: BTreeSet<String> = results
        .iter()
        .filter_map(|r| r.as_ref().unwrap().as_ref().err())
        .map(|s| format!("{:?}: {}", s.code(), s.message()))
        .collect();
    assert_eq!(
        won, 1,
        "exactly one attestation wins; refusals: {refusals:?}"
    );
    for server in [&a, &b] {
        assert_eq!(
            server
                .cli_json(&["agent", "list"])
                .as_array()
                .unwrap()
                .len(),
            1,
            "one agent, whichever server is asked"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn both_servers_decide_into_one_verifiable_audit_chain() {
    let url = lanyard_test_postgres::shared().create_database();
    let db = url
        .trim_start_matches("postgresql:///")
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let (a, b) = two_servers_on(&url);
    // Decisions on both servers, interleaved.
    for n in 0..3 {
        a.token();
        b.cli_ok(&["token", "generate", "--ttl", &format!("{}m", n + 1)]);
    }
    let verified = |server: &Server| server.cli_json(&["audit", "verify"]);
    let (on_a, on_b) = (verified(&a), verified(&b));
    assert_eq!(on_a, on_b, "one chain, whichever server is asked");

    let export = a.cli_ok(&["audit", "export"]);
    let records: Vec<serde_json::Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let servers: BTreeSet<&str> = records
        .iter()
        .filter_map(|r| r["details"]["server"].as_str())
        .collect();
    assert_eq!(servers.len(), 2, "records of both servers: {servers:?}");
    let times: Vec<&str> = records
        .iter()
        .map(|r| r["time"].as_str().unwrap())
        .collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "export merges in time order");
    assert_eq!(export, b.cli_ok(&["audit", "export"]));

    // Editing one record in the database is detected by both servers.
    lanyard_test_postgres::shared().psql(
        &db,
        "UPDATE audit_records SET record = replace(record, '\"principal\":\"', '\"principal\":\"x') WHERE seq = 2",
    );
    for server in [&a, &b] {
        let out = server.cli(&["audit", "verify"]);
        assert_eq!(
            common::exit_code(&out),
            1,
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("record was edited"), "{err}");
    }
}
