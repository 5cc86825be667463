//! Self-signed mode: the CA certificate, SVID signing from CSRs (and what a
//! CSR cannot smuggle in), and cross-checks with rustls-webpki and openssl.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use lanyard_ca::{CaError, CertificateAuthority, SvidKey, SvidRequest};
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

fn new_ca(dir: &std::path::Path, now: SystemTime) -> CertificateAuthority {
    CertificateAuthority::load_or_create(self_signed_config(dir, 24 * HOUR), None, now).unwrap()
}

fn request_with<'a>(
    csr: &'a [u8],
    id: &'a lanyard_identity::SpiffeId,
    ttl: Duration,
) -> SvidRequest<'a> {
    SvidRequest {
        csr_der: csr,
        spiffe_id: id,
        dns_names: &[],
        ttl,
    }
}

/// A CSR made with rcgen from arbitrary parameters, i.e. asking for anything.
fn csr_from(params: &CertificateParams, key: &KeyPair) -> Vec<u8> {
    params.serialize_request(key).unwrap().der().to_vec()
}

fn uris_and_dns(cert: &X509Certificate<'_>) -> (Vec<String>, Vec<String>) {
    let mut uris = vec![];
    let mut dns = vec![];
    if let Some(san) = cert.subject_alternative_name().unwrap() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) => uris.push(u.to_string()),
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                other => panic!("unexpected SAN {other:?}"),
            }
        }
    }
    (uris, dns)
}

#[test]
fn ca_certificate_follows_the_signing_profile() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let ca = new_ca(dir.path(), now);
    let bundle = ca.trust_bundle();
    assert_eq!(bundle.len(), 1);
    lanyard_identity::check_signing_certificate(bundle[0].as_ref()).unwrap();

    let (_, cert) = X509Certificate::from_der(bundle[0].as_ref()).unwrap();
    assert_eq!(
        cert.subject().to_string(),
        "O=Lanyard, CN=Lanyard CA example.org"
    );
    assert_eq!(cert.subject(), cert.issuer());
    let (uris, dns) = uris_and_dns(&cert);
    assert_eq!(uris, vec!["spiffe://example.org"]);
    assert!(dns.is_empty());
    let bc = cert.basic_constraints().unwrap().unwrap();
    assert!(bc.critical && bc.value.ca);
    let ku = cert.key_usage().unwrap().unwrap();
    assert!(ku.critical);
    assert!(ku.value.key_cert_sign() && ku.value.crl_sign() && ku.value.digital_signature());
    assert!(!ku.value.key_encipherment());
    assert!(cert.raw_serial()[0] & 0x80 == 0 && cert.raw_serial().len() >= 8);
    let nb = cert.validity().not_before.timestamp();
    let na = cert.validity().not_after.timestamp();
    assert_eq!(nb, unix(now) - 30, "NotBefore is backdated 30 s");
    assert_eq!(na, unix(now) + 24 * 3600);
}

#[test]
fn signed_svid_verifies_with_webpki_and_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let ca = new_ca(dir.path(), now);
    let key = SvidKey::generate().unwrap();
    let csr = key.csr_der().unwrap();
    let spiffe_id = id("/billing/api");
    let dns = vec!["api.example.org".to_owned(), "api.internal".to_owned()];
    let svid = ca
        .sign_x509_svid(
            &SvidRequest {
                csr_der: &csr,
                spiffe_id: &spiffe_id,
                dns_names: &dns,
                ttl: HOUR,
            },
            now,
        )
        .unwrap();
    assert_eq!(svid.spiffe_id, spiffe_id);
    assert_eq!(svid.cert_chain.len(), 1, "self-signed mode: the leaf alone");
    assert_eq!(svid.not_before, unix(now) - 30);
    assert_eq!(svid.not_after, unix(now) + 3600);

    let summary = lanyard_identity::check_x509_svid(svid.cert_chain[0].as_ref()).unwrap();
    assert_eq!(summary.serial, svid.serial);
    assert_eq!(summary.dns_names, dns);
    assert!(svid.serial.len() >= 16, "at least 64 bits of serial");

    let (_, cert) = X509Certificate::from_der(svid.cert_chain[0].as_ref()).unwrap();
    assert_eq!(cert.subject().to_string(), "O=Lanyard, CN=api.example.org");
    assert_eq!(
        cert.public_key().raw,
        key.public_key_der().as_slice(),
        "the CSR's public key is certified"
    );
    let aki = cert
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.clone()
            }
            _ => None,
        })
        .expect("authority key identifier");
    let bundle = ca.trust_bundle();
    let (_, ca_cert) = X509Certificate::from_der(bundle[0].as_ref()).unwrap();
    let ski = ca_cert
        .iter_extensions()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(ski) => {
                Some(ski.clone())
            }
            _ => None,
        })
        .expect("subject key identifier");
    assert_eq!(aki.0, ski.0);

    assert_verifies(&ca.trust_bundle(), &svid.cert_chain, now);
    // ...and not once expired, nor under another CA.
    assert_rejected(&ca.trust_bundle(), &svid.cert_chain, now + 2 * HOUR);
    let other_dir = tempfile::tempdir().unwrap();
    let other = new_ca(other_dir.path(), now);
    assert_rejected(&other.trust_bundle(), &svid.cert_chain, now);
}

