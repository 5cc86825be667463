//! The server library's error type.

use std::path::PathBuf;

/// Everything that can stop the server from starting or serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The configuration is invalid; the message names the key and what is accepted.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A configuration file could not be read or parsed.
    #[error("cannot read configuration {path}: {reason}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// Why it could not be used.
        reason: String,
    },
    /// The datastore failed (including a damaged store at start-up).
    #[error("datastore: {0}")]
    Store(#[from] lanyard_store::StoreError),
    /// The certificate authority failed.
    #[error("certificate authority: {0}")]
    Ca(#[from] lanyard_ca::CaError),
    /// A key could not be generated, or a key or state file not written.
    #[error("{0}")]
    Key(#[from] lanyard_keys::KeyError),
    /// A listener or file could not be set up.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The address or path involved.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A backup cannot be read or restored.
    #[error("backup: {0}")]
    Backup(String),
    /// The audit log is damaged or cannot be written.
    #[error("audit log: {0}")]
    Audit(String),
    /// TLS configuration failed.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// A server task ended with an error.
    #[error("{task}: {reason}")]
    Task {
        /// Which task.
        task: &'static str,
        /// Why it ended.
        reason: String,
    },
}

impl ServerError {
    pub(crate) fn io(
        what: &'static str,
        path: impl std::fmt::Display,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            what,
            path: path.to_string(),
            source,
        }
    }
}
