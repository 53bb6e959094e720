//! The Rust ws-wrapper client (`ws_wrapper_client`) end to end over real
//! sockets on 127.0.0.1: against rt-server's `/rpc`, against a
//! `ws_wrapper_server` that reports what its handlers see, across a server
//! restart on the same port (queued emits arrive in order after it), against
//! a server that closes with 1013, and against a Node server built on the npm
//! `ws-wrapper` 3.0.3 package.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use http_types::Handler;
use rt_server::{Options, app};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use ws_handler::WsConfig;
use ws_hub::{HubConfig, WsHub};
use ws_wrapper_client::{
    ClientConfig, ClientCtx, ClientEvent, ClientRequestError, ClientState, ConnectError, PeerError,
    WrapperClient,
};
use ws_wrapper_server::{Ctx, Reply, WrapperConfig, WrapperError, WrapperServer};

mod serving;
use serving::{Serving, WAIT};

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// How long a test server drains.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves `handler` on 127.0.0.1:0.
async fn serve(handler: Handler) -> Serving {
    Serving::start(handler, DRAIN).await
}

/// Serves `handler` on `addr` again (SO_REUSEADDR: the old connections may sit in TIME_WAIT).
fn serve_again(addr: SocketAddr, handler: Handler) -> Serving {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    Serving::on(socket.listen(1024).unwrap(), handler, DRAIN)
}

fn url(server: &Serving, path: &str) -> String {
    format!("ws://{}{path}", server.addr)
}

fn rt_rpc() -> Handler {
    app(Options {
        log: false,
        ..Options::default()
    })
    .handler
}

/// Fast reconnection for tests.
fn fast() -> ClientConfig {
    ClientConfig {
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(200),
        restart_backoff_base: Duration::from_secs(60),
        ..ClientConfig::default()
    }
}

fn rejected(r: Result<impl std::fmt::Debug, ClientRequestError>) -> PeerError {
    match r {
        Err(ClientRequestError::Rejected(e)) => e,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// A client handler that forwards its arguments to the test.
fn forward(client: &WrapperClient, name: &str) -> mpsc::UnboundedReceiver<Vec<Value>> {
    let (tx, rx) = mpsc::unbounded_channel();
    client.on(name, move |_ctx, args: Vec<Value>| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(args);
            Ok::<_, PeerError>(())
        }
    });
    rx
}

/// The handlers rt-server's `ask-me` calls back on the client.
fn answer_back(client: &WrapperClient) {
    client
        .on("double", |_ctx, (x,): (i64,)| async move {
            Ok::<_, PeerError>(x * 2)
        })
        .on("refuse", |_ctx, _: Vec<Value>| async {
            Err::<(), _>(PeerError::new("client says no"))
        })
        .on("explode", |_ctx, _: Vec<Value>| async {
            if true {
                panic!("boom");
            }
            Ok::<(), PeerError>(())
        });
}

#[tokio::test]
async fn requests_events_and_rejections_against_rt_server() {
    let server = serve(rt_rpc()).await;
    let client = WrapperClient::connect(&url(&server, "/rpc"), ClientConfig::default())
        .await
        .unwrap();
    assert_eq!(client.state(), ClientState::Connected { connection: 1 });

    let sum: f64 = client.request(None, "add", (2, 3)).await.unwrap();
    assert_eq!(sum, 5.0);
    let deep = json!({"a": [1, "x", {"b": null}], "é": "😀"});
    let back: Value = client.request(None, "echo", (&deep,)).await.unwrap();
    assert_eq!(back, deep);
    let e = rejected(client.request::<Value>(None, "fail", ()).await);
    assert_eq!(e.message, "nope");
    assert_eq!(e.value, json!({"message": "nope"}));
    let who: String = client.of("room1").request("who", ()).await.unwrap();
    assert_eq!(who, "me");

    // The protocol's rejections for what the server does not have.
    let e = rejected(client.request::<Value>(None, "nope", ()).await);
    assert_eq!(e.message, "No event listener for 'nope'");
    let e = rejected(client.of("room2").request::<Value>("who", ()).await);
    assert_eq!(e.message, "Channel 'room2' does not exist");
    let e = rejected(client.request::<Value>(None, "add", ("x",)).await);
    assert!(e.message.starts_with("invalid arguments"), "{e}");
    // Checked here, never sent: reserved names, an answer of the wrong type.
    assert_eq!(
        client.request::<Value>(None, "close", ()).await,
        Err(ClientRequestError::Reserved)
    );
    assert_eq!(
        client.emit(None, "message", ()),
        Err(ClientRequestError::Reserved)
    );
    assert!(matches!(
        client.request::<String>(None, "add", (1, 1)).await,
        Err(ClientRequestError::Invalid(_))
    ));

    // Events both ways: notify-me makes the server emit notified.
    let mut notified = forward(&client, "notified");
    client.emit(None, "notify-me", ("hi", 2)).unwrap();
    assert_eq!(
        within("notified", notified.recv()).await.unwrap(),
        [json!("hi"), json!(2)]
    );

    client.close().await;
    assert_eq!(client.state(), ClientState::Closed);
    server.stop().await;
}

