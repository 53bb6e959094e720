//! Rooms, users and targeted events end to end: the reference
//! server's `/hub` and `POST /emit`, and small `ws_handler` + `ws_control`
//! apps built here, on `http_serve` over real TCP on 127.0.0.1:0, with real
//! tokio-tungstenite clients.
//!
//! Waiting is on signals: `connection.established` (sent from the connect
//! hook, so a client that has read it is registered), answers and events
//! arriving at the clients, the hooks of the apps built here. That a client
//! did *not* get an event, or got it only once, is proven without waiting: a
//! marker broadcast after it is the next thing the client receives (one
//! outbox is FIFO, so anything queued before the marker would come first).
//! Only disconnects on the reference server, whose hub has no hook, are
//! polled, bounded by [`WAIT`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use http_body_util::BodyExt;
use http_types::{Request, Response, text};
use hyper_util::rt::TokioIo;
use rt_server::Options;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::client_async;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use ws_control::{ControlConfig, control_hooks};
use ws_emit::ws_emit;
use ws_event::{Event, Target};
use ws_handler::{Disconnect, MessageHook, WsConfig, identify, ws_handler};
use ws_hub::{ClientId, HubConfig, Identity, WsClient, WsHub};
use ws_send::ws_send;
use ws_send_to::{SendToError, ws_send_to};

mod common;
mod serving;
use common::*;

const ANON: Option<&str> = None;

/// A connected client that has read its `connection.established`.
struct Peer {
    ws: Ws,
    id: ClientId,
}

impl Peer {
    async fn send(&mut self, msg: Value) {
        self.ws.send(Message::text(msg.to_string())).await.unwrap();
    }

    /// The next event, checked for the `{type, data, timestamp}` shape.
    async fn event(&mut self) -> Value {
        let text = next_text(&mut self.ws).await;
        let ev: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert!(ev["type"].is_string(), "{ev}");
        assert!(ev["timestamp"].as_i64().is_some_and(|t| t > 0), "{ev}");
        ev
    }

    /// The data of the next event, which must be of type `kind`.
    async fn expect(&mut self, kind: &str) -> Value {
        let ev = self.event().await;
        assert_eq!(ev["type"], kind, "client {}: {ev}", self.id);
        ev["data"].clone()
    }

    /// The next event is marker `n` (see [`mark`]): nothing else came first.
    async fn marker(&mut self, n: u64) {
        assert_eq!(self.expect("marker").await, json!(n), "client {}", self.id);
    }

    /// Sends `subscribe` and returns the answer (`subscribed` or `error`).
    async fn subscribe(&mut self, room: &str) -> Value {
        self.send(json!({"type": "subscribe", "room": room})).await;
        self.event().await
    }

    /// A close handshake, read through to the end of the stream.
    async fn close(mut self) {
        self.ws.close(None).await.unwrap();
        while let Some(Ok(_)) = tokio::time::timeout(WAIT, self.ws.next())
            .await
            .expect("the end of the stream in time")
        {}
    }
}

/// Opens `path` as `user` (`Authorization: Bearer <user>`; none: anonymous);
/// nothing read yet.
async fn open(addr: SocketAddr, path: &str, user: Option<&str>) -> Ws {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    if let Some(u) = user {
        req.headers_mut()
            .insert("authorization", format!("Bearer {u}").parse().unwrap());
    }
    let (ws, res) = client_async(req, TcpStream::connect(addr).await.unwrap())
        .await
        .expect("handshake");
    assert_eq!(res.status(), 101);
    ws
}

/// [`open`], then reads `connection.established`, which must name `user`.
async fn connect(addr: SocketAddr, path: &str, user: Option<&str>) -> Peer {
    let mut peer = Peer {
        ws: open(addr, path, user).await,
        id: 0,
    };
    let data = peer.expect("connection.established").await;
    assert_eq!(data["userId"], json!(user), "{data}");
    let id = data["clientId"].as_str().expect("the id as a string");
    peer.id = id.parse().expect("a numeric id");
    peer
}

/// Broadcasts marker `n` to every connection of `hub`; how many got it.
fn mark(hub: &WsHub, n: u64) -> usize {
    ws_emit(hub, &Event::new("marker", json!(n)), &Target::broadcast()).sent
}

/// The reference server; its `hub` is the one of `/hub`.
async fn reference() -> Server {
    let rt_server::App { handler, rooms, .. } = rt_server::app(Options {
        log: false,
        hub_identify: Some(rt_server::insecure_bearer_names()),
        ..Options::default()
    });
    Server::start(handler, rooms, Duration::from_secs(5)).await
}

/// Identity from `Authorization: Bearer <name>`, anonymous without one.
#[allow(clippy::result_large_err)] // the hook's shape: a refusal is a response
fn bearer(req: &Request) -> Result<Identity, Response> {
    match req.headers().get("authorization") {
        None => Ok(Identity::default()),
        Some(v) => match v.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) {
            Some(name) => Ok(Identity::user(name)),
            None => Err(text(StatusCode::UNAUTHORIZED, "bad bearer\n")),
        },
    }
}

/// An app on every path: the control protocol (`control`) in front of `app`,
/// with the [`Hooks`] signals; `config.identify` defaults to [`bearer`].
async fn control_server(
    hub: HubConfig,
    control: ControlConfig,
    config: WsConfig,
    app: Option<MessageHook>,
) -> (Server, Hooks) {
    let hub = WsHub::new(hub);
    let (mut config, hooks) = hooked(config);
    let (on_connect, on_message) =
        control_hooks(hub.clone(), control, config.on_connect.take(), app);
    config.on_connect = Some(on_connect);
    config.on_message = Some(on_message);
    if config.identify.is_none() {
        config.identify = Some(identify(|req| std::future::ready(bearer(req))));
    }
    let server = Server::start(ws_handler(hub.clone(), config), hub, Duration::from_secs(5)).await;
    (server, hooks)
}

