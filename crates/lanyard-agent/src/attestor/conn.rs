//! Workload API connections that carry their pinned caller.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::{Stream, StreamExt};
use lanyard_grpc_unix::SocketPathAuthority;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{UnixListener, UnixStream},
};
use tonic::transport::server::Connected;

use super::{deadline::Deadline, error::AttestError, peer::PeerProcess, peer_socket};

/// Pause after a failed `accept` (say `EMFILE`), so that a full descriptor
/// table does not turn the accept loop into a busy loop.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// A Workload API connection carrying its pinned peer.
///
/// Implements tonic's [`Connected`] with `ConnectInfo = Arc<PeerProcess>`,
/// so handlers find the caller with
/// `request.extensions().get::<Arc<PeerProcess>>()`. Writes go straight to
/// the socket; reads go through [`SocketPathAuthority`], so that gRPC
/// clients sending the socket path as `:authority` (the C core, grpc-java,
/// grpc-swift) are served like any other.
#[derive(Debug)]
pub struct WorkloadConn {
    stream: SocketPathAuthority<UnixStream>,
    peer: Arc<PeerProcess>,
}

impl WorkloadConn {
    /// The process that connected, pinned at accept time.
    pub fn peer(&self) -> &Arc<PeerProcess> {
        &self.peer
    }
}

impl Connected for WorkloadConn {
    type ConnectInfo = Arc<PeerProcess>;

    fn connect_info(&self) -> Self::ConnectInfo {
        Arc::clone(&self.peer)
    }
}

impl AsyncRead for WorkloadConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for WorkloadConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Connections pinned but not yet taken by the server.
const PINNED_QUEUE: usize = 64;

/// Accepts connections and pins each peer, for
/// `tonic::transport::Server::serve_with_incoming`.
///
/// The accept loop only accepts: each connection's caller is pinned by a
/// task of its own, on a blocking thread, within `timeout`, so a caller
/// whose binary is slow to `stat` (a stalled FUSE or NFS mount) delays no
/// one else. A connection whose peer cannot be pinned in time (or at all:
/// typically it has already exited) is closed and logged, never yielded.
/// Each yielded connection is attested within the same `timeout` per
/// request ([`PeerProcess::attest_within`]). A failed `accept` is logged
/// and retried after a short pause, so the stream never ends and never
/// yields an error: the `io::Result` item is what tonic expects. Must be
/// called within a Tokio runtime; the accept loop stops when the stream is
/// dropped.
pub fn incoming(
    listener: UnixListener,
    timeout: Duration,
) -> impl Stream<Item = io::Result<WorkloadConn>> + Send + 'static {
    let (pinned, queue) = tokio::sync::mpsc::channel(PINNED_QUEUE);
    tokio::spawn(accept_loop(listener, Deadline::new(timeout), pinned));
    tokio_stream::wrappers::ReceiverStream::new(queue).map(Ok)
}

async fn accept_loop(
    listener: UnixListener,
    deadline: Deadline,
    pinned: tokio::sync::mpsc::Sender<WorkloadConn>,
) {
    loop {
        let accepted = tokio::select! {
            () = pinned.closed() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let (pinned, deadline) = (pinned.clone(), deadline.clone());
                tokio::spawn(async move {
                    match pin_within(stream, deadline).await {
                        Ok(conn) => {
                            let _ = pinned.send(conn).await;
                        }
                        Err(error @ AttestError::TimedOut { .. }) => {
                            tracing::warn!(%error, "closing a Workload API connection: caller not pinned in time");
                        }
                        Err(error) => {
                            tracing::debug!(%error, "dropping a Workload API connection: caller not pinned");
                        }
                    }
                });
            }
            // The client gave up between connect and accept: nothing to wait for.
            Err(error) if error.kind() == io::ErrorKind::ConnectionAborted => {
                tracing::debug!(%error, "Workload API connection aborted before accept");
            }
            Err(error) => {
                tracing::warn!(
                    %error,
                    retry_in = ?ACCEPT_RETRY_DELAY,
                    "cannot accept a Workload API connection"
                );
                tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
            }
        }
    }
}

/// Pins the caller of `stream`: the quick socket calls here, the `/proc`
/// reads and the `stat` of its binary on a blocking thread, under
/// `deadline`. On an error `stream` is dropped, which closes the connection.
async fn pin_within(stream: UnixStream, deadline: Deadline) -> Result<WorkloadConn, AttestError> {
    let (pid, uid, gid) = PeerProcess::credentials(&stream)?;
    let socket = peer_socket::peer_of(&stream).map_err(AttestError::PeerSocket)?;
    let peer = deadline
        .run(pid, uid, move || {
            PeerProcess::pin_pid(pid, uid, gid, socket)
        })
        .await?;
    Ok(WorkloadConn {
        stream: SocketPathAuthority::new(stream),
        peer: Arc::new(peer.with_deadline(deadline)),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::attestor::{
        bind_socket,
        test_support::{Caller, Helper},
    };

    #[tokio::test]
    async fn yields_pinned_connections_and_drops_unpinnable_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let mut connections = Box::pin(incoming(
            bind_socket(&path).unwrap(),
            crate::attestor::DEFAULT_ATTESTATION_TIMEOUT,
        ));

        // First in the queue: a caller that is gone before it is accepted.
        let mut gone = Helper::connect(&path, Caller::Exit).unwrap();
        gone.child.wait().unwrap();
        // Then this process.
        let mut client = UnixStream::connect(&path).await.unwrap();

        let mut conn = connections.next().await.unwrap().unwrap();
        let pid = i32::try_from(std::process::id()).unwrap();
        assert_eq!(conn.peer().pid, pid);
        assert!(Arc::ptr_eq(&conn.connect_info(), conn.peer()));

        // Reads and writes reach the socket.
        conn.write_all(b"ping").await.unwrap();
        let mut buf = [0_u8; 4];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        client.write_all(b"pong").await.unwrap();
        conn.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        conn.shutdown().await.unwrap();
        assert_eq!(client.read(&mut buf).await.unwrap(), 0);
    }

    #[test]
    fn connect_info_fits_tonic() {
        fn is_connect_info<T: Clone + Send + Sync + 'static>() {}
        fn is_tonic_io<T: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static>() {}
        is_connect_info::<<WorkloadConn as Connected>::ConnectInfo>();
        is_tonic_io::<WorkloadConn>();
    }
}
