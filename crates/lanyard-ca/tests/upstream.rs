//! Upstream mode: Lanyard's CA as the intermediate of an existing CA loaded
//! from disk, cross-checked with rustls-webpki and openssl.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::*;
use lanyard_ca::{CaConfig, CaError, CertificateAuthority, Rotation, UpstreamCa};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, X509Certificate};

fn upstream_config(key_dir: &Path, upstream: UpstreamCa, ca_ttl: Duration) -> CaConfig {
    CaConfig {
        jwt_algorithm: Default::default(),
        trust_domain: td(),
        ca_ttl,
        key_dir: key_dir.to_path_buf(),
        upstream: Some(upstream),
    }
}

fn der_of(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

#[test]
fn svids_chain_through_the_intermediate_to_the_upstream_root() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let (upstream, upstream_pem) = write_upstream(dir.path(), now - HOUR, 24 * 365 * HOUR);
    let keys = dir.path().join("keys");
    let ca = CertificateAuthority::load_or_create(
        upstream_config(&keys, upstream, 24 * HOUR),
        None,
        now,
    )
    .unwrap();

    assert_eq!(ca.trust_bundle(), vec![der_of(&upstream_pem)]);
    let svid = sign(&ca, "/billing/api", HOUR, now);
    assert_eq!(svid.cert_chain.len(), 2, "[leaf, intermediate]");
    assert_eq!(svid.cert_chain[1], ca.active_certificate());

    let (_, inter) = X509Certificate::from_der(svid.cert_chain[1].as_ref()).unwrap();
    assert_eq!(
        inter.issuer().to_string(),
        "O=Example Corp, CN=Example Upstream Root"
    );
    assert_eq!(
        inter.subject().to_string(),
        "O=Lanyard, CN=Lanyard CA example.org"
    );
    lanyard_identity::check_signing_certificate(svid.cert_chain[1].as_ref()).unwrap();

    assert_verifies(&ca.trust_bundle(), &svid.cert_chain, now);
    // The leaf alone does not verify against the root: the intermediate is needed.
    assert_rejected(&ca.trust_bundle(), &svid.cert_chain[..1], now);
}

#[test]
fn intermediate_never_outlives_the_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    // The upstream has 6 hours left; the CA TTL asks for 24.
    let (upstream, upstream_pem) = write_upstream(dir.path(), now - 18 * HOUR, 24 * HOUR);
    let ca = CertificateAuthority::load_or_create(
        upstream_config(&dir.path().join("keys"), upstream, 24 * HOUR),
        None,
        now,
    )
    .unwrap();
    let (_, root) = X509Certificate::from_der(der_of(&upstream_pem).as_ref())
        .map(|(r, c)| (r.to_vec(), c.validity().not_after.timestamp()))
        .unwrap();
    let active = &ca.slots()[0];
    assert_eq!(active.not_after, root);
    // SVID TTLs are capped in turn.
    let svid = sign(&ca, "/long", 100 * HOUR, now);
    assert_eq!(svid.not_after, root);
    assert_verifies(&ca.trust_bundle(), &svid.cert_chain, now);
}

#[test]
fn rotation_in_upstream_mode_keeps_the_bundle_and_swaps_the_intermediate() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = SystemTime::now();
    let (upstream, _) = write_upstream(dir.path(), t0 - HOUR, 24 * 365 * HOUR);
    let mut ca = CertificateAuthority::load_or_create(
        upstream_config(&dir.path().join("keys"), upstream, 24 * HOUR),
        None,
        t0,
    )
    .unwrap();
    let bundle = ca.trust_bundle();
    let first = ca.active_certificate();
    let old_svid = sign(&ca, "/a", HOUR, t0);

    let t1 = ca.next_rotation_at();
    assert_eq!(ca.rotate(t1).unwrap(), Rotation::Prepared);
    assert_eq!(ca.trust_bundle(), bundle);
    let t2 = ca.next_rotation_at();
    assert_eq!(ca.rotate(t2).unwrap(), Rotation::Activated);
    assert_ne!(ca.active_certificate(), first);
    assert_eq!(ca.trust_bundle(), bundle);

    let new_svid = sign(&ca, "/a", HOUR, t2);
    assert_eq!(new_svid.cert_chain[1], ca.active_certificate());
    assert_verifies(&bundle, &new_svid.cert_chain, t2);
    assert_verifies(&bundle, &old_svid.cert_chain, t0);
}

#[test]
fn upstream_journal_round_trips_and_refuses_a_mode_switch() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let (upstream, _) = write_upstream(dir.path(), now - HOUR, 24 * 365 * HOUR);
    let keys = dir.path().join("keys");
    let cfg = upstream_config(&keys, upstream, 24 * HOUR);
    let ca = CertificateAuthority::load_or_create(cfg.clone(), None, now).unwrap();
    let journal = ca.journal();
    let again = CertificateAuthority::load_or_create(cfg, Some(journal.clone()), now).unwrap();
    assert_eq!(again.active_certificate(), ca.active_certificate());
    let svid = sign(&again, "/b", HOUR, now);
    assert_verifies(&again.trust_bundle(), &svid.cert_chain, now);

    let err = CertificateAuthority::load_or_create(
        self_signed_config(&keys, 24 * HOUR),
        Some(journal.clone()),
        now,
    )
    .unwrap_err();
    assert!(matches!(err, CaError::Journal { .. }), "{err}");
    assert!(err.to_string().contains("self-signed"), "{err}");

    // A different upstream CA did not sign the journaled intermediates.
    let other_dir = tempfile::tempdir().unwrap();
    let (other, _) = write_upstream(other_dir.path(), now - HOUR, 24 * 365 * HOUR);
    let err = CertificateAuthority::load_or_create(
        upstream_config(&keys, other, 24 * HOUR),
        Some(journal),
        now,
    )
    .unwrap_err();
    assert!(matches!(err, CaError::BrokenChain { .. }), "{err}");
}

