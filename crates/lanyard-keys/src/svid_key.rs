//! SVID keys: ECDSA P-256 when generated here, P-256 or P-384 when loaded.

use std::fmt;

use rcgen::{
    CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384,
    SignatureAlgorithm,
};

use crate::error::KeyError;

/// Generates a fresh ECDSA P-256 key pair with ring's system random source
/// (rcgen's ring backend).
pub fn generate_p256() -> Result<KeyPair, KeyError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| KeyError::Generation {
        algorithm: "ECDSA P-256",
        reason: e.to_string(),
    })
}

/// Whether a signature algorithm is one Lanyard accepts for SVID keys.
pub fn accepted_svid_algorithm(alg: &SignatureAlgorithm) -> bool {
    alg == &PKCS_ECDSA_P256_SHA256 || alg == &PKCS_ECDSA_P384_SHA384
}

/// A private key for an X.509-SVID (a workload's, the agent's, or the
/// server's own TLS identity): ECDSA P-256 when generated here, P-256 or
/// P-384 when loaded.
///
/// Its `Debug` output is `SvidKey(<redacted>)`; the key bytes are only
/// reachable through [`SvidKey::pkcs8_der`] and [`SvidKey::pkcs8_pem`].
pub struct SvidKey {
    key: KeyPair,
}

impl SvidKey {
    /// Generates a fresh ECDSA P-256 key with ring's system random source.
    pub fn generate() -> Result<Self, KeyError> {
        Ok(Self {
            key: generate_p256()?,
        })
    }

    /// Loads a PKCS#8 DER private key (ECDSA P-256 or P-384).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let key = KeyPair::try_from(der).map_err(|e| KeyError::BadKey {
            problem: format!("not a usable PKCS#8 private key ({e})"),
        })?;
        if !accepted_svid_algorithm(key.algorithm()) {
            return Err(KeyError::BadKey {
                problem: "SVID keys must be ECDSA P-256 or P-384".into(),
            });
        }
        Ok(Self { key })
    }

    /// The private key as PKCS#8 DER. Secret: never log it.
    pub fn pkcs8_der(&self) -> Vec<u8> {
        self.key.serialize_der()
    }

    /// The private key as PEM PKCS#8 (`BEGIN PRIVATE KEY`). Secret: never log it.
    pub fn pkcs8_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The public key as DER SubjectPublicKeyInfo (safe to share).
    pub fn public_key_der(&self) -> Vec<u8> {
        use rcgen::PublicKeyData;
        self.key.subject_public_key_info()
    }

    /// A PKCS#10 CSR signed by this key, with an empty subject and no
    /// extensions: the CA takes only the public key from it.
    pub fn csr_der(&self) -> Result<Vec<u8>, KeyError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let csr = params
            .serialize_request(&self.key)
            .map_err(|e| KeyError::Encoding {
                what: "CSR",
                reason: e.to_string(),
            })?;
        Ok(csr.der().to_vec())
    }
}

impl fmt::Debug for SvidKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SvidKey(<redacted>)")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn svid_key_round_trips_and_redacts() {
        let key = SvidKey::generate().unwrap();
        let again = SvidKey::from_pkcs8_der(&key.pkcs8_der()).unwrap();
        assert_eq!(key.public_key_der(), again.public_key_der());
        assert!(key.pkcs8_pem().starts_with("-----BEGIN PRIVATE KEY-----"));
        let debug = format!("{key:?}");
        assert_eq!(debug, "SvidKey(<redacted>)");
    }

    #[test]
    fn svid_key_rejects_garbage_and_ed25519() {
        assert!(matches!(
            SvidKey::from_pkcs8_der(b"not a key"),
            Err(KeyError::BadKey { .. })
        ));
        let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let err = SvidKey::from_pkcs8_der(&ed.serialize_der()).unwrap_err();
        assert!(err.to_string().contains("P-256"), "{err}");
    }

    #[test]
    fn csr_has_empty_subject_and_verifies() {
        let key = SvidKey::generate().unwrap();
        let der = key.csr_der().unwrap();
        let parsed =
            rcgen::CertificateSigningRequestParams::from_der(&der.as_slice().into()).unwrap();
        assert!(parsed.params.distinguished_name.iter().next().is_none());
        assert!(parsed.params.subject_alt_names.is_empty());
    }
}
