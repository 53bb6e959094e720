//! WebSocket end to end: `ws_handler` apps (the reference server's and small
//! ones built here) on `http_serve`, real TCP on 127.0.0.1:0, a real
//! tokio-tungstenite client, and a raw TCP client for the frames tungstenite
//! refuses to send.
//!
//! Waiting is on signals: the `on_connect` / `on_disconnect` hooks of the apps
//! built here, messages and closes arriving at the clients, the server task
//! returning. Only the reference server's hub, which has no hooks, is polled
//! ([`Server::connections`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rt_server::{Options, app};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{RwLock, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::client_async;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use ws_broadcast::ws_broadcast;
use ws_handler::{Disconnect, Refusal, WsConfig, WsStats, ws_handler};
use ws_hub::{HubConfig, WsHub};
use ws_send::ws_send;

mod common;
mod serving;
use common::*;

/// Every test takes this shared; the memory test takes it alone, so the RSS
/// it reads is not moved by another test's buffers.
static PROCESS: RwLock<()> = RwLock::const_new(());

impl Server {
    /// The reference server (`/ws` broadcast, `/echo`, `/publish`).
    async fn reference(drain: Duration) -> Server {
        let rt_server::App { handler, hub, .. } = app(Options {
            log: false,
            ..Options::default()
        });
        Server::start(handler, hub, drain).await
    }
}

/// An app serving `config` on every path, with its hub and hooks.
async fn hooked_server(hub: HubConfig, config: WsConfig, drain: Duration) -> (Server, Hooks) {
    let hub = WsHub::new(hub);
    let (config, hooks) = hooked(config);
    let server = Server::start(ws_handler(hub.clone(), config), hub, drain).await;
    (server, hooks)
}

/// An echo handler's config: every text and binary message goes back.
fn echo() -> WsConfig {
    WsConfig {
        on_message: Some(Arc::new(|client, msg| {
            let _ = client.try_send(msg);
        })),
        ..WsConfig::default()
    }
}

// ---- plain HTTP ----

async fn http_request(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, String)],
) -> (u16, http::HeaderMap, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::builder().method("GET").uri(path);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let res = sender
        .send_request(
            req.body(http_body_util::Empty::<hyper::body::Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let (status, headers) = (res.status().as_u16(), res.headers().clone());
    let body = if status == 101 {
        String::new()
    } else {
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    (status, headers, body)
}

async fn publish(addr: SocketAddr, path: &str, data: &str) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post(path)
        .header("host", "test")
        .body(http_body_util::Full::new(hyper::body::Bytes::from(
            data.to_string(),
        )))
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), 202);
}

/// The headers of a valid handshake for `addr`, plus `extra`.
fn handshake_headers(
    addr: SocketAddr,
    extra: &[(&'static str, String)],
) -> Vec<(&'static str, String)> {
    let mut h = vec![
        ("host", addr.to_string()),
        ("upgrade", "websocket".to_string()),
        ("connection", "Upgrade".to_string()),
        ("sec-websocket-version", "13".to_string()),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==".to_string()),
    ];
    for (k, v) in extra {
        h.retain(|(name, _)| name != k);
        h.push((k, v.clone()));
    }
    h
}

// ---- a raw WebSocket client: bytes on a TcpStream ----

/// A TCP connection that has done the opening handshake and nothing else.
async fn raw_connect(addr: SocketAddr, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    // Byte by byte up to the blank line, so no frame byte is consumed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(WAIT, s.read(&mut b))
            .await
            .expect("the handshake answer in time")
            .unwrap();
        assert_eq!(n, 1, "the server closed during the handshake");
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "RFC 6455 accept key: {head}"
    );
    s
}

/// A masked client frame: `first` is FIN, RSV and opcode.
fn raw_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut out = vec![first];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// Reads server frames (unmasked) until a close frame and returns its code
/// (`Some(None)`: a close without a code); `None` if the socket ended first.
async fn raw_close_code(s: &mut TcpStream) -> Option<Option<u16>> {
    loop {
        let mut h = [0u8; 2];
        tokio::time::timeout(WAIT, s.read_exact(&mut h))
            .await
            .expect("a frame in time")
            .ok()?;
        assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
        let len = match h[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                s.read_exact(&mut l).await.ok()?;
                u64::from(u16::from_be_bytes(l))
            }
            127 => {
                let mut l = [0u8; 8];
                s.read_exact(&mut l).await.ok()?;
                u64::from_be_bytes(l)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0u8; usize::try_from(len).unwrap()];
        s.read_exact(&mut payload).await.ok()?;
        if h[0] & 0x0f == 0x8 {
            return Some(
                (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]])),
            );
        }
    }
}

