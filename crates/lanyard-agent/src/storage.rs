//! The agent's data dir: its SVID chain, the SVID's private key (0600) and
//! the last trust bundle, each written atomically so a crash never leaves a
//! half-written file.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use lanyard_keys::{SvidKey, certificates_to_pem, write_file_atomic};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use crate::{AgentError, identity::AgentIdentity};

const SVID_FILE: &str = "agent_svid.pem";
const KEY_FILE: &str = "agent_svid.key";
const BUNDLE_FILE: &str = "bundle.pem";

/// The agent's data directory.
#[derive(Clone, Debug)]
pub struct DataDir {
    path: PathBuf,
}

impl DataDir {
    /// Opens (creating it 0700 if missing) the data dir.
    pub fn open(path: &Path) -> Result<Self, AgentError> {
        lanyard_hardening::create_dir_exact(path, 0o700).map_err(|e| AgentError::io(path, e))?;
        Ok(Self {
            path: path.to_owned(),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored agent SVID and key, if both are present. A present but
    /// unreadable or mismatched pair is an error: better to stop than to
    /// silently re-attest over an operator's files.
    pub fn load_identity(&self) -> Result<Option<AgentIdentity>, AgentError> {
        let svid_path = self.path.join(SVID_FILE);
        let key_path = self.path.join(KEY_FILE);
        if !svid_path.exists() && !key_path.exists() {
            return Ok(None);
        }
        let chain = read_certs(&svid_path)?;
        let key_pem = std::fs::read(&key_path).map_err(|e| AgentError::io(&key_path, e))?;
        let key = match PrivateKeyDer::from_pem_slice(&key_pem) {
            Ok(PrivateKeyDer::Pkcs8(der)) => SvidKey::from_pkcs8_der(der.secret_pkcs8_der())
                .map_err(|e| AgentError::bad_file(&key_path, e.to_string()))?,
            Ok(_) => {
                return Err(AgentError::bad_file(
                    &key_path,
                    "expected a PKCS#8 private key",
                ));
            }
            Err(e) => {
                return Err(AgentError::bad_file(
                    &key_path,
                    format!("not a PEM private key: {e}"),
                ));
            }
        };
        // When we received it is unknown after a restart: the file's mtime
        // is the best estimate (the later of it and NotBefore is used).
        let received_at = std::fs::metadata(&svid_path)
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        AgentIdentity::new(chain, Arc::new(key), received_at)
            .map(Some)
            .map_err(|e| AgentError::bad_file(&svid_path, e.to_string()))
    }

    /// Stores the agent SVID (0644) and its key (0600).
    pub fn save_identity(&self, id: &AgentIdentity) -> Result<(), AgentError> {
        let key_path = self.path.join(KEY_FILE);
        write_file_atomic(&key_path, id.key.pkcs8_pem().as_bytes(), 0o600)?;
        let svid_path = self.path.join(SVID_FILE);
        write_file_atomic(&svid_path, certificates_to_pem(&id.chain).as_bytes(), 0o644)?;
        Ok(())
    }

    /// Removes the stored agent SVID and key (after a ban or an eviction,
    /// so that a restart cannot present them again).
    pub fn clear_identity(&self) -> Result<(), AgentError> {
        for name in [SVID_FILE, KEY_FILE] {
            let p = self.path.join(name);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(AgentError::io(p, e)),
            }
        }
        Ok(())
    }

    /// The stored trust bundle, if any.
    pub fn load_bundle(&self) -> Result<Option<Vec<CertificateDer<'static>>>, AgentError> {
        let p = self.path.join(BUNDLE_FILE);
        if !p.exists() {
            return Ok(None);
        }
        read_certs(&p).map(Some)
    }

    /// Stores the trust bundle.
    pub fn save_bundle(&self, bundle: &[CertificateDer<'_>]) -> Result<(), AgentError> {
        let p = self.path.join(BUNDLE_FILE);
        write_file_atomic(&p, certificates_to_pem(bundle).as_bytes(), 0o644)?;
        Ok(())
    }

    /// Whether the data dir is private to the agent (mode without group/other bits).
    pub fn is_private(&self) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|m| m.permissions().mode() & 0o077 == 0)
    }
}

/// Reads PEM certificates; an empty file is an error.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, AgentError> {
    let pem = std::fs::read(path).map_err(|e| AgentError::io(path, e))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| AgentError::bad_file(path, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(AgentError::bad_file(path, "no CERTIFICATE block found"));
    }
    Ok(certs)
}
