//! Cluster mode: topics whose events go through a [`Backplane`].
//!
//! Publishing appends to the backplane ([`Backplane::append`]); local streams
//! receive events only as the backplane hands them back, so every node
//! delivers a topic's events in history order, with the positions as ids.
//!
//! Each stream remembers, per topic, the last position queued on it. A stream
//! that must catch up (a resume, or every stream after [`Incoming::Resync`])
//! is marked: live events for it wait in its `pending` list while a task
//! reads the history after its positions; the task then queues, in one
//! batch, the reset event if there was a gap, the history events newer than
//! what the stream holds (merged by position) and the pending events newer
//! than that (so nothing is lost and nothing is sent twice). A Resync during
//! a catch-up makes that catch-up read again before it goes live.
//!
//! A node hands what the backplane brings to its streams at once, unless
//! events have been coming more often than one per two
//! [`BrokerConfig::coalesce`] windows (on average, lately): then they wait
//! until one window after the previous hand-over and go together ([`Pace`]),
//! so each stream's write carries several. A node's writes to its sockets,
//! not the backplane, bound what it delivers, and a node that is not
//! saturated alone (two share a core, or the publishers wait for their
//! acknowledgement) would otherwise write each event on its own.
//!
//! Locks: the broker's state lock is never held while calling the backplane
//! (its receiver takes that lock, possibly under the backplane's own). Topic
//! channels are subscribed and unsubscribed under `channels` alone, which
//! the receiver never takes.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use backplane::{Backplane, BackplaneError, Channel, History, Incoming, Position};
use bytes::Bytes;
use futures_util::StreamExt;
use sse_event::SseEvent;
use sse_stream::{SseSender, SseStreamError};
use tokio::runtime::Handle;
use tokio::time::Instant;

use crate::{
    BrokerConfig, FAN_OUT_EVENTS, PublishError, State, Subscription, check_batch, encode_batch,
    lock, reset_event,
};

/// Cluster mode: the most live events held for one stream while it catches
/// up from the backplane's history; one more ends the stream (its client
/// resumes), as a full queue does.
pub const CATCH_UP_BUFFER: usize = 1024;

/// History reads in flight at once during a catch-up.
const READS_IN_FLIGHT: usize = 16;

/// The cluster part of the broker's state.
pub(crate) struct Cluster {
    backplane: Arc<dyn Backplane>,
    /// The topic channels this node subscribes to. Locked alone, while
    /// calling the backplane.
    channels: Arc<Mutex<HashSet<String>>>,
    topics: HashMap<String, Topic>,
    members: HashMap<u64, Member>,
    /// The newest position this node has received or appended, any topic.
    head: Option<Position>,
    /// Where tasks run when the caller is not on a runtime: see [`Cluster::handle`].
    runtime: Option<Handle>,
    /// When received events go to the streams.
    pace: Pace,
    /// Received events waiting for `pace`, in order: (topic, position, payload).
    held: Vec<(String, Position, Bytes)>,
    /// A task will hand `held` over.
    hand_over_scheduled: bool,
}

/// When a node hands the events it receives to its streams: at once, or,
/// while they come more often than one per two `window`s on average, one
/// `window` after the previous hand-over, together. A pure state machine:
/// the caller says what time it is (Tokio's clock, so a paused test clock
/// applies).
#[derive(Debug, Clone)]
pub(crate) struct Pace {
    window: Duration,
    last_arrival: Option<Instant>,
    /// The mean gap between arrivals, weighted 1/8 to the newest.
    mean_gap: Duration,
    last_hand_over: Option<Instant>,
}

impl Pace {
    /// The longest window: a longer one is taken as this.
    pub(crate) const MAX_WINDOW: Duration = Duration::from_secs(1);

    pub(crate) fn new(window: Duration) -> Self {
        let window = window.min(Self::MAX_WINDOW);
        Pace {
            window,
            last_arrival: None,
            // A few quick arrivals in a row bring it under two windows.
            mean_gap: window * 4,
            last_hand_over: None,
        }
    }

