//! The caller of a Workload API connection, pinned so that its pid cannot be
//! borrowed by another process while it is attested.
//!
//! Soundness rests on one kernel guarantee: a pid is not handed to a new
//! process until the old one has exited *and* been reaped. So anything read
//! from `/proc/<pid>` describes the pinned process if, *after* reading it,
//! the pinned process's pidfd still reports it alive. Every `/proc` read
//! below is followed by that check, and the start time, credentials and
//! binary identity recorded at accept time are compared once more.

use std::{
    fs::File,
    io::{self, Read},
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    path::Path,
    sync::Mutex,
};

use lanyard_identity::Selector;
use ring::digest;
use rustix::{
    event::{PollFd, PollFlags, Timespec},
    io::Errno,
    process::{Pid, PidfdFlags, pidfd_open},
};
use tokio::net::UnixStream;

use super::{
    cgroup_v2,
    deadline::{DEFAULT_ATTESTATION_TIMEOUT, Deadline},
    error::AttestError,
    hash_cache::{BinaryState, HashCache},
    local_fs,
    peer_socket::{self, SocketInode},
    procfs::{self, FileId},
    reuse::{Attested, CgroupCheck},
    users,
};

/// Binaries larger than this are not hashed by [`PeerProcess::attest`]: no
/// `unix:sha256` selector is produced for them (256 MiB).
pub const DEFAULT_MAX_BINARY_SIZE: u64 = 256 * 1024 * 1024;

/// Read size when hashing a binary.
const HASH_CHUNK: usize = 64 * 1024;

/// A caller of the Workload API socket, pinned at accept time.
///
/// `pid`, `uid` and `gid` are the `SO_PEERCRED` credentials of the
/// connection, recorded by the kernel when the caller connected. The process
/// is pinned by a pidfd, its start time and the identity (device, inode) of
/// its binary, which [`attest`](Self::attest) checks again.
#[derive(Debug)]
pub struct PeerProcess {
    /// Process id of the process that connected.
    pub pid: i32,
    /// Effective user id when it connected.
    pub uid: u32,
    /// Effective group id when it connected.
    pub gid: u32,
    pub(super) pidfd: OwnedFd,
    pub(super) start_time: u64,
    exe: FileId,
    /// The caller's end of the connection.
    pub(super) socket: SocketInode,
    /// The last full attestation on this connection, for
    /// [`attest_reusing`](Self::attest_reusing).
    pub(super) attested: Mutex<Option<Attested>>,
    /// How long attesting it for one request may take, and its uid's
    /// share of the blocking threads.
    deadline: Deadline,
}

impl PeerProcess {
    /// Reads `SO_PEERCRED` of the connection, then pins the process: opens a
    /// pidfd to it and records its start time, the identity of its binary
    /// and the caller's end of the connection (which the process must still
    /// hold when it is attested). Blocking: it `stat`s the binary, which a
    /// slow filesystem may stall; [`incoming`](super::incoming) runs it on a
    /// blocking thread with a deadline.
    ///
    /// A small window remains between the caller's `connect` and this call:
    /// if the caller exits *and* its pid is recycled to a new process in
    /// between, the new process is pinned. Closing it needs `SO_PEERPIDFD`
    /// (Linux 6.5), which the safe socket APIs available here do not expose;
    /// attestation still checks that the pinned process runs with the
    /// connection's uid and gid.
    ///
    /// # Errors
    ///
    /// [`AttestError::PeerCredentials`] or [`AttestError::NoPeerPid`] when the
    /// credentials are unavailable, [`AttestError::PeerSocket`] when the
    /// caller's socket cannot be found, [`AttestError::ProcessExited`] when the
    /// caller is already gone, [`AttestError::Proc`] when `/proc` cannot be
    /// read.
    pub fn pin(stream: &UnixStream) -> Result<Self, AttestError> {
        let (pid, uid, gid) = Self::credentials(stream)?;
        Self::pin_conn(pid, uid, gid, stream.as_fd())
    }

    /// The `SO_PEERCRED` pid, uid and gid of `stream`.
    pub(super) fn credentials(stream: &UnixStream) -> Result<(i32, u32, u32), AttestError> {
        let cred = stream.peer_cred().map_err(AttestError::PeerCredentials)?;
        let pid = cred.pid().ok_or(AttestError::NoPeerPid)?;
        Ok((pid, cred.uid(), cred.gid()))
    }

    /// [`pin`](Self::pin) once the credentials are known, for the accepted
    /// connection `conn` (any handle to it, a duplicate included), so that
    /// it can run on a blocking thread.
    pub(super) fn pin_conn(
        pid: i32,
        uid: u32,
        gid: u32,
        conn: BorrowedFd<'_>,
    ) -> Result<Self, AttestError> {
        let socket = peer_socket::peer_of(conn).map_err(AttestError::PeerSocket)?;
        Self::pin_pid(pid, uid, gid, socket)
    }