#[tokio::test]
async fn server_to_client_requests_get_the_handlers_answers_and_errors() {
    let server = serve(rt_rpc()).await;
    let client = WrapperClient::new(&url(&server, "/rpc"), ClientConfig::default()).unwrap();
    answer_back(&client);
    client.start().await.unwrap();

    // ask-me(name, x): the server requests name(x) of us and answers with our answer.
    let x: i64 = client
        .request(None, "ask-me", ("double", 21))
        .await
        .unwrap();
    assert_eq!(x, 42);
    let e = rejected(client.request::<Value>(None, "ask-me", ("refuse", 0)).await);
    assert_eq!(e.message, "client says no");
    let e = rejected(
        client
            .request::<Value>(None, "ask-me", ("explode", 0))
            .await,
    );
    assert_eq!(e.message, "handler panicked");
    let e = rejected(
        client
            .request::<Value>(None, "ask-me", ("missing", 0))
            .await,
    );
    assert_eq!(e.message, "No event listener for 'missing'");
    // The panic harmed nothing: the connection still answers.
    let x: i64 = client.request(None, "ask-me", ("double", 1)).await.unwrap();
    assert_eq!(x, 2);
    assert_eq!(client.state(), ClientState::Connected { connection: 1 });

    client.close().await;
    server.stop().await;
}

#[tokio::test]
async fn cancelling_slow_fails_fast_and_the_connection_keeps_working() {
    let server = serve(rt_rpc()).await;
    let client = WrapperClient::connect(&url(&server, "/rpc"), ClientConfig::default())
        .await
        .unwrap();

    // An explicit cancel: `slow` would take 5 s.
    let started = Instant::now();
    let slow = client.request::<String>(None, "slow", ());
    let cancel = slow.cancel_handle();
    let pending = tokio::spawn(slow.into_future());
    // The echo is answered after the slow request was sent: it is in flight.
    let _: Value = client.request(None, "echo", (1,)).await.unwrap();
    cancel.cancel();
    assert_eq!(
        within("the cancelled request", pending).await.unwrap(),
        Err(ClientRequestError::Cancelled)
    );
    // A per-request timeout cancels it too; so does dropping the future.
    let timed = client
        .request::<String>(None, "slow", ())
        .timeout(Duration::from_millis(50))
        .await;
    assert_eq!(timed, Err(ClientRequestError::Timeout));
    let dropped = client.request::<String>(None, "slow", ()).into_future();
    assert!(dropped.now_or_never().is_none());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // The connection is fine, and the late answers (there are none for
    // cancelled requests) confuse nothing.
    let sum: f64 = client.request(None, "add", (1, 2)).await.unwrap();
    assert_eq!(sum, 3.0);

    client.close().await;
    server.stop().await;
}

/// A `ws_wrapper_server` whose handlers report what they see.
struct Observed {
    server: Serving,
    cancelled: mpsc::UnboundedReceiver<&'static str>,
    channel_closed: mpsc::UnboundedReceiver<u64>,
}

async fn observed_server() -> Observed {
    let (cancel_tx, cancelled) = mpsc::unbounded_channel();
    let (closed_tx, channel_closed) = mpsc::unbounded_channel();
    let server = WrapperServer::new(WsHub::new(HubConfig::default()), WrapperConfig::default());
    server.on("wait", move |ctx: Ctx, (tag,): (String,)| {
        let tx = cancel_tx.clone();
        async move {
            ctx.cancelled().await;
            let tag = match tag.as_str() {
                "cancel" => "cancel",
                "timeout" => "timeout",
                "drop" => "drop",
                _ => "other",
            };
            let _ = tx.send(tag);
            Err::<Value, _>(WrapperError::new("cancelled"))
        }
    });
    // feed(): a channel; `stop` on it makes the server abort it, and the
    // server reports when the channel closes, whichever side closed it.
    server.on("feed", move |ctx: Ctx, (): ()| {
        let tx = closed_tx.clone();
        async move {
            let ch = ctx.channel().expect("a request");
            ch.on("stop", |ctx: Ctx, _: Vec<Value>| async move {
                if let Some(ch) = ctx.channel() {
                    let _ = ch.emit("bye", vec![json!("now")]);
                    ch.abort("server stops");
                }
                Ok::<_, WrapperError>(())
            });
            ch.on("ping", |_ctx: Ctx, (n,): (i64,)| async move {
                Ok::<_, WrapperError>(n + 1)
            });
            let watch = ch.clone();
            tokio::spawn(async move {
                watch.closed().await;
                let _ = tx.send(watch.handle());
            });
            Ok::<_, WrapperError>(Reply::Channel(ch))
        }
    });
    let handler = server.handler(WsConfig::default());
    Observed {
        server: serve(handler).await,
        cancelled,
        channel_closed,
    }
}

