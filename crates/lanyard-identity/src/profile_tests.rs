//! Profile checks against certificates generated here with rcgen: one good
//! certificate of each kind, then one certificate per broken rule.

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose as Eku, IsCa, Issuer, KeyPair, KeyUsagePurpose as Ku, SanType,
    SerialNumber, date_time_ymd,
};

use super::*;
use crate::IdError;

const SERIAL: [u8; 16] = [
    0x8a, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
];

fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

fn leaf_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name
        .push(DnType::OrganizationName, "Lanyard");
    p.subject_alt_names = vec![
        uri("spiffe://example.org/billing/api"),
        SanType::DnsName("api.example.org".try_into().unwrap()),
    ];
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![Ku::DigitalSignature];
    p.extended_key_usages = vec![Eku::ServerAuth, Eku::ClientAuth];
    p.serial_number = Some(SerialNumber::from_slice(&SERIAL));
    p.not_before = date_time_ymd(2025, 1, 1);
    p.not_after = date_time_ymd(2025, 1, 2);
    p
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, "Lanyard CA");
    p.subject_alt_names = vec![uri("spiffe://example.org")];
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![Ku::KeyCertSign, Ku::CrlSign];
    p.serial_number = Some(SerialNumber::from_slice(&SERIAL));
    p.not_before = date_time_ymd(2025, 1, 1);
    p.not_after = date_time_ymd(2026, 1, 1);
    p
}

/// Signs `params` with a fresh CA, as the server would.
fn issue(params: &CertificateParams) -> Vec<u8> {
    let issuer = Issuer::new(ca_params(), KeyPair::generate().unwrap());
    let key = KeyPair::generate().unwrap();
    params.signed_by(&key, &issuer).unwrap().der().to_vec()
}

fn self_signed(params: &CertificateParams) -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().der().to_vec()
}

fn leaf_with(change: impl FnOnce(&mut CertificateParams)) -> Result<SvidSummary, ProfileError> {
    let mut p = leaf_params();
    change(&mut p);
    check_x509_svid(&issue(&p))
}

fn ca_with(change: impl FnOnce(&mut CertificateParams)) -> Result<(), ProfileError> {
    let mut p = ca_params();
    change(&mut p);
    check_signing_certificate(&self_signed(&p))
}

fn extension(oid: &[u64], critical: bool, content: &[u8]) -> CustomExtension {
    let mut ext = CustomExtension::from_oid_content(oid, content.to_vec());
    ext.set_criticality(critical);
    ext
}

const KEY_USAGE: &[u64] = &[2, 5, 29, 15];
const BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];
const SUBJECT_ALT_NAME: &[u64] = &[2, 5, 29, 17];

// === leaf ===

#[test]
fn good_leaf_passes_with_summary() {
    let summary = check_x509_svid(&issue(&leaf_params())).unwrap();
    assert_eq!(
        summary.spiffe_id.as_str(),
        "spiffe://example.org/billing/api"
    );
    // DER puts a 0x00 before 0x8a; the summary drops it.
    assert_eq!(summary.serial, "8a0102030405060708090a0b0c0d0e0f");
    assert_eq!(summary.not_before, 1_735_689_600);
    assert_eq!(summary.not_after, 1_735_689_600 + 86_400);
    assert_eq!(summary.dns_names, vec!["api.example.org".to_owned()]);
}

#[test]
fn good_leaf_with_empty_subject_and_critical_san_passes() {
    // rcgen marks the SAN critical when the subject is empty.
    let summary = leaf_with(|p| p.distinguished_name = DistinguishedName::new()).unwrap();
    assert_eq!(summary.spiffe_id.path(), "/billing/api");
}

#[test]
fn leaf_default_rcgen_serial_passes() {
    // rcgen's default: 20 bytes with the top bit cleared.
    leaf_with(|p| p.serial_number = None).unwrap();
}

