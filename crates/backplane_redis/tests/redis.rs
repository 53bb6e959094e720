//! The Redis backplane against a real `redis-server` (started per test on a
//! free port, no persistence, killed by its pid).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backplane::{Backplane, BackplaneError, Bytes, Channel, Incoming, Position, PresenceMember};
use backplane_redis::testing::RedisServer;
use backplane_redis::{RedisBackplane, RedisConfig};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

fn server() -> RedisServer {
    RedisServer::start().expect("redis-server starts (Debian package redis-server)")
}

fn config(server: &RedisServer) -> RedisConfig {
    let mut config = RedisConfig::new(server.url());
    config.reconnect_min = Duration::from_millis(20);
    config.reconnect_max = Duration::from_millis(200);
    config
}

async fn connect(config: RedisConfig) -> RedisBackplane {
    RedisBackplane::connect(config).await.expect("connects")
}

/// Everything the backplane hands over, in order.
fn inbox(bp: &RedisBackplane) -> UnboundedReceiver<Incoming> {
    let (tx, rx) = unbounded_channel();
    bp.set_receiver(Arc::new(move |incoming| {
        let _ = tx.send(incoming);
    }));
    rx
}

async fn next(rx: &mut UnboundedReceiver<Incoming>) -> Incoming {
    timeout(WAIT, rx.recv())
        .await
        .expect("a message within the wait")
        .expect("the receiver is alive")
}

fn message(channel: Channel, payload: &'static str) -> Incoming {
    Incoming::Message {
        channel,
        position: None,
        payload: Bytes::from_static(payload.as_bytes()),
    }
}

fn room(name: &str) -> Channel {
    Channel::Room(name.to_string())
}