fn any_room() -> ControlConfig {
    ControlConfig {
        guard: Some(Arc::new(|_: &WsClient, _: &str| true)),
        ..ControlConfig::default()
    }
}

/// One plain HTTP request; the status and the body.
async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .body(http_body_util::Full::new(hyper::body::Bytes::from(
            body.to_string(),
        )))
        .unwrap();
    let res = tokio::time::timeout(WAIT, sender.send_request(req))
        .await
        .expect("an answer in time")
        .unwrap();
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// `POST /emit?{query}` with `body`: must be 202; its JSON counts.
async fn emit(addr: SocketAddr, query: &str, body: &str) -> Value {
    let (status, answer) = http(addr, "POST", &format!("/emit?{query}"), body).await;
    assert_eq!(status, 202, "{answer}");
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

/// Waits until `done` holds. For the reference server's hub only: it has
/// no disconnect hook, and a client's stream ends before the server's
/// connection task unregisters it, so there is no signal to wait on.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}: timed out");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

// ---- the tests ----

/// nexus: connect and broadcast. Every connection gets its own id and the
/// identity of its upgrade request, and a broadcast event reaches each one,
/// encoded exactly as `{type, data, timestamp}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_broadcast_reach_every_connection() {
    let server = reference().await;
    let users = [Some("ana"), Some("bo"), ANON, ANON];
    let mut peers = Vec::new();
    for user in users {
        peers.push(connect(server.addr, "/hub", user).await);
    }
    let ids: BTreeSet<ClientId> = peers.iter().map(|p| p.id).collect();
    assert_eq!(ids.len(), 4, "distinct ids: {ids:?}");
    for (p, user) in peers.iter().zip(users) {
        let client = server.hub.client(p.id).expect("registered");
        assert_eq!(client.user(), user);
    }
    assert_eq!(server.hub.stats().connections, 4);
    assert_eq!(
        (server.hub.user_len("ana"), server.hub.user_len("bo")),
        (1, 1)
    );

    let ev = Event::new("news", json!({"n": 1, "s": "ü\"x"})).at(1_764_612_000);
    let report = ws_emit(&server.hub, &ev, &Target::broadcast());
    assert_eq!((report.sent, report.dropped, report.slow_closed), (4, 0, 0));
    for p in &mut peers {
        assert_eq!(
            next_text(&mut p.ws).await,
            r#"{"type":"news","data":{"n":1,"s":"ü\"x"},"timestamp":1764612000}"#
        );
    }
    drop(peers);
    server.connections(0).await;
    assert_eq!(server.stop().await.aborted, 0);
}

/// nexus: room targeting. `say` reaches the room's members only, as `said
/// {from, data}`; `say` from a non-member is an `error` event and reaches
/// nobody; `POST /emit?room=` reaches the members; after `unsubscribe` a
/// client gets nothing more from the room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_events_reach_only_the_members() {
    let server = reference().await;
    let mut ana = connect(server.addr, "/hub", Some("ana")).await;
    let mut bo = connect(server.addr, "/hub", Some("bo")).await;
    let mut cy = connect(server.addr, "/hub", Some("cy")).await;
    for p in [&mut ana, &mut bo] {
        let ev = p.subscribe("public-lobby").await;
        assert_eq!(ev["type"], "subscribed", "{ev}");
        assert_eq!(ev["data"], json!({"room": "public-lobby"}));
    }
    assert_eq!(
        server.hub.rooms(),
        BTreeMap::from([("public-lobby".to_string(), 2)])
    );

    ana.send(json!({"type": "say", "room": "public-lobby", "data": "hi"}))
        .await;
    for p in [&mut ana, &mut bo] {
        assert_eq!(p.expect("said").await, json!({"from": "ana", "data": "hi"}));
    }
    assert_eq!(mark(&server.hub, 1), 3);
    for p in [&mut cy, &mut ana, &mut bo] {
        p.marker(1).await;
    }

    // A non-member may not speak in the room.
    cy.send(json!({"type": "say", "room": "public-lobby", "data": "intrude"}))
        .await;
    let err = cy.expect("error").await;
    assert!(
        err["message"].as_str().unwrap().contains("not a member"),
        "{err}"
    );
    mark(&server.hub, 2);
    for p in [&mut ana, &mut bo, &mut cy] {
        p.marker(2).await;
    }

    let counts = emit(server.addr, "room=public-lobby", r#"{"x":1}"#).await;
    assert_eq!(counts["sent"], 2, "{counts}");
    for p in [&mut ana, &mut bo] {
        assert_eq!(p.expect("notice").await, json!({"x": 1}));
    }
    mark(&server.hub, 3);
    for p in [&mut cy, &mut ana, &mut bo] {
        p.marker(3).await;
    }

    // Unsubscribe (twice: idempotent), then the room is ana's alone.
    for _ in 0..2 {
        bo.send(json!({"type": "unsubscribe", "room": "public-lobby"}))
            .await;
        assert_eq!(
            bo.expect("unsubscribed").await,
            json!({"room": "public-lobby"})
        );
    }
    assert_eq!(server.hub.room_len("public-lobby"), 1);
    ana.send(json!({"type": "say", "room": "public-lobby", "data": "alone"}))
        .await;
    assert_eq!(
        ana.expect("said").await,
        json!({"from": "ana", "data": "alone"})
    );
    mark(&server.hub, 4);
    for p in [&mut bo, &mut cy, &mut ana] {
        p.marker(4).await;
    }
    drop((ana, bo, cy));
    server.connections(0).await;
    assert_eq!(server.stop().await.aborted, 0);
}