    /// Pins `pid`, which connected with effective `uid` and `gid` and whose
    /// end of the connection is `socket`.
    pub(super) fn pin_pid(
        pid: i32,
        uid: u32,
        gid: u32,
        socket: SocketInode,
    ) -> Result<Self, AttestError> {
        // Pid 0 is what SO_PEERCRED reports for a peer outside our pid
        // namespace.
        let raw = Pid::from_raw(pid).ok_or(AttestError::NoPeerPid)?;
        let pidfd = pidfd_open(raw, PidfdFlags::empty()).map_err(|errno| {
            if errno == Errno::SRCH {
                AttestError::ProcessExited { pid }
            } else {
                AttestError::Proc {
                    pid,
                    what: "a pidfd".to_owned(),
                    source: errno.into(),
                }
            }
        })?;
        let start_time = read_start_time(pid, pidfd.as_fd())?;
        let exe = procfs::exe_id(pid).map_err(|e| proc_error(pid, pidfd.as_fd(), "exe", e))?;
        // The two reads above describe the pidfd's process only if it had not
        // exited by now.
        ensure_alive(pid, pidfd.as_fd())?;
        tracing::trace!(pid, uid, gid, start_time, %exe, %socket, "Workload API caller pinned");
        Ok(Self {
            pid,
            uid,
            gid,
            pidfd,
            start_time,
            exe,
            socket,
            attested: Mutex::new(None),
            deadline: Deadline::new(DEFAULT_ATTESTATION_TIMEOUT),
        })
    }

    /// The same caller, attested under `deadline` by
    /// [`attest_within`](Self::attest_within).
    pub(super) fn with_deadline(mut self, deadline: Deadline) -> Self {
        self.deadline = deadline;
        self
    }

    /// The deadline and slots its attestations run under.
    pub(super) fn deadline(&self) -> &Deadline {
        &self.deadline
    }

    /// Selectors from `/proc`: `unix:uid`, `unix:gid`, `unix:user` and
    /// `unix:group` (if the host names them), `unix:path` (the binary),
    /// `unix:sha256` (the binary's digest, if it is at most
    /// [`DEFAULT_MAX_BINARY_SIZE`]), and one `cgroup:path` per distinct cgroup
    /// path. Afterwards re-checks that the pinned process is still alive, is
    /// the same process (start time), has the same uid/gid and the same
    /// binary, and still holds its end of the connection.
    ///
    /// Blocking (reads `/proc` and hashes the binary): call it from
    /// `spawn_blocking`.
    ///
    /// # Errors
    ///
    /// [`AttestError::ProcessExited`], [`AttestError::PidReused`],
    /// [`AttestError::CredentialsChanged`], [`AttestError::BinaryChanged`],
    /// [`AttestError::ConnectionNotHeld`] or
    /// [`AttestError::BinaryReplaced`] when the caller is not (or no longer)
    /// the process that connected; [`AttestError::Proc`] and
    /// [`AttestError::ProcFormat`] when `/proc` cannot be read.
    pub fn attest(&self) -> Result<Vec<Selector>, AttestError> {
        self.attest_with_limit(DEFAULT_MAX_BINARY_SIZE)
    }

    /// [`attest`](Self::attest), taking the binary's digest from `cache`
    /// when the same file in the same state was hashed before.
    ///
    /// # Errors
    ///
    /// As for [`attest`](Self::attest).
    pub fn attest_cached(&self, cache: &HashCache) -> Result<Vec<Selector>, AttestError> {
        self.attest_full(DEFAULT_MAX_BINARY_SIZE, Some(cache))
            .map(|a| a.selectors.to_vec())
    }

    /// [`attest`](Self::attest), hashing the binary only if it is at most
    /// `max_binary_size` bytes long.
    ///
    /// # Errors
    ///
    /// As for [`attest`](Self::attest).
    pub fn attest_with_limit(&self, max_binary_size: u64) -> Result<Vec<Selector>, AttestError> {
        self.attest_full(max_binary_size, None)
            .map(|a| a.selectors.to_vec())
    }

