//! End to end over TCP: two nodes on one `MemoryBus`, each a `ws_handler`
//! served by `http_serve` on 127.0.0.1:0, with real tokio-tungstenite
//! clients. Every connection joins `lobby` when it connects.
//!
//! Waiting is on signals: the events the clients read. That a client got
//! something only once is proven by what it reads next (one connection is
//! FIFO: a second copy would come before the next event).

use std::future::ready;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use backplane::Backplane;
use backplane_memory::{MemoryBus, MemoryConfig};
use futures_util::{SinkExt, StreamExt};
use http_serve::{ServeConfig, ServeStats, http_serve};
use http_types::{Request, Response};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{WebSocketStream, client_async};
use ws_cluster::WsCluster;
use ws_event::{Event, Target};
use ws_handler::{WsConfig, identify, on_connect, ws_handler};
use ws_hub::{HubConfig, Identity, WsClient, WsHub};

/// How long any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);

type Ws = WebSocketStream<TcpStream>;

/// One node: its cluster, served on 127.0.0.1:0.
struct Node {
    addr: SocketAddr,
    cluster: WsCluster,
    stop: oneshot::Sender<()>,
    task: JoinHandle<ServeStats>,
}

/// `Authorization: Bearer <name>` is user `<name>`.
#[allow(clippy::result_large_err)] // the hook's shape: a refusal is a response
fn bearer(req: &Request) -> Result<Identity, Response> {
    let user = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok()?.strip_prefix("Bearer "));
    Ok(user.map(Identity::user).unwrap_or_default())
}

impl Node {
    async fn start(bus: &MemoryBus) -> Node {
        let backplane: Arc<dyn Backplane> = Arc::new(bus.node());
        let hub = WsHub::new(WsCluster::hub_config(&*backplane, HubConfig::default()));
        let cluster = WsCluster::new(hub.clone(), backplane);
        let lobby = hub.clone();
        let config = WsConfig {
            identify: Some(identify(|req| ready(bearer(req)))),
            on_connect: Some(on_connect(move |client: &WsClient| {
                lobby.join(client, "lobby").unwrap();
                ready(Ok(()))
            })),
            ..WsConfig::default()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(http_serve(
            listener,
            ws_handler(hub, config),
            async {
                let _ = stopped.await;
            },
            ServeConfig::default(),
        ));
        Node {
            addr,
            cluster,
            stop,
            task,
        }
    }

    async fn connect(&self, user: &str) -> Ws {
        let mut req = format!("ws://{}/ws", self.addr)
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {user}").parse().unwrap());
        let stream = TcpStream::connect(self.addr).await.unwrap();
        let (ws, res) = tokio::time::timeout(WAIT, client_async(req, stream))
            .await
            .expect("handshake in time")
            .unwrap();
        assert_eq!(res.status(), 101);
        ws
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("http_serve returned in time")
            .unwrap();
    }
}

/// The next event `ws` reads: `(type, data)`.
async fn next(ws: &mut Ws) -> (String, Value) {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("an event in time")
            .expect("the stream is open")
            .expect("no error");
        if let Message::Text(text) = msg {
            let ev: Value = serde_json::from_str(&text).unwrap();
            return (ev["type"].as_str().unwrap().to_string(), ev["data"].clone());
        }
    }
}

fn presence(user: &str, client: &str) -> Value {
    json!({"room": "lobby", "user": user, "client": client})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_on_two_nodes_get_emits_and_presence_once() {
    let bus = MemoryBus::new(MemoryConfig::default());
    let (a, b) = (Node::start(&bus).await, Node::start(&bus).await);

    let mut ana = a.connect("ana").await;
    let (kind, joined) = next(&mut ana).await;
    assert_eq!(kind, "presence.join");
    let ana_id = joined["client"].as_str().unwrap().to_string();
    assert_eq!(joined, presence("ana", &ana_id));

    let mut bo = b.connect("bo").await;
    let (kind, joined) = next(&mut bo).await;
    assert_eq!(kind, "presence.join");
    let bo_id = joined["client"].as_str().unwrap().to_string();
    assert_eq!(
        next(&mut ana).await,
        ("presence.join".into(), presence("bo", &bo_id))
    );
    assert_ne!(ana_id, bo_id, "client ids are unique across nodes");

    // Sent on B to the room and to ana, who is in it: each socket once.
    let to_room = Target::rooms(["lobby"]).and_users(["ana"]);
    let report = b
        .cluster
        .emit(&Event::new("notice", json!(1)), &to_room)
        .await
        .unwrap();
    assert_eq!(report.sent, 1, "bo, on B");
    // Sent on A to bo's connection by id: it lives on B.
    let bo_client = Target::clients([bo_id.parse().unwrap()]);
    a.cluster
        .emit(&Event::new("notice", json!(2)), &bo_client)
        .await
        .unwrap();
    a.cluster
        .emit(&Event::new("notice", json!(3)), &Target::broadcast())
        .await
        .unwrap();
    assert_eq!(next(&mut ana).await, ("notice".into(), json!(1)));
    assert_eq!(
        next(&mut ana).await,
        ("notice".into(), json!(3)),
        "1 once, never 2"
    );
    assert_eq!(next(&mut bo).await, ("notice".into(), json!(1)));
    assert_eq!(next(&mut bo).await, ("notice".into(), json!(2)));
    assert_eq!(next(&mut bo).await, ("notice".into(), json!(3)));

    let p = a.cluster.presence("lobby").await.unwrap();
    assert_eq!(p.users(), ["ana", "bo"]);

    // bo goes: ana, on the other node, is told.
    bo.close(None).await.unwrap();
    assert_eq!(
        next(&mut ana).await,
        ("presence.leave".into(), presence("bo", &bo_id))
    );
    assert_eq!(b.cluster.presence("lobby").await.unwrap().users(), ["ana"]);

    ana.send(Message::Close(None)).await.unwrap();
    a.stop().await;
    b.stop().await;
}
