//! The shim as an I/O type: reads go through [`ClientStream`], writes go
//! straight to the socket.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

use crate::frames::ClientStream;

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;

/// A server-side HTTP/2 connection whose client may send a Unix socket
/// path as `:authority`; see the [crate] documentation.
#[derive(Debug)]
pub struct SocketPathAuthority<T> {
    inner: T,
    client: ClientStream,
    /// Rewritten bytes not yet read by the server, from `ready_at` on.
    ready: Vec<u8>,
    ready_at: usize,
    scratch: Vec<u8>,
    eof: bool,
}

impl<T> SocketPathAuthority<T> {
    /// Wraps an accepted connection.
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            client: ClientStream::default(),
            ready: Vec::new(),
            ready_at: 0,
            scratch: vec![0; READ_CHUNK],
            eof: false,
        }
    }

    /// The accepted connection.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: Connected> Connected for SocketPathAuthority<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SocketPathAuthority<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready_at < this.ready.len() {
                let n = buf.remaining().min(this.ready.len() - this.ready_at);
                buf.put_slice(&this.ready[this.ready_at..this.ready_at + n]);
                this.ready_at += n;
                if this.ready_at == this.ready.len() {
                    this.ready.clear();
                    this.ready_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut read = ReadBuf::new(&mut this.scratch);
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                this.eof = true;
                this.client.finish(&mut this.ready);
            } else {
                this.client.push(read.filled(), &mut this.ready);
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SocketPathAuthority<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