/// Whether `ws` still works: an echo of a fresh message comes back.
async fn echoes(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
    assert_eq!(next_text(ws).await, text);
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

// ---- the tests ----

/// 1. `/ws` of the reference server: a text from one client reaches every
/// client (the sender too), in order; `POST /publish` and `POST /publish/batch`
/// reach them as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ws_client_receives_broadcasts_and_publishes() {
    let _shared = PROCESS.read().await;
    let server = Server::reference(Duration::from_secs(5)).await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(server.ws("/ws").await);
    }
    server.connections(5).await;
    for i in 0..20 {
        let from = i % clients.len();
        clients[from]
            .send(Message::text(format!("from {from}: {i}")))
            .await
            .unwrap();
        for c in &mut clients {
            assert_eq!(next_text(c).await, format!("from {from}: {i}"));
        }
    }
    publish(server.addr, "/publish", "published").await;
    for c in &mut clients {
        assert_eq!(next_text(c).await, "published");
    }
    // A batch on topic `hub` reaches /ws too: each event's data, in order.
    publish(server.addr, "/publish/batch", r#"["b1", {"data": "b2"}]"#).await;
    for c in &mut clients {
        assert_eq!(next_text(c).await, "b1");
        assert_eq!(next_text(c).await, "b2");
    }
    // Binary messages are not broadcast by /ws; the next text is.
    clients[0]
        .send(Message::binary(vec![1u8, 2, 3]))
        .await
        .unwrap();
    clients[0]
        .send(Message::text("after binary"))
        .await
        .unwrap();
    for c in &mut clients {
        assert_eq!(next_text(c).await, "after binary");
    }
    let stats = server.hub.stats();
    assert_eq!(stats.sent, 5 * 24, "{stats:?}");
    // Clients that are not read would not answer the shutdown's close.
    drop(clients);
    server.connections(0).await;
    assert_eq!(server.stop().await.aborted, 0);
}

