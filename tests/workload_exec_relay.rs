//! End to end: the exec-after-connect relay attack (issue 11, item 1) on a
//! real agent. A process of uid 65534 connects to the Workload API, forks a
//! relay child that keeps the connection, and execs a binary that an entry
//! selects by `unix:uid` + `unix:path` + `unix:sha256`; the relay then asks
//! over the inherited connection (`tests/python/exec_relay.py`). The agent
//! must never answer it with that entry's SVID.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lanyard_test_support as common;

use std::{
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use common::{
    Server, TD,
    agent::{Agent, eventually, first_x509_ids, register, unix_channel},
    other_user::{NOBODY, give_to_nobody, running_as_root},
};

/// Tries of the attack, as the issue asks.
const TRIES: usize = 20;
/// Connections opened just before the attacker's own, as in the issue.
const FILLERS: &str = "100";
/// A Python the `nobody` user can run (not one under /root).
const PYTHON: &str = "/usr/bin/python3";

/// The attacker script, run as `nobody` in `mode` (`exec` or `stay`).
fn attacker(agent: &Agent, relay: &Path, mode: &[&str]) -> Child {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/exec_relay.py");
    Command::new(PYTHON)
        .arg(script)
        .arg(&agent.socket)
        .arg(relay)
        .arg(FILLERS)
        .args(mode)
        .uid(NOBODY)
        .gid(NOBODY)
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// Asks for X.509-SVIDs through the relay: the SPIFFE IDs of the first
/// answer, or the refusal.
async fn ask_through(relay: &Path) -> Result<Vec<String>, tonic::Status> {
    eventually(Duration::from_secs(20), "the relay socket", || {
        relay.exists().then_some(())
    });
    first_x509_ids(&unix_channel(relay).await).await
}

/// One run of the script; kills what is left of it.
async fn run(
    agent: &Agent,
    dir: &Path,
    n: usize,
    mode: &[&str],
) -> Result<Vec<String>, tonic::Status> {
    let relay = dir.join(format!("relay-{n}.sock"));
    let mut child = attacker(agent, &relay, mode);
    let answer = ask_through(&relay).await;
    child.kill().ok();
    child.wait().unwrap();
    answer
}

/// A copy of `sleep` in `dir`, and its selectors.
fn trusted_binary(dir: &Path) -> (PathBuf, String) {
    let sleep = ["/usr/bin/sleep", "/bin/sleep"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .expect("sleep(1) is needed as the trusted binary");
    let trusted = dir.join("trusted-tool");
    std::fs::copy(sleep, &trusted).unwrap();
    std::fs::set_permissions(&trusted, std::fs::Permissions::from_mode(0o755)).unwrap();
    let digest = ring::digest::digest(&ring::digest::SHA256, &std::fs::read(&trusted).unwrap());
    (trusted, hex::encode(digest.as_ref()))
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_after_connect_relay_never_gets_the_trusted_identity() {
    assert!(
        running_as_root(),
        "this test runs the attacker as uid {NOBODY} and must run as root (CI does)"
    );
    assert!(
        Path::new(PYTHON).exists(),
        "{PYTHON} is needed for the attacker script"
    );
    let server = Server::start();
    let agent = Agent::start(&server);
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    give_to_nobody(dir.path());
    let (trusted, sha256) = trusted_binary(dir.path());
    let uid = format!("unix:uid:{NOBODY}");
    register(
        &server,
        &agent,
        "e2e/trusted",
        &uid,
        &[
            "--selector",
            &format!("unix:path:{}", trusted.display()),
            "--selector",
            &format!("unix:sha256:{sha256}"),
        ],
    );
    // The control: the same script, as itself, holding its connection.
    let python = std::fs::canonicalize(PYTHON).unwrap();
    register(
        &server,
        &agent,
        "e2e/relay-control",
        &uid,
        &["--selector", &format!("unix:path:{}", python.display())],
    );
    let trusted_id = format!("spiffe://{TD}/e2e/trusted");
    let control_id = format!("spiffe://{TD}/e2e/relay-control");
    eventually(Duration::from_secs(30), "the trusted SVID issued", || {
        let listed = server.cli_ok(&["svid", "list", "--spiffe-id", &trusted_id]);
        listed.contains(&trusted_id).then_some(())
    });

    // The relay works: a process that keeps its connection is served
    // through it.
    match run(&agent, dir.path(), 0, &["stay"]).await {
        Ok(ids) => assert_eq!(ids, [control_id]),
        Err(status) => panic!("the control was refused: {status:?}\n{}", agent.log()),
    }

    let mut wins = 0;
    let mut refusals = Vec::new();
    for n in 1..=TRIES {
        let exec = ["exec", trusted.to_str().unwrap()];
        match run(&agent, dir.path(), n, &exec).await {
            Ok(ids) => {
                assert!(ids.contains(&trusted_id), "try {n}: served {ids:?}");
                wins += 1;
            }
            Err(status) => {
                assert_eq!(
                    status.code(),
                    tonic::Code::PermissionDenied,
                    "try {n}: {status:?}"
                );
                refusals.push(status.message().to_owned());
            }
        }
    }
    assert_eq!(
        wins, 0,
        "the relay got the trusted SVID in {wins} of {TRIES} tries; refusals: {refusals:#?}"
    );
    for refusal in &refusals {
        assert!(
            refusal.contains("no longer holds the connection")
                || refusal.contains("changed its binary"),
            "{refusal}"
        );
    }
}
