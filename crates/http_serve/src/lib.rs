//! Serves a handler on a TCP listener over HTTP/1.1 and HTTP/2, plain or TLS (ALPN), until a shutdown future completes, then drains within a bounded timeout.
//!
//! Built on hyper 1: each connection is HTTP/2 when it opens with the HTTP/2
//! preface (prior knowledge), HTTP/1.1 otherwise. Every request carries the
//! server's [`Shutdown`] signal, the peer address ([`PeerAddr`]) and the
//! server's limits ([`ServeLimits`]) in its extensions.
//!
//! **TLS** ([`ServeConfig::tls`], [`TlsConfig`]): `http_serve` terminates
//! TLS itself (rustls) and offers ALPN `h2` and `http/1.1`, so browsers get
//! HTTP/2 (many SSE streams on one connection, past HTTP/1.1's six per
//! host) while WebSocket clients, which ask for `http/1.1`, upgrade as on
//! plain TCP. A client that offers no ALPN is sniffed as on plain TCP.
//! Everything below holds over TLS too; the handshake is part of the time
//! to the first request head, and a failed one closes only its connection.
//! TLS is the `tls` feature, on by default; with `default-features = false`
//! nothing of rustls (nor aws-lc-rs, a C build) is compiled, and
//! [`TlsConfig`]'s constructors answer [`TlsError::Disabled`] (the registry's
//! `fn serve` and `realtime-demo` build it so).
//!
//! Each connection runs in a `tracing` span `conn` with its `id` (from 1),
//! `peer`, `tls` and, on TLS, the `alpn` protocol chosen, so events logged
//! while serving it (by the handler too) are attributed to it.
//!
//! Once hyper is done with an HTTP/1.1 connection, `http_serve` can take the
//! socket back (hyper's `poll_without_shutdown` and `into_parts`):
//!
//! - **Upgrades.** A request with an `Upgrade` header carries an [`OnUpgrade`];
//!   answer `101` and the stream is handed over (TCP or TLS, [`Io`]), with
//!   any bytes read ahead ([`Upgraded`]). [`OnUpgrade::serve`] runs the new
//!   protocol inside the connection's task, so shutdown drains it like any
//!   other connection.
//! - **Long-lived bodies.** A response marked [`LongLived`]
//!   (SSE) gets its head from hyper, close-delimited, then its body is written
//!   straight to the socket, without hyper's per-connection buffers: each
//!   frame with one `write` as it comes (an SSE stream's frame is everything
//!   queued since the last one), the client going away noticed by reading.
//!
//! # Memory of an idle long-lived connection
//!
//! On plain TCP, once hyper is done, the connection's task *is* the
//! stream's state: the task's future is written out (not an `async fn`,
//! which keeps room for the largest state it can be in) and holds the
//! socket (40 bytes), the body (16), the write timeout (16), a pointer to a
//! stall box (8) and the `tracing` span (40). No boxed future, no timer, no
//! read buffer: the timer of the write timeout and the rest of a frame the
//! socket did not take are boxed only while a write waits. What this crate
//! keeps per idle connection, in bytes asked of the allocator (measured with
//! heaptrack at 5,000 idle SSE streams of `rt-server`):
//!
//! | what | bytes |
//! |---|---:|
//! | the task (tokio's header, scheduler links and waker, then the future above; tokio rounds a task up to 128-byte steps) | 256 |
//! | the socket's registration with tokio's I/O driver (`ScheduledIo`, cache-padded by tokio) | 256 |
//! | the connection's entry in the server's `JoinSet` (what the drain waits for and aborts) | 56 |
//!
//! So 568 bytes, plus the body's own (an SSE stream: about 250 more, see
//! `sse_handler`). Before the task was written out, the same connection held
//! a 640-byte task (an `async fn` of 448 bytes with its span) and a 408-byte
//! boxed write future. TLS connections keep the rustls state (tens of KiB,
//! its buffers) and a boxed writer.
//!
//! Limits ([`ServeConfig`]), so that slow or silent peers cost little and
//! go away:
//!
//! - **Header read timeout** (10 s): a connection has that long from accept
//!   to send its first request head, and an HTTP/1.1 keep-alive connection
//!   that long for each next one, idle time included; then it is closed.
//! - **Pending connections** (1,024): a connection is pending from accept
//!   until its first request head has been read. At the cap, a new
//!   connection takes the place of the oldest pending one once that has been
//!   pending for a tenth of the header read timeout (1 s); until then, or
//!   until a pending connection ends, accepting waits and new connections
//!   queue in the listen backlog. So slowloris connections push out each
//!   other, and a burst of clients that send their requests at once is
//!   served in full rather than cut. Counting is one atomic per connection;
//!   the accept loop alone keeps the order, without a lock.
//! - **Write timeout** (10 s): a long-lived body whose socket takes no byte
//!   for that long is dropped with its connection; any progress starts the
//!   wait over (over TLS, what rustls holds, at most 64 KiB, must also
//!   drain in that time). Every request carries it in [`ServeLimits`], for
//!   upgraded protocols to apply to their own writes.
//!
//! Shutdown, when the `shutdown` future completes:
//!
//! 1. stop accepting; the listener is closed;
//! 2. fire the [`Shutdown`] signal, so long-lived responses end on their own
//!    (SSE streams finish their body, WebSocket handlers send close 1001);
//! 3. ask every connection to close gracefully (HTTP/1.1 after the response
//!    in flight, HTTP/2 with GOAWAY; TLS with close_notify); pending
//!    connections (silent, or with part of their first request head or of
//!    a TLS handshake) are closed;
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
//! // SIGINT (Ctrl-C) or SIGTERM (containers, systemd) starts the drain.
//! let stop = shutdown_signal::shutdown_signal()?;
//! let stats = http_serve(listener, app, async move { stop.await; }, ServeConfig::default()).await;
//! println!("served {} connections", stats.connections);
//! # Ok(()) }
//! ```
//!
//! Over TLS, with a PEM certificate chain and key:
//!
//! ```no_run
//! use http_serve::{http_serve, ServeConfig, TlsConfig};
//! # use http_types::{full, Handler, Response};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! # let app = Handler::new(|_| async { Response::new(full("hello")) });
//! let tls = TlsConfig::from_pem_files("cert.pem", "key.pem")?; // ALPN h2, http/1.1
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:443").await?;
//! let config = ServeConfig { tls: Some(tls), ..ServeConfig::default() };
//! let stop = shutdown_signal::shutdown_signal()?;
//! http_serve(listener, app, async move { stop.await; }, config).await;
//! # Ok(()) }
//! ```
//!
//! # Errors
//!
//! Serving does not fail: a connection that breaks is closed and logged at
//! `debug`. Loading a certificate and key does: [`TlsError`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

