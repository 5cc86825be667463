//! The trust domain's CRL, parsed and signature-checked once when it is
//! installed, so a handshake only looks a serial up in a set.
//!
//! Lanyard publishes one CRL per trust domain, signed by the *active* CA key.
//! CA certificates across a rotation share one subject name, so matching a
//! CRL to an SVID's issuer by name (as generic path validation does) would
//! check an old CA's SVIDs against a CRL the new key signed, and fail. Here the
//! CRL is accepted if *any* CA certificate in the bundle verifies its
//! signature, and then applies to every SVID that chains to the bundle.

use std::{
    collections::HashSet,
    fmt,
    sync::atomic::{AtomicBool, Ordering},
};

use lanyard_identity::Serial;
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::{
    certificate::X509Certificate, prelude::FromDer, revocation_list::CertificateRevocationList,
    x509::X509Version,
};

use crate::error::CrlError;

/// OID of the issuingDistributionPoint extension: critical by RFC 5280, and
/// harmless for a full CRL covering the whole trust domain.
const OID_ISSUING_DISTRIBUTION_POINT: &str = "2.5.29.28";

/// A verified CRL: who signed it, its number and dates, and the set of
/// revoked serials (lower-case hex without leading zeros, the same form as
/// `lanyard_identity::SvidSummary::serial`).
pub struct RevocationList {
    der: Vec<u8>,
    issuer: String,
    signing_intermediate: Option<CertificateDer<'static>>,
    number: Option<String>,
    this_update: i64,
    next_update: Option<i64>,
    revoked: HashSet<String>,
    warned_stale: AtomicBool,
}

impl RevocationList {
    /// Parses `der` and checks its signature against the CA certificates in
    /// `bundle`: at least one must verify it.
    ///
    /// # Errors
    ///
    /// [`CrlError`] naming why the CRL is unusable.
    pub fn verify(der: Vec<u8>, bundle: &[CertificateDer<'_>]) -> Result<Self, CrlError> {
        Self::verify_with_signers(der, bundle, &[])
    }

    /// Like [`verify`](Self::verify), but the CRL may also be signed by one
    /// of `intermediates` that is itself a CA certificate signed by a bundle
    /// CA. In upstream mode the bundle holds the upstream root while
    /// Lanyard's intermediate signs the CRL; the intermediate comes from the
    /// holder's own SVID chain.
    ///
    /// # Errors
    ///
    /// [`CrlError`] naming why the CRL is unusable.
    pub fn verify_with_signers(
        der: Vec<u8>,
        bundle: &[CertificateDer<'_>],
        intermediates: &[CertificateDer<'_>],
    ) -> Result<Self, CrlError> {
        let (rest, crl) =
            CertificateRevocationList::from_der(&der).map_err(|e| CrlError::Malformed {
                reason: e.to_string(),
            })?;
        if !rest.is_empty() {
            return Err(CrlError::Malformed {
                reason: format!("{} trailing bytes after the CRL", rest.len()),
            });
        }
        if crl.version() != Some(X509Version::V2) {
            return Err(CrlError::NotV2);
        }
        check_extensions(&crl)?;
        let issuer = crl.issuer().to_string();
        let signing_intermediate = if bundle.iter().any(|ca| signed_by(&crl, ca)) {
            None
        } else {
            let by_intermediate = intermediates
                .iter()
                .find(|i| issued_by_bundle(i, bundle) && signed_by(&crl, i));
            match by_intermediate {
                Some(i) => Some(i.clone().into_owned()),
                None => {
                    return Err(CrlError::UntrustedSigner {
                        issuer,
                        bundle_len: bundle.len(),
                    });
                }
            }
        };
        let number = crl.crl_number().map(|n| normalize_hex(&n.to_bytes_be()));
        let revoked = crl
            .iter_revoked_certificates()
            .map(|r| Serial::from_bytes(r.raw_serial()).into_string())
            .collect();
        let this_update = crl.last_update().timestamp();
        let next_update = crl.next_update().map(|t| t.timestamp());
        Ok(Self {
            issuer,
            signing_intermediate,
            number,
            this_update,
            next_update,
            revoked,
            warned_stale: AtomicBool::new(false),
            der,
        })
    }

    /// The CRL as installed (DER).
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The CRL's issuer name (RFC 4514 form).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The intermediate CA (issued by a bundle CA) that signed this CRL, when
    /// no bundle CA did: Lanyard's CA in upstream mode. `None` when a bundle
    /// CA signed it.
    pub fn signing_intermediate(&self) -> Option<&CertificateDer<'static>> {
        self.signing_intermediate.as_ref()
    }

    /// The CRL number (lower-case hex without leading zeros), if present.
    pub fn number(&self) -> Option<&str> {
        self.number.as_deref()
    }

    /// thisUpdate, in seconds since the Unix epoch.
    pub fn this_update(&self) -> i64 {
        self.this_update
    }

    /// nextUpdate, in seconds since the Unix epoch, if present.
    pub fn next_update(&self) -> Option<i64> {
        self.next_update
    }

    /// Whether `serial` (hex, any case, colons and leading zeros allowed) is
    /// revoked.
    pub fn is_revoked(&self, serial: &str) -> bool {
        Serial::parse(serial).is_ok_and(|s| self.revoked.contains(s.as_str()))
    }

    /// How many serials are revoked.
    pub fn len(&self) -> usize {
        self.revoked.len()
    }

    /// Whether no serial is revoked.
    pub fn is_empty(&self) -> bool {
        self.revoked.is_empty()
    }

    /// Whether nextUpdate has passed at `now`.
    pub fn is_stale(&self, now: UnixTime) -> bool {
        let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        self.next_update.is_some_and(|next| next < now)
    }

    /// A stale CRL stays in force (its revocations still hold: fail closed),
    /// but someone should know the feed stopped; warn once per CRL.
    pub(crate) fn warn_if_stale(&self, now: UnixTime) {
        if self.is_stale(now) && !self.warned_stale.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                crl_number = self.number.as_deref().unwrap_or("-"),
                next_update = self.next_update.unwrap_or_default(),
                revoked = self.revoked.len(),
                "CRL is past its nextUpdate; still enforcing it until a newer one arrives"
            );
        }
    }
}

