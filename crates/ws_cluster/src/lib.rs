//! Runs a WebSocket hub across nodes on a backplane: emits reach every matching socket on every node exactly once, a node subscribes only to the rooms and users it has local members for, and room presence with join and leave events spans the nodes.
//!
//! A [`WsCluster`] joins one node's [`WsHub`] to an `Arc<dyn `[`Backplane`]`>`
//! (`backplane_memory` in one process, `backplane_redis` across processes):
//!
//! - **Subscriptions follow local members.** The hub's membership hook
//!   subscribes [`Channel::Room`] when a room gets its first local member and
//!   unsubscribes when it loses its last; the same for [`Channel::User`] and a
//!   user's connections. [`Channel::All`] (broadcasts) and this node's
//!   [`Channel::Node`] (client ids) are always subscribed. So the backplane's
//!   work per message is proportional to the nodes that care, never to the
//!   clients.
//! - **One publish, encoded once.** [`WsCluster::emit`] turns the event into
//!   JSON once and publishes one envelope (origin node, per-node sequence,
//!   the target, the JSON) on every channel the target names: `All` for a
//!   broadcast, a `Room`/`User` per name, a `Node` for each other node owning
//!   a targeted client id (its number is in the id's top bits,
//!   [`ws_hub::node_of`]). The local sockets get it at once through the hub's
//!   encode-once path (one shared `Message`); a node ignores its own envelopes
//!   coming back.
//! - **Exactly once per socket.** A receiving node delivers an envelope once
//!   however many of its channels it came on (a small bounded set of recent
//!   `(origin, sequence)`, for envelopes published on several channels), to
//!   every local socket matching the whole target, each socket once (a
//!   socket in two targeted rooms gets one copy).
//! - **Refused means nothing happened.** When the backplane does not take
//!   an emit ([`BackplaneError::Unavailable`]), `emit` returns the error and
//!   delivered nothing locally either: an HTTP caller answers `503` and the
//!   client retries without duplicates. Messages from sockets (chat) use
//!   [`WsCluster::emit_local_first`]: local sockets get it now, the forward
//!   to other nodes is queued, and a backplane failure is logged and
//!   counted, not returned.
//! - **Presence.** Each local join and leave sets or removes the member in
//!   the backplane's presence of the room and sends `presence.join` /
//!   `presence.leave` (`{room, user, client}`, the id as a string) to the
//!   room on every node, the joining connection included. Every
//!   [`ClusterConfig::presence_sweep`], the node expires the presence of its
//!   rooms: members of a node that stopped refreshing them (crashed) are
//!   handed to exactly one node, which tells the room they left.
//!   [`WsCluster::presence`] answers who is in a room across nodes.
//!
//! - **Room history.** With [`ClusterConfig::room_history`] set to N, an
//!   emit that names rooms is published with [`Backplane::publish_kept`], so
//!   each room keeps its last N messages (kept if and only if published). A
//!   connection joined through [`WsCluster::join`] gets them first, oldest
//!   first, then the live ones, each once: the room's messages for it are
//!   held (with their `(origin, sequence)`) while the node reads the
//!   history, which goes out without the held ones, then the held ones.
//!
//! Presence changes with their events, and the forwards of
//! `emit_local_first`, run in one task per node, in order, fed by a bounded
//! queue ([`ClusterConfig::queue`]); a full queue
//! drops the operation and counts it ([`ClusterStats::queue_full`]).
//! Forwards queued behind each other go out as one burst (up to 16, each
//! started in order, awaited together: one round trip), so the other nodes
//! receive bursts and write several messages per `send`, as one server does.
//! [`WsCluster::flush`] waits until what is queued went out.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use backplane_memory::{MemoryBus, MemoryConfig};
//! use ws_cluster::WsCluster;
//! use ws_event::{Event, Target};
//! use ws_hub::{HubConfig, Identity, WsHub};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let bus = MemoryBus::new(MemoryConfig::default());
//! let node = |bus: &MemoryBus| {
//!     let backplane: Arc<dyn backplane::Backplane> = Arc::new(bus.node());
//!     let hub = WsHub::new(WsCluster::hub_config(&*backplane, HubConfig::default()));
//!     WsCluster::new(hub, backplane)
//! };
//! let (a, b) = (node(&bus), node(&bus));
//! let ana = b.hub().register_as(None, Identity::user("ana")).unwrap();
//!
//! // Sent on node A, received by ana's connection on node B.
//! let report = a.emit(&Event::new("notice", "hi".into()), &Target::users(["ana"])).await.unwrap();
//! assert_eq!(report.sent, 0, "no local recipient on A");
//! assert_eq!(ana.take_queued().len(), 1);
//! # });
//! ```
//!
//! # Errors
//!
//! [`WsCluster::emit`] and [`WsCluster::presence`] return the backplane's
//! [`BackplaneError`]; `Unavailable` means nothing was published (or read).
//!
//! # Panics
//!
//! [`WsCluster::new`] panics outside a tokio runtime, when the hub's node
//! number is not the backplane's (build the hub from
//! [`WsCluster::hub_config`]), or when the hub already has a membership hook.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

pub use backplane::{
    Backplane, BackplaneError, Bytes, Channel, Incoming, Presence, PresenceMember,
};
use futures_util::future::join_all;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
pub use ws_broadcast::Broadcast;
use ws_broadcast::ws_broadcast;
use ws_event::{Event, Target, types};
use ws_hub::tungstenite::Utf8Bytes;
use ws_hub::{
    ClientId, Frame, HubConfig, JoinError, Membership, Message, WsClient, WsHub, node_of,
};

/// Settings of a cluster node; every field has a default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// How often the node expires the presence of the rooms it has members
    /// in, and tells them of members whose node stopped. Default: 5 seconds
    /// (a third of the backplanes' default presence TTL of 15 seconds).
    pub presence_sweep: Duration,
    /// Backplane operations waiting for the node's task (forwards of
    /// [`WsCluster::emit_local_first`], presence changes); beyond this, one is
    /// dropped and counted. Default: 4096.
    pub queue: usize,
    /// Envelopes remembered to drop the copies that come on several
    /// channels. Default: 1024.
    pub dedup_window: usize,
    /// Messages kept per room for connections that join it
    /// ([`WsCluster::join`]): they get the room's last this many messages
    /// first, then the live ones. The history is queued at once, so keep it
    /// well below the hub's `queue_messages` (a fuller outbox is a slow
    /// client). Default: 0 (none kept).
    pub room_history: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            presence_sweep: Duration::from_secs(5),
            queue: 4096,
            dedup_window: 1024,
            room_history: 0,
        }
    }
}

/// Counters of a cluster node since it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClusterStats {
    /// Envelopes the backplane took from this node (emits and presence events).
    pub published: u64,
    /// Envelopes of other nodes delivered to local sockets (each once).
    pub received: u64,
    /// Copies of an envelope already delivered (it came on several channels), dropped.
    pub duplicates: u64,
    /// This node's own envelopes coming back, ignored.
    pub own: u64,
    /// Backplane calls that failed (publish, presence).
    pub errors: u64,
    /// Operations dropped because the node's queue was full.
    pub queue_full: u64,
    /// Payloads on the backplane that are not envelopes, dropped.
    pub malformed: u64,
    /// Times the backplane reconnected ([`Incoming::Resync`]): messages
    /// published meanwhile were missed.
    pub resyncs: u64,
    /// Joins whose room history could not be sent (backplane failure, or
    /// the room was too busy while it was read): they got the live messages only.
    pub history_skipped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    received: AtomicU64,
    duplicates: AtomicU64,
    own: AtomicU64,
    errors: AtomicU64,
    queue_full: AtomicU64,
    malformed: AtomicU64,
    resyncs: AtomicU64,
    history_skipped: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// One node's hub joined to the backplane; clones share it. Dropping the
/// last clone stops the node's task and drops its backplane handle.
#[derive(Clone)]
pub struct WsCluster(Arc<Inner>);