#[tokio::test]
async fn the_server_handler_sees_cancel_timeout_and_drop() {
    let mut o = observed_server().await;
    let client = WrapperClient::connect(&url(&o.server, "/"), ClientConfig::default())
        .await
        .unwrap();

    let req = client.request::<Value>(None, "wait", ("cancel",));
    let cancel = req.cancel_handle();
    let pending = tokio::spawn(req.into_future());
    // Echo-free sync point: a rejected request sent after it is answered after it arrived.
    let _ = client.request::<Value>(None, "nope", ()).await;
    cancel.cancel();
    assert_eq!(pending.await.unwrap(), Err(ClientRequestError::Cancelled));
    assert_eq!(
        within("cancel seen", o.cancelled.recv()).await,
        Some("cancel")
    );

    let timed = client
        .request::<Value>(None, "wait", ("timeout",))
        .timeout(Duration::from_millis(20))
        .await;
    assert_eq!(timed, Err(ClientRequestError::Timeout));
    assert_eq!(
        within("timeout seen", o.cancelled.recv()).await,
        Some("timeout")
    );

    // Polled once (so it is sent), then dropped.
    let req = client
        .request::<Value>(None, "wait", ("drop",))
        .into_future();
    assert!(req.now_or_never().is_none());
    assert_eq!(within("drop seen", o.cancelled.recv()).await, Some("drop"));

    // Nothing else was cancelled, and the connection works.
    let e = rejected(client.request::<Value>(None, "nope", ()).await);
    assert_eq!(e.message, "No event listener for 'nope'");
    assert!(o.cancelled.try_recv().is_err());
    client.close().await;
    o.server.stop().await;
}

#[tokio::test]
async fn stream_over_an_anonymous_channel() {
    let server = serve(rt_rpc()).await;
    let client = WrapperClient::connect(&url(&server, "/rpc"), ClientConfig::default())
        .await
        .unwrap();

    let ch = client
        .request::<()>(None, "stream", (3,))
        .channel()
        .await
        .unwrap();
    assert_eq!(ch.handle(), 1);
    assert!(!ch.is_closed());
    ch.emit("start", ()).unwrap();
    let mut got = Vec::new();
    loop {
        let (name, args) = within("next", ch.recv()).await.expect("an event");
        assert_eq!(name, "next");
        let done = args[0]["done"].as_bool().unwrap();
        got.push(args[0].clone());
        if done {
            break;
        }
    }
    assert_eq!(
        got,
        [
            json!({"value": 1, "done": false}),
            json!({"value": 2, "done": false}),
            json!({"value": 3, "done": false}),
            json!({"done": true}),
        ]
    );
    ch.abort("done");
    assert!(ch.is_closed());
    within("closed", ch.closed()).await;
    assert_eq!(ch.emit("start", ()), Err(ClientRequestError::ChannelClosed));
    assert_eq!(ch.recv().await, None);
    // A value request asked for a channel, and a channel request awaited as a value.
    assert!(matches!(
        client.request::<()>(None, "echo", (1,)).channel().await,
        Err(ClientRequestError::Invalid(_))
    ));
    assert!(matches!(
        client.request::<Value>(None, "stream", (1,)).await,
        Err(ClientRequestError::Invalid(_))
    ));
    let e = rejected(client.request::<()>(None, "fail", ()).channel().await);
    assert_eq!(e.message, "nope");

    client.close().await;
    server.stop().await;
}

#[tokio::test]
async fn anonymous_channels_close_from_either_side() {
    let mut o = observed_server().await;
    let client = WrapperClient::connect(&url(&o.server, "/"), ClientConfig::default())
        .await
        .unwrap();

    // The client aborts: the server's channel closes.
    let ch = client
        .request::<()>(None, "feed", ())
        .channel()
        .await
        .unwrap();
    let n: i64 = ch.request("ping", (41,)).await.unwrap();
    assert_eq!(n, 42);
    let e = rejected(ch.request::<Value>("nothing", ()).await);
    assert_eq!(e.message, "No event listener for 'nothing'");
    ch.abort("client stops");
    assert_eq!(
        within("server sees the abort", o.channel_closed.recv()).await,
        Some(ch.handle())
    );

    // The server aborts: the client's channel closes, after the events sent before it.
    let ch = client
        .request::<()>(None, "feed", ())
        .channel()
        .await
        .unwrap();
    let (bye_tx, mut bye) = mpsc::unbounded_channel();
    ch.on("bye", move |ctx: ClientCtx, (x,): (String,)| {
        let tx = bye_tx.clone();
        async move {
            let _ = tx.send((x, ctx.channel().map(|c| c.handle())));
            Ok::<_, PeerError>(())
        }
    });
    ch.emit("stop", ()).unwrap();
    within("client sees the abort", ch.closed()).await;
    assert!(ch.is_closed());
    assert_eq!(
        within("bye", bye.recv()).await,
        Some(("now".to_string(), Some(ch.handle())))
    );
    assert_eq!(
        within("server closed it too", o.channel_closed.recv()).await,
        Some(ch.handle())
    );
    assert_eq!(ch.emit("stop", ()), Err(ClientRequestError::ChannelClosed));
    assert_eq!(
        ch.request::<Value>("ping", (1,)).await,
        Err(ClientRequestError::ChannelClosed)
    );

    client.close().await;
    o.server.stop().await;
}

