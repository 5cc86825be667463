//! The caller's end of a Workload API connection, and who holds it.
//!
//! `SO_PEERCRED` names the process that called `connect`, not the one that
//! sends requests later. A process can connect, hand the connection to a
//! relay (fork, `SCM_RIGHTS`), and exec a trusted binary: the pid now shows
//! the trusted binary, while the relay asks. So attestation also checks that
//! the pinned process still holds the caller's socket. The kernel tells which
//! socket that is (`sock_diag`, `UDIAG_SHOW_PEER`: the inode of our end's
//! peer), and `/proc/<pid>/fd` which sockets a process holds. Exec closes
//! sockets opened with `CLOEXEC` (the default of Rust, Go, Python, Java and
//! of gRPC's C core), so after such an exec the pinned process no longer
//! holds it.

use std::{
    fs, io,
    os::fd::{AsFd, BorrowedFd},
};

use netlink_packet_core::{NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    unix::{ShowFlags, StateFlags, UnixRequest},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

use super::procfs;

/// "No cookie": look the socket up by inode alone.
const NO_COOKIE: [u8; 8] = [0xff; 8];

/// A socket, named by its inode number in sockfs (what `/proc/<pid>/fd`
/// shows as `socket:[N]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SocketInode(pub(crate) u32);

impl SocketInode {
    /// Whether `target`, a `/proc/<pid>/fd/N` link, names this socket
    /// (`socket:[N]`), read in place without formatting ours.
    pub(crate) fn is_link_target(self, target: &std::path::Path) -> bool {
        target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:[")?.strip_suffix(']'))
            .and_then(|n| n.parse::<u32>().ok())
            == Some(self.0)
    }
}

impl std::fmt::Display for SocketInode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "socket:[{}]", self.0)
    }
}

/// The inode of `ours`.
pub(crate) fn inode_of(ours: BorrowedFd<'_>) -> io::Result<SocketInode> {
    let ino = rustix::fs::fstat(ours)?.st_ino;
    u32::try_from(ino)
        .map(SocketInode)
        .map_err(|_| io::Error::other(format!("socket inode {ino} does not fit sock_diag")))
}

/// The inode of the socket at the other end of the connected Unix socket
/// `ours`, asked of the kernel with `sock_diag` (`UDIAG_SHOW_PEER`).
pub(crate) fn peer_of(ours: impl AsFd) -> io::Result<SocketInode> {
    let ours = inode_of(ours.as_fd())?;
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;

    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST;
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::UnixRequest(UnixRequest {
            state_flags: StateFlags::all(),
            inode: ours.0,
            show_flags: ShowFlags::PEER,
            cookie: NO_COOKIE,
        })
        .into(),
    );
    request.finalize();
    let mut buf = vec![0_u8; request.buffer_len()];
    request.serialize(&mut buf);
    socket.send(&buf, 0)?;

    let mut answer = Vec::with_capacity(4096);
    socket.recv(&mut answer, 0)?;
    let message = NetlinkMessage::<SockDiagMessage>::deserialize(&answer)
        .map_err(|e| io::Error::other(format!("sock_diag answer: {e}")))?;
    match message.payload {
        NetlinkPayload::InnerMessage(SockDiagMessage::UnixResponse(response)) => {
            response.peer().map(SocketInode).ok_or_else(|| {
                io::Error::other(format!("sock_diag names no peer for {ours}: not connected"))
            })
        }
        NetlinkPayload::Error(error) => Err(error
            .code
            .map(|code| io::Error::from_raw_os_error(-code.get()))
            .unwrap_or_else(|| io::Error::other("sock_diag: empty answer"))),
        other => Err(io::Error::other(format!(
            "sock_diag: unexpected answer {other:?}"
        ))),
    }
}

/// The descriptor number under which process `pid` holds `socket`, if it
/// does: a later check can look there first ([`holds_at`]) instead of
/// listing every descriptor again.
pub(crate) fn held_at(pid: i32, socket: SocketInode) -> io::Result<Option<u32>> {
    for entry in fs::read_dir(procfs::proc_path(pid, "fd"))? {
        let Ok(entry) = entry else { continue };
        // A descriptor closed between the listing and the read is not it.
        if let Ok(target) = fs::read_link(entry.path())
            && socket.is_link_target(&target)
        {
            // Names there are always decimal; were one not, the hint would
            // simply miss and the next check list the descriptors again.
            let fd = entry.file_name().to_str().and_then(|n| n.parse().ok());
            return Ok(Some(fd.unwrap_or(u32::MAX)));
        }
    }
    Ok(None)
}

/// Whether descriptor `fd` of process `pid` is `socket` (one `readlink`).
/// `false` when it is closed or is anything else.
pub(crate) fn holds_at(pid: i32, fd: u32, socket: SocketInode) -> bool {
    fs::read_link(procfs::proc_path(pid, &format!("fd/{fd}")))
        .is_ok_and(|target| socket.is_link_target(&target))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn a_link_target_names_exactly_its_socket() {
        let socket = SocketInode(4242);
        let target = |t: &str| socket.is_link_target(std::path::Path::new(t));
        assert!(target(&socket.to_string()));
        assert!(target("socket:[4242]"));
        for other in [
            "socket:[42420]",
            "socket:[424]",
            "pipe:[4242]",
            "socket:[4242",
            "/tmp/x",
            "",
        ] {
            assert!(!target(other), "{other}");
        }
    }

    #[test]
    fn peer_is_the_other_end() {
        let (a, b) = UnixStream::pair().unwrap();
        let (ia, ib) = (inode_of(a.as_fd()).unwrap(), inode_of(b.as_fd()).unwrap());
        assert_ne!(ia, ib);
        assert_eq!(peer_of(&a).unwrap(), ib);
        assert_eq!(peer_of(&b).unwrap(), ia);
    }

    #[test]
    fn held_until_closed() {
        let pid = i32::try_from(std::process::id()).unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        let peer = peer_of(&a).unwrap();
        let fd = held_at(pid, peer).unwrap().unwrap();
        assert_eq!(
            i32::try_from(fd).unwrap(),
            std::os::fd::AsRawFd::as_raw_fd(&b)
        );
        assert!(holds_at(pid, fd, peer));
        drop(b);
        assert_eq!(held_at(pid, peer).unwrap(), None);
        assert!(!holds_at(pid, fd, peer));
    }
}