    /// Every read and check of [`attest`](Self::attest), recording what the
    /// selectors were made of.
    pub(super) fn attest_full(
        &self,
        max_binary_size: u64,
        cache: Option<&HashCache>,
    ) -> Result<Attested, AttestError> {
        let pid = self.pid;
        self.check_credentials()?;

        let exe_path = procfs::proc_path(pid, "exe");
        let target = std::fs::read_link(&exe_path).map_err(|e| self.proc_error("exe", e))?;
        let target_text = target.to_string_lossy();
        if procfs::exe_is_deleted(&target_text) {
            return Err(AttestError::BinaryReplaced {
                pid,
                path: target_text.into_owned(),
            });
        }
        // Open the binary through the link, never by its path name: the file
        // at that name may have been swapped since the process started.
        let binary = File::open(&exe_path).map_err(|e| self.proc_error("exe", e))?;
        let metadata = binary.metadata().map_err(|e| self.proc_error("exe", e))?;
        self.check_binary(FileId::of(&metadata))?;
        let state = BinaryState::of(&metadata);
        let sha256 = match cache.and_then(|c| c.get(&state)) {
            Some(cached) => cached,
            None if metadata.len() > max_binary_size => None,
            None => {
                let digest = sha256_capped(
                    binary.try_clone().map_err(|e| self.proc_error("exe", e))?,
                    max_binary_size,
                )
                .map_err(|e| self.proc_error("exe", e))?;
                // Cached only if the file did not change while it was read.
                let after = binary.metadata().map_err(|e| self.proc_error("exe", e))?;
                if let Some(cache) = cache.filter(|_| BinaryState::of(&after) == state) {
                    cache.put(state, digest.clone());
                }
                digest
            }
        };
        if sha256.is_none() {
            tracing::info!(
                pid,
                binary = %target_text,
                size = metadata.len(),
                max_binary_size,
                "binary too large to hash: no unix:sha256 selector"
            );
        }

        let cgroup_file = procfs::open(pid, "cgroup").map_err(|e| self.proc_error("cgroup", e))?;
        let cgroup = procfs::read_whole(&cgroup_file).map_err(|e| self.proc_error("cgroup", e))?;
        let cgroups = procfs::parse_cgroup_paths(&cgroup);
        // Before the names are read: a later edit shows as a new state.
        let names = users::db_state();
        let inline = local_fs::fd_is_local(&binary)
            && local_fs::path_is_local(Path::new(users::PASSWD))
            && local_fs::path_is_local(Path::new(users::GROUP));

        let socket_fd = self.check_same_process()?;
        let cgroup_check = self.cgroup_check(cgroup_file, cgroup);

        // uid and gid always make valid selectors; a failure here is a bug.
        let id_selector = |key: &str, id: u32| {
            Selector::new("unix", key, id.to_string())
                .map_err(|source| AttestError::Selector { pid, source })
        };
        let mut selectors = Vec::with_capacity(7 + cgroups.len());
        selectors.push(id_selector("uid", self.uid)?);
        selectors.push(id_selector("gid", self.gid)?);
        let mut push = |kind: &str, key: &str, value: &str| match Selector::new(kind, key, value) {
            Ok(selector) => selectors.push(selector),
            // A value no selector can carry (say a path with a newline) just
            // leaves that selector out: entries need all of theirs, so fewer
            // selectors can only match fewer entries.
            Err(error) => tracing::warn!(pid, %error, "attribute left out of the selectors"),
        };
        match users::user_name(self.uid) {
            Ok(Some(name)) => push("unix", "user", &name),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(pid, %error, file = users::PASSWD, "cannot read user names")
            }
        }
        match users::group_name(self.gid) {
            Ok(Some(name)) => push("unix", "group", &name),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(pid, %error, file = users::GROUP, "cannot read group names")
            }
        }
        match target.to_str() {
            Some(path) => push("unix", "path", path),
            None => {
                tracing::warn!(pid, binary = %target_text, "binary path is not UTF-8: no unix:path selector")
            }
        }
        if let Some(sha256) = &sha256 {
            push("unix", "sha256", sha256);
        }
        for path in &cgroups {
            push("cgroup", "path", path);
        }

        tracing::debug!(
            pid,
            uid = self.uid,
            gid = self.gid,
            selectors = selectors.len(),
            "Workload API caller attested"
        );
        Ok(Attested {
            selectors: selectors.into(),
            binary: state,
            exe_target: target,
            cgroups: cgroup_check,
            socket_fd,
            names,
            inline,
        })
    }

    /// How the reuse check will find the cgroups of `text` unchanged: by
    /// the unified cgroup's id when `text` names that cgroup alone and the
    /// pidfd, asked now, reports the id of its directory (so the process is
    /// in the cgroup the text names), else by reading `file` again.
    fn cgroup_check(&self, file: File, text: String) -> CgroupCheck {
        let id = cgroup_v2::unified_only(&text)
            .and_then(cgroup_v2::id_of)
            .filter(|&id| {
                matches!(
                    lanyard_pidfd::effective_ids(self.pidfd.as_fd()),
                    lanyard_pidfd::Creds::Running { cgroup_id: Some(now), .. } if now == id
                )
            });
        match id {
            Some(id) => CgroupCheck::Id(id),
            None => CgroupCheck::Text { file, text },
        }
    }

    // === checks ===

    /// The effective uid/gid in `/proc/<pid>/status` are the connection's.
    fn check_credentials(&self) -> Result<(), AttestError> {
        let status = procfs::read(self.pid, "status").map_err(|e| self.proc_error("status", e))?;
        let ids = procfs::parse_status_ids(&status).map_err(|reason| AttestError::ProcFormat {
            pid: self.pid,
            what: procfs::proc_path(self.pid, "status").display().to_string(),
            reason,
        })?;
        if ids.uid != self.uid || ids.gid != self.gid {
            return Err(AttestError::CredentialsChanged {
                pid: self.pid,
                expected_uid: self.uid,
                expected_gid: self.gid,
                uid: ids.uid,
                gid: ids.gid,
            });
        }
        Ok(())
    }

    fn check_binary(&self, found: FileId) -> Result<(), AttestError> {
        if found != self.exe {
            return Err(AttestError::BinaryChanged {
                pid: self.pid,
                pinned: self.exe.to_string(),
                found: found.to_string(),
            });
        }
        Ok(())
    }

    /// Whether the pid still names the pinned process, running with the
    /// same credentials and binary, and holding the caller's end of the
    /// connection. Run after every other read: its final liveness check is
    /// what vouches for them. Returns the descriptor that holds the
    /// connection.
    fn check_same_process(&self) -> Result<u32, AttestError> {
        let start_time = read_start_time(self.pid, self.pidfd.as_fd())?;
        self.check_credentials()?;
        let exe = procfs::exe_id(self.pid).map_err(|e| self.proc_error("exe", e))?;
        let holds =
            peer_socket::held_at(self.pid, self.socket).map_err(|e| self.proc_error("fd", e))?;
        ensure_alive(self.pid, self.pidfd.as_fd())?;
        let Some(fd) = holds else {
            return Err(AttestError::ConnectionNotHeld {
                pid: self.pid,
                socket: self.socket.to_string(),
            });
        };
        if start_time != self.start_time {
            return Err(AttestError::PidReused {
                pid: self.pid,
                pinned: self.start_time,
                found: start_time,
            });
        }
        self.check_binary(exe)?;
        Ok(fd)
    }

    fn proc_error(&self, file: &str, error: io::Error) -> AttestError {
        proc_error(self.pid, self.pidfd.as_fd(), file, error)
    }
}

