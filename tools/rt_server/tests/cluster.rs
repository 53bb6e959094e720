//! Two `rt-server` processes on one real `redis-server` (started here on a
//! free port, stopped by its pid): WebSocket targets, SSE resume, presence,
//! room history and a Redis outage, across nodes; and room history alone.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use backplane_redis::testing::RedisServer;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{WebSocketStream, client_async};

mod common;
use common::{Server, http};

/// How long any single step may take.
const WAIT: Duration = Duration::from_secs(15);
/// The presence TTL the nodes run with here.
const TTL_SECS: u64 = 2;

/// One rt-server node on `redis` (SIGKILL when dropped: `kill()`).
fn node(redis: &RedisServer) -> Server {
    node_with(redis, &[])
}

/// [`node`] with more arguments.
fn node_with(redis: &RedisServer, more: &[&str]) -> Server {
    let ttl = TTL_SECS.to_string();
    let url = redis.url();
    let mut args = vec![
        "--addr",
        "127.0.0.1:0",
        "--quiet",
        "--insecure-bearer-names",
        "--message-rate",
        "0",
        "--redis",
        &url,
        "--presence-ttl-secs",
        &ttl,
    ];
    args.extend_from_slice(more);
    Server::spawn(None, &args, &[])
}

type Ws = WebSocketStream<TcpStream>;

/// A `/hub` connection as user `name`, past its `connection.established`.
async fn hub_as(addr: SocketAddr, name: &str) -> Ws {
    let mut req = format!("ws://{addr}/hub").into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {name}").parse().unwrap());
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut ws, _) = client_async(req, stream).await.unwrap();
    assert_eq!(next_event(&mut ws).await["type"], "connection.established");
    ws
}

async fn ws_at(addr: SocketAddr, path: &str) -> Ws {
    let stream = TcpStream::connect(addr).await.unwrap();
    client_async(format!("ws://{addr}{path}"), stream)
        .await
        .unwrap()
        .0
}

async fn next_text(ws: &mut Ws) -> String {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time")
            .expect("open")
            .unwrap();
        if let Message::Text(t) = msg {
            return t.to_string();
        }
    }
}

async fn next_event(ws: &mut Ws) -> Value {
    serde_json::from_str(&next_text(ws).await).unwrap()
}

async fn join(ws: &mut Ws, room: &str) {
    let msg = serde_json::json!({"type": "subscribe", "room": room}).to_string();
    ws.send(Message::text(msg)).await.unwrap();
    loop {
        let ev = next_event(ws).await;
        if ev["type"] == "subscribed" {
            return;
        }
    }
}

