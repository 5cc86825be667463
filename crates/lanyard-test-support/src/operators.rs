//! Operators as distinct Unix users on a server whose admin socket they can
//! reach; the server's task policy decides what each may do. CI runs as
//! root, so each command is started with `CommandExt::uid/gid`.

use std::{
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::Path,
    process::{Command, Output},
};

use super::{Server, bin, exit_code};

pub const ALICE: u32 = 4001; // requester
pub const BOB: u32 = 4002; // approver
pub const CAROL: u32 = 4003; // requester, not an approver
pub const MALLORY: u32 = 4005; // neither

/// A server whose admin socket (in a 0755 directory, mode 0666) other users
/// can reach, with a task policy: ALICE and CAROL request, BOB approves.
pub fn task_server() -> Server {
    operator_server(|_| {
        format!(
            "[tasks]\nmax_ttl = \"1h\"\nbreak_glass_max_ttl = \"5m\"\n\
             requesters = [\"uid:{ALICE}\", \"uid:{CAROL}\"]\napprovers = [\"uid:{BOB}\"]\n"
        )
    })
}

/// A server whose admin socket (in a 0755 directory, mode 0666) other users
/// can reach, configured with what `config` returns; `config` gets the
/// server's own directory to write files the configuration names.
pub fn operator_server(config: impl FnOnce(&Path) -> String) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = dir.path().join("server.toml");
    let body = config(dir.path());
    std::fs::write(&file, format!("admin_socket_mode = \"0666\"\n{body}")).unwrap();
    let mut server = Server::start_with_socket(
        &["--config", file.to_str().unwrap()],
        Some(run.join("admin.sock")),
    );
    server.keep.push(dir);
    server
}

/// Polls `f` every 100 ms until it holds; fails after 20 s with the
/// server's log.
pub fn wait_until(what: &str, server: &Server, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            server.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Runs an operator command as `uid` with primary group `gid`.
pub fn as_member(server: &Server, uid: u32, gid: u32, args: &[&str]) -> Output {
    Command::new(bin("lanyard-server"))
        .arg("--socket")
        .arg(&server.socket)
        .args(args)
        .uid(uid)
        .gid(gid)
        .output()
        .unwrap()
}

/// [`as_member`], which must succeed: its stdout.
pub fn ok_member(server: &Server, uid: u32, gid: u32, args: &[&str]) -> String {
    let out = as_member(server, uid, gid, args);
    assert!(
        out.status.success(),
        "uid {uid} `{}`: {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    String::from_utf8(out.stdout).unwrap()
}

/// [`as_member`], which must be refused (exit 1): its stderr.
pub fn refused_member(server: &Server, uid: u32, gid: u32, args: &[&str]) -> String {
    let out = as_member(server, uid, gid, args);
    assert_eq!(
        exit_code(&out),
        1,
        "uid {uid} `{}` must be refused",
        args.join(" ")
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// [`ok_member`] with `--output json`, parsed.
pub fn json_member(server: &Server, uid: u32, gid: u32, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok_member(server, uid, gid, &all)).unwrap()
}

/// Runs an operator command as `uid` (primary group `uid`).
pub fn as_user(server: &Server, uid: u32, args: &[&str]) -> Output {
    as_member(server, uid, uid, args)
}

/// [`ok_member`] as `uid` (primary group `uid`).
pub fn ok_as(server: &Server, uid: u32, args: &[&str]) -> String {
    ok_member(server, uid, uid, args)
}

/// [`refused_member`] as `uid` (primary group `uid`).
pub fn refused_as(server: &Server, uid: u32, args: &[&str]) -> String {
    refused_member(server, uid, uid, args)
}

/// [`json_member`] as `uid` (primary group `uid`).
pub fn json_as(server: &Server, uid: u32, args: &[&str]) -> serde_json::Value {
    json_member(server, uid, uid, args)
}
