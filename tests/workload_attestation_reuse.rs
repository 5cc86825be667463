//! End to end: the calls of one connection reuse its caller's attestation
//! (issue 14) only while nothing it was made of changed. A root process
//! connects to the Workload API and relays that one connection to the
//! test's gRPC client (`tests/python/drop_privileges.py`); the client calls
//! several times (the later calls are served from the reused attestation),
//! then the process drops to uid 65534 and the next calls on the same
//! connection must never get root's SVID.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lanyard_test_support as common;

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Child, ChildStdout, Command, Stdio},
    time::Duration,
};

use common::{
    Server, TD,
    agent::{Agent, eventually, first_x509_ids, http_get, register, unix_channel},
    other_user::{NOBODY, running_as_root},
};

/// Connections whose caller drops its privileges, one after the other.
const TRIES: usize = 10;
/// Calls on each connection before the drop: all but the first reuse.
const CALLS_BEFORE: usize = 4;
/// A Python any user can run.
const PYTHON: &str = "/usr/bin/python3";

/// The relaying workload, started as root.
struct Workload {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Workload {
    fn start(agent: &Agent, relay: &Path) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/drop_privileges.py");
        let mut child = Command::new(PYTHON)
            .arg(script)
            .arg(&agent.socket)
            .arg(relay)
            .arg(NOBODY.to_string())
            .arg(NOBODY.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self { child, stdout }
    }

    /// Has the workload switch to uid and gid 65534, and waits until it has.
    fn drop_privileges(&mut self) {
        writeln!(self.child.stdin.as_mut().unwrap(), "drop").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "dropped");
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// How many calls the agent has answered from a reused attestation.
async fn reused(agent: &Agent) -> u64 {
    const NAME: &str = "lanyard_agent_workload_attestations_reused_total ";
    let addr = agent.http_addr;
    let text = tokio::task::spawn_blocking(move || http_get(addr, "/metrics"))
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(NAME))
        .unwrap_or_else(|| panic!("{NAME}not exposed:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caller_that_drops_its_privileges_is_never_served_its_old_identity() {
    assert!(
        running_as_root(),
        "this test starts its workload as root and has it become uid {NOBODY} (CI runs as root)"
    );
    assert!(
        Path::new(PYTHON).exists(),
        "{PYTHON} is needed for the workload script"
    );
    let server = Server::start();
    let agent = Agent::start(&server);
    register(&server, &agent, "e2e/root-tool", "unix:uid:0", &[]);
    let root_id = format!("spiffe://{TD}/e2e/root-tool");
    eventually(Duration::from_secs(30), "root's SVID issued", || {
        let listed = server.cli_ok(&["svid", "list", "--spiffe-id", &root_id]);
        listed.contains(&root_id).then_some(())
    });
    let dir = tempfile::tempdir().unwrap();

    for n in 0..TRIES {
        let relay = dir.path().join(format!("relay-{n}.sock"));
        let mut workload = Workload::start(&agent, &relay);
        eventually(Duration::from_secs(20), "the relay socket", || {
            relay.exists().then_some(())
        });
        // One channel: every call below goes over the workload's one
        // connection to the agent.
        let channel = unix_channel(&relay).await;
        let before = reused(&agent).await;
        for call in 0..CALLS_BEFORE {
            match first_x509_ids(&channel).await {
                Ok(ids) => assert_eq!(ids, std::slice::from_ref(&root_id), "try {n}, call {call}"),
                Err(status) => panic!("try {n}, call {call}: {status:?}\n{}", agent.log()),
            }
        }
        // What is tested below is the reuse: every call after the first
        // was answered from it.
        assert_eq!(
            reused(&agent).await - before,
            CALLS_BEFORE as u64 - 1,
            "try {n}"
        );

        workload.drop_privileges();
        for call in 0..2 {
            match first_x509_ids(&channel).await {
                Ok(ids) => panic!("try {n}: after the drop, call {call} was served {ids:?}"),
                Err(status) => {
                    assert_eq!(
                        status.code(),
                        tonic::Code::PermissionDenied,
                        "try {n}, call {call}: {status:?}"
                    );
                    assert!(
                        status.message().contains("changed credentials"),
                        "try {n}, call {call}: {}",
                        status.message()
                    );
                }
            }
        }
    }
}
