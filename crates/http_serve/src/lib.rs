//! Serves a handler on a TCP listener over HTTP/1.1 and HTTP/2 until a shutdown future completes, then drains within a bounded timeout.
//!
//! Built on hyper 1: each connection is HTTP/2 when it opens with the HTTP/2
//! preface (prior knowledge), HTTP/1.1 otherwise. Every request carries the
//! server's [`Shutdown`] signal and the peer address ([`PeerAddr`]) in its
//! extensions.
//!
//! Once hyper is done with an HTTP/1.1 connection, `http_serve` can take the
//! socket back (hyper's `poll_without_shutdown` and `into_parts`):
//!
//! - **Upgrades.** A request with an `Upgrade` header carries an [`OnUpgrade`];
//!   answer `101` and the socket is handed over, with any bytes read ahead
//!   ([`Upgraded`]). [`OnUpgrade::serve`] runs the new protocol inside the
//!   connection's task, so shutdown drains it like any other connection.
//! - **Long-lived bodies.** A response marked [`LongLived`](http_types::LongLived)
//!   (SSE) gets its head from hyper, close-delimited, then its body is written
//!   straight to the socket, without hyper's per-connection buffers: an idle
//!   SSE stream costs about 2 KiB instead of 24.
//!
//! Shutdown, when the `shutdown` future completes:
//!
//! 1. stop accepting; the listener is closed;
//! 2. fire the [`Shutdown`] signal, so long-lived responses end on their own
//!    (SSE streams finish their body, WebSocket handlers send close 1001);
//! 3. ask every connection to close gracefully (HTTP/1.1 after the response
//!    in flight, HTTP/2 with GOAWAY); connections still silent are closed;
//! 4. wait for them at most [`ServeConfig::drain_timeout`], then abort the rest.
//!
//! So, unlike axum's `with_graceful_shutdown` with an open SSE stream
//! (axum#2673), `http_serve` always returns.
//!
//! # Example
//!
//! ```no_run
//! use http_serve::{http_serve, ServeConfig};
//! use http_types::{full, Handler, Response};
//!
//! # async fn run() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let app = Handler::new(|_| async { Response::new(full("hello")) });
//! let stats = http_serve(listener, app, async { let _ = tokio::signal::ctrl_c().await; }, ServeConfig::default()).await;
//! println!("served {} connections", stats.connections);
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;
use http_types::{Body, BoxFuture, Bytes, Handler, LongLived, Response, Shutdown, boxed};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

mod upgrade;
use upgrade::UpgradeSender;
pub use upgrade::{OnUpgrade, UpgradeError, Upgraded};

/// How the server behaves; every field has a default.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// How long connections get to finish after shutdown starts before they
    /// are aborted. Default: 5 seconds.
    pub drain_timeout: Duration,
    /// Back-off after a failed `accept` (for example too many open files), so
    /// the loop does not spin. Default: 50 ms.
    pub accept_backoff: Duration,
    /// How long a client may take to send its first bytes and each request
    /// head; slower connections are closed. Default: 30 seconds.
    pub header_read_timeout: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            drain_timeout: Duration::from_secs(5),
            accept_backoff: Duration::from_millis(50),
            header_read_timeout: Duration::from_secs(30),
        }
    }
}

/// The peer's address, in every request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// What happened while serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServeStats {
    /// Connections accepted.
    pub connections: u64,
    /// Connections still open at the drain timeout, aborted.
    pub aborted: usize,
}

