//! Serves the ws-wrapper protocol on a WebSocket hub: named events, requests both ways with typed handlers, channels, anonymous channels and cancellation.
//!
//! The protocol is the one the JavaScript `ws-wrapper` library speaks
//! (`ws_wrapper_codec` reads and writes its frames), so its browser and Node
//! clients talk to a [`WrapperServer`] as to their own server.
//!
//! - **Handlers** per event name, on the main channel ([`WrapperServer::on`])
//!   or a named channel ([`WrapperServer::of`]), with typed arguments (the
//!   `args` array deserialized into a tuple) and a typed result. A request's
//!   answer is the handler's return value; an `Err` travels as an Error object
//!   (`"_": 1`). Per-client handlers ([`Ctx::client_on`]) override the
//!   server's for that connection.
//! - **Concurrency**: a handler is polled once where the message is read and
//!   answered at once if it can be; one that has to wait moves to a task of
//!   its own, so a slow handler never blocks reading the connection and
//!   handlers of one connection run concurrently. A panic in a handler
//!   rejects that request (`handler panicked`) and harms nothing else.
//! - **Cancellation**: the peer's `{i, x}` cancels the request's [`Ctx`]
//!   ([`Ctx::cancelled`]); no answer is sent for a cancelled request.
//! - **Anonymous channels**: a request handler answers [`Reply::Channel`]
//!   with [`Ctx::channel`]; events then flow both ways on it until either side
//!   aborts it ([`AnonChannel::abort`], or the peer's `{h, x}`).
//! - **Server to client**: [`WrapperServer::emit`] and
//!   [`WrapperServer::request`], with the server's default timeout
//!   ([`WrapperConfig::request_timeout`], 2 minutes as the JavaScript
//!   server) or a per-request one.
//! - **Errors the protocol defines**: a request on an unknown named channel
//!   is rejected `Channel '<c>' does not exist`; without a handler,
//!   `No event listener for '<name>'`; a message on an unknown anonymous
//!   channel is answered with an abort. Reserved names (`open`, `connect`,
//!   `message`, `error`, `close`, `disconnect`) are never sent on the main
//!   channel. Anything that is not a protocol message is ignored.
//! - **Counters**: [`WrapperServer::stats`] counts the peers' requests by
//!   outcome ([`WrapperStats`]: resolved, rejected, panicked, unknown,
//!   cancelled), one atomic add per request.
//!
//! # Example
//!
//! ```
//! use ws_hub::{HubConfig, WsHub};
//! use ws_wrapper_server::{WrapperConfig, WrapperError, WrapperServer};
//!
//! let server = WrapperServer::new(WsHub::new(HubConfig::default()), WrapperConfig::default());
//! server.on("add", |_ctx, (a, b): (i64, i64)| async move { Ok::<_, WrapperError>(a + b) });
//! server.of("room1").on("who", |_ctx, (): ()| async { Ok::<_, WrapperError>("me") });
//! let handler = server.handler(ws_handler::WsConfig::default()); // mount on GET /rpc
//! # let _ = handler;
//! ```

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use futures_util::FutureExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use ws_handler::{DisconnectHook, MessageHook, WsConfig, ws_handler};
use ws_hub::{ClientId, SendError, WsClient, WsHub};
use ws_send::ws_send;
use ws_wrapper_codec::{Decoded, WrapperMessage, decode, encode, error_value, is_reserved};

/// Settings of a server; every field has a default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrapperConfig {
    /// How long a request the server sends waits for its answer. Default: 2 minutes.
    pub request_timeout: Duration,
}

impl Default for WrapperConfig {
    fn default() -> Self {
        WrapperConfig {
            request_timeout: Duration::from_secs(120),
        }
    }
}

/// An error a handler answers with, or a request of the server fails with.
#[derive(Debug, Clone, PartialEq)]
pub struct WrapperError {
    /// The Error's `message`.
    pub message: String,
    /// The whole Error object as the peer sees it (`{"message": ...}` at least).
    pub value: Value,
}

impl WrapperError {
    /// An Error with `message`.
    pub fn new(message: impl Into<String>) -> Self {
        let message = message.into();
        WrapperError {
            value: error_value(&message),
            message,
        }
    }

    fn from_value(value: Value) -> Self {
        let message = value
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| value.to_string(), str::to_string);
        WrapperError { message, value }
    }
}

impl fmt::Display for WrapperError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for WrapperError {}

