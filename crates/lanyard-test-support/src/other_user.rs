//! Running a binary as a non-root user, and reading what the kernel shows
//! of it in `/proc`. Used where root would hide the difference (root owns
//! everything in `/proc` it looks at, dumpable or not).

use std::{
    os::unix::{fs::MetadataExt, process::CommandExt},
    path::Path,
    process::{Child, Command, Stdio},
};

/// The uid and gid a root test drops to: `nobody`.
pub const NOBODY: u32 = 65534;

/// Whether the tests run as root (CI does).
pub fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").unwrap().uid() == 0
}

/// Gives `dir` and everything under it to `nobody`, so a process running
/// as `nobody` can use it. Only as root; a no-op otherwise.
pub fn give_to_nobody(dir: &Path) {
    if !running_as_root() {
        return;
    }
    std::os::unix::fs::chown(dir, Some(NOBODY), Some(NOBODY)).unwrap();
    if dir.is_dir() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() && !path.is_symlink() {
                give_to_nobody(&path);
            } else {
                std::os::unix::fs::lchown(&path, Some(NOBODY), Some(NOBODY)).unwrap();
            }
        }
    }
}

/// Spawns `cmd` as `nobody` when the tests run as root (as the current
/// user otherwise), stderr to `log`.
pub fn spawn_as_non_root(mut cmd: Command, log: &Path) -> Child {
    if running_as_root() {
        cmd.uid(NOBODY).gid(NOBODY);
    }
    cmd.stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// The uid owning `/proc/PID/status`: the process's uid while it is
/// dumpable, root once it is not (proc(5), PR_SET_DUMPABLE).
pub fn proc_owner(pid: u32) -> u32 {
    std::fs::metadata(format!("/proc/{pid}/status"))
        .unwrap()
        .uid()
}

/// The process's real uid, from the `Uid:` line of `/proc/PID/status`.
pub fn proc_uid(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap()
}
