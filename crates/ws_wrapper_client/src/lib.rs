//! A ws-wrapper client over one WebSocket that reconnects by itself: named events, requests both ways with typed handlers, named and anonymous channels, timeouts and cancellation.
//!
//! It speaks the protocol of the JavaScript `ws-wrapper` library, so it
//! talks to a `ws_wrapper_server`, to rt-server's `/rpc` and to a Node
//! server built on the npm package alike. The protocol itself lives in
//! `ws_wrapper_session` (one I/O-free session per connection) and the async
//! half both ends share in `ws_wrapper_peer`; this crate is their driver
//! over a socket: it connects, reconnects, keeps the connection alive, and
//! queues what the application sends while it is down.
//!
//! - **Connecting**: [`WrapperClient::connect`] (or [`WrapperClient::new`],
//!   handlers, then [`WrapperClient::start`], so that no message arrives
//!   before its handler is registered). `ws://` or `wss://` URLs, over
//!   tokio-tungstenite; TLS is rustls, trusting Mozilla's roots
//!   (webpki-roots) unless [`ClientConfig::tls`] says otherwise (a private
//!   CA: [`ClientConfig::tls_trusting`]). [`ClientConfig::headers`] go with
//!   every handshake (`Authorization: Bearer ...`).
//! - **Handlers** per event name on the main channel ([`WrapperClient::on`])
//!   or a named channel ([`WrapperClient::of`]), with typed arguments (the
//!   `args` array deserialized into a tuple) and a typed result, or an
//!   anonymous channel ([`Reply::Channel`] with [`ClientCtx::channel`]); an
//!   `Err` travels as an Error object (`"_": 1`), a panic as `handler
//!   panicked`, a result that does not serialize as `unserializable result:
//!   ...`. Handlers belong to the client, not to a socket: they survive
//!   reconnection. They start in arrival order; a slow one never blocks
//!   reading.
//! - **Requests** ([`WrapperClient::request`]) wait at most
//!   [`ClientConfig::request_timeout`] (2 minutes, as the JavaScript
//!   library's Node server) or a per-request [`PendingRequest::timeout`].
//!   Dropping the future, [`CancelHandle::cancel`] or the timeout sends the
//!   protocol's cancel `{i, x, _: 1}`. A request answered with an anonymous
//!   channel (`{i, h: 1}`) resolves through [`PendingRequest::channel`] to a
//!   [`ClientChannel`] (events and requests both ways, `abort` sends `{h, x, _: 1}`).
//! - **Heartbeat**: a ping every [`ClientConfig::heartbeat_interval`] (25 s);
//!   when nothing comes back within [`ClientConfig::heartbeat_timeout`]
//!   (10 s) the connection is dropped and the client reconnects.
//! - **Reconnection**: when the connection drops, the client reconnects with
//!   jittered exponential backoff ([`backoff_delay`]); a close with 1012
//!   (Service Restart) or 1013 (Try Again Later) starts from the longer
//!   [`ClientConfig::restart_backoff_base`]; [`WrapperClient::close`] (or
//!   dropping the last handle) stops for good. Requests pending on a dropped
//!   connection fail with [`ClientRequestError::Disconnected`].
//! - **Offline queue and order**: while not connected, emits are queued
//!   (at most [`ClientConfig::offline_queue`], 256; one more is
//!   [`ClientRequestError::QueueFull`]) and requests wait there too
//!   ([`OfflineRequests::Wait`], until their timeout) or fail at once
//!   ([`OfflineRequests::Fail`]). Once connected, the queue goes out first, in
//!   call order, before anything sent after it: messages leave in the order
//!   the application made them, across a reconnect too.
//! - **State and events**: [`WrapperClient::state`], [`WrapperClient::watch`],
//!   [`WrapperClient::connected`], and [`WrapperClient::events`]
//!   ([`ClientEvent`]: connected, disconnected with the close code and reason,
//!   reconnecting with the attempt and the delay).
//!
//! # Example
//!
//! ```no_run
//! use ws_wrapper_client::{ClientConfig, ClientEvent, PeerError, WrapperClient};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = WrapperClient::new("ws://127.0.0.1:8080/rpc", ClientConfig::default())?;
//! client.on("double", |_ctx, (x,): (i64,)| async move { Ok::<_, PeerError>(x * 2) });
//! let mut events = client.events();
//! client.start().await?;
//! assert!(matches!(events.recv().await?, ClientEvent::Connected { connection: 1 }));
//! let sum: f64 = client.request(None, "add", (2, 3)).await?;
//! let who: String = client.of("room1").request("who", ()).await?;
//! client.emit(None, "notify-me", ("hi",))?; // queued while reconnecting
//! # let _ = (sum, who);
//! client.close().await;
//! # Ok(())
//! # }
//! ```
//!
//! Over TLS, with a bearer token on the handshake, trusting a private CA
//! (leave `tls` out for a server with a public certificate):
//!
//! ```no_run
//! use ws_wrapper_client::{ClientConfig, WrapperClient};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = ClientConfig::default();
//! config.headers.insert("authorization", "Bearer TOKEN".parse()?);
//! config.tls = Some(ClientConfig::tls_trusting(&std::fs::read("ca.pem")?)?);
//! let client = WrapperClient::connect("wss://rt.example:8443/rpc", config).await?;
//! # let _ = client;
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::future::IntoFuture;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, Weak};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};
use tokio_util::sync::CancellationToken;
use ws_wrapper_peer::{
    Args, Asked, BoxFuture, Call, Handler, HandlerFuture, Handlers, Host, Peer, PeerConfig, Target,
    handler, to_args,
};

/// An Error object as it travels (`{"message": ...}`, `"_": 1`): what a
/// handler answers with, what a peer rejected with.
pub use ws_wrapper_peer::PeerError;

/// Why an emit, a request or a channel call of the client failed; shared with the server.
pub use ws_wrapper_peer::RequestError as ClientRequestError;

/// The rustls crate of [`ClientConfig::tls`].
pub use tokio_rustls::rustls;

/// An anonymous channel a request was answered with (or a handler answered
/// with): events and requests both ways until either side aborts it or its
/// connection ends. Events without a handler ([`ClientChannel::on`]) queue
/// for [`ClientChannel::recv`].
pub type ClientChannel = ws_wrapper_peer::Channel<ClientCtx>;

