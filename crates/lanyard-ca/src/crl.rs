//! The trust domain's certificate revocation list: one RFC 5280 v2 CRL,
//! signed by the active CA key, with a CRL number the caller persists.

use std::{
    fmt,
    str::FromStr,
    time::{Duration, SystemTime},
};

use lanyard_identity::Serial;
use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};

use crate::{
    CaError, CertificateAuthority,
    validity::{duration_secs, offset_date_time, unix_secs},
};

/// RFC 5280 reason codes an operator can give (`--reason`).
///
/// Each is accepted by its kebab-case name (`key-compromise`) and by its
/// RFC 5280 / OpenSSL name (`keyCompromise`), in any case.
/// `removeFromCRL` is recognised but refused: RFC 5280 §5.3.1 allows it
/// only in delta CRLs, Lanyard publishes full CRLs, and OpenSSL treats a
/// full-CRL entry with that reason as *not revoked*.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RevocationReason {
    /// No reason given.
    Unspecified,
    /// The SVID's private key is or may be known to someone else.
    KeyCompromise,
    /// The key of a CA that signed the SVID is or may be compromised.
    CaCompromise,
    /// The identity changed (entry updated or deleted).
    AffiliationChanged,
    /// Replaced by a newer SVID.
    Superseded,
    /// The workload, task or agent no longer exists.
    CessationOfOperation,
    /// On hold. Lanyard never releases a hold: the serial stays on the CRL
    /// until it expires.
    CertificateHold,
    /// A privilege the SVID conveyed was withdrawn.
    PrivilegeWithdrawn,
    /// The attribute authority is compromised (kept for RFC 5280
    /// completeness).
    AaCompromise,
}

impl RevocationReason {
    /// Every reason with its command-line (kebab-case) name and its
    /// RFC 5280 / OpenSSL name; both are accepted by `parse`.
    pub const ALL: [(Self, &'static str, &'static str); 9] = [
        (Self::Unspecified, "unspecified", "unspecified"),
        (Self::KeyCompromise, "key-compromise", "keyCompromise"),
        (Self::CaCompromise, "ca-compromise", "cACompromise"),
        (
            Self::AffiliationChanged,
            "affiliation-changed",
            "affiliationChanged",
        ),
        (Self::Superseded, "superseded", "superseded"),
        (
            Self::CessationOfOperation,
            "cessation-of-operation",
            "cessationOfOperation",
        ),
        (Self::CertificateHold, "certificate-hold", "certificateHold"),
        (
            Self::PrivilegeWithdrawn,
            "privilege-withdrawn",
            "privilegeWithdrawn",
        ),
        (Self::AaCompromise, "aa-compromise", "aACompromise"),
    ];

