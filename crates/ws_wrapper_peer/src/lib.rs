//! The async half both ws-wrapper ends share: one connection's session driven on tokio, with handlers run in arrival order, requests awaited with their timeouts, and anonymous channels as objects.
//!
//! `ws_wrapper_session` is the protocol with no I/O and no runtime; this
//! crate puts it on tokio for one connection, once, for both ends: a
//! [`Peer`] feeds its [`Session`] the connection's text messages and the
//! time, sends the frames it makes through its [`Host`] (the server's hub
//! outbox, the client's socket writer), turns the session's events into
//! handler runs and awaited answers, and hands out [`Channel`]s. The server
//! (`ws_wrapper_server`) and the client (`ws_wrapper_client`) are hosts: they
//! say how a frame is sent, which handler a name has, and what a handler's
//! context is. Nothing here opens a socket.
//!
//! - **Handlers** start in the order their messages arrived. Each is polled
//!   once where the message is read and answered at once if it can be; one
//!   that has to wait moves to a task of its own. At most
//!   [`PeerConfig::handlers_at_once`] run at once; the next wait their turn,
//!   in order. A panic rejects that request (`handler panicked`).
//! - **Requests** ([`Peer::send_request`], [`Asked`]) wait for their answer at most their
//!   timeout; the timeout, a cancel token, or dropping the future sends the
//!   protocol's cancel. An anonymous-channel answer is a [`Channel`].
//! - **Channels** carry events and requests both ways until either side
//!   aborts them or the connection ends; events with no handler queue (up
//!   to [`CHANNEL_QUEUE`]) for [`Channel::recv`].
//!
//! # Example
//!
//! ```
//! use std::sync::Mutex;
//! use ws_wrapper_peer::{
//!     Call, Channel, Handler, Handlers, Host, Peer, PeerConfig, PeerError, RequestError, handler,
//! };
//!
//! /// A handler's context: here only what every end has.
//! struct Ctx(Call<Ctx>);
//!
//! /// A host whose frames land in a vector.
//! struct Frames(Mutex<Vec<String>>, Handlers<Handler<Ctx, Channel<Ctx>>>);
//!
//! impl Host for Frames {
//!     type Ctx = Ctx;
//!     fn send(&self, text: String) -> Result<(), RequestError> {
//!         self.0.lock().unwrap().push(text);
//!         Ok(())
//!     }
//!     fn lookup(&self, c: Option<&str>, n: &str) -> Result<Handler<Ctx, Channel<Ctx>>, PeerError> {
//!         Handlers::lookup(&[&self.1], c, n)
//!     }
//!     fn ctx(&self, call: Call<Ctx>) -> Ctx {
//!         Ctx(call)
//!     }
//! }
//!
//! let mut handlers = Handlers::default();
//! handlers.add(None, "add", handler(|_ctx: Ctx, (a, b): (i64, i64)| async move {
//!     Ok::<_, PeerError>(a + b)
//! }));
//! let peer = Peer::new(Frames(Mutex::default(), handlers), PeerConfig::default());
//! peer.receive(r#"{"a":["add",2,3],"i":1}"#); // answered at once: the handler needs no waiting
//! peer.receive(r#"{"a":["sub",2,3],"i":2}"#);
//! assert_eq!(
//!     *peer.host().0.lock().unwrap(),
//!     [r#"{"i":1,"d":5}"#, r#"{"i":2,"e":{"message":"No event listener for 'sub'"},"_":1}"#]
//! );
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use futures_util::FutureExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use ws_wrapper_codec::DEFAULT_ABORT_MESSAGE;
use ws_wrapper_session::{Answer, Event, Failure, Session, SessionConfig, SessionError};

pub use ws_wrapper_session::{
    Args, BoxFuture, Handler, HandlerFuture, Handlers, IntoReply, PeerError, Reply, from_args,
    handler, to_args,
};

/// How many events without a handler an anonymous channel keeps for
/// [`Channel::recv`]; later ones are dropped until some are read.
pub const CHANNEL_QUEUE: usize = 1024;

