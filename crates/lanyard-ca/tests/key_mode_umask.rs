//! CA key files are 0600 even when the process umask is 000.
//!
//! The umask is per process, so the check runs the CA in a child process
//! (this same test binary, re-executed by `sh -c 'umask 000; exec ...'`)
//! rather than changing the umask of the test harness, whose other threads
//! would race with it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use lanyard_ca::{CaConfig, CertificateAuthority, write_file_atomic};
use lanyard_identity::TrustDomain;

const CHILD_ENV: &str = "LANYARD_CA_UMASK_CHILD_DIR";
const TEST_NAME: &str = "key_files_are_0600_even_with_umask_000";

#[test]
fn key_files_are_0600_even_with_umask_000() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg("umask 000 && exec \"$0\" --exact \"$1\" --test-threads 1 --nocapture")
        .arg(&exe)
        .arg(TEST_NAME)
        .env(CHILD_ENV, dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;

    // The umask really was 000 in the child: a plain file came out 0666.
    assert_eq!(mode(&dir.path().join("control")), 0o666);

    let keys = dir.path().join("keys");
    let key_files: Vec<_> = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    // The CA key and the generation's JWT key.
    assert_eq!(key_files.len(), 2, "{key_files:?}");
    for key in &key_files {
        assert_eq!(mode(key), 0o600, "{}", key.display());
    }
    assert_eq!(mode(&keys), 0o700);
    assert_eq!(mode(&dir.path().join("direct.pem")), 0o600);
}

fn child(dir: &Path) {
    std::fs::write(dir.join("control"), b"x").unwrap();
    let cfg = CaConfig {
        jwt_algorithm: Default::default(),
        trust_domain: TrustDomain::new("example.org").unwrap(),
        ca_ttl: Duration::from_secs(3600),
        key_dir: dir.join("keys"),
        upstream: None,
    };
    CertificateAuthority::load_or_create(cfg, None, SystemTime::now()).unwrap();
    write_file_atomic(&dir.join("direct.pem"), b"secret", 0o600).unwrap();
}
