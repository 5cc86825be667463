//! The `lanyard-server` binary's usage surface. Having an integration test
//! also makes `cargo test --workspace` build the binary, which the
//! workspace's end-to-end tests start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn server(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lanyard-server"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn help_lists_the_daemon_and_every_operator_command() {
    let out = server(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for command in [
        "run",
        "entry",
        "token",
        "agent",
        "bundle",
        "svid",
        "crl",
        "task",
        "audit",
        "datastore",
        "healthcheck",
    ] {
        assert!(
            text.contains(command),
            "`{command}` missing from --help:\n{text}"
        );
    }
}

#[test]
fn usage_errors_exit_2_and_name_the_problem() {
    let out = server(&["entry", "create", "--spiffe-id", "spiffe://example.org/x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--parent-id"));
    let out = server(&["run", "--ca-ttl", "soon"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("soon"));
}
