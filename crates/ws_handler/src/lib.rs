//! Serves WebSocket connections of a hub: upgrade, register, a reader and a writer per connection, ping and idle timeout, size limits and close codes.
//!
//! [`ws_handler`] is a plain [`Handler`] (so also a tower service). For each
//! request it
//!
//! 1. validates the handshake and the origin (`ws_upgrader`: 400, 403, 405,
//!    426 with a short body);
//! 2. takes a connection slot, atomically, or refuses with `503`,
//!    `Retry-After` and a JSON body when [`WsConfig::max_connections`] (or
//!    [`WsConfig::max_per_ip`] for the peer's address) are open or the hub
//!    is stopped, before upgrading: a burst of upgrades never passes the limit;
//! 3. awaits [`WsConfig::identify`] (async, at most [`WsConfig::hook_timeout`],
//!    then `401`) for who the request is, or answers with the response it
//!    refuses with (401, 403), before upgrading;
//! 4. answers `101`; with [`WsConfig::authenticate`], reads the first message
//!    and lets it establish the identity (close `1008` on refusal or silence);
//!    registers a [`WsClient`] with that identity, awaits
//!    [`WsConfig::on_connect`], and runs the connection: a **reader** that
//!    hands text and binary messages to [`WsConfig::on_message`], and a
//!    **writer** that drains the client's outbox, gives tungstenite
//!    everything queued and flushes once.
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
//!   with `1007`; any other protocol error with `1002`; more messages than
//!   `message_rate` allows (200/s, bursts of 400) with `1008`. Only that
//!   connection.
//! - **A peer that stops reading**: while a write is blocked and the
//!   client's outbox is at least half full, the connection is not read
//!   (backpressure: a client that floods requests and never reads the
//!   answers stops being served); a write that makes no progress for
//!   `write_timeout` (10 s) drops the connection (`1008 write timeout`).
//!   Memory per such client stays within its outbox and write buffer bounds.
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
//! - **Hooks**: `identify`, `authenticate` and `on_connect` are async and
//!   bounded by `hook_timeout` (5 s); `on_connect` may refuse with a close
//!   frame, and what it sends (the client is registered) goes out before
//!   that close. `on_message` and `on_disconnect` (with why) are plain
//!   functions. Hooks run in the connection's task: a slow hook slows that
//!   connection only; spawn for long work.
//! - **Observability**: each connection has a `ws` span (target `ws`,
//!   `INFO`) with `peer` and `path`, then `user` once the identify or
//!   authenticate hook decides and `client` (the hub id) once registered; it
//!   is the parent of the connection's events and is entered around the
//!   hooks, never on the write path. Events: `connected` and `closed` (`by`,
//!   close `code` and `reason`) at `DEBUG`; slow clients (1013, write
//!   timeout), limit refusals and closes (`reason`: origin, connections,
//!   per_ip, message_rate, hook_timeout, ...) at `INFO`.
//!   [`WsConfig::stats`] counts messages read and each [`Refusal`];
//!   what was sent and written is the hub's (`HubStats`).
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

use std::collections::HashMap;
use std::fmt;
use std::future::{Future, poll_fn};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, StatusCode, header};
use http_serve::{OnUpgrade, PeerAddr};
use http_types::{Handler, Request, Response, Shutdown, WaitForCancellationFutureOwned, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, MissedTickBehavior, Sleep};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tracing::{Instrument, Span};
/// The message type of the hooks, re-exported (see `ws_hub::Message`).
pub use ws_hub::Message;
use ws_hub::{Identity, Outgoing, WsClient, WsHub, going_away};
use ws_upgrader::{UpgradeConfig, WsUpgradeError, ws_upgrader};

/// Establishes who the upgrade request is (its cookie, token, a session
/// looked up in a database...), before upgrading; `Err` is the response that
/// refuses it (401, 403). Runs for at most [`WsConfig::hook_timeout`] (then
/// `401`). Make one with [`identify`]. No client message can change what it
/// decides, except through [`WsConfig::authenticate`].
pub type IdentifyHook =
    Arc<dyn Fn(&Request) -> BoxFuture<'static, Result<Identity, Response>> + Send + Sync>;
