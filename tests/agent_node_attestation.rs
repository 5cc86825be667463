//! End to end: node attestation by x509pop and with an insecure bootstrap,
//! and the agent's config and usage errors.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::{process::Command, time::Duration};

use common::{
    Server, TD,
    agent::{Agent, eventually, register_self},
    bin, exit_code,
};

/// A node CA and a node certificate + key it issued, as PEM files in `dir`.
fn node_material(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "node CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let node_key = rcgen::KeyPair::generate().unwrap();
    let mut node_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    node_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "node-1");
    node_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let node = node_params.signed_by(&node_key, &issuer).unwrap();
    let (ca_path, cert_path, key_path) = (
        dir.join("node-ca.pem"),
        dir.join("node.pem"),
        dir.join("node.key"),
    );
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(&cert_path, node.pem()).unwrap();
    std::fs::write(&key_path, node_key.serialize_pem()).unwrap();
    (ca_path, cert_path, key_path)
}

#[test]
fn x509pop_attestation_serves_workloads() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = node_material(dir.path());
    let cfg = dir.path().join("server.toml");
    std::fs::write(
        &cfg,
        format!("[x509pop]\nca_bundle_path = {:?}\n", ca.to_str().unwrap()),
    )
    .unwrap();
    let server = Server::start_with(&["--config", cfg.to_str().unwrap()]);
    let mut agent = Agent::prepare(&server);
    agent.spawn(
        None,
        &[
            "--x509pop-cert",
            cert.to_str().unwrap(),
            "--x509pop-key",
            key.to_str().unwrap(),
        ],
    );
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