/// Why a request the server sent did not get an answer.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestError {
    /// The client rejected it.
    Rejected(WrapperError),
    /// No answer within the timeout.
    Timeout,
    /// The connection ended first, or the client is gone.
    Disconnected,
    /// It could not be queued (a full outbox: the slow-client policy).
    Send(SendError),
    /// The name is reserved on the main channel.
    Reserved,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Rejected(e) => write!(f, "rejected: {e}"),
            RequestError::Timeout => f.write_str("request timed out"),
            RequestError::Disconnected => f.write_str("the connection ended before the answer"),
            RequestError::Send(e) => write!(f, "{e}"),
            RequestError::Reserved => f.write_str("reserved event name on the main channel"),
        }
    }
}

impl std::error::Error for RequestError {}

/// What a handler answers a request with.
#[derive(Debug)]
pub enum Reply {
    /// A value (`{"i","d"}`).
    Value(Value),
    /// An anonymous channel (`{"i","h":1}`), from [`Ctx::channel`].
    Channel(AnonChannel),
}

/// Anything a handler may return: a serializable value or a [`Reply`].
pub trait IntoReply {
    /// The reply.
    fn into_reply(self) -> Reply;
}

impl<T: Serialize> IntoReply for T {
    fn into_reply(self) -> Reply {
        Reply::Value(serde_json::to_value(self).unwrap_or(Value::Null))
    }
}

impl Reply {
    /// A value reply from anything serializable.
    pub fn value(v: impl Serialize) -> Self {
        Reply::Value(serde_json::to_value(v).unwrap_or(Value::Null))
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Handler = Arc<dyn Fn(Ctx, Vec<Value>) -> BoxFuture<Result<Reply, WrapperError>> + Send + Sync>;

/// Wraps a typed handler: the args array becomes `A` (a tuple), the result a reply.
fn erase<A, R, F, Fut>(f: F) -> Handler
where
    A: DeserializeOwned + Send + 'static,
    R: IntoReplyResult,
    F: Fn(Ctx, A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
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
                Box::pin(async move { fut.await.into_reply_result() })
            }
            Err(e) => {
                Box::pin(async move { Err(WrapperError::new(format!("invalid arguments: {e}"))) })
            }
        }
    })
}

/// A handler's output: `Result<T, WrapperError>` where `T` is a value or a [`Reply`].
pub trait IntoReplyResult: Send + 'static {
    /// The reply or the error.
    fn into_reply_result(self) -> Result<Reply, WrapperError>;
}

impl<T: IntoReply + Send + 'static> IntoReplyResult for Result<T, WrapperError> {
    fn into_reply_result(self) -> Result<Reply, WrapperError> {
        self.map(IntoReply::into_reply)
    }
}

impl IntoReply for Reply {
    fn into_reply(self) -> Reply {
        self
    }
}

#[derive(Default)]
struct Handlers {
    /// `None`: the main channel.
    by_channel: HashMap<Option<String>, HashMap<String, Handler>>,
}

