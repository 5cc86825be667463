//! CA keys sealed for a shared store: several servers of one trust domain
//! hold one CA, whose key files travel through the database encrypted with
//! a key-encryption key (KEK) that only the servers' hosts hold.
//!
//! Each key file is sealed with AES-256-GCM under the KEK, with a fresh
//! random nonce, and its file name as associated data: a sealed key cannot
//! be swapped for another under a different name, and a database reader
//! without the KEK learns nothing of the keys. On a server the opened keys
//! are written to the CA key directory, 0600, exactly as a single server
//! keeps them.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::error::CaError;
use lanyard_keys::{ensure_private_dir, write_file_atomic};

/// The version byte that starts every sealed key.
const SEALED_V1: u8 = 1;

/// A 256-bit key-encryption key, read from a file of 64 hex digits (for
/// example `openssl rand -hex 32`). `Debug` never shows it.
pub struct KeyEncryptionKey {
    key: LessSafeKey,
    /// A short public fingerprint (SHA-256 of the key, first 8 bytes, hex),
    /// so operators can tell whether two servers hold the same KEK.
    fingerprint: String,
}

impl fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEncryptionKey")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// One CA key file, sealed under the KEK: what the shared store holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedKey {
    /// The key file's name in the CA key directory (`ca-*.key`, `jwt-*.key`).
    pub name: String,
    /// Version byte, nonce, ciphertext and tag, hex.
    pub sealed: String,
}

impl KeyEncryptionKey {
    /// Reads the KEK from `path`: 64 hex digits (surrounding white space
    /// ignored). The file must not be readable by group or others.
    pub fn load(path: &Path) -> Result<Self, CaError> {
        let bad = |problem: String| CaError::BadKeyFile {
            path: path.to_path_buf(),
            problem,
        };
        let meta = std::fs::metadata(path).map_err(|e| CaError::io("read", path, e))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(bad(format!(
                "the key-encryption key file has mode {mode:o}; it must be readable by its owner \
                 only (chmod 600)"
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| CaError::io("read", path, e))?;
        let bytes = hex::decode(text.trim()).map_err(|_| {
            bad("expected 64 hex digits (a 256-bit key, e.g. from `openssl rand -hex 32`)".into())
        })?;
        Self::from_bytes(&bytes).map_err(bad)
    }

    /// A KEK from its 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() != 32 {
            return Err(format!(
                "expected a 256-bit key (64 hex digits), got {} bits",
                bytes.len() * 8
            ));
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        let fingerprint = hex::encode(&digest.as_ref()[..8]);
        let key = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| "the key-encryption key is not a valid AES-256 key".to_owned())?;
        Ok(Self {
            key: LessSafeKey::new(key),
            fingerprint,
        })
    }

    /// The KEK's public fingerprint (safe to log).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Seals `plain` (a key file's content) under `name`.
    pub fn seal(&self, name: &str, plain: &[u8]) -> Result<SealedKey, CaError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| CaError::KeyGeneration {
                algorithm: "AES-GCM nonce",
                reason: "the system random source failed".into(),
            })?;
        let mut data = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut data,
            )
            .map_err(|_| CaError::Encoding {
                what: "sealed CA key",
                reason: "AES-GCM sealing failed".into(),
            })?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + data.len());
        out.push(SEALED_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&data);
        Ok(SealedKey {
            name: name.to_owned(),
            sealed: hex::encode(out),
        })
    }

    /// Opens a sealed key; an error if it was sealed under another KEK or
    /// name, or altered.
    pub fn open(&self, sealed: &SealedKey) -> Result<Vec<u8>, CaError> {
        let bad = |problem: &str| CaError::SealedKey {
            name: sealed.name.clone(),
            problem: problem.to_owned(),
        };
        let bytes = hex::decode(&sealed.sealed).map_err(|_| bad("not hex"))?;
        let (version, rest) = bytes.split_first().ok_or_else(|| bad("empty"))?;
        if *version != SEALED_V1 || rest.len() < NONCE_LEN {
            return Err(bad("unknown format"));
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| bad("bad nonce"))?;
        let mut data = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(sealed.name.as_bytes()), &mut data)
            .map_err(|_| {
                bad(
                    "it does not open with this key-encryption key (another KEK, another name, \
                     or altered); every server of a cluster needs the same KEK",
                )
            })?;
        Ok(plain.to_vec())
    }
}

