//! Publishes SSE events to every subscriber of a topic, with ids and Last-Event-ID resume, on one node (a bounded replay buffer per topic, all of them bounded in bytes) or across nodes through a backplane.
//!
//! The seed's `sse_handler(events <-chan SSEEvent)` shared one channel among
//! all connections, so each event reached one of them. Here every event
//! reaches every subscriber of its topic:
//!
//! - [`SseBroker::publish`] checks the topic and the event name with
//!   `name_validate` ([`NameKind::Topic`], [`NameKind::Event`]: not empty,
//!   bounded, no control characters), gives the event the next id (one
//!   sequence across all topics, so ids order events), encodes it once and
//!   queues the same bytes on every subscriber's stream. It never waits: a subscriber whose
//!   queue is full has its stream ended (its client reconnects with
//!   `Last-Event-ID` and resumes), and is counted in [`BrokerStats::slow_dropped`].
//! - **A burst goes out once per stream.** The streams get what was
//!   published from a task that runs once the publishing task yields, so a
//!   burst of publishes (pipelined requests) costs each stream one send
//!   (one lock, at most one wake), in id order; at most 64 events wait
//!   (past that the publisher hands them over itself), and a subscribe, an
//!   unsubscribe or [`SseBroker::stats`] hands them over first. Off a Tokio
//!   runtime, at once. (Cluster mode paces what the backplane hands a node
//!   instead: below.)
//! - Each topic keeps its last [`BrokerConfig::replay`] events, and all
//!   topics together at most [`BrokerConfig::replay_bytes`] (the oldest
//!   events of any topic go first).
//! - [`SseBroker::subscribe`] registers a stream on topics and, given the
//!   `Last-Event-ID` the client sent, first queues exactly the events of those
//!   topics after that id, in id order, with no gap and no duplicate (replay
//!   and registration happen under one lock). When the id is older than what
//!   a topic still holds, or unknown (not one of ours, or from before a
//!   restart), the client is told first with a [`RESET_EVENT`] event, then
//!   gets what is buffered.
//! - The returned [`Subscription`] unsubscribes when dropped; keep it with the
//!   stream's body (`SseBody::with_guard`), so it goes when the client does.
//!
//! Topics are created when first used and removed when they have neither
//! subscribers nor buffered events, and the buffered events are bounded in
//! bytes, so neither topic names from requests nor events published to ever
//! new topics grow memory without bound.
//!
//! # Example
//!
//! ```
//! use sse_broker::{BrokerConfig, SseBroker};
//! use sse_event::SseEvent;
//!
//! let broker = SseBroker::new(BrokerConfig::default());
//! let (stream, _body) = sse_stream::sse_stream(64);
//! let _sub = broker.subscribe(&["prices".to_string()], None, &stream);
//! let id = broker.publish("prices", SseEvent::data("42"))?;
//! assert_eq!(id, 1);
//! assert_eq!(broker.stats().subscribers, 1);
//! assert!(broker.publish("bad\ntopic", SseEvent::data("x")).is_err());
//! # Ok::<(), sse_broker::PublishError>(())
//! ```
//!
//! # Cluster mode
//!
//! [`SseBroker::clustered`] makes the broker one node of several sharing a
//! [`Backplane`] (`backplane_memory` in one process, `backplane_redis`
//! across processes). The same `subscribe` and the same handler serve both
//! modes; what changes:
//!
//! - **Publish** with [`SseBroker::publish_async`]: the event is checked and
//!   encoded once, without its `id:` line, and appended to the topic's
//!   history on the backplane ([`Backplane::append`]), whose position
//!   (`ms-seq`) is its id. [`PublishError::Unavailable`] when the backplane
//!   did not take it: nothing was published and nobody receives it. The
//!   sync `publish` answers [`PublishError::Clustered`].
//! - **Delivery**: local streams receive an event only when the backplane
//!   hands it back (each node writes `id: <position>` in front), so every
//!   node, the publishing one included, delivers a topic in history order.
//!   A node subscribes a topic's channel when its first local stream of the
//!   topic comes and unsubscribes when the last one goes.
//! - **Resume**: a `Last-Event-ID` that is a position is looked up in each
//!   topic's history ([`Backplane::history`]) by a task, while live events
//!   for the stream wait (at most [`CATCH_UP_BUFFER`]); the stream then gets
//!   the missed events merged by position, then the waiting ones newer than
//!   what was replayed in their topic: nothing lost, nothing twice. A trimmed
//!   history, an id that is not a position, or a history that cannot be read
//!   gets the same [`RESET_EVENT`] as on one node; live events follow.
//! - **Resync**: when the backplane reconnects ([`backplane::Incoming::Resync`]),
//!   every stream catches up the same way from the last position it got in
//!   each topic; streams at the same position share one history read.
//! - **Pace**: a node hands what the backplane brings to its streams as it
//!   comes; while events come more often than one per two
//!   [`BrokerConfig::coalesce`] windows (2 ms by default) on average, at most
//!   once per window, together, so each write to a stream carries several
//!   events instead of one (a node's writes to its sockets, not the
//!   backplane, bound what it delivers). At most 64 events wait; a
//!   subscribe, an unsubscribe, a resync and [`SseBroker::stats`] hand them
//!   over first.
//!
//! ```
//! use std::sync::Arc;
//! use backplane_memory::{MemoryBus, MemoryConfig};
//! use sse_broker::{BrokerConfig, SseBroker};
//! use sse_event::SseEvent;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let bus = MemoryBus::new(MemoryConfig::default());
//! let a = SseBroker::clustered(BrokerConfig::default(), Arc::new(bus.node()));
//! let b = SseBroker::clustered(BrokerConfig::default(), Arc::new(bus.node()));
//! let (stream, _body) = sse_stream::sse_stream(64);
//! let _sub = a.subscribe(&["prices".to_string()], None, &stream);
//! let id = b.publish_async("prices", SseEvent::data("42")).await?;
//! assert_eq!(id, "0-1"); // the memory bus's first position
//! assert_eq!(a.stats().delivered, 1);
//! # Ok::<(), sse_broker::PublishError>(())
//! # }).unwrap();
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use backplane::Backplane;
use bytes::Bytes;
use name_validate::{NameError, NameKind, name_validate};
use sse_encode::{SseEncodeError, sse_encode};
use sse_event::SseEvent;
use sse_stream::{SseSender, SseStreamError};

mod cluster;

pub use cluster::CATCH_UP_BUFFER;

/// The event type a resuming client receives first when its `Last-Event-ID`
/// is no longer (or never was) in the replay buffer: it may have missed
/// events and should reload its state. Its data is JSON:
/// `{"last_event_id": "<what the client sent>", "oldest_id": "<oldest id still buffered in its topics, or empty>"}`.
pub const RESET_EVENT: &str = "sse-reset";

/// Broker settings.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Events kept per topic for resume. Default: 1024.
    pub replay: usize,
    /// Bytes the replay buffers of all topics may hold together, each event
    /// counted as its encoding plus [`EVENT_OVERHEAD`]. Past it the oldest
    /// events go first, whatever their topic (a resume from before them
    /// gets a [`RESET_EVENT`]), and a topic left with neither events nor
    /// subscribers is removed (a resume on it from before its newest
    /// dropped event gets a [`RESET_EVENT`] too). Default: 64 MiB.
    pub replay_bytes: usize,
    /// Cluster mode: while the backplane's events come more often than one
    /// per two of these windows (on average, lately), the node hands them to
    /// its streams at most once per window, together, so each write to a
    /// stream carries several; slower, each goes at once. Under load it adds
    /// up to the window, plus the runtime's 1 ms timer resolution, to an
    /// event's latency. Zero: each at once. Needs the runtime's timer
    /// (`enable_time`). At most 1 s (longer is taken as 1 s). Default: 2 ms.
    pub coalesce: Duration,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            replay: 1024,
            replay_bytes: 64 << 20,
            coalesce: Duration::from_millis(2),
        }
    }
}

/// Bytes a buffered event counts for beyond its encoding, against
/// [`BrokerConfig::replay_bytes`]: its slot, its `Bytes` handle and its
/// share of the topic's bookkeeping.
pub const EVENT_OVERHEAD: usize = 64;

/// Counters of a broker, for a stats endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BrokerStats {
    /// Live subscriptions (one per subscribed stream, whatever its topic count).
    pub subscribers: usize,
    /// Topics that exist now.
    pub topics: usize,
    /// Events published.
    pub published: u64,
    /// Events queued on streams, replays included.
    pub delivered: u64,
    /// Streams ended because their queue was full.
    pub slow_dropped: u64,
    /// Resumes that got a [`RESET_EVENT`]: the client may have missed
    /// events (a gap).
    pub resets: u64,
    /// Subscriptions that came with a `Last-Event-ID` (resumes).
    pub resumes: u64,
    /// Events queued from replay buffers on resume (counted in `delivered` too).
    pub replayed: u64,
    /// Encoded bytes of what was queued on streams (events, replays, resets).
    pub delivered_bytes: u64,
    /// Cluster mode: backplane calls that failed (publishes refused,
    /// history reads that ended in a [`RESET_EVENT`]).
    pub backplane_errors: u64,
    /// Cluster mode: reconnections of the backplane ([`backplane::Incoming::Resync`]),
    /// after each of which every stream caught up from history.
    pub resyncs: u64,
}

/// The publish/subscribe hub of SSE streams; clones share it.
#[derive(Clone)]
pub struct SseBroker {
    inner: Arc<Mutex<State>>,
    /// Cluster mode: what publishing goes through ([`SseBroker::clustered`]).
    backplane: Option<Arc<dyn Backplane>>,
}

