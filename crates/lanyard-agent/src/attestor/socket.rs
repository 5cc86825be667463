//! Binding the Workload API socket.
//!
//! Only the last component of the path is checked for a symbolic link; its
//! parent directories are followed. Distributions commonly make `/var/run` a
//! link to `/run`, and a parent that an attacker could swap is already under
//! their control (the agent's socket directory is its own, root-owned,
//! 0755), so refusing linked parents would break real setups for no gain.

use std::{
    fs::{self, DirBuilder, Permissions},
    io,
    os::{
        fd::AsRawFd,
        unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt},
    },
    path::Path,
};

use rustix::fs::{Mode, OFlags};
use tokio::net::UnixListener;

use super::error::AttestError;

/// Mode of the directories created for the socket.
const DIR_MODE: u32 = 0o755;
/// Mode of the socket: anyone may connect, attestation decides what they get.
const SOCKET_MODE: u32 = 0o777;

/// Binds the Workload API socket at `path`.
///
/// Creates missing parent directories (0755), refuses a symbolic link at
/// the path or anything that is not a socket, removes a stale socket (one
/// nobody accepts on), refuses a socket another process is serving, binds,
/// and sets mode 0777: the socket is world-connectable because attestation,
/// not file mode, decides access. Must be called within a Tokio runtime.
///
/// # Errors
///
/// [`AttestError::SocketIsSymlink`], [`AttestError::NotASocket`],
/// [`AttestError::SocketInUse`], or [`AttestError::SocketIo`] naming the
/// step that failed.
pub fn bind_socket(path: &Path) -> Result<UnixListener, AttestError> {
    let io_error = |action: &'static str| {
        move |source: io::Error| AttestError::SocketIo {
            action,
            path: path.to_owned(),
            source,
        }
    };

    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dirs(parent)?;
    }

    match fs::symlink_metadata(path) {
        Ok(metadata) => {
            let file_type = metadata.file_type();
            if file_type.is_symlink() {
                return Err(AttestError::SocketIsSymlink {
                    path: path.to_owned(),
                });
            }
            if !file_type.is_socket() {
                return Err(AttestError::NotASocket {
                    path: path.to_owned(),
                });
            }
            remove_if_stale(path)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("inspect the Workload API socket path")(e)),
    }

    let listener = UnixListener::bind(path).map_err(|source| {
        if source.kind() == io::ErrorKind::AddrInUse {
            // Someone bound it between our check and our bind.
            AttestError::SocketInUse {
                path: path.to_owned(),
            }
        } else {
            io_error("bind the Workload API socket at")(source)
        }
    })?;
    if let Err(source) = make_world_connectable(path) {
        // Do not leave behind a socket with the wrong mode.
        let _ = fs::remove_file(path);
        return Err(io_error("set mode 0777 on the Workload API socket")(source));
    }
    tracing::info!(path = %path.display(), "Workload API socket bound");
    Ok(listener)
}

/// Creates `dir` and its missing ancestors with mode 0755 (exactly: the
/// umask is not applied to directories we create).
fn create_dirs(dir: &Path) -> Result<(), AttestError> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && fs::symlink_metadata(a).is_err())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let io_error = |path: &Path| {
        let path = path.to_owned();
        move |source| AttestError::SocketIo {
            action: "create the Workload API socket directory",
            path,
            source,
        }
    };
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(io_error(dir))?;
    for created in missing {
        fs::set_permissions(created, Permissions::from_mode(DIR_MODE))
            .map_err(io_error(created))?;
        tracing::info!(path = %created.display(), "created directory for the Workload API socket");
    }
    Ok(())
}

/// Removes the socket at `path` if nobody accepts connections on it (left
/// behind by an agent that did not shut down cleanly).
fn remove_if_stale(path: &Path) -> Result<(), AttestError> {
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(AttestError::SocketInUse {
            path: path.to_owned(),
        }),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
            ) =>
        {
            match fs::remove_file(path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed stale Workload API socket");
                    Ok(())
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(AttestError::SocketIo {
                    action: "remove the stale Workload API socket",
                    path: path.to_owned(),
                    source,
                }),
            }
        }
        Err(source) => Err(AttestError::SocketIo {
            action: "check whether another agent serves on",
            path: path.to_owned(),
            source,
        }),
    }
}

/// `chmod 0777` the socket we just bound, without following a symbolic link
/// that might have replaced it: open the path itself (`O_PATH|O_NOFOLLOW`),
/// check that it is a socket, and change the mode of that very inode
/// through its `/proc/self/fd` link.
fn make_world_connectable(path: &Path) -> io::Result<()> {
    let fd = rustix::fs::open(
        path,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let metadata = fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    if !metadata.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path no longer names the socket just bound",
        ));
    }
    fs::set_permissions(
        format!("/proc/self/fd/{}", fd.as_raw_fd()),
        Permissions::from_mode(SOCKET_MODE),
    )
}

#[cfg(test)]
#[path = "socket_tests.rs"]
mod tests;
