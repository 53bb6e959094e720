//! Serves the ws-wrapper protocol on a WebSocket hub: named events, requests both ways with typed handlers, channels, anonymous channels and cancellation.
//!
//! The protocol is the one the JavaScript `ws-wrapper` library speaks, so its
//! browser and Node clients talk to a [`WrapperServer`] as to their own
//! server. Every rule of it lives in `ws_wrapper_session` (one I/O-free
//! session per connection) and the async half both ends share in
//! `ws_wrapper_peer`; this crate is their driver on a hub: it feeds each
//! connection's messages to its peer, sends what the session says to send
//! through the hub's outbox, and says which handler a name has.
//! `ws_wrapper_client` drives the same session, so both ends behave the same.
//!
//! - **Handlers** per event name, on the main channel ([`WrapperServer::on`])
//!   or a named channel ([`WrapperServer::of`]), with typed arguments (the
//!   `args` array deserialized into a tuple) and a typed result. A request's
//!   answer is the handler's return value; an `Err` travels as an Error object
//!   (`"_": 1`), and so does a result that does not serialize
//!   (`unserializable result: ...`). Per-client handlers ([`Ctx::client_on`])
//!   override the server's for that connection.
//! - **Order and concurrency**: the handlers of one connection start in the
//!   order its messages arrived. A handler is polled once where the message
//!   is read and answered at once if it can be; one that has to wait moves
//!   to a task of its own, so a slow handler never blocks reading. At most
//!   [`WrapperConfig::handlers_per_connection`] (64) run at once per
//!   connection; the next ones wait their turn, in order. A panic in a
//!   handler rejects that request (`handler panicked`) and harms nothing else.
//! - **Cancellation and timeouts**: the peer's `{i, x}` cancels the request's
//!   [`Ctx`] ([`Ctx::cancelled`]); no answer is sent for a cancelled request.
//!   A request the server sends waits [`WrapperConfig::request_timeout`] (2
//!   minutes, as the JavaScript server) or its own; on timeout, or when its
//!   future is dropped, the cancel `{i, x, _: 1}` goes to the client.
//! - **Anonymous channels**, both ways: a request handler answers
//!   [`Reply::Channel`] with [`Ctx::channel`];
//!   [`WrapperServer::request_channel`] takes the one a client answers with.
//!   Events and requests then flow both ways on it until either side aborts it
//!   ([`AnonChannel::abort`], or the peer's `{h, x}`).
//! - **Server to client**: [`WrapperServer::emit`], [`WrapperServer::request`].
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use ws_handler::{DisconnectHook, MessageHook, WsConfig, ws_handler};
use ws_hub::{ClientId, SendError, WsClient, WsHub};
use ws_send::ws_send;
use ws_wrapper_peer::{
    Args, Call, Handler, HandlerFuture, Handlers, Host, Outcome, Peer, PeerConfig, Target, handler,
};

/// Why a request (or an event) the server sent failed; shared with the client.
pub use ws_wrapper_peer::RequestError;

/// An error a handler answers with, or a client rejected a request with:
/// an Error object (`message`, and the whole `value`).
pub use ws_wrapper_peer::PeerError as WrapperError;

/// A request-scoped anonymous channel: events and requests both ways until
/// either side aborts it or the connection ends.
pub type AnonChannel = ws_wrapper_peer::Channel<Ctx>;

/// What a request handler answers with: a value or an [`AnonChannel`].
pub type Reply = ws_wrapper_peer::Reply<AnonChannel>;

/// Settings of a server; every field has a default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrapperConfig {
    /// How long a request the server sends waits for its answer. Default: 2 minutes.
    pub request_timeout: Duration,
    /// How many handlers of one connection may run at once; the next ones
    /// wait, in arrival order. Default: 64.
    pub handlers_per_connection: usize,
}

impl Default for WrapperConfig {
    fn default() -> Self {
        WrapperConfig {
            request_timeout: Duration::from_secs(120),
            handlers_per_connection: 64,
        }
    }
}

