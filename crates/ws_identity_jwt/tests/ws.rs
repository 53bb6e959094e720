//! End to end over TCP: `ws_handler` served by `http_serve` on 127.0.0.1:0,
//! with the identify or authenticate hook of a `JwtAuth`, and a real
//! tokio-tungstenite client.

use std::future::ready;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http_serve::{ServeConfig, ServeStats, http_serve};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, get_current_timestamp};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{WebSocketStream, client_async};
use ws_handler::{AuthenticateHook, IdentifyHook, WsConfig, on_connect, ws_handler};
use ws_hub::{HubConfig, Identity, WsClient, WsHub};
use ws_identity_jwt::JwtAuth;

/// How long any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);
const RSA_PRIVATE: &[u8] = include_bytes!("keys/rsa_private.pem");
const RSA_PUBLIC: &[u8] = include_bytes!("keys/rsa_public.pem");
const ED_PRIVATE: &[u8] = include_bytes!("keys/ed25519_private.pem");
const ED_PUBLIC: &[u8] = include_bytes!("keys/ed25519_public.pem");
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

type Ws = WebSocketStream<TcpStream>;

/// `ws_handler` on 127.0.0.1:0; `connected` gets the identity of every
/// client the hub registers.
struct Server {
    addr: SocketAddr,
    hub: WsHub,
    connected: mpsc::UnboundedReceiver<Identity>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<ServeStats>,
}

impl Server {
    async fn start(
        identify: Option<IdentifyHook>,
        authenticate: Option<AuthenticateHook>,
    ) -> Server {
        let hub = WsHub::new(HubConfig::default());
        let (tx, connected) = mpsc::unbounded_channel();
        let config = WsConfig {
            identify,
            authenticate,
            on_connect: Some(on_connect(move |client: &WsClient| {
                let _ = tx.send(client.identity().clone());
                ready(Ok(()))
            })),
            ..WsConfig::default()
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = oneshot::channel::<()>();
        let shutdown = async {
            let _ = rx.await;
        };
        let handler = ws_handler(hub.clone(), config);
        let task = tokio::spawn(http_serve(
            listener,
            handler,
            shutdown,
            ServeConfig::default(),
        ));
        Server {
            addr,
            hub,
            connected,
            stop,
            task,
        }
    }

    /// The identity of the next client registered.
    async fn connected(&mut self) -> Identity {
        tokio::time::timeout(WAIT, self.connected.recv())
            .await
            .expect("a client registered in time")
            .unwrap()
    }

    /// Upgrades `path` with an optional `Authorization` header.
    async fn connect(&self, path: &str, authorization: Option<&str>) -> Result<Ws, WsError> {
        let mut req = format!("ws://{}{path}", self.addr)
            .into_client_request()
            .unwrap();
        if let Some(a) = authorization {
            req.headers_mut().insert(AUTHORIZATION, a.parse().unwrap());
        }
        let stream = TcpStream::connect(self.addr).await.unwrap();
        let (ws, res) = tokio::time::timeout(WAIT, client_async(req, stream))
            .await
            .expect("handshake in time")?;
        assert_eq!(res.status(), 101);
        Ok(ws)
    }

    /// The refusal of an upgrade: status, `WWW-Authenticate`, body.
    async fn refused(&self, path: &str, authorization: Option<&str>) -> (u16, String, String) {
        match self.connect(path, authorization).await {
            Err(WsError::Http(res)) => {
                let challenge = res
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                let body = String::from_utf8(res.body().clone().unwrap_or_default()).unwrap();
                (res.status().as_u16(), challenge, body)
            }
            Err(e) => panic!("expected an HTTP refusal, got {e}"),
            Ok(_) => panic!("expected an HTTP refusal, got 101"),
        }
    }

    /// Shuts down while `clients` read (so they answer the server's `1001`
    /// close at once) and waits for `http_serve` to return.
    async fn stop(self, clients: Vec<Ws>) {
        let readers: Vec<_> = clients
            .into_iter()
            .map(|mut ws| tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} }))
            .collect();
        self.stop.send(()).unwrap();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("http_serve returned in time")
            .unwrap();
        for reader in readers {
            tokio::time::timeout(WAIT, reader)
                .await
                .expect("the client saw the close")
                .unwrap();
        }
    }
}

fn hs(claims: &Value) -> String {
    let key = EncodingKey::from_secret(SECRET).unwrap();
    encode(&Header::new(Algorithm::HS256), claims, &key).unwrap()
}

fn valid(user: &str) -> Value {
    json!({"sub": user, "aud": "chat", "exp": get_current_timestamp() + 600, "rooms": ["public-*"]})
}

fn hs256() -> JwtAuth {
    JwtAuth::hs256(SECRET).unwrap().audience("chat")
}

