//! Keeps the set of open WebSocket connections: ids, a bounded outbox per client with a slow-client policy, counts, and stop with 1001 Going Away.
//!
//! A [`WsHub`] is a cheap-to-clone handle on the registry of live
//! [`WsClient`]s. Each client has an id (unique per hub, never reused) and an
//! *outbox*: the messages waiting for its connection's writer. The outbox is
//! bounded twice, in messages and in bytes ([`HubConfig`]); a send never
//! waits. When a send finds the outbox full, the hub's [`SlowPolicy`] decides:
//!
//! - [`SlowPolicy::Close`] (the default): the client is closed with
//!   `1013 Try Again Later` and reason `slow client`; what is queued is dropped,
//!   the close frame goes out first. One slow reader never holds up anyone.
//! - [`SlowPolicy::Drop`]: the message is dropped and counted; the client
//!   stays.
//!
//! Close requests never wait behind data: the writer takes them before the
//! queue. Counters of sends, drops, slow closes and disconnects, of what
//! writers took (messages and payload bytes) and histograms of latency and
//! queue depth (1 message in [`SAMPLE_EVERY`] to each client timed, so a
//! send rarely reads a clock) are in [`WsHub::stats`].
//!
//! **Frame once, write many.** An outbox holds server-to-client frames, not
//! messages: the bytes the writer puts on the wire as they are. A message
//! for many clients (`ws_broadcast`, `ws_emit`, `ws_cluster`) is framed
//! once into a [`Frame`] (a server's frames are unmasked, so they are the
//! same bytes for every recipient), and each outbox gets that frame with
//! [`WsClient::try_send_frame`]: a frame of at most [`COPY_MAX`] bytes is
//! copied back to back into the outbox's one buffer, a larger one is shared
//! (a reference count). Both were measured (`ws-bench`, 64-byte messages,
//! 16 in flight, server CPU per delivery, two interleaved rounds): copying
//! 0.284 and 0.284 µs at 1,000 clients against 0.297 and 0.299 µs shared,
//! and even at 5,000 (0.517 and 0.540 against 0.509 and 0.558 µs). Copying
//! is kept: a 66-byte copy into the buffer the writer writes with one
//! `write` is no dearer than a reference count taken and dropped per
//! recipient, the writer has one buffer instead of an `iovec` per message,
//! and nothing is shared between threads; large frames stay shared, so a
//! large broadcast exists once in memory. The writer
//! takes everything at once ([`Batch`]) and hands the drained buffer back
//! for the next messages, so a busy connection allocates nothing per
//! message; a waiting one holds no buffer at all: when its writer finds
//! the outbox empty, the buffer goes to a free list of the thread (at most
//! 4 MiB of buffers of up to 64 KiB each per thread), where the next burst's
//! first copy takes it, so a burst to thousands of clients allocates
//! nothing either (a new buffer starts at 1 KiB). Counted with callgrind
//! (5,000 clients, 64-byte frames, bursts of 4 frames, outbox work only):
//! 303 instructions per delivery with the free list, 668 without it, 40%
//! of which was `malloc`, `realloc` and `free`.
//!
//! Per recipient and message a send takes the client's own lock (never
//! contended but by its writer), appends the frame, counts it in the
//! client's own counters (summed by [`WsHub::stats`]; no counter shared by
//! the hub's clients is touched) and wakes the writer only if it waits for
//! data: one wake per burst.
//!
//! **A burst at once.** Several messages for the same clients (a client's
//! read burst that `rt-server`'s `/ws` broadcasts) are framed once together
//! into [`Frames`], and [`WsClient::try_send_frames`] gives them to a client
//! with one lock, one copy of the small frames and at most one wake. With
//! a broadcast of 1,000 or 5,000 clients, each recipient's outbox is
//! touched once per burst instead of once per message; `perf` had put 81%
//! of the per-message send's samples on taking the lock, that is, on
//! reaching the recipient's memory. Measured with `ws-bench` against a
//! build that sends message by message (16 in flight, three alternating
//! runs each, median server CPU per delivery): 0.664 against 0.719 µs at
//! 1,000 clients, 0.683 against 0.800 µs at 5,000.
//!
//! **Direct writes.** A connection may give its client the socket
//! ([`WsClient::set_direct_write`], a [`DirectWrite`]). While the
//! connection's writer waits with nothing to write, a frame made for many
//! clients ([`WsClient::try_send_frame`], [`WsClient::try_send_frames`]:
//! what `ws_broadcast`, `ws_emit` and `ws_cluster` send) is written to the
//! socket by its send, under the client's lock, when it is small (copied):
//! no wake and no poll of the connection's task per recipient, which
//! `perf` had put at about 14% of the server's CPU at 100 msg/s to 1,000
//! clients (the task's header, its state and the socket's read
//! registration, cold in cache for each recipient). What the socket does
//! not take goes to the writer, which is woken: the rest of a frame the
//! socket started goes before anything else, a close included
//! ([`Batch::take_unfinished`]). The connection calls [`WsClient::unpark`]
//! as soon as it has a frame of its own to write (a ping, a pong), so the
//! two never write at once and that frame goes before anything sent after
//! it. Measured with `ws-bench` against
//! the build before (three alternating runs, median server CPU per
//! delivery): 0.561 to 0.531 µs at 1,000 clients and 0.689 to 0.593 µs at
//! 5,000 (16 in flight), 9.50 to 8.08 µs at 100 msg/s x 1,000 and 10.52
//! to 8.92 µs at 10 msg/s x 5,000. A message for one client
//! ([`WsClient::try_send`]: answers, echoes, often many in a row) waits for
//! the writer, which writes what a run of them queued at once: with those
//! written one `send` each too, `rpc-bench` (100 connections, 16 in flight)
//! fell from about 390 k to 110 k requests/s. A broadcast does its
//! recipients' writes on its own thread; [`HubConfig::direct_writes`] off leaves them
//! to the writers, which a multi-threaded runtime spreads over its threads.
//!
//! The hub's only I/O is that write. `ws_handler` runs the connections: it
//! registers a client per upgraded socket, drains its outbox into the
//! socket with [`WsClient::poll_outgoing`], and unregisters it when the
//! socket ends.
//!
//! **Several nodes.** With [`HubConfig::node`] set, client ids carry the
//! node's number in their top 16 bits ([`node_of`]), so ids are unique across
//! the nodes of a cluster; a [`MembershipHook`] ([`WsHub::set_membership_hook`])
//! is told when a room gets its first member or loses its last, when a user
//! gets its first connection or loses its last, and of every join and leave
//! (`ws_cluster` subscribes and keeps presence with it). Without a hook,
//! joining and leaving cost what they did; sends never look at it.
//!
//! # Example
//!
//! ```
//! use ws_hub::{Batch, HubConfig, Message, Outgoing, WsHub};
//!
//! let hub = WsHub::new(HubConfig::default());
//! let client = hub.register(None).unwrap();
//! assert_eq!(hub.len(), 1);
//! client.try_send(Message::text("hello")).unwrap();
//!
//! let mut batch = Batch::new();
//! let waker = std::task::Waker::noop();
//! let next = client.poll_outgoing(&mut std::task::Context::from_waker(&waker), &mut batch);
//! assert!(matches!(next, std::task::Poll::Ready(Outgoing::Messages)));
//! assert_eq!(batch.to_messages(), [Message::text("hello")]);
//! assert_eq!(batch.take_chunks().next().unwrap().as_bytes(), b"\x81\x05hello");
//!
//! hub.stop(); // every client gets 1001 Going Away
//! assert_eq!(hub.len(), 0);
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// tungstenite itself, for close codes and frames (`tungstenite::protocol::CloseFrame`).
pub use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::Bytes;
/// The WebSocket message type of every signature here (tungstenite's, re-exported
/// so an app needs no tungstenite dependency of a matching version).
pub use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

mod frame;
mod pool;
pub use frame::{Frame, Frames};

/// A client's id: unique within its hub, never reused; `node << 48 | n`
/// with `n` counting from 1 ([`HubConfig::node`], [`node_of`]).
pub type ClientId = u64;

/// How far [`HubConfig::node`] is shifted into a [`ClientId`].
pub const NODE_SHIFT: u32 = 48;

/// The node whose hub gave out `id` ([`HubConfig::node`]).
pub fn node_of(id: ClientId) -> u64 {
    id >> NODE_SHIFT
}

/// What happens when a send finds a client's outbox full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowPolicy {
    /// Close the client with `1013 Try Again Later`, reason `slow client`.
    #[default]
    Close,
    /// Drop the message and count it; keep the client.
    Drop,
}

/// Settings of a hub; every field has a default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// Messages an outbox holds. Default: 256.
    pub queue_messages: usize,
    /// Payload bytes an outbox holds. Default: 1 MiB.
    pub queue_bytes: usize,
    /// What a full outbox means. Default: [`SlowPolicy::Close`].
    pub slow: SlowPolicy,
    /// Rooms one client may be in at once. Default: 100.
    pub max_rooms: usize,
    /// This node's number in a cluster (below 2^16): client ids are
    /// `node << 48 | n`, unique across nodes. Default: 0 (ids 1, 2, ...).
    pub node: u64,
    /// Frames made for many clients are written to the socket of a client
    /// whose writer waits with nothing to write, when its connection
    /// registered one ([`WsClient::set_direct_write`]). Off, every message goes through
    /// the connection's writer: a broadcast then only wakes writers, which
    /// a multi-threaded runtime spreads over its threads. Default: on.
    pub direct_writes: bool,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            queue_messages: 256,
            queue_bytes: 1 << 20,
            slow: SlowPolicy::Close,
            max_rooms: 100,
            node: 0,
            direct_writes: true,
        }
    }
}

/// A change of who is in a hub, as a [`MembershipHook`] is told of it.
///
/// `first`, `last`, [`UserArrived`](Membership::UserArrived) and
/// [`UserGone`](Membership::UserGone) describe the change they come from;
/// the hook runs after the hub's lock is released, so two changes made at
/// once on different threads can reach it in either order: a hook that
/// keeps state per room or user re-reads it ([`WsHub::room_len`],
/// [`WsHub::user_len`]) rather than counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership<'a> {
    /// `client` joined `room`; `first`: the room had no member before.
    Joined {
        room: &'a str,
        client: ClientId,
        user: Option<&'a str>,
        first: bool,
    },
    /// `client` left `room`, or its connection ended while in it; `last`:
    /// the room has no member now.
    Left {
        room: &'a str,
        client: ClientId,
        user: Option<&'a str>,
        last: bool,
    },
    /// `user`'s first connection registered.
    UserArrived { user: &'a str },
    /// `user`'s last connection was unregistered.
    UserGone { user: &'a str },
}

/// Told of each [`Membership`] change of a hub, outside the hub's lock; it
/// must not block (it runs on the thread that joined, left, registered or
/// unregistered).
pub type MembershipHook = Arc<dyn Fn(Membership<'_>) + Send + Sync>;

/// Counters of a hub since it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HubStats {
    /// Clients registered now.
    pub connections: usize,
    /// Clients ever registered.
    pub connected: u64,
    /// Clients unregistered (their connection ended).
    pub disconnected: u64,
    /// Messages queued for a client.
    pub sent: u64,
    /// Messages dropped because an outbox was full ([`SlowPolicy::Drop`]).
    pub dropped: u64,
    /// Clients closed because their outbox was full ([`SlowPolicy::Close`]).
    pub slow_closed: u64,
    /// Messages connections' writers took from outboxes to write.
    pub written: u64,
    /// Payload bytes of those messages.
    pub bytes_out: u64,
    /// Of `written`, the messages their send wrote to the socket itself
    /// (direct writes: [`WsClient::set_direct_write`]).
    pub direct: u64,
    /// Time from queuing a message to the socket write of its batch being
    /// flushed, in microseconds, for 1 message in [`SAMPLE_EVERY`]: a clock
    /// read per message would cost more than the rest of a send.
    pub latency_us: HubHistogram,
    /// Messages a writer took at once (the outbox's depth then), for the
    /// batches holding a sampled message.
    pub queue_depth: HubHistogram,
}

/// One message in this many sent to each client (its first, then every
/// 64th) is timed for [`HubStats::latency_us`] and [`HubStats::queue_depth`].
pub const SAMPLE_EVERY: u64 = 64;

/// Upper bounds of [`HubStats::latency_us`], in microseconds.
pub const LATENCY_BOUNDS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];
/// Upper bounds of [`HubStats::queue_depth`], in messages.
pub const DEPTH_BOUNDS: [u64; 12] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1_024, 4_096];

