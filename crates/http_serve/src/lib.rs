//! Serves a handler on a TCP listener over HTTP/1.1 and HTTP/2 until a shutdown future completes, then drains within a bounded timeout.
//!
//! Built on hyper 1 and hyper-util's automatic HTTP/1.1 / HTTP/2 connection
//! builder, with upgrades enabled (WebSockets). Every request carries the
//! server's [`Shutdown`] signal and the peer address ([`PeerAddr`]) in its
//! extensions.
//!
//! Shutdown, when the `shutdown` future completes:
//!
//! 1. stop accepting; the listener is closed;
//! 2. fire the [`Shutdown`] signal, so long-lived responses end on their own
//!    (SSE streams finish their body, WebSocket handlers send close 1001);
//! 3. ask every connection to close gracefully (HTTP/1.1 after the response
//!    in flight, HTTP/2 with GOAWAY);
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
use std::time::Duration;

use http_types::{Handler, Shutdown, boxed};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// How the server behaves; every field has a default.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// How long connections get to finish after shutdown starts before they
    /// are aborted. Default: 5 seconds.
    pub drain_timeout: Duration,
    /// Back-off after a failed `accept` (for example too many open files), so
    /// the loop does not spin. Default: 50 ms.
    pub accept_backoff: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            drain_timeout: Duration::from_secs(5),
            accept_backoff: Duration::from_millis(50),
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
    let graceful = GracefulShutdown::new();
    let mut conns = JoinSet::new();
    let mut stats = ServeStats::default();
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(done) = conns.join_next(), if !conns.is_empty() => {
                if let Ok(Err(e)) = done {
                    tracing::debug!(target: "http", error = %e, "connection ended with an error");
                }
            }
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
                let handler = handler.clone();
                let signal = signal.clone();
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let mut req = req.map(boxed);
                    req.extensions_mut().insert(signal.clone());
                    req.extensions_mut().insert(PeerAddr(peer));
                    let fut = handler.call(req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned();
                let conn = graceful.watch(conn);
                // Spawned as is, not inside an async block that would hold
                // a second copy of its state: the task is half the size.
                conns.spawn(conn);
            }
        }
    }
    drop(listener);
    signal.trigger();
    let drained = tokio::time::timeout(config.drain_timeout, graceful.shutdown()).await;
    if drained.is_err() {
        stats.aborted = conns.len();
        tracing::warn!(target: "http", open = stats.aborted, "drain timeout: aborting connections");
    }
    conns.shutdown().await;
    stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_types::{Response, full};
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
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
