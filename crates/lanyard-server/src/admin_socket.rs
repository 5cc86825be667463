//! Binding the admin socket so that it is never reachable with a mode other
//! than `admin_socket_mode`, not even for an instant.
//!
//! `bind(2)` creates the socket file with `0777 & !umask`, and a `chmod`
//! afterwards leaves a window in which a client could connect with the
//! umask's mode. So the socket is bound in a fresh 0700 directory beside
//! its final path (only the server's user can reach anything in it), given
//! its group and mode there, and then renamed into place
//! (`renameat2(RENAME_NOREPLACE)`, atomic): at its final path it only ever
//! exists with its final mode and group. The daemon's umask (at least 077,
//! see lanyard-hardening) is a second layer, not the one relied on here.

use std::{
    os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
};

use rustix::fs::{CWD, RenameFlags, renameat_with};

use crate::ServerError;

/// Binds the admin socket with `mode` (0600 by default) and, if given, hands
/// it to `group`. A live server on the same socket is an error; a stale
/// socket file is replaced.
pub(crate) fn bind_admin_socket(
    path: &Path,
    mode: u32,
    group: Option<&str>,
) -> Result<tokio::net::UnixListener, ServerError> {
    let gid = group
        .map(|group| {
            crate::accounts::group(group).map(|g| g.gid).ok_or_else(|| {
                ServerError::Config(format!(
                    "admin_socket_group {group:?} is neither a gid nor a group in /etc/group"
                ))
            })
        })
        .transpose()?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // A directory the server creates is 0700, or 0750 and in the group
    // when admin_socket_group is set (its members must reach the socket).
    let dir_mode = if gid.is_some() { 0o750 } else { 0o700 };
    let created = lanyard_hardening::create_dir_exact(&parent, dir_mode)
        .map_err(|e| ServerError::io("cannot create admin socket dir", parent.display(), e))?;
    if let Some(gid) = gid {
        for d in &created {
            std::os::unix::fs::chown(d, None, Some(gid)).map_err(|e| {
                ServerError::io("cannot set admin socket dir group", d.display(), e)
            })?;
        }
    }
    remove_stale(path)?;

    let staging = Staging::create(&parent)?;
    let staged = staging.dir.join("s");
    let listener = tokio::net::UnixListener::bind(&staged)
        .map_err(|e| ServerError::io("cannot bind admin socket", staged.display(), e))?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(&staged, None, Some(gid))
            .map_err(|e| ServerError::io("cannot set admin socket group", path.display(), e))?;
    }
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode))
        .map_err(|e| ServerError::io("cannot set admin socket mode", path.display(), e))?;
    // NOREPLACE: a server that bound the path since `remove_stale` keeps it.
    renameat_with(CWD, &staged, CWD, path, RenameFlags::NOREPLACE).map_err(|e| {
        ServerError::io(
            "cannot move the admin socket into place",
            path.display(),
            e.into(),
        )
    })?;
    tracing::debug!(path = %path.display(), mode = format!("{mode:o}"), "admin socket bound");
    Ok(listener)
}

/// Refuses a non-socket or a live server at `path`; removes a stale socket.
fn remove_stale(path: &Path) -> Result<(), ServerError> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(ServerError::io(
            "refusing to replace non-socket at admin socket path",
            path.display(),
            std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        ));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(ServerError::io(
            "another server is listening on admin socket",
            path.display(),
            std::io::Error::from(std::io::ErrorKind::AddrInUse),
        ));
    }
    std::fs::remove_file(path)
        .map_err(|e| ServerError::io("cannot remove stale admin socket", path.display(), e))
}

/// The private directory the socket is bound in; removed (with whatever is
/// left in it) when dropped. Its name is short: a socket path is limited to
/// 107 bytes, and the staged path is only 6 bytes longer than `<dir>/admin.sock`.
struct Staging {
    dir: PathBuf,
}

impl Staging {
    fn create(parent: &Path) -> Result<Self, ServerError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = parent.join(format!(".bind-{}", &id[..8]));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| {
                ServerError::io("cannot create admin socket staging dir", dir.display(), e)
            })?;
        // Exactly 0700: the umask can only have narrowed it.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
            ServerError::io("cannot set admin socket staging dir mode", dir.display(), e)
        })?;
        Ok(Self { dir })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.dir.join("s"));
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::mem::MaybeUninit;

    use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};

    use super::*;

    /// Every (event, name) the kernel reports in `dir` so far.
    fn events(fd: &rustix::fd::OwnedFd) -> Vec<(ReadFlags, String)> {
        let mut buf = [MaybeUninit::uninit(); 4096];
        let mut reader = inotify::Reader::new(fd, &mut buf);
        let mut out = Vec::new();
        loop {
            match reader.next() {
                Ok(ev) => out.push((
                    ev.events(),
                    ev.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                )),
                Err(rustix::io::Errno::AGAIN) => return out,
                Err(e) => panic!("inotify: {e}"),
            }
        }
    }

    #[tokio::test]
    async fn the_socket_appears_at_its_path_only_by_rename_with_its_final_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("admin.sock");
        let fd = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC).unwrap();
        inotify::add_watch(
            &fd,
            tmp.path(),
            WatchFlags::CREATE | WatchFlags::MOVED_TO | WatchFlags::ATTRIB,
        )
        .unwrap();

        let listener = bind_admin_socket(&path, 0o600, None).unwrap();

        let seen: Vec<_> = events(&fd)
            .into_iter()
            .filter(|(_, name)| name == "admin.sock")
            .collect();
        // Never created (with the umask's mode) nor chmod'ed at its path:
        // moved there once, already 0600.
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(seen[0].0.contains(ReadFlags::MOVED_TO), "{seen:?}");
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // The staging directory is gone, and the socket answers at its path.
        let left: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [std::ffi::OsString::from("admin.sock")]);
        std::os::unix::net::UnixStream::connect(&path).unwrap();
        drop(listener);
    }

    #[tokio::test]
    async fn a_live_server_or_a_non_socket_at_the_path_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("admin.sock");
        let _live = bind_admin_socket(&path, 0o600, None).unwrap();
        let err = bind_admin_socket(&path, 0o600, None).unwrap_err();
        assert!(err.to_string().contains("another server"), "{err}");

        let file = tmp.path().join("not-a-socket");
        std::fs::write(&file, b"x").unwrap();
        let err = bind_admin_socket(&file, 0o600, None).unwrap_err();
        assert!(err.to_string().contains("non-socket"), "{err}");
    }
}
