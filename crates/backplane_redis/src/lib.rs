//! Runs the `Backplane` across processes on Redis: channels over RESP3 pub/sub, topic history in streams, presence with a TTL, and reconnection that re-subscribes and asks for a resync.
//!
//! One [`RedisBackplane`] per node, one Redis connection per backplane: a
//! RESP3 multiplexed connection carries commands and the pub/sub pushes
//! alike, so a node costs Redis one client. Needs Redis 7.0 or later
//! (checked at [`RedisBackplane::connect`]).
//!
//! Client: `redis` 1.x (RESP3 pushes, `Script`), not `fred` (it would lock second versions of `socket2` and `rand`), without its `ConnectionManager` (resubscription that ignores failures, no point to send [`Incoming::Resync`] from): the reconnect loop is ours.
//!
//! # Keys and channels
//!
//! Everything is under [`RedisConfig::prefix`] (`rt` below):
//!
//! | what | Redis |
//! |---|---|
//! | node numbers | `INCR rt:nodes` at connect, mapped into `1..=65535` (wraps, skips 0) |
//! | a [`Channel`] | pub/sub channel `rt:ch:{channel}`: `rt:ch:all`, `rt:ch:room:R`, `rt:ch:user:U`, `rt:ch:node:N`, `rt:ch:topic:T` |
//! | a topic's history | stream `rt:stream:{topic}`, one field `data` (the event) per entry |
//! | presence in a room | hash `rt:presence:{room}` (client id -> `+user`, or `-` for none) and sorted set `rt:presence-exp:{room}` (client id -> expiry, ms on the Redis clock) |
//!
//! A message on a room, user, node or `all` channel is the payload as
//! published. A message on a topic channel is framed as the position, a
//! newline, then the payload (`1733150000000-3\n<event>`); a plain
//! [`publish`](Backplane::publish) to a topic channel has no position
//! (`\n<payload>`).
//!
//! # Round trips
//!
//! - [`publish`](Backplane::publish): one `PUBLISH` per channel, pipelined:
//!   one round trip.
//! - [`append`](Backplane::append): one `EVALSHA` of a Lua script that
//!   `XADD`s the events (one or a batch), trims the stream once to
//!   [`RedisConfig::history_max_len`] (and [`RedisConfig::history_max_age`])
//!   and `PUBLISH`es each with its position: atomic, so every subscriber
//!   sees a topic's events in stream order. (A script unknown to Redis, after a restart, is loaded and run
//!   again: three round trips once.) Appends to a topic made while one is
//!   in flight wait for it and then go together, as one script call (group
//!   commit: concurrent publishers of one event each cost Redis one call per
//!   round trip, and the nodes receive their events as one burst); each
//!   caller gets its own positions, or the error of the call its events
//!   were in.
//! - [`history`](Backplane::history): one `EVALSHA` reading `XINFO STREAM`
//!   and `XRANGE` atomically.
//! - [`publish_kept`](Backplane::publish_kept): one `EVALSHA` that `RPUSH`es
//!   the message to each room's list, `LTRIM`s it to the last `keep` (and
//!   sets it to expire [`RedisConfig::history_max_age`] after its last
//!   message, when set) and `PUBLISH`es it: kept if and only if published.
//! - [`recent`](Backplane::recent): one `LRANGE`.
//!
//! # Gaps, exactly
//!
//! The append script trims with `XDEL`, because Redis 7.0 updates a stream's
//! `max-deleted-entry-id` on `XDEL` only (never on `MAXLEN`/`MINID`
//! trimming). Entries are only ever deleted oldest first, so the deleted ids
//! are exactly those up to `max-deleted-entry-id`. [`History::gap`] for
//! `history(topic, after)` is then:
//!
//! - `after < max-deleted-entry-id`: events after `after` were trimmed: gap;
//! - else `after` is `0-0`, or `max-deleted-entry-id` itself, or an entry the
//!   stream holds: no gap;
//! - else the position is unknown to this stream (it never held it: Redis
//!   lost the stream, or the position is from elsewhere): gap.
//! - No stream at all: no events, and a gap unless `after` is `0-0` (a reader
//!   who saw events of a stream that no longer exists missed something).
//!
//! # Presence
//!
//! [`presence_set`](Backplane::presence_set) and
//! [`presence_remove`](Backplane::presence_remove) change this node's own
//! set first, then Redis; a background task rewrites the whole set every
//! third of [`RedisConfig::presence_ttl`] (one pipeline, one `EVALSHA` per
//! room), so an entry set while Redis was down appears after the
//! reconnection, and one removed while down expires. Reads leave out expired
//! entries; [`presence_expire`](Backplane::presence_expire) is one script
//! that removes and returns them, so each goes to exactly one caller. A
//! room's two keys expire twice the TTL after their last write.
//!
//! # Receiving
//!
//! The [`Receiver`] is called on the connection's reader task, in the order
//! Redis delivered, with nothing queued in between: it must not block
//! (hand the message to a bounded queue, or drop it). After a reconnection,
//! [`Incoming::Resync`] comes once every subscription is applied again, and
//! before any message of the new connection.
//!
//! # When Redis goes away
//!
//! Operations answer [`BackplaneError::Unavailable`] at once while the
//! connection is down, and within [`RedisConfig::timeout`] when Redis stops
//! answering; nothing is queued or retried (a failed publish was not
//! published). A background task reconnects with jittered exponential
//! backoff (ours: [`RedisConfig::reconnect_min`] doubling up to
//! [`RedisConfig::reconnect_max`], plus up to half again at random), applies
//! every subscription, then sends [`Incoming::Resync`]. A connection that
//! stops answering without closing is found by a `PING` every
//! [`RedisConfig::ping_interval`]. [`RedisBackplane::status`] says where it
//! is; disconnects and reconnects are `tracing` events (target `backplane`).
//! Dropping the last handle stops the background tasks and closes the
//! connection.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use backplane::{Backplane, Bytes, Channel, Incoming};
//! use backplane_redis::{RedisBackplane, RedisConfig};
//!
//! # async fn run() -> Result<(), backplane::BackplaneError> {
//! let bp = RedisBackplane::connect(RedisConfig::new("redis://127.0.0.1:6379")).await?;
//! bp.set_receiver(Arc::new(|incoming: Incoming| {
//!     // must not block: try_send to a bounded queue
//!     let _ = incoming;
//! }));
//! bp.subscribe(Channel::Room("lobby".into()));
//! bp.publish(vec![Channel::Room("lobby".into())], Bytes::from_static(b"hi")).await?;
//! let positions = bp.append("news", vec![Bytes::from_static(b"event")]).await?;
//! let missed = bp.history("news", positions[0]).await?;
//! assert!(missed.events.is_empty() && !missed.gap);
//! # Ok(())
//! # }
//! ```
//!
//! # Errors
//!
//! [`BackplaneError::Unavailable`]: not connected, Redis did not answer
//! within the timeout, or refused for now (loading, out of memory, read-only
//! replica). [`BackplaneError::Protocol`]: an invalid URL, a Redis older
//! than 7.0, or an answer this crate cannot read.

