//! Serves WebSocket connections of a hub: upgrade, register, a reader and a writer per connection, ping and idle timeout, size limits and close codes.
//!
//! [`ws_handler`] is a plain [`Handler`] (so also a tower service). For each
//! request it
//!
//! 1. validates the handshake and the origin (`ws_upgrader`: 400, 403, 405,
//!    426 with a short body);
//! 2. refuses with `503` and a JSON body when [`WsConfig::max_connections`]
//!    are open or the hub is stopped, before upgrading;
//! 3. answers `101`, registers a [`WsClient`] in the hub and runs the
//!    connection: a **reader** (this connection's task) that hands text and
//!    binary messages to [`WsConfig::on_message`], and a **writer** task that
//!    drains the client's outbox, writes everything queued and flushes once.
//!
//! Behaviour, with the defaults of [`WsConfig`]:
//!
//! - **Ping** every `ping_interval` (30 s); a connection from which nothing
//!   (no frame, no pong) arrived for `idle_timeout` (75 s) is closed.
//! - **Limits**: a message over `max_message_size` (1 MiB) or a frame over
//!   `max_frame_size` closes with `1009`; invalid UTF-8 in a text message
//!   with `1007`; any other protocol error with `1002`. Only that connection.
//! - **Buffers** sized for many connections: a 512-byte read buffer
//!   (tungstenite's default is 128 KiB, about 1 GB at 10,000 idle sockets; a
//!   large message is still read whole, 512 bytes per read), a write buffer
//!   flushed at 64 KiB and bounded at 1 MiB.
//! - **Close**: pings, pongs and closes never wait behind queued data (the
//!   outbox gives a close first; tungstenite answers pings from the read
//!   side). A write blocked on a peer that stopped reading is abandoned
//!   when a close is decided meanwhile (slow client, shutdown, idle
//!   timeout), and the close frame gets `close_timeout` to go out behind
//!   what is already buffered. On the server's shutdown signal each
//!   connection gets `1001 Going Away`; `http_serve` waits for the close handshakes within its
//!   drain timeout, because the connection runs inside the connection's task
//!   ([`OnUpgrade::serve`]).
//! - **Hooks**: `on_connect` (may refuse with a close frame; sending from it
//!   works: the client is registered), `on_message`, `on_disconnect` (with
//!   why). Hooks run on the reader: a slow hook slows that connection only;
//!   spawn for long work.
//!
//! Served by `http_serve` the upgrade uses its `OnUpgrade`; mounted in a
//! plain hyper or axum app it falls back to hyper's upgrade (then the server's
//! shutdown does not reach the socket: there is no signal to wait on).
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use http_types::Route;
//! use ws_handler::{ws_handler, WsConfig};
//! use ws_hub::{HubConfig, WsHub};
//!
//! let hub = WsHub::new(HubConfig::default());
//! let echo = WsConfig {
//!     on_message: Some(Arc::new(|client, msg| {
//!         let _ = client.try_send(msg);
//!     })),
//!     ..WsConfig::default()
//! };
//! let route = Route::get("/echo", ws_handler(hub.clone(), echo));
//! # let _ = route;
//! ```

use std::fmt;
use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, StatusCode, header};
use http_serve::{OnUpgrade, PeerAddr};
use http_types::{Handler, Request, Response, Shutdown, full};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use ws_hub::{Outgoing, WsClient, WsHub, going_away};
use ws_upgrader::{UpgradeConfig, ws_upgrader};

/// Called once a client is registered; `Err` closes it with that frame.
pub type ConnectHook = Arc<dyn Fn(&WsClient) -> Result<(), CloseFrame> + Send + Sync>;
/// Called with each text or binary message a client sends.
pub type MessageHook = Arc<dyn Fn(&WsClient, Message) + Send + Sync>;
/// Called once a client's connection has ended, with why.
pub type DisconnectHook = Arc<dyn Fn(&WsClient, &Disconnect) + Send + Sync>;