    /// An event arrived at `now`: when to hand it over (`None`: now).
    pub(crate) fn arrive(&mut self, now: Instant) -> Option<Instant> {
        if self.window.is_zero() {
            return None;
        }
        if let Some(prev) = self.last_arrival.replace(now) {
            let gap = now.saturating_duration_since(prev).min(self.window * 64);
            self.mean_gap = self.mean_gap - self.mean_gap / 8 + gap / 8;
        }
        if self.mean_gap >= self.window * 2 {
            return None;
        }
        let at = self.last_hand_over? + self.window;
        (at > now).then_some(at)
    }

    /// What was held went to the streams at `now`.
    pub(crate) fn handed_over(&mut self, now: Instant) {
        self.last_hand_over = Some(now);
    }
}

/// A topic with local streams.
struct Topic {
    members: Vec<u64>,
    /// The last position this node received on the topic.
    seen: Option<Position>,
    /// The node's `head` when the topic came: no event of the topic
    /// appended later is at or before it.
    since: Option<Position>,
}

/// One stream (one [`Subscription`]).
struct Member {
    stream: SseSender,
    /// One per topic, sorted by topic.
    tracks: Vec<Track>,
    catch_up: Option<Box<CatchUp>>,
}

/// Where a stream is in one topic.
struct Track {
    topic: String,
    /// The last position queued on the stream (or the one it resumed from).
    last: Option<Position>,
    /// Where a catch-up starts while `last` is `None`: the topic's last
    /// position on this node when the stream came, else the node's newest
    /// position when the topic came (else the start).
    since: Position,
}

/// A stream reading history: live events wait here.
#[derive(Default)]
struct CatchUp {
    /// (track, position, framed event), in arrival order.
    pending: Vec<(usize, Position, Bytes)>,
    /// A Resync came meanwhile: read again before going live.
    again: bool,
    /// The id the client sent, on a resume (reported by a reset event).
    sent: Option<String>,
    /// The id sent is not a position: a gap; replay all the history holds.
    from_start: bool,
}

impl Cluster {
    pub(crate) fn new(backplane: Arc<dyn Backplane>, config: &BrokerConfig) -> Self {
        Cluster {
            backplane,
            channels: Arc::default(),
            topics: HashMap::new(),
            members: HashMap::new(),
            head: None,
            runtime: Handle::try_current().ok(),
            pace: Pace::new(config.coalesce),
            held: Vec::new(),
            hand_over_scheduled: false,
        }
    }

    /// Where to spawn a task: the caller's runtime, else the one the broker
    /// was created on, if any.
    fn handle(&self) -> Option<Handle> {
        Handle::try_current().ok().or_else(|| self.runtime.clone())
    }

    pub(crate) fn topics(&self) -> usize {
        self.topics.len()
    }
}

/// [`crate::SseBroker::publish_batch_async`] in cluster mode.
pub(crate) async fn publish(
    inner: &Mutex<State>,
    backplane: &dyn Backplane,
    topic: &str,
    events: Vec<SseEvent>,
) -> Result<Vec<String>, PublishError> {
    check_batch(topic, &events)?;
    if events.is_empty() {
        return Ok(Vec::new());
    }
    // Each node writes the `id:` line from the position it receives.
    let (bytes, ends) = encode_batch(events, |_| None)?;
    let mut start = 0;
    let payloads = ends
        .iter()
        .map(|&end| {
            let event = bytes.slice(start..end);
            start = end;
            event
        })
        .collect();
    let appended = backplane.append(topic, payloads).await;
    let mut st = lock(inner);
    match appended {
        Ok(positions) => {
            st.stats.published += positions.len() as u64;
            if let Some(c) = st.cluster.as_deref_mut() {
                c.head = c.head.max(positions.last().copied());
            }
            Ok(positions.iter().map(Position::to_string).collect())
        }
        Err(e) => {
            st.stats.backplane_errors += 1;
            drop(st);
            tracing::warn!(target: "sse", topic, error = %e, "publish refused: the backplane did not take it");
            Err(PublishError::Unavailable)
        }
    }
}