struct Inner {
    hub: WsHub,
    backplane: Arc<dyn Backplane>,
    node: u64,
    config: ClusterConfig,
    seq: AtomicU64,
    /// The room and user channels subscribed now.
    subscribed: Mutex<HashSet<Channel>>,
    recent: Mutex<Recent>,
    /// Connections that joined a room and wait for its history: the room's
    /// messages for them are held here (with their envelope's key) until the
    /// history went out.
    holds: Mutex<HashMap<String, HashMap<ClientId, Hold>>>,
    /// How many holds there are: `deliver` looks at `holds` only when some.
    holding: AtomicUsize,
    queue: mpsc::Sender<Op>,
    counters: Counters,
}

/// What the node's task does, in order.
enum Op {
    /// Publishes an envelope already delivered locally.
    Forward(Forward),
    Joined {
        room: String,
        client: ClientId,
        user: Option<String>,
    },
    Left {
        room: String,
        client: ClientId,
    },
    /// Answers a join once the node's subscriptions are in effect; then,
    /// when the join made the hold (`release`), sends the room's history
    /// (if kept) and what was held.
    Join {
        room: String,
        client: ClientId,
        done: Done,
        release: bool,
    },
    /// Answers a leave (after the joins queued before it).
    Answer(Box<dyn FnOnce() + Send>),
    Flush(oneshot::Sender<()>),
}

/// How a join is answered.
type Done = Box<dyn FnOnce(Result<(), JoinError>) + Send>;

/// An envelope to publish: on `channels`, kept in the history of `rooms`
/// (none: not kept).
struct Forward {
    channels: Vec<Channel>,
    rooms: Vec<String>,
    envelope: Bytes,
}

/// A message ready for the local sockets, its envelope's key, and what to
/// publish when it reaches beyond this node.
struct Prepared {
    key: (u64, u64),
    msg: Message,
    forward: Option<Forward>,
}

/// The room messages held for one joining connection, in delivery order.
#[derive(Default)]
struct Hold {
    messages: Vec<((u64, u64), Message)>,
}

/// Most forwards published together; `join_all` starts at most this many in
/// order (it keeps order up to 30).
const MAX_BURST: usize = 16;

/// Most messages held for one joining connection; past it, the history is
/// skipped and the held messages go out.
const MAX_HELD: usize = 1024;

/// The `(origin, sequence)` of the envelopes delivered lately, bounded.
struct Recent {
    seen: HashSet<(u64, u64)>,
    order: VecDeque<(u64, u64)>,
    cap: usize,
}

impl Recent {
    /// Whether `key` is new (and remembers it).
    fn insert(&mut self, key: (u64, u64)) -> bool {
        if !self.seen.insert(key) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > self.cap
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        true
    }
}

impl WsCluster {
    /// Joins `hub` to `backplane` with the default [`ClusterConfig`]: sets
    /// the backplane's receiver and the hub's membership hook, subscribes
    /// [`Channel::All`] and this node's [`Channel::Node`], and starts the
    /// node's task. Make it before clients register (earlier members are not
    /// announced).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime; when `hub` was not built for this node
    /// (`hub.config().node != backplane.node()`: use
    /// [`hub_config`](WsCluster::hub_config)); when the hub already has a
    /// membership hook.
    pub fn new(hub: WsHub, backplane: Arc<dyn Backplane>) -> Self {
        WsCluster::with_config(hub, backplane, ClusterConfig::default())
    }

    /// [`new`](WsCluster::new) with settings.
    pub fn with_config(hub: WsHub, backplane: Arc<dyn Backplane>, config: ClusterConfig) -> Self {
        let node = backplane.node();
        assert_eq!(
            hub.config().node,
            node,
            "the hub's node number is not the backplane's: build it with WsCluster::hub_config"
        );
        let (queue, ops) = mpsc::channel(config.queue.max(1));
        let inner = Arc::new(Inner {
            hub: hub.clone(),
            backplane: backplane.clone(),
            node,
            seq: AtomicU64::new(0),
            subscribed: Mutex::default(),
            recent: Mutex::new(Recent {
                seen: HashSet::new(),
                order: VecDeque::new(),
                cap: config.dedup_window.max(1),
            }),
            holds: Mutex::default(),
            holding: AtomicUsize::new(0),
            queue,
            counters: Counters::default(),
            config,
        });
        let weak = Arc::downgrade(&inner);
        let w = weak.clone();
        backplane.set_receiver(Arc::new(move |incoming| {
            if let Some(inner) = w.upgrade() {
                inner.receive(incoming);
            }
        }));
        backplane.subscribe(Channel::All);
        backplane.subscribe(Channel::Node(node));
        let w = weak.clone();
        let hooked = hub.set_membership_hook(Arc::new(move |m| {
            if let Some(inner) = w.upgrade() {
                inner.on_membership(m);
            }
        }));
        assert!(hooked, "the hub already has a membership hook");
        tokio::spawn(run(weak, ops, inner.config.presence_sweep));
        WsCluster(inner)
    }

    /// `config` with [`HubConfig::node`] set to `backplane`'s node, so the
    /// hub's client ids are unique across the nodes and name their node.
    pub fn hub_config(backplane: &dyn Backplane, config: HubConfig) -> HubConfig {
        HubConfig {
            node: backplane.node(),
            ..config
        }
    }

    /// The node's hub.
    pub fn hub(&self) -> &WsHub {
        &self.0.hub
    }

    /// The backplane the node is on.
    pub fn backplane(&self) -> &Arc<dyn Backplane> {
        &self.0.backplane
    }

    /// This node's number.
    pub fn node(&self) -> u64 {
        self.0.node
    }

    /// Sends `event` to every socket `target` names on every node, each
    /// once: published first, then delivered to the local sockets. The
    /// report counts the local sockets only.
    ///
    /// `Err(`[`BackplaneError::Unavailable`]`)`: the backplane did not take
    /// it, and no socket got it, here or elsewhere: answer `503`; a retry
    /// does not duplicate. A target of this node's client ids only needs no
    /// backplane.
    pub async fn emit(&self, event: &Event, target: &Target) -> Result<Broadcast, BackplaneError> {
        self.send(event.to_json(), target).await
    }

    /// [`emit`](WsCluster::emit) for a text frame of the app's own format
    /// (what `ws_broadcast` sends on one node), not an [`Event`].
    pub async fn send(
        &self,
        text: impl Into<String>,
        target: &Target,
    ) -> Result<Broadcast, BackplaneError> {
        let prepared = self.0.prepare(text.into(), target, true);
        if let Some(forward) = prepared.forward {
            self.0.publish(forward).await?;
        }
        Ok(self.0.deliver(target, prepared.key, prepared.msg))
    }

    /// Sends `event` to the local sockets `target` names now, and queues the
    /// forward to the other nodes, without waiting: for messages that come
    /// from sockets (chat), where local delivery must not wait on the
    /// backplane. Forwards go out in call order; a backplane failure or a
    /// full queue is logged and counted ([`ClusterStats`]), not returned.
    /// The report counts the local sockets.
    pub fn emit_local_first(&self, event: &Event, target: &Target) -> Broadcast {
        self.send_local_first(event.to_json(), target)
    }

    /// [`emit_local_first`](WsCluster::emit_local_first) for a text frame of
    /// the app's own format, not an [`Event`].
    pub fn send_local_first(&self, text: impl Into<String>, target: &Target) -> Broadcast {
        let prepared = self.0.prepare(text.into(), target, true);
        let report = self.0.deliver(target, prepared.key, prepared.msg);
        if let Some(forward) = prepared.forward {
            self.0.enqueue(Op::Forward(forward));
        }
        report
    }

