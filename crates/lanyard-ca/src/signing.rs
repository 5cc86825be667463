//! X.509-SVID issuance: what a request may ask for, how a CSR is read, and
//! the leaf certificate profile.

use std::time::Duration;

use lanyard_identity::SpiffeId;
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

use crate::error::CaError;
use crate::validity::offset_date_time;
use lanyard_keys::accepted_svid_algorithm;

/// What to certify. Everything in the certificate comes from here; from the
/// CSR only the public key is taken.
#[derive(Clone, Copy, Debug)]
pub struct SvidRequest<'a> {
    /// DER PKCS#10 request, signed by the key to certify.
    pub csr_der: &'a [u8],
    /// The SPIFFE ID to certify (the single URI SAN).
    pub spiffe_id: &'a SpiffeId,
    /// DNS SANs; the first also becomes the subject's CN.
    pub dns_names: &'a [String],
    /// Requested lifetime; capped to the active CA's remaining life.
    pub ttl: Duration,
}

/// A signed X.509-SVID with what the server records about it.
#[derive(Clone, Debug)]
pub struct IssuedSvid {
    /// The certified SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// Leaf first, then the intermediate CA in upstream mode.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// Lower-case hex serial, as `SvidSummary::serial`.
    pub serial: String,
    /// NotBefore, seconds since the Unix epoch.
    pub not_before: i64,
    /// NotAfter, seconds since the Unix epoch.
    pub not_after: i64,
}

/// Reads a CSR: checks its self-signature and returns only its public key,
/// which must be ECDSA P-256 or P-384. Every other field (subject, requested
/// extensions, even the signature algorithm) is ignored.
pub(crate) fn csr_public_key(csr_der: &[u8]) -> Result<SubjectPublicKeyInfo, CaError> {
    let (rest, csr) =
        X509CertificationRequest::from_der(csr_der).map_err(|e| CaError::MalformedCsr {
            reason: e.to_string(),
        })?;
    if !rest.is_empty() {
        return Err(CaError::MalformedCsr {
            reason: format!("{} trailing bytes after the request", rest.len()),
        });
    }
    let der = CertificateSigningRequestDer::from(csr_der);
    match CertificateSigningRequestParams::from_der(&der) {
        Ok(_) => {}
        Err(rcgen::Error::InvalidCertificationRequestSignature) => {
            return Err(CaError::CsrSignature);
        }
        Err(rcgen::Error::CouldNotParseCertificationRequest) => {
            return Err(CaError::MalformedCsr {
                reason: "not a PKCS#10 certification request".into(),
            });
        }
        // rcgen rejects requested extensions or signature algorithms it does
        // not model, after or instead of checking the signature. Lanyard
        // ignores every requested extension, so such a request is acceptable
        // provided its signature verifies; check that directly.
        Err(_) => csr.verify_signature().map_err(|_| CaError::CsrSignature)?,
    }

    let spki = &csr.certification_request_info.subject_pki;
    let unsupported = || CaError::UnsupportedKey {
        algorithm: describe_key_algorithm(spki),
    };
    let key = SubjectPublicKeyInfo::from_der(spki.raw).map_err(|_| unsupported())?;
    if !accepted_svid_algorithm(rcgen::PublicKeyData::algorithm(&key)) {
        return Err(unsupported());
    }
    Ok(key)
}

fn describe_key_algorithm(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> String {
    let alg = spki.algorithm.algorithm.to_id_string();
    let name = match alg.as_str() {
        "1.2.840.10045.2.1" => "EC",
        "1.2.840.113549.1.1.1" => "RSA",
        "1.3.101.112" => "Ed25519",
        "1.3.101.113" => "Ed448",
        _ => "",
    };
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|oid| match oid.to_id_string().as_str() {
            "1.3.132.0.35" => "P-521".to_owned(),
            "1.3.132.0.10" => "secp256k1".to_owned(),
            other => other.to_owned(),
        });
    match (name, curve) {
        ("", _) => alg,
        ("EC", Some(curve)) => format!("EC {curve}"),
        (name, _) => name.to_owned(),
    }
}

/// Checks DNS SANs: ASCII letters, digits and hyphens in labels of 1..=63
/// bytes, at most 253 bytes, an optional leading `*.` wildcard label.
/// Returns them without duplicates, in request order.
pub(crate) fn checked_dns_names(names: &[String]) -> Result<Vec<String>, CaError> {
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        check_dns_name(name).map_err(|problem| CaError::InvalidDnsName {
            name: name.clone(),
            problem,
        })?;
        if !out.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            out.push(name.clone());
        }
    }
    Ok(out)
}

fn check_dns_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > 253 {
        return Err("it is longer than 253 bytes");
    }
    let body = name.strip_prefix("*.").unwrap_or(name);
    for label in body.split('.') {
        if label.is_empty() {
            return Err("it has an empty label (leading, trailing or doubled '.')");
        }
        if label.len() > 63 {
            return Err("a label is longer than 63 bytes");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(
                "labels may hold only ASCII letters, digits and '-' ('*.' only as the first label)",
            );
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label starts or ends with '-'");
        }
    }
    Ok(())
}

/// RFC 5280's upper bound on a CommonName (ub-common-name).
const MAX_CN_LEN: usize = 64;

/// The leaf profile: fresh parameters built only from the request.
pub(crate) fn leaf_params(
    spiffe_id: &SpiffeId,
    dns_names: &[String],
    serial: SerialNumber,
    not_before: i64,
    not_after: i64,
) -> Result<CertificateParams, CaError> {
    let encoding = |e| CaError::encoding("X.509-SVID", e);
    let mut params = CertificateParams::default();

    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Lanyard");
    if let Some(first) = dns_names.first().filter(|n| n.len() <= MAX_CN_LEN) {
        dn.push(DnType::CommonName, first.as_str());
    }
    params.distinguished_name = dn;

    let mut sans = Vec::with_capacity(1 + dns_names.len());
    sans.push(SanType::URI(
        spiffe_id.as_str().try_into().map_err(encoding)?,
    ));
    for name in dns_names {
        sans.push(SanType::DnsName(
            name.as_str().try_into().map_err(encoding)?,
        ));
    }
    params.subject_alt_names = sans;

    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(serial);
    params.not_before = offset_date_time(not_before, "SVID NotBefore")?;
    params.not_after = offset_date_time(not_after, "SVID NotAfter")?;
    Ok(params)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_are_checked_and_deduplicated() {
        let ok = checked_dns_names(&[
            "api.example.org".into(),
            "*.svc.example.org".into(),
            "API.example.org".into(),
        ])
        .unwrap();
        assert_eq!(ok, vec!["api.example.org", "*.svc.example.org"]);
        for bad in ["", "a..b", "-a.b", "a_b.c", "a.*.b", "x.", &"a".repeat(64)] {
            let err = checked_dns_names(&[bad.to_owned()]).unwrap_err();
            assert!(
                matches!(err, CaError::InvalidDnsName { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn malformed_csr_is_reported_as_such() {
        assert!(matches!(
            csr_public_key(b"\x30\x03\x02\x01\x00"),
            Err(CaError::MalformedCsr { .. })
        ));
        assert!(matches!(
            csr_public_key(b""),
            Err(CaError::MalformedCsr { .. })
        ));
    }
}
