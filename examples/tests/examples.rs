//! Runs every example over real TCP, so what README and the examples show stays true.

#[path = "../axum_app.rs"]
pub mod axum_app;
#[path = "../chat.rs"]
pub mod chat;
#[path = "../notifications.rs"]
pub mod notifications;
#[path = "../rpc.rs"]
pub mod rpc;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use ws_wrapper_client::{ClientConfig, WrapperClient};

const PATIENCE: Duration = Duration::from_secs(10);

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// One HTTP/1.1 request on its own connection: the status code and the whole response text.
async fn http(addr: SocketAddr, head: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{head} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(PATIENCE, s.read_to_string(&mut out))
        .await
        .expect("a whole response")
        .unwrap();
    let status = out[9..12].parse().unwrap();
    (status, out)
}

/// An open SSE stream: the connection after its response head.
struct Sse {
    s: TcpStream,
    seen: String,
}

impl Sse {
    async fn open(addr: SocketAddr, path: &str, last_event_id: Option<&str>) -> Sse {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let resume = last_event_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{resume}\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut sse = Sse {
            s,
            seen: String::new(),
        };
        sse.until("\r\n\r\n").await;
        assert!(sse.seen.contains(" 200 "), "{}", sse.seen);
        assert!(sse.seen.contains("text/event-stream"), "{}", sse.seen);
        sse
    }