#[test]
fn svid_without_dns_names_has_no_common_name() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let ca = new_ca(dir.path(), now);
    let svid = sign(&ca, "/worker", HOUR, now);
    let (_, cert) = X509Certificate::from_der(svid.cert_chain[0].as_ref()).unwrap();
    assert_eq!(cert.subject().to_string(), "O=Lanyard");
    let (uris, dns) = uris_and_dns(&cert);
    assert_eq!(uris, vec!["spiffe://example.org/worker"]);
    assert!(dns.is_empty());
    assert_verifies(&ca.trust_bundle(), &svid.cert_chain, now);
}

#[test]
fn tampered_csr_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let ca = new_ca(dir.path(), now);
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["aaaa.example.org".to_owned()]).unwrap();
    let mut csr = csr_from(&params, &key);
    let spiffe_id = id("/x");
    // The untouched CSR is fine.
    ca.sign_x509_svid(&request_with(&csr, &spiffe_id, HOUR), now)
        .unwrap();
    // Same structure, one name changed: the signature no longer matches.
    let pos = csr
        .windows(4)
        .position(|w| w == b"aaaa")
        .expect("SAN bytes in the CSR");
    csr[pos] = b'b';
    let err = ca
        .sign_x509_svid(&request_with(&csr, &spiffe_id, HOUR), now)
        .unwrap_err();
    assert!(matches!(err, CaError::CsrSignature), "{err}");

    // A CSR carrying its own key but signed by another one.
    let other = KeyPair::generate().unwrap();
    let good = csr_from(&CertificateParams::default(), &key);
    let swapped = {
        let victim = csr_from(&CertificateParams::default(), &other);
        let (_, a) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&good).unwrap();
        let (_, b) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&victim)
                .unwrap();
        let a_key = a.certification_request_info.subject_pki.raw.to_vec();
        let b_key = b.certification_request_info.subject_pki.raw.to_vec();
        let pos = good
            .windows(a_key.len())
            .position(|w| w == a_key.as_slice())
            .unwrap();
        let mut out = good.clone();
        out[pos..pos + a_key.len()].copy_from_slice(&b_key);
        out
    };
    let err = ca
        .sign_x509_svid(&request_with(&swapped, &spiffe_id, HOUR), now)
        .unwrap_err();
    assert!(matches!(err, CaError::CsrSignature), "{err}");

    let err = ca
        .sign_x509_svid(&request_with(b"garbage", &spiffe_id, HOUR), now)
        .unwrap_err();
    assert!(matches!(err, CaError::MalformedCsr { .. }), "{err}");
}

#[test]
fn csr_asking_for_ca_powers_gets_a_plain_leaf() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let ca = new_ca(dir.path(), now);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params
        .distinguished_name
        .push(DnType::CommonName, "Totally A CA");
    let csr = csr_from(&params, &key);
    let spiffe_id = id("/sneaky");
    let svid = ca
        .sign_x509_svid(&request_with(&csr, &spiffe_id, HOUR), now)
        .unwrap();
    let (_, cert) = X509Certificate::from_der(svid.cert_chain[0].as_ref()).unwrap();
    assert!(!cert.is_ca());
    let bc = cert.basic_constraints().unwrap().unwrap();
    assert!(!bc.value.ca);
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature());
    assert!(!ku.key_cert_sign() && !ku.crl_sign() && !ku.key_encipherment());
    assert_eq!(cert.subject().to_string(), "O=Lanyard");
    assert_verifies(&ca.trust_bundle(), &svid.cert_chain, now);
}

