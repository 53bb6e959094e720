//! Serves a Server-Sent Events stream of a broker's topics, with keep-alive, Last-Event-ID resume, a topic guard and a bounded queue per client.
//!
//! `GET` with `?topic=a&topic=b` (repeatable; [`SseConfig::default_topics`]
//! without any) answers `200` with `Content-Type: text/event-stream`,
//! `Cache-Control: no-cache` and `X-Accel-Buffering: no` (so nginx does not
//! buffer), then at once a comment (`: ok`, with `retry:` when configured),
//! then what the client missed, then live events, with a keep-alive comment
//! every [`SseConfig::keepalive`].
//!
//! - **Who sees what.** [`SseConfig::guard`] receives the request and the
//!   topics it asked for and returns the topics it may see, or a response
//!   refusing it (401, 403, ...). Resume replays only those topics.
//! - **Resume.** The `Last-Event-ID` header (what browsers send when they
//!   reconnect), or `?lastEventId=` on a first connection (as Mercure
//!   allows); the header wins when both are sent. See `sse_broker` for
//!   exactly what is replayed and the `sse-reset` event sent when the id is
//!   too old. An empty value is no id (as in the WHATWG spec, where an empty
//!   last event ID means none). With a clustered broker
//!   (`SseBroker::clustered`) the same handler serves one node of several:
//!   ids are the backplane's positions and a client resumes on any node from
//!   the backplane's history (read by the broker while live events wait).
//! - **Client input is checked** with `name_validate` before anything is
//!   subscribed, and refused with `400` and a one-line text reason: more than
//!   [`SseConfig::max_topics`] topics (default [`MAX_TOPICS_PER_STREAM`]), a
//!   topic that is empty, longer than 128 bytes or holds a control character,
//!   a Last-Event-ID longer than 64 bytes or not printable ASCII.
//! - **Slow clients.** Each stream queues at most [`SseConfig::queue`]
//!   messages; when full, the broker ends the stream and the client resumes.
//!   Publishing never waits for a client.
//! - **Keep-alive.** One ticker per handler (`sse_keepalive`), not a timer
//!   per stream: every [`SseConfig::keepalive`] it queues `: keepalive` on
//!   each stream silent since the previous tick (so at least one interval
//!   after the last output, at most two).
//! - **Ending.** The stream ends when the client goes away (the subscription
//!   goes with it; the ticker lets go of it at its next tick), when it falls
//!   behind, or when the server shuts down (the request's `Shutdown` signal,
//!   from `http_serve` or an axum `Extension`): the ticker waits on it once
//!   for all the handler's streams and ends them.
//! - **Tracing** (target `sse`, `DEBUG`): `stream opened` with the fields
//!   `topics`, `resumed` and `last_event_id`, and `stream closed` with
//!   `topics`, `resumed` and `open_ms` when the body goes. Counters of
//!   resumes, replays and gaps are the broker's (`BrokerStats`).
//!
//! The handler is a plain [`Handler`], so it is also a tower service: mount it
//! in axum with `Router::route_service("/events", sse_handler(broker, config))`.
//!
//! # What an idle stream holds
//!
//! Encoded once: an event is encoded once by the broker and queued on every
//! stream (copied into the stream's buffer when at most 1 KiB, else the same
//! `Bytes`); the first comment (`: ok`, with `retry:`) once per handler; the
//! keep-alive comment once per process. Per idle stream, in bytes asked of
//! the allocator, measured with heaptrack at 5,000 idle streams of
//! `rt-server` (plain TCP, one topic):
//!
//! | part | what | bytes |
//! |---|---|---:|
//! | `http_serve` | the connection's task, the socket's registration with tokio, the drain's `JoinSet` entry | 568 |
//! | `sse_stream` | the shared state: lock, counters, the body's waker; no buffer while idle | 104 |
//! | `sse_stream` | the response body (boxed by `http_types::boxed`) | 24 |
//! | `sse_broker` | the [`Subscription`](sse_broker::Subscription) (the body's guard, boxed), its topic list and name | 40 + 24 + 3 |
//! | `sse_broker` | the stream's entry in its topic (16, in a growing `Vec`) | about 26 |
//! | `sse_keepalive` | the ticker's entry: a weak handle and the shutdown signal (16, in a growing `Vec`) | about 26 |
//!
//! About 815 bytes; `sse-bench` measures 0.98 KiB of RSS per idle stream at
//! 5,000, the rest being the allocator's (chunk headers, and the two
//! 128-byte-aligned tokio allocations); 1.23 KiB when `rt-server` accepted
//! on `block_on`'s thread and served on a worker (two malloc arenas). Before,
//! a stream held about 1,970 bytes (2.38 KiB of RSS): a 640-byte task and a
//! 408-byte boxed write future in `http_serve`, a keep-alive timer (112) and
//! a shutdown waiter (72) of its own, each boxed, and the queue's buffer
//! (128) kept after the first event. The kernel's socket buffers are not in
//! these figures.
//!
//! # Example
//!
//! ```
//! use sse_broker::{BrokerConfig, SseBroker};
//! use sse_handler::{sse_handler, SseConfig};
//! use http_types::Route;
//!
//! let broker = SseBroker::new(BrokerConfig::default());
//! let events = sse_handler(broker.clone(), SseConfig::default());
//! let route = Route::get("/events", events);
//! // elsewhere: broker.publish("hub", sse_event::SseEvent::data("hi"))
//! # let _ = route;
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Method, StatusCode};
use http_types::{Handler, LongLived, Request, Response, Shutdown, boxed, query_values, text};
pub use name_validate::MAX_TOPICS_PER_STREAM;
use name_validate::{NameKind, name_validate, name_validate_bytes};
use sse_broker::SseBroker;
use sse_encode::sse_encode;
use sse_event::SseEvent;
use sse_keepalive::{KeepAlive, sse_keepalive};
use sse_stream::sse_stream;

