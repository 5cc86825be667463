//! A new log is created 0600 whatever the umask of the process.
// A failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use lanyard_audit::AuditLog;

const CHILD_ENV: &str = "LANYARD_AUDIT_TEST_CREATE_AT";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Run by `new_logs_are_0600_whatever_the_umask` in a child process whose
/// umask it sets; does nothing when run on its own.
#[test]
#[ignore = "only meaningful in the child process started by new_logs_are_0600_whatever_the_umask"]
fn child_creates_a_log() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let path = Path::new(&path);
    AuditLog::open(path, None).unwrap();
    // A plain file next to it shows which umask the child really had.
    std::fs::write(path.with_extension("probe"), "").unwrap();
}

#[test]
fn new_logs_are_0600_whatever_the_umask() {
    let exe = std::env::current_exe().unwrap();
    for umask in [0o000, 0o022, 0o077, 0o277] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "umask {umask:03o} && exec \"$0\" child_creates_a_log --exact --ignored --quiet"
            ))
            .arg(&exe)
            .env(CHILD_ENV, &path)
            .status()
            .unwrap();
        assert!(status.success(), "child failed under umask {umask:03o}");
        assert_eq!(mode(&path.with_extension("probe")), 0o666 & !umask);
        assert_eq!(mode(&path), 0o600, "under umask {umask:03o}");
    }
}

#[test]
fn an_existing_log_keeps_its_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    std::fs::write(&path, "").unwrap();
    std::fs::set_permissions(&path, Permissions::from_mode(0o640)).unwrap();
    AuditLog::open(&path, None).unwrap();
    assert_eq!(mode(&path), 0o640);
}
