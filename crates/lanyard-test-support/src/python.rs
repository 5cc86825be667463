//! Calls made with Python's grpcio (gRPC's C core), the client of
//! py-spiffe and of many operators' scripts, from `target/pyenv`.

use std::{
    io::{Read, Write},
    os::unix::net::UnixListener,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

/// The workspace this crate sits in (`crates/lanyard-test-support`): the
/// scripts and Python clients live at its root.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The venv `scripts/python-venv.sh` creates. A fresh clone has none, so
/// the first test to need it runs the script (once per test binary), and
/// `cargo test` works on a new machine as the README promises.
fn python() -> PathBuf {
    static SETUP: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let root = workspace_root();
    let python = root.join("target/pyenv/bin/python");
    let usable = || {
        python.exists()
            && Command::new(&python)
                .args(["-c", "import grpc"])
                .output()
                .is_ok_and(|out| out.status.success())
    };
    let _guard = SETUP.lock().unwrap_or_else(|p| p.into_inner());
    if !usable() {
        let out = Command::new("bash")
            .arg(root.join("scripts/python-venv.sh"))
            .output()
            .expect("run scripts/python-venv.sh");
        assert!(
            out.status.success() && usable(),
            "{} with grpcio is missing and scripts/python-venv.sh could not create it \
             (these tests need a real gRPC C-core client; it needs python3 and PyPI): {}{}",
            python.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    python
}

/// One call of `method` (`unary` or `stream`) with the empty request to
/// `target` by `tests/python/grpc_call.py`, with its extra `args`; returns
/// its JSON answer (`code`, `details`, `responses`, `grpc_version`).
pub fn grpcio_call(target: &str, method: &str, kind: &str, args: &[&str]) -> serde_json::Value {
    let script = workspace_root().join("tests/python/grpc_call.py");
    let out = Command::new(python())
        .arg(script)
        .args([target, method, kind])
        .args(args)
        .output()
        .expect("run tests/python/grpc_call.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "grpc_call.py failed ({}): {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("grpc_call.py said {stdout:?}: {e}"))
}

/// The entries `tests/python/admin_entries.py` lists over the Admin API at
/// `target`, decoded with classes built from `descriptors` (a serialized
/// `FileDescriptorSet`); its JSON answer (`code`, `entry_type`, `entries`).
pub fn grpcio_admin_entries(target: &str, descriptors: &Path) -> serde_json::Value {
    let script = workspace_root().join("tests/python/admin_entries.py");
    let out = Command::new(python())
        .arg(script)
        .arg(target)
        .arg(descriptors)
        .output()
        .expect("run tests/python/admin_entries.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "admin_entries.py failed ({}): {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("admin_entries.py said {stdout:?}: {e}"))
}

/// The first bytes grpcio sends when it calls `target`, captured on a plain
/// socket at `socket` that answers only the HTTP/2 SETTINGS (so the call
/// times out).
pub fn grpcio_first_bytes(socket: &Path, target: &str, method: &str) -> Vec<u8> {
    let listener = UnixListener::bind(socket).unwrap();
    let mut client = Command::new(python())
        .arg(workspace_root().join("tests/python/grpc_call.py"))
        .args([target, method, "unary", "--timeout", "3"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Never block forever on a client that does not connect.
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut conn = loop {
        match listener.accept() {
            Ok((conn, _)) => break conn,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                client.kill().ok();
                client.wait().unwrap();
                panic!("grpcio did not connect to {}: {e}", socket.display());
            }
        }
    };
    conn.set_nonblocking(false).unwrap();
    // The C core sends its request once the server's SETTINGS arrive:
    // empty SETTINGS, then the ACK of the client's.
    conn.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0])
        .unwrap();
    conn.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buf = [0_u8; 4096];
    while Instant::now() < deadline {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    drop(conn);
    client.kill().ok();
    client.wait().unwrap();
    seen
}
