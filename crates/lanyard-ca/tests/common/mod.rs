//! Shared helpers for the integration tests: building CAs in temporary
//! directories, making CSRs, and verifying issued SVIDs with two independent
//! verifiers (rustls-webpki and the openssl command line).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lanyard_ca::{
    CaConfig, CertificateAuthority, IssuedSvid, SvidKey, SvidRequest, UpstreamCa,
    certificates_to_pem,
};
use lanyard_identity::{SpiffeId, TrustDomain};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls_pki_types::{CertificateDer, UnixTime};

pub const HOUR: Duration = Duration::from_secs(3600);

pub fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

pub fn id(path: &str) -> SpiffeId {
    SpiffeId::from_parts(&td(), path).unwrap()
}

pub fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

pub fn unix(t: SystemTime) -> i64 {
    i64::try_from(t.duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap()
}

pub fn self_signed_config(key_dir: &Path, ca_ttl: Duration) -> CaConfig {
    CaConfig {
        jwt_algorithm: Default::default(),
        trust_domain: td(),
        ca_ttl,
        key_dir: key_dir.to_path_buf(),
        upstream: None,
    }
}

/// Writes an upstream root CA (P-256, valid from `not_before` for `life`)
/// into `dir` and returns its file locations and PEM.
pub fn write_upstream(dir: &Path, not_before: SystemTime, life: Duration) -> (UpstreamCa, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Example Corp");
    params
        .distinguished_name
        .push(DnType::CommonName, "Example Upstream Root");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = not_before.into();
    params.not_after = (not_before + life).into();
    let cert = params.self_signed(&key).unwrap();
    let cert_path = dir.join("upstream.crt");
    let key_path = dir.join("upstream.key");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (
        UpstreamCa {
            cert_path,
            key_path,
        },
        cert.pem(),
    )
}

pub fn sign(ca: &CertificateAuthority, path: &str, ttl: Duration, now: SystemTime) -> IssuedSvid {
    let key = SvidKey::generate().unwrap();
    let csr = key.csr_der().unwrap();
    let spiffe_id = id(path);
    ca.sign_x509_svid(
        &SvidRequest {
            csr_der: &csr,
            spiffe_id: &spiffe_id,
            dns_names: &[],
            ttl,
        },
        now,
    )
    .unwrap()
}

/// Verifies `chain` (leaf first) against `bundle` with rustls-webpki at
/// `time`, for both TLS client and server use.
pub fn webpki_verify(
    bundle: &[CertificateDer<'static>],
    chain: &[CertificateDer<'static>],
    time: SystemTime,
) -> Result<(), webpki::Error> {
    let anchors: Vec<_> = bundle
        .iter()
        .map(|c| webpki::anchor_from_trusted_cert(c).map(|a| a.to_owned()))
        .collect::<Result<_, _>>()?;
    let leaf = webpki::EndEntityCert::try_from(&chain[0])?;
    let time = UnixTime::since_unix_epoch(time.duration_since(UNIX_EPOCH).unwrap());
    let algs = &[
        webpki::ring::ECDSA_P256_SHA256,
        webpki::ring::ECDSA_P256_SHA384,
        webpki::ring::ECDSA_P384_SHA256,
        webpki::ring::ECDSA_P384_SHA384,
    ];
    for usage in [
        webpki::KeyUsage::client_auth(),
        webpki::KeyUsage::server_auth(),
    ] {
        leaf.verify_for_usage(algs, &anchors, &chain[1..], time, usage, None, None)?;
    }
    Ok(())
}

/// The openssl binary; its absence fails the test (it is part of the test
/// environment, not optional).
pub fn openssl() -> PathBuf {
    let path = PathBuf::from("/usr/bin/openssl");
    if path.exists() {
        return path;
    }
    match Command::new("openssl").arg("version").output() {
        Ok(out) if out.status.success() => PathBuf::from("openssl"),
        _ => panic!(
            "openssl is required for the independent-verifier tests but was not found at \
             /usr/bin/openssl or on PATH; install it (e.g. `apt-get install openssl`)"
        ),
    }
}

/// Verifies `chain` against `bundle` with `openssl verify -x509_strict` at
/// `time` (intermediates passed with `-untrusted`). Returns openssl's output
/// on failure.
pub fn openssl_verify(
    bundle: &[CertificateDer<'static>],
    chain: &[CertificateDer<'static>],
    time: SystemTime,
) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let bundle_path = dir.path().join("bundle.pem");
    let leaf_path = dir.path().join("leaf.pem");
    std::fs::write(&bundle_path, certificates_to_pem(bundle)).unwrap();
    std::fs::write(&leaf_path, certificates_to_pem(&chain[..1])).unwrap();
    let inter_path = dir.path().join("intermediate.pem");
    if chain.len() > 1 {
        std::fs::write(&inter_path, certificates_to_pem(&chain[1..])).unwrap();
    }
    for purpose in ["sslclient", "sslserver"] {
        let mut cmd = Command::new(openssl());
        cmd.arg("verify")
            .arg("-x509_strict")
            .arg("-purpose")
            .arg(purpose)
            .arg("-attime")
            .arg(unix(time).to_string())
            .arg("-CAfile")
            .arg(&bundle_path);
        if chain.len() > 1 {
            cmd.arg("-untrusted").arg(&inter_path);
        }
        let out = cmd.arg(&leaf_path).output().expect("run openssl verify");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() || !text.contains(": OK") {
            return Err(text);
        }
    }
    Ok(())
}

/// Both verifiers must accept.
pub fn assert_verifies(
    bundle: &[CertificateDer<'static>],
    chain: &[CertificateDer<'static>],
    time: SystemTime,
) {
    webpki_verify(bundle, chain, time).expect("rustls-webpki rejects the SVID");
    openssl_verify(bundle, chain, time).expect("openssl verify rejects the SVID");
}

/// Both verifiers must reject.
pub fn assert_rejected(
    bundle: &[CertificateDer<'static>],
    chain: &[CertificateDer<'static>],
    time: SystemTime,
) {
    assert!(
        webpki_verify(bundle, chain, time).is_err(),
        "rustls-webpki accepts"
    );
    assert!(
        openssl_verify(bundle, chain, time).is_err(),
        "openssl accepts"
    );
}
