//! The JWT signing key of each CA generation. It is minted, published,
//! activated and dropped with its generation, so JWT keys follow the X.509
//! CA's rotation schedule: a prepared generation's key is already in the
//! JWT bundle, the active one's signs, and a retired one's stays published
//! until its CA expires, which is after every token it signed.

use std::path::Path;

use lanyard_jwt::{Alg, SigningKey};

use crate::error::CaError;
use crate::keys::KEY_FILE_MODE;
use lanyard_keys::pem_block;
use lanyard_keys::write_file_atomic;

/// The file name of the JWT key of the CA generation whose key file is
/// `ca_key_file` (`ca-<id>.key` → `jwt-<id>.key`).
pub(crate) fn jwt_key_file(ca_key_file: &str) -> String {
    let id = ca_key_file
        .strip_prefix("ca-")
        .and_then(|s| s.strip_suffix(".key"))
        .unwrap_or(ca_key_file);
    format!("jwt-{id}.key")
}

/// Generates a key for `alg` and writes it as PEM PKCS#8, 0600, atomically.
pub(crate) fn mint_jwt_key(path: &Path, alg: Alg) -> Result<SigningKey, CaError> {
    let key = SigningKey::generate(alg).map_err(|e| CaError::KeyGeneration {
        algorithm: match alg {
            Alg::Es256 => "JWT ES256",
            Alg::Rs256 => "JWT RS256",
        },
        reason: e.to_string(),
    })?;
    write_file_atomic(
        path,
        pem_block("PRIVATE KEY", key.pkcs8_der()).as_bytes(),
        KEY_FILE_MODE,
    )?;
    Ok(key)
}

/// Reads a JWT key written by [`mint_jwt_key`] (either algorithm).
pub(crate) fn load_jwt_key(path: &Path) -> Result<SigningKey, CaError> {
    use rustls_pki_types::{PrivatePkcs8KeyDer, pem::PemObject};
    let pem = match std::fs::read(path) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CaError::MissingKeyFile {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(CaError::io("read", path, e)),
    };
    let bad = |problem: String| CaError::BadKeyFile {
        path: path.to_path_buf(),
        problem,
    };
    let der = PrivatePkcs8KeyDer::from_pem_slice(&pem)
        .map_err(|e| bad(format!("no PKCS#8 \"BEGIN PRIVATE KEY\" block ({e})")))?;
    lanyard_jwt::load_any(der.secret_pkcs8_der()).map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_key_is_private_and_loads_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(jwt_key_file("ca-0a1b.key"));
        assert!(path.ends_with("jwt-0a1b.key"));
        let key = mint_jwt_key(&path, Alg::Es256).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_jwt_key(&path).unwrap().kid(), key.kid());
        let rsa = mint_jwt_key(&path, Alg::Rs256).unwrap();
        let loaded = load_jwt_key(&path).unwrap();
        assert_eq!((loaded.alg(), loaded.kid()), (Alg::Rs256, rsa.kid()));
        std::fs::write(&path, "junk").unwrap();
        assert!(matches!(
            load_jwt_key(&path),
            Err(CaError::BadKeyFile { .. })
        ));
    }
}