/// nexus: user targeting with several connections per user. A whisper and
/// `POST /emit?user=` reach every connection of that user and nobody else;
/// once one of them has gone, the others still get it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_events_reach_every_connection_of_the_user_and_nobody_else() {
    let server = reference().await;
    let mut anas = Vec::new();
    for _ in 0..3 {
        anas.push(connect(server.addr, "/hub", Some("ana")).await);
    }
    let mut bo = connect(server.addr, "/hub", Some("bo")).await;
    let mut anon = connect(server.addr, "/hub", ANON).await;
    assert_eq!(
        (server.hub.user_len("ana"), server.hub.user_len("bo")),
        (3, 1)
    );

    bo.send(json!({"type": "whisper", "user": "ana", "data": "psst"}))
        .await;
    for a in &mut anas {
        assert_eq!(
            a.expect("whispered").await,
            json!({"from": "bo", "data": "psst"})
        );
    }
    assert_eq!(mark(&server.hub, 1), 5);
    bo.marker(1).await;
    anon.marker(1).await;
    for a in &mut anas {
        a.marker(1).await;
    }

    let counts = emit(server.addr, "user=ana", "plain text").await;
    assert_eq!(counts["sent"], 3, "{counts}");
    for a in &mut anas {
        assert_eq!(a.expect("notice").await, json!("plain text"));
    }
    // An anonymous whisper says so.
    anon.send(json!({"type": "whisper", "user": "ana", "data": 2}))
        .await;
    for a in &mut anas {
        assert_eq!(
            a.expect("whispered").await,
            json!({"from": null, "data": 2})
        );
    }
    mark(&server.hub, 2);
    bo.marker(2).await;
    anon.marker(2).await;
    for a in &mut anas {
        a.marker(2).await;
    }

    // One of ana's connections leaves; the two others still get hers.
    anas.remove(1).close().await;
    until("ana down to 2 connections", || {
        server.hub.user_len("ana") == 2
    })
    .await;
    let counts = emit(server.addr, "user=ana", "again").await;
    assert_eq!(counts["sent"], 2, "{counts}");
    for a in &mut anas {
        assert_eq!(a.expect("notice").await, json!("again"));
    }
    mark(&server.hub, 3);
    bo.marker(3).await;
    anon.marker(3).await;
    drop((anas, bo, anon));
    server.connections(0).await;
    assert_eq!(server.stop().await.aborted, 0);
}

/// nexus: slow client closed. A room member that stops reading fills its
/// socket, then its outbox, and is closed with 1013 and leaves the room and
/// its user, while the members that read get every event, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_room_member_is_closed_with_1013_while_the_others_receive_everything() {
    let (server, mut hooks) = control_server(
        HubConfig {
            queue_messages: 4,
            ..HubConfig::default()
        },
        any_room(),
        WsConfig {
            close_timeout: Duration::from_secs(5),
            ..WsConfig::default()
        },
        None,
    )
    .await;
    let mut readers = Vec::new();
    for user in ["ana", "bo"] {
        let mut p = connect(server.addr, "/", Some(user)).await;
        assert_eq!(p.subscribe("room").await["type"], "subscribed");
        readers.push(p);
    }
    let mut slow = connect(server.addr, "/", Some("slow")).await;
    assert_eq!(slow.subscribe("room").await["type"], "subscribed");
    assert_eq!(server.hub.room_len("room"), 3);

    let pad = "x".repeat(256 * 1024);
    let tick = |seq: u64| Event::new("tick", json!({"seq": seq, "pad": pad}));
    let mut seq = 0u64;
    while server.hub.stats().slow_closed == 0 {
        assert!(seq < 2000, "no slow close after {seq} events");
        let report = ws_emit(&server.hub, &tick(seq), &Target::rooms(["room"]));
        assert!(report.sent >= 2, "{report:?}");
        for p in &mut readers {
            let data = p.expect("tick").await;
            assert_eq!(data["seq"], seq, "in order, none lost");
        }
        seq += 1;
    }
    assert!(
        seq > 4,
        "the socket filled before the outbox ({seq} events)"
    );
    // It reads again now: what was in flight, then the close frame.
    let (frame, _) = until_close(&mut slow.ws).await;
    assert_eq!(code(&frame), Some(1013), "{frame:?}");
    // Reading on sends tungstenite's close reply, so the server need not
    // wait out its close timeout; then the stream ends.
    while let Some(Ok(_)) = tokio::time::timeout(WAIT, slow.ws.next())
        .await
        .expect("the end of the stream in time")
    {}
    let (gone, why) = hooks.disconnected().await;
    assert_eq!(gone, slow.id);
    assert_eq!(closed_by_server_with(&why), Some(1013), "{why:?}");
    assert_eq!(server.hub.room_len("room"), 2);
    assert_eq!(server.hub.user_len("slow"), 0);
    assert_eq!(server.hub.stats().slow_closed, 1);

    for s in seq..seq + 10 {
        let report = ws_emit(&server.hub, &tick(s), &Target::rooms(["room"]));
        assert_eq!((report.sent, report.slow_closed), (2, 0), "{report:?}");
        for p in &mut readers {
            assert_eq!(p.expect("tick").await["seq"], s);
        }
    }
    drop((readers, slow));
    for _ in 0..2 {
        hooks.disconnected().await;
    }
    assert_eq!(server.stop().await.aborted, 0);
}

