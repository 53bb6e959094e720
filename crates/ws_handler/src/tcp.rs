//! A plain-TCP socket shared by its connection's task and the hub's direct
//! writes ([`ws_hub::DirectWrite`]).
//!
//! `tokio::net::TcpStream` reads and writes through `&self` with its
//! readiness API, so one socket can be both the connection's stream and
//! what a send writes to while the connection's writer waits, without a
//! lock around the socket or a second file descriptor. The hub's outbox
//! lock decides who writes at any time: a send only while the writer is
//! parked, the writer only after it un-parked (`WsClient::unpark`).

use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The socket, as the hub's direct writes see it.
#[derive(Debug)]
pub(crate) struct Socket(TcpStream);

impl ws_hub::DirectWrite for Socket {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }
}

/// The connection's handle on the socket: `AsyncRead` and `AsyncWrite` as
/// `TcpStream`'s own, through its readiness.
#[derive(Debug)]
pub(crate) struct SharedTcp(Arc<Socket>);

impl SharedTcp {
    /// The stream, and the handle for [`ws_hub::WsClient::set_direct_write`].
    pub(crate) fn new(stream: TcpStream) -> (SharedTcp, Arc<dyn ws_hub::DirectWrite>) {
        let socket = Arc::new(Socket(stream));
        (SharedTcp(socket.clone()), socket)
    }

    /// Retries `op` until it does not find the socket busy, waiting for
    /// `ready` in between (the readiness is cleared by each `WouldBlock`).
    fn poll_io<T>(
        &self,
        cx: &mut Context<'_>,
        ready: impl Fn(&TcpStream, &mut Context<'_>) -> Poll<io::Result<()>>,
        mut op: impl FnMut(&TcpStream) -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        let stream = &self.0.0;
        loop {
            ready!(ready(stream, cx))?;
            match op(stream) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return Poll::Ready(done),
            }
        }
    }
}

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = ready!(self.poll_io(cx, TcpStream::poll_read_ready, |s| {
            s.try_read(buf.initialize_unfilled())
        }))?;
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_io(cx, TcpStream::poll_write_ready, |s| s.try_write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_io(cx, TcpStream::poll_write_ready, |s| {
            s.try_write_vectored(bufs)
        })
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&self.0.0).shutdown(Shutdown::Write))
    }
}
