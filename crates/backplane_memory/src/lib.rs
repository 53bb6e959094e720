//! Runs the backplane inside one process: a bus whose nodes publish to channels, keep a bounded history per topic and presence with a TTL, as several servers would over Redis.
//!
//! A [`MemoryBus`] is the shared medium; [`MemoryBus::node`] adds a node to
//! it (numbered 1, 2, ...) as a [`MemoryBackplane`], which implements
//! [`Backplane`]. One node on one bus is the single-process default: nothing
//! to install, nothing leaves the process. Several nodes on one bus are a
//! cluster in one test: what `ws_cluster` and a clustered SSE broker do
//! across processes on Redis, they do here across nodes, by the same rules.
//!
//! - **Publish** delivers to every node subscribed to any of the channels
//!   (the publisher too, if subscribed), once per channel, in publish order
//!   (one order for the whole bus). Delivery happens before `publish`
//!   returns, unless another thread is delivering at that moment, in which
//!   case that thread delivers it, in order. Receivers are called outside the
//!   bus's lock, so a receiver may publish or subscribe itself.
//! - **History**: [`Backplane::append`] numbers events `0-1`, `0-2`, ... per
//!   bus and keeps the last [`MemoryConfig::history`] per topic; reading
//!   after a position older than the newest trimmed one, or after a position
//!   the bus never gave out, reports a gap.
//! - **Kept messages**: [`Backplane::publish_kept`] keeps the last `keep`
//!   messages per room, [`Backplane::recent`] reads them back. All rooms
//!   together keep at most [`MemoryConfig::kept_bytes`]: past it, the rooms
//!   written to longest ago lose theirs first (where Redis would be bounded
//!   by its `maxmemory`).
//! - **Presence** entries of a live node never expire (it "refreshes"
//!   them); dropping a [`MemoryBackplane`] without removing its entries is a
//!   crash: they expire [`MemoryConfig::presence_ttl`] later, measured on
//!   tokio's clock (so tests can pause time), and
//!   [`Backplane::presence_expire`] hands each to exactly one caller.
//! - **Subscriptions in flight**: [`MemoryBus::delay_subscriptions`]`(true)`
//!   queues subscribes and unsubscribes, as a SUBSCRIBE is in flight to
//!   Redis, and [`Backplane::subscriptions_applied`] waits; back to `false`,
//!   they take effect in order and the waits end: for testing what a node
//!   does meanwhile.
//! - **Outage**: [`MemoryBus::set_available`]`(false)` makes every call that
//!   talks to the bus answer [`BackplaneError::Unavailable`] (subscriptions
//!   are still recorded); back to `true`, every node gets
//!   [`Incoming::Resync`], as after a Redis reconnection.
//!
//! # Example
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use backplane::{Backplane, Bytes, Channel, Incoming};
//! use backplane_memory::{MemoryBus, MemoryConfig};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let bus = MemoryBus::new(MemoryConfig::default());
//! let (a, b) = (bus.node(), bus.node());
//! let got = Arc::new(Mutex::new(Vec::new()));
//! let sink = got.clone();
//! b.set_receiver(Arc::new(move |m| sink.lock().unwrap().push(m)));
//! b.subscribe(Channel::Room("lobby".into()));
//!
//! a.publish(vec![Channel::Room("lobby".into())], Bytes::from_static(b"hi")).await.unwrap();
//! assert_eq!(
//!     *got.lock().unwrap(),
//!     [Incoming::Message { channel: Channel::Room("lobby".into()), position: None, payload: Bytes::from_static(b"hi") }]
//! );
//! # });
//! ```
//!
//! # Errors
//!
//! Only [`BackplaneError::Unavailable`], and only while the bus is set
//! unavailable.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

pub use backplane::{
    Backplane, BackplaneError, Bytes, Channel, History, Incoming, Position, Presence,
    PresenceMember, Receiver,
};
use futures_util::future::BoxFuture;
use tokio::time::Instant;

/// Settings of a [`MemoryBus`]; every field has a default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryConfig {
    /// Events kept per topic for [`Backplane::history`]. Default: 1000.
    pub history: usize,
    /// How long a stopped node's presence entries outlive it, on tokio's
    /// clock. Default: 15 seconds.
    pub presence_ttl: Duration,
    /// Bytes the messages kept by `publish_kept` may hold, all rooms
    /// together, each counted with [`KEPT_OVERHEAD`] more; past it the rooms
    /// written to longest ago lose theirs first. Default: 64 MiB.
    pub kept_bytes: usize,
}