/// Start time of `pid` from `/proc/<pid>/stat`.
pub(super) fn read_start_time(pid: i32, pidfd: BorrowedFd<'_>) -> Result<u64, AttestError> {
    let stat = procfs::read(pid, "stat").map_err(|e| proc_error(pid, pidfd, "stat", e))?;
    procfs::parse_stat_start_time(&stat).map_err(|reason| AttestError::ProcFormat {
        pid,
        what: procfs::proc_path(pid, "stat").display().to_string(),
        reason,
    })
}

/// A failed read of `/proc/<pid>/<file>`: most often the process has exited
/// (a zombie has no `exe`, a reaped process no directory), which is the
/// error worth reporting.
fn proc_error(pid: i32, pidfd: BorrowedFd<'_>, file: &str, source: io::Error) -> AttestError {
    match has_exited(pidfd) {
        Ok(true) => AttestError::ProcessExited { pid },
        _ => AttestError::Proc {
            pid,
            what: procfs::proc_path(pid, file).display().to_string(),
            source,
        },
    }
}

fn ensure_alive(pid: i32, pidfd: BorrowedFd<'_>) -> Result<(), AttestError> {
    match has_exited(pidfd) {
        Ok(false) => Ok(()),
        Ok(true) => Err(AttestError::ProcessExited { pid }),
        Err(source) => Err(AttestError::Proc {
            pid,
            what: "its pidfd".to_owned(),
            source,
        }),
    }
}

/// A pidfd becomes readable when its process exits; poll it without waiting.
pub(super) fn has_exited(pidfd: BorrowedFd<'_>) -> io::Result<bool> {
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        let mut fds = [PollFd::from_borrowed_fd(pidfd, PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&now)) {
            // Any event (readable, hang-up, error) means the process is gone
            // or the pidfd unusable: either way not alive as far as we know.
            Ok(_) => return Ok(fds.iter().any(|fd| !fd.revents().is_empty())),
            Err(Errno::INTR) => continue,
            Err(errno) => return Err(errno.into()),
        }
    }
}

/// Hex SHA-256 of `file`, or `None` if it turns out longer than `cap` bytes
/// (it may grow after its size was checked).
fn sha256_capped(mut file: File, cap: u64) -> io::Result<Option<String>> {
    let mut context = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0_u8; HASH_CHUNK];
    let mut total: u64 = 0;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total = total.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
        if total > cap {
            return Ok(None);
        }
        context.update(buf.get(..n).unwrap_or_default());
    }
    Ok(Some(hex::encode(context.finish())))
}

#[cfg(test)]
#[path = "peer_tests.rs"]
mod tests;