/// Settings of the handler; every field has a default.
#[derive(Clone)]
pub struct WsConfig {
    /// Handshake and origin checks. Default: same host, no subprotocols.
    pub upgrade: UpgradeConfig,
    /// Open connections beyond which upgrades get `503`. Default: none.
    pub max_connections: Option<usize>,
    /// Largest message, after reassembling fragments; larger closes with 1009. Default: 1 MiB.
    pub max_message_size: usize,
    /// Largest single frame; larger closes with 1009. Default: 1 MiB.
    pub max_frame_size: usize,
    /// Interval of server pings. Default: 30 s.
    pub ping_interval: Duration,
    /// Silence from the peer (no frame at all) after which the connection is closed. Default: 75 s.
    pub idle_timeout: Duration,
    /// How long to wait for the peer's close reply after sending a close. Default: 5 s.
    pub close_timeout: Duration,
    /// Bytes read from the socket at a time (tungstenite's read buffer, kept
    /// for the life of the connection). Small, because most of an idle
    /// connection's memory is this buffer; a large message is still read
    /// whole, in steps of this size. Default: 512 bytes.
    pub read_buffer_size: usize,
    /// Bytes of written frames buffered before a write. Default: 64 KiB.
    pub write_buffer_size: usize,
    /// Most bytes of written frames buffered while the socket is full. Default: 1 MiB.
    pub max_write_buffer_size: usize,
    /// See [`ConnectHook`]. Default: none.
    pub on_connect: Option<ConnectHook>,
    /// See [`MessageHook`]. Default: none (messages are read and dropped).
    pub on_message: Option<MessageHook>,
    /// See [`DisconnectHook`]. Default: none.
    pub on_disconnect: Option<DisconnectHook>,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            upgrade: UpgradeConfig::default(),
            max_connections: None,
            max_message_size: 1 << 20,
            max_frame_size: 1 << 20,
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            close_timeout: Duration::from_secs(5),
            read_buffer_size: 512,
            write_buffer_size: 64 * 1024,
            max_write_buffer_size: 1 << 20,
            on_connect: None,
            on_message: None,
            on_disconnect: None,
        }
    }
}

impl fmt::Debug for WsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsConfig")
            .field("upgrade", &self.upgrade)
            .field("max_connections", &self.max_connections)
            .field("max_message_size", &self.max_message_size)
            .field("max_frame_size", &self.max_frame_size)
            .field("ping_interval", &self.ping_interval)
            .field("idle_timeout", &self.idle_timeout)
            .field("close_timeout", &self.close_timeout)
            .field("read_buffer_size", &self.read_buffer_size)
            .field("write_buffer_size", &self.write_buffer_size)
            .field("max_write_buffer_size", &self.max_write_buffer_size)
            .finish_non_exhaustive()
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disconnect {
    /// The peer closed, with this frame (none: no code).
    Closed(Option<CloseFrame>),
    /// The server closed it with this frame: a refusal, a slow client, a
    /// limit, a protocol error, the idle timeout or shutdown.
    ClosedByServer(Option<CloseFrame>),
    /// The socket ended without a close handshake.
    Gone,
}

/// The WebSocket handler for `hub`.
pub fn ws_handler(hub: WsHub, config: WsConfig) -> Handler {
    let config = Arc::new(config);
    Handler::new(move |mut req: Request| {
        let res = upgrade(&hub, &config, &mut req);
        async move { res }
    })
}

fn upgrade(hub: &WsHub, config: &Arc<WsConfig>, req: &mut Request) -> Response {
    let handshake = match ws_upgrader(req, &config.upgrade) {
        Ok(h) => h,
        Err(e) => return e.into_response(),
    };
    if !hub.is_running() {
        return unavailable("the server is shutting down");
    }
    if config.max_connections.is_some_and(|max| hub.len() >= max) {
        return unavailable("too many connections");
    }
    let peer = req.extensions().get::<PeerAddr>().map(|p| p.0);
    let shutdown = Shutdown::from_request(req);
    let (hub, config) = (hub.clone(), config.clone());
    if let Some(on) = OnUpgrade::take(req) {
        on.serve(move |io| serve(hub, config, io, peer, shutdown));
    } else if let Some(on) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() {
        tokio::spawn(async move {
            match on.await {
                Ok(io) => {
                    serve(
                        hub,
                        config,
                        hyper_util::rt::TokioIo::new(io),
                        peer,
                        shutdown,
                    )
                    .await
                }
                Err(e) => tracing::debug!(target: "ws", error = %e, "upgrade failed"),
            }
        });
    } else {
        return json(
            StatusCode::INTERNAL_SERVER_ERROR,
            "this server cannot hand over connections",
        );
    }
    handshake.response()
}

