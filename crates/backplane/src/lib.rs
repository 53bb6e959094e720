//! What crosses nodes when several servers share one backplane: channels, positions, presence, and the [`Backplane`] trait a hub and an SSE broker publish through.
//!
//! A types crate: no I/O here. `backplane_memory` implements the trait inside
//! one process (the default, and several "nodes" in one test), and
//! `backplane_redis` across processes on Redis. The composition crates
//! (`ws_cluster`, `sse_broker`'s cluster mode) never know which one they run
//! on.
//!
//! - **Channels** ([`Channel`]): what a node subscribes to. A node subscribes
//!   only to the rooms, users and topics it has local members for, plus
//!   [`Channel::All`] and its own [`Channel::Node`], so the work per message is
//!   proportional to the nodes that care, never to the clients.
//! - **Publish** ([`Backplane::publish`]): one payload, already encoded by the
//!   publishing node, to several channels at once; a node subscribed to two of
//!   them receives it once per channel and de-duplicates by the id the caller
//!   put in the payload. `Err(`[`BackplaneError::Unavailable`]`)` means nothing
//!   was published: answer `503`, never acknowledge.
//! - **History** ([`Backplane::append`], [`Backplane::history`]): a topic's
//!   events in order under a [`Position`] (a Redis stream id, `ms-seq`), so a
//!   reader that reconnects to any node reads exactly what it missed, or is
//!   told of a gap ([`History::gap`]).
//! - **Kept messages** ([`Backplane::publish_kept`], [`Backplane::recent`]):
//!   the last messages of a room, published and kept in one step, for a
//!   connection that joins the room to read first.
//! - **Presence** ([`Backplane::presence_set`] and friends): who is in a
//!   room across nodes; a node that stops refreshing its entries (crashed)
//!   loses them after the TTL, and [`Backplane::presence_expire`] hands the
//!   expired members to exactly one caller, who tells the room.
//! - **Incoming** ([`Incoming`]): what the backplane hands the node: messages,
//!   and [`Incoming::Resync`] after a reconnection, when messages published
//!   meanwhile were missed and topics should be read back from history.
//!
//! # Example
//!
//! ```
//! use backplane::{Channel, Position};
//!
//! let p: Position = "1733150000000-3".parse().unwrap();
//! assert_eq!((p.ms, p.seq), (1733150000000, 3));
//! assert!(p < "1733150000001-0".parse().unwrap());
//! assert_eq!(Channel::Room("lobby".into()).to_string(), "room:lobby");
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

pub use bytes::Bytes;
use futures_util::future::BoxFuture;

/// What a node subscribes to and publishes on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    /// Every node (broadcasts).
    All,
    /// The nodes with local members of this room.
    Room(String),
    /// The nodes with local connections of this user.
    User(String),
    /// One node, by its number ([`Backplane::node`]): targets by client id.
    Node(u64),
    /// The nodes with local SSE subscribers of this topic.
    Topic(String),
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Channel::All => f.write_str("all"),
            Channel::Room(r) => write!(f, "room:{r}"),
            Channel::User(u) => write!(f, "user:{u}"),
            Channel::Node(n) => write!(f, "node:{n}"),
            Channel::Topic(t) => write!(f, "topic:{t}"),
        }
    }
}

impl FromStr for Channel {
    type Err = BackplaneError;

    /// The inverse of `Display`: `all`, `room:R`, `user:U`, `node:N`, `topic:T`.
    fn from_str(s: &str) -> Result<Self, BackplaneError> {
        let bad = || BackplaneError::Protocol(format!("not a channel: {s:?}"));
        if s == "all" {
            return Ok(Channel::All);
        }
        let (kind, name) = s.split_once(':').ok_or_else(bad)?;
        Ok(match kind {
            "room" => Channel::Room(name.to_string()),
            "user" => Channel::User(name.to_string()),
            "node" => Channel::Node(name.parse().map_err(|_| bad())?),
            "topic" => Channel::Topic(name.to_string()),
            _ => return Err(bad()),
        })
    }
}