/// Establishes the identity from the connection's first message (a token
/// sent after the upgrade), given what [`IdentifyHook`] decided; `Err`
/// closes the connection with that frame before it is registered. Runs for at
/// most [`WsConfig::hook_timeout`], counted from the upgrade (then close
/// `1008`). Make one with [`authenticate`].
pub type AuthenticateHook = Arc<
    dyn Fn(&Identity, Message) -> BoxFuture<'static, Result<Identity, CloseFrame>> + Send + Sync,
>;
/// Called once a client is registered; `Err` closes it with that frame.
/// Sending to the client from it works: messages are queued and delivered
/// once it returns. Runs for at most [`WsConfig::hook_timeout`] (then close
/// `1008`). Make one with [`on_connect`].
pub type ConnectHook =
    Arc<dyn Fn(&WsClient) -> BoxFuture<'static, Result<(), CloseFrame>> + Send + Sync>;
/// Called with each text or binary message a client sends, in the
/// connection's task (spawn for long work).
pub type MessageHook = Arc<dyn Fn(&WsClient, Message) + Send + Sync>;
/// Called once a client's connection has ended, with why.
pub type DisconnectHook = Arc<dyn Fn(&WsClient, &Disconnect) + Send + Sync>;

/// An [`IdentifyHook`] from an async function of the request. The future
/// owns what it needs: copy headers out of the request before `async move`.
pub fn identify<F, Fut>(f: F) -> IdentifyHook
where
    F: Fn(&Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Identity, Response>> + Send + 'static,
{
    Arc::new(move |req| Box::pin(f(req)))
}

/// An [`AuthenticateHook`] from an async function of the identity so far
/// and the first message.
pub fn authenticate<F, Fut>(f: F) -> AuthenticateHook
where
    F: Fn(&Identity, Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Identity, CloseFrame>> + Send + 'static,
{
    Arc::new(move |identity, msg| Box::pin(f(identity, msg)))
}

/// A [`ConnectHook`] from an async function of the registered client (a
/// cheap clone of it may move into the future).
pub fn on_connect<F, Fut>(f: F) -> ConnectHook
where
    F: Fn(&WsClient) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), CloseFrame>> + Send + 'static,
{
    Arc::new(move |client| Box::pin(f(client)))
}

/// A per-connection limit on messages from the client: a token bucket that
/// holds `burst` tokens and refills `per_second`; a message over it closes
/// the connection with `1008` and reason `message rate exceeded`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MessageRate {
    /// Sustained messages per second.
    pub per_second: f64,
    /// Messages that may arrive at once after a quiet spell.
    pub burst: u32,
}

impl Default for MessageRate {
    /// 200 messages a second, bursts of 400: generous for people and apps,
    /// small for a flood.
    fn default() -> Self {
        MessageRate {
            per_second: 200.0,
            burst: 400,
        }
    }
}