type ServerHandler = Handler<Ctx, AnonChannel>;
type OwnHandlers = Arc<RwLock<Handlers<ServerHandler>>>;

/// A ws-wrapper server over a hub; clones share it.
#[derive(Clone)]
pub struct WrapperServer(Arc<Shared>);

struct Shared {
    hub: WsHub,
    config: WrapperConfig,
    handlers: RwLock<Handlers<ServerHandler>>,
    conns: Mutex<HashMap<ClientId, Arc<Peer<Conn>>>>,
    /// Requests of peers by outcome, indexed by [`Outcome`] (in its order).
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

fn slot(o: Outcome) -> usize {
    match o {
        Outcome::Resolved => 0,
        Outcome::Rejected => 1,
        Outcome::Panicked => 2,
        Outcome::Unknown => 3,
        Outcome::Cancelled => 4,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(PoisonError::into_inner)
}

/// One connection, as the peer's host: frames go to the hub's outbox.
struct Conn {
    /// The server (a cycle through `conns`, broken when the connection ends).
    server: WrapperServer,
    client: WsClient,
    /// Handlers of this client, overriding the server's.
    own: OwnHandlers,
}

impl Host for Conn {
    type Ctx = Ctx;

    fn send(&self, text: String) -> Result<(), RequestError> {
        ws_send(&self.client, Message::text(text)).map_err(|e| match e {
            SendError::Closed => RequestError::Disconnected,
            e => RequestError::Send(e.to_string()),
        })
    }

    fn lookup(&self, channel: Option<&str>, name: &str) -> Result<ServerHandler, WrapperError> {
        let own = read(&self.own);
        let all = read(&self.server.0.handlers);
        Handlers::lookup(&[&own, &all], channel, name)
    }

    fn ctx(&self, call: Call<Ctx>) -> Ctx {
        Ctx {
            server: self.server.clone(),
            client: self.client.clone(),
            own: self.own.clone(),
            call,
        }
    }

    fn count(&self, outcome: Outcome) {
        self.server.0.outcomes[slot(outcome)].fetch_add(1, Ordering::Relaxed);
    }
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
        let n = |o: Outcome| self.0.outcomes[slot(o)].load(Ordering::Relaxed);
        WrapperStats {
            resolved: n(Outcome::Resolved),
            rejected: n(Outcome::Rejected),
            panicked: n(Outcome::Panicked),
            unknown: n(Outcome::Unknown),
            cancelled: n(Outcome::Cancelled),
        }
    }

    /// The hub of its connections.
    pub fn hub(&self) -> &WsHub {
        &self.0.hub
    }

    /// Handles event or request `name` on the main channel.
    pub fn on<A: Args, Fut: HandlerFuture<AnonChannel>>(
        &self,
        name: &str,
        f: impl Fn(Ctx, A) -> Fut + Send + Sync + 'static,
    ) -> &Self {
        write(&self.0.handlers).add(None, name, handler(f));
        self
    }

    /// The named channel `channel`, to add handlers to.
    pub fn of(&self, channel: &str) -> ChannelOf<'_> {
        write(&self.0.handlers).add_channel(channel);
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
    fn conn(&self, id: ClientId) -> Option<Arc<Peer<Conn>>> {
        let client = self.0.hub.client(id)?;
        let mut conns = lock(&self.0.conns);
        let peer = conns.entry(id).or_insert_with(|| {
            let host = Conn {
                server: self.clone(),
                client,
                own: OwnHandlers::default(),
            };
            Peer::new(
                host,
                PeerConfig {
                    request_timeout: self.0.config.request_timeout,
                    handlers_at_once: self.0.config.handlers_per_connection,
                },
            )
        });
        Some(peer.clone())
    }

    /// Drops a connection's state: its waiting requests fail as disconnected,
    /// its handlers and channels are cancelled.
    fn forget(&self, id: ClientId) {
        let peer = lock(&self.0.conns).remove(&id);
        if let Some(peer) = peer {
            peer.close();
        }
    }

    /// One message from `client`.
    fn receive(&self, client: &WsClient, msg: &Message) {
        let Ok(text) = msg.to_text() else { return };
        if let Some(peer) = self.conn(client.id()) {
            peer.receive(text);
        }
    }

    /// Sends event `name` with `args` to `client` (on `channel`, `None` for the main one).
    ///
    /// # Errors
    ///
    /// [`RequestError::Reserved`], [`RequestError::Disconnected`] (the
    /// client is gone), [`RequestError::Send`] (its outbox is full).
    pub fn emit(
        &self,
        client: &WsClient,
        channel: Option<&str>,
        name: &str,
        args: Vec<Value>,
    ) -> Result<(), RequestError> {
        let peer = self.conn(client.id()).ok_or(RequestError::Disconnected)?;
        peer.emit(channel, name, args)
    }

    /// Sends request `name` to `client` and waits for the answer, at most
    /// `timeout` (`None`: [`WrapperConfig::request_timeout`]). The timeout,
    /// or dropping the future first, sends the cancel to the client.
    ///
    /// # Errors
    ///
    /// [`RequestError::Rejected`] with the client's error, [`RequestError::Timeout`],
    /// [`RequestError::Disconnected`], [`RequestError::Reserved`],
    /// [`RequestError::Send`], and [`RequestError::Invalid`] when the client
    /// answers with an anonymous channel ([`WrapperServer::request_channel`]
    /// takes those).
    pub async fn request(
        &self,
        client: &WsClient,
        channel: Option<&str>,
        name: &str,
        args: Vec<Value>,
        timeout: Option<Duration>,
    ) -> Result<Value, RequestError> {
        let peer = self.conn(client.id()).ok_or(RequestError::Disconnected)?;
        peer.ask_value(Target::Named(channel), name, args, timeout, None)
            .await
    }

    /// Sends request `name` to `client` and waits for an anonymous channel
    /// as the answer (`{"i","h":1}`): events and requests both ways on it.
    ///
    /// # Errors
    ///
    /// As [`WrapperServer::request`]; a value as the answer is [`RequestError::Invalid`].
    pub async fn request_channel(
        &self,
        client: &WsClient,
        channel: Option<&str>,
        name: &str,
        args: Vec<Value>,
        timeout: Option<Duration>,
    ) -> Result<AnonChannel, RequestError> {
        let peer = self.conn(client.id()).ok_or(RequestError::Disconnected)?;
        peer.ask_channel(Target::Named(channel), name, args, timeout, None)
            .await
    }
}

impl fmt::Debug for WrapperServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrapperServer")
            .field("connections", &lock(&self.0.conns).len())
            .finish_non_exhaustive()
    }
}