fn unavailable(why: &str) -> Response {
    let mut res = json(StatusCode::SERVICE_UNAVAILABLE, why);
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    res
}

fn json(status: StatusCode, error: &str) -> Response {
    let body = format!("{{\"error\":\"{}\"}}\n", error.replace('"', "'"));
    let mut res = Response::new(full(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// Runs one upgraded connection until it ends.
async fn serve<S>(
    hub: WsHub,
    config: Arc<WsConfig>,
    io: S,
    peer: Option<std::net::SocketAddr>,
    shutdown: Shutdown,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(config.read_buffer_size)
        .write_buffer_size(config.write_buffer_size)
        .max_write_buffer_size(
            config
                .max_write_buffer_size
                .max(config.write_buffer_size + 1),
        )
        .max_message_size(Some(config.max_message_size))
        .max_frame_size(Some(config.max_frame_size));
    let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config)).await;
    let (sink, mut stream) = ws.split();
    let client = match hub.register(peer) {
        Ok(c) => c,
        Err(_) => {
            // Stopped between the upgrade and now.
            let mut sink = sink;
            let _ = sink.send(Message::Close(Some(going_away()))).await;
            return;
        }
    };
    let start = Instant::now();
    let seen = AtomicU64::new(0);
    // The writer is a future of this task rather than a task of its own: the
    // two are polled concurrently (a write blocked on a full socket does not
    // stop reading), and an idle connection saves a task and its state.
    let writer = write_loop(&client, sink, shutdown, &config, start, &seen);
    tokio::pin!(writer);
    if let Some(hook) = &config.on_connect
        && let Err(frame) = hook(&client)
    {
        client.close(Some(frame));
    }

    // The reader: until the peer closes or the socket ends. Once the writer
    // is done (it sent a close, or the socket failed) the peer has
    // `close_timeout` to finish.
    let mut writer_done: Option<Option<CloseFrame>> = None;
    // Armed once the writer is done; no timer while the connection is open.
    let mut deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    let end = loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(msg)) => {
                    seen.store(elapsed_ms(start), Ordering::Relaxed);
                    match msg {
                        Message::Text(_) | Message::Binary(_) => {
                            if let Some(hook) = &config.on_message {
                                hook(&client, msg);
                            }
                        }
                        Message::Close(frame) => {
                            // tungstenite queues the reply; reading on sends it.
                            if writer_done.is_none() {
                                client.disconnected();
                                drain(&mut stream).await;
                                break Disconnect::Closed(frame);
                            }
                        }
                        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                    }
                }
                Some(Err(e)) => {
                    if let Some(frame) = close_for(&e) {
                        // Answers to what the peer sent before go out first.
                        client.close_after_queued(Some(frame));
                        if writer_done.is_none() {
                            writer_done = Some(finish(writer.as_mut(), config.close_timeout).await);
                        }
                    }
                    break end_after(writer_done);
                }
                None => break end_after(writer_done),
            },
            sent = &mut writer, if writer_done.is_none() => {
                writer_done = Some(sent);
                deadline = Some(Box::pin(tokio::time::sleep(config.close_timeout)));
            }
            () = async { deadline.as_mut().expect("armed").await }, if deadline.is_some() => {
                break end_after(writer_done);
            }
        }
    };
    client.disconnected();
    hub.unregister(client.id());
    if let Some(hook) = &config.on_disconnect {
        hook(&client, &end);
    }
}

/// What ended a connection whose reader stopped; `sent` is the writer's close.
fn end_after(sent: Option<Option<CloseFrame>>) -> Disconnect {
    match sent {
        Some(Some(frame)) => Disconnect::ClosedByServer(Some(frame)),
        _ => Disconnect::Gone,
    }
}