fn raw(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

/// A node whose scripts are loaded, and a connection to count commands
/// with, its counters reset.
async fn counting(redis: &RedisServer) -> (RedisBackplane, redis::Connection) {
    let bp = connect(config(redis)).await;
    one(&bp, "warm", "loads the script").await;
    let mut raw = raw(redis);
    reset_stats(&mut raw);
    (bp, raw)
}

fn reset_stats(raw: &mut redis::Connection) {
    redis::cmd("CONFIG").arg("RESETSTAT").exec(raw).unwrap();
}

fn commandstats(raw: &mut redis::Connection) -> String {
    redis::cmd("INFO").arg("commandstats").query(raw).unwrap()
}

/// `calls` of one command in `INFO commandstats`.
fn calls(info: &str, command: &str) -> u64 {
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

/// Appends one event and returns its position.
async fn one(bp: &RedisBackplane, topic: &str, event: impl Into<Bytes>) -> Position {
    let p = bp.append(topic, vec![event.into()]).await.unwrap();
    assert_eq!(p.len(), 1);
    p[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_kept_keeps_each_rooms_last_messages_and_publishes_them_once() {
    let redis = server();
    let mut cfg = config(&redis);
    cfg.history_max_age = Some(Duration::from_secs(60));
    let (a, b) = (connect(cfg.clone()).await, connect(cfg).await);
    let mut in_a = inbox(&a);
    a.subscribe(room("x"));
    a.flush_subscriptions().await.unwrap();
    for m in ["m1", "m2", "m3", "m4"] {
        b.publish_kept(
            vec![room("x"), room("y")],
            vec!["x".into(), "y".into()],
            3,
            Bytes::from(m),
        )
        .await
        .unwrap();
        assert_eq!(next(&mut in_a).await, message(room("x"), m));
    }
    let kept = |v: &[&'static str]| {
        v.iter()
            .map(|s| Bytes::from_static(s.as_bytes()))
            .collect::<Vec<_>>()
    };
    assert_eq!(a.recent("x", 10).await.unwrap(), kept(&["m2", "m3", "m4"]));
    assert_eq!(a.recent("y", 2).await.unwrap(), kept(&["m3", "m4"]));
    assert!(a.recent("none", 10).await.unwrap().is_empty());
    assert!(a.recent("x", 0).await.unwrap().is_empty());
    // The lists expire with the history's maximum age.
    let ttl: i64 = redis::cmd("PTTL")
        .arg("rt:kept:x")
        .query(&mut raw(&redis))
        .unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "{ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reaches_the_subscribers_of_each_channel_only_and_unsubscribe_stops_it() {
    let redis = server();
    let (a, b, c) = (
        connect(config(&redis)).await,
        connect(config(&redis)).await,
        connect(config(&redis)).await,
    );
    let (mut in_a, mut in_b, mut in_c) = (inbox(&a), inbox(&b), inbox(&c));
    a.subscribe(room("x"));
    a.subscribe(Channel::All);
    b.subscribe(room("y"));
    b.subscribe(Channel::User("ana".into()));
    b.subscribe(Channel::All);
    c.subscribe(Channel::Node(c.node()));
    a.flush_subscriptions().await.unwrap();
    b.flush_subscriptions().await.unwrap();
    c.flush_subscriptions().await.unwrap();

    // One publish to several channels: each subscriber gets it once per
    // channel it subscribes to, none of the others.
    c.publish(
        vec![room("x"), room("y"), Channel::User("ana".into()), room("z")],
        Bytes::from_static(b"one"),
    )
    .await
    .unwrap();
    assert_eq!(next(&mut in_a).await, message(room("x"), "one"));
    assert_eq!(next(&mut in_b).await, message(room("y"), "one"));
    assert_eq!(
        next(&mut in_b).await,
        message(Channel::User("ana".into()), "one")
    );
    a.publish(vec![Channel::Node(c.node())], Bytes::from_static(b"to c"))
        .await
        .unwrap();
    assert_eq!(
        next(&mut in_c).await,
        message(Channel::Node(c.node()), "to c")
    );

    // Unsubscribed: the next publish on x reaches nobody; the sentinel on
    // `all` comes after it on the same connection, so nothing was skipped.
    a.unsubscribe(room("x"));
    a.flush_subscriptions().await.unwrap();
    c.publish(vec![room("x")], Bytes::from_static(b"gone"))
        .await
        .unwrap();
    c.publish(vec![Channel::All], Bytes::from_static(b"sentinel"))
        .await
        .unwrap();
    assert_eq!(next(&mut in_a).await, message(Channel::All, "sentinel"));
    assert_eq!(next(&mut in_b).await, message(Channel::All, "sentinel"));
    assert!(in_a.try_recv().is_err() && in_b.try_recv().is_err() && in_c.try_recv().is_err());

    // Subscribing twice is one subscription; nodes have distinct numbers.
    b.subscribe(room("y"));
    b.flush_subscriptions().await.unwrap();
    a.publish(vec![room("y"), room("y")], Bytes::from_static(b"once"))
        .await
        .unwrap();
    a.publish(vec![Channel::All], Bytes::from_static(b"end"))
        .await
        .unwrap();
    assert_eq!(next(&mut in_b).await, message(room("y"), "once"));
    assert_eq!(next(&mut in_b).await, message(Channel::All, "end"));
    let nodes: BTreeSet<u64> = [a.node(), b.node(), c.node()].into();
    assert_eq!(nodes.len(), 3);
    assert!(a.status().connected && a.status().received >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_numbers_are_distinct_below_2_16_and_wrap_past_0() {
    let redis = server();
    redis::cmd("SET")
        .arg("rt:nodes")
        .arg(65534)
        .exec(&mut raw(&redis))
        .unwrap();
    let a = connect(config(&redis)).await;
    let b = connect(config(&redis)).await;
    assert_eq!((a.node(), b.node()), (65535, 1));
    // Another prefix counts on its own.
    let mut other = config(&redis);
    other.prefix = "app2".into();
    assert_eq!(connect(other).await.node(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_and_history_keep_order_with_exclusive_positions() {
    let redis = server();
    let a = connect(config(&redis)).await;
    let b = connect(config(&redis)).await;
    let mut in_b = inbox(&b);
    b.subscribe(Channel::Topic("news".into()));
    b.flush_subscriptions().await.unwrap();

    let event = |i: usize| Bytes::from(format!("event {i}\nwith a newline"));
    let mut positions = Vec::new();
    for i in 0..2 {
        positions.extend(a.append("news", vec![event(i)]).await.unwrap());
    }
    // A batch: one call, one position per event.
    let batch = a.append("news", (2..5).map(event).collect()).await.unwrap();
    assert_eq!(batch.len(), 3);
    positions.extend(batch);
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");

    // Subscribers see each event with its position, in stream order.
    for (i, position) in positions.iter().enumerate() {
        assert_eq!(
            next(&mut in_b).await,
            Incoming::Message {
                channel: Channel::Topic("news".into()),
                position: Some(*position),
                payload: Bytes::from(format!("event {i}\nwith a newline")),
            }
        );
    }

    let all = b.history("news", Position::default()).await.unwrap();
    assert_eq!(all.events.len(), 5);
    assert_eq!(
        all.events.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        positions
    );
    assert_eq!(&all.events[0].1[..], b"event 0\nwith a newline");
    assert!(!all.gap);
    assert_eq!(all.oldest, Some(positions[0]));

    // `after` is exclusive.
    let rest = b.history("news", positions[1]).await.unwrap();
    assert_eq!(
        rest.events.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        positions[2..]
    );
    assert!(!rest.gap);
    let none = b.history("news", positions[4]).await.unwrap();
    assert!(none.events.is_empty() && !none.gap);

    // A plain publish on a topic channel arrives without a position and
    // stays out of the history.
    a.publish(
        vec![Channel::Topic("news".into())],
        Bytes::from_static(b"live"),
    )
    .await
    .unwrap();
    assert_eq!(
        next(&mut in_b).await,
        message(Channel::Topic("news".into()), "live")
    );
    assert_eq!(b.history("news", positions[4]).await.unwrap().events, []);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimming_reports_gaps_exactly() {
    let redis = server();
    let mut cfg = config(&redis);
    cfg.history_max_len = 5;
    let a = connect(cfg).await;
    let mut p = Vec::new();
    for i in 0..6 {
        p.push(one(&a, "t", format!("{i}")).await);
    }
    // A batch past the length trims once, after adding all of it.
    p.extend(
        a.append("t", (6..12).map(|i| Bytes::from(format!("{i}"))).collect())
            .await
            .unwrap(),
    );
    // Kept: the last five, p[7..12]; trimmed: p[0..7].
    let kept = |h: &backplane::History| h.events.iter().map(|(p, _)| *p).collect::<Vec<_>>();
    let h = a.history("t", p[3]).await.unwrap();
    assert!(h.gap, "p[4..7] were trimmed after p[3]");
    assert_eq!(kept(&h), p[7..]);
    assert_eq!(h.oldest, Some(p[7]));
    let h = a.history("t", p[6]).await.unwrap();
    assert!(
        !h.gap,
        "p[6] is the last trimmed: nothing after it is missing"
    );
    assert_eq!(kept(&h), p[7..]);
    let h = a.history("t", p[8]).await.unwrap();
    assert!(!h.gap);
    assert_eq!(kept(&h), p[9..]);
    assert!(a.history("t", Position::default()).await.unwrap().gap);

    // A position this stream never held is unknown: gap.
    let unknown = Position {
        ms: p[11].ms,
        seq: p[11].seq + 1000,
    };
    let h = a.history("t", unknown).await.unwrap();
    assert!(h.gap && h.events.is_empty());

    // No stream: nothing, and a gap only for a reader who saw events.
    let h = a.history("nothing", Position::default()).await.unwrap();
    assert!(h.events.is_empty() && !h.gap && h.oldest.is_none());
    assert!(a.history("nothing", p[0]).await.unwrap().gap);

    // Redis lost the stream (a restart without persistence): every old
    // position is a gap, though the new stream has events.
    redis::cmd("DEL")
        .arg("rt:stream:t")
        .exec(&mut raw(&redis))
        .unwrap();
    let fresh = one(&a, "t", "new").await;
    let h = a.history("t", p[11]).await.unwrap();
    assert!(h.gap);
    assert_eq!(kept(&h), [fresh]);

    // Age: events older than the max age go at the next append.
    let mut aged = config(&redis);
    aged.history_max_age = Some(Duration::from_millis(100));
    let b = connect(aged).await;
    let old = one(&b, "aged", "old").await;
    // The age is measured on the events' positions (Redis's clock): wait until
    // Redis's clock has passed it.
    let deadline = Instant::now() + WAIT;
    let young = loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let p = one(&b, "aged", "young").await;
        if p.ms > old.ms + 100 {
            break p;
        }
        assert!(Instant::now() < deadline);
    };
    let h = b.history("aged", Position::default()).await.unwrap();
    assert!(h.gap);
    assert_eq!(h.events.last().map(|(p, _)| *p), Some(young));
    assert!(h.events.iter().all(|(p, _)| p.ms + 100 >= young.ms));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_an_append_and_a_batch_cost_constant_commands() {
    let redis = server();
    let (a, mut raw) = counting(&redis).await;
    a.publish(
        vec![room("a"), room("b"), Channel::All],
        Bytes::from_static(b"x"),
    )
    .await
    .unwrap();
    for _ in 0..10 {
        one(&a, "t", "e").await;
    }
    let info = commandstats(&mut raw);
    assert_eq!(calls(&info, "publish"), 3 + 10, "{info}");
    assert_eq!(calls(&info, "evalsha"), 10, "{info}");
    assert_eq!(calls(&info, "xadd"), 10, "{info}");
    assert_eq!(calls(&info, "eval"), 0, "{info}");

    // A batch of ten: one script call, one round trip.
    reset_stats(&mut raw);
    let ten = vec![Bytes::from_static(b"e"); 10];
    assert_eq!(a.append("t", ten).await.unwrap().len(), 10);
    let info = commandstats(&mut raw);
    assert_eq!(calls(&info, "evalsha"), 1, "{info}");
    assert_eq!(calls(&info, "xadd"), 10, "{info}");
    assert_eq!(calls(&info, "publish"), 10, "{info}");
    assert_eq!(calls(&info, "xlen"), 1, "trimmed once: {info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_made_while_one_is_in_flight_go_together_each_with_its_positions() {
    let redis = server();
    let (a, mut raw) = counting(&redis).await;
    // Polled in order by one join: the first is in flight when the others
    // come, so they wait for it and then go as one script call.
    let batches: Vec<Vec<Bytes>> = (0..20)
        .map(|i| {
            (0..=i % 3)
                .map(|j| Bytes::from(format!("{i}.{j}")))
                .collect()
        })
        .collect();
    let answers =
        futures_util::future::join_all(batches.iter().map(|b| a.append("g", b.clone()))).await;
    let info = commandstats(&mut raw);
    assert_eq!(calls(&info, "evalsha"), 2, "{info}");
    let events: usize = batches.iter().map(Vec::len).sum();
    assert_eq!(calls(&info, "xadd"), events as u64, "{info}");
    // Each append got its own positions, and its events are consecutive in
    // the stream, in the order the appends were made.
    let history = a.history("g", Position::default()).await.unwrap();
    let mut expected = Vec::new();
    for (batch, answer) in batches.iter().zip(answers) {
        let positions = answer.unwrap();
        assert_eq!(positions.len(), batch.len());
        expected.extend(positions.into_iter().zip(batch.iter().cloned()));
    }
    assert_eq!(history.events, expected);

    // The append in flight is dropped (its caller went away): the one that
    // waited for it still goes, and is answered.
    let cx = &mut std::task::Context::from_waker(std::task::Waker::noop());
    let mut first = a.append("h", vec![Bytes::from_static(b"first")]);
    assert!(first.as_mut().poll(cx).is_pending(), "in flight");
    let mut second = a.append("h", vec![Bytes::from_static(b"second")]);
    assert!(second.as_mut().poll(cx).is_pending(), "waiting");
    drop(first);
    let positions = timeout(WAIT, second).await.expect("answered").unwrap();
    let history = a.history("h", Position::default()).await.unwrap();
    assert_eq!(
        history.events.last(),
        Some(&(positions[0], Bytes::from_static(b"second")))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_shared_across_nodes() {
    let redis = server();
    let a = connect(config(&redis)).await;
    let b = connect(config(&redis)).await;
    let member = |client, user: Option<&str>| PresenceMember {
        client,
        user: user.map(str::to_string),
    };
    a.presence_set("lobby", member(1, Some("ana")))
        .await
        .unwrap();
    a.presence_set("lobby", member(2, Some("ana")))
        .await
        .unwrap();
    b.presence_set("lobby", member(3, None)).await.unwrap();
    b.presence_set("other", member(4, Some("bo")))
        .await
        .unwrap();
    for node in [&a, &b] {
        let p = node.presence("lobby").await.unwrap();
        assert_eq!(
            p.members,
            vec![
                member(1, Some("ana")),
                member(2, Some("ana")),
                member(3, None)
            ]
        );
        assert_eq!((p.connections(), p.users()), (3, vec!["ana".to_string()]));
    }
    // Setting again updates; removing removes, for every node.
    b.presence_set("lobby", member(3, Some("cy")))
        .await
        .unwrap();
    a.presence_remove("lobby", 1).await.unwrap();
    b.presence_remove("lobby", 99).await.unwrap();
    assert_eq!(
        b.presence("lobby").await.unwrap().members,
        vec![member(2, Some("ana")), member(3, Some("cy"))]
    );
    assert!(a.presence("nobody").await.unwrap().members.is_empty());
    assert!(a.presence_expire("lobby").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_nodes_presence_expires_once_for_one_of_two_concurrent_callers() {
    let redis = server();
    let ttl = Duration::from_millis(400);
    let mut cfg = config(&redis);
    cfg.presence_ttl = ttl;
    let a = connect(cfg.clone()).await;
    let b = connect(cfg.clone()).await;
    let c = connect(cfg).await;
    let set_at = Instant::now();
    a.presence_set(
        "r",
        PresenceMember {
            client: 1,
            user: Some("ana".into()),
        },
    )
    .await
    .unwrap();
    for client in 10..20 {
        c.presence_set(
            "r",
            PresenceMember {
                client,
                user: Some("cy".into()),
            },
        )
        .await
        .unwrap();
    }
    assert_eq!(b.presence("r").await.unwrap().connections(), 11);
    let dropped_at = Instant::now();
    drop(c);

    // Two nodes expire concurrently until all ten are gone: each member is
    // returned once, to one of them.
    let mut expired = Vec::new();
    let mut first = None;
    let deadline = Instant::now() + WAIT;
    while expired.len() < 10 {
        assert!(Instant::now() < deadline, "expired so far: {expired:?}");
        let (x, y) = tokio::join!(a.presence_expire("r"), b.presence_expire("r"));
        let (x, y) = (x.unwrap(), y.unwrap());
        if first.is_none() && !(x.is_empty() && y.is_empty()) {
            first = Some(dropped_at.elapsed());
        }
        expired.extend(x);
        expired.extend(y);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let clients: Vec<u64> = expired.iter().map(|m| m.client).collect();
    let unique: BTreeSet<u64> = clients.iter().copied().collect();
    assert_eq!(clients.len(), 10, "each once: {clients:?}");
    assert_eq!(unique, (10..20).collect());
    assert!(expired.iter().all(|m| m.user.as_deref() == Some("cy")));
    // Not before the TTL: the last refresh was at most a third of it before
    // the drop.
    assert!(first.unwrap() >= ttl / 2, "expired after {first:?}");

    // A's own entry outlived the TTL because A refreshes it.
    assert!(set_at.elapsed() > ttl);
    let left = b.presence("r").await.unwrap();
    assert_eq!(
        left.members.iter().map(|m| m.client).collect::<Vec<_>>(),
        [1]
    );
    assert!(a.presence_expire("r").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_unavailable_then_reconnects_resubscribes_and_resyncs() {
    let mut redis = server();
    let mut cfg = config(&redis);
    cfg.timeout = Duration::from_millis(300);
    let a = connect(cfg.clone()).await;
    let b = connect(cfg.clone()).await;
    let (mut in_a, mut in_b) = (inbox(&a), inbox(&b));
    a.subscribe(room("x"));
    a.flush_subscriptions().await.unwrap();
    b.publish(vec![room("x")], Bytes::from_static(b"before"))
        .await
        .unwrap();
    assert_eq!(next(&mut in_a).await, message(room("x"), "before"));

    redis.stop();
    // Every operation answers Unavailable within the timeout; nothing hangs.
    let bound = cfg.timeout + Duration::from_millis(200);
    let unavailable = |r: Result<(), BackplaneError>| {
        assert!(matches!(r, Err(BackplaneError::Unavailable(_))), "{r:?}");
    };
    let t = Instant::now();
    unavailable(
        b.publish(vec![room("x")], Bytes::from_static(b"lost"))
            .await,
    );
    assert!(t.elapsed() < bound, "publish took {:?}", t.elapsed());
    let t = Instant::now();
    unavailable(
        b.append("t", vec![Bytes::from_static(b"lost")])
            .await
            .map(drop),
    );
    unavailable(b.history("t", Position::default()).await.map(drop));
    unavailable(
        b.presence_set(
            "r",
            PresenceMember {
                client: 5,
                user: None,
            },
        )
        .await,
    );
    unavailable(b.presence("r").await.map(drop));
    unavailable(b.presence_expire("r").await.map(drop));
    unavailable(b.presence_remove("r", 6).await);
    assert!(t.elapsed() < 6 * bound, "took {:?}", t.elapsed());
    // Interest changes while down are remembered.
    a.subscribe(room("y"));
    unavailable(a.flush_subscriptions().await);

    redis.restart().unwrap();
    // Both nodes reconnect and say so; A re-subscribed to x and y.
    assert_eq!(next(&mut in_a).await, Incoming::Resync);
    assert_eq!(next(&mut in_b).await, Incoming::Resync);
    b.publish(vec![room("x"), room("y")], Bytes::from_static(b"after"))
        .await
        .unwrap();
    // The publish that failed during the outage was not queued: the first
    // messages after Resync are the new ones.
    assert_eq!(next(&mut in_a).await, message(room("x"), "after"));
    assert_eq!(next(&mut in_a).await, message(room("y"), "after"));
    let status = a.status();
    assert!(status.connected && status.reconnects == 1, "{status:?}");
    assert!(b.status().errors >= 7, "{:?}", b.status());

    // The presence entry set during the outage is written by the refresh
    // that follows the reconnection.
    let deadline = Instant::now() + WAIT;
    while a.presence("r").await.unwrap().connections() != 1 {
        assert!(
            Instant::now() < deadline,
            "presence written after reconnect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_stops_answering_is_found_by_ping_and_replaced() {
    let redis = server();
    let mut cfg = config(&redis);
    cfg.timeout = Duration::from_millis(300);
    cfg.ping_interval = Duration::from_millis(200);
    let a = connect(cfg.clone()).await;
    let b = connect(cfg.clone()).await;
    let (mut in_a, mut in_b) = (inbox(&a), inbox(&b));
    a.subscribe(room("x"));
    a.flush_subscriptions().await.unwrap();

    redis.pause().unwrap();
    // The connection is open but silent: a request waits out the timeout.
    let t = Instant::now();
    let r = b
        .publish(vec![room("x")], Bytes::from_static(b"lost"))
        .await;
    assert!(matches!(r, Err(BackplaneError::Unavailable(_))), "{r:?}");
    assert!(t.elapsed() < cfg.timeout + Duration::from_millis(200));
    // The PING finds it and the connection is given up.
    let deadline = Instant::now() + WAIT;
    while a.status().connected {
        assert!(Instant::now() < deadline, "the silent connection is found");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    redis.resume().unwrap();
    assert_eq!(next(&mut in_a).await, Incoming::Resync);
    assert_eq!(next(&mut in_b).await, Incoming::Resync);
    b.publish(vec![room("x")], Bytes::from_static(b"after"))
        .await
        .unwrap();
    assert_eq!(next(&mut in_a).await, message(room("x"), "after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_closes_the_connection() {
    let redis = server();
    let mut raw = raw(&redis);
    let clients = |raw: &mut redis::Connection| -> usize {
        let list: String = redis::cmd("CLIENT").arg("LIST").query(raw).unwrap();
        list.lines().count()
    };
    assert_eq!(clients(&mut raw), 1);
    let a = connect(config(&redis)).await;
    let clone = a.clone();
    assert_eq!(clients(&mut raw), 2);
    drop(a);
    clone
        .publish(vec![Channel::All], Bytes::from_static(b"still here"))
        .await
        .unwrap();
    drop(clone);
    let deadline = Instant::now() + WAIT;
    while clients(&mut raw) != 1 {
        assert!(Instant::now() < deadline, "the connection closes");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refuses_an_unreachable_redis_promptly() {
    let mut redis = server();
    let mut cfg = config(&redis);
    cfg.timeout = Duration::from_millis(300);
    redis.stop();
    let t = Instant::now();
    let r = RedisBackplane::connect(cfg).await;
    assert!(matches!(r, Err(BackplaneError::Unavailable(_))), "{r:?}");
    assert!(t.elapsed() < Duration::from_millis(600));
    let bad = RedisBackplane::connect(RedisConfig::new("nope://x")).await;
    assert!(matches!(bad, Err(BackplaneError::Protocol(_))), "{bad:?}");
}
