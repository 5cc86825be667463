//! The X.509-SVID profile checker (SPIFFE X509-SVID standard, plus Lanyard's
//! stricter leaf profile from DESIGN.md).
//!
//! Only what can be decided from the certificate alone is checked here; the
//! signature and the chain are the verifier's business.

use x509_parser::{
    certificate::X509Certificate,
    extensions::{GeneralName, ParsedExtension},
    oid_registry::{
        OID_X509_EXT_BASIC_CONSTRAINTS, OID_X509_EXT_CERTIFICATE_POLICIES,
        OID_X509_EXT_EXTENDED_KEY_USAGE, OID_X509_EXT_INHIBIT_ANY_POLICY, OID_X509_EXT_KEY_USAGE,
        OID_X509_EXT_NAME_CONSTRAINTS, OID_X509_EXT_POLICY_CONSTRAINTS,
        OID_X509_EXT_POLICY_MAPPINGS, OID_X509_EXT_SUBJECT_ALT_NAME,
    },
    x509::X509Version,
};

use crate::{
    SpiffeId,
    error::ProfileError,
    serial::{MAX_SERIAL_BYTES, Serial},
};

/// Fewest significant serial bytes accepted on a leaf (64 random bits).
const MIN_LEAF_SERIAL_BYTES: usize = 8;

/// What a checked leaf SVID says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SvidSummary {
    /// The SPIFFE ID in the single URI SAN.
    pub spiffe_id: SpiffeId,
    /// The serial in [`Serial`]'s canonical form (lower-case hex, whole
    /// bytes, no leading zero bytes).
    pub serial: String,
    /// NotBefore, seconds since the Unix epoch.
    pub not_before: i64,
    /// NotAfter, seconds since the Unix epoch.
    pub not_after: i64,
    /// DNS SANs.
    pub dns_names: Vec<String>,
}

/// Checks a leaf X.509-SVID (DER) against the SPIFFE X509-SVID standard and
/// Lanyard's leaf profile: X.509 v3; exactly one URI SAN, a SPIFFE ID with a
/// path; basicConstraints with CA=false; a critical keyUsage with
/// digitalSignature and nothing else; extendedKeyUsage with serverAuth and
/// clientAuth; a positive serial of 8 to 20 bytes; NotBefore < NotAfter; no
/// duplicate, malformed or unknown critical extensions.
///
/// # Errors
///
/// The first [`ProfileError`] found, naming the rule broken.
pub fn check_x509_svid(leaf_der: &[u8]) -> Result<SvidSummary, ProfileError> {
    let cert = parse(leaf_der)?;
    check_structure(&cert)?;

    let (uris, dns_names) = san_names(&cert)?;
    let [uri] = uris.as_slice() else {
        return Err(ProfileError::UriSanCount { found: uris.len() });
    };
    let spiffe_id = parse_uri_san(uri)?;
    if spiffe_id.is_trust_domain_id() {
        return Err(ProfileError::LeafIdWithoutPath {
            id: spiffe_id.to_string(),
        });
    }

    match cert
        .basic_constraints()
        .map_err(extension_error(&OID_X509_EXT_BASIC_CONSTRAINTS))?
    {
        None => return Err(ProfileError::MissingBasicConstraints),
        Some(bc) if bc.value.ca => return Err(ProfileError::LeafIsCa),
        Some(_) => {}
    }

    let ku = cert
        .key_usage()
        .map_err(extension_error(&OID_X509_EXT_KEY_USAGE))?
        .ok_or(ProfileError::MissingKeyUsage)?;
    if !ku.critical {
        return Err(ProfileError::KeyUsageNotCritical);
    }
    let usage = ku.value;
    // keyCertSign and cRLSign come first: they are the SPIFFE standard's own
    // rules; the rest is Lanyard's digitalSignature-only profile (for EC keys
    // keyEncipherment and keyAgreement are also wrong per RFC 5480).
    let forbidden = [
        (usage.key_cert_sign(), "keyCertSign"),
        (usage.crl_sign(), "cRLSign"),
        (usage.key_encipherment(), "keyEncipherment"),
        (usage.key_agreement(), "keyAgreement"),
        (usage.data_encipherment(), "dataEncipherment"),
        (usage.non_repudiation(), "contentCommitment"),
        (usage.encipher_only(), "encipherOnly"),
        (usage.decipher_only(), "decipherOnly"),
    ];
    if let Some((_, name)) = forbidden.iter().find(|(set, _)| *set) {
        return Err(ProfileError::ForbiddenKeyUsage { usage: name });
    }
    if !usage.digital_signature() {
        return Err(ProfileError::MissingDigitalSignature);
    }

    let eku = cert
        .extended_key_usage()
        .map_err(extension_error(&OID_X509_EXT_EXTENDED_KEY_USAGE))?
        .ok_or(ProfileError::MissingExtendedKeyUsage)?;
    if !eku.value.server_auth {
        return Err(ProfileError::MissingExtendedKeyUsagePurpose {
            usage: "serverAuth",
        });
    }
    if !eku.value.client_auth {
        return Err(ProfileError::MissingExtendedKeyUsagePurpose {
            usage: "clientAuth",
        });
    }

    let serial = check_serial(cert.raw_serial(), MIN_LEAF_SERIAL_BYTES)?;
    let (not_before, not_after) = check_validity(&cert)?;

    Ok(SvidSummary {
        spiffe_id,
        serial,
        not_before,
        not_after,
        dns_names,
    })
}