/// A histogram of sampled values: how many fell at or under each bound and
/// not under the previous one (`counts[12]`: over the last bound), and their sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HubHistogram {
    /// The upper bound of each bucket but the last, ascending.
    pub bounds: [u64; 12],
    /// Values per bucket (not cumulative); the last is over every bound.
    pub counts: [u64; 13],
    /// The sum of the values.
    pub sum: u64,
}

impl HubHistogram {
    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

#[derive(Debug, Default)]
struct Counters {
    connected: AtomicU64,
    disconnected: AtomicU64,
    /// `sent`, `written` and `bytes_out` of clients no longer registered
    /// (live ones count in their outbox).
    sent: AtomicU64,
    dropped: AtomicU64,
    slow_closed: AtomicU64,
    written: AtomicU64,
    bytes_out: AtomicU64,
    direct: AtomicU64,
    latency_us: Buckets,
    queue_depth: Buckets,
}

impl Counters {
    /// Moves what a client that is being unregistered counted into the
    /// hub's totals (under the index's write lock, so a snapshot counts it once).
    fn fold(&self, client: &WsClient) {
        let ob = client.lock();
        self.sent.fetch_add(ob.sent, Ordering::Relaxed);
        self.written.fetch_add(ob.written, Ordering::Relaxed);
        self.bytes_out.fetch_add(ob.bytes_out, Ordering::Relaxed);
        self.direct
            .fetch_add(ob.written_directly, Ordering::Relaxed);
    }
}

/// What every client of a hub shares: the outbox bounds, the slow-client
/// policy and the hub's counters.
#[derive(Debug)]
struct Common {
    queue_messages: usize,
    queue_bytes: usize,
    slow: SlowPolicy,
    direct_writes: bool,
    counters: Counters,
}

/// The atomic side of a [`HubHistogram`].
#[derive(Debug, Default)]
struct Buckets {
    counts: [AtomicU64; 13],
    sum: AtomicU64,
}

impl Buckets {
    fn record(&self, bounds: &[u64; 12], value: u64) {
        let i = bounds.partition_point(|b| *b < value);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    fn snapshot(&self, bounds: [u64; 12]) -> HubHistogram {
        HubHistogram {
            bounds,
            counts: std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)),
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

/// The registry of open connections; clones share it.
#[derive(Clone)]
pub struct WsHub(Arc<HubShared>);

struct HubShared {
    config: HubConfig,
    index: RwLock<Index>,
    next_id: AtomicU64,
    running: AtomicBool,
    common: Arc<Common>,
    membership: OnceLock<MembershipHook>,
}

/// Who is where: clients by id, and the ids of each room and each user.
/// Every lookup is a map access; nothing scans all connections.
#[derive(Default)]
struct Index {
    clients: HashMap<ClientId, WsClient>,
    rooms: HashMap<String, HashSet<ClientId>>,
    users: HashMap<String, HashSet<ClientId>>,
    /// The rooms of each client that is in any, for leaving them all at once.
    memberships: HashMap<ClientId, Vec<String>>,
}

/// What unregistering a client changed, for the membership hook: the rooms
/// it left (and whether it was their last member), whether its user is gone.
#[derive(Default)]
struct Departure {
    rooms: Vec<(String, bool)>,
    user_gone: bool,
}

impl Index {
    /// Removes `id` from every index; the client, if it was there, and,
    /// when `observed`, what changed.
    fn remove(&mut self, id: ClientId, observed: bool) -> Option<(WsClient, Departure)> {
        let client = self.clients.remove(&id)?;
        let mut departure = Departure::default();
        if let Some(user) = client.user() {
            departure.user_gone = remove_member(&mut self.users, user, id) == Some(true);
        }
        for room in self.memberships.remove(&id).unwrap_or_default() {
            let last = remove_member(&mut self.rooms, &room, id) == Some(true);
            if observed {
                departure.rooms.push((room, last));
            }
        }
        Some((client, departure))
    }
}

/// Removes `id` from the set `key`, and the set once empty: `None` if it
/// was not there, else whether the set is now empty (and gone).
fn remove_member(
    map: &mut HashMap<String, HashSet<ClientId>>,
    key: &str,
    id: ClientId,
) -> Option<bool> {
    let set = map.get_mut(key)?;
    let removed = set.remove(&id);
    let emptied = set.is_empty();
    if emptied {
        map.remove(key);
    }
    removed.then_some(emptied)
}

/// Who a connection is, as the server established it (an identify hook on
/// the upgrade request): a client message can never set or change it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The user; `None` for an anonymous connection. One user may hold several connections.
    pub user: Option<String>,
    /// Whatever else the server knows about the connection.
    pub metadata: BTreeMap<String, String>,
    /// The rooms the connection's credential allows it to join (a token's
    /// claim): exact names, or prefixes ending in `*`. `None`: the
    /// credential says nothing about rooms (the room guard decides alone).
    pub allowed_rooms: Option<Vec<String>>,
}

impl Identity {
    /// The identity of `user`, without metadata or room claims.
    pub fn user(user: impl Into<String>) -> Self {
        Identity {
            user: Some(user.into()),
            ..Identity::default()
        }
    }

    /// Whether [`Identity::allowed_rooms`] lets the connection join `room`:
    /// true when there is no such claim, or an entry is `room` or a `*`
    /// prefix of it.
    pub fn allows_room(&self, room: &str) -> bool {
        self.allowed_rooms.as_ref().is_none_or(|rooms| {
            rooms.iter().any(|r| match r.strip_suffix('*') {
                Some(prefix) => room.starts_with(prefix),
                None => r == room,
            })
        })
    }
}

/// Why the hub did not register a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegisterError {
    /// The hub is stopped: [`WsHub::start`] it again first.
    Stopped,
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RegisterError::Stopped => "the hub is stopped",
        })
    }
}

impl std::error::Error for RegisterError {}

/// Why a client did not join a room ([`WsHub::join`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinError {
    /// The name is empty, longer than [`MAX_ROOM_NAME`] bytes, or holds a
    /// control character (`name_validate`, [`NameKind::Room`](name_validate::NameKind::Room)).
    InvalidName,
    /// The client is not registered (its connection ended).
    NotRegistered,
    /// The client is already in [`HubConfig::max_rooms`] rooms.
    TooManyRooms,
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JoinError::InvalidName => "invalid room name",
            JoinError::NotRegistered => "the connection is gone",
            JoinError::TooManyRooms => "too many rooms for this connection",
        })
    }
}

impl std::error::Error for JoinError {}

/// Longest room name, in bytes (`name_validate`'s limit for rooms).
pub use name_validate::MAX_ROOM_NAME;

impl WsHub {
    /// A running hub with no clients.
    ///
    /// # Panics
    ///
    /// If [`HubConfig::node`] is 2^16 or more (it would not fit the ids).
    pub fn new(config: HubConfig) -> Self {
        assert!(
            config.node < 1 << (64 - NODE_SHIFT),
            "HubConfig::node must be below 2^16, got {}",
            config.node
        );
        WsHub(Arc::new(HubShared {
            config: HubConfig {
                queue_messages: config.queue_messages.max(1),
                queue_bytes: config.queue_bytes.max(1),
                slow: config.slow,
                max_rooms: config.max_rooms,
                node: config.node,
                direct_writes: config.direct_writes,
            },
            index: RwLock::new(Index::default()),
            next_id: AtomicU64::new(config.node << NODE_SHIFT | 1),
            running: AtomicBool::new(true),
            common: Arc::new(Common {
                queue_messages: config.queue_messages.max(1),
                queue_bytes: config.queue_bytes.max(1),
                slow: config.slow,
                direct_writes: config.direct_writes,
                counters: Counters::default(),
            }),
            membership: OnceLock::new(),
        }))
    }

    /// Sets the hook told of every [`Membership`] change from now on (set
    /// it before clients register: earlier changes are not replayed). Once
    /// per hub: false, and the hook is not taken, if one is set already.
    pub fn set_membership_hook(&self, hook: MembershipHook) -> bool {
        self.0.membership.set(hook).is_ok()
    }

    fn hook(&self) -> Option<&MembershipHook> {
        self.0.membership.get()
    }

    /// The settings the hub was made with.
    pub fn config(&self) -> &HubConfig {
        &self.0.config
    }

    /// Registers a new anonymous client (for the connection from `peer`) and returns it.
    pub fn register(&self, peer: Option<SocketAddr>) -> Result<WsClient, RegisterError> {
        self.register_as(peer, Identity::default())
    }

    /// Registers a new client with the identity the server established.
    pub fn register_as(
        &self,
        peer: Option<SocketAddr>,
        identity: Identity,
    ) -> Result<WsClient, RegisterError> {
        if !self.is_running() {
            return Err(RegisterError::Stopped);
        }
        let id = self.0.next_id.fetch_add(1, Ordering::Relaxed);
        let client = WsClient(Arc::new(ClientShared {
            id,
            peer,
            identity: (identity != ANONYMOUS).then(|| Box::new(identity)),
            common: self.0.common.clone(),
            interrupted: AtomicBool::new(false),
            outbox: Mutex::new(Outbox::default()),
        }));
        let arrived = {
            let mut ix = write(&self.0.index);
            let arrived = client.user().is_some_and(|user| {
                let ids = ix.users.entry(user.to_string()).or_default();
                ids.insert(id);
                ids.len() == 1
            });
            ix.clients.insert(id, client.clone());
            arrived
        };
        self.0
            .common
            .counters
            .connected
            .fetch_add(1, Ordering::Relaxed);
        if arrived && let (Some(hook), Some(user)) = (self.hook(), client.user()) {
            hook(Membership::UserArrived { user });
        }
        // A stop that raced with this registration has not seen the client.
        if !self.is_running() {
            self.unregister(id);
            client.close(Some(going_away()));
            return Err(RegisterError::Stopped);
        }
        Ok(client)
    }