/// Why a request, an event or a channel call failed.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestError {
    /// The peer rejected it.
    Rejected(PeerError),
    /// No answer within the timeout (the cancel went to the peer).
    Timeout,
    /// Cancelled here (a cancel token; the cancel went to the peer).
    Cancelled,
    /// Not connected when sent, or the connection ended before the answer.
    Disconnected,
    /// The anonymous channel is closed (aborted by either side, or its connection ended).
    ChannelClosed,
    /// The name is reserved on the main channel (`open`, `connect`, `message`, `error`, `close`, `disconnect`).
    Reserved,
    /// The arguments did not serialize, or the answer was not of the kind or type asked for.
    Invalid(String),
    /// The frame could not be queued: the server's outbox for this client is
    /// full (its slow-client policy), with the hub's words.
    Send(String),
    /// The client's offline queue is full (while reconnecting).
    QueueFull,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Rejected(e) => write!(f, "rejected: {e}"),
            RequestError::Timeout => f.write_str("request timed out"),
            RequestError::Cancelled => f.write_str("request cancelled"),
            RequestError::Disconnected => f.write_str("not connected"),
            RequestError::ChannelClosed => f.write_str("the channel is closed"),
            RequestError::Reserved => f.write_str("reserved event name on the main channel"),
            RequestError::Invalid(why) => f.write_str(why),
            RequestError::Send(why) => write!(f, "not sent: {why}"),
            RequestError::QueueFull => f.write_str("the offline queue is full"),
        }
    }
}

impl std::error::Error for RequestError {}

impl From<SessionError> for RequestError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Reserved => RequestError::Reserved,
            SessionError::ChannelClosed => RequestError::ChannelClosed,
            SessionError::Closed => RequestError::Disconnected,
        }
    }
}

/// How a peer's request ended, for counters ([`Host::count`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered with a value or an anonymous channel.
    Resolved,
    /// Answered with the handler's error.
    Rejected,
    /// Rejected because the handler panicked.
    Panicked,
    /// Rejected because no handler (or no named channel) has that name.
    Unknown,
    /// Cancelled by the peer (or the connection's end) before an answer.
    Cancelled,
}

/// What a driver supplies: how frames go out, which handler a name has, and
/// the context its handlers get.
pub trait Host: Send + Sync + Sized + 'static {
    /// The context a handler gets (built from a [`Call`]).
    type Ctx: Send + 'static;

    /// Sends one text frame, in order, without waiting.
    ///
    /// # Errors
    ///
    /// [`RequestError::Disconnected`] when the connection is gone,
    /// [`RequestError::Send`] when the frame could not be queued.
    fn send(&self, text: String) -> Result<(), RequestError>;

    /// The handler of `name` on `channel` (`None`: the main channel).
    ///
    /// # Errors
    ///
    /// The protocol's rejection ([`Handlers::lookup`]).
    fn lookup(
        &self,
        channel: Option<&str>,
        name: &str,
    ) -> Result<Handler<Self::Ctx, Channel<Self::Ctx>>, PeerError>;

    /// A handler's context for `call`.
    fn ctx(&self, call: Call<Self::Ctx>) -> Self::Ctx;

    /// A peer's request ended so. Default: nothing.
    fn count(&self, outcome: Outcome) {
        let _ = outcome;
    }
}

/// Settings of a peer; every field has a default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerConfig {
    /// How long a request waits for its answer unless it has its own
    /// timeout. Default: 2 minutes.
    pub request_timeout: Duration,
    /// How many handlers may run at once; the next wait, in arrival order. Default: 64.
    pub handlers_at_once: usize,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            request_timeout: Duration::from_secs(120),
            handlers_at_once: 64,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The session's clock: tokio's, so paused time drives timeouts in tests.
fn now() -> tokio::time::Instant {
    tokio::time::Instant::now()
}

type Waiting = oneshot::Sender<Result<Answer, Failure>>;

struct State<C> {
    session: Session,
    /// Our requests' answer slots.
    waiting: HashMap<u64, Waiting>,
    /// The peer's requests being handled.
    inflight: HashMap<u64, CancellationToken>,
    /// Open anonymous channels.
    channels: HashMap<u64, Channel<C>>,
}

#[derive(Default)]
struct Turns {
    running: usize,
    queue: VecDeque<BoxFuture<()>>,
}

/// One connection's protocol, on tokio; see the crate docs.
pub struct Peer<H: Host> {
    host: H,
    config: PeerConfig,
    state: Mutex<State<H::Ctx>>,
    turns: Mutex<Turns>,
    closed: CancellationToken,
    me: Weak<Peer<H>>,
}

/// A handler run that is not started yet.
enum Start<C> {
    Event(Handler<C, Channel<C>>, Vec<Value>, Option<Channel<C>>),
    Request(
        u64,
        Handler<C, Channel<C>>,
        Vec<Value>,
        CancellationToken,
        Option<Channel<C>>,
    ),
    Reject(u64, PeerError),
}