    /// Joins `client` to `room` (checked as `ws_room_join` checks it) and
    /// calls `done` once the node receives what any node sends to the room
    /// (its backplane subscription is in effect), before any message of the
    /// room reaches the client: answer the client's request from `done`
    /// (`ws_control`'s `ControlConfig::join`), and what a node sends after
    /// that answer reaches it. With [`ClusterConfig::room_history`], the
    /// client then gets the room's last messages, oldest first, before any
    /// live message of the room, each once. `done` gets the refusal at once
    /// (an invalid room name, a client not registered, too many rooms); the
    /// answers to one client's joins and [`leave`](WsCluster::leave)s come in
    /// call order.
    pub fn join(
        &self,
        client: &WsClient,
        room: &str,
        done: impl FnOnce(Result<(), JoinError>) + Send + 'static,
    ) {
        self.0.join(client, room, Box::new(done));
    }

    /// Takes `client` out of `room` now and calls `done` after the answers
    /// to the joins asked before (see [`join`](WsCluster::join)).
    pub fn leave(&self, client: &WsClient, room: &str, done: impl FnOnce() + Send + 'static) {
        self.0.hub.leave(client, room);
        if let Err(refused) = self.0.queue.try_send(Op::Answer(Box::new(done))) {
            self.0.queue_full();
            if let Op::Answer(done) = refused.into_inner() {
                done();
            }
        }
    }

    /// Completes once the node receives what any node sends to the channels
    /// its members need now (the users of the connections registered so
    /// far, the rooms joined so far): await it before telling a new
    /// connection it is connected (`ws_control`'s `ControlConfig::ready`), so
    /// an emit to its user from any node after that reaches it. Completes
    /// at once when the backplane is disconnected (the subscriptions are
    /// applied when it reconnects).
    pub fn ready(&self) -> impl Future<Output = ()> + Send + use<> {
        let applied = self.0.backplane.subscriptions_applied();
        async move {
            let _ = applied.await;
        }
    }

    /// Who is in `room` across the nodes.
    pub async fn presence(&self, room: &str) -> Result<Presence, BackplaneError> {
        self.0.backplane.presence(room).await
    }

    /// Waits until the operations queued so far (forwards, presence changes
    /// and their events) were done.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.0.queue.send(Op::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ClusterStats {
        let c = &self.0.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ClusterStats {
            published: get(&c.published),
            received: get(&c.received),
            duplicates: get(&c.duplicates),
            own: get(&c.own),
            errors: get(&c.errors),
            queue_full: get(&c.queue_full),
            malformed: get(&c.malformed),
            resyncs: get(&c.resyncs),
            history_skipped: get(&c.history_skipped),
        }
    }
}