mod scripts;
pub mod testing;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use backplane::{
    Backplane, BackplaneError, Bytes, Channel, History, Incoming, Position, Presence,
    PresenceMember, Receiver,
};
use futures_util::future::BoxFuture;
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ErrorKind, IntoConnectionInfo, ProtocolVersion, PushInfo,
    PushKind, RedisError, Script, ServerErrorKind, Value,
};
use tokio::sync::{Notify, oneshot, watch};
use tokio::time::{MissedTickBehavior, timeout};

/// Settings of a [`RedisBackplane`]; [`RedisConfig::new`] gives the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// Where Redis is: `redis://[user:password@]host:port[/db]` (RESP3 is
    /// used whatever the URL says).
    pub url: String,
    /// Prefix of every key and channel, so several apps can share one Redis.
    /// Default: `"rt"`.
    pub prefix: String,
    /// Events a topic's history keeps; the oldest are trimmed at each append.
    /// Default: 1,000 (at least 1).
    pub history_max_len: usize,
    /// Events older than this (by their position) are trimmed at the next
    /// append to their topic. Default: `None` (only the length bounds it).
    pub history_max_age: Option<Duration>,
    /// How long a presence entry lives unless refreshed; the backplane
    /// refreshes its own every third of it. Default: 15 seconds.
    pub presence_ttl: Duration,
    /// The longest an operation (or a connection attempt) waits for Redis;
    /// past it, `Unavailable`. Default: 1 second.
    pub timeout: Duration,
    /// The first reconnection delay, doubled per failed attempt. Default:
    /// 100 ms.
    pub reconnect_min: Duration,
    /// The longest reconnection delay; jitter adds up to half of the delay.
    /// Default: 5 seconds.
    pub reconnect_max: Duration,
    /// How often the connection is checked with `PING`, to replace one that
    /// stopped answering without closing. Default: 5 seconds.
    pub ping_interval: Duration,
}

impl RedisConfig {
    /// The defaults, for Redis at `url`.
    pub fn new(url: impl Into<String>) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            prefix: "rt".to_string(),
            history_max_len: 1000,
            history_max_age: None,
            presence_ttl: Duration::from_secs(15),
            timeout: Duration::from_secs(1),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            ping_interval: Duration::from_secs(5),
        }
    }
}

/// Where a [`RedisBackplane`] is, for metrics and logs; cheap to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RedisStatus {
    /// Connected (after a reconnection: once every subscription is applied
    /// again).
    pub connected: bool,
    /// Reconnections since `connect` (each followed by [`Incoming::Resync`]).
    pub reconnects: u64,
    /// Operations that failed, lost connections and failed reconnection
    /// attempts.
    pub errors: u64,
    /// Messages handed to the receiver.
    pub received: u64,
    /// Messages dropped: no receiver set, not readable, or from a connection
    /// being replaced.
    pub dropped: u64,
}

/// The [`Backplane`] on Redis; clones share one connection, and dropping the
/// last one stops its background tasks.
#[derive(Clone)]
pub struct RedisBackplane {
    handle: Arc<Handle>,
}

impl RedisBackplane {
    /// Connects to Redis, takes a node number, and starts the background
    /// tasks (reconnection, subscriptions, presence refresh).
    ///
    /// # Errors
    ///
    /// [`BackplaneError::Unavailable`] when Redis cannot be reached within
    /// [`RedisConfig::timeout`]; [`BackplaneError::Protocol`] for an invalid
    /// URL or a Redis older than 7.0.
    pub async fn connect(config: RedisConfig) -> Result<RedisBackplane, BackplaneError> {
        let info = config
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| BackplaneError::Protocol(format!("invalid Redis URL: {e}")))?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = Client::open(info.set_redis_settings(settings))
            .map_err(|e| BackplaneError::Protocol(format!("invalid Redis URL: {e}")))?;
        let keys = Keys {
            prefix: config.prefix.clone(),
        };
        let delivery = Arc::new(Delivery {
            channel_prefix: keys.channel_prefix(),
            receiver: RwLock::new(None),
            order: Mutex::new(()),
            received: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let wake = Arc::new(Notify::new());
        let live = timeout(
            config.timeout,
            open(&client, &config, &delivery, &wake, false),
        )
        .await
        .map_err(|_| unavailable_after(config.timeout))?
        .map_err(|e| classify(&e))?;

        let mut conn = live.conn.clone();
        let (version, number): (String, u64) = timeout(config.timeout, async {
            let info: String = redis::cmd("INFO")
                .arg("server")
                .query_async(&mut conn)
                .await?;
            let n: u64 = redis::cmd("INCR")
                .arg(keys.nodes())
                .query_async(&mut conn)
                .await?;
            Ok::<_, RedisError>((info, n))
        })
        .await
        .map_err(|_| unavailable_after(config.timeout))?
        .map_err(|e| classify(&e))?;
        check_version(&version)?;
        let node = node_number(number);

        let shared = Arc::new(Shared {
            node,
            keys,
            client,
            live: RwLock::new(Some(live)),
            desired: Mutex::new(Desired::default()),
            applied_version: AtomicU64::new(0),
            applied_changed: Notify::new(),
            wake,
            refresh_now: Notify::new(),
            delivery,
            presence: Mutex::new(BTreeMap::new()),
            presence_writes: tokio::sync::Mutex::new(()),
            connected: AtomicBool::new(true),
            stopping: AtomicBool::new(false),
            appends: Mutex::default(),
            reconnects: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            scripts: Scripts {
                append: Script::new(scripts::APPEND),
                publish_kept: Script::new(scripts::PUBLISH_KEPT),
                history: Script::new(scripts::HISTORY),
                presence_set: Script::new(&scripts::presence_set()),
                presence_read: Script::new(&scripts::presence_read()),
                presence_expire: Script::new(&scripts::presence_expire()),
            },
            config,
        });
        let (stop, stopped) = watch::channel(());
        tokio::spawn(drive(shared.clone(), stopped.clone()));
        tokio::spawn(refresh_presence(shared.clone(), stopped));
        tracing::debug!(target: "backplane", node, prefix = %shared.keys.prefix, "redis backplane connected");
        Ok(RedisBackplane {
            handle: Arc::new(Handle {
                shared,
                _stop: stop,
            }),
        })
    }

    /// Connected or not, reconnections, errors and messages, from counters.
    pub fn status(&self) -> RedisStatus {
        let s = &self.handle.shared;
        RedisStatus {
            connected: s.connected.load(Ordering::Relaxed),
            reconnects: s.reconnects.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
            received: s.delivery.received.load(Ordering::Relaxed),
            dropped: s.delivery.dropped.load(Ordering::Relaxed),
        }
    }

    /// The settings it runs with.
    pub fn config(&self) -> &RedisConfig {
        &self.handle.shared.config
    }

    /// Waits until every `subscribe` and `unsubscribe` made before the call
    /// is applied on Redis, so that a publish from another node reaches this
    /// one from now on.
    ///
    /// # Errors
    ///
    /// [`BackplaneError::Unavailable`] when not connected (they are applied
    /// at reconnection) or not applied within [`RedisConfig::timeout`].
    pub async fn flush_subscriptions(&self) -> Result<(), BackplaneError> {
        let s = &self.handle.shared;
        let target = lock(&s.desired).version;
        let wait = async {
            loop {
                let changed = s.applied_changed.notified();
                if s.applied_version.load(Ordering::Acquire) >= target {
                    return Ok(());
                }
                if !s.connected.load(Ordering::Acquire) {
                    return Err(not_connected());
                }
                changed.await;
            }
        };
        timeout(s.config.timeout, wait)
            .await
            .map_err(|_| unavailable_after(s.config.timeout))?
    }
}

impl fmt::Debug for RedisBackplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("node", &self.handle.shared.node)
            .field("prefix", &self.handle.shared.keys.prefix)
            .field("status", &self.status())
            .finish()
    }
}