/// A position in a topic's history: a Redis stream id, `ms-seq`. Ordered as
/// the events were appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    /// Milliseconds (Redis: the server's clock when the event was appended).
    pub ms: u64,
    /// Order within the millisecond.
    pub seq: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for Position {
    type Err = BackplaneError;

    /// `ms-seq`, both decimal `u64`s (what `Display` writes and Redis answers).
    fn from_str(s: &str) -> Result<Self, BackplaneError> {
        let bad = || BackplaneError::Protocol(format!("not a position (ms-seq): {s:?}"));
        let (ms, seq) = s.split_once('-').ok_or_else(bad)?;
        let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return Err(bad());
        }
        Ok(Position {
            ms: ms.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

/// A topic's events after a position, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct History {
    /// The events after the position asked for, with their positions.
    pub events: Vec<(Position, Bytes)>,
    /// Events after the position asked for were trimmed (or the position is
    /// unknown): the reader missed some and must be told.
    pub gap: bool,
    /// The oldest position the topic still holds, if any.
    pub oldest: Option<Position>,
}

/// One connection in a room, as every node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PresenceMember {
    /// The connection's client id (unique across nodes: its node's number is in the top bits).
    pub client: u64,
    /// The connection's user, if identified.
    pub user: Option<String>,
}

/// Who is in a room across nodes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Presence {
    /// Every connection in the room, by client id.
    pub members: Vec<PresenceMember>,
}

impl Presence {
    /// How many connections are in the room.
    pub fn connections(&self) -> usize {
        self.members.len()
    }

    /// The distinct users in the room, sorted.
    pub fn users(&self) -> Vec<String> {
        let mut users: Vec<String> = self.members.iter().filter_map(|m| m.user.clone()).collect();
        users.sort();
        users.dedup();
        users
    }
}

/// What the backplane hands the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A payload published on a channel this node subscribes to.
    Message {
        /// The channel it came on.
        channel: Channel,
        /// Its position, for topic events ([`Backplane::append`]).
        position: Option<Position>,
        /// The payload, as the publishing node encoded it.
        payload: Bytes,
    },
    /// The backplane reconnected and subscribed again: what was published
    /// meanwhile was missed; topics can be read back with
    /// [`Backplane::history`].
    Resync,
}

/// The function the backplane calls with each [`Incoming`], in order; it
/// must not block.
pub type Receiver = Arc<dyn Fn(Incoming) + Send + Sync>;

/// Why the backplane did not do something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackplaneError {
    /// The backplane cannot be reached now: nothing was published or read.
    /// Answer `503` and let the caller retry.
    Unavailable(String),
    /// The backplane answered something this node cannot use.
    Protocol(String),
}

impl fmt::Display for BackplaneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackplaneError::Unavailable(why) => write!(f, "backplane unavailable: {why}"),
            BackplaneError::Protocol(why) => write!(f, "backplane protocol error: {why}"),
        }
    }
}

impl std::error::Error for BackplaneError {}