/// The handler runs one call of [`Peer::with`] asks for, in order; most
/// ask for one, which needs no allocation.
struct Starts<C> {
    first: Option<Start<C>>,
    more: Vec<Start<C>>,
}

impl<C> Default for Starts<C> {
    fn default() -> Self {
        Starts {
            first: None,
            more: Vec::new(),
        }
    }
}

impl<C> Starts<C> {
    fn push(&mut self, s: Start<C>) {
        if self.first.is_none() {
            self.first = Some(s);
        } else {
            self.more.push(s);
        }
    }
}

/// Where a request goes.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A named channel, or the main channel (`None`).
    Named(Option<&'a str>),
    /// An open anonymous channel.
    Anonymous(u64),
}

/// What a request came back with.
#[derive(Debug)]
pub enum Answered<C> {
    /// A value.
    Value(Value),
    /// An anonymous channel, open.
    Channel(Channel<C>),
}

impl<H: Host> Peer<H> {
    /// A peer for a new connection whose frames go through `host`.
    pub fn new(host: H, config: PeerConfig) -> Arc<Self> {
        Arc::new_cyclic(|me| Peer {
            host,
            config,
            state: Mutex::new(State {
                session: Session::new(SessionConfig {
                    request_timeout: config.request_timeout,
                }),
                waiting: HashMap::new(),
                inflight: HashMap::new(),
                channels: HashMap::new(),
            }),
            turns: Mutex::default(),
            closed: CancellationToken::new(),
            me: me.clone(),
        })
    }

    /// The host.
    pub fn host(&self) -> &H {
        &self.host
    }

    /// Whether the connection ended ([`Peer::close`]).
    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Completes when the connection ends.
    pub async fn closed(&self) {
        self.closed.cancelled().await;
    }

    fn arc(&self) -> Arc<Self> {
        self.me
            .upgrade()
            .expect("a peer is only used through its Arc")
    }

    /// Runs `f` on the state, sends the frames the session made (in order,
    /// under the lock, so the wire order is the call order), routes the
    /// session's events, then starts the handlers they asked for.
    fn with<R>(&self, f: impl FnOnce(&mut State<H::Ctx>) -> R) -> (R, Result<(), RequestError>) {
        let mut starts = Starts::default();
        let (r, sent) = {
            let mut st = lock(&self.state);
            let r = f(&mut st);
            let mut sent = Ok(());
            while let Some(text) = st.session.poll_transmit() {
                if let Err(e) = self.host.send(text) {
                    sent = sent.and(Err(e));
                }
            }
            while let Some(event) = st.session.poll_event() {
                self.route(&mut st, event, &mut starts);
            }
            (r, sent)
        };
        if let Some(first) = starts.first {
            self.start(first);
        }
        for s in starts.more {
            self.start(s);
        }
        (r, sent)
    }

    /// One session event: settled under the lock, or a handler to start.
    fn route(&self, st: &mut State<H::Ctx>, event: Event, starts: &mut Starts<H::Ctx>) {
        match event {
            Event::Event {
                channel,
                name,
                args,
            } => {
                if let Ok(h) = self.host.lookup(channel.as_deref(), &name) {
                    starts.push(Start::Event(h, args, None));
                }
            }
            Event::Request {
                id,
                channel,
                name,
                args,
            } => match self.host.lookup(channel.as_deref(), &name) {
                Ok(h) => {
                    let cancel = CancellationToken::new();
                    st.inflight.insert(id, cancel.clone());
                    starts.push(Start::Request(id, h, args, cancel, None));
                }
                Err(e) => starts.push(Start::Reject(id, e)),
            },
            Event::ChannelEvent { handle, name, args } => {
                if let Some(ch) = st.channels.get(&handle) {
                    match ch.handler(&name) {
                        Some(h) => starts.push(Start::Event(h, args, Some(ch.clone()))),
                        None => ch.queue(name, args),
                    }
                }
            }
            Event::ChannelRequest {
                id,
                handle,
                name,
                args,
            } => {
                let found = st
                    .channels
                    .get(&handle)
                    .map(|ch| (ch.handler(&name), ch.clone()));
                match found {
                    Some((Some(h), ch)) => {
                        let cancel = CancellationToken::new();
                        st.inflight.insert(id, cancel.clone());
                        starts.push(Start::Request(id, h, args, cancel, Some(ch)));
                    }
                    _ => starts.push(Start::Reject(
                        id,
                        PeerError::new(format!("No event listener for '{name}'")),
                    )),
                }
            }
            Event::Cancelled { id } => {
                if let Some(c) = st.inflight.remove(&id) {
                    c.cancel();
                }
            }
            Event::Answer { id, answer } => {
                if let Answer::Channel(handle) = answer {
                    let ch = Channel::new(self.arc(), handle);
                    st.channels.insert(handle, ch);
                }
                if let Some(tx) = st.waiting.remove(&id) {
                    let _ = tx.send(Ok(answer));
                }
            }
            Event::Failed { id, why } => {
                if let Some(tx) = st.waiting.remove(&id) {
                    let _ = tx.send(Err(why));
                }
            }
            Event::ChannelClosed { handle, .. } => {
                if let Some(ch) = st.channels.remove(&handle) {
                    ch.close_here();
                }
            }
        }
    }