/// Decides which topics a request may see: the allowed subset of what it
/// asked for, or the response that refuses it.
pub type TopicGuard =
    Arc<dyn Fn(&Request, Vec<String>) -> Result<Vec<String>, Response> + Send + Sync>;

/// Settings of the handler; every field has a default.
#[derive(Clone)]
pub struct SseConfig {
    /// Query parameter naming a topic (repeatable). Default: `topic`.
    pub topic_param: String,
    /// Topics when the request names none. Default: `["hub"]`.
    pub default_topics: Vec<String>,
    /// Which topics a request may see. Default: none set, every topic asked for.
    pub guard: Option<TopicGuard>,
    /// Interval of the handler's keep-alive ticker: a stream silent for a
    /// whole interval gets `: keepalive` at the next tick. Default: 15 seconds.
    pub keepalive: Duration,
    /// Reconnection delay sent to the browser (`retry:`); `None` leaves the
    /// browser's default (about 3 s). Default: `None`.
    pub retry: Option<Duration>,
    /// Messages queued per client before it counts as slow. Default: 256.
    pub queue: usize,
    /// Most topics one request may name; more is a `400`.
    /// Default: [`MAX_TOPICS_PER_STREAM`] (16).
    pub max_topics: usize,
}

impl Default for SseConfig {
    fn default() -> Self {
        SseConfig {
            topic_param: "topic".into(),
            default_topics: vec!["hub".into()],
            guard: None,
            keepalive: Duration::from_secs(15),
            retry: None,
            queue: 256,
            max_topics: MAX_TOPICS_PER_STREAM,
        }
    }
}

impl fmt::Debug for SseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseConfig")
            .field("topic_param", &self.topic_param)
            .field("default_topics", &self.default_topics)
            .field("guard", &self.guard.as_ref().map(|_| "Fn"))
            .field("keepalive", &self.keepalive)
            .field("retry", &self.retry)
            .field("queue", &self.queue)
            .field("max_topics", &self.max_topics)
            .finish()
    }
}

/// The SSE handler for `broker`.
pub fn sse_handler(broker: SseBroker, config: SseConfig) -> Handler {
    let keepalive = sse_keepalive(config.keepalive);
    let mut hello = SseEvent::comment("ok");
    hello.retry = config.retry;
    let mut buf = Vec::new();
    // A comment and a number: always encodes.
    let _ = sse_encode(&hello, &mut buf);
    let shared = Arc::new(Shared {
        broker,
        config,
        keepalive,
        hello: buf.into(),
    });
    Handler::new(move |req: Request| {
        let res = stream(&shared, &req);
        async move { res }
    })
}

/// What every stream of a handler shares: the first comment is encoded
/// once, and one keep-alive ticker serves them all.
struct Shared {
    broker: SseBroker,
    config: SseConfig,
    keepalive: KeepAlive,
    hello: http_types::Bytes,
}

