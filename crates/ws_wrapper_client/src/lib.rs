//! A ws-wrapper client over one WebSocket that reconnects by itself: named events, requests both ways with typed handlers, named and anonymous channels, timeouts and cancellation.
//!
//! It speaks the protocol of the JavaScript `ws-wrapper` library
//! (`ws_wrapper_codec` reads and writes the frames), so it talks to a
//! `ws_wrapper_server`, to rt-server's `/rpc` and to a Node server built on
//! the npm package alike.
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
//!   `args` array deserialized into a tuple) and a typed result; an `Err`
//!   travels as an Error object (`"_": 1`), a panic as `handler panicked`.
//!   Handlers belong to the client, not to a socket: they survive
//!   reconnection. Each message runs in its own task, so a slow handler
//!   never blocks reading.
//! - **Requests** ([`WrapperClient::request`]) wait at most
//!   [`ClientConfig::request_timeout`] (2 minutes, as the JavaScript
//!   library's Node server) or a per-request [`PendingRequest::timeout`].
//!   Dropping the future, [`CancelHandle::cancel`] or the timeout sends the
//!   protocol's cancel `{i, x, _: 1}`. A request answered with an anonymous
//!   channel (`{i, h: 1}`) resolves through [`PendingRequest::channel`] to a
//!   [`ClientChannel`] (events both ways, `abort` sends `{h, x, _: 1}`).
//! - **Reconnection**: when the connection drops, the client reconnects with
//!   jittered exponential backoff ([`backoff_delay`]); a close with 1012
//!   (Service Restart) or 1013 (Try Again Later) starts from the longer
//!   [`ClientConfig::restart_backoff_base`]; [`WrapperClient::close`] (or
//!   dropping the last handle) stops for good. Requests pending on a dropped
//!   connection fail with [`ClientRequestError::Disconnected`], and so do
//!   requests made while disconnected (nothing is queued). The state is
//!   observable ([`WrapperClient::state`], [`WrapperClient::watch`],
//!   [`WrapperClient::connected`]).
//!
//! # Example
//!
//! ```no_run
//! use ws_wrapper_client::{ClientConfig, PeerError, WrapperClient};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = WrapperClient::new("ws://127.0.0.1:8080/rpc", ClientConfig::default())?;
//! client.on("double", |_ctx, (x,): (i64,)| async move { Ok::<_, PeerError>(x * 2) });
//! client.start().await?;
//! let sum: f64 = client.request(None, "add", (2, 3)).await?;
//! let who: String = client.of("room1").request("who", ()).await?;
//! client.emit(None, "notify-me", ("hi",))?;
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

use std::collections::HashMap;
use std::fmt;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, Weak};
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::{WebSocketStream, client_async_with_config};
use tokio_util::sync::CancellationToken;
use ws_wrapper_codec::{
    DEFAULT_ABORT_MESSAGE, DEFAULT_REJECT_MESSAGE, Decoded, WrapperMessage, decode, encode,
    error_value, is_reserved,
};

/// The rustls crate of [`ClientConfig::tls`].
pub use tokio_rustls::rustls;

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

/// An Error object as it travels (`{"message": ...}`, `"_": 1`): what a
/// handler answers with, what a peer rejected with.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerError {
    /// The Error's `message`.
    pub message: String,
    /// The whole value as the peer sees it or sent it (`{"message": ...}` at least when it is an Error).
    pub value: Value,
}

impl PeerError {
    /// An Error with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        let message = message.into();
        PeerError {
            value: error_value(&message),
            message,
        }
    }

    /// The rejection value a peer sent: its `message`, the string itself, or
    /// the JSON text; `null` is the default Error (`"Error"`).
    pub fn from_value(value: Value) -> Self {
        match value {
            Value::Null => PeerError::new(DEFAULT_REJECT_MESSAGE),
            Value::String(s) => PeerError {
                message: s.clone(),
                value: Value::String(s),
            },
            value => {
                let message = value
                    .get("message")
                    .and_then(Value::as_str)
                    .map_or_else(|| value.to_string(), str::to_string);
                PeerError { message, value }
            }
        }
    }
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PeerError {}