/// What a client handler answers a request with: a value or a [`ClientChannel`].
pub type Reply = ws_wrapper_peer::Reply<ClientChannel>;

/// What happened to the client's connection, for the application
/// ([`WrapperClient::events`]), in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// Connected; `connection` counts from 1 (2 after the first reconnection).
    Connected {
        /// Which connection this is.
        connection: u64,
    },
    /// The connection ended: the server's close code and reason (`None` and
    /// empty without a close frame; reason "heartbeat timeout" when the
    /// server stopped answering pings).
    Disconnected {
        /// The close code, if the server sent one.
        code: Option<u16>,
        /// The close reason, or why the client gave up on the connection.
        reason: String,
    },
    /// Reconnection attempt `attempt` (from 1) starts after `delay`.
    Reconnecting {
        /// The attempt, from 1.
        attempt: u32,
        /// The wait before it.
        delay: Duration,
    },
    /// Closed for good.
    Closed,
}

/// How many [`ClientEvent`]s a slow [`WrapperClient::events`] receiver may
/// fall behind before it skips some (it is told: `Lagged`).
pub const EVENTS_BUFFER: usize = 64;

/// How long a close the user asked for waits for the server's close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Settings of a client; every field has a default.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// How long a request waits for its answer. Default: 2 minutes (the
    /// JavaScript library's Node server).
    pub request_timeout: Duration,
    /// How long one connection attempt (TCP and WebSocket handshake) may take. Default: 10 s.
    pub connect_timeout: Duration,
    /// Reconnect when the connection drops. Default: true.
    pub reconnect: bool,
    /// The first reconnection delay after an ordinary drop; each failed
    /// attempt doubles it. Default: 250 ms.
    pub backoff_base: Duration,
    /// The cap of the doubling; jitter adds up to half of the delay on top. Default: 30 s.
    pub backoff_max: Duration,
    /// The first delay after a close with 1012 (Service Restart) or 1013
    /// (Try Again Later): the server asked for patience. Default: 5 s.
    pub restart_backoff_base: Duration,
    /// Headers added to every WebSocket handshake request, reconnections
    /// included: `Authorization: Bearer ...`, cookies. Default: none.
    pub headers: http::HeaderMap,
    /// TLS of `wss://` URLs, used as it is: the roots to trust, client
    /// certificates, ALPN. [`ClientConfig::tls_trusting`] makes one that
    /// trusts a private CA. Default: `None`, Mozilla's roots (webpki-roots),
    /// ALPN `http/1.1`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// How often a ping goes to the server while connected; zero: never
    /// (no heartbeat). Default: 25 s.
    pub heartbeat_interval: Duration,
    /// How long after a ping the connection is given up for dead (and the
    /// client reconnects) when nothing, no pong and no message, came back.
    /// Default: 10 s.
    pub heartbeat_timeout: Duration,
    /// How many emits (and waiting requests) the offline queue holds while
    /// the client is not connected; one more is [`ClientRequestError::QueueFull`].
    /// Default: 256.
    pub offline_queue: usize,
    /// What a request made while not connected does. Default:
    /// [`OfflineRequests::Wait`].
    pub offline_requests: OfflineRequests,
}

/// What a request made while the client is not connected does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OfflineRequests {
    /// It waits in the offline queue, in call order, and is sent once
    /// connected; it fails with [`ClientRequestError::Timeout`] if its
    /// timeout passes first (nothing was sent).
    #[default]
    Wait,
    /// It fails at once with [`ClientRequestError::Disconnected`].
    Fail,
}

impl ClientConfig {
    /// A TLS configuration for [`ClientConfig::tls`] that trusts only the
    /// CA certificates in `ca_pem` (PEM, one or more), with ALPN `http/1.1`:
    /// for a server whose certificate a private or self-made CA signed.
    ///
    /// # Errors
    ///
    /// [`ConnectError::InvalidTls`] when `ca_pem` is not PEM or holds no
    /// certificate rustls accepts as a root.
    pub fn tls_trusting(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>, ConnectError> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| ConnectError::InvalidTls(format!("CA PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| ConnectError::InvalidTls(format!("CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(ConnectError::InvalidTls(
                "CA PEM: no CERTIFICATE section".into(),
            ));
        }
        Ok(tls_config(roots))
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            request_timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
            reconnect: true,
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            restart_backoff_base: Duration::from_secs(5),
            headers: http::HeaderMap::new(),
            tls: None,
            heartbeat_interval: Duration::from_secs(25),
            heartbeat_timeout: Duration::from_secs(10),
            offline_queue: 256,
            offline_requests: OfflineRequests::Wait,
        }
    }
}

/// The delay before reconnection attempt `attempt` (0 for the first one
/// after a drop), pure: `base * 2^attempt` capped at
/// [`ClientConfig::backoff_max`], plus jitter of up to half of that taken
/// from `jitter` (any random `u64`). `base` is
/// [`ClientConfig::restart_backoff_base`] when the close that ended the
/// connection was 1012 or 1013, else [`ClientConfig::backoff_base`]; so the
/// delay is never below the base (nor below the cap, once reached) and
/// never above 1.5 times the cap.
pub fn backoff_delay(
    config: &ClientConfig,
    attempt: u32,
    close_code: Option<u16>,
    jitter: u64,
) -> Duration {
    let base = match close_code {
        Some(1012 | 1013) => config.restart_backoff_base,
        _ => config.backoff_base,
    };
    let exp = base
        .checked_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(Duration::MAX)
        .min(config.backoff_max.max(base));
    let half = exp.as_nanos() / 2;
    let extra = if half == 0 {
        0
    } else {
        u128::from(jitter) % (half + 1)
    };
    exp + Duration::from_nanos(u64::try_from(extra).unwrap_or(u64::MAX))
}

/// Where the client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientState {
    /// Made, not yet connected ([`WrapperClient::start`] not done).
    Connecting,
    /// Connected; `connection` counts connections from 1 (2 after the first reconnection).
    Connected {
        /// Which connection this is, from 1.
        connection: u64,
    },
    /// The connection dropped; attempt `attempt` (from 1) starts after `delay`.
    Reconnecting {
        /// The attempt about to be made, from 1.
        attempt: u32,
        /// The wait before it.
        delay: Duration,
        /// The close code of the connection that dropped, `None` without a close frame.
        close_code: Option<u16>,
    },
    /// Closed for good: by [`WrapperClient::close`], by dropping every handle, or
    /// after a drop with [`ClientConfig::reconnect`] off.
    Closed,
}

