//! The `lanyard-agent` binary's usage surface. Having an integration test
//! also makes `cargo test --workspace` build the binary, which the
//! workspace's end-to-end tests start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn agent(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lanyard-agent"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn help_lists_run_api_and_healthcheck() {
    let out = agent(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for command in ["run", "api", "healthcheck"] {
        assert!(
            text.contains(command),
            "`{command}` missing from --help:\n{text}"
        );
    }
}

#[test]
fn usage_errors_exit_2_and_config_errors_exit_1_naming_the_key() {
    let out = agent(&["run", "--no-such-flag"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = agent(&["run", "--server-address", "not-an-address"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server_address") && err.contains("IP:PORT"),
        "{err}"
    );
}
