//! One ws-wrapper session as a state machine with no I/O: text messages and time in, frames to send, events for the application and the next timer deadline out.
//!
//! ws-wrapper is symmetric: either end may emit, request, answer (with a
//! value, an error or an anonymous channel), stream on an anonymous channel,
//! cancel and time out. So there is no `Role` here: the client
//! (`ws_wrapper_client`) and the server (`ws_wrapper_server`) drive the same
//! [`Session`], one per WebSocket connection, and differ only in what they do
//! around it (connecting and reconnecting, a hub of connections). A rule of
//! the protocol is written, and tested, once, here.
//!
//! The model is tungstenite's `WebSocketContext` and quinn-proto: the session
//! owns the state, never a socket or a clock.
//!
//! - **In**: [`Session::handle_incoming`] (one text message, and the time it
//!   arrived), [`Session::handle_timeout`] (the time now, at or after
//!   [`Session::poll_timeout`]), [`Session::close`] (the connection ended), and
//!   the application's calls: [`Session::emit`], [`Session::request`],
//!   [`Session::channel_emit`], [`Session::channel_request`],
//!   [`Session::reply`], [`Session::reply_channel`], [`Session::reject`],
//!   [`Session::cancel`], [`Session::abort`].
//! - **Out**: [`Session::poll_transmit`] (the next text frame to send, in the
//!   order the calls made them), [`Session::poll_event`] (the next [`Event`]
//!   for the application), [`Session::poll_timeout`] (when to call
//!   [`Session::handle_timeout`]).
//!
//! The session owns the request ids (per connection and direction, from 1),
//! the table of requests sent and waiting (each with its deadline: a timeout
//! sends the protocol's cancel `{i, x, _: 1}` with "Request timed out"), the
//! peer's requests not yet answered (a cancelled one is never answered), the
//! open anonymous channels (a message on an unknown handle is answered with
//! an abort; closing a channel fails the requests made on it) and the end of
//! the connection (requests sent fail, the peer's are cancelled, channels
//! close). Handlers are the application's: the session says which request
//! came ([`Event::Request`]), and [`Handlers`] holds typed handlers by channel
//! and name, with the protocol's rejections for a missing one.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, Instant};
//! use serde_json::json;
//! use ws_wrapper_session::{Answer, Event, Failure, Session, SessionConfig};
//!
//! let now = Instant::now();
//! let mut client = Session::new(SessionConfig::default());
//! let mut server = Session::new(SessionConfig::default());
//!
//! // The client asks; the frame goes to the server.
//! let id = client.request(None, "add", vec![json!(2), json!(3)], now, None).unwrap();
//! let frame = client.poll_transmit().unwrap();
//! assert_eq!(frame, r#"{"a":["add",2,3],"i":1}"#);
//! server.handle_incoming(&frame, now);
//! let Some(Event::Request { id: asked, name, args, .. }) = server.poll_event() else { panic!() };
//! assert_eq!((asked, name.as_str(), args.len()), (1, "add", 2));
//! server.reply(asked, json!(5));
//! client.handle_incoming(&server.poll_transmit().unwrap(), now);
//! assert_eq!(client.poll_event(), Some(Event::Answer { id, answer: Answer::Value(json!(5)) }));
//!
//! // A request nobody answers times out, and the peer is told.
//! let slow = client.request(None, "slow", vec![], now, Some(Duration::from_secs(1))).unwrap();
//! client.poll_transmit();
//! assert_eq!(client.poll_timeout(), Some(now + Duration::from_secs(1)));
//! client.handle_timeout(now + Duration::from_secs(1));
//! assert_eq!(client.poll_transmit().unwrap(), r#"{"i":2,"x":{"message":"Request timed out"},"_":1}"#);
//! assert_eq!(client.poll_event(), Some(Event::Failed { id: slow, why: Failure::TimedOut }));
//! ```
//!
//! # Errors
//!
//! The application's calls fail with [`SessionError`]: a reserved name on the
//! main channel, an anonymous channel that is closed, a session whose
//! connection ended. What the peer sends is never an error: what the protocol
//! ignores is ignored, and what it answers (an abort for an unknown handle) is
//! answered.

mod handlers;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use serde_json::Value;
use ws_wrapper_codec::{
    DEFAULT_ABORT_MESSAGE, Decoded, WrapperMessage, decode, encode, error_value, is_reserved,
};