fn stream(shared: &Shared, req: &Request) -> Response {
    let (broker, config) = (&shared.broker, &shared.config);
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut res = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET for an event stream\n",
        );
        res.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return res;
    }
    let query = req.uri().query().unwrap_or("");
    let mut topics: Vec<String> = query_values(query, &config.topic_param)
        .take(config.max_topics.saturating_add(1))
        .collect();
    if topics.len() > config.max_topics {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "too many ?{}= topics: at most {} per stream\n",
                config.topic_param, config.max_topics
            ),
        );
    }
    for t in &topics {
        if let Err(e) = name_validate(NameKind::Topic, t) {
            return text(
                StatusCode::BAD_REQUEST,
                format!("invalid ?{}= value: {e}\n", config.topic_param),
            );
        }
    }
    let last_event_id = match last_event_id(req, query) {
        Ok(id) => id,
        Err(why) => return text(StatusCode::BAD_REQUEST, format!("{why}\n")),
    };
    if topics.is_empty() {
        topics.clone_from(&config.default_topics);
    }
    topics.sort();
    topics.dedup();
    if let Some(guard) = &config.guard {
        topics = match guard(req, topics) {
            Ok(t) => t,
            Err(refused) => return refused,
        };
    }
    let (tx, body) = sse_stream(config.queue);
    // A fresh queue has room: this cannot fail.
    let _ = tx.try_send(&shared.hello);
    let subscription = broker.subscribe(&topics, last_event_id.as_deref(), &tx);
    // Keep-alive comments, and the end when the server shuts down.
    shared.keepalive.watch(&tx, &Shutdown::from_request(req));
    drop(tx); // the broker holds the sender now
    let resumed = last_event_id.is_some();
    tracing::debug!(target: "sse", topics = ?topics, resumed, last_event_id, "stream opened");
    // The close event's fields live as long as the stream: kept only when
    // the event is enabled, so an idle stream costs nothing more otherwise.
    let body = if tracing::enabled!(target: "sse", tracing::Level::DEBUG) {
        let closing = Closing {
            topics,
            resumed,
            opened: Instant::now(),
        };
        body.with_guard((subscription, closing))
    } else {
        body.with_guard(subscription)
    };

    let mut res = Response::new(boxed(body));
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    // `http_serve` writes the stream straight to the socket (no hyper buffers).
    res.extensions_mut().insert(LongLived);
    res
}

/// Emits the close event of a stream when its body is dropped (the client
/// went away, fell behind, or the server shut down).
struct Closing {
    topics: Vec<String>,
    resumed: bool,
    opened: Instant,
}

impl Drop for Closing {
    fn drop(&mut self) {
        let open_ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::debug!(target: "sse", topics = ?self.topics, resumed = self.resumed, open_ms, "stream closed");
    }
}