/// Sends write small frames to a waiting connection's socket themselves
/// (plain TCP). A client that stops reading fills the socket mid-frame;
/// the connection's writer then finishes that frame before anything else
/// (the pong to a ping included): every frame arrives whole and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_writes_that_fill_the_socket_keep_every_frame_whole_and_in_order() {
    let _shared = PROCESS.read().await;
    let (server, mut hooks) = hooked_server(
        HubConfig {
            queue_messages: 1 << 20,
            queue_bytes: 1 << 30,
            ..HubConfig::default()
        },
        WsConfig::default(),
        Duration::from_secs(5),
    )
    .await;
    let mut ws = server.ws("/").await;
    hooks.connected().await;
    // 1,000-byte frames are copied into the outbox, the kind sends write
    // directly; 24 MB is more than loopback's socket buffers take.
    let n = 24_000u32;
    for i in 0..n {
        let mut p = i.to_be_bytes().to_vec();
        p.resize(996, b'x');
        let report = ws_broadcast(&server.hub, Message::binary(p));
        assert_eq!(report.sent, 1, "{report:?}");
    }
    let stats = server.hub.stats();
    assert!(
        stats.written < u64::from(n),
        "the socket filled, the rest waits: {stats:?}"
    );
    assert!(stats.direct > 0, "the first ones went directly: {stats:?}");
    ws.send(Message::Ping(b"mid".to_vec().into()))
        .await
        .unwrap();
    let mut pong = false;
    let mut next = 0u32;
    while next < n || !pong {
        let msg = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("every frame whole");
        match msg {
            Message::Binary(b) => {
                assert_eq!(b.len(), 996);
                assert_eq!(b[..4], next.to_be_bytes(), "in order");
                next += 1;
            }
            Message::Pong(p) => {
                assert_eq!(&p[..], b"mid");
                pong = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(server.hub.stats().written, u64::from(n));
    drop(ws);
    hooks.disconnected().await;
}

/// A ping in the middle of a fragmented message is answered before the
/// message's broadcast back to the sender: the pong tungstenite queues goes
/// first, though the broadcast could be written to the socket directly (as
/// Autobahn 5.6 and 5.19 ask of an echo).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pong_queued_by_the_reader_goes_before_an_echo_sent_after_it() {
    let _shared = PROCESS.read().await;
    let hub = WsHub::new(HubConfig::default());
    let echo = {
        let hub = hub.clone();
        WsConfig {
            on_message: Some(Arc::new(move |_client, msg| {
                ws_broadcast(&hub, msg);
            })),
            ..WsConfig::default()
        }
    };
    let server = Server::start(ws_handler(hub.clone(), echo), hub, Duration::from_secs(5)).await;
    let mut s = raw_connect(server.addr, "/").await;
    for round in 0..20 {
        let mut frames = raw_frame(0x01, b"hel"); // text, not final
        frames.extend(raw_frame(0x89, b"p"));
        frames.extend(raw_frame(0x80, b"lo")); // the final fragment
        s.write_all(&frames).await.unwrap();
        let mut got = Vec::new();
        for _ in 0..2 {
            let mut h = [0u8; 2];
            tokio::time::timeout(WAIT, s.read_exact(&mut h))
                .await
                .expect("a frame in time")
                .unwrap();
            let mut payload = vec![0u8; usize::from(h[1])];
            s.read_exact(&mut payload).await.unwrap();
            got.push((h[0], payload));
        }
        assert_eq!(
            got,
            [(0x8a, b"p".to_vec()), (0x81, b"hello".to_vec())],
            "round {round}: the pong, then the echo"
        );
    }
}

/// What a client writes at once is one read burst: `on_messages` gets its
/// text and binary messages together, in order, after `on_message` saw
/// each; on the reference server's `/ws` every client gets the burst's texts
/// in order, queued with one send each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_burst_reaches_the_burst_hook_whole_and_in_order() {
    let _shared = PROCESS.read().await;
    let (each_tx, mut each) = mpsc::unbounded_channel();
    let (burst_tx, mut bursts) = mpsc::unbounded_channel();
    let config = WsConfig {
        on_message: Some(Arc::new(move |_client, msg| {
            let _ = each_tx.send(msg);
        })),
        on_messages: Some(Arc::new(move |_client, msgs| {
            let _ = burst_tx.send(std::mem::take(msgs));
        })),
        ..WsConfig::default()
    };
    let (server, mut hooks) =
        hooked_server(HubConfig::default(), config, Duration::from_secs(5)).await;
    let mut s = raw_connect(server.addr, "/").await;
    hooks.connected().await;
    let mut burst = Vec::new();
    for i in 0..10 {
        burst.extend(raw_frame(0x81, format!("m{i}").as_bytes()));
    }
    burst.extend(raw_frame(0x82, &[1, 2, 3]));
    burst.extend(raw_frame(0x89, b"ping")); // a control frame: not a message
    s.write_all(&burst).await.unwrap();
    let mut want: Vec<Message> = (0..10).map(|i| Message::text(format!("m{i}"))).collect();
    want.push(Message::binary(vec![1u8, 2, 3]));
    let got = tokio::time::timeout(WAIT, bursts.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, want, "one write is one burst, whole and in order");
    for w in &want {
        assert_eq!(each.try_recv().as_ref(), Ok(w), "on_message saw each first");
    }
    // Past 256 KiB of payload a burst comes in several calls, whole and in
    // order.
    let mut big = Vec::new();
    for i in 0..5u8 {
        big.extend(raw_frame(0x82, &vec![i; 100 << 10]));
    }
    s.write_all(&big).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 5 {
        let part = tokio::time::timeout(WAIT, bursts.recv())
            .await
            .unwrap()
            .unwrap();
        let bytes: usize = part.iter().map(Message::len).sum();
        assert!(
            bytes < (256 + 100) << 10,
            "a call holds at most about 256 KiB"
        );
        got.extend(part);
    }
    let want: Vec<Message> = (0..5u8)
        .map(|i| Message::binary(vec![i; 100 << 10]))
        .collect();
    assert_eq!(got, want);
    while each.try_recv().is_ok() {}
    // A burst the client ends with its close, in the same write, is handed
    // over too, before the disconnect.
    let mut last = Vec::new();
    for i in 0..3 {
        last.extend(raw_frame(0x81, format!("n{i}").as_bytes()));
    }
    last.extend(raw_frame(0x88, &1000u16.to_be_bytes()));
    s.write_all(&last).await.unwrap();
    s.shutdown().await.unwrap();
    let got = tokio::time::timeout(WAIT, bursts.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, ["n0", "n1", "n2"].map(Message::text));
    hooks.disconnected().await;
    drop(s);
    assert!(bursts.try_recv().is_err(), "nothing else was handed over");
    server.stop().await;

    let server = Server::reference(Duration::from_secs(5)).await;
    let mut others = Vec::new();
    for _ in 0..3 {
        others.push(server.ws("/ws").await);
    }
    let mut s = raw_connect(server.addr, "/ws").await;
    server.connections(4).await;
    let mut burst = Vec::new();
    for i in 0..20 {
        burst.extend(raw_frame(0x81, format!("b{i}").as_bytes()));
        if i == 10 {
            burst.extend(raw_frame(0x82, b"binary is not broadcast"));
        }
    }
    s.write_all(&burst).await.unwrap();
    for c in &mut others {
        for i in 0..20 {
            assert_eq!(next_text(c).await, format!("b{i}"));
        }
    }
    assert_eq!(server.hub.stats().sent, 4 * 20);
    drop((s, others));
    server.connections(0).await;
    assert_eq!(server.stop().await.aborted, 0);
}

