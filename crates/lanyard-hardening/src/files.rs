//! File modes that do not depend on the umask the process was started with.

use std::{
    fs::{self, DirBuilder, Permissions},
    io,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
};

use rustix::fs::Mode;

/// Bits the daemons never grant through the umask: group and other.
const PRIVATE_UMASK: u32 = 0o077;

/// Adds group and other to the process umask (keeping any bit already in
/// it) and returns the previous umask. Called by the daemons at start,
/// while they are still single-threaded: every file and directory they or
/// their libraries (sled included, which creates `blobs/` and snapshot
/// files itself) create is then at most owner-only, even for the instant
/// between creation and an explicit `chmod`. Modes wider than that (the
/// agent's 0777 socket, a 0660 admin socket) are set explicitly.
pub fn restrict_umask() -> u32 {
    let old = rustix::process::umask(Mode::from_bits_truncate(PRIVATE_UMASK));
    let old = old.bits();
    rustix::process::umask(Mode::from_bits_truncate(old | PRIVATE_UMASK));
    old
}

/// Creates `dir` and its missing ancestors, each with exactly `mode`
/// whatever the umask (a umask can only narrow a mode, so each created
/// directory is set to `mode` again). Existing directories are left as
/// they are. Returns the directories created, outermost first.
pub fn create_dir_exact(dir: &Path, mode: u32) -> io::Result<Vec<PathBuf>> {
    let mut missing: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && fs::symlink_metadata(a).is_err())
        .map(Path::to_path_buf)
        .collect();
    missing.reverse();
    if missing.is_empty() {
        return Ok(missing);
    }
    DirBuilder::new().recursive(true).mode(mode).create(dir)?;
    for created in &missing {
        fs::set_permissions(created, Permissions::from_mode(mode))?;
    }
    Ok(missing)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn created_directories_get_exactly_the_mode_existing_ones_are_kept() {
        let tmp = tempfile::tempdir().unwrap();
        fs::set_permissions(tmp.path(), Permissions::from_mode(0o755)).unwrap();
        let deep = tmp.path().join("a/b/c");
        let created = create_dir_exact(&deep, 0o750).unwrap();
        assert_eq!(
            created,
            [tmp.path().join("a"), tmp.path().join("a/b"), deep.clone()]
        );
        for d in &created {
            assert_eq!(mode(d), 0o750, "{}", d.display());
        }
        assert_eq!(mode(tmp.path()), 0o755);
        assert!(create_dir_exact(&deep, 0o700).unwrap().is_empty());
        assert_eq!(mode(&deep), 0o750);
    }
}