/// [`crate::SseBroker::subscribe`] in cluster mode.
pub(crate) fn subscribe(
    inner: &Arc<Mutex<State>>,
    topics: &[String],
    last_event_id: Option<&str>,
    stream: &SseSender,
) -> Subscription {
    let mut unique: Vec<String> = topics.to_vec();
    unique.sort();
    unique.dedup();
    let resume = last_event_id.map(|raw| (raw, raw.trim().parse::<Position>().ok()));
    let mut st = lock(inner);
    // What was received before goes to the streams subscribed before.
    hand_over(&mut st);
    st.next_sub += 1;
    let id = st.next_sub;
    st.subscribers += 1;
    st.stats.subscribers = st.subscribers;
    if resume.is_some() {
        st.stats.resumes += 1;
    }
    let c = st.cluster.as_deref_mut().expect("cluster mode");
    let mut created = Vec::new();
    let tracks = unique
        .iter()
        .map(|name| {
            let topic = match c.topics.entry(name.clone()) {
                Entry::Occupied(t) => t.into_mut(),
                Entry::Vacant(v) => {
                    created.push(name.clone());
                    v.insert(Topic {
                        members: Vec::new(),
                        seen: None,
                        since: c.head,
                    })
                }
            };
            topic.members.push(id);
            Track {
                topic: name.clone(),
                last: resume.and_then(|(_, at)| at),
                since: topic.seen.or(topic.since).unwrap_or_default(),
            }
        })
        .collect();
    let catch_up = resume.map(|(raw, at)| {
        Box::new(CatchUp {
            sent: Some(raw.to_string()),
            from_start: at.is_none(),
            ..CatchUp::default()
        })
    });
    c.members.insert(
        id,
        Member {
            stream: stream.clone(),
            tracks,
            catch_up,
        },
    );
    let (channels, backplane, runtime) = (c.channels.clone(), c.backplane.clone(), c.handle());
    drop(st);
    // Subscribed before history is read: what the read misses arrives live.
    if !created.is_empty() {
        reconcile(inner, &channels, backplane.as_ref(), &created);
    }
    if resume.is_some() {
        spawn_catch_up(inner, runtime, vec![id]);
    }
    Subscription {
        broker: Arc::downgrade(inner),
        id,
        topics: unique,
    }
}

/// A [`Subscription`]'s drop in cluster mode; `st` is `inner` locked.
pub(crate) fn unsubscribe(
    inner: &Mutex<State>,
    mut st: MutexGuard<'_, State>,
    id: u64,
    topics: &[String],
) {
    st.subscribers -= 1;
    let c = st.cluster.as_deref_mut().expect("cluster mode");
    c.members.remove(&id);
    let mut emptied = Vec::new();
    for name in topics {
        if let Some(t) = c.topics.get_mut(name) {
            t.members.retain(|m| *m != id);
            if t.members.is_empty() {
                c.topics.remove(name);
                emptied.push(name.clone());
            }
        }
    }
    let (channels, backplane) = (c.channels.clone(), c.backplane.clone());
    drop(st);
    if !emptied.is_empty() {
        reconcile(inner, &channels, backplane.as_ref(), &emptied);
    }
}

