//! Key pairs: the CA's signing keys (on disk, 0600) and SVID keys for the
//! agent and the server's own TLS identity.

use std::fmt;
use std::path::Path;

use lanyard_identity::Serial;
use rcgen::{
    CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384,
    SignatureAlgorithm,
};
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::CaError;
use crate::fs::write_file_atomic;

/// Permission bits of every private key file the CA writes.
pub(crate) const KEY_FILE_MODE: u32 = 0o600;

/// Generates a fresh ECDSA P-256 key pair with ring's system random source.
pub(crate) fn generate_p256() -> Result<KeyPair, CaError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| CaError::KeyGeneration {
        algorithm: "ECDSA P-256",
        reason: e.to_string(),
    })
}

/// Writes a key pair as a PEM PKCS#8 file, 0600, atomically.
pub(crate) fn save_key(path: &Path, key: &KeyPair) -> Result<(), CaError> {
    write_file_atomic(path, key.serialize_pem().as_bytes(), KEY_FILE_MODE)
}

/// Reads a PEM PKCS#8 key file written by [`save_key`] (or by an operator, for
/// the upstream CA key). A missing file is reported as such.
pub(crate) fn load_key(path: &Path) -> Result<KeyPair, CaError> {
    let pem = match std::fs::read_to_string(path) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CaError::MissingKeyFile {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(CaError::io("read", path, e)),
    };
    warn_if_readable_by_others(path);
    parse_pem_key(&pem).map_err(|problem| CaError::BadKeyFile {
        path: path.to_path_buf(),
        problem,
    })
}

/// Parses a PEM private key; the error says what was found and what is accepted.
pub(crate) fn parse_pem_key(pem: &str) -> Result<KeyPair, String> {
    if pem.contains("-----BEGIN EC PRIVATE KEY-----")
        || pem.contains("-----BEGIN RSA PRIVATE KEY-----")
    {
        return Err(
            "the key is in a legacy SEC1/PKCS#1 PEM block; Lanyard reads PKCS#8 \
                    (\"BEGIN PRIVATE KEY\"); convert it with `openssl pkcs8 -topk8 -nocrypt`"
                .into(),
        );
    }
    if pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        return Err(
            "the key is encrypted; Lanyard reads an unencrypted PKCS#8 key \
                    (\"BEGIN PRIVATE KEY\") protected by file permissions"
                .into(),
        );
    }
    if !pem.contains("-----BEGIN PRIVATE KEY-----") {
        return Err(
            "no \"BEGIN PRIVATE KEY\" PEM block found; expected a PKCS#8 private key".into(),
        );
    }
    KeyPair::from_pem(pem).map_err(|e| {
        format!("the PKCS#8 key cannot be used ({e}); expected ECDSA P-256/P-384, Ed25519 or RSA")
    })
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{mode:o}"),
                "private key file is accessible to group or others; it should be 0600"
            );
        }
    }
}

/// A random positive certificate serial: 16 bytes from ring's system random
/// source, the top bit cleared (so it encodes as a positive INTEGER without
/// padding) and the next bit set (so it is never zero and always carries its
/// full 126 random bits, well above the 64 the profile asks for).
pub(crate) fn random_serial() -> Result<rcgen::SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CaError::KeyGeneration {
            algorithm: "certificate serial",
            reason: "system random source failed".into(),
        })?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(rcgen::SerialNumber::from_slice(&bytes))
}

/// A fresh random serial as lower-case hex, the form the store and the CRL
/// use: the ID of a JWT-SVID (`jti`), drawn from the same space as X.509
/// serials so that it is recorded and revoked like one.
pub fn random_serial_hex() -> Result<String, CaError> {
    Ok(Serial::from_bytes(&random_serial()?.to_bytes()).into_string())
}

/// Whether a signature algorithm is one Lanyard accepts for SVID keys.
pub(crate) fn accepted_svid_algorithm(alg: &SignatureAlgorithm) -> bool {
    alg == &PKCS_ECDSA_P256_SHA256 || alg == &PKCS_ECDSA_P384_SHA384
}

// === impl SvidKey ===

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
    pub fn generate() -> Result<Self, CaError> {
        Ok(Self {
            key: generate_p256()?,
        })
    }

    /// Loads a PKCS#8 DER private key (ECDSA P-256 or P-384).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, CaError> {
        let key = KeyPair::try_from(der).map_err(|e| CaError::BadKey {
            problem: format!("not a usable PKCS#8 private key ({e})"),
        })?;
        if !accepted_svid_algorithm(key.algorithm()) {
            return Err(CaError::BadKey {
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
    pub fn csr_der(&self) -> Result<Vec<u8>, CaError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let csr = params
            .serialize_request(&self.key)
            .map_err(|e| CaError::encoding("CSR", e))?;
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
            Err(CaError::BadKey { .. })
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

    #[test]
    fn serials_are_positive_full_length_and_distinct() {
        let a = random_serial().unwrap().to_bytes();
        let b = random_serial().unwrap().to_bytes();
        assert_eq!(a.len(), 16);
        assert!(a[0] & 0x80 == 0 && a[0] & 0x40 != 0);
        assert_ne!(a, b);
    }

    #[test]
    fn legacy_pem_blocks_get_a_conversion_hint() {
        let err =
            parse_pem_key("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n")
                .unwrap_err();
        assert!(err.contains("openssl pkcs8 -topk8"), "{err}");
    }
}