struct Topic {
    /// The topic's name (also its key), shared with `State::fronts`.
    name: Arc<str>,
    /// (id, encoded event), oldest first.
    buffer: VecDeque<(u64, Bytes)>,
    /// The highest id evicted from the buffer (0: none).
    evicted: u64,
    /// (subscription id, stream).
    subs: Vec<(u64, SseSender)>,
}

struct State {
    config: BrokerConfig,
    last_id: u64,
    next_sub: u64,
    topics: HashMap<String, Topic>,
    /// The oldest buffered id of each topic that has events, and the topic:
    /// the first entry is the oldest event of all.
    fronts: BTreeMap<u64, Arc<str>>,
    /// What the replay buffers hold, counted as `replay_bytes` says.
    buffered: usize,
    /// The newest event of the topics the budget emptied and removed: a
    /// resume on a topic that is gone, from before it, may have missed some.
    removed_evicted: u64,
    subscribers: usize,
    stats: BrokerStats,
    /// Cluster mode: the topics, streams and positions (`topics` stays empty).
    cluster: Option<Box<cluster::Cluster>>,
    /// Events published and not yet handed to the streams, in order: see
    /// [`State::queue_fan_out`].
    queued: Vec<Queued>,
    /// How many events `queued` holds: at most [`FAN_OUT_EVENTS`].
    queued_events: u32,
    /// A task will hand `queued` to the streams.
    fan_out_scheduled: bool,
}

/// Events of one topic waiting for the fan-out.
struct Queued {
    /// The topic's name, shared with its `Topic`.
    topic: Arc<str>,
    /// The encoded events, back to back.
    bytes: Bytes,
    /// How many events `bytes` holds.
    n: u32,
}

/// Most events that wait for the fan-out, and that one coalesced send
/// carries (a single published batch is never split: its size was the
/// publisher's to check).
const FAN_OUT_EVENTS: u32 = 64;

/// Most bytes one coalesced send carries.
const FAN_OUT_BYTES: usize = 64 * 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SseBroker {
    /// A broker with no topics.
    pub fn new(config: BrokerConfig) -> Self {
        SseBroker {
            inner: Arc::new(Mutex::new(State::new(config, None))),
            backplane: None,
        }
    }

    /// A broker that is one node among several sharing `backplane`: events
    /// published on any node reach the subscribers of every node, and a
    /// client resumes on any node from the backplane's history.
    ///
    /// Publish with [`publish_async`](SseBroker::publish_async) (the sync
    /// [`publish`](SseBroker::publish) answers [`PublishError::Clustered`]);
    /// the event ids are the backplane's positions (`ms-seq`). The broker
    /// becomes `backplane`'s receiver ([`Backplane::set_receiver`]), so give
    /// it a backplane node of its own. `config.replay` is not used: the
    /// history is the backplane's. Create it inside a Tokio runtime: history
    /// reads run as tasks on it.
    pub fn clustered(config: BrokerConfig, backplane: Arc<dyn Backplane>) -> Self {
        let cluster = cluster::Cluster::new(backplane.clone(), &config);
        let state = State::new(config, Some(cluster));
        let inner = Arc::new(Mutex::new(state));
        let weak = Arc::downgrade(&inner);
        backplane.set_receiver(Arc::new(move |incoming| {
            cluster::receive(&weak, incoming);
        }));
        SseBroker {
            inner,
            backplane: Some(backplane),
        }
    }

    /// Whether this broker publishes through a backplane ([`SseBroker::clustered`]).
    pub fn is_clustered(&self) -> bool {
        self.backplane.is_some()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.inner)
    }

    /// Publishes `event` on `topic`: sets its id to the next one, buffers it
    /// and queues it on every subscriber. Returns the id.
    ///
    /// An invalid topic or event name (`name_validate`), or an event that
    /// cannot be encoded, is an error and takes no id. A clustered broker
    /// publishes only with [`publish_async`](SseBroker::publish_async): here
    /// it answers [`PublishError::Clustered`] and delivers nothing.
    pub fn publish(&self, topic: &str, event: SseEvent) -> Result<u64, PublishError> {
        self.publish_batch(topic, vec![event]).map(|ids| ids[0])
    }

    /// Publishes `events` on `topic` in order, as one step: consecutive ids,
    /// encoded together once, and queued on each subscriber with one send
    /// (one lock, at most one wake), so a stream writes the whole batch at
    /// once. Returns the ids, in order; none for no events.
    ///
    /// All or nothing: one invalid name or event that cannot be encoded
    /// refuses the batch, and no event takes an id. A subscriber whose queue
    /// has no room for all of them has its stream ended, as when they come
    /// one by one. [`PublishError::Clustered`] on a clustered broker (use
    /// [`publish_batch_async`](SseBroker::publish_batch_async)).
    pub fn publish_batch(
        &self,
        topic: &str,
        events: Vec<SseEvent>,
    ) -> Result<Vec<u64>, PublishError> {
        if self.backplane.is_some() {
            return Err(PublishError::Clustered);
        }
        check_batch(topic, &events)?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let mut st = self.lock();
        let first = st.last_id + 1;
        let (bytes, ends) = encode_batch(events, |i| Some((first + i as u64).to_string()))?;
        let n = ends.len();
        let ids: Vec<u64> = (first..first + n as u64).collect();
        st.last_id = first + n as u64 - 1;
        st.stats.published += n as u64;
        let replay = st.config.replay;
        let st = &mut *st;
        let t = st
            .topics
            .entry(topic.to_string())
            .or_insert_with(|| Topic::new(topic));
        let mut start = 0;
        for (&id, &end) in ids.iter().zip(&ends) {
            if replay > 0 {
                if t.buffer.len() == replay {
                    t.evict_oldest(&mut st.fronts, &mut st.buffered);
                }
                t.push(
                    id,
                    bytes.slice(start..end),
                    &mut st.fronts,
                    &mut st.buffered,
                );
            } else {
                t.evicted = id;
            }
            start = end;
        }
        if !t.subs.is_empty() {
            let queued = Queued {
                topic: t.name.clone(),
                bytes,
                n: u32::try_from(n).unwrap_or(u32::MAX),
            };
            st.queue_fan_out(&self.inner, queued);
        }
        st.keep_within_budget();
        Ok(ids)
    }

    /// Publishes `event` on `topic` in either mode and returns its id: in
    /// cluster mode, appends it to the backplane's history of `topic` (the
    /// id is its position, `ms-seq`), from where every node, this one
    /// included, delivers it to its subscribers; on one node, what
    /// [`publish`](SseBroker::publish) does, the id in decimal.
    ///
    /// The event is encoded once, without its `id:` line, which each node
    /// writes in front from the position. The errors of `publish`, and
    /// [`PublishError::Unavailable`] when the backplane did not take it:
    /// nothing was published, nobody received it (answer `503`).
    pub async fn publish_async(
        &self,
        topic: &str,
        event: SseEvent,
    ) -> Result<String, PublishError> {
        let mut ids = self.publish_batch_async(topic, vec![event]).await?;
        Ok(ids.swap_remove(0))
    }

    /// [`publish_batch`](SseBroker::publish_batch) in either mode: in
    /// cluster mode the events are appended to `topic`'s history in one
    /// backplane call (one round trip, all or none:
    /// [`PublishError::Unavailable`] means none was published) and their
    /// positions are the ids.
    pub async fn publish_batch_async(
        &self,
        topic: &str,
        events: Vec<SseEvent>,
    ) -> Result<Vec<String>, PublishError> {
        match &self.backplane {
            Some(backplane) => {
                cluster::publish(&self.inner, backplane.as_ref(), topic, events).await
            }
            None => Ok(self
                .publish_batch(topic, events)?
                .into_iter()
                .map(|id| id.to_string())
                .collect()),
        }
    }

    /// Subscribes `stream` to `topics`, first queuing what it missed after
    /// `last_event_id` (the `Last-Event-ID` header, if the client sent one).
    ///
    /// In cluster mode the stream is registered at once and what it missed
    /// is read from the backplane's history by a task; live events that
    /// arrive meanwhile wait until the replay is queued (at most
    /// [`CATCH_UP_BUFFER`] of them), and those already replayed are dropped.
    ///
    /// Keep the returned [`Subscription`] as long as the stream lives.
    pub fn subscribe(
        &self,
        topics: &[String],
        last_event_id: Option<&str>,
        stream: &SseSender,
    ) -> Subscription {
        if self.backplane.is_some() {
            return cluster::subscribe(&self.inner, topics, last_event_id, stream);
        }
        let mut st = self.lock();
        // What was published before goes to the streams subscribed before.
        st.fan_out();
        st.next_sub += 1;
        let sub = st.next_sub;
        let last = st.last_id;
        let mut replay: Vec<(u64, Bytes)> = Vec::new();
        let mut reset: Option<(String, Option<u64>)> = None;
        if let Some(raw) = last_event_id {
            let parsed = raw.trim().parse::<u64>().ok().filter(|&n| n <= last);
            let mut oldest: Option<u64> = None;
            let mut missed = parsed.is_none();
            for name in topics {
                if let Some(t) = st.topics.get(name) {
                    if let Some((first, _)) = t.buffer.front() {
                        oldest = Some(oldest.map_or(*first, |o: u64| o.min(*first)));
                    }
                    if let Some(from) = parsed {
                        missed |= t.evicted > from;
                        replay.extend(t.buffer.iter().filter(|(id, _)| *id > from).cloned());
                    } else {
                        replay.extend(t.buffer.iter().cloned());
                    }
                } else if let Some(from) = parsed {
                    // Gone with its events: it may have had some after `from`.
                    missed |= st.removed_evicted > from;
                }
            }
            if missed {
                reset = Some((raw.to_string(), oldest));
            }
        }
        replay.sort_by_key(|(id, _)| *id);
        replay.dedup_by_key(|(id, _)| *id);
        let mut first = Vec::new();
        if let Some((sent, oldest)) = &reset {
            reset_event(sent, oldest.map(|o| o.to_string()), &mut first);
            st.stats.resets += 1;
        }
        for (_, b) in &replay {
            first.extend_from_slice(b);
        }
        if last_event_id.is_some() {
            st.stats.resumes += 1;
        }
        let first_len = first.len() as u64;
        if !first.is_empty() && stream.try_send(&Bytes::from(first)).is_ok() {
            st.stats.delivered += replay.len() as u64;
            st.stats.replayed += replay.len() as u64;
            st.stats.delivered_bytes += first_len;
        }
        let mut unique: Vec<&String> = topics.iter().collect();
        unique.sort();
        unique.dedup();
        for name in &unique {
            st.topics
                .entry((*name).clone())
                .or_insert_with(|| Topic::new(name))
                .subs
                .push((sub, stream.clone()));
        }
        st.subscribers += 1;
        st.stats.subscribers = st.subscribers;
        Subscription {
            broker: Arc::downgrade(&self.inner),
            id: sub,
            topics: unique.into_iter().cloned().collect(),
        }
    }

    /// The counters now.
    pub fn stats(&self) -> BrokerStats {
        let mut st = self.lock();
        // What was published is counted as delivered once it was.
        st.fan_out();
        let topics = match &st.cluster {
            Some(c) => c.topics(),
            None => st.topics.len(),
        };
        BrokerStats {
            subscribers: st.subscribers,
            topics,
            ..st.stats
        }
    }

    /// The id of the last published event (0 before the first; always 0 in
    /// cluster mode, where ids are positions).
    pub fn last_id(&self) -> u64 {
        self.lock().last_id
    }
}

