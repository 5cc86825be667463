//! End-to-end: state past tonic's 4 MiB default message size crosses every
//! API. A server is restored from a backup holding 310,000 revocations (a
//! CRL of more than 10 MiB), 40,000 SVID records and a long audit log; an
//! agent receives and applies that CRL, and `svid list`, `audit export` and
//! `datastore export` answer in full.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use lanyard_test_support as common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{
    agent::{Agent, crl_serials, eventually, register_self},
    *,
};
use lanyard_audit::{Action, AuditLog, Event};
use serde_json::{Value, json};

const REVOKED: usize = 310_000;
const SVIDS: usize = 40_000;
const AUDIT_RECORDS: usize = 16_000;
const MIB: usize = 1024 * 1024;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Adds many revocations, SVID records and audit records to an exported
/// backup, keeping its audit chain valid.
fn grow(backup: &mut Value, dir: &std::path::Path) {
    let now = now();
    let revocations = backup["revocations"].as_array_mut().unwrap();
    revocations.extend((0..REVOKED).map(|n| {
        json!({
            "serial": format!("7e{n:030x}"),
            "revoked_at": now,
            "not_after": now + 3600,
            "reason": "keyCompromise",
        })
    }));
    let svids = backup["svids"].as_array_mut().unwrap();
    svids.extend((0..SVIDS).map(|n| {
        json!({
            "serial": format!("5d{n:030x}"),
            "spiffe_id": format!("spiffe://{TD}/bulk/{n}"),
            "entry_id": null,
            "agent_id": null,
            "issued_at": now,
            "not_after": now + 3600,
        })
    }));
    // A longer audit log, chained on from the exported one.
    let path = dir.join("grown-audit.log");
    std::fs::write(&path, backup["audit_log"].as_str().unwrap()).unwrap();
    let mut log = AuditLog::open(&path, None).unwrap();
    let events = (0..AUDIT_RECORDS)
        .map(|n| {
            Event::new("uid:0(root)", Action::EntryCreated, format!("bulk-{n}"))
                .detail("padding", "x".repeat(200))
        })
        .collect();
    log.append_all(events, SystemTime::now()).unwrap();
    let (seq, hash) = log.head();
    drop(log);
    backup["audit_log"] = json!(std::fs::read_to_string(&path).unwrap());
    backup["audit_head"] = json!([seq, hash]);
}

#[test]
fn state_past_4_mib_crosses_every_api() {
    let mut server = Server::start();
    let backup_path = server.dir.path().join("backup.json");
    server.cli_ok(&[
        "datastore",
        "export",
        "--file",
        backup_path.to_str().unwrap(),
    ]);
    let mut backup: Value = serde_json::from_slice(&std::fs::read(&backup_path).unwrap()).unwrap();
    grow(&mut backup, server.dir.path());
    std::fs::write(&backup_path, serde_json::to_vec(&backup).unwrap()).unwrap();

    server.kill();
    std::fs::remove_dir_all(server.data_dir()).unwrap();
    let out = import_backup(&backup_path, &server.data_dir());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.spawn();

    let crl = fetch_crl(&server);
    assert!(crl.len() > 10 * MIB, "the CRL is {} bytes", crl.len());
    assert_eq!(crl_serials(&crl).len(), REVOKED);

    // An agent receives it over Sync and serves it over the Workload API.
    let agent = Agent::start(&server);
    register_self(&server, &agent, "large");
    let fetched = tempfile::tempdir().unwrap();
    let written = eventually(Duration::from_secs(60), "the CRL through the agent", || {
        let out = agent.api(&["fetch", "x509", "--write", fetched.path().to_str().unwrap()]);
        out.status
            .success()
            .then(|| std::fs::read(fetched.path().join("crl.pem")).unwrap())
    });
    let der: Vec<u8> = rustls_pki_types::pem::PemObject::pem_slice_iter(&written)
        .map(|c: Result<rustls_pki_types::CertificateRevocationListDer<'static>, _>| c.unwrap())
        .next()
        .unwrap()
        .to_vec();
    assert_eq!(der, crl, "the agent serves the server's 10 MiB CRL");

    let listed = server.cli_json(&["svid", "list"]);
    assert!(listed.as_array().unwrap().len() >= SVIDS);
    let exported = server.cli_ok(&["audit", "export"]);
    assert!(
        exported.len() > 4 * MIB,
        "audit export gave {} bytes",
        exported.len()
    );
    assert!(exported.lines().count() > AUDIT_RECORDS);
    let again = server.dir.path().join("again.json");
    server.cli_ok(&["datastore", "export", "--file", again.to_str().unwrap()]);
    assert!(std::fs::metadata(&again).unwrap().len() as usize > 4 * MIB);
}