/// The nodes' shared bus: publish to channels, subscribe to them, a history
/// per topic, and presence per room.
///
/// Methods that change only this node's interest ([`subscribe`],
/// [`unsubscribe`], [`set_receiver`]) never fail: an implementation that is
/// disconnected remembers them and applies them when it reconnects (then it
/// sends [`Incoming::Resync`]).
///
/// [`subscribe`]: Backplane::subscribe
/// [`unsubscribe`]: Backplane::unsubscribe
/// [`set_receiver`]: Backplane::set_receiver
pub trait Backplane: Send + Sync + 'static {
    /// This node's number, unique among the nodes sharing the backplane
    /// (below 2^16): the top bits of its client ids.
    fn node(&self) -> u64;

    /// Where incoming messages go from now on.
    fn set_receiver(&self, receiver: Receiver);

    /// Whether the backplane is reachable now, for metrics and health
    /// checks. Default: always (an in-process backplane).
    fn is_connected(&self) -> bool {
        true
    }

    /// Starts receiving what is published on `channel` (idempotent).
    fn subscribe(&self, channel: Channel);

    /// Stops receiving what is published on `channel` (idempotent).
    fn unsubscribe(&self, channel: Channel);

    /// Completes when every [`subscribe`](Backplane::subscribe) and
    /// [`unsubscribe`](Backplane::unsubscribe) made before the call is in
    /// effect, so that what is published on those channels from then on
    /// reaches this node: await it before reading a topic's history to
    /// resume from it. `Err(Unavailable)` when the backplane cannot say
    /// (disconnected: the subscriptions are applied at reconnection, then
    /// [`Incoming::Resync`] is sent).
    fn subscriptions_applied(&self) -> BoxFuture<'static, Result<(), BackplaneError>>;

    /// Publishes `payload` on each of `channels`. `Ok` once the backplane
    /// took it; every subscribed node then receives it, this one included.
    fn publish(
        &self,
        channels: Vec<Channel>,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<(), BackplaneError>>;

    /// Publishes `payload` on each of `channels`, as
    /// [`publish`](Backplane::publish), and keeps it among the last `keep`
    /// messages of each room of `rooms`, in one step: a message is kept if and
    /// only if it was published. `Err(Unavailable)`: neither happened.
    fn publish_kept(
        &self,
        channels: Vec<Channel>,
        rooms: Vec<String>,
        keep: usize,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<(), BackplaneError>>;

    /// The last `n` messages kept for `room` by
    /// [`publish_kept`](Backplane::publish_kept), oldest first.
    fn recent(
        &self,
        room: &str,
        n: usize,
    ) -> BoxFuture<'static, Result<Vec<Bytes>, BackplaneError>>;

    /// Appends `events` to `topic`'s history, in order, and publishes each
    /// on [`Channel::Topic`] with its position, in one step (all or none):
    /// every subscriber sees the events of a topic in history order.
    /// Returns their positions, in order.
    fn append(
        &self,
        topic: &str,
        events: Vec<Bytes>,
    ) -> BoxFuture<'static, Result<Vec<Position>, BackplaneError>>;

    /// `topic`'s events after `after`, oldest first, and whether some were trimmed.
    fn history(
        &self,
        topic: &str,
        after: Position,
    ) -> BoxFuture<'static, Result<History, BackplaneError>>;

    /// Records `member` in `room` until [`presence_remove`](Backplane::presence_remove).
    /// The implementation keeps this node's entries alive (refreshes them
    /// within the presence TTL) while the node runs; if the node stops
    /// (crash), they expire after the TTL.
    fn presence_set(
        &self,
        room: &str,
        member: PresenceMember,
    ) -> BoxFuture<'static, Result<(), BackplaneError>>;

    /// Removes connection `client` from `room`.
    fn presence_remove(
        &self,
        room: &str,
        client: u64,
    ) -> BoxFuture<'static, Result<(), BackplaneError>>;

    /// Who is in `room` now (expired entries left out).
    fn presence(&self, room: &str) -> BoxFuture<'static, Result<Presence, BackplaneError>>;

    /// Removes the entries of `room` whose TTL passed and returns them; each
    /// expired member is returned to exactly one caller, across all nodes.
    fn presence_expire(
        &self,
        room: &str,
    ) -> BoxFuture<'static, Result<Vec<PresenceMember>, BackplaneError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_and_positions_read_back_what_they_write() {
        for c in [
            Channel::All,
            Channel::Room("a:b".into()),
            Channel::User("ana".into()),
            Channel::Node(7),
            Channel::Topic("news".into()),
        ] {
            assert_eq!(c.to_string().parse::<Channel>().unwrap(), c);
        }
        for bad in ["", "room", "node:x", "nope:1"] {
            assert!(bad.parse::<Channel>().is_err(), "{bad}");
        }
        let p = Position { ms: 12, seq: 3 };
        assert_eq!(p.to_string().parse::<Position>().unwrap(), p);
        for bad in ["", "1", "1-", "-1", "a-1", "1-2-3", "+1-2"] {
            assert!(bad.parse::<Position>().is_err(), "{bad}");
        }
        assert!(Position { ms: 1, seq: 9 } < Position { ms: 2, seq: 0 });
    }

    #[test]
    fn presence_counts_connections_and_distinct_users() {
        let member = |client, user: Option<&str>| PresenceMember {
            client,
            user: user.map(str::to_string),
        };
        let p = Presence {
            members: vec![
                member(1, Some("b")),
                member(2, Some("a")),
                member(3, Some("b")),
                member(4, None),
            ],
        };
        assert_eq!(p.connections(), 4);
        assert_eq!(p.users(), ["a", "b"]);
    }
}

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../../../types/infra/Backplane.md")]
#[doc = include_str!("../../../types/infra/BackplaneError.md")]
#[doc = include_str!("../../../types/infra/Channel.md")]
#[doc = include_str!("../../../types/infra/History.md")]
#[doc = include_str!("../../../types/infra/Incoming.md")]
#[doc = include_str!("../../../types/infra/Position.md")]
#[doc = include_str!("../../../types/infra/Presence.md")]
#[doc = include_str!("../../../types/infra/PresenceMember.md")]
#[doc = include_str!("../../../types/infra/Receiver.md")]
pub struct RegistryExamples;