/// The `notice` payloads `ws` receives until notice `"end"`.
async fn notices_until_end(ws: &mut Ws) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let ev = next_event(ws).await;
        if ev["type"] != "notice" {
            continue;
        }
        let data = ev["data"].as_str().unwrap_or_default().to_string();
        if data == "end" {
            return got;
        }
        got.push(data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_user_and_broadcast_emits_reach_every_node_once() {
    let redis = RedisServer::start().expect("redis-server");
    let (a, b) = (node(&redis), node(&redis));
    let mut ana_a = hub_as(a.addr, "ana").await;
    let mut bob_a = hub_as(a.addr, "bob").await;
    let mut cat_a = hub_as(a.addr, "cat").await;
    let mut ana_b = hub_as(b.addr, "ana").await;
    join(&mut ana_a, "public-x").await;
    join(&mut ana_a, "public-y").await;
    join(&mut bob_a, "public-x").await;
    join(&mut ana_b, "public-y").await;
    join(&mut cat_a, "public-z").await;

    // At once (a node answers `subscribed` and `connection.established` once
    // it receives the room and the user from every node), from node B: two
    // rooms (ana_a is in both), a user, then the end mark.
    let emit = |q: &'static str, body: &'static str| async move {
        let (status, out) = http(b.addr, "POST", &format!("/emit?{q}"), body).await;
        assert_eq!(status, 202, "{out}");
    };
    emit("room=public-x&room=public-y", "rooms").await;
    emit("user=bob", "to-bob").await;
    emit("room=public-x&room=public-y&room=public-z&user=ana", "end").await;
    assert_eq!(
        notices_until_end(&mut ana_a).await,
        ["rooms"],
        "one copy for two rooms"
    );
    assert_eq!(notices_until_end(&mut bob_a).await, ["rooms", "to-bob"]);
    assert_eq!(notices_until_end(&mut ana_b).await, ["rooms"]);
    assert_eq!(notices_until_end(&mut cat_a).await, Vec::<String>::new());

    // Broadcast: `POST /publish` (topic `hub`) on B reaches `/ws` on A and B
    // (a node says it listens once it receives the broadcasts of the others).
    let mut ws_a = ws_at(a.addr, "/ws").await;
    let mut ws_b = ws_at(b.addr, "/ws").await;
    assert_eq!(http(b.addr, "POST", "/publish", "hello").await.0, 202);
    for ws in [&mut ws_a, &mut ws_b] {
        assert_eq!(next_text(ws).await, "hello");
    }
}

/// An SSE stream: the connection after its response head.
struct Sse {
    s: TcpStream,
    seen: String,
}

impl Sse {
    async fn open(addr: SocketAddr, topic: &str, last_event_id: &str) -> Sse {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET /events?topic={topic} HTTP/1.1\r\nHost: {addr}\r\nLast-Event-ID: {last_event_id}\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut sse = Sse {
            s,
            seen: String::new(),
        };
        sse.until(|seen| seen.contains("\r\n\r\n")).await;
        sse
    }

    async fn until(&mut self, done: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 4096];
        while !done(&self.seen) {
            let n = tokio::time::timeout_at(deadline.into(), self.s.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("stream stalled at {:?}", self.seen))
                .unwrap();
            assert!(n > 0, "stream ended: {:?}", self.seen);
            self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }

    /// `(id, data)` of every event seen, in order.
    fn events(&self) -> Vec<(String, String)> {
        let body = self.seen.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        body.split("\n\n")
            .filter_map(|ev| {
                let field = |name: &str| {
                    ev.lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map(str::to_string)
                };
                Some((field("id: ")?, field("data: ")?))
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_messages_reach_the_other_node_in_order() {
    let redis = RedisServer::start().expect("redis-server");
    let (a, b) = (node(&redis), node(&redis));
    let mut from = ws_at(a.addr, "/ws").await;
    let mut to = ws_at(b.addr, "/ws").await;
    // A burst from one socket: A forwards what queued up behind each other
    // together, and B must still get every message once, in order.
    let sent: Vec<String> = (0..300).map(|i| format!("m{i}")).collect();
    for m in &sent {
        from.feed(Message::text(m.as_str())).await.unwrap();
    }
    from.flush().await.unwrap();
    let mut got = Vec::new();
    while got.len() < sent.len() {
        got.push(next_text(&mut to).await);
    }
    assert_eq!(got, sent);
}

/// Emits notices `m1`..`m5` to room `public-h` through `from`, joins it
/// with a connection to `to`, then emits `live` and `end` through `from`:
/// the connection gets the last three, then the live one.
async fn history_then_live(from: SocketAddr, to: SocketAddr) {
    for n in 1..=5 {
        let (status, out) = http(from, "POST", "/emit?room=public-h", &format!("m{n}")).await;
        assert_eq!(status, 202, "{out}");
    }
    let mut ana = hub_as(to, "ana").await;
    join(&mut ana, "public-h").await;
    // The history comes before anything live of the room, so this first
    // notice tells that the node follows the room now.
    let first = loop {
        let ev = next_event(&mut ana).await;
        if ev["type"] == "notice" {
            break ev["data"].as_str().unwrap().to_string();
        }
    };
    assert_eq!(first, "m3");
    for body in ["live", "end"] {
        assert_eq!(http(from, "POST", "/emit?room=public-h", body).await.0, 202);
    }
    assert_eq!(notices_until_end(&mut ana).await, ["m4", "m5", "live"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_on_another_node_gets_the_room_history_then_live() {
    let redis = RedisServer::start().expect("redis-server");
    let (a, b) = (
        node_with(&redis, &["--room-history", "3"]),
        node_with(&redis, &["--room-history", "3"]),
    );
    history_then_live(b.addr, a.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alone_a_subscriber_gets_the_room_history_then_live() {
    // 64 MiB: the default.
    let server = alone_with_history_bytes("67108864");
    history_then_live(server.addr, server.addr).await;
}

/// Alone, with room history on, at `--room-history-bytes`.
fn alone_with_history_bytes(bytes: &str) -> Server {
    let args = [
        "--addr",
        "127.0.0.1:0",
        "--quiet",
        "--insecure-bearer-names",
        "--room-history",
        "3",
        "--room-history-bytes",
        bytes,
    ];
    Server::spawn(None, &args, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alone_past_the_history_bytes_the_room_written_longest_ago_loses_its_history() {
    // Notices of 2,000 bytes, so that what the cluster keeps beside each
    // (its envelope) is small next to it.
    let body = |tag: &str| format!("{tag}:{}", "x".repeat(2000));
    let tag = |notice: &String| notice.split(':').next().unwrap_or_default().to_string();
    // How many bytes one kept notice is, about: what a member receives.
    let probe = alone_with_history_bytes("1000000");
    let mut ana = hub_as(probe.addr, "ana").await;
    join(&mut ana, "public-probe").await;
    let emitted = http(probe.addr, "POST", "/emit?room=public-probe", &body("m0")).await;
    assert_eq!(emitted.0, 202);
    let notice = loop {
        let text = next_text(&mut ana).await;
        if serde_json::from_str::<Value>(&text).unwrap()["type"] == "notice" {
            break text;
        }
    };
    let one = notice.len() + backplane_memory::KEPT_OVERHEAD;
    drop(probe);
    // Room for two such notices and their envelopes, not three.
    let server = alone_with_history_bytes(&(2 * one + one / 2).to_string());
    let to = server.addr;
    for (room, tag) in [
        ("public-old", "m1"),
        ("public-new", "m2"),
        ("public-new", "m3"),
    ] {
        let emitted = http(to, "POST", &format!("/emit?room={room}"), &body(tag)).await;
        assert_eq!(emitted.0, 202);
    }
    let mut bo = hub_as(to, "bo").await;
    let mut history = Vec::new();
    // public-new first: the "end" notices are kept too, and push rooms out.
    for room in ["public-new", "public-old"] {
        join(&mut bo, room).await;
        assert_eq!(
            http(to, "POST", &format!("/emit?room={room}"), "end")
                .await
                .0,
            202
        );
        history.push(
            notices_until_end(&mut bo)
                .await
                .iter()
                .map(tag)
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(history, [vec!["m2".to_string(), "m3".to_string()], vec![]]);
}

fn position(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').expect("a position id");
    (ms.parse().unwrap(), seq.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_resumes_on_the_other_node_without_loss_or_repeat() {
    let redis = RedisServer::start().expect("redis-server");
    let (a, b) = (node(&redis), node(&redis));
    // `0-0`: a resume from the start, so nothing published after the
    // subscription is missed.
    let mut on_a = Sse::open(a.addr, "news", "0-0").await;
    for i in 1..=3 {
        let (status, out) = http(b.addr, "POST", "/publish?topic=news", &format!("e{i}")).await;
        assert_eq!(status, 202, "{out}");
    }
    on_a.until(|s| s.contains("data: e3\n")).await;
    let first = on_a.events();
    assert_eq!(
        first.iter().map(|e| e.1.as_str()).collect::<Vec<_>>(),
        ["e1", "e2", "e3"]
    );
    let last = first[2].0.clone();
    drop(on_a);
    // A batch: one append, its events on their own in the history.
    let (status, out) = http(
        b.addr,
        "POST",
        "/publish/batch?topic=news",
        r#"["e4", "e5"]"#,
    )
    .await;
    assert_eq!(status, 202, "{out}");
    let batch: Value = serde_json::from_str(&out).unwrap();
    let batch: Vec<_> = batch["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| position(id.as_str().unwrap()))
        .collect();
    assert!(batch.len() == 2 && batch[0] < batch[1], "{out}");
    let mut on_b = Sse::open(b.addr, "news", &last).await;
    on_b.until(|s| s.contains("data: e5\n")).await;
    assert_eq!(
        http(a.addr, "POST", "/publish?topic=news", "e6").await.0,
        202
    );
    on_b.until(|s| s.contains("data: e6\n")).await;
    let resumed = on_b.events();
    assert_eq!(
        resumed.iter().map(|e| e.1.as_str()).collect::<Vec<_>>(),
        ["e4", "e5", "e6"],
        "{:?}",
        on_b.seen
    );
    assert_eq!(
        resumed[..2]
            .iter()
            .map(|e| position(&e.0))
            .collect::<Vec<_>>(),
        batch,
        "the ids the batch was answered with"
    );
    let ids: Vec<_> = first
        .iter()
        .chain(&resumed)
        .map(|e| position(&e.0))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
}

async fn presence(addr: SocketAddr, room: &str) -> Value {
    let (status, body) = http(addr, "GET", &format!("/rooms/{room}/presence"), "").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_lists_both_nodes_and_forgets_a_killed_one() {
    let redis = RedisServer::start().expect("redis-server");
    let (mut a, b) = (node(&redis), node(&redis));
    let mut ana = hub_as(a.addr, "ana").await;
    join(&mut ana, "public-p").await;
    let mut bob = hub_as(b.addr, "bob").await;
    join(&mut bob, "public-p").await;
    let both = serde_json::json!({"room": "public-p", "connections": 2, "users": ["ana", "bob"]});
    let deadline = Instant::now() + WAIT;
    while presence(a.addr, "public-p").await != both || presence(b.addr, "public-p").await != both {
        assert!(Instant::now() < deadline, "presence never listed both");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Ana (node A) hears Bob (node B) join (after her own join).
    loop {
        let ev = next_event(&mut ana).await;
        if ev["type"] == "presence.join" && ev["data"]["user"] == "bob" {
            assert_eq!(ev["data"]["room"], "public-p", "{ev}");
            break;
        }
    }

    // A page of another origin may not read who is in a room.
    let mut s = TcpStream::connect(a.addr).await.unwrap();
    let req = format!(
        "GET /rooms/public-p/presence HTTP/1.1\r\nHost: {}\r\nOrigin: https://evil.example\r\nConnection: close\r\n\r\n",
        a.addr
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");

    let killed = Instant::now();
    a.kill();
    let leave = loop {
        let ev = next_event(&mut bob).await;
        if ev["type"] == "presence.leave" {
            break ev;
        }
    };
    assert_eq!(leave["data"]["user"], "ana", "{leave}");
    assert!(
        killed.elapsed() < Duration::from_secs(TTL_SECS * 3),
        "leave after {:?}",
        killed.elapsed()
    );
    let alone = serde_json::json!({"room": "public-p", "connections": 1, "users": ["bob"]});
    assert_eq!(presence(b.addr, "public-p").await, alone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_redis_outage_writes_get_503_and_every_acknowledged_event_arrives() {
    let mut redis = RedisServer::start().expect("redis-server");
    let (a, b) = (node(&redis), node(&redis));
    let mut on_a = Sse::open(a.addr, "t", "0-0").await;
    let mut on_b = Sse::open(b.addr, "t", "0-0").await;
    let mut acked = Vec::new();
    for i in 0..3 {
        let node = if i % 2 == 0 { a.addr } else { b.addr };
        let data = format!("before{i}");
        assert_eq!(http(node, "POST", "/publish?topic=t", &data).await.0, 202);
        acked.push(data);
    }
    on_a.until(|s| s.contains("data: before2\n")).await;
    on_b.until(|s| s.contains("data: before2\n")).await;

    redis.stop();
    // Until each node notices, a write may still fail slowly; once it has,
    // every write is refused at once with 503 and nothing is acknowledged.
    for node in [a.addr, b.addr] {
        let deadline = Instant::now() + WAIT;
        loop {
            let (status, body) = http(node, "POST", "/publish?topic=t", "lost?").await;
            assert_ne!(status, 202, "acknowledged while Redis is down: {body}");
            if status == 503 {
                break;
            }
            assert!(Instant::now() < deadline);
        }
        let (status, _) = http(node, "POST", "/emit?room=public-r", "x").await;
        assert_eq!(status, 503);
        let (_, metrics) = http(node, "GET", "/metrics", "").await;
        assert!(
            metrics.contains("rt_backplane_connected{part=\"sse\"} 0"),
            "{metrics}"
        );
    }

    redis.restart().expect("redis-server restarts on its port");
    let deadline = Instant::now() + WAIT;
    let mut i = 0;
    while acked.len() < 8 {
        assert!(
            Instant::now() < deadline,
            "writes never came back: {acked:?}"
        );
        let node = if i % 2 == 0 { a.addr } else { b.addr };
        let data = format!("after{i}");
        i += 1;
        match http(node, "POST", "/publish?topic=t", &data).await.0 {
            202 => acked.push(data),
            503 => tokio::time::sleep(Duration::from_millis(50)).await,
            other => panic!("status {other}"),
        }
    }
    let (_, metrics) = http(a.addr, "GET", "/metrics", "").await;
    assert!(
        metrics.contains("rt_backplane_connected{part=\"sse\"} 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("rt_backplane_resyncs_total{part=\"sse\"} 0"),
        "{metrics}"
    );
    let last = acked.last().unwrap().clone();
    for sse in [&mut on_a, &mut on_b] {
        sse.until(|s| s.contains(&format!("data: {last}\n"))).await;
        let got: Vec<String> = sse.events().into_iter().map(|e| e.1).collect();
        let acked_seen: Vec<&String> = got.iter().filter(|d| acked.contains(d)).collect();
        let mut unique = acked_seen.clone();
        unique.dedup();
        assert_eq!(
            unique.len(),
            acked.len(),
            "every acknowledged event, once: {got:?}"
        );
        assert!(
            !got.iter().any(|d| d == "lost?"),
            "a refused event arrived: {got:?}"
        );
    }
}
