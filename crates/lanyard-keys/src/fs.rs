//! Durable, permission-safe file writes for key material.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};

use crate::error::KeyError;

/// Writes `bytes` to `path` atomically and durably, with permission bits
/// `mode` whatever the process umask.
///
/// The data goes to a fresh temporary file in the same directory, created
/// with `mode` (and set to `mode` again explicitly, since the umask can only
/// narrow the creation mode), is flushed to disk, and is then renamed over
/// `path`; finally the directory itself is synced so the rename survives a
/// crash. Readers see either the old file or the new one, never a partial
/// write, and the file is never readable with wider permissions than `mode`.
pub fn write_file_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let dir = parent_dir(path);
    let file_name = path
        .file_name()
        .ok_or_else(|| {
            KeyError::io(
                "write",
                path,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name"),
            )
        })?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(".{file_name}.{}.tmp", random_suffix()?));

    let result = write_temp(&tmp, bytes, mode).and_then(|()| {
        fs::rename(&tmp, path).map_err(|e| KeyError::io("rename into place", path, e))
    });
    if result.is_err() {
        // Best effort: the temp file holds a copy of the data, don't leave it behind.
        let _ = fs::remove_file(&tmp);
        return result;
    }
    sync_dir(&dir)
}

/// Creates `dir` (and its parents) if missing; a directory created here gets mode 0700.
pub fn ensure_private_dir(dir: &Path) -> Result<(), KeyError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| KeyError::io("create directory", dir, e))
}

fn write_temp(tmp: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)
        .map_err(|e| KeyError::io("create", tmp, e))?;
    // The umask may have narrowed `mode` but never widened it; set it exactly.
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(|e| KeyError::io("set permissions of", tmp, e))?;
    file.write_all(bytes)
        .map_err(|e| KeyError::io("write", tmp, e))?;
    file.sync_all().map_err(|e| KeyError::io("fsync", tmp, e))
}

fn sync_dir(dir: &Path) -> Result<(), KeyError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| KeyError::io("fsync directory", dir, e))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn random_suffix() -> Result<String, KeyError> {
    let mut bytes = [0u8; 8];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| KeyError::Generation {
            algorithm: "random file name",
            reason: "system random source failed".into(),
        })?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn writes_with_exact_mode_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pem");
        write_file_atomic(&path, b"one", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );

        // An existing wider file is replaced by a 0600 one.
        fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        write_file_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );

        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("k.pem")]);
    }

    #[test]
    fn error_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("k.pem");
        let err = write_file_atomic(&path, b"x", 0o600).unwrap_err();
        assert!(err.to_string().contains("missing-dir"), "{err}");
    }
}