pub use handlers::{
    Args, BoxFuture, Handler, HandlerFuture, Handlers, IntoReply, PeerError, Reply, from_args,
    handler, to_args,
};

/// The reason sent with the cancel of a request that timed out.
pub const TIMEOUT_MESSAGE: &str = "Request timed out";

/// Settings of a session; every field has a default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// How long a request waits for its answer unless the call gives its
    /// own timeout. Default: 2 minutes (the JavaScript library's Node server).
    pub request_timeout: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            request_timeout: Duration::from_secs(120),
        }
    }
}

/// What the session tells the application, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The peer's event on the main channel (`channel: None`) or a named one.
    Event {
        /// The named channel, `None` for the main channel.
        channel: Option<String>,
        /// The event name.
        name: String,
        /// Its arguments.
        args: Vec<Value>,
    },
    /// The peer's request: answer it once with [`Session::reply`] (unless
    /// [`Event::Cancelled`] comes first; then the reply is dropped).
    Request {
        /// The peer's request id, and the handle of a channel answered with.
        id: u64,
        /// The named channel, `None` for the main channel.
        channel: Option<String>,
        /// The event name.
        name: String,
        /// Its arguments.
        args: Vec<Value>,
    },
    /// The peer's event on open anonymous channel `handle`.
    ChannelEvent {
        /// The channel.
        handle: u64,
        /// The event name.
        name: String,
        /// Its arguments.
        args: Vec<Value>,
    },
    /// The peer's request on open anonymous channel `handle`; answer it with [`Session::reply`].
    ChannelRequest {
        /// The peer's request id.
        id: u64,
        /// The channel.
        handle: u64,
        /// The event name.
        name: String,
        /// Its arguments.
        args: Vec<Value>,
    },
    /// The peer cancelled its request `id`, or the connection ended while it
    /// was being handled: stop the handler; no answer will be sent.
    Cancelled {
        /// The peer's request id.
        id: u64,
    },
    /// Our request `id` was answered.
    Answer {
        /// Our request id.
        id: u64,
        /// The answer.
        answer: Answer,
    },
    /// Our request `id` ended without an answer.
    Failed {
        /// Our request id.
        id: u64,
        /// Why.
        why: Failure,
    },
    /// Anonymous channel `handle` closed: the peer aborted it (`reason` as
    /// sent) or the connection ended (`reason` null). Not told when this side
    /// aborts it ([`Session::abort`]).
    ChannelClosed {
        /// The channel.
        handle: u64,
        /// The peer's reason, `null` when the connection ended.
        reason: Value,
    },
}

/// How the peer answered one of our requests.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// A value (`{"i","d"}`; `null` when the peer sent no `d`).
    Value(Value),
    /// A rejection (`{"i","e"}`).
    Error(PeerError),
    /// An anonymous channel, now open, whose handle is the request id (`{"i","h":1}`).
    Channel(u64),
}

/// Why one of our requests has no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Its deadline passed; the cancel went to the peer.
    TimedOut,
    /// It was made on an anonymous channel that closed.
    ChannelClosed,
    /// The connection ended.
    Disconnected,
}

/// Why an application call on a [`Session`] did nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError {
    /// A reserved name (`open`, `connect`, `message`, `error`, `close`,
    /// `disconnect`) on the main channel.
    Reserved,
    /// The anonymous channel is not open (aborted by either side, or never was).
    ChannelClosed,
    /// The connection ended ([`Session::close`]).
    Closed,
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SessionError::Reserved => "reserved event name on the main channel",
            SessionError::ChannelClosed => "the channel is closed",
            SessionError::Closed => "the connection ended",
        })
    }
}

impl std::error::Error for SessionError {}

/// One of our requests, waiting.
#[derive(Debug, Clone, Copy)]
struct Pending {
    deadline: Instant,
    /// The anonymous channel it was made on.
    handle: Option<u64>,
}

/// The protocol state of one connection; see the crate docs.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    last_id: u64,
    /// Our requests waiting for answers.
    pending: HashMap<u64, Pending>,
    /// Their deadlines, earliest first.
    deadlines: BTreeSet<(Instant, u64)>,
    /// The peer's requests not answered yet.
    inflight: HashSet<u64>,
    /// Open anonymous channels.
    channels: HashSet<u64>,
    transmit: VecDeque<String>,
    events: VecDeque<Event>,
    closed: bool,
}