impl From<&str> for PeerError {
    fn from(message: &str) -> Self {
        PeerError::new(message)
    }
}

impl From<String> for PeerError {
    fn from(message: String) -> Self {
        PeerError::new(message)
    }
}

/// Why an emit or a request of the client failed.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientRequestError {
    /// The peer rejected it.
    Rejected(PeerError),
    /// No answer within the timeout (the request was cancelled on the wire).
    Timeout,
    /// Cancelled here ([`CancelHandle::cancel`]).
    Cancelled,
    /// Not connected when sent, or the connection dropped before the answer.
    Disconnected,
    /// The anonymous channel is closed (aborted by either side, or its connection ended).
    ChannelClosed,
    /// The name is reserved on the main channel (`open`, `connect`, `message`, `error`, `close`, `disconnect`).
    Reserved,
    /// The arguments did not serialize, or the answer did not fit the type asked for.
    Invalid(String),
}

impl fmt::Display for ClientRequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientRequestError::Rejected(e) => write!(f, "rejected: {e}"),
            ClientRequestError::Timeout => f.write_str("request timed out"),
            ClientRequestError::Cancelled => f.write_str("request cancelled"),
            ClientRequestError::Disconnected => f.write_str("not connected"),
            ClientRequestError::ChannelClosed => f.write_str("the channel is closed"),
            ClientRequestError::Reserved => f.write_str("reserved event name on the main channel"),
            ClientRequestError::Invalid(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for ClientRequestError {}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Handler =
    Arc<dyn Fn(ClientCtx, Vec<Value>) -> BoxFuture<Result<Value, PeerError>> + Send + Sync>;

/// Wraps a typed handler: the args array becomes `A` (a tuple), the result JSON.
fn erase<A, T, E, F, Fut>(f: F) -> Handler
where
    A: DeserializeOwned + Send + 'static,
    T: Serialize + 'static,
    E: Into<PeerError> + 'static,
    F: Fn(ClientCtx, A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
{
    Arc::new(move |ctx, args| {
        // A tuple reads the array; `()` reads "no arguments" (serde wants null).
        let empty = args.is_empty();
        let parsed: Result<A, _> = serde_json::from_value(Value::Array(args)).or_else(|e| {
            if empty {
                serde_json::from_value(Value::Null)
            } else {
                Err(e)
            }
        });
        match parsed {
            Ok(a) => {
                let fut = f(ctx, a);
                Box::pin(async move {
                    match fut.await {
                        Ok(v) => serde_json::to_value(v)
                            .map_err(|e| PeerError::new(format!("unserializable result: {e}"))),
                        Err(e) => Err(e.into()),
                    }
                })
            }
            Err(e) => {
                Box::pin(async move { Err(PeerError::new(format!("invalid arguments: {e}"))) })
            }
        }
    })
}

/// Arguments as the wire's array: a tuple or sequence is the array, `()` none, anything else one argument.
fn to_args(args: impl Serialize) -> Result<Vec<Value>, ClientRequestError> {
    match serde_json::to_value(args) {
        Ok(Value::Array(a)) => Ok(a),
        Ok(Value::Null) => Ok(Vec::new()),
        Ok(v) => Ok(vec![v]),
        Err(e) => Err(ClientRequestError::Invalid(format!(
            "arguments do not serialize: {e}"
        ))),
    }
}

#[derive(Default)]
struct Handlers {
    /// `None`: the main channel.
    by_channel: HashMap<Option<String>, HashMap<String, Handler>>,
}

impl Handlers {
    /// The handler, or the rejection the JavaScript library answers with.
    fn get(&self, channel: Option<&str>, name: &str) -> Result<Handler, String> {
        let Some(names) = self.by_channel.get(&channel.map(str::to_string)) else {
            return Err(match channel {
                Some(c) => format!("Channel '{c}' does not exist"),
                None => format!("No event listener for '{name}'"),
            });
        };
        names.get(name).cloned().ok_or_else(|| match channel {
            Some(c) => format!("No event listener for '{name}' on channel '{c}'"),
            None => format!("No event listener for '{name}'"),
        })
    }

    fn add(&mut self, channel: Option<&str>, name: &str, h: Handler) {
        self.by_channel
            .entry(channel.map(str::to_string))
            .or_default()
            .insert(name.to_string(), h);
    }
}

/// What came back for a request.
enum Answer {
    Value(Value),
    Error(Value),
    Channel(ClientChannel),
}

/// One WebSocket connection's protocol state; a reconnection makes a new one.
struct Conn {
    out: mpsc::UnboundedSender<Message>,
    /// The client's default, for requests on anonymous channels.
    request_timeout: Duration,
    closed: CancellationToken,
    next_id: AtomicU64,
    /// Requests sent, waiting for answers.
    pending: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    /// Requests of the peer being handled.
    inflight: Mutex<HashMap<u64, CancellationToken>>,
    /// Anonymous channels, by handle.
    channels: Mutex<HashMap<u64, ClientChannel>>,
}

impl Conn {
    fn new(out: mpsc::UnboundedSender<Message>, request_timeout: Duration) -> Self {
        Conn {
            out,
            request_timeout,
            closed: CancellationToken::new(),
            next_id: AtomicU64::new(0),
            pending: Mutex::default(),
            inflight: Mutex::default(),
            channels: Mutex::default(),
        }
    }

    fn send(&self, msg: &WrapperMessage) -> Result<(), ClientRequestError> {
        if self.closed.is_cancelled() {
            return Err(ClientRequestError::Disconnected);
        }
        self.out
            .send(Message::text(encode(msg)))
            .map_err(|_| ClientRequestError::Disconnected)
    }

    /// The connection ended: waiting requests fail as disconnected, handlers
    /// are cancelled, channels close.
    fn shutdown(&self) {
        self.closed.cancel();
        lock(&self.pending).clear();
        for (_, c) in lock(&self.inflight).drain() {
            c.cancel();
        }
        let channels: Vec<ClientChannel> = lock(&self.channels).drain().map(|(_, c)| c).collect();
        for ch in channels {
            ch.close_here();
        }
    }
}

struct Inner {
    url: String,
    addr: String,
    config: ClientConfig,
    handlers: RwLock<Handlers>,
    conn: Mutex<Option<Arc<Conn>>>,
    state: watch::Sender<ClientState>,
    close: CancellationToken,
    started: AtomicBool,
    /// The user handles' guard, to give handlers an owning [`WrapperClient`].
    owner: OnceLock<Weak<Owner>>,
}

impl Inner {
    fn current(&self) -> Option<Arc<Conn>> {
        lock(&self.conn).clone()
    }

    fn handle(self: &Arc<Self>) -> Option<WrapperClient> {
        let owner = self.owner.get()?.upgrade()?;
        Some(WrapperClient {
            inner: self.clone(),
            _owner: owner,
        })
    }
}

/// Closes the client when the last user handle goes.
struct Owner(Arc<Inner>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.close.cancel();
        if !self.0.started.load(Ordering::SeqCst) {
            self.0.state.send_replace(ClientState::Closed);
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
            conn: Mutex::default(),
            state: watch::Sender::new(ClientState::Connecting),
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
                    inner.state.send_replace(ClientState::Closed);
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
    /// pending requests fail as disconnected. Returns once closed.
    pub async fn close(&self) {
        self.inner.close.cancel();
        if !self.inner.started.load(Ordering::SeqCst) {
            self.inner.state.send_replace(ClientState::Closed);
        }
        let mut rx = self.watch();
        let _ = rx.wait_for(|s| *s == ClientState::Closed).await;
    }

    /// Handles event or request `name` on the main channel, on every connection.
    pub fn on<A, T, E, F, Fut>(&self, name: &str, f: F) -> &Self
    where
        A: DeserializeOwned + Send + 'static,
        T: Serialize + 'static,
        E: Into<PeerError> + 'static,
        F: Fn(ClientCtx, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        self.handlers().add(None, name, erase(f));
        self
    }

    /// The named channel `channel`: its handlers, events and requests. A
    /// channel used here exists for the peer's requests from then on.
    pub fn of(&self, channel: &str) -> NamedChannel<'_> {
        self.handlers()
            .by_channel
            .entry(Some(channel.to_string()))
            .or_default();
        NamedChannel {
            client: self,
            channel: channel.to_string(),
        }
    }

    fn handlers(&self) -> std::sync::RwLockWriteGuard<'_, Handlers> {
        self.inner
            .handlers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends event `name` with `args` (a tuple, `()` for none) on `channel`
    /// (`None`: the main channel). Fails when not connected.
    pub fn emit(
        &self,
        channel: Option<&str>,
        name: &str,
        args: impl Serialize,
    ) -> Result<(), ClientRequestError> {
        if channel.is_none() && is_reserved(name) {
            return Err(ClientRequestError::Reserved);
        }
        let args = to_args(args)?;
        let conn = self
            .inner
            .current()
            .ok_or(ClientRequestError::Disconnected)?;
        conn.send(&WrapperMessage::Event {
            channel: channel.map(str::to_string),
            name: name.to_string(),
            args,
        })
    }

    /// Request `name` with `args` (a tuple, `()` for none) on `channel`
    /// (`None`: the main channel): await it for the answer as `R`, or call
    /// [`PendingRequest::channel`] when it answers with an anonymous channel.
    /// Sent when awaited, on the connection of that moment.
    pub fn request<R>(
        &self,
        channel: Option<&str>,
        name: &str,
        args: impl Serialize,
    ) -> PendingRequest<R> {
        let args = if channel.is_none() && is_reserved(name) {
            Err(ClientRequestError::Reserved)
        } else {
            to_args(args)
        };
        PendingRequest {
            via: Via::Client(self.inner.clone()),
            channel: channel.map(str::to_string),
            name: name.to_string(),
            args,
            timeout: self.inner.config.request_timeout,
            cancel: CancellationToken::new(),
            answer: PhantomData,
        }
    }
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
        let close_code = run_connection(&inner, ws, connection, ready.take()).await;
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
    inner.state.send_replace(ClientState::Closed);
}

/// One connection, until it ends: the close code the server sent, if any.
async fn run_connection(
    inner: &Arc<Inner>,
    ws: Ws,
    connection: u64,
    ready: Option<oneshot::Sender<()>>,
) -> Option<u16> {
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let conn = Arc::new(Conn::new(tx, inner.config.request_timeout));
    *lock(&inner.conn) = Some(conn.clone());
    inner
        .state
        .send_replace(ClientState::Connected { connection });
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
    let mut close_code = None;
    let mut closing: Option<tokio::time::Instant> = None;
    loop {
        let next = match closing {
            Some(deadline) => tokio::select! {
                m = stream.next() => m,
                () = tokio::time::sleep_until(deadline) => None,
            },
            None => tokio::select! {
                m = stream.next() => m,
                () = inner.close.cancelled() => {
                    let _ = conn.out.send(Message::Close(Some(CloseFrame {
                        code: CloseCode::Normal,
                        reason: "".into(),
                    })));
                    closing = Some(tokio::time::Instant::now() + CLOSE_TIMEOUT);
                    continue;
                }
            },
        };
        match next {
            Some(Ok(Message::Text(text))) => dispatch(inner, &conn, text.as_str()),
            Some(Ok(Message::Close(frame))) => close_code = frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
    {
        let mut current = lock(&inner.conn);
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &conn)) {
            *current = None;
        }
    }
    conn.shutdown();
    writer.abort();
    close_code
}

fn reject(id: u64, e: &PeerError) -> WrapperMessage {
    WrapperMessage::Reject {
        id,
        error: e.value.clone(),
        error_object: true,
    }
}

fn abort_message(handle: u64, reason: &str) -> WrapperMessage {
    WrapperMessage::Abort {
        handle,
        reason: error_value(reason),
        error_object: true,
    }
}

/// One text message of the current connection.
fn dispatch(inner: &Arc<Inner>, conn: &Arc<Conn>, text: &str) {
    let Decoded::Message(msg) = decode(text) else {
        return;
    };
    // Every user handle is gone: the client is closing; answer nothing.
    let Some(client) = inner.handle() else {
        return;
    };
    let lookup = |channel: Option<&str>, name: &str| {
        inner
            .handlers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(channel, name)
    };
    match msg {
        WrapperMessage::Event {
            channel,
            name,
            args,
        } => {
            if let Ok(h) = lookup(channel.as_deref(), &name) {
                run_event(client, h, args, None);
            }
        }
        WrapperMessage::Request {
            id,
            channel,
            name,
            args,
        } => match lookup(channel.as_deref(), &name) {
            Ok(h) => run_request(client, conn, id, h, args, None),
            Err(why) => {
                let _ = conn.send(&reject(id, &PeerError::new(why)));
            }
        },
        WrapperMessage::Resolve { id, data } => answer(conn, id, Answer::Value(data)),
        WrapperMessage::Reject { id, error, .. } => answer(conn, id, Answer::Error(error)),
        WrapperMessage::ChannelCreated { id } => {
            let waiting = lock(&conn.pending).remove(&id);
            let Some(tx) = waiting else {
                // Nobody waits for it (cancelled or timed out): close it.
                let _ = conn.send(&abort_message(id, DEFAULT_ABORT_MESSAGE));
                return;
            };
            let ch = ClientChannel::new(conn.clone(), id);
            lock(&conn.channels).insert(id, ch.clone());
            if let Err(Answer::Channel(ch)) = tx.send(Answer::Channel(ch)) {
                ch.abort(DEFAULT_ABORT_MESSAGE);
            }
        }
        WrapperMessage::Cancel { id, .. } => {
            if let Some(c) = lock(&conn.inflight).remove(&id) {
                c.cancel();
            }
        }
        WrapperMessage::ChannelEvent { handle, name, args } => {
            let Some(ch) = lock(&conn.channels).get(&handle).cloned() else {
                let _ = conn.send(&abort_message(handle, DEFAULT_ABORT_MESSAGE));
                return;
            };
            match ch.handler(&name) {
                Some(h) => run_event(client, h, args, Some(ch)),
                None => ch.queue(name, args),
            }
        }
        WrapperMessage::ChannelRequest {
            id,
            handle,
            name,
            args,
        } => {
            let Some(ch) = lock(&conn.channels).get(&handle).cloned() else {
                let _ = conn.send(&abort_message(handle, DEFAULT_ABORT_MESSAGE));
                return;
            };
            match ch.handler(&name) {
                Some(h) => run_request(client, conn, id, h, args, Some(ch)),
                None => {
                    let why = PeerError::new(format!("No event listener for '{name}'"));
                    let _ = conn.send(&reject(id, &why));
                }
            }
        }
        WrapperMessage::Abort { handle, .. } => {
            let ch = lock(&conn.channels).remove(&handle);
            if let Some(ch) = ch {
                ch.close_here();
            }
        }
    }
}

fn answer(conn: &Conn, id: u64, answer: Answer) {
    if let Some(tx) = lock(&conn.pending).remove(&id) {
        let _ = tx.send(answer);
    }
}

fn run_event(client: WrapperClient, h: Handler, args: Vec<Value>, channel: Option<ClientChannel>) {
    let ctx = ClientCtx {
        client,
        request: None,
        cancel: None,
        channel,
    };
    tokio::spawn(async move {
        let _ = AssertUnwindSafe(h(ctx, args)).catch_unwind().await;
    });
}

fn run_request(
    client: WrapperClient,
    conn: &Arc<Conn>,
    id: u64,
    h: Handler,
    args: Vec<Value>,
    channel: Option<ClientChannel>,
) {
    let cancel = CancellationToken::new();
    lock(&conn.inflight).insert(id, cancel.clone());
    let ctx = ClientCtx {
        client,
        request: Some(id),
        cancel: Some(cancel.clone()),
        channel,
    };
    let conn = conn.clone();
    tokio::spawn(async move {
        let out = AssertUnwindSafe(h(ctx, args)).catch_unwind().await;
        lock(&conn.inflight).remove(&id);
        if cancel.is_cancelled() {
            return; // the peer gave up (or the connection ended): no answer
        }
        let msg = match out {
            Ok(Ok(data)) => WrapperMessage::Resolve { id, data },
            Ok(Err(e)) => reject(id, &e),
            Err(_) => reject(id, &PeerError::new("handler panicked")),
        };
        let _ = conn.send(&msg);
    });
}

/// What a handler knows: the client (to emit and request back), its
/// request's cancellation, its anonymous channel.
pub struct ClientCtx {
    client: WrapperClient,
    request: Option<u64>,
    cancel: Option<CancellationToken>,
    channel: Option<ClientChannel>,
}

impl ClientCtx {
    /// The client the message came to.
    pub fn client(&self) -> &WrapperClient {
        &self.client
    }

    /// The id of the request being handled; `None` for an event.
    pub fn request_id(&self) -> Option<u64> {
        self.request
    }

    /// Whether the peer cancelled this request or its connection ended (never for events).
    pub fn is_cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(CancellationToken::is_cancelled)
    }

    /// Completes when the peer cancels this request or its connection ends (never for events).
    pub async fn cancelled(&self) {
        match &self.cancel {
            Some(c) => c.cancelled().await,
            None => std::future::pending().await,
        }
    }

    /// In a handler of an anonymous channel ([`ClientChannel::on`]), that channel.
    pub fn channel(&self) -> Option<&ClientChannel> {
        self.channel.as_ref()
    }
}

impl fmt::Debug for ClientCtx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCtx")
            .field("request", &self.request)
            .field("cancelled", &self.is_cancelled())
            .finish_non_exhaustive()
    }
}