#[test]
fn leaf_non_critical_private_extension_passes() {
    // Lanyard's task extension is non-critical; unknown non-critical is fine.
    leaf_with(|p| {
        p.custom_extensions = vec![extension(
            &[1, 3, 6, 1, 4, 1, 99999, 1],
            false,
            &[0x05, 0x00],
        )]
    })
    .unwrap();
}

#[test]
fn leaf_two_uri_sans() {
    let e = leaf_with(|p| p.subject_alt_names.push(uri("spiffe://example.org/other"))).unwrap_err();
    assert_eq!(e, ProfileError::UriSanCount { found: 2 });
}

#[test]
fn leaf_no_uri_san() {
    let e = leaf_with(|p| {
        p.subject_alt_names
            .retain(|s| !matches!(s, SanType::URI(_)))
    })
    .unwrap_err();
    assert_eq!(e, ProfileError::UriSanCount { found: 0 });
    let e = leaf_with(|p| p.subject_alt_names.clear()).unwrap_err();
    assert_eq!(e, ProfileError::UriSanCount { found: 0 });
}

#[test]
fn leaf_non_spiffe_uri() {
    let e =
        leaf_with(|p| p.subject_alt_names = vec![uri("https://example.org/billing")]).unwrap_err();
    assert!(
        matches!(&e, ProfileError::InvalidUriSan { uri, reason: IdError::WrongScheme { .. } } if uri == "https://example.org/billing"),
        "{e:?}"
    );
}