    /// Removes a client (its connection ended) from the hub, its rooms and
    /// its user; idempotent.
    pub fn unregister(&self, id: ClientId) -> Option<WsClient> {
        let hook = self.hook();
        let (client, departure) = {
            let mut ix = write(&self.0.index);
            let (client, departure) = ix.remove(id, hook.is_some())?;
            self.0.common.counters.fold(&client);
            (client, departure)
        };
        self.0
            .common
            .counters
            .disconnected
            .fetch_add(1, Ordering::Relaxed);
        if let Some(hook) = hook {
            let user = client.user();
            for (room, last) in &departure.rooms {
                hook(Membership::Left {
                    room,
                    client: id,
                    user,
                    last: *last,
                });
            }
            if departure.user_gone
                && let Some(user) = user
            {
                hook(Membership::UserGone { user });
            }
        }
        Some(client)
    }

    /// The client with `id`, if it is registered: a lookup, not a scan.
    pub fn client(&self, id: ClientId) -> Option<WsClient> {
        read(&self.0.index).clients.get(&id).cloned()
    }

    /// Calls `f` with every registered client, under a read lock: `f` must
    /// not register, unregister, join or leave (sending is fine, it never waits).
    pub fn for_each(&self, mut f: impl FnMut(&WsClient)) {
        for c in read(&self.0.index).clients.values() {
            f(c);
        }
    }

    /// Puts a registered client in `room`: `Ok(false)` if it was already
    /// there (idempotent); an error if the name is not a room name
    /// (`name_validate`), or the client is gone or in too many rooms.
    pub fn join(&self, client: &WsClient, room: &str) -> Result<bool, JoinError> {
        if name_validate::name_validate(name_validate::NameKind::Room, room).is_err() {
            return Err(JoinError::InvalidName);
        }
        let first = {
            let mut ix = write(&self.0.index);
            let ix = &mut *ix;
            if !ix.clients.contains_key(&client.id()) {
                return Err(JoinError::NotRegistered);
            }
            if ix.rooms.get(room).is_some_and(|m| m.contains(&client.id())) {
                return Ok(false);
            }
            let mine = ix.memberships.entry(client.id()).or_default();
            if mine.len() >= self.0.config.max_rooms {
                return Err(JoinError::TooManyRooms);
            }
            mine.push(room.to_string());
            let members = ix.rooms.entry(room.to_string()).or_default();
            members.insert(client.id());
            members.len() == 1
        };
        if let Some(hook) = self.hook() {
            hook(Membership::Joined {
                room,
                client: client.id(),
                user: client.user(),
                first,
            });
        }
        Ok(true)
    }

    /// Takes a client out of `room`; false if it was not there. Idempotent.
    pub fn leave(&self, client: &WsClient, room: &str) -> bool {
        let last = {
            let mut ix = write(&self.0.index);
            let ix = &mut *ix;
            let Some(last) = remove_member(&mut ix.rooms, room, client.id()) else {
                return false;
            };
            if let Some(rooms) = ix.memberships.get_mut(&client.id()) {
                rooms.retain(|r| r != room);
                if rooms.is_empty() {
                    ix.memberships.remove(&client.id());
                }
            }
            last
        };
        if let Some(hook) = self.hook() {
            hook(Membership::Left {
                room,
                client: client.id(),
                user: client.user(),
                last,
            });
        }
        true
    }

    /// Whether `client` is in `room`.
    pub fn is_member(&self, client: &WsClient, room: &str) -> bool {
        read(&self.0.index)
            .rooms
            .get(room)
            .is_some_and(|m| m.contains(&client.id()))
    }

    /// The rooms `client` is in.
    pub fn rooms_of(&self, client: &WsClient) -> Vec<String> {
        read(&self.0.index)
            .memberships
            .get(&client.id())
            .cloned()
            .unwrap_or_default()
    }

    /// Connections in `room`.
    pub fn room_len(&self, room: &str) -> usize {
        read(&self.0.index).rooms.get(room).map_or(0, HashSet::len)
    }

    /// Connections of `user`.
    pub fn user_len(&self, user: &str) -> usize {
        read(&self.0.index).users.get(user).map_or(0, HashSet::len)
    }

    /// Every room with its number of connections (for dashboards, not the hot path).
    pub fn rooms(&self) -> BTreeMap<String, usize> {
        read(&self.0.index)
            .rooms
            .iter()
            .map(|(r, m)| (r.clone(), m.len()))
            .collect()
    }

    /// Calls `f` once with each live client that is any of `clients`, in any
    /// of `rooms`, or a connection of any of `users` (each client once,
    /// however many sets it is in), under a read lock. Costs the size of
    /// those sets, not the number of connections.
    pub fn for_each_in(
        &self,
        clients: &[ClientId],
        rooms: &[String],
        users: &[String],
        mut f: impl FnMut(&WsClient),
    ) {
        let ix = read(&self.0.index);
        // One room or one user is already a set: no need to de-duplicate.
        let one_set = clients.is_empty() && rooms.len() + users.len() == 1;
        let mut seen: HashSet<ClientId> = HashSet::new();
        let sets = rooms
            .iter()
            .filter_map(|r| ix.rooms.get(r))
            .chain(users.iter().filter_map(|u| ix.users.get(u)));
        let ids = clients.iter().chain(sets.flatten());
        for id in ids {
            if (one_set || seen.insert(*id))
                && let Some(c) = ix.clients.get(id)
            {
                f(c);
            }
        }
    }

    /// The registered clients now.
    pub fn clients(&self) -> Vec<WsClient> {
        read(&self.0.index).clients.values().cloned().collect()
    }

    /// How many clients are registered.
    pub fn len(&self) -> usize {
        read(&self.0.index).clients.len()
    }

    /// Whether no client is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lets clients register again after [`stop`](WsHub::stop); idempotent.
    pub fn start(&self) {
        self.0.running.store(true, Ordering::SeqCst);
    }

    /// Refuses new clients, closes every client with `1001 Going Away` and
    /// unregisters them; idempotent.
    pub fn stop(&self) {
        self.0.running.store(false, Ordering::SeqCst);
        let hook = self.hook();
        let mut left: Vec<(String, ClientId, bool)> = Vec::new();
        let mut users_gone: Vec<String> = Vec::new();
        let all: Vec<WsClient> = {
            let mut ix = write(&self.0.index);
            if hook.is_some() {
                for (room, members) in ix.rooms.drain() {
                    let n = members.len();
                    left.extend(
                        (members.into_iter().enumerate())
                            .map(|(i, id)| (room.clone(), id, i + 1 == n)),
                    );
                }
                users_gone.extend(ix.users.drain().map(|(user, _)| user));
            }
            ix.rooms.clear();
            ix.users.clear();
            ix.memberships.clear();
            let all: Vec<WsClient> = ix.clients.drain().map(|(_, c)| c).collect();
            for c in &all {
                self.0.common.counters.fold(c);
            }
            all
        };
        if let Some(hook) = hook {
            let users: HashMap<ClientId, Option<&str>> =
                all.iter().map(|c| (c.id(), c.user())).collect();
            for (room, client, last) in &left {
                hook(Membership::Left {
                    room,
                    client: *client,
                    user: users.get(client).copied().flatten(),
                    last: *last,
                });
            }
            for user in &users_gone {
                hook(Membership::UserGone { user });
            }
        }
        self.0
            .common
            .counters
            .disconnected
            .fetch_add(all.len() as u64, Ordering::Relaxed);
        for c in all {
            c.close(Some(going_away()));
        }
    }

    /// Whether the hub accepts new clients.
    pub fn is_running(&self) -> bool {
        self.0.running.load(Ordering::SeqCst)
    }

    /// A snapshot of the counters. Visits every registered client (what
    /// live connections wrote is counted in their outboxes, not in a shared
    /// counter per message): for a scrape or a stats page, not a hot path.
    pub fn stats(&self) -> HubStats {
        let c = &self.0.common.counters;
        let (connections, sent, written, bytes_out, direct) = {
            let ix = read(&self.0.index);
            let folded = (
                c.sent.load(Ordering::Relaxed),
                c.written.load(Ordering::Relaxed),
                c.bytes_out.load(Ordering::Relaxed),
                c.direct.load(Ordering::Relaxed),
            );
            let (s, w, b, d) = ix.clients.values().fold(folded, |(s, w, b, d), client| {
                let ob = client.lock();
                (
                    s + ob.sent,
                    w + ob.written,
                    b + ob.bytes_out,
                    d + ob.written_directly,
                )
            });
            (ix.clients.len(), s, w, b, d)
        };
        HubStats {
            connections,
            connected: c.connected.load(Ordering::Relaxed),
            disconnected: c.disconnected.load(Ordering::Relaxed),
            sent,
            dropped: c.dropped.load(Ordering::Relaxed),
            slow_closed: c.slow_closed.load(Ordering::Relaxed),
            written,
            bytes_out,
            direct,
            latency_us: c.latency_us.snapshot(LATENCY_BOUNDS_US),
            queue_depth: c.queue_depth.snapshot(DEPTH_BOUNDS),
        }
    }
}

impl fmt::Debug for WsHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsHub")
            .field("connections", &self.len())
            .field("running", &self.is_running())
            .finish()
    }
}

/// `1001 Going Away`, what a stopping server says.
pub fn going_away() -> CloseFrame {
    CloseFrame {
        code: CloseCode::Away,
        reason: "server shutting down".into(),
    }
}

/// One connection as the hub knows it; clones share it.
#[derive(Clone)]
pub struct WsClient(Arc<ClientShared>);

/// In this order (`repr(C)`): the flag the writer reads first at each wake
/// sits beside the outbox's lock, in the cache line both take.
#[repr(C)]
struct ClientShared {
    id: ClientId,
    peer: Option<SocketAddr>,
    /// `None`: anonymous, no metadata, no room claim (most connections).
    identity: Option<Box<Identity>>,
    common: Arc<Common>,
    /// Set by [`WsClient::interrupt`], cleared by [`WsClient::take_interrupt`].
    interrupted: AtomicBool,
    outbox: Mutex<Outbox>,
}

/// What an anonymous client's [`WsClient::identity`] is.
static ANONYMOUS: Identity = Identity {
    user: None,
    metadata: BTreeMap::new(),
    allowed_rooms: None,
};

/// Frames at most this long (header and payload) are copied into a
/// recipient's outbox; longer ones are shared (see the crate docs).
pub const COPY_MAX: usize = 1024;

/// Frames waiting for a writer, in order: `chunks`, then `tail`. Small
/// frames are copied back to back into `tail`; a large one is shared,
/// after what `tail` held.
#[derive(Debug, Default)]
struct Queue {
    chunks: Vec<Chunk>,
    tail: Vec<u8>,
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.tail.is_empty()
    }

    /// The buffer small frames are copied into, with room for `len` more
    /// bytes: this thread's kept buffer when it has none yet.
    fn tail_for(&mut self, len: usize) -> &mut Vec<u8> {
        if self.tail.capacity() == 0 {
            self.tail = pool::take(len);
        }
        &mut self.tail
    }

    /// Empties the queue, keeping its copy buffers for this thread's next
    /// burst (`pool`).
    fn release(&mut self) {
        for chunk in std::mem::take(&mut self.chunks) {
            if let Chunk::Copied(run) = chunk {
                pool::give(run);
            }
        }
        pool::give(std::mem::take(&mut self.tail));
    }

    fn push_shared(&mut self, frame: Bytes) {
        if !self.tail.is_empty() {
            let run = std::mem::take(&mut self.tail);
            self.chunks.push(Chunk::Copied(run));
        }
        self.chunks.push(Chunk::Shared(frame));
    }

    /// Moves `other`'s frames behind this queue's.
    fn append(&mut self, other: &mut Queue) {
        if other.chunks.is_empty() {
            self.tail.append(&mut other.tail);
            return;
        }
        if !self.tail.is_empty() {
            let run = std::mem::take(&mut self.tail);
            self.chunks.push(Chunk::Copied(run));
        }
        self.chunks.append(&mut other.chunks);
        self.tail = std::mem::take(&mut other.tail);
    }
}