    /// Starts a handler run now, or queues it behind the ones waiting.
    fn start(&self, s: Start<H::Ctx>) {
        let job = match s {
            Start::Reject(id, e) => {
                self.host.count(Outcome::Unknown);
                let _ = self.with(|st| st.session.reject(id, &e));
                return;
            }
            Start::Event(h, args, channel) => {
                let ctx = self.host.ctx(Call::new(self, None, None, channel));
                // The handler is called in its turn, inside the panic guard.
                let fut = AssertUnwindSafe(async move { h(ctx, args).await }).catch_unwind();
                Box::pin(async move {
                    let _ = fut.await;
                }) as BoxFuture<()>
            }
            Start::Request(id, h, args, cancel, channel) => {
                let ctx = self
                    .host
                    .ctx(Call::new(self, Some(id), Some(cancel.clone()), channel));
                let fut = AssertUnwindSafe(async move { h(ctx, args).await }).catch_unwind();
                let me = self.arc();
                Box::pin(async move {
                    let out = fut.await;
                    me.answer(id, &cancel, out);
                })
            }
        };
        {
            let mut turns = lock(&self.turns);
            if turns.running >= self.config.handlers_at_once.max(1) || !turns.queue.is_empty() {
                turns.queue.push_back(job);
                return;
            }
            turns.running += 1;
        }
        self.drive(job);
    }

    /// Polls `job` once; finished, the next queued one runs here too;
    /// waiting, it moves to a task that runs the next when it is done.
    fn drive(&self, mut job: BoxFuture<()>) {
        loop {
            if job.as_mut().now_or_never().is_none() {
                let me = self.arc();
                tokio::spawn(async move {
                    job.await;
                    if let Some(next) = me.next_turn() {
                        me.drive(next);
                    }
                });
                return;
            }
            match self.next_turn() {
                Some(next) => job = next,
                None => return,
            }
        }
    }

    fn next_turn(&self) -> Option<BoxFuture<()>> {
        let mut turns = lock(&self.turns);
        let next = turns.queue.pop_front();
        if next.is_none() {
            turns.running -= 1;
        }
        next
    }

    /// Answers the peer's request `id` with what its handler did.
    fn answer(
        &self,
        id: u64,
        cancel: &CancellationToken,
        out: std::thread::Result<Result<Reply<Channel<H::Ctx>>, PeerError>>,
    ) {
        let (outcome, _) = self.with(|st| {
            st.inflight.remove(&id);
            if cancel.is_cancelled() {
                return Outcome::Cancelled;
            }
            let (sent, outcome) = match out {
                Ok(Ok(Reply::Value(v))) => (st.session.reply(id, v), Outcome::Resolved),
                Ok(Ok(Reply::Channel(ch))) if ch.handle() != id => {
                    let e = PeerError::new("the reply is not this request's channel");
                    (st.session.reject(id, &e), Outcome::Rejected)
                }
                Ok(Ok(Reply::Channel(ch))) => {
                    let sent = st.session.reply_channel(id);
                    if sent {
                        ch.0.ready.store(true, Ordering::SeqCst);
                        st.channels.insert(id, ch);
                    } else {
                        ch.close_here(); // never handed to the peer
                    }
                    (sent, Outcome::Resolved)
                }
                Ok(Err(e)) => (st.session.reject(id, &e), Outcome::Rejected),
                Err(_) => (
                    st.session.reject(id, &PeerError::new("handler panicked")),
                    Outcome::Panicked,
                ),
            };
            if sent { outcome } else { Outcome::Cancelled }
        });
        self.host.count(outcome);
    }

