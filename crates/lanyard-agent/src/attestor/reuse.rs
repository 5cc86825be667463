//! Selectors reused across the calls of one pinned caller.
//!
//! A full attestation reads the caller's credentials, binary, cgroups and
//! names, and lists its descriptors to find its end of the connection. On a
//! connection that makes many calls, all but the first would read the same
//! things again. So a full attestation records what its selectors were made
//! of ([`Attested`]), and the next call on the same connection (the same
//! pidfd, so the same process) reuses them only after re-reading each of
//! those inputs cheaply and finding it unchanged:
//!
//! - the descriptor that held the caller's socket still holds it (one
//!   `readlink`; exec closes a `CLOEXEC` socket, a hand-off then close
//!   drops it);
//! - the binary is the same file in the same state (device, inode, size,
//!   mtime, ctime) under the same link text: an exec of another binary
//!   changes it;
//! - the same cgroups, the same `/etc/passwd` and `/etc/group`;
//! - the same effective uid and gid, the same start time;
//! - and, last, the pidfd says the process is still alive, which vouches
//!   for every read before it (a pid is not reused before its process is
//!   reaped).
//!
//! A hit is therefore what a full attestation would return at that moment.
//! Anything different (exec, exit, changed credentials, a move to another
//! cgroup) drops the record and sends the call through the full
//! attestation, which refuses the caller or attests it afresh; the record
//! is never consulted again after a failed attestation.

use std::{
    fs,
    os::fd::AsFd,
    path::PathBuf,
    sync::{Arc, PoisonError},
};

use lanyard_identity::Selector;

use super::{
    error::AttestError,
    hash_cache::{BinaryState, HashCache},
    peer::{DEFAULT_MAX_BINARY_SIZE, PeerProcess, has_exited, read_start_time},
    peer_socket, procfs, users,
};

/// A full attestation's selectors and the inputs they were made of.
#[derive(Debug)]
pub(super) struct Attested {
    /// The selectors.
    pub(super) selectors: Arc<[Selector]>,
    /// The binary's state, read through `/proc/<pid>/exe`.
    pub(super) binary: BinaryState,
    /// The text of the `/proc/<pid>/exe` link (`unix:path`).
    pub(super) exe_target: PathBuf,
    /// `/proc/<pid>/cgroup` as read.
    pub(super) cgroup: String,
    /// The descriptor that held the caller's end of the connection.
    pub(super) socket_fd: u32,
    /// `/etc/passwd` and `/etc/group` before their names were read.
    pub(super) names: (Option<BinaryState>, Option<BinaryState>),
}

impl PeerProcess {
    /// The caller's selectors: those of this connection's last attestation
    /// when none of their inputs changed since, else a full attestation
    /// ([`attest_cached`](Self::attest_cached)), whose record the next call
    /// may reuse.
    ///
    /// Blocking (reads `/proc`): call it from `spawn_blocking`, as
    /// [`attest_within`](Self::attest_within) does.
    ///
    /// # Errors
    ///
    /// As for [`attest`](Self::attest).
    pub fn attest_reusing(&self, cache: &HashCache) -> Result<Arc<[Selector]>, AttestError> {
        let previous = self
            .attested
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(previous) = previous
            && self.unchanged(&previous)
        {
            let selectors = Arc::clone(&previous.selectors);
            self.remember(previous);
            return Ok(selectors);
        }
        let attested = self.attest_full(DEFAULT_MAX_BINARY_SIZE, Some(cache))?;
        let selectors = Arc::clone(&attested.selectors);
        self.remember(attested);
        Ok(selectors)
    }

    fn remember(&self, attested: Attested) {
        *self.attested.lock().unwrap_or_else(PoisonError::into_inner) = Some(attested);
    }

    /// Whether every input of `previous` is as it was, the process still
    /// the pinned one and alive. Any read that fails counts as a change.
    fn unchanged(&self, previous: &Attested) -> bool {
        let pid = self.pid;
        let same = || -> Result<bool, AttestError> {
            if !peer_socket::holds_at(pid, previous.socket_fd, self.socket) {
                return Ok(false);
            }
            let exe_path = procfs::proc_path(pid, "exe");
            let binary = fs::metadata(&exe_path).map(|m| BinaryState::of(&m));
            if binary.ok() != Some(previous.binary) {
                return Ok(false);
            }
            if fs::read_link(&exe_path).ok().as_ref() != Some(&previous.exe_target) {
                return Ok(false);
            }
            if procfs::read(pid, "cgroup").ok().as_ref() != Some(&previous.cgroup) {
                return Ok(false);
            }
            if users::db_state() != previous.names {
                return Ok(false);
            }
            let ids = procfs::read(pid, "status")
                .ok()
                .and_then(|status| procfs::parse_status_ids(&status).ok());
            if ids.is_none_or(|ids| ids.uid != self.uid || ids.gid != self.gid) {
                return Ok(false);
            }
            if read_start_time(pid, self.pidfd.as_fd())? != self.start_time {
                return Ok(false);
            }
            // Last: alive now means every read above described this process.
            Ok(has_exited(self.pidfd.as_fd()).is_ok_and(|exited| !exited))
        };
        let unchanged = same().unwrap_or(false);
        if !unchanged {
            tracing::debug!(
                pid,
                "caller changed since its last attestation: attesting afresh"
            );
        }
        unchanged
    }
}