/// A run of whole frames of a [`Batch`], in the order they are to be
/// written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// Frames copied back to back into a buffer of this client's own.
    Copied(Vec<u8>),
    /// One frame shared with the other recipients of the same message.
    Shared(Bytes),
}

impl Chunk {
    /// The bytes to write.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Chunk::Copied(v) => v,
            Chunk::Shared(b) => b,
        }
    }
}

/// What a writer takes from an outbox at once ([`WsClient::poll_outgoing`]):
/// whole server-to-client frames, ready to write as they are, in
/// [`Chunk`]s. Reuse one batch per connection: the buffer of a drained
/// batch goes back to the outbox for the next messages, so a busy
/// connection allocates nothing per message, and a waiting one holds no
/// buffer.
#[derive(Debug, Default)]
pub struct Batch {
    queue: Queue,
    messages: usize,
    /// What a direct write left of frames it started.
    unfinished: Option<Vec<u8>>,
}

/// A drained buffer at most this large is kept for the next messages.
const RECYCLE_MAX: usize = 64 * 1024;

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Whether the batch holds no frame.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.unfinished.is_none()
    }

    /// The end of frames a direct write started ([`WsClient::set_direct_write`]),
    /// if any: to be written before anything else, and never dropped for a
    /// close (the peer has the start of them).
    pub fn take_unfinished(&mut self) -> Option<Vec<u8>> {
        self.unfinished.take()
    }

    /// Messages in the batch.
    pub fn messages(&self) -> usize {
        self.messages
    }

    /// Bytes in the batch (headers and payloads).
    pub fn len(&self) -> usize {
        self.queue.tail.len()
            + (self.queue.chunks.iter())
                .map(|c| c.as_bytes().len())
                .sum::<usize>()
    }

    /// Takes the frames out, in order, leaving the batch empty.
    pub fn take_chunks(&mut self) -> impl Iterator<Item = Chunk> + use<> {
        self.messages = 0;
        let chunks = std::mem::take(&mut self.queue.chunks);
        let tail = std::mem::take(&mut self.queue.tail);
        let tail = (!tail.is_empty()).then_some(Chunk::Copied(tail));
        chunks.into_iter().chain(tail)
    }

    /// Gives back the buffer of a [`Chunk::Copied`] once written: the
    /// outbox fills it next, instead of allocating one.
    pub fn recycle(&mut self, mut buffer: Vec<u8>) {
        if self.queue.tail.capacity() == 0 && buffer.capacity() <= RECYCLE_MAX {
            buffer.clear();
            self.queue.tail = buffer;
        }
    }

    /// The messages of the batch, decoded back from their frames (for tests
    /// and logs).
    pub fn to_messages(&self) -> Vec<Message> {
        let mut out = Vec::with_capacity(self.messages);
        for chunk in &self.queue.chunks {
            frame::decode_all(chunk.as_bytes(), &mut out);
        }
        frame::decode_all(&self.queue.tail, &mut out);
        out
    }

    /// Drops the frames and lets go of the buffers (kept by this thread
    /// for the next burst, up to a bound, or freed).
    pub fn clear(&mut self) {
        self.queue.release();
        self.messages = 0;
    }
}

/// In this order (`repr(C)`): what every send and every writer's wake
/// reads comes first, next to the lock, so a recipient costs fewer cache
/// lines; the counters and samples, touched less, come last.
#[derive(Default)]
#[repr(C)]
struct Outbox {
    /// Messages in `queue`, and their payload bytes.
    messages: usize,
    bytes: usize,
    /// Closed: nothing is accepted any more.
    closed: bool,
    /// The writer is gone (the connection ended).
    gone: bool,
    /// The writer waits for messages (not only for a close): a send wakes it.
    wants_data: bool,
    /// The writer waits with nothing to write and a [`DirectWrite`] is
    /// set: a frame for many clients is written to the socket at once.
    parked: bool,
    /// The queue's first chunk is what a direct write left of the frames
    /// it started: the writer writes it before anything else, a close
    /// included.
    unfinished: bool,
    /// A close to send, then stop.
    close: Option<Closing>,
    waker: Option<Waker>,
    queue: Queue,
    direct: Option<Arc<dyn DirectWrite>>,
    /// Messages queued, messages the writer took, and their payload bytes:
    /// counted here, under the lock a send takes anyway, and added up by
    /// [`WsHub::stats`], so a send touches no counter other clients share.
    sent: u64,
    written: u64,
    bytes_out: u64,
    /// Of `written`, the messages a send wrote to the socket itself.
    written_directly: u64,
    /// When the sampled message still in `queue` was queued.
    sampled: Stamp,
    /// When the sampled message of the batch being written was queued.
    in_flight: Stamp,
}

/// A moment, as nanoseconds since the first one this process took, plus
/// one (0: none): 8 bytes where `Option<Instant>` takes 16 in every outbox.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Stamp(u64);

impl Stamp {
    fn now() -> Stamp {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        let epoch = *EPOCH.get_or_init(Instant::now);
        let ns = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        Stamp(ns + 1)
    }

    fn is_some(self) -> bool {
        self.0 != 0
    }

    fn take(&mut self) -> Option<Stamp> {
        self.is_some().then(|| std::mem::take(self))
    }

    /// Microseconds from this moment to now.
    fn elapsed_us(self) -> u64 {
        Stamp::now().0.saturating_sub(self.0) / 1000
    }
}

/// A close the writer is to send (the frame boxed: the outbox of an open
/// connection stays small).
#[derive(Debug)]
enum Closing {
    /// Before anything queued, which is dropped.
    Now(Option<Box<CloseFrame>>),
    /// Once the queue is written.
    After(Option<Box<CloseFrame>>),
}

impl Outbox {
    /// Counts the queued messages as taken by the writer (and a sample's
    /// queue depth) and returns how many there were.
    fn take_messages(&mut self, counters: &Counters) -> usize {
        if let Some(queued) = self.sampled.take() {
            self.in_flight = queued;
            counters
                .queue_depth
                .record(&DEPTH_BOUNDS, self.messages as u64);
        }
        self.written += self.messages as u64;
        self.bytes_out += self.bytes as u64;
        self.bytes = 0;
        std::mem::take(&mut self.messages)
    }

    /// Records the latency of the sampled message the writer wrote.
    fn record_written(&mut self, counters: &Counters) {
        if let Some(queued) = self.in_flight.take() {
            let us = queued.elapsed_us();
            counters.latency_us.record(&LATENCY_BOUNDS_US, us);
        }
    }

    /// A send to a parked writer: the queued frames (small ones, copied)
    /// go to the socket at once. True when the socket took them all, and
    /// the writer stays parked; otherwise the writer must be woken: it
    /// writes first what the socket did not take of the frames started
    /// (`unfinished`), or the queue as it is if the socket took nothing.
    fn write_directly(&mut self, counters: &Counters) -> bool {
        if !self.parked || !self.queue.chunks.is_empty() || self.queue.tail.is_empty() {
            return false;
        }
        let Some(socket) = &self.direct else {
            return false;
        };
        let len = self.queue.tail.len();
        match socket.try_write(&self.queue.tail) {
            Ok(n) if n == len => {
                self.written_directly += self.take_messages(counters) as u64;
                self.record_written(counters);
                self.queue.release();
                true
            }
            Ok(n) if n > 0 => {
                let rest = self.queue.tail[n..].to_vec();
                self.written_directly += self.take_messages(counters) as u64;
                self.queue.release();
                self.queue.chunks.push(Chunk::Copied(rest));
                self.unfinished = true;
                self.parked = false;
                false
            }
            _ => {
                self.parked = false;
                false
            }
        }
    }

    /// Takes what a direct write left unfinished, if anything.
    fn take_unfinished(&mut self) -> Option<Vec<u8>> {
        if !std::mem::take(&mut self.unfinished) {
            return None;
        }
        match self.queue.chunks.remove(0) {
            Chunk::Copied(rest) => Some(rest),
            Chunk::Shared(rest) => Some(rest.to_vec()),
        }
    }

    /// Registers the writer's waker (`data`: it waits for messages too).
    fn wait(&mut self, cx: &Context<'_>, data: bool) {
        self.wants_data = data;
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.waker = Some(cx.waker().clone());
        }
    }
}

/// A connection's socket that a send may write to at once, while the
/// connection's writer waits with nothing to write
/// ([`WsClient::set_direct_write`]; `ws_handler` registers one for each
/// plain-TCP connection).
pub trait DirectWrite: fmt::Debug + Send + Sync {
    /// Writes what the socket takes now, without waiting: how many bytes it
    /// took (fewer than `buf` when it is nearly full), or an error
    /// (`WouldBlock`: none).
    fn try_write(&self, buf: &[u8]) -> std::io::Result<usize>;
}

/// Why a message was not queued for a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The connection is closed or closing.
    Closed,
    /// The outbox was full: the message was dropped ([`SlowPolicy::Drop`]).
    Dropped,
    /// The outbox was full: the client is being closed with 1013 ([`SlowPolicy::Close`]).
    SlowClosed,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Closed => "the WebSocket connection is closed",
            SendError::Dropped => "the client's outbox is full: message dropped",
            SendError::SlowClosed => "the client's outbox is full: closing it as a slow client",
        })
    }
}

impl std::error::Error for SendError {}

/// What [`WsClient::poll_outgoing`] found for the writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// Frames were moved into the batch: write them, then flush once.
    Messages,
    /// Send this close frame (none: a close without code) and stop.
    Close(Option<CloseFrame>),
    /// The connection is gone: stop without writing.
    Gone,
}

impl WsClient {
    /// The client's id.
    pub fn id(&self) -> ClientId {
        self.0.id
    }

