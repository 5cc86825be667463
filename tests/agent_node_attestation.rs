//! End to end: node attestation by x509pop and with an insecure bootstrap,
//! and the agent's config and usage errors.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lanyard_test_support as common;

use std::{process::Command, time::Duration};

use common::{
    Server, TD,
    agent::{Agent, eventually, register_self},
    bin, exit_code,
    x509pop::{self, NodeCa},
};

#[test]
fn x509pop_attestation_serves_workloads() {
    let dir = tempfile::tempdir().unwrap();
    let ca = NodeCa::new("node CA");
    let node = ca.node(dir.path(), "node-1");
    let bundle = dir.path().join("node-ca.pem");
    std::fs::write(&bundle, &ca.pem).unwrap();
    let cfg = x509pop::server_config(dir.path(), &bundle);
    let server = Server::start_with(&["--config", cfg.to_str().unwrap()]);
    let mut agent = Agent::prepare(&server);
    agent.spawn(None, &node.flags());
    agent.wait_ready();
    let agent_id = agent.spiffe_id();
    assert!(
        agent_id.starts_with(&format!("spiffe://{TD}/lanyard/agent/x509pop/")),
        "{agent_id}"
    );
    register_self(&server, &agent, "e2e/x509pop");
    let id = format!("spiffe://{TD}/e2e/x509pop");
    eventually(Duration::from_secs(20), "the SVID to be served", || {
        let out = agent.api(&["fetch", "x509"]);
        String::from_utf8_lossy(&out.stdout)
            .contains(&id)
            .then_some(())
    });
}

/// Starts an agent attesting with `node`; whether it became ready, and
/// its log.
fn attests(server: &Server, node: &x509pop::NodeCert) -> (bool, String) {
    let mut agent = Agent::prepare(server);
    agent.spawn(None, &node.flags());
    let ready = eventually(
        Duration::from_secs(30),
        "the agent to attest or exit",
        || {
            if agent.healthy() {
                Some(true)
            } else if agent.log().contains("error:") {
                Some(false)
            } else {
                None
            }
        },
    );
    if !ready {
        assert!(!agent.wait_exit(Duration::from_secs(10)).success());
    }
    (ready, agent.log())
}

fn wait_for_log(server: &Server, line: &str) {
    eventually(Duration::from_secs(10), line, || {
        server.log().contains(line).then_some(())
    });
}

#[test]
fn the_x509pop_bundle_is_reloaded_on_sighup_and_a_bad_one_is_kept_out() {
    let dir = tempfile::tempdir().unwrap();
    let (removed, kept) = (NodeCa::new("removed CA"), NodeCa::new("kept CA"));
    let bundle = dir.path().join("node-cas.pem");
    std::fs::write(&bundle, format!("{}{}", removed.pem, kept.pem)).unwrap();
    let cfg = x509pop::server_config(dir.path(), &bundle);
    let server = Server::start_with(&["--config", cfg.to_str().unwrap()]);
    let (ok, log) = attests(&server, &removed.node(dir.path(), "node-1"));
    assert!(ok, "{log}");

    // The CA leaves the bundle; SIGHUP.
    std::fs::write(&bundle, &kept.pem).unwrap();
    server.signal("HUP");
    wait_for_log(&server, "SIGHUP: reloaded the x509pop CA bundle");
    let (ok, log) = attests(&server, &removed.node(dir.path(), "node-2"));
    assert!(!ok, "{log}");
    assert!(
        log.contains("node certificate does not chain to the x509pop CA bundle"),
        "{log}"
    );

    // A bad bundle is refused with an error; the one in force stays.
    std::fs::write(&bundle, "not a certificate\n").unwrap();
    server.signal("HUP");
    wait_for_log(
        &server,
        "x509pop CA bundle not reloaded; the previous bundle stays in force",
    );
    let (ok, log) = attests(&server, &kept.node(dir.path(), "node-3"));
    assert!(ok, "{log}");
    let (ok, log) = attests(&server, &removed.node(dir.path(), "node-4"));
    assert!(!ok, "{log}");
}

#[test]
fn insecure_bootstrap_attests_and_then_trusts_the_servers_bundle() {
    let server = Server::start();
    let mut agent = Agent::prepare(&server);
    agent.insecure_bootstrap = true;
    agent.spawn(Some(&server.token()), &[]);
    agent.wait_ready();
    assert!(
        agent.log().contains("insecure bootstrap"),
        "{}",
        agent.log()
    );
    let stored = std::fs::read(agent.data_dir().join("bundle.pem")).unwrap();
    let stored: Vec<_> = rustls_pki_types::pem::PemObject::pem_slice_iter(&stored)
        .collect::<Result<Vec<rustls_pki_types::CertificateDer<'static>>, _>>()
        .unwrap();
    assert_eq!(stored, server.bundle());
}

#[test]
fn config_and_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    // Unknown key in the config file: exit 1 naming the key.
    let cfg = dir.path().join("agent.toml");
    std::fs::write(&cfg, "server_adress = \"127.0.0.1:1\"\n").unwrap();
    let out = Command::new(bin("lanyard-agent"))
        .args(["run", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(exit_code(&out), 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server_adress"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    // Conflicting flags: a usage error, exit 2.
    let out = Command::new(bin("lanyard-agent"))
        .args([
            "run",
            "--trust-bundle",
            "/nonexistent",
            "--insecure-bootstrap",
        ])
        .output()
        .unwrap();
    assert_eq!(exit_code(&out), 2);

    // No agent running: healthcheck and fetch fail with one line.
    let port = common::free_port();
    let out = Command::new(bin("lanyard-agent"))
        .args(["healthcheck", "--http-address", &port.to_string()])
        .output()
        .unwrap();
    assert_eq!(exit_code(&out), 1);
    let out = Command::new(bin("lanyard-agent"))
        .args(["api", "fetch", "x509"])
        .env(
            "SPIFFE_ENDPOINT_SOCKET",
            format!("unix://{}", dir.path().join("none.sock").display()),
        )
        .output()
        .unwrap();
    assert_eq!(exit_code(&out), 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("none.sock"), "{stderr}");
}