fn load_err(upstream: UpstreamCa, now: SystemTime) -> CaError {
    let keys = tempfile::tempdir().unwrap();
    CertificateAuthority::load_or_create(
        upstream_config(keys.path(), upstream, 24 * HOUR),
        None,
        now,
    )
    .unwrap_err()
}

#[test]
fn bad_upstream_files_name_the_path_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let (good, _) = write_upstream(dir.path(), now - HOUR, 24 * 365 * HOUR);

    let expect = |err: CaError, path: &Path, needle: &str| {
        let msg = err.to_string();
        assert!(matches!(err, CaError::Upstream { .. }), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains(needle), "{needle:?} not in {msg}");
    };

    let missing = dir.path().join("nope.crt");
    let err = load_err(
        UpstreamCa {
            cert_path: missing.clone(),
            key_path: good.key_path.clone(),
        },
        now,
    );
    expect(err, &missing, "cannot read");

    let garbage = dir.path().join("garbage.crt");
    std::fs::write(&garbage, "hello").unwrap();
    let err = load_err(
        UpstreamCa {
            cert_path: garbage.clone(),
            key_path: good.key_path.clone(),
        },
        now,
    );
    expect(err, &garbage, "CERTIFICATE");

    // A leaf certificate is not a CA.
    let leaf_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["leaf.example.org".to_owned()]).unwrap();
    params.is_ca = IsCa::ExplicitNoCa;
    let leaf = params.self_signed(&leaf_key).unwrap();
    let leaf_cert = dir.path().join("leaf.crt");
    let leaf_key_path = dir.path().join("leaf.key");
    std::fs::write(&leaf_cert, leaf.pem()).unwrap();
    std::fs::write(&leaf_key_path, leaf_key.serialize_pem()).unwrap();
    let err = load_err(
        UpstreamCa {
            cert_path: leaf_cert.clone(),
            key_path: leaf_key_path,
        },
        now,
    );
    expect(err, &leaf_cert, "not a CA");

    // pathLenConstraint 0 forbids an intermediate CA below it.
    let pl_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let pl = params.self_signed(&pl_key).unwrap();
    let pl_cert = dir.path().join("pathlen0.crt");
    let pl_key_path = dir.path().join("pathlen0.key");
    std::fs::write(&pl_cert, pl.pem()).unwrap();
    std::fs::write(&pl_key_path, pl_key.serialize_pem()).unwrap();
    let err = load_err(
        UpstreamCa {
            cert_path: pl_cert.clone(),
            key_path: pl_key_path,
        },
        now,
    );
    expect(err, &pl_cert, "pathLenConstraint");

    // Expired upstream.
    let old_dir = tempfile::tempdir().unwrap();
    let (expired, _) = write_upstream(old_dir.path(), now - 48 * HOUR, 24 * HOUR);
    let err = load_err(expired.clone(), now);
    expect(err, &expired.cert_path, "expired");

    // Key of another CA.
    let other_dir = tempfile::tempdir().unwrap();
    let (other, _) = write_upstream(other_dir.path(), now - HOUR, 24 * HOUR);
    let err = load_err(
        UpstreamCa {
            cert_path: good.cert_path.clone(),
            key_path: other.key_path.clone(),
        },
        now,
    );
    expect(err, &other.key_path, "does not belong");

    // Legacy SEC1 key block.
    let sec1 = dir.path().join("sec1.key");
    std::fs::write(
        &sec1,
        "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIA==\n-----END EC PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = load_err(
        UpstreamCa {
            cert_path: good.cert_path.clone(),
            key_path: sec1.clone(),
        },
        now,
    );
    expect(err, &sec1, "openssl pkcs8 -topk8");

    // Missing key.
    let no_key = dir.path().join("absent.key");
    let err = load_err(
        UpstreamCa {
            cert_path: good.cert_path.clone(),
            key_path: no_key.clone(),
        },
        now,
    );
    expect(err, &no_key, "cannot read");
}

#[test]
fn openssl_made_upstream_ca_works() {
    // An upstream CA as an operator would make it with openssl, not rcgen.
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("root.key");
    let cert_path = dir.path().join("root.crt");
    let status = std::process::Command::new(openssl())
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
        ])
        .args(["-nodes", "-days", "30", "-subj", "/O=Ops/CN=Ops Root"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        .arg("-keyout")
        .arg(&key_path)
        .arg("-out")
        .arg(&cert_path)
        .output()
        .expect("run openssl req");
    assert!(
        status.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let now = SystemTime::now();
    let ca = CertificateAuthority::load_or_create(
        upstream_config(
            &dir.path().join("keys"),
            UpstreamCa {
                cert_path,
                key_path,
            },
            24 * HOUR,
        ),
        None,
        now,
    )
    .unwrap();
    let svid = sign(&ca, "/ops", HOUR, now);
    assert_verifies(&ca.trust_bundle(), &svid.cert_chain, now);
}
