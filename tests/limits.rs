//! `ws_handler`'s limits and async hooks end to end: real TCP on 127.0.0.1:0,
//! `http_serve`, a real tokio-tungstenite client (or raw bytes where the
//! test must control them).
//!
//! The timeouts under test are short (a few hundred milliseconds): what is
//! tested is that the clock is watched, so time has to pass.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::SinkExt;
use http::StatusCode;
use http_types::text;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{RwLock, mpsc};
use tokio_tungstenite::client_async;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use ws_broadcast::ws_broadcast;
use ws_handler::{
    Disconnect, MessageRate, WsConfig, authenticate, identify, on_connect, ws_handler,
};
use ws_hub::{HubConfig, Identity, WsHub};

mod common;
mod serving;
use common::*;
use serving::Serving;

/// The burst test takes this alone: it needs most of the process's files.
static PROCESS: RwLock<()> = RwLock::const_new(());

async fn hooked_server(hub: HubConfig, config: WsConfig) -> (Server, Hooks) {
    let hub = WsHub::new(hub);
    let (config, hooks) = hooked(config);
    let server = Server::start(ws_handler(hub.clone(), config), hub, Duration::from_secs(5)).await;
    (server, hooks)
}

fn echo() -> WsConfig {
    WsConfig {
        on_message: Some(Arc::new(|client, msg| {
            let _ = client.try_send(msg);
        })),
        ..WsConfig::default()
    }
}

/// The status line and head of a raw upgrade request to `addr`.
async fn upgrade_status(addr: SocketAddr, extra: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        match tokio::time::timeout(WAIT, s.read(&mut b))
            .await
            .expect("an answer in time")
        {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    (s, String::from_utf8_lossy(&head).into_owned())
}

fn close_reason(frame: &Option<CloseFrame>) -> (Option<u16>, String) {
    (
        code(frame),
        frame
            .as_ref()
            .map(|f| f.reason.to_string())
            .unwrap_or_default(),
    )
}

/// An identify hook that never answers is cut off at the hook timeout with
/// `401`; an async one that answers identifies the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_identify_hook_identifies_or_times_out_with_401() {
    let _shared = PROCESS.read().await;
    let (server, mut hooks) = hooked_server(
        HubConfig::default(),
        WsConfig {
            hook_timeout: Duration::from_millis(300),
            identify: Some(identify(|req| {
                let who = req
                    .headers()
                    .get("x-user")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                async move {
                    match who {
                        // A lookup that takes a while, as a database would.
                        Some(user) => {
                            tokio::task::yield_now().await;
                            Ok(Identity::user(user))
                        }
                        None => std::future::pending().await,
                    }
                }
            })),
            ..echo()
        },
    )
    .await;
    let (_s, head) = upgrade_status(server.addr, "").await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(server.hub.is_empty());

    let (_s, head) = upgrade_status(server.addr, "x-user: ana\r\n").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let id = hooks.connected().await;
    assert_eq!(server.hub.client(id).unwrap().user(), Some("ana"));
    drop(_s);
    hooks.disconnected().await;
    assert_eq!(server.stop().await.aborted, 0);
}

/// A connect hook that never answers closes its connection with `1008`; a
/// refusing one with its own frame; messages it sends arrive first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_hook_that_times_out_closes_1008() {
    let _shared = PROCESS.read().await;
    let hub = WsHub::new(HubConfig::default());
    let config = WsConfig {
        hook_timeout: Duration::from_millis(300),
        on_connect: Some(on_connect(|client| {
            let client = client.clone();
            async move {
                let _ = client.try_send(Message::text("welcome"));
                match client.id() {
                    1 => std::future::pending().await,
                    2 => Err(CloseFrame {
                        code: CloseCode::Library(4001),
                        reason: "not today".into(),
                    }),
                    _ => Ok(()),
                }
            }
        })),
        ..echo()
    };
    let server = Server::start(ws_handler(hub.clone(), config), hub, Duration::from_secs(5)).await;
    for (want_code, want_reason) in [(1008, "the connect hook timed out"), (4001, "not today")] {
        let mut ws = server.ws("/").await;
        assert_eq!(next_text(&mut ws).await, "welcome");
        let (frame, _) = until_close(&mut ws).await;
        assert_eq!(
            close_reason(&frame),
            (Some(want_code), want_reason.to_string())
        );
    }
    let mut ws = server.ws("/").await;
    assert_eq!(next_text(&mut ws).await, "welcome");
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "still here");
    drop(ws);
    assert_eq!(server.stop().await.aborted, 0);
}

