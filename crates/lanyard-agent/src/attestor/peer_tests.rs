#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use lanyard_identity::Selector;
use tokio::net::{UnixListener, UnixStream};

use super::*;
use crate::attestor::{
    bind_socket,
    test_support::{Caller, Helper, ScratchCgroup, wait_for_zombie, wait_until},
};

fn our_ids() -> (i32, u32, u32) {
    (
        i32::try_from(std::process::id()).unwrap(),
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    )
}

/// A connected socket pair of this process, and the inode of the end that
/// stands for "the caller's end": this process holds it while the pair lives.
fn held_socket() -> (
    std::os::unix::net::UnixStream,
    std::os::unix::net::UnixStream,
    SocketInode,
) {
    let (ours, callers) = std::os::unix::net::UnixStream::pair().unwrap();
    let socket = peer_socket::peer_of(&ours).unwrap();
    (ours, callers, socket)
}

fn selector(text: &str) -> Selector {
    text.parse().unwrap()
}

fn values<'a>(selectors: &'a [Selector], kind: &str, key: &str) -> Vec<&'a str> {
    selectors
        .iter()
        .filter(|s| s.kind == kind && s.key == key)
        .map(|s| s.value.as_str())
        .collect()
}

fn socket_in(dir: &tempfile::TempDir) -> (PathBuf, UnixListener) {
    let path = dir.path().join("agent").join("api.sock");
    let listener = bind_socket(&path).unwrap();
    (path, listener)
}

/// Accepts the next connection and pins its caller.
async fn accept_and_pin(listener: &UnixListener) -> (UnixStream, Result<PeerProcess, AttestError>) {
    let (stream, _) = listener.accept().await.unwrap();
    let pinned = PeerProcess::pin(&stream);
    (stream, pinned)
}

#[tokio::test]
async fn attests_this_process() {
    let dir = tempfile::tempdir().unwrap();
    let (path, listener) = socket_in(&dir);
    let _client = UnixStream::connect(&path).await.unwrap();
    let (_server, pinned) = accept_and_pin(&listener).await;
    let peer = pinned.unwrap();
    let (pid, uid, gid) = our_ids();
    assert_eq!((peer.pid, peer.uid, peer.gid), (pid, uid, gid));

    let selectors = tokio::task::spawn_blocking(move || peer.attest())
        .await
        .unwrap()
        .unwrap();

    assert!(selectors.contains(&selector(&format!("unix:uid:{uid}"))));
    assert!(selectors.contains(&selector(&format!("unix:gid:{gid}"))));
    let exe = std::env::current_exe().unwrap();
    assert_eq!(values(&selectors, "unix", "path"), [exe.to_str().unwrap()]);
    let digest = digest::digest(&digest::SHA256, &fs::read(&exe).unwrap());
    assert_eq!(
        values(&selectors, "unix", "sha256"),
        [hex::encode(digest).as_str()]
    );
    if let Some(user) = users::user_name(uid).unwrap() {
        assert_eq!(values(&selectors, "unix", "user"), [user.as_str()]);
    }
    if let Some(group) = users::group_name(gid).unwrap() {
        assert_eq!(values(&selectors, "unix", "group"), [group.as_str()]);
    }
    let cgroups = procfs::parse_cgroup_paths(&fs::read_to_string("/proc/self/cgroup").unwrap());
    let cgroups: Vec<&str> = cgroups.iter().map(String::as_str).collect();
    assert_eq!(values(&selectors, "cgroup", "path"), cgroups);
}

#[test]
fn oversized_binary_is_not_hashed() {
    let (pid, uid, gid) = our_ids();
    let (_ours, _callers, socket) = held_socket();
    let peer = PeerProcess::pin_pid(pid, uid, gid, socket).unwrap();
    let selectors = peer.attest_with_limit(1024).unwrap();
    assert!(values(&selectors, "unix", "sha256").is_empty());
    assert_eq!(
        values(&selectors, "unix", "uid"),
        [uid.to_string().as_str()]
    );
    assert_eq!(values(&selectors, "unix", "path").len(), 1);
}