/// Security: `authenticate` reports the identity the server established
/// and cannot claim another; a whisper to the claimed user does not reach
/// the claimant, and the claimant may not join the claimed user's room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_claim_another_user() {
    let server = reference().await;
    let mut mallory = connect(server.addr, "/hub", Some("mallory")).await;
    let mut ana = connect(server.addr, "/hub", Some("ana")).await;
    let mut anon = connect(server.addr, "/hub", ANON).await;
    let claim = json!({"type": "authenticate", "userId": "ana", "token": "forged"});
    mallory.send(claim.clone()).await;
    assert_eq!(
        mallory.expect("authenticated").await,
        json!({"userId": "mallory", "status": "authenticated"})
    );
    anon.send(claim).await;
    assert_eq!(
        anon.expect("authenticated").await,
        json!({"userId": null, "status": "anonymous"})
    );
    assert_eq!(
        (server.hub.user_len("ana"), server.hub.user_len("mallory")),
        (1, 1)
    );
    assert_eq!(
        server.hub.client(mallory.id).unwrap().user(),
        Some("mallory")
    );
    assert_eq!(server.hub.client(anon.id).unwrap().user(), None);

    anon.send(json!({"type": "whisper", "user": "ana", "data": "for ana"}))
        .await;
    assert_eq!(
        ana.expect("whispered").await,
        json!({"from": null, "data": "for ana"})
    );
    mark(&server.hub, 1);
    mallory.marker(1).await;
    anon.marker(1).await;
    ana.marker(1).await;

    // Nor does the claim open ana's private room; whispers from mallory
    // still say mallory.
    let ev = mallory.subscribe("private-ana").await;
    assert_eq!(ev["type"], "error", "{ev}");
    assert_eq!(ev["data"]["room"], "private-ana");
    assert_eq!(server.hub.room_len("private-ana"), 0);
    mallory
        .send(json!({"type": "whisper", "user": "ana", "data": "hi"}))
        .await;
    assert_eq!(
        ana.expect("whispered").await,
        json!({"from": "mallory", "data": "hi"})
    );
    drop((mallory, ana, anon));
    server.connections(0).await;
    assert_eq!(server.stop().await.aborted, 0);
}

/// Security: without a room guard (`ControlConfig::default()`) every
/// subscribe is refused with an `error` event, nothing joins, and the
/// connection stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_is_refused_without_a_guard() {
    let (server, mut hooks) = control_server(
        HubConfig::default(),
        ControlConfig::default(),
        WsConfig::default(),
        None,
    )
    .await;
    let mut ana = connect(server.addr, "/", Some("ana")).await;
    assert_eq!(hooks.connected().await, ana.id);
    for room in ["public-lobby", "private-ana", "anything"] {
        let ev = ana.subscribe(room).await;
        assert_eq!(ev["type"], "error", "{ev}");
        assert_eq!(ev["data"]["room"], room);
        assert!(ev["data"]["message"].is_string(), "{ev}");
    }
    assert!(server.hub.rooms().is_empty());
    assert!(
        server
            .hub
            .rooms_of(&server.hub.client(ana.id).unwrap())
            .is_empty()
    );
    ana.send(json!({"type": "ping"})).await;
    ana.expect("pong").await;
    let id = ana.id;
    ana.close().await;
    assert_eq!(hooks.disconnected().await, (id, Disconnect::Closed(None)));
    assert_eq!(server.stop().await.aborted, 0);
}

/// Security: a guarded room accepts only the users the guard allows. On
/// `/hub`, `private-ana` is ana's alone; `public-*` is anyone's, anonymous
/// clients too; and an event to `private-ana` reaches only ana.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guarded_room_accepts_only_allowed_users() {
    let server = reference().await;
    let (ana, bo, anon) = (0, 1, 2);
    let mut peers = Vec::new();
    for user in [Some("ana"), Some("bo"), ANON] {
        peers.push(connect(server.addr, "/hub", user).await);
    }
    let cases = [
        (ana, "private-ana", true),
        (bo, "private-ana", false),
        (anon, "private-ana", false),
        (anon, "private-", false),
        (bo, "private-bo", true),
        (ana, "private-bo", false),
        (anon, "public-x", true),
        (bo, "public-x", true),
        (ana, "secret", false),
    ];
    for (who, room, allowed) in cases {
        let p = &mut peers[who];
        let ev = p.subscribe(room).await;
        let want = if allowed { "subscribed" } else { "error" };
        assert_eq!(ev["type"], want, "{room} for client {}: {ev}", p.id);
        assert_eq!(ev["data"]["room"], room);
    }
    assert_eq!(
        server.hub.rooms(),
        BTreeMap::from([
            ("private-ana".to_string(), 1),
            ("private-bo".to_string(), 1),
            ("public-x".to_string(), 2),
        ])
    );
    let counts = emit(server.addr, "room=private-ana", "secret").await;
    assert_eq!(counts["sent"], 1, "{counts}");
    assert_eq!(peers[ana].expect("notice").await, json!("secret"));
    mark(&server.hub, 1);
    for p in &mut peers {
        p.marker(1).await;
    }
    drop(peers);
    server.connections(0).await;
    assert_eq!(server.stop().await.aborted, 0);
}