/// A named channel of a client; see [`WrapperClient::of`].
pub struct NamedChannel<'a> {
    client: &'a WrapperClient,
    channel: String,
}

impl NamedChannel<'_> {
    /// Handles event or request `name` on this channel, on every connection.
    pub fn on<A, T, E, F, Fut>(&self, name: &str, f: F) -> &Self
    where
        A: DeserializeOwned + Send + 'static,
        T: Serialize + 'static,
        E: Into<PeerError> + 'static,
        F: Fn(ClientCtx, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        self.client
            .handlers()
            .add(Some(&self.channel), name, erase(f));
        self
    }

    /// Sends event `name` on this channel; see [`WrapperClient::emit`].
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

/// Where a request goes: the client's connection of the moment, or an anonymous channel's.
enum Via {
    Client(Arc<Inner>),
    Channel(ClientChannel),
}

/// A request not sent yet: `.await` it (sends it, waits for the answer as
/// `R`), or [`PendingRequest::channel`]. Dropping the future before the
/// answer cancels the request on the wire.
#[must_use = "a request is sent when awaited"]
pub struct PendingRequest<R> {
    via: Via,
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

/// Removes a request that is given up on and tells the peer.
struct Outstanding {
    conn: Arc<Conn>,
    id: u64,
    armed: bool,
}

impl Outstanding {
    fn give_up(&mut self, reason: &str) {
        if !std::mem::replace(&mut self.armed, false) {
            return;
        }
        if lock(&self.conn.pending).remove(&self.id).is_some() {
            let _ = self.conn.send(&WrapperMessage::Cancel {
                id: self.id,
                reason: error_value(reason),
                error_object: true,
            });
        }
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.give_up(DEFAULT_ABORT_MESSAGE);
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

    /// Sends it and waits for an answer, value or channel.
    async fn send(self) -> Result<Answer, ClientRequestError> {
        let args = self.args?;
        if self.cancel.is_cancelled() {
            return Err(ClientRequestError::Cancelled);
        }
        let (conn, handle) = match &self.via {
            Via::Client(inner) => (
                inner.current().ok_or(ClientRequestError::Disconnected)?,
                None,
            ),
            Via::Channel(ch) => {
                if ch.is_closed() {
                    return Err(ClientRequestError::ChannelClosed);
                }
                (ch.0.conn.clone(), Some(ch.0.handle))
            }
        };
        let id = conn.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        lock(&conn.pending).insert(id, tx);
        let mut outstanding = Outstanding {
            conn: conn.clone(),
            id,
            armed: true,
        };
        let msg = match handle {
            Some(handle) => WrapperMessage::ChannelRequest {
                id,
                handle,
                name: self.name,
                args,
            },
            None => WrapperMessage::Request {
                id,
                channel: self.channel,
                name: self.name,
                args,
            },
        };
        conn.send(&msg)?;
        let answer = tokio::select! {
            answer = rx => answer,
            () = tokio::time::sleep(self.timeout) => {
                outstanding.give_up("Request timed out");
                return Err(ClientRequestError::Timeout);
            }
            () = self.cancel.cancelled() => {
                outstanding.give_up(DEFAULT_ABORT_MESSAGE);
                return Err(ClientRequestError::Cancelled);
            }
        };
        outstanding.armed = false;
        answer.map_err(|_| ClientRequestError::Disconnected)
    }

    /// Sends it and waits for an anonymous channel as the answer (`{i, h: 1}`).
    pub async fn channel(self) -> Result<ClientChannel, ClientRequestError> {
        match self.send().await? {
            Answer::Channel(ch) => Ok(ch),
            Answer::Error(e) => Err(ClientRequestError::Rejected(PeerError::from_value(e))),
            Answer::Value(v) => Err(ClientRequestError::Invalid(format!(
                "expected an anonymous channel, the answer is {v}"
            ))),
        }
    }
}

impl<R: DeserializeOwned + 'static> IntoFuture for PendingRequest<R> {
    type Output = Result<R, ClientRequestError>;
    type IntoFuture = BoxFuture<Result<R, ClientRequestError>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            match self.send().await? {
                Answer::Value(v) => serde_json::from_value(v)
                    .map_err(|e| ClientRequestError::Invalid(format!("unexpected answer: {e}"))),
                Answer::Error(e) => Err(ClientRequestError::Rejected(PeerError::from_value(e))),
                Answer::Channel(ch) => {
                    ch.abort(DEFAULT_ABORT_MESSAGE);
                    Err(ClientRequestError::Invalid(
                        "answered with an anonymous channel: use .channel()".into(),
                    ))
                }
            }
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

/// An anonymous channel a request was answered with: events (and requests)
/// both ways until either side aborts it or its connection ends. Events
/// without a handler ([`ClientChannel::on`]) queue for [`ClientChannel::recv`].
#[derive(Clone)]
pub struct ClientChannel(Arc<ChannelShared>);

/// An event on an anonymous channel: its name and arguments.
type Event = (String, Vec<Value>);

struct ChannelShared {
    conn: Arc<Conn>,
    handle: u64,
    closed: CancellationToken,
    handlers: Mutex<HashMap<String, Handler>>,
    queue: Mutex<Option<mpsc::UnboundedSender<Event>>>,
    events: tokio::sync::Mutex<mpsc::UnboundedReceiver<Event>>,
}

impl ClientChannel {
    fn new(conn: Arc<Conn>, handle: u64) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        ClientChannel(Arc::new(ChannelShared {
            conn,
            handle,
            closed: CancellationToken::new(),
            handlers: Mutex::default(),
            queue: Mutex::new(Some(tx)),
            events: tokio::sync::Mutex::new(rx),
        }))
    }