impl fmt::Debug for WsCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsCluster")
            .field("node", &self.0.node)
            .field("hub", &self.0.hub)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Inner {
    /// The event as one shared message with its envelope's key, and, when
    /// the target reaches beyond this node, what to publish. `keep`: the
    /// message is kept in the history of the target's rooms (when
    /// [`ClusterConfig::room_history`] is set).
    fn prepare(&self, json: String, target: &Target, keep: bool) -> Prepared {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let channels = self.channels(target);
        let forward = (!channels.is_empty()).then(|| {
            let envelope =
                envelope::encode(self.node, seq, channels.len(), target, json.as_bytes());
            let rooms = if keep && self.config.room_history > 0 && !target.broadcast {
                target.rooms.clone()
            } else {
                Vec::new()
            };
            Forward {
                channels,
                rooms,
                envelope,
            }
        });
        Prepared {
            key: (self.node, seq),
            msg: Message::text(json),
            forward,
        }
    }

    /// The channels `target` names, each once; none for this node's client ids.
    fn channels(&self, target: &Target) -> Vec<Channel> {
        if target.broadcast {
            return vec![Channel::All];
        }
        let mut channels: Vec<Channel> = Vec::new();
        let names = (target.rooms.iter().map(|r| Channel::Room(r.clone())))
            .chain(target.users.iter().map(|u| Channel::User(u.clone())))
            .chain(
                (target.clients.iter().map(|id| node_of(*id)))
                    .filter(|n| *n != self.node)
                    .map(Channel::Node),
            );
        for channel in names {
            if !channels.contains(&channel) {
                channels.push(channel);
            }
        }
        channels
    }

    /// Queues `msg` (its envelope's key is `key`) for every local socket
    /// `target` names, each once; holds it for the sockets waiting for the
    /// history of a targeted room.
    fn deliver(&self, target: &Target, key: (u64, u64), msg: Message) -> Broadcast {
        if target.broadcast {
            return ws_broadcast(&self.hub, msg);
        }
        // Framed once for every local socket.
        let frame = Frame::new(&msg);
        let mut report = Broadcast::default();
        if target.rooms.is_empty() || self.holding.load(Ordering::Acquire) == 0 {
            self.hub
                .for_each_in(&target.clients, &target.rooms, &target.users, |client| {
                    report.count(client.try_send_frame(&frame));
                });
            return report;
        }
        // Held under the lock the history's sender takes: a held message
        // goes out after the history, a later one after the held ones.
        let mut holds = lock(&self.holds);
        self.hub
            .for_each_in(&target.clients, &target.rooms, &target.users, |client| {
                let id = client.id();
                let room = target
                    .rooms
                    .iter()
                    .find(|r| holds.get(*r).is_some_and(|h| h.contains_key(&id)));
                match room.and_then(|r| holds.get_mut(r)?.get_mut(&id)) {
                    Some(hold) if hold.messages.len() < MAX_HELD => {
                        hold.messages.push((key, msg.clone()));
                        report.sent += 1;
                    }
                    _ => report.count(client.try_send_frame(&frame)),
                }
            });
        report
    }

    /// Joins `client` to `room`, holding the room's messages for it until
    /// the node's task answered `done` (and sent the room's history).
    fn join(&self, client: &WsClient, room: &str, done: Done) {
        // A hold made now is this join's; one already there belongs to a
        // join being completed, which releases it.
        let fresh = {
            let mut holds = lock(&self.holds);
            let for_room = holds.entry(room.to_string()).or_default();
            let fresh = !for_room.contains_key(&client.id());
            if fresh {
                for_room.insert(client.id(), Hold::default());
                self.holding.fetch_add(1, Ordering::AcqRel);
            }
            fresh
        };
        if let Err(e) = self.hub.join(client, room) {
            if fresh {
                self.release(room, client.id(), Vec::new());
            }
            return done(Err(e));
        }
        let op = Op::Join {
            room: room.to_string(),
            client: client.id(),
            done,
            release: fresh,
        };
        if let Err(refused) = self.queue.try_send(op)
            && let Op::Join { done, .. } = refused.into_inner()
        {
            self.queue_full();
            if self.config.room_history > 0 && fresh {
                bump(&self.counters.history_skipped);
            }
            done(Ok(()));
            if fresh {
                self.release(room, client.id(), Vec::new());
            }
        }
    }

    /// Completes a join in the node's task: once the node's subscriptions
    /// are in effect, answers it, then sends the room's history (if kept)
    /// and what was held.
    async fn complete_join(&self, room: &str, client: ClientId, done: Done, release: bool) {
        if let Err(e) = self.backplane.subscriptions_applied().await {
            // Disconnected: the subscription is applied when it reconnects.
            self.failed("subscribe", &e);
        }
        done(Ok(()));
        if !release {
            return;
        }
        let history = if self.config.room_history == 0 || !self.is_member(room, client) {
            Vec::new()
        } else {
            match self.backplane.recent(room, self.config.room_history).await {
                Ok(history) => history,
                Err(e) => {
                    self.failed("recent", &e);
                    bump(&self.counters.history_skipped);
                    Vec::new()
                }
            }
        };
        self.release(room, client, history);
    }

    /// Sends `history` (envelopes, oldest first) to `client`, leaving out
    /// those held for it, then what was held, and ends the hold.
    fn release(&self, room: &str, client: ClientId, history: Vec<Bytes>) {
        let mut holds = lock(&self.holds);
        let Some(for_room) = holds.get_mut(room) else {
            return;
        };
        let Some(hold) = for_room.remove(&client) else {
            return;
        };
        if for_room.is_empty() {
            holds.remove(room);
        }
        self.holding.fetch_sub(1, Ordering::AcqRel);
        let Some(socket) = self.hub.client(client) else {
            return;
        };
        if !self.hub.is_member(&socket, room) {
            // Left while its history was read: nothing of the room is due.
            return;
        }
        let held: HashSet<(u64, u64)> = hold.messages.iter().map(|(key, _)| *key).collect();
        for envelope in history {
            let Some((origin, seq, _)) = envelope::peek(&envelope) else {
                continue;
            };
            if held.contains(&(origin, seq)) {
                continue;
            }
            if let Some((_, json)) = envelope::open(&envelope) {
                let _ = socket.try_send(Message::Text(json));
            }
        }
        for (_, msg) in hold.messages {
            let _ = socket.try_send(msg);
        }
    }

    /// Publishes forwards, each started before the next (in order on the
    /// backplane), all awaited together; failures are counted.
    async fn publish_burst(&self, burst: Vec<Forward>) {
        join_all(burst.into_iter().map(|forward| self.publish(forward))).await;
    }

    async fn publish(&self, forward: Forward) -> Result<(), BackplaneError> {
        let Forward {
            channels,
            rooms,
            envelope,
        } = forward;
        let published = if rooms.is_empty() {
            self.backplane.publish(channels, envelope).await
        } else {
            let keep = self.config.room_history;
            self.backplane
                .publish_kept(channels, rooms, keep, envelope)
                .await
        };
        match published {
            Ok(()) => {
                bump(&self.counters.published);
                Ok(())
            }
            Err(e) => {
                self.failed("publish", &e);
                Err(e)
            }
        }
    }

    fn failed(&self, what: &str, e: &BackplaneError) {
        bump(&self.counters.errors);
        tracing::warn!(target: "ws_cluster", node = self.node, error = %e, "{what} failed");
    }

    /// Queues `op` for the node's task; `false` (counted) when the queue is full.
    fn enqueue(&self, op: Op) -> bool {
        if self.queue.try_send(op).is_err() {
            self.queue_full();
            return false;
        }
        true
    }

    #[cold]
    fn queue_full(&self) {
        bump(&self.counters.queue_full);
        tracing::warn!(target: "ws_cluster", node = self.node, "queue full: a backplane operation was dropped or done at once");
    }

    /// What the backplane hands this node.
    fn receive(&self, incoming: Incoming) {
        let payload = match incoming {
            Incoming::Message { payload, .. } => payload,
            Incoming::Resync => {
                bump(&self.counters.resyncs);
                tracing::info!(target: "ws_cluster", node = self.node, "backplane reconnected: messages published meanwhile were missed");
                return;
            }
        };
        let Some((origin, seq, copies)) = envelope::peek(&payload) else {
            bump(&self.counters.malformed);
            return;
        };
        if origin == self.node {
            bump(&self.counters.own);
            return;
        }
        if copies > 1 && !lock(&self.recent).insert((origin, seq)) {
            bump(&self.counters.duplicates);
            return;
        }
        let Some((target, json)) = envelope::open(&payload) else {
            bump(&self.counters.malformed);
            return;
        };
        bump(&self.counters.received);
        self.deliver(&target, (origin, seq), Message::Text(json));
    }

    fn on_membership(&self, m: Membership<'_>) {
        match m {
            Membership::Joined {
                room,
                client,
                user,
                first,
            } => {
                if first {
                    self.follow(Channel::Room(room.to_string()));
                }
                self.enqueue(Op::Joined {
                    room: room.to_string(),
                    client,
                    user: user.map(str::to_string),
                });
            }
            Membership::Left {
                room, client, last, ..
            } => {
                if last {
                    self.follow(Channel::Room(room.to_string()));
                }
                self.enqueue(Op::Left {
                    room: room.to_string(),
                    client,
                });
            }
            Membership::UserArrived { user } | Membership::UserGone { user } => {
                self.follow(Channel::User(user.to_string()));
            }
        }
    }

    /// Subscribes `channel` if the hub has members for it now, unsubscribes
    /// it otherwise: re-reads the hub, so first/last changes told out of
    /// order still end right.
    fn follow(&self, channel: Channel) {
        let mut subscribed = lock(&self.subscribed);
        let wanted = match &channel {
            Channel::Room(r) => self.hub.room_len(r) > 0,
            Channel::User(u) => self.hub.user_len(u) > 0,
            _ => return,
        };
        if wanted && subscribed.insert(channel.clone()) {
            self.backplane.subscribe(channel);
        } else if !wanted && subscribed.remove(&channel) {
            self.backplane.unsubscribe(channel);
        }
    }

    fn is_member(&self, room: &str, client: ClientId) -> bool {
        self.hub
            .client(client)
            .is_some_and(|c| self.hub.is_member(&c, room))
    }

    /// Sends a presence event to `room` on every node: local sockets first,
    /// then the backplane (a failure is counted).
    async fn announce(&self, kind: &str, room: &str, client: ClientId, user: Option<&str>) {
        let event = Event::new(
            kind,
            serde_json::json!({"room": room, "user": user, "client": client.to_string()}),
        );
        let target = Target::rooms([room]);
        let prepared = self.prepare(event.to_json(), &target, false);
        self.deliver(&target, prepared.key, prepared.msg);
        if let Some(forward) = prepared.forward {
            let _ = self.publish(forward).await;
        }
    }

    async fn apply(&self, op: Op, local: &mut Local) {
        match op {
            Op::Forward(forward) => self.publish_burst(vec![forward]).await,
            Op::Join {
                room,
                client,
                done,
                release,
            } => self.complete_join(&room, client, done, release).await,
            Op::Answer(done) => done(),
            Op::Joined { room, client, user } => {
                // Told out of order with its leave, or left since: nothing to say.
                if !self.is_member(&room, client) {
                    return;
                }
                let members = local.members.entry(room.clone()).or_default();
                if members.insert(client, user.clone()).is_some() {
                    return;
                }
                self.set_presence(local, &room, client, user.clone()).await;
                self.announce(types::PRESENCE_JOIN, &room, client, user.as_deref())
                    .await;
            }
            Op::Left { room, client } => self.leave(local, &room, client).await,
            Op::Flush(done) => {
                let _ = done.send(());
            }
        }
    }

    /// Records a local member in the backplane's presence; a refusal is
    /// retried at the next sweeps.
    async fn set_presence(
        &self,
        local: &mut Local,
        room: &str,
        client: ClientId,
        user: Option<String>,
    ) {
        let key = (room.to_string(), client);
        local.unremoved.remove(&key);
        match self
            .backplane
            .presence_set(room, PresenceMember { client, user })
            .await
        {
            Ok(()) => {
                local.unset.remove(&key);
            }
            Err(e) => {
                self.failed("presence_set", &e);
                local.unset.insert(key);
            }
        }
    }

    /// Removes a member from the backplane's presence; a refusal is retried
    /// at the next sweeps.
    async fn remove_presence(&self, local: &mut Local, room: &str, client: ClientId) {
        let key = (room.to_string(), client);
        local.unset.remove(&key);
        match self.backplane.presence_remove(room, client).await {
            Ok(()) => {
                local.unremoved.remove(&key);
            }
            Err(e) => {
                self.failed("presence_remove", &e);
                local.unremoved.insert(key);
            }
        }
    }

    /// Removes a local member from presence and tells the room, if it was there.
    async fn leave(&self, local: &mut Local, room: &str, client: ClientId) {
        let Some(members) = local.members.get_mut(room) else {
            return;
        };
        let Some(user) = members.remove(&client) else {
            return;
        };
        if members.is_empty() {
            local.members.remove(room);
        }
        self.remove_presence(local, room, client).await;
        self.announce(types::PRESENCE_LEAVE, room, client, user.as_deref())
            .await;
    }

    /// Tells rooms of members that expired (their node stopped), catches up
    /// with local leaves whose operation was dropped, and retries presence
    /// writes the backplane refused.
    async fn sweep(&self, local: &mut Local) {
        let stale: Vec<(String, ClientId)> = local
            .members
            .iter()
            .flat_map(|(room, members)| members.keys().map(move |c| (room, *c)))
            .filter(|(room, c)| !self.is_member(room, *c))
            .map(|(room, c)| (room.clone(), c))
            .collect();
        for (room, client) in stale {
            self.leave(local, &room, client).await;
        }
        for (room, client) in std::mem::take(&mut local.unremoved) {
            self.remove_presence(local, &room, client).await;
        }
        for (room, client) in std::mem::take(&mut local.unset) {
            let user = local
                .members
                .get(&room)
                .and_then(|m| m.get(&client))
                .cloned();
            if let Some(user) = user {
                self.set_presence(local, &room, client, user).await;
            }
        }
        let rooms: Vec<String> = local.members.keys().cloned().collect();
        for room in rooms {
            let expired = match self.backplane.presence_expire(&room).await {
                Ok(expired) => expired,
                Err(e) => {
                    self.failed("presence_expire", &e);
                    continue;
                }
            };
            for member in expired {
                let ours = local
                    .members
                    .get(&room)
                    .is_some_and(|m| m.contains_key(&member.client));
                if ours {
                    // Still here (a refresh came late): put it back, say nothing.
                    self.set_presence(local, &room, member.client, member.user)
                        .await;
                } else {
                    self.announce(
                        types::PRESENCE_LEAVE,
                        &room,
                        member.client,
                        member.user.as_deref(),
                    )
                    .await;
                }
            }
        }
    }
}