impl Backplane for RedisBackplane {
    fn node(&self) -> u64 {
        self.handle.shared.node
    }

    fn set_receiver(&self, receiver: Receiver) {
        *self
            .handle
            .shared
            .delivery
            .receiver
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(receiver);
    }

    fn is_connected(&self) -> bool {
        self.status().connected
    }

    fn subscribe(&self, channel: Channel) {
        self.handle.shared.want(channel, true);
    }

    fn unsubscribe(&self, channel: Channel) {
        self.handle.shared.want(channel, false);
    }

    fn subscriptions_applied(&self) -> BoxFuture<'static, Result<(), BackplaneError>> {
        let this = self.clone();
        Box::pin(async move { this.flush_subscriptions().await })
    }

    fn publish(
        &self,
        mut channels: Vec<Channel>,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<(), BackplaneError>> {
        let shared = self.handle.shared.clone();
        Box::pin(async move {
            channels.sort();
            channels.dedup();
            if channels.is_empty() {
                return Ok(());
            }
            let mut pipe = redis::pipe();
            for channel in &channels {
                pipe.cmd("PUBLISH")
                    .arg(shared.keys.channel(channel))
                    .arg(&*framed(channel, &payload))
                    .ignore();
            }
            shared
                .run(|mut conn| async move { pipe.query_async::<()>(&mut conn).await })
                .await
        })
    }

    fn publish_kept(
        &self,
        mut channels: Vec<Channel>,
        mut rooms: Vec<String>,
        keep: usize,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<(), BackplaneError>> {
        let shared = self.handle.shared.clone();
        Box::pin(async move {
            channels.sort();
            channels.dedup();
            rooms.sort();
            rooms.dedup();
            let ttl = shared.config.history_max_age.map_or(0, |a| a.as_millis());
            let mut invocation = shared.scripts.publish_kept.prepare_invoke();
            for room in &rooms {
                invocation.key(shared.keys.kept(room));
            }
            invocation
                .arg(keep.max(1))
                .arg(ttl.to_string())
                .arg(&payload[..]);
            for channel in &channels {
                invocation
                    .arg(shared.keys.channel(channel))
                    .arg(&*framed(channel, &payload));
            }
            shared
                .run(|mut conn| async move { invocation.invoke_async::<()>(&mut conn).await })
                .await
        })
    }

    fn recent(
        &self,
        room: &str,
        n: usize,
    ) -> BoxFuture<'static, Result<Vec<Bytes>, BackplaneError>> {
        let shared = self.handle.shared.clone();
        let key = shared.keys.kept(room);
        Box::pin(async move {
            if n == 0 {
                return Ok(Vec::new());
            }
            let first = -i64::try_from(n).unwrap_or(i64::MAX);
            let mut cmd = redis::cmd("LRANGE");
            cmd.arg(key).arg(first).arg(-1);
            shared
                .run(|mut conn| async move { cmd.query_async::<Vec<Bytes>>(&mut conn).await })
                .await
        })
    }

    fn append(
        &self,
        topic: &str,
        events: Vec<Bytes>,
    ) -> BoxFuture<'static, Result<Vec<Position>, BackplaneError>> {
        let shared = self.handle.shared.clone();
        let topic = topic.to_string();
        Box::pin(async move {
            if events.is_empty() {
                return Ok(Vec::new());
            }
            let waiting = {
                let mut appends = lock(&shared.appends);
                match appends.get_mut(&topic) {
                    Some(queue) => {
                        let (done, answer) = oneshot::channel();
                        queue.push((events, done));
                        Err(answer)
                    }
                    None => {
                        appends.insert(topic.clone(), Vec::new());
                        Ok(events)
                    }
                }
            };
            match waiting {
                Ok(events) => {
                    // However this future ends, what waits goes next.
                    let _next = HandOver {
                        shared: shared.clone(),
                        topic: topic.clone(),
                    };
                    shared.append_now(&topic, events).await
                }
                Err(answer) => answer.await.unwrap_or_else(|_| {
                    Err(BackplaneError::Unavailable(
                        "the append was dropped before Redis answered".into(),
                    ))
                }),
            }
        })
    }

    fn history(
        &self,
        topic: &str,
        after: Position,
    ) -> BoxFuture<'static, Result<History, BackplaneError>> {
        let shared = self.handle.shared.clone();
        let topic = topic.to_string();
        Box::pin(async move {
            let mut invocation = shared.scripts.history.prepare_invoke();
            invocation
                .key(shared.keys.stream(&topic))
                .arg(after.to_string());
            let reply: Vec<Bytes> = shared
                .run(|mut conn| async move { invocation.invoke_async(&mut conn).await })
                .await?;
            read_history(after, reply)
        })
    }

    fn presence_set(
        &self,
        room: &str,
        member: PresenceMember,
    ) -> BoxFuture<'static, Result<(), BackplaneError>> {
        let shared = self.handle.shared.clone();
        let room = room.to_string();
        Box::pin(async move {
            lock(&shared.presence)
                .entry(room.clone())
                .or_default()
                .insert(member.client, member.user.clone());
            let mut invocation = shared.scripts.presence_set.prepare_invoke();
            let (hash, expiry) = shared.keys.presence(&room);
            invocation
                .key(hash)
                .key(expiry)
                .arg(shared.config.presence_ttl.as_millis().max(1).to_string())
                .arg(member.client)
                .arg(encode_user(member.user.as_deref()));
            shared
                .run(|mut conn| async move { invocation.invoke_async::<()>(&mut conn).await })
                .await
        })
    }

    fn presence_remove(
        &self,
        room: &str,
        client: u64,
    ) -> BoxFuture<'static, Result<(), BackplaneError>> {
        let shared = self.handle.shared.clone();
        let room = room.to_string();
        Box::pin(async move {
            let _writes = shared.presence_writes.lock().await;
            {
                let mut local = lock(&shared.presence);
                if let Some(members) = local.get_mut(&room) {
                    members.remove(&client);
                    if members.is_empty() {
                        local.remove(&room);
                    }
                }
            }
            let (hash, expiry) = shared.keys.presence(&room);
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("HDEL")
                .arg(hash)
                .arg(client)
                .ignore()
                .cmd("ZREM")
                .arg(expiry)
                .arg(client)
                .ignore();
            shared
                .run(|mut conn| async move { pipe.query_async::<()>(&mut conn).await })
                .await
        })
    }

    fn presence(&self, room: &str) -> BoxFuture<'static, Result<Presence, BackplaneError>> {
        let shared = self.handle.shared.clone();
        let room = room.to_string();
        Box::pin(async move {
            let mut invocation = shared.scripts.presence_read.prepare_invoke();
            let (hash, expiry) = shared.keys.presence(&room);
            invocation.key(hash).key(expiry);
            let reply: Vec<Bytes> = shared
                .run(|mut conn| async move { invocation.invoke_async(&mut conn).await })
                .await?;
            Ok(Presence {
                members: read_members(reply)?,
            })
        })
    }

    fn presence_expire(
        &self,
        room: &str,
    ) -> BoxFuture<'static, Result<Vec<PresenceMember>, BackplaneError>> {
        let shared = self.handle.shared.clone();
        let room = room.to_string();
        Box::pin(async move {
            let mut invocation = shared.scripts.presence_expire.prepare_invoke();
            let (hash, expiry) = shared.keys.presence(&room);
            invocation.key(hash).key(expiry);
            let reply: Vec<Bytes> = shared
                .run(|mut conn| async move { invocation.invoke_async(&mut conn).await })
                .await?;
            read_members(reply)
        })
    }
}