/// Bytes a kept message counts for beyond its payload, against
/// [`MemoryConfig::kept_bytes`].
pub const KEPT_OVERHEAD: usize = 64;

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            history: 1000,
            presence_ttl: Duration::from_secs(15),
            kept_bytes: 64 << 20,
        }
    }
}

/// The in-process medium the nodes share; clones share it.
#[derive(Clone)]
pub struct MemoryBus(Arc<Bus>);

struct Bus {
    config: MemoryConfig,
    state: Mutex<State>,
    /// Told when delayed subscriptions took effect.
    applied: tokio::sync::Notify,
}

struct State {
    /// The number of the last node made.
    last_node: u64,
    available: bool,
    /// Live nodes and where their messages go (none set yet: dropped).
    receivers: HashMap<u64, Option<Receiver>>,
    /// Which nodes receive what is published on each channel.
    subscriptions: HashMap<Channel, BTreeSet<u64>>,
    /// The last position given out (its `seq`; `ms` is always 0).
    last_seq: u64,
    topics: HashMap<String, Topic>,
    /// Each room's last messages, kept by `publish_kept`.
    kept: HashMap<String, Kept>,
    /// The rooms of `kept` by when they were last written (a counter).
    kept_order: BTreeMap<u64, String>,
    /// The last `kept_order` number given out.
    kept_seq: u64,
    /// What `kept` holds, counted as `kept_bytes` says.
    kept_bytes: usize,
    rooms: HashMap<String, BTreeMap<u64, Entry>>,
    /// Deliveries in bus order, waiting for the thread that delivers.
    pending: VecDeque<(Receiver, Incoming)>,
    /// A thread is calling receivers (it takes what is queued meanwhile too).
    delivering: bool,
    /// Subscription changes wait in `delayed` (`MemoryBus::delay_subscriptions`).
    delaying: bool,
    /// Subscription changes not in effect yet: node, channel, subscribe.
    delayed: Vec<(u64, Channel, bool)>,
}

/// One room's kept messages.
#[derive(Default)]
struct Kept {
    messages: VecDeque<Bytes>,
    /// Their bytes, counted as `kept_bytes` says.
    bytes: usize,
    /// Its key in `State::kept_order`.
    written: u64,
}

#[derive(Default)]
struct Topic {
    events: VecDeque<(Position, Bytes)>,
    /// The newest position trimmed from `events`.
    trimmed: Option<Position>,
}

struct Entry {
    member: PresenceMember,
    owner: u64,
    /// `None` while the owner runs; its drop plus the TTL after.
    expires: Option<Instant>,
}

impl State {
    /// Keeps `payload` as `room`'s newest message (its last `keep` stay),
    /// then drops the rooms written to longest ago until all of them hold
    /// at most `budget` bytes.
    fn keep(&mut self, room: String, keep: usize, payload: &Bytes, budget: usize) {
        self.kept_seq += 1;
        let written = self.kept_seq;
        let kept = self.kept.entry(room.clone()).or_default();
        if kept.written != 0 {
            self.kept_order.remove(&kept.written);
        }
        kept.written = written;
        self.kept_order.insert(written, room);
        kept.messages.push_back(payload.clone());
        kept.bytes += payload.len() + KEPT_OVERHEAD;
        self.kept_bytes += payload.len() + KEPT_OVERHEAD;
        while kept.messages.len() > keep {
            if let Some(old) = kept.messages.pop_front() {
                kept.bytes -= old.len() + KEPT_OVERHEAD;
                self.kept_bytes -= old.len() + KEPT_OVERHEAD;
            }
        }
        while self.kept_bytes > budget {
            let Some((_, oldest)) = self.kept_order.pop_first() else {
                break;
            };
            if let Some(gone) = self.kept.remove(&oldest) {
                self.kept_bytes -= gone.bytes;
            }
        }
    }
}

impl MemoryBus {
    /// A bus with no nodes.
    pub fn new(config: MemoryConfig) -> MemoryBus {
        MemoryBus(Arc::new(Bus {
            config,
            state: Mutex::new(State {
                last_node: 0,
                available: true,
                receivers: HashMap::new(),
                subscriptions: HashMap::new(),
                last_seq: 0,
                topics: HashMap::new(),
                kept: HashMap::new(),
                kept_order: BTreeMap::new(),
                kept_seq: 0,
                kept_bytes: 0,
                rooms: HashMap::new(),
                pending: VecDeque::new(),
                delivering: false,
                delaying: false,
                delayed: Vec::new(),
            }),
            applied: tokio::sync::Notify::new(),
        }))
    }

