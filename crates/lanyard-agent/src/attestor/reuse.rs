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
//! - the same cgroups (re-read from `/proc/<pid>/cgroup`, kept open since
//!   the full attestation; on a host with cgroup v2 alone, the same cgroup
//!   id, asked of the pidfd with the credentials: [`cgroup_v2`](super::cgroup_v2)),
//!   the same `/etc/passwd` and `/etc/group`;
//! - the same effective uid and gid, asked of the pidfd
//!   (`lanyard_pidfd`) or, on a kernel before 6.13, read
//!   from `/proc/<pid>/status`;
//! - and, last, the pidfd says the process is still alive, which vouches
//!   for every read before it (a pid is not reused before its process is
//!   reaped, so every `/proc/<pid>` read above was of the pinned process;
//!   its start time, which exec keeps, needs no second look).
//!
//! A hit is therefore what a full attestation would return at that moment.
//! Anything different (exec, exit, changed credentials, a move to another
//! cgroup) drops the record and sends the call through the full
//! attestation, which refuses the caller or attests it afresh; the record
//! is never consulted again after a failed attestation.
//!
//! The check reads `/proc` and `stat`s two or three files, a few
//! microseconds, so it runs on the request's own thread
//! ([`reuse_inline`](PeerProcess::reuse_inline)) when the binary and the
//! account files are on a local filesystem ([`local_fs`](super::local_fs)):
//! the hand-off to a blocking thread would cost more than the check. With
//! any of them elsewhere (NFS, FUSE), whose `stat` may wait on a server or
//! a daemon, it stays on a blocking thread under the attestation deadline.

use std::{
    fs,
    os::fd::AsFd,
    path::{Path, PathBuf},
    sync::{Arc, PoisonError},
};

use lanyard_identity::Selector;

use super::{
    error::AttestError,
    hash_cache::{BinaryState, HashCache},
    peer::{DEFAULT_MAX_BINARY_SIZE, PeerProcess, has_exited},
    peer_socket, procfs, users,
};

/// A caller's selectors for one call.
#[derive(Clone, Debug)]
pub struct Attestation {
    /// The selectors.
    pub selectors: Arc<[Selector]>,
    /// Whether they are those of the connection's last attestation, found
    /// still true, rather than read in full for this call.
    pub reused: bool,
}

/// A full attestation's selectors and the inputs they were made of.
#[derive(Debug)]
pub(super) struct Attested {
    /// The selectors.
    pub(super) selectors: Arc<[Selector]>,
    /// The binary's state, read through `/proc/<pid>/exe`.
    pub(super) binary: BinaryState,
    /// The text of the `/proc/<pid>/exe` link (`unix:path`).
    pub(super) exe_target: PathBuf,
    /// How the check finds the cgroups unchanged.
    pub(super) cgroups: CgroupCheck,
    /// The descriptor that held the caller's end of the connection.
    pub(super) socket_fd: u32,
    /// `/etc/passwd` and `/etc/group` before their names were read.
    pub(super) names: (Option<BinaryState>, Option<BinaryState>),
    /// Whether the binary and the account files are on local filesystems,
    /// so that checking them again cannot wait on anyone.
    pub(super) inline: bool,
}

/// How the reuse check finds the caller's cgroups unchanged.
#[derive(Debug)]
pub(super) enum CgroupCheck {
    /// The caller is in this unified cgroup alone (a host with cgroup v2
    /// only): the id the pidfd reports with the credentials must be it
    /// ([`cgroup_v2`](super::cgroup_v2)).
    Id(u64),
    /// `/proc/<pid>/cgroup` must read `text` again. `file` is kept open to
    /// be read from its start: that saves the path walk, open and close of
    /// every check, more than half its cost, for one descriptor per
    /// connection, and stays bound to the pinned process.
    Text {
        /// `/proc/<pid>/cgroup`, open.
        file: fs::File,
        /// Its text as the full attestation read it.
        text: String,
    },
}