    /// One text message from the peer.
    pub fn receive(&self, text: &str) {
        let at = now().into_std();
        let _ = self.with(|st| st.session.handle_incoming(text, at));
    }

    /// The connection ended: our requests fail as disconnected, the peer's
    /// handlers are cancelled, channels close. Idempotent.
    pub fn close(&self) {
        self.closed.cancel();
        let _ = self.with(|st| st.session.close());
    }

    /// Sends event `name` with `args` on `channel` (`None`: the main channel).
    ///
    /// # Errors
    ///
    /// [`RequestError::Reserved`], [`RequestError::Disconnected`], or the host's send error.
    pub fn emit(
        &self,
        channel: Option<&str>,
        name: &str,
        args: Vec<Value>,
    ) -> Result<(), RequestError> {
        let (r, sent) = self.with(|st| st.session.emit(channel, name, args));
        r?;
        sent
    }

    /// Sends request `name` with `args` to `target` now; [`Asked`] waits
    /// for its answer, at most `timeout` (`None`:
    /// [`PeerConfig::request_timeout`]) from now.
    ///
    /// # Errors
    ///
    /// [`RequestError::Reserved`], [`RequestError::ChannelClosed`] (an
    /// anonymous channel that is not open), [`RequestError::Disconnected`],
    /// the host's send error.
    pub fn send_request(
        &self,
        target: Target<'_>,
        name: &str,
        args: Vec<Value>,
        timeout: Option<Duration>,
    ) -> Result<Asked<H>, RequestError> {
        let timeout = timeout.unwrap_or(self.config.request_timeout);
        let start = now();
        let (tx, rx) = oneshot::channel();
        let (id, sent) = self.with(|st| {
            let at = start.into_std();
            let id = match target {
                Target::Named(c) => st.session.request(c, name, args, at, Some(timeout))?,
                Target::Anonymous(h) => {
                    st.session
                        .channel_request(h, name, args, at, Some(timeout))?
                }
            };
            st.waiting.insert(id, tx);
            Ok::<_, SessionError>(id)
        });
        let asked = Asked {
            peer: self.arc(),
            id: id?,
            rx,
            deadline: start.checked_add(timeout),
            armed: true,
        };
        sent?;
        Ok(asked)
    }

    /// [`Peer::send_request`], then [`Asked::value`].
    ///
    /// # Errors
    ///
    /// As those.
    pub async fn ask_value<R: DeserializeOwned>(
        &self,
        target: Target<'_>,
        name: &str,
        args: Vec<Value>,
        timeout: Option<Duration>,
        cancel: Option<&CancellationToken>,
    ) -> Result<R, RequestError> {
        self.send_request(target, name, args, timeout)?
            .value(cancel)
            .await
    }

    /// [`Peer::send_request`], then [`Asked::channel`].
    ///
    /// # Errors
    ///
    /// As those.
    pub async fn ask_channel(
        &self,
        target: Target<'_>,
        name: &str,
        args: Vec<Value>,
        timeout: Option<Duration>,
        cancel: Option<&CancellationToken>,
    ) -> Result<Channel<H::Ctx>, RequestError> {
        self.send_request(target, name, args, timeout)?
            .channel(cancel)
            .await
    }

    fn channel_emit(&self, handle: u64, name: &str, args: Vec<Value>) -> Result<(), RequestError> {
        let (r, sent) = self.with(|st| st.session.channel_emit(handle, name, args));
        r?;
        sent
    }

    fn abort(&self, handle: u64, reason: &str) {
        let _ = self.with(|st| {
            st.channels.remove(&handle);
            st.session.abort(handle, reason)
        });
    }
}

impl<H: Host> fmt::Debug for Peer<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (waiting, handling) = lock(&self.state).session.in_flight();
        f.debug_struct("Peer")
            .field("waiting", &waiting)
            .field("handling", &handling)
            .field("closed", &self.is_closed())
            .finish()
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A request sent and waiting for its answer ([`Peer::send_request`]).
/// Dropping it before the answer sends the protocol's cancel to the peer.
pub struct Asked<H: Host> {
    peer: Arc<Peer<H>>,
    id: u64,
    rx: oneshot::Receiver<Result<Answer, Failure>>,
    deadline: Option<tokio::time::Instant>,
    armed: bool,
}