/// Settings of the handler; every field has a default.
#[derive(Clone)]
pub struct WsConfig {
    /// Handshake and origin checks. Default: same host, no subprotocols.
    pub upgrade: UpgradeConfig,
    /// Connections (open, or upgrading) beyond which upgrades get `503` with
    /// `Retry-After`; the slot is taken atomically before identifying and
    /// answering `101`, so a burst never passes it. Default:
    /// [`default_max_connections`] (from the open-file limit).
    pub max_connections: usize,
    /// Connections from one IP address beyond which upgrades get `503`.
    /// Default: none, because many users share one address behind NAT.
    pub max_per_ip: Option<usize>,
    /// Largest message, after reassembling fragments; larger closes with 1009. Default: 1 MiB.
    pub max_message_size: usize,
    /// Largest single frame; larger closes with 1009. Default: 1 MiB.
    pub max_frame_size: usize,
    /// Messages the client may send; over it closes with `1008`. Default:
    /// [`MessageRate::default`] (200/s, bursts of 400); `None` is unlimited.
    pub message_rate: Option<MessageRate>,
    /// Interval of server pings. Default: 30 s.
    pub ping_interval: Duration,
    /// Silence from the peer (no frame at all) after which the connection is closed. Default: 75 s.
    pub idle_timeout: Duration,
    /// How long to wait for the peer's close reply after sending a close. Default: 5 s.
    pub close_timeout: Duration,
    /// How long a write may stay blocked with bytes pending and no byte
    /// written (a peer that stopped reading) before the connection is
    /// dropped (reported as closed by the server with `1008`). Default: 10 s.
    pub write_timeout: Duration,
    /// How long each of the identify, authenticate and connect hooks may
    /// take (then `401`, or close `1008`). Default: 5 s.
    pub hook_timeout: Duration,
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
    /// See [`AuthenticateHook`]. Default: none (the first message is an
    /// ordinary message).
    pub authenticate: Option<AuthenticateHook>,
    /// See [`ConnectHook`]. Default: none.
    pub on_connect: Option<ConnectHook>,
    /// See [`MessageHook`]. Default: none (messages are read and dropped).
    pub on_message: Option<MessageHook>,
    /// See [`DisconnectHook`]. Default: none.
    pub on_disconnect: Option<DisconnectHook>,
    /// Where the handler counts messages read and connections refused or
    /// closed over a limit. Default: counters of this handler alone; give
    /// several handlers clones of one [`WsStats`] to add them up.
    pub stats: WsStats,
}

/// Counters of a handler's connections that its hub does not see: messages
/// read from clients, and connections refused or closed over a limit, by
/// [`Refusal`]. Clones share them.
#[derive(Debug, Clone, Default)]
pub struct WsStats(Arc<StatsInner>);

#[derive(Debug, Default)]
struct StatsInner {
    received: AtomicU64,
    refused: [AtomicU64; Refusal::ALL.len()],
}

impl WsStats {
    /// Text and binary messages read from clients.
    pub fn received(&self) -> u64 {
        self.0.received.load(Ordering::Relaxed)
    }

    /// Connections refused, or closed over a limit, for `why`.
    pub fn refused(&self, why: Refusal) -> u64 {
        self.0.refused[why as usize].load(Ordering::Relaxed)
    }

    fn count(&self, why: Refusal) {
        self.0.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Why `ws_handler` refused a connection, or closed it over a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Not a valid WebSocket handshake (400, 405, 426).
    Handshake,
    /// The page's origin is not allowed (403).
    Origin,
    /// The server is shutting down (503).
    ShuttingDown,
    /// [`WsConfig::max_connections`] are open (503).
    Connections,
    /// [`WsConfig::max_per_ip`] are open from the peer's address (503).
    PerIp,
    /// The identify hook refused the request (its response), or the
    /// authenticate hook refused the first message (its close frame).
    Identify,
    /// The identify, authenticate or connect hook took longer than
    /// [`WsConfig::hook_timeout`] (401, or close `1008`).
    HookTimeout,
    /// The connect hook refused the registered client (its close frame).
    Connect,
    /// Closed: over [`WsConfig::message_rate`] (`1008`).
    MessageRate,
    /// Closed: a write made no progress for [`WsConfig::write_timeout`]
    /// (a peer that stopped reading).
    WriteTimeout,
}

impl Refusal {
    /// Every reason, in declaration order.
    pub const ALL: [Refusal; 10] = [
        Refusal::Handshake,
        Refusal::Origin,
        Refusal::ShuttingDown,
        Refusal::Connections,
        Refusal::PerIp,
        Refusal::Identify,
        Refusal::HookTimeout,
        Refusal::Connect,
        Refusal::MessageRate,
        Refusal::WriteTimeout,
    ];