#[test]
fn csr_with_extra_sans_or_another_id_gets_only_the_requested_names() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let ca = new_ca(dir.path(), now);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![
        SanType::URI("spiffe://example.org/admin".try_into().unwrap()),
        SanType::URI("spiffe://other.org/x".try_into().unwrap()),
        SanType::DnsName("evil.example.org".try_into().unwrap()),
        SanType::IpAddress("10.0.0.1".parse().unwrap()),
    ];
    let csr = csr_from(&params, &key);
    let spiffe_id = id("/billing/api");
    let dns = vec!["billing.example.org".to_owned()];
    let svid = ca
        .sign_x509_svid(
            &SvidRequest {
                csr_der: &csr,
                spiffe_id: &spiffe_id,
                dns_names: &dns,
                ttl: HOUR,
            },
            now,
        )
        .unwrap();
    let (_, cert) = X509Certificate::from_der(svid.cert_chain[0].as_ref()).unwrap();
    let (uris, got_dns) = uris_and_dns(&cert);
    assert_eq!(uris, vec!["spiffe://example.org/billing/api"]);
    assert_eq!(got_dns, dns);
    assert_eq!(svid.spiffe_id, spiffe_id);
}

#[test]
fn long_ttl_is_capped_to_the_ca_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let ca = new_ca(dir.path(), now);
    let svid = sign(&ca, "/long", Duration::from_secs(10 * 365 * 24 * 3600), now);
    let ca_not_after = ca.slots()[0].not_after;
    assert_eq!(svid.not_after, ca_not_after);
    assert_verifies(&ca.trust_bundle(), &svid.cert_chain, now);
}

#[test]
fn csr_keys_other_than_p256_and_p384_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let ca = new_ca(dir.path(), now);
    let spiffe_id = id("/k");

    let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let csr = csr_from(&CertificateParams::default(), &p384);
    let svid = ca
        .sign_x509_svid(&request_with(&csr, &spiffe_id, HOUR), now)
        .unwrap();
    assert_verifies(&ca.trust_bundle(), &svid.cert_chain, now);

    let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let csr = csr_from(&CertificateParams::default(), &ed);
    let err = ca
        .sign_x509_svid(&request_with(&csr, &spiffe_id, HOUR), now)
        .unwrap_err();
    assert!(
        matches!(&err, CaError::UnsupportedKey { algorithm } if algorithm == "Ed25519"),
        "{err}"
    );
    assert!(err.to_string().contains("P-256 or P-384"));
}

#[test]
fn csr_with_extensions_rcgen_does_not_model_is_still_checked() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let ca = new_ca(dir.path(), now);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params
        .custom_extensions
        .push(CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 99999, 1],
            vec![0x05, 0x00],
        ));
    params.subject_alt_names = vec![SanType::DnsName("zzzz.example.org".try_into().unwrap())];
    let mut csr = csr_from(&params, &key);
    let spiffe_id = id("/ext");
    let svid = ca
        .sign_x509_svid(&request_with(&csr, &spiffe_id, HOUR), now)
        .unwrap();
    let (_, cert) = X509Certificate::from_der(svid.cert_chain[0].as_ref()).unwrap();
    assert!(
        cert.extensions()
            .iter()
            .all(|e| e.oid.to_id_string() != "1.3.6.1.4.1.99999.1"),
        "requested extensions are not copied"
    );
    let pos = csr.windows(4).position(|w| w == b"zzzz").unwrap();
    csr[pos] = b'y';
    let err = ca
        .sign_x509_svid(&request_with(&csr, &spiffe_id, HOUR), now)
        .unwrap_err();
    assert!(matches!(err, CaError::CsrSignature), "{err}");
}

#[test]
fn bad_requests_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let ca = new_ca(dir.path(), now);
    let key = SvidKey::generate().unwrap();
    let csr = key.csr_der().unwrap();

    let foreign = lanyard_identity::SpiffeId::new("spiffe://other.org/api").unwrap();
    let err = ca
        .sign_x509_svid(&request_with(&csr, &foreign, HOUR), now)
        .unwrap_err();
    assert!(matches!(err, CaError::ForeignTrustDomain { .. }), "{err}");

    let td_id = td().id();
    let err = ca
        .sign_x509_svid(&request_with(&csr, &td_id, HOUR), now)
        .unwrap_err();
    assert!(matches!(err, CaError::TrustDomainIdAsSvid { .. }), "{err}");

    let ok_id = id("/a");
    let err = ca
        .sign_x509_svid(&request_with(&csr, &ok_id, Duration::ZERO), now)
        .unwrap_err();
    assert!(matches!(err, CaError::InvalidTtl { .. }), "{err}");

    let bad_dns = vec!["not a name".to_owned()];
    let err = ca
        .sign_x509_svid(
            &SvidRequest {
                csr_der: &csr,
                spiffe_id: &ok_id,
                dns_names: &bad_dns,
                ttl: HOUR,
            },
            now,
        )
        .unwrap_err();
    assert!(err.to_string().contains("not a name"), "{err}");

    // After the CA's NotAfter nothing can be signed.
    let late = now + 25 * HOUR;
    let err = ca
        .sign_x509_svid(&request_with(&csr, &ok_id, HOUR), late)
        .unwrap_err();
    assert!(matches!(err, CaError::CaExpired { .. }), "{err}");
}