impl<H: Host> Asked<H> {
    /// The request's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Waits for the answer until the request's deadline; `cancel`
    /// cancelling first sends the protocol's cancel ("Request aborted").
    ///
    /// # Errors
    ///
    /// [`RequestError::Rejected`] with the peer's error, [`RequestError::Timeout`]
    /// (the cancel went out: "Request timed out"), [`RequestError::Cancelled`],
    /// [`RequestError::Disconnected`], [`RequestError::ChannelClosed`] (made on
    /// an anonymous channel that closed).
    pub async fn answer(
        mut self,
        cancel: Option<&CancellationToken>,
    ) -> Result<Answered<H::Ctx>, RequestError> {
        let never = CancellationToken::new();
        let cancel = cancel.unwrap_or(&never);
        let out = tokio::select! {
            out = &mut self.rx => out,
            () = sleep_until(self.deadline) => {
                // The session decides: past the deadline the request fails, the cancel goes out.
                let _ = self.peer.with(|st| st.session.handle_timeout(now().into_std()));
                (&mut self.rx).await
            }
            () = cancel.cancelled() => {
                self.give_up();
                return Err(RequestError::Cancelled);
            }
        };
        self.armed = false;
        match out {
            Ok(Ok(Answer::Value(v))) => Ok(Answered::Value(v)),
            Ok(Ok(Answer::Error(e))) => Err(RequestError::Rejected(e)),
            Ok(Ok(Answer::Channel(h))) => {
                let ch = lock(&self.peer.state).channels.get(&h).cloned();
                ch.map(Answered::Channel).ok_or(RequestError::ChannelClosed)
            }
            Ok(Err(Failure::TimedOut)) => Err(RequestError::Timeout),
            Ok(Err(Failure::ChannelClosed)) => Err(RequestError::ChannelClosed),
            Ok(Err(Failure::Disconnected)) | Err(_) => Err(RequestError::Disconnected),
        }
    }

    /// [`Asked::answer`] as a value of type `R`; an anonymous channel as the
    /// answer is [`RequestError::Invalid`] (and is aborted).
    ///
    /// # Errors
    ///
    /// As [`Asked::answer`], and [`RequestError::Invalid`] when the answer does not fit `R`.
    pub async fn value<R: DeserializeOwned>(
        self,
        cancel: Option<&CancellationToken>,
    ) -> Result<R, RequestError> {
        match self.answer(cancel).await? {
            Answered::Value(v) => serde_json::from_value(v)
                .map_err(|e| RequestError::Invalid(format!("unexpected answer: {e}"))),
            Answered::Channel(ch) => {
                ch.abort(DEFAULT_ABORT_MESSAGE);
                Err(RequestError::Invalid(
                    "answered with an anonymous channel: ask for a channel".into(),
                ))
            }
        }
    }

    /// [`Asked::answer`] as an anonymous channel; a value is [`RequestError::Invalid`].
    ///
    /// # Errors
    ///
    /// As [`Asked::answer`], and [`RequestError::Invalid`] for a value.
    pub async fn channel(
        self,
        cancel: Option<&CancellationToken>,
    ) -> Result<Channel<H::Ctx>, RequestError> {
        match self.answer(cancel).await? {
            Answered::Channel(ch) => Ok(ch),
            Answered::Value(v) => Err(RequestError::Invalid(format!(
                "expected an anonymous channel, the answer is {v}"
            ))),
        }
    }

    fn give_up(&mut self) {
        if std::mem::replace(&mut self.armed, false) {
            let id = self.id;
            let _ = self.peer.with(|st| {
                st.waiting.remove(&id);
                st.session.cancel(id, DEFAULT_ABORT_MESSAGE)
            });
        }
    }
}

impl<H: Host> Drop for Asked<H> {
    fn drop(&mut self) {
        self.give_up();
    }
}

impl<H: Host> fmt::Debug for Asked<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Asked")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The side of a [`Peer`] a channel needs, without the host's type.
trait Link: Send + Sync {
    fn emit_on(&self, handle: u64, name: &str, args: Vec<Value>) -> Result<(), RequestError>;
    fn ask_on(
        &self,
        handle: u64,
        name: &str,
        args: Vec<Value>,
        timeout: Option<Duration>,
    ) -> BoxFuture<Result<Value, RequestError>>;
    fn abort_on(&self, handle: u64, reason: &str);
    fn gone(&self) -> bool;
}

