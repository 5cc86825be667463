//! The one error type every [`Datastore`](crate::Datastore) method returns.

use std::path::PathBuf;

/// Why a store operation failed.
///
/// Every message names what was wrong (the kind and key of a record, the
/// path of a store, the tree and key of a damaged record) so that an operator
/// can act on it without reading the code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The record to read, update, delete or consume does not exist.
    #[error("{kind} {key:?} not found")]
    NotFound {
        /// What kind of record was looked for: `entry`, `join token`, ...
        kind: &'static str,
        /// The key it was looked for under (an entry ID, a token ID, ...).
        key: String,
    },

    /// A record with the same key, or (for entries) the same SPIFFE ID,
    /// parent ID and selector set, already exists.
    #[error("{kind} {key} already exists")]
    AlreadyExists {
        /// What kind of record collided: `entry`, `join token`, `svid`.
        kind: &'static str,
        /// The key or the unique attributes that collided.
        key: String,
    },

    /// A compare-and-swap lost: the record changed since the caller read it.
    /// Nothing was written; read it again and retry.
    #[error(
        "{kind} {key} changed concurrently (revision {found}, expected {expected}); read it again and retry"
    )]
    Conflict {
        /// What kind of record: `entry`, `agent`.
        kind: &'static str,
        /// Its key.
        key: String,
        /// The revision the caller's change was based on.
        expected: u64,
        /// The revision stored now.
        found: u64,
    },

    /// The operation was refused by the standing of an agent, entry or task;
    /// nothing was written.
    #[error(transparent)]
    Refused(#[from] crate::Refusal),

    /// The join token was already consumed by an earlier attestation; a join
    /// token is single use.
    #[error("join token was already used; generate a new one")]
    TokenUsed,

    /// The join token's lifetime ended before it was presented.
    #[error("join token expired at {expired_at} (unix seconds); generate a new one")]
    TokenExpired {
        /// When the token expired, in seconds since the Unix epoch.
        expired_at: i64,
    },

    /// A stored record or value could not be decoded: the store is damaged
    /// or was written by something else. Records are never skipped silently.
    #[error("store is corrupt: {what}")]
    Corrupt {
        /// Which tree and key (or which file) is damaged, and how.
        what: String,
    },

    /// The directory given to open the store holds something that is not a
    /// Lanyard store, or a store that is incomplete. The store refuses to
    /// start empty over it.
    #[error("{} is not a usable Lanyard store: {reason}", path.display())]
    NotAStore {
        /// The directory that was opened.
        path: PathBuf,
        /// What is missing or unexpected.
        reason: String,
    },

    /// The store was written with a format version this build does not read.
    #[error(
        "{} has store format version {found:?}, but this build reads only version {expected:?}",
        path.display()
    )]
    UnsupportedFormat {
        /// The directory that was opened.
        path: PathBuf,
        /// The version marker found in the store.
        found: String,
        /// The version marker this build writes and reads.
        expected: &'static str,
    },

    /// Opening the store failed: the directory could not be read or created,
    /// another process holds the store's lock, or the backend refused the
    /// files it found.
    #[error("cannot open store at {}: {reason}", path.display())]
    Open {
        /// The directory that was opened.
        path: PathBuf,
        /// What the file system or the backend reported.
        reason: String,
    },

    /// A database server could not be reached, or refused the connection
    /// (wrong address, credentials, database name, or TLS). Nothing was read
    /// or written.
    #[error("cannot reach the database at {target}: {reason}")]
    Unreachable {
        /// Where the database was looked for, without any password.
        target: String,
        /// What the connection attempt reported.
        reason: String,
    },

    /// The database holds tables but no Lanyard schema version row, or a
    /// damaged one. The store refuses to create its schema over it.
    #[error("the database at {target} is not a usable Lanyard database: {reason}")]
    NotADatabase {
        /// The database, without any password.
        target: String,
        /// What was found instead.
        reason: String,
    },

    /// The database's schema was written by a build this one does not know
    /// (a newer lanyard-server).
    #[error(
        "the database at {target} has Lanyard schema version {found}, but this build knows versions up to {expected}; run the lanyard-server that wrote it, or restore a backup into a new database"
    )]
    UnsupportedSchema {
        /// The database, without any password.
        target: String,
        /// The version recorded in the database.
        found: i64,
        /// The newest version this build migrates to.
        expected: i64,
    },

    /// A record could not be encoded for storage.
    #[error("cannot encode {what}: {source}")]
    Encode {
        /// Which record was being encoded.
        what: String,
        /// The serializer's error.
        source: serde_json::Error,
    },

    /// The storage backend failed to read, write or flush (for example an
    /// I/O error or a full disk). The operation may not have taken effect.
    #[error("storage backend failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}
