//! Helpers shared by the WebSocket end-to-end tests (`ws.rs`, `hub.rs`): a
//! server on 127.0.0.1:0, a real tokio-tungstenite client, hook signals, and
//! reads bounded by [`WAIT`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use http_serve::ServeStats;
use http_types::Handler;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{WebSocketStream, client_async};
use ws_handler::{Disconnect, WsConfig};
use ws_hub::{ClientId, WsHub};

use crate::serving::Serving;
pub(crate) use crate::serving::WAIT;

pub(crate) type Ws = WebSocketStream<TcpStream>;

pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    pub(crate) hub: WsHub,
    serving: Serving,
}

impl Server {
    /// Serves `handler` (whose WebSockets live in `hub`).
    pub(crate) async fn start(handler: Handler, hub: WsHub, drain: Duration) -> Server {
        let serving = Serving::start(handler, drain).await;
        Server {
            addr: serving.addr,
            hub,
            serving,
        }
    }

    pub(crate) async fn stop(self) -> ServeStats {
        self.serving.stop().await
    }

    /// Waits until the hub has `n` connections. A client sees the `101`
    /// before the server has registered it (registration runs in the
    /// upgraded connection's task), and the reference server's hub has no
    /// hook to signal it, so this polls, bounded by a deadline.
    pub(crate) async fn connections(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.hub.stats().connections != n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "connections stuck at {:?}, want {n}",
                self.hub.stats()
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    pub(crate) async fn ws(&self, path: &str) -> Ws {
        ws_connect(self.addr, path).await
    }
}

pub(crate) async fn ws_connect(addr: SocketAddr, path: &str) -> Ws {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (ws, res) = client_async(format!("ws://{addr}{path}"), stream)
        .await
        .expect("handshake");
    assert_eq!(res.status(), 101);
    ws
}

/// Signals from a handler's hooks: the id of every client that connected,
/// and every disconnect with its reason.
pub(crate) struct Hooks {
    pub(crate) connected: mpsc::UnboundedReceiver<ClientId>,
    pub(crate) disconnected: mpsc::UnboundedReceiver<(ClientId, Disconnect)>,
}

impl Hooks {
    pub(crate) async fn connected(&mut self) -> ClientId {
        tokio::time::timeout(WAIT, self.connected.recv())
            .await
            .expect("a client connected in time")
            .unwrap()
    }

    pub(crate) async fn disconnected(&mut self) -> (ClientId, Disconnect) {
        tokio::time::timeout(WAIT, self.disconnected.recv())
            .await
            .expect("a client disconnected in time")
            .unwrap()
    }
}

/// `config` with `on_connect` and `on_disconnect` hooks reporting to [`Hooks`].
pub(crate) fn hooked(config: WsConfig) -> (WsConfig, Hooks) {
    let (ctx, connected) = mpsc::unbounded_channel();
    let (dtx, disconnected) = mpsc::unbounded_channel();
    let config = WsConfig {
        on_connect: Some(ws_handler::on_connect(move |c| {
            let _ = ctx.send(c.id());
            std::future::ready(Ok(()))
        })),
        on_disconnect: Some(Arc::new(move |c, why| {
            let _ = dtx.send((c.id(), why.clone()));
        })),
        ..config
    };
    (
        config,
        Hooks {
            connected,
            disconnected,
        },
    )
}

/// The next text or binary message (pings and pongs skipped; tungstenite
/// answers pings itself), failing on a close or after [`WAIT`].
pub(crate) async fn next_data(ws: &mut Ws) -> Message {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time")
            .expect("the stream is open")
            .expect("no error");
        match msg {
            Message::Text(_) | Message::Binary(_) => return msg,
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected data, got {other:?}"),
        }
    }
}

pub(crate) async fn next_text(ws: &mut Ws) -> String {
    match next_data(ws).await {
        Message::Text(t) => t.as_str().to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// Reads until the server's close frame; data before it is skipped and
/// counted. Returns the frame and how many data messages came first.
pub(crate) async fn until_close(ws: &mut Ws) -> (Option<CloseFrame>, usize) {
    let mut data = 0;
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("the close in time");
        match msg {
            Some(Ok(Message::Close(frame))) => return (frame, data),
            Some(Ok(Message::Text(_) | Message::Binary(_))) => data += 1,
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

pub(crate) fn code(frame: &Option<CloseFrame>) -> Option<u16> {
    frame.as_ref().map(|f| u16::from(f.code))
}

pub(crate) fn closed_by_server_with(why: &Disconnect) -> Option<u16> {
    match why {
        Disconnect::ClosedByServer(frame) => code(frame),
        _ => None,
    }
}