    /// The RFC 5280 name, e.g. `keyCompromise`.
    pub fn rfc5280_name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(r, _, _)| *r == self)
            .map(|(_, _, n)| *n)
            .unwrap_or("unspecified")
    }

    fn rcgen(self) -> rcgen::RevocationReason {
        match self {
            Self::Unspecified => rcgen::RevocationReason::Unspecified,
            Self::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
            Self::CaCompromise => rcgen::RevocationReason::CaCompromise,
            Self::AffiliationChanged => rcgen::RevocationReason::AffiliationChanged,
            Self::Superseded => rcgen::RevocationReason::Superseded,
            Self::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
            Self::CertificateHold => rcgen::RevocationReason::CertificateHold,
            Self::PrivilegeWithdrawn => rcgen::RevocationReason::PrivilegeWithdrawn,
            Self::AaCompromise => rcgen::RevocationReason::AaCompromise,
        }
    }

    /// Every accepted spelling, for error messages:
    /// `unspecified, key-compromise (keyCompromise), ...`.
    fn accepted() -> String {
        Self::ALL
            .iter()
            .map(|(_, kebab, rfc)| {
                if kebab == rfc {
                    (*kebab).to_owned()
                } else {
                    format!("{kebab} ({rfc})")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Lower-case with `-` and `_` removed: `key-compromise`, `KEY_COMPROMISE`
/// and `keyCompromise` all become `keycompromise`, so one comparison
/// accepts the kebab-case and the RFC 5280 spellings.
fn squash(name: &str) -> String {
    name.trim()
        .chars()
        .filter(|c| *c != '-' && *c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = Self::ALL
            .iter()
            .find(|(r, _, _)| r == self)
            .map(|(_, n, _)| *n)
            .unwrap_or("unspecified");
        f.write_str(name)
    }
}

impl FromStr for RevocationReason {
    type Err = CaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = squash(s);
        if wanted == "removefromcrl" {
            return Err(CaError::RevocationReasonDeltaOnly {
                given: s.to_owned(),
                accepted: Self::accepted(),
            });
        }
        Self::ALL
            .iter()
            .find(|(_, n, _)| squash(n) == wanted)
            .map(|(r, _, _)| *r)
            .ok_or_else(|| CaError::InvalidRevocationReason {
                given: s.to_owned(),
                accepted: Self::accepted(),
            })
    }
}

/// One revoked serial for the CRL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedSerial {
    /// Lower-case hex serial, as issued.
    pub serial: String,
    /// When it was revoked, seconds since the Unix epoch.
    pub revoked_at: i64,
    /// Why.
    pub reason: RevocationReason,
}

impl CertificateAuthority {
    /// Signs the trust domain's CRL with the active CA key: the given
    /// serials, `crl_number` (strictly increasing; the caller persists it),
    /// thisUpdate `now`, nextUpdate `now + validity`. Returns DER.
    pub fn sign_crl(
        &self,
        revoked: &[RevokedSerial],
        crl_number: u64,
        now: SystemTime,
        validity: Duration,
    ) -> Result<Vec<u8>, CaError> {
        let now = unix_secs(now, "now")?;
        let next_update = now.saturating_add(duration_secs(validity, "CRL validity")?);
        let revoked_certs = revoked
            .iter()
            .map(|r| {
                let bytes = Serial::parse(&r.serial)?.to_der_content();
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&bytes),
                    revocation_time: offset_date_time(r.revoked_at, "revocation time")?,
                    reason_code: Some(r.reason.rcgen()),
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, CaError>>()?;
        let params = CertificateRevocationListParams {
            this_update: offset_date_time(now, "CRL thisUpdate")?,
            next_update: offset_date_time(next_update, "CRL nextUpdate")?,
            crl_number: SerialNumber::from_slice(&crl_number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params
            .signed_by(&self.active_slot().issuer)
            .map_err(|e| CaError::encoding("CRL", e))?;
        tracing::debug!(
            crl_number,
            revoked = revoked.len(),
            next_update,
            "signed CRL"
        );
        Ok(crl.der().to_vec())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn reasons_parse_by_name_and_refuse_others() {
        assert_eq!(
            "key-compromise".parse::<RevocationReason>().unwrap(),
            RevocationReason::KeyCompromise
        );
        assert_eq!(
            "KEY_COMPROMISE".parse::<RevocationReason>().unwrap(),
            RevocationReason::KeyCompromise
        );
        let err = "because"
            .parse::<RevocationReason>()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("because") && err.contains("superseded"),
            "{err}"
        );
        for (r, name, _) in RevocationReason::ALL {
            assert_eq!(r.to_string(), name);
            assert_eq!(name.parse::<RevocationReason>().unwrap(), r);
        }
    }

    #[test]
    fn reasons_parse_by_their_rfc5280_names_in_any_case() {
        let rfc = [
            ("unspecified", RevocationReason::Unspecified),
            ("keyCompromise", RevocationReason::KeyCompromise),
            ("cACompromise", RevocationReason::CaCompromise),
            ("affiliationChanged", RevocationReason::AffiliationChanged),
            ("superseded", RevocationReason::Superseded),
            (
                "cessationOfOperation",
                RevocationReason::CessationOfOperation,
            ),
            ("certificateHold", RevocationReason::CertificateHold),
            ("privilegeWithdrawn", RevocationReason::PrivilegeWithdrawn),
            ("aACompromise", RevocationReason::AaCompromise),
        ];
        for (name, reason) in rfc {
            assert_eq!(name.parse::<RevocationReason>().unwrap(), reason, "{name}");
            assert_eq!(
                name.to_ascii_uppercase()
                    .parse::<RevocationReason>()
                    .unwrap(),
                reason
            );
            assert_eq!(
                name.to_ascii_lowercase()
                    .parse::<RevocationReason>()
                    .unwrap(),
                reason
            );
            assert_eq!(reason.rfc5280_name(), name);
        }
        assert_eq!(
            "CA-Compromise".parse::<RevocationReason>().unwrap(),
            RevocationReason::CaCompromise
        );
    }

    #[test]
    fn an_unknown_reason_error_lists_both_spellings() {
        let err = "keyCompromised"
            .parse::<RevocationReason>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"keyCompromised\""), "{err}");
        for (_, kebab, rfc) in RevocationReason::ALL {
            assert!(err.contains(kebab) && err.contains(rfc), "{err}");
        }
    }

    #[test]
    fn remove_from_crl_is_recognised_but_refused_for_a_full_crl() {
        for name in ["removeFromCRL", "remove-from-crl", "REMOVEFROMCRL"] {
            let err = name.parse::<RevocationReason>().unwrap_err();
            assert!(
                matches!(err, CaError::RevocationReasonDeltaOnly { .. }),
                "{err}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains("delta CRL") && msg.contains("keyCompromise"),
                "{msg}"
            );
        }
    }

    #[test]
    fn every_reason_reaches_the_signed_crl_with_its_code() {
        let codes: Vec<u8> = RevocationReason::ALL
            .iter()
            .map(|(r, _, _)| r.rcgen() as u8)
            .collect();
        assert_eq!(codes, [0, 1, 2, 3, 4, 5, 6, 9, 10]);
    }
}
