//! The trust domain's CRL: what it holds, and that openssl enforces it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    process::Command,
    time::{Duration, SystemTime},
};

use common::*;
use lanyard_ca::{CertificateAuthority, RevocationReason, RevokedSerial, certificates_to_pem};
use x509_parser::prelude::FromDer;

#[test]
fn crl_lists_revoked_serials_and_openssl_enforces_it() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let ca =
        CertificateAuthority::load_or_create(self_signed_config(dir.path(), 24 * HOUR), None, now)
            .unwrap();
    let revoked = sign(&ca, "/revoked", HOUR, now);
    let good = sign(&ca, "/good", HOUR, now);
    let crl = ca
        .sign_crl(
            &[RevokedSerial {
                serial: revoked.serial.clone(),
                revoked_at: unix(now),
                reason: RevocationReason::KeyCompromise,
            }],
            7,
            now,
            Duration::from_secs(600),
        )
        .unwrap();

    let (_, parsed) =
        x509_parser::revocation_list::CertificateRevocationList::from_der(&crl).unwrap();
    assert_eq!(parsed.version().map(|v| v.0), Some(1), "v2 CRL");
    assert_eq!(
        parsed.crl_number().map(|n| n.to_string()),
        Some("7".to_owned())
    );
    let entries: Vec<_> = parsed.iter_revoked_certificates().collect();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        lanyard_identity::Serial::from_bytes(entries[0].raw_serial()).as_str(),
        revoked.serial
    );
    let next = parsed.next_update().unwrap().timestamp();
    assert_eq!(next - parsed.last_update().timestamp(), 600);
    // Signed by the active CA.
    let bundle = ca.trust_bundle();
    let (_, ca_cert) = x509_parser::certificate::X509Certificate::from_der(&bundle[0]).unwrap();
    parsed.verify_signature(ca_cert.public_key()).unwrap();

    let files = tempfile::tempdir().unwrap();
    let write = |name: &str, text: String| {
        let p = files.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let ca_pem = write("ca.pem", certificates_to_pem(&bundle));
    let crl_pem = {
        let out = Command::new(openssl())
            .args(["crl", "-inform", "DER", "-outform", "PEM"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        out.stdin.as_ref().unwrap().write_all(&crl).unwrap();
        let out = out.wait_with_output().unwrap();
        assert!(out.status.success());
        write("crl.pem", String::from_utf8(out.stdout).unwrap())
    };
    let verify = |leaf: &lanyard_ca::IssuedSvid| {
        let leaf_pem = write("leaf.pem", certificates_to_pem(&leaf.cert_chain[..1]));
        let out = Command::new(openssl())
            .arg("verify")
            .arg("-crl_check")
            .arg("-CAfile")
            .arg(&ca_pem)
            .arg("-CRLfile")
            .arg(&crl_pem)
            .arg(&leaf_pem)
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let text = verify(&revoked);
    assert!(text.contains("certificate revoked"), "{text}");
    let text = verify(&good);
    assert!(text.contains(": OK"), "{text}");
}

#[test]
fn crl_refuses_a_bad_serial() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let ca =
        CertificateAuthority::load_or_create(self_signed_config(dir.path(), 24 * HOUR), None, now)
            .unwrap();
    let err = ca
        .sign_crl(
            &[RevokedSerial {
                serial: "zz".into(),
                revoked_at: unix(now),
                reason: RevocationReason::Unspecified,
            }],
            1,
            now,
            Duration::from_secs(60),
        )
        .unwrap_err();
    assert!(err.to_string().contains("\"zz\""), "{err}");
}