impl fmt::Debug for RevocationList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The serial set can hold 100k entries: print its size only.
        f.debug_struct("RevocationList")
            .field("issuer", &self.issuer)
            .field("number", &self.number)
            .field("this_update", &self.this_update)
            .field("next_update", &self.next_update)
            .field("revoked", &self.revoked.len())
            .finish_non_exhaustive()
    }
}

/// Whether a number `offered` (normalized hex) is lower than `current`.
pub(crate) fn number_lower(offered: &str, current: &str) -> bool {
    (offered.len(), offered) < (current.len(), current)
}

fn check_extensions(crl: &CertificateRevocationList<'_>) -> Result<(), CrlError> {
    for ext in crl.extensions() {
        let oid = ext.oid.to_id_string();
        if ext.critical && oid != OID_ISSUING_DISTRIBUTION_POINT {
            return Err(CrlError::UnsupportedCriticalExtension { oid });
        }
    }
    for entry in crl.iter_revoked_certificates() {
        // certificateIssuer (indirect CRLs) is the critical entry extension
        // that would change whose serial an entry names.
        if let Some(ext) = entry.extensions().iter().find(|e| e.critical) {
            return Err(CrlError::UnsupportedCriticalExtension {
                oid: ext.oid.to_id_string(),
            });
        }
    }
    Ok(())
}

fn signed_by(crl: &CertificateRevocationList<'_>, ca: &CertificateDer<'_>) -> bool {
    let Ok((_, cert)) = X509Certificate::from_der(ca) else {
        return false;
    };
    // A bundle certificate whose keyUsage excludes cRLSign may not sign CRLs.
    if let Ok(Some(ku)) = cert.key_usage()
        && !ku.value.crl_sign()
    {
        return false;
    }
    crl.verify_signature(cert.public_key()).is_ok()
}

/// Whether `cert` is a CA certificate whose signature a bundle CA verifies.
fn issued_by_bundle(cert: &CertificateDer<'_>, bundle: &[CertificateDer<'_>]) -> bool {
    let Ok((_, cert)) = X509Certificate::from_der(cert) else {
        return false;
    };
    cert.is_ca()
        && bundle.iter().any(|ca| {
            X509Certificate::from_der(ca)
                .is_ok_and(|(_, ca)| cert.verify_signature(Some(ca.public_key())).is_ok())
        })
}

/// Lower-case hex of a big-endian unsigned integer (a CRL number), without
/// leading zero bytes.
pub(crate) fn normalize_hex(bytes: &[u8]) -> String {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    hex::encode(&bytes[start..])
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn hex_normalization_strips_whole_zero_bytes() {
        assert_eq!(normalize_hex(&[0x00, 0x0a, 0xbc]), "0abc");
        assert_eq!(normalize_hex(&[0x00]), "");
    }

    #[test]
    fn crl_numbers_compare_numerically() {
        assert!(number_lower("09", "0a"));
        assert!(number_lower("ff", "0100"));
        assert!(!number_lower("0100", "ff"));
        assert!(!number_lower("0a", "0a"));
    }

    #[test]
    fn garbage_is_malformed() {
        let err = RevocationList::verify(vec![0x30, 0x03, 0x02, 0x01, 0x01], &[]).unwrap_err();
        assert!(matches!(err, CrlError::Malformed { .. }), "{err:?}");
    }
}