/// Subscribes the channels of `names` that have local streams and
/// unsubscribes those that have none. Under `channels`, so that whichever
/// runs last leaves the backplane matching the topics.
fn reconcile(
    inner: &Mutex<State>,
    channels: &Mutex<HashSet<String>>,
    backplane: &dyn Backplane,
    names: &[String],
) {
    let mut subscribed = lock(channels);
    let wanted: Vec<bool> = {
        let st = lock(inner);
        let c = st.cluster.as_deref().expect("cluster mode");
        names.iter().map(|n| c.topics.contains_key(n)).collect()
    };
    for (name, want) in names.iter().zip(wanted) {
        if want && !subscribed.contains(name) {
            subscribed.insert(name.clone());
            backplane.subscribe(Channel::Topic(name.clone()));
        } else if !want && subscribed.remove(name) {
            backplane.unsubscribe(Channel::Topic(name.clone()));
        }
    }
}

/// The backplane's receiver.
pub(crate) fn receive(weak: &Weak<Mutex<State>>, incoming: Incoming) {
    let Some(inner) = weak.upgrade() else {
        return;
    };
    match incoming {
        Incoming::Message {
            channel: Channel::Topic(topic),
            position: Some(position),
            payload,
        } => {
            let mut st = lock(&inner);
            let Some(c) = st.cluster.as_deref_mut() else {
                return;
            };
            let at = c.pace.arrive(Instant::now());
            c.held.push((topic, position, payload));
            // Too many waiting: these and what waits go now, in order.
            let waits = match at.filter(|_| c.held.len() < FAN_OUT_EVENTS as usize) {
                Some(at) => c.hand_over_scheduled || schedule_hand_over(c, weak, at),
                None => false,
            };
            if !waits {
                hand_over(&mut st);
            }
        }
        Incoming::Message {
            channel: Channel::Topic(topic),
            position: None,
            ..
        } => {
            lock(&inner).stats.backplane_errors += 1;
            tracing::warn!(target: "sse", topic, "topic event without a position: dropped");
        }
        // Not a topic: not the broker's.
        Incoming::Message { .. } => {}
        Incoming::Resync => resync(&inner),
    }
}

/// Hands the received events that wait to the streams, in order.
pub(crate) fn hand_over(st: &mut State) {
    let Some(c) = st.cluster.as_deref_mut() else {
        return;
    };
    if c.held.is_empty() {
        return;
    }
    c.pace.handed_over(Instant::now());
    let mut held = std::mem::take(&mut c.held);
    for (topic, position, payload) in held.drain(..) {
        deliver(st, &topic, position, &payload);
    }
    if let Some(c) = st.cluster.as_deref_mut() {
        c.held = held; // keeps its allocation
    }
}

/// Has a task hand `held` over at `at`; false when there is no runtime to
/// run it on (the caller hands over now).
fn schedule_hand_over(c: &mut Cluster, weak: &Weak<Mutex<State>>, at: Instant) -> bool {
    let Some(rt) = c.handle() else {
        return false;
    };
    c.hand_over_scheduled = true;
    let guard = HandOverOnDrop(weak.clone());
    rt.spawn(async move {
        tokio::time::sleep_until(at).await;
        drop(guard);
    });
    true
}

/// Hands the held events over when dropped: after the task's wait, and
/// also if the task is dropped (runtime shutdown) or the wait panics (a
/// runtime without timers: then the node stops waiting for good), so
/// nothing received ever stays held.
struct HandOverOnDrop(Weak<Mutex<State>>);

impl Drop for HandOverOnDrop {
    fn drop(&mut self) {
        let Some(inner) = self.0.upgrade() else {
            return;
        };
        let mut st = lock(&inner);
        let Some(c) = st.cluster.as_deref_mut() else {
            return;
        };
        c.hand_over_scheduled = false;
        if std::thread::panicking() && !c.pace.window.is_zero() {
            c.pace = Pace::new(Duration::ZERO);
            tracing::warn!(target: "sse", "the runtime has no timer (enable_time): received events go to the streams as they come");
        }
        hand_over(&mut st);
    }
}