/// Why [`WrapperClient::connect`] or [`WrapperClient::start`] did not connect.
#[derive(Debug)]
pub enum ConnectError {
    /// Not a `ws://` or `wss://host[:port][/path]` URL.
    InvalidUrl(String),
    /// The TCP connection failed.
    Io(std::io::Error),
    /// The TLS handshake of a `wss://` URL failed: for example the server's
    /// certificate is not signed by a trusted root, or not for that host.
    Tls(std::io::Error),
    /// A TLS setting is unusable (a CA PEM with no certificate, a host that
    /// is no TLS server name).
    InvalidTls(String),
    /// The WebSocket handshake failed (for example a non-101 answer).
    Handshake(String),
    /// No connection within [`ClientConfig::connect_timeout`].
    Timeout,
    /// [`WrapperClient::close`] came first.
    Closed,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::InvalidUrl(why) => write!(f, "invalid url: {why}"),
            ConnectError::Io(e) => write!(f, "connect: {e}"),
            ConnectError::Tls(e) => write!(f, "tls handshake: {e}"),
            ConnectError::InvalidTls(why) => write!(f, "tls: {why}"),
            ConnectError::Handshake(e) => write!(f, "websocket handshake: {e}"),
            ConnectError::Timeout => f.write_str("connect timed out"),
            ConnectError::Closed => f.write_str("the client was closed"),
        }
    }
}

impl std::error::Error for ConnectError {}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

type ClientHandler = Handler<ClientCtx, ClientChannel>;

/// One connection, as the peer's host: frames go to its writer task.
struct Link {
    /// The client (a cycle through its line, broken when the connection ends).
    inner: Arc<Inner>,
    out: mpsc::UnboundedSender<Message>,
}

impl Host for Link {
    type Ctx = ClientCtx;

    fn send(&self, text: String) -> Result<(), ClientRequestError> {
        self.out
            .send(Message::text(text))
            .map_err(|_| ClientRequestError::Disconnected)
    }

    fn lookup(&self, channel: Option<&str>, name: &str) -> Result<ClientHandler, PeerError> {
        // Every user handle gone: the client is closing, nothing is handled.
        if self.inner.close.is_cancelled() {
            return Err(PeerError::new("the client is closing"));
        }
        let handlers = self
            .inner
            .handlers
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        Handlers::lookup(&[&handlers], channel, name)
    }

    fn ctx(&self, call: Call<ClientCtx>) -> ClientCtx {
        ClientCtx {
            client: self.inner.clone().handle(),
            call,
        }
    }
}

/// Something the application sent while not connected.
enum Queued {
    Emit {
        channel: Option<String>,
        name: String,
        args: Vec<Value>,
    },
    Request {
        channel: Option<String>,
        name: String,
        args: Vec<Value>,
        deadline: Instant,
        sent: oneshot::Sender<Result<Asked<Link>, ClientRequestError>>,
    },
}

/// The connection of the moment and what waits for the next one.
#[derive(Default)]
struct Line {
    peer: Option<Arc<Peer<Link>>>,
    offline: VecDeque<Queued>,
}

impl Line {
    /// Sends the offline queue on `peer`, in order, and makes it current.
    fn connect(&mut self, peer: Arc<Peer<Link>>) {
        for queued in self.offline.drain(..) {
            match queued {
                Queued::Emit {
                    channel,
                    name,
                    args,
                } => {
                    let _ = peer.emit(channel.as_deref(), &name, args);
                }
                Queued::Request {
                    channel,
                    name,
                    args,
                    deadline,
                    sent,
                } => {
                    if sent.is_closed() {
                        continue; // timed out or dropped while waiting: never sent
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    let asked = peer.send_request(
                        Target::Named(channel.as_deref()),
                        &name,
                        args,
                        Some(left),
                    );
                    let _ = sent.send(asked);
                }
            }
        }
        self.peer = Some(peer);
    }

    fn push(&mut self, queued: Queued, capacity: usize) -> Result<(), ClientRequestError> {
        self.offline.retain(|q| match q {
            Queued::Request { sent, .. } => !sent.is_closed(),
            Queued::Emit { .. } => true,
        });
        if self.offline.len() >= capacity {
            return Err(ClientRequestError::QueueFull);
        }
        self.offline.push_back(queued);
        Ok(())
    }
}

struct Inner {
    url: String,
    addr: String,
    config: ClientConfig,
    handlers: RwLock<Handlers<ClientHandler>>,
    line: Mutex<Line>,
    state: watch::Sender<ClientState>,
    events: broadcast::Sender<ClientEvent>,
    close: CancellationToken,
    started: AtomicBool,
    /// The user handles' guard, to give handlers an owning [`WrapperClient`].
    owner: OnceLock<Weak<Owner>>,
}

impl Inner {
    /// A handle for a handler's context: the users' owner while there is
    /// one, else one of its own (the client is closing then anyway).
    fn handle(self: Arc<Self>) -> WrapperClient {
        let owner = self
            .owner
            .get()
            .and_then(Weak::upgrade)
            .unwrap_or_else(|| Arc::new(Owner(self.clone())));
        WrapperClient {
            inner: self,
            _owner: owner,
        }
    }

    fn tell(&self, event: ClientEvent) {
        let _ = self.events.send(event);
    }

    fn closed_for_good(&self) {
        self.state.send_replace(ClientState::Closed);
        self.tell(ClientEvent::Closed);
        // Whatever still waits offline will never be sent.
        lock(&self.line).offline.clear();
    }
}

/// Closes the client when the last user handle goes.
struct Owner(Arc<Inner>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.close.cancel();
        if !self.0.started.load(Ordering::SeqCst) {
            self.0.closed_for_good();
        }
    }
}

/// A ws-wrapper client; clones share it. It closes when
/// [`WrapperClient::close`] is called or the last clone is dropped (a clone
/// captured by one of its own handlers counts: call `close` then).
#[derive(Clone)]
pub struct WrapperClient {
    inner: Arc<Inner>,
    _owner: Arc<Owner>,
}