/// What the handles share; its drop stops the background tasks (they see
/// the `watch` sender go).
struct Handle {
    shared: Arc<Shared>,
    _stop: watch::Sender<()>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Close the connection now rather than when the tasks notice, and
        // make sure the driver does not take that for an outage.
        self.shared.stopping.store(true, Ordering::Release);
        self.shared.connected.store(false, Ordering::Release);
        self.shared
            .live
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

/// The key and channel names under one prefix.
/// What goes on `channel` for `payload`: topic messages are framed with
/// their position, and a plain publish has none (`\n<payload>`).
fn framed<'a>(channel: &Channel, payload: &'a Bytes) -> std::borrow::Cow<'a, [u8]> {
    match channel {
        Channel::Topic(_) => [&b"\n"[..], &payload[..]].concat().into(),
        _ => payload[..].into(),
    }
}

struct Keys {
    prefix: String,
}

impl Keys {
    fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    fn channel_prefix(&self) -> String {
        format!("{}:ch:", self.prefix)
    }

    fn channel(&self, channel: &Channel) -> String {
        format!("{}:ch:{channel}", self.prefix)
    }

    /// A room's kept messages (a list, oldest first).
    fn kept(&self, room: &str) -> String {
        format!("{}:kept:{room}", self.prefix)
    }

    fn stream(&self, topic: &str) -> String {
        format!("{}:stream:{topic}", self.prefix)
    }

    /// The presence hash and expiry set of a room.
    fn presence(&self, room: &str) -> (String, String) {
        (
            format!("{}:presence:{room}", self.prefix),
            format!("{}:presence-exp:{room}", self.prefix),
        )
    }
}

struct Scripts {
    append: Script,
    publish_kept: Script,
    history: Script,
    presence_set: Script,
    presence_read: Script,
    presence_expire: Script,
}

/// The channels this node wants, and those changed since the driver last
/// applied them (a set, not a queue: bounded by the channels).
#[derive(Default)]
struct Desired {
    channels: BTreeSet<Channel>,
    changed: BTreeSet<Channel>,
    version: u64,
}

/// One Redis connection and its flags.
struct Live {
    conn: MultiplexedConnection,
    state: Arc<ConnState>,
}

/// Flags of one connection, shared with its push handler.
struct ConnState {
    /// The connection is lost; the driver replaces it.
    dead: AtomicBool,
    /// [`Incoming::Resync`] is owed before this connection's first message.
    resync: AtomicBool,
}

/// What the push handler needs to hand messages over (no connection in it,
/// so the handler, owned by the connection's reader task, keeps no cycle).
struct Delivery {
    channel_prefix: String,
    receiver: RwLock<Option<Receiver>>,
    /// Held while handing over, so a reconnection's `Resync` and the new
    /// connection's first messages come in that order.
    order: Mutex<()>,
    received: AtomicU64,
    dropped: AtomicU64,
}