impl State {
    fn new(config: BrokerConfig, cluster: Option<cluster::Cluster>) -> Self {
        State {
            config,
            last_id: 0,
            next_sub: 0,
            topics: HashMap::new(),
            fronts: BTreeMap::new(),
            buffered: 0,
            removed_evicted: 0,
            subscribers: 0,
            stats: BrokerStats::default(),
            cluster: cluster.map(Box::new),
            queued: Vec::new(),
            queued_events: 0,
            fan_out_scheduled: false,
        }
    }

    /// Queues events for the streams. The fan-out runs in a task, once the
    /// caller's task yields, so that a burst of publishes (pipelined
    /// requests) costs each stream one send, one
    /// lock and at most one wake, not one per event; at once when the
    /// caller is not on a Tokio runtime.
    fn queue_fan_out(&mut self, inner: &Arc<Mutex<State>>, queued: Queued) {
        self.queued_events += queued.n;
        self.queued.push(queued);
        // A publisher that outruns the task pays for the fan-out itself:
        // what waits stays bounded.
        if self.queued_events >= FAN_OUT_EVENTS {
            return self.fan_out();
        }
        if self.fan_out_scheduled {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                self.fan_out_scheduled = true;
                let inner = Arc::downgrade(inner);
                runtime.spawn(async move {
                    if let Some(inner) = inner.upgrade() {
                        lock(&inner).fan_out();
                    }
                });
            }
            Err(_) => self.fan_out(),
        }
    }

    /// Hands the queued events to the streams, in order: the consecutive
    /// events of a topic together (up to [`FAN_OUT_EVENTS`] and
    /// [`FAN_OUT_BYTES`]).
    fn fan_out(&mut self) {
        cluster::hand_over(self);
        self.fan_out_scheduled = false;
        self.queued_events = 0;
        let mut queued = std::mem::take(&mut self.queued).into_iter().peekable();
        while let Some(first) = queued.next() {
            let (mut n, mut len) = (first.n, first.bytes.len());
            let mut run = vec![first];
            while let Some(next) = queued.next_if(|q| {
                q.topic == run[0].topic
                    && n + q.n <= FAN_OUT_EVENTS
                    && len + q.bytes.len() <= FAN_OUT_BYTES
            }) {
                n += next.n;
                len += next.bytes.len();
                run.push(next);
            }
            self.deliver(&run);
        }
    }

    /// Queues a run of events of one topic on its streams, with one send
    /// each.
    fn deliver(&mut self, run: &[Queued]) {
        let Some(t) = self.topics.get_mut(&*run[0].topic) else {
            return;
        };
        let bytes = concat(run);
        let n: u32 = run.iter().map(|q| q.n).sum();
        let mut gone = Vec::new();
        let mut reached = 0u64;
        for (sub, stream) in &t.subs {
            match stream.try_send_many(&bytes, n as usize) {
                Ok(()) => reached += 1,
                Err(SseStreamError::Full) => {
                    stream.end();
                    self.stats.slow_dropped += 1;
                    gone.push(*sub);
                }
                Err(SseStreamError::Closed) => gone.push(*sub),
            }
        }
        // Counted once per run, not per subscriber.
        self.stats.delivered += reached * u64::from(n);
        self.stats.delivered_bytes += reached * bytes.len() as u64;
        if !gone.is_empty() {
            t.subs.retain(|(s, _)| !gone.contains(s));
        }
    }

    /// Drops the oldest events of all topics until the replay buffers are
    /// within `replay_bytes`; removes the topics left with neither events
    /// nor subscribers.
    fn keep_within_budget(&mut self) {
        while self.buffered > self.config.replay_bytes {
            let Some((_, name)) = self.fronts.first_key_value() else {
                break;
            };
            let name = name.clone();
            let Some(t) = self.topics.get_mut(&*name) else {
                self.fronts.pop_first();
                continue;
            };
            t.evict_oldest(&mut self.fronts, &mut self.buffered);
            if t.buffer.is_empty() && t.subs.is_empty() {
                self.removed_evicted = self.removed_evicted.max(t.evicted);
                self.topics.remove(&*name);
            }
        }
    }
}

impl Topic {
    fn new(name: &str) -> Topic {
        Topic {
            name: Arc::from(name),
            buffer: VecDeque::new(),
            evicted: 0,
            subs: Vec::new(),
        }
    }

    /// Buffers an event, counting it in `buffered` (and `fronts` if it is
    /// the topic's only one).
    fn push(
        &mut self,
        id: u64,
        bytes: Bytes,
        fronts: &mut BTreeMap<u64, Arc<str>>,
        buffered: &mut usize,
    ) {
        if self.buffer.is_empty() {
            fronts.insert(id, self.name.clone());
        }
        *buffered += bytes.len() + EVENT_OVERHEAD;
        self.buffer.push_back((id, bytes));
    }

    /// Drops the oldest buffered event, if any: a resume from before it is
    /// then a gap.
    fn evict_oldest(&mut self, fronts: &mut BTreeMap<u64, Arc<str>>, buffered: &mut usize) {
        let Some((id, bytes)) = self.buffer.pop_front() else {
            return;
        };
        self.evicted = id;
        *buffered -= bytes.len() + EVENT_OVERHEAD;
        fronts.remove(&id);
        if let Some((next, _)) = self.buffer.front() {
            fronts.insert(*next, self.name.clone());
        }
    }
}

/// Checks the topic and the events' names ([`NameKind::Topic`], [`NameKind::Event`]).
fn check_batch(topic: &str, events: &[SseEvent]) -> Result<(), PublishError> {
    name_validate(NameKind::Topic, topic).map_err(PublishError::Topic)?;
    for name in events.iter().filter_map(|e| e.event.as_deref()) {
        name_validate(NameKind::Event, name).map_err(PublishError::Event)?;
    }
    Ok(())
}

/// Encodes `events` back to back into one buffer, the `i`th with the `id:`
/// line `id(i)`; returns it with where each event ends.
fn encode_batch(
    events: Vec<SseEvent>,
    id: impl Fn(usize) -> Option<String>,
) -> Result<(Bytes, Vec<usize>), PublishError> {
    let size = events
        .iter()
        .map(|e| e.data.as_ref().map_or(0, String::len) + 32)
        .sum();
    let mut buf = Vec::with_capacity(size);
    let mut ends = Vec::with_capacity(events.len());
    for (i, mut event) in events.into_iter().enumerate() {
        event.id = id(i);
        sse_encode(&event, &mut buf)?;
        ends.push(buf.len());
    }
    Ok((Bytes::from(buf), ends))
}

/// The events of `run` back to back.
fn concat(run: &[Queued]) -> Bytes {
    if let [one] = run {
        return one.bytes.clone();
    }
    let mut all = Vec::with_capacity(run.iter().map(|q| q.bytes.len()).sum());
    for q in run {
        all.extend_from_slice(&q.bytes);
    }
    Bytes::from(all)
}

/// Appends the [`RESET_EVENT`] telling a client that `sent` (the id it
/// resumes from) is too old or unknown; `oldest` is the oldest id still held.
fn reset_event(sent: &str, oldest: Option<String>, out: &mut Vec<u8>) {
    let data = serde_json::to_string(&ResetData {
        last_event_id: sent,
        oldest_id: oldest.unwrap_or_default(),
    })
    .expect("strings always serialize");
    // The event name and data are ours and single-line: cannot fail.
    let _ = sse_encode(&SseEvent::data(data).event(RESET_EVENT), out);
}

impl fmt::Debug for SseBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseBroker")
            .field("stats", &self.stats())
            .finish()
    }
}