    /// Adds a node to the bus: numbered 1, 2, ... in the order they are
    /// made, subscribed to nothing, with no receiver yet.
    pub fn node(&self) -> MemoryBackplane {
        let mut st = self.0.lock();
        st.last_node += 1;
        let node = st.last_node;
        st.receivers.insert(node, None);
        MemoryBackplane {
            bus: self.clone(),
            node,
        }
    }

    /// The settings the bus was made with.
    pub fn config(&self) -> &MemoryConfig {
        &self.0.config
    }

    /// Simulates the backplane going away (`false`) and coming back
    /// (`true`): while away, publish, append, history and presence calls
    /// answer [`BackplaneError::Unavailable`] and do nothing; when back,
    /// every live node with a receiver gets [`Incoming::Resync`].
    pub fn set_available(&self, available: bool) {
        let mut st = self.0.lock();
        let back = available && !st.available;
        st.available = available;
        if back {
            let resync: Vec<Receiver> = st.receivers.values().flatten().cloned().collect();
            st.pending
                .extend(resync.into_iter().map(|r| (r, Incoming::Resync)));
        }
        self.0.deliver(st);
    }

    /// Simulates subscriptions in flight (`true`): from now on, subscribes
    /// and unsubscribes wait, and [`Backplane::subscriptions_applied`] of a
    /// node with one waiting waits too; back to `false`, they take effect
    /// in the order they were made and those waits end.
    pub fn delay_subscriptions(&self, delay: bool) {
        let mut st = self.0.lock();
        st.delaying = delay;
        if !delay {
            for (node, channel, subscribe) in std::mem::take(&mut st.delayed) {
                st.set_subscribed(node, channel, subscribe);
            }
            drop(st);
            self.0.applied.notify_waiters();
        }
    }

    /// Whether the bus takes calls now ([`set_available`](MemoryBus::set_available)).
    pub fn is_available(&self) -> bool {
        self.0.lock().available
    }

    /// The nodes subscribed to `channel`, ascending.
    pub fn subscribers(&self, channel: &Channel) -> Vec<u64> {
        self.0
            .lock()
            .subscriptions
            .get(channel)
            .map(|n| n.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The nodes not dropped yet, ascending.
    pub fn nodes(&self) -> Vec<u64> {
        let mut nodes: Vec<u64> = self.0.lock().receivers.keys().copied().collect();
        nodes.sort_unstable();
        nodes
    }
}

impl fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBus")
            .field("config", &self.0.config)
            .field("nodes", &self.nodes())
            .finish()
    }
}

impl Bus {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Calls the receivers of what is pending, outside the lock, unless
    /// another thread is at it (it will take these too, in order).
    fn deliver<'a>(&'a self, mut st: MutexGuard<'a, State>) {
        if st.delivering || st.pending.is_empty() {
            return;
        }
        st.delivering = true;
        /// Lets another thread deliver if a receiver panics.
        struct Reset<'a>(&'a Bus);
        impl Drop for Reset<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.lock().delivering = false;
                }
            }
        }
        let reset = Reset(self);
        loop {
            let batch = std::mem::take(&mut st.pending);
            if batch.is_empty() {
                st.delivering = false;
                break;
            }
            drop(st);
            for (receiver, incoming) in batch {
                receiver(incoming);
            }
            st = self.lock();
        }
        drop(st);
        drop(reset);
    }

    fn unavailable() -> BackplaneError {
        BackplaneError::Unavailable("the memory bus is set unavailable".into())
    }
}

impl State {
    /// Subscribes `node` to `channel` (or unsubscribes it), or queues the
    /// change while subscriptions are delayed.
    fn subscription(&mut self, node: u64, channel: Channel, subscribe: bool) {
        if self.delaying {
            self.delayed.push((node, channel, subscribe));
        } else {
            self.set_subscribed(node, channel, subscribe);
        }
    }

    fn set_subscribed(&mut self, node: u64, channel: Channel, subscribe: bool) {
        if subscribe {
            self.subscriptions.entry(channel).or_default().insert(node);
        } else if let Some(nodes) = self.subscriptions.get_mut(&channel) {
            nodes.remove(&node);
            if nodes.is_empty() {
                self.subscriptions.remove(&channel);
            }
        }
    }

    /// Queues `payload` for every node subscribed to `channel`.
    fn queue(&mut self, channel: &Channel, position: Option<Position>, payload: &Bytes) {
        let Some(nodes) = self.subscriptions.get(channel) else {
            return;
        };
        for node in nodes {
            if let Some(Some(receiver)) = self.receivers.get(node) {
                self.pending.push_back((
                    receiver.clone(),
                    Incoming::Message {
                        channel: channel.clone(),
                        position,
                        payload: payload.clone(),
                    },
                ));
            }
        }
    }
}

