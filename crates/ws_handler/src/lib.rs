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
//!    **writer** that writes what the client's outbox holds.
//!
//! The reader and the writer are the two halves of one state machine over
//! one socket, polled together by the connection's task: neither waits for
//! the other (a write blocked on a full socket does not stop reading;
//! reading does not delay a close). The reader reads everything the peer
//! sent (64 messages at most) before the writer runs, so the answers to a
//! burst of requests go out in one write; [`WsConfig::on_messages`] gets
//! that burst whole, so a server can fan it out to many clients once.
//!
//! **The write lane.** tungstenite does what it is good at: reading frames,
//! masking and UTF-8 checks, sizes, fragments, control frames and the close
//! handshake, through a `WebSocketContext` that takes the stream per call.
//! Data frames go around it: the outbox holds them already framed
//! (`ws_hub::Frame`, made once per message however many clients get it),
//! and one small type, the `WriteLane` (`src/lane.rs`), owns the socket's
//! write half. Everything written goes through it in the order queued:
//! the outbox's frames as they are, and tungstenite's own writes (pongs,
//! close frames), which it makes into the lane, not onto the socket. Every
//! piece queued is whole frames, so a partial write never lets another
//! frame in between; a close that goes first drops only the data not
//! started. One vectored write takes everything the lane holds (64 pieces
//! at most), then one flush. The lane is tested without sockets
//! (interleavings, partial writes of every size, a close after or before
//! queued data, write errors).
//!
//! **Direct writes** (plain TCP from `http_serve`): the socket is shared
//! with the hub (`src/tcp.rs`: an `Arc<TcpStream>`, read and written
//! through `&self` with tokio's readiness API, as `TcpStream` does), so a
//! broadcast writes small frames to it while the connection's writer waits with
//! nothing to write, without waking the connection's task
//! ([`ws_hub::DirectWrite`]). As soon as the lane holds a frame the outbox
//! did not hand over (tungstenite's pong or close reply, a ping), the
//! connection calls [`WsClient::unpark`](ws_hub::WsClient::unpark): that
//! frame goes before anything sent after it (a pong to a ping read in the
//! middle of a message goes before the message's echo), after what a direct
//! write left of a frame. Mounted in hyper or axum, a connection whose IO is
//! hyper-util's `TokioIo<TcpStream>` (what `axum::serve` and hyper's own
//! server hand over) is taken back out of the upgrade and served the same
//! way; TLS and other IO types are written by their task only.
//!
//! **What an idle connection holds** (`ws-bench --only idle`: 1.45 KiB per
//! WebSocket at 10,000, `rt-server`, this machine; sizes from
//! `std::mem::size_of`, release build, checked by this crate's tests):
//!
//! | what | bytes |
//! |---|---:|
//! | the connection's future (boxed in the HTTP connection's task): | 312 |
//! | &nbsp;&nbsp;the socket: a pointer to the shared `TcpStream`, or a boxed TLS stream | 8 |
//! | &nbsp;&nbsp;the read half: tungstenite's context, none while idle (8), frame boundary (24) | 32 |
//! | &nbsp;&nbsp;the write lane: an empty queue, no buffer, when it stalled | 88 |
//! | &nbsp;&nbsp;client, hub, slot, span (none unless a subscriber wants it), shutdown signal | 48 |
//! | &nbsp;&nbsp;reader and writer states, clocks, the optional timer, the message-rate bucket | 128 |
//! | the hub's `WsClient` (identity, outbox with no buffer, counters), with its `Arc` | 256 |
//! | the shared `TcpStream` (32) in its `Arc`, with malloc's rounding | 64 |
//! | its entry in the hub's index | about 30 |
//! | **ws_handler and ws_hub in all, with malloc's rounding** | **about 680** |
//! | the HTTP connection's task, its place in the server's `JoinSet`, tokio's registration of the socket (256, cache-line aligned) | the rest, about 830 |
//!
//! Nothing else: no read buffer (tungstenite's context and its
//! `read_buffer_size` buffer are made when the socket is readable and
//! dropped once the peer is between messages), no write buffer (the outbox
//! and the lane free theirs when they wait), no timer (pings, the idle
//! timeout and the shutdown signal come from one task per handler, below),
//! no shutdown waiter and no span (unless a subscriber wants it). Before
//! this, an idle connection held 3.85 KiB: a 512-byte read buffer for its
//! whole life, tokio-tungstenite's stream, a ping timer, a boxed shutdown
//! waiter and a span.
//!
//! **One task per handler, not per connection**: while a handler has
//! connections, a keeper task interrupts every client of its hub
//! (`WsClient::interrupt`) once per `ping_interval` and when the server's
//! shutdown signal fires (one keeper per signal); each connection then
//! looks at its own signal and clocks. It ends with the handler's last
//! connection.
//!
//! Behaviour, with the defaults of [`WsConfig`]:
//!
//! - **Ping** every `ping_interval` (30 s, on the keeper's tick); a
//!   connection from which nothing (no frame, no pong) arrived for
//!   `idle_timeout` (75 s) is closed at the next tick.
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
//!   Memory per such client stays within its outbox bounds (the lane holds
//!   one batch of it).
//! - **Buffers**: a read buffer of `read_buffer_size` (4 KiB) only while a
//!   message is being read; written frames are the outbox's, bounded by the
//!   hub (`HubConfig::queue_bytes`).
//! - **Close**: a close never waits behind queued data (the outbox gives a
//!   close first); pongs go out behind what the lane already holds. A write
//!   blocked on a peer that stopped reading is abandoned when a close is
//!   decided meanwhile (slow client, shutdown, idle timeout): the piece
//!   being written is finished, the rest of the data dropped, and the close
//!   frame gets `close_timeout` to go out. On the server's shutdown signal each
//!   connection gets `1001 Going Away` (the keeper interrupts it); `http_serve` waits for the close handshakes within its
//!   drain timeout, because the connection runs inside the connection's task
//!   ([`OnUpgrade::serve`]).
//! - **Hooks**: `identify`, `authenticate` and `on_connect` are async and
//!   bounded by `hook_timeout` (5 s); `on_connect` may refuse with a close
//!   frame, and what it sends (the client is registered) goes out before
//!   that close. `on_message`, `on_messages` (a read burst) and
//!   `on_disconnect` (with why) are plain functions. Hooks run in the
//!   connection's task: a slow hook slows that connection only; spawn for
//!   long work.
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
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::{BoxFuture, Either};
use http::{HeaderValue, StatusCode, header};
use http_serve::{OnUpgrade, PeerAddr};
use http_types::{Handler, Request, Response, Shutdown, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, MissedTickBehavior, Sleep};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tracing::{Instrument, Span};
/// The message type of the hooks, re-exported (see `ws_hub::Message`).
pub use ws_hub::Message;
use ws_hub::{Identity, Outgoing, WsClient, WsHub, going_away};
use ws_upgrader::{UpgradeConfig, WsUpgradeError, ws_upgrader};