/// Union targeting without duplicates: a connection in the room, of the
/// user and named by id gets the event once; every member of the union gets
/// it, nobody else. Through `ws_emit` and through `POST /emit` combining
/// `room`, `user` and `client` (as event `notice`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_union_target_reaches_each_connection_exactly_once() {
    let server = reference().await;
    let mut ana1 = connect(server.addr, "/hub", Some("ana")).await;
    let mut ana2 = connect(server.addr, "/hub", Some("ana")).await;
    let mut bo = connect(server.addr, "/hub", Some("bo")).await;
    let mut cy = connect(server.addr, "/hub", Some("cy")).await;
    let mut dan = connect(server.addr, "/hub", Some("dan")).await;
    let mut anon = connect(server.addr, "/hub", ANON).await;
    for (p, room) in [
        (&mut ana1, "public-r"),
        (&mut bo, "public-r"),
        (&mut dan, "public-other"),
    ] {
        assert_eq!(p.subscribe(room).await["type"], "subscribed");
    }

    // ana1 is in the room, is ana, and is named by id (twice); bo is in the
    // room and named by id; the sets repeat themselves.
    let target = Target::rooms(["public-r", "public-r"])
        .and_users(["ana", "ana"])
        .and_clients([ana1.id, cy.id, bo.id, ana1.id]);
    let ev = Event::new("union", json!("once")).at(42);
    let report = ws_emit(&server.hub, &ev, &target);
    assert_eq!(report.sent, 4, "{report:?}");
    assert_eq!(mark(&server.hub, 1), 6);
    for p in [&mut ana1, &mut ana2, &mut bo, &mut cy] {
        assert_eq!(next_text(&mut p.ws).await, ev.to_json());
        p.marker(1).await;
    }
    for p in [&mut dan, &mut anon] {
        p.marker(1).await;
    }

    let query = format!(
        "room=public-r&user=ana&client={}&client={}&client={}",
        ana1.id, cy.id, bo.id
    );
    let counts = emit(server.addr, &query, r#"{"n":2}"#).await;
    assert_eq!(
        counts,
        json!({"sent": 4, "dropped": 0, "slow_closed": 0, "closed": 0})
    );
    mark(&server.hub, 2);
    for p in [&mut ana1, &mut ana2, &mut bo, &mut cy] {
        assert_eq!(p.expect("notice").await, json!({"n": 2}));
        p.marker(2).await;
    }
    for p in [&mut dan, &mut anon] {
        p.marker(2).await;
    }
    drop((ana1, ana2, bo, cy, dan, anon));
    server.connections(0).await;
    assert_eq!(server.stop().await.aborted, 0);
}

/// `POST /emit` percent-decodes its query (as `GET /events` does), so
/// names with spaces, `&` or non-ASCII can be targeted: `%20` and `+` are
/// spaces, `%26` is `&`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emit_targets_names_that_need_percent_encoding() {
    let server = reference().await;
    let mut ana = connect(server.addr, "/hub", Some("ana smith")).await;
    let mut other = connect(server.addr, "/hub", Some("ana")).await;
    assert_eq!(ana.subscribe("public-a&b ü").await["type"], "subscribed");
    for (n, query) in [
        "user=ana%20smith",
        "user=ana+smith",
        "room=public-a%26b%20%C3%BC",
    ]
    .into_iter()
    .enumerate()
    {
        let counts = emit(server.addr, query, "x").await;
        assert_eq!(counts["sent"], 1, "{query}: {counts}");
        assert_eq!(ana.expect("notice").await, json!("x"), "{query}");
        mark(&server.hub, n as u64);
        other.marker(n as u64).await;
        ana.marker(n as u64).await;
    }
    drop((ana, other));
    server.connections(0).await;
    assert_eq!(server.stop().await.aborted, 0);
}

/// Send by id: `ws_send_to` reaches the connection with that id only; once
/// it is gone it is `NoSuchClient`, and `POST /emit?client=<gone>` sends 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_to_a_gone_connection_is_a_clear_error() {
    let server = reference().await;
    let mut ana = connect(server.addr, "/hub", Some("ana")).await;
    let mut other = connect(server.addr, "/hub", ANON).await;
    ws_send_to(&server.hub, ana.id, Message::text("direct")).unwrap();
    assert_eq!(next_text(&mut ana.ws).await, "direct");
    mark(&server.hub, 1);
    other.marker(1).await;
    ana.marker(1).await;
    let counts = emit(server.addr, &format!("client={}", ana.id), "by id").await;
    assert_eq!(counts["sent"], 1, "{counts}");
    assert_eq!(ana.expect("notice").await, json!("by id"));

    let gone = ana.id;
    ana.close().await;
    until("the closed client unregistered", || {
        server.hub.client(gone).is_none()
    })
    .await;
    assert_eq!(
        ws_send_to(&server.hub, gone, Message::text("late")),
        Err(SendToError::NoSuchClient(gone))
    );
    assert_eq!(
        ws_send_to(&server.hub, 1_000_000, Message::text("never")),
        Err(SendToError::NoSuchClient(1_000_000))
    );
    let counts = emit(server.addr, &format!("client={gone}"), "late").await;
    assert_eq!(
        counts,
        json!({"sent": 0, "dropped": 0, "slow_closed": 0, "closed": 0})
    );
    let counts = emit(
        server.addr,
        &format!("client={gone}&client={}", other.id),
        "still",
    )
    .await;
    assert_eq!(counts["sent"], 1, "{counts}");
    assert_eq!(other.expect("notice").await, json!("still"));
    // Not an id, or no target at all: 400.
    for query in ["client=abc", "", "topic=x"] {
        let (status, body) = http(server.addr, "POST", &format!("/emit?{query}"), "x").await;
        assert_eq!(status, 400, "{query}: {body}");
    }
    drop(other);
    server.connections(0).await;
    assert_eq!(server.stop().await.aborted, 0);
}