/// Seals the key files `names` of `key_dir`.
pub fn seal_key_files(
    kek: &KeyEncryptionKey,
    key_dir: &Path,
    names: &[String],
) -> Result<Vec<SealedKey>, CaError> {
    names
        .iter()
        .map(|name| {
            let path = key_path(key_dir, name)?;
            let plain = std::fs::read(&path).map_err(|e| CaError::io("read", &path, e))?;
            kek.seal(name, &plain)
        })
        .collect()
}

/// Opens `sealed` keys into `key_dir` (created 0700 if missing), each file
/// written 0600 and atomically, replacing one that differs. Returns how
/// many files were written.
pub fn unseal_key_files(
    kek: &KeyEncryptionKey,
    key_dir: &Path,
    sealed: &[SealedKey],
) -> Result<usize, CaError> {
    ensure_private_dir(key_dir)?;
    let mut written = 0;
    for key in sealed {
        let path = key_path(key_dir, &key.name)?;
        let plain = kek.open(key)?;
        if std::fs::read(&path).ok().as_deref() == Some(plain.as_slice()) {
            continue;
        }
        write_file_atomic(&path, &plain, 0o600)?;
        written += 1;
    }
    Ok(written)
}

/// A key file's path; a name that is not a plain file name is refused.
fn key_path(key_dir: &Path, name: &str) -> Result<PathBuf, CaError> {
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !plain {
        return Err(CaError::SealedKey {
            name: name.to_owned(),
            problem: "not a plain key file name".into(),
        });
    }
    Ok(key_dir.join(name))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sealed_keys_open_only_with_their_kek_and_name() {
        let kek = KeyEncryptionKey::from_bytes(&[7u8; 32]).unwrap();
        let other = KeyEncryptionKey::from_bytes(&[8u8; 32]).unwrap();
        let sealed = kek.seal("ca-1.key", b"secret key").unwrap();
        assert!(!sealed.sealed.contains(&hex::encode(b"secret key")));
        assert_eq!(kek.open(&sealed).unwrap(), b"secret key");
        assert!(other.open(&sealed).is_err(), "another KEK");
        let renamed = SealedKey {
            name: "ca-2.key".into(),
            ..sealed.clone()
        };
        assert!(kek.open(&renamed).is_err(), "another name");
        let mut altered = sealed.clone();
        altered.sealed.replace_range(40..42, "00");
        if altered != sealed {
            assert!(kek.open(&altered).is_err(), "altered");
        }
        assert!(!format!("{kek:?}").contains("0707"));
    }

    #[test]
    fn key_files_round_trip_through_sealing() {
        let kek = KeyEncryptionKey::from_bytes(&[1u8; 32]).unwrap();
        let a = tempfile::tempdir().unwrap();
        std::fs::write(a.path().join("ca-x.key"), b"pem").unwrap();
        let sealed = seal_key_files(&kek, a.path(), &["ca-x.key".into()]).unwrap();
        let b = tempfile::tempdir().unwrap();
        let dir = b.path().join("ca");
        assert_eq!(unseal_key_files(&kek, &dir, &sealed).unwrap(), 1);
        assert_eq!(unseal_key_files(&kek, &dir, &sealed).unwrap(), 0);
        let path = dir.join("ca-x.key");
        assert_eq!(std::fs::read(&path).unwrap(), b"pem");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let bad = SealedKey {
            name: "../x".into(),
            sealed: sealed[0].sealed.clone(),
        };
        assert!(unseal_key_files(&kek, &dir, &[bad]).is_err());
    }

    #[test]
    fn a_kek_file_must_be_private_and_256_bits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        std::fs::write(&path, format!("{}\n", "ab".repeat(32))).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            KeyEncryptionKey::load(&path)
                .unwrap_err()
                .to_string()
                .contains("600")
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        KeyEncryptionKey::load(&path).unwrap();
        std::fs::write(&path, "abcd").unwrap();
        assert!(
            KeyEncryptionKey::load(&path)
                .unwrap_err()
                .to_string()
                .contains("256-bit")
        );
    }
}