/// One node on a [`MemoryBus`]. Dropping it is the node stopping without
/// cleaning up (a crash): its subscriptions and receiver go at once, its
/// presence entries after the TTL.
pub struct MemoryBackplane {
    bus: MemoryBus,
    node: u64,
}

impl MemoryBackplane {
    /// The bus this node is on.
    pub fn bus(&self) -> &MemoryBus {
        &self.bus
    }

    /// Runs `f` on the bus's state if the bus is available.
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> Result<T, BackplaneError> {
        let mut st = self.bus.0.lock();
        if !st.available {
            return Err(Bus::unavailable());
        }
        Ok(f(&mut st))
    }
}

impl fmt::Debug for MemoryBackplane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBackplane")
            .field("node", &self.node)
            .finish()
    }
}

impl Drop for MemoryBackplane {
    fn drop(&mut self) {
        let expires = Instant::now() + self.bus.0.config.presence_ttl;
        let mut st = self.bus.0.lock();
        st.receivers.remove(&self.node);
        st.subscriptions.retain(|_, nodes| {
            nodes.remove(&self.node);
            !nodes.is_empty()
        });
        for entry in st.rooms.values_mut().flat_map(BTreeMap::values_mut) {
            if entry.owner == self.node {
                entry.expires = Some(expires);
            }
        }
    }
}

fn ready<T: Send + 'static>(value: T) -> BoxFuture<'static, T> {
    Box::pin(std::future::ready(value))
}

impl Backplane for MemoryBackplane {
    fn node(&self) -> u64 {
        self.node
    }

    fn set_receiver(&self, receiver: Receiver) {
        self.bus
            .0
            .lock()
            .receivers
            .insert(self.node, Some(receiver));
    }

    fn subscribe(&self, channel: Channel) {
        self.bus.0.lock().subscription(self.node, channel, true);
    }

    fn unsubscribe(&self, channel: Channel) {
        self.bus.0.lock().subscription(self.node, channel, false);
    }

    fn is_connected(&self) -> bool {
        self.bus.0.lock().available
    }