/// Close by id (`ws_close` behind `POST /hub/clients/{id}/close`): the
/// connection gets what was queued for it, then the close with the code and
/// reason asked; the others stay; a bad code, an unknown id or a second
/// close are answered, and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_closed_by_id_with_its_code_and_reason() {
    let server = reference().await;
    let mut ana = connect(server.addr, "/hub", Some("ana")).await;
    let mut other = connect(server.addr, "/hub", ANON).await;
    ws_send_to(&server.hub, ana.id, Message::text("you were signed out")).unwrap();
    let close = |id: ClientId, query: &str| format!("/hub/clients/{id}/close?{query}");

    for (query, status) in [("code=1006", 400), ("code=x", 400), ("code=5000", 400)] {
        let (got, body) = http(server.addr, "POST", &close(ana.id, query), "").await;
        assert_eq!(got, status, "{query}: {body}");
    }
    let (got, body) = http(server.addr, "POST", "/hub/clients/abc/close", "").await;
    assert_eq!(got, 400, "{body}");
    let (got, body) = http(server.addr, "POST", &close(1_000_000, ""), "").await;
    assert_eq!(got, 404, "{body}");

    let (got, body) = http(
        server.addr,
        "POST",
        &close(ana.id, "code=4001&reason=signed%20out"),
        "",
    )
    .await;
    assert_eq!(got, 204, "{body}");
    let (got, body) = http(server.addr, "POST", &close(ana.id, ""), "").await;
    assert_eq!(got, 409, "closing already: {body}");

    let (frame, data) = until_close(&mut ana.ws).await;
    assert_eq!(data, 1, "what was queued came first");
    assert_eq!(code(&frame), Some(4001));
    assert_eq!(frame.unwrap().reason.as_str(), "signed out");
    mark(&server.hub, 1);
    other.marker(1).await;
    drop(ana);
    drop(other);
    server.connections(0).await;
    assert_eq!(server.stop().await.aborted, 0);
}

/// Identity from `X-Token: <user>`: none is 401, `banned` is 403.
#[allow(clippy::result_large_err)] // the hook's shape: a refusal is a response
fn by_token(req: &Request) -> Result<Identity, Response> {
    match req.headers().get("x-token").and_then(|v| v.to_str().ok()) {
        None => Err(text(StatusCode::UNAUTHORIZED, "who are you?\n")),
        Some("banned") => Err(text(StatusCode::FORBIDDEN, "go away\n")),
        Some(user) => Ok(Identity {
            user: Some(user.to_string()),
            metadata: BTreeMap::from([("via".to_string(), "x-token".to_string())]),
            ..Identity::default()
        }),
    }
}

/// The identify hook runs before upgrading: its refusal (401, 403) is the
/// answer, nothing is registered and no hook runs; an accepted identity
/// (user and metadata) is the connection's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_identify_answers_401_or_403_before_upgrading() {
    let (server, mut hooks) = control_server(
        HubConfig::default(),
        any_room(),
        WsConfig {
            identify: Some(identify(|req| std::future::ready(by_token(req)))),
            ..WsConfig::default()
        },
        None,
    )
    .await;
    let addr = server.addr;
    let request = |token: Option<&str>| {
        let mut req = format!("ws://{addr}/").into_client_request().unwrap();
        if let Some(t) = token {
            req.headers_mut().insert("x-token", t.parse().unwrap());
        }
        req
    };
    for (token, want, body) in [
        (None, 401, "who are you?\n"),
        (Some("banned"), 403, "go away\n"),
    ] {
        match client_async(request(token), TcpStream::connect(addr).await.unwrap()).await {
            Err(WsError::Http(res)) => {
                assert_eq!(res.status(), want);
                assert_eq!(res.body().as_deref(), Some(body.as_bytes()));
            }
            other => panic!("expected {want}, got {:?}", other.map(|(_, r)| r.status())),
        }
    }
    assert_eq!(server.hub.stats().connected, 0, "nothing was registered");
    assert!(hooks.connected.try_recv().is_err(), "no connect hook ran");

    let (ws, res) = client_async(
        request(Some("ana")),
        TcpStream::connect(addr).await.unwrap(),
    )
    .await
    .expect("accepted");
    assert_eq!(res.status(), 101);
    let mut ana = Peer { ws, id: 0 };
    let data = ana.expect("connection.established").await;
    assert_eq!(data["userId"], "ana");
    let id = hooks.connected().await;
    assert_eq!(data["clientId"], id.to_string());
    let client = server.hub.client(id).unwrap();
    assert_eq!(client.identity().metadata["via"], "x-token");
    assert_eq!(server.hub.stats().connected, 1);
    drop(ana);
    assert_eq!(hooks.disconnected().await.0, id);
    assert_eq!(server.stop().await.aborted, 0);
}