impl Handlers {
    fn get(&self, channel: Option<&str>, name: &str) -> Result<Handler, String> {
        let key = channel.map(str::to_string);
        let Some(names) = self.by_channel.get(&key) else {
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

    fn has_channel(&self, channel: &str) -> bool {
        self.by_channel.contains_key(&Some(channel.to_string()))
    }
}

/// A ws-wrapper server over a hub; clones share it.
#[derive(Clone)]
pub struct WrapperServer(Arc<Shared>);

struct Shared {
    hub: WsHub,
    config: WrapperConfig,
    handlers: RwLock<Handlers>,
    conns: Mutex<HashMap<ClientId, Arc<Conn>>>,
    /// Requests of peers by outcome, indexed by [`Outcome`].
    outcomes: [AtomicU64; 5],
}

/// Requests of peers, by how they ended: counters since the server was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WrapperStats {
    /// Answered with a value (or an anonymous channel).
    pub resolved: u64,
    /// Answered with the handler's error.
    pub rejected: u64,
    /// Rejected because the handler panicked.
    pub panicked: u64,
    /// Rejected because no handler (or no named channel) has that name.
    pub unknown: u64,
    /// Cancelled by the peer before an answer (none is sent).
    pub cancelled: u64,
}

#[derive(Clone, Copy)]
enum Outcome {
    Resolved,
    Rejected,
    Panicked,
    Unknown,
    Cancelled,
}

/// Per-connection protocol state.
#[derive(Default)]
struct Conn {
    next_id: AtomicU64,
    /// Requests this server sent, waiting for answers.
    pending: Mutex<HashMap<u64, oneshot::Sender<Result<Value, WrapperError>>>>,
    /// Requests of the peer being handled, by id.
    inflight: Mutex<HashMap<u64, CancellationToken>>,
    /// Anonymous channels, by handle.
    channels: Mutex<HashMap<u64, AnonChannel>>,
    /// Handlers of this client, overriding the server's.
    handlers: RwLock<Handlers>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl WrapperServer {
    /// A server for the connections of `hub`.
    pub fn new(hub: WsHub, config: WrapperConfig) -> Self {
        WrapperServer(Arc::new(Shared {
            hub,
            config,
            handlers: RwLock::default(),
            conns: Mutex::default(),
            outcomes: Default::default(),
        }))
    }

    /// Requests of peers so far, by outcome.
    pub fn stats(&self) -> WrapperStats {
        let n = |o: Outcome| self.0.outcomes[o as usize].load(Ordering::Relaxed);
        WrapperStats {
            resolved: n(Outcome::Resolved),
            rejected: n(Outcome::Rejected),
            panicked: n(Outcome::Panicked),
            unknown: n(Outcome::Unknown),
            cancelled: n(Outcome::Cancelled),
        }
    }

    fn count(&self, outcome: Outcome) {
        self.0.outcomes[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The hub of its connections.
    pub fn hub(&self) -> &WsHub {
        &self.0.hub
    }

    /// Handles event or request `name` on the main channel.
    pub fn on<A, R, F, Fut>(&self, name: &str, f: F) -> &Self
    where
        A: DeserializeOwned + Send + 'static,
        R: IntoReplyResult,
        F: Fn(Ctx, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
    {
        add(&self.0.handlers, None, name, erase(f));
        self
    }

    /// The named channel `channel`, to add handlers to.
    pub fn of(&self, channel: &str) -> ChannelOf<'_> {
        self.0
            .handlers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .by_channel
            .entry(Some(channel.to_string()))
            .or_default();
        ChannelOf {
            handlers: &self.0.handlers,
            channel: channel.to_string(),
        }
    }

    /// The `ws_handler` for this server: `config`'s hooks are kept, the
    /// protocol runs on the messages, and per-connection state goes with the
    /// connection.
    pub fn handler(&self, mut config: WsConfig) -> http_types::Handler {
        let server = self.clone();
        let on_message: MessageHook = Arc::new(move |client, msg| server.receive(client, &msg));
        config.on_message = Some(on_message);
        let server = self.clone();
        let user_disconnect = config.on_disconnect.take();
        let on_disconnect: DisconnectHook = Arc::new(move |client, why| {
            server.forget(client.id());
            if let Some(hook) = &user_disconnect {
                hook(client, why);
            }
        });
        config.on_disconnect = Some(on_disconnect);
        ws_handler(self.0.hub.clone(), config)
    }

    /// The protocol state of a live connection, made on first use; `None`
    /// once the connection is gone (so nothing is left behind).
    fn conn(&self, id: ClientId) -> Option<Arc<Conn>> {
        self.0.hub.client(id)?;
        Some(lock(&self.0.conns).entry(id).or_default().clone())
    }

    /// Drops a connection's state: its waiting requests fail as disconnected,
    /// its handlers and channels are cancelled.
    fn forget(&self, id: ClientId) {
        let Some(conn) = lock(&self.0.conns).remove(&id) else {
            return;
        };
        lock(&conn.pending).clear();
        for (_, c) in lock(&conn.inflight).drain() {
            c.cancel();
        }
        for (_, ch) in lock(&conn.channels).drain() {
            ch.0.cancel.cancel();
        }
    }

    /// Sends event `name` with `args` to `client` (on `channel`, `None` for the main one).
    pub fn emit(
        &self,
        client: &WsClient,
        channel: Option<&str>,
        name: &str,
        args: Vec<Value>,
    ) -> Result<(), RequestError> {
        if channel.is_none() && is_reserved(name) {
            return Err(RequestError::Reserved);
        }
        let msg = WrapperMessage::Event {
            channel: channel.map(str::to_string),
            name: name.to_string(),
            args,
        };
        send(client, &msg).map_err(RequestError::Send)
    }

    /// Sends request `name` to `client` and waits for the answer, at most
    /// `timeout` (`None`: [`WrapperConfig::request_timeout`]).
    pub async fn request(
        &self,
        client: &WsClient,
        channel: Option<&str>,
        name: &str,
        args: Vec<Value>,
        timeout: Option<Duration>,
    ) -> Result<Value, RequestError> {
        if channel.is_none() && is_reserved(name) {
            return Err(RequestError::Reserved);
        }
        let conn = self.conn(client.id()).ok_or(RequestError::Disconnected)?;
        let id = conn.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        lock(&conn.pending).insert(id, tx);
        let msg = WrapperMessage::Request {
            id,
            channel: channel.map(str::to_string),
            name: name.to_string(),
            args,
        };
        if let Err(e) = send(client, &msg) {
            lock(&conn.pending).remove(&id);
            return Err(RequestError::Send(e));
        }
        let timeout = timeout.unwrap_or(self.0.config.request_timeout);
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err(RequestError::Rejected(e)),
            Ok(Err(_)) => Err(RequestError::Disconnected),
            Err(_) => {
                lock(&conn.pending).remove(&id);
                Err(RequestError::Timeout)
            }
        }
    }

    /// One message from `client`.
    fn receive(&self, client: &WsClient, msg: &Message) {
        let Ok(text) = msg.to_text() else { return };
        let Decoded::Message(m) = decode(text) else {
            return;
        };
        let Some(conn) = self.conn(client.id()) else {
            return;
        };
        match m {
            WrapperMessage::Event {
                channel,
                name,
                args,
            } => {
                if let Ok(h) = self.lookup(&conn, channel.as_deref(), &name) {
                    let ctx = Ctx::new(self, client, None, None);
                    run(AssertUnwindSafe(h(ctx, args)).catch_unwind(), drop);
                }
            }
            WrapperMessage::Request {
                id,
                channel,
                name,
                args,
            } => match self.lookup(&conn, channel.as_deref(), &name) {
                Ok(h) => self.run_request(client, &conn, id, h, args),
                Err(why) => {
                    self.count(Outcome::Unknown);
                    let _ = send(client, &reject(id, &WrapperError::new(why)));
                }
            },
            WrapperMessage::Resolve { id, data } => {
                if let Some(tx) = lock(&conn.pending).remove(&id) {
                    let _ = tx.send(Ok(data));
                }
            }
            WrapperMessage::Reject { id, error, .. } => {
                if let Some(tx) = lock(&conn.pending).remove(&id) {
                    let _ = tx.send(Err(WrapperError::from_value(error)));
                }
            }
            WrapperMessage::Cancel { id, .. } => {
                if let Some(c) = lock(&conn.inflight).remove(&id) {
                    c.cancel();
                }
            }
            WrapperMessage::ChannelEvent { handle, name, args } => {
                let Some(ch) = lock(&conn.channels).get(&handle).cloned() else {
                    let _ = send(client, &abort(handle));
                    return;
                };
                if let Some(h) = ch.handler(&name) {
                    let ctx = Ctx::new(self, client, None, None).in_channel(&ch);
                    run(AssertUnwindSafe(h(ctx, args)).catch_unwind(), drop);
                }
            }
            WrapperMessage::ChannelRequest {
                id,
                handle,
                name,
                args,
            } => {
                let Some(ch) = lock(&conn.channels).get(&handle).cloned() else {
                    let _ = send(client, &abort(handle));
                    return;
                };
                match ch.handler(&name) {
                    Some(h) => self.run_request(client, &conn, id, h, args),
                    None => {
                        self.count(Outcome::Unknown);
                        let why = WrapperError::new(format!("No event listener for '{name}'"));
                        let _ = send(client, &reject(id, &why));
                    }
                }
            }
            WrapperMessage::Abort { handle, .. } => {
                if let Some(ch) = lock(&conn.channels).remove(&handle) {
                    ch.0.cancel.cancel();
                }
            }
            WrapperMessage::ChannelCreated { id } => {
                // The client answered a server request with a channel, which
                // this server does not take: fail the request, close the channel.
                if let Some(tx) = lock(&conn.pending).remove(&id) {
                    let _ = tx.send(Err(WrapperError::new(
                        "anonymous channels from clients are not supported",
                    )));
                }
                let _ = send(client, &abort(id));
            }
        }
    }

    fn lookup(&self, conn: &Conn, channel: Option<&str>, name: &str) -> Result<Handler, String> {
        let own = conn.handlers.read().unwrap_or_else(PoisonError::into_inner);
        if let Ok(h) = own.get(channel, name) {
            return Ok(h);
        }
        let server = self
            .0
            .handlers
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = channel
            && !server.has_channel(c)
            && !own.has_channel(c)
        {
            return Err(format!("Channel '{c}' does not exist"));
        }
        server.get(channel, name)
    }

    /// Runs a request's handler in its own task and answers it.
    fn run_request(
        &self,
        client: &WsClient,
        conn: &Arc<Conn>,
        id: u64,
        h: Handler,
        args: Vec<Value>,
    ) {
        let cancel = CancellationToken::new();
        lock(&conn.inflight).insert(id, cancel.clone());
        let ctx = Ctx::new(self, client, Some(id), Some(cancel.clone()));
        let (client, conn, server) = (client.clone(), conn.clone(), self.clone());
        let answer = move |out: Result<Result<Reply, WrapperError>, _>| {
            lock(&conn.inflight).remove(&id);
            if cancel.is_cancelled() {
                server.count(Outcome::Cancelled);
                return; // the peer gave up: it ignores any answer
            }
            let (answer, outcome) = match out {
                Ok(Ok(Reply::Value(data))) => {
                    (WrapperMessage::Resolve { id, data }, Outcome::Resolved)
                }
                Ok(Ok(Reply::Channel(ch))) => {
                    ch.0.ready.store(true, Ordering::SeqCst);
                    lock(&conn.channels).insert(ch.0.handle, ch.clone());
                    (WrapperMessage::ChannelCreated { id }, Outcome::Resolved)
                }
                Ok(Err(e)) => (reject(id, &e), Outcome::Rejected),
                Err(_) => (
                    reject(id, &WrapperError::new("handler panicked")),
                    Outcome::Panicked,
                ),
            };
            server.count(outcome);
            let _ = send(&client, &answer);
        };
        run(AssertUnwindSafe(h(ctx, args)).catch_unwind(), answer);
    }
}

impl fmt::Debug for WrapperServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrapperServer")
            .field("connections", &lock(&self.0.conns).len())
            .finish_non_exhaustive()
    }
}

/// Runs a handler's future: polled once here, and finished at once if it
/// can be (most answers need no waiting, and then no task is spawned);
/// otherwise moved to a task of its own, so it never holds up the
/// connection's reading.
fn run<F: Future + Send + 'static>(fut: F, then: impl FnOnce(F::Output) + Send + 'static) {
    let mut fut = Box::pin(fut);
    match (&mut fut).now_or_never() {
        Some(out) => then(out),
        None => {
            tokio::spawn(async move { then(fut.await) });
        }
    }
}