mod lane;
mod read;
mod tcp;

use lane::{PING, WriteLane};
use read::Reader;

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
/// Called once per read burst with the text and binary messages of it, in
/// order (what the client sent that was read together: at most 64, and a
/// burst past 256 KiB of payload comes in several calls), in the
/// connection's task; the vector is emptied after. A server that sends each
/// message to many clients fans a burst out once (`ws_broadcast_all`)
/// instead of once per message: one lock and one wake per recipient.
pub type MessagesHook = Arc<dyn Fn(&WsClient, &mut Vec<Message>) + Send + Sync>;
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
    /// Bytes read from the socket at a time, into a buffer that exists only
    /// while a message is being read (an idle connection holds none); a
    /// large message is still read whole. Default: 4 KiB.
    pub read_buffer_size: usize,
    /// See [`IdentifyHook`]. Default: none (every connection anonymous).
    pub identify: Option<IdentifyHook>,
    /// See [`AuthenticateHook`]. Default: none (the first message is an
    /// ordinary message).
    pub authenticate: Option<AuthenticateHook>,
    /// See [`ConnectHook`]. Default: none.
    pub on_connect: Option<ConnectHook>,
    /// See [`MessageHook`]. Default: none (messages are read and dropped).
    pub on_message: Option<MessageHook>,
    /// See [`MessagesHook`]; called after [`on_message`](WsConfig::on_message)
    /// has seen each message of the burst. Default: none.
    pub on_messages: Option<MessagesHook>,
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
            read_buffer_size: 4096,
            identify: None,
            authenticate: None,
            on_connect: None,
            on_message: None,
            on_messages: None,
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
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(config.read_buffer_size.max(1))
        .max_message_size(Some(config.max_message_size))
        .max_frame_size(Some(config.max_frame_size));
    let shared = Arc::new(Shared {
        config,
        ws_config,
        slots: Slots::default(),
        keepers: Mutex::default(),
        idle: tokio::sync::Notify::new(),
    });
    Handler::new(move |mut req: Request| {
        let (hub, shared) = (hub.clone(), shared.clone());
        async move { upgrade(&hub, &shared, &mut req).await }
    })
}