/// Queues a topic event from the backplane on the topic's streams.
fn deliver(st: &mut State, topic: &str, position: Position, payload: &Bytes) {
    let State { cluster, stats, .. } = st;
    let Some(c) = cluster.as_deref_mut() else {
        return;
    };
    c.head = c.head.max(Some(position));
    let Some(t) = c.topics.get_mut(topic) else {
        return;
    };
    if t.seen.is_some_and(|s| position <= s) {
        return; // already here: the backplane repeated it
    }
    t.seen = Some(position);
    let bytes = frame(position, payload);
    let mut gone = Vec::new();
    let before = stats.delivered;
    for id in &t.members {
        let Some(m) = c.members.get_mut(id) else {
            continue;
        };
        let Ok(i) = m.tracks.binary_search_by(|tr| tr.topic.as_str().cmp(topic)) else {
            continue;
        };
        if let Some(cu) = &mut m.catch_up {
            if cu.pending.len() < CATCH_UP_BUFFER {
                cu.pending.push((i, position, bytes.clone()));
            } else {
                m.stream.end();
                stats.slow_dropped += 1;
                gone.push(*id);
            }
            continue;
        }
        if m.tracks[i].last.is_some_and(|l| position <= l) {
            continue; // replayed from history already
        }
        match m.stream.try_send(&bytes) {
            Ok(()) => {
                stats.delivered += 1;
                m.tracks[i].last = Some(position);
            }
            Err(SseStreamError::Full) => {
                m.stream.end();
                stats.slow_dropped += 1;
                gone.push(*id);
            }
            Err(SseStreamError::Closed) => gone.push(*id),
        }
    }
    stats.delivered_bytes += (stats.delivered - before) * bytes.len() as u64;
    if !gone.is_empty() {
        t.members.retain(|m| !gone.contains(m));
    }
}

/// The backplane reconnected: every stream catches up from its positions.
fn resync(inner: &Arc<Mutex<State>>) {
    let mut st = lock(inner);
    // What the connection that went away brought goes first.
    hand_over(&mut st);
    st.stats.resyncs += 1;
    let c = st.cluster.as_deref_mut().expect("cluster mode");
    let mut ids = Vec::new();
    for (id, m) in &mut c.members {
        if m.stream.is_closed() {
            continue;
        }
        match &mut m.catch_up {
            Some(cu) => cu.again = true,
            None => {
                m.catch_up = Some(Box::default());
                ids.push(*id);
            }
        }
    }
    let runtime = c.handle();
    drop(st);
    tracing::warn!(target: "sse", streams = ids.len(), "backplane reconnected: streams catch up from history");
    spawn_catch_up(inner, runtime, ids);
}

/// Catches the streams `ids` up on `runtime` ([`Cluster::handle`]), or tells
/// them they missed some when there is none.
fn spawn_catch_up(inner: &Arc<Mutex<State>>, runtime: Option<Handle>, ids: Vec<u64>) {
    if ids.is_empty() {
        return;
    }
    match runtime {
        Some(rt) => {
            rt.spawn(catch_up(Arc::downgrade(inner), ids));
        }
        None => {
            // No runtime to read history on: tell the streams they missed some.
            let mut st = lock(inner);
            for id in ids {
                apply(&mut st, id, &[], &[]);
            }
        }
    }
}