impl<H: Host> Link for Peer<H> {
    fn emit_on(&self, handle: u64, name: &str, args: Vec<Value>) -> Result<(), RequestError> {
        self.channel_emit(handle, name, args)
    }

    fn ask_on(
        &self,
        handle: u64,
        name: &str,
        args: Vec<Value>,
        timeout: Option<Duration>,
    ) -> BoxFuture<Result<Value, RequestError>> {
        let me = self.arc();
        let name = name.to_string();
        Box::pin(async move {
            me.ask_value(Target::Anonymous(handle), &name, args, timeout, None)
                .await
        })
    }

    fn abort_on(&self, handle: u64, reason: &str) {
        self.abort(handle, reason);
    }

    fn gone(&self) -> bool {
        self.is_closed()
    }
}

/// What a handler run knows, whatever the end: its request (`None` for an
/// event), the request's cancellation, its anonymous channel. Drivers wrap
/// it in their own context.
pub struct Call<C> {
    link: Arc<dyn Link>,
    request: Option<u64>,
    cancel: Option<CancellationToken>,
    channel: Mutex<Option<Channel<C>>>,
}

impl<C: Send + 'static> Call<C> {
    fn new<H: Host<Ctx = C>>(
        peer: &Peer<H>,
        request: Option<u64>,
        cancel: Option<CancellationToken>,
        channel: Option<Channel<C>>,
    ) -> Self {
        Call {
            link: peer.arc(),
            request,
            cancel,
            channel: Mutex::new(channel),
        }
    }

    /// The id of the request being handled; `None` for an event.
    pub fn request_id(&self) -> Option<u64> {
        self.request
    }

    /// Whether the peer cancelled this request, or its connection ended (never for events).
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

    /// Inside a channel's handler, that channel. In a request handler
    /// (outside a channel), a new anonymous channel for this request, made
    /// on first use: answer [`Reply::Channel`] with it. `None` for an event
    /// outside a channel (an event has no answer to carry one).
    pub fn channel(&self) -> Option<Channel<C>> {
        let mut slot = lock(&self.channel);
        if slot.is_none() {
            let handle = self.request?;
            *slot = Some(Channel::with_link(self.link.clone(), handle));
        }
        slot.clone()
    }

    /// The channel of a channel handler, without making one.
    pub fn current_channel(&self) -> Option<Channel<C>> {
        lock(&self.channel).clone()
    }
}

impl<C> fmt::Debug for Call<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("request", &self.request)
            .field(
                "cancelled",
                &self
                    .cancel
                    .as_ref()
                    .is_some_and(CancellationToken::is_cancelled),
            )
            .finish_non_exhaustive()
    }
}

/// An event on an anonymous channel: its name and arguments.
type ChannelEvent = (String, Vec<Value>);

/// An anonymous channel: events and requests both ways until either side
/// aborts it or its connection ends. `C` is the context of its handlers.
pub struct Channel<C>(Arc<ChannelShared<C>>);

impl<C> Clone for Channel<C> {
    fn clone(&self) -> Self {
        Channel(self.0.clone())
    }
}

struct ChannelShared<C> {
    link: Arc<dyn Link>,
    handle: u64,
    /// Open on the wire: handed to the peer, or received from it.
    ready: AtomicBool,
    closed: CancellationToken,
    handlers: Mutex<HashMap<String, Handler<C, Channel<C>>>>,
    queue: Mutex<Option<mpsc::Sender<ChannelEvent>>>,
    events: tokio::sync::Mutex<mpsc::Receiver<ChannelEvent>>,
}

