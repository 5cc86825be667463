//! Upstream mode harness: a root CA made the way an operator makes one
//! (`openssl req -x509`, no SPIFFE URI SAN), a `lanyard-server` running as
//! its intermediate, and `openssl verify -crl_check` against the root, the
//! intermediate chain and the server's `GET /crl`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use super::Server;
use rustls_pki_types::{CertificateDer, pem::PemObject};

/// An operator's root CA on disk.
pub struct OperatorRoot {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub cert: CertificateDer<'static>,
}

/// `openssl req -x509`: an ECDSA P-256 root with basicConstraints CA:TRUE
/// (the openssl.cnf default), keyCertSign and cRLSign, a corporate subject
/// and no subjectAltName at all.
pub fn operator_root(dir: &Path) -> OperatorRoot {
    let cert_path = dir.join("root.crt");
    let key_path = dir.join("root.key");
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec"])
        .args(["-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .arg("-keyout")
        .arg(&key_path)
        .arg("-out")
        .arg(&cert_path)
        .args(["-days", "30", "-subj", "/O=Corp Inc/CN=Corp Root CA"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        .output()
        .expect("openssl must be installed (it is part of the test set-up)");
    assert!(
        out.status.success(),
        "openssl req -x509: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cert = CertificateDer::from_pem_file(&cert_path).unwrap();
    OperatorRoot {
        cert_path,
        key_path,
        cert,
    }
}

/// A server whose CA is an intermediate of a fresh operator root, configured
/// through `[upstream]` in a config file; `extra` are more `run` flags.
pub fn upstream_server(extra: &[&str]) -> (Server, OperatorRoot) {
    let dir = tempfile::Builder::new()
        .prefix("lanyard-upstream")
        .tempdir()
        .unwrap();
    let root = operator_root(dir.path());
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "[upstream]\ncert_path = {:?}\nkey_path = {:?}\n",
            root.cert_path.display().to_string(),
            root.key_path.display().to_string()
        ),
    )
    .unwrap();
    let mut flags = vec!["--config", config.to_str().unwrap()];
    flags.extend_from_slice(extra);
    let mut server = Server::start_with(&flags);
    // The root's files live as long as the server.
    server.keep.push(dir);
    (server, root)
}

/// Whether `crl_der` is signed by the key of `ca_der`.
pub fn crl_signed_by(crl_der: &[u8], ca_der: &[u8]) -> bool {
    let (_, crl) = x509_parser::parse_x509_crl(crl_der).unwrap();
    let (_, ca) = x509_parser::parse_x509_certificate(ca_der).unwrap();
    crl.verify_signature(ca.public_key()).is_ok()
}

/// The moment (unix seconds) a CA certificate's successor becomes active:
/// five sixths into its life, as lanyard-ca schedules it.
pub fn activation_at(ca_der: &[u8]) -> i64 {
    let (_, ca) = x509_parser::parse_x509_certificate(ca_der).unwrap();
    let (nb, na) = (
        ca.validity().not_before.timestamp(),
        ca.validity().not_after.timestamp(),
    );
    nb + (na - nb) * 5 / 6
}
