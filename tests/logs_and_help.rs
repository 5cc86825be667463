//! Both binaries log the same way: plain text (no ANSI escapes) when stderr
//! is a file, one JSON object per line with `--log-format json`; and each
//! binary's `--help` opens with what the command does.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lanyard_test_support as common;

use std::process::Command;

use common::{Server, agent::Agent, bin};

const ESC: char = '\u{1b}';

#[test]
fn neither_binary_writes_an_escape_character_into_a_log_file() {
    let server = Server::start();
    let agent = Agent::start(&server);
    let (server_log, agent_log) = (server.log(), agent.log());
    // Something was logged, so the check below means something.
    assert!(
        server_log.contains("listening") || server_log.contains("ready"),
        "{server_log}"
    );
    assert!(agent_log.contains("node attested"), "{agent_log}");
    for (who, log) in [
        ("lanyard-server", &server_log),
        ("lanyard-agent", &agent_log),
    ] {
        assert!(
            !log.contains(ESC),
            "{who} wrote an escape character into its log file:\n{log}"
        );
    }
}

#[test]
fn both_binaries_log_json_lines_with_log_format_json() {
    let server = Server::start_with(&["--log-format", "json"]);
    let mut agent = Agent::prepare(&server);
    agent.spawn(Some(&server.token()), &["--log-format", "json"]);
    agent.wait_ready();
    let agent_log = std::fs::read_to_string(agent.dir.path().join("agent-1.log")).unwrap();
    for (who, log) in [
        ("lanyard-server", server.log()),
        ("lanyard-agent", agent_log),
    ] {
        let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(!lines.is_empty(), "{who} logged nothing");
        for line in lines {
            let event: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{who}: not a JSON line ({e}): {line}"));
            assert!(event.get("level").is_some(), "{who}: {line}");
            assert!(!line.contains(ESC), "{who}: escape in {line}");
        }
    }
}

#[test]
fn help_says_what_each_command_does() {
    for (name, opening) in [
        ("lanyard-server", "Lanyard server: the trust domain's CA"),
        ("lanyard-agent", "Lanyard agent: attests this node"),
    ] {
        let out = Command::new(bin(name)).arg("--help").output().unwrap();
        assert!(out.status.success(), "{name} --help failed");
        let help = String::from_utf8(out.stdout).unwrap();
        let first = help.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(opening),
            "{name} --help opens with {first:?}"
        );
        // The crate description talks about the library, not the command.
        assert!(
            !first.contains("library"),
            "{name} --help opens with {first:?}"
        );
    }
}