impl Delivery {
    /// Called by the connection's reader task for each push.
    fn push(&self, conn: &ConnState, wake: &Notify, info: PushInfo) {
        match info.kind {
            PushKind::Message => {
                if conn.dead.load(Ordering::Acquire) {
                    // Replaced (or being replaced): the new connection's
                    // Resync covers what this one still carries.
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                let Some(incoming) = self.parse(info.data) else {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(target: "backplane", "redis backplane: unreadable pub/sub message dropped");
                    return;
                };
                let _order = lock(&self.order);
                if conn.resync.swap(false, Ordering::AcqRel) {
                    self.hand(Incoming::Resync);
                }
                self.received.fetch_add(1, Ordering::Relaxed);
                self.hand(incoming);
            }
            PushKind::Disconnection => {
                conn.dead.store(true, Ordering::Release);
                wake.notify_one();
            }
            _ => {}
        }
    }

    /// Hands one incoming to the receiver; the caller holds `order`.
    fn hand(&self, incoming: Incoming) {
        let receiver = self
            .receiver
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match receiver {
            Some(receiver) => receiver(incoming),
            None => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// `[channel, payload]` of a `message` push.
    fn parse(&self, data: Vec<Value>) -> Option<Incoming> {
        let mut data = data.into_iter();
        let (Some(Value::BulkString(name)), Some(Value::BulkString(payload))) =
            (data.next(), data.next())
        else {
            return None;
        };
        let name = std::str::from_utf8(&name).ok()?;
        let channel: Channel = name.strip_prefix(&self.channel_prefix)?.parse().ok()?;
        let payload = Bytes::from(payload);
        let (position, payload) = match channel {
            Channel::Topic(_) => unframe(payload)?,
            _ => (None, payload),
        };
        Some(Incoming::Message {
            channel,
            position,
            payload,
        })
    }
}

/// Splits a topic message into its position and payload: `ms-seq\n...`
/// from `append`, `\n...` (no position) from `publish`.
fn unframe(frame: Bytes) -> Option<(Option<Position>, Bytes)> {
    let newline = frame.iter().position(|&b| b == b'\n')?;
    let position = match &frame[..newline] {
        [] => None,
        id => Some(std::str::from_utf8(id).ok()?.parse().ok()?),
    };
    Some((position, frame.slice(newline + 1..)))
}

struct Shared {
    config: RedisConfig,
    node: u64,
    keys: Keys,
    client: Client,
    /// The connection, when connected.
    live: RwLock<Option<Live>>,
    desired: Mutex<Desired>,
    /// The last `Desired::version` applied on Redis.
    applied_version: AtomicU64,
    applied_changed: Notify,
    /// Wakes the driver: subscriptions changed, or the connection is lost.
    wake: Arc<Notify>,
    /// Asks the presence task to refresh now (after a reconnection).
    refresh_now: Notify,
    delivery: Arc<Delivery>,
    /// This node's presence entries, by room: client -> user.
    presence: Mutex<BTreeMap<String, BTreeMap<u64, Option<String>>>>,
    /// Held by a refresh from its snapshot to its write, and by a removal,
    /// so that a refresh never writes back an entry removed meanwhile.
    presence_writes: tokio::sync::Mutex<()>,
    connected: AtomicBool,
    /// The last handle is gone: no more reconnecting.
    stopping: AtomicBool,
    reconnects: AtomicU64,
    errors: AtomicU64,
    scripts: Scripts,
    /// The topics with an append in flight, and the appends waiting for it.
    appends: Mutex<HashMap<String, Vec<Waiting>>>,
}

/// An append waiting for the one in flight on its topic.
type Waiting = (
    Vec<Bytes>,
    oneshot::Sender<Result<Vec<Position>, BackplaneError>>,
);

/// Most events one script call of waiting appends carries (an append
/// larger than that goes alone).
const GROUP_EVENTS: usize = 1024;

/// Ends an append in flight: the appends that waited for it go out from a
/// task, together; with none, the topic has no append in flight.
struct HandOver {
    shared: Arc<Shared>,
    topic: String,
}

impl Drop for HandOver {
    fn drop(&mut self) {
        let Some(group) = self.shared.next_group(&self.topic) else {
            return;
        };
        let (shared, topic) = (self.shared.clone(), std::mem::take(&mut self.topic));
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(shared.append_waiting(topic, group));
            }
            Err(_) => {
                for (_, done) in group {
                    let _ = done.send(Err(not_connected()));
                }
                lock(&shared.appends).remove(&topic);
            }
        }
    }
}

impl Shared {
    /// The appends waiting on `topic` (at most [`GROUP_EVENTS`] events,
    /// at least one append), the append in flight staying so; none, and
    /// none in flight any more, when none waits.
    fn next_group(&self, topic: &str) -> Option<Vec<Waiting>> {
        let mut appends = lock(&self.appends);
        let queue = appends.get_mut(topic)?;
        if queue.is_empty() {
            appends.remove(topic);
            return None;
        }
        let mut events = 0;
        let take = queue
            .iter()
            .take_while(|(e, _)| {
                events += e.len();
                events <= GROUP_EVENTS
            })
            .count()
            .max(1);
        Some(queue.drain(..take).collect())
    }

    /// Appends waiting groups of `topic` until none waits, each as one
    /// script call, and answers each append with its positions.
    async fn append_waiting(self: Arc<Self>, topic: String, mut group: Vec<Waiting>) {
        loop {
            let events = group.iter().flat_map(|(e, _)| e.iter().cloned()).collect();
            match self.append_now(&topic, events).await {
                Ok(positions) => {
                    let mut positions = positions.into_iter();
                    for (events, done) in group {
                        let _ = done.send(Ok(positions.by_ref().take(events.len()).collect()));
                    }
                }
                Err(e) => {
                    for (_, done) in group {
                        let _ = done.send(Err(e.clone()));
                    }
                }
            }
            match self.next_group(&topic) {
                Some(next) => group = next,
                None => return,
            }
        }
    }

    /// One script call appending `events` to `topic`.
    async fn append_now(
        &self,
        topic: &str,
        events: Vec<Bytes>,
    ) -> Result<Vec<Position>, BackplaneError> {
        let max_age = self.config.history_max_age.map_or(0, |a| a.as_millis());
        let mut invocation = self.scripts.append.prepare_invoke();
        invocation
            .key(self.keys.stream(topic))
            .arg(self.keys.channel(&Channel::Topic(topic.to_string())))
            .arg(self.config.history_max_len.max(1))
            .arg(max_age.to_string());
        for event in &events {
            invocation.arg(&event[..]);
        }
        let ids: Vec<String> = self
            .run(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await?;
        if ids.len() != events.len() {
            return Err(BackplaneError::Protocol(format!(
                "appended {} events, got {} positions",
                events.len(),
                ids.len()
            )));
        }
        ids.iter().map(|id| id.parse()).collect()
    }

    fn want(&self, channel: Channel, subscribed: bool) {
        let mut desired = lock(&self.desired);
        let changed = if subscribed {
            desired.channels.insert(channel.clone())
        } else {
            desired.channels.remove(&channel)
        };
        if changed {
            desired.changed.insert(channel);
            desired.version += 1;
            drop(desired);
            self.wake.notify_one();
        }
    }

    fn conn(&self) -> Result<(MultiplexedConnection, Arc<ConnState>), BackplaneError> {
        let live = self.live.read().unwrap_or_else(PoisonError::into_inner);
        match live.as_ref() {
            Some(live) if !live.state.dead.load(Ordering::Acquire) => {
                Ok((live.conn.clone(), live.state.clone()))
            }
            _ => Err(not_connected()),
        }
    }

    fn is_dead(&self) -> bool {
        self.live
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_none_or(|live| live.state.dead.load(Ordering::Acquire))
    }

    /// Runs one request on the connection within the timeout: never waits
    /// for a reconnection, never retries.
    async fn run<T, F, Fut>(&self, request: F) -> Result<T, BackplaneError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let result = match self.conn() {
            Ok((conn, state)) => match timeout(self.config.timeout, request(conn)).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => {
                    if e.is_unrecoverable_error() {
                        state.dead.store(true, Ordering::Release);
                        self.wake.notify_one();
                    }
                    classify(&e)
                }
                Err(_) => unavailable_after(self.config.timeout),
            },
            Err(e) => e,
        };
        self.errors.fetch_add(1, Ordering::Relaxed);
        Err(result)
    }