/// Handlers of one named channel; see [`WrapperServer::of`].
pub struct ChannelOf<'a> {
    handlers: &'a RwLock<Handlers<ServerHandler>>,
    channel: String,
}

impl ChannelOf<'_> {
    /// Handles event or request `name` on this channel.
    pub fn on<A: Args, Fut: HandlerFuture<AnonChannel>>(
        &self,
        name: &str,
        f: impl Fn(Ctx, A) -> Fut + Send + Sync + 'static,
    ) -> &Self {
        write(self.handlers).add(Some(&self.channel), name, handler(f));
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

/// What a handler knows: its client, its request's cancellation, its channel.
pub struct Ctx {
    server: WrapperServer,
    client: WsClient,
    own: OwnHandlers,
    call: Call<Ctx>,
}

impl Ctx {
    /// The connection the event or request came from.
    pub fn client(&self) -> &WsClient {
        &self.client
    }

    /// The server, to emit or request back.
    pub fn server(&self) -> &WrapperServer {
        &self.server
    }

    /// Handles `name` for this client only, overriding the server's handler.
    pub fn client_on<A: Args, Fut: HandlerFuture<AnonChannel>>(
        &self,
        channel: Option<&str>,
        name: &str,
        f: impl Fn(Ctx, A) -> Fut + Send + Sync + 'static,
    ) {
        write(&self.own).add(channel, name, handler(f));
    }
}

/// The rest of what a handler knows is the [`Call`] (both ends share it):
/// `request_id()`, `is_cancelled()` and `cancelled().await` (the peer's
/// cancel, or the connection's end), and `channel()`: the anonymous channel of
/// this request, made on first use (answer [`Reply::Channel`] with it), or,
/// inside a channel's handler, that channel; `None` in an event handler.
impl std::ops::Deref for Ctx {
    type Target = Call<Ctx>;

    fn deref(&self) -> &Call<Ctx> {
        &self.call
    }
}

impl fmt::Debug for Ctx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ctx")
            .field("client", &self.client.id())
            .field("call", &self.call)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;
    use ws_hub::HubConfig;
    use ws_wrapper_codec::{Decoded, WrapperMessage, decode, error_value};

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
        // The timeout went to the client as the protocol's cancel.
        let got = sent(&c);
        assert!(
            matches!(&got[0], WrapperMessage::Request { id: 2, .. }),
            "{got:?}"
        );
        assert_eq!(
            got[1],
            WrapperMessage::Cancel {
                id: 2,
                reason: error_value("Request timed out"),
                error_object: true
            }
        );
        // An unserializable answer is an error reply with a message.
        server.on("bad", |_ctx, (): ()| async {
            let mut m = HashMap::new();
            m.insert(vec![1], 2);
            Ok::<_, WrapperError>(m)
        });
        server.receive(&c, &text(r#"{"a":["bad"],"i":7}"#));
        let got = answers(&c, 1).await;
        assert!(
            matches!(&got[0], WrapperMessage::Reject { id: 7, error, error_object: true }
                if error["message"].as_str().unwrap().starts_with("unserializable result")),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn requests_of_a_connection_start_in_arrival_order_up_to_the_limit() {
        let hub = WsHub::new(HubConfig::default());
        let config = WrapperConfig {
            handlers_per_connection: 1,
            ..WrapperConfig::default()
        };
        assert_eq!(WrapperConfig::default().handlers_per_connection, 64);
        let server = WrapperServer::new(hub.clone(), config);
        let c = hub.register(None).unwrap();
        let (release_tx, release_rx) = oneshot::channel::<()>();
        let release = Arc::new(Mutex::new(Some(release_rx)));
        let started = Arc::new(Mutex::new(Vec::new()));
        let log = started.clone();
        server.on("step", move |_ctx, (n,): (u64,)| {
            lock(&log).push(n);
            let wait = if n == 1 { lock(&release).take() } else { None };
            async move {
                if let Some(rx) = wait {
                    let _ = rx.await;
                }
                Ok::<_, WrapperError>(n)
            }
        });
        for n in 1..=3 {
            server.receive(&c, &text(&format!(r#"{{"a":["step",{n}],"i":{n}}}"#)));
        }
        tokio::task::yield_now().await;
        assert_eq!(
            *lock(&started),
            [1],
            "one at a time: 2 and 3 wait their turn"
        );
        assert!(sent(&c).is_empty());
        release_tx.send(()).unwrap();
        let got = answers(&c, 3).await;
        assert_eq!(*lock(&started), [1, 2, 3], "in arrival order");
        let ids: Vec<u64> = got
            .iter()
            .map(|m| match m {
                WrapperMessage::Resolve { id, .. } => *id,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ids, [1, 2, 3]);
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

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../ws_wrapper_server.md")]
#[doc = include_str!("../../../types/infra/AnonChannel.md")]
#[doc = include_str!("../../../types/infra/ChannelOf.md")]
#[doc = include_str!("../../../types/infra/Ctx.md")]
#[doc = include_str!("../../../types/infra/Reply.md")]
#[doc = include_str!("../../../types/infra/WrapperConfig.md")]
#[doc = include_str!("../../../types/infra/WrapperServer.md")]
#[doc = include_str!("../../../types/infra/WrapperStats.md")]
pub struct RegistryExamples;
