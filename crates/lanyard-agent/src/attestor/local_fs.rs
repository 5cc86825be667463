//! Which filesystems answer `stat` without waiting on anyone.
//!
//! The check that lets a call reuse its connection's last attestation
//! ([`reuse`](super::reuse)) `stat`s the caller's binary and the account
//! files. It runs on the request's own runtime thread, not on a blocking
//! thread under the attestation deadline, only when both live on a
//! filesystem of [`LOCAL`]: disk and memory filesystems whose `stat` reads
//! the inode in the kernel. A network filesystem (NFS, SMB, Ceph, 9p) may
//! ask a server that stalls, and FUSE asks a daemon that may be the
//! caller's own; a binary there keeps the blocking path.
//!
//! Overlayfs passes `stat` to its layers. Its `stat` is made with
//! `AT_STATX_DONT_SYNC`, so a FUSE layer answers from the kernel's cache
//! without asking its daemon. A lower layer on NFS, which only an
//! administrator can mount, could still make the check wait.

use std::{os::fd::AsFd, path::Path};

/// `f_type` of the filesystems the reuse check may `stat` inline.
const LOCAL: &[(i64, &str)] = &[
    (0xEF53, "ext2/ext3/ext4"),
    (0x5846_5342, "xfs"),
    (0x9123_683E, "btrfs"),
    (0x0102_1994, "tmpfs"),
    (0x8584_58F6, "ramfs"),
    (0x7371_7368, "squashfs"),
    (0xE0F5_E1E2, "erofs"),
    (0xF2F5_2010, "f2fs"),
    (0x2FC1_2FC1, "zfs"),
    (0x794C_7630, "overlayfs"),
];

/// Whether `f_type` is one of [`LOCAL`].
fn is_local(f_type: i64) -> bool {
    LOCAL.iter().any(|(magic, _)| *magic == f_type)
}

// `f_type` is an `i64` on 64-bit targets and narrower on others.
#[allow(clippy::useless_conversion)]
fn f_type(fs: &rustix::fs::StatFs) -> i64 {
    i64::from(fs.f_type)
}

/// Whether the open file `fd` is on a local filesystem.
pub(super) fn fd_is_local(fd: impl AsFd) -> bool {
    rustix::fs::fstatfs(fd).is_ok_and(|fs| is_local(f_type(&fs)))
}

/// Whether `path` is on a local filesystem (`true` if it does not exist:
/// there is nothing to wait for).
pub(super) fn path_is_local(path: &Path) -> bool {
    match rustix::fs::statfs(path) {
        Ok(fs) => is_local(f_type(&fs)),
        Err(rustix::io::Errno::NOENT) => true,
        Err(_) => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn proc_and_sockets_are_not_taken_for_local_disks() {
        // procfs is neither a disk nor memory filesystem of the list.
        assert!(!path_is_local(Path::new("/proc/self/status")));
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(!fd_is_local(&a));
        assert!(path_is_local(Path::new("/nonexistent/lanyard")));
    }

    #[test]
    fn memory_filesystems_are_local() {
        // /dev/shm is tmpfs on every Linux host (POSIX shared memory).
        assert!(path_is_local(Path::new("/dev/shm")));
        let shm = std::fs::File::open("/dev/shm").unwrap();
        assert!(fd_is_local(&shm));
        assert!(is_local(0xEF53) && is_local(0x794C_7630) && !is_local(0x6969));
        // NFS, FUSE and 9p are not.
        for remote in [0x6969, 0x6573_5546, 0x0102_1997] {
            assert!(!is_local(remote), "{remote:#x}");
        }
    }
}