/// The id a resuming client sent: the `Last-Event-ID` header, else the first
/// `?lastEventId=` of `query`; `None` when neither is sent or the value is
/// empty. A value that is not a valid [`NameKind::LastEventId`] is an error
/// naming where it came from and what is wrong.
fn last_event_id(req: &Request, query: &str) -> Result<Option<String>, String> {
    if let Some(v) = req.headers().get("last-event-id") {
        if v.is_empty() {
            return Ok(None);
        }
        return match name_validate_bytes(NameKind::LastEventId, v.as_bytes()) {
            Ok(id) => Ok(Some(id.to_string())),
            Err(e) => Err(format!("invalid Last-Event-ID header: {e}")),
        };
    }
    match query_values(query, "lastEventId").next() {
        None => Ok(None),
        Some(id) if id.is_empty() => Ok(None),
        Some(id) => match name_validate(NameKind::LastEventId, &id) {
            Ok(()) => Ok(Some(id)),
            Err(e) => Err(format!("invalid ?lastEventId= value: {e}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use http_types::empty;
    use sse_broker::BrokerConfig;

    fn get(uri: &str, headers: &[(&str, &str)]) -> Request {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(empty()).unwrap()
    }

    async fn next_frame(res: &mut Response) -> String {
        let f = res
            .body_mut()
            .frame()
            .await
            .unwrap()
            .unwrap()
            .into_data()
            .unwrap();
        String::from_utf8(f.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn headers_the_first_comment_then_events() {
        let broker = SseBroker::new(BrokerConfig::default());
        let config = SseConfig {
            retry: Some(Duration::from_millis(1500)),
            ..SseConfig::default()
        };
        let h = sse_handler(broker.clone(), config);
        let mut res = h.call(get("/events", &[])).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        assert_eq!(res.headers()["cache-control"], "no-cache");
        assert_eq!(res.headers()["x-accel-buffering"], "no");
        assert_eq!(next_frame(&mut res).await, ": ok\nretry: 1500\n\n");
        broker.publish("hub", SseEvent::data("hi")).unwrap();
        assert_eq!(next_frame(&mut res).await, "id: 1\ndata: hi\n\n");
    }

    #[tokio::test]
    async fn resume_from_the_last_event_id_header_or_the_query() {
        let broker = SseBroker::new(BrokerConfig::default());
        for i in 1..=3 {
            broker
                .publish("hub", SseEvent::data(format!("e{i}")))
                .unwrap();
        }
        let h = sse_handler(broker.clone(), SseConfig::default());
        for req in [
            get("/events", &[("last-event-id", "1")]),
            get("/events?lastEventId=1", &[]),
        ] {
            let mut res = h.call(req).await;
            let mut got = String::new();
            while !got.ends_with("data: e3\n\n") {
                got.push_str(&next_frame(&mut res).await);
            }
            assert_eq!(got, ": ok\n\nid: 2\ndata: e2\n\nid: 3\ndata: e3\n\n");
        }
    }

    #[tokio::test]
    #[allow(clippy::result_large_err)] // a refusal is a whole Response, by design
    async fn the_guard_narrows_topics_or_refuses() {
        let broker = SseBroker::new(BrokerConfig::default());
        broker.publish("public", SseEvent::data("p")).unwrap();
        broker.publish("private", SseEvent::data("s")).unwrap();
        let guard: TopicGuard = Arc::new(|req: &Request, topics: Vec<String>| {
            if req.headers().contains_key("x-banned") {
                return Err(text(StatusCode::FORBIDDEN, "no\n"));
            }
            Ok(topics
                .into_iter()
                .filter(|t| t.starts_with("public"))
                .collect())
        });
        let h = sse_handler(
            broker.clone(),
            SseConfig {
                guard: Some(guard),
                ..SseConfig::default()
            },
        );
        let refused = h.call(get("/events", &[("x-banned", "1")])).await;
        assert_eq!(refused.status(), 403);
        let mut res = h
            .call(get(
                "/events?topic=public&topic=private",
                &[("last-event-id", "0")],
            ))
            .await;
        let mut got = String::new();
        while !got.contains("data: p") {
            got.push_str(&next_frame(&mut res).await);
        }
        assert!(
            !got.contains("data: s"),
            "replay never crosses the guard: {got}"
        );
        broker.publish("private", SseEvent::data("s2")).unwrap();
        broker.publish("public", SseEvent::data("p2")).unwrap();
        assert_eq!(next_frame(&mut res).await, "id: 4\ndata: p2\n\n");
    }

    #[tokio::test]
    async fn too_many_topics_and_a_wrong_method_are_refused() {
        let broker = SseBroker::new(BrokerConfig::default());
        let h = sse_handler(
            broker,
            SseConfig {
                max_topics: 2,
                ..SseConfig::default()
            },
        );
        let res = h.call(get("/e?topic=a&topic=b&topic=c", &[])).await;
        assert_eq!(res.status(), 400);
        let post = http::Request::builder()
            .method("POST")
            .uri("/e")
            .body(empty())
            .unwrap();
        let res = h.call(post).await;
        assert_eq!(res.status(), 405);
        assert_eq!(res.headers()["allow"], "GET, HEAD");
    }

    async fn body_text(res: Response) -> String {
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn invalid_or_too_many_topics_are_refused_with_a_reason() {
        let broker = SseBroker::new(BrokerConfig::default());
        let h = sse_handler(broker.clone(), SseConfig::default());
        let long = "t".repeat(129);
        for (uri, why) in [
            (
                "/e?topic=".to_string(),
                "invalid ?topic= value: topic name is empty\n",
            ),
            (
                "/e?topic=a%0Ab".to_string(),
                "invalid ?topic= value: topic name has a control character at byte 1\n",
            ),
            (
                format!("/e?topic=ok&topic={long}"),
                "invalid ?topic= value: topic name is 129 bytes, at most 128\n",
            ),
        ] {
            let res = h.call(get(&uri, &[])).await;
            assert_eq!(res.status(), 400, "{uri}");
            assert_eq!(body_text(res).await, why, "{uri}");
        }
        let topics = |n: usize| {
            let q: Vec<String> = (0..n).map(|i| format!("topic=t{i}")).collect();
            format!("/e?{}", q.join("&"))
        };
        assert_eq!(SseConfig::default().max_topics, MAX_TOPICS_PER_STREAM);
        let res = h.call(get(&topics(MAX_TOPICS_PER_STREAM + 1), &[])).await;
        assert_eq!(res.status(), 400);
        assert_eq!(
            body_text(res).await,
            "too many ?topic= topics: at most 16 per stream\n"
        );
        let res = h.call(get(&topics(MAX_TOPICS_PER_STREAM), &[])).await;
        assert_eq!(res.status(), 200);
        assert_eq!(broker.stats().subscribers, 1);
        let ok = h
            .call(get(&format!("/e?topic={}", "t".repeat(128)), &[]))
            .await;
        assert_eq!(ok.status(), 200);
    }

    #[tokio::test]
    async fn invalid_last_event_ids_are_refused_with_a_reason() {
        let broker = SseBroker::new(BrokerConfig::default());
        let h = sse_handler(broker.clone(), SseConfig::default());
        let long = "1".repeat(65);
        let mut obs_text = get("/e", &[]);
        obs_text
            .headers_mut()
            .insert("last-event-id", HeaderValue::from_bytes(b"12\xe9").unwrap());
        for (req, why) in [
            (
                get("/e", &[("last-event-id", &long)]),
                "invalid Last-Event-ID header: Last-Event-ID is 65 bytes, at most 64\n",
            ),
            (
                get("/e", &[("last-event-id", "1\t2")]),
                "invalid Last-Event-ID header: Last-Event-ID has a control character at byte 1\n",
            ),
            (
                obs_text,
                "invalid Last-Event-ID header: Last-Event-ID has a character outside printable ASCII at byte 2\n",
            ),
            (
                get("/e?lastEventId=%C3%A9", &[]),
                "invalid ?lastEventId= value: Last-Event-ID has a character outside printable ASCII at byte 0\n",
            ),
            (
                get("/e?lastEventId=1%0D%0Adata:%20x", &[]),
                "invalid ?lastEventId= value: Last-Event-ID has a control character at byte 1\n",
            ),
        ] {
            let res = h.call(req).await;
            assert_eq!(res.status(), 400, "{why}");
            assert_eq!(body_text(res).await, why);
        }
        assert_eq!(broker.stats().subscribers, 0, "nothing was subscribed");
    }

    #[tokio::test]
    async fn an_empty_last_event_id_is_no_id() {
        let broker = SseBroker::new(BrokerConfig::default());
        broker.publish("hub", SseEvent::data("old")).unwrap();
        let h = sse_handler(broker.clone(), SseConfig::default());
        for req in [
            get("/e", &[("last-event-id", "")]),
            get("/e?lastEventId=", &[]),
        ] {
            let mut res = h.call(req).await;
            assert_eq!(res.status(), 200);
            assert_eq!(next_frame(&mut res).await, ": ok\n\n");
            broker.publish("hub", SseEvent::data("new")).unwrap();
            // No replay and no reset: the next frame is the live event.
            assert!(next_frame(&mut res).await.ends_with("data: new\n\n"));
        }
        assert_eq!(broker.stats().resets, 0);
    }

    /// What the rules say about a Last-Event-ID, written out independently:
    /// 1 to 64 bytes of printable ASCII (space to `~`).
    fn valid_id(bytes: &[u8]) -> bool {
        (1..=64).contains(&bytes.len()) && bytes.iter().all(|b| (0x20..0x7f).contains(b))
    }

    #[test]
    fn arbitrary_last_event_ids_never_panic_and_only_valid_ones_are_used() {
        use proptest::prelude::*;
        // Every byte a header value may hold (tab, visible ASCII, obs-text),
        // mostly visible ASCII so that valid ids come up often.
        let header_byte = prop_oneof![8 => 0x20u8..0x7f, 1 => Just(b'\t'), 1 => 0x80u8..=0xff];
        let header = prop::collection::vec(header_byte, 0..80);
        let query = prop_oneof!["[ -~]{0,80}", "(?s).{0,80}"];
        let broker = SseBroker::new(BrokerConfig::default());
        broker.publish("hub", SseEvent::data("e1")).unwrap();
        let shared = Shared {
            broker: broker.clone(),
            config: SseConfig::default(),
            keepalive: sse_keepalive(Duration::from_secs(15)),
            hello: http_types::Bytes::from_static(b": ok\n\n"),
        };
        proptest!(ProptestConfig::with_cases(512), |(h in header, q in query, use_header in any::<bool>())| {
            // The query value percent-encoded byte by byte: it decodes to `q` exactly.
            let encoded: String = q.bytes().map(|b| format!("%{b:02X}")).collect();
            let mut req = get(&format!("/events?lastEventId={encoded}"), &[]);
            if use_header {
                req.headers_mut()
                    .insert("last-event-id", HeaderValue::from_bytes(&h).expect("header bytes"));
            }
            let query = req.uri().query().unwrap_or("").to_string();
            let got = last_event_id(&req, &query);
            let sent: &[u8] = if use_header { &h } else { q.as_bytes() };
            match &got {
                Ok(None) => prop_assert!(sent.is_empty()),
                Ok(Some(id)) => {
                    prop_assert!(valid_id(sent), "{:?}", sent);
                    prop_assert_eq!(id.as_bytes(), sent);
                }
                Err(why) => {
                    prop_assert!(!valid_id(sent) && !sent.is_empty(), "{:?}", sent);
                    let from = if use_header { "invalid Last-Event-ID header: " } else { "invalid ?lastEventId= value: " };
                    prop_assert!(why.starts_with(from), "{}", why);
                }
            }
            // The handler agrees: a refused id is a 400 and subscribes nothing.
            let res = stream(&shared, &req);
            prop_assert_eq!(res.status() == StatusCode::BAD_REQUEST, got.is_err());
            prop_assert_eq!(broker.stats().subscribers, usize::from(got.is_ok()));
            drop(res);
            prop_assert_eq!(broker.stats().subscribers, 0);
        });
    }

    #[tokio::test]
    async fn dropping_the_response_unsubscribes() {
        let broker = SseBroker::new(BrokerConfig::default());
        let h = sse_handler(broker.clone(), SseConfig::default());
        let res = h.call(get("/events", &[])).await;
        assert_eq!(broker.stats().subscribers, 1);
        drop(res);
        assert_eq!(broker.stats().subscribers, 0);
    }

    #[tokio::test]
    async fn a_clustered_broker_streams_and_resumes_across_nodes() {
        use backplane_memory::{MemoryBus, MemoryConfig};
        let bus = MemoryBus::new(MemoryConfig::default());
        let a = SseBroker::clustered(BrokerConfig::default(), Arc::new(bus.node()));
        let b = SseBroker::clustered(BrokerConfig::default(), Arc::new(bus.node()));
        let (on_a, on_b) = (
            sse_handler(a.clone(), SseConfig::default()),
            sse_handler(b.clone(), SseConfig::default()),
        );
        let mut res = on_a.call(get("/events", &[])).await;
        assert_eq!(next_frame(&mut res).await, ": ok\n\n");
        let mut ids = Vec::new();
        for i in 1..=3 {
            let id = b
                .publish_async("hub", SseEvent::data(format!("e{i}")))
                .await
                .unwrap();
            ids.push(id);
        }
        let mut got = String::new();
        while !got.ends_with("data: e3\n\n") {
            got.push_str(&next_frame(&mut res).await);
        }
        let want: String = ids
            .iter()
            .enumerate()
            .map(|(i, id)| format!("id: {id}\ndata: e{}\n\n", i + 1))
            .collect();
        assert_eq!(got, want);
        drop(res);
        // The client reconnects to the other node with the first id.
        let mut res = on_b
            .call(get("/events", &[("last-event-id", &ids[0])]))
            .await;
        let mut got = String::new();
        while !got.ends_with("data: e3\n\n") {
            got.push_str(&next_frame(&mut res).await);
        }
        assert_eq!(
            got,
            format!(
                ": ok\n\nid: {}\ndata: e2\n\nid: {}\ndata: e3\n\n",
                ids[1], ids[2]
            )
        );
        let st = b.stats();
        assert_eq!((st.resumes, st.replayed, st.resets), (1, 2, 0));
    }

    #[tokio::test]
    async fn server_shutdown_ends_the_stream() {
        let broker = SseBroker::new(BrokerConfig::default());
        let h = sse_handler(broker.clone(), SseConfig::default());
        let signal = Shutdown::new();
        let mut req = get("/events", &[]);
        req.extensions_mut().insert(signal.clone());
        let mut res = h.call(req).await;
        assert_eq!(next_frame(&mut res).await, ": ok\n\n");
        signal.trigger();
        assert!(res.body_mut().frame().await.is_none());
    }
}

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../sse_handler.md")]
pub struct RegistryExamples;
