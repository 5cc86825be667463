//! Running a binary outside the `Server` / `Agent` harness: under a given
//! umask, killed when the test ends, ready when a check passes.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::READY_WITHIN;

/// A child process killed (and reaped) when the test ends, passing or not.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `cmd` run through `sh -c 'umask MASK; exec ...'`: the umask is the
/// child's own, the test process's is left alone.
pub fn under_umask(cmd: &Command, mask: u32) -> Command {
    under_shell(cmd, &format!("umask {mask:03o}"))
}

/// `cmd` run through `sh -c 'ulimit -n N; exec ...'`: at most `n` open
/// descriptors for the child alone.
pub fn under_fd_limit(cmd: &Command, n: u32) -> Command {
    under_shell(cmd, &format!("ulimit -n {n}"))
}

/// `cmd` exec'd by `sh -c` after `prelude`, which changes only the child.
fn under_shell(cmd: &Command, prelude: &str) -> Command {
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg(format!("{prelude} && exec \"$0\" \"$@\""))
        .arg(cmd.get_program())
        .args(cmd.get_args());
    sh
}

/// Spawns `cmd`, stderr to `log`.
pub fn spawn_logged(mut cmd: Command, log: &Path) -> Killed {
    Killed(
        cmd.stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// Waits up to [`READY_WITHIN`] for `ready`; fails with the log if the child
/// exits.
pub fn wait_until(what: &str, child: &mut Killed, log: &Path, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + READY_WITHIN;
    while !ready() {
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!(
                "{what} exited early ({status}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{what} not ready in {READY_WITHIN:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every path under `dir` (itself included) with its permission bits.
pub fn modes_under(dir: &Path) -> Vec<(PathBuf, u32, bool)> {
    let meta = std::fs::symlink_metadata(dir).unwrap();
    let mut out = vec![(
        dir.to_path_buf(),
        meta.permissions().mode() & 0o7777,
        meta.is_dir(),
    )];
    if meta.is_dir() {
        for entry in std::fs::read_dir(dir).unwrap() {
            out.extend(modes_under(&entry.unwrap().path()));
        }
    }
    out
}
