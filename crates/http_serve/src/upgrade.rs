//! Handing an HTTP/1.1 connection over to another protocol after `101 Switching Protocols`.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http_types::{BoxFuture, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::Io;

/// The connection of an HTTP/1.1 request asking to switch protocols, found in
/// the request's extensions when [`http_serve`](crate::http_serve) serves it.
///
/// Answer the request with `101 Switching Protocols`, then either
///
/// - [`serve`](OnUpgrade::serve) the new protocol: the future runs inside the
///   connection's own task, so the server's drain waits for it (and aborts it
///   at the drain timeout) like any other connection; or
/// - await this: it resolves to the raw connection once the response head is
///   written, for code that runs it elsewhere.
///
/// Clones (extensions must be `Clone`) share the one connection: the first to
/// claim it has it, the others get [`UpgradeError`].
#[derive(Clone)]
#[must_use = "an upgrade does nothing unless awaited or served"]
pub struct OnUpgrade(Arc<Mutex<Slot>>);

type ServeFn = Box<dyn FnOnce(Upgraded) -> BoxFuture<()> + Send>;

#[derive(Default)]
struct Slot {
    rx: Option<oneshot::Receiver<Upgraded>>,
    serve: Option<ServeFn>,
}

/// The server's side of an [`OnUpgrade`].
pub(crate) struct UpgradeSender {
    tx: oneshot::Sender<Upgraded>,
    slot: Arc<Mutex<Slot>>,
}

impl UpgradeSender {
    /// Hands `io` over: returns the future to run in the connection's task
    /// when the handler chose [`OnUpgrade::serve`].
    pub(crate) fn complete(self, io: Upgraded) -> Option<BoxFuture<()>> {
        let serve = lock(&self.slot).serve.take();
        match serve {
            Some(f) => Some(f(io)),
            None => {
                let _ = self.tx.send(io);
                None
            }
        }
    }
}

fn lock(m: &Mutex<Slot>) -> std::sync::MutexGuard<'_, Slot> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl OnUpgrade {
    /// A pending upgrade and the server's side of it.
    pub(crate) fn pair() -> (UpgradeSender, OnUpgrade) {
        let (tx, rx) = oneshot::channel();
        let slot = Arc::new(Mutex::new(Slot {
            rx: Some(rx),
            serve: None,
        }));
        (
            UpgradeSender {
                tx,
                slot: slot.clone(),
            },
            OnUpgrade(slot),
        )
    }

    /// Takes the pending upgrade out of a request's extensions.
    pub fn take<B>(req: &mut http::Request<B>) -> Option<OnUpgrade> {
        req.extensions_mut().remove::<OnUpgrade>()
    }

    /// Runs `f` on the connection once the `101` head is written, inside the
    /// connection's task. If the response is not `101`, `f` never runs.
    pub fn serve<F, Fut>(self, f: F)
    where
        F: FnOnce(Upgraded) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut slot = lock(&self.0);
        slot.rx = None;
        slot.serve = Some(Box::new(move |io| Box::pin(f(io))));
    }
}

impl fmt::Debug for OnUpgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OnUpgrade")
    }
}

impl Future for OnUpgrade {
    type Output = Result<Upgraded, UpgradeError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = lock(&self.0);
        let Some(rx) = slot.rx.as_mut() else {
            return Poll::Ready(Err(UpgradeError));
        };
        let done = std::task::ready!(Pin::new(rx).poll(cx));
        slot.rx = None;
        Poll::Ready(done.map_err(|_| UpgradeError))
    }
}

/// The connection was not handed over: the response was not `101`, or the
/// connection failed before its head was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpgradeError;

impl fmt::Display for UpgradeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the connection was not upgraded")
    }
}

impl std::error::Error for UpgradeError {}

/// A connection after its last HTTP response head: the stream (plain TCP or
/// TLS, see [`Io`]), and the bytes the peer sent that HTTP read but did not
/// use (read first).
#[derive(Debug)]
pub struct Upgraded {
    io: Io,
    read_first: Bytes,
}

impl Upgraded {
    /// The stream (a `TcpStream` or an [`Io`]) and the bytes already read from it.
    pub fn new(io: impl Into<Io>, read_first: Bytes) -> Self {
        Upgraded {
            io: io.into(),
            read_first,
        }
    }

    /// The stream and the unread bytes, for code that drives it directly.
    pub fn into_parts(self) -> (Io, Bytes) {
        (self.io, self.read_first)
    }

    /// The TCP socket (under TLS, if any).
    pub fn get_ref(&self) -> &TcpStream {
        self.io.tcp()
    }

    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        self.io.is_tls()
    }
}

impl AsyncRead for Upgraded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read_first.is_empty() {
            let n = self.read_first.len().min(buf.remaining());
            buf.put_slice(&self.read_first[..n]);
            let rest = self.read_first.split_off(n);
            self.read_first = rest;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn upgraded_reads_the_leftover_bytes_first() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (tx, on) = OnUpgrade::pair();
        assert!(
            tx.complete(Upgraded::new(server, Bytes::from_static(b"early ")))
                .is_none()
        );
        let mut up = on.await.unwrap();
        client.write_all(b"late").await.unwrap();
        drop(client);
        let mut all = String::new();
        up.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "early late");
    }

    #[tokio::test]
    async fn serve_runs_the_protocol_where_the_server_says() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (tx, on) = OnUpgrade::pair();
        let (ran_tx, ran_rx) = oneshot::channel();
        on.clone().serve(move |io| async move {
            let _ = ran_tx.send(io.read_first.clone());
        });
        let fut = tx
            .complete(Upgraded::new(server, Bytes::from_static(b"ahead")))
            .expect("serve registered a future");
        fut.await;
        assert_eq!(ran_rx.await.unwrap(), &b"ahead"[..]);
        assert_eq!(on.await.unwrap_err(), UpgradeError, "claimed by serve");
    }

    #[tokio::test]
    async fn a_dropped_sender_is_an_error() {
        let (tx, on) = OnUpgrade::pair();
        drop(tx);
        assert_eq!(on.await.unwrap_err(), UpgradeError);
    }
}