/// How the check reads a file's state.
#[derive(Clone, Copy, Debug)]
enum Stat {
    /// As `stat` does: a network filesystem may be asked for fresh
    /// attributes (on a blocking thread only).
    Refresh,
    /// From the kernel's cache (`AT_STATX_DONT_SYNC`): on a local
    /// filesystem the same answer, and it never waits.
    Cached,
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
    pub fn attest_reusing(&self, cache: &HashCache) -> Result<Attestation, AttestError> {
        let previous = self
            .attested
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(previous) = previous
            && self.unchanged(&previous, Stat::Refresh)
        {
            let selectors = Arc::clone(&previous.selectors);
            self.remember(previous);
            return Ok(Attestation {
                selectors,
                reused: true,
            });
        }
        let attested = self.attest_full(DEFAULT_MAX_BINARY_SIZE, Some(cache))?;
        let selectors = Arc::clone(&attested.selectors);
        self.remember(attested);
        Ok(Attestation {
            selectors,
            reused: false,
        })
    }

    /// The selectors of this connection's last full attestation, checked
    /// on the calling thread, when that attestation found its inputs on
    /// local filesystems and none of them changed since. `None` sends the
    /// call to [`attest_reusing`](Self::attest_reusing) under the deadline:
    /// after a change the record is gone and it attests in full.
    pub(super) fn reuse_inline(&self) -> Option<Arc<[Selector]>> {
        let previous = {
            let mut slot = self.attested.lock().unwrap_or_else(PoisonError::into_inner);
            if !slot.as_ref().is_some_and(|a| a.inline) {
                return None;
            }
            slot.take()?
        };
        if !self.unchanged(&previous, Stat::Cached) {
            return None;
        }
        let selectors = Arc::clone(&previous.selectors);
        self.remember(previous);
        Some(selectors)
    }

    fn remember(&self, attested: Attested) {
        *self.attested.lock().unwrap_or_else(PoisonError::into_inner) = Some(attested);
    }

    /// Whether every input of `previous` is as it was, the process still
    /// the pinned one and alive. Any read that fails counts as a change.
    fn unchanged(&self, previous: &Attested, stat: Stat) -> bool {
        let pid = self.pid;
        let state = |path: &Path| match stat {
            Stat::Refresh => fs::metadata(path).ok().map(|m| BinaryState::of(&m)),
            Stat::Cached => BinaryState::cached(path),
        };
        let same = || -> bool {
            if !peer_socket::holds_at(pid, previous.socket_fd, self.socket) {
                return false;
            }
            // The link text first: it costs no filesystem a call, and a
            // binary elsewhere (another filesystem, perhaps not a local
            // one) is never `stat`ed here.
            let exe_path = procfs::proc_path(pid, "exe");
            if fs::read_link(&exe_path).ok().as_ref() != Some(&previous.exe_target) {
                return false;
            }
            if state(&exe_path) != Some(previous.binary) {
                return false;
            }
            if let CgroupCheck::Text { file, text } = &previous.cgroups
                && !procfs::reads_as(file, text)
            {
                return false;
            }
            let names = (
                state(Path::new(users::PASSWD)),
                state(Path::new(users::GROUP)),
            );
            if names != previous.names {
                return false;
            }
            let same_ids = |uid, gid| uid == self.uid && gid == self.gid;
            let ids_same = match lanyard_pidfd::effective_ids(self.pidfd.as_fd()) {
                lanyard_pidfd::Creds::Running {
                    uid,
                    gid,
                    cgroup_id,
                } => {
                    same_ids(uid, gid)
                        && match previous.cgroups {
                            CgroupCheck::Id(id) => cgroup_id == Some(id),
                            CgroupCheck::Text { .. } => true,
                        }
                }
                lanyard_pidfd::Creds::Exited => false,
                // Never with a `CgroupCheck::Id` record: that needs the id.
                lanyard_pidfd::Creds::Unknown => {
                    matches!(previous.cgroups, CgroupCheck::Text { .. })
                        && procfs::read(pid, "status")
                            .ok()
                            .and_then(|status| procfs::parse_status_ids(&status).ok())
                            .is_some_and(|ids| same_ids(ids.uid, ids.gid))
                }
            };
            if !ids_same {
                return false;
            }
            // Last: alive now means every read above described this process.
            has_exited(self.pidfd.as_fd()).is_ok_and(|exited| !exited)
        };
        let unchanged = same();
        if !unchanged {
            tracing::debug!(
                pid,
                "caller changed since its last attestation: attesting afresh"
            );
        }
        unchanged
    }
}