/// 2. `ws_send` reaches exactly one client. The others' absence of it is
/// proven without waiting: a marker broadcast after it is the first thing
/// they receive (one outbox is FIFO, so the message would have come first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_send_reaches_exactly_one_client() {
    let _shared = PROCESS.read().await;
    let (server, mut hooks) = hooked_server(
        HubConfig::default(),
        WsConfig::default(),
        Duration::from_secs(5),
    )
    .await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        let ws = server.ws("/").await;
        let id = hooks.connected().await;
        clients.push((id, ws));
    }
    let target = clients[2].0;
    let client = server.hub.client(target).expect("registered");
    ws_send(&client, Message::text("just for you")).unwrap();
    ws_send(&client, Message::text("and this too")).unwrap();
    let report = ws_broadcast(&server.hub, Message::text("marker"));
    assert_eq!(report.sent, 4);
    for (id, ws) in &mut clients {
        if *id == target {
            assert_eq!(next_text(ws).await, "just for you");
            assert_eq!(next_text(ws).await, "and this too");
        }
        assert_eq!(next_text(ws).await, "marker", "client {id}");
    }
    // A client that is gone: ws_send says so.
    let (_, mut ws) = clients.remove(2);
    ws.close(None).await.unwrap();
    let (gone, why) = hooks.disconnected().await;
    assert_eq!(gone, target);
    assert!(matches!(why, Disconnect::Closed(None)), "{why:?}");
    assert_eq!(
        ws_send(&client, Message::text("late")),
        Err(ws_hub::SendError::Closed)
    );
    // Clients that are not read would not answer the shutdown's close.
    drop(clients);
    for _ in 0..3 {
        hooks.disconnected().await;
    }
    assert_eq!(server.stop().await.aborted, 0);
}

/// 3. Clients that stop reading fill their socket, then their outbox, and
/// are closed with 1013 (`SlowPolicy::Close`), while the clients that read
/// get every message in order. One stalled client resumes reading right after
/// its close was decided and finds the 1013 close frame after the data
/// already in flight; the other never reads again and is disconnected all the
/// same (the server does not wait forever on a full socket).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_while_others_receive_everything() {
    let _shared = PROCESS.read().await;
    let (server, mut hooks) = hooked_server(
        HubConfig {
            queue_messages: 4,
            ..HubConfig::default()
        },
        WsConfig {
            close_timeout: Duration::from_secs(1),
            ..WsConfig::default()
        },
        Duration::from_secs(5),
    )
    .await;
    let mut healthy = Vec::new();
    for _ in 0..2 {
        healthy.push(server.ws("/").await);
        hooks.connected().await;
    }
    let mut resumes = Some(server.ws("/").await);
    let resumes_id = hooks.connected().await;
    let never = server.ws("/").await;
    let never_id = hooks.connected().await;

    let big = vec![0xabu8; 256 * 1024];
    let payload = |i: u32| {
        let mut p = i.to_be_bytes().to_vec();
        p.extend_from_slice(&big);
        Message::binary(p)
    };
    let mut resumed: Option<JoinHandle<(Option<CloseFrame>, usize)>> = None;
    let mut sent = 0u32;
    while server.hub.stats().slow_closed < 2 {
        assert!(
            sent < 2000,
            "no slow close after {sent} messages: {:?}",
            server.hub.stats()
        );
        let report = ws_broadcast(&server.hub, payload(sent));
        assert!(report.sent >= 2, "{report:?}");
        for ws in &mut healthy {
            let Message::Binary(got) = next_data(ws).await else {
                panic!("binary")
            };
            assert_eq!(got[..4], sent.to_be_bytes(), "in order, none lost");
            assert_eq!(got.len(), 4 + big.len());
        }
        sent += 1;
        if resumed.is_none() && server.hub.client(resumes_id).is_none_or(|c| c.is_closed()) {
            let mut ws = resumes.take().unwrap();
            resumed = Some(tokio::spawn(async move { until_close(&mut ws).await }));
        }
    }
    assert!(
        sent > 4,
        "the socket buffers filled first ({sent} messages)"
    );
    let (frame, data) = resumed.expect("resumed").await.unwrap();
    assert_eq!(code(&frame), Some(1013), "{frame:?} after {data} messages");
    assert!(
        data < sent as usize,
        "queued messages were dropped, {data} of {sent} arrived"
    );

    // Both stalled clients are gone from the hub, the one that never reads too.
    let mut gone = Vec::new();
    for _ in 0..2 {
        gone.push(hooks.disconnected().await);
    }
    gone.sort_by_key(|g| g.0);
    assert_eq!(
        gone.iter().map(|g| g.0).collect::<Vec<_>>(),
        [resumes_id, never_id]
    );
    for (id, why) in &gone {
        assert_eq!(closed_by_server_with(why), Some(1013), "{id}: {why:?}");
    }
    let st = server.hub.stats();
    assert_eq!((st.slow_closed, st.connections), (2, 2), "{st:?}");

    // The readers keep receiving everything.
    for i in sent..sent + 20 {
        ws_broadcast(&server.hub, payload(i));
        for ws in &mut healthy {
            let Message::Binary(got) = next_data(ws).await else {
                panic!("binary")
            };
            assert_eq!(got[..4], i.to_be_bytes());
        }
    }
    drop((never, healthy));
    for _ in 0..2 {
        hooks.disconnected().await;
    }
    assert_eq!(server.stop().await.aborted, 0);
}