    /// The peer address of its connection, when known.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.0.peer
    }

    /// Who the server established this connection to be.
    pub fn identity(&self) -> &Identity {
        self.0.identity.as_deref().unwrap_or(&ANONYMOUS)
    }

    /// The connection's user, if not anonymous.
    pub fn user(&self) -> Option<&str> {
        self.identity().user.as_deref()
    }

    fn lock(&self) -> MutexGuard<'_, Outbox> {
        self.0.outbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `msg` for the writer without waiting; a full outbox is handled
    /// by the hub's [`SlowPolicy`] and reported as an error. The message is
    /// framed here, into the outbox (see [`try_send_frame`](WsClient::try_send_frame)
    /// to send one message to many clients). A [`Message::Close`] is
    /// [`close_after_queued`](WsClient::close_after_queued).
    pub fn try_send(&self, msg: Message) -> Result<(), SendError> {
        if let Message::Close(frame) = msg {
            return match self.close_after_queued(frame) {
                true => Ok(()),
                false => Err(SendError::Closed),
            };
        }
        let len = frame::encoded_len(&msg);
        self.push(frame::payload_len(&msg), false, |q| {
            if len <= COPY_MAX {
                frame::encode(&msg, q.tail_for(len));
            } else {
                q.push_shared(Frame::new(&msg).bytes().clone());
            }
        })
    }

    /// Queues a frame made once for many clients: copied into the outbox
    /// when it is at most [`COPY_MAX`] bytes, shared otherwise. Never waits;
    /// errors as [`try_send`](WsClient::try_send).
    pub fn try_send_frame(&self, frame: &Frame) -> Result<(), SendError> {
        self.push(frame.payload_len(), true, |q| {
            let bytes = frame.bytes();
            if bytes.len() <= COPY_MAX {
                q.tail_for(bytes.len()).extend_from_slice(bytes);
            } else {
                q.push_shared(bytes.clone());
            }
        })
    }

    /// Queues several frames made once for many clients, with one lock and
    /// at most one wake: each copied or shared as
    /// [`try_send_frame`](WsClient::try_send_frame) does, small neighbours
    /// in one copy. Never waits. Returns how many were queued: all of them
    /// when they fit; when they do not, the outcome is that of sending them
    /// one by one (the close policy closes the client, `Err`; the drop policy
    /// queues those that fit and drops the others). `Err(Closed)`: none.
    /// No frames: `Ok(0)`, and nothing touched.
    pub fn try_send_frames(&self, frames: &Frames) -> Result<usize, SendError> {
        if frames.is_empty() {
            return Ok(0);
        }
        let all = self.queue(frames.len(), frames.payload_len(), true, |q| {
            let bytes = frames.bytes();
            // The small frames not yet copied: copied together, up to the
            // next large one or the end.
            let mut run = 0..0;
            for frame in frames.ranges() {
                if frame.len() > COPY_MAX {
                    if !run.is_empty() {
                        q.tail_for(run.len()).extend_from_slice(&bytes[run]);
                    }
                    run = frame.end..frame.end;
                    q.push_shared(bytes.slice(frame));
                } else {
                    run.end = frame.end;
                }
            }
            if !run.is_empty() {
                q.tail_for(run.len()).extend_from_slice(&bytes[run]);
            }
        });
        match all {
            Some(sent) => sent.map(|()| frames.len()),
            None if frames.len() == 1 || self.0.common.slow == SlowPolicy::Close => {
                Err(self.full())
            }
            None => {
                let mut queued = 0;
                for frame in frames.iter() {
                    match self.try_send_frame(&frame) {
                        Ok(()) => queued += 1,
                        Err(SendError::Dropped) => {}
                        Err(e) => return if queued == 0 { Err(e) } else { Ok(queued) },
                    }
                }
                Ok(queued)
            }
        }
    }

    /// Queues one message of `payload` bytes, which `put` appends to the
    /// queue, unless the outbox is closed or full; `direct` as [`queue`](WsClient::queue).
    fn push(
        &self,
        payload: usize,
        direct: bool,
        put: impl FnOnce(&mut Queue),
    ) -> Result<(), SendError> {
        self.queue(1, payload, direct, put)
            .unwrap_or_else(|| Err(self.full()))
    }

    /// Queues `messages` messages of `payload` bytes in all, which `put`
    /// appends to the queue, unless the outbox is closed (`Err`) or they do
    /// not fit (`None`: nothing queued, the slow-client policy not applied).
    /// `direct`: a frame made for many clients, which may go to a waiting
    /// writer's socket at once; a message for this client alone (answers,
    /// echoes, many of them in a row) waits for the writer, which writes all
    /// that a burst of them queued at once.
    fn queue(
        &self,
        messages: usize,
        payload: usize,
        direct: bool,
        put: impl FnOnce(&mut Queue),
    ) -> Option<Result<(), SendError>> {
        let common = &self.0.common;
        let waker = {
            let mut ob = self.lock();
            if ob.closed {
                return Some(Err(SendError::Closed));
            }
            let full = ob.messages + messages > common.queue_messages
                // (one message over the byte bound fits an empty outbox)
                || (ob.bytes + payload > common.queue_bytes && ob.messages + messages > 1);
            if full {
                return None;
            }
            put(&mut ob.queue);
            ob.messages += messages;
            ob.bytes += payload;
            // The client's own count picks the samples: the other 63 sends
            // in 64 read no clock.
            // (several messages: when one of them is a 64th)
            let r = ob.sent % SAMPLE_EVERY;
            if (r == 0 || r + messages as u64 > SAMPLE_EVERY) && !ob.sampled.is_some() {
                ob.sampled = Stamp::now();
            }
            ob.sent += messages as u64;
            if direct && ob.write_directly(&common.counters) {
                return Some(Ok(()));
            }
            // One wake per burst: the writer asks again once it has written.
            match std::mem::take(&mut ob.wants_data) {
                true => ob.waker.take(),
                false => None,
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
        Some(Ok(()))
    }

    /// The slow-client policy, for a send that found the outbox full.
    #[cold]
    fn full(&self) -> SendError {
        let counters = &self.0.common.counters;
        match self.0.common.slow {
            SlowPolicy::Drop => {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                SendError::Dropped
            }
            SlowPolicy::Close => {
                let frame = CloseFrame {
                    code: CloseCode::Again,
                    reason: "slow client".into(),
                };
                if self.close(Some(frame)) {
                    counters.slow_closed.fetch_add(1, Ordering::Relaxed);
                }
                SendError::SlowClosed
            }
        }
    }

    /// Asks the writer to send `frame` (before anything queued, which is
    /// dropped) and end the connection. Returns false if it was already closing.
    pub fn close(&self, frame: Option<CloseFrame>) -> bool {
        let (waker, dropped) = {
            let mut ob = self.lock();
            if ob.closed {
                return false;
            }
            ob.closed = true;
            ob.close = Some(Closing::Now(frame.map(Box::new)));
            ob.messages = 0;
            ob.bytes = 0;
            ob.sampled = Stamp::default();
            let mut dropped = std::mem::take(&mut ob.queue);
            // The peer has the start of those frames: they go before the close.
            if ob.unfinished {
                ob.queue.chunks.push(dropped.chunks.remove(0));
            }
            (ob.waker.take(), dropped)
        };
        drop(dropped);
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// Like [`close`](WsClient::close), but what is already queued goes out
    /// first (a protocol error: the peer still gets the answers to what it
    /// sent before). Returns false if it was already closing.
    pub fn close_after_queued(&self, frame: Option<CloseFrame>) -> bool {
        let waker = {
            let mut ob = self.lock();
            if ob.closed {
                return false;
            }
            ob.closed = true;
            ob.close = Some(Closing::After(frame.map(Box::new)));
            ob.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        true
    }

    /// Whether the client is closed or closing: sends fail from now on.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Messages waiting in the outbox.
    pub fn queued(&self) -> usize {
        self.lock().messages
    }

    /// Whether the outbox is at least half full (in messages or bytes): the
    /// connection stops reading from a client that does not read what it is
    /// sent, until its outbox drains.
    pub fn is_backed_up(&self) -> bool {
        let ob = self.lock();
        let common = &self.0.common;
        ob.messages * 2 >= common.queue_messages || ob.bytes * 2 >= common.queue_bytes
    }

    /// For the connection's writer: moves every queued frame into `batch`
    /// (which it drained since: its buffer becomes the outbox's next one),
    /// or returns the close to send, or says the connection is gone, or
    /// waits. A close always comes first. While it waits, neither the
    /// outbox nor `batch` holds a buffer.
    pub fn poll_outgoing(&self, cx: &mut Context<'_>, batch: &mut Batch) -> Poll<Outgoing> {
        let mut ob = self.lock();
        ob.parked = false;
        // What a direct write started goes before anything, a close included.
        if let Some(rest) = ob.take_unfinished() {
            batch.unfinished = Some(rest);
            return Poll::Ready(Outgoing::Messages);
        }
        if let Some(Closing::Now(_)) = ob.close
            && let Some(Closing::Now(frame)) = ob.close.take()
        {
            ob.gone = true;
            ob.in_flight = Stamp::default();
            return Poll::Ready(Outgoing::Close(frame.map(|f| *f)));
        }
        if ob.gone {
            return Poll::Ready(Outgoing::Gone);
        }
        let counters = &self.0.common.counters;
        // The writer asks again once the last batch is flushed.
        ob.record_written(counters);
        if ob.messages == 0 {
            if let Some(Closing::After(_)) = ob.close
                && let Some(Closing::After(frame)) = ob.close.take()
            {
                ob.gone = true;
                return Poll::Ready(Outgoing::Close(frame.map(|f| *f)));
            }
            ob.wait(cx, true);
            ob.parked = ob.direct.is_some();
            // Nothing is allocated while the connection waits: the buffers
            // go to this thread's pool for the next burst.
            ob.queue.release();
            batch.clear();
            return Poll::Pending;
        }
        batch.messages += ob.take_messages(counters);
        if batch.queue.is_empty() {
            // The batch's drained buffer is the outbox's next one.
            std::mem::swap(&mut ob.queue, &mut batch.queue);
        } else {
            batch.queue.append(&mut ob.queue);
        }
        Poll::Ready(Outgoing::Messages)
    }

    /// For the connection's writer while it is busy writing a batch: ready
    /// once a close that goes before queued data was asked for
    /// ([`close`](WsClient::close), a slow client, [`WsHub::stop`]) or the
    /// connection is gone, so a write blocked on a peer that stopped reading
    /// can be abandoned. Takes nothing; [`poll_outgoing`](WsClient::poll_outgoing)
    /// then returns the close. Sends do not wake it.
    pub fn poll_close_requested(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut ob = self.lock();
        if matches!(ob.close, Some(Closing::Now(_))) || ob.gone {
            return Poll::Ready(());
        }
        ob.wait(cx, false);
        Poll::Pending
    }

    /// Wakes the connection's task (the waker its writer left with
    /// [`poll_outgoing`](WsClient::poll_outgoing) or
    /// [`poll_close_requested`](WsClient::poll_close_requested)) with a flag
    /// it reads back with [`take_interrupt`](WsClient::take_interrupt): for
    /// a server that tells its connections to look at something of their own
    /// (`ws_handler`: its shutdown signal, its ping and idle clocks).
    pub fn interrupt(&self) {
        self.0.interrupted.store(true, Ordering::Release);
        let waker = self.lock().waker.take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Lets frames made for many clients ([`try_send_frame`](WsClient::try_send_frame),
    /// [`try_send_frames`](WsClient::try_send_frames)) go to `socket` at once
    /// while the connection's writer waits with nothing to write: no wake,
    /// no poll of the writer for frames the socket takes whole (see the
    /// crate docs). A message for this client alone
    /// ([`try_send`](WsClient::try_send)) still goes through the writer. What the socket
    /// does not take stays with the writer, which writes it first. The
    /// connection must call [`unpark`](WsClient::unpark) as soon as it has
    /// a frame to write that it did not take from
    /// [`poll_outgoing`](WsClient::poll_outgoing).
    /// Nothing when [`HubConfig::direct_writes`] is off.
    pub fn set_direct_write(&self, socket: Arc<dyn DirectWrite>) {
        if self.0.common.direct_writes {
            self.lock().direct = Some(socket);
        }
    }

    /// For the connection, as soon as it has a frame to write that it did
    /// not take from [`poll_outgoing`](WsClient::poll_outgoing) (a ping, a
    /// pong, a close reply) after `poll_outgoing` last left it waiting:
    /// sends stop writing to the socket (so that frame goes before anything
    /// sent after it), and what a direct write left unfinished is returned,
    /// to be written before anything else.
    pub fn unpark(&self) -> Option<Vec<u8>> {
        let mut ob = self.lock();
        ob.parked = false;
        ob.take_unfinished()
    }

    /// Whether [`interrupt`](WsClient::interrupt) was called since the last
    /// time this was asked (one atomic load when not). An interrupt that
    /// comes while the connection's task runs, before its writer waits
    /// again, has no waker to wake: ask once more after
    /// [`poll_outgoing`](WsClient::poll_outgoing) or
    /// [`poll_close_requested`](WsClient::poll_close_requested) left the
    /// writer waiting, before the task returns `Pending`.
    pub fn take_interrupt(&self) -> bool {
        self.0.interrupted.load(Ordering::Relaxed)
            && self.0.interrupted.swap(false, Ordering::Acquire)
    }

    /// Takes every queued message without waiting (empty when none, or when
    /// a close is pending): for tests and for writers of their own.
    pub fn take_queued(&self) -> Vec<Message> {
        let mut batch = Batch::new();
        let cx = &mut Context::from_waker(Waker::noop());
        match self.poll_outgoing(cx, &mut batch) {
            Poll::Ready(Outgoing::Messages) => batch.to_messages(),
            Poll::Ready(Outgoing::Close(frame)) => {
                // Not taken: put the close back for the writer.
                let mut ob = self.lock();
                ob.gone = false;
                ob.close = Some(Closing::Now(frame.map(Box::new)));
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// For the connection: marks the client gone (the socket ended), so sends
    /// fail with [`SendError::Closed`] and what is queued is freed.
    pub fn disconnected(&self) {
        let dropped = {
            let mut ob = self.lock();
            ob.closed = true;
            ob.gone = true;
            ob.messages = 0;
            ob.bytes = 0;
            ob.sampled = Stamp::default();
            ob.in_flight = Stamp::default();
            ob.waker = None;
            ob.parked = false;
            ob.direct = None;
            ob.unfinished = false;
            std::mem::take(&mut ob.queue)
        };
        drop(dropped);
    }
}

impl PartialEq for WsClient {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for WsClient {}

impl fmt::Debug for WsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsClient")
            .field("id", &self.0.id)
            .field("peer", &self.0.peer)
            .field("queued", &self.queued())
            .finish()
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll(client: &WsClient, batch: &mut Batch) -> Poll<Outgoing> {
        let waker = Waker::noop();
        client.poll_outgoing(&mut Context::from_waker(waker), batch)
    }

    /// Counts the wakes of a task.
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A client whose writer waits for data, with a waker that counts.
    fn waiting_client() -> (WsHub, WsClient, Arc<Wakes>, Waker) {
        let hub = WsHub::new(HubConfig::default());
        let c = hub.register(None).unwrap();
        let wakes = Arc::new(Wakes(Default::default()));
        let waker = Waker::from(wakes.clone());
        let cx = &mut Context::from_waker(&waker);
        assert!(c.poll_outgoing(cx, &mut Batch::new()).is_pending());
        (hub, c, wakes, waker)
    }

    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap()
    }

    /// A socket for direct writes: takes what its script says per call
    /// (`None`: everything; `Some(0)`: would block), keeps what it took.
    #[derive(Debug, Default)]
    struct Sock {
        script: Mutex<std::collections::VecDeque<Option<usize>>>,
        took: Mutex<Vec<u8>>,
    }

    impl DirectWrite for Sock {
        fn try_write(&self, buf: &[u8]) -> std::io::Result<usize> {
            let n = match lock(&self.script).pop_front() {
                None | Some(None) => buf.len(),
                Some(Some(0)) => return Err(std::io::ErrorKind::WouldBlock.into()),
                Some(Some(n)) => n.min(buf.len()),
            };
            lock(&self.took).extend_from_slice(&buf[..n]);
            Ok(n)
        }
    }

    /// A waiting client with a direct-write socket that takes `script`.
    fn direct_client(script: &[Option<usize>]) -> (WsHub, WsClient, Arc<Wakes>, Waker, Arc<Sock>) {
        let sock = Arc::new(Sock::default());
        lock(&sock.script).extend(script);
        let (hub, c, wakes, waker) = waiting_client();
        c.set_direct_write(sock.clone());
        // The writer parks only once it waits with the socket set.
        assert!(poll(&c, &mut Batch::new()).is_pending());
        let cx = &mut Context::from_waker(&waker);
        assert!(c.poll_outgoing(cx, &mut Batch::new()).is_pending());
        (hub, c, wakes, waker, sock)
    }

    fn took(sock: &Sock) -> Vec<Message> {
        let mut out = Vec::new();
        frame::decode_all(&lock(&sock.took), &mut out);
        out
    }

    #[test]
    fn a_frame_for_many_goes_to_a_waiting_writers_socket_without_a_wake() {
        let (hub, c, wakes, waker, sock) = direct_client(&[]);
        c.try_send_frame(&Frame::new(&Message::text("one")))
            .unwrap();
        let burst = Frames::new(&[Message::text("two"), Message::text("three")]);
        assert_eq!(c.try_send_frames(&burst), Ok(2));
        assert_eq!(
            took(&sock),
            [
                Message::text("one"),
                Message::text("two"),
                Message::text("three")
            ]
        );
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0, "no wake");
        let stats = hub.stats();
        assert_eq!((stats.sent, stats.written, stats.bytes_out), (3, 3, 11));
        assert_eq!(stats.direct, 3);
        assert_eq!(
            stats.latency_us.counts.iter().sum::<u64>(),
            1,
            "the first is sampled"
        );
        // Nothing held: the writer finds nothing and keeps waiting.
        let cx = &mut Context::from_waker(&waker);
        assert!(c.poll_outgoing(cx, &mut Batch::new()).is_pending());
        // A message for this client alone waits for the writer, which writes
        // all that a run of them queued at once.
        c.try_send(Message::text("answer")).unwrap();
        assert_eq!(lock(&sock.took).len(), 17, "not written directly");
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(c.take_queued(), [Message::text("answer")]);
        // While the writer has something to write, sends queue for it.
        let (_hub, c2, wakes2, _waker2, sock2) = direct_client(&[]);
        c2.unpark();
        c2.try_send_frame(&Frame::new(&Message::text("queued")))
            .unwrap();
        assert!(lock(&sock2.took).is_empty());
        assert_eq!(wakes2.0.load(Ordering::SeqCst), 1);
        assert_eq!(c2.take_queued(), [Message::text("queued")]);
    }

    #[test]
    fn what_the_socket_does_not_take_goes_first_even_before_a_close() {
        // The socket takes 3 bytes of the first send, then would block.
        let (_hub, c, wakes, waker, sock) = direct_client(&[Some(3), Some(0)]);
        c.try_send_frame(&Frame::new(&Message::text("hello")))
            .unwrap();
        assert_eq!(*lock(&sock.took), b"\x81\x05h");
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "the writer is woken");
        // The writer no longer waits: the next send queues.
        c.try_send_frame(&Frame::new(&Message::text("next")))
            .unwrap();
        assert_eq!(lock(&sock.took).len(), 3);
        assert!(
            c.close(None),
            "a close drops what was queued, not what was started"
        );
        let cx = &mut Context::from_waker(&waker);
        let mut batch = Batch::new();
        assert_eq!(
            c.poll_outgoing(cx, &mut batch),
            Poll::Ready(Outgoing::Messages)
        );
        assert_eq!(batch.take_unfinished().as_deref(), Some(&b"ello"[..]));
        assert!(batch.is_empty());
        assert_eq!(
            c.poll_outgoing(cx, &mut batch),
            Poll::Ready(Outgoing::Close(None))
        );
    }

    #[test]
    fn a_socket_that_takes_nothing_leaves_the_frames_queued_and_unpark_hands_over_the_rest() {
        let (_hub, c, wakes, waker, sock) = direct_client(&[Some(0)]);
        c.try_send_frame(&Frame::new(&Message::text("a"))).unwrap();
        assert!(lock(&sock.took).is_empty());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(c.unpark(), None);
        assert_eq!(c.take_queued(), [Message::text("a")]);
        // A writer about to write a pong gets the rest of a started frame first.
        let (_hub, c, _wakes, _waker2, _sock) = direct_client(&[Some(1)]);
        c.try_send_frame(&Frame::new(&Message::text("b"))).unwrap();
        assert_eq!(c.unpark().as_deref(), Some(&b"\x01b"[..]));
        assert_eq!(c.unpark(), None);
        drop(waker);
    }

    #[test]
    fn direct_writes_can_be_turned_off() {
        let hub = WsHub::new(HubConfig {
            direct_writes: false,
            ..HubConfig::default()
        });
        let c = hub.register(None).unwrap();
        let sock = Arc::new(Sock::default());
        c.set_direct_write(sock.clone());
        assert!(poll(&c, &mut Batch::new()).is_pending());
        c.try_send_frame(&Frame::new(&Message::text("x"))).unwrap();
        assert!(lock(&sock.took).is_empty());
        assert_eq!(c.take_queued(), [Message::text("x")]);
    }

    #[test]
    fn a_burst_wakes_the_writer_once_and_a_waiting_outbox_holds_no_buffer() {
        let (_hub, c, wakes, waker) = waiting_client();
        let cx = &mut Context::from_waker(&waker);
        let mut batch = Batch::new();
        for i in 0..100 {
            c.try_send(Message::text(format!("m{i}"))).unwrap();
        }
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "one wake for the burst");
        assert_eq!(
            c.poll_outgoing(cx, &mut batch),
            Poll::Ready(Outgoing::Messages)
        );
        assert_eq!(batch.messages(), 100);
        let chunks: Vec<Chunk> = batch.take_chunks().collect();
        assert_eq!(
            chunks.len(),
            1,
            "100 small frames back to back in one buffer"
        );
        assert!(c.poll_outgoing(cx, &mut batch).is_pending());
        let ob = c.lock();
        assert_eq!(
            (ob.queue.tail.capacity(), ob.queue.chunks.capacity()),
            (0, 0),
            "nothing allocated while the writer waits"
        );
        drop(ob);
        // A send while the writer is busy (it asked only for closes) does
        // not wake it; a close does.
        assert!(c.poll_close_requested(cx).is_pending());
        c.try_send(Message::text("x")).unwrap();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        c.close(None);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn small_frames_are_copied_large_ones_shared_in_order() {
        let hub = WsHub::new(HubConfig::default());
        let c = hub.register(None).unwrap();
        let large = Frame::new(&Message::binary(vec![1u8; COPY_MAX]));
        c.try_send_frame(&Frame::new(&Message::text("a"))).unwrap();
        c.try_send_frame(&large).unwrap();
        c.try_send(Message::text("b")).unwrap();
        c.try_send(Message::binary(vec![2u8; COPY_MAX])).unwrap();
        let mut batch = Batch::new();
        assert_eq!(poll(&c, &mut batch), Poll::Ready(Outgoing::Messages));
        assert_eq!(
            batch.to_messages(),
            [
                Message::text("a"),
                Message::binary(vec![1u8; COPY_MAX]),
                Message::text("b"),
                Message::binary(vec![2u8; COPY_MAX]),
            ]
        );
        let chunks: Vec<Chunk> = batch.take_chunks().collect();
        assert!(
            matches!(&chunks[..], [Chunk::Copied(_), Chunk::Shared(l), Chunk::Copied(_), Chunk::Shared(_)] if l.as_ptr() == large.as_bytes().as_ptr())
        );
        assert_eq!(
            hub.stats().bytes_out,
            2 + 2 * COPY_MAX as u64,
            "payload bytes"
        );
    }

    #[test]
    fn a_burst_of_frames_is_one_send_one_wake_and_one_copy_around_large_ones() {
        let (hub, c, wakes, _waker) = waiting_client();
        let mut batch = Batch::new();
        let large = Message::binary(vec![1u8; COPY_MAX]);
        let msgs = [
            Message::text("a"),
            Message::text("b"),
            large.clone(),
            Message::text("c"),
        ];
        let frames = Frames::new(&msgs);
        assert_eq!(c.try_send_frames(&frames), Ok(4));
        assert_eq!(c.try_send_frames(&Frames::new(&msgs[..1])), Ok(1));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1, "one wake");
        assert_eq!(c.queued(), 5);
        assert_eq!(poll(&c, &mut batch), Poll::Ready(Outgoing::Messages));
        assert_eq!(batch.messages(), 5);
        assert_eq!(batch.to_messages()[..4], msgs);
        let chunks: Vec<Chunk> = batch.take_chunks().collect();
        let [Chunk::Copied(ab), Chunk::Shared(l), Chunk::Copied(ca)] = &chunks[..] else {
            panic!("a, b copied together; the large one shared; then c and a: {chunks:?}")
        };
        assert_eq!(
            (&ab[..], &ca[..]),
            (&b"\x81\x01a\x81\x01b"[..], &b"\x81\x01c\x81\x01a"[..])
        );
        let at = frames.as_bytes()[6..].as_ptr();
        assert_eq!(l.as_ptr(), at, "the burst's own bytes, not a copy");
        let stats = hub.stats();
        assert_eq!((stats.sent, stats.bytes_out), (5, 4 + COPY_MAX as u64));
    }

    #[test]
    fn a_burst_that_does_not_fit_ends_as_its_messages_one_by_one_would() {
        let msgs = ["1", "2", "3"].map(Message::text);
        let frames = Frames::new(&msgs);
        // Close: the client is closed as slow, nothing of the burst queued.
        let hub = WsHub::new(HubConfig {
            queue_messages: 2,
            ..HubConfig::default()
        });
        let c = hub.register(None).unwrap();
        assert_eq!(c.try_send_frames(&frames), Err(SendError::SlowClosed));
        assert_eq!(c.try_send_frames(&frames), Err(SendError::Closed));
        assert_eq!(hub.stats().slow_closed, 1);
        // Drop: those that fit are queued, the others dropped and counted.
        let hub = WsHub::new(HubConfig {
            queue_messages: 2,
            slow: SlowPolicy::Drop,
            ..HubConfig::default()
        });
        let c = hub.register(None).unwrap();
        assert_eq!(c.try_send_frames(&frames), Ok(2));
        assert_eq!(c.try_send_frames(&frames), Ok(0));
        assert_eq!(hub.stats().dropped, 4);
        assert_eq!(c.take_queued(), msgs[..2]);
        // The byte bound: one message over it fits an empty outbox, a burst
        // over it does not.
        let hub = WsHub::new(HubConfig {
            queue_bytes: 10,
            slow: SlowPolicy::Drop,
            ..HubConfig::default()
        });
        let c = hub.register(None).unwrap();
        let big = [Message::binary(vec![0u8; 8]), Message::binary(vec![1u8; 8])];
        assert_eq!(c.try_send_frames(&Frames::new(&big)), Ok(1));
        assert_eq!(c.take_queued(), big[..1]);
        let one = Frames::new(&[Message::binary(vec![0u8; 64])]);
        assert_eq!(c.try_send_frames(&one), Ok(1));
        let queued = c.queued();
        assert_eq!(c.try_send_frames(&Frames::new(&[])), Ok(0));
        assert_eq!(c.queued(), queued);
    }

    #[test]
    fn samples_are_taken_when_a_burst_holds_a_64th_message() {
        let hub = WsHub::new(HubConfig::default());
        let c = hub.register(None).unwrap();
        let frames = Frames::new(&[Message::text("x"), Message::text("y"), Message::text("z")]);
        let mut batch = Batch::new();
        let mut sampled = 0;
        for _ in 0..64 {
            c.try_send_frames(&frames).unwrap();
            sampled += usize::from(c.lock().sampled.is_some());
            assert_eq!(poll(&c, &mut batch), Poll::Ready(Outgoing::Messages));
            batch.clear();
        }
        // 192 messages: the 1st, 65th and 129th were the sampled ones.
        assert_eq!(sampled, 3);
    }

    #[test]
    fn an_interrupt_wakes_the_writer_and_is_read_once() {
        let hub = WsHub::new(HubConfig::default());
        let c = hub.register(None).unwrap();
        let wakes = Arc::new(Wakes(Default::default()));
        let waker = Waker::from(wakes.clone());
        assert!(
            c.poll_outgoing(&mut Context::from_waker(&waker), &mut Batch::new())
                .is_pending()
        );
        assert!(!c.take_interrupt());
        hub.for_each(WsClient::interrupt);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert!(c.take_interrupt());
        assert!(!c.take_interrupt(), "read once");
    }

    #[test]
    fn a_sent_close_is_a_close_after_what_was_queued() {
        let hub = WsHub::new(HubConfig::default());
        let c = hub.register(None).unwrap();
        c.try_send(Message::text("last")).unwrap();
        c.try_send(Message::Close(None)).unwrap();
        assert_eq!(c.try_send(Message::text("late")), Err(SendError::Closed));
        let mut batch = Batch::new();
        assert_eq!(poll(&c, &mut batch), Poll::Ready(Outgoing::Messages));
        batch.take_chunks().for_each(drop);
        assert_eq!(poll(&c, &mut batch), Poll::Ready(Outgoing::Close(None)));
    }

    #[test]
    fn a_client_is_small() {
        // What each connection keeps in the hub (ws_handler's breakdown).
        eprintln!(
            "ClientShared {} (Outbox {})",
            std::mem::size_of::<ClientShared>(),
            std::mem::size_of::<Outbox>()
        );
        // At 256 bytes `ws-bench --only idle` measured 1.59 KiB per idle
        // WebSocket against 1.44 at 248 (glibc's next size class, and how the
        // connection's other allocations then pack): a guard, not a target.
        assert!(std::mem::size_of::<ClientShared>() <= 248);
    }

    #[test]
    fn ids_are_unique_and_lookups_find_clients() {
        let hub = WsHub::new(HubConfig::default());
        let a = hub.register(None).unwrap();
        let b = hub.register(None).unwrap();
        assert_ne!(a.id(), b.id());
        assert_eq!(hub.client(a.id()), Some(a.clone()));
        assert_eq!(hub.len(), 2);
        assert_eq!(hub.unregister(a.id()), Some(a.clone()));
        assert_eq!(hub.unregister(a.id()), None, "idempotent");
        assert_eq!(hub.client(a.id()), None);
        let c = hub.register(None).unwrap();
        assert!(c.id() > b.id(), "ids are never reused");
        let s = hub.stats();
        assert_eq!((s.connections, s.connected, s.disconnected), (2, 3, 1));
    }

    #[test]
    fn the_writer_gets_everything_queued_in_one_batch() {
        let hub = WsHub::new(HubConfig::default());
        let c = hub.register(None).unwrap();
        let mut batch = Batch::new();
        assert!(poll(&c, &mut batch).is_pending());
        for i in 0..3 {
            c.try_send(Message::text(format!("m{i}"))).unwrap();
        }
        assert_eq!(poll(&c, &mut batch), Poll::Ready(Outgoing::Messages));
        assert_eq!(batch.messages(), 3);
        assert_eq!(c.queued(), 0);
        assert_eq!(hub.stats().sent, 3);
    }

    #[test]
    fn a_full_outbox_closes_a_slow_client_with_1013_first() {
        let hub = WsHub::new(HubConfig {
            queue_messages: 2,
            ..HubConfig::default()
        });
        let slow = hub.register(None).unwrap();
        let other = hub.register(None).unwrap();
        slow.try_send(Message::text("1")).unwrap();
        slow.try_send(Message::text("2")).unwrap();
        assert_eq!(
            slow.try_send(Message::text("3")),
            Err(SendError::SlowClosed)
        );
        assert_eq!(slow.try_send(Message::text("4")), Err(SendError::Closed));
        other.try_send(Message::text("fine")).unwrap();
        let mut batch = Batch::new();
        let Poll::Ready(Outgoing::Close(Some(frame))) = poll(&slow, &mut batch) else {
            panic!("the close comes before the queued data");
        };
        assert_eq!(frame.code, CloseCode::Again);
        assert!(batch.is_empty(), "queued data was dropped");
        assert_eq!(hub.stats().slow_closed, 1);
    }

    #[test]
    fn the_drop_policy_counts_and_keeps_the_client() {
        let hub = WsHub::new(HubConfig {
            queue_messages: 1,
            slow: SlowPolicy::Drop,
            ..HubConfig::default()
        });
        let c = hub.register(None).unwrap();
        c.try_send(Message::text("kept")).unwrap();
        assert_eq!(c.try_send(Message::text("x")), Err(SendError::Dropped));
        assert!(!c.is_closed());
        assert_eq!(hub.stats().dropped, 1);
        let mut batch = Batch::new();
        assert_eq!(poll(&c, &mut batch), Poll::Ready(Outgoing::Messages));
        assert_eq!(batch.to_messages(), [Message::text("kept")]);
    }

    #[test]
    fn the_byte_bound_holds_but_one_large_message_fits() {
        let hub = WsHub::new(HubConfig {
            queue_bytes: 10,
            slow: SlowPolicy::Drop,
            ..HubConfig::default()
        });
        let c = hub.register(None).unwrap();
        c.try_send(Message::binary(vec![0u8; 64])).unwrap();
        assert_eq!(
            c.try_send(Message::binary(vec![0u8; 1])),
            Err(SendError::Dropped)
        );
    }

    #[test]
    fn stop_closes_everyone_with_1001_and_start_reopens() {
        let hub = WsHub::new(HubConfig::default());
        let a = hub.register(None).unwrap();
        a.try_send(Message::text("pending")).unwrap();
        hub.stop();
        hub.stop();
        assert_eq!(hub.len(), 0);
        assert_eq!(hub.register(None).unwrap_err(), RegisterError::Stopped);
        let mut batch = Batch::new();
        let Poll::Ready(Outgoing::Close(Some(frame))) = poll(&a, &mut batch) else {
            panic!("stop closes");
        };
        assert_eq!(frame.code, CloseCode::Away);
        hub.start();
        hub.start();
        assert!(hub.register(None).is_ok());
    }

    #[test]
    fn close_after_queued_lets_the_queue_out_first() {
        let hub = WsHub::new(HubConfig::default());
        let c = hub.register(None).unwrap();
        c.try_send(Message::text("answer")).unwrap();
        assert!(c.close_after_queued(None));
        assert_eq!(c.try_send(Message::text("late")), Err(SendError::Closed));
        let mut batch = Batch::new();
        assert_eq!(poll(&c, &mut batch), Poll::Ready(Outgoing::Messages));
        assert_eq!(batch.to_messages(), [Message::text("answer")]);
        batch.take_chunks().for_each(drop);
        assert_eq!(poll(&c, &mut batch), Poll::Ready(Outgoing::Close(None)));
    }

    #[test]
    fn a_close_request_wakes_a_busy_writer_and_data_does_not_end_it() {
        let hub = WsHub::new(HubConfig::default());
        let c = hub.register(None).unwrap();
        let cx = &mut Context::from_waker(Waker::noop());
        assert!(c.poll_close_requested(cx).is_pending());
        c.try_send(Message::text("data")).unwrap();
        assert!(c.poll_close_requested(cx).is_pending(), "data is no close");
        assert!(c.close_after_queued(None));
        assert!(
            c.poll_close_requested(cx).is_pending(),
            "a close after the queue waits for the writer"
        );
        let d = hub.register(None).unwrap();
        d.try_send(Message::text("dropped")).unwrap();
        hub.stop();
        assert!(d.poll_close_requested(cx).is_ready());
        let mut batch = Batch::new();
        assert!(matches!(
            poll(&d, &mut batch),
            Poll::Ready(Outgoing::Close(Some(_)))
        ));
    }

    #[test]
    fn rooms_and_users_are_indexed_and_cleaned_up() {
        let hub = WsHub::new(HubConfig::default());
        let a1 = hub.register_as(None, Identity::user("ana")).unwrap();
        let a2 = hub.register_as(None, Identity::user("ana")).unwrap();
        let b = hub.register_as(None, Identity::user("bo")).unwrap();
        let anon = hub.register(None).unwrap();
        assert_eq!((hub.user_len("ana"), hub.user_len("bo")), (2, 1));
        assert_eq!(hub.join(&a1, "r"), Ok(true));
        assert_eq!(hub.join(&a1, "r"), Ok(false), "idempotent");
        let long = "r".repeat(MAX_ROOM_NAME + 1);
        for bad in ["", "a\nb", long.as_str()] {
            assert_eq!(hub.join(&a1, bad), Err(JoinError::InvalidName), "{bad:?}");
        }
        assert_eq!(hub.join(&b, "r"), Ok(true));
        assert_eq!(hub.join(&b, "s"), Ok(true));
        assert_eq!(hub.room_len("r"), 2);
        assert_eq!(hub.rooms_of(&b), ["r", "s"]);
        assert!(hub.leave(&b, "s"));
        assert!(!hub.leave(&b, "s"), "idempotent");
        assert_eq!(hub.rooms(), BTreeMap::from([("r".to_string(), 2)]));
        let mut got = Vec::new();
        hub.for_each_in(&[anon.id(), a1.id()], &["r".into()], &["ana".into()], |c| {
            got.push(c.id());
        });
        got.sort_unstable();
        assert_eq!(
            got,
            [a1.id(), a2.id(), b.id(), anon.id()],
            "a union, each once"
        );
        hub.unregister(a1.id());
        hub.unregister(b.id());
        assert_eq!((hub.room_len("r"), hub.user_len("ana")), (0, 1));
        assert!(hub.rooms().is_empty(), "empty rooms are removed");
        assert_eq!(
            hub.join(&b, "r"),
            Err(JoinError::NotRegistered),
            "a gone client joins nothing"
        );
        hub.unregister(a2.id());
        assert_eq!(hub.user_len("ana"), 0);
    }

    #[test]
    fn a_client_joins_at_most_max_rooms() {
        let hub = WsHub::new(HubConfig {
            max_rooms: 2,
            ..HubConfig::default()
        });
        let c = hub.register(None).unwrap();
        assert_eq!(hub.join(&c, "a"), Ok(true));
        assert_eq!(hub.join(&c, "b"), Ok(true));
        assert_eq!(hub.join(&c, "c"), Err(JoinError::TooManyRooms));
        assert_eq!(hub.join(&c, "a"), Ok(false), "already in: not a new room");
        assert!(hub.leave(&c, "a"));
        assert_eq!(hub.join(&c, "c"), Ok(true));
    }

    #[test]
    fn take_queued_takes_data_and_leaves_a_close_for_the_writer() {
        let hub = WsHub::new(HubConfig::default());
        let c = hub.register(None).unwrap();
        assert!(c.take_queued().is_empty());
        c.try_send(Message::text("a")).unwrap();
        assert_eq!(c.take_queued(), [Message::text("a")]);
        c.close(None);
        assert!(c.take_queued().is_empty());
        let mut batch = Batch::new();
        assert_eq!(
            poll(&c, &mut batch),
            Poll::Ready(Outgoing::Close(None)),
            "still there"
        );
    }

    #[test]
    fn a_disconnected_client_refuses_sends() {
        let hub = WsHub::new(HubConfig::default());
        let c = hub.register(None).unwrap();
        c.try_send(Message::text("x")).unwrap();
        c.disconnected();
        assert_eq!(c.try_send(Message::text("y")), Err(SendError::Closed));
        assert_eq!(c.queued(), 0);
    }

    #[test]
    fn written_bytes_and_sampled_latency_are_counted_once_across_unregister() {
        let hub = WsHub::new(HubConfig::default());
        let a = hub.register(None).unwrap();
        let b = hub.register(None).unwrap();
        let mut batch = Batch::new();
        // Send 0 of the hub is sampled: it goes to `a`, with 2 more behind it.
        for m in ["one", "two", "six"] {
            a.try_send(Message::text(m)).unwrap();
        }
        b.try_send(Message::text("four")).unwrap();
        assert_eq!(poll(&a, &mut batch), Poll::Ready(Outgoing::Messages));
        let s = hub.stats();
        assert_eq!((s.sent, s.written, s.bytes_out), (4, 3, 9));
        assert_eq!(s.queue_depth.count(), 1, "the sampled message's batch");
        assert_eq!(s.queue_depth.sum, 3);
        assert_eq!(s.queue_depth.counts[2], 1, "3 is in the bucket of le=4");
        assert_eq!(s.latency_us.count(), 0, "not flushed yet");
        // The writer asks again: the batch was flushed.
        batch.take_chunks().for_each(drop);
        assert!(poll(&a, &mut batch).is_pending());
        assert_eq!(hub.stats().latency_us.count(), 1);
        assert_eq!(hub.stats().latency_us.bounds, LATENCY_BOUNDS_US);
        // Unregistering moves a client's counts into the totals: nothing
        // lost, nothing counted twice.
        hub.unregister(a.id());
        assert_eq!(poll(&b, &mut batch), Poll::Ready(Outgoing::Messages));
        let s = hub.stats();
        assert_eq!((s.written, s.bytes_out), (4, 13));
        hub.stop();
        let s = hub.stats();
        assert_eq!((s.connections, s.written, s.bytes_out), (0, 4, 13));
    }

    #[test]
    fn a_node_number_prefixes_client_ids() {
        let plain = WsHub::new(HubConfig::default());
        assert_eq!(plain.register(None).unwrap().id(), 1, "today's ids");
        let hub = WsHub::new(HubConfig {
            node: 3,
            ..HubConfig::default()
        });
        let (a, b) = (hub.register(None).unwrap(), hub.register(None).unwrap());
        assert_eq!((a.id(), b.id()), (3 << 48 | 1, 3 << 48 | 2));
        assert_eq!((node_of(a.id()), node_of(b.id())), (3, 3));
        assert_eq!(node_of(1), 0);
        let too_big = std::panic::catch_unwind(|| {
            WsHub::new(HubConfig {
                node: 1 << 16,
                ..HubConfig::default()
            })
        });
        assert!(too_big.is_err(), "a node number that does not fit refuses");
    }

    /// What a membership hook saw, as owned values.
    #[derive(Debug, PartialEq, Eq)]
    enum Seen {
        Joined(String, ClientId, Option<String>, bool),
        Left(String, ClientId, Option<String>, bool),
        Arrived(String),
        Gone(String),
    }

    fn observed(hub: &WsHub) -> Arc<Mutex<Vec<Seen>>> {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        let index = hub.clone();
        assert!(hub.set_membership_hook(Arc::new(move |m| {
            // Outside the hub's lock: the hook can read the hub.
            let _ = index.room_len("any");
            let own = |s: Option<&str>| s.map(str::to_string);
            log.lock().unwrap().push(match m {
                Membership::Joined {
                    room,
                    client,
                    user,
                    first,
                } => Seen::Joined(room.into(), client, own(user), first),
                Membership::Left {
                    room,
                    client,
                    user,
                    last,
                } => Seen::Left(room.into(), client, own(user), last),
                Membership::UserArrived { user } => Seen::Arrived(user.into()),
                Membership::UserGone { user } => Seen::Gone(user.into()),
            });
        })));
        assert!(!hub.set_membership_hook(Arc::new(|_| {})), "once per hub");
        seen
    }

    #[test]
    fn the_membership_hook_sees_joins_leaves_and_the_first_and_last_of_rooms_and_users() {
        let hub = WsHub::new(HubConfig::default());
        let seen = observed(&hub);
        let take = || std::mem::take(&mut *seen.lock().unwrap());
        let ana = Some("ana".to_string());
        let a1 = hub.register_as(None, Identity::user("ana")).unwrap();
        let a2 = hub.register_as(None, Identity::user("ana")).unwrap();
        let anon = hub.register(None).unwrap();
        assert_eq!(
            take(),
            [Seen::Arrived("ana".into())],
            "the first connection of ana only"
        );
        hub.join(&a1, "r").unwrap();
        hub.join(&a1, "r").unwrap();
        hub.join(&anon, "r").unwrap();
        assert_eq!(
            take(),
            [
                Seen::Joined("r".into(), a1.id(), ana.clone(), true),
                Seen::Joined("r".into(), anon.id(), None, false),
            ],
            "a join that changes nothing is not told"
        );
        assert!(hub.leave(&anon, "r"));
        assert!(!hub.leave(&anon, "r"));
        hub.join(&a2, "s").unwrap();
        assert_eq!(
            take(),
            [
                Seen::Left("r".into(), anon.id(), None, false),
                Seen::Joined("s".into(), a2.id(), ana.clone(), true),
            ]
        );
        hub.unregister(a1.id());
        hub.unregister(a1.id());
        assert_eq!(take(), [Seen::Left("r".into(), a1.id(), ana.clone(), true)]);
        hub.stop();
        let mut at_stop = take();
        at_stop.sort_by_key(|s| format!("{s:?}"));
        assert_eq!(
            at_stop,
            [
                Seen::Gone("ana".into()),
                Seen::Left("s".into(), a2.id(), ana.clone(), true),
            ],
            "stop is everyone leaving"
        );
    }
}

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../ws_hub.md")]
#[doc = include_str!("../../../types/infra/ClientId.md")]
#[doc = include_str!("../../../types/infra/DirectWrite.md")]
#[doc = include_str!("../../../types/infra/HubConfig.md")]
#[doc = include_str!("../../../types/infra/HubHistogram.md")]
#[doc = include_str!("../../../types/infra/HubStats.md")]
#[doc = include_str!("../../../types/infra/Identity.md")]
#[doc = include_str!("../../../types/infra/JoinError.md")]
#[doc = include_str!("../../../types/infra/Membership.md")]
#[doc = include_str!("../../../types/infra/MembershipHook.md")]
#[doc = include_str!("../../../types/infra/Outgoing.md")]
#[doc = include_str!("../../../types/infra/RegisterError.md")]
#[doc = include_str!("../../../types/infra/SendError.md")]
#[doc = include_str!("../../../types/infra/SlowPolicy.md")]
#[doc = include_str!("../../../types/infra/WsClient.md")]
#[doc = include_str!("../../../types/infra/WsHub.md")]
pub struct RegistryExamples;