type Ws = WebSocketStream<Stream>;

/// `ws://` or `wss://host[:port][/path]` as (`host:port`, the URL to request).
fn parse_url(url: &str) -> Result<(String, String), ConnectError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| ConnectError::InvalidUrl(format!("{url}: {e}")))?;
    let (scheme, default_port) = match uri.scheme_str() {
        Some("ws") => ("ws", 80),
        Some("wss") => ("wss", 443),
        Some(other) => {
            return Err(ConnectError::InvalidUrl(format!(
                "{url}: scheme {other}, only ws:// and wss:// are supported"
            )));
        }
        None => return Err(ConnectError::InvalidUrl(format!("{url}: no scheme"))),
    };
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| ConnectError::InvalidUrl(format!("{url}: no host")))?;
    let port = uri.port_u16().unwrap_or(default_port);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let path = if path.is_empty() { "/" } else { path };
    let authority = match uri.port_u16() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    // `[::1]` stays bracketed for both the socket address and the URL.
    Ok((
        format!("{host}:{port}"),
        format!("{scheme}://{authority}{path}"),
    ))
}

/// A rustls client configuration trusting `roots`, ALPN `http/1.1` (what
/// a WebSocket handshake speaks).
fn tls_config(roots: rustls::RootCertStore) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the provider supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Mozilla's roots (webpki-roots), made once.
fn default_tls() -> Arc<rustls::ClientConfig> {
    static DEFAULT: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    DEFAULT
        .get_or_init(|| {
            tls_config(rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            })
        })
        .clone()
}

/// The TLS server name of `host:port` (`[::1]` without its brackets).
fn server_name(addr: &str) -> Result<rustls::pki_types::ServerName<'static>, ConnectError> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| ConnectError::InvalidTls(format!("{host}: {e}")))
}

async fn open_socket(inner: &Inner) -> Result<Ws, ConnectError> {
    let attempt = async {
        let mut request = inner
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| ConnectError::InvalidUrl(format!("{}: {e}", inner.url)))?;
        for (name, value) in &inner.config.headers {
            request.headers_mut().append(name, value.clone());
        }
        let tcp = TcpStream::connect(&inner.addr)
            .await
            .map_err(ConnectError::Io)?;
        let _ = tcp.set_nodelay(true);
        let stream = if inner.url.starts_with("wss://") {
            let tls = inner.config.tls.clone().unwrap_or_else(default_tls);
            let tls = tokio_rustls::TlsConnector::from(tls)
                .connect(server_name(&inner.addr)?, tcp)
                .await
                .map_err(ConnectError::Tls)?;
            Stream::Tls(Box::new(tls))
        } else {
            Stream::Plain(tcp)
        };
        let config = WebSocketConfig::default();
        let (ws, _response) = client_async_with_config(request, stream, Some(config))
            .await
            .map_err(|e| ConnectError::Handshake(e.to_string()))?;
        Ok(ws)
    };
    tokio::time::timeout(inner.config.connect_timeout, attempt)
        .await
        .map_err(|_| ConnectError::Timeout)?
}