/// This node's members in the backplane's presence, as the node's task keeps them.
#[derive(Default)]
struct Local {
    /// Room -> client -> user.
    members: HashMap<String, HashMap<ClientId, Option<String>>>,
    /// Members whose `presence_set` the backplane refused: retried.
    unset: HashSet<(String, ClientId)>,
    /// Gone members whose `presence_remove` the backplane refused: retried.
    unremoved: HashSet<(String, ClientId)>,
}

/// The node's task: the queued operations in order, and the presence sweep.
/// Ends when the cluster is dropped.
async fn run(inner: Weak<Inner>, mut ops: mpsc::Receiver<Op>, sweep: Duration) {
    let sweep = sweep.max(Duration::from_millis(1));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + sweep, sweep);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut local = Local::default();
    loop {
        tokio::select! {
            op = ops.recv() => {
                let (Some(op), Some(inner)) = (op, inner.upgrade()) else { break };
                let mut next = Some(op);
                while let Some(op) = next.take() {
                    let Op::Forward(first) = op else {
                        inner.apply(op, &mut local).await;
                        continue;
                    };
                    // The forwards queued behind it go out together, in order:
                    // one round trip for a burst (and the other nodes get the
                    // burst together), not one per message.
                    let mut burst = vec![first];
                    while burst.len() < MAX_BURST {
                        match ops.try_recv() {
                            Ok(Op::Forward(forward)) => burst.push(forward),
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    inner.publish_burst(burst).await;
                }
            }
            _ = tick.tick() => {
                let Some(inner) = inner.upgrade() else { break };
                inner.sweep(&mut local).await;
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The envelope on the backplane: `wsc1`, origin node, sequence and copies
/// (channels it was published on) as big-endian integers, the target as
/// JSON with its length before it, then the event's JSON as the clients get it.
mod envelope {
    use super::*;

    const MAGIC: &[u8; 4] = b"wsc1";
    /// Magic, origin, sequence, copies, target length.
    const HEAD: usize = 4 + 8 + 8 + 4 + 4;

    #[derive(Serialize)]
    struct WireRef<'a> {
        b: bool,
        r: &'a [String],
        u: &'a [String],
        c: &'a [u64],
    }

    #[derive(Deserialize)]
    struct Wire {
        b: bool,
        r: Vec<String>,
        u: Vec<String>,
        c: Vec<u64>,
    }

    pub(super) fn encode(
        origin: u64,
        seq: u64,
        copies: usize,
        target: &Target,
        json: &[u8],
    ) -> Bytes {
        let wire = WireRef {
            b: target.broadcast,
            r: if target.broadcast { &[] } else { &target.rooms },
            u: if target.broadcast { &[] } else { &target.users },
            c: if target.broadcast {
                &[]
            } else {
                &target.clients
            },
        };
        let head = serde_json::to_vec(&wire).expect("a target always serializes");
        let mut out = Vec::with_capacity(HEAD + head.len() + json.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&origin.to_be_bytes());
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&u32::try_from(copies).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(
            &u32::try_from(head.len())
                .expect("a target under 4 GiB")
                .to_be_bytes(),
        );
        out.extend_from_slice(&head);
        out.extend_from_slice(json);
        Bytes::from(out)
    }

    fn int<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
        b.get(at..at + N)?.try_into().ok()
    }

    /// Origin, sequence and copies, without reading the rest.
    pub(super) fn peek(b: &[u8]) -> Option<(u64, u64, u32)> {
        if b.len() < HEAD || &b[..4] != MAGIC {
            return None;
        }
        Some((
            u64::from_be_bytes(int(b, 4)?),
            u64::from_be_bytes(int(b, 12)?),
            u32::from_be_bytes(int(b, 20)?),
        ))
    }

    /// The target and the event's JSON (sharing the envelope's bytes).
    pub(super) fn open(b: &Bytes) -> Option<(Target, Utf8Bytes)> {
        let len = usize::try_from(u32::from_be_bytes(int(b, 24)?)).ok()?;
        let end = HEAD.checked_add(len)?;
        let wire: Wire = serde_json::from_slice(b.get(HEAD..end)?).ok()?;
        let json = Utf8Bytes::try_from(b.slice(end..)).ok()?;
        let target = Target {
            broadcast: wire.b,
            rooms: wire.r,
            users: wire.u,
            clients: wire.c,
        };
        Some((target, json))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backplane_memory::{MemoryBus, MemoryConfig};
    use serde_json::{Value, json};
    use ws_hub::{Identity, WsClient};

    /// A node: its cluster (and hub) on `bus`.
    fn node(bus: &MemoryBus) -> WsCluster {
        let backplane: Arc<dyn Backplane> = Arc::new(bus.node());
        let hub = WsHub::new(WsCluster::hub_config(&*backplane, HubConfig::default()));
        WsCluster::new(hub, backplane)
    }

    fn user(c: &WsCluster, name: &str) -> WsClient {
        c.hub().register_as(None, Identity::user(name)).unwrap()
    }

    /// The events queued for `client`, taken.
    fn got(client: &WsClient) -> Vec<Value> {
        client
            .take_queued()
            .into_iter()
            .map(|m| serde_json::from_str(m.to_text().unwrap()).unwrap())
            .collect()
    }

    /// The `data` of the `kind` events queued for `client` (taking them all).
    fn data_of(client: &WsClient, kind: &str) -> Vec<Value> {
        got(client)
            .into_iter()
            .filter(|e| e["type"] == kind)
            .map(|e| e["data"].clone())
            .collect()
    }

    async fn settle(nodes: &[&WsCluster]) {
        for n in nodes {
            n.flush().await;
        }
    }

    fn notice(n: u64) -> Event {
        Event::new("notice", json!(n)).at(1)
    }

    fn notices(client: &WsClient) -> Vec<Value> {
        data_of(client, "notice")
    }

    /// Joins `c` to `room` through the cluster, answering as `ws_control`
    /// does: an `answer` event with the result, in the client's outbox.
    fn join(n: &WsCluster, c: &WsClient, room: &str) {
        let client = c.clone();
        n.join(c, room, move |result| {
            let answer = Event::new("answer", json!(format!("{result:?}")));
            let _ = client.try_send(Message::text(answer.to_json()));
        });
    }

    #[tokio::test]
    async fn ready_completes_once_the_users_of_new_connections_reach_the_node() {
        let bus = MemoryBus::new(MemoryConfig::default());
        let (a, b) = (node(&bus), node(&bus));
        bus.delay_subscriptions(true);
        let ana = user(&a, "ana");
        let mut ready = std::pin::pin!(a.ready());
        let cx = &mut std::task::Context::from_waker(std::task::Waker::noop());
        assert!(ready.as_mut().poll(cx).is_pending());
        bus.delay_subscriptions(false);
        ready.await;
        b.emit(&notice(1), &Target::users(["ana"])).await.unwrap();
        assert_eq!(notices(&ana), [json!(1)]);
    }

    #[tokio::test]
    async fn a_join_is_answered_once_the_node_receives_the_room_from_every_node() {
        let bus = MemoryBus::new(MemoryConfig::default());
        let (a, b) = (node(&bus), node(&bus));
        let ana = user(&a, "ana");
        let room = Target::rooms(["r"]);
        bus.delay_subscriptions(true);
        join(&a, &ana, "r");
        settle(&[&b]).await;
        // a's task waits for the subscription: flush would wait behind it.
        tokio::task::yield_now().await;
        assert!(a.hub().is_member(&ana, "r"));
        assert!(
            got(&ana).is_empty(),
            "answered before the room reaches the node"
        );
        // Sent on a meanwhile: held for ana until the answer.
        a.emit(&notice(1), &room).await.unwrap();
        assert!(got(&ana).is_empty());

        bus.delay_subscriptions(false);
        settle(&[&a]).await;
        let events = got(&ana);
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            ["answer", types::PRESENCE_JOIN, "notice"],
            "{events:?}"
        );
        assert_eq!(events[0]["data"], "Ok(())");
        // From now on what b sends to the room reaches ana.
        b.emit(&notice(2), &room).await.unwrap();
        assert_eq!(notices(&ana), [json!(2)]);

        // A refusal is answered at once; a leave after the joins before it.
        join(&a, &ana, "");
        assert_eq!(data_of(&ana, "answer"), [json!("Err(InvalidName)")]);
        bus.delay_subscriptions(true);
        let bo = user(&a, "bo");
        join(&a, &bo, "s");
        let left = bo.clone();
        a.leave(&bo, "s", move || {
            let _ = left.try_send(Message::text(Event::new("left", json!("s")).to_json()));
        });
        tokio::task::yield_now().await;
        assert!(got(&bo).is_empty());
        bus.delay_subscriptions(false);
        settle(&[&a]).await;
        let kinds: Vec<String> = got(&bo).iter().map(|e| e["type"].to_string()).collect();
        assert_eq!(kinds, [r#""answer""#, r#""left""#]);
        assert!(!a.hub().is_member(&bo, "s"));
    }

    #[tokio::test]
    async fn emits_reach_the_right_clients_on_every_node_exactly_once() {
        let bus = MemoryBus::new(MemoryConfig::default());
        let (a, b, c) = (node(&bus), node(&bus), node(&bus));
        let a_ana = user(&a, "ana");
        let a_bo = user(&a, "bo");
        let b_ana = user(&b, "ana");
        let b_cy = user(&b, "cy");
        let c_dee = user(&c, "dee");
        let c_anon = c.hub().register(None).unwrap();
        assert_eq!(ws_hub::node_of(b_cy.id()), b.node(), "ids name their node");
        a.hub().join(&a_ana, "r").unwrap();
        b.hub().join(&b_ana, "r").unwrap();
        b.hub().join(&b_ana, "s").unwrap();
        c.hub().join(&c_dee, "s").unwrap();
        settle(&[&a, &b, &c]).await;
        let all = [&a_ana, &a_bo, &b_ana, &b_cy, &c_dee, &c_anon];
        for client in all {
            client.take_queued();
        }
        let check = |want: &[&WsClient], n: u64| {
            for client in all {
                let expect = if want.contains(&client) {
                    vec![json!(n)]
                } else {
                    vec![]
                };
                assert_eq!(notices(client), expect, "emit {n}, client {client:?}");
            }
        };

        let local = a.emit(&notice(1), &Target::broadcast()).await.unwrap();
        assert_eq!(local.sent, 2, "A's own sockets");
        check(&all, 1);
        b.emit(&notice(2), &Target::rooms(["r"])).await.unwrap();
        check(&[&a_ana, &b_ana], 2);
        c.emit(&notice(3), &Target::users(["ana"])).await.unwrap();
        check(&[&a_ana, &b_ana], 3);
        a.emit(
            &notice(4),
            &Target::clients([b_cy.id(), c_anon.id(), a_bo.id()]),
        )
        .await
        .unwrap();
        check(&[&b_cy, &c_anon, &a_bo], 4);
        a.emit(&notice(5), &Target::rooms(["s"]).and_users(["bo"]))
            .await
            .unwrap();
        check(&[&b_ana, &c_dee, &a_bo], 5);
        c.emit(&notice(6), &Target::rooms(["nowhere"]))
            .await
            .unwrap();
        check(&[], 6);
        assert_eq!(
            a.stats().own,
            3,
            "A's envelopes came back on All, room s, user bo"
        );
    }

    #[tokio::test]
    async fn overlapping_targets_give_one_copy() {
        let bus = MemoryBus::new(MemoryConfig::default());
        let (a, b) = (node(&bus), node(&bus));
        let ana = user(&b, "ana");
        b.hub().join(&ana, "r").unwrap();
        b.hub().join(&ana, "s").unwrap();
        settle(&[&a, &b]).await;
        ana.take_queued();
        let before = b.stats();
        let target = Target::rooms(["r", "s", "r"])
            .and_users(["ana"])
            .and_clients([ana.id()]);
        a.emit(&notice(1), &target).await.unwrap();
        assert_eq!(notices(&ana), [json!(1)], "one copy");
        let after = b.stats();
        assert_eq!(after.received - before.received, 1);
        assert_eq!(
            after.duplicates - before.duplicates,
            3,
            "room r, room s, user ana and node: 4 channels, 1 delivered"
        );
        // And from a socket: the same rule.
        a.emit_local_first(&notice(2), &target);
        a.flush().await;
        assert_eq!(notices(&ana), [json!(2)]);
    }

    #[tokio::test]
    async fn subscriptions_follow_first_join_and_last_leave() {
        let bus = MemoryBus::new(MemoryConfig::default());
        let (a, b) = (node(&bus), node(&bus));
        let room = |r: &str| bus.subscribers(&Channel::Room(r.into()));
        let user_ch = |u: &str| bus.subscribers(&Channel::User(u.into()));
        assert_eq!(bus.subscribers(&Channel::All), [1, 2]);
        assert_eq!(bus.subscribers(&Channel::Node(2)), [2]);

        let ana1 = user(&a, "ana");
        assert_eq!(user_ch("ana"), [1]);
        let ana2 = user(&a, "ana");
        let anon = a.hub().register(None).unwrap();
        let bo = user(&b, "bo");
        assert!(room("r").is_empty(), "no member, no subscription");
        a.hub().join(&ana1, "r").unwrap();
        assert_eq!(room("r"), [1]);
        a.hub().join(&anon, "r").unwrap();
        b.hub().join(&bo, "r").unwrap();
        assert_eq!(room("r"), [1, 2]);
        assert!(a.hub().leave(&ana1, "r"));
        assert_eq!(room("r"), [1, 2], "anon is still in r on A");
        a.hub().unregister(anon.id());
        assert_eq!(room("r"), [2], "the last local member left");
        a.hub().unregister(ana1.id());
        assert_eq!(user_ch("ana"), [1], "ana2 still connected");
        a.hub().unregister(ana2.id());
        assert!(user_ch("ana").is_empty());
        b.hub().stop();
        assert!(
            room("r").is_empty() && user_ch("bo").is_empty(),
            "stop is everyone leaving"
        );
        assert_eq!(bus.subscribers(&Channel::All), [1, 2], "always");
    }

    #[tokio::test]
    async fn own_envelopes_come_back_and_are_ignored() {
        let bus = MemoryBus::new(MemoryConfig::default());
        let a = node(&bus);
        let ana = user(&a, "ana");
        a.hub().join(&ana, "r").unwrap();
        a.flush().await;
        ana.take_queued();
        let before = a.stats();
        let report = a
            .emit(&notice(1), &Target::rooms(["r"]).and_users(["ana"]))
            .await
            .unwrap();
        assert_eq!(report.sent, 1);
        assert_eq!(notices(&ana), [json!(1)], "local delivery only");
        let after = a.stats();
        assert_eq!(
            (after.own - before.own, after.received - before.received),
            (2, 0)
        );
        assert_eq!(
            after.published - before.published,
            1,
            "one publish for two channels"
        );
    }

    #[tokio::test]
    async fn presence_spans_nodes_and_join_and_leave_events_reach_the_room_on_both() {
        let bus = MemoryBus::new(MemoryConfig::default());
        let (a, b) = (node(&bus), node(&bus));
        let ana = user(&a, "ana");
        let bo = user(&b, "bo");
        let anon = b.hub().register(None).unwrap();
        a.hub().join(&ana, "r").unwrap();
        settle(&[&a]).await;
        b.hub().join(&bo, "r").unwrap();
        settle(&[&b]).await;
        b.hub().join(&anon, "r").unwrap();
        settle(&[&b]).await;
        let member = |c: &WsClient, user: Option<&str>| PresenceMember {
            client: c.id(),
            user: user.map(str::to_string),
        };
        let p = a.presence("r").await.unwrap();
        assert_eq!(
            p.members,
            [
                member(&ana, Some("ana")),
                member(&bo, Some("bo")),
                member(&anon, None)
            ]
        );
        assert_eq!(p.users(), ["ana", "bo"]);
        assert_eq!(
            b.presence("r").await.unwrap(),
            p,
            "the same from every node"
        );

        let join = |c: &WsClient, user: Option<&str>| json!({"room": "r", "user": user, "client": c.id().to_string()});
        let joins = [
            join(&ana, Some("ana")),
            join(&bo, Some("bo")),
            join(&anon, None),
        ];
        assert_eq!(
            data_of(&ana, "presence.join"),
            joins,
            "its own join, then the others'"
        );
        assert_eq!(data_of(&bo, "presence.join"), joins[1..]);
        assert_eq!(data_of(&anon, "presence.join"), joins[2..]);

        assert!(b.hub().leave(&bo, "r"));
        b.hub().unregister(anon.id());
        settle(&[&b]).await;
        assert_eq!(
            data_of(&ana, "presence.leave"),
            [join(&bo, Some("bo")), join(&anon, None)],
            "a leave and a disconnect, told on the other node"
        );
        assert!(got(&bo).is_empty(), "bo left: no longer told");
        assert_eq!(
            a.presence("r").await.unwrap().members,
            [member(&ana, Some("ana"))]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_nodes_members_expire_after_the_ttl_and_leave_is_sent_once() {
        let ttl = Duration::from_secs(15);
        let bus = MemoryBus::new(MemoryConfig {
            presence_ttl: ttl,
            ..MemoryConfig::default()
        });
        let (a, b, c) = (node(&bus), node(&bus), node(&bus));
        let a_ana = user(&a, "ana");
        let a_anon = a.hub().register(None).unwrap();
        let b_bo = user(&b, "bo");
        let c_cy = user(&c, "cy");
        for (n, client) in [(&a, &a_ana), (&a, &a_anon), (&b, &b_bo), (&c, &c_cy)] {
            n.hub().join(client, "r").unwrap();
        }
        settle(&[&a, &b, &c]).await;
        assert_eq!(b.presence("r").await.unwrap().connections(), 4);
        b_bo.take_queued();
        c_cy.take_queued();
        let (ana_id, anon_id) = (a_ana.id(), a_anon.id());

        drop(a); // node A crashes: its task and backplane go, nothing is removed
        tokio::task::yield_now().await;
        assert_eq!(bus.nodes(), [2, 3]);
        tokio::time::sleep(ttl - Duration::from_secs(1)).await;
        assert_eq!(
            b.presence("r").await.unwrap().connections(),
            4,
            "within the TTL"
        );
        assert!(got(&b_bo).is_empty(), "nobody left yet");

        tokio::time::sleep(Duration::from_secs(1) + ClusterConfig::default().presence_sweep).await;
        let left = |id: ClientId, user: Option<&str>| json!({"room": "r", "user": user, "client": id.to_string()});
        let mut want = vec![left(ana_id, Some("ana")), left(anon_id, None)];
        want.sort_by_key(Value::to_string);
        for client in [&b_bo, &c_cy] {
            let mut leaves = data_of(client, "presence.leave");
            leaves.sort_by_key(Value::to_string);
            assert_eq!(leaves, want, "each leave once, on both nodes ({client:?})");
        }
        let p = c.presence("r").await.unwrap();
        assert_eq!(p.users(), ["bo", "cy"]);
        tokio::time::sleep(ttl).await;
        assert!(
            got(&b_bo).is_empty() && got(&c_cy).is_empty(),
            "never again"
        );
        drop(a_ana);
    }

    #[tokio::test]
    async fn an_unavailable_backplane_refuses_and_nothing_is_delivered() {
        let bus = MemoryBus::new(MemoryConfig::default());
        let (a, b) = (node(&bus), node(&bus));
        let a_ana = user(&a, "ana");
        let b_ana = user(&b, "ana");
        bus.set_available(false);
        let refused = a.emit(&notice(1), &Target::users(["ana"])).await;
        assert!(
            matches!(refused, Err(BackplaneError::Unavailable(_))),
            "{refused:?}"
        );
        assert!(
            got(&a_ana).is_empty() && got(&b_ana).is_empty(),
            "nothing delivered, here or there"
        );
        assert_eq!(a.stats().errors, 1);
        let only_local = a
            .emit(&notice(2), &Target::clients([a_ana.id()]))
            .await
            .unwrap();
        assert_eq!(
            only_local.sent, 1,
            "this node's client ids need no backplane"
        );
        assert_eq!(notices(&a_ana), [json!(2)]);

        // From a socket: local now, the failed forward counted.
        let report = a.emit_local_first(&notice(3), &Target::users(["ana"]));
        assert_eq!(report.sent, 1);
        a.flush().await;
        assert_eq!(notices(&a_ana), [json!(3)]);
        assert!(got(&b_ana).is_empty());
        assert_eq!(a.stats().errors, 2);

        bus.set_available(true);
        assert_eq!((a.stats().resyncs, b.stats().resyncs), (1, 1));
        a.emit(&notice(4), &Target::users(["ana"])).await.unwrap();
        assert_eq!(
            (notices(&a_ana), notices(&b_ana)),
            (vec![json!(4)], vec![json!(4)])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn presence_writes_refused_while_the_backplane_is_down_are_retried_at_the_sweep() {
        let bus = MemoryBus::new(MemoryConfig::default());
        let (a, b) = (node(&bus), node(&bus));
        let ana = user(&a, "ana");
        // Just past the next sweep (paused time runs every task due first).
        let sweep = ClusterConfig::default().presence_sweep + Duration::from_millis(1);
        bus.set_available(false);
        a.hub().join(&ana, "r").unwrap();
        a.flush().await;
        bus.set_available(true);
        assert!(b.presence("r").await.unwrap().members.is_empty(), "refused");
        tokio::time::sleep(sweep).await;
        a.flush().await;
        assert_eq!(
            b.presence("r").await.unwrap().users(),
            ["ana"],
            "written at the sweep"
        );

        bus.set_available(false);
        assert!(a.hub().leave(&ana, "r"));
        a.flush().await;
        bus.set_available(true);
        assert_eq!(b.presence("r").await.unwrap().connections(), 1, "refused");
        tokio::time::sleep(sweep).await;
        a.flush().await;
        assert!(
            b.presence("r").await.unwrap().members.is_empty(),
            "removed at the sweep"
        );
        assert_eq!(
            a.stats().errors,
            4,
            "set, its join event, remove, its leave event"
        );
    }

    #[tokio::test]
    async fn emit_local_first_delivers_now_and_forwards_in_order() {
        let bus = MemoryBus::new(MemoryConfig::default());
        let (a, b) = (node(&bus), node(&bus));
        let a_ana = user(&a, "ana");
        let b_ana = user(&b, "ana");
        for i in 0..100 {
            a.emit_local_first(&notice(i), &Target::users(["ana"]));
        }
        assert_eq!(notices(&a_ana).len(), 100, "local sockets did not wait");
        a.flush().await;
        assert_eq!(
            notices(&b_ana),
            (0..100).map(|i| json!(i)).collect::<Vec<_>>()
        );
        assert_eq!(a.stats().published, 100);
    }

    /// A node keeping `keep` messages per room.
    fn node_keeping(bus: &MemoryBus, keep: usize) -> WsCluster {
        let backplane: Arc<dyn Backplane> = Arc::new(bus.node());
        let hub = WsHub::new(WsCluster::hub_config(&*backplane, HubConfig::default()));
        let config = ClusterConfig {
            room_history: keep,
            ..ClusterConfig::default()
        };
        WsCluster::with_config(hub, backplane, config)
    }

    #[tokio::test]
    async fn a_joining_connection_gets_the_room_history_first_then_live_messages() {
        let bus = MemoryBus::new(MemoryConfig::default());
        let (a, b) = (node_keeping(&bus, 3), node_keeping(&bus, 3));
        let room = Target::rooms(["r"]);
        for n in 1..=5 {
            b.emit(&notice(n), &room).await.unwrap();
        }
        // Not a room message: never history.
        b.emit(&notice(99), &Target::broadcast()).await.unwrap();
        let ana = user(&a, "ana");
        join(&a, &ana, "r");
        settle(&[&a, &b]).await;
        b.emit(&notice(6), &room).await.unwrap();
        settle(&[&a, &b]).await;
        let events = got(&ana);
        let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds[..2],
            ["answer", "notice"],
            "answered, then the history"
        );
        let seen: Vec<u64> = events
            .iter()
            .filter(|e| e["type"] == "notice")
            .map(|e| e["data"].as_u64().unwrap())
            .collect();
        assert_eq!(
            seen,
            [3, 4, 5, 6],
            "the last 3 room messages, oldest first, then live"
        );
        assert_eq!(
            events
                .iter()
                .filter(|e| e["type"] == types::PRESENCE_JOIN)
                .count(),
            1,
            "its own presence.join comes after the history"
        );

        // Joining again, or a room it is in: answered, nothing repeated.
        join(&a, &ana, "r");
        settle(&[&a, &b]).await;
        assert_eq!(data_of(&ana, "answer"), [json!("Ok(())")]);

        // Left and back while its history is read: a member again, the
        // history once.
        let bo = user(&a, "bo");
        join(&a, &bo, "r");
        a.hub().leave(&bo, "r");
        join(&a, &bo, "r");
        assert!(a.hub().is_member(&bo, "r"));
        settle(&[&a, &b]).await;
        b.emit(&notice(7), &room).await.unwrap();
        settle(&[&a, &b]).await;
        let seen: Vec<u64> = notices(&bo).iter().map(|v| v.as_u64().unwrap()).collect();
        assert_eq!(seen, [4, 5, 6, 7]);
    }

    #[tokio::test]
    async fn messages_while_the_history_is_read_come_after_it_each_once() {
        let bus = MemoryBus::new(MemoryConfig::default());
        let (a, b) = (node_keeping(&bus, 4), node_keeping(&bus, 4));
        let room = Target::rooms(["r"]);
        for n in 1..=3 {
            b.emit(&notice(n), &room).await.unwrap();
        }
        let bo = user(&a, "bo");
        join(&a, &bo, "r");
        // Before a's task reads the history: from a socket on a (held, its
        // forward queued after the read), and from b (kept and held).
        a.emit_local_first(&notice(4), &room);
        b.emit(&notice(5), &room).await.unwrap();
        b.emit(&notice(6), &room).await.unwrap();
        settle(&[&a, &b]).await;
        b.emit(&notice(7), &room).await.unwrap();
        settle(&[&a, &b]).await;
        let seen: Vec<u64> = notices(&bo).iter().map(|v| v.as_u64().unwrap()).collect();
        // The history is the last 4 kept when it is read (2, 3, 5, 6); 5 and
        // 6 were held, so they come once, after 4.
        assert_eq!(seen, [2, 3, 4, 5, 6, 7], "in order, none twice, none lost");
        assert_eq!(a.stats().history_skipped, 0);
    }

    #[tokio::test]
    async fn without_the_backplane_a_join_gets_the_live_messages_only() {
        let bus = MemoryBus::new(MemoryConfig::default());
        let a = node_keeping(&bus, 5);
        a.emit(&notice(1), &Target::rooms(["r"])).await.unwrap();
        let cy = user(&a, "cy");
        bus.set_available(false);
        join(&a, &cy, "r");
        a.emit_local_first(&notice(2), &Target::rooms(["r"]));
        settle(&[&a]).await;
        assert_eq!(notices(&cy), [json!(2)]);
        assert_eq!(a.stats().history_skipped, 1);
        bus.set_available(true);
    }

    #[tokio::test]
    async fn without_room_history_join_is_a_plain_join() {
        let bus = MemoryBus::new(MemoryConfig::default());
        let a = node(&bus);
        a.emit(&notice(1), &Target::rooms(["r"])).await.unwrap();
        let di = user(&a, "di");
        join(&a, &di, "r");
        assert!(a.hub().is_member(&di, "r"));
        a.emit(&notice(2), &Target::rooms(["r"])).await.unwrap();
        settle(&[&a]).await;
        assert_eq!(notices(&di), [json!(2)]);
        assert!(
            a.backplane().recent("r", 10).await.unwrap().is_empty(),
            "nothing kept"
        );
    }

    #[test]
    fn envelopes_read_back_and_refuse_garbage() {
        let target = Target::rooms(["r"])
            .and_users(["ana"])
            .and_clients([1 << 48 | 7]);
        let env = envelope::encode(3, 9, 2, &target, br#"{"type":"x"}"#);
        assert_eq!(envelope::peek(&env), Some((3, 9, 2)));
        let (back, json) = envelope::open(&env).unwrap();
        assert_eq!((back, json.as_str()), (target, r#"{"type":"x"}"#));
        let all = envelope::encode(1, 1, 1, &Target::broadcast().and_rooms(["ignored"]), b"{}");
        assert_eq!(envelope::open(&all).unwrap().0, Target::broadcast());
        for bad in [
            &b""[..],
            b"wsc1",
            b"nope and more bytes than the head is long",
        ] {
            assert_eq!(envelope::peek(bad), None);
        }
        let mut cut = env.to_vec();
        cut.truncate(30);
        assert!(
            envelope::open(&Bytes::from(cut)).is_none(),
            "a target cut short"
        );
    }

    #[test]
    #[should_panic(expected = "build it with WsCluster::hub_config")]
    fn a_hub_of_another_node_is_refused() {
        let bus = MemoryBus::new(MemoryConfig::default());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _guard = rt.enter();
        WsCluster::new(WsHub::new(HubConfig::default()), Arc::new(bus.node()));
    }
}

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../ws_cluster.md")]
#[doc = include_str!("../../../types/infra/ClusterConfig.md")]
#[doc = include_str!("../../../types/infra/ClusterStats.md")]
#[doc = include_str!("../../../types/infra/WsCluster.md")]
pub struct RegistryExamples;
