//! The trust domain's certificate revocation list: one RFC 5280 v2 CRL,
//! signed by the active CA key, with a CRL number the caller persists.

use std::{
    fmt,
    str::FromStr,
    time::{Duration, SystemTime},
};

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};

use crate::{
    CaError, CertificateAuthority,
    validity::{duration_secs, offset_date_time, unix_secs},
};

/// RFC 5280 reason codes an operator can give (`--reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RevocationReason {
    /// No reason given.
    Unspecified,
    /// The SVID's private key is or may be known to someone else.
    KeyCompromise,
    /// The identity changed (entry updated or deleted).
    AffiliationChanged,
    /// Replaced by a newer SVID.
    Superseded,
    /// The workload, task or agent no longer exists.
    CessationOfOperation,
}

impl RevocationReason {
    /// Every reason with its command-line name.
    pub const ALL: [(Self, &'static str); 5] = [
        (Self::Unspecified, "unspecified"),
        (Self::KeyCompromise, "key-compromise"),
        (Self::AffiliationChanged, "affiliation-changed"),
        (Self::Superseded, "superseded"),
        (Self::CessationOfOperation, "cessation-of-operation"),
    ];

    fn rcgen(self) -> rcgen::RevocationReason {
        match self {
            Self::Unspecified => rcgen::RevocationReason::Unspecified,
            Self::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
            Self::AffiliationChanged => rcgen::RevocationReason::AffiliationChanged,
            Self::Superseded => rcgen::RevocationReason::Superseded,
            Self::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
        }
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = Self::ALL
            .iter()
            .find(|(r, _)| r == self)
            .map(|(_, n)| *n)
            .unwrap_or("unspecified");
        f.write_str(name)
    }
}

impl FromStr for RevocationReason {
    type Err = CaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase().replace('_', "-");
        Self::ALL
            .iter()
            .find(|(_, n)| *n == wanted)
            .map(|(r, _)| *r)
            .ok_or_else(|| CaError::InvalidRevocationReason {
                given: s.to_owned(),
                accepted: Self::ALL
                    .iter()
                    .map(|(_, n)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
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
                let bytes = hex_serial(&r.serial)?;
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

/// Hex serial (any case, optional colons) to its DER integer content bytes.
fn hex_serial(serial: &str) -> Result<Vec<u8>, CaError> {
    let clean: String = serial.chars().filter(|c| *c != ':').collect();
    let padded = if clean.len() % 2 == 1 {
        format!("0{clean}")
    } else {
        clean
    };
    let mut bytes = Vec::with_capacity(padded.len() / 2);
    for pair in padded.as_bytes().chunks(2) {
        let text = std::str::from_utf8(pair).unwrap_or("");
        let byte = u8::from_str_radix(text, 16).map_err(|_| CaError::InvalidSerial {
            serial: serial.to_owned(),
        })?;
        bytes.push(byte);
    }
    if bytes.is_empty() {
        return Err(CaError::InvalidSerial {
            serial: serial.to_owned(),
        });
    }
    // A positive DER INTEGER: prefix 0x00 when the top bit is set.
    if bytes[0] & 0x80 != 0 {
        bytes.insert(0, 0);
    }
    Ok(bytes)
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
        for (r, name) in RevocationReason::ALL {
            assert_eq!(r.to_string(), name);
        }
    }

    #[test]
    fn hex_serials_become_positive_integers() {
        assert_eq!(hex_serial("7f01").unwrap(), [0x7f, 0x01]);
        assert_eq!(hex_serial("FF:01").unwrap(), [0x00, 0xff, 0x01]);
        assert_eq!(hex_serial("abc").unwrap(), [0x0a, 0xbc]);
        assert!(hex_serial("xyz").is_err());
        assert!(hex_serial("").is_err());
    }
}