impl Session {
    /// A session for a new connection.
    pub fn new(config: SessionConfig) -> Self {
        Session {
            config,
            last_id: 0,
            pending: HashMap::new(),
            deadlines: BTreeSet::new(),
            inflight: HashSet::new(),
            channels: HashSet::new(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
            closed: false,
        }
    }

    /// The next text frame to send, in order; `None` when all were taken.
    pub fn poll_transmit(&mut self) -> Option<String> {
        self.transmit.pop_front()
    }

    /// The next event for the application, in order.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Session::handle_timeout`] is due: the earliest deadline of a
    /// request waiting; `None` when none waits.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(t, _)| t)
    }

    /// Whether the connection ended ([`Session::close`]).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether our request `id` still waits for its answer.
    pub fn is_pending(&self, id: u64) -> bool {
        self.pending.contains_key(&id)
    }

    /// Whether anonymous channel `handle` is open.
    pub fn is_channel_open(&self, handle: u64) -> bool {
        self.channels.contains(&handle)
    }

    /// How many of our requests wait, and how many of the peer's are being handled.
    pub fn in_flight(&self) -> (usize, usize) {
        (self.pending.len(), self.inflight.len())
    }

    fn send(&mut self, msg: &WrapperMessage) {
        self.transmit.push_back(encode(msg));
    }

    fn open(&self) -> Result<(), SessionError> {
        if self.closed {
            Err(SessionError::Closed)
        } else {
            Ok(())
        }
    }

    /// Sends event `name` on `channel` (`None`: the main channel).
    ///
    /// # Errors
    ///
    /// [`SessionError::Reserved`] for a reserved name on the main channel,
    /// [`SessionError::Closed`] once the connection ended.
    pub fn emit(
        &mut self,
        channel: Option<&str>,
        name: &str,
        args: Vec<Value>,
    ) -> Result<(), SessionError> {
        self.open()?;
        if channel.is_none() && is_reserved(name) {
            return Err(SessionError::Reserved);
        }
        self.send(&WrapperMessage::Event {
            channel: channel.map(str::to_string),
            name: name.to_string(),
            args,
        });
        Ok(())
    }

    /// Sends request `name` on `channel` (`None`: the main channel): its id,
    /// whose answer (or failure) comes as an event. It waits `timeout`, or
    /// [`SessionConfig::request_timeout`], from `now`.
    ///
    /// # Errors
    ///
    /// As [`Session::emit`].
    pub fn request(
        &mut self,
        channel: Option<&str>,
        name: &str,
        args: Vec<Value>,
        now: Instant,
        timeout: Option<Duration>,
    ) -> Result<u64, SessionError> {
        self.open()?;
        if channel.is_none() && is_reserved(name) {
            return Err(SessionError::Reserved);
        }
        let id = self.track(None, now, timeout);
        self.send(&WrapperMessage::Request {
            id,
            channel: channel.map(str::to_string),
            name: name.to_string(),
            args,
        });
        Ok(id)
    }

    /// Sends event `name` on open anonymous channel `handle`.
    ///
    /// # Errors
    ///
    /// [`SessionError::ChannelClosed`] when it is not open, [`SessionError::Closed`].
    pub fn channel_emit(
        &mut self,
        handle: u64,
        name: &str,
        args: Vec<Value>,
    ) -> Result<(), SessionError> {
        self.open()?;
        if !self.channels.contains(&handle) {
            return Err(SessionError::ChannelClosed);
        }
        self.send(&WrapperMessage::ChannelEvent {
            handle,
            name: name.to_string(),
            args,
        });
        Ok(())
    }

    /// Sends request `name` on open anonymous channel `handle`; as
    /// [`Session::request`], and it fails ([`Failure::ChannelClosed`]) if the
    /// channel closes first.
    ///
    /// # Errors
    ///
    /// As [`Session::channel_emit`].
    pub fn channel_request(
        &mut self,
        handle: u64,
        name: &str,
        args: Vec<Value>,
        now: Instant,
        timeout: Option<Duration>,
    ) -> Result<u64, SessionError> {
        self.open()?;
        if !self.channels.contains(&handle) {
            return Err(SessionError::ChannelClosed);
        }
        let id = self.track(Some(handle), now, timeout);
        self.send(&WrapperMessage::ChannelRequest {
            id,
            handle,
            name: name.to_string(),
            args,
        });
        Ok(id)
    }

