//! The crate's one error type.

use std::path::PathBuf;

/// A key could not be made, read or written. No variant carries key
/// material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A file system operation on a key, certificate or temporary file failed.
    #[error("cannot {op} {path}: {source}")]
    Io {
        /// What was being done ("create", "rename into place", "fsync", ...).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// Generating a key pair (or randomness) with the system random source failed.
    #[error("cannot generate a {algorithm} key pair: {reason}")]
    Generation {
        /// The key type asked for.
        algorithm: &'static str,
        /// The crypto library's reason.
        reason: String,
    },

    /// A private key given in memory (PKCS#8 DER) was rejected.
    #[error("bad private key: {problem}")]
    BadKey {
        /// What is wrong with it, and what is accepted.
        problem: String,
    },

    /// Building a CSR failed inside the X.509 encoder.
    #[error("cannot build {what}: {reason}")]
    Encoding {
        /// What was being built.
        what: &'static str,
        /// The encoder's reason.
        reason: String,
    },
}

impl KeyError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        KeyError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
