//! Workload API connections that carry their pinned caller.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::Stream;
use lanyard_grpc_unix::SocketPathAuthority;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{UnixListener, UnixStream},
};
use tonic::transport::server::Connected;

use super::peer::PeerProcess;

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

/// Accepts connections and pins each peer, for
/// `tonic::transport::Server::serve_with_incoming`.
///
/// A connection whose peer cannot be pinned (typically: it has already
/// exited) is dropped and logged, never yielded. A failed `accept` is logged
/// and retried after a short pause, so the stream never ends and never
/// yields an error: the `io::Result` item is what tonic expects.
pub fn incoming(
    listener: UnixListener,
) -> impl Stream<Item = io::Result<WorkloadConn>> + Send + 'static {
    futures::stream::unfold(listener, |listener| async move {
        let conn = accept_pinned(&listener).await;
        Some((Ok(conn), listener))
    })
}

async fn accept_pinned(listener: &UnixListener) -> WorkloadConn {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => match PeerProcess::pin(&stream) {
                Ok(peer) => {
                    return WorkloadConn {
                        stream: SocketPathAuthority::new(stream),
                        peer: Arc::new(peer),
                    };
                }
                Err(error) => {
                    tracing::debug!(%error, "dropping a Workload API connection: caller not pinned");
                }
            },
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use futures::StreamExt;
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
        let mut connections = Box::pin(incoming(bind_socket(&path).unwrap()));

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