#[tokio::test]
async fn the_server_streams_from_a_channel_the_client_answers_with() {
    // Both ends are the same engine: here the server asks, and the client
    // answers with an anonymous channel that streams on the server's "start".
    let server = WrapperServer::new(WsHub::new(HubConfig::default()), WrapperConfig::default());
    server.on("pull", |ctx: Ctx, (n,): (u64,)| async move {
        let ch = ctx
            .server()
            .request_channel(ctx.client(), None, "numbers", vec![json!(n)], None)
            .await
            .map_err(|e| WrapperError::new(e.to_string()))?;
        ch.emit("start", ())
            .map_err(|e| WrapperError::new(e.to_string()))?;
        let mut got = Vec::new();
        while let Some((name, args)) = ch.recv().await {
            if name == "done" {
                break;
            }
            got.push(args[0].clone());
        }
        ch.abort("thanks");
        Ok::<_, WrapperError>(got)
    });
    let served = serve(server.handler(WsConfig::default())).await;
    let client = WrapperClient::new(&url(&served, "/"), ClientConfig::default()).unwrap();
    let (closed_tx, mut closed) = mpsc::unbounded_channel();
    client.on("numbers", move |ctx: ClientCtx, (n,): (u64,)| {
        let closed_tx = closed_tx.clone();
        async move {
            let ch = ctx.channel().expect("a request has a channel");
            ch.on("start", move |ctx: ClientCtx, (): ()| async move {
                let ch = ctx.channel().expect("in a channel");
                for i in 1..=n {
                    ch.emit("next", (i,))
                        .map_err(|e| PeerError::new(e.to_string()))?;
                }
                ch.emit("done", ())
                    .map_err(|e| PeerError::new(e.to_string()))
            });
            let watch = ch.clone();
            tokio::spawn(async move {
                watch.closed().await;
                let _ = closed_tx.send(watch.handle());
            });
            Ok::<_, PeerError>(ws_wrapper_client::Reply::Channel(ch))
        }
    });
    client.start().await.unwrap();
    let got: Vec<u64> = client.request(None, "pull", (3,)).await.unwrap();
    assert_eq!(got, [1, 2, 3]);
    assert_eq!(
        within(
            "the server's abort closes the client's channel",
            closed.recv()
        )
        .await,
        Some(1),
        "the handle is the server's request id"
    );
    client.close().await;
    served.stop().await;
}

/// Waits until the state satisfies `f`, returns it.
async fn state_where(client: &WrapperClient, f: impl Fn(&ClientState) -> bool) -> ClientState {
    let mut rx = client.watch();
    within("a client state", rx.wait_for(|s| f(s)))
        .await
        .expect("the client is alive")
        .clone()
}

#[tokio::test]
async fn reconnects_after_a_restart_on_the_same_port_and_handlers_survive() {
    let server = serve(rt_rpc()).await;
    let addr = server.addr;
    let client = WrapperClient::new(&url(&server, "/rpc"), fast()).unwrap();
    answer_back(&client);
    let mut notified = forward(&client, "notified");
    client.start().await.unwrap();
    let x: i64 = client.request(None, "ask-me", ("double", 2)).await.unwrap();
    assert_eq!(x, 4);

    // A request pending when the server goes away fails as disconnected.
    let slow = tokio::spawn(client.request::<String>(None, "slow", ()).into_future());
    let _: Value = client.request(None, "echo", (0,)).await.unwrap(); // slow is in flight
    let stats = server.stop().await;
    assert_eq!(
        within("the pending request", slow).await.unwrap(),
        Err(ClientRequestError::Disconnected)
    );
    assert!(stats.connections >= 1);
    let down = state_where(&client, |s| matches!(s, ClientState::Reconnecting { .. })).await;
    let ClientState::Reconnecting { close_code, .. } = down else {
        unreachable!()
    };
    assert_eq!(close_code, Some(1001), "http_serve's drain says Going Away");
    // While it is down, requests wait (until their timeout) and emits are
    // queued, and the client keeps trying (connection refused) with growing delays.
    assert_eq!(
        client
            .request::<Value>(None, "echo", (1,))
            .timeout(Duration::from_millis(20))
            .await,
        Err(ClientRequestError::Timeout)
    );
    let waiting = tokio::spawn(
        client
            .request::<Value>(None, "echo", ("waited",))
            .into_future(),
    );
    client.emit(None, "notify-me", ("queued",)).unwrap();
    let retrying = state_where(
        &client,
        |s| matches!(s, ClientState::Reconnecting { attempt, .. } if *attempt >= 3),
    )
    .await;
    let ClientState::Reconnecting { delay, .. } = retrying else {
        unreachable!()
    };
    assert!(delay >= Duration::from_millis(40), "{delay:?}");

    // Back on the same port: the client reconnects by itself.
    let server = serve_again(addr, rt_rpc());
    assert_eq!(within("reconnection", client.connected()).await, Some(2));
    // What waited offline went out first: the request is answered, the event came back.
    assert_eq!(
        within("the waiting request", waiting).await.unwrap(),
        Ok(json!("waited"))
    );
    assert_eq!(
        within("notified", notified.recv()).await.unwrap(),
        [json!("queued")]
    );
    // Handlers registered once still answer, on the new connection.
    let x: i64 = client
        .request(None, "ask-me", ("double", 21))
        .await
        .unwrap();
    assert_eq!(x, 42);
    let e = rejected(client.request::<Value>(None, "ask-me", ("refuse", 0)).await);
    assert_eq!(e.message, "client says no");
    client.emit(None, "notify-me", ("again",)).unwrap();
    assert_eq!(
        within("notified", notified.recv()).await.unwrap(),
        [json!("again")]
    );
    let who: String = client.of("room1").request("who", ()).await.unwrap();
    assert_eq!(who, "me");

    client.close().await;
    server.stop().await;
}