    fn track(&mut self, handle: Option<u64>, now: Instant, timeout: Option<Duration>) -> u64 {
        self.last_id += 1;
        let id = self.last_id;
        let timeout = timeout.unwrap_or(self.config.request_timeout);
        let deadline = now
            .checked_add(timeout)
            .unwrap_or(now + Duration::from_secs(86_400 * 365));
        self.pending.insert(id, Pending { deadline, handle });
        self.deadlines.insert((deadline, id));
        id
    }

    fn untrack(&mut self, id: u64) -> Option<Pending> {
        let p = self.pending.remove(&id)?;
        self.deadlines.remove(&(p.deadline, id));
        Some(p)
    }

    /// Gives up on our request `id`: the cancel `{i, x: {message: reason}, _: 1}`
    /// goes to the peer, and a late answer is ignored. No event follows (the
    /// application asked). `false` when it was not waiting.
    pub fn cancel(&mut self, id: u64, reason: &str) -> bool {
        if self.closed || self.untrack(id).is_none() {
            return false;
        }
        self.send(&WrapperMessage::Cancel {
            id,
            reason: error_value(reason),
            error_object: true,
        });
        true
    }

    /// Answers the peer's request `id` with a value (`{"i","d"}`). `false`,
    /// and nothing is sent, when the request was cancelled, already answered,
    /// or never came.
    pub fn reply(&mut self, id: u64, data: Value) -> bool {
        if self.closed || !self.inflight.remove(&id) {
            return false;
        }
        self.send(&WrapperMessage::Resolve { id, data });
        true
    }

    /// Answers the peer's request `id` with an anonymous channel, open from
    /// now on, whose handle is `id` (`{"i","h":1}`). `false` as
    /// [`Session::reply`]; also when a channel with that handle is open (the
    /// peer's, from our request of the same number: one handle space per
    /// connection), and then the request is rejected instead.
    pub fn reply_channel(&mut self, id: u64) -> bool {
        if self.closed || !self.inflight.remove(&id) {
            return false;
        }
        if !self.channels.insert(id) {
            let e = PeerError::new(format!("anonymous channel {id} is already open"));
            self.send(&reject(id, &e));
            return false;
        }
        self.send(&WrapperMessage::ChannelCreated { id });
        true
    }

    /// Rejects the peer's request `id` with `error` (`{"i","e"}`, with `_: 1`
    /// when its value is an object, an Error); as [`Session::reply`].
    pub fn reject(&mut self, id: u64, error: &PeerError) -> bool {
        if self.closed || !self.inflight.remove(&id) {
            return false;
        }
        self.send(&reject(id, error));
        true
    }

    /// Closes anonymous channel `handle` from this side: `{h, x: {message:
    /// reason}, _: 1}` to the peer; requests made on it fail
    /// ([`Failure::ChannelClosed`]). `false` when it was not open.
    pub fn abort(&mut self, handle: u64, reason: &str) -> bool {
        if self.closed || !self.channels.remove(&handle) {
            return false;
        }
        self.send(&abort(handle, reason));
        self.fail_channel_requests(handle);
        true
    }