fn add(handlers: &RwLock<Handlers>, channel: Option<&str>, name: &str, h: Handler) {
    handlers
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .by_channel
        .entry(channel.map(str::to_string))
        .or_default()
        .insert(name.to_string(), h);
}

fn send(client: &WsClient, msg: &WrapperMessage) -> Result<(), SendError> {
    ws_send(client, Message::text(encode(msg)))
}

fn reject(id: u64, e: &WrapperError) -> WrapperMessage {
    WrapperMessage::Reject {
        id,
        error: e.value.clone(),
        error_object: true,
    }
}

fn abort(handle: u64) -> WrapperMessage {
    WrapperMessage::Abort {
        handle,
        reason: error_value("Request aborted"),
        error_object: true,
    }
}

/// Handlers of one named channel; see [`WrapperServer::of`].
pub struct ChannelOf<'a> {
    handlers: &'a RwLock<Handlers>,
    channel: String,
}

impl ChannelOf<'_> {
    /// Handles event or request `name` on this channel.
    pub fn on<A, R, F, Fut>(&self, name: &str, f: F) -> &Self
    where
        A: DeserializeOwned + Send + 'static,
        R: IntoReplyResult,
        F: Fn(Ctx, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
    {
        add(self.handlers, Some(&self.channel), name, erase(f));
        self
    }
}