/// A `ws_wrapper_server` that forwards every `log` event's argument to the test.
fn logging_server() -> (Handler, mpsc::UnboundedReceiver<i64>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let server = WrapperServer::new(WsHub::new(HubConfig::default()), WrapperConfig::default());
    server.on("log", move |_ctx, (n,): (i64,)| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(n);
            Ok::<_, WrapperError>(())
        }
    });
    (server.handler(WsConfig::default()), rx)
}

#[tokio::test]
async fn queued_emits_arrive_in_order_after_a_server_restart() {
    let (handler, mut logged) = logging_server();
    let server = serve(handler).await;
    let addr = server.addr;
    let client = WrapperClient::connect(&url(&server, "/"), fast())
        .await
        .unwrap();
    let mut events = client.events();
    for n in 0..3 {
        client.emit(None, "log", (n,)).unwrap();
    }
    for n in 0..3 {
        assert_eq!(within("a live emit", logged.recv()).await, Some(n));
    }

    // The server goes away; the app keeps emitting: all of it waits offline.
    server.stop().await;
    assert_eq!(
        within("disconnected", events.recv()).await.unwrap(),
        ClientEvent::Disconnected {
            code: Some(1001),
            reason: "server shutting down".into()
        },
        "http_serve's drain says Going Away, and why"
    );
    let ClientEvent::Reconnecting { attempt, delay } =
        within("reconnecting", events.recv()).await.unwrap()
    else {
        panic!("expected Reconnecting");
    };
    assert_eq!(attempt, 1);
    assert!(delay >= Duration::from_millis(10), "{delay:?}");
    for n in 3..200 {
        client.emit(None, "log", (n,)).unwrap();
    }

    // A new server on the same port: the queue goes out first, in call
    // order, and what the app sends after the reconnect comes after it.
    let (handler, mut logged) = logging_server();
    let server = serve_again(addr, handler);
    let reconnected = loop {
        match within("connected again", events.recv()).await.unwrap() {
            ClientEvent::Connected { connection } => break connection,
            ClientEvent::Reconnecting { .. } | ClientEvent::Disconnected { .. } => {}
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(reconnected, 2);
    client.emit(None, "log", (200,)).unwrap();
    for n in 3..=200 {
        assert_eq!(within("a queued emit", logged.recv()).await, Some(n));
    }

    // A bounded queue: past ClientConfig::offline_queue an emit is refused.
    server.stop().await;
    state_where(&client, |s| matches!(s, ClientState::Reconnecting { .. })).await;
    let bound = ClientConfig::default().offline_queue;
    for n in 0..bound {
        client.emit(None, "log", (n,)).unwrap();
    }
    assert_eq!(
        client.emit(None, "log", (-1,)),
        Err(ClientRequestError::QueueFull)
    );
    client.close().await;
    assert_eq!(
        client.emit(None, "log", (-1,)),
        Err(ClientRequestError::Disconnected)
    );
}

#[tokio::test]
async fn a_user_close_stops_reconnection() {
    // Closed while connected: the server sees a normal close, nothing comes back.
    let server = serve(rt_rpc()).await;
    let client = WrapperClient::connect(&url(&server, "/rpc"), fast())
        .await
        .unwrap();
    let mut states = client.watch();
    client.close().await;
    assert_eq!(client.state(), ClientState::Closed);
    // Every state after the close is Closed: no Reconnecting in between.
    while states.has_changed().unwrap_or(false) {
        assert_eq!(*states.borrow_and_update(), ClientState::Closed);
    }
    assert_eq!(client.connected().await, None);
    assert_eq!(
        client.request::<Value>(None, "echo", (1,)).await,
        Err(ClientRequestError::Disconnected)
    );
    assert!(matches!(client.start().await, Err(ConnectError::Closed)));
    // The server was told (close 1000): nothing is left to drain, and no
    // reconnection came (one connection in all).
    let stats = server.stop().await;
    assert_eq!((stats.connections, stats.aborted), (1, 0));

    // Closed while waiting to reconnect: close returns at once, although the
    // next attempt is a minute away (1013's base in `fast`).
    let server = serve(rt_rpc()).await;
    let client = WrapperClient::connect(&url(&server, "/rpc"), fast())
        .await
        .unwrap();
    server.stop().await;
    state_where(&client, |s| matches!(s, ClientState::Reconnecting { .. })).await;
    let t = Instant::now();
    within("close", client.close()).await;
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(client.state(), ClientState::Closed);

    // Dropping every handle closes too.
    let server = serve(rt_rpc()).await;
    let client = WrapperClient::connect(&url(&server, "/rpc"), fast())
        .await
        .unwrap();
    let mut rx = client.watch();
    drop(client);
    within("closed on drop", rx.wait_for(|s| *s == ClientState::Closed))
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn try_again_later_waits_for_the_longer_base() {
    // A server that accepts every WebSocket and closes it at once with the given code.
    async fn closing_server(code: CloseCode) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                        return;
                    };
                    let frame = CloseFrame {
                        code,
                        reason: "later".into(),
                    };
                    let _ = ws.close(Some(frame)).await;
                    while ws.next().await.is_some() {}
                });
            }
        });
        addr
    }

    for (code, number) in [(CloseCode::Again, 1013), (CloseCode::Restart, 1012)] {
        let addr = closing_server(code).await;
        let config = ClientConfig {
            restart_backoff_base: Duration::from_secs(30),
            ..fast()
        };
        let client = WrapperClient::connect(&format!("ws://{addr}/"), config)
            .await
            .unwrap();
        let s = state_where(&client, |s| matches!(s, ClientState::Reconnecting { .. })).await;
        let ClientState::Reconnecting {
            attempt,
            delay,
            close_code,
        } = s
        else {
            unreachable!()
        };
        assert_eq!((attempt, close_code), (1, Some(number)));
        assert!(
            delay >= Duration::from_secs(30) && delay <= Duration::from_secs(45),
            "{delay:?}"
        );
        client.close().await;
    }

    // A plain drop (1001) uses the short base.
    let addr = closing_server(CloseCode::Away).await;
    let client = WrapperClient::connect(&format!("ws://{addr}/"), fast())
        .await
        .unwrap();
    let s = state_where(&client, |s| matches!(s, ClientState::Reconnecting { .. })).await;
    let ClientState::Reconnecting {
        delay, close_code, ..
    } = s
    else {
        unreachable!()
    };
    assert_eq!(close_code, Some(1001));
    assert!(delay <= Duration::from_millis(300), "{delay:?}");
    client.close().await;
}