/// Serves `handler` on `listener` until `shutdown` completes, then drains.
///
/// Returns once every connection has closed or the drain timeout has passed.
pub async fn http_serve(
    listener: TcpListener,
    handler: Handler,
    shutdown: impl Future<Output = ()> + Send,
    config: ServeConfig,
) -> ServeStats {
    let signal = Shutdown::new();
    let mut conns = JoinSet::new();
    let mut stats = ServeStats::default();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(target: "http", error = %e, "accept failed");
                        tokio::time::sleep(config.accept_backoff).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                stats.connections += 1;
                conns.spawn(connection(stream, peer, handler.clone(), signal.clone(), config.header_read_timeout));
            }
        }
    }
    drop(listener);
    signal.trigger();
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(config.drain_timeout, drain)
        .await
        .is_err()
    {
        stats.aborted = conns.len();
        tracing::warn!(target: "http", open = stats.aborted, "drain timeout: aborting connections");
    }
    conns.shutdown().await;
    stats
}

/// The HTTP/2 connection preface a client sends first (RFC 9113, 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves one connection: HTTP/2 when it opens with the preface, HTTP/1.1
/// otherwise; on the shutdown signal, closes it gracefully.
///
/// Sniffing the protocol here, rather than with hyper-util's `auto` builder,
/// keeps an idle streaming connection about 5 KiB smaller.
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    handler: Handler,
    signal: Shutdown,
    header_read_timeout: Duration,
) {
    let sniffed = tokio::select! {
        s = Box::pin(tokio::time::timeout(header_read_timeout, sniff(&mut stream))) => s,
        () = signal.wait() => return,
    };
    let Ok(Ok(prefix)) = sniffed else {
        return; // silent, broken or too slow before its first bytes
    };
    let h2 = prefix.is_h2();
    let io = TokioIo::new(Prefixed { prefix, io: stream });
    let service = Service {
        handler,
        signal: signal.clone(),
        peer,
        takeover: Arc::new(Mutex::new(Takeover::None)),
        h2,
    };
    // hyper's connection state is boxed, so that once it is done a
    // long-lived stream or an upgraded socket keeps only a small task.
    if h2 {
        Box::pin(serve_h2(io, service, signal)).await;
        return;
    }
    let Some((mut stream, next, read_first)) =
        Box::pin(serve_h1(io, service, signal, header_read_timeout)).await
    else {
        return;
    };
    match next {
        Takeover::None => {
            drop(read_first);
            let _ = stream.shutdown().await;
        }
        Takeover::Upgrade(up) => {
            if let Some(protocol) = up.complete(Upgraded::new(stream, read_first)) {
                protocol.await;
            }
        }
        Takeover::Body(body) => {
            // Nothing the client sends now is read: free hyper's buffer first.
            drop(read_first);
            Box::pin(write_long_lived(stream, body)).await;
        }
    }
}

/// Serves an HTTP/2 connection until it ends; on `signal`, sends GOAWAY and
/// lets the streams in flight finish.
async fn serve_h2(io: TokioIo<Prefixed>, service: Service, signal: Shutdown) {
    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .serve_connection(io, service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = signal.wait() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(target: "http", error = %e, "connection ended with an error");
    }
}

/// Serves HTTP/1.1 requests until the connection is done with HTTP; on
/// `signal`, finishes the response in flight. Returns the socket, what it
/// becomes and the bytes read but not used, unless it failed.
async fn serve_h1(
    io: TokioIo<Prefixed>,
    service: Service,
    signal: Shutdown,
    header_read_timeout: Duration,
) -> Option<(TcpStream, Takeover, Bytes)> {
    let takeover = service.takeover.clone();
    let mut conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .serve_connection(io, service);
    let done = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx));
    let result = tokio::select! {
        r = done => r,
        () = signal.wait() => {
            Pin::new(&mut conn).graceful_shutdown();
            std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)).await
        }
    };
    if let Err(e) = result {
        tracing::debug!(target: "http", error = %e, "connection ended with an error");
        return None;
    }
    let next = std::mem::replace(&mut *lock(&takeover), Takeover::None);
    let hyper::server::conn::http1::Parts { io, read_buf, .. } = conn.into_parts();
    let Prefixed { prefix, io: stream } = io.into_inner();
    // Copied out (usually nothing), so hyper's 8 KiB read buffer is freed
    // rather than kept alive by a slice for the life of an upgraded socket.
    let read_first = match (prefix.rest(), &read_buf[..]) {
        ([], []) => Bytes::new(),
        (rest, buf) => [rest, buf].concat().into(),
    };
    Some((stream, next, read_first))
}