/// 4. Oversize messages (1009), invalid UTF-8 (1007) and protocol errors
/// (1002) close only their own connection; another one keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_only_their_connection_with_the_right_code() {
    let _shared = PROCESS.read().await;
    let (server, mut hooks) = hooked_server(
        HubConfig::default(),
        WsConfig {
            max_message_size: 1024,
            max_frame_size: 1024,
            ..echo()
        },
        Duration::from_secs(5),
    )
    .await;
    let mut good = server.ws("/").await;
    let good_id = hooks.connected().await;
    echoes(&mut good, "before").await;

    // Oversize, from the real client: one 2 KiB frame.
    let mut big = server.ws("/").await;
    let big_id = hooks.connected().await;
    echoes(&mut big, "small is fine").await;
    big.send(Message::text("x".repeat(2048))).await.unwrap();
    let (frame, _) = until_close(&mut big).await;
    assert_eq!(code(&frame), Some(1009), "{frame:?}");
    let (id, why) = hooks.disconnected().await;
    assert_eq!(
        (id, closed_by_server_with(&why)),
        (big_id, Some(1009)),
        "{why:?}"
    );
    echoes(&mut good, "after 1009").await;

    type Case = (&'static str, Vec<u8>, u16);
    let cases: Vec<Case> = vec![
        (
            "a message over the limit in small fragments",
            [
                raw_frame(0x01, &[b'a'; 500]),
                raw_frame(0x00, &[b'b'; 500]),
                raw_frame(0x00, &[b'c'; 500]),
                raw_frame(0x80, &[b'd'; 10]),
            ]
            .concat(),
            1009,
        ),
        (
            "invalid UTF-8 in a text frame",
            raw_frame(0x81, &[b'o', b'k', 0xff, 0xfe]),
            1007,
        ),
        (
            "invalid UTF-8 split over fragments",
            [raw_frame(0x01, b"ok \xe2\x82"), raw_frame(0x80, b"\x28")].concat(),
            1007,
        ),
        ("a reserved opcode", raw_frame(0x83, b"x"), 1002),
        ("RSV1 without an extension", raw_frame(0xC1, b"x"), 1002),
        ("a fragmented ping", raw_frame(0x09, b"x"), 1002),
        (
            "a continuation with nothing to continue",
            raw_frame(0x80, b"x"),
            1002,
        ),
        ("an unmasked client frame", vec![0x81, 0x01, b'x'], 1002),
    ];
    for (what, bytes, want) in cases {
        let mut raw = raw_connect(server.addr, "/").await;
        let id = hooks.connected().await;
        raw.write_all(&bytes).await.unwrap();
        assert_eq!(
            raw_close_code(&mut raw).await,
            Some(Some(want)),
            "{what}: the close code"
        );
        let (gone, why) = hooks.disconnected().await;
        assert_eq!(gone, id, "{what}: only this connection");
        assert_eq!(closed_by_server_with(&why), Some(want), "{what}: {why:?}");
        echoes(&mut good, &format!("after {what}")).await;
    }
    assert_eq!(server.hub.stats().connections, 1);
    assert!(server.hub.client(good_id).is_some());
    drop(good);
    assert_eq!(hooks.disconnected().await.0, good_id);
    assert_eq!(server.stop().await.aborted, 0);
}