/// Why [`SseBroker::publish`] or [`SseBroker::publish_async`] refused an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishError {
    /// The topic is not a valid [`NameKind::Topic`] name.
    Topic(NameError),
    /// The event's name (`event:`) is not a valid [`NameKind::Event`] name.
    Event(NameError),
    /// The event has a field that would break the stream.
    Encode(SseEncodeError),
    /// Cluster mode: the backplane did not take the event (unreachable):
    /// nothing was published. Answer `503`; the cause is logged (target `sse`).
    Unavailable,
    /// The sync [`SseBroker::publish`] on a clustered broker, which publishes
    /// only through the backplane, with [`SseBroker::publish_async`].
    Clustered,
}

impl From<SseEncodeError> for PublishError {
    fn from(e: SseEncodeError) -> Self {
        PublishError::Encode(e)
    }
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::Topic(e) | PublishError::Event(e) => e.fmt(f),
            PublishError::Encode(e) => e.fmt(f),
            PublishError::Unavailable => {
                f.write_str("the backplane is unavailable: nothing was published, try again")
            }
            PublishError::Clustered => {
                f.write_str("this broker is clustered: publish with publish_async")
            }
        }
    }
}

impl std::error::Error for PublishError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PublishError::Topic(e) | PublishError::Event(e) => Some(e),
            PublishError::Encode(e) => Some(e),
            PublishError::Unavailable | PublishError::Clustered => None,
        }
    }
}

/// A stream's registration; dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    broker: Weak<Mutex<State>>,
    id: u64,
    topics: Vec<String>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let Some(inner) = self.broker.upgrade() else {
            return;
        };
        let mut st = lock(&inner);
        // What was published before reaches the stream.
        st.fan_out();
        if st.cluster.is_some() {
            cluster::unsubscribe(&inner, st, self.id, &self.topics);
            return;
        }
        for name in &self.topics {
            let remove = match st.topics.get_mut(name) {
                Some(t) => {
                    t.subs.retain(|(s, _)| *s != self.id);
                    t.subs.is_empty() && t.buffer.is_empty()
                }
                None => false,
            };
            if remove {
                st.topics.remove(name);
            }
        }
        st.subscribers -= 1;
    }
}

