//! The agent's trust domain under an operator's root (upstream mode): the
//! bundle names none, so `--trust-domain` is required; it is checked against
//! the bundle, the server and the stored agent SVID, and a mismatch names
//! both trust domains.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lanyard_test_support as common;

use std::time::Duration;

use common::{Server, TD, agent::Agent, upstream::upstream_server};

/// The log of the agent's `n`th start.
fn start_log(agent: &Agent, n: u32) -> String {
    std::fs::read_to_string(agent.dir.path().join(format!("agent-{n}.log"))).unwrap_or_default()
}

fn exits_with_error(agent: &mut Agent, n: u32) -> String {
    let status = agent.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "agent start {n} should fail");
    assert_eq!(status.code(), Some(1), "{}", start_log(agent, n));
    start_log(agent, n)
}

#[test]
fn an_operator_root_needs_the_trust_domain_and_a_mismatch_names_both() {
    let (server, root) = upstream_server(&[]);
    // The root names no trust domain: no subjectAltName at all.
    let (_, parsed) = x509_parser::parse_x509_certificate(&root.cert).unwrap();
    assert!(parsed.subject_alternative_name().unwrap().is_none());
    assert_eq!(server.bundle(), vec![root.cert.clone()], "bundle show");

    let mut agent = Agent::prepare(&server);
    // 1. No --trust-domain: the agent says what is missing and how to give it.
    agent.spawn(Some(&server.token()), &[]);
    let log = exits_with_error(&mut agent, 1);
    eprintln!("PEEK1 {log}");
    assert!(
        log.contains("cannot tell the trust domain") && log.contains("--trust-domain"),
        "{log}"
    );
    // 2. A trust domain the server is not in: refused in the handshake,
    //    before the token is sent, naming both.
    agent.spawn(Some(&server.token()), &["--trust-domain", "other.test"]);
    let log = exits_with_error(&mut agent, 2);
    eprintln!("PEEK2 {log}");
    assert!(log.contains("trust domain mismatch"), "{log}");
    assert!(log.contains("other.test") && log.contains(TD), "{log}");
    // 3. The right one: attested and serving.
    let token = server.token();
    agent.spawn(Some(&token), &["--trust-domain", TD]);
    agent.wait_ready();
    assert!(agent.spiffe_id().starts_with(&format!("spiffe://{TD}/")));
    // 4. A restart with another trust domain does not re-use the stored SVID
    //    of this one.
    agent.terminate();
    agent.spawn(None, &["--trust-domain", "other.test"]);
    let log = exits_with_error(&mut agent, 4);
    eprintln!("PEEK4 {log}");
    assert!(log.contains("stored agent SVID"), "{log}");
    assert!(log.contains("other.test") && log.contains(TD), "{log}");
    // ... and with the right one (or none: the stored SVID names it) it does.
    agent.spawn(None, &["--trust-domain", TD]);
    agent.wait_ready();
    agent.terminate();
    agent.spawn(None, &[]);
    agent.wait_ready();
}

#[test]
fn insecure_bootstrap_keeps_working_and_checks_a_configured_trust_domain() {
    let (server, _root) = upstream_server(&[]);
    let mut agent = Agent::prepare(&server);
    agent.insecure_bootstrap = true;
    agent.spawn(Some(&server.token()), &["--trust-domain", "other.test"]);
    let log = exits_with_error(&mut agent, 1);
    assert!(log.contains("trust domain mismatch"), "{log}");
    assert!(log.contains("other.test") && log.contains(TD), "{log}");
    // Without one, the server's answer names it, as before.
    agent.spawn(Some(&server.token()), &[]);
    agent.wait_ready();
    assert!(agent.spiffe_id().starts_with(&format!("spiffe://{TD}/")));
}

#[test]
fn a_bundle_naming_another_trust_domain_is_a_mismatch() {
    // Lanyard's self-signed CA names its trust domain in the bundle.
    let server = Server::start();
    let mut agent = Agent::prepare(&server);
    agent.spawn(Some(&server.token()), &["--trust-domain", "other.test"]);
    let log = exits_with_error(&mut agent, 1);
    assert!(log.contains("trust domain mismatch"), "{log}");
    assert!(log.contains("other.test") && log.contains(TD), "{log}");
    assert!(log.contains("bootstrap.pem"), "names the bundle: {log}");
    // Agreeing with it is fine.
    agent.spawn(Some(&server.token()), &["--trust-domain", TD]);
    agent.wait_ready();
}
