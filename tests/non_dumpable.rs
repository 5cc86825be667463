//! End-to-end: the server and the agent make themselves non-dumpable at
//! start (they hold private keys). The kernel shows it in `/proc`: the
//! files of a non-dumpable process are owned by root, whatever its uid.
//! As root the tests run both as `nobody`, so that the difference shows.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lanyard_test_support as common;

use common::{agent::Agent, other_user::*, spawned::*, *};

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
    wait_until("lanyard-server", &mut child, &server_log, || {
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
    wait_until("lanyard-agent", &mut agent_child, &agent_log, || {
        agent.healthy()
    });
    assert_non_dumpable("lanyard-agent", agent_child.0.id());
}
