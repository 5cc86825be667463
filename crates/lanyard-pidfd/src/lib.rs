//! A process's credentials and cgroup v2 id read from its pidfd
//! (`PIDFD_GET_INFO`, Linux 6.13): one `ioctl` where `/proc/<pid>/status`
//! and `/proc/<pid>/cgroup` each cost the kernel a page of formatting. It
//! is asked of the pidfd, never of a pid, so it describes the pinned
//! process and no other.
//!
//! The agent's attestation asks it on every call that reuses a caller's
//! last attestation, to see that the caller's credentials did not change.
//!
//! This crate is the workspace's only `unsafe` code, one call: `ioctl`
//! takes a pointer whose type the kernel decides by the request number,
//! and rustix has no wrapper for this request yet.
//!
//! ```
//! use std::os::fd::AsFd;
//! use rustix::process::{getpid, pidfd_open, PidfdFlags};
//!
//! let pidfd = pidfd_open(getpid(), PidfdFlags::empty()).unwrap();
//! match lanyard_pidfd::effective_ids(pidfd.as_fd()) {
//!     lanyard_pidfd::Creds::Running { uid, gid, cgroup_id } => {
//!         println!("euid {uid}, egid {gid}, cgroup v2 id {cgroup_id:?}")
//!     }
//!     lanyard_pidfd::Creds::Exited => unreachable!("we are running"),
//!     lanyard_pidfd::Creds::Unknown => println!("kernel older than 6.13"),
//! }
//! ```

use std::os::fd::BorrowedFd;

use rustix::{
    io::Errno,
    ioctl::{Updater, ioctl, opcode},
};

/// `struct pidfd_info` of `linux/pidfd.h`, as first published (64 bytes,
/// `PIDFD_INFO_SIZE_VER0`); a newer kernel fills only the fields of the
/// size the request names.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct PidfdInfo {
    mask: u64,
    cgroupid: u64,
    pid: u32,
    tgid: u32,
    ppid: u32,
    ruid: u32,
    rgid: u32,
    euid: u32,
    egid: u32,
    suid: u32,
    sgid: u32,
    fsuid: u32,
    fsgid: u32,
    exit_code: i32,
}

/// `PIDFS_IOCTL_MAGIC` of `linux/pidfd.h`.
const PIDFS_IOCTL_MAGIC: u8 = 0xFF;

/// `PIDFD_GET_INFO`: `_IOWR(PIDFS_IOCTL_MAGIC, 11, struct pidfd_info)`.
const PIDFD_GET_INFO: rustix::ioctl::Opcode =
    opcode::read_write::<PidfdInfo>(PIDFS_IOCTL_MAGIC, 11);

/// `PIDFD_INFO_CGROUPID`: `cgroupid` is filled (`1 << 0` is
/// `PIDFD_INFO_PID`, which the kernel always sets).
const PIDFD_INFO_CGROUPID: u64 = 1 << 2;

/// `PIDFD_INFO_CREDS`: the credential fields are filled.
const PIDFD_INFO_CREDS: u64 = 1 << 1;

/// What the pidfd says of its process's effective credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Creds {
    /// Running with these effective ids.
    Running {
        /// Effective user id.
        uid: u32,
        /// Effective group id.
        gid: u32,
        /// The id of its cgroup in the unified (v2) hierarchy, which is the
        /// inode number of that cgroup's directory, if the kernel gave it.
        cgroup_id: Option<u64>,
    },
    /// The process is gone.
    Exited,
    /// This kernel cannot tell (older than 6.13): read `/proc` instead.
    Unknown,
}

/// The effective uid and gid of the process of `pidfd`, and its cgroup v2
/// id, in one `ioctl`.
pub fn effective_ids(pidfd: BorrowedFd<'_>) -> Creds {
    let mut info = PidfdInfo {
        mask: PIDFD_INFO_CREDS | PIDFD_INFO_CGROUPID,
        ..PidfdInfo::default()
    };
    // SAFETY: PIDFD_GET_INFO takes a pointer to a `struct pidfd_info` of
    // the size encoded in the request, which `PidfdInfo` mirrors field for
    // field (`repr(C)`, 64 bytes); the kernel writes at most that many
    // bytes into it and keeps no pointer after the call.
    #[allow(unsafe_code)]
    let result = unsafe {
        ioctl(
            pidfd,
            Updater::<'_, PIDFD_GET_INFO, PidfdInfo>::new(&mut info),
        )
    };
    match result {
        Ok(()) if info.mask & PIDFD_INFO_CREDS != 0 => Creds::Running {
            uid: info.euid,
            gid: info.egid,
            cgroup_id: (info.mask & PIDFD_INFO_CGROUPID != 0).then_some(info.cgroupid),
        },
        Ok(()) => Creds::Unknown,
        Err(Errno::SRCH) => Creds::Exited,
        Err(_) => Creds::Unknown,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::os::fd::AsFd;

    use rustix::process::{PidfdFlags, getpid, pidfd_open};

    use super::*;

    /// The inode of this process's cgroup directory on the first cgroup2
    /// mount (the unified hierarchy, v2-only or hybrid).
    fn own_cgroup_inode() -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let path = cgroup
            .lines()
            .find_map(|line| line.strip_prefix("0::"))
            .expect("a unified cgroup line");
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        // The first mount of the hierarchy's root (fields: id, parent,
        // device, root, mount point).
        let mount = mountinfo
            .lines()
            .find(|line| {
                line.split_once(" - ")
                    .is_some_and(|(_, fs)| fs.starts_with("cgroup2 "))
                    && line.split(' ').nth(3) == Some("/")
            })
            .and_then(|line| line.split(' ').nth(4))
            .expect("a cgroup2 mount of the hierarchy's root");
        let dir = format!("{mount}{}", path.trim_end_matches('/'));
        std::fs::metadata(&dir).unwrap().ino()
    }

    #[test]
    fn the_struct_is_the_kernels_first_version() {
        assert_eq!(size_of::<PidfdInfo>(), 64);
    }

    #[test]
    fn reads_our_own_ids_and_sees_an_exit() {
        let ours = pidfd_open(getpid(), PidfdFlags::empty()).unwrap();
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut version = release
            .split(['.', '-'])
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (version.next().unwrap(), version.next().unwrap());
        if (major, minor) < (6, 13) {
            // The reuse check reads /proc/<pid>/status instead.
            assert_eq!(effective_ids(ours.as_fd()), Creds::Unknown, "{release}");
            return;
        }
        let expected = Creds::Running {
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            cgroup_id: Some(own_cgroup_inode()),
        };
        assert_eq!(effective_ids(ours.as_fd()), expected, "{release}");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
        let pidfd = pidfd_open(pid, PidfdFlags::empty()).unwrap();
        child.wait().unwrap();
        assert_eq!(effective_ids(pidfd.as_fd()), Creds::Exited);
    }
}