/// 5. 10,000 connect/disconnect cycles on the reference server's `/ws`, half
/// with a close handshake and half by dropping the socket, 8 at a time,
/// leave no connection in the hub, no task alive and no growing memory.
///
/// The memory bound: the RSS after 10,000 cycles may exceed the RSS after the
/// first 1,000 (allocator arenas, tungstenite's and hyper's buffers and the
/// runtime are warm by then) by at most 2 MiB; measured here it grows by
/// 0.1-0.3 MiB. A connection that leaked would keep at least its 2 KiB read
/// buffer, its two tasks and its hub entry, several KiB; 9,000 of them are
/// well over 20 MiB, and 2 MiB over 9,000 cycles is a leak of at most about
/// 230 bytes per cycle (a planted 1 KiB leak per connection grows it by 12 MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connect_disconnect_cycles_leave_nothing_behind() {
    let _alone = PROCESS.write().await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let server = Server::reference(Duration::from_secs(5)).await;
    let before_tasks = metrics.num_alive_tasks();
    let started = Instant::now();

    async fn cycles(addr: SocketAddr, from: usize, to: usize) {
        const PARALLEL: usize = 8;
        let mut workers = tokio::task::JoinSet::new();
        for w in 0..PARALLEL {
            workers.spawn(async move {
                for i in (from + w..to).step_by(PARALLEL) {
                    let mut ws = ws_connect(addr, "/ws").await;
                    if i % 2 == 0 {
                        ws.close(None).await.unwrap();
                        // Read until the server's close reply, then the end.
                        while let Some(Ok(_)) = ws.next().await {}
                    } else {
                        drop(ws);
                    }
                }
            });
        }
        while let Some(r) = workers.join_next().await {
            r.unwrap();
        }
    }

    cycles(server.addr, 0, 1000).await;
    server.connections(0).await;
    let rss_1k = rss_kib();
    cycles(server.addr, 1000, 10_000).await;
    server.connections(0).await;
    let rss_10k = rss_kib();
    let elapsed = started.elapsed();
    eprintln!(
        "10,000 cycles in {elapsed:?}; RSS {rss_1k} KiB after 1,000, {rss_10k} KiB after 10,000"
    );

    let st = server.hub.stats();
    assert_eq!(
        (st.connections, st.connected, st.disconnected),
        (0, 10_000, 10_000),
        "{st:?}"
    );
    assert!(
        rss_10k <= rss_1k + 2 * 1024,
        "RSS grew from {rss_1k} KiB to {rss_10k} KiB"
    );
    // Connection, reader and writer tasks end with their sockets. The count
    // has no signal of its own, so poll it, bounded.
    let deadline = tokio::time::Instant::now() + WAIT;
    while metrics.num_alive_tasks() > before_tasks {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} tasks alive, {before_tasks} before",
            metrics.num_alive_tasks()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(server.stop().await.aborted, 0);
}

/// 6. Shutdown with open sockets (both hubs of the reference server): every
/// client gets 1001 Going Away, and `http_serve` returns long before its 30 s
/// drain timeout, aborting nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_1001_to_every_socket_and_returns_within_the_drain_timeout() {
    let _shared = PROCESS.read().await;
    let server = Server::reference(Duration::from_secs(30)).await;
    let mut readers = Vec::new();
    for path in ["/ws", "/ws", "/ws", "/echo", "/echo"] {
        let mut ws = server.ws(path).await;
        // One round trip first, so the connection is registered and live.
        ws.send(Message::text("hi")).await.unwrap();
        assert_eq!(next_text(&mut ws).await, "hi");
        readers.push(tokio::spawn(async move {
            let (frame, _) = until_close(&mut ws).await;
            // tungstenite answers the close; the stream then ends.
            let end = tokio::time::timeout(WAIT, ws.next())
                .await
                .expect("the end");
            (
                frame,
                end.is_none() || matches!(end, Some(Err(WsError::ConnectionClosed))),
            )
        }));
    }
    server.connections(3).await;
    let started = Instant::now();
    let stats = server.stop().await;
    let took = started.elapsed();
    assert_eq!(stats.aborted, 0, "{stats:?}");
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    for r in readers {
        let (frame, ended) = r.await.unwrap();
        assert_eq!(code(&frame), Some(1001), "{frame:?}");
        assert!(ended, "the stream ended after the close");
    }
}