#[tokio::test]
async fn connect_errors_say_what_failed() {
    assert!(matches!(
        WrapperClient::connect("https://127.0.0.1:1/", ClientConfig::default()).await,
        Err(ConnectError::InvalidUrl(_))
    ));
    // A port nobody listens on.
    let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    assert!(matches!(
        WrapperClient::connect(&format!("ws://{addr}/rpc"), ClientConfig::default()).await,
        Err(ConnectError::Io(_))
    ));
    // A route that is not a WebSocket.
    let server = serve(rt_rpc()).await;
    let err = WrapperClient::connect(&url(&server, "/health"), ClientConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::Handshake(_)), "{err}");
    server.stop().await;
}

/// Where the npm packages are: `FN_REGISTRY_WSW_NODE_PATH` (what `.ci/run`
/// exports), `NODE_PATH`, or where `.ci/run` installs them.
fn node_modules() -> PathBuf {
    for var in ["FN_REGISTRY_WSW_NODE_PATH", "NODE_PATH"] {
        if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
        });
    cache.join("fn-registry-wsw/node_modules")
}

/// A child process killed when the test ends, however it ends.
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_node_ws_wrapper_server_both_ways() {
    let modules = node_modules();
    let present =
        |m: &PathBuf| m.join("ws-wrapper/package.json").is_file() && m.join("ws").is_dir();
    if !present(&modules) {
        // A fresh machine: install the peer once, outside the repository, as
        // `.ci/run` does, so the README's test command works on its own.
        let dir = modules.parent().unwrap().to_path_buf();
        std::fs::create_dir_all(&dir).unwrap();
        let status = Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "ws-wrapper@3.0.3", "ws@8"])
            .current_dir(&dir)
            .status()
            .unwrap_or_else(|e| panic!("cannot run `npm` to install ws-wrapper 3.0.3 (Node.js 18 or later is needed): {e}"));
        assert!(
            status.success(),
            "npm install ws-wrapper@3.0.3 ws@8 in {} failed",
            dir.display()
        );
    }
    assert!(
        present(&modules),
        "the npm packages are missing in {}: run `npm install ws-wrapper@3.0.3 ws@8` in {} (or set FN_REGISTRY_WSW_NODE_PATH)",
        modules.display(),
        modules.parent().unwrap().display()
    );
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop/wsw_node_server.mjs");
    let child = Command::new("node")
        .arg(&script)
        .env("NODE_PATH", &modules)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `node` (Node.js 18 or later is needed): {e}"));
    let mut node = Kill(child);
    let stdout = node.0.stdout.take().unwrap();
    let line = within(
        "node to listen",
        tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufReader::new(stdout)
                .read_line(&mut line)
                .unwrap();
            line
        }),
    )
    .await
    .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("node said {line:?}"))
        .to_string();

    // Handlers first: the Node server speaks as soon as we connect.
    let client = WrapperClient::new(&url, ClientConfig::default()).unwrap();
    let mut welcome = forward(&client, "welcome");
    let mut heard = forward(&client, "heard");
    let mut notified = forward(&client, "notified");
    client.on("whoareyou", |_ctx, (n,): (u64,)| async move {
        Ok::<_, PeerError>(format!("rust client {n}"))
    });
    answer_back(&client);
    client
        .of("room1")
        .on("triple", |_ctx, (x,): (i64,)| async move {
            Ok::<_, PeerError>(x * 3)
        });
    client.start().await.unwrap();

    // Node -> Rust, unprompted: an event and a request whose answer Node reports back.
    assert_eq!(within("welcome", welcome.recv()).await.unwrap(), [json!(1)]);
    assert_eq!(
        within("heard", heard.recv()).await.unwrap(),
        [json!("rust client 1")]
    );

    // Rust -> Node requests, named channels and rejections.
    let sum: i64 = client.request(None, "add", (2, 3)).await.unwrap();
    assert_eq!(sum, 5);
    let deep = json!({"a": [1, "x", {"b": null}], "é": "😀"});
    let back: Value = client.request(None, "echo", (&deep,)).await.unwrap();
    assert_eq!(back, deep);
    let e = rejected(client.request::<Value>(None, "fail", ()).await);
    assert_eq!(
        (e.message.as_str(), e.value),
        ("node says no", json!({"message": "node says no"}))
    );
    let e = rejected(client.request::<Value>(None, "fail-plain", ()).await);
    assert_eq!(
        (e.message.as_str(), e.value),
        ("plain string", json!("plain string"))
    );
    let product: i64 = client.of("math").request("mul", (6, 7)).await.unwrap();
    assert_eq!(product, 42);
    let e = rejected(client.request::<Value>(None, "nope", ()).await);
    assert_eq!(e.message, "No event listener for 'nope'");
    let e = rejected(client.of("nochan").request::<Value>("mul", ()).await);
    assert_eq!(e.message, "Channel 'nochan' does not exist");
    let e = rejected(client.of("math").request::<Value>("div", ()).await);
    assert_eq!(e.message, "No event listener for 'div' on channel 'math'");
    // A timeout against a handler that never answers.
    assert_eq!(
        client
            .request::<Value>(None, "never", ())
            .timeout(Duration::from_millis(50))
            .await,
        Err(ClientRequestError::Timeout)
    );

    // Events Rust -> Node -> Rust.
    client.emit(None, "notify-me", ("hi", 2)).unwrap();
    assert_eq!(
        within("notified", notified.recv()).await.unwrap(),
        [json!("hi"), json!(2)]
    );
    client.of("math").emit("notify-me", ("on math",)).unwrap();
    assert_eq!(
        within("notified", notified.recv()).await.unwrap(),
        [json!("math"), json!("on math")]
    );

    // Node -> Rust requests on demand: answers, errors, missing handlers, a named channel.
    let x: i64 = client
        .request(None, "ask-me", ("double", 21))
        .await
        .unwrap();
    assert_eq!(x, 42);
    let e = rejected(client.request::<Value>(None, "ask-me", ("refuse", 0)).await);
    assert_eq!(e.message, "client says no");
    let e = rejected(
        client
            .request::<Value>(None, "ask-me", ("missing", 0))
            .await,
    );
    assert_eq!(e.message, "No event listener for 'missing'");
    let x: i64 = client
        .of("room1")
        .request("ask-me", ("triple", 5))
        .await
        .unwrap();
    assert_eq!(x, 15);
    let e = rejected(
        client
            .of("room1")
            .request::<Value>("ask-me", ("double", 5))
            .await,
    );
    assert_eq!(
        e.message,
        "No event listener for 'double' on channel 'room1'"
    );

    client.close().await;
    drop(node);
}