/// The client's byte stream: plain TCP (`ws://`) or TLS over it (`wss://`).
#[derive(Debug)]
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl WrapperClient {
    /// Connects to `url` (`ws://` or `wss://host[:port][/path]`) once; the client then
    /// reconnects by itself. Handlers added after this miss what arrives
    /// before them: use [`WrapperClient::new`] and [`WrapperClient::start`]
    /// when the server speaks first.
    pub async fn connect(url: &str, config: ClientConfig) -> Result<WrapperClient, ConnectError> {
        let client = WrapperClient::new(url, config)?;
        client.start().await?;
        Ok(client)
    }

    /// A client for `url`, not connected yet: add handlers, then [`WrapperClient::start`].
    pub fn new(url: &str, config: ClientConfig) -> Result<WrapperClient, ConnectError> {
        let (addr, url) = parse_url(url)?;
        let inner = Arc::new(Inner {
            url,
            addr,
            config,
            handlers: RwLock::default(),
            line: Mutex::default(),
            state: watch::Sender::new(ClientState::Connecting),
            events: broadcast::Sender::new(EVENTS_BUFFER),
            close: CancellationToken::new(),
            started: AtomicBool::new(false),
            owner: OnceLock::new(),
        });
        let owner = Arc::new(Owner(inner.clone()));
        let _ = inner.owner.set(Arc::downgrade(&owner));
        Ok(WrapperClient {
            inner,
            _owner: owner,
        })
    }

    /// Makes the first connection (one attempt, no retry: an error here is
    /// the caller's to handle); after it the client reconnects by itself.
    /// Once started, waits until connected, or [`ConnectError::Closed`].
    pub async fn start(&self) -> Result<(), ConnectError> {
        let inner = &self.inner;
        if inner.close.is_cancelled() {
            return Err(ConnectError::Closed);
        }
        if inner.started.swap(true, Ordering::SeqCst) {
            return self.connected().await.map(drop).ok_or(ConnectError::Closed);
        }
        let ws = tokio::select! {
            ws = open_socket(inner) => ws,
            () = inner.close.cancelled() => Err(ConnectError::Closed),
        };
        let ws = match ws {
            Ok(ws) => ws,
            Err(e) => {
                inner.started.store(false, Ordering::SeqCst);
                if inner.close.is_cancelled() {
                    inner.closed_for_good();
                }
                return Err(e);
            }
        };
        let (ready_tx, ready_rx) = oneshot::channel();
        tokio::spawn(drive(inner.clone(), ws, ready_tx));
        // Connected once the connection is installed, so a request right after works.
        let _ = ready_rx.await;
        Ok(())
    }

    /// The state now.
    pub fn state(&self) -> ClientState {
        self.inner.state.borrow().clone()
    }

    /// A receiver of every state change, to wait on (`wait_for`, `changed`).
    pub fn watch(&self) -> watch::Receiver<ClientState> {
        self.inner.state.subscribe()
    }

    /// A receiver of what happens to the connection from now on, in order:
    /// connected, disconnected (code and reason), reconnecting (attempt and
    /// delay), closed. It keeps up to [`EVENTS_BUFFER`] unread.
    pub fn events(&self) -> broadcast::Receiver<ClientEvent> {
        self.inner.events.subscribe()
    }

    /// Waits until connected: the connection's number (from 1), or `None`
    /// once the client is closed. Before [`WrapperClient::start`] it waits for it.
    pub async fn connected(&self) -> Option<u64> {
        let mut rx = self.watch();
        let state = rx
            .wait_for(|s| matches!(s, ClientState::Connected { .. } | ClientState::Closed))
            .await
            .ok()?;
        match *state {
            ClientState::Connected { connection } => Some(connection),
            _ => None,
        }
    }

    /// Closes for good: a normal close (1000) to the server, no reconnection,
    /// pending requests fail as disconnected, the offline queue is dropped.
    /// Returns once closed.
    pub async fn close(&self) {
        self.inner.close.cancel();
        if !self.inner.started.load(Ordering::SeqCst) {
            self.inner.closed_for_good();
        }
        let mut rx = self.watch();
        let _ = rx.wait_for(|s| *s == ClientState::Closed).await;
    }

    /// Handles event or request `name` on the main channel, on every connection.
    pub fn on<A: Args, Fut: HandlerFuture<ClientChannel>>(
        &self,
        name: &str,
        f: impl Fn(ClientCtx, A) -> Fut + Send + Sync + 'static,
    ) -> &Self {
        self.handlers().add(None, name, handler(f));
        self
    }

    /// The named channel `channel`: its handlers, events and requests. A
    /// channel used here exists for the peer's requests from then on.
    pub fn of(&self, channel: &str) -> NamedChannel<'_> {
        self.handlers().add_channel(channel);
        NamedChannel {
            client: self,
            channel: channel.to_string(),
        }
    }

    fn handlers(&self) -> std::sync::RwLockWriteGuard<'_, Handlers<ClientHandler>> {
        self.inner
            .handlers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends event `name` with `args` (a tuple, `()` for none) on `channel`
    /// (`None`: the main channel). While not connected it is queued and
    /// sent, in order, once connected.
    ///
    /// # Errors
    ///
    /// [`ClientRequestError::Reserved`], [`ClientRequestError::Invalid`]
    /// (arguments that do not serialize), [`ClientRequestError::QueueFull`]
    /// (not connected, the offline queue is full),
    /// [`ClientRequestError::Disconnected`] (closed for good).
    pub fn emit(
        &self,
        channel: Option<&str>,
        name: &str,
        args: impl Serialize,
    ) -> Result<(), ClientRequestError> {
        if channel.is_none() && ws_wrapper_codec::is_reserved(name) {
            return Err(ClientRequestError::Reserved);
        }
        let args = to_args(args).map_err(ClientRequestError::Invalid)?;
        let inner = &self.inner;
        let mut line = lock(&inner.line);
        match &line.peer {
            Some(peer) if !peer.is_closed() => peer.emit(channel, name, args),
            _ if self.is_done() => Err(ClientRequestError::Disconnected),
            _ => line.push(
                Queued::Emit {
                    channel: channel.map(str::to_string),
                    name: name.to_string(),
                    args,
                },
                inner.config.offline_queue,
            ),
        }
    }

    /// Closed for good, or closing.
    fn is_done(&self) -> bool {
        self.inner.close.is_cancelled() || *self.inner.state.borrow() == ClientState::Closed
    }

    /// Request `name` with `args` (a tuple, `()` for none) on `channel`
    /// (`None`: the main channel): await it for the answer as `R`, or call
    /// [`PendingRequest::channel`] when it answers with an anonymous channel.
    /// Sent when awaited: on the connection of that moment, or, while not
    /// connected, as [`ClientConfig::offline_requests`] says.
    pub fn request<R>(
        &self,
        channel: Option<&str>,
        name: &str,
        args: impl Serialize,
    ) -> PendingRequest<R> {
        let args = if channel.is_none() && ws_wrapper_codec::is_reserved(name) {
            Err(ClientRequestError::Reserved)
        } else {
            to_args(args).map_err(ClientRequestError::Invalid)
        };
        PendingRequest {
            client: self.clone(),
            channel: channel.map(str::to_string),
            name: name.to_string(),
            args,
            timeout: self.inner.config.request_timeout,
            cancel: CancellationToken::new(),
            answer: PhantomData,
        }
    }

    /// Sends a request now, or queues it while not connected.
    fn send_request(
        &self,
        channel: Option<String>,
        name: String,
        args: Vec<Value>,
        deadline: Instant,
    ) -> Result<Sending, ClientRequestError> {
        let inner = &self.inner;
        let mut line = lock(&inner.line);
        match &line.peer {
            Some(peer) if !peer.is_closed() => {
                let left = deadline.saturating_duration_since(Instant::now());
                peer.send_request(Target::Named(channel.as_deref()), &name, args, Some(left))
                    .map(Sending::Sent)
            }
            _ if self.is_done() || inner.config.offline_requests == OfflineRequests::Fail => {
                Err(ClientRequestError::Disconnected)
            }
            _ => {
                let (sent, rx) = oneshot::channel();
                let queued = Queued::Request {
                    channel,
                    name,
                    args,
                    deadline,
                    sent,
                };
                line.push(queued, inner.config.offline_queue)?;
                Ok(Sending::Queued(rx))
            }
        }
    }
}

/// A request sent, or queued until connected.
enum Sending {
    Sent(Asked<Link>),
    Queued(oneshot::Receiver<Result<Asked<Link>, ClientRequestError>>),
}

impl fmt::Debug for WrapperClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrapperClient")
            .field("url", &self.inner.url)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// A xorshift64 generator for the jitter, seeded from the clock.
struct Jitter(u64);