impl<C: Send + 'static> Channel<C> {
    fn new<H: Host<Ctx = C>>(peer: Arc<Peer<H>>, handle: u64) -> Self {
        let ch = Channel::with_link(peer, handle);
        ch.0.ready.store(true, Ordering::SeqCst);
        ch
    }

    fn with_link(link: Arc<dyn Link>, handle: u64) -> Self {
        let (tx, rx) = mpsc::channel(CHANNEL_QUEUE);
        Channel(Arc::new(ChannelShared {
            link,
            handle,
            ready: AtomicBool::new(false),
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

    fn handler(&self, name: &str) -> Option<Handler<C, Channel<C>>> {
        lock(&self.0.handlers).get(name).cloned()
    }

    fn queue(&self, name: String, args: Vec<Value>) {
        if let Some(tx) = lock(&self.0.queue).as_ref() {
            let _ = tx.try_send((name, args));
        }
    }

    /// Closed from the other side or by the connection's end: nothing is sent.
    fn close_here(&self) {
        self.0.closed.cancel();
        lock(&self.0.queue).take();
    }

    /// Handles event or request `name` from the peer on this channel.
    pub fn on<A: Args, Fut: HandlerFuture<Channel<C>>>(
        &self,
        name: &str,
        f: impl Fn(C, A) -> Fut + Send + Sync + 'static,
    ) -> &Self {
        lock(&self.0.handlers).insert(name.to_string(), handler(f));
        self
    }

    /// The next event without a handler, as (name, args); `None` once the
    /// channel is closed and every queued event was read.
    pub async fn recv(&self) -> Option<(String, Vec<Value>)> {
        self.0.events.lock().await.recv().await
    }

    /// Sends event `name` with `args` (a tuple, a `Vec` of values, `()` for none) on the channel.
    ///
    /// # Errors
    ///
    /// [`RequestError::ChannelClosed`] once it is closed or before it was
    /// handed to the peer; [`RequestError::Invalid`] for arguments that do not serialize.
    pub fn emit(&self, name: &str, args: impl Serialize) -> Result<(), RequestError> {
        if self.is_closed() || !self.0.ready.load(Ordering::SeqCst) {
            return Err(RequestError::ChannelClosed);
        }
        let args = to_args(args).map_err(RequestError::Invalid)?;
        self.0.link.emit_on(self.0.handle, name, args)
    }

    /// Request `name` on the channel: `.await` it for the answer as `R`
    /// (optionally `.timeout(d)` first).
    pub fn request<R>(&self, name: &str, args: impl Serialize) -> ChannelRequest<C, R> {
        ChannelRequest {
            channel: self.clone(),
            name: name.to_string(),
            args: to_args(args).map_err(RequestError::Invalid),
            timeout: None,
            answer: std::marker::PhantomData,
        }
    }

    /// Aborts the channel: `{h, x: {message: reason}, _: 1}` to the peer, closed here.
    pub fn abort(&self, reason: &str) {
        if self.is_closed() {
            return;
        }
        self.close_here();
        if self.0.ready.load(Ordering::SeqCst) {
            self.0.link.abort_on(self.0.handle, reason);
        }
    }

    /// Whether it was aborted (either side) or its connection ended.
    pub fn is_closed(&self) -> bool {
        self.0.closed.is_cancelled() || self.0.link.gone()
    }

    /// Completes when the channel is aborted (either side) or its connection ends.
    pub async fn closed(&self) {
        self.0.closed.cancelled().await;
    }
}

/// A request on an anonymous channel, sent when awaited; see [`Channel::request`].
#[must_use = "a request is sent when awaited"]
pub struct ChannelRequest<C, R> {
    channel: Channel<C>,
    name: String,
    args: Result<Vec<Value>, RequestError>,
    timeout: Option<Duration>,
    answer: std::marker::PhantomData<fn() -> R>,
}

impl<C, R> ChannelRequest<C, R> {
    /// Waits at most `timeout` for the answer instead of the default.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

impl<C, R> fmt::Debug for ChannelRequest<C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelRequest")
            .field("handle", &self.channel.0.handle)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<C: Send + 'static, R: DeserializeOwned + 'static> std::future::IntoFuture
    for ChannelRequest<C, R>
{
    type Output = Result<R, RequestError>;
    type IntoFuture = BoxFuture<Result<R, RequestError>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let ch = self.channel;
            let args = self.args?;
            if ch.is_closed() || !ch.0.ready.load(Ordering::SeqCst) {
                return Err(RequestError::ChannelClosed);
            }
            let v =
                ch.0.link
                    .ask_on(ch.0.handle, &self.name, args, self.timeout)
                    .await?;
            serde_json::from_value(v)
                .map_err(|e| RequestError::Invalid(format!("unexpected answer: {e}")))
        })
    }
}

impl<C> fmt::Debug for Channel<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("handle", &self.0.handle)
            .field("closed", &self.0.closed.is_cancelled())
            .finish()
    }
}

#[cfg(test)]
mod tests;

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../ws_wrapper_peer.md")]
#[doc = include_str!("../../../types/infra/Peer.md")]
#[doc = include_str!("../../../types/infra/PeerConfig.md")]
#[doc = include_str!("../../../types/infra/RequestError.md")]
pub struct RegistryExamples;