    /// Marks the connection lost.
    fn lost(&self) {
        self.live
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if self.connected.swap(false, Ordering::AcqRel) {
            self.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(target: "backplane", node = self.node, "redis backplane disconnected; reconnecting");
            // Wake flush_subscriptions waiters: they answer Unavailable.
            self.applied_changed.notify_waiters();
        }
    }

    /// Applies the subscriptions changed since the last call.
    async fn apply(&self, applied: &mut BTreeSet<Channel>) {
        let (add, remove, version) = {
            let mut desired = lock(&self.desired);
            let changed = std::mem::take(&mut desired.changed);
            let (add, remove): (Vec<Channel>, Vec<Channel>) = changed
                .into_iter()
                .filter(|c| desired.channels.contains(c) != applied.contains(c))
                .partition(|c| desired.channels.contains(c));
            (add, remove, desired.version)
        };
        if !add.is_empty() || !remove.is_empty() {
            let Ok((mut conn, state)) = self.conn() else {
                return;
            };
            let add_names: Vec<String> = add.iter().map(|c| self.keys.channel(c)).collect();
            let remove_names: Vec<String> = remove.iter().map(|c| self.keys.channel(c)).collect();
            let result = timeout(self.config.timeout, async {
                if !add_names.is_empty() {
                    conn.subscribe(&add_names).await?;
                }
                if !remove_names.is_empty() {
                    conn.unsubscribe(&remove_names).await?;
                }
                Ok::<_, RedisError>(())
            })
            .await;
            if let Err(e) = result
                .map_err(|_| unavailable_after(self.config.timeout))
                .and_then(|r| r.map_err(|e| classify(&e)))
            {
                // The connection's subscriptions are unknown now: replace it
                // (the reconnection applies everything and sends Resync).
                tracing::warn!(target: "backplane", node = self.node, error = %e, "redis backplane: subscribe failed");
                state.dead.store(true, Ordering::Release);
                self.wake.notify_one();
                return;
            }
            applied.extend(add);
            for c in &remove {
                applied.remove(c);
            }
        }
        self.applied_version.fetch_max(version, Ordering::AcqRel);
        self.applied_changed.notify_waiters();
    }

    /// PINGs; a connection that does not answer is replaced.
    async fn ping(&self) {
        let Ok((mut conn, state)) = self.conn() else {
            return;
        };
        let answer = timeout(
            self.config.timeout,
            redis::cmd("PING").query_async::<()>(&mut conn),
        )
        .await;
        if !matches!(answer, Ok(Ok(()))) {
            tracing::warn!(target: "backplane", node = self.node, "redis backplane: PING unanswered; replacing the connection");
            state.dead.store(true, Ordering::Release);
        }
    }

    /// Reconnects with backoff, subscribes to everything, then sends
    /// `Resync`; `None` when stopped meanwhile.
    async fn reconnect(
        &self,
        stop: &mut watch::Receiver<()>,
        applied: &mut BTreeSet<Channel>,
    ) -> Option<()> {
        let mut attempt: u32 = 0;
        loop {
            let jitter = RandomState::new().hash_one((self.node, attempt));
            let delay = backoff_delay(&self.config, attempt, jitter);
            tokio::select! {
                _ = stop.changed() => return None,
                () = tokio::time::sleep(delay) => {}
            }
            attempt = attempt.saturating_add(1);
            let opened = timeout(
                self.config.timeout,
                open(&self.client, &self.config, &self.delivery, &self.wake, true),
            )
            .await;
            let live = match opened {
                Ok(Ok(live)) => live,
                Ok(Err(e)) => {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(target: "backplane", node = self.node, attempt, error = %e, "redis backplane: reconnect failed");
                    continue;
                }
                Err(_) => {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(target: "backplane", node = self.node, attempt, "redis backplane: reconnect timed out");
                    continue;
                }
            };
            let (all, version) = {
                let mut desired = lock(&self.desired);
                desired.changed.clear();
                (desired.channels.clone(), desired.version)
            };
            if !all.is_empty() {
                let names: Vec<String> = all.iter().map(|c| self.keys.channel(c)).collect();
                let mut conn = live.conn.clone();
                if !matches!(
                    timeout(self.config.timeout, conn.subscribe(&names)).await,
                    Ok(Ok(()))
                ) {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            *applied = all;
            let state = live.state.clone();
            *self.live.write().unwrap_or_else(PoisonError::into_inner) = Some(live);
            self.connected.store(true, Ordering::Release);
            let reconnects = self.reconnects.fetch_add(1, Ordering::Relaxed) + 1;
            {
                let _order = lock(&self.delivery.order);
                if state.resync.swap(false, Ordering::AcqRel) {
                    self.delivery.hand(Incoming::Resync);
                }
            }
            self.applied_version.fetch_max(version, Ordering::AcqRel);
            self.applied_changed.notify_waiters();
            self.refresh_now.notify_one();
            tracing::info!(target: "backplane", node = self.node, reconnects, attempts = attempt, "redis backplane reconnected; subscriptions applied, resync sent");
            return Some(());
        }
    }
}

/// Opens a RESP3 connection whose pushes go to `delivery`.
async fn open(
    client: &Client,
    config: &RedisConfig,
    delivery: &Arc<Delivery>,
    wake: &Arc<Notify>,
    resync: bool,
) -> Result<Live, RedisError> {
    let state = Arc::new(ConnState {
        dead: AtomicBool::new(false),
        resync: AtomicBool::new(resync),
    });
    let (d, w, s) = (delivery.clone(), wake.clone(), state.clone());
    let push = move |info: PushInfo| {
        d.push(&s, &w, info);
        Ok::<(), std::convert::Infallible>(())
    };
    let connection = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.timeout))
        .set_response_timeout(Some(config.timeout))
        .set_push_sender(push);
    let conn = client
        .get_multiplexed_async_connection_with_config(&connection)
        .await?;
    Ok(Live { conn, state })
}