/// What the connection becomes once HTTP is done with it.
enum Takeover {
    /// Nothing: close it.
    None,
    /// The handler answered `101`: hand the socket over.
    Upgrade(UpgradeSender),
    /// The response is [`LongLived`]: write its body to the socket.
    Body(Body),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes a long-lived body straight to the socket until it ends or the
/// client goes away (noticed by reading: end of file or an error).
async fn write_long_lived(mut stream: TcpStream, mut body: Body) {
    loop {
        tokio::select! {
            frame = body.frame() => match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data()
                        && stream.write_all(&data).await.is_err()
                    {
                        return;
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(target: "http", error = %e, "long-lived body failed");
                    return;
                }
                None => break,
            },
            ready = stream.readable() => {
                if ready.is_err() {
                    return;
                }
                // The request is answered: whatever else the client sends is
                // dropped; end of file means it is gone.
                match stream.try_read(&mut [0u8; 256]) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        }
    }
    let _ = stream.shutdown().await;
}

/// The per-connection hyper service: adds the signal, the peer and, for an
/// upgrade request, an [`OnUpgrade`] to each request; notes what the
/// connection becomes after the response.
struct Service {
    handler: Handler,
    signal: Shutdown,
    peer: SocketAddr,
    takeover: Arc<Mutex<Takeover>>,
    h2: bool,
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for Service {
    type Response = Response;
    type Error = Infallible;
    type Future = Respond;

    fn call(&self, req: hyper::Request<hyper::body::Incoming>) -> Respond {
        let mut req = req.map(boxed);
        req.extensions_mut().insert(self.signal.clone());
        req.extensions_mut().insert(PeerAddr(self.peer));
        let upgrade = (!self.h2 && req.headers().contains_key(http::header::UPGRADE)).then(|| {
            let (tx, on) = OnUpgrade::pair();
            req.extensions_mut().insert(on);
            tx
        });
        let direct = !self.h2 && req.method() != http::Method::HEAD;
        Respond {
            fut: self.handler.call(req),
            upgrade,
            direct,
            takeover: self.takeover.clone(),
        }
    }
}

/// The future of one response; see [`Service`].
struct Respond {
    fut: BoxFuture<Response>,
    upgrade: Option<UpgradeSender>,
    direct: bool,
    takeover: Arc<Mutex<Takeover>>,
}

impl Future for Respond {
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut res = std::task::ready!(self.fut.as_mut().poll(cx));
        if res.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            if let Some(tx) = self.upgrade.take() {
                *lock(&self.takeover) = Takeover::Upgrade(tx);
            }
        } else if self.direct && res.extensions().get::<LongLived>().is_some() {
            // hyper writes the head, close-delimited (the HTTP/1.0 form);
            // the connection then ends and the body goes straight out.
            let body = std::mem::replace(res.body_mut(), boxed(Unframed));
            *res.version_mut() = http::Version::HTTP_10;
            res.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
            *lock(&self.takeover) = Takeover::Body(body);
        }
        Poll::Ready(Ok(res))
    }
}

/// An empty body of unknown length: hyper writes a close-delimited head for it.
struct Unframed;

impl http_body::Body for Unframed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        Poll::Ready(None)
    }
}

/// The first bytes of a connection, read to tell HTTP/2 from HTTP/1.1.
#[derive(Debug)]
struct Prefix {
    bytes: [u8; 24],
    len: u8,
    pos: u8,
}

impl Prefix {
    /// The sniffed bytes not yet read back.
    fn rest(&self) -> &[u8] {
        &self.bytes[usize::from(self.pos)..usize::from(self.len)]
    }