impl Jitter {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        // Truncation is fine: any bits seed it; the multiplier spreads close seeds.
        Jitter((nanos as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// The client's task: runs each connection, reconnects with backoff, ends when closed.
async fn drive(inner: Arc<Inner>, first: Ws, ready: oneshot::Sender<()>) {
    let mut jitter = Jitter::new();
    let mut ready = Some(ready);
    let mut ws = first;
    let mut connection = 1;
    'connections: loop {
        let (close_code, reason) = run_connection(&inner, ws, connection, ready.take()).await;
        inner.tell(ClientEvent::Disconnected {
            code: close_code,
            reason,
        });
        if inner.close.is_cancelled() || !inner.config.reconnect {
            break;
        }
        let mut attempt = 0;
        ws = loop {
            let delay = backoff_delay(&inner.config, attempt, close_code, jitter.next());
            inner.state.send_replace(ClientState::Reconnecting {
                attempt: attempt + 1,
                delay,
                close_code,
            });
            inner.tell(ClientEvent::Reconnecting {
                attempt: attempt + 1,
                delay,
            });
            let opened = tokio::select! {
                () = tokio::time::sleep(delay) => {
                    tokio::select! {
                        ws = open_socket(&inner) => Some(ws),
                        () = inner.close.cancelled() => None,
                    }
                }
                () = inner.close.cancelled() => None,
            };
            match opened {
                None => break 'connections,
                Some(Ok(ws)) => break ws,
                Some(Err(_)) => attempt = attempt.saturating_add(1),
            }
        };
        connection += 1;
    }
    inner.closed_for_good();
}

/// Why the heartbeat gave up on a connection.
const HEARTBEAT_REASON: &str = "heartbeat timeout";

/// One connection, until it ends: the close code and reason the server
/// sent, if any.
async fn run_connection(
    inner: &Arc<Inner>,
    ws: Ws,
    connection: u64,
    ready: Option<oneshot::Sender<()>>,
) -> (Option<u16>, String) {
    let (mut sink, mut stream) = ws.split();
    let (out, mut rx) = mpsc::unbounded_channel::<Message>();
    let peer = Peer::new(
        Link {
            inner: inner.clone(),
            out: out.clone(),
        },
        PeerConfig {
            request_timeout: inner.config.request_timeout,
            ..PeerConfig::default()
        },
    );
    // The offline queue goes out first, under the line's lock: whatever the
    // application sends from now on comes after it.
    lock(&inner.line).connect(peer.clone());
    inner
        .state
        .send_replace(ClientState::Connected { connection });
    inner.tell(ClientEvent::Connected { connection });
    if let Some(ready) = ready {
        let _ = ready.send(());
    }
    // One writer: drains what is queued, flushes once.
    let writer = tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            if sink.feed(msg).await.is_err() {
                return;
            }
            while let Ok(msg) = rx.try_recv() {
                if sink.feed(msg).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    // A zero interval turns the heartbeat off.
    let heartbeat = Some(inner.config.heartbeat_interval).filter(|d| !d.is_zero());
    let mut next_ping = heartbeat.map(|d| Instant::now() + d);
    // Set once a ping is out: the connection is dead if nothing comes by then.
    let mut pong_due: Option<Instant> = None;
    let mut close = (None, String::new());
    let mut closing: Option<Instant> = None;
    loop {
        let next = match closing {
            Some(deadline) => tokio::select! {
                m = stream.next() => m,
                () = tokio::time::sleep_until(deadline) => None,
            },
            None => tokio::select! {
                m = stream.next() => m,
                () = inner.close.cancelled() => {
                    let _ = out.send(Message::Close(Some(CloseFrame {
                        code: CloseCode::Normal,
                        reason: "".into(),
                    })));
                    closing = Some(Instant::now() + CLOSE_TIMEOUT);
                    continue;
                }
                () = tokio::time::sleep_until(pong_due.or(next_ping).unwrap_or_else(Instant::now)),
                    if pong_due.is_some() || next_ping.is_some() => {
                    if pong_due.is_some() {
                        close = (None, HEARTBEAT_REASON.to_string());
                        break;
                    }
                    let _ = out.send(Message::Ping(Default::default()));
                    pong_due = Some(Instant::now() + inner.config.heartbeat_timeout);
                    next_ping = heartbeat.map(|d| Instant::now() + d);
                    continue;
                }
            },
        };
        // Anything from the server shows the connection is alive.
        if pong_due.take().is_some() {
            next_ping = heartbeat.map(|d| Instant::now() + d);
        }
        match next {
            Some(Ok(Message::Text(text))) => peer.receive(text.as_str()),
            Some(Ok(Message::Close(frame))) => {
                close = frame.map_or((None, String::new()), |f| {
                    (Some(u16::from(f.code)), f.reason.to_string())
                });
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
    {
        let mut line = lock(&inner.line);
        if line.peer.as_ref().is_some_and(|p| Arc::ptr_eq(p, &peer)) {
            line.peer = None;
        }
    }
    peer.close();
    writer.abort();
    close
}

/// What a handler knows: the client (to emit and request back), its
/// request's cancellation, its anonymous channel.
#[derive(Debug)]
pub struct ClientCtx {
    client: WrapperClient,
    call: Call<ClientCtx>,
}

impl ClientCtx {
    /// The client the message came to.
    pub fn client(&self) -> &WrapperClient {
        &self.client
    }
}

/// The rest of what a handler knows is the [`Call`] (both ends share it):
/// `request_id()`, `is_cancelled()`, `cancelled().await`, and `channel()`:
/// in a handler of an anonymous channel ([`ClientChannel::on`]) that channel,
/// in a request handler a new anonymous channel for this request, made on
/// first use (answer [`Reply::Channel`] with it), `None` for an event outside
/// a channel.
impl std::ops::Deref for ClientCtx {
    type Target = Call<ClientCtx>;

    fn deref(&self) -> &Call<ClientCtx> {
        &self.call
    }
}

/// A named channel of a client; see [`WrapperClient::of`].
pub struct NamedChannel<'a> {
    client: &'a WrapperClient,
    channel: String,
}

impl NamedChannel<'_> {
    /// Handles event or request `name` on this channel, on every connection.
    pub fn on<A: Args, Fut: HandlerFuture<ClientChannel>>(
        &self,
        name: &str,
        f: impl Fn(ClientCtx, A) -> Fut + Send + Sync + 'static,
    ) -> &Self {
        self.client
            .handlers()
            .add(Some(&self.channel), name, handler(f));
        self
    }

    /// Sends event `name` on this channel; see [`WrapperClient::emit`].
    ///
    /// # Errors
    ///
    /// As [`WrapperClient::emit`].
    pub fn emit(&self, name: &str, args: impl Serialize) -> Result<(), ClientRequestError> {
        self.client.emit(Some(&self.channel), name, args)
    }

    /// Request `name` on this channel; see [`WrapperClient::request`].
    pub fn request<R>(&self, name: &str, args: impl Serialize) -> PendingRequest<R> {
        self.client.request(Some(&self.channel), name, args)
    }
}

impl fmt::Debug for NamedChannel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NamedChannel")
            .field("channel", &self.channel)
            .finish()
    }
}

/// A request not sent yet: `.await` it (sends it, waits for the answer as
/// `R`), or [`PendingRequest::channel`]. Dropping the future before the
/// answer cancels the request on the wire.
#[must_use = "a request is sent when awaited"]
pub struct PendingRequest<R> {
    client: WrapperClient,
    channel: Option<String>,
    name: String,
    args: Result<Vec<Value>, ClientRequestError>,
    timeout: Duration,
    cancel: CancellationToken,
    answer: PhantomData<fn() -> R>,
}

/// Cancels a [`PendingRequest`] from elsewhere: the request fails with
/// [`ClientRequestError::Cancelled`] and `{i, x, _: 1}` goes to the peer.
#[derive(Clone)]
pub struct CancelHandle(CancellationToken);

impl CancelHandle {
    /// Cancels the request (before it is sent: it fails as soon as it is awaited).
    pub fn cancel(&self) {
        self.0.cancel();
    }
}

impl fmt::Debug for CancelHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelHandle")
            .field("cancelled", &self.0.is_cancelled())
            .finish()
    }
}