/// The close frame the server sends next, data before it failing the test.
async fn close_code(ws: &mut Ws) -> (CloseCode, String) {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("the stream is open")
            .expect("no error");
        match msg {
            Message::Close(Some(frame)) => return (frame.code, frame.reason.as_str().to_string()),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a close, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_valid_header_token_upgrades_as_its_user() {
    let mut server = Server::start(Some(hs256().identify_hook()), None).await;
    let token = hs(&valid("ana"));
    let ws = server
        .connect("/ws", Some(&format!("Bearer {token}")))
        .await
        .unwrap();
    let identity = server.connected().await;
    assert_eq!(identity.user.as_deref(), Some("ana"));
    assert_eq!(identity.allowed_rooms, Some(vec!["public-*".to_string()]));
    assert_eq!(server.hub.user_len("ana"), 1);
    let clients = server.hub.clients();
    assert_eq!(clients.len(), 1);
    assert_eq!(clients[0].user(), Some("ana"));
    server.stop(vec![ws]).await;
}

#[tokio::test]
async fn a_query_token_upgrades_for_browsers() {
    let mut server = Server::start(Some(hs256().identify_hook()), None).await;
    let token = hs(&valid("bo"));
    let ws = server
        .connect(&format!("/ws?token={token}"), None)
        .await
        .unwrap();
    assert_eq!(server.connected().await.user.as_deref(), Some("bo"));
    server.stop(vec![ws]).await;
}

#[tokio::test]
async fn rs256_and_eddsa_tokens_upgrade() {
    let auth = JwtAuth::rs256_pem(RSA_PUBLIC).unwrap().audience("chat");
    let mut server = Server::start(Some(auth.identify_hook()), None).await;
    let key = EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap();
    let token = encode(&Header::new(Algorithm::RS256), &valid("cy"), &key).unwrap();
    let ws = server
        .connect("/", Some(&format!("bearer {token}")))
        .await
        .unwrap();
    assert_eq!(server.connected().await.user.as_deref(), Some("cy"));
    // An HS256 token is refused by an RS256 key, before upgrading.
    let (status, _, body) = server
        .refused("/", Some(&format!("Bearer {}", hs(&valid("cy")))))
        .await;
    assert_eq!((status, body.as_str()), (401, "algorithm not allowed\n"));
    server.stop(vec![ws]).await;

    let auth = JwtAuth::eddsa_pem(ED_PUBLIC).unwrap().audience("chat");
    let mut server = Server::start(Some(auth.identify_hook()), None).await;
    let key = EncodingKey::from_ed_pem(ED_PRIVATE).unwrap();
    let token = encode(&Header::new(Algorithm::EdDSA), &valid("di"), &key).unwrap();
    let ws = server
        .connect(&format!("/?token={token}"), None)
        .await
        .unwrap();
    assert_eq!(server.connected().await.user.as_deref(), Some("di"));
    server.stop(vec![ws]).await;
}

#[tokio::test]
async fn bad_tokens_get_401_before_upgrading() {
    let server = Server::start(Some(hs256().identify_hook()), None).await;
    let now = get_current_timestamp();
    let expired = hs(&json!({"sub": "ana", "aud": "chat", "exp": now - 600}));
    let early = hs(&json!({"sub": "ana", "aud": "chat", "exp": now + 600, "nbf": now + 300}));
    let audience = hs(&json!({"sub": "ana", "aud": "billing", "exp": now + 600}));
    let other = EncodingKey::from_secret(b"another secret, also 32 bytes long").unwrap();
    let signature = encode(&Header::new(Algorithm::HS256), &valid("ana"), &other).unwrap();
    for (token, why) in [
        (expired, "token expired"),
        (early, "token not yet valid"),
        (audience, "wrong audience"),
        (signature, "bad signature"),
        ("not.a.jwt".to_string(), "malformed token"),
    ] {
        let (status, challenge, body) = server
            .refused("/ws", Some(&format!("Bearer {token}")))
            .await;
        assert_eq!(status, 401, "{why}");
        assert_eq!(
            challenge,
            format!("Bearer error=\"invalid_token\", error_description=\"{why}\"")
        );
        assert_eq!(body, format!("{why}\n"));
        // The same through the query.
        let (status, _, body) = server.refused(&format!("/ws?token={token}"), None).await;
        assert_eq!((status, body), (401, format!("{why}\n")));
    }
    // No token at all.
    let (status, challenge, body) = server.refused("/ws", None).await;
    assert_eq!(
        (status, challenge.as_str(), body.as_str()),
        (401, "Bearer", "no token\n")
    );
    assert_eq!(server.hub.len(), 0);
    server.stop(vec![]).await;
}

#[tokio::test]
async fn anonymous_when_allowed() {
    let auth = hs256().allow_anonymous(true);
    let mut server = Server::start(Some(auth.identify_hook()), None).await;
    let ws = server.connect("/ws", None).await.unwrap();
    assert_eq!(server.connected().await, Identity::default());
    // A bad token is still refused.
    let (status, _, _) = server.refused("/ws", Some("Bearer not.a.jwt")).await;
    assert_eq!(status, 401);
    server.stop(vec![ws]).await;
}

#[tokio::test]
async fn the_first_message_authenticates() {
    let mut server = Server::start(None, Some(hs256().authenticate_hook())).await;

    let mut ws = server.connect("/ws", None).await.unwrap();
    let hello = json!({"type": "authenticate", "token": hs(&valid("ana"))});
    ws.send(Message::text(hello.to_string())).await.unwrap();
    assert_eq!(server.connected().await.user.as_deref(), Some("ana"));
    assert_eq!(server.hub.user_len("ana"), 1);

    let mut bad = server.connect("/ws", None).await.unwrap();
    let expired = hs(&json!({"sub": "bo", "aud": "chat", "exp": get_current_timestamp() - 600}));
    let hello = json!({"type": "authenticate", "token": expired});
    bad.send(Message::text(hello.to_string())).await.unwrap();
    assert_eq!(
        close_code(&mut bad).await,
        (CloseCode::Policy, "token expired".into())
    );

    let mut other = server.connect("/ws", None).await.unwrap();
    other.send(Message::text("hello")).await.unwrap();
    let (code, reason) = close_code(&mut other).await;
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.starts_with("first message must be"), "{reason}");

    assert_eq!(server.hub.len(), 1);
    server.stop(vec![ws, bad, other]).await;
}