    fn is_h2(&self) -> bool {
        self.bytes == *H2_PREFACE && usize::from(self.len) == H2_PREFACE.len()
    }
}

/// Reads until the bytes are the whole HTTP/2 preface or cannot be; at most 24.
async fn sniff(stream: &mut TcpStream) -> std::io::Result<Prefix> {
    let mut p = Prefix {
        bytes: [0; 24],
        len: 0,
        pos: 0,
    };
    let mut n = 0;
    while n < p.bytes.len() {
        let m = stream.read(&mut p.bytes[n..]).await?;
        if m == 0 {
            break;
        }
        n += m;
        if p.bytes[..n] != H2_PREFACE[..n] {
            break;
        }
    }
    p.len = u8::try_from(n).unwrap_or(24);
    Ok(p)
}

/// A stream that first yields the sniffed bytes again.
#[derive(Debug)]
struct Prefixed {
    prefix: Prefix,
    io: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let p = &mut self.prefix;
        if p.pos < p.len {
            let rest = &p.bytes[usize::from(p.pos)..usize::from(p.len)];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            p.pos += u8::try_from(n).unwrap_or(0);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_types::full;
    use tokio::sync::{Notify, oneshot};

    async fn start(
        handler: Handler,
        config: ServeConfig,
    ) -> (
        SocketAddr,
        oneshot::Sender<()>,
        tokio::task::JoinHandle<ServeStats>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(http_serve(
            listener,
            handler,
            async {
                let _ = rx.await;
            },
            config,
        ));
        (addr, tx, task)
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_requests_with_peer_and_signal() {
        let h = Handler::new(|req: http_types::Request| async move {
            let peer = req
                .extensions()
                .get::<PeerAddr>()
                .map(|p| p.0.ip().to_string());
            let has_signal = req.extensions().get::<Shutdown>().is_some();
            Response::new(full(format!("{} {has_signal}", peer.unwrap_or_default())))
        });
        let (addr, stop, task) = start(h, ServeConfig::default()).await;
        let res = get(addr, "/").await;
        assert!(res.starts_with("HTTP/1.1 200 OK"), "{res}");
        assert!(res.ends_with("127.0.0.1 true"), "{res}");
        stop.send(()).unwrap();
        let stats = task.await.unwrap();
        assert_eq!(
            stats,
            ServeStats {
                connections: 1,
                aborted: 0
            }
        );
    }

    #[tokio::test]
    async fn serves_http2_with_prior_knowledge() {
        let h = Handler::new(|req: http_types::Request| async move {
            Response::new(full(format!("{:?}", req.version())))
        });
        let (addr, stop, task) = start(h, ServeConfig::default()).await;
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = http::Request::builder()
            .uri(format!("http://{addr}/"))
            .body(http_body_util::Empty::<http_types::Bytes>::new())
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        assert_eq!(res.version(), http::Version::HTTP_2);
        let body = http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(&body[..], b"HTTP/2.0");
        drop(sender);
        stop.send(()).unwrap();
        assert_eq!(task.await.unwrap().aborted, 0);
    }

    #[tokio::test]
    async fn a_silent_connection_does_not_hold_up_shutdown() {
        let h = Handler::new(|_| async { Response::new(full("")) });
        let config = ServeConfig {
            drain_timeout: Duration::from_secs(30),
            ..ServeConfig::default()
        };
        let (addr, stop, task) = start(h, config).await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        // The server has accepted it once a request on another connection is answered.
        assert!(get(addr, "/").await.starts_with("HTTP/1.1 200"));
        stop.send(()).unwrap();
        let stats = task.await.unwrap();
        assert_eq!(
            stats,
            ServeStats {
                connections: 2,
                aborted: 0
            }
        );
        let mut rest = Vec::new();
        assert_eq!(
            silent.read_to_end(&mut rest).await.unwrap(),
            0,
            "closed without a word"
        );
    }

    #[tokio::test]
    async fn long_response_that_watches_the_signal_ends_on_shutdown() {
        // A body that never ends by itself, only when the server shuts down.
        let h = Handler::new(|req: http_types::Request| async move {
            let body = SignalBody {
                first: Some(http_types::Bytes::from_static(b"first")),
                wait: Box::pin(Shutdown::from_request(&req).wait()),
            };
            Response::new(http_types::boxed(body))
        });
        let config = ServeConfig {
            drain_timeout: Duration::from_secs(30),
            ..ServeConfig::default()
        };
        let (addr, stop, task) = start(h, config).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).contains("200 OK"));
        stop.send(()).unwrap();
        let stats = task.await.unwrap();
        assert_eq!(
            stats.aborted, 0,
            "the stream ended by itself, well before 30 s"
        );
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        let all = [&buf[..n], &rest[..]].concat();
        assert!(
            all.ends_with(b"0\r\n\r\n"),
            "chunked body finished cleanly: {:?}",
            String::from_utf8_lossy(&all)
        );
    }