    /// A short snake_case name, for a metric label or a log field.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Handshake => "handshake",
            Refusal::Origin => "origin",
            Refusal::ShuttingDown => "shutting_down",
            Refusal::Connections => "connections",
            Refusal::PerIp => "per_ip",
            Refusal::Identify => "identify",
            Refusal::HookTimeout => "hook_timeout",
            Refusal::Connect => "connect",
            Refusal::MessageRate => "message_rate",
            Refusal::WriteTimeout => "write_timeout",
        }
    }
}

/// The default of [`WsConfig::max_connections`]: nine tenths of the
/// process's soft open-file limit less 64, leaving room for listeners,
/// files, outgoing connections and non-WebSocket requests (at least 64).
pub fn default_max_connections() -> usize {
    let soft = rlimit::getrlimit(rlimit::Resource::NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    let soft = usize::try_from(soft).unwrap_or(usize::MAX);
    (soft / 10 * 9).saturating_sub(64).max(64)
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            upgrade: UpgradeConfig::default(),
            max_connections: default_max_connections(),
            max_per_ip: None,
            max_message_size: 1 << 20,
            max_frame_size: 1 << 20,
            message_rate: Some(MessageRate::default()),
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            close_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            hook_timeout: Duration::from_secs(5),
            read_buffer_size: 512,
            write_buffer_size: 64 * 1024,
            max_write_buffer_size: 1 << 20,
            identify: None,
            authenticate: None,
            on_connect: None,
            on_message: None,
            on_disconnect: None,
            stats: WsStats::default(),
        }
    }
}