    /// Its handle: the id of the request it answered.
    pub fn handle(&self) -> u64 {
        self.0.handle
    }

    fn handler(&self, name: &str) -> Option<Handler> {
        lock(&self.0.handlers).get(name).cloned()
    }

    fn queue(&self, name: String, args: Vec<Value>) {
        if let Some(tx) = lock(&self.0.queue).as_ref() {
            let _ = tx.send((name, args));
        }
    }

    /// Closed from the other side or by the connection's end: nothing is sent.
    fn close_here(&self) {
        self.0.closed.cancel();
        lock(&self.0.queue).take();
    }

    /// Handles event or request `name` from the peer on this channel.
    pub fn on<A, T, E, F, Fut>(&self, name: &str, f: F) -> &Self
    where
        A: DeserializeOwned + Send + 'static,
        T: Serialize + 'static,
        E: Into<PeerError> + 'static,
        F: Fn(ClientCtx, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
    {
        lock(&self.0.handlers).insert(name.to_string(), erase(f));
        self
    }

    /// The next event without a handler, as (name, args); `None` once the
    /// channel is closed and every queued event was read.
    pub async fn recv(&self) -> Option<(String, Vec<Value>)> {
        self.0.events.lock().await.recv().await
    }

    /// Sends event `name` with `args` on the channel (`{"a", "h"}`).
    pub fn emit(&self, name: &str, args: impl Serialize) -> Result<(), ClientRequestError> {
        if self.is_closed() {
            return Err(ClientRequestError::ChannelClosed);
        }
        self.0.conn.send(&WrapperMessage::ChannelEvent {
            handle: self.0.handle,
            name: name.to_string(),
            args: to_args(args)?,
        })
    }

    /// Request `name` on the channel (`{"a", "h", "i"}`); see [`WrapperClient::request`].
    pub fn request<R>(&self, name: &str, args: impl Serialize) -> PendingRequest<R> {
        PendingRequest {
            via: Via::Channel(self.clone()),
            channel: None,
            name: name.to_string(),
            args: to_args(args),
            timeout: self.0.conn.request_timeout,
            cancel: CancellationToken::new(),
            answer: PhantomData,
        }
    }

    /// Aborts the channel: `{h, x: {message: reason}, _: 1}` to the peer, closed here.
    pub fn abort(&self, reason: &str) {
        if self.is_closed() {
            return;
        }
        self.close_here();
        lock(&self.0.conn.channels).remove(&self.0.handle);
        let _ = self.0.conn.send(&abort_message(self.0.handle, reason));
    }

    /// Whether it was aborted (either side) or its connection ended.
    pub fn is_closed(&self) -> bool {
        self.0.closed.is_cancelled() || self.0.conn.closed.is_cancelled()
    }

    /// Completes when the channel is aborted (either side) or its connection ends.
    pub async fn closed(&self) {
        self.0.closed.cancelled().await;
    }
}

impl fmt::Debug for ClientChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientChannel")
            .field("handle", &self.0.handle)
            .field("closed", &self.is_closed())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
    fn arguments_are_the_wire_array() {
        assert_eq!(to_args((2, 3)).unwrap(), vec![json!(2), json!(3)]);
        assert_eq!(to_args(()).unwrap(), Vec::<Value>::new());
        assert_eq!(to_args(("x",)).unwrap(), vec![json!("x")]);
        assert_eq!(to_args(vec![1, 2]).unwrap(), vec![json!(1), json!(2)]);
        assert_eq!(to_args(json!({"a": 1})).unwrap(), vec![json!({"a": 1})]);
        assert_eq!(to_args((Value::Null,)).unwrap(), vec![Value::Null]);
        let mut bad = HashMap::new();
        bad.insert(vec![1], 2);
        assert!(matches!(to_args(bad), Err(ClientRequestError::Invalid(_))));
    }