impl fmt::Debug for ChannelOf<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelOf")
            .field("channel", &self.channel)
            .finish()
    }
}

/// What a handler knows: its client, its cancellation, its channel.
pub struct Ctx {
    server: WrapperServer,
    client: WsClient,
    /// The id of the request being handled; `None` for an event.
    request: Option<u64>,
    cancel: Option<CancellationToken>,
    channel: Mutex<Option<AnonChannel>>,
}

impl Ctx {
    fn new(
        server: &WrapperServer,
        client: &WsClient,
        request: Option<u64>,
        cancel: Option<CancellationToken>,
    ) -> Self {
        Ctx {
            server: server.clone(),
            client: client.clone(),
            request,
            cancel,
            channel: Mutex::new(None),
        }
    }

    fn in_channel(self, ch: &AnonChannel) -> Self {
        *lock(&self.channel) = Some(ch.clone());
        self
    }

    /// The connection the event or request came from.
    pub fn client(&self) -> &WsClient {
        &self.client
    }

    /// The server, to emit or request back.
    pub fn server(&self) -> &WrapperServer {
        &self.server
    }

    /// Whether the peer cancelled this request (never for events).
    pub fn is_cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(CancellationToken::is_cancelled)
    }

    /// Completes when the peer cancels this request (never for events).
    pub async fn cancelled(&self) {
        match &self.cancel {
            Some(c) => c.cancelled().await,
            None => std::future::pending().await,
        }
    }

    /// The anonymous channel of this request, made on first use: answer
    /// [`Reply::Channel`] with it. Inside a channel's handler, that channel.
    /// `None` in an event handler (an event has no answer to carry it).
    pub fn channel(&self) -> Option<AnonChannel> {
        let mut slot = lock(&self.channel);
        if slot.is_none() {
            let handle = self.request?;
            *slot = Some(AnonChannel::new(self.client.clone(), handle));
        }
        slot.clone()
    }

    /// Handles `name` for this client only, overriding the server's handler.
    pub fn client_on<A, R, F, Fut>(&self, channel: Option<&str>, name: &str, f: F)
    where
        A: DeserializeOwned + Send + 'static,
        R: IntoReplyResult,
        F: Fn(Ctx, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
    {
        if let Some(conn) = self.server.conn(self.client.id()) {
            add(&conn.handlers, channel, name, erase(f));
        }
    }
}