impl<R> PendingRequest<R> {
    /// Waits at most `timeout` for the answer instead of [`ClientConfig::request_timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// A handle to cancel this request from elsewhere.
    pub fn cancel_handle(&self) -> CancelHandle {
        CancelHandle(self.cancel.clone())
    }

    /// Sends it (or queues it while not connected): the request, waiting for its answer.
    async fn send(self) -> Result<(Asked<Link>, CancellationToken), ClientRequestError> {
        let args = self.args?;
        if self.cancel.is_cancelled() {
            return Err(ClientRequestError::Cancelled);
        }
        let deadline = Instant::now() + self.timeout;
        let asked = match self
            .client
            .send_request(self.channel, self.name, args, deadline)?
        {
            Sending::Sent(asked) => asked,
            Sending::Queued(rx) => tokio::select! {
                asked = rx => asked.map_err(|_| ClientRequestError::Disconnected)??,
                () = tokio::time::sleep_until(deadline) => return Err(ClientRequestError::Timeout),
                () = self.cancel.cancelled() => return Err(ClientRequestError::Cancelled),
            },
        };
        Ok((asked, self.cancel))
    }

    /// Sends it and waits for an anonymous channel as the answer (`{i, h: 1}`).
    ///
    /// # Errors
    ///
    /// As awaiting it; a value as the answer is [`ClientRequestError::Invalid`].
    pub async fn channel(self) -> Result<ClientChannel, ClientRequestError> {
        let (asked, cancel) = self.send().await?;
        asked.channel(Some(&cancel)).await
    }
}

impl<R: DeserializeOwned + 'static> IntoFuture for PendingRequest<R> {
    type Output = Result<R, ClientRequestError>;
    type IntoFuture = BoxFuture<Result<R, ClientRequestError>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let (asked, cancel) = self.send().await?;
            asked.value(Some(&cancel)).await
        })
    }
}

