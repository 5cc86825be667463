//! End-to-end: under `umask 000` every directory the server and the agent
//! create is 0700, keys are 0600 and nothing under their data dirs is
//! writable by group or others; the admin socket is 0600.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lanyard_test_support as common;

use std::os::unix::fs::PermissionsExt;

use common::{agent::Agent, spawned::*, *};

fn assert_private(what: &str, dir: &std::path::Path) {
    let all = modes_under(dir);
    assert!(all.len() > 3, "{what}: too little under {}", dir.display());
    for (path, mode, is_dir) in all {
        if is_dir {
            assert_eq!(
                mode,
                0o700,
                "{what}: directory {} is {mode:o}",
                path.display()
            );
        } else if path.extension().is_some_and(|e| e == "key") {
            assert_eq!(mode, 0o600, "{what}: key {} is {mode:o}", path.display());
        } else {
            // Certificates may be world-readable (0644 on purpose); nothing
            // is writable by group or others.
            assert_eq!(
                mode & 0o022,
                0,
                "{what}: {} is {mode:o}, writable by group or others",
                path.display()
            );
        }
    }
}

#[test]
fn server_and_agent_directories_are_private_under_umask_000() {
    // The harness's server, restarted on a fresh data dir under umask 000.
    let mut server = Server::start();
    server.kill();
    std::fs::remove_dir_all(server.data_dir()).unwrap();
    let server_log = server.dir.path().join("umask-server.log");
    let mut child = spawn_logged(under_umask(&server.run_command(), 0o000), &server_log);
    wait_until("lanyard-server", &mut child, &server_log, || {
        server.cli(&["healthcheck"]).status.success()
    });
    assert!(
        server.data_dir().join("store/blobs").is_dir(),
        "sled's blobs/ dir is part of what this test checks"
    );

    let agent = Agent::prepare(&server);
    let token = server.token();
    let agent_log = agent.dir.path().join("umask-agent.log");
    let mut agent_child = spawn_logged(
        under_umask(&agent.run_command(Some(&token), &[]), 0o000),
        &agent_log,
    );
    wait_until("lanyard-agent", &mut agent_child, &agent_log, || {
        agent.healthy()
    });

    // The umask really was 000 for the children: sh creates a 0666 file.
    let probe = server.dir.path().join("probe");
    let sh = std::process::Command::new("sh")
        .arg("-c")
        .arg("umask 000 && : > \"$0\"")
        .arg(&probe)
        .status()
        .unwrap();
    assert!(sh.success());
    assert_eq!(
        std::fs::metadata(&probe).unwrap().permissions().mode() & 0o777,
        0o666
    );

    assert_private("server", &server.data_dir());
    assert_private("agent", &agent.data_dir());
    let socket_mode = std::fs::metadata(&server.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(socket_mode, 0o600, "admin socket under umask 000");
}
