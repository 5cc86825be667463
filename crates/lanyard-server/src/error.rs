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
    Backup(#[from] BackupError),
    /// The audit log file is damaged or cannot be opened.
    #[error("audit log {}: {source}", path.display())]
    Audit {
        /// The log file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: lanyard_audit::AuditError,
    },
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

/// Why a backup cannot be read or restored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The file is not a backup's JSON.
    #[error("not a Lanyard backup: {0}")]
    NotJson(#[source] serde_json::Error),
    /// A backup of another format version.
    #[error("backup format {found:?} is not supported; this build reads {supported:?}")]
    Format {
        /// The backup's format.
        found: String,
        /// The one this build reads.
        supported: &'static str,
    },
    /// The target data dir already holds a store.
    #[error("{} already holds a store; import only into a fresh data dir", store_dir.display())]
    TargetNotEmpty {
        /// The store directory found.
        store_dir: PathBuf,
    },
    /// A CA file name that could escape the CA directory.
    #[error("bad CA file name {name:?} in backup: a plain file name is expected")]
    CaFileName {
        /// The name given.
        name: String,
    },
    /// Audit records without the head that anchors them.
    #[error("the backup holds audit records but no audit head")]
    NoAuditHead,
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