#[cfg(feature = "tls")]
use http_body_util::BodyExt;
use http_types::{Body, BoxFuture, Bytes, Handler, LongLived, Response, Shutdown, boxed};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
#[cfg(feature = "tls")]
use tokio::io::AsyncWriteExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tracing::Instrument;

mod pending;
mod tls;
mod upgrade;
use pending::{PendingQueue, Ticket};
pub use tls::{Io, TlsConfig, TlsError};
/// The rustls crate [`TlsConfig`] is made of (`ServerConfig`, `pki_types`).
#[cfg(feature = "tls")]
pub use tokio_rustls::rustls;
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
    /// How long a client may take to send a request head. The first one
    /// (HTTP/1.1 or HTTP/2) is counted from accept, silence included; each
    /// later one on an HTTP/1.1 keep-alive connection from when the server
    /// is ready to read it, so it is also how long such a connection may sit
    /// idle. Slower connections are closed. Default: 10 seconds.
    pub header_read_timeout: Duration,
    /// How many connections may be pending at once: accepted, without a
    /// complete first request head yet (one that has sent nothing counts).
    /// A connection stops being pending when its first request head has
    /// been read; answered keep-alive connections are not counted
    /// (`header_read_timeout` closes them when idle).
    ///
    /// At the cap, the oldest pending connection is closed to make room
    /// once it has been pending for a tenth of `header_read_timeout` (1 s
    /// by default). Until then, or until a pending connection ends,
    /// accepting waits: new connections queue in the listener's backlog
    /// (`TcpListener::bind` gives 128; a [`tokio::net::TcpSocket`] sets
    /// more). So a flood of slow or silent connections (slowloris) pushes
    /// out itself while a client that sends its request at once is served,
    /// and a burst of such clients larger than the cap is served in full,
    /// not cut. At least 1 (0 counts as 1).
    ///
    /// Default: 1,024. Clients send their head with or right after the
    /// handshake, so only the connections of about one round trip are
    /// pending; 1,024 leaves room for a burst as large, while the memory of
    /// pending connections (about 20 KiB each once part of a head has
    /// arrived, most of it hyper's read buffer) stays near 20 MiB.
    pub max_pending_requests: usize,
    /// How long a write may make no progress: when a long-lived body (SSE)
    /// has bytes to send and the socket takes none of them for this long,
    /// the connection is closed. Every byte the socket takes starts it
    /// over, so a slow but steady reader is kept. Once a send buffer is
    /// full, Linux takes more only when about a third of it is free again,
    /// so a reader must drain that much in this time (the kernel sizes the
    /// buffer, by default up to 4 MiB). Upgraded protocols find it in
    /// [`ServeLimits`]. Default: 10 seconds.
    pub write_timeout: Duration,
    /// Serve TLS (HTTPS, WSS) on every connection with this certificate,
    /// the protocol chosen by ALPN (`h2` or `http/1.1`, see [`TlsConfig`]).
    /// The handshake is part of the first request head's time: it counts
    /// against `header_read_timeout` and `max_pending_requests`. A failed
    /// handshake closes that connection only. Default: `None`, plain TCP.
    pub tls: Option<TlsConfig>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            drain_timeout: Duration::from_secs(5),
            accept_backoff: Duration::from_millis(50),
            header_read_timeout: Duration::from_secs(10),
            max_pending_requests: 1024,
            write_timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}

