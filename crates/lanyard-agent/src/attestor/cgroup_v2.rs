//! The cgroup part of the reuse check on a host with cgroup v2 alone.
//!
//! There `/proc/<pid>/cgroup` is the single line `0::<path>`, and a cgroup
//! v2 directory cannot be renamed (the unified hierarchy has no rename), so
//! the cgroup's id, which is its directory's inode number, stands for its
//! path for as long as it exists. The pidfd gives that id in the same
//! `ioctl` as the credentials ([`lanyard_pidfd`]): the check then needs no
//! read of `/proc/<pid>/cgroup`, whose generation takes the kernel's global
//! `css_set_lock`, and the connection keeps no descriptor open for it.
//!
//! A full attestation ties the id to the text it read: it looks up the
//! directory of that path under the cgroup2 mount and uses its inode only
//! if the process's id, asked afterwards, is that inode. With cgroup v1
//! hierarchies too (a hybrid host), whose cgroups can be renamed and which
//! a process can change independently, the text is read every time.
//!
//! One difference remains: were a v1 hierarchy mounted on a v2-only host
//! while the agent runs, a record made before would not see the new line
//! its caller's `/proc/<pid>/cgroup` gains, and keep serving selectors
//! without that `cgroup:path` until the caller's next full attestation.
//! Fewer selectors can only match fewer entries, so it grants nothing.

use std::{
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    path::PathBuf,
    sync::OnceLock,
};

/// The path of the text's only cgroup when it names the unified hierarchy
/// alone (`0::<path>`, as on a host with cgroup v2 only).
///
/// A path outside the agent's cgroup namespace (`/../x`) or of a removed
/// cgroup (` (deleted)`) is not taken: it names no directory under the
/// mount.
pub(super) fn unified_only(cgroup: &str) -> Option<&str> {
    let mut lines = cgroup.lines().filter(|line| !line.is_empty());
    let path = lines.next()?.strip_prefix("0::")?;
    let plain = path.starts_with('/')
        && !path.ends_with(" (deleted)")
        && !path.split('/').any(|part| part == "." || part == "..");
    (lines.next().is_none() && plain).then_some(path)
}

/// The inode of the directory of the unified cgroup `path` (a
/// `/proc/<pid>/cgroup` path, relative to the agent's cgroup namespace),
/// which is that cgroup's id. `None` without a cgroup2 mount of the
/// namespace's root, or if the directory is gone.
///
/// The path is looked up under the mount's root directory as it was found
/// first, held open: a mount made over it later (of another cgroup2
/// sub-tree, say) cannot make a path name another cgroup's directory.
/// [`unified_only`] leaves no `..` that could climb out of it.
pub(super) fn id_of(path: &str) -> Option<u64> {
    use rustix::fs::{AtFlags, StatxFlags, statx};
    let root = unified_root()?;
    let relative = path.trim_start_matches('/');
    let flags = if relative.is_empty() {
        AtFlags::EMPTY_PATH
    } else {
        AtFlags::SYMLINK_NOFOLLOW
    };
    statx(root, relative, flags, StatxFlags::INO)
        .ok()
        .filter(|s| StatxFlags::from_bits_retain(s.stx_mask).contains(StatxFlags::INO))
        .map(|s| s.stx_ino)
}

/// `CGROUP2_SUPER_MAGIC` of `linux/magic.h`.
const CGROUP2_SUPER_MAGIC: rustix::fs::FsWord = 0x6367_7270;

/// The root directory of the unified hierarchy's mount in the agent's
/// mount namespace, found and opened once (`O_PATH`), and checked to be
/// cgroup2 through that descriptor.
fn unified_root() -> Option<BorrowedFd<'static>> {
    use rustix::fs::{Mode, OFlags, fstatfs, open};
    static ROOT: OnceLock<Option<OwnedFd>> = OnceLock::new();
    ROOT.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let mount = cgroup2_root_mount(&text)?;
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let root = open(&mount, flags, Mode::empty()).ok()?;
        // What mountinfo says is mounted there is what was opened.
        fstatfs(&root)
            .is_ok_and(|fs| fs.f_type == CGROUP2_SUPER_MAGIC)
            .then_some(root)
    })
    .as_ref()
    .map(AsFd::as_fd)
}

/// The mount point of the first cgroup2 mount of the hierarchy's root
/// (`root` field `/`) in `mountinfo` text. Mount points with escaped
/// characters are passed over.
pub(super) fn cgroup2_root_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // "id parent major:minor root mount-point options ... - fstype ..."
        let (fields, rest) = line.split_once(" - ")?;
        if rest.split(' ').next()? != "cgroup2" {
            return None;
        }
        let mut fields = fields.split(' ').skip(3);
        let (root, mount) = (fields.next()?, fields.next()?);
        (root == "/" && !mount.contains('\\')).then(|| PathBuf::from(mount))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn only_a_lone_unified_line_counts() {
        assert_eq!(
            unified_only("0::/system.slice/payments.service\n"),
            Some("/system.slice/payments.service")
        );
        assert_eq!(unified_only("0::/\n"), Some("/"));
        assert_eq!(unified_only("0::/a:b\n\n"), Some("/a:b"));
        for hybrid in [
            "1:name=systemd:/\n0::/\n",
            "0::/\n4:memory:/a\n",
            "3:cpu:/a\n",
            "",
            "0::relative\n",
            "0::/../../other.slice\n",
            "0::/a/./b\n",
            "0::/gone (deleted)\n",
            "garbage\n",
        ] {
            assert_eq!(unified_only(hybrid), None, "{hybrid:?}");
        }
    }

    #[test]
    fn finds_the_cgroup2_mount_of_the_root() {
        let mountinfo = "\
22 1 0:21 / /proc rw,nosuid - proc proc rw
30 25 0:26 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
31 25 0:27 /inner /sys/fs/cgroup/nested rw,relatime - cgroup2 cgroup2 rw
32 25 0:27 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw
";
        assert_eq!(
            cgroup2_root_mount(mountinfo),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            cgroup2_root_mount("30 25 0:26 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"),
            None
        );
    }

    /// The id of this process's unified cgroup, asked of its pidfd, is the
    /// inode `id_of` finds for the path `/proc/self/cgroup` names.
    #[test]
    fn a_path_maps_to_the_id_the_pidfd_reports() {
        use rustix::process::{PidfdFlags, getpid, pidfd_open};
        use std::os::fd::AsFd as _;
        let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let path = cgroup
            .lines()
            .find_map(|line| line.strip_prefix("0::"))
            .expect("a unified cgroup line");
        let pidfd = pidfd_open(getpid(), PidfdFlags::empty()).unwrap();
        let lanyard_pidfd::Creds::Running { cgroup_id, .. } =
            lanyard_pidfd::effective_ids(pidfd.as_fd())
        else {
            panic!("PIDFD_GET_INFO needs Linux 6.13");
        };
        assert_eq!(id_of(path), cgroup_id);
        assert!(cgroup_id.is_some());
    }
}