/// Waits at most `timeout` for the writer to send its close.
async fn finish(
    writer: std::pin::Pin<&mut impl std::future::Future<Output = Option<CloseFrame>>>,
    timeout: Duration,
) -> Option<CloseFrame> {
    tokio::time::timeout(timeout, writer).await.ok().flatten()
}

/// Reads on after the peer's close so tungstenite writes the reply.
async fn drain<S>(stream: &mut futures_util::stream::SplitStream<WebSocketStream<S>>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(Ok(_)) = stream.next().await {}
}

/// The close frame a read error calls for; none when the socket is simply gone.
fn close_for(e: &WsError) -> Option<CloseFrame> {
    let (code, reason) = match e {
        WsError::Capacity(_) => (CloseCode::Size, "message too big"),
        WsError::Utf8(_) => (CloseCode::Invalid, "invalid UTF-8 in a text message"),
        WsError::Protocol(_) => (CloseCode::Protocol, "protocol error"),
        _ => return None,
    };
    Some(CloseFrame {
        code,
        reason: reason.into(),
    })
}

fn elapsed_ms(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The writer: drains the outbox into the socket, flushing once per batch;
/// pings; closes on shutdown, on request, or after the idle timeout.
/// Returns the close frame it sent, if any.
async fn write_loop<S>(
    client: &WsClient,
    mut sink: futures_util::stream::SplitSink<WebSocketStream<S>, Message>,
    shutdown: Shutdown,
    config: &WsConfig,
    start: Instant,
    seen: &AtomicU64,
) -> Option<CloseFrame>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut stop = shutdown.wait();
    let interval = config.ping_interval.max(Duration::from_millis(1));
    let mut ping = tokio::time::interval_at(Instant::now() + interval, interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let idle_ms = u64::try_from(config.idle_timeout.as_millis()).unwrap_or(u64::MAX);
    let idle = || elapsed_ms(start).saturating_sub(seen.load(Ordering::Relaxed)) >= idle_ms;
    let mut batch = Vec::new();
    let mut stopping = false;
    loop {
        let next = tokio::select! {
            biased;
            () = &mut stop, if !stopping => {
                stopping = true;
                client.close(Some(going_away()));
                continue;
            }
            next = poll_fn(|cx| client.poll_outgoing(cx, &mut batch)) => next,
            _ = ping.tick() => {
                if idle() {
                    client.close(Some(idle_timeout()));
                    continue;
                }
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    return None;
                }
                continue;
            }
        };
        match next {
            Outgoing::Messages => {
                // A peer that stops reading blocks this write once the socket
                // and tungstenite's buffer are full. A close decided meanwhile
                // (a slow client, shutdown, the idle timeout) must still end
                // the connection: abandon the batch and go on to the close.
                let written = {
                    let write = async {
                        for m in batch.drain(..) {
                            sink.feed(m).await?;
                        }
                        sink.flush().await
                    };
                    tokio::pin!(write);
                    loop {
                        tokio::select! {
                            biased;
                            r = &mut write => break r.is_ok(),
                            () = &mut stop, if !stopping => {
                                stopping = true;
                                client.close(Some(going_away()));
                            }
                            () = poll_fn(|cx| client.poll_close_requested(cx)) => break true,
                            _ = ping.tick() => if idle() {
                                client.close(Some(idle_timeout()));
                            },
                        }
                    }
                };
                batch.clear();
                if !written {
                    return None;
                }
            }
            Outgoing::Close(frame) => {
                batch.clear();
                // Behind what is already buffered: bounded, for a peer that
                // does not read.
                let _ = tokio::time::timeout(
                    config.close_timeout,
                    sink.send(Message::Close(frame.clone())),
                )
                .await;
                return frame;
            }
            Outgoing::Gone => return None,
        }
    }
}

fn idle_timeout() -> CloseFrame {
    CloseFrame {
        code: CloseCode::Away,
        reason: "idle timeout".into(),
    }
}