/// The peer's address, in every request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The server's limits, in every request's extensions, for a protocol that
/// takes over the connection after an upgrade to apply to its own writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeLimits {
    /// [`ServeConfig::write_timeout`]: how long a write may wait with no
    /// byte taken before the connection is given up.
    pub write_timeout: Duration,
}

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
    let mut pending = PendingQueue::new(
        config.max_pending_requests,
        config.header_read_timeout / PENDING_GRACE_DIVISOR,
    );
    let limits = ServeLimits {
        write_timeout: config.write_timeout,
    };
    let tls = config.tls.as_ref().map(TlsConfig::acceptor);
    tokio::pin!(shutdown);
    loop {
        // At the cap, accepting waits (new connections queue in the listen
        // backlog) until a pending connection ends or is old enough to evict.
        let full = pending.make_room();
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            () = pending.wait_room(full.unwrap_or_else(tokio::time::Instant::now)), if full.is_some() => {}
            accepted = listener.accept(), if full.is_none() => {
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
                let ticket = pending.admit();
                let conn = Conn {
                    peer,
                    handler: handler.clone(),
                    signal: signal.clone(),
                    limits,
                    header_read_timeout: config.header_read_timeout,
                    tls: tls.clone(),
                };
                // Whatever happens on the connection is logged inside its span.
                let span = tracing::info_span!(
                    target: "http",
                    "conn",
                    id = stats.connections,
                    %peer,
                    tls = tls.is_some(),
                    alpn = tracing::field::Empty,
                );
                conns.spawn(connection(stream, conn, ticket).instrument(span));
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

/// A pending connection may be evicted to make room once it has been pending
/// for this fraction of the header read timeout (1 s by default).
const PENDING_GRACE_DIVISOR: u32 = 10;

/// The HTTP/2 connection preface a client sends first (RFC 9113, 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves one connection: HTTP/2 when it opens with the preface, HTTP/1.1
/// otherwise; on the shutdown signal, closes it gracefully. Until its first
/// request head is read it is pending, and closed at the header read
/// timeout, at shutdown, or when a newer connection takes its place.
///
/// Sniffing the protocol here, rather than with hyper-util's `auto` builder,
/// keeps an idle streaming connection about 5 KiB smaller.
fn connection(
    stream: TcpStream,
    conn: Conn,
    ticket: Ticket,
) -> ConnTask<impl Future<Output = Option<(Io, Takeover, Bytes)>> + Send> {
    ConnTask {
        write_timeout: conn.limits.write_timeout,
        // Boxed, so that once HTTP is done a long-lived stream or an
        // upgraded socket keeps only the task, without hyper's state.
        phase: Phase::Http(Box::pin(serve_pending(stream, conn, ticket))),
    }
}

/// A connection's task. Written out rather than an `async fn`, so that once
/// HTTP is done an SSE stream's whole state is the task itself: the socket,
/// the body and a few bytes; no boxed future, no timer, no read buffer.
/// (An `async fn` keeps room for the largest state it can be in, and the
/// task's allocation grows in steps of 128 bytes.)
struct ConnTask<P> {
    write_timeout: Duration,
    phase: Phase<P>,
}

/// What a connection is doing.
enum Phase<P> {
    /// Serving HTTP (TLS handshake, pending state, hyper): boxed, and
    /// freed once hyper is done.
    Http(Pin<Box<P>>),
    /// A long-lived body written to a plain TCP socket.
    Body(LongLivedTcp),
    /// The rest, after HTTP: an upgraded protocol, a long-lived body over
    /// TLS, a TLS close.
    Other(BoxFuture<()>),
}

impl<P> Future for ConnTask<P>
where
    P: Future<Output = Option<(Io, Takeover, Bytes)>>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match &mut this.phase {
                Phase::Http(http) => {
                    let Some((stream, next, read_first)) =
                        std::task::ready!(http.as_mut().poll(cx))
                    else {
                        return Poll::Ready(());
                    };
                    match after_http(stream, next, read_first, this.write_timeout, cx) {
                        Some(phase) => this.phase = phase,
                        None => return Poll::Ready(()),
                    }
                }
                Phase::Body(body) => return body.poll(cx, this.write_timeout),
                Phase::Other(fut) => return fut.as_mut().poll(cx),
            }
        }
    }
}

/// What the connection becomes once hyper is done with it; `None` when it
/// is closed already.
#[cfg_attr(not(feature = "tls"), allow(unused_variables))]
fn after_http<P>(
    stream: Io,
    next: Takeover,
    read_first: Bytes,
    write_timeout: Duration,
    cx: &mut Context<'_>,
) -> Option<Phase<P>> {
    match (next, stream) {
        (Takeover::None, Io::Tcp(mut stream)) => {
            drop(read_first);
            // A TCP shutdown does not wait.
            let _ = Pin::new(&mut stream).poll_shutdown(cx);
            None
        }
        #[cfg(feature = "tls")]
        (Takeover::None, Io::Tls(mut stream)) => {
            drop(read_first);
            // close_notify, then FIN; a peer that reads nothing does not hold it.
            Some(Phase::Other(Box::pin(async move {
                let _ = tokio::time::timeout(write_timeout, stream.shutdown()).await;
            })))
        }
        (Takeover::Upgrade(up), stream) => up
            .complete(Upgraded::new(stream, read_first))
            .map(Phase::Other),
        (Takeover::Body(body), stream) => {
            // Nothing the client sends now is read: free hyper's buffer first.
            drop(read_first);
            Some(match stream {
                Io::Tcp(stream) => Phase::Body(LongLivedTcp {
                    stream,
                    body,
                    stall: None,
                }),
                #[cfg(feature = "tls")]
                Io::Tls(stream) => {
                    Phase::Other(Box::pin(write_long_lived_tls(stream, body, write_timeout)))
                }
            })
        }
    }
}

