//! The CA's signing keys (on disk, 0600) and certificate serials. SVID keys,
//! which hold no CA power, are `lanyard_keys::SvidKey`.

use std::path::Path;

use lanyard_identity::Serial;
use lanyard_keys::write_file_atomic;
use rcgen::KeyPair;
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::CaError;

/// Permission bits of every private key file the CA writes.
pub(crate) const KEY_FILE_MODE: u32 = 0o600;

/// Generates a fresh ECDSA P-256 key pair with ring's system random source.
pub(crate) fn generate_p256() -> Result<KeyPair, CaError> {
    Ok(lanyard_keys::generate_p256()?)
}

/// Writes a key pair as a PEM PKCS#8 file, 0600, atomically.
pub(crate) fn save_key(path: &Path, key: &KeyPair) -> Result<(), CaError> {
    Ok(write_file_atomic(
        path,
        key.serialize_pem().as_bytes(),
        KEY_FILE_MODE,
    )?)
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

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