impl fmt::Debug for WsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsConfig")
            .field("upgrade", &self.upgrade)
            .field("max_connections", &self.max_connections)
            .field("max_per_ip", &self.max_per_ip)
            .field("max_message_size", &self.max_message_size)
            .field("max_frame_size", &self.max_frame_size)
            .field("message_rate", &self.message_rate)
            .field("ping_interval", &self.ping_interval)
            .field("idle_timeout", &self.idle_timeout)
            .field("close_timeout", &self.close_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("hook_timeout", &self.hook_timeout)
            .field("read_buffer_size", &self.read_buffer_size)
            .field("write_buffer_size", &self.write_buffer_size)
            .field("max_write_buffer_size", &self.max_write_buffer_size)
            .field("identify", &self.identify.is_some())
            .field("authenticate", &self.authenticate.is_some())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disconnect {
    /// The peer closed, with this frame (none: no code).
    Closed(Option<CloseFrame>),
    /// The server closed it with this frame: a refusal, a slow client, a
    /// limit, a protocol error, the idle or write timeout or shutdown.
    ClosedByServer(Option<CloseFrame>),
    /// The socket ended without a close handshake.
    Gone,
}

/// The WebSocket handler for `hub`.
pub fn ws_handler(hub: WsHub, config: WsConfig) -> Handler {
    let shared = Arc::new(Shared {
        config,
        slots: Slots::default(),
    });
    Handler::new(move |mut req: Request| {
        let (hub, shared) = (hub.clone(), shared.clone());
        async move { upgrade(&hub, &shared, &mut req).await }
    })
}

/// What every connection of one handler shares.
struct Shared {
    config: WsConfig,
    slots: Slots,
}

/// Connection slots: open (or upgrading) connections, in all and per IP
/// address. A slot is taken before the upgrade and given back on drop.
#[derive(Default)]
struct Slots {
    open: AtomicUsize,
    /// Only kept when [`WsConfig::max_per_ip`] is set.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// One taken slot; dropping it frees it.
struct Slot {
    shared: Arc<Shared>,
    ip: Option<IpAddr>,
}

impl Slots {
    fn take(shared: &Arc<Shared>, peer: Option<SocketAddr>) -> Result<Slot, Refusal> {
        let max = shared.config.max_connections;
        let slots = &shared.slots;
        if slots
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_err()
        {
            return Err(Refusal::Connections);
        }
        let mut slot = Slot {
            shared: shared.clone(),
            ip: None,
        };
        if let (Some(max), Some(peer)) = (shared.config.max_per_ip, peer) {
            let mut per_ip = slots.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
            let n = per_ip.entry(peer.ip()).or_default();
            if *n >= max {
                if *n == 0 {
                    per_ip.remove(&peer.ip());
                }
                return Err(Refusal::PerIp);
            }
            *n += 1;
            slot.ip = Some(peer.ip());
        }
        Ok(slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let slots = &self.shared.slots;
        slots.open.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            let mut per_ip = slots.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}

async fn upgrade(hub: &WsHub, shared: &Arc<Shared>, req: &mut Request) -> Response {
    let config = &shared.config;
    let peer = req.extensions().get::<PeerAddr>().map(|p| p.0);
    let path = req.uri().path();
    let handshake = match ws_upgrader(req, &config.upgrade) {
        Ok(h) => h,
        Err(e) => {
            let why = match e {
                WsUpgradeError::MissingOrigin | WsUpgradeError::ForbiddenOrigin => Refusal::Origin,
                _ => Refusal::Handshake,
            };
            config.stats.count(why);
            if why == Refusal::Origin {
                let origin = req
                    .headers()
                    .get(header::ORIGIN)
                    .and_then(|o| o.to_str().ok());
                tracing::info!(target: "ws", peer = peer.map(tracing::field::display), path, origin, reason = why.as_str(), "connection refused");
            } else {
                tracing::debug!(target: "ws", peer = peer.map(tracing::field::display), path, reason = why.as_str(), error = %e, "connection refused");
            }
            return e.into_response();
        }
    };
    if !hub.is_running() {
        config.stats.count(Refusal::ShuttingDown);
        return unavailable("the server is shutting down");
    }
    let slot = match Slots::take(shared, peer) {
        Ok(slot) => slot,
        Err(why) => {
            config.stats.count(why);
            tracing::info!(target: "ws", peer = peer.map(tracing::field::display), path, reason = why.as_str(), "connection refused");
            return unavailable(match why {
                Refusal::PerIp => "too many connections from this address",
                _ => "too many connections",
            });
        }
    };
    // The connection's span: a root (it outlives the upgrade request), with
    // what identifies the connection; `client` and `user` are recorded once known.
    let span = tracing::info_span!(
        target: "ws",
        parent: None,
        "ws",
        client = tracing::field::Empty,
        peer = peer.map(tracing::field::display),
        path,
        user = tracing::field::Empty,
    );
    let identity = match &config.identify {
        Some(identify) => {
            let decided = identify(req).instrument(span.clone());
            match tokio::time::timeout(config.hook_timeout, decided).await {
                Ok(Ok(identity)) => identity,
                Ok(Err(refused)) => {
                    config.stats.count(Refusal::Identify);
                    tracing::info!(target: "ws", parent: &span, reason = Refusal::Identify.as_str(), status = refused.status().as_u16(), "connection refused");
                    return refused;
                }
                Err(_) => {
                    config.stats.count(Refusal::HookTimeout);
                    tracing::info!(target: "ws", parent: &span, reason = Refusal::HookTimeout.as_str(), hook = "identify", "connection refused");
                    return error(
                        StatusCode::UNAUTHORIZED,
                        "identifying the request timed out",
                    );
                }
            }
        }
        None => Identity::default(),
    };
    if let Some(user) = &identity.user {
        span.record("user", user.as_str());
    }
    let shutdown = Shutdown::from_request(req);
    let (hub, shared) = (hub.clone(), shared.clone());
    if let Some(on) = OnUpgrade::take(req) {
        on.serve(move |io| serve(hub, shared, slot, io, peer, identity, shutdown, span));
    } else if let Some(on) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() {
        tokio::spawn(async move {
            match on.await {
                Ok(io) => {
                    let io = hyper_util::rt::TokioIo::new(io);
                    serve(hub, shared, slot, io, peer, identity, shutdown, span).await;
                }
                Err(e) => {
                    tracing::debug!(target: "ws", parent: &span, error = %e, "upgrade failed");
                }
            }
        });
    } else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "this server cannot hand over connections",
        );
    }
    handshake.response()
}

fn unavailable(why: &str) -> Response {
    let mut res = error(StatusCode::SERVICE_UNAVAILABLE, why);
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    res
}

/// The JSON body of a refusal: `{"error": "..."}`.
#[derive(serde::Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

fn error(status: StatusCode, error: &str) -> Response {
    json(status, &ErrorBody { error })
}

/// Runs one upgraded connection until it ends.
#[allow(clippy::too_many_arguments)] // one call site each, all of it the connection
async fn serve<S>(
    hub: WsHub,
    shared: Arc<Shared>,
    slot: Slot,
    io: S,
    peer: Option<SocketAddr>,
    identity: Identity,
    shutdown: Shutdown,
    span: Span,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &shared.config;
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
    let io = Progress {
        io,
        written: Instant::now(),
    };
    let mut ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config)).await;
    let identity = match &config.authenticate {
        None => identity,
        Some(hook) => {
            let first = first_message(&mut ws, hook, &identity).instrument(span.clone());
            let first = tokio::select! {
                r = tokio::time::timeout(config.hook_timeout, first) => r.unwrap_or(Auth::TimedOut),
                () = shutdown.wait() => Auth::Ended(going_away()),
            };
            let frame = match first {
                Auth::Identified(identity) => {
                    if let Some(user) = &identity.user {
                        span.record("user", user.as_str());
                    }
                    Ok(identity)
                }
                Auth::Refused(frame) => {
                    config.stats.count(Refusal::Identify);
                    tracing::info!(target: "ws", parent: &span, reason = Refusal::Identify.as_str(), code = u16::from(frame.code), close_reason = %frame.reason, "authentication refused");
                    Err(frame)
                }
                Auth::TimedOut => {
                    config.stats.count(Refusal::HookTimeout);
                    tracing::info!(target: "ws", parent: &span, reason = Refusal::HookTimeout.as_str(), hook = "authenticate", "authentication refused");
                    Err(policy("authentication timed out"))
                }
                Auth::Ended(frame) => Err(frame),
            };
            match frame {
                Ok(identity) => identity,
                Err(frame) => {
                    refuse(&mut ws, frame, config.close_timeout).await;
                    return;
                }
            }
        }
    };
    let Ok(client) = hub.register_as(peer, identity) else {
        // Stopped between the upgrade and now.
        config.stats.count(Refusal::ShuttingDown);
        refuse(&mut ws, going_away(), config.close_timeout).await;
        return;
    };
    span.record("client", client.id());
    tracing::debug!(target: "ws", parent: &span, "connected");
    if let Some(hook) = &config.on_connect {
        let connected = hook(&client).instrument(span.clone());
        match tokio::time::timeout(config.hook_timeout, connected).await {
            Ok(Ok(())) => {}
            // What the hook sent goes out before the close (it may say why).
            Ok(Err(frame)) => {
                config.stats.count(Refusal::Connect);
                tracing::info!(target: "ws", parent: &span, code = u16::from(frame.code), reason = %frame.reason, "connect hook refused the client");
                client.close_after_queued(Some(frame));
            }
            Err(_) => {
                config.stats.count(Refusal::HookTimeout);
                tracing::info!(target: "ws", parent: &span, reason = Refusal::HookTimeout.as_str(), hook = "on_connect", "closing");
                client.close_after_queued(Some(policy("the connect hook timed out")));
            }
        }
    }
    let interval = config.ping_interval.max(Duration::from_millis(1));
    let mut ping = tokio::time::interval_at(Instant::now() + interval, interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut conn = Connection {
        ws,
        client: &client,
        config,
        span: &span,
        paused: false,
        stop: Some(Box::pin(shutdown.wait())),
        ping,
        ping_due: false,
        last_seen: Instant::now(),
        batch: Vec::new(),
        write: Write::Idle,
        read: Read::Open,
        deadline: None,
        stalled: None,
        bucket: config.message_rate.map(Bucket::new),
    };
    let end = poll_fn(|cx| conn.poll(cx)).await;
    drop(conn);
    client.disconnected();
    hub.unregister(client.id());
    drop(slot);
    log_end(&span, &end);
    if let Some(hook) = &config.on_disconnect {
        span.in_scope(|| hook(&client, &end));
    }
}

/// The close event: who closed, with what code and reason; a slow client
/// (closed with `1013` by the hub's slow-client policy) at `INFO`.
fn log_end(span: &Span, end: &Disconnect) {
    let (by, frame) = match end {
        Disconnect::Closed(frame) => ("peer", frame.as_ref()),
        Disconnect::ClosedByServer(frame) => ("server", frame.as_ref()),
        Disconnect::Gone => ("gone", None),
    };
    let code = frame.map(|f| u16::from(f.code));
    let reason = frame.map(|f| f.reason.as_str());
    if by == "server" && frame.is_some_and(|f| f.code == CloseCode::Again) {
        tracing::info!(target: "ws", parent: span, by, code, reason, "slow client closed");
    } else {
        tracing::debug!(target: "ws", parent: span, by, code, reason, "closed");
    }
}

/// What the authenticate hook made of the first message.
enum Auth {
    Identified(Identity),
    /// The hook refused it, with this close.
    Refused(CloseFrame),
    /// The connection ended (or broke) before a data message: close with this.
    Ended(CloseFrame),
    /// Nothing decided within the hook timeout.
    TimedOut,
}

/// The identity the first data message establishes; pings and pongs before
/// it are answered and skipped.
async fn first_message<S>(
    ws: &mut WebSocketStream<S>,
    hook: &AuthenticateHook,
    identity: &Identity,
) -> Auth
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match ws.next().await {
            Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => {
                return match hook(identity, msg).await {
                    Ok(identity) => Auth::Identified(identity),
                    Err(frame) => Auth::Refused(frame),
                };
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            Some(Ok(Message::Close(_))) | None => return Auth::Ended(going_away()),
            Some(Err(e)) => return Auth::Ended(close_for(&e).unwrap_or_else(going_away)),
        }
    }
}

