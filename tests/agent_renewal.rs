//! End to end: the agent renews its own short-lived SVID at half-life and
//! keeps talking to the server with the new one (Sync and SVID signing go
//! on), so entries registered after renewals are still served.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lanyard_test_support as common;

use std::time::Duration;

use common::{
    Server, TD,
    agent::{Agent, eventually, register_self},
};

fn agent_serial(agent: &Agent) -> String {
    let pem = std::fs::read(agent.data_dir().join("agent_svid.pem")).unwrap();
    let certs: Vec<rustls_pki_types::CertificateDer<'static>> =
        rustls_pki_types::pem::PemObject::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&certs[0]).unwrap();
    cert.raw_serial_as_string()
}

#[test]
fn agent_svid_renews_and_the_agent_keeps_working() {
    let server = Server::start_with(&["--agent-svid-ttl", "12s"]);
    let agent = Agent::start(&server);
    let mut seen = vec![agent_serial(&agent)];
    while seen.len() < 3 {
        let serial = eventually(
            Duration::from_secs(30),
            "the agent SVID to be renewed",
            || {
                let s = agent_serial(&agent);
                (!seen.contains(&s)).then_some(s)
            },
        );
        seen.push(serial);
    }
    assert!(agent.healthy(), "{}", agent.log());
    // The server knows the agent by its newest SVID, and the agent uses it:
    // an entry registered now still reaches it and gets signed.
    register_self(&server, &agent, "e2e/after-renewal");
    let id = format!("spiffe://{TD}/e2e/after-renewal");
    eventually(Duration::from_secs(20), "the SVID after renewals", || {
        let out = agent.api(&["fetch", "x509"]);
        String::from_utf8_lossy(&out.stdout)
            .contains(&id)
            .then_some(())
    });
    assert!(
        agent.log().contains("agent SVID renewed"),
        "{}",
        agent.log()
    );
}