/// Checks a signing (CA) certificate (DER) that issues X.509-SVIDs: X.509 v3;
/// a critical basicConstraints with CA=true; a critical keyUsage with
/// keyCertSign (cRLSign and digitalSignature allowed); at most one URI SAN,
/// which must be a trust-domain ID; no extendedKeyUsage that would exclude
/// serverAuth or clientAuth from its SVIDs; a positive serial of at most 20
/// bytes; NotBefore < NotAfter; no duplicate, malformed or unknown critical
/// extensions.
///
/// # Errors
///
/// The first [`ProfileError`] found, naming the rule broken.
pub fn check_signing_certificate(ca_der: &[u8]) -> Result<(), ProfileError> {
    let cert = parse(ca_der)?;
    check_structure(&cert)?;

    let bc = cert
        .basic_constraints()
        .map_err(extension_error(&OID_X509_EXT_BASIC_CONSTRAINTS))?
        .ok_or(ProfileError::MissingBasicConstraints)?;
    if !bc.value.ca {
        return Err(ProfileError::NotCa);
    }
    if !bc.critical {
        return Err(ProfileError::BasicConstraintsNotCritical);
    }

    let ku = cert
        .key_usage()
        .map_err(extension_error(&OID_X509_EXT_KEY_USAGE))?
        .ok_or(ProfileError::MissingKeyUsage)?;
    if !ku.critical {
        return Err(ProfileError::KeyUsageNotCritical);
    }
    if !ku.value.key_cert_sign() {
        return Err(ProfileError::MissingKeyCertSign);
    }

    // Verifiers apply the EKU of every certificate in the path; a CA limited
    // to one TLS role would silently break the other role for all its SVIDs.
    let eku = cert
        .extended_key_usage()
        .map_err(extension_error(&OID_X509_EXT_EXTENDED_KEY_USAGE))?;
    if let Some(eku) = eku.filter(|eku| !eku.value.any) {
        if !eku.value.server_auth {
            return Err(ProfileError::SigningEkuRestricts {
                usage: "serverAuth",
            });
        }
        if !eku.value.client_auth {
            return Err(ProfileError::SigningEkuRestricts {
                usage: "clientAuth",
            });
        }
    }

    let (uris, _) = san_names(&cert)?;
    match uris.as_slice() {
        [] => {}
        [uri] => {
            let id = parse_uri_san(uri)?;
            if !id.is_trust_domain_id() {
                return Err(ProfileError::SigningIdWithPath { id: id.to_string() });
            }
        }
        _ => return Err(ProfileError::UriSanCount { found: uris.len() }),
    }

    check_serial(cert.raw_serial(), 1)?;
    check_validity(&cert)?;
    Ok(())
}

// === shared rules ===

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, ProfileError> {
    let (rest, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| ProfileError::Parse {
            reason: e.to_string(),
        })?;
    if !rest.is_empty() {
        return Err(ProfileError::TrailingData { len: rest.len() });
    }
    Ok(cert)
}