/// 6b. Shutdown also reaches a connection whose writer is blocked on a full
/// socket (a client that stopped reading): it is closed within its close
/// timeout instead of holding the drain until the server aborts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_reaches_a_client_whose_socket_is_full() {
    let _shared = PROCESS.read().await;
    let (server, mut hooks) = hooked_server(
        HubConfig {
            queue_messages: 4,
            slow: ws_hub::SlowPolicy::Drop,
            ..HubConfig::default()
        },
        WsConfig {
            close_timeout: Duration::from_millis(500),
            ..WsConfig::default()
        },
        Duration::from_secs(30),
    )
    .await;
    let mut reader = server.ws("/").await;
    hooks.connected().await;
    let stalled = server.ws("/").await;
    let stalled_id = hooks.connected().await;
    let big = Message::binary(vec![7u8; 256 * 1024]);
    // Paced by a client that reads each message: once the stalled client's
    // outbox has dropped messages over several rounds in which the other
    // writer wrote 256 KiB each, its writer is stuck on the full socket.
    let mut rounds_dropping = 0;
    let mut sent = 0;
    while rounds_dropping < 3 {
        assert!(sent < 2000, "the socket never filled");
        let report = ws_broadcast(&server.hub, big.clone());
        next_data(&mut reader).await;
        sent += 1;
        rounds_dropping = if report.dropped == 1 {
            rounds_dropping + 1
        } else {
            0
        };
    }
    let reading = tokio::spawn(async move { until_close(&mut reader).await.0 });
    let started = Instant::now();
    let stats = server.stop().await;
    let took = started.elapsed();
    assert_eq!(stats.aborted, 0, "{stats:?}");
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    assert_eq!(code(&reading.await.unwrap()), Some(1001));
    let mut gone = [hooks.disconnected().await, hooks.disconnected().await];
    gone.sort_by_key(|g| g.0 != stalled_id);
    assert_eq!(gone[0].0, stalled_id);
    assert_eq!(
        closed_by_server_with(&gone[0].1),
        Some(1001),
        "{:?}",
        gone[0].1
    );
    drop(stalled);
}

/// 7. Refusals over real HTTP: a forbidden Origin is 403 (default
/// `SameHost`), a full server 503 with a JSON body and `Retry-After`, a GET
/// without `Upgrade` 400, a wrong version 426; the same host's origin and the
/// real client without an Origin are accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_refusals_answer_403_503_400_426() {
    let _shared = PROCESS.read().await;
    let stats = WsStats::default();
    let (server, mut hooks) = hooked_server(
        HubConfig::default(),
        WsConfig {
            max_connections: 1,
            stats: stats.clone(),
            ..echo()
        },
        Duration::from_secs(5),
    )
    .await;
    let addr = server.addr;

    let (status, _, body) = http_request(addr, "/ws", &[("host", addr.to_string())]).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("Upgrade"), "{body}");

    let (status, headers, _) = http_request(
        addr,
        "/ws",
        &handshake_headers(addr, &[("sec-websocket-version", "8".into())]),
    )
    .await;
    assert_eq!(status, 426);
    assert_eq!(headers["sec-websocket-version"], "13");

    let (status, _, body) = http_request(
        addr,
        "/ws",
        &handshake_headers(addr, &[("origin", "http://evil.example".into())]),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    // The real client with a forbidden Origin: refused the same way.
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    match client_async(req, TcpStream::connect(addr).await.unwrap()).await {
        Err(WsError::Http(res)) => assert_eq!(res.status(), 403),
        other => panic!("expected 403, got {:?}", other.map(|(_, r)| r.status())),
    }
    assert_eq!(server.hub.stats().connected, 0, "nothing was registered");

    // The same host's own page may connect; it takes the one slot.
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("origin", format!("http://{addr}").parse().unwrap());
    let (mut first, _) = client_async(req, TcpStream::connect(addr).await.unwrap())
        .await
        .expect("same-host origin accepted");
    let first_id = hooks.connected().await;
    echoes(&mut first, "in").await;

    let (status, headers, body) = http_request(addr, "/ws", &handshake_headers(addr, &[])).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(headers["content-type"], "application/json");
    assert!(headers.contains_key("retry-after"));
    let json: serde_json::Value = serde_json::from_str(&body).expect("a JSON body");
    assert!(json["error"].is_string(), "{json}");
    match client_async(
        format!("ws://{addr}/ws"),
        TcpStream::connect(addr).await.unwrap(),
    )
    .await
    {
        Err(WsError::Http(res)) => assert_eq!(res.status(), 503),
        other => panic!("expected 503, got {:?}", other.map(|(_, r)| r.status())),
    }

    // The slot frees when the first client leaves.
    first.close(None).await.unwrap();
    assert_eq!(hooks.disconnected().await.0, first_id);
    let mut again = server.ws("/ws").await;
    let again_id = hooks.connected().await;
    echoes(&mut again, "back").await;
    assert_eq!(server.hub.stats().connected, 2);
    drop(again);
    assert_eq!(hooks.disconnected().await.0, again_id);
    // Each refusal was counted under its reason, each message read once.
    let counts: Vec<(&str, u64)> = Refusal::ALL
        .iter()
        .map(|r| (r.as_str(), stats.refused(*r)))
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(
        counts,
        [("handshake", 2), ("origin", 2), ("connections", 2)]
    );
    assert_eq!(stats.received(), 2);
    let hub = server.hub.stats();
    assert_eq!((hub.written, hub.bytes_out), (2, 6), "two echoes, 6 bytes");
    assert_eq!(server.stop().await.aborted, 0);
}