/// `/hub`: an `Authorization` header that is not `Bearer <name>` (1 to 64
/// bytes) is 401 before upgrading; a valid one and none at all connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_bearer_on_hub_is_401() {
    let server = reference().await;
    let addr = server.addr;
    let long = format!("Bearer {}", "n".repeat(65));
    for auth in [
        long.as_str(),
        "Bearer ",
        "Bearer",
        "Bearer    ",
        "Basic YW5hOng=",
    ] {
        let mut req = format!("ws://{addr}/hub").into_client_request().unwrap();
        req.headers_mut()
            .insert("authorization", auth.parse().unwrap());
        match client_async(req, TcpStream::connect(addr).await.unwrap()).await {
            Err(WsError::Http(res)) => assert_eq!(res.status(), 401, "{auth:?}"),
            other => panic!(
                "{auth:?}: expected 401, got {:?}",
                other.map(|(_, r)| r.status())
            ),
        }
    }
    assert_eq!(server.hub.stats().connected, 0, "nothing was registered");
    let max = "m".repeat(64);
    let a = connect(addr, "/hub", Some(&max)).await;
    let b = connect(addr, "/hub", ANON).await;
    assert_eq!(server.hub.stats().connected, 2);
    drop((a, b));
    server.connections(0).await;
    assert_eq!(server.stop().await.aborted, 0);
}

/// On connect the server sends `connection.established {clientId, userId}`
/// first; the app's connect hook runs after it, and what it sends from
/// there (by handle and by id) arrives next, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_established_comes_first_and_the_connect_hook_can_send() {
    let hub = WsHub::new(HubConfig::default());
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel();
    let app_connect = {
        let hub = hub.clone();
        ws_handler::on_connect(move |c: &WsClient| {
            let hello = Event::new("hello", json!({"via": "handle"}));
            let by_handle = ws_send(c, Message::text(hello.to_json()));
            let hello = Event::new("hello", json!({"via": "id"}));
            let by_id = ws_send_to(&hub, c.id(), Message::text(hello.to_json()));
            let _ = sent_tx.send((c.id(), by_handle, by_id));
            std::future::ready(Ok(()))
        })
    };
    let (on_connect, on_message) = control_hooks(hub.clone(), any_room(), Some(app_connect), None);
    let handler = ws_handler(
        hub.clone(),
        WsConfig {
            identify: Some(identify(|req| std::future::ready(bearer(req)))),
            on_connect: Some(on_connect),
            on_message: Some(on_message),
            ..WsConfig::default()
        },
    );
    let server = Server::start(handler, hub, Duration::from_secs(5)).await;
    for user in [Some("ana"), ANON] {
        let mut p = open(server.addr, "/", user).await;
        let (id, by_handle, by_id) = tokio::time::timeout(WAIT, sent_rx.recv())
            .await
            .expect("the connect hook ran")
            .unwrap();
        assert_eq!((by_handle, by_id), (Ok(()), Ok(())));
        let first: Value = serde_json::from_str(&next_text(&mut p).await).unwrap();
        assert_eq!(first["type"], "connection.established");
        assert_eq!(
            first["data"],
            json!({"clientId": id.to_string(), "userId": user})
        );
        for via in ["handle", "id"] {
            let ev: Value = serde_json::from_str(&next_text(&mut p).await).unwrap();
            assert_eq!(ev["type"], "hello");
            assert_eq!(ev["data"]["via"], via);
        }
        // And the protocol answers after that.
        p.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
        let pong: Value = serde_json::from_str(&next_text(&mut p).await).unwrap();
        assert_eq!(pong["type"], "pong");
    }
    server.connections(0).await;
    assert_eq!(server.stop().await.aborted, 0);
}

/// A malformed control message gets an `error` event and the connection
/// stays open: `ping` is still answered after each one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_control_message_gets_an_error_and_the_connection_stays_open() {
    let server = reference().await;
    let mut p = connect(server.addr, "/hub", Some("ana")).await;
    let long = format!("public-{}", "x".repeat(200));
    let malformed = [
        json!({"type": "subscribe"}),
        json!({"type": "subscribe", "room": 7}),
        json!({"type": "subscribe", "room": null}),
        json!({"type": "unsubscribe"}),
        json!({"type": "unsubscribe", "room": ["public-a"]}),
        json!({"type": "subscribe", "room": "public-a\nb"}),
        json!({"type": "subscribe", "room": long}),
    ];
    for msg in malformed {
        p.send(msg.clone()).await;
        let err = p.expect("error").await;
        assert!(err["message"].is_string(), "{msg}: {err}");
        p.send(json!({"type": "ping"})).await;
        let pong = p.expect("pong").await;
        assert!(
            pong["timestamp"].as_i64().unwrap() > 1_700_000_000,
            "{pong}"
        );
    }
    // Not control messages at all: the app's own error, still open.
    for raw in ["not json", "[1,2]", r#"{"type":"dance"}"#] {
        p.ws.send(Message::text(raw)).await.unwrap();
        p.expect("error").await;
    }
    p.ws.send(Message::binary(vec![0u8, 1])).await.unwrap();
    p.expect("error").await;
    p.send(json!({"type": "ping"})).await;
    p.expect("pong").await;
    assert!(server.hub.rooms().is_empty());
    assert!(server.hub.client(p.id).is_some_and(|c| !c.is_closed()));
    drop(p);
    server.connections(0).await;
    assert_eq!(server.stop().await.aborted, 0);
}

/// With the control protocol off, `{"type":"ping"}` and `subscribe` are app
/// messages: the app hook gets them unchanged, no `pong`, no room joined,
/// and no `connection.established` on connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_protocol_off_ping_goes_to_the_app() {
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let app: MessageHook = Arc::new(move |c, msg| {
        let _ = seen_tx.send((c.id(), msg.clone()));
        let _ = c.try_send(msg);
    });
    let (server, mut hooks) = control_server(
        HubConfig::default(),
        ControlConfig {
            enabled: false,
            ..any_room()
        },
        WsConfig::default(),
        Some(app),
    )
    .await;
    let mut ws = server.ws("/").await;
    let id = hooks.connected().await;
    for raw in [
        r#"{"type":"ping"}"#,
        r#"{"type":"subscribe","room":"public-a"}"#,
        r#"{"type":"authenticate","userId":"root"}"#,
    ] {
        ws.send(Message::text(raw)).await.unwrap();
        // The first thing received is the app's echo: nothing came before it.
        assert_eq!(next_text(&mut ws).await, raw);
        let (from, msg) = tokio::time::timeout(WAIT, seen_rx.recv())
            .await
            .expect("the app saw it")
            .unwrap();
        assert_eq!((from, msg), (id, Message::text(raw)));
    }
    assert!(server.hub.rooms().is_empty());
    drop(ws);
    assert_eq!(hooks.disconnected().await.0, id);
    assert_eq!(server.stop().await.aborted, 0);
}