/// The connection task: applies subscriptions, checks the connection, and
/// reconnects; ends when the last handle is dropped.
async fn drive(shared: Arc<Shared>, mut stop: watch::Receiver<()>) {
    let mut applied = BTreeSet::new();
    let period = shared.config.ping_interval.max(Duration::from_millis(10));
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let mut check = false;
        tokio::select! {
            _ = stop.changed() => return,
            () = shared.wake.notified() => {}
            _ = ping.tick() => check = true,
        }
        if shared.stopping.load(Ordering::Acquire) {
            return;
        }
        if check {
            shared.ping().await;
        }
        if shared.is_dead() {
            shared.lost();
            applied.clear();
            if shared.reconnect(&mut stop, &mut applied).await.is_none() {
                return;
            }
        }
        shared.apply(&mut applied).await;
    }
}

/// Refreshes this node's presence entries every third of the TTL, one
/// pipeline for all rooms; ends when the last handle is dropped.
async fn refresh_presence(shared: Arc<Shared>, mut stop: watch::Receiver<()>) {
    let period = (shared.config.presence_ttl / 3).max(Duration::from_millis(10));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
            () = shared.refresh_now.notified() => {}
        }
        if !shared.connected.load(Ordering::Acquire) {
            continue; // the reconnection asks for a refresh
        }
        let _writes = shared.presence_writes.lock().await;
        let rooms = lock(&shared.presence).clone();
        if rooms.is_empty() {
            continue;
        }
        let ttl = shared.config.presence_ttl.as_millis().max(1).to_string();
        let mut invocations = Vec::with_capacity(rooms.len());
        for (room, members) in &rooms {
            let mut invocation = shared.scripts.presence_set.prepare_invoke();
            let (hash, expiry) = shared.keys.presence(room);
            invocation.key(hash).key(expiry).arg(&ttl);
            for (client, user) in members {
                invocation.arg(*client).arg(encode_user(user.as_deref()));
            }
            invocations.push(invocation);
        }
        let mut pipe = redis::pipe();
        for invocation in &invocations {
            pipe.invoke_script(invocation).ignore();
        }
        let script = &shared.scripts.presence_set;
        let result = shared
            .run(|mut conn| async move {
                match pipe.query_async::<()>(&mut conn).await {
                    Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                        script.load_async(&mut conn).await?;
                        pipe.query_async::<()>(&mut conn).await
                    }
                    other => other,
                }
            })
            .await;
        if let Err(e) = result {
            tracing::debug!(target: "backplane", node = shared.node, error = %e, "redis backplane: presence refresh failed");
        }
    }
}

/// The reconnection delay before attempt `attempt` (from 0):
/// `reconnect_min * 2^attempt`, at most `reconnect_max`, plus up to half of
/// it from `jitter` (any random `u64`).
fn backoff_delay(config: &RedisConfig, attempt: u32, jitter: u64) -> Duration {
    let base = config.reconnect_min;
    let exp = base
        .checked_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(Duration::MAX)
        .min(config.reconnect_max.max(base));
    let half = exp.as_nanos() / 2;
    let extra = if half == 0 {
        0
    } else {
        u128::from(jitter) % (half + 1)
    };
    exp + Duration::from_nanos(u64::try_from(extra).unwrap_or(u64::MAX))
}

/// A node number in `1..=65535` from the `INCR` counter (wraps, skips 0).
fn node_number(counter: u64) -> u64 {
    (counter.wrapping_sub(1) % 65535) + 1
}

/// Refuses a Redis older than 7.0 (`max-deleted-entry-id` and RESP3
/// pub/sub with commands on one connection).
fn check_version(info: &str) -> Result<(), BackplaneError> {
    let version = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .map(str::trim)
        .unwrap_or("");
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 7 {
        return Err(BackplaneError::Protocol(format!(
            "Redis 7.0 or later is needed, the server is {version:?}"
        )));
    }
    Ok(())
}

/// `+user`, or `-` for no user.
fn encode_user(user: Option<&str>) -> String {
    match user {
        Some(user) => format!("+{user}"),
        None => "-".to_string(),
    }
}

fn decode_user(info: &[u8]) -> Result<Option<String>, BackplaneError> {
    match info.split_first() {
        Some((b'+', user)) => String::from_utf8(user.to_vec())
            .map(Some)
            .map_err(|_| BackplaneError::Protocol("presence user is not UTF-8".into())),
        Some((b'-', [])) => Ok(None),
        _ => Err(BackplaneError::Protocol(format!(
            "not a presence entry: {:?}",
            String::from_utf8_lossy(info)
        ))),
    }
}

/// `[client, info, client, info, ...]` from the presence scripts.
fn read_members(reply: Vec<Bytes>) -> Result<Vec<PresenceMember>, BackplaneError> {
    let mut members = Vec::with_capacity(reply.len() / 2);
    for pair in reply.chunks(2) {
        let [client, info] = pair else {
            return Err(BackplaneError::Protocol("odd presence reply".into()));
        };
        let client = std::str::from_utf8(client)
            .ok()
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| BackplaneError::Protocol("presence client is not a number".into()))?;
        members.push(PresenceMember {
            client,
            user: decode_user(info)?,
        });
    }
    members.sort();
    Ok(members)
}

/// Builds the [`History`] from the history script's reply (see the gap rule
/// in the crate docs).
fn read_history(after: Position, reply: Vec<Bytes>) -> Result<History, BackplaneError> {
    let position = |b: &Bytes| -> Result<Position, BackplaneError> {
        std::str::from_utf8(b)
            .map_err(|_| BackplaneError::Protocol("stream id is not UTF-8".into()))?
            .parse()
    };
    let mut reply = reply.into_iter();
    let (Some(max_deleted), Some(first)) = (reply.next(), reply.next()) else {
        // No stream.
        return Ok(History {
            events: Vec::new(),
            gap: after != Position::default(),
            oldest: None,
        });
    };
    let max_deleted = position(&max_deleted)?;
    let oldest = if first.is_empty() {
        None
    } else {
        Some(position(&first)?)
    };
    let rest: Vec<Bytes> = reply.collect();
    let mut events = Vec::with_capacity(rest.len() / 2);
    let mut after_present = false;
    for pair in rest.chunks(2) {
        let [id, event] = pair else {
            return Err(BackplaneError::Protocol("odd history reply".into()));
        };
        let id = position(id)?;
        if id == after {
            after_present = true;
        } else {
            events.push((id, event.clone()));
        }
    }
    Ok(History {
        events,
        gap: is_gap(after, max_deleted, after_present),
        oldest,
    })
}