    #[tokio::test]
    async fn stuck_response_is_aborted_at_the_drain_timeout() {
        let entered = Arc::new(Notify::new());
        let seen = entered.clone();
        let h = Handler::new(move |_| {
            let seen = seen.clone();
            async move {
                seen.notify_one();
                std::future::pending::<()>().await;
                Response::new(full(""))
            }
        });
        let config = ServeConfig {
            drain_timeout: Duration::from_millis(100),
            ..ServeConfig::default()
        };
        let (addr, stop, task) = start(h, config).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        entered.notified().await;
        stop.send(()).unwrap();
        let stats = task.await.unwrap();
        assert_eq!(stats.aborted, 1, "{stats:?}");
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
        assert!(rest.is_empty(), "no response was ever written");
    }

    #[tokio::test]
    async fn a_long_lived_body_goes_straight_to_the_socket_close_delimited() {
        let (tx, rx) = tokio::sync::mpsc::channel::<&'static str>(4);
        let rx = Arc::new(tokio::sync::Mutex::new(Some(rx)));
        let h = Handler::new(move |_| {
            let rx = rx.clone();
            async move {
                let rx = rx.lock().await.take().unwrap();
                long_lived(futures_stream(rx))
            }
        });
        let (addr, stop, task) = start(h, ServeConfig::default()).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        tx.send("one ").await.unwrap();
        tx.send("two").await.unwrap();
        drop(tx);
        let mut all = String::new();
        s.read_to_string(&mut all).await.unwrap();
        let (head, body) = all.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.0 200 OK"), "{head}");
        assert!(head.contains("connection: close"), "{head}");
        assert!(!head.contains("transfer-encoding"), "{head}");
        assert!(!head.contains("content-length"), "{head}");
        assert_eq!(body, "one two", "unframed, then closed");
        stop.send(()).unwrap();
        assert_eq!(task.await.unwrap().aborted, 0);
    }

    #[tokio::test]
    async fn a_long_lived_body_ends_when_the_client_goes_away() {
        let (gone_tx, gone_rx) = oneshot::channel::<()>();
        let gone_tx = Arc::new(std::sync::Mutex::new(Some(gone_tx)));
        let h = Handler::new(move |_| {
            let guard = DropSignal(gone_tx.lock().unwrap().take());
            async move { long_lived(PendingBody { _guard: guard }) }
        });
        let (addr, stop, task) = start(h, ServeConfig::default()).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.0 200 OK"));
        drop(s);
        gone_rx
            .await
            .expect("the body was dropped once the client left");
        stop.send(()).unwrap();
        assert_eq!(task.await.unwrap().aborted, 0);
    }