/// Counts return to zero: connections, per room, per user, the rooms
/// snapshot (and `GET /stats`), after clients close with a handshake and
/// after clients just drop their sockets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_return_to_zero_after_closes_and_after_dropped_sockets() {
    let server = reference().await;
    for handshake in [true, false] {
        let mut peers = Vec::new();
        for user in [Some("ana"), Some("ana"), Some("bo"), Some("bo"), ANON, ANON] {
            let mut p = connect(server.addr, "/hub", user).await;
            assert_eq!(p.subscribe("public-a").await["type"], "subscribed");
            if let Some(u) = user {
                let own = format!("private-{u}");
                assert_eq!(p.subscribe(&own).await["type"], "subscribed");
            }
            peers.push(p);
        }
        let hub = &server.hub;
        assert_eq!(hub.stats().connections, 6);
        assert_eq!((hub.user_len("ana"), hub.user_len("bo")), (2, 2));
        assert_eq!(
            hub.rooms(),
            BTreeMap::from([
                ("private-ana".to_string(), 2),
                ("private-bo".to_string(), 2),
                ("public-a".to_string(), 6),
            ])
        );
        if handshake {
            for p in peers {
                p.close().await;
            }
        } else {
            drop(peers);
        }
        server.connections(0).await;
        assert_eq!(hub.room_len("public-a"), 0, "handshake: {handshake}");
        assert_eq!(hub.room_len("private-ana"), 0);
        assert_eq!((hub.user_len("ana"), hub.user_len("bo")), (0, 0));
        assert!(hub.rooms().is_empty(), "{:?}", hub.rooms());
        let st = hub.stats();
        assert_eq!(st.connected, st.disconnected, "{st:?}");
        let (status, body) = http(server.addr, "GET", "/stats", "").await;
        assert_eq!(status, 200);
        let stats: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(stats["rooms"], json!({}), "{stats}");
        assert_eq!(stats["hub"]["connections"], 0, "{stats}");
        // Nobody is left to receive anything.
        assert_eq!(mark(hub, 0), 0);
    }
    assert_eq!(server.hub.stats().connected, 12);
    assert_eq!(server.stop().await.aborted, 0);
}

/// The reference server with JWT identity (what `--jwt-secret` builds): a
/// valid token is its `sub`, and its `rooms` claim is what the guard allows;
/// an expired or foreign token is `401` before upgrading; no token is
/// anonymous (public rooms only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_hub_takes_identity_and_rooms_from_a_jwt() {
    use jsonwebtoken::{EncodingKey, Header, encode, get_current_timestamp};
    const SECRET: &[u8] = b"a secret of at least thirty-two bytes";
    let auth = ws_identity_jwt::JwtAuth::hs256(SECRET)
        .unwrap()
        .audience("rt")
        .allow_anonymous(true);
    let rt_server::App { handler, rooms, .. } = rt_server::app(Options {
        log: false,
        hub_identify: Some(auth.identify_hook()),
        ..Options::default()
    });
    let server = Server::start(handler, rooms, Duration::from_secs(5)).await;
    let token = |sub: &str, exp_in: i64, key: &[u8]| {
        let exp = get_current_timestamp() as i64 + exp_in;
        let claims = json!({"sub": sub, "aud": "rt", "exp": exp, "rooms": ["team-*"]});
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(key).unwrap(),
        )
        .unwrap()
    };
    let mut ana = Peer {
        ws: open(server.addr, "/hub", Some(&token("ana", 600, SECRET))).await,
        id: 0,
    };
    let established = ana.expect("connection.established").await;
    assert_eq!(established["userId"], "ana", "{established}");
    assert_eq!(ana.subscribe("team-red").await["type"], "subscribed");
    assert_eq!(ana.subscribe("public-lobby").await["type"], "error");
    let mut anon = connect(server.addr, "/hub", None).await;
    assert_eq!(anon.subscribe("public-lobby").await["type"], "subscribed");
    assert_eq!(anon.subscribe("team-red").await["type"], "error");
    for bad in [
        token("ana", -600, SECRET),
        token("ana", 600, b"another secret, also thirty-two bytes"),
    ] {
        let (status, body) = http_upgrade_status(server.addr, &bad).await;
        assert_eq!(status, 401, "{body}");
    }
    ana.close().await;
    anon.close().await;
    server.connections(0).await;
    assert_eq!(server.stop().await.aborted, 0);
}

/// The status and body of a `/hub` upgrade with `token` as bearer.
async fn http_upgrade_status(addr: SocketAddr, token: &str) -> (u16, String) {
    let mut req = format!("ws://{addr}/hub").into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    match client_async(req, TcpStream::connect(addr).await.unwrap()).await {
        Ok((_, res)) => (res.status().as_u16(), String::new()),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => (
            res.status().as_u16(),
            String::from_utf8_lossy(res.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        Err(e) => panic!("{e}"),
    }
}