/// With an authenticate hook the first message is the credential: a good one
/// registers the connection with that identity, a bad one or silence closes
/// it with `1008` before it is registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_message_can_authenticate() {
    let _shared = PROCESS.read().await;
    let (server, mut hooks) = hooked_server(
        HubConfig::default(),
        WsConfig {
            hook_timeout: Duration::from_millis(400),
            authenticate: Some(authenticate(|_so_far: &Identity, msg: Message| {
                let token = msg.to_text().unwrap_or("").to_string();
                async move {
                    match token.strip_prefix("token:") {
                        Some(user) if !user.is_empty() => Ok(Identity::user(user)),
                        _ => Err(CloseFrame {
                            code: CloseCode::Policy,
                            reason: "bad token".into(),
                        }),
                    }
                }
            })),
            ..echo()
        },
    )
    .await;
    let mut ws = server.ws("/").await;
    ws.send(Message::text("token:bo")).await.unwrap();
    let id = hooks.connected().await;
    assert_eq!(server.hub.client(id).unwrap().user(), Some("bo"));
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(
        next_text(&mut ws).await,
        "hi",
        "later messages are ordinary"
    );

    let mut bad = server.ws("/").await;
    bad.send(Message::text("letmein")).await.unwrap();
    let (frame, _) = until_close(&mut bad).await;
    assert_eq!(close_reason(&frame), (Some(1008), "bad token".into()));

    let mut silent = server.ws("/").await;
    let (frame, _) = until_close(&mut silent).await;
    assert_eq!(
        close_reason(&frame),
        (Some(1008), "authentication timed out".into())
    );
    assert_eq!(
        server.hub.len(),
        1,
        "refused connections were never registered"
    );
    drop((ws, bad, silent));
    hooks.disconnected().await;
    assert_eq!(server.stop().await.aborted, 0);
}

/// 4,000 upgrades at once against a limit of 1,000, through an identify
/// hook that yields (so many are in flight together): exactly 1,000 get
/// `101`, the rest `503` with `Retry-After`; once they close, new ones fit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_upgrades_never_passes_the_connection_limit() {
    let _alone = PROCESS.write().await;
    // Both ends of 4,000 sockets live in this process.
    let _ = rlimit::increase_nofile_limit(20_000);
    let hub = WsHub::new(HubConfig::default());
    let config = WsConfig {
        max_connections: 1000,
        identify: Some(identify(|_req| async {
            tokio::task::yield_now().await;
            Ok(Identity::default())
        })),
        ..echo()
    };
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(4096).unwrap();
    let serving = Serving::on(
        listener,
        ws_handler(hub.clone(), config),
        Duration::from_secs(5),
    );
    let addr = serving.addr;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let start = Arc::new(tokio::sync::Barrier::new(4000));
    for _ in 0..4000 {
        let (tx, start) = (tx.clone(), start.clone());
        tokio::spawn(async move {
            start.wait().await;
            let (s, head) = upgrade_status(addr, "").await;
            let _ = tx.send((s, head));
        });
    }
    drop(tx);
    let (mut upgraded, mut refused) = (Vec::new(), 0);
    while let Some((s, head)) = rx.recv().await {
        if head.starts_with("HTTP/1.1 101") {
            upgraded.push(s);
        } else {
            assert!(head.starts_with("HTTP/1.1 503"), "{head}");
            assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
            refused += 1;
        }
    }
    assert_eq!((upgraded.len(), refused), (1000, 3000));
    drop(upgraded);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (s, head) = upgrade_status(addr, "").await;
        if head.starts_with("HTTP/1.1 101") {
            drop(s);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "slots never freed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(serving.stop().await.aborted, 0);
}

/// `max_per_ip` counts connections per address: the third from 127.0.0.1
/// gets `503`; closing one makes room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_address_limit_refuses_the_next_connection() {
    let _shared = PROCESS.read().await;
    let (server, mut hooks) = hooked_server(
        HubConfig::default(),
        WsConfig {
            max_per_ip: Some(2),
            ..echo()
        },
    )
    .await;
    let a = server.ws("/").await;
    let b = server.ws("/").await;
    hooks.connected().await;
    hooks.connected().await;
    let (_s, head) = upgrade_status(server.addr, "").await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    drop(a);
    hooks.disconnected().await;
    let c = server.ws("/").await;
    server.connections(2).await;
    drop((b, c));
    server.connections(0).await;
    assert_eq!(server.stop().await.aborted, 0);
}