/// 8. Pings: a client gets pings at the interval, and its automatic pongs
/// keep it alive past the idle timeout; a raw client that never answers is
/// closed (1001, reason `idle timeout`) and leaves the hub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_keep_answering_clients_and_idle_ones_are_closed() {
    let _shared = PROCESS.read().await;
    let (server, mut hooks) = hooked_server(
        HubConfig::default(),
        WsConfig {
            ping_interval: Duration::from_millis(50),
            idle_timeout: Duration::from_millis(300),
            close_timeout: Duration::from_millis(300),
            ..echo()
        },
        Duration::from_secs(5),
    )
    .await;
    let mut alive = server.ws("/").await;
    let alive_id = hooks.connected().await;
    // The live client reads all along (tungstenite answers each ping with a
    // pong while it reads), reporting the pings it sees.
    let (ping_tx, mut ping_rx) = mpsc::unbounded_channel();
    let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        loop {
            tokio::select! {
                msg = alive.next() => match msg {
                    Some(Ok(Message::Ping(_))) => { let _ = ping_tx.send(Instant::now()); }
                    other => panic!("only pings expected, got {other:?}"),
                },
                _ = &mut stop_rx => return alive,
            }
        }
    });
    let started = Instant::now();
    for _ in 0..12 {
        tokio::time::timeout(WAIT, ping_rx.recv())
            .await
            .expect("a ping in time")
            .unwrap();
    }
    // 12 pings at 50 ms: well past the 300 ms idle timeout, still open.
    assert!(started.elapsed() >= Duration::from_millis(500));

    // Never reads, never writes after the handshake.
    let mut raw = raw_connect(server.addr, "/").await;
    let raw_id = hooks.connected().await;
    let (gone, why) = hooks.disconnected().await;
    assert_eq!(gone, raw_id);
    match &why {
        Disconnect::ClosedByServer(Some(f)) => {
            assert_eq!(f.code, CloseCode::Away);
            assert_eq!(f.reason.as_str(), "idle timeout");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(server.hub.stats().connections, 1);
    assert!(server.hub.client(alive_id).is_some());
    // What it would have read: pings, then the close.
    assert_eq!(raw_close_code(&mut raw).await, Some(Some(1001)));

    stop_tx.send(()).unwrap();
    let mut alive = reader.await.unwrap();
    echoes(&mut alive, "still here").await;
    drop(alive);
    assert_eq!(hooks.disconnected().await.0, alive_id);
    assert_eq!(server.hub.stats().connections, 0);
    assert_eq!(server.stop().await.aborted, 0);
}

/// 8b. The idle timeout also ends a connection whose writer is blocked on a
/// full socket (no new message arrives to trip the slow-client policy): the
/// writer keeps watching the clock while it waits on the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_a_client_whose_socket_is_full() {
    let _shared = PROCESS.read().await;
    let idle = Duration::from_secs(3);
    let (server, mut hooks) = hooked_server(
        HubConfig {
            queue_messages: 10_000,
            queue_bytes: 1 << 30,
            ..HubConfig::default()
        },
        WsConfig {
            ping_interval: Duration::from_millis(50),
            idle_timeout: idle,
            close_timeout: Duration::from_millis(300),
            ..WsConfig::default()
        },
        Duration::from_secs(5),
    )
    .await;
    let mut reader = server.ws("/").await;
    let reader_id = hooks.connected().await;
    let stalled = server.ws("/").await;
    let stalled_id = hooks.connected().await;
    let started = Instant::now();
    let big = Message::binary(vec![7u8; 256 * 1024]);
    // Paced by the reader, as in the shutdown case: a growing outbox over
    // several rounds means the stalled writer is stuck on its socket.
    let stalled_client = server.hub.client(stalled_id).unwrap();
    let mut sent = 0;
    while stalled_client.queued() < 3 {
        assert!(sent < 2000, "the socket never filled");
        ws_broadcast(&server.hub, big.clone());
        next_data(&mut reader).await;
        sent += 1;
    }
    assert!(
        started.elapsed() < idle,
        "the socket filled before the idle timeout ({:?})",
        started.elapsed()
    );
    // The reader reads on (and so answers pings) until the shutdown's close.
    let reading = tokio::spawn(async move { until_close(&mut reader).await });
    let (gone, why) = hooks.disconnected().await;
    assert_eq!(gone, stalled_id);
    match &why {
        Disconnect::ClosedByServer(Some(f)) => assert_eq!(f.reason.as_str(), "idle timeout"),
        other => panic!("{other:?}"),
    }
    assert!(server.hub.client(reader_id).is_some());
    assert_eq!(server.hub.stats().connections, 1);
    let stats = server.stop().await;
    assert_eq!(stats.aborted, 0);
    assert_eq!(code(&reading.await.unwrap().0), Some(1001));
    drop(stalled);
}