/// What every connection of one handler shares.
struct Shared {
    config: WsConfig,
    /// tungstenite's settings, for reading (it writes control frames only).
    ws_config: WebSocketConfig,
    slots: Slots,
    /// The shutdown signals a [`keep`] task watches (`None`: connections
    /// without one), one task each.
    keepers: Mutex<Vec<Option<Shutdown>>>,
    /// Told when the last open connection ends (its keepers end too).
    idle: tokio::sync::Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
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
    /// Only with [`WsConfig::max_per_ip`] (boxed: most servers set none).
    ip: Option<Box<IpAddr>>,
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
            slot.ip = Some(Box::new(peer.ip()));
        }
        Ok(slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let slots = &self.shared.slots;
        if slots.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.idle.notify_waiters();
        }
        if let Some(ip) = self.ip.as_deref() {
            let mut per_ip = slots.per_ip.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = per_ip.get_mut(ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(ip);
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
    // No signal in the request: no server to watch (none ever fires).
    let shutdown = req.extensions().get::<Shutdown>().cloned();
    let hub = hub.clone();
    if let Some(on) = OnUpgrade::take(req) {
        on.serve(move |upgraded| {
            // The bytes HTTP read ahead go to the reader now: the socket alone is kept.
            let (io, first) = upgraded.into_parts();
            serve_io(hub, slot, io, first, peer, identity, shutdown, span)
        });
    } else if let Some(on) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() {
        tokio::spawn(async move {
            match on.await {
                // Plain TCP under hyper's own server or hyper-util's (axum's):
                // broadcasts may write to the socket, as on `http_serve`.
                Ok(io) => match plain_tcp(io, hub.config().direct_writes) {
                    Ok((stream, first)) => {
                        let io = http_serve::Io::Tcp(stream);
                        serve_io(hub, slot, io, first, peer, identity, shutdown, span).await;
                    }
                    Err(io) => {
                        let io = hyper_util::rt::TokioIo::new(io);
                        let first = http_types::Bytes::new();
                        serve(hub, slot, io, first, peer, identity, shutdown, span, None).await;
                    }
                },
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

/// Runs a connection over `http_serve`'s `Io` (or a TCP socket taken back
/// from hyper): on plain TCP, broadcasts may write to its socket while its
/// writer waits ([`ws_hub::DirectWrite`]).
#[allow(clippy::too_many_arguments)] // two call sites, all of it the connection
fn serve_io(
    hub: WsHub,
    slot: Slot,
    io: http_serve::Io,
    first: http_types::Bytes,
    peer: Option<SocketAddr>,
    identity: Identity,
    shutdown: Option<Shutdown>,
    span: Span,
) -> impl Future<Output = ()> + Send + 'static {
    match io {
        http_serve::Io::Tcp(stream) if hub.config().direct_writes => {
            let (io, socket) = tcp::SharedTcp::new(stream);
            Either::Left(serve(
                hub,
                slot,
                io,
                first,
                peer,
                identity,
                shutdown,
                span,
                Some(socket),
            ))
        }
        // TLS, or direct writes off: boxed, so both kinds keep a pointer.
        io => Either::Right(serve(
            hub,
            slot,
            Box::new(io),
            first,
            peer,
            identity,
            shutdown,
            span,
            None,
        )),
    }
}

/// The TCP socket under a connection hyper upgraded, and what HTTP read
/// ahead of it, when it is one and `wanted` (direct writes on): hyper's
/// server keeps the IO type it was given (`TokioIo<TcpStream>`),
/// hyper-util's `auto` server (axum's) wraps it.
fn plain_tcp(
    io: hyper::upgrade::Upgraded,
    wanted: bool,
) -> Result<(tokio::net::TcpStream, http_types::Bytes), hyper::upgrade::Upgraded> {
    type Tcp = hyper_util::rt::TokioIo<tokio::net::TcpStream>;
    if !wanted {
        return Err(io);
    }
    match hyper_util::server::conn::auto::upgrade::downcast::<Tcp>(io) {
        Ok(parts) => Ok((parts.io.into_inner(), parts.read_buf)),
        Err(io) => io
            .downcast::<Tcp>()
            .map(|parts| (parts.io.into_inner(), parts.read_buf)),
    }
}

/// Runs one upgraded connection until it ends.
///
/// Everything before the connection is registered and served (the
/// authenticate and connect hooks, a refusal's close) runs in a boxed
/// future that is freed once it is done, so the future an idle connection
/// keeps is its [`Connection`] and nothing else.
#[allow(clippy::too_many_arguments)] // two call sites, all of it the connection
fn serve<S>(
    hub: WsHub,
    slot: Slot,
    io: S,
    first: http_types::Bytes,
    peer: Option<SocketAddr>,
    identity: Identity,
    shutdown: Option<Shutdown>,
    span: Span,
    direct: Option<Arc<dyn ws_hub::DirectWrite>>,
) -> impl Future<Output = ()> + Send + 'static
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let setup = Box::pin(setup(
        hub, slot, io, first, peer, identity, shutdown, span, direct,
    ));
    async move {
        let Some(mut conn) = setup.await else {
            return;
        };
        let end = poll_fn(|cx| conn.poll(cx)).await;
        conn.finish(&end);
    }
}

/// A registered connection, ready to serve: none when it was refused (and
/// closed) before.
#[allow(clippy::too_many_arguments)] // one call site, all of it the connection
async fn setup<S>(
    hub: WsHub,
    slot: Slot,
    io: S,
    first: http_types::Bytes,
    peer: Option<SocketAddr>,
    identity: Identity,
    shutdown: Option<Shutdown>,
    span: Span,
    direct: Option<Arc<dyn ws_hub::DirectWrite>>,
) -> Option<Connection<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = slot.shared.clone();
    let config = &shared.config;
    let mut socket = Socket::new(io, &first, &shared.ws_config);
    drop(first);
    let identity = match &config.authenticate {
        None => identity,
        Some(hook) => {
            let decided = authenticate_first(
                &mut socket,
                &shared,
                hook,
                identity,
                shutdown.as_ref(),
                &span,
            )
            .await;
            match decided {
                Ok(identity) => identity,
                Err(frame) => {
                    socket.refuse(&shared, frame).await;
                    return None;
                }
            }
        }
    };
    let Ok(client) = hub.register_as(peer, identity) else {
        // Stopped between the upgrade and now.
        config.stats.count(Refusal::ShuttingDown);
        socket.refuse(&shared, going_away()).await;
        return None;
    };
    span.record("client", client.id());
    if let Some(socket) = direct {
        client.set_direct_write(socket);
    }
    tracing::debug!(target: "ws", parent: &span, "connected");
    if let Some(hook) = &config.on_connect {
        connect(&client, hook, config, &span).await;
    }
    Keepers::ensure(&shared, &hub, shutdown.as_ref());
    let now = Instant::now();
    let conn = Connection {
        socket,
        bucket: config.message_rate.map(Bucket::new),
        client,
        hub,
        slot,
        span: ConnSpan::new(span),
        shutdown,
        paused: false,
        ping_due: false,
        parked: false,
        last_seen: now,
        write: Write::Idle,
        read: Read::Open,
        close_by: None,
        timer: None,
    };
    // A signal that fired before this connection was watched.
    if conn.shutdown.as_ref().is_some_and(Shutdown::is_triggered) {
        conn.client.close(Some(going_away()));
    }
    Some(conn)
}

/// Runs the connect hook (bounded by the hook timeout); a refusal closes
/// the client after what the hook sent.
async fn connect(client: &WsClient, hook: &ConnectHook, config: &WsConfig, span: &Span) {
    let connected = hook(client).instrument(span.clone());
    match tokio::time::timeout(config.hook_timeout, connected).await {
        Ok(Ok(())) => {}
        // What the hook sent goes out before the close (it may say why).
        Ok(Err(frame)) => {
            config.stats.count(Refusal::Connect);
            tracing::info!(target: "ws", parent: span, code = u16::from(frame.code), reason = %frame.reason, "connect hook refused the client");
            client.close_after_queued(Some(frame));
        }
        Err(_) => {
            config.stats.count(Refusal::HookTimeout);
            tracing::info!(target: "ws", parent: span, reason = Refusal::HookTimeout.as_str(), hook = "on_connect", "closing");
            client.close_after_queued(Some(policy("the connect hook timed out")));
        }
    }
}

/// The identity the authenticate hook makes of the first message, or the
/// close frame that refuses the connection.
async fn authenticate_first<S>(
    socket: &mut Socket<S>,
    shared: &Shared,
    hook: &AuthenticateHook,
    identity: Identity,
    shutdown: Option<&Shutdown>,
    span: &Span,
) -> Result<Identity, CloseFrame>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let config = &shared.config;
    let first = first_message(socket, shared, hook, &identity).instrument(span.clone());
    let stop = async {
        match shutdown {
            Some(s) => s.wait().await,
            None => std::future::pending().await,
        }
    };
    let first = tokio::select! {
        r = tokio::time::timeout(config.hook_timeout, first) => r.unwrap_or(Auth::TimedOut),
        () = stop => Auth::Ended(going_away()),
    };
    match first {
        Auth::Identified(identity) => {
            if let Some(user) = &identity.user {
                span.record("user", user.as_str());
            }
            Ok(identity)
        }
        Auth::Refused(frame) => {
            config.stats.count(Refusal::Identify);
            tracing::info!(target: "ws", parent: span, reason = Refusal::Identify.as_str(), code = u16::from(frame.code), close_reason = %frame.reason, "authentication refused");
            Err(frame)
        }
        Auth::TimedOut => {
            config.stats.count(Refusal::HookTimeout);
            tracing::info!(target: "ws", parent: span, reason = Refusal::HookTimeout.as_str(), hook = "authenticate", "authentication refused");
            Err(policy("authentication timed out"))
        }
        Auth::Ended(frame) => Err(frame),
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
    socket: &mut Socket<S>,
    shared: &Shared,
    hook: &AuthenticateHook,
    identity: &Identity,
) -> Auth
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match poll_fn(|cx| socket.poll_next_answered(cx, shared)).await {
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

/// One socket: its read half (tungstenite's state, while reading) and its
/// write half (the lane).
struct Socket<S> {
    io: S,
    reader: Reader,
    lane: WriteLane,
}

impl<S> Socket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// The socket, and what was read from it already.
    fn new(io: S, first: &[u8], config: &WebSocketConfig) -> Self {
        Socket {
            io,
            reader: Reader::new(first, config),
            lane: WriteLane::new(),
        }
    }

    /// The next message; what tungstenite answers (pongs, a close reply)
    /// goes into the lane, for the writer.
    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        shared: &Shared,
    ) -> Poll<Option<Result<Message, WsError>>> {
        self.reader
            .poll_next(cx, &mut self.io, &mut self.lane, &shared.ws_config)
    }

    /// [`poll_next`](Socket::poll_next), then writes what it answered, as
    /// far as the socket takes it (before a connection has a writer).
    fn poll_next_answered(
        &mut self,
        cx: &mut Context<'_>,
        shared: &Shared,
    ) -> Poll<Option<Result<Message, WsError>>> {
        let next = self.poll_next(cx, shared);
        if !self.lane.is_empty() {
            let _ = self.poll_flush(cx);
        }
        next
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.lane.poll_flush(cx, &mut self.io)
    }

    /// Queues tungstenite's close frame.
    fn close(&mut self, cx: &mut Context<'_>, shared: &Shared, frame: Option<CloseFrame>) {
        self.reader
            .close(cx, &mut self.io, &mut self.lane, &shared.ws_config, frame);
    }

    /// Closes a connection that was never registered: the close frame, then
    /// the peer's reply, within the close timeout.
    async fn refuse(&mut self, shared: &Shared, frame: CloseFrame) {
        let mut frame = Some(frame);
        let closing = poll_fn(|cx| {
            if let Some(frame) = frame.take() {
                self.close(cx, shared, Some(frame));
            }
            if self.poll_flush(cx)?.is_pending() {
                return Poll::Pending;
            }
            loop {
                match std::task::ready!(self.poll_next_answered(cx, shared)) {
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return Poll::Ready(Ok::<(), std::io::Error>(())),
                }
            }
        });
        let _ = tokio::time::timeout(shared.config.close_timeout, closing).await;
    }
}

/// One task per handler and shutdown signal, while the handler has
/// connections: every ping interval, and when the signal fires, it
/// interrupts each client of the hub ([`WsClient::interrupt`]); each
/// connection then looks at its own clocks and signal. No connection keeps a
/// timer or a shutdown waiter of its own while it is idle.
struct Keepers;

impl Keepers {
    /// Starts the task of `signal` for this handler, unless it runs.
    fn ensure(shared: &Arc<Shared>, hub: &WsHub, signal: Option<&Shutdown>) {
        let mut keepers = lock(&shared.keepers);
        if keepers.iter().any(|k| same(k.as_ref(), signal)) {
            return;
        }
        keepers.push(signal.cloned());
        drop(keepers);
        tokio::spawn(keep(shared.clone(), hub.clone(), signal.cloned()));
    }
}

fn same(a: Option<&Shutdown>, b: Option<&Shutdown>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.same_signal(b),
        _ => false,
    }
}

/// The task of [`Keepers`]: ends with the handler's last connection (the
/// next one starts another) or when its signal fires.
async fn keep(shared: Arc<Shared>, hub: WsHub, signal: Option<Shutdown>) {
    let period = shared.config.ping_interval.max(Duration::from_millis(1));
    let mut tick = tokio::time::interval_at(Instant::now() + period, period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let fired = async {
        match &signal {
            Some(s) => s.wait().await,
            None => std::future::pending().await,
        }
    };
    let mut fired = std::pin::pin!(fired);
    let mut idle = std::pin::pin!(shared.idle.notified());
    loop {
        idle.as_mut().enable();
        {
            // Connections take their slot before they look for a keeper
            // (under this lock): none open means none will miss this one.
            let mut keepers = lock(&shared.keepers);
            if shared.slots.open.load(Ordering::Acquire) == 0 {
                keepers.retain(|k| !same(k.as_ref(), signal.as_ref()));
                return;
            }
        }
        tokio::select! {
            _ = tick.tick() => hub.for_each(WsClient::interrupt),
            () = &mut idle => idle.set(shared.idle.notified()),
            () = &mut fired => {
                lock(&shared.keepers).retain(|k| !same(k.as_ref(), signal.as_ref()));
                hub.for_each(WsClient::interrupt);
                return;
            }
        }
    }
}

/// A connection's span, boxed only when a subscriber wants it (none is
/// 8 bytes; a disabled `Span` would be 40 in every idle connection).
struct ConnSpan(Option<Box<Span>>);

impl ConnSpan {
    fn new(span: Span) -> Self {
        ConnSpan((!span.is_disabled()).then(|| Box::new(span)))
    }
}

impl std::ops::Deref for ConnSpan {
    type Target = Span;

    fn deref(&self) -> &Span {
        static NONE: std::sync::LazyLock<Span> = std::sync::LazyLock::new(Span::none);
        self.0.as_deref().unwrap_or(&NONE)
    }
}

/// Messages read before the writer runs again.
const READ_BURST: usize = 64;

/// Payload bytes of a burst past which [`WsConfig::on_messages`] gets it at
/// once (the rest of the burst follows in another call), so a connection
/// holds at most about this much besides the message being read.
const BURST_BYTES: usize = 256 << 10;

/// One registered connection: the reader and the writer are two halves of
/// one state machine over one socket, polled together by the connection's
/// task, so neither waits for the other (a write blocked on a full socket
/// does not stop reading, a slow read does not stop a close) and an idle
/// connection holds no lock, no second task, no read buffer and no timer.
struct Connection<S> {
    socket: Socket<S>,
    client: WsClient,
    hub: WsHub,
    /// The connection's slot, and through it what the handler's
    /// connections share.
    slot: Slot,
    /// The connection's span: entered around the message hook, parent of
    /// its events; never on the write path.
    span: ConnSpan,
    /// The server's shutdown signal, looked at when interrupted.
    shutdown: Option<Shutdown>,
    /// Reading is paused for backpressure (logged when it starts).
    paused: bool,
    /// A ping is to be written.
    ping_due: bool,
    /// The outbox left the writer waiting: sends may be writing to the
    /// socket directly until [`WsClient::unpark`].
    parked: bool,
    /// When the peer last sent a frame.
    last_seen: Instant,
    write: Write,
    read: Read,
    /// While closing: when to give up on the close (sending it, or the
    /// peer's reply).
    close_by: Option<Instant>,
    /// The write timeout or `close_by`, whichever comes first; made when
    /// one is needed, dropped once it fires with neither due.
    timer: Option<Pin<Box<Sleep>>>,
    /// The client's message allowance, if limited.
    bucket: Option<Bucket>,
}

/// The writer's half.
#[derive(Debug, PartialEq)]
enum Write {
    /// Writing what the lane holds, taking from the outbox when it is empty.
    Idle,
    /// The close frame is in the lane behind what was there.
    Closing(Option<Box<CloseFrame>>),
    /// Done writing: the close sent, if any.
    Done(Option<Box<CloseFrame>>),
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
    PeerClosed(Option<Box<CloseFrame>>),
    /// A protocol error: nothing more is read; the writer sends the close.
    Failed,
}

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// After the end: the client leaves the hub, the slot is given back,
    /// the end is logged and the disconnect hook told.
    fn finish(self, end: &Disconnect) {
        let Connection {
            socket,
            client,
            hub,
            slot,
            span,
            ..
        } = self;
        drop(socket);
        client.disconnected();
        hub.unregister(client.id());
        let shared = slot.shared.clone();
        drop(slot);
        log_end(&span, end);
        if let Some(hook) = &shared.config.on_disconnect {
            span.in_scope(|| hook(&client, end));
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Disconnect> {
        loop {
            // Another round only when something was read (it may have queued
            // answers): the writer runs until it is blocked on its own.
            let mut again = false;
            if self.client.take_interrupt() {
                self.check_clocks();
            }
            self.poll_write(cx);
            if let Some(end) = self.poll_timer(cx) {
                return Poll::Ready(end);
            }
            // Backpressure: a client whose outbox backs up behind a blocked
            // write is not read until it drains (the writer wakes us).
            let paused = !self.socket.lane.is_empty() && self.client.is_backed_up();
            if paused != self.paused {
                self.paused = paused;
                if paused {
                    tracing::debug!(target: "ws", parent: &*self.span, queued = self.client.queued(), "backpressure: reading paused until the outbox drains");
                }
            }
            // Everything the peer sent so far (a burst at most), then one
            // write of all the answers.
            let mut burst = 0;
            let mut messages = Vec::new();
            let mut held = 0;
            let mut ended = false;
            while self.read != Read::Failed && !paused && burst < READ_BURST {
                let next = self.socket.poll_next(cx, &self.slot.shared);
                // A pong or close reply tungstenite just queued goes before
                // anything sent from now on (a message's echo, say).
                self.claim_socket();
                match next {
                    Poll::Ready(Some(Ok(msg))) => {
                        burst += 1;
                        held += msg.len();
                        self.on_message(msg, &mut messages);
                        if held >= BURST_BYTES {
                            self.hand_burst(&mut messages);
                            held = 0;
                        }
                    }
                    Poll::Ready(Some(Err(e))) => match close_for(&e) {
                        Some(frame) if matches!(self.read, Read::Open | Read::Discarding) => {
                            // Answers to what the peer sent before go out first.
                            self.client.close_after_queued(Some(frame));
                            self.read = Read::Failed;
                            again = true;
                        }
                        _ => {
                            ended = true;
                            break;
                        }
                    },
                    Poll::Ready(None) => {
                        ended = true;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
            // The burst goes to its hook even when the connection ended after it.
            self.hand_burst(&mut messages);
            if ended {
                return Poll::Ready(self.end());
            }
            if burst > 0 {
                self.last_seen = Instant::now();
                again = true;
            }
            if let Write::Done(_) = self.write
                && self.read == Read::Failed
            {
                return Poll::Ready(self.end());
            }
            if !again {
                // An interrupt that came while this poll ran, before the
                // writer waited again, found no waker to wake: it is seen
                // here, after the writer waited (the outbox's lock orders
                // the two), and handled in another round.
                if !self.client.take_interrupt() {
                    return Poll::Pending;
                }
                self.check_clocks();
            }
        }
    }

    /// Looks at the shutdown signal and the idle timeout, and queues a ping
    /// (the handler's keeper interrupts every connection at each ping
    /// interval, and at shutdown).
    fn check_clocks(&mut self) {
        if self.shutdown.as_ref().is_some_and(Shutdown::is_triggered) {
            self.shutdown = None;
            self.client.close(Some(going_away()));
        }
        if matches!(self.write, Write::Done(_)) {
            return;
        }
        let config = &self.slot.shared.config;
        let now = Instant::now();
        if now.duration_since(self.last_seen) >= config.idle_timeout {
            self.client.close(Some(idle_timeout()));
        } else {
            // The keeper interrupts every connection once an interval.
            self.ping_due = true;
        }
    }

    /// The messages of a burst so far to [`WsConfig::on_messages`], if any.
    fn hand_burst(&self, messages: &mut Vec<Message>) {
        if !messages.is_empty()
            && let Some(hook) = &self.slot.shared.config.on_messages
        {
            let _entered = self.span.enter();
            hook(&self.client, messages);
            messages.clear();
        }
    }

    /// One message read; a text or binary one goes to the message hook,
    /// and into `burst` for the burst hook when there is one.
    fn on_message(&mut self, msg: Message, burst: &mut Vec<Message>) {
        match msg {
            Message::Text(_) | Message::Binary(_) => {
                if self.read != Read::Open {
                    return;
                }
                let config = &self.slot.shared.config;
                if let Some(bucket) = &mut self.bucket
                    && !bucket.take(config.message_rate.unwrap_or_default())
                {
                    config.stats.count(Refusal::MessageRate);
                    tracing::info!(target: "ws", parent: &*self.span, reason = Refusal::MessageRate.as_str(), "message rate exceeded: closing");
                    self.client.close(Some(policy("message rate exceeded")));
                    self.read = Read::Discarding;
                    return;
                }
                config.stats.0.received.fetch_add(1, Ordering::Relaxed);
                match (&config.on_message, &config.on_messages) {
                    (Some(hook), None) => {
                        let _entered = self.span.enter();
                        hook(&self.client, msg);
                    }
                    (Some(hook), Some(_)) => {
                        let _entered = self.span.enter();
                        hook(&self.client, msg.clone());
                        burst.push(msg);
                    }
                    (None, Some(_)) => burst.push(msg),
                    (None, None) => {}
                }
            }
            Message::Close(frame) => {
                // Our own close's reply, or the peer's close: tungstenite
                // queues the reply; the writer stops.
                if !matches!(self.write, Write::Done(Some(_)))
                    && matches!(self.read, Read::Open | Read::Discarding)
                {
                    self.read = Read::PeerClosed(frame.map(Box::new));
                    self.client.disconnected();
                    self.arm_close();
                }
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }

    /// Advances the writer until it is blocked or done.
    fn poll_write(&mut self, cx: &mut Context<'_>) {
        loop {
            if let Write::Done(_) = self.write {
                return;
            }
            match self.flush(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => {
                    self.write = match std::mem::replace(&mut self.write, Write::Idle) {
                        // Decided: it counts as the server's close.
                        Write::Closing(frame) => Write::Done(frame),
                        _ => Write::Done(None),
                    };
                    return;
                }
                Poll::Pending => {
                    // A write blocked on a peer that does not read: a close
                    // decided meanwhile goes next, past the data not started.
                    if self.write == Write::Idle && self.client.poll_close_requested(cx).is_ready()
                    {
                        self.socket.lane.abandon_data();
                        self.take_outgoing(cx);
                    }
                    return;
                }
            }
            // Everything written.
            if let Write::Closing(frame) = &mut self.write {
                self.write = Write::Done(frame.take());
                // The peer now has the close timeout to answer.
                self.close_by = None;
                self.arm_close();
                return;
            }
            if !self.take_outgoing(cx) {
                return;
            }
        }
    }

    /// Writes what the lane holds. What the outbox did not hand over (a
    /// ping, tungstenite's pong or close reply) may be in it while sends
    /// write to the socket directly: they stop first, and the end of frames
    /// one of them started goes first.
    fn flush(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.claim_socket();
        self.socket.poll_flush(cx)
    }

    /// While the lane holds something the outbox did not hand over, sends
    /// do not write to the socket directly: what the lane holds goes first,
    /// after the end of a frame a direct write started.
    fn claim_socket(&mut self) {
        if self.parked && !self.socket.lane.is_empty() {
            self.parked = false;
            if let Some(rest) = self.client.unpark() {
                self.socket.lane.push_unfinished(rest);
            }
        }
    }

    /// Takes what the outbox holds into the lane, and a due ping: whether
    /// anything was taken.
    fn take_outgoing(&mut self, cx: &mut Context<'_>) -> bool {
        // The lane's written buffer, if any, is the outbox's next one.
        let mut batch = self.socket.lane.batch();
        let outgoing = self.client.poll_outgoing(cx, &mut batch);
        self.parked = outgoing.is_pending();
        match outgoing {
            Poll::Ready(Outgoing::Messages) => {
                self.socket.lane.push_data(&mut batch);
            }
            Poll::Ready(Outgoing::Close(frame)) => {
                self.socket.close(cx, &self.slot.shared, frame.clone());
                self.write = Write::Closing(frame.map(Box::new));
                self.arm_close();
                return true;
            }
            Poll::Ready(Outgoing::Gone) => {
                self.write = Write::Done(None);
                return false;
            }
            Poll::Pending if !self.ping_due => return false,
            Poll::Pending => {}
        }
        if std::mem::take(&mut self.ping_due) {
            self.socket.lane.push_control(PING);
        }
        true
    }

    /// The write timeout (a write blocked with no byte written for that
    /// long: `1008 write timeout`) and the close deadline: the end, once
    /// either passed. Keeps the one timer armed for the earlier.
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Option<Disconnect> {
        let config = &self.slot.shared.config;
        loop {
            let stall = (self.socket.lane.stalled())
                .filter(|_| !matches!(self.write, Write::Done(_)))
                .map(|since| since + config.write_timeout);
            if stall.is_none() && self.close_by.is_none() && self.timer.is_none() {
                // Nothing to time (the common case): no clock read per wake.
                return None;
            }
            let now = Instant::now();
            if stall.is_some_and(|at| now >= at) {
                config.stats.count(Refusal::WriteTimeout);
                tracing::info!(target: "ws", parent: &*self.span, timeout_ms = u64::try_from(config.write_timeout.as_millis()).unwrap_or(u64::MAX), "write timeout: the peer stopped reading");
                return Some(Disconnect::ClosedByServer(Some(policy("write timeout"))));
            }
            if self.close_by.is_some_and(|at| now >= at) {
                return Some(self.end());
            }
            let next = match (stall, self.close_by) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let timer = match (&mut self.timer, next) {
                (None, None) => return None,
                (None, Some(at)) => self.timer.insert(Box::pin(tokio::time::sleep_until(at))),
                (Some(timer), Some(at)) if at < timer.deadline() => {
                    timer.as_mut().reset(at);
                    timer
                }
                (Some(timer), _) => timer,
            };
            if timer.as_mut().poll(cx).is_pending() {
                return None;
            }
            // Fired early (the deadline moved on): wait for the new one.
            match next {
                None => {
                    self.timer = None;
                    return None;
                }
                Some(at) => timer.as_mut().reset(at),
            }
        }
    }

    fn arm_close(&mut self) {
        if self.close_by.is_none() {
            self.close_by = Some(Instant::now() + self.slot.shared.config.close_timeout);
        }
    }

    /// Why the connection ended, once it has. What the lane still holds
    /// (a close reply) gets one try.
    fn end(&mut self) -> Disconnect {
        let waker = std::task::Waker::noop();
        let _ = self.flush(&mut Context::from_waker(waker));
        if let Read::PeerClosed(frame) = &mut self.read {
            return Disconnect::Closed(frame.take().map(|f| *f));
        }
        match &mut self.write {
            // Sent, or decided but stuck behind a peer that does not read.
            Write::Done(Some(frame)) | Write::Closing(Some(frame)) => {
                Disconnect::ClosedByServer(Some(CloseFrame::clone(frame)))
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

/// The token bucket of [`MessageRate`]; written here because it is two
/// numbers per connection (a keyed limiter crate keeps far more).
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: MessageRate) -> Self {
        Bucket {
            tokens: f64::from(rate.burst),
            at: Instant::now(),
        }
    }

    /// Takes a token; false when there is none.
    fn take(&mut self, rate: MessageRate) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * rate.per_second;
        self.tokens = (self.tokens + refill).min(f64::from(rate.burst.max(1)));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_serve::Upgraded;

    /// What an idle connection keeps, in bytes (the crate docs' breakdown).
    #[tokio::test]
    async fn an_idle_connection_keeps_a_small_future_and_nothing_else() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_client, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let io = Upgraded::new(accepted.unwrap().0, Default::default());
        let hub = WsHub::new(ws_hub::HubConfig::default());
        let handler_shared = Arc::new(Shared {
            config: WsConfig::default(),
            ws_config: WebSocketConfig::default(),
            slots: Slots::default(),
            keepers: Mutex::default(),
            idle: tokio::sync::Notify::new(),
        });
        let slot = Slots::take(&handler_shared, None).unwrap();
        let (io, first) = io.into_parts();
        let fut = serve_io(
            hub,
            slot,
            io,
            first,
            None,
            Identity::default(),
            None,
            Span::none(),
        );
        let sizes = [
            ("serve future", std::mem::size_of_val(&fut)),
            (
                "Connection",
                std::mem::size_of::<Connection<tcp::SharedTcp>>(),
            ),
            ("Socket", std::mem::size_of::<Socket<tcp::SharedTcp>>()),
            ("SharedTcp", std::mem::size_of::<tcp::SharedTcp>()),
            ("Reader", std::mem::size_of::<Reader>()),
            ("WriteLane", std::mem::size_of::<WriteLane>()),
            ("Write", std::mem::size_of::<Write>()),
            ("Read", std::mem::size_of::<Read>()),
            ("Span", std::mem::size_of::<Span>()),
            ("Slot", std::mem::size_of::<Slot>()),
        ];
        eprintln!("{sizes:?}");
        // The crate docs' breakdown (release: 312 bytes); a guard, not a
        // target: what a future change adds to every idle connection.
        assert!(sizes[0].1 <= 384, "{sizes:?}");
    }

    /// A socket that interrupts every client of `hub` from inside the
    /// connection's next write, once armed.
    struct InterruptingSocket {
        inner: tokio::io::DuplexStream,
        hub: WsHub,
        armed: Arc<std::sync::atomic::AtomicBool>,
    }

    impl AsyncRead for InterruptingSocket {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for InterruptingSocket {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            if self.armed.swap(false, Ordering::AcqRel) {
                self.hub.for_each(WsClient::interrupt);
            }
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    /// An interrupt that comes while the connection's task runs, after the
    /// send that woke it took the outbox's waker and before the writer
    /// waits again, is not lost: here it comes from inside the write of
    /// that send's message, and the ping it asks for follows the message
    /// (the ping interval is an hour: nothing else would send one).
    #[tokio::test]
    async fn an_interrupt_during_the_connections_own_poll_is_not_lost() {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        use tokio_tungstenite::tungstenite::protocol::Role;

        let hub = WsHub::new(ws_hub::HubConfig::default());
        let (registered, mut joined) = tokio::sync::mpsc::unbounded_channel();
        let config = WsConfig {
            ping_interval: Duration::from_secs(3600),
            on_connect: Some(on_connect(move |c: &WsClient| {
                let _ = registered.send(c.clone());
                std::future::ready(Ok(()))
            })),
            ..WsConfig::default()
        };
        let shared = Arc::new(Shared {
            config,
            ws_config: WebSocketConfig::default(),
            slots: Slots::default(),
            keepers: Mutex::default(),
            idle: tokio::sync::Notify::new(),
        });
        let slot = Slots::take(&shared, None).unwrap();
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let io = InterruptingSocket {
            inner: ours,
            hub: hub.clone(),
            armed: armed.clone(),
        };
        tokio::spawn(serve(
            hub.clone(),
            slot,
            io,
            http_types::Bytes::new(),
            None,
            Identity::default(),
            None,
            Span::none(),
            None,
        ));
        let mut peer =
            tokio_tungstenite::WebSocketStream::from_raw_socket(theirs, Role::Client, None).await;
        let client = joined.recv().await.unwrap();

        armed.store(true, Ordering::Release);
        client.try_send(Message::text("hello")).unwrap();
        let wait = Duration::from_secs(5);
        let first = tokio::time::timeout(wait, peer.next()).await;
        assert_eq!(
            first.expect("the message").unwrap().unwrap(),
            Message::text("hello")
        );
        assert!(!armed.load(Ordering::Acquire), "interrupted from the write");
        let second = tokio::time::timeout(wait, peer.next())
            .await
            .expect("the ping the interrupt asked for")
            .unwrap()
            .unwrap();
        assert!(matches!(second, Message::Ping(_)), "{second:?}");
    }
}

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../ws_handler.md")]
#[doc = include_str!("../../../types/infra/AuthenticateHook.md")]
#[doc = include_str!("../../../types/infra/ConnectHook.md")]
#[doc = include_str!("../../../types/infra/Disconnect.md")]
#[doc = include_str!("../../../types/infra/DisconnectHook.md")]
#[doc = include_str!("../../../types/infra/IdentifyHook.md")]
#[doc = include_str!("../../../types/infra/MessageHook.md")]
#[doc = include_str!("../../../types/infra/MessagesHook.md")]
#[doc = include_str!("../../../types/infra/MessageRate.md")]
#[doc = include_str!("../../../types/infra/Refusal.md")]
#[doc = include_str!("../../../types/infra/WsConfig.md")]
#[doc = include_str!("../../../types/infra/WsStats.md")]
pub struct RegistryExamples;