impl fmt::Debug for Ctx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ctx")
            .field("client", &self.client.id())
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// A request-scoped channel: events both ways until either side aborts it.
#[derive(Clone)]
pub struct AnonChannel(Arc<AnonShared>);

struct AnonShared {
    client: WsClient,
    handle: u64,
    ready: AtomicBool,
    cancel: CancellationToken,
    handlers: Mutex<HashMap<String, Handler>>,
}

impl AnonChannel {
    fn new(client: WsClient, handle: u64) -> Self {
        AnonChannel(Arc::new(AnonShared {
            client,
            handle,
            ready: AtomicBool::new(false),
            cancel: CancellationToken::new(),
            handlers: Mutex::default(),
        }))
    }

    /// Its handle: the id of the request that made it.
    pub fn handle(&self) -> u64 {
        self.0.handle
    }

    fn handler(&self, name: &str) -> Option<Handler> {
        lock(&self.0.handlers).get(name).cloned()
    }

    /// Handles event or request `name` from the peer on this channel.
    pub fn on<A, R, F, Fut>(&self, name: &str, f: F) -> &Self
    where
        A: DeserializeOwned + Send + 'static,
        R: IntoReplyResult,
        F: Fn(Ctx, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = R> + Send + 'static,
    {
        lock(&self.0.handlers).insert(name.to_string(), erase(f));
        self
    }

    /// Sends event `name` on the channel; an error once it is closed or
    /// before it was handed to the peer.
    pub fn emit(&self, name: &str, args: Vec<Value>) -> Result<(), RequestError> {
        if !self.0.ready.load(Ordering::SeqCst) || self.is_closed() {
            return Err(RequestError::Disconnected);
        }
        let msg = WrapperMessage::ChannelEvent {
            handle: self.0.handle,
            name: name.to_string(),
            args,
        };
        send(&self.0.client, &msg).map_err(RequestError::Send)
    }

    /// Aborts the channel: tells the peer and closes it here.
    pub fn abort(&self, reason: &str) {
        if self.is_closed() {
            return;
        }
        self.0.cancel.cancel();
        let _ = send(
            &self.0.client,
            &WrapperMessage::Abort {
                handle: self.0.handle,
                reason: error_value(reason),
                error_object: true,
            },
        );
    }

    /// Whether it was aborted (either side) or its connection ended.
    pub fn is_closed(&self) -> bool {
        self.0.cancel.is_cancelled() || self.0.client.is_closed()
    }

    /// Completes when the channel is aborted or its connection ends.
    pub async fn closed(&self) {
        self.0.cancel.cancelled().await;
    }
}

impl fmt::Debug for AnonChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnonChannel")
            .field("handle", &self.0.handle)
            .field("closed", &self.is_closed())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ws_hub::HubConfig;

    /// What the server sent `client`, decoded.
    fn sent(c: &WsClient) -> Vec<WrapperMessage> {
        c.take_queued()
            .into_iter()
            .filter_map(|m| match decode(m.to_text().ok()?) {
                Decoded::Message(m) => Some(m),
                Decoded::Ignored(_) => None,
            })
            .collect()
    }

    /// Waits for the spawned handlers to answer: they run on this test's
    /// runtime, so yielding lets them; bounded, so a missing answer fails.
    async fn answers(c: &WsClient, n: usize) -> Vec<WrapperMessage> {
        let mut got = Vec::new();
        for _ in 0..100_000 {
            got.extend(sent(c));
            if got.len() >= n {
                return got;
            }
            tokio::task::yield_now().await;
        }
        panic!("expected {n} answers, got {got:?}");
    }

    fn setup() -> (WrapperServer, WsClient) {
        let hub = WsHub::new(HubConfig::default());
        let server = WrapperServer::new(hub.clone(), WrapperConfig::default());
        let client = hub.register(None).unwrap();
        (server, client)
    }

    fn text(s: &str) -> Message {
        Message::text(s)
    }

