//! Serves WebSocket connections of a hub: upgrade, register, a reader and a writer per connection, ping and idle timeout, size limits and close codes.
//!
//! [`ws_handler`] is a plain [`Handler`] (so also a tower service). For each
//! request it
//!
//! 1. validates the handshake and the origin (`ws_upgrader`: 400, 403, 405,
//!    426 with a short body);
//! 2. refuses with `503` and a JSON body when [`WsConfig::max_connections`]
//!    are open or the hub is stopped, before upgrading;
//! 3. asks [`WsConfig::identify`] who the request is (user and metadata), or
//!    answers with the response it refuses with (401, 403), before upgrading;
//! 4. answers `101`, registers a [`WsClient`] with that identity and runs the
//!    connection: a **reader** that hands text and binary messages to
//!    [`WsConfig::on_message`], and a **writer** that drains the client's
//!    outbox, gives tungstenite everything queued and flushes once.
//!
//! The reader and the writer are the two halves of one state machine over
//! one `WebSocketStream`, polled together by the connection's task: neither
//! waits for the other (a write blocked on a full socket does not stop
//! reading; reading does not delay a close), and an idle connection holds no
//! second task, no lock and no split stream. That is what brings an idle
//! connection to about 3.4 KiB (`ws-bench`); a spawned writer task over a
//! split stream cost 4.1 KiB.
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
//!   why). Hooks run in the connection's task: a slow hook slows that
//!   connection only; spawn for long work.
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
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, StatusCode, header};
use http_serve::{OnUpgrade, PeerAddr};
use http_types::{Handler, Request, Response, Shutdown, ShutdownWait, full};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, MissedTickBehavior, Sleep};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use ws_hub::{Identity, Outgoing, WsClient, WsHub, going_away};
use ws_upgrader::{UpgradeConfig, ws_upgrader};