#[test]
fn debug_output_redacts_keys() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(dir.path(), SystemTime::now());
    let debug = format!("{ca:?}");
    assert!(debug.contains("<redacted>"), "{debug}");
    assert!(!debug.contains("PRIVATE KEY"));
    let key_pem = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .next()
        .unwrap();
    let b64_line = key_pem.lines().nth(1).unwrap();
    assert!(!debug.contains(b64_line));
}

#[test]
fn ca_ttl_below_the_minimum_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = CertificateAuthority::load_or_create(
        self_signed_config(dir.path(), Duration::from_secs(5)),
        None,
        SystemTime::now(),
    )
    .unwrap_err();
    assert!(matches!(err, CaError::InvalidCaTtl { .. }), "{err}");
}

#[test]
fn authority_and_keys_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CertificateAuthority>();
    assert_send_sync::<SvidKey>();
    assert_send_sync::<lanyard_ca::CaJournal>();
    assert_send_sync::<CaError>();
}

#[test]
fn task_svids_carry_their_binding_and_still_verify() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let ca = new_ca(dir.path(), now);
    let key = SvidKey::generate().unwrap();
    let csr = key.csr_der().unwrap();
    let spiffe_id = id("/maint");
    let binding = lanyard_identity::TaskBinding {
        task_id: "task-00aa11bb22cc33dd".into(),
        ticket: "CHG-1234".into(),
        audiences: vec![id("/db")],
    };
    let svid = ca
        .sign_task_svid(&request_with(&csr, &spiffe_id, HOUR), Some(&binding), now)
        .unwrap();
    assert_eq!(
        lanyard_identity::TaskBinding::from_certificate(&svid.cert_chain[0]).unwrap(),
        Some(binding)
    );
    // A non-critical extension: both independent verifiers still accept it.
    assert_verifies(&ca.trust_bundle(), &svid.cert_chain, now);
    // Plain SVIDs carry none.
    let plain = ca
        .sign_x509_svid(&request_with(&csr, &spiffe_id, HOUR), now)
        .unwrap();
    assert_eq!(
        lanyard_identity::TaskBinding::from_certificate(&plain.cert_chain[0]).unwrap(),
        None
    );
}

#[test]
fn prepared_svid_is_signed_with_the_serial_and_expiry_fixed_before_signing() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let ca = new_ca(dir.path(), now);
    let csr = SvidKey::generate().unwrap().csr_der().unwrap();
    let spiffe_id = lanyard_identity::SpiffeId::new("spiffe://example.org/planned").unwrap();
    let prepared = ca
        .prepare_svid(&request_with(&csr, &spiffe_id, HOUR), now)
        .unwrap();
    assert_eq!(prepared.spiffe_id(), &spiffe_id);
    // Prepared in one place, signed later (on another thread in the server).
    let svid = std::thread::scope(|s| {
        s.spawn(|| ca.sign_prepared(&prepared, None, now))
            .join()
            .unwrap()
    })
    .unwrap();
    assert_eq!(svid.serial, prepared.serial());
    assert_eq!(svid.not_after, prepared.not_after());
    assert_verifies(&ca.trust_bundle(), &svid.cert_chain, now);
    let again = ca
        .prepare_svid(&request_with(&csr, &spiffe_id, HOUR), now)
        .unwrap();
    assert_ne!(
        again.serial(),
        prepared.serial(),
        "every preparation draws a new serial"
    );
    // A bad CSR fails at preparation, before anything could be recorded.
    assert!(matches!(
        ca.prepare_svid(&request_with(b"garbage", &spiffe_id, HOUR), now),
        Err(CaError::MalformedCsr { .. })
    ));
}