#[test]
fn leaf_invalid_spiffe_ids() {
    let e = leaf_with(|p| p.subject_alt_names = vec![uri("spiffe://Example.org/x")]).unwrap_err();
    assert!(
        matches!(
            &e,
            ProfileError::InvalidUriSan {
                reason: IdError::TrustDomainUpperCase { .. },
                ..
            }
        ),
        "{e:?}"
    );
    let e =
        leaf_with(|p| p.subject_alt_names = vec![uri("spiffe://example.org/a/../b")]).unwrap_err();
    assert!(
        matches!(
            &e,
            ProfileError::InvalidUriSan {
                reason: IdError::DotSegment { .. },
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn leaf_trust_domain_id() {
    let e = leaf_with(|p| p.subject_alt_names = vec![uri("spiffe://example.org")]).unwrap_err();
    assert_eq!(
        e,
        ProfileError::LeafIdWithoutPath {
            id: "spiffe://example.org".to_owned()
        }
    );
}

#[test]
fn leaf_ca_true() {
    let e = leaf_with(|p| p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained)).unwrap_err();
    assert_eq!(e, ProfileError::LeafIsCa);
}

#[test]
fn leaf_missing_basic_constraints() {
    let e = leaf_with(|p| p.is_ca = IsCa::NoCa).unwrap_err();
    assert_eq!(e, ProfileError::MissingBasicConstraints);
}

#[test]
fn leaf_forbidden_key_usages() {
    for (extra, name) in [
        (Ku::KeyCertSign, "keyCertSign"),
        (Ku::CrlSign, "cRLSign"),
        (Ku::KeyEncipherment, "keyEncipherment"),
        (Ku::KeyAgreement, "keyAgreement"),
        (Ku::DataEncipherment, "dataEncipherment"),
        (Ku::ContentCommitment, "contentCommitment"),
    ] {
        let e = leaf_with(|p| p.key_usages.push(extra)).unwrap_err();
        assert_eq!(e, ProfileError::ForbiddenKeyUsage { usage: name });
    }
}

#[test]
fn leaf_key_usage_not_critical() {
    let e = leaf_with(|p| {
        p.key_usages.clear();
        // BIT STRING, 7 unused bits, digitalSignature.
        p.custom_extensions = vec![extension(KEY_USAGE, false, &[0x03, 0x02, 0x07, 0x80])];
    })
    .unwrap_err();
    assert_eq!(e, ProfileError::KeyUsageNotCritical);
}

#[test]
fn leaf_missing_key_usage() {
    let e = leaf_with(|p| p.key_usages.clear()).unwrap_err();
    assert_eq!(e, ProfileError::MissingKeyUsage);
}

#[test]
fn leaf_missing_digital_signature() {
    let e = leaf_with(|p| {
        p.key_usages.clear();
        // An empty BIT STRING: no usage at all.
        p.custom_extensions = vec![extension(KEY_USAGE, true, &[0x03, 0x01, 0x00])];
    })
    .unwrap_err();
    assert_eq!(e, ProfileError::MissingDigitalSignature);
}

#[test]
fn leaf_missing_eku() {
    let e = leaf_with(|p| p.extended_key_usages.clear()).unwrap_err();
    assert_eq!(e, ProfileError::MissingExtendedKeyUsage);
}

#[test]
fn leaf_missing_client_auth() {
    let e = leaf_with(|p| p.extended_key_usages = vec![Eku::ServerAuth]).unwrap_err();
    assert_eq!(
        e,
        ProfileError::MissingExtendedKeyUsagePurpose {
            usage: "clientAuth"
        }
    );
}

#[test]
fn leaf_missing_server_auth() {
    let e =
        leaf_with(|p| p.extended_key_usages = vec![Eku::ClientAuth, Eku::CodeSigning]).unwrap_err();
    assert_eq!(
        e,
        ProfileError::MissingExtendedKeyUsagePurpose {
            usage: "serverAuth"
        }
    );
}

#[test]
fn leaf_short_serial() {
    let e =
        leaf_with(|p| p.serial_number = Some(SerialNumber::from_slice(&[1, 2, 3, 4]))).unwrap_err();
    assert_eq!(e, ProfileError::SerialTooShort { bytes: 4, min: 8 });
    // 8 bytes whose top byte is zero carry only 56 bits.
    let e =
        leaf_with(|p| p.serial_number = Some(SerialNumber::from_slice(&[0, 1, 2, 3, 4, 5, 6, 7])))
            .unwrap_err();
    assert_eq!(e, ProfileError::SerialTooShort { bytes: 7, min: 8 });
    // Exactly 8 significant bytes pass.
    let s =
        leaf_with(|p| p.serial_number = Some(SerialNumber::from_slice(&[1, 2, 3, 4, 5, 6, 7, 8])))
            .unwrap();
    assert_eq!(s.serial, "0102030405060708");
}

#[test]
fn leaf_long_serial() {
    // 20 bytes with the top bit set encode as 21 content octets.
    let e =
        leaf_with(|p| p.serial_number = Some(SerialNumber::from_slice(&[0xff; 20]))).unwrap_err();
    assert_eq!(e, ProfileError::SerialTooLong { bytes: 21, max: 20 });
    leaf_with(|p| p.serial_number = Some(SerialNumber::from_slice(&[0x7f; 20]))).unwrap();
}

#[test]
fn leaf_zero_serial() {
    let e = leaf_with(|p| p.serial_number = Some(SerialNumber::from_slice(&[0]))).unwrap_err();
    assert_eq!(e, ProfileError::SerialZero);
}

#[test]
fn serial_rules_on_raw_octets() {
    // rcgen never writes a negative serial, so the rule is checked directly.
    assert_eq!(
        check_serial(&[0x80, 1, 2, 3, 4, 5, 6, 7, 8], 8),
        Err(ProfileError::SerialNegative)
    );
    assert_eq!(check_serial(&[0, 0], 8), Err(ProfileError::SerialZero));
    assert_eq!(
        check_serial(&[0, 0x80, 0, 0, 0, 0, 0, 0, 1], 8).unwrap(),
        "8000000000000001"
    );
}

#[test]
fn leaf_inverted_validity() {
    let e = leaf_with(|p| {
        p.not_before = date_time_ymd(2025, 1, 2);
        p.not_after = date_time_ymd(2025, 1, 1);
    })
    .unwrap_err();
    assert_eq!(
        e,
        ProfileError::ValidityInverted {
            not_before: 1_735_689_600 + 86_400,
            not_after: 1_735_689_600
        }
    );
    let e = leaf_with(|p| p.not_after = p.not_before).unwrap_err();
    assert!(matches!(e, ProfileError::ValidityInverted { .. }));
}

#[test]
fn leaf_unknown_critical_extension() {
    let e = leaf_with(|p| {
        p.custom_extensions = vec![extension(
            &[1, 3, 6, 1, 4, 1, 99999, 1],
            true,
            &[0x05, 0x00],
        )]
    })
    .unwrap_err();
    assert_eq!(
        e,
        ProfileError::UnknownCriticalExtension {
            oid: "1.3.6.1.4.1.99999.1".to_owned()
        }
    );
}

#[test]
fn leaf_duplicate_extension() {
    // A second keyUsage after rcgen's own.
    let e = leaf_with(|p| {
        p.custom_extensions = vec![extension(KEY_USAGE, true, &[0x03, 0x02, 0x07, 0x80])]
    })
    .unwrap_err();
    assert_eq!(
        e,
        ProfileError::DuplicateExtension {
            oid: "2.5.29.15".to_owned()
        }
    );
}

#[test]
fn leaf_empty_subject_with_non_critical_san() {
    let id = b"spiffe://example.org/billing/api";
    let mut san = vec![0x30, (id.len() + 2) as u8, 0x86, id.len() as u8];
    san.extend_from_slice(id);
    let e = leaf_with(|p| {
        p.distinguished_name = DistinguishedName::new();
        p.subject_alt_names.clear();
        p.custom_extensions = vec![extension(SUBJECT_ALT_NAME, false, &san)];
    })
    .unwrap_err();
    assert_eq!(e, ProfileError::SanNotCriticalWithEmptySubject);
}

#[test]
fn not_a_certificate() {
    assert!(matches!(
        check_x509_svid(b"not a certificate"),
        Err(ProfileError::Parse { .. })
    ));
    assert!(matches!(
        check_signing_certificate(&[]),
        Err(ProfileError::Parse { .. })
    ));
    let mut der = issue(&leaf_params());
    der.push(0);
    assert_eq!(
        check_x509_svid(&der),
        Err(ProfileError::TrailingData { len: 1 })
    );
}

#[test]
fn signing_certificate_is_not_a_leaf() {
    let e = check_x509_svid(&self_signed(&ca_params())).unwrap_err();
    assert_eq!(
        e,
        ProfileError::LeafIdWithoutPath {
            id: "spiffe://example.org".to_owned()
        }
    );
    let mut p = ca_params();
    p.subject_alt_names = vec![uri("spiffe://example.org/ca")];
    p.key_usages.push(Ku::DigitalSignature);
    p.extended_key_usages = vec![Eku::ServerAuth, Eku::ClientAuth];
    assert_eq!(
        check_x509_svid(&self_signed(&p)),
        Err(ProfileError::LeafIsCa)
    );
}

// === signing certificate ===

#[test]
fn good_signing_certificates_pass() {
    check_signing_certificate(&self_signed(&ca_params())).unwrap();
    ca_with(|p| p.subject_alt_names.clear()).unwrap();
    ca_with(|p| {
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![Ku::KeyCertSign, Ku::DigitalSignature];
    })
    .unwrap();
    ca_with(|p| p.extended_key_usages = vec![Eku::ServerAuth, Eku::ClientAuth]).unwrap();
    ca_with(|p| p.extended_key_usages = vec![Eku::Any]).unwrap();
    // An intermediate signed by an upstream CA.
    check_signing_certificate(&issue(&ca_params())).unwrap();
}

#[test]
fn signing_ca_false() {
    assert_eq!(
        ca_with(|p| p.is_ca = IsCa::ExplicitNoCa),
        Err(ProfileError::NotCa)
    );
    assert_eq!(
        check_signing_certificate(&issue(&leaf_params())),
        Err(ProfileError::NotCa)
    );
}

#[test]
fn signing_missing_basic_constraints() {
    assert_eq!(
        ca_with(|p| p.is_ca = IsCa::NoCa),
        Err(ProfileError::MissingBasicConstraints)
    );
}

#[test]
fn signing_basic_constraints_not_critical() {
    let e = ca_with(|p| {
        p.is_ca = IsCa::NoCa;
        // SEQUENCE { BOOLEAN TRUE }
        p.custom_extensions = vec![extension(
            BASIC_CONSTRAINTS,
            false,
            &[0x30, 0x03, 0x01, 0x01, 0xff],
        )];
    });
    assert_eq!(e, Err(ProfileError::BasicConstraintsNotCritical));
}

#[test]
fn signing_missing_key_cert_sign() {
    let e = ca_with(|p| p.key_usages = vec![Ku::CrlSign, Ku::DigitalSignature]);
    assert_eq!(e, Err(ProfileError::MissingKeyCertSign));
}

#[test]
fn signing_missing_key_usage() {
    assert_eq!(
        ca_with(|p| p.key_usages.clear()),
        Err(ProfileError::MissingKeyUsage)
    );
}

#[test]
fn signing_key_usage_not_critical() {
    let e = ca_with(|p| {
        p.key_usages.clear();
        // BIT STRING, 2 unused bits, keyCertSign (bit 5).
        p.custom_extensions = vec![extension(KEY_USAGE, false, &[0x03, 0x02, 0x02, 0x04])];
    });
    assert_eq!(e, Err(ProfileError::KeyUsageNotCritical));
}

#[test]
fn signing_uri_with_path() {
    let e = ca_with(|p| p.subject_alt_names = vec![uri("spiffe://example.org/ca")]);
    assert_eq!(
        e,
        Err(ProfileError::SigningIdWithPath {
            id: "spiffe://example.org/ca".to_owned()
        })
    );
}

#[test]
fn signing_bad_uris() {
    let e = ca_with(|p| p.subject_alt_names.push(uri("spiffe://example.org")));
    assert_eq!(e, Err(ProfileError::UriSanCount { found: 2 }));
    let e = ca_with(|p| p.subject_alt_names = vec![uri("https://ca.example.org")]);
    assert!(
        matches!(
            e,
            Err(ProfileError::InvalidUriSan {
                reason: IdError::WrongScheme { .. },
                ..
            })
        ),
        "{e:?}"
    );
}

#[test]
fn signing_eku_restriction() {
    let e = ca_with(|p| p.extended_key_usages = vec![Eku::ServerAuth]);
    assert_eq!(
        e,
        Err(ProfileError::SigningEkuRestricts {
            usage: "clientAuth"
        })
    );
    let e = ca_with(|p| p.extended_key_usages = vec![Eku::ClientAuth]);
    assert_eq!(
        e,
        Err(ProfileError::SigningEkuRestricts {
            usage: "serverAuth"
        })
    );
}

#[test]
fn signing_serial_and_validity() {
    let e = ca_with(|p| p.serial_number = Some(SerialNumber::from_slice(&[0])));
    assert_eq!(e, Err(ProfileError::SerialZero));
    // A short serial is an upstream CA's choice; only the leaf needs 64 bits.
    ca_with(|p| p.serial_number = Some(SerialNumber::from_slice(&[1]))).unwrap();
    let e = ca_with(|p| p.not_after = p.not_before);
    assert!(
        matches!(e, Err(ProfileError::ValidityInverted { .. })),
        "{e:?}"
    );
}

#[test]
fn error_messages_name_the_rule() {
    assert_eq!(
        ProfileError::ForbiddenKeyUsage {
            usage: "keyCertSign"
        }
        .to_string(),
        "keyUsage sets keyCertSign; a leaf SVID accepts digitalSignature only (no keyCertSign or \
         cRLSign, and no keyEncipherment or keyAgreement on EC keys, RFC 5480)"
    );
    assert!(
        ProfileError::UriSanCount { found: 2 }
            .to_string()
            .starts_with("found 2 URI SANs")
    );
}
