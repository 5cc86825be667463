//! The one error type of workload attestation and of binding its socket.

use std::{io, path::PathBuf};

use lanyard_identity::SelectorError;

/// Why a Workload API caller could not be attested, or why the socket could
/// not be bound.
///
/// Every attestation variant names the pid it is about, so a log line alone
/// says which caller was refused and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    /// `SO_PEERCRED` could not be read from the connection.
    #[error("cannot read the peer credentials (SO_PEERCRED) of a Workload API connection: {0}")]
    PeerCredentials(#[source] io::Error),

    /// The kernel reported no usable pid for the peer: it lives in a pid
    /// namespace the agent cannot see, so its `/proc` entry cannot be read.
    #[error(
        "the Workload API peer has no pid visible to the agent (it runs in another pid namespace)"
    )]
    NoPeerPid,

    /// The peer process exited (or was already gone) before attestation
    /// finished. Also what a child sees when it keeps a socket whose
    /// connecting parent has exited: the identity belonged to the parent.
    #[error("process {pid} exited before its attestation finished")]
    ProcessExited {
        /// The peer's pid.
        pid: i32,
    },

    /// The pid now names a different process than the one pinned when the
    /// connection was accepted (its start time changed).
    #[error(
        "pid {pid} was reused during attestation: pinned process started at tick {pinned}, \
         the process now under that pid at tick {found}"
    )]
    PidReused {
        /// The peer's pid.
        pid: i32,
        /// Start time (clock ticks after boot) recorded at accept time.
        pinned: u64,
        /// Start time found while attesting.
        found: u64,
    },

    /// The process's effective uid/gid differ from the `SO_PEERCRED`
    /// credentials of the connection (it changed identity after connecting).
    #[error(
        "process {pid} changed credentials: connected as uid {expected_uid} gid {expected_gid}, \
         now runs as uid {uid} gid {gid}"
    )]
    CredentialsChanged {
        /// The peer's pid.
        pid: i32,
        /// Effective uid reported by `SO_PEERCRED`.
        expected_uid: u32,
        /// Effective gid reported by `SO_PEERCRED`.
        expected_gid: u32,
        /// Effective uid found in `/proc/<pid>/status`.
        uid: u32,
        /// Effective gid found in `/proc/<pid>/status`.
        gid: u32,
    },

    /// The process now runs a different binary (device and inode of
    /// `/proc/<pid>/exe`) than when it was pinned: it called `execve`.
    #[error(
        "process {pid} changed its binary during attestation (exe was {pinned}, is now {found})"
    )]
    BinaryChanged {
        /// The peer's pid.
        pid: i32,
        /// `dev:inode` of the binary at accept time.
        pinned: String,
        /// `dev:inode` of the binary found while attesting.
        found: String,
    },

    /// The process's binary was deleted or replaced on disk since it was
    /// started, so its path no longer names the code that runs.
    #[error("the binary of process {pid} was deleted or replaced on disk: {path}")]
    BinaryReplaced {
        /// The peer's pid.
        pid: i32,
        /// What `/proc/<pid>/exe` points to, `(deleted)` suffix included.
        path: String,
    },

    /// The pinned process no longer holds the caller's end of the
    /// connection: it handed the connection on (to a relay) and closed its
    /// own copy, typically by an `execve` that closed it. Whoever sends the
    /// request is not the process whose identity the pid shows.
    #[error(
        "process {pid} no longer holds the connection ({socket}): the caller is not the \
         process that connected"
    )]
    ConnectionNotHeld {
        /// The peer's pid.
        pid: i32,
        /// The caller's end of the connection, as `/proc/<pid>/fd` shows it.
        socket: String,
    },

    /// The kernel could not say which socket is the caller's end of the
    /// connection (`sock_diag`).
    #[error("cannot find the caller's end of a Workload API connection (sock_diag): {0}")]
    PeerSocket(#[source] io::Error),

    /// Pinning or attesting the caller took longer than the configured
    /// deadline (`attestation_timeout`): its binary or `/proc` entry is slow
    /// to read (a stalled network or FUSE filesystem, say).
    #[error("attestation of process {pid} did not finish within {timeout:?}")]
    TimedOut {
        /// The peer's pid.
        pid: i32,
        /// The deadline.
        timeout: std::time::Duration,
    },

    /// The blocking task that pinned or attested the process failed (it
    /// panicked, or the runtime is shutting down).
    #[error("attestation of process {pid} was aborted: {reason}")]
    Aborted {
        /// The peer's pid.
        pid: i32,
        /// What the runtime said.
        reason: String,
    },

    /// A `/proc` file of the process (or the pidfd) could not be read.
    #[error("cannot read {what} of process {pid}: {source}")]
    Proc {
        /// The peer's pid.
        pid: i32,
        /// What was being read, e.g. `/proc/<pid>/status`.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A `/proc` file of the process did not have the expected format.
    #[error("cannot parse {what} of process {pid}: {reason}")]
    ProcFormat {
        /// The peer's pid.
        pid: i32,
        /// Which file, e.g. `/proc/<pid>/stat`.
        what: String,
        /// What was wrong with it.
        reason: &'static str,
    },

    /// A selector built from the process's attributes was rejected.
    #[error("process {pid}: cannot build selector: {source}")]
    Selector {
        /// The peer's pid.
        pid: i32,
        /// Why the selector was rejected.
        #[source]
        source: SelectorError,
    },

    /// The socket path is a symbolic link; the agent never follows one there.
    #[error("refusing to bind the Workload API socket: {} is a symbolic link", path.display())]
    SocketIsSymlink {
        /// The configured socket path.
        path: PathBuf,
    },

    /// Something other than a socket exists at the socket path.
    #[error(
        "refusing to bind the Workload API socket: {} exists and is not a socket",
        path.display()
    )]
    NotASocket {
        /// The configured socket path.
        path: PathBuf,
    },

    /// A process accepts connections on the socket path already.
    #[error(
        "another agent is serving on {}: stop it or choose another --socket-path",
        path.display()
    )]
    SocketInUse {
        /// The configured socket path.
        path: PathBuf,
    },

    /// A filesystem or socket operation on the socket path failed.
    #[error("cannot {action} {}: {source}", path.display())]
    SocketIo {
        /// What was attempted, e.g. `bind the Workload API socket at`.
        action: &'static str,
        /// The path it was attempted on.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}