    #[tokio::test]
    async fn a_101_response_hands_the_socket_over_with_the_bytes_read_ahead() {
        let h = Handler::new(|mut req: http_types::Request| async move {
            let on = OnUpgrade::take(&mut req).expect("an upgrade request gets an OnUpgrade");
            tokio::spawn(async move {
                let mut io = on.await.unwrap();
                let mut got = [0u8; 5];
                io.read_exact(&mut got).await.unwrap();
                io.write_all(&got).await.unwrap();
                io.write_all(b" back").await.unwrap();
            });
            let mut res = Response::new(http_types::empty());
            *res.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
            res.headers_mut().insert(
                http::header::UPGRADE,
                http::HeaderValue::from_static("echo"),
            );
            res.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("upgrade"),
            );
            res
        });
        let (addr, stop, task) = start(h, ServeConfig::default()).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        // The first bytes of the new protocol arrive with the request.
        s.write_all(
            b"GET / HTTP/1.1\r\nhost: x\r\nupgrade: echo\r\nconnection: upgrade\r\n\r\nhello",
        )
        .await
        .unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).await.unwrap();
        let all = String::from_utf8(all).unwrap();
        assert!(all.starts_with("HTTP/1.1 101 Switching Protocols"), "{all}");
        assert!(all.ends_with("\r\n\r\nhello back"), "{all}");
        stop.send(()).unwrap();
        assert_eq!(task.await.unwrap().aborted, 0);
    }

    #[tokio::test]
    async fn a_request_without_upgrade_has_no_on_upgrade() {
        let h = Handler::new(|mut req: http_types::Request| async move {
            Response::new(full(format!("{}", OnUpgrade::take(&mut req).is_some())))
        });
        let (addr, stop, task) = start(h, ServeConfig::default()).await;
        assert!(get(addr, "/").await.ends_with("false"));
        stop.send(()).unwrap();
        task.await.unwrap();
    }

    /// A response marked [`LongLived`].
    fn long_lived(
        body: impl http_body::Body<Data = http_types::Bytes, Error = Infallible> + Send + 'static,
    ) -> Response {
        let mut res = Response::new(http_types::boxed(body));
        res.extensions_mut().insert(LongLived);
        res
    }

    /// A body of the strings a channel receives.
    fn futures_stream(
        rx: tokio::sync::mpsc::Receiver<&'static str>,
    ) -> impl http_body::Body<Data = http_types::Bytes, Error = Infallible> + Send + 'static {
        struct Chan(tokio::sync::mpsc::Receiver<&'static str>);
        impl http_body::Body for Chan {
            type Data = http_types::Bytes;
            type Error = Infallible;
            fn poll_frame(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Infallible>>> {
                self.0.poll_recv(cx).map(|s| {
                    s.map(|s| {
                        Ok(http_body::Frame::data(http_types::Bytes::from_static(
                            s.as_bytes(),
                        )))
                    })
                })
            }
        }
        Chan(rx)
    }

    /// Sends on drop.
    struct DropSignal(Option<oneshot::Sender<()>>);
    impl Drop for DropSignal {
        fn drop(&mut self) {
            if let Some(tx) = self.0.take() {
                let _ = tx.send(());
            }
        }
    }

    /// A body that never yields, holding a guard.
    struct PendingBody {
        _guard: DropSignal,
    }
    impl http_body::Body for PendingBody {
        type Data = http_types::Bytes;
        type Error = Infallible;
        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Infallible>>> {
            Poll::Pending
        }
    }

    /// One chunk, then nothing until the shutdown signal fires.
    struct SignalBody {
        first: Option<http_types::Bytes>,
        wait: Pin<Box<http_types::ShutdownWait>>,
    }

    impl http_body::Body for SignalBody {
        type Data = http_types::Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Infallible>>> {
            if let Some(b) = self.first.take() {
                return Poll::Ready(Some(Ok(http_body::Frame::data(b))));
            }
            self.wait.as_mut().poll(cx).map(|()| None)
        }
    }
}
