//! The server's TCP listeners (Node API, HTTP), bounded so that idle or slow
//! clients cannot exhaust its descriptors (issue 11, item 4):
//!
//! - each listener holds at most `max_connections` connections; one past
//!   the cap is accepted and closed at once, so it neither waits in the
//!   kernel's backlog nor costs a descriptor for long;
//! - a connection that receives nothing for `connection_idle_timeout` is
//!   closed (the Node API pings its HTTP/2 clients well within it, so a
//!   healthy agent's connection is never idle);
//! - an HTTP request's headers must arrive within `http_header_timeout`,
//!   and a Node API TLS handshake must end within `tls_handshake_timeout`.
//!
//! The admin socket is a Unix socket with a loop of its own, outside these
//! caps: an operator is answered when the TCP listeners are full.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
};
use tokio_io_timeout::TimeoutStream;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::{ServerError, limits::ListenerLimits};

/// Pause after a failed `accept` (say `EMFILE`), so that it is not a busy loop.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);
/// How long open HTTP connections get to finish after a shutdown signal.
const HTTP_DRAIN: Duration = Duration::from_secs(5);

/// A TCP listener that holds at most `max_connections` connections.
pub(crate) struct CappedListener {
    listener: TcpListener,
    name: &'static str,
    permits: Arc<Semaphore>,
    max_connections: usize,
    idle_timeout: Duration,
    /// Whether the last connection was refused (logged once per episode).
    full: bool,
}

impl CappedListener {
    pub(crate) fn new(listener: TcpListener, name: &'static str, limits: &ListenerLimits) -> Self {
        Self {
            listener,
            name,
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            max_connections: limits.max_connections,
            idle_timeout: limits.connection_idle_timeout,
            full: false,
        }
    }

    /// The next connection within the cap. Connections past it are closed
    /// as they arrive; failed accepts are logged and retried.
    pub(crate) async fn accept(&mut self) -> (Limited, SocketAddr) {
        loop {
            let (tcp, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(listener = self.name, %error, "accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            };
            match Arc::clone(&self.permits).try_acquire_owned() {
                Ok(permit) => {
                    if std::mem::take(&mut self.full) {
                        tracing::info!(listener = self.name, "below the connection cap again");
                    }
                    return (Limited::new(tcp, self.idle_timeout, permit), peer);
                }
                Err(_) => {
                    if !std::mem::replace(&mut self.full, true) {
                        tracing::warn!(
                            listener = self.name,
                            max_connections = self.max_connections,
                            "connection cap reached: new connections are closed until others end"
                        );
                    }
                    tracing::debug!(listener = self.name, %peer, "connection past the cap closed");
                }
            }
        }
    }
}

/// An accepted connection: reads fail with `TimedOut` once nothing has
/// arrived for the idle timeout, and its slot under the cap is given back
/// when it is dropped.
pub(crate) struct Limited {
    io: Pin<Box<TimeoutStream<TcpStream>>>,
    _slot: OwnedSemaphorePermit,
}

impl Limited {
    fn new(tcp: TcpStream, idle_timeout: Duration, slot: OwnedSemaphorePermit) -> Self {
        let _ = tcp.set_nodelay(true);
        let mut io = TimeoutStream::new(tcp);
        io.set_read_timeout(Some(idle_timeout));
        Self {
            io: Box::pin(io),
            _slot: slot,
        }
    }
}

impl AsyncRead for Limited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.io.as_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.io.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io.as_mut().poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.io.as_mut().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The peer's address, as a plain TCP connection gives it to tonic (the
/// Node API keys refused attestations by it).
impl Connected for Limited {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.get_ref().connect_info()
    }
}

/// Serves `router` over HTTP/1 on `listener` until `shutdown`, then lets
/// open connections finish for a few seconds.
pub(crate) async fn serve_http(
    mut listener: CappedListener,
    router: axum::Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let service = TowerToHyperService::new(router);
    let graceful = GracefulShutdown::new();
    loop {
        let (io, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(io), service.clone());
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%peer, %error, "HTTP connection ended");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(HTTP_DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("HTTP connections still open after the drain; dropping them");
    }
    Ok(())
}

/// Accepts Node API connections and hands completed TLS handshakes to
/// tonic. A slow or failed handshake affects only its own connection.
pub(crate) async fn accept_tls(
    mut listener: CappedListener,
    tls: Arc<rustls::ServerConfig>,
    handshake_timeout: Duration,
    conns: mpsc::Sender<Result<TlsStream<Limited>, io::Error>>,
    stop: CancellationToken,
) -> (&'static str, Result<(), ServerError>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = tokio::select! {
            () = stop.cancelled() => return ("Node API listener", Ok(())),
            accepted = listener.accept() => accepted,
        };
        let (acceptor, conns) = (acceptor.clone(), conns.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = conns.send(Ok(stream)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}