/// Reads the history the streams `ids` missed, queues it with what arrived
/// live meanwhile, and lets them go live (again, after a Resync meanwhile).
async fn catch_up(weak: Weak<Mutex<State>>, mut ids: Vec<u64>) {
    while !ids.is_empty() {
        // Which (topic, start) each stream needs; streams that need the same share a read.
        let mut reads: Vec<(String, Position)> = Vec::new();
        let mut index: HashMap<(String, Position), usize> = HashMap::new();
        let mut plan: Vec<(u64, Vec<usize>)> = Vec::new();
        let backplane = {
            let Some(inner) = weak.upgrade() else {
                return;
            };
            let st = lock(&inner);
            let c = st.cluster.as_deref().expect("cluster mode");
            for id in &ids {
                let Some(m) = c.members.get(id) else {
                    continue;
                };
                let Some(cu) = &m.catch_up else {
                    continue;
                };
                let slots = m
                    .tracks
                    .iter()
                    .map(|t| {
                        let start = if cu.from_start {
                            Position::default()
                        } else {
                            t.last.unwrap_or(t.since)
                        };
                        *index.entry((t.topic.clone(), start)).or_insert_with(|| {
                            reads.push((t.topic.clone(), start));
                            reads.len() - 1
                        })
                    })
                    .collect();
                plan.push((*id, slots));
            }
            c.backplane.clone()
        };
        // The topics' subscriptions must be in effect before their history
        // is read, or what is appended between the read and the subscription
        // would reach neither. Not applied (disconnected): they will be at
        // reconnection, followed by a Resync that catches up again.
        if let Err(e) = backplane.subscriptions_applied().await {
            tracing::debug!(target: "sse", error = %e, "subscriptions not confirmed before a history read");
        }
        let mut results: Vec<Option<Result<History, BackplaneError>>> = Vec::new();
        results.resize_with(reads.len(), || None);
        let pending: Vec<_> = reads
            .iter()
            .enumerate()
            .map(|(i, (topic, start))| {
                let read = backplane.history(topic, *start);
                async move { (i, read.await) }
            })
            .collect();
        let mut done = futures_util::stream::iter(pending).buffer_unordered(READS_IN_FLIGHT);
        while let Some((i, got)) = done.next().await {
            if let Err(e) = &got {
                let (topic, start) = &reads[i];
                tracing::warn!(target: "sse", topic, after = %start, error = %e, "history read failed: its streams get a reset event");
            }
            results[i] = Some(got);
        }
        drop(done);
        let Some(inner) = weak.upgrade() else {
            return;
        };
        let mut st = lock(&inner);
        st.stats.backplane_errors +=
            results.iter().filter(|r| matches!(r, Some(Err(_)))).count() as u64;
        ids = plan
            .into_iter()
            .filter(|(id, slots)| apply(&mut st, *id, slots, &results))
            .map(|(id, _)| id)
            .collect();
    }
}

/// Queues on stream `id` what its history reads (`results[slots[track]]`)
/// hold after its positions, with a reset event first on a gap or a failed
/// read, then (unless a Resync came meanwhile) its pending live events, and
/// lets it go live. Returns whether it must read again.
fn apply(
    st: &mut State,
    id: u64,
    slots: &[usize],
    results: &[Option<Result<History, BackplaneError>>],
) -> bool {
    let State { cluster, stats, .. } = st;
    let Some(m) = cluster.as_deref_mut().and_then(|c| c.members.get_mut(&id)) else {
        return false;
    };
    let Some(mut cu) = m.catch_up.take() else {
        return false;
    };
    let mut gap = cu.from_start;
    let mut oldest: Option<Position> = None;
    let mut events: Vec<(Position, usize, &Bytes)> = Vec::new();
    for (i, track) in m.tracks.iter().enumerate() {
        match slots
            .get(i)
            .and_then(|&s| results.get(s))
            .and_then(Option::as_ref)
        {
            Some(Ok(h)) => {
                gap |= h.gap;
                if let Some(o) = h.oldest {
                    oldest = Some(oldest.map_or(o, |x| x.min(o)));
                }
                events.extend(
                    h.events
                        .iter()
                        .filter(|(p, _)| track.last.is_none_or(|l| *p > l))
                        .map(|(p, b)| (*p, i, b)),
                );
            }
            _ => gap = true,
        }
    }
    events.sort_by_key(|(p, _, _)| *p);
    let mut batch = Vec::new();
    if gap {
        let reported = cu.sent.take().unwrap_or_else(|| {
            m.tracks
                .iter()
                .filter_map(|t| t.last)
                .max()
                .map(|p| p.to_string())
                .unwrap_or_default()
        });
        reset_event(&reported, oldest.map(|o| o.to_string()), &mut batch);
        stats.resets += 1;
    }
    let replayed = events.len() as u64;
    for (p, i, b) in events {
        write_frame(&mut batch, p, b);
        m.tracks[i].last = Some(p);
    }
    cu.sent = None;
    cu.from_start = false;
    let again = cu.again;
    let mut flushed = 0;
    if again {
        cu.again = false;
        m.catch_up = Some(cu);
    } else {
        for (i, p, b) in cu.pending {
            if m.tracks[i].last.is_none_or(|l| p > l) {
                batch.extend_from_slice(&b);
                m.tracks[i].last = Some(p);
                flushed += 1;
            }
        }
    }
    if !batch.is_empty() {
        let len = batch.len() as u64;
        match m.stream.try_send(&Bytes::from(batch)) {
            Ok(()) => {
                stats.delivered += replayed + flushed;
                stats.replayed += replayed;
                stats.delivered_bytes += len;
            }
            Err(SseStreamError::Full) => {
                m.stream.end();
                stats.slow_dropped += 1;
            }
            Err(SseStreamError::Closed) => {}
        }
    }
    again
}