/// Establishes who the upgrade request is (its cookie, token, ...), before
/// upgrading; `Err` is the response that refuses it (401, 403). The only
/// source of a connection's identity: no client message can change it.
pub type IdentifyHook = Arc<dyn Fn(&Request) -> Result<Identity, Response> + Send + Sync>;
/// Called once a client is registered; `Err` closes it with that frame.
pub type ConnectHook = Arc<dyn Fn(&WsClient) -> Result<(), CloseFrame> + Send + Sync>;
/// Called with each text or binary message a client sends, in the
/// connection's task (spawn for long work).
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
    /// See [`IdentifyHook`]. Default: none (every connection anonymous).
    pub identify: Option<IdentifyHook>,
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
            identify: None,
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
            .field("identify", &self.identify.is_some())
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
    let identity = match &config.identify {
        Some(identify) => match identify(req) {
            Ok(identity) => identity,
            Err(refused) => return refused,
        },
        None => Identity::default(),
    };
    let peer = req.extensions().get::<PeerAddr>().map(|p| p.0);
    let shutdown = Shutdown::from_request(req);
    let (hub, config) = (hub.clone(), config.clone());
    if let Some(on) = OnUpgrade::take(req) {
        on.serve(move |io| serve(hub, config, io, peer, identity, shutdown));
    } else if let Some(on) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() {
        tokio::spawn(async move {
            match on.await {
                Ok(io) => {
                    let io = hyper_util::rt::TokioIo::new(io);
                    serve(hub, config, io, peer, identity, shutdown).await;
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
    identity: Identity,
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
    let mut ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config)).await;
    let Ok(client) = hub.register_as(peer, identity) else {
        // Stopped between the upgrade and now.
        let _ = ws.send(Message::Close(Some(going_away()))).await;
        return;
    };
    if let Some(hook) = &config.on_connect
        && let Err(frame) = hook(&client)
    {
        client.close(Some(frame));
    }
    let interval = config.ping_interval.max(Duration::from_millis(1));
    let mut ping = tokio::time::interval_at(Instant::now() + interval, interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut conn = Connection {
        ws,
        client: &client,
        config: &config,
        stop: Some(shutdown.wait()),
        ping,
        ping_due: false,
        last_seen: Instant::now(),
        batch: Vec::new(),
        write: Write::Idle,
        read: Read::Open,
        deadline: None,
    };
    let end = poll_fn(|cx| conn.poll(cx)).await;
    drop(conn);
    client.disconnected();
    hub.unregister(client.id());
    if let Some(hook) = &config.on_disconnect {
        hook(&client, &end);
    }
}

/// One connection's state: the reader and the writer are two halves of one
/// state machine over one `WebSocketStream`, polled together by the
/// connection's task, so neither waits for the other (a write blocked on a
/// full socket does not stop reading, a slow read does not stop a close) and
/// an idle connection holds no lock, no second task and no split stream.
struct Connection<'a, S> {
    ws: WebSocketStream<S>,
    client: &'a WsClient,
    config: &'a WsConfig,
    /// The server's shutdown signal, until it fired.
    stop: Option<ShutdownWait>,
    ping: tokio::time::Interval,
    /// A ping is to be written.
    ping_due: bool,
    /// When the peer last sent a frame.
    last_seen: Instant,
    /// Messages taken from the outbox, not yet given to tungstenite, last
    /// first (popped from the end).
    batch: Vec<Message>,
    write: Write,
    read: Read,
    /// While closing: when to give up on the close (sending it, or the
    /// peer's reply). No timer while the connection is open.
    deadline: Option<Pin<Box<Sleep>>>,
}

/// The writer's half.
enum Write {
    /// Waiting for the outbox.
    Idle,
    /// Giving the batch to tungstenite.
    Feeding,
    /// Flushing what was fed.
    Flushing,
    /// Sending this close frame (`true` once given to tungstenite).
    Closing(Option<CloseFrame>, bool),
    /// Done writing: the close sent, if any.
    Done(Option<CloseFrame>),
}

/// The reader's half.
#[derive(PartialEq)]
enum Read {
    Open,
    /// The peer closed; reading on sends tungstenite's reply.
    PeerClosed(Option<CloseFrame>),
    /// A protocol error: nothing more is read; the writer sends the close.
    Failed,
}

impl<S> Connection<'_, S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Disconnect> {
        loop {
            // Another round only when something was read (it may have queued
            // an answer) or a timer fired (it must be polled again for its
            // next tick): the writer runs until it is blocked on its own.
            let mut again = false;
            if let Some(stop) = &mut self.stop
                && Pin::new(stop).poll(cx).is_ready()
            {
                self.stop = None;
                self.client.close(Some(going_away()));
            }
            if !matches!(self.write, Write::Done(_)) && self.ping.poll_tick(cx).is_ready() {
                if self.last_seen.elapsed() >= self.config.idle_timeout {
                    self.client.close(Some(idle_timeout()));
                } else {
                    self.ping_due = true;
                }
                // Poll the interval again so its next tick has a waker.
                again = true;
            }
            self.poll_write(cx);
            if self.read != Read::Failed {
                match self.ws.poll_next_unpin(cx) {
                    Poll::Ready(Some(Ok(msg))) => {
                        again = true;
                        self.last_seen = Instant::now();
                        self.on_message(msg);
                    }
                    Poll::Ready(Some(Err(e))) => match close_for(&e) {
                        Some(frame) if self.read == Read::Open => {
                            // Answers to what the peer sent before go out first.
                            self.client.close_after_queued(Some(frame));
                            self.read = Read::Failed;
                            again = true;
                        }
                        _ => return Poll::Ready(self.end()),
                    },
                    Poll::Ready(None) => return Poll::Ready(self.end()),
                    Poll::Pending => {}
                }
            }
            if let Write::Done(_) = self.write {
                if self.read == Read::Failed {
                    return Poll::Ready(self.end());
                }
                self.arm_deadline();
            }
            if let Some(d) = &mut self.deadline
                && d.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(self.end());
            }
            if !again {
                return Poll::Pending;
            }
        }
    }

    fn on_message(&mut self, msg: Message) {
        match msg {
            Message::Text(_) | Message::Binary(_) => {
                if self.read == Read::Open
                    && let Some(hook) = &self.config.on_message
                {
                    hook(self.client, msg);
                }
            }
            Message::Close(frame) => {
                // Our own close's reply, or the peer's close: tungstenite
                // queues the reply; the writer stops without writing.
                if !matches!(self.write, Write::Done(Some(_))) && self.read == Read::Open {
                    self.read = Read::PeerClosed(frame);
                    self.client.disconnected();
                    self.arm_deadline();
                }
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }

    /// Advances the writer until it is blocked or done.
    fn poll_write(&mut self, cx: &mut Context<'_>) {
        loop {
            match &mut self.write {
                Write::Idle => {
                    // A close first; a due ping goes out ahead of the data.
                    let next = self.client.poll_outgoing(cx, &mut self.batch);
                    match next {
                        Poll::Ready(Outgoing::Close(frame)) => {
                            self.batch.clear();
                            self.write = Write::Closing(frame, false);
                            self.deadline =
                                Some(Box::pin(tokio::time::sleep(self.config.close_timeout)));
                            continue;
                        }
                        Poll::Ready(Outgoing::Gone) => {
                            self.batch.clear();
                            self.write = Write::Done(None);
                            return;
                        }
                        Poll::Ready(Outgoing::Messages) => self.batch.reverse(),
                        Poll::Pending if !self.ping_due => return,
                        Poll::Pending => {}
                    }
                    if std::mem::take(&mut self.ping_due) {
                        self.batch.push(Message::Ping(Default::default()));
                    }
                    self.write = Write::Feeding;
                }
                Write::Feeding => {
                    while !self.batch.is_empty() {
                        match self.ws.poll_ready_unpin(cx) {
                            Poll::Ready(Ok(())) => {
                                let m = self.batch.pop().expect("not empty");
                                if self.ws.start_send_unpin(m).is_err() {
                                    self.write = Write::Done(None);
                                    return;
                                }
                            }
                            Poll::Ready(Err(_)) => {
                                self.write = Write::Done(None);
                                return;
                            }
                            Poll::Pending if self.abandon_if_closing(cx) => {
                                break;
                            }
                            Poll::Pending => return,
                        }
                    }
                    if matches!(self.write, Write::Feeding) {
                        self.write = Write::Flushing;
                    }
                }
                Write::Flushing => match self.ws.poll_flush_unpin(cx) {
                    Poll::Ready(Ok(())) => {
                        self.write = Write::Idle;
                    }
                    Poll::Ready(Err(_)) => {
                        self.write = Write::Done(None);
                        return;
                    }
                    Poll::Pending if self.abandon_if_closing(cx) => {}
                    Poll::Pending => return,
                },
                Write::Closing(frame, given) => {
                    if !*given {
                        match self.ws.poll_ready_unpin(cx) {
                            Poll::Ready(Ok(())) => {
                                *given = true;
                                let _ = self.ws.start_send_unpin(Message::Close(frame.clone()));
                            }
                            Poll::Ready(Err(_)) => {
                                self.write = Write::Done(None);
                                return;
                            }
                            Poll::Pending => return,
                        }
                    }
                    match self.ws.poll_flush_unpin(cx) {
                        Poll::Pending => return,
                        Poll::Ready(_) => {
                            let sent = frame.take();
                            self.write = Write::Done(sent);
                            // The peer now has `close_timeout` to answer.
                            self.deadline = None;
                            return;
                        }
                    }
                }
                Write::Done(_) => return,
            }
        }
    }

    /// A write is blocked on a peer that does not read: if a close was
    /// decided meanwhile (slow client, shutdown, idle timeout), drop the
    /// rest of the batch and go on to the close. True if it did.
    fn abandon_if_closing(&mut self, cx: &mut Context<'_>) -> bool {
        if self.client.poll_close_requested(cx).is_ready() {
            self.batch.clear();
            self.write = Write::Idle;
            return true;
        }
        false
    }

    fn arm_deadline(&mut self) {
        if self.deadline.is_none() {
            self.deadline = Some(Box::pin(tokio::time::sleep(self.config.close_timeout)));
        }
    }

    /// Why the connection ended, once it has.
    fn end(&mut self) -> Disconnect {
        if let Read::PeerClosed(frame) = &mut self.read {
            return Disconnect::Closed(frame.take());
        }
        match &mut self.write {
            // Sent, or decided but stuck behind a peer that does not read.
            Write::Done(Some(frame)) | Write::Closing(Some(frame), _) => {
                Disconnect::ClosedByServer(Some(frame.clone()))
            }
            _ => Disconnect::Gone,
        }
    }
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

fn idle_timeout() -> CloseFrame {
    CloseFrame {
        code: CloseCode::Away,
        reason: "idle timeout".into(),
    }
}
