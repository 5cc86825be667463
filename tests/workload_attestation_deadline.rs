//! End to end: a Workload API caller whose binary hangs on `stat` (it sits
//! on a FUSE filesystem that stops answering, as a stalled network mount
//! does) delays no other caller, and its connection is closed once
//! `--attestation-timeout` has passed (issue 11, item 2).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lanyard_test_support as common;

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use common::{
    Server, TD,
    agent::{Agent, eventually, register_self},
    other_user::running_as_root,
    stalling_fs::StallingFs,
};
use spiffe::WorkloadApiClient;

/// The caller: waits for a line on stdin, connects, says so, and reports
/// when the agent closes the connection.
const CALLER: &str = r#"
import socket, sys
print("ready", flush=True)
sys.stdin.readline()
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
print("connected", flush=True)
print("closed" if s.recv(1) == b"" else "answered", flush=True)
"#;

struct Caller {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Caller {
    fn start(binary: &std::path::Path, agent: &Agent) -> Self {
        let mut child = Command::new(binary)
            .args(["-c", CALLER])
            .arg(&agent.socket)
            // The binary is a copy of Python outside its prefix.
            .env("PYTHONHOME", "/usr")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
        }
    }

    fn expect(&self, wanted: &str, agent: &Agent) {
        let line = self.lines.recv_timeout(Duration::from_secs(60));
        assert_eq!(line.as_deref(), Ok(wanted), "{}", agent.log());
    }
}

impl Drop for Caller {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caller_stalled_in_attestation_delays_no_one_and_is_cut_off() {
    assert!(
        running_as_root(),
        "this test mounts a FUSE filesystem and must run as root (CI does)"
    );
    let python = std::fs::canonicalize("/usr/bin/python3")
        .expect("/usr/bin/python3 is the binary this test puts on the stalling filesystem");
    let server = Server::start();
    let mut agent = Agent::prepare(&server);
    agent.spawn(Some(&server.token()), &["--attestation-timeout", "2s"]);
    agent.wait_ready();
    register_self(&server, &agent, "e2e/bystander");
    let id = format!("spiffe://{TD}/e2e/bystander");

    let mount = tempfile::tempdir().unwrap();
    let fs = StallingFs::mount(mount.path(), &python);
    let caller = Caller::start(fs.file(), &agent);
    caller.expect("ready", &agent);
    fs.stall();
    writeln!(&caller.stdin, "go").unwrap();
    caller.expect("connected", &agent);

    // The agent is now stuck in a stat of the caller's binary. Others are
    // served all the same.
    let fetched = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let client = WorkloadApiClient::connect_to(agent.endpoint())
                .await
                .unwrap();
            match client.fetch_x509_context().await {
                Ok(ctx) if ctx.svids().iter().any(|s| s.spiffe_id().to_string() == id) => {
                    return;
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await;
    assert!(
        fetched.is_ok(),
        "no SVID while one caller's attestation hangs:\n{}",
        agent.log()
    );

    // The stalled caller's connection is closed after the deadline.
    caller.expect("closed", &agent);
    eventually(Duration::from_secs(10), "the agent's log line", || {
        agent
            .log()
            .contains("caller not pinned in time")
            .then_some(())
    });
    fs.release();
}