/// Serves HTTP on the connection while its pending state is watched: closes
/// it if it is still pending at the header read timeout, when a newer
/// connection evicts it, or at shutdown.
async fn serve_pending(
    stream: TcpStream,
    conn: Conn,
    ticket: Ticket,
) -> Option<(Io, Takeover, Bytes)> {
    let Ticket { slot, evicted } = ticket;
    let pending = FinishOnDrop(slot);
    let (peer, header_read_timeout) = (conn.peer, conn.header_read_timeout);
    let signal = conn.signal.clone();
    tokio::select! {
        s = serve_http(stream, conn, pending.0.clone()) => s,
        why = pending::watch(&pending.0, evicted, header_read_timeout, signal.wait()) => {
            tracing::debug!(target: "http", %peer, "{why}");
            None
        }
    }
}

/// What a connection's task needs besides its socket.
struct Conn {
    peer: SocketAddr,
    handler: Handler,
    signal: Shutdown,
    limits: ServeLimits,
    header_read_timeout: Duration,
    tls: Option<tls::Acceptor>,
}

/// Ends a connection's pending state when dropped, however its task ends.
struct FinishOnDrop(Arc<pending::Slot>);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// Completes the TLS handshake if any, tells the protocol (ALPN, else by
/// sniffing) and serves HTTP until the connection is done with it.
/// Returns, for HTTP/1.1, the stream, what it becomes and the bytes read but
/// not used, unless it failed or closed.
async fn serve_http(
    stream: TcpStream,
    conn: Conn,
    pending: Arc<pending::Slot>,
) -> Option<(Io, Takeover, Bytes)> {
    let mut stream = match &conn.tls {
        None => Io::Tcp(stream),
        #[cfg(not(feature = "tls"))]
        Some(never) => match *never {},
        // Boxed: a plain connection's state does not carry rustls' handshake.
        #[cfg(feature = "tls")]
        Some(tls) => tokio::select! {
            s = Box::pin(tls.accept(stream)) => match s {
                Ok(s) => Io::Tls(Box::new(s)),
                Err(e) => {
                    tracing::debug!(target: "http", error = %e, "TLS handshake failed");
                    return None;
                }
            },
            () = conn.signal.wait() => return None,
        },
    };
    let alpn = stream.alpn().map(<[u8]>::to_vec);
    if let Some(alpn) = &alpn {
        tracing::Span::current().record("alpn", String::from_utf8_lossy(alpn).as_ref());
    }
    let (prefix, h2) = match alpn.as_deref() {
        Some(b"h2") => (Prefix::EMPTY, true),
        Some(_) => (Prefix::EMPTY, false),
        None => {
            let sniffed = tokio::select! {
                s = sniff(&mut stream) => s,
                () = conn.signal.wait() => return None,
            };
            let prefix = sniffed.ok()?; // broken before its first bytes
            let h2 = prefix.is_h2();
            (prefix, h2)
        }
    };
    let io = TokioIo::new(Prefixed { prefix, io: stream });
    let service = Service {
        handler: conn.handler,
        signal: conn.signal.clone(),
        peer: conn.peer,
        limits: conn.limits,
        pending,
        takeover: Arc::new(Mutex::new(Takeover::None)),
        h2,
    };
    // hyper's state is boxed apart, so that a connection still silent
    // costs only the sniff.
    if h2 {
        Box::pin(serve_h2(io, service, conn.signal)).await;
        return None;
    }
    Box::pin(serve_h1(io, service, conn.signal, conn.header_read_timeout)).await
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
) -> Option<(Io, Takeover, Bytes)> {
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

/// A long-lived body written straight to a plain TCP socket until it ends,
/// the client goes away (noticed by reading: end of file or an error), or
/// the socket takes no byte for the write timeout.
///
/// Each frame (for an SSE stream, everything queued since the last one) is
/// written with one `write` as soon as it comes. Only a write the socket
/// does not take in full keeps the rest, with the write timeout's timer,
/// in a box until it drains: an idle stream holds the socket and the body,
/// nothing else.
struct LongLivedTcp {
    stream: TcpStream,
    body: Body,
    stall: Option<Box<Stall>>,
}

/// The part of a frame the socket has not taken yet, and since when.
struct Stall {
    rest: Bytes,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl LongLivedTcp {
    fn poll(&mut self, cx: &mut Context<'_>, write_timeout: Duration) -> Poll<()> {
        loop {
            if let Some(stall) = &mut self.stall {
                match write_ready(&self.stream, &stall.rest) {
                    Ok(0) => {}
                    Ok(n) if n == stall.rest.len() => {
                        self.stall = None;
                        continue;
                    }
                    Ok(n) => {
                        // Progress starts the wait over.
                        let _ = stall.rest.split_to(n);
                        let deadline = tokio::time::Instant::now() + write_timeout;
                        stall.timer.as_mut().reset(deadline);
                    }
                    Err(e) => return closed(&e),
                }
                match self.stream.poll_write_ready(cx) {
                    Poll::Ready(Ok(())) => continue,
                    Poll::Ready(Err(e)) => return closed(&e),
                    Poll::Pending => {}
                }
                std::task::ready!(stall.timer.as_mut().poll(cx));
                return closed(&std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "write timeout: the peer took no byte",
                ));
            }
            match http_body::Body::poll_frame(Pin::new(&mut self.body), cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    match write_ready(&self.stream, &data) {
                        Ok(n) if n == data.len() => {}
                        Ok(n) => {
                            self.stall = Some(Box::new(Stall {
                                rest: data.slice(n..),
                                timer: Box::pin(tokio::time::sleep(write_timeout)),
                            }));
                        }
                        Err(e) => return closed(&e),
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::debug!(target: "http", error = %e, "long-lived body failed");
                    return Poll::Ready(());
                }
                Poll::Ready(None) => {
                    // A TCP shutdown does not wait.
                    let _ = Pin::new(&mut self.stream).poll_shutdown(cx);
                    return Poll::Ready(());
                }
                Poll::Pending => break,
            }
        }
        // The body waits: is the client still there? The request is
        // answered, so whatever else it sends is dropped; end of file means
        // it is gone.
        loop {
            match self.stream.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => match self.stream.try_read(&mut [0u8; 256]) {
                    Ok(0) => return Poll::Ready(()),
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return Poll::Ready(()),
                },
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Logs why a long-lived body's connection ended early.
fn closed(e: &std::io::Error) -> Poll<()> {
    tracing::debug!(target: "http", error = %e, "long-lived body: connection closed");
    Poll::Ready(())
}

/// Writes what the socket takes of `buf` now, without waiting: how many
/// bytes, all of them unless it is full.
fn write_ready(stream: &TcpStream, buf: &[u8]) -> std::io::Result<usize> {
    let mut off = 0;
    while off < buf.len() {
        match stream.try_write(&buf[off..]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => off += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(off)
}

/// Writes all of `buf` and flushes it, failing with `TimedOut` when no
/// byte is taken for `limit`; each write that takes some starts the wait
/// over. (A TCP flush is nothing; a TLS one sends what rustls holds, at
/// most its 64 KiB buffer, within `limit`.)
#[cfg(feature = "tls")]
async fn write_progressing<S: AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &[u8],
    limit: Duration,
) -> std::io::Result<()> {
    let timed_out = || {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "write timeout: the peer took no byte",
        )
    };
    let mut off = 0;
    while off < buf.len() {
        match tokio::time::timeout(limit, stream.write(&buf[off..])).await {
            Ok(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(Ok(n)) => off += n,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(timed_out()),
        }
    }
    tokio::time::timeout(limit, stream.flush())
        .await
        .map_err(|_| timed_out())?
}

#[cfg(feature = "tls")]
/// [`write_long_lived`] over TLS: every frame is encrypted and flushed
/// under the write timeout; the client going away is noticed by reading
/// (end of file, close_notify or an error). Ends with close_notify.
async fn write_long_lived_tls(
    mut stream: Box<tokio_rustls::server::TlsStream<TcpStream>>,
    mut body: Body,
    write_timeout: Duration,
) {
    let mut scratch = [0u8; 256];
    loop {
        tokio::select! {
            frame = body.frame() => match frame {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else { continue };
                    let written =
                        Box::pin(write_progressing(&mut *stream, &data, write_timeout)).await;
                    if let Err(e) = written {
                        tracing::debug!(target: "http", error = %e, "long-lived body: connection closed");
                        return;
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(target: "http", error = %e, "long-lived body failed");
                    return;
                }
                None => break,
            },
            // Whatever else the client sends is dropped.
            read = stream.read(&mut scratch) => {
                if !matches!(read, Ok(n) if n > 0) {
                    return;
                }
            }
        }
    }
    let _ = tokio::time::timeout(write_timeout, stream.shutdown()).await;
}

/// The per-connection hyper service: adds the signal, the peer, the limits
/// and, for an upgrade request, an [`OnUpgrade`] to each request; ends the
/// connection's pending state at its first request; notes what the
/// connection becomes after the response.
struct Service {
    handler: Handler,
    signal: Shutdown,
    peer: SocketAddr,
    limits: ServeLimits,
    pending: Arc<pending::Slot>,
    takeover: Arc<Mutex<Takeover>>,
    h2: bool,
}

impl hyper::service::Service<hyper::Request<hyper::body::Incoming>> for Service {
    type Response = Response;
    type Error = Infallible;
    type Future = Respond;

    fn call(&self, req: hyper::Request<hyper::body::Incoming>) -> Respond {
        // hyper calls this once a request head is complete.
        self.pending.finish();
        let mut req = req.map(boxed);
        req.extensions_mut().insert(self.signal.clone());
        req.extensions_mut().insert(PeerAddr(self.peer));
        req.extensions_mut().insert(self.limits);
        let upgrade = (!self.h2 && req.headers().contains_key(http::header::UPGRADE)).then(|| {
            let (tx, on) = OnUpgrade::pair();
            req.extensions_mut().insert(on);
            tx
        });
        let direct = !self.h2 && req.method() != http::Method::HEAD;
        let fut = self.handler.call(req);
        Respond {
            fut,
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
    /// Nothing sniffed: the protocol is known (ALPN).
    const EMPTY: Prefix = Prefix {
        bytes: [0; 24],
        len: 0,
        pos: 0,
    };

    /// The sniffed bytes not yet read back.
    fn rest(&self) -> &[u8] {
        &self.bytes[usize::from(self.pos)..usize::from(self.len)]
    }

    fn is_h2(&self) -> bool {
        self.bytes == *H2_PREFACE && usize::from(self.len) == H2_PREFACE.len()
    }
}

/// Reads until the bytes are the whole HTTP/2 preface or cannot be; at most 24.
async fn sniff(stream: &mut Io) -> std::io::Result<Prefix> {
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
    io: Io,
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
    use tokio::io::AsyncWriteExt;
    use tokio::sync::{Notify, oneshot};

    async fn start(
        handler: Handler,
        config: ServeConfig,
    ) -> (
        SocketAddr,
        oneshot::Sender<()>,
        tokio::task::JoinHandle<ServeStats>,
    ) {
        start_on(
            TcpListener::bind("127.0.0.1:0").await.unwrap(),
            handler,
            config,
        )
    }

    /// A listener on 127.0.0.1 whose backlog holds `backlog` connections.
    fn listen(backlog: u32) -> TcpListener {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        socket.listen(backlog).unwrap()
    }

    fn start_on(
        listener: TcpListener,
        handler: Handler,
        config: ServeConfig,
    ) -> (
        SocketAddr,
        oneshot::Sender<()>,
        tokio::task::JoinHandle<ServeStats>,
    ) {
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
    async fn serves_requests_with_the_peer_address_and_shutdown_signal_in_extensions() {
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
    async fn a_half_sent_request_head_does_not_hold_up_shutdown() {
        let h = Handler::new(|_| async { Response::new(full("")) });
        let config = ServeConfig {
            drain_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(30),
            ..ServeConfig::default()
        };
        let (addr, stop, task) = start(h, config).await;
        let mut partial = slowloris(addr).await;
        // The server has accepted it once a request on another connection is answered.
        assert!(get(addr, "/").await.starts_with("HTTP/1.1 200"));
        stop.send(()).unwrap();
        let stats = tokio::time::timeout(WAIT, task)
            .await
            .expect("returned well before the drain timeout")
            .unwrap();
        assert_eq!(stats.aborted, 0);
        assert!(closed(&mut partial).await);
    }

    #[tokio::test]
    async fn a_long_response_that_watches_the_signal_ends_on_shutdown() {
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
    async fn a_stuck_response_is_aborted_at_the_drain_timeout() {
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

    /// How long any single wait of a test may take before it fails.
    const WAIT: Duration = Duration::from_secs(10);

    /// The partial request head of a slowloris client.
    const PARTIAL_HEAD: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n";

    /// Raises the soft limit of open files so a test can hold `need`.
    fn raise_fd_limit(need: u64) {
        let got = rlimit::increase_nofile_limit(need).unwrap_or(0);
        assert!(
            got >= need,
            "needs {need} open files, the limit allows {got}"
        );
    }

    fn ok_handler() -> Handler {
        Handler::new(|_| async { Response::new(full("ok")) })
    }

    /// A connection that sends part of a request head, then nothing.
    async fn slowloris(addr: SocketAddr) -> TcpStream {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(PARTIAL_HEAD).await.unwrap();
        s
    }

    /// Whether the server closes `s` within [`WAIT`] (what it sent first is skipped).
    async fn closed(s: &mut TcpStream) -> bool {
        let mut sink = Vec::new();
        tokio::time::timeout(WAIT, s.read_to_end(&mut sink))
            .await
            .is_ok()
    }

    /// Completes a slowloris head and reads the whole answer.
    async fn finish_head(s: &mut TcpStream) -> String {
        s.write_all(b"connection: close\r\n\r\n").await.unwrap();
        let mut out = String::new();
        tokio::time::timeout(WAIT, s.read_to_string(&mut out))
            .await
            .expect("answered in time")
            .unwrap();
        out
    }

    /// Reads one answer of `ok_handler` on a keep-alive connection.
    async fn read_ok(s: &mut TcpStream) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"\r\n\r\nok") {
            let n = tokio::time::timeout(WAIT, s.read(&mut buf))
                .await
                .expect("answered in time")
                .unwrap();
            assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(got).unwrap()
    }

    /// A `GET` on a new connection and how long it took to be answered.
    async fn timed_get(addr: SocketAddr) -> Duration {
        let t = std::time::Instant::now();
        let res = get(addr, "/").await;
        let took = t.elapsed();
        assert!(res.starts_with("HTTP/1.1 200 OK"), "{res}");
        took
    }

    #[test]
    fn the_defaults_are_the_documented_limits() {
        let c = ServeConfig::default();
        assert_eq!(c.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.max_pending_requests, 1024);
        assert_eq!(c.write_timeout, Duration::from_secs(10));
    }

    #[tokio::test]
    async fn requests_carry_the_serve_limits() {
        let h = Handler::new(|req: http_types::Request| async move {
            let limits = req.extensions().get::<ServeLimits>().copied();
            Response::new(full(format!("{:?}", limits.map(|l| l.write_timeout))))
        });
        let config = ServeConfig {
            write_timeout: Duration::from_millis(1234),
            ..ServeConfig::default()
        };
        let (addr, stop, task) = start(h, config).await;
        let res = get(addr, "/").await;
        assert!(res.ends_with("Some(1.234s)"), "{res}");
        stop.send(()).unwrap();
        assert_eq!(task.await.unwrap().aborted, 0);
    }

    /// Both framings at once is how requests are smuggled past proxies
    /// (RFC 9112, 6.1): hyper reads the body as chunked and closes the
    /// connection after answering, so nothing sent after it is a request.
    #[tokio::test]
    async fn content_length_with_transfer_encoding_closes_after_one_answer() {
        let (addr, stop, task) = start(ok_handler(), ServeConfig::default()).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\
              Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
              GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await
        .unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        let out = String::from_utf8_lossy(&out);
        assert_eq!(out.matches("HTTP/1.1 ").count(), 1, "{out}");
        assert!(
            out.to_ascii_lowercase().contains("connection: close"),
            "{out}"
        );
        stop.send(()).unwrap();
        assert_eq!(task.await.unwrap().aborted, 0);
    }

    #[tokio::test]
    async fn a_normal_client_is_served_promptly_among_1000_slowloris_connections() {
        raise_fd_limit(8192);
        let (addr, stop, task) = start(ok_handler(), ServeConfig::default()).await;
        let mut lorises = Vec::new();
        for _ in 0..1000 {
            lorises.push(slowloris(addr).await);
        }
        // Accepted in order: once this is answered, all 1,000 are pending.
        timed_get(addr).await;
        let mut took = Vec::new();
        for _ in 0..20 {
            took.push(timed_get(addr).await);
        }
        took.sort();
        let (median, max) = (took[took.len() / 2], took[took.len() - 1]);
        println!("GET with 1,000 slowloris connections open: median {median:?}, max {max:?}");
        assert!(max < Duration::from_millis(50), "{took:?}");
        // Below the cap nothing was closed: the oldest and the newest still
        // get their answer once they finish their head.
        let mut last = lorises.pop().unwrap();
        assert!(
            finish_head(&mut lorises[0])
                .await
                .starts_with("HTTP/1.1 200 OK")
        );
        assert!(finish_head(&mut last).await.starts_with("HTTP/1.1 200 OK"));
        // The 998 still pending are closed at shutdown, not waited for.
        stop.send(()).unwrap();
        let stats = tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
        assert_eq!(stats.connections, 1021);
        assert_eq!(stats.aborted, 0);
        drop(lorises);
    }

    #[tokio::test]
    async fn at_the_pending_cap_accepting_waits_then_the_oldest_pending_connection_is_closed() {
        raise_fd_limit(8192);
        let grace = Duration::from_millis(500);
        let config = ServeConfig {
            max_pending_requests: 100,
            header_read_timeout: grace * PENDING_GRACE_DIVISOR,
            ..ServeConfig::default()
        };
        // Room for the whole burst: what is not accepted waits there.
        let (addr, stop, task) = start_on(listen(1024), ok_handler(), config);
        let mut lorises = Vec::new();
        for _ in 0..300 {
            lorises.push(slowloris(addr).await);
        }
        // The burst fills the cap three times over: each hundred waits in the
        // backlog until the hundred before it is old enough to evict, and
        // this client after them.
        let waited = timed_get(addr).await;
        println!("GET behind a burst of 300 slowloris connections, cap 100: {waited:?}");
        assert!(waited >= 2 * grace, "{waited:?}");
        // The pending connections are old now: the next client takes the
        // place of the oldest at once.
        let took = timed_get(addr).await;
        println!("GET with 100 old slowloris connections pending, cap 100: {took:?}");
        assert!(took < Duration::from_millis(50), "{took:?}");
        for (i, s) in lorises[..=201].iter_mut().enumerate() {
            assert!(closed(s).await, "slowloris {i} was closed");
        }
        for s in &mut lorises[202..] {
            assert!(finish_head(s).await.starts_with("HTTP/1.1 200 OK"));
        }
        stop.send(()).unwrap();
        assert_eq!(task.await.unwrap().aborted, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_clients_over_the_pending_cap_is_served_in_full() {
        raise_fd_limit(16_384);
        let (addr, stop, task) = start_on(listen(4096), ok_handler(), ServeConfig::default());
        let n = 4000;
        let go = Arc::new(tokio::sync::Barrier::new(n));
        let mut clients = JoinSet::new();
        for _ in 0..n {
            let go = go.clone();
            clients.spawn(async move {
                go.wait().await;
                get(addr, "/").await.starts_with("HTTP/1.1 200 OK")
            });
        }
        let mut served = 0;
        while let Some(ok) = clients.join_next().await {
            served += usize::from(ok.unwrap());
        }
        assert_eq!(served, n, "no prompt client is closed to make room");
        stop.send(()).unwrap();
        assert_eq!(task.await.unwrap().aborted, 0);
    }

    #[tokio::test]
    async fn an_answered_keep_alive_connection_is_not_pending() {
        let config = ServeConfig {
            max_pending_requests: 1,
            header_read_timeout: Duration::from_secs(2),
            ..ServeConfig::default()
        };
        let (addr, stop, task) = start(ok_handler(), config).await;
        let mut kept = TcpStream::connect(addr).await.unwrap();
        kept.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(read_ok(&mut kept).await.starts_with("HTTP/1.1 200 OK"));
        let mut slow = slowloris(addr).await;
        // The one pending place is the slowloris connection's: this client
        // takes it once it is old enough (200 ms).
        timed_get(addr).await;
        assert!(closed(&mut slow).await);
        kept.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(read_ok(&mut kept).await.starts_with("HTTP/1.1 200 OK"));
        drop(kept);
        stop.send(()).unwrap();
        assert_eq!(task.await.unwrap().aborted, 0);
    }

    #[tokio::test]
    async fn slow_silent_and_idle_connections_are_closed_at_the_header_read_timeout() {
        let limit = Duration::from_millis(200);
        let config = ServeConfig {
            header_read_timeout: limit,
            ..ServeConfig::default()
        };
        let (addr, stop, task) = start(ok_handler(), config).await;
        let start = std::time::Instant::now();
        let mut partial = slowloris(addr).await;
        let mut h2 = TcpStream::connect(addr).await.unwrap();
        h2.write_all(H2_PREFACE).await.unwrap();
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(read_ok(&mut idle).await.starts_with("HTTP/1.1 200 OK"));
        let idle_from = std::time::Instant::now();
        for (name, s) in [
            ("partial head", &mut partial),
            ("HTTP/2 preface only", &mut h2),
            ("silent", &mut silent),
        ] {
            assert!(closed(s).await, "{name}: closed");
            let after = start.elapsed();
            assert!(after >= limit, "{name}: closed after {after:?}");
        }
        assert!(closed(&mut idle).await, "idle keep-alive: closed");
        let after = idle_from.elapsed();
        assert!(after >= limit, "idle keep-alive: closed after {after:?}");
        stop.send(()).unwrap();
        assert_eq!(task.await.unwrap().aborted, 0);
    }

    /// A long-lived response whose body repeats `chunk` forever; `gone`
    /// fires when the server drops the body.
    fn endless(chunk: http_types::Bytes) -> (Handler, oneshot::Receiver<()>) {
        let (gone_tx, gone_rx) = oneshot::channel::<()>();
        let gone_tx = Arc::new(std::sync::Mutex::new(Some(gone_tx)));
        let h = Handler::new(move |_| {
            let body = Endless {
                chunk: chunk.clone(),
                _guard: DropSignal(gone_tx.lock().unwrap().take()),
            };
            async move { long_lived(body) }
        });
        (h, gone_rx)
    }

    #[tokio::test]
    async fn a_long_lived_body_to_a_client_that_never_reads_is_dropped_at_the_write_timeout() {
        let limit = Duration::from_millis(200);
        let (h, gone) = endless(http_types::Bytes::from(vec![b'x'; 64 * 1024]));
        let config = ServeConfig {
            write_timeout: limit,
            ..ServeConfig::default()
        };
        let (addr, stop, task) = start(h, config).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let start = std::time::Instant::now();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::timeout(WAIT, gone)
            .await
            .expect("dropped in time")
            .expect("the body was dropped");
        let after = start.elapsed();
        assert!(after >= limit, "dropped after {after:?}");
        println!("never-reading client dropped after {after:?} (write timeout {limit:?})");
        // What was written before is there to read, then the end.
        let mut all = Vec::new();
        let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut all))
            .await
            .expect("the connection is closed");
        assert!(all.starts_with(b"HTTP/1.0 200 OK"));
        stop.send(()).unwrap();
        assert_eq!(task.await.unwrap().aborted, 0);
    }

    #[tokio::test]
    async fn a_slow_but_steady_reader_keeps_its_long_lived_body() {
        let limit = Duration::from_millis(500);
        // Each 8 MiB write takes the reader longer than the write timeout.
        let (h, mut gone) = endless(http_types::Bytes::from(vec![b'x'; 8 << 20]));
        let config = ServeConfig {
            write_timeout: limit,
            ..ServeConfig::default()
        };
        let (addr, stop, task) = start(h, config).await;
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(64 * 1024).unwrap();
        let mut s = socket.connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let start = std::time::Instant::now();
        let mut total = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        while total < 12 << 20 {
            let n = tokio::time::timeout(WAIT, s.read(&mut buf))
                .await
                .expect("bytes keep coming")
                .unwrap();
            assert!(n > 0, "closed after {total} bytes");
            total += n;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = start.elapsed();
        println!("slow reader: {total} bytes in {took:?}");
        assert!(took > 3 * limit, "the reader was slow: {took:?}");
        assert_eq!(
            gone.try_recv(),
            Err(oneshot::error::TryRecvError::Empty),
            "the body is still being written"
        );
        drop(s);
        tokio::time::timeout(WAIT, gone)
            .await
            .expect("dropped once the client left")
            .unwrap();
        stop.send(()).unwrap();
        assert_eq!(task.await.unwrap().aborted, 0);
    }

    /// What an idle long-lived connection keeps is its task: the future
    /// stays small enough for tokio's 256-byte task (about 104 bytes of
    /// header, links and waker, in 128-byte steps), and nothing else is
    /// boxed while no write waits.
    #[tokio::test]
    async fn an_idle_long_lived_connection_is_a_small_task() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let ticket = PendingQueue::new(1, Duration::from_secs(1)).admit();
        let conn = Conn {
            peer,
            handler: ok_handler(),
            signal: Shutdown::new(),
            limits: ServeLimits {
                write_timeout: Duration::from_secs(1),
            },
            header_read_timeout: Duration::from_secs(1),
            tls: None,
        };
        let task = connection(stream, conn, ticket).instrument(tracing::info_span!("conn"));
        let (future, writer) = (
            std::mem::size_of_val(&task),
            std::mem::size_of::<LongLivedTcp>(),
        );
        println!("connection task future: {future} bytes, long-lived writer: {writer} bytes");
        assert!(future <= 128, "{future} bytes");
        assert!(writer <= 64, "{writer} bytes");
    }

    /// A body that repeats one chunk forever, holding a guard.
    struct Endless {
        chunk: http_types::Bytes,
        _guard: DropSignal,
    }
    impl http_body::Body for Endless {
        type Data = http_types::Bytes;
        type Error = Infallible;
        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Infallible>>> {
            Poll::Ready(Some(Ok(http_body::Frame::data(self.chunk.clone()))))
        }
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
        wait: Pin<Box<http_types::WaitForCancellationFutureOwned>>,
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

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../http_serve.md")]
#[doc = include_str!("../../../types/infra/Io.md")]
#[doc = include_str!("../../../types/infra/OnUpgrade.md")]
#[doc = include_str!("../../../types/infra/TlsConfig.md")]
#[doc = include_str!("../../../types/infra/TlsError.md")]
#[doc = include_str!("../../../types/infra/UpgradeError.md")]
#[doc = include_str!("../../../types/infra/Upgraded.md")]
pub struct RegistryExamples;