/// The exact gap rule for an existing stream whose deleted ids are exactly
/// those up to `max_deleted`.
fn is_gap(after: Position, max_deleted: Position, after_present: bool) -> bool {
    after < max_deleted || (after > max_deleted && after != Position::default() && !after_present)
}

fn classify(e: &RedisError) -> BackplaneError {
    let for_now = e.is_io_error()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
            )
        )
        || matches!(e.code(), Some("OOM" | "BUSY"));
    if for_now {
        BackplaneError::Unavailable(format!("redis: {e}"))
    } else {
        BackplaneError::Protocol(format!("redis: {e}"))
    }
}

fn not_connected() -> BackplaneError {
    BackplaneError::Unavailable("not connected to Redis (reconnecting)".into())
}

fn unavailable_after(timeout: Duration) -> BackplaneError {
    BackplaneError::Unavailable(format!("Redis did not answer within {timeout:?}"))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(ms: u64, seq: u64) -> Position {
        Position { ms, seq }
    }

    #[test]
    fn node_numbers_wrap_below_2_16_and_skip_0() {
        assert_eq!(node_number(1), 1);
        assert_eq!(node_number(65535), 65535);
        assert_eq!(node_number(65536), 1);
        assert_eq!(node_number(0), 1);
        assert!((0..200_000).all(|n| (1..=65535).contains(&node_number(n))));
    }

    #[test]
    fn topic_frames_split_at_the_first_newline() {
        let (pos, payload) = unframe(Bytes::from_static(b"12-3\nline\nnext")).unwrap();
        assert_eq!(pos, Some(p(12, 3)));
        assert_eq!(&payload[..], b"line\nnext");
        let (_, empty) = unframe(Bytes::from_static(b"1-0\n")).unwrap();
        assert!(empty.is_empty());
        let (none, hi) = unframe(Bytes::from_static(b"\nhi")).unwrap();
        assert_eq!((none, &hi[..]), (None, &b"hi"[..]));
        for bad in [&b"12-3"[..], b"x-1\nhi", b"-\nhi"] {
            assert!(unframe(Bytes::copy_from_slice(bad)).is_none());
        }
    }

    #[test]
    fn the_gap_rule_is_exact() {
        let zero = Position::default();
        // Nothing deleted: known positions and the start never gap.
        assert!(!is_gap(zero, zero, false));
        assert!(!is_gap(p(5, 0), zero, true));
        // A position the stream never held is unknown: gap.
        assert!(is_gap(p(5, 1), zero, false));
        // Deleted up to 9-0: before it, gap; it itself, none; after it,
        // known only if present.
        assert!(is_gap(zero, p(9, 0), false));
        assert!(is_gap(p(8, 0), p(9, 0), false));
        assert!(!is_gap(p(9, 0), p(9, 0), false));
        assert!(!is_gap(p(10, 0), p(9, 0), true));
        assert!(is_gap(p(10, 1), p(9, 0), false));
    }

    #[test]
    fn history_replies_read_back() {
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        let none = read_history(p(3, 0), vec![]).unwrap();
        assert!(none.events.is_empty() && none.gap && none.oldest.is_none());
        assert!(!read_history(Position::default(), vec![]).unwrap().gap);
        let h = read_history(
            p(3, 0),
            vec![b("0-0"), b("1-0"), b("3-0"), b("c"), b("4-0"), b("d")],
        )
        .unwrap();
        assert_eq!(h.events, vec![(p(4, 0), b("d"))]);
        assert!(!h.gap);
        assert_eq!(h.oldest, Some(p(1, 0)));
        assert!(read_history(p(3, 0), vec![b("0-0"), b(""), b("x")]).is_err());
    }

    #[test]
    fn presence_entries_encode_the_user_or_none() {
        for user in [None, Some("ana"), Some(""), Some("+-")] {
            assert_eq!(
                decode_user(encode_user(user).as_bytes())
                    .unwrap()
                    .as_deref(),
                user
            );
        }
        assert!(decode_user(b"").is_err());
        assert!(decode_user(b"-x").is_err());
        let members = read_members(vec![
            Bytes::from_static(b"7"),
            Bytes::from_static(b"-"),
            Bytes::from_static(b"2"),
            Bytes::from_static(b"+bo"),
        ])
        .unwrap();
        assert_eq!(
            members,
            vec![
                PresenceMember {
                    client: 2,
                    user: Some("bo".into())
                },
                PresenceMember {
                    client: 7,
                    user: None
                },
            ]
        );
    }

    #[test]
    fn backoff_doubles_to_the_cap_with_up_to_half_jitter() {
        let mut c = RedisConfig::new("redis://x");
        c.reconnect_min = Duration::from_millis(100);
        c.reconnect_max = Duration::from_secs(1);
        assert_eq!(backoff_delay(&c, 0, 0), Duration::from_millis(100));
        assert_eq!(backoff_delay(&c, 2, 0), Duration::from_millis(400));
        assert_eq!(backoff_delay(&c, 10, 0), Duration::from_secs(1));
        assert_eq!(backoff_delay(&c, 40, 0), Duration::from_secs(1));
        let most = backoff_delay(&c, 10, u64::MAX);
        assert!(most >= Duration::from_secs(1) && most <= Duration::from_millis(1500));
    }

    #[test]
    fn versions_before_7_are_refused() {
        assert!(check_version("# Server\r\nredis_version:7.0.15\r\n").is_ok());
        assert!(check_version("redis_version:8.2.0").is_ok());
        assert!(check_version("redis_version:6.2.14").is_err());
        assert!(check_version("nothing").is_err());
    }
}

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../backplane_redis.md")]
#[doc = include_str!("../../../types/infra/RedisBackplane.md")]
#[doc = include_str!("../../../types/infra/RedisConfig.md")]
#[doc = include_str!("../../../types/infra/RedisServer.md")]
#[doc = include_str!("../../../types/infra/RedisStatus.md")]
pub struct RegistryExamples;
