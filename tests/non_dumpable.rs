//! End-to-end: the server and the agent make themselves non-dumpable at
//! start (they hold private keys). The kernel shows it in `/proc`: the
//! files of a non-dumpable process are owned by root, whatever its uid.
//! As root the tests run both as `nobody`, so that the difference shows.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::{
    process::Child,
    time::{Duration, Instant},
};

use common::{agent::Agent, other_user::*, *};

/// Kills the child when the test ends, passing or not.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_until(
    what: &str,
    child: &mut Child,
    log: &std::path::Path,
    mut ready: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "{what} exited early ({status}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "{what} not ready in 30s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_non_dumpable(what: &str, pid: u32) {
    let uid = proc_uid(pid);
    assert_ne!(
        uid, 0,
        "{what} must run as a non-root uid for the check to mean anything"
    );
    assert_eq!(
        proc_owner(pid),
        0,
        "{what} (uid {uid}) is dumpable: its /proc/{pid} files are owned by its own uid"
    );
}

#[test]
fn server_and_agent_are_not_dumpable() {
    // A server on its own temporary dir, restarted as a non-root user.
    let mut server = Server::start();
    server.kill();
    give_to_nobody(server.dir.path());
    let server_log = server.dir.path().join("non-root-server.log");
    let mut child = Killed(spawn_as_non_root(server.run_command(), &server_log));
    wait_until("lanyard-server", &mut child.0, &server_log, || {
        server.cli(&["healthcheck"]).status.success()
    });
    assert_non_dumpable("lanyard-server", child.0.id());

    // An agent attesting to it, also as a non-root user.
    let agent = Agent::prepare(&server);
    let token = server.token();
    give_to_nobody(agent.dir.path());
    let agent_log = agent.dir.path().join("non-root-agent.log");
    let mut agent_child = Killed(spawn_as_non_root(
        agent.run_command(Some(&token), &[]),
        &agent_log,
    ));
    wait_until("lanyard-agent", &mut agent_child.0, &agent_log, || {
        agent.healthy()
    });
    assert_non_dumpable("lanyard-agent", agent_child.0.id());
}