/// The data of the reset event: `{"last_event_id": <as sent>, "oldest_id": "<id>" or ""}`.
#[derive(serde::Serialize)]
struct ResetData<'a> {
    last_event_id: &'a str,
    oldest_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use sse_stream::{SseBody, sse_stream};

    fn topics(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| (*s).to_string()).collect()
    }

    async fn drain(tx: SseSender, body: SseBody) -> String {
        drop(tx);
        String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    fn ev(n: u32) -> SseEvent {
        SseEvent::data(format!("e{n}"))
    }

    /// Runs the fan-out the publishes queued (a task would, once the test
    /// yields).
    fn fan_out(b: &SseBroker) {
        b.lock().fan_out();
    }

    #[tokio::test]
    async fn every_subscriber_gets_every_event() {
        let b = SseBroker::new(BrokerConfig::default());
        let (t1, b1) = sse_stream(16);
        let (t2, b2) = sse_stream(16);
        let s1 = b.subscribe(&topics(&["hub"]), None, &t1);
        let s2 = b.subscribe(&topics(&["hub"]), None, &t2);
        b.publish("hub", ev(1)).unwrap();
        b.publish("other", ev(2)).unwrap();
        b.publish("hub", ev(3)).unwrap();
        drop((s1, s2));
        let want = "id: 1\ndata: e1\n\nid: 3\ndata: e3\n\n";
        assert_eq!(drain(t1, b1).await, want);
        assert_eq!(drain(t2, b2).await, want);
    }

    #[tokio::test]
    async fn a_batch_takes_consecutive_ids_all_or_nothing_and_goes_out_in_one_send() {
        let b = SseBroker::new(BrokerConfig::default());
        let (t1, b1) = sse_stream(4);
        let (small, _small_body) = sse_stream(2);
        let s1 = b.subscribe(&topics(&["hub"]), None, &t1);
        let s2 = b.subscribe(&topics(&["hub"]), None, &small);
        assert_eq!(b.publish("hub", ev(1)).unwrap(), 1);
        assert_eq!(b.publish_batch("hub", vec![]).unwrap(), [0u64; 0]);
        // One bad event name refuses the whole batch: no id taken, nothing sent.
        let bad = vec![ev(9), SseEvent::data("x").event("bad\nname")];
        assert!(matches!(
            b.publish_batch("hub", bad),
            Err(PublishError::Event(_))
        ));
        fan_out(&b);
        assert_eq!((b.last_id(), t1.capacity()), (1, 3));
        // Three events: one send per stream, counted as three messages; the
        // stream with room for one more is ended as slow, as one by one.
        assert_eq!(
            b.publish_batch("hub", vec![ev(2), ev(3), ev(4)]).unwrap(),
            [2, 3, 4]
        );
        fan_out(&b);
        assert_eq!(t1.capacity(), 0);
        assert!(small.is_closed());
        let st = b.stats();
        assert_eq!((st.published, st.delivered, st.slow_dropped), (4, 5, 1));
        // Replay holds each event of the batch on its own.
        let (t3, b3) = sse_stream(8);
        let s3 = b.subscribe(&topics(&["hub"]), Some("2"), &t3);
        drop((s1, s2, s3));
        assert_eq!(
            drain(t3, b3).await,
            "id: 3\ndata: e3\n\nid: 4\ndata: e4\n\n"
        );
        let want = "id: 1\ndata: e1\n\nid: 2\ndata: e2\n\nid: 3\ndata: e3\n\nid: 4\ndata: e4\n\n";
        assert_eq!(drain(t1, b1).await, want);
    }

    #[tokio::test]
    async fn resume_replays_exactly_the_missed_events_of_visible_topics() {
        let b = SseBroker::new(BrokerConfig::default());
        for (i, topic) in ["a", "b", "a", "secret", "b"].iter().enumerate() {
            b.publish(topic, ev(i as u32 + 1)).unwrap();
        }
        let (tx, body) = sse_stream(16);
        let sub = b.subscribe(&topics(&["a", "b"]), Some("1"), &tx);
        b.publish("a", ev(6)).unwrap();
        drop(sub);
        assert_eq!(
            drain(tx, body).await,
            "id: 2\ndata: e2\n\nid: 3\ndata: e3\n\nid: 5\ndata: e5\n\nid: 6\ndata: e6\n\n"
        );
        let st = b.stats();
        assert_eq!((st.resumes, st.replayed, st.resets), (1, 3, 0));
    }

    #[tokio::test]
    async fn a_too_old_id_gets_a_reset_event_then_the_buffer() {
        let b = SseBroker::new(BrokerConfig {
            replay: 2,
            ..BrokerConfig::default()
        });
        for i in 1..=5 {
            b.publish("a", ev(i)).unwrap();
        }
        let (tx, body) = sse_stream(16);
        let sub = b.subscribe(&topics(&["a"]), Some("2"), &tx);
        drop(sub);
        assert_eq!(
            drain(tx, body).await,
            "event: sse-reset\ndata: {\"last_event_id\":\"2\",\"oldest_id\":\"4\"}\n\nid: 4\ndata: e4\n\nid: 5\ndata: e5\n\n"
        );
        let st = b.stats();
        assert_eq!((st.resumes, st.replayed, st.resets), (1, 2, 1));
    }

    #[tokio::test]
    async fn an_unknown_or_future_id_is_a_reset() {
        let b = SseBroker::new(BrokerConfig::default());
        b.publish("a", ev(1)).unwrap();
        for bad in ["99", "nope", "\"x"] {
            let (tx, body) = sse_stream(16);
            drop(b.subscribe(&topics(&["a"]), Some(bad), &tx));
            let got = drain(tx, body).await;
            assert!(got.starts_with("event: sse-reset\n"), "{bad}: {got}");
            assert!(got.ends_with("id: 1\ndata: e1\n\n"), "{bad}: {got}");
        }
    }

    /// The encoded length of a one-digit-id event with `data`.
    fn encoded_len(data: &str) -> usize {
        let mut out = Vec::new();
        sse_encode(&SseEvent::data(data).id("1"), &mut out).unwrap();
        out.len()
    }

    #[tokio::test]
    async fn the_byte_budget_drops_the_oldest_events_of_any_topic_first() {
        let one = encoded_len("x") + EVENT_OVERHEAD;
        let b = SseBroker::new(BrokerConfig {
            replay_bytes: 3 * one,
            ..BrokerConfig::default()
        });
        for topic in ["a", "b", "a", "b"] {
            b.publish(topic, SseEvent::data("x")).unwrap();
        }
        // Ids 1 (a), 2 (b), 3 (a), 4 (b): three fit, so 1 went.
        let mut got = Vec::new();
        for topic in ["a", "b"] {
            let (tx, body) = sse_stream(16);
            drop(b.subscribe(&topics(&[topic]), Some("0"), &tx));
            got.push(drain(tx, body).await);
        }
        assert!(
            got[0].starts_with("event: sse-reset"),
            "a gap in a: {}",
            got[0]
        );
        assert!(
            got[0].contains("\"oldest_id\":\"3\"") && got[0].contains("id: 3\n"),
            "{}",
            got[0]
        );
        assert!(
            got[1].starts_with("id: 2\n") && got[1].contains("id: 4\n"),
            "no gap in b: {}",
            got[1]
        );
        assert_eq!(b.stats().resets, 1);
    }

    #[tokio::test]
    async fn topics_whose_events_the_budget_dropped_go_when_nobody_listens() {
        let one = encoded_len("x") + EVENT_OVERHEAD;
        let b = SseBroker::new(BrokerConfig {
            replay_bytes: one,
            ..BrokerConfig::default()
        });
        for topic in ["t1", "t2", "t3", "t4", "t5"] {
            b.publish(topic, SseEvent::data("x")).unwrap();
        }
        assert_eq!(b.stats().topics, 1, "only the last event's topic is left");
        // A resume on a topic that went, from before its events: a gap.
        let (tx, body) = sse_stream(16);
        drop(b.subscribe(&topics(&["t1"]), Some("0"), &tx));
        assert!(drain(tx, body).await.starts_with("event: sse-reset"));
        let (tx, body) = sse_stream(16);
        drop(b.subscribe(&topics(&["t1"]), Some("4"), &tx));
        assert_eq!(
            drain(tx, body).await,
            "",
            "from after what went: nothing missed"
        );
        // A topic with a subscriber stays, its events gone.
        let (tx, _body) = sse_stream(16);
        let _s = b.subscribe(&["t6".into()], None, &tx);
        b.publish("t6", SseEvent::data("x")).unwrap();
        b.publish("t7", SseEvent::data("x")).unwrap();
        assert_eq!(b.stats().topics, 2, "t6 (subscribed) and t7");
    }

    #[tokio::test]
    async fn an_up_to_date_id_replays_nothing() {
        let b = SseBroker::new(BrokerConfig::default());
        b.publish("a", ev(1)).unwrap();
        let (tx, body) = sse_stream(16);
        drop(b.subscribe(&topics(&["a"]), Some("1"), &tx));
        assert_eq!(drain(tx, body).await, "");
        let st = b.stats();
        assert_eq!((st.resumes, st.replayed, st.resets), (1, 0, 0));
    }

    #[tokio::test]
    async fn a_burst_reaches_each_stream_once_the_publisher_yields_in_id_order() {
        let b = SseBroker::new(BrokerConfig::default());
        let (both, both_body) = sse_stream(16);
        let s1 = b.subscribe(&topics(&["a", "b"]), None, &both);
        for (topic, n) in [("a", 1), ("b", 2), ("a", 3), ("a", 4)] {
            b.publish(topic, ev(n)).unwrap();
        }
        assert_eq!(
            both.capacity(),
            16,
            "nothing sent before the publisher yields"
        );
        tokio::task::yield_now().await;
        assert_eq!(both.capacity(), 12);
        // A stream that comes in the middle of a burst resumes without a
        // repeat: what was published before it went to the others first.
        b.publish("a", ev(5)).unwrap();
        let (late, late_body) = sse_stream(16);
        let s2 = b.subscribe(&topics(&["a"]), Some("4"), &late);
        b.publish("a", ev(6)).unwrap();
        drop((s1, s2));
        assert_eq!(
            drain(both, both_body).await,
            (1..=6)
                .map(|i| format!("id: {i}\ndata: e{i}\n\n"))
                .collect::<String>(),
            "in id order across the topics"
        );
        assert_eq!(
            drain(late, late_body).await,
            "id: 5\ndata: e5\n\nid: 6\ndata: e6\n\n"
        );
    }

    #[tokio::test]
    async fn a_publisher_that_never_yields_fans_out_itself_past_the_bound() {
        let b = SseBroker::new(BrokerConfig::default());
        let (tx, _body) = sse_stream(1000);
        let _s = b.subscribe(&topics(&["a"]), None, &tx);
        for n in 1..FAN_OUT_EVENTS {
            b.publish("a", ev(n)).unwrap();
        }
        assert_eq!(tx.capacity(), 1000, "below the bound: waits for the task");
        b.publish("a", ev(FAN_OUT_EVENTS)).unwrap();
        assert_eq!(
            tx.capacity(),
            1000 - FAN_OUT_EVENTS as usize,
            "at the bound: sent"
        );
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_ended_and_the_others_keep_receiving() {
        let b = SseBroker::new(BrokerConfig::default());
        let (slow, _slow_body) = sse_stream(2);
        let (fast, fast_body) = sse_stream(64);
        let _s1 = b.subscribe(&topics(&["a"]), None, &slow);
        let s2 = b.subscribe(&topics(&["a"]), None, &fast);
        b.publish("a", ev(1)).unwrap();
        fan_out(&b);
        // A burst of publishes goes out as one send per stream: the slow
        // stream has no room for it and is ended; the others get all of it.
        for i in 2..=10 {
            b.publish("a", ev(i)).unwrap();
        }
        fan_out(&b);
        assert!(slow.is_closed(), "the slow stream was ended");
        let st = b.stats();
        assert_eq!(st.slow_dropped, 1);
        assert_eq!(st.delivered, 1 + 10);
        let event_len = "id: 1\ndata: e1\n\n".len() as u64;
        assert_eq!(
            st.delivered_bytes,
            (1 + 9) * event_len + "id: 10\ndata: e10\n\n".len() as u64
        );
        drop(s2);
        assert_eq!(drain(fast, fast_body).await.matches("data: ").count(), 10);
    }

    #[tokio::test]
    async fn dropping_subscriptions_frees_subscribers_and_empty_topics() {
        let b = SseBroker::new(BrokerConfig::default());
        let (tx, _body) = sse_stream(4);
        let subs: Vec<_> = (0..100)
            .map(|i| b.subscribe(&topics(&[&format!("t{i}"), "shared"]), None, &tx))
            .collect();
        assert_eq!(b.stats().subscribers, 100);
        assert_eq!(b.stats().topics, 101);
        drop(subs);
        assert_eq!(b.stats().subscribers, 0);
        assert_eq!(b.stats().topics, 0);
    }

    #[tokio::test]
    async fn duplicate_topics_deliver_once() {
        let b = SseBroker::new(BrokerConfig::default());
        let (tx, body) = sse_stream(8);
        let sub = b.subscribe(&topics(&["a", "a"]), None, &tx);
        b.publish("a", ev(1)).unwrap();
        drop(sub);
        assert_eq!(drain(tx, body).await, "id: 1\ndata: e1\n\n");
    }

    #[test]
    fn an_invalid_event_is_an_error_and_takes_no_id() {
        let b = SseBroker::new(BrokerConfig::default());
        assert_eq!(
            b.publish("a", SseEvent::data("x").event("a\nb")),
            Err(PublishError::Event(NameError::ControlChar {
                kind: NameKind::Event,
                at: 1
            }))
        );
        assert_eq!(b.last_id(), 0);
        assert_eq!(b.publish("a", ev(1)), Ok(1));
    }

    #[test]
    fn invalid_topic_or_event_names_are_refused_and_take_no_id() {
        let b = SseBroker::new(BrokerConfig::default());
        let (tx, _body) = sse_stream::sse_stream(8);
        let _sub = b.subscribe(&topics(&["a"]), None, &tx);
        let long_topic = "t".repeat(129);
        let long_event = "e".repeat(65);
        for (topic, event, want) in [
            ("", None, "topic name is empty"),
            (
                long_topic.as_str(),
                None,
                "topic name is 129 bytes, at most 128",
            ),
            ("a\rb", None, "topic name has a control character at byte 1"),
            ("a", Some(""), "event name is empty"),
            (
                "a",
                Some(long_event.as_str()),
                "event name is 65 bytes, at most 64",
            ),
            (
                "a",
                Some("x\u{7f}"),
                "event name has a control character at byte 1",
            ),
        ] {
            let mut e = SseEvent::data("x");
            e.event = event.map(str::to_string);
            let err = b.publish(topic, e).unwrap_err();
            assert_eq!(err.to_string(), want, "{topic:?} {event:?}");
            assert!(matches!(
                (&err, event),
                (PublishError::Topic(_), None) | (PublishError::Event(_), Some(_))
            ));
        }
        assert_eq!(b.last_id(), 0);
        assert_eq!(b.stats().published, 0);
        assert_eq!(b.stats().topics, 1, "no topic was created");
        assert_eq!(b.publish(&"t".repeat(128), ev(1)), Ok(1));
        assert_eq!(b.publish("a", ev(2).event("e".repeat(64))), Ok(2));
    }

    // Cluster mode: two brokers on one in-process bus are two nodes.

    use backplane::{Backplane, BackplaneError, Channel, History, Incoming, Position, Receiver};
    use backplane_memory::{MemoryBackplane, MemoryBus, MemoryConfig};
    use futures_util::future::BoxFuture;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;
    use tokio::sync::{Semaphore, mpsc};

    /// A real memory-bus node with faults to switch on: its connection lost
    /// (`deaf`: what is published meanwhile never reaches it; `reconnect`
    /// sends the `Resync` a real backplane would), live messages lagging
    /// behind history (as Redis pub/sub may), history reads failing, or held
    /// until the test lets them go.
    struct Flaky {
        inner: Arc<MemoryBackplane>,
        deaf: Arc<AtomicBool>,
        /// While `Some`, messages to this node wait here.
        lag: Arc<Mutex<Option<Vec<Incoming>>>>,
        receiver: Mutex<Option<Receiver>>,
        history_fails: AtomicBool,
        gate: Mutex<Option<Gate>>,
    }

    #[derive(Clone)]
    struct Gate {
        /// Told when a read starts.
        entered: mpsc::UnboundedSender<()>,
        /// A read completes after taking a permit.
        open: Arc<Semaphore>,
        /// Whether the read looks at the bus before waiting (else after).
        read_first: bool,
    }

    impl Flaky {
        fn new(bus: &MemoryBus) -> Arc<Flaky> {
            Arc::new(Flaky {
                inner: Arc::new(bus.node()),
                deaf: Arc::default(),
                lag: Arc::default(),
                receiver: Mutex::new(None),
                history_fails: AtomicBool::new(false),
                gate: Mutex::new(None),
            })
        }

        fn disconnect(&self) {
            self.deaf.store(true, Ordering::SeqCst);
        }

        fn lag(&self) {
            *self.lag.lock().unwrap() = Some(Vec::new());
        }

        /// Hands the node the messages that lagged, and stops lagging.
        fn catch_up_lag(&self) {
            let lagged = self.lag.lock().unwrap().take().unwrap();
            let receiver = self.receiver.lock().unwrap().clone().unwrap();
            lagged.into_iter().for_each(|m| receiver(m));
        }

        fn reconnect(&self) {
            self.deaf.store(false, Ordering::SeqCst);
            let receiver = self.receiver.lock().unwrap().clone().unwrap();
            receiver(Incoming::Resync);
        }

        /// Holds history reads from now on; returns where their starts are told.
        fn hold_history(&self, read_first: bool) -> (mpsc::UnboundedReceiver<()>, Arc<Semaphore>) {
            let (tx, rx) = mpsc::unbounded_channel();
            let open = Arc::new(Semaphore::new(0));
            *self.gate.lock().unwrap() = Some(Gate {
                entered: tx,
                open: open.clone(),
                read_first,
            });
            (rx, open)
        }
    }

    impl Backplane for Flaky {
        fn node(&self) -> u64 {
            self.inner.node()
        }
        fn set_receiver(&self, receiver: Receiver) {
            *self.receiver.lock().unwrap() = Some(receiver.clone());
            let (deaf, lag) = (self.deaf.clone(), self.lag.clone());
            self.inner.set_receiver(Arc::new(move |m| {
                if deaf.load(Ordering::SeqCst) {
                    return;
                }
                if let Some(lagged) = lag.lock().unwrap().as_mut() {
                    return lagged.push(m);
                }
                receiver(m);
            }));
        }
        fn subscribe(&self, channel: Channel) {
            self.inner.subscribe(channel);
        }
        fn unsubscribe(&self, channel: Channel) {
            self.inner.unsubscribe(channel);
        }
        fn subscriptions_applied(&self) -> BoxFuture<'static, Result<(), BackplaneError>> {
            self.inner.subscriptions_applied()
        }
        fn publish(
            &self,
            channels: Vec<Channel>,
            payload: Bytes,
        ) -> BoxFuture<'static, Result<(), BackplaneError>> {
            self.inner.publish(channels, payload)
        }
        fn publish_kept(
            &self,
            channels: Vec<Channel>,
            rooms: Vec<String>,
            keep: usize,
            payload: Bytes,
        ) -> BoxFuture<'static, Result<(), BackplaneError>> {
            self.inner.publish_kept(channels, rooms, keep, payload)
        }
        fn recent(
            &self,
            room: &str,
            n: usize,
        ) -> BoxFuture<'static, Result<Vec<Bytes>, BackplaneError>> {
            self.inner.recent(room, n)
        }
        fn append(
            &self,
            topic: &str,
            events: Vec<Bytes>,
        ) -> BoxFuture<'static, Result<Vec<Position>, BackplaneError>> {
            self.inner.append(topic, events)
        }
        fn history(
            &self,
            topic: &str,
            after: Position,
        ) -> BoxFuture<'static, Result<History, BackplaneError>> {
            if self.history_fails.load(Ordering::SeqCst) {
                return Box::pin(async { Err(BackplaneError::Unavailable("test".into())) });
            }
            let Some(gate) = self.gate.lock().unwrap().clone() else {
                return self.inner.history(topic, after);
            };
            let _ = gate.entered.send(());
            let (inner, topic) = (self.inner.clone(), topic.to_string());
            let early = gate.read_first.then(|| inner.history(&topic, after));
            Box::pin(async move {
                let _permit = gate.open.acquire().await.unwrap();
                match early {
                    Some(read) => read.await,
                    None => inner.history(&topic, after).await,
                }
            })
        }
        fn presence_set(
            &self,
            room: &str,
            member: backplane::PresenceMember,
        ) -> BoxFuture<'static, Result<(), BackplaneError>> {
            self.inner.presence_set(room, member)
        }
        fn presence_remove(
            &self,
            room: &str,
            client: u64,
        ) -> BoxFuture<'static, Result<(), BackplaneError>> {
            self.inner.presence_remove(room, client)
        }
        fn presence(
            &self,
            room: &str,
        ) -> BoxFuture<'static, Result<backplane::Presence, BackplaneError>> {
            self.inner.presence(room)
        }
        fn presence_expire(
            &self,
            room: &str,
        ) -> BoxFuture<'static, Result<Vec<backplane::PresenceMember>, BackplaneError>> {
            self.inner.presence_expire(room)
        }
    }

    /// A node: a clustered broker on its own `Flaky` node of `bus`.
    fn node(bus: &MemoryBus) -> (SseBroker, Arc<Flaky>) {
        let flaky = Flaky::new(bus);
        (
            SseBroker::clustered(BrokerConfig::default(), flaky.clone()),
            flaky,
        )
    }

    /// One event as a client reads it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Ev {
        id: String,
        event: String,
        data: String,
    }

    /// Reads a stream event by event.
    struct Reader {
        body: SseBody,
        buf: String,
    }

    impl Reader {
        fn new(body: SseBody) -> Self {
            Reader {
                body,
                buf: String::new(),
            }
        }

        /// The next `n` events (at most 5 s, so a missing event fails the test).
        async fn take(&mut self, n: usize) -> Vec<Ev> {
            let mut out = Vec::new();
            while out.len() < n {
                if let Some(end) = self.buf.find("\n\n") {
                    let raw: String = self.buf.drain(..end + 2).collect();
                    let mut ev = Ev {
                        id: String::new(),
                        event: String::new(),
                        data: String::new(),
                    };
                    for line in raw.lines().filter(|l| !l.is_empty()) {
                        let (field, value) = line.split_once(": ").unwrap_or((line, ""));
                        match field {
                            "id" => ev.id = value.to_string(),
                            "event" => ev.event = value.to_string(),
                            "data" => ev.data = value.to_string(),
                            _ => panic!("unexpected line {line:?}"),
                        }
                    }
                    out.push(ev);
                    continue;
                }
                let frame = tokio::time::timeout(Duration::from_secs(5), self.body.frame())
                    .await
                    .unwrap_or_else(|_| {
                        panic!("waited for {n} events, got {out:?} and {:?}", self.buf)
                    })
                    .expect("the stream ended")
                    .unwrap();
                self.buf
                    .push_str(std::str::from_utf8(frame.data_ref().unwrap()).unwrap());
            }
            out
        }

        /// The data of the next `n` events.
        async fn data(&mut self, n: usize) -> Vec<String> {
            self.take(n).await.into_iter().map(|e| e.data).collect()
        }
    }

    fn pos(id: &str) -> Position {
        id.parse()
            .unwrap_or_else(|_| panic!("id {id:?} is not a position"))
    }

    fn names(prefix: &str, range: std::ops::RangeInclusive<u32>) -> Vec<String> {
        range.map(|i| format!("{prefix}{i}")).collect()
    }

    async fn publish(b: &SseBroker, topic: &str, data: &str) -> String {
        b.publish_async(topic, SseEvent::data(data)).await.unwrap()
    }

    #[tokio::test]
    async fn a_stream_on_one_node_receives_what_another_node_publishes_ids_are_positions() {
        let bus = MemoryBus::new(MemoryConfig::default());
        let ((a, _), (b, _)) = (node(&bus), node(&bus));
        let channel = Channel::Topic("news".into());
        let (tx, body) = sse_stream(16);
        let sub = a.subscribe(&topics(&["news"]), None, &tx);
        let (tx2, body2) = sse_stream(16);
        let sub2 = b.subscribe(&topics(&["news"]), None, &tx2);
        assert_eq!(
            bus.subscribers(&channel),
            [1, 2],
            "each node subscribed its topic"
        );
        let mut ids = Vec::new();
        for i in 1..=3 {
            ids.push(publish(&b, "news", &format!("e{i}")).await);
        }
        b.publish_async("other", SseEvent::data("not news"))
            .await
            .unwrap();
        assert!(ids.windows(2).all(|w| pos(&w[0]) < pos(&w[1])), "{ids:?}");
        let mut on_a = Reader::new(body);
        let got = on_a.take(3).await;
        assert_eq!(
            got.iter().map(|e| &e.id).collect::<Vec<_>>(),
            ids.iter().collect::<Vec<_>>()
        );
        assert_eq!(
            got.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
            ["e1", "e2", "e3"]
        );
        // The publishing node delivers what comes back from the backplane, the same way.
        assert_eq!(Reader::new(body2).take(3).await, got);
        let (sa, sb) = (a.stats(), b.stats());
        assert_eq!((sa.published, sa.delivered, sa.topics), (0, 3, 1));
        assert_eq!((sb.published, sb.delivered), (4, 3));
        assert_eq!(
            sa.delivered_bytes,
            got.iter()
                .map(|e| format!("id: {}\ndata: {}\n\n", e.id, e.data).len() as u64)
                .sum::<u64>()
        );
        // The last stream of a topic leaving unsubscribes its node.
        let (tx3, _body3) = sse_stream(16);
        let sub3 = a.subscribe(&topics(&["news"]), None, &tx3);
        drop(sub);
        assert_eq!(bus.subscribers(&channel), [1, 2]);
        drop((sub3, sub2));
        assert!(bus.subscribers(&channel).is_empty());
        assert_eq!((a.stats().topics, a.stats().subscribers), (0, 0));
        drop((tx, tx2));
    }

    #[tokio::test]
    async fn a_batch_published_on_one_node_reaches_another_in_order_with_positions() {
        let bus = MemoryBus::new(MemoryConfig::default());
        let ((a, _), (b, flaky)) = (node(&bus), node(&bus));
        let (tx, body) = sse_stream(16);
        let sub = a.subscribe(&topics(&["news"]), None, &tx);
        let events = || (1..=3).map(|i| SseEvent::data(format!("e{i}"))).collect();
        let ids = b.publish_batch_async("news", events()).await.unwrap();
        assert_eq!(ids, ["0-1", "0-2", "0-3"]);
        assert!(matches!(
            b.publish_batch("news", events()),
            Err(PublishError::Clustered)
        ));
        let got = Reader::new(body).take(3).await;
        assert_eq!(
            got.iter()
                .map(|e| (e.id.as_str(), e.data.as_str()))
                .collect::<Vec<_>>(),
            [("0-1", "e1"), ("0-2", "e2"), ("0-3", "e3")]
        );
        assert_eq!((b.stats().published, a.stats().delivered), (3, 3));
        // The backplane down: the whole batch is refused.
        bus.set_available(false);
        assert_eq!(
            b.publish_batch_async("news", events()).await,
            Err(PublishError::Unavailable)
        );
        assert_eq!(b.stats().published, 3);
        drop((sub, tx, flaky));
    }

    #[tokio::test]
    async fn resume_on_another_node_gets_exactly_the_missed_events_then_live_ones() {
        let bus = MemoryBus::new(MemoryConfig::default());
        let ((a, _), (b, _)) = (node(&bus), node(&bus));
        let (tx, body) = sse_stream(16);
        let sub = a.subscribe(&topics(&["a", "b"]), None, &tx);
        let mut first = Reader::new(body);
        for (t, d) in [("a", "e1"), ("b", "e2")] {
            publish(&b, t, d).await;
        }
        let seen = first.take(2).await;
        assert_eq!(
            seen.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
            ["e1", "e2"]
        );
        drop(sub); // the client goes away
        drop((tx, first));
        // Missed, on both topics and one it does not read.
        for (t, d) in [("a", "e3"), ("secret", "x"), ("b", "e4"), ("a", "e5")] {
            publish(&a, t, d).await;
        }
        let (tx, body) = sse_stream(16);
        let _sub = b.subscribe(&topics(&["b", "a"]), Some(&seen[1].id), &tx);
        let mut resumed = Reader::new(body);
        let replay = resumed.take(3).await;
        assert_eq!(
            replay.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
            ["e3", "e4", "e5"]
        );
        assert!(replay.windows(2).all(|w| pos(&w[0].id) < pos(&w[1].id)));
        assert!(pos(&seen[1].id) < pos(&replay[0].id));
        publish(&a, "b", "e6").await;
        assert_eq!(resumed.data(1).await, ["e6"]);
        let st = b.stats();
        assert_eq!(
            (st.resumes, st.replayed, st.resets, st.delivered),
            (1, 3, 0, 4)
        );
        // Up to date: nothing replayed, the next events are the live ones, once.
        let (tx2, body2) = sse_stream(16);
        let last = publish(&a, "a", "e7").await;
        let _sub2 = b.subscribe(&topics(&["a"]), Some(&last), &tx2);
        publish(&a, "a", "e8").await;
        let mut r2 = Reader::new(body2);
        assert_eq!(r2.data(1).await, ["e8"]);
        publish(&a, "a", "e9").await;
        assert_eq!(r2.data(1).await, ["e9"]);
    }

    #[tokio::test]
    async fn publishes_racing_a_resume_are_neither_lost_nor_repeated() {
        // The history read sees the bus before (true) or after (false) the
        // racing publishes; either way each event is queued once, in order.
        for read_first in [true, false] {
            let bus = MemoryBus::new(MemoryConfig::default());
            let ((a, _), (b, fb)) = (node(&bus), node(&bus));
            let mut ids = Vec::new();
            for i in 1..=3 {
                ids.push(publish(&a, "t", &format!("e{i}")).await);
            }
            let (mut entered, open) = fb.hold_history(read_first);
            let (tx, body) = sse_stream(16);
            let _sub = b.subscribe(&topics(&["t"]), Some(&ids[0]), &tx);
            entered.recv().await.unwrap();
            // Published while the history is being read: these reach the
            // stream live and must wait for the replay.
            for i in 4..=5 {
                ids.push(publish(&a, "t", &format!("e{i}")).await);
            }
            open.add_permits(1);
            let mut r = Reader::new(body);
            let got = r.take(4).await;
            assert_eq!(
                got.iter().map(|e| e.data.clone()).collect::<Vec<_>>(),
                names("e", 2..=5),
                "read_first {read_first}"
            );
            assert_eq!(
                got.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
                ids[1..]
            );
            publish(&a, "t", "e6").await;
            assert_eq!(
                r.data(1).await,
                ["e6"],
                "nothing repeated before the next live event"
            );
            let st = b.stats();
            assert_eq!(
                (st.replayed, st.delivered, st.resets),
                (if read_first { 2 } else { 4 }, 5, 0)
            );
        }
        // Live delivery lagging behind history: what arrives live after the
        // replay already queued it is dropped.
        let bus = MemoryBus::new(MemoryConfig::default());
        let ((a, _), (b, fb)) = (node(&bus), node(&bus));
        let e1 = publish(&a, "t", "e1").await;
        let (tx, body) = sse_stream(16);
        let _sub = b.subscribe(&topics(&["t"]), Some(&e1), &tx);
        fb.lag();
        for i in 2..=3 {
            publish(&a, "t", &format!("e{i}")).await;
        }
        let mut r = Reader::new(body);
        assert_eq!(r.data(2).await, ["e2", "e3"]);
        fb.catch_up_lag();
        publish(&a, "t", "e4").await;
        assert_eq!(r.data(1).await, ["e4"]);
        assert_eq!(b.stats().delivered, 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resumes_during_a_stream_of_publishes_get_every_later_event_once_in_order() {
        let bus = MemoryBus::new(MemoryConfig::default());
        let ((a, _), (b, _)) = (node(&bus), node(&bus));
        const N: u32 = 300;
        let (tx0, body0) = sse_stream(1024);
        let _watch = b.subscribe(&topics(&["t"]), None, &tx0);
        let publisher = tokio::spawn(async move {
            for i in 1..=N {
                publish(&a, "t", &format!("e{i}")).await;
                tokio::task::yield_now().await;
            }
        });
        // Resume from wherever the watching stream is, while publishing goes on.
        let mut watch = Reader::new(body0);
        let mut resumed = Vec::new();
        let mut seen = 0;
        while seen < N - 20 {
            let ev = watch.take(1).await.remove(0);
            seen += 1;
            if seen % 25 == 0 {
                let (tx, body) = sse_stream(1024);
                let sub = b.subscribe(&topics(&["t"]), Some(&ev.id), &tx);
                resumed.push((seen, sub, tx, Reader::new(body)));
            }
        }
        publisher.await.unwrap();
        for (from, _sub, _tx, mut r) in resumed {
            let want = N - from;
            let got = r.data(want as usize).await;
            assert_eq!(got, names("e", from + 1..=N), "resumed after e{from}");
        }
        assert_eq!(b.stats().resets, 0);
    }

    #[tokio::test]
    async fn a_trimmed_history_or_an_id_that_is_not_a_position_gets_the_reset_event() {
        let bus = MemoryBus::new(MemoryConfig {
            history: 2,
            ..MemoryConfig::default()
        });
        let ((a, _), (b, _)) = (node(&bus), node(&bus));
        let mut ids = Vec::new();
        for i in 1..=5 {
            ids.push(publish(&a, "t", &format!("e{i}")).await);
        }
        for sent in [ids[1].as_str(), "2", "nope"] {
            let (tx, body) = sse_stream(16);
            let _sub = b.subscribe(&topics(&["t"]), Some(sent), &tx);
            let mut r = Reader::new(body);
            let got = r.take(3).await;
            // The same event a single node sends.
            assert_eq!(got[0].event, RESET_EVENT, "{sent}");
            assert_eq!(
                got[0].data,
                format!(r#"{{"last_event_id":"{sent}","oldest_id":"{}"}}"#, ids[3])
            );
            assert_eq!(
                got[1..].iter().map(|e| e.data.clone()).collect::<Vec<_>>(),
                ["e4", "e5"],
                "{sent}"
            );
        }
        let st = b.stats();
        assert_eq!((st.resumes, st.resets, st.replayed), (3, 3, 6));
    }

    #[tokio::test]
    async fn a_resync_catches_every_stream_up_without_loss_or_duplicates() {
        let bus = MemoryBus::new(MemoryConfig::default());
        let ((a, fa), (b, _)) = (node(&bus), node(&bus));
        // s1 has events of both its topics; s2 came after the first event;
        // s3 resumed and is still waiting for its history when the
        // connection goes; s4 reads a topic nothing reached this node on yet.
        let (tx1, body1) = sse_stream(64);
        let _s1 = a.subscribe(&topics(&["x", "y"]), None, &tx1);
        let e1 = publish(&b, "x", "e1").await;
        publish(&b, "y", "y1").await;
        let mut r1 = Reader::new(body1);
        assert_eq!(r1.data(2).await, ["e1", "y1"]);
        let (tx2, body2) = sse_stream(64);
        let _s2 = a.subscribe(&topics(&["x"]), None, &tx2);
        let (tx4, body4) = sse_stream(64);
        let _s4 = a.subscribe(&topics(&["quiet"]), None, &tx4);
        // s3's read looks at the bus now, before what A will miss.
        let (mut entered, open) = fa.hold_history(true);
        let (tx3, body3) = sse_stream(64);
        let _s3 = a.subscribe(&topics(&["x"]), Some(&e1), &tx3);
        entered.recv().await.unwrap();

        fa.disconnect();
        for (t, d) in [("x", "e2"), ("y", "y2"), ("quiet", "q1"), ("x", "e3")] {
            publish(&b, t, d).await; // lost on the way to node A
        }
        fa.reconnect();
        // Published after the reconnection, while the catch-up reads history.
        publish(&b, "x", "e4").await;
        open.add_permits(16);
        publish(&b, "x", "e5").await;
        assert_eq!(r1.data(4).await, ["e2", "y2", "e3", "e4"]);
        assert_eq!(r1.data(1).await, ["e5"]);
        assert_eq!(Reader::new(body2).data(4).await, names("e", 2..=5));
        assert_eq!(Reader::new(body3).data(4).await, names("e", 2..=5));
        let mut r4 = Reader::new(body4);
        assert_eq!(r4.data(1).await, ["q1"]);
        // Nothing repeated: the next event on each stream is a new one.
        publish(&b, "x", "e6").await;
        publish(&b, "quiet", "q2").await;
        assert_eq!(r1.data(1).await, ["e6"]);
        assert_eq!(r4.data(1).await, ["q2"]);
        let st = a.stats();
        assert_eq!((st.resyncs, st.resets, st.backplane_errors), (1, 0, 0));
        drop((tx1, tx2, tx3, tx4));
    }

    #[tokio::test]
    async fn an_unavailable_backplane_refuses_publishes_and_a_resume_gets_a_reset_then_live_events()
    {
        let bus = MemoryBus::new(MemoryConfig::default());
        let ((a, fa), (b, _)) = (node(&bus), node(&bus));
        let (tx, body) = sse_stream(16);
        let _sub = a.subscribe(&topics(&["t"]), None, &tx);
        let mut r = Reader::new(body);
        let e1 = publish(&b, "t", "e1").await;
        assert_eq!(r.data(1).await, ["e1"]);

        bus.set_available(false);
        assert_eq!(
            a.publish_async("t", SseEvent::data("lost")).await,
            Err(PublishError::Unavailable)
        );
        assert_eq!(
            a.publish("t", SseEvent::data("sync")),
            Err(PublishError::Clustered)
        );
        assert_eq!(a.stats().backplane_errors, 1);
        bus.set_available(true); // every node resyncs: nothing was missed
        publish(&b, "t", "e2").await;
        // Neither refused event reached anyone: the next one is e2.
        assert_eq!(r.data(1).await, ["e2"]);
        let st = a.stats();
        assert_eq!(
            (st.published, st.delivered, st.resyncs, st.resets),
            (0, 2, 1, 0)
        );

        // History unreadable: the resume is told it may have missed events,
        // and live events still come.
        fa.history_fails.store(true, Ordering::SeqCst);
        let (tx2, body2) = sse_stream(16);
        let _sub2 = a.subscribe(&topics(&["t"]), Some(&e1), &tx2);
        let mut r2 = Reader::new(body2);
        let reset = r2.take(1).await.remove(0);
        assert_eq!(
            (reset.event.as_str(), reset.data),
            (
                RESET_EVENT,
                format!(r#"{{"last_event_id":"{e1}","oldest_id":""}}"#)
            )
        );
        publish(&b, "t", "e3").await;
        assert_eq!(r2.data(1).await, ["e3"]);
        assert_eq!(a.stats().backplane_errors, 2);
    }

    /// The bytes the stream holds now, if any (one frame: what is queued).
    fn ready(body: &mut SseBody) -> Option<String> {
        use futures_util::FutureExt;
        let frame = body.frame().now_or_never()??.unwrap();
        Some(String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap())
    }

    fn count_events(chunk: &str) -> usize {
        chunk.matches("\n\n").count()
    }

    #[tokio::test(start_paused = true)]
    async fn events_that_come_faster_than_the_window_reach_a_stream_together_once_per_window() {
        let bus = MemoryBus::new(MemoryConfig::default());
        let window = BrokerConfig::default().coalesce;
        assert_eq!(window, Duration::from_millis(2));
        let ((a, _), (b, _)) = (node(&bus), node(&bus));
        let (tx, mut body) = sse_stream(256);
        let _sub = a.subscribe(&topics(&["t"]), None, &tx);

        // Slower than the window: each event goes at once.
        for i in 1..=3 {
            publish(&b, "t", &format!("slow{i}")).await;
            assert_eq!(
                ready(&mut body).map(|c| count_events(&c)),
                Some(1),
                "event {i}"
            );
            tokio::time::advance(window * 4).await;
        }

        // 40 at once (the clock does not move): the first go as they come,
        // until the mean gap is under two windows; then they wait a window.
        let mut ids = Vec::new();
        for i in 1..=40 {
            ids.push(publish(&b, "t", &format!("fast{i}")).await);
        }
        let mut got = String::new();
        while let Some(chunk) = ready(&mut body) {
            got.push_str(&chunk);
        }
        let at_once = count_events(&got);
        assert!((1..40).contains(&at_once), "{at_once} of 40 went at once");
        assert!(ready(&mut body).is_none(), "the rest wait for the window");
        tokio::time::sleep(window * 2).await;
        let rest = ready(&mut body).expect("held events after the window");
        assert_eq!(
            count_events(&rest),
            40 - at_once,
            "together, in one write: {rest:?}"
        );
        got.push_str(&rest);
        let mut reader = Reader::new(sse_stream(1).1);
        reader.buf = got;
        let evs = reader.take(40).await;
        assert_eq!(
            evs.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ids.iter().map(String::as_str).collect::<Vec<_>>(),
            "in order"
        );
        assert_eq!(evs[39].data, "fast40");

        // Held events are counted (and queued) before `stats` answers.
        for i in 1..=5 {
            publish(&b, "t", &format!("again{i}")).await;
        }
        assert_eq!(a.stats().delivered, 3 + 40 + 5);
        assert_eq!(ready(&mut body).map(|c| count_events(&c)), Some(5));

        // After a quiet while, the next event goes at once again.
        tokio::time::advance(window * 64).await;
        publish(&b, "t", "after").await;
        assert_eq!(ready(&mut body).map(|c| count_events(&c)), Some(1));
    }

    /// Two nodes on a bus, a stream of topic `t` on the first, and `n`
    /// events `e1`.. published on the second one after the other.
    async fn burst_to_a_stream(n: u32) -> (MemoryBus, SseBroker, SseBroker, Subscription, SseBody) {
        let bus = MemoryBus::new(MemoryConfig::default());
        let ((a, _), (b, _)) = (node(&bus), node(&bus));
        let (tx, body) = sse_stream(256);
        let sub = a.subscribe(&topics(&["t"]), None, &tx);
        for i in 1..=n {
            publish(&b, "t", &format!("e{i}")).await;
        }
        (bus, a, b, sub, body)
    }

    #[test]
    fn on_a_runtime_without_timers_held_events_still_arrive_and_none_wait_after() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let (_, _a, b, _sub, mut body) = burst_to_a_stream(20).await;
            // The hand-over task's wait fails (no timer): it hands over anyway.
            let mut got = 0;
            for _ in 0..10 {
                tokio::task::yield_now().await;
                while let Some(chunk) = ready(&mut body) {
                    got += count_events(&chunk);
                }
            }
            assert_eq!(got, 20);
            // And the node no longer holds anything back.
            for i in 21..=40 {
                publish(&b, "t", &format!("e{i}")).await;
                assert_eq!(ready(&mut body).map(|c| count_events(&c)), Some(1), "e{i}");
            }
        });
    }

    #[tokio::test(start_paused = true)]
    async fn held_events_reach_the_streams_subscribed_before_them_and_with_no_window_none_wait() {
        let (bus, a, b, _sub, mut body) = burst_to_a_stream(20).await;
        while ready(&mut body).is_some() {}
        // Some wait; a stream that subscribes now does not get them, the
        // earlier stream does, at once.
        let (tx2, mut body2) = sse_stream(256);
        let _sub2 = a.subscribe(&topics(&["t"]), None, &tx2);
        assert!(
            ready(&mut body).is_some(),
            "handed over before the subscription"
        );
        publish(&b, "t", "e21").await;
        tokio::time::sleep(BrokerConfig::default().coalesce * 2).await;
        let only = ready(&mut body2).expect("the live event");
        assert_eq!(count_events(&only), 1);
        assert!(only.contains("data: e21\n"), "{only:?}");

        // `coalesce` zero: every event at once.
        let flaky = Flaky::new(&bus);
        let c = SseBroker::clustered(
            BrokerConfig {
                coalesce: Duration::ZERO,
                ..BrokerConfig::default()
            },
            flaky,
        );
        let (tx3, mut body3) = sse_stream(256);
        let _sub3 = c.subscribe(&topics(&["t"]), None, &tx3);
        for i in 1..=20 {
            publish(&b, "t", &format!("z{i}")).await;
            assert_eq!(ready(&mut body3).map(|c| count_events(&c)), Some(1), "z{i}");
        }
    }
}

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../sse_broker.md")]
#[doc = include_str!("../../../types/infra/PublishError.md")]
#[doc = include_str!("../../../types/infra/SseBroker.md")]
pub struct RegistryExamples;