#[tokio::test]
async fn frames_on_the_wire_are_the_protocols() {
    use tokio_tungstenite::tungstenite::Message;

    // The test is the server: it reads what the client sends, byte for byte.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let (client, peer) = tokio::join!(
        WrapperClient::connect(&url, ClientConfig::default()),
        async {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio_tungstenite::accept_async(tcp).await.unwrap()
        }
    );
    let client = client.unwrap();
    let (mut tx, mut rx) = peer.split();
    let mut read = async || -> Message {
        within("a frame from the client", rx.next())
            .await
            .expect("open")
            .unwrap()
    };
    use futures_util::SinkExt;
    let mut say = async |text: &str| tx.send(Message::text(text)).await.unwrap();

    // Requests, answers, rejections, a named channel.
    let add = tokio::spawn(client.request::<i64>(None, "add", (2, 3)).into_future());
    assert_eq!(read().await, Message::text(r#"{"a":["add",2,3],"i":1}"#));
    say(r#"{"i":1,"d":5}"#).await;
    assert_eq!(add.await.unwrap(), Ok(5));
    let who = tokio::spawn(client.of("room1").request::<Value>("who", ()).into_future());
    assert_eq!(
        read().await,
        Message::text(r#"{"a":["who"],"c":"room1","i":2}"#)
    );
    say(r#"{"i":2,"e":{"message":"nope"},"_":1}"#).await;
    assert_eq!(rejected(who.await.unwrap()).message, "nope");
    client.emit(Some("room1"), "hello", ("x", 2)).unwrap();
    assert_eq!(
        read().await,
        Message::text(r#"{"a":["hello","x",2],"c":"room1"}"#)
    );

    // Cancel and timeout send `{i, x, _: 1}`; a late answer is ignored.
    let slow = client.request::<Value>(None, "slow", ());
    let cancel = slow.cancel_handle();
    let slow = tokio::spawn(slow.into_future());
    assert_eq!(read().await, Message::text(r#"{"a":["slow"],"i":3}"#));
    cancel.cancel();
    assert_eq!(
        read().await,
        Message::text(r#"{"i":3,"x":{"message":"Request aborted"},"_":1}"#)
    );
    assert_eq!(slow.await.unwrap(), Err(ClientRequestError::Cancelled));
    say(r#"{"i":3,"d":"late"}"#).await;
    let timed = tokio::spawn(
        client
            .request::<Value>(None, "slow", ())
            .timeout(Duration::from_millis(10))
            .into_future(),
    );
    assert_eq!(read().await, Message::text(r#"{"a":["slow"],"i":4}"#));
    assert_eq!(
        read().await,
        Message::text(r#"{"i":4,"x":{"message":"Request timed out"},"_":1}"#)
    );
    assert_eq!(timed.await.unwrap(), Err(ClientRequestError::Timeout));

    // An anonymous channel: created by `{i, h: 1}`, events both ways, aborted with `{h, x, _: 1}`.
    let ch = tokio::spawn(client.request::<()>(None, "stream", (3,)).channel());
    assert_eq!(read().await, Message::text(r#"{"a":["stream",3],"i":5}"#));
    say(r#"{"i":5,"h":1}"#).await;
    let ch = ch.await.unwrap().unwrap();
    assert_eq!(ch.handle(), 5);
    ch.emit("start", ()).unwrap();
    assert_eq!(read().await, Message::text(r#"{"a":["start"],"h":5}"#));
    say(r#"{"a":["next",{"value":1,"done":false}],"h":5}"#).await;
    assert_eq!(
        ch.recv().await,
        Some(("next".into(), vec![json!({"value": 1, "done": false})]))
    );
    ch.abort("bye");
    assert_eq!(
        read().await,
        Message::text(r#"{"h":5,"x":{"message":"bye"},"_":1}"#)
    );
    // A message on a handle the client does not know is answered with an abort.
    say(r#"{"a":["next"],"h":77}"#).await;
    assert_eq!(
        read().await,
        Message::text(r#"{"h":77,"x":{"message":"Request aborted"},"_":1}"#)
    );

    // Requests to the client: answers, the protocol's rejection, nothing for
    // what the protocol ignores, and a cancellation the handler sees.
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    client
        .on("double", |_ctx, (x,): (i64,)| async move {
            Ok::<_, PeerError>(x * 2)
        })
        .on("hang", move |ctx: ClientCtx, (): ()| {
            let seen = seen_tx.clone();
            async move {
                ctx.cancelled().await;
                let _ = seen.send(ctx.request_id());
                Ok::<_, PeerError>("too late")
            }
        });
    say(r#"{"a":["double",4],"i":1}"#).await;
    assert_eq!(read().await, Message::text(r#"{"i":1,"d":8}"#));
    say(r#"{"a":["nothing"],"i":2}"#).await;
    assert_eq!(
        read().await,
        Message::text(r#"{"i":2,"e":{"message":"No event listener for 'nothing'"},"_":1}"#)
    );
    say("not json").await;
    say(r#"{"ws-wrapper":false,"a":["double",1],"i":9}"#).await;
    say(r#"{"a":["close"],"i":10}"#).await;
    say(r#"{"a":["hang"],"i":4}"#).await;
    say(r#"{"i":4,"x":{"message":"stop"},"_":1}"#).await;
    assert_eq!(
        within("the handler sees the cancel", seen.recv()).await,
        Some(Some(4))
    );
    say(r#"{"a":["double",5],"i":3}"#).await;
    // The next frame answers request 3: nothing went out for 9, 10 or the cancelled 4.
    assert_eq!(read().await, Message::text(r#"{"i":3,"d":10}"#));

    // A user close is a normal close.
    let closing = tokio::spawn({
        let client = client.clone();
        async move { client.close().await }
    });
    match read().await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected a close frame, got {other:?}"),
    }
    let mut ws = tx.reunite(rx).unwrap();
    // Reading sends tungstenite's close reply; then the server hangs up
    // first, as RFC 6455 has it (the client waits for that).
    while let Some(Ok(_)) = within("the end of the stream", ws.next()).await {}
    drop(ws);
    within("close", closing).await.unwrap();
    assert_eq!(client.state(), ClientState::Closed);
}