    /// Subscriptions take effect when made: ready at once (`Unavailable`
    /// while the bus is set unavailable), unless this node's wait
    /// ([`MemoryBus::delay_subscriptions`]).
    fn subscriptions_applied(&self) -> BoxFuture<'static, Result<(), BackplaneError>> {
        let (bus, node) = (self.bus.clone(), self.node);
        let waiting = move |st: &State| st.delayed.iter().any(|(n, ..)| *n == node);
        {
            let st = bus.0.lock();
            if !st.available {
                return ready(Err(Bus::unavailable()));
            }
            if !waiting(&st) {
                return ready(Ok(()));
            }
        }
        Box::pin(async move {
            loop {
                let applied = bus.0.applied.notified();
                if !waiting(&bus.0.lock()) {
                    return Ok(());
                }
                applied.await;
            }
        })
    }

    fn publish(
        &self,
        channels: Vec<Channel>,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<(), BackplaneError>> {
        let mut st = self.bus.0.lock();
        if !st.available {
            return ready(Err(Bus::unavailable()));
        }
        for channel in &channels {
            st.queue(channel, None, &payload);
        }
        self.bus.0.deliver(st);
        ready(Ok(()))
    }

    fn publish_kept(
        &self,
        channels: Vec<Channel>,
        rooms: Vec<String>,
        keep: usize,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<(), BackplaneError>> {
        let mut st = self.bus.0.lock();
        if !st.available {
            return ready(Err(Bus::unavailable()));
        }
        for room in rooms {
            st.keep(room, keep, &payload, self.bus.0.config.kept_bytes);
        }
        for channel in &channels {
            st.queue(channel, None, &payload);
        }
        self.bus.0.deliver(st);
        ready(Ok(()))
    }

    fn recent(
        &self,
        room: &str,
        n: usize,
    ) -> BoxFuture<'static, Result<Vec<Bytes>, BackplaneError>> {
        ready(self.with(|st| {
            st.kept.get(room).map_or_else(Vec::new, |kept| {
                let kept = &kept.messages;
                kept.range(kept.len().saturating_sub(n)..)
                    .cloned()
                    .collect()
            })
        }))
    }

    fn append(
        &self,
        topic: &str,
        events: Vec<Bytes>,
    ) -> BoxFuture<'static, Result<Vec<Position>, BackplaneError>> {
        let mut st = self.bus.0.lock();
        if !st.available {
            return ready(Err(Bus::unavailable()));
        }
        let keep = self.bus.0.config.history;
        let channel = Channel::Topic(topic.to_string());
        let mut positions = Vec::with_capacity(events.len());
        for event in events {
            st.last_seq += 1;
            let position = Position {
                ms: 0,
                seq: st.last_seq,
            };
            let t = st.topics.entry(topic.to_string()).or_default();
            t.events.push_back((position, event.clone()));
            while t.events.len() > keep {
                t.trimmed = t.events.pop_front().map(|(p, _)| p);
            }
            st.queue(&channel, Some(position), &event);
            positions.push(position);
        }
        self.bus.0.deliver(st);
        ready(Ok(positions))
    }

    fn history(
        &self,
        topic: &str,
        after: Position,
    ) -> BoxFuture<'static, Result<History, BackplaneError>> {
        ready(self.with(|st| {
            let unknown = after
                > Position {
                    ms: 0,
                    seq: st.last_seq,
                };
            let Some(t) = st.topics.get(topic) else {
                return History {
                    gap: unknown,
                    ..History::default()
                };
            };
            let start = t.events.partition_point(|(p, _)| *p <= after);
            History {
                events: t.events.range(start..).cloned().collect(),
                gap: unknown || t.trimmed.is_some_and(|trimmed| after < trimmed),
                oldest: t.events.front().map(|(p, _)| *p),
            }
        }))
    }

    fn presence_set(
        &self,
        room: &str,
        member: PresenceMember,
    ) -> BoxFuture<'static, Result<(), BackplaneError>> {
        ready(self.with(|st| {
            let entry = Entry {
                owner: self.node,
                expires: None,
                member,
            };
            st.rooms
                .entry(room.to_string())
                .or_default()
                .insert(entry.member.client, entry);
        }))
    }

    fn presence_remove(
        &self,
        room: &str,
        client: u64,
    ) -> BoxFuture<'static, Result<(), BackplaneError>> {
        ready(self.with(|st| {
            if let Some(entries) = st.rooms.get_mut(room) {
                entries.remove(&client);
                if entries.is_empty() {
                    st.rooms.remove(room);
                }
            }
        }))
    }

    fn presence(&self, room: &str) -> BoxFuture<'static, Result<Presence, BackplaneError>> {
        let now = Instant::now();
        ready(self.with(|st| {
            Presence {
                members: st
                    .rooms
                    .get(room)
                    .into_iter()
                    .flat_map(BTreeMap::values)
                    .filter(|e| e.expires.is_none_or(|at| at > now))
                    .map(|e| e.member.clone())
                    .collect(),
            }
        }))
    }

    fn presence_expire(
        &self,
        room: &str,
    ) -> BoxFuture<'static, Result<Vec<PresenceMember>, BackplaneError>> {
        let now = Instant::now();
        ready(self.with(|st| {
            let Some(entries) = st.rooms.get_mut(room) else {
                return Vec::new();
            };
            let expired: Vec<u64> = entries
                .iter()
                .filter(|(_, e)| e.expires.is_some_and(|at| at <= now))
                .map(|(client, _)| *client)
                .collect();
            let members = expired
                .iter()
                .filter_map(|client| entries.remove(client))
                .map(|e| e.member)
                .collect();
            if entries.is_empty() {
                st.rooms.remove(room);
            }
            members
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use std::task::Poll;

    /// A node whose receiver records what it gets.
    fn recording(bus: &MemoryBus) -> (MemoryBackplane, Arc<Mutex<Vec<Incoming>>>) {
        let node = bus.node();
        let got: Arc<Mutex<Vec<Incoming>>> = Arc::default();
        let sink = got.clone();
        node.set_receiver(Arc::new(move |m| sink.lock().unwrap().push(m)));
        (node, got)
    }

    fn take(got: &Mutex<Vec<Incoming>>) -> Vec<(Channel, Option<Position>, Bytes)> {
        std::mem::take(&mut *got.lock().unwrap())
            .into_iter()
            .map(|m| match m {
                Incoming::Message {
                    channel,
                    position,
                    payload,
                } => (channel, position, payload),
                Incoming::Resync => panic!("no resync expected"),
            })
            .collect()
    }

    fn room(r: &str) -> Channel {
        Channel::Room(r.into())
    }

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[tokio::test]
    async fn delayed_subscriptions_take_effect_in_order_when_released() {
        let bus = MemoryBus::new(MemoryConfig::default());
        let (a, _) = recording(&bus);
        let (n, got) = recording(&bus);
        n.subscribe(room("old"));
        bus.delay_subscriptions(true);
        n.subscribe(room("r"));
        n.unsubscribe(room("old"));
        let mut applied = n.subscriptions_applied();
        let cx = &mut std::task::Context::from_waker(std::task::Waker::noop());
        assert!(applied.as_mut().poll(cx).is_pending(), "a change in flight");
        assert!(
            a.subscriptions_applied().now_or_never().is_some(),
            "another node has none"
        );
        a.publish(vec![room("r"), room("old")], b("meanwhile"))
            .await
            .unwrap();
        assert_eq!(take(&got), [(room("old"), None, b("meanwhile"))]);

        bus.delay_subscriptions(false);
        assert!(matches!(applied.as_mut().poll(cx), Poll::Ready(Ok(()))));
        a.publish(vec![room("r"), room("old")], b("after"))
            .await
            .unwrap();
        assert_eq!(take(&got), [(room("r"), None, b("after"))]);
    }

    fn pos(seq: u64) -> Position {
        Position { ms: 0, seq }
    }

    fn member(client: u64, user: &str) -> PresenceMember {
        PresenceMember {
            client,
            user: Some(user.into()),
        }
    }

    #[tokio::test]
    async fn publish_reaches_every_subscribed_node_once_per_channel_in_order() {
        let bus = MemoryBus::new(MemoryConfig::default());
        let (n1, got1) = recording(&bus);
        let (n2, got2) = recording(&bus);
        let (n3, got3) = recording(&bus);
        assert_eq!((n1.node(), n2.node(), n3.node()), (1, 2, 3));
        n1.subscribe(room("a"));
        n1.subscribe(room("b"));
        n1.subscribe(room("b"));
        n2.subscribe(room("a"));
        assert_eq!(bus.subscribers(&room("b")), [1], "idempotent");

        n3.publish(vec![room("a"), room("b")], b("one"))
            .await
            .unwrap();
        n2.publish(vec![room("a")], b("two")).await.unwrap();
        n3.publish(vec![room("nobody")], b("lost")).await.unwrap();
        assert_eq!(
            take(&got1),
            [
                (room("a"), None, b("one")),
                (room("b"), None, b("one")),
                (room("a"), None, b("two"))
            ],
            "once per channel, in publish order"
        );
        assert_eq!(
            take(&got2),
            [(room("a"), None, b("one")), (room("a"), None, b("two"))],
            "the publisher too, when subscribed"
        );
        assert!(take(&got3).is_empty(), "not subscribed: nothing");

        n1.unsubscribe(room("a"));
        n1.unsubscribe(room("a"));
        n3.publish(vec![room("a")], b("three")).await.unwrap();
        assert!(take(&got1).is_empty());
        assert_eq!(take(&got2), [(room("a"), None, b("three"))]);
        assert_eq!(bus.subscribers(&room("a")), [2]);

        drop(n2);
        assert!(
            bus.subscribers(&room("a")).is_empty(),
            "a dropped node's subscriptions go"
        );
        assert_eq!(bus.nodes(), [1, 3]);
        n3.publish(vec![room("a")], b("four")).await.unwrap();
        assert!(take(&got2).is_empty());
    }

    #[tokio::test]
    async fn receivers_are_called_outside_the_lock_and_order_holds() {
        let bus = MemoryBus::new(MemoryConfig::default());
        let (n1, got1) = recording(&bus);
        let n2 = Arc::new(bus.node());
        n1.subscribe(Channel::All);
        n2.subscribe(Channel::Node(2));
        // Node 2 answers every message on its channel by publishing to all,
        // from inside its receiver: the bus must not be locked then.
        let me = Arc::downgrade(&n2);
        n2.set_receiver(Arc::new(move |m| {
            if let (Some(me), Incoming::Message { payload, .. }) = (me.upgrade(), m) {
                me.subscribe(Channel::Room("inside".into()));
                let answered = me.publish(vec![Channel::All], payload);
                drop(answered);
            }
        }));
        n1.publish(vec![Channel::Node(2), Channel::All], b("ask"))
            .await
            .unwrap();
        n1.publish(vec![Channel::All], b("after")).await.unwrap();
        assert_eq!(
            take(&got1),
            [
                (Channel::All, None, b("ask")),
                (Channel::All, None, b("ask")),
                (Channel::All, None, b("after"))
            ],
            "the answer comes after what was queued before it, before what came after"
        );
        assert_eq!(bus.subscribers(&Channel::Room("inside".into())), [2]);
    }

    #[tokio::test]
    async fn publish_kept_keeps_the_last_messages_per_room_and_publishes_them() {
        let bus = MemoryBus::new(MemoryConfig::default());
        let (n1, got1) = recording(&bus);
        let n2 = bus.node();
        n1.subscribe(room("a"));
        for m in ["m1", "m2", "m3", "m4"] {
            n2.publish_kept(
                vec![room("a"), room("b")],
                vec!["a".into(), "b".into()],
                3,
                b(m),
            )
            .await
            .unwrap();
        }
        assert_eq!(take(&got1).len(), 4, "published as publish does");
        assert_eq!(
            n1.recent("a", 10).await.unwrap(),
            [b("m2"), b("m3"), b("m4")]
        );
        assert_eq!(n1.recent("b", 2).await.unwrap(), [b("m3"), b("m4")]);
        assert!(n1.recent("none", 5).await.unwrap().is_empty());

        bus.set_available(false);
        let refused = n2.publish_kept(vec![room("a")], vec!["a".into()], 3, b("lost"));
        assert!(matches!(refused.await, Err(BackplaneError::Unavailable(_))));
        bus.set_available(true);
        assert_eq!(
            n1.recent("a", 10).await.unwrap(),
            [b("m2"), b("m3"), b("m4")],
            "refused means not kept"
        );
    }

    #[tokio::test]
    async fn kept_messages_past_the_byte_budget_go_from_the_rooms_written_longest_ago() {
        let one = b("m").len() + KEPT_OVERHEAD;
        let bus = MemoryBus::new(MemoryConfig {
            kept_bytes: 3 * one,
            ..MemoryConfig::default()
        });
        let n = bus.node();
        for r in ["a", "b", "a", "c"] {
            n.publish_kept(vec![], vec![r.into()], 3, b("m"))
                .await
                .unwrap();
        }
        // a (2 messages), b, c: one too many; b was written longest ago.
        assert!(n.recent("b", 5).await.unwrap().is_empty(), "b went whole");
        assert_eq!(n.recent("a", 5).await.unwrap(), [b("m"), b("m")]);
        assert_eq!(n.recent("c", 5).await.unwrap(), [b("m")]);
        n.publish_kept(vec![], vec!["d".into()], 3, b("m"))
            .await
            .unwrap();
        assert!(
            n.recent("a", 5).await.unwrap().is_empty(),
            "then a, the oldest"
        );
        assert_eq!(n.recent("c", 5).await.unwrap(), [b("m")]);
    }

    #[tokio::test]
    async fn append_numbers_events_and_history_reports_a_gap_after_trimming() {
        let bus = MemoryBus::new(MemoryConfig {
            history: 3,
            ..MemoryConfig::default()
        });
        let (n1, got1) = recording(&bus);
        let n2 = bus.node();
        n1.subscribe(Channel::Topic("news".into()));
        for (i, e) in ["e1", "e2"].into_iter().enumerate() {
            let p = n2.append("news", vec![b(e)]).await.unwrap();
            assert_eq!(p, [pos(i as u64 + 1)]);
        }
        let batch = vec![b("e3"), b("e4"), b("e5")];
        assert_eq!(
            n2.append("news", batch).await.unwrap(),
            [pos(3), pos(4), pos(5)],
            "a batch: consecutive positions, in order"
        );
        assert_eq!(
            n2.append("other", vec![b("x")]).await.unwrap(),
            [pos(6)],
            "per bus"
        );
        let news = Channel::Topic("news".into());
        assert_eq!(
            take(&got1),
            (1..=5)
                .map(|i| (news.clone(), Some(pos(i)), Bytes::from(format!("e{i}"))))
                .collect::<Vec<_>>(),
            "subscribers see every event with its position, in history order"
        );

        let h = n1.history("news", pos(2)).await.unwrap();
        assert_eq!(
            h,
            History {
                events: vec![(pos(3), b("e3")), (pos(4), b("e4")), (pos(5), b("e5"))],
                gap: false,
                oldest: Some(pos(3)),
            },
            "after the newest trimmed: nothing missed"
        );
        let h = n1.history("news", pos(1)).await.unwrap();
        assert!(h.gap, "e2 was trimmed and never seen");
        assert_eq!(h.events.len(), 3);
        assert!(n1.history("news", Position::default()).await.unwrap().gap);
        let h = n1.history("news", pos(4)).await.unwrap();
        assert_eq!((h.events, h.gap), (vec![(pos(5), b("e5"))], false));
        let h = n1.history("news", pos(6)).await.unwrap();
        assert!(
            h.events.is_empty() && !h.gap,
            "up to date (6 was another topic)"
        );
        assert!(
            n1.history("news", pos(99)).await.unwrap().gap,
            "a position never given out"
        );
        assert!(
            n1.history("news", Position { ms: 1, seq: 0 })
                .await
                .unwrap()
                .gap,
            "another bus's position"
        );
        let none = n1.history("empty", Position::default()).await.unwrap();
        assert_eq!(none, History::default());
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_nodes_presence_expires_after_the_ttl_exactly_once() {
        let ttl = Duration::from_secs(15);
        let bus = MemoryBus::new(MemoryConfig {
            presence_ttl: ttl,
            ..MemoryConfig::default()
        });
        let (n1, n2, n3) = (bus.node(), bus.node(), bus.node());
        n1.presence_set("r", member(11, "ana")).await.unwrap();
        n2.presence_set("r", member(21, "bo")).await.unwrap();
        n2.presence_set("r", member(22, "ana")).await.unwrap();
        n2.presence_set("s", member(21, "bo")).await.unwrap();
        n2.presence_set("gone", member(23, "cy")).await.unwrap();
        n2.presence_remove("gone", 23).await.unwrap();
        let p = n3.presence("r").await.unwrap();
        assert_eq!(p.connections(), 3);
        assert_eq!(p.users(), ["ana", "bo"]);
        assert_eq!(n3.presence("gone").await.unwrap(), Presence::default());

        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(
            n3.presence_expire("r").await.unwrap().is_empty(),
            "live nodes refresh"
        );
        assert_eq!(n3.presence("r").await.unwrap().connections(), 3);

        drop(n2); // a crash: nothing removed
        tokio::time::sleep(ttl - Duration::from_millis(1)).await;
        assert_eq!(
            n1.presence("r").await.unwrap().connections(),
            3,
            "within the TTL"
        );
        assert!(n1.presence_expire("r").await.unwrap().is_empty());

        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(n1.presence("r").await.unwrap().members, [member(11, "ana")]);
        let mut expired = n1.presence_expire("r").await.unwrap();
        expired.sort();
        assert_eq!(expired, [member(21, "bo"), member(22, "ana")]);
        assert!(
            n3.presence_expire("r").await.unwrap().is_empty(),
            "exactly once"
        );
        assert_eq!(n3.presence_expire("s").await.unwrap(), [member(21, "bo")]);
        assert_eq!(n1.presence("r").await.unwrap().members, [member(11, "ana")]);
    }

    #[tokio::test]
    async fn an_unavailable_bus_refuses_and_resyncs_when_back() {
        let bus = MemoryBus::new(MemoryConfig::default());
        let (n1, got1) = recording(&bus);
        let n2 = bus.node(); // no receiver: no resync for it
        n1.subscribe(Channel::All);
        bus.set_available(false);
        assert!(!bus.is_available());
        let down = |r: Result<(), BackplaneError>| {
            assert!(matches!(r, Err(BackplaneError::Unavailable(_))), "{r:?}");
        };
        down(n2.publish(vec![Channel::All], b("x")).await);
        down(n2.append("t", vec![b("x")]).await.map(drop));
        down(n2.history("t", Position::default()).await.map(drop));
        down(n2.presence_set("r", member(1, "a")).await);
        down(n2.presence_remove("r", 1).await);
        down(n2.presence("r").await.map(drop));
        down(n2.presence_expire("r").await.map(drop));
        n1.subscribe(Channel::Room("r".into()));
        assert!(got1.lock().unwrap().is_empty(), "nothing was published");

        bus.set_available(false);
        bus.set_available(true);
        bus.set_available(true);
        assert_eq!(
            *got1.lock().unwrap(),
            [Incoming::Resync],
            "once, when it came back"
        );
        got1.lock().unwrap().clear();
        assert_eq!(
            n2.history("t", Position::default()).await.unwrap(),
            History::default()
        );
        n2.publish(vec![Channel::Room("r".into())], b("y"))
            .await
            .unwrap();
        assert_eq!(
            take(&got1),
            [(Channel::Room("r".into()), None, b("y"))],
            "subscribed while down"
        );
    }
}

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../backplane_memory.md")]
#[doc = include_str!("../../../types/infra/MemoryBackplane.md")]
#[doc = include_str!("../../../types/infra/MemoryBus.md")]
#[doc = include_str!("../../../types/infra/MemoryConfig.md")]
pub struct RegistryExamples;