/// The event as a stream carries it: `id: <position>` in front of the
/// encoded fields the publishing node appended.
fn frame(position: Position, payload: &[u8]) -> Bytes {
    let mut b = Vec::with_capacity(payload.len() + 48);
    write_frame(&mut b, position, payload);
    Bytes::from(b)
}

fn write_frame(out: &mut Vec<u8>, position: Position, payload: &[u8]) {
    // Writing to a Vec cannot fail.
    let _ = writeln!(out, "id: {position}");
    if payload.is_empty() {
        out.push(b'\n'); // an event with no field: the id alone
    } else {
        out.extend_from_slice(payload);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn pace_hands_slow_arrivals_over_at_once_and_fast_ones_once_per_window() {
        let t0 = Instant::now();
        let mut p = Pace::new(MS);
        // One per two windows or slower: at once.
        for i in 0..20 {
            let now = t0 + MS * 2 * i;
            assert_eq!(p.arrive(now), None, "arrival {i}");
            p.handed_over(now);
        }
        // Faster: at once until the mean gap is under two windows, then one
        // window after the last hand-over.
        let t1 = t0 + MS * 40;
        let mut first_held = None;
        for i in 0..20u32 {
            let now = t1 + Duration::from_micros(10) * i;
            match p.arrive(now) {
                None => {
                    assert!(first_held.is_none(), "once held, held until the hand-over");
                    p.handed_over(now);
                }
                Some(at) => {
                    first_held.get_or_insert(i);
                    assert!(at > now && at <= now + MS, "{at:?}");
                }
            }
        }
        let held_from = first_held.expect("fast arrivals are held");
        assert!(held_from <= 8, "held from arrival {held_from}");
        // Past the window after the hand-over: at once (the caller hands
        // over what waits with it).
        let late = t1 + MS * 2;
        p.handed_over(t1 + MS);
        assert_eq!(p.arrive(late), None);
        p.handed_over(late);
        assert!(p.arrive(late + Duration::from_micros(10)).is_some());
        // A quiet while brings the mean gap back over two windows.
        assert_eq!(p.arrive(late + MS * 100), None);
    }

    #[test]
    fn a_window_past_the_longest_is_the_longest() {
        let t0 = Instant::now();
        let mut p = Pace::new(Duration::MAX);
        assert_eq!(p.window, Pace::MAX_WINDOW);
        p.handed_over(t0);
        for _ in 0..10 {
            assert!(p.arrive(t0).is_none_or(|at| at <= t0 + Pace::MAX_WINDOW));
        }
    }

    #[test]
    fn pace_with_no_window_never_holds() {
        let t0 = Instant::now();
        let mut p = Pace::new(Duration::ZERO);
        for _ in 0..100 {
            assert_eq!(p.arrive(t0), None);
            p.handed_over(t0);
        }
    }
}