impl<R> fmt::Debug for PendingRequest<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingRequest")
            .field("channel", &self.channel)
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ClientConfig {
        ClientConfig {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            restart_backoff_base: Duration::from_secs(5),
            ..ClientConfig::default()
        }
    }

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap_with_bounded_jitter() {
        let c = config();
        // Without jitter: 100, 200, 400, ... capped at 2 s.
        let plain: Vec<u128> = (0..8)
            .map(|a| backoff_delay(&c, a, None, 0).as_millis())
            .collect();
        assert_eq!(plain, [100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        // Jitter adds at most half, never takes away.
        let mut rng = Jitter::new();
        for attempt in 0..40 {
            let floor = backoff_delay(&c, attempt, Some(1001), 0);
            for _ in 0..200 {
                let d = backoff_delay(&c, attempt, Some(1001), rng.next());
                assert!(d >= floor && d <= floor + floor / 2, "{attempt}: {d:?}");
            }
        }
        // Huge attempt counts neither overflow nor panic.
        assert_eq!(backoff_delay(&c, u32::MAX, None, 0), Duration::from_secs(2));
        assert_eq!(
            backoff_delay(&c, 3, None, u64::MAX) - backoff_delay(&c, 3, None, 0),
            Duration::from_nanos(u64::MAX % 400_000_001)
        );
    }

    #[test]
    fn service_restart_and_try_again_later_start_from_the_longer_base() {
        let c = config();
        let mut rng = Jitter::new();
        for code in [1012, 1013] {
            for _ in 0..200 {
                let first = backoff_delay(&c, 0, Some(code), rng.next());
                assert!(first >= c.restart_backoff_base, "{code}: {first:?}");
                assert!(first <= c.restart_backoff_base * 3 / 2, "{code}: {first:?}");
            }
        }
        // Other codes and no close frame use the short base.
        for code in [None, Some(1000), Some(1001), Some(1006), Some(1011)] {
            assert_eq!(backoff_delay(&c, 0, code, 0), c.backoff_base, "{code:?}");
        }
        // A restart base above the cap is still honoured.
        let c = ClientConfig {
            restart_backoff_base: Duration::from_secs(60),
            ..config()
        };
        assert_eq!(backoff_delay(&c, 4, Some(1013), 0), Duration::from_secs(60));
        // The defaults.
        let d = ClientConfig::default();
        assert_eq!(d.request_timeout, Duration::from_secs(120));
        assert_eq!(backoff_delay(&d, 0, None, 0), Duration::from_millis(250));
        assert_eq!(backoff_delay(&d, 0, Some(1013), 0), Duration::from_secs(5));
        assert_eq!(backoff_delay(&d, 30, None, 0), Duration::from_secs(30));
    }

    #[test]
    fn jitter_spreads_clients() {
        let mut rng = Jitter::new();
        let c = config();
        let delays: std::collections::HashSet<Duration> = (0..100)
            .map(|_| backoff_delay(&c, 2, None, rng.next()))
            .collect();
        assert!(delays.len() > 90, "{}", delays.len());
    }

    #[test]
    fn urls_are_ws_host_port_and_path() {
        let ok = |u: &str| parse_url(u).unwrap();
        assert_eq!(
            ok("ws://127.0.0.1:8080/rpc"),
            ("127.0.0.1:8080".into(), "ws://127.0.0.1:8080/rpc".into())
        );
        assert_eq!(
            ok("ws://example.com"),
            ("example.com:80".into(), "ws://example.com/".into())
        );
        assert_eq!(
            ok("ws://localhost:9/a/b?x=1"),
            ("localhost:9".into(), "ws://localhost:9/a/b?x=1".into())
        );
        assert_eq!(
            ok("ws://[::1]:7/rpc"),
            ("[::1]:7".into(), "ws://[::1]:7/rpc".into())
        );
        assert_eq!(
            ok("wss://example.com/rpc"),
            ("example.com:443".into(), "wss://example.com/rpc".into())
        );
        assert_eq!(
            ok("wss://127.0.0.1:8443"),
            ("127.0.0.1:8443".into(), "wss://127.0.0.1:8443/".into())
        );
        assert_eq!(
            server_name("[::1]:443").unwrap(),
            rustls::pki_types::ServerName::IpAddress(std::net::Ipv6Addr::LOCALHOST.into())
        );
        assert_eq!(
            server_name("example.com:443").unwrap().to_str(),
            "example.com"
        );
        for bad in [
            "https://example.com/",
            "http://x/",
            "127.0.0.1:80",
            "",
            "ws:///x",
        ] {
            assert!(
                matches!(parse_url(bad), Err(ConnectError::InvalidUrl(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_defaults_are_documented() {
        let d = ClientConfig::default();
        assert_eq!(d.heartbeat_interval, Duration::from_secs(25));
        assert_eq!(d.heartbeat_timeout, Duration::from_secs(10));
        assert_eq!(d.offline_queue, 256);
        assert_eq!(d.offline_requests, OfflineRequests::Wait);
    }

    #[tokio::test(start_paused = true)]
    async fn offline_emits_queue_up_to_the_bound_and_requests_wait_or_fail() {
        let config = ClientConfig {
            offline_queue: 3,
            ..ClientConfig::default()
        };
        // Not started: nothing is connected, so everything waits offline.
        let client = WrapperClient::new("ws://127.0.0.1:9/", config.clone()).unwrap();
        for i in 0..3 {
            client.emit(None, "e", (i,)).unwrap();
        }
        assert_eq!(
            client.emit(None, "e", (3,)),
            Err(ClientRequestError::QueueFull)
        );
        assert_eq!(
            client.request::<Value>(None, "r", ()).await,
            Err(ClientRequestError::QueueFull)
        );
        assert_eq!(lock(&client.inner.line).offline.len(), 3);
        client.close().await;
        assert_eq!(
            client.emit(None, "e", ()),
            Err(ClientRequestError::Disconnected)
        );
        assert!(
            lock(&client.inner.line).offline.is_empty(),
            "dropped on close"
        );

        // A waiting request fails by its timeout, and leaves the queue.
        let client = WrapperClient::new("ws://127.0.0.1:9/", config.clone()).unwrap();
        let t0 = Instant::now();
        let waited = client
            .request::<Value>(None, "r", ())
            .timeout(Duration::from_secs(7))
            .await;
        assert_eq!(waited, Err(ClientRequestError::Timeout));
        assert_eq!(t0.elapsed(), Duration::from_secs(7));
        for i in 0..3 {
            client.emit(None, "e", (i,)).unwrap();
        }

        // Or fails at once, as configured; emits still queue.
        let client = WrapperClient::new(
            "ws://127.0.0.1:9/",
            ClientConfig {
                offline_requests: OfflineRequests::Fail,
                ..config
            },
        )
        .unwrap();
        assert_eq!(
            client.request::<Value>(None, "r", ()).await,
            Err(ClientRequestError::Disconnected)
        );
        client.emit(None, "e", ()).unwrap();
    }

    #[tokio::test]
    async fn the_heartbeat_gives_up_on_a_silent_server_and_reconnects() {
        // A server that accepts WebSockets and never reads again: no pong ever.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, mut connections) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                    held.push(ws);
                    let _ = accepted.send(());
                }
            }
        });
        let config = ClientConfig {
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_millis(10),
            ..ClientConfig::default()
        };
        let client = WrapperClient::connect(&format!("ws://{addr}/"), config)
            .await
            .unwrap();
        connections.recv().await.unwrap();
        let mut events = client.events();
        // From here the clock only moves when everything waits: the default
        // 25 s ping and 10 s pong wait pass in simulated time.
        tokio::time::pause();
        let t0 = Instant::now();
        assert_eq!(
            events.recv().await.unwrap(),
            ClientEvent::Disconnected {
                code: None,
                reason: "heartbeat timeout".into()
            }
        );
        let waited = t0.elapsed();
        assert!(
            waited > Duration::from_secs(34) && waited <= Duration::from_millis(35_100),
            "{waited:?}"
        );
        assert!(matches!(
            events.recv().await.unwrap(),
            ClientEvent::Reconnecting { attempt: 1, .. }
        ));
        tokio::time::resume();
        assert_eq!(client.connected().await, Some(2));
        connections.recv().await.unwrap();
        // The silent server never answers the close either: its wait passes in simulated time.
        tokio::time::pause();
        client.close().await;
        assert_eq!(client.state(), ClientState::Closed);
    }
}

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../ws_wrapper_client.md")]
#[doc = include_str!("../../../types/infra/CancelHandle.md")]
#[doc = include_str!("../../../types/infra/ClientChannel.md")]
#[doc = include_str!("../../../types/infra/ClientConfig.md")]
#[doc = include_str!("../../../types/infra/ClientCtx.md")]
#[doc = include_str!("../../../types/infra/ClientEvent.md")]
#[doc = include_str!("../../../types/infra/ClientState.md")]
#[doc = include_str!("../../../types/infra/ConnectError.md")]
#[doc = include_str!("../../../types/infra/NamedChannel.md")]
#[doc = include_str!("../../../types/infra/OfflineRequests.md")]
#[doc = include_str!("../../../types/infra/PendingRequest.md")]
#[doc = include_str!("../../../types/infra/WrapperClient.md")]
pub struct RegistryExamples;