    /// Reads until `needle` has been seen; panics after [`PATIENCE`].
    async fn until(&mut self, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        let mut buf = [0u8; 4096];
        while !self.seen.contains(needle) {
            let n = tokio::time::timeout_at(deadline.into(), self.s.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("no {needle:?} in {:?}", self.seen))
                .unwrap();
            assert!(n > 0, "stream ended before {needle:?}: {:?}", self.seen);
            self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }

    /// Reads until the server ends the stream.
    async fn end(&mut self) {
        let mut buf = [0u8; 4096];
        loop {
            let n = tokio::time::timeout(PATIENCE, self.s.read(&mut buf))
                .await
                .expect("the stream ends")
                .unwrap_or(0);
            if n == 0 {
                return;
            }
        }
    }
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn ws(addr: SocketAddr, path: &str) -> Ws {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (ws, res) = tokio_tungstenite::client_async(format!("ws://{addr}{path}"), stream)
        .await
        .unwrap();
    assert_eq!(res.status(), 101);
    ws
}

async fn next_text(ws: &mut Ws) -> String {
    loop {
        let msg = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("a message")
            .expect("open")
            .unwrap();
        if let Message::Text(t) = msg {
            return t.to_string();
        }
    }
}

async fn wait_for(addr: SocketAddr, path: &str, needle: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (_, out) = http(addr, &format!("GET {path}"), "").await;
        if out.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never showed {needle}: {out}"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn axum_app_mounts_every_route_and_drains_on_shutdown() {
    let (listener, addr) = bind().await;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(axum_app::serve(listener, async move {
        let _ = stopped.await;
    }));

    // An ordinary axum route, through axum's middleware and ours.
    let (status, out) = http(addr, "GET /", "").await;
    assert_eq!(status, 200);
    assert!(out.contains("x-served-by: axum"), "{out}");
    assert!(out.contains("real-time routes"), "{out}");

    // SSE and WebSocket upgrades under axum.
    let mut events = Sse::open(addr, "/events", None).await;
    let mut chat = ws(addr, "/ws").await;
    wait_for(addr, "/health", "\"ws_clients\":1").await;

    // The hub's control protocol.
    let mut rooms = ws(addr, "/hub").await;
    assert!(
        next_text(&mut rooms)
            .await
            .contains("connection.established")
    );
    rooms
        .send(Message::text(
            r#"{"type":"subscribe","room":"public-news"}"#,
        ))
        .await
        .unwrap();
    assert!(next_text(&mut rooms).await.contains("\"subscribed\""));

    // ws-wrapper RPC with the Rust client.
    let client = WrapperClient::new(&format!("ws://{addr}/rpc"), ClientConfig::default()).unwrap();
    client.start().await.unwrap();
    let sum: f64 = client.request(None, "add", (2, 3)).await.unwrap();
    assert_eq!(sum, 5.0);
    client.close().await;

    // POST /say reaches SSE and WebSocket clients.
    let (status, out) = http(addr, "POST /say", "hello").await;
    assert_eq!(status, 202, "{out}");
    events.until("data: hello\n\n").await;
    assert_eq!(next_text(&mut chat).await, "hello");
    // Under axum too, a send writes to a waiting connection's socket itself.
    let (status, _) = http(addr, "POST /say", "again").await;
    assert_eq!(status, 202);
    assert_eq!(next_text(&mut chat).await, "again");
    let (_, health) = http(addr, "GET /health", "").await;
    let body = &health[health.find('{').expect("a JSON body")..];
    let health: serde_json::Value = serde_json::from_str(body).unwrap();
    assert!(
        health["ws_written_directly"].as_u64() >= Some(1),
        "{health}"
    );

    // Shutdown: the SSE stream ends, WebSockets get 1001, serve returns.
    let started = Instant::now();
    stop.send(()).unwrap();
    events.end().await;
    let close = loop {
        match tokio::time::timeout(PATIENCE, chat.next())
            .await
            .expect("a close")
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Away));
    drop((chat, rooms));
    tokio::time::timeout(PATIENCE, server)
        .await
        .expect("serve returns")
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() < axum_app::DRAIN,
        "drained in {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn chat_sends_a_room_message_to_its_members_only() {
    let (listener, addr) = bind().await;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(chat::serve(listener, async move {
        let _ = stopped.await;
    }));
    let mut a = ws(addr, "/chat").await;
    let mut b = ws(addr, "/chat").await;
    let mut outsider = ws(addr, "/chat").await;
    for c in [&mut a, &mut b, &mut outsider] {
        assert!(next_text(c).await.contains("connection.established"));
    }
    for c in [&mut a, &mut b] {
        c.send(Message::text(r#"{"type":"subscribe","room":"lobby"}"#))
            .await
            .unwrap();
        assert!(next_text(c).await.contains("\"subscribed\""));
    }
    let (_, rooms) = http(addr, "GET /rooms", "").await;
    assert!(rooms.ends_with("{\"lobby\":2}\n"), "{rooms}");

    // The outsider may not speak in a room it is not in.
    outsider
        .send(Message::text(r#"{"room":"lobby","text":"spam"}"#))
        .await
        .unwrap();
    a.send(Message::text(r#"{"room":"lobby","text":"hi"}"#))
        .await
        .unwrap();
    for c in [&mut a, &mut b] {
        let got: serde_json::Value = serde_json::from_str(&next_text(c).await).unwrap();
        assert_eq!(got["type"], "message");
        assert_eq!(got["data"]["text"], "hi", "{got}");
    }
    outsider
        .send(Message::text(r#"{"type":"ping"}"#))
        .await
        .unwrap();
    assert!(
        next_text(&mut outsider).await.contains("pong"),
        "the outsider got nothing else first"
    );
    stop.send(()).unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn notifications_resume_from_last_event_id() {
    let (listener, addr) = bind().await;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(notifications::serve(listener, async move {
        let _ = stopped.await;
    }));
    let (status, out) = http(addr, "POST /notify?topic=alice", "shipped").await;
    assert_eq!(status, 202, "{out}");
    assert!(out.ends_with("{\"id\":1}\n"), "{out}");

    let mut stream = Sse::open(addr, "/notifications?topic=alice", Some("0")).await;
    stream.until("id: 1\ndata: shipped\n\n").await;
    http(addr, "POST /notify?topic=bob", "not for alice").await;
    http(addr, "POST /notify?topic=alice", "delivered").await;
    stream.until("id: 3\ndata: delivered\n\n").await;
    assert!(!stream.seen.contains("not for alice"));
    drop(stream);

    // Reconnecting with the last id seen gets only what came after.
    let mut again = Sse::open(addr, "/notifications?topic=alice", Some("1")).await;
    again.until("id: 3\ndata: delivered\n\n").await;
    assert!(!again.seen.contains("shipped"), "{}", again.seen);

    let too_long = "x".repeat(notifications::MAX_NOTIFICATION + 1);
    let (status, _) = http(addr, "POST /notify?topic=alice", &too_long).await;
    assert_eq!(status, 413);
    stop.send(()).unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn rpc_calls_both_ways() {
    let (sum, doubled) = rpc::run().await.unwrap();
    assert_eq!((sum, doubled), (5, 42));
}