/// Version, algorithm consistency and extension hygiene, common to leaves and
/// signing certificates.
fn check_structure(cert: &X509Certificate<'_>) -> Result<(), ProfileError> {
    let version = cert.version();
    if version != X509Version::V3 {
        return Err(ProfileError::NotV3 {
            version: version.0.saturating_add(1),
        });
    }
    if cert.signature_algorithm != cert.tbs_certificate.signature {
        return Err(ProfileError::SignatureAlgorithmMismatch);
    }

    // Extensions Lanyard's verifiers (rustls-webpki, OpenSSL) process, and so
    // may be critical.
    let understood = [
        OID_X509_EXT_BASIC_CONSTRAINTS,
        OID_X509_EXT_KEY_USAGE,
        OID_X509_EXT_EXTENDED_KEY_USAGE,
        OID_X509_EXT_SUBJECT_ALT_NAME,
        OID_X509_EXT_NAME_CONSTRAINTS,
        OID_X509_EXT_CERTIFICATE_POLICIES,
        OID_X509_EXT_POLICY_CONSTRAINTS,
        OID_X509_EXT_POLICY_MAPPINGS,
        OID_X509_EXT_INHIBIT_ANY_POLICY,
    ];
    let extensions = cert.extensions();
    for (i, ext) in extensions.iter().enumerate() {
        if extensions[..i].iter().any(|earlier| earlier.oid == ext.oid) {
            return Err(ProfileError::DuplicateExtension {
                oid: ext.oid.to_id_string(),
            });
        }
        if let ParsedExtension::ParseError { error } = ext.parsed_extension() {
            return Err(ProfileError::InvalidExtension {
                oid: ext.oid.to_id_string(),
                reason: error.to_string(),
            });
        }
        if ext.critical && !understood.contains(&ext.oid) {
            return Err(ProfileError::UnknownCriticalExtension {
                oid: ext.oid.to_id_string(),
            });
        }
    }

    // RFC 5280 4.2.1.6: with an empty subject, the identity lives only in the
    // SAN, which must then be critical.
    if cert.subject().iter().next().is_none() {
        let san = cert
            .tbs_certificate
            .get_extension_unique(&OID_X509_EXT_SUBJECT_ALT_NAME)
            .map_err(extension_error(&OID_X509_EXT_SUBJECT_ALT_NAME))?;
        if san.is_some_and(|ext| !ext.critical) {
            return Err(ProfileError::SanNotCriticalWithEmptySubject);
        }
    }
    Ok(())
}

/// The URI and DNS names of the subjectAltName extension.
fn san_names(cert: &X509Certificate<'_>) -> Result<(Vec<String>, Vec<String>), ProfileError> {
    let mut uris = Vec::new();
    let mut dns_names = Vec::new();
    if let Some(san) = cert
        .subject_alternative_name()
        .map_err(extension_error(&OID_X509_EXT_SUBJECT_ALT_NAME))?
    {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(uri) => uris.push((*uri).to_owned()),
                GeneralName::DNSName(dns) => dns_names.push((*dns).to_owned()),
                _ => {}
            }
        }
    }
    Ok((uris, dns_names))
}

fn parse_uri_san(uri: &str) -> Result<SpiffeId, ProfileError> {
    SpiffeId::new(uri).map_err(|reason| ProfileError::InvalidUriSan {
        uri: uri.to_owned(),
        reason,
    })
}

fn extension_error<E: std::fmt::Display>(
    oid: &x509_parser::der_parser::oid::Oid<'_>,
) -> impl FnOnce(E) -> ProfileError {
    let oid = oid.to_id_string();
    move |e| ProfileError::InvalidExtension {
        oid,
        reason: e.to_string(),
    }
}

/// Checks the serial's content octets (as encoded in the INTEGER) and
/// returns it as lower-case hex without leading zero bytes.
fn check_serial(raw: &[u8], min_significant: usize) -> Result<String, ProfileError> {
    if raw.first().is_some_and(|b| b & 0x80 != 0) {
        return Err(ProfileError::SerialNegative);
    }
    let significant = match raw.iter().position(|&b| b != 0) {
        Some(start) => &raw[start..],
        None => return Err(ProfileError::SerialZero),
    };
    if raw.len() > MAX_SERIAL_BYTES {
        return Err(ProfileError::SerialTooLong {
            bytes: raw.len(),
            max: MAX_SERIAL_BYTES,
        });
    }
    if significant.len() < min_significant {
        return Err(ProfileError::SerialTooShort {
            bytes: significant.len(),
            min: min_significant,
        });
    }
    Ok(Serial::from_bytes(significant).into_string())
}

fn check_validity(cert: &X509Certificate<'_>) -> Result<(i64, i64), ProfileError> {
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    if not_before >= not_after {
        return Err(ProfileError::ValidityInverted {
            not_before,
            not_after,
        });
    }
    Ok((not_before, not_after))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
#[path = "profile_tests.rs"]
mod tests;