    fn fail_channel_requests(&mut self, handle: u64) {
        let mut on: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.handle == Some(handle))
            .map(|(&id, _)| id)
            .collect();
        on.sort_unstable();
        for id in on {
            self.untrack(id);
            self.events.push_back(Event::Failed {
                id,
                why: Failure::ChannelClosed,
            });
        }
    }

    /// Fails every request whose deadline is at or before `now`, sending each
    /// its cancel with "Request timed out" ([`Failure::TimedOut`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(deadline, id)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.untrack(id);
            self.send(&WrapperMessage::Cancel {
                id,
                reason: error_value(TIMEOUT_MESSAGE),
                error_object: true,
            });
            self.events.push_back(Event::Failed {
                id,
                why: Failure::TimedOut,
            });
        }
    }

    /// The connection ended: our requests fail ([`Failure::Disconnected`]),
    /// the peer's are cancelled, channels close, frames not taken yet are
    /// dropped; every later call does nothing.
    pub fn close(&mut self) {
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        self.transmit.clear();
        let mut ids: Vec<u64> = self.pending.keys().copied().collect();
        ids.sort_unstable();
        self.pending.clear();
        self.deadlines.clear();
        for id in ids {
            self.events.push_back(Event::Failed {
                id,
                why: Failure::Disconnected,
            });
        }
        let mut theirs: Vec<u64> = self.inflight.drain().collect();
        theirs.sort_unstable();
        for id in theirs {
            self.events.push_back(Event::Cancelled { id });
        }
        let mut channels: Vec<u64> = self.channels.drain().collect();
        channels.sort_unstable();
        for handle in channels {
            self.events.push_back(Event::ChannelClosed {
                handle,
                reason: Value::Null,
            });
        }
    }

    /// One text message from the peer, received at `now`. What the protocol
    /// ignores (not JSON, `"ws-wrapper": false`, no shape, a reserved name)
    /// changes nothing.
    pub fn handle_incoming(&mut self, text: &str, now: Instant) {
        if let Decoded::Message(msg) = decode(text) {
            self.handle_message(msg, now);
        }
    }

    /// One decoded message from the peer; see [`Session::handle_incoming`].
    pub fn handle_message(&mut self, msg: WrapperMessage, now: Instant) {
        if self.closed {
            return;
        }
        // Deadlines passed before this message count first: a late answer is late.
        self.handle_timeout(now);
        match msg {
            WrapperMessage::Event {
                channel,
                name,
                args,
            } => self.events.push_back(Event::Event {
                channel,
                name,
                args,
            }),
            WrapperMessage::Request {
                id,
                channel,
                name,
                args,
            } => {
                if self.inflight.insert(id) {
                    self.events.push_back(Event::Request {
                        id,
                        channel,
                        name,
                        args,
                    });
                }
                // A second request with an id still in flight is the peer's mistake: ignored.
            }
            WrapperMessage::Resolve { id, data } => self.answer(id, Answer::Value(data)),
            WrapperMessage::Reject { id, error, .. } => {
                self.answer(id, Answer::Error(PeerError::from_value(error)));
            }
            WrapperMessage::ChannelCreated { id } => {
                if self.untrack(id).is_some() && self.channels.insert(id) {
                    self.events.push_back(Event::Answer {
                        id,
                        answer: Answer::Channel(id),
                    });
                } else {
                    // Nobody waits for it (cancelled, timed out, unknown): close it.
                    self.send(&abort(id, DEFAULT_ABORT_MESSAGE));
                }
            }
            WrapperMessage::Cancel { id, .. } => {
                if self.inflight.remove(&id) {
                    self.events.push_back(Event::Cancelled { id });
                }
            }
            WrapperMessage::ChannelEvent { handle, name, args } => {
                if self.channels.contains(&handle) {
                    self.events
                        .push_back(Event::ChannelEvent { handle, name, args });
                } else {
                    self.send(&abort(handle, DEFAULT_ABORT_MESSAGE));
                }
            }
            WrapperMessage::ChannelRequest {
                id,
                handle,
                name,
                args,
            } => {
                if !self.channels.contains(&handle) {
                    self.send(&abort(handle, DEFAULT_ABORT_MESSAGE));
                } else if self.inflight.insert(id) {
                    self.events.push_back(Event::ChannelRequest {
                        id,
                        handle,
                        name,
                        args,
                    });
                }
            }
            WrapperMessage::Abort { handle, reason, .. } => {
                if self.channels.remove(&handle) {
                    self.events
                        .push_back(Event::ChannelClosed { handle, reason });
                    self.fail_channel_requests(handle);
                }
            }
        }
    }

    fn answer(&mut self, id: u64, answer: Answer) {
        // A late answer (cancelled, timed out) or one to no request is ignored.
        if self.untrack(id).is_some() {
            self.events.push_back(Event::Answer { id, answer });
        }
    }
}

fn reject(id: u64, e: &PeerError) -> WrapperMessage {
    WrapperMessage::Reject {
        id,
        error: e.value.clone(),
        error_object: e.value.is_object(),
    }
}

fn abort(handle: u64, reason: &str) -> WrapperMessage {
    WrapperMessage::Abort {
        handle,
        reason: error_value(reason),
        error_object: true,
    }
}

#[cfg(test)]
mod tests;

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../ws_wrapper_session.md")]
#[doc = include_str!("../../../types/infra/PeerError.md")]
#[doc = include_str!("../../../types/infra/Session.md")]
#[doc = include_str!("../../../types/infra/SessionConfig.md")]
pub struct RegistryExamples;