    #[test]
    fn rejections_become_peer_errors() {
        assert_eq!(
            PeerError::from_value(json!({"message": "nope", "code": 7})),
            PeerError {
                message: "nope".into(),
                value: json!({"message": "nope", "code": 7})
            }
        );
        assert_eq!(PeerError::from_value(json!("oops")).message, "oops");
        assert_eq!(PeerError::from_value(json!(42)).message, "42");
        assert_eq!(PeerError::from_value(Value::Null), PeerError::new("Error"));
        assert_eq!(PeerError::from("x").value, json!({"message": "x"}));
    }

    #[test]
    fn missing_handlers_are_rejected_as_javascript_does() {
        let mut h = Handlers::default();
        let noop: Handler = Arc::new(|_ctx, _args| Box::pin(async { Ok(Value::Null) }));
        h.add(None, "double", noop.clone());
        h.add(Some("room1"), "who", noop);
        let err = |c: Option<&str>, n: &str| h.get(c, n).err().unwrap();
        assert!(h.get(None, "double").is_ok());
        assert!(h.get(Some("room1"), "who").is_ok());
        assert_eq!(err(None, "x"), "No event listener for 'x'");
        assert_eq!(err(Some("room2"), "x"), "Channel 'room2' does not exist");
        assert_eq!(
            err(Some("room1"), "x"),
            "No event listener for 'x' on channel 'room1'"
        );
    }
}