/// Closes a connection that was never registered: the close frame, then
/// the peer's reply, within `close_timeout`.
async fn refuse<S>(ws: &mut WebSocketStream<S>, frame: CloseFrame, close_timeout: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(close_timeout, async {
        if ws.close(Some(frame)).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

/// The socket, with the time a byte was last written to it: the write
/// timeout counts from there, so a slow but steady reader is never cut off.
struct Progress<S> {
    io: S,
    written: Instant,
}

impl<S: AsyncRead + Unpin> AsyncRead for Progress<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Progress<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.written = Instant::now();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.written = Instant::now();
        }
        r
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

/// The token bucket of [`MessageRate`]; written here because it is two
/// numbers per connection (a keyed limiter crate keeps far more).
#[derive(Debug)]
struct Bucket {
    rate: MessageRate,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: MessageRate) -> Self {
        Bucket {
            rate,
            tokens: f64::from(rate.burst),
            at: Instant::now(),
        }
    }

    /// Takes a token; false when there is none.
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.rate.per_second;
        self.tokens = (self.tokens + refill).min(f64::from(self.rate.burst.max(1)));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One connection's state: the reader and the writer are two halves of one
/// state machine over one `WebSocketStream`, polled together by the
/// connection's task, so neither waits for the other (a write blocked on a
/// full socket does not stop reading, a slow read does not stop a close) and
/// an idle connection holds no lock, no second task and no split stream.
struct Connection<'a, S> {
    ws: WebSocketStream<Progress<S>>,
    client: &'a WsClient,
    config: &'a WsConfig,
    /// The connection's span: entered around the message hook, parent of
    /// its events; never on the write path.
    span: &'a Span,
    /// Reading is paused for backpressure (logged when it starts).
    paused: bool,
    /// The server's shutdown signal, until it fired.
    stop: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
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
    /// While a write is blocked: when the write timeout runs out, counted
    /// from the last byte written. No timer while writes go through.
    stalled: Option<Pin<Box<Sleep>>>,
    /// The client's message allowance, if limited.
    bucket: Option<Bucket>,
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
    /// The server closed over a limit: reading goes on until the peer's
    /// close reply (so unread bytes do not turn the close into a reset),
    /// but data messages are dropped.
    Discarding,
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
                && stop.as_mut().poll(cx).is_ready()
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
            if self.write_timed_out(cx) {
                self.config.stats.count(Refusal::WriteTimeout);
                tracing::info!(target: "ws", parent: self.span, timeout_ms = u64::try_from(self.config.write_timeout.as_millis()).unwrap_or(u64::MAX), "write timeout: the peer stopped reading");
                return Poll::Ready(Disconnect::ClosedByServer(Some(policy("write timeout"))));
            }
            // Backpressure: a client whose outbox backs up behind a blocked
            // write is not read until it drains (the writer wakes us).
            let paused = matches!(
                self.write,
                Write::Feeding | Write::Flushing | Write::Closing(..)
            ) && self.client.is_backed_up();
            if paused != self.paused {
                self.paused = paused;
                if paused {
                    tracing::debug!(target: "ws", parent: self.span, queued = self.client.queued(), "backpressure: reading paused until the outbox drains");
                }
            }
            if self.read != Read::Failed && !paused {
                match self.ws.poll_next_unpin(cx) {
                    Poll::Ready(Some(Ok(msg))) => {
                        again = true;
                        self.last_seen = Instant::now();
                        self.on_message(msg);
                    }
                    Poll::Ready(Some(Err(e))) => match close_for(&e) {
                        Some(frame) if matches!(self.read, Read::Open | Read::Discarding) => {
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
                if self.read != Read::Open {
                    return;
                }
                if let Some(bucket) = &mut self.bucket
                    && !bucket.take()
                {
                    self.config.stats.count(Refusal::MessageRate);
                    tracing::info!(target: "ws", parent: self.span, reason = Refusal::MessageRate.as_str(), "message rate exceeded: closing");
                    self.client.close(Some(policy("message rate exceeded")));
                    self.read = Read::Discarding;
                    return;
                }
                self.config.stats.0.received.fetch_add(1, Ordering::Relaxed);
                if let Some(hook) = &self.config.on_message {
                    let _entered = self.span.enter();
                    hook(self.client, msg);
                }
            }
            Message::Close(frame) => {
                // Our own close's reply, or the peer's close: tungstenite
                // queues the reply; the writer stops without writing.
                if !matches!(self.write, Write::Done(Some(_)))
                    && matches!(self.read, Read::Open | Read::Discarding)
                {
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

    /// Whether a blocked write has made no progress for the write timeout.
    /// Arms the timer when a write blocks, drops it when writes go through.
    fn write_timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        if !matches!(
            self.write,
            Write::Feeding | Write::Flushing | Write::Closing(..)
        ) {
            self.stalled = None;
            return false;
        }
        loop {
            let due = self.ws.get_ref().written + self.config.write_timeout;
            let timer = self
                .stalled
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
            if timer.deadline() != due {
                timer.as_mut().reset(due);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            if Instant::now() >= due {
                return true;
            }
        }
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

/// A `1008 Policy Violation` close with `reason`.
fn policy(reason: &str) -> CloseFrame {
    CloseFrame {
        code: CloseCode::Policy,
        reason: reason.to_string().into(),
    }
}

fn idle_timeout() -> CloseFrame {
    CloseFrame {
        code: CloseCode::Away,
        reason: "idle timeout".into(),
    }
}
