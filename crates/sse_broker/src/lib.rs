//! Publishes SSE events to every subscriber of a topic, with ids and a bounded replay buffer per topic for Last-Event-ID resume.
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
//! - Each topic keeps its last [`BrokerConfig::replay`] events.
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
//! subscribers nor buffered events, so topic names from requests cannot grow
//! memory without bound beyond the replay buffers of published topics.
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

use std::collections::HashMap;
use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use bytes::Bytes;
use name_validate::{NameError, NameKind, name_validate};
use sse_encode::{SseEncodeError, sse_encode};
use sse_event::SseEvent;
use sse_stream::{SseSender, SseStreamError};

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
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig { replay: 1024 }
    }
}

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
}

/// The publish/subscribe hub of SSE streams; clones share it.
#[derive(Clone)]
pub struct SseBroker {
    inner: Arc<Mutex<State>>,
}

struct Topic {
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
    subscribers: usize,
    stats: BrokerStats,
}

impl SseBroker {
    /// A broker with no topics.
    pub fn new(config: BrokerConfig) -> Self {
        SseBroker {
            inner: Arc::new(Mutex::new(State {
                config,
                last_id: 0,
                next_sub: 0,
                topics: HashMap::new(),
                subscribers: 0,
                stats: BrokerStats::default(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes `event` on `topic`: sets its id to the next one, buffers it
    /// and queues it on every subscriber. Returns the id.
    ///
    /// An invalid topic or event name (`name_validate`), or an event that
    /// cannot be encoded, is an error and takes no id.
    pub fn publish(&self, topic: &str, mut event: SseEvent) -> Result<u64, PublishError> {
        name_validate(NameKind::Topic, topic).map_err(PublishError::Topic)?;
        if let Some(name) = &event.event {
            name_validate(NameKind::Event, name).map_err(PublishError::Event)?;
        }
        let mut st = self.lock();
        let id = st.last_id + 1;
        event.id = Some(id.to_string());
        let mut buf = Vec::with_capacity(event.data.as_ref().map_or(0, String::len) + 32);
        sse_encode(&event, &mut buf)?;
        let bytes = Bytes::from(buf);
        st.last_id = id;
        st.stats.published += 1;
        let replay = st.config.replay;
        let st = &mut *st;
        let t = st.topics.entry(topic.to_string()).or_insert_with(|| Topic {
            buffer: VecDeque::new(),
            evicted: 0,
            subs: Vec::new(),
        });
        if replay > 0 {
            if t.buffer.len() == replay
                && let Some((old, _)) = t.buffer.pop_front()
            {
                t.evicted = old;
            }
            t.buffer.push_back((id, bytes.clone()));
        } else {
            t.evicted = id;
        }
        let mut gone = Vec::new();
        let before = st.stats.delivered;
        for (sub, stream) in &t.subs {
            match stream.try_send(bytes.clone()) {
                Ok(()) => st.stats.delivered += 1,
                Err(SseStreamError::Full) => {
                    stream.end();
                    st.stats.slow_dropped += 1;
                    gone.push(*sub);
                }
                Err(SseStreamError::Closed) => gone.push(*sub),
            }
        }
        // Counted once per event, not per subscriber.
        st.stats.delivered_bytes += (st.stats.delivered - before) * bytes.len() as u64;
        if !gone.is_empty() {
            t.subs.retain(|(s, _)| !gone.contains(s));
        }
        Ok(id)
    }

    /// Subscribes `stream` to `topics`, first queuing what it missed after
    /// `last_event_id` (the `Last-Event-ID` header, if the client sent one).
    ///
    /// Keep the returned [`Subscription`] as long as the stream lives.
    pub fn subscribe(
        &self,
        topics: &[String],
        last_event_id: Option<&str>,
        stream: &SseSender,
    ) -> Subscription {
        let mut st = self.lock();
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
            let data = serde_json::to_string(&ResetData {
                last_event_id: sent,
                oldest_id: oldest.map(|o| o.to_string()).unwrap_or_default(),
            })
            .expect("strings always serialize");
            // The event name and data are ours and single-line: cannot fail.
            let _ = sse_encode(&SseEvent::data(data).event(RESET_EVENT), &mut first);
            st.stats.resets += 1;
        }
        for (_, b) in &replay {
            first.extend_from_slice(b);
        }
        if last_event_id.is_some() {
            st.stats.resumes += 1;
        }
        let first_len = first.len() as u64;
        if !first.is_empty() && stream.try_send(Bytes::from(first)).is_ok() {
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
                .or_insert_with(|| Topic {
                    buffer: VecDeque::new(),
                    evicted: 0,
                    subs: Vec::new(),
                })
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
        let st = self.lock();
        BrokerStats {
            subscribers: st.subscribers,
            topics: st.topics.len(),
            ..st.stats
        }
    }

    /// The id of the last published event (0 before the first).
    pub fn last_id(&self) -> u64 {
        self.lock().last_id
    }
}

impl fmt::Debug for SseBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseBroker")
            .field("stats", &self.stats())
            .finish()
    }
}

/// Why [`SseBroker::publish`] refused an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishError {
    /// The topic is not a valid [`NameKind::Topic`] name.
    Topic(NameError),
    /// The event's name (`event:`) is not a valid [`NameKind::Event`] name.
    Event(NameError),
    /// The event has a field that would break the stream.
    Encode(SseEncodeError),
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
        }
    }
}

impl std::error::Error for PublishError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PublishError::Topic(e) | PublishError::Event(e) => Some(e),
            PublishError::Encode(e) => Some(e),
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
        let mut st = inner.lock().unwrap_or_else(PoisonError::into_inner);
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
    async fn too_old_id_gets_a_reset_event_then_the_buffer() {
        let b = SseBroker::new(BrokerConfig { replay: 2 });
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
    async fn unknown_or_future_id_is_a_reset() {
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

    #[tokio::test]
    async fn up_to_date_id_replays_nothing() {
        let b = SseBroker::new(BrokerConfig::default());
        b.publish("a", ev(1)).unwrap();
        let (tx, body) = sse_stream(16);
        drop(b.subscribe(&topics(&["a"]), Some("1"), &tx));
        assert_eq!(drain(tx, body).await, "");
        let st = b.stats();
        assert_eq!((st.resumes, st.replayed, st.resets), (1, 0, 0));
    }

    #[tokio::test]
    async fn slow_subscriber_is_ended_and_others_keep_receiving() {
        let b = SseBroker::new(BrokerConfig::default());
        let (slow, _slow_body) = sse_stream(2);
        let (fast, fast_body) = sse_stream(64);
        let _s1 = b.subscribe(&topics(&["a"]), None, &slow);
        let s2 = b.subscribe(&topics(&["a"]), None, &fast);
        for i in 1..=10 {
            b.publish("a", ev(i)).unwrap();
        }
        assert!(slow.is_closed(), "the slow stream was ended");
        let st = b.stats();
        assert_eq!(st.slow_dropped, 1);
        assert_eq!(st.delivered, 2 + 10);
        let event_len = "id: 1\ndata: e1\n\n".len() as u64;
        assert_eq!(
            st.delivered_bytes,
            (2 + 9) * event_len + "id: 10\ndata: e10\n\n".len() as u64
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
    fn invalid_event_is_an_error_and_takes_no_id() {
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
}