    #[tokio::test]
    async fn typed_handlers_answer_requests_and_reject_with_errors() {
        let (server, c) = setup();
        server
            .on("add", |_ctx, (a, b): (i64, i64)| async move {
                Ok::<_, WrapperError>(a + b)
            })
            .on("fail", |_ctx, (): ()| async {
                Err::<(), _>(WrapperError::new("nope"))
            });
        server
            .of("room1")
            .on("who", |_ctx, (): ()| async { Ok::<_, WrapperError>("me") });
        server.receive(&c, &text(r#"{"a":["add",2,3],"i":1}"#));
        server.receive(&c, &text(r#"{"a":["fail"],"i":2}"#));
        server.receive(&c, &text(r#"{"a":["who"],"c":"room1","i":3}"#));
        server.receive(&c, &text(r#"{"a":["add","x"],"i":4}"#));
        let mut got = answers(&c, 4).await;
        got.sort_by_key(|m| match m {
            WrapperMessage::Resolve { id, .. } | WrapperMessage::Reject { id, .. } => *id,
            _ => 0,
        });
        assert_eq!(
            got[0],
            WrapperMessage::Resolve {
                id: 1,
                data: serde_json::json!(5)
            }
        );
        assert_eq!(
            got[1],
            WrapperMessage::Reject {
                id: 2,
                error: error_value("nope"),
                error_object: true
            }
        );
        assert_eq!(
            got[2],
            WrapperMessage::Resolve {
                id: 3,
                data: serde_json::json!("me")
            }
        );
        assert!(
            matches!(&got[3], WrapperMessage::Reject { id: 4, error, .. } if error["message"].as_str().unwrap().starts_with("invalid arguments"))
        );
        let st = server.stats();
        assert_eq!((st.resolved, st.rejected, st.unknown), (2, 2, 0), "{st:?}");
    }

    #[tokio::test]
    async fn unknown_channels_and_names_are_rejected_as_the_protocol_says() {
        let (server, c) = setup();
        server.on("x", |_ctx, (): ()| async { Ok::<_, WrapperError>(1) });
        server.receive(&c, &text(r#"{"a":["who"],"c":"nowhere","i":1}"#));
        server.receive(&c, &text(r#"{"a":["missing"],"i":2}"#));
        server.receive(&c, &text(r#"{"a":["start"],"h":77}"#));
        let got = answers(&c, 3).await;
        assert_eq!(
            got[0],
            WrapperMessage::Reject {
                id: 1,
                error: error_value("Channel 'nowhere' does not exist"),
                error_object: true
            }
        );
        assert_eq!(
            got[1],
            WrapperMessage::Reject {
                id: 2,
                error: error_value("No event listener for 'missing'"),
                error_object: true
            }
        );
        assert!(
            matches!(got[2], WrapperMessage::Abort { handle: 77, .. }),
            "an unknown channel is aborted"
        );
        let st = server.stats();
        assert_eq!((st.unknown, st.resolved, st.rejected), (2, 0, 0), "{st:?}");
    }

    #[tokio::test]
    async fn a_panicking_handler_rejects_its_request_only() {
        let (server, c) = setup();
        server
            .on("boom", |_ctx, (): ()| async {
                if true {
                    panic!("handler bug")
                }
                Ok::<_, WrapperError>(())
            })
            .on("ok", |_ctx, (): ()| async { Ok::<_, WrapperError>("fine") });
        server.receive(&c, &text(r#"{"a":["boom"],"i":1}"#));
        let got = answers(&c, 1).await;
        assert_eq!(
            got[0],
            WrapperMessage::Reject {
                id: 1,
                error: error_value("handler panicked"),
                error_object: true
            }
        );
        server.receive(&c, &text(r#"{"a":["ok"],"i":2}"#));
        assert_eq!(
            answers(&c, 1).await[0],
            WrapperMessage::Resolve {
                id: 2,
                data: serde_json::json!("fine")
            }
        );
        let st = server.stats();
        assert_eq!((st.panicked, st.resolved, st.rejected), (1, 1, 0), "{st:?}");
    }

    #[tokio::test]
    async fn a_cancelled_request_sees_it_and_is_not_answered() {
        let (server, c) = setup();
        let (saw_tx, saw_rx) = oneshot::channel();
        let saw = Arc::new(Mutex::new(Some(saw_tx)));
        server.on("slow", move |ctx: Ctx, (): ()| {
            let saw = saw.clone();
            async move {
                ctx.cancelled().await;
                if let Some(tx) = lock(&saw).take() {
                    let _ = tx.send(ctx.is_cancelled());
                }
                Ok::<_, WrapperError>("late")
            }
        });
        server.on("ok", |_ctx, (): ()| async { Ok::<_, WrapperError>(1) });
        server.receive(&c, &text(r#"{"a":["slow"],"i":4}"#));
        server.receive(
            &c,
            &text(r#"{"i":4,"x":{"message":"This operation was aborted"},"_":1}"#),
        );
        assert!(saw_rx.await.unwrap(), "the handler saw the cancellation");
        server.receive(&c, &text(r#"{"a":["ok"],"i":5}"#));
        let got = answers(&c, 1).await;
        assert_eq!(
            got,
            [WrapperMessage::Resolve {
                id: 5,
                data: serde_json::json!(1)
            }],
            "no answer to 4"
        );
        let st = server.stats();
        assert_eq!((st.cancelled, st.resolved), (1, 1), "{st:?}");
    }

    #[tokio::test]
    async fn an_anonymous_channel_streams_until_aborted() {
        let (server, c) = setup();
        server.on("stream", |ctx: Ctx, (n,): (u64,)| async move {
            let ch = ctx.channel().expect("a request has a channel");
            ch.on("start", move |ctx: Ctx, _: Vec<Value>| async move {
                let ch = ctx.channel().unwrap();
                for value in 1..=n {
                    ch.emit(
                        "next",
                        vec![serde_json::json!({"value": value, "done": false})],
                    )
                    .unwrap();
                }
                ch.emit("next", vec![serde_json::json!({"done": true})])
                    .unwrap();
                Ok::<_, WrapperError>(())
            });
            Ok::<_, WrapperError>(Reply::Channel(ch))
        });
        server.receive(&c, &text(r#"{"a":["stream",2],"i":5}"#));
        assert_eq!(
            answers(&c, 1).await,
            [WrapperMessage::ChannelCreated { id: 5 }]
        );
        server.receive(&c, &text(r#"{"a":["start"],"h":5}"#));
        let got = answers(&c, 3).await;
        let values: Vec<Value> = got
            .into_iter()
            .map(|m| match m {
                WrapperMessage::ChannelEvent {
                    handle: 5,
                    name,
                    mut args,
                } if name == "next" => args.remove(0),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            values,
            [
                serde_json::json!({"value":1,"done":false}),
                serde_json::json!({"value":2,"done":false}),
                serde_json::json!({"done":true})
            ]
        );
        server.receive(
            &c,
            &text(r#"{"h":5,"x":{"message":"Request aborted"},"_":1}"#),
        );
        server.receive(&c, &text(r#"{"a":["start"],"h":5}"#));
        assert!(
            matches!(
                answers(&c, 1).await[0],
                WrapperMessage::Abort { handle: 5, .. }
            ),
            "gone after the abort"
        );
    }

    #[tokio::test]
    async fn the_server_requests_the_client_and_reserved_names_are_refused() {
        let (server, c) = setup();
        assert_eq!(
            server.emit(&c, None, "open", vec![]),
            Err(RequestError::Reserved)
        );
        assert!(
            server.emit(&c, Some("chan"), "open", vec![]).is_ok(),
            "reserved only on the main channel"
        );
        sent(&c);
        let asking = {
            let (server, c) = (server.clone(), c.clone());
            tokio::spawn(async move { server.request(&c, None, "name", vec![], None).await })
        };
        let got = answers(&c, 1).await;
        let WrapperMessage::Request { id, name, .. } = &got[0] else {
            panic!("{got:?}")
        };
        assert_eq!(name, "name");
        server.receive(&c, &text(&format!(r#"{{"i":{id},"d":"ana"}}"#)));
        assert_eq!(asking.await.unwrap(), Ok(serde_json::json!("ana")));
        let timed_out = server
            .request(&c, None, "name", vec![], Some(Duration::from_millis(1)))
            .await;
        assert_eq!(timed_out, Err(RequestError::Timeout));
    }

    #[tokio::test]
    async fn per_client_handlers_override_the_server_s_and_state_goes_with_the_client() {
        let (server, c) = setup();
        server.on("who", |_ctx, (): ()| async {
            Ok::<_, WrapperError>("server")
        });
        server.on("mine", |ctx: Ctx, (): ()| async move {
            ctx.client_on(None, "who", |_ctx, (): ()| async {
                Ok::<_, WrapperError>("client")
            });
            Ok::<_, WrapperError>(())
        });
        server.receive(&c, &text(r#"{"a":["mine"],"i":1}"#));
        answers(&c, 1).await;
        server.receive(&c, &text(r#"{"a":["who"],"i":2}"#));
        assert_eq!(
            answers(&c, 1).await[0],
            WrapperMessage::Resolve {
                id: 2,
                data: serde_json::json!("client")
            }
        );
        server.hub().unregister(c.id());
        server.forget(c.id());
        assert!(
            lock(&server.0.conns).is_empty(),
            "nothing left for a gone client"
        );
        assert_eq!(
            server.request(&c, None, "x", vec![], None).await,
            Err(RequestError::Disconnected)
        );
    }
}
