//! Workload attestation for the agent's Workload API Unix socket.
//!
//! Who is calling is decided by the kernel, never by the caller:
//!
//! 1. [`bind_socket`] binds the socket world-connectable (mode 0777): file
//!    mode does not decide access, attestation does.
//! 2. [`incoming`] accepts each connection and pins its caller
//!    ([`PeerProcess::pin`]) on a blocking thread, within a deadline, off
//!    the accept loop: the `SO_PEERCRED` pid, uid and gid, a pidfd to the
//!    process, its start time, the identity of its binary, and the
//!    caller's end of the connection (`sock_diag`).
//! 3. A handler takes the [`PeerProcess`] from the request extensions and
//!    calls [`PeerProcess::attest_within`] (a blocking thread, the same
//!    deadline) to get the caller's selectors: `unix:uid`, `unix:gid`,
//!    `unix:user`, `unix:group`, `unix:path`, `unix:sha256` and
//!    `cgroup:path`. Later calls on the same connection reuse them only
//!    while every input they were made of is unchanged and the process is
//!    still alive ([`PeerProcess::attest_reusing`]); an exec, exit or change
//!    of credentials sends the call through the full attestation again.
//!    That check costs a few `/proc` reads and an `ioctl` on the pidfd, so
//!    it runs on the request's own thread when the binary and the account
//!    files are on local filesystems, whose `stat` cannot stall.
//!
//! Attestation ends by checking that the pinned process is still the one
//! that connected: alive, same start time, same credentials, same binary,
//! and still holding its end of the connection. So a process that connects,
//! forks and exits does not lend its identity to the child that keeps the
//! socket (the pidfd shows the parent exited); one that connects, hands the
//! connection to a relay and execs a trusted binary does not lend that
//! binary's identity (exec closed its copy of the socket); and a pid
//! recycled during attestation cannot borrow another workload's identity.
//!
//! ```no_run
//! # async fn serve() -> Result<(), Box<dyn std::error::Error>> {
//! use std::{path::Path, sync::Arc};
//! use lanyard_agent::attestor::{bind_socket, incoming, PeerProcess};
//!
//! let listener = bind_socket(Path::new("/run/lanyard/agent/api.sock"))?;
//! let connections = incoming(listener, lanyard_agent::attestor::DEFAULT_ATTESTATION_TIMEOUT);
//! // tonic::transport::Server::builder()
//! //     .add_service(workload_api)
//! //     .serve_with_incoming(connections)
//! //     .await?;
//! // and in a handler:
//! fn selectors_of(request: &tonic::Request<()>) -> Option<Arc<PeerProcess>> {
//!     request.extensions().get::<Arc<PeerProcess>>().cloned()
//! }
//! # let _ = (connections, selectors_of);
//! # Ok(())
//! # }
//! ```

mod cgroup_v2;
mod conn;
mod deadline;
mod error;
mod hash_cache;
mod local_fs;
mod peer;
mod peer_socket;
mod procfs;
mod reuse;
mod socket;
mod users;

pub use self::{
    conn::{WorkloadConn, incoming},
    deadline::{DEFAULT_ATTESTATION_TIMEOUT, MAX_IN_FLIGHT_PER_UID},
    error::AttestError,
    hash_cache::HashCache,
    peer::{DEFAULT_MAX_BINARY_SIZE, PeerProcess},
    reuse::Attestation,
    socket::bind_socket,
};

#[cfg(test)]
mod test_support;