/// A peer that stops reading is dropped once a write has made no progress
/// for the write timeout, and reported closed with `1008 write timeout`;
/// the other client receives everything meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_is_dropped_at_the_write_timeout() {
    let _shared = PROCESS.read().await;
    let (server, mut hooks) = hooked_server(
        // A roomy outbox, so the slow-client policy does not close it first.
        HubConfig {
            queue_messages: 100_000,
            queue_bytes: 1 << 30,
            ..HubConfig::default()
        },
        WsConfig {
            write_timeout: Duration::from_millis(300),
            ..WsConfig::default()
        },
    )
    .await;
    let mut reader = server.ws("/").await;
    hooks.connected().await;
    let stalled = server.ws("/").await;
    let stalled_id = hooks.connected().await;
    let big = Message::binary(vec![7u8; 256 * 1024]);
    let stalled_client = server.hub.client(stalled_id).unwrap();
    let mut sent = 0;
    // Keep the stalled outbox holding a few messages until the server drops
    // it: a queue that reached 3 may still drain into socket buffers that
    // grow (loopback autotuning) when the machine is slow, so one burst is
    // not enough to stall the write.
    let (gone, why) = loop {
        if stalled_client.queued() < 3 && !stalled_client.is_closed() {
            assert!(sent < 4000, "the socket never filled");
            ws_broadcast(&server.hub, big.clone());
            next_data(&mut reader).await;
            sent += 1;
            continue;
        }
        if let Ok(gone) =
            tokio::time::timeout(Duration::from_millis(100), hooks.disconnected()).await
        {
            break gone;
        }
    };
    assert_eq!(gone, stalled_id);
    assert_eq!(closed_by_server_with(&why), Some(1008), "{why:?}");
    match &why {
        Disconnect::ClosedByServer(Some(f)) => assert_eq!(f.reason.as_str(), "write timeout"),
        other => panic!("{other:?}"),
    }
    ws_broadcast(&server.hub, Message::text("after"));
    while next_data(&mut reader).await != Message::text("after") {}
    drop((stalled, reader));
    hooks.disconnected().await;
    assert_eq!(server.stop().await.aborted, 0);
}

/// Messages over the connection's rate close it with `1008`; another
/// connection is not disturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_over_the_rate_close_1008() {
    let _shared = PROCESS.read().await;
    let handled = Arc::new(AtomicUsize::new(0));
    let counted = handled.clone();
    let (server, _hooks) = hooked_server(
        HubConfig::default(),
        WsConfig {
            message_rate: Some(MessageRate {
                per_second: 1.0,
                burst: 20,
            }),
            on_message: Some(Arc::new(move |client, msg| {
                counted.fetch_add(1, Ordering::Relaxed);
                let _ = client.try_send(msg);
            })),
            ..WsConfig::default()
        },
    )
    .await;
    let mut calm = server.ws("/").await;
    let mut flood = server.ws("/").await;
    for i in 0..100 {
        if flood.send(Message::text(format!("m{i}"))).await.is_err() {
            break;
        }
    }
    let (frame, echoed) = until_close(&mut flood).await;
    assert_eq!(
        close_reason(&frame),
        (Some(1008), "message rate exceeded".into())
    );
    assert!(echoed <= 20, "at most the burst was handled: {echoed}");
    calm.send(Message::text("fine")).await.unwrap();
    assert_eq!(next_text(&mut calm).await, "fine");
    assert!(handled.load(Ordering::Relaxed) <= 21);
    drop(calm);
    drop(flood);
    assert_eq!(server.stop().await.aborted, 0);
}

/// A refused identify is still the hook's own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identify_refusal_is_the_answer() {
    let _shared = PROCESS.read().await;
    let (server, _hooks) = hooked_server(
        HubConfig::default(),
        WsConfig {
            identify: Some(identify(|_req| async {
                Err(text(StatusCode::FORBIDDEN, "no\n"))
            })),
            ..echo()
        },
    )
    .await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let err = client_async(format!("ws://{}/", server.addr), stream)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
    assert_eq!(server.stop().await.aborted, 0);
}