#[test]
fn hashing_stops_at_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob");
    fs::write(&path, b"lanyard").unwrap();
    let sha = |cap| sha256_capped(File::open(&path).unwrap(), cap).unwrap();
    let expected = hex::encode(digest::digest(&digest::SHA256, b"lanyard"));
    assert_eq!(sha(7), Some(expected));
    assert_eq!(sha(6), None);
}

#[test]
fn pid_zero_is_refused() {
    assert!(matches!(
        PeerProcess::pin_pid(0, 0, 0, SocketInode(1)),
        Err(AttestError::NoPeerPid)
    ));
}

#[test]
fn changed_credentials_are_refused() {
    // Pretend SO_PEERCRED said another uid: what /proc shows must match it.
    let (pid, uid, gid) = our_ids();
    let (_ours, _callers, socket) = held_socket();
    let peer = PeerProcess::pin_pid(pid, uid.wrapping_add(1), gid, socket).unwrap();
    let error = peer.attest().unwrap_err();
    assert!(
        matches!(error, AttestError::CredentialsChanged { pid: p, uid: u, .. } if p == pid && u == uid),
        "{error:?}"
    );
    assert!(error.to_string().contains(&pid.to_string()));
}

#[tokio::test]
async fn caller_that_exits_before_attestation_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, listener) = socket_in(&dir);
    let mut caller = Helper::connect(&path, Caller::WaitThenExit).unwrap();
    let (_server, pinned) = accept_and_pin(&listener).await;
    let peer = pinned.unwrap();
    assert_eq!(peer.pid, caller.pid());

    caller.release().unwrap();
    // Exited but not reaped: /proc/<pid> still exists, the pid is not free.
    wait_for_zombie(caller.pid()).unwrap();
    let error = peer.attest().unwrap_err();
    assert!(
        matches!(error, AttestError::ProcessExited { pid } if pid == caller.pid()),
        "{error:?}"
    );

    // Reaped: the pid is free for reuse.
    caller.child.wait().unwrap();
    let error = peer.attest().unwrap_err();
    assert!(
        matches!(error, AttestError::ProcessExited { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn child_holding_an_exited_parents_connection_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, listener) = socket_in(&dir);
    let mut parent = Helper::connect(&path, Caller::HandOffThenExit).unwrap();
    let (mut server, pinned) = accept_and_pin(&listener).await;
    // SO_PEERCRED names the process that connected: the parent.
    let peer = pinned.unwrap();
    assert_eq!(peer.pid, parent.pid());

    parent.release().unwrap();
    parent.child.wait().unwrap();

    // The connection lives on in the child ...
    use tokio::io::AsyncWriteExt;
    server.write_all(b"still open").await.unwrap();
    // ... but the identity was the parent's, and the parent is gone.
    let error = peer.attest().unwrap_err();
    assert!(
        matches!(error, AttestError::ProcessExited { pid } if pid == parent.pid()),
        "{error:?}"
    );
    // Pinning the same connection again now fails too.
    let error = PeerProcess::pin(&server).unwrap_err();
    assert!(
        matches!(error, AttestError::ProcessExited { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn caller_that_handed_its_connection_on_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, listener) = socket_in(&dir);
    // The caller connects, gives the connection to a child and closes its
    // own copy, and stays alive: the child (a relay) would be asking.
    let parent = Helper::connect(&path, Caller::HandOffThenExit).unwrap();
    let (_server, pinned) = accept_and_pin(&listener).await;
    let peer = pinned.unwrap();
    assert_eq!(peer.pid, parent.pid());
    let error = peer.attest().unwrap_err();
    assert!(
        matches!(&error, AttestError::ConnectionNotHeld { pid, socket } if *pid == parent.pid() && socket.starts_with("socket:[")),
        "{error:?}"
    );
}

#[tokio::test]
async fn caller_gone_before_accept_cannot_be_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let (path, listener) = socket_in(&dir);

    // A zombie: pidfd_open still succeeds, but the process has exited.
    let mut zombie = Helper::connect(&path, Caller::Exit).unwrap();
    wait_for_zombie(zombie.pid()).unwrap();
    let (_server, pinned) = accept_and_pin(&listener).await;
    let error = pinned.unwrap_err();
    assert!(
        matches!(error, AttestError::ProcessExited { pid } if pid == zombie.pid()),
        "{error:?}"
    );
    zombie.child.wait().unwrap();

    // Reaped: no such process at all.
    let mut reaped = Helper::connect(&path, Caller::Exit).unwrap();
    reaped.child.wait().unwrap();
    let (_server, pinned) = accept_and_pin(&listener).await;
    let error = pinned.unwrap_err();
    assert!(
        matches!(error, AttestError::ProcessExited { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn caller_that_execs_another_binary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, listener) = socket_in(&dir);
    let mut caller = Helper::connect(&path, Caller::WaitThenExecCat).unwrap();
    let (_server, pinned) = accept_and_pin(&listener).await;
    let peer = pinned.unwrap();

    caller.release().unwrap();
    let pid = caller.pid();
    wait_until(|| procfs::exe_id(pid).is_ok_and(|exe| exe != peer.exe)).unwrap();
    let error = peer.attest().unwrap_err();
    assert!(
        matches!(error, AttestError::BinaryChanged { pid: p, .. } if p == pid),
        "{error:?}"
    );
    caller.close_stdin();
}

/// Two calls on one connection with an exec in between: the second is
/// never answered from the first one's selectors, whether exec closed the
/// connection or the new binary kept it: it is refused (the pinned binary
/// changed) or, at most, given the new binary's own selectors.
#[tokio::test]
async fn an_exec_between_two_calls_is_never_served_the_old_selectors() {
    for mode in [Caller::WaitThenExecCat, Caller::WaitThenExecCatKeeping] {
        let dir = tempfile::tempdir().unwrap();
        let (path, listener) = socket_in(&dir);
        let mut caller = Helper::connect(&path, mode).unwrap();
        let (_server, pinned) = accept_and_pin(&listener).await;
        let peer = std::sync::Arc::new(pinned.unwrap());
        let cache = std::sync::Arc::new(HashCache::new(8));

        let first = peer.attest_within(&cache).await.unwrap();
        assert!(!first.reused);
        let first = first.selectors;
        let ours = std::env::current_exe().unwrap();
        assert_eq!(values(&first, "unix", "path"), [ours.to_str().unwrap()]);
        // Reused while nothing changed.
        let again = peer.attest_within(&cache).await.unwrap();
        assert!(again.reused, "{mode:?}");
        assert!(std::sync::Arc::ptr_eq(&first, &again.selectors), "{mode:?}");

        caller.release().unwrap();
        let pid = caller.pid();
        let before = peer.exe;
        wait_until(|| procfs::exe_id(pid).is_ok_and(|exe| exe != before)).unwrap();
        match peer.attest_within(&cache).await {
            Ok(second) => {
                assert!(!second.reused);
                let second = second.selectors;
                let cat = fs::canonicalize(find_cat()).unwrap();
                assert_eq!(values(&second, "unix", "path"), [cat.to_str().unwrap()]);
                assert_ne!(
                    values(&second, "unix", "sha256"),
                    values(&first, "unix", "sha256")
                );
            }
            Err(error) => {
                assert!(
                    matches!(
                        error,
                        AttestError::BinaryChanged { .. } | AttestError::ConnectionNotHeld { .. }
                    ),
                    "{error:?}"
                );
                // And stays refused: the record is gone.
                assert!(peer.attest_within(&cache).await.is_err());
            }
        }
        caller.close_stdin();
    }
}

/// A caller that waits, connected to a socket in `dir`, pinned; our end of
/// its connection; and a digest cache to attest it with.
async fn waiting_caller(
    dir: &tempfile::TempDir,
) -> (
    Helper,
    UnixStream,
    std::sync::Arc<PeerProcess>,
    std::sync::Arc<HashCache>,
) {
    let (path, listener) = socket_in(dir);
    let caller = Helper::connect(&path, Caller::WaitThenExit).unwrap();
    let (server, pinned) = accept_and_pin(&listener).await;
    (
        caller,
        server,
        std::sync::Arc::new(pinned.unwrap()),
        std::sync::Arc::new(HashCache::new(8)),
    )
}

/// A move to another cgroup between two calls on one connection ends the
/// reuse: the next call is attested afresh and carries the new cgroup.
#[tokio::test]
async fn a_cgroup_move_between_two_calls_is_never_served_the_old_selectors() {
    // Before the caller, so that it is removed after the caller is reaped.
    let scratch = ScratchCgroup::new("lanyard-attestor-move").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (caller, _server, peer, cache) = waiting_caller(&dir).await;

    let first = peer.attest_within(&cache).await.unwrap();
    assert!(!first.reused);
    assert!(!values(&first.selectors, "cgroup", "path").contains(&scratch.path.as_str()));
    assert!(peer.attest_within(&cache).await.unwrap().reused);

    scratch.enter(caller.pid()).unwrap();
    let moved = peer.attest_within(&cache).await.unwrap();
    assert!(!moved.reused, "served from before the move");
    assert!(
        values(&moved.selectors, "cgroup", "path").contains(&scratch.path.as_str()),
        "{:?}",
        moved.selectors
    );
    let again = peer.attest_within(&cache).await.unwrap();
    assert!(again.reused);
    assert!(std::sync::Arc::ptr_eq(&moved.selectors, &again.selectors));
}

/// On a host with cgroup v2 alone a record checks the caller's cgroup by
/// the id its pidfd reports, not by reading `/proc/<pid>/cgroup`: a move in
/// the unified hierarchy ends the reuse all the same. (This host may also
/// have v1 hierarchies, so the record is given that form here.)
#[tokio::test]
async fn a_cgroup_move_is_seen_by_the_cgroup_id_alone() {
    let scratch = ScratchCgroup::new("lanyard-attestor-id").unwrap();
    assert!(scratch.unified, "the unified hierarchy is mounted");
    let dir = tempfile::tempdir().unwrap();
    let (caller, _server, peer, cache) = waiting_caller(&dir).await;
    assert!(!peer.attest_within(&cache).await.unwrap().reused);

    let text = procfs::read(caller.pid(), "cgroup").unwrap();
    let unified = text.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
    let id = cgroup_v2::id_of(unified).expect("the caller's unified cgroup");
    // The id stands for a v2-only text only when the caller is in the
    // cgroup that text names.
    let file = || procfs::open(caller.pid(), "cgroup").unwrap();
    let elsewhere = peer.cgroup_check(file(), format!("0::{}\n", scratch.path));
    assert!(
        matches!(elsewhere, CgroupCheck::Text { .. }),
        "{elsewhere:?}"
    );
    let check = peer.cgroup_check(file(), format!("0::{unified}\n"));
    assert!(matches!(check, CgroupCheck::Id(i) if i == id), "{check:?}");
    peer.attested.lock().unwrap().as_mut().unwrap().cgroups = check;
    assert!(peer.attest_within(&cache).await.unwrap().reused);

    scratch.enter(caller.pid()).unwrap();
    let moved = peer.attest_within(&cache).await.unwrap();
    assert!(!moved.reused, "served from before the move");
    assert!(values(&moved.selectors, "cgroup", "path").contains(&scratch.path.as_str()));
}

#[test]
fn deleted_binary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("payments");
    fs::copy(find_cat(), &copy).unwrap();
    let mut child = spawn_retrying_busy(&copy);
    let (_, uid, gid) = our_ids();
    let pid = i32::try_from(child.id()).unwrap();
    // The binary check comes first: any socket will do.
    let (_ours, _callers, socket) = held_socket();
    let peer = PeerProcess::pin_pid(pid, uid, gid, socket).unwrap();

    fs::remove_file(&copy).unwrap();
    let error = peer.attest().unwrap_err();
    assert!(
        matches!(&error, AttestError::BinaryReplaced { pid: p, path } if *p == pid && path.ends_with(" (deleted)")),
        "{error:?}"
    );
    drop(child.stdin.take());
    child.wait().unwrap();
}

fn find_cat() -> &'static Path {
    ["/bin/cat", "/usr/bin/cat"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .unwrap()
}

/// Runs a freshly written binary. Another test thread forking while the
/// copy was open for writing can make exec fail with ETXTBSY for a moment.
fn spawn_retrying_busy(binary: &Path) -> std::process::Child {
    for _ in 0..100 {
        match Command::new(binary)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
        {
            Ok(mut child) => {
                // Wait until it runs the copy (not our own image mid-exec).
                let pid = i32::try_from(child.id()).unwrap();
                let id = fs::metadata(binary).map(|m| FileId::of(&m)).unwrap();
                wait_until(|| procfs::exe_id(pid).is_ok_and(|exe| exe == id)).unwrap();
                child.stdin.as_mut().unwrap().write_all(b"").unwrap();
                return child;
            }
            Err(e) if e.raw_os_error() == Some(Errno::TXTBSY.raw_os_error()) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("spawn {}: {e}", binary.display()),
        }
    }
    panic!("{} stayed busy", binary.display());
}

#[tokio::test]
async fn cached_attestation_matches_and_reuses_the_digest() {
    let dir = tempfile::tempdir().unwrap();
    let (path, listener) = socket_in(&dir);
    let _client = UnixStream::connect(&path).await.unwrap();
    let (_server, pinned) = accept_and_pin(&listener).await;
    let peer = std::sync::Arc::new(pinned.unwrap());
    let cache = std::sync::Arc::new(HashCache::new(8));
    let (p, c) = (peer.clone(), cache.clone());
    let (plain, first, second) = tokio::task::spawn_blocking(move || {
        (
            p.attest().unwrap(),
            p.attest_cached(&c).unwrap(),
            p.attest_cached(&c).unwrap(),
        )
    })
    .await
    .unwrap();
    assert_eq!(first, plain);
    assert_eq!(second, plain);
    let exe = fs::metadata(std::env::current_exe().unwrap()).unwrap();
    let state = BinaryState::of(&exe);
    let digest = digest::digest(
        &digest::SHA256,
        &fs::read(std::env::current_exe().unwrap()).unwrap(),
    );
    assert_eq!(
        cache.get(&state),
        Some(Some(hex::encode(digest))),
        "the digest is cached by file state"
    );
}

/// The reuse check runs on the calling thread only for a record whose
/// inputs are all on local filesystems; any other record is left for the
/// blocking path, which reuses it there.
#[test]
fn reuse_runs_inline_only_for_inputs_on_local_filesystems() {
    let (pid, uid, gid) = our_ids();
    let (_ours, _callers, socket) = held_socket();
    let peer = PeerProcess::pin_pid(pid, uid, gid, socket).unwrap();
    let cache = HashCache::new(8);
    assert!(peer.reuse_inline().is_none(), "nothing to reuse yet");
    let full = peer.attest_reusing(&cache).unwrap();
    assert!(!full.reused);

    // The record says whether its inputs are local, as local_fs finds them.
    let exe = File::open("/proc/self/exe").unwrap();
    let local = local_fs::fd_is_local(&exe)
        && local_fs::path_is_local(Path::new(users::PASSWD))
        && local_fs::path_is_local(Path::new(users::GROUP));
    let set_inline = |inline: bool| {
        peer.attested
            .lock()
            .unwrap()
            .as_mut()
            .expect("a record")
            .inline = inline;
    };
    assert_eq!(
        peer.attested.lock().unwrap().as_ref().unwrap().inline,
        local
    );

    set_inline(true);
    let inline = peer.reuse_inline().expect("reused on this thread");
    assert!(std::sync::Arc::ptr_eq(&inline, &full.selectors));

    set_inline(false);
    assert!(peer.reuse_inline().is_none(), "left for the blocking path");
    let blocking = peer.attest_reusing(&cache).unwrap();
    assert!(blocking.reused, "and reused there");
    assert!(std::sync::Arc::ptr_eq(&blocking.selectors, &full.selectors));
}

/// A record is never reused for a caller whose effective ids are not the
/// connection's any more (here: the pinned ids are changed under it).
#[test]
fn reuse_ends_when_the_effective_ids_differ() {
    let (pid, uid, gid) = our_ids();
    let (_ours, _callers, socket) = held_socket();
    let mut peer = PeerProcess::pin_pid(pid, uid, gid, socket).unwrap();
    let cache = HashCache::new(8);
    peer.attest_reusing(&cache).unwrap();
    peer.attested.lock().unwrap().as_mut().unwrap().inline = true;
    peer.gid = gid.wrapping_add(1);
    assert!(peer.reuse_inline().is_none());
    assert!(
        peer.attested.lock().unwrap().is_none(),
        "the record is gone"
    );
    assert!(matches!(
        peer.attest_reusing(&cache),
        Err(AttestError::CredentialsChanged { .. })
    ));
}
