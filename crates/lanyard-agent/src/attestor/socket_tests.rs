#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::{PermissionsExt, symlink};

use super::*;

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

#[tokio::test]
async fn creates_missing_directories_and_a_world_connectable_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/lanyard/agent/api.sock");
    let listener = bind_socket(&path).unwrap();

    assert_eq!(mode(&dir.path().join("run")), 0o755);
    assert_eq!(mode(&dir.path().join("run/lanyard/agent")), 0o755);
    assert!(fs::symlink_metadata(&path).unwrap().file_type().is_socket());
    assert_eq!(mode(&path), 0o777);

    let client = tokio::net::UnixStream::connect(&path).await.unwrap();
    let (_server, _) = listener.accept().await.unwrap();
    drop(client);
}

#[tokio::test]
async fn existing_directory_keeps_its_mode() {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), Permissions::from_mode(0o700)).unwrap();
    let _listener = bind_socket(&dir.path().join("api.sock")).unwrap();
    assert_eq!(mode(dir.path()), 0o700);
}

#[tokio::test]
async fn refuses_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("elsewhere.sock");
    let path = dir.path().join("api.sock");
    // Dangling: binding would create the target through the link.
    symlink(&target, &path).unwrap();
    let error = bind_socket(&path).unwrap_err();
    assert!(
        matches!(&error, AttestError::SocketIsSymlink { path: p } if *p == path),
        "{error:?}"
    );
    assert!(error.to_string().contains("symbolic link"));
    assert!(!target.exists());

    // To a real (stale) socket: still refused, and neither is removed.
    drop(std::os::unix::net::UnixListener::bind(&target).unwrap());
    let error = bind_socket(&path).unwrap_err();
    assert!(
        matches!(error, AttestError::SocketIsSymlink { .. }),
        "{error:?}"
    );
    assert!(
        fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        fs::symlink_metadata(&target)
            .unwrap()
            .file_type()
            .is_socket()
    );
}

#[tokio::test]
async fn refuses_a_regular_file_and_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("api.sock");
    fs::write(&file, b"not a socket").unwrap();
    let error = bind_socket(&file).unwrap_err();
    assert!(matches!(error, AttestError::NotASocket { .. }), "{error:?}");
    assert!(error.to_string().contains("is not a socket"));
    assert_eq!(fs::read(&file).unwrap(), b"not a socket");

    let subdir = dir.path().join("dir.sock");
    fs::create_dir(&subdir).unwrap();
    let error = bind_socket(&subdir).unwrap_err();
    assert!(matches!(error, AttestError::NotASocket { .. }), "{error:?}");
}

#[tokio::test]
async fn replaces_a_stale_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.sock");
    // An agent that died without removing its socket.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(fs::symlink_metadata(&path).unwrap().file_type().is_socket());

    let listener = bind_socket(&path).unwrap();
    assert_eq!(mode(&path), 0o777);
    let _client = tokio::net::UnixStream::connect(&path).await.unwrap();
    listener.accept().await.unwrap();
}

#[tokio::test]
async fn refuses_a_socket_another_agent_serves() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.sock");
    let first = bind_socket(&path).unwrap();
    let error = bind_socket(&path).unwrap_err();
    assert!(
        matches!(error, AttestError::SocketInUse { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("another agent is serving"));

    // The first agent still serves.
    let _client = tokio::net::UnixStream::connect(&path).await.unwrap();
    first.accept().await.unwrap();
}

#[tokio::test]
async fn follows_a_symlinked_parent_directory() {
    // Documented choice: only the last component is checked (/var/run is
    // commonly a link to /run).
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("run");
    fs::create_dir(&real).unwrap();
    symlink(&real, dir.path().join("var-run")).unwrap();
    let _listener = bind_socket(&dir.path().join("var-run/api.sock")).unwrap();
    assert!(
        fs::symlink_metadata(real.join("api.sock"))
            .unwrap()
            .file_type()
            .is_socket()
    );
}
