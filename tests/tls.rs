//! TLS end to end: rt-server's app on `http_serve` with a certificate that a
//! CA made here (rcgen) signed for `localhost` and 127.0.0.1, real TCP on
//! 127.0.0.1:0, real clients over tokio-rustls: hyper's HTTP/2 and HTTP/1.1
//! clients (ALPN chooses), tokio-tungstenite, and `ws_wrapper_client` on
//! `wss://`. Clients that do not trust the CA fail their handshake while the
//! server keeps serving the others.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use http_serve::rustls::pki_types::{CertificateDer, ServerName};
use http_serve::{ServeConfig, ServeStats, TlsConfig, http_serve, rustls};
use http_types::{Bytes, Handler};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rt_server::{Options, app};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use ws_handler::WsConfig;
use ws_hub::{HubConfig, WsHub};
use ws_wrapper_client::{ClientConfig, ConnectError, WrapperClient};
use ws_wrapper_server::{Ctx, WrapperConfig, WrapperError, WrapperServer};

/// How long any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// A CA made here and the server certificate it signed.
struct Pki {
    ca: CertificateDer<'static>,
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn pki() -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "workspace_tests TLS CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    Pki {
        ca: ca.der().clone(),
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// A TLS client trusting only `ca`, offering `alpn`.
fn connector(ca: &CertificateDer<'static>, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    addr: SocketAddr,
    tls: &TlsConnector,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tls.connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// `http_serve` over TLS on 127.0.0.1:0.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<ServeStats>,
}

impl Server {
    async fn start(handler: Handler, pki: &Pki, config: ServeConfig) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tls = TlsConfig::from_pem(pki.cert_pem.as_bytes(), pki.key_pem.as_bytes()).unwrap();
        let config = ServeConfig {
            tls: Some(tls),
            ..config
        };
        let (tx, rx) = oneshot::channel::<()>();
        let shutdown = async {
            let _ = rx.await;
        };
        let task = tokio::spawn(http_serve(listener, handler, shutdown, config));
        Server {
            addr,
            stop: Some(tx),
            task,
        }
    }

    /// rt-server's app, quiet.
    async fn rt(pki: &Pki, config: ServeConfig) -> Server {
        let app = app(Options {
            log: false,
            ..Options::default()
        });
        Server::start(app.handler, pki, config).await
    }

    async fn stop(mut self) -> ServeStats {
        self.stop.take().unwrap().send(()).unwrap();
        within("http_serve to return", self.task).await.unwrap()
    }
}

/// An HTTP/2 connection (ALPN `h2`) and the version ALPN chose.
async fn h2(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Full<Bytes>> {
    let tls = tls_connect(addr, &connector(ca, &[b"h2", b"http/1.1"]))
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

/// An HTTP/1.1 connection (ALPN `http/1.1`).
async fn h1(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Full<Bytes>> {
    let tls = tls_connect(addr, &connector(ca, &[b"http/1.1"]))
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

fn req(method: &str, path: &str, body: &str) -> hyper::Request<http_body_util::Full<Bytes>> {
    hyper::Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"))
        .header("host", "localhost")
        .body(http_body_util::Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// Reads the stream until `want` has arrived; what arrived.
async fn read_until(body: &mut Incoming, want: &str) -> String {
    let mut got = String::new();
    while !got.contains(want) {
        let frame = within(want, body.frame())
            .await
            .expect("the stream is open")
            .unwrap();
        if let Ok(d) = frame.into_data() {
            got.push_str(&String::from_utf8_lossy(&d));
        }
    }
    got
}

/// Opens `/events`, checks it is an event stream, and waits for its first
/// comment (`: ok`, sent once the subscription is in place).
async fn subscribe<S>(send: S) -> (http::Version, Incoming)
where
    S: Future<Output = hyper::Result<hyper::Response<Incoming>>>,
{
    let res = within("the /events response", send).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let version = res.version();
    let mut body = res.into_body();
    read_until(&mut body, ": ok").await;
    (version, body)
}

#[tokio::test]
async fn https_http2_streams_sse_while_a_publish_arrives_and_http11_works_too() {
    let pki = pki();
    let server = Server::rt(&pki, ServeConfig::default()).await;

    // HTTP/2 by ALPN: the stream and the publish share one connection.
    let mut two = h2(server.addr, &pki.ca).await;
    let (version, mut events) = subscribe(two.send_request(req("GET", "/events", ""))).await;
    assert_eq!(version, http::Version::HTTP_2);
    // HTTP/1.1 over TLS: its stream is written straight to the TLS stream.
    let mut one = h1(server.addr, &pki.ca).await;
    let (version, mut events11) = subscribe(one.send_request(req("GET", "/events", ""))).await;
    assert_eq!(
        version,
        http::Version::HTTP_10,
        "long-lived: close-delimited"
    );

    let res = two
        .send_request(req("POST", "/publish?event=note", "over h2"))
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    assert_eq!(res.version(), http::Version::HTTP_2);
    let got = read_until(&mut events, "data: over h2\n\n").await;
    assert!(got.contains("event: note\n"), "{got:?}");
    let got = read_until(&mut events11, "data: over h2\n\n").await;
    assert!(got.contains("event: note\n"), "{got:?}");

    let mut plain = h1(server.addr, &pki.ca).await;
    let res = plain.send_request(req("GET", "/health", "")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.version(), http::Version::HTTP_11);

    // Shutdown ends both streams well before the drain timeout.
    let stats = server.stop().await;
    assert_eq!(stats.aborted, 0);
    for body in [&mut events, &mut events11] {
        while let Some(frame) = within("the stream's end", body.frame()).await {
            if frame.is_err() {
                break;
            }
        }
    }
}

#[tokio::test]
async fn a_websocket_over_tls_echoes_and_gets_1001_at_shutdown() {
    let pki = pki();
    let server = Server::rt(&pki, ServeConfig::default()).await;
    // WebSocket clients offer http/1.1 (no WebSocket over HTTP/2 here).
    let tls = tls_connect(server.addr, &connector(&pki.ca, &[b"http/1.1"]))
        .await
        .unwrap();
    let request = format!("wss://localhost:{}/echo", server.addr.port())
        .into_client_request()
        .unwrap();
    let (mut ws, res) = within(
        "the handshake",
        tokio_tungstenite::client_async(request, tls),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 101);
    for text in ["hello over tls", "and again"] {
        ws.send(Message::text(text)).await.unwrap();
        let back = within("the echo", ws.next()).await.unwrap().unwrap();
        assert_eq!(back, Message::text(text));
    }
    let big = "x".repeat(256 * 1024);
    ws.send(Message::text(big.clone())).await.unwrap();
    let back = within("the big echo", ws.next()).await.unwrap().unwrap();
    assert_eq!(back.len(), big.len());

    let stop = tokio::spawn(server.stop());
    let close = within("the close", ws.next()).await.unwrap().unwrap();
    let Message::Close(Some(frame)) = close else {
        panic!("expected a close frame, got {close:?}");
    };
    assert_eq!(frame.code, CloseCode::Away);
    drop(ws);
    assert_eq!(stop.await.unwrap().aborted, 0);
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_fails_while_others_are_served() {
    let (pki, stranger) = (pki(), pki());
    let server = Server::rt(&pki, ServeConfig::default()).await;
    let mut two = h2(server.addr, &pki.ca).await;
    let (_, mut events) = subscribe(two.send_request(req("GET", "/events", ""))).await;

    for alpn in [&[&b"h2"[..]][..], &[b"http/1.1"]] {
        let err = tls_connect(server.addr, &connector(&stranger.ca, alpn))
            .await
            .expect_err("a certificate of another CA");
        assert!(
            err.to_string().contains("invalid peer certificate"),
            "{err}"
        );
    }

    // The open stream and new connections carry on.
    let res = two
        .send_request(req("POST", "/publish", "still here"))
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    read_until(&mut events, "data: still here\n\n").await;
    let mut fresh = h1(server.addr, &pki.ca).await;
    let res = fresh.send_request(req("GET", "/health", "")).await.unwrap();
    assert_eq!(res.status(), 200);
    drop((events, two, fresh));
    assert_eq!(server.stop().await.aborted, 0);
}

#[tokio::test]
async fn a_tcp_client_that_sends_nothing_is_closed_at_the_header_timeout() {
    let pki = pki();
    let limit = Duration::from_millis(500);
    let config = ServeConfig {
        header_read_timeout: limit,
        ..ServeConfig::default()
    };
    let server = Server::rt(&pki, config).await;
    let start = Instant::now();
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut rest = Vec::new();
    let n = within("the close", silent.read_to_end(&mut rest))
        .await
        .unwrap_or(0);
    let after = start.elapsed();
    assert_eq!(n, 0, "closed without a byte: {rest:?}");
    assert!(after >= limit, "closed after {after:?}");
    // A TLS client on the same listener is served meanwhile and after.
    let mut one = h1(server.addr, &pki.ca).await;
    let res = one.send_request(req("GET", "/health", "")).await.unwrap();
    assert_eq!(res.status(), 200);
    drop(one);
    assert_eq!(server.stop().await.aborted, 0);
}

/// rt-server's app with, on `/me`, a ws-wrapper server whose identify hook
/// takes the user from `Authorization: Bearer <name>` and whose `whoami`
/// answers it.
fn rt_with_whoami() -> Handler {
    let rt = app(Options {
        log: false,
        ..Options::default()
    })
    .handler;
    let me = WrapperServer::new(WsHub::new(HubConfig::default()), WrapperConfig::default());
    me.on("whoami", |ctx: Ctx, (): ()| async move {
        Ok::<_, WrapperError>(ctx.client().identity().user.clone())
    });
    let me = me.handler(WsConfig {
        identify: Some(rt_server::insecure_bearer_names()),
        ..WsConfig::default()
    });
    Handler::new(move |req: http_types::Request| {
        if req.uri().path() == "/me" {
            me.call(req)
        } else {
            rt.call(req)
        }
    })
}

#[tokio::test]
async fn wss_with_a_bearer_header_against_rt_server_over_tls() {
    let pki = pki();
    let server = Server::start(rt_with_whoami(), &pki, ServeConfig::default()).await;
    let mut config = ClientConfig::default();
    config
        .headers
        .insert("authorization", "Bearer alice".parse().unwrap());
    config.tls = Some(ClientConfig::tls_trusting(pki.ca_pem.as_bytes()).unwrap());
    let port = server.addr.port();

    let rpc = within(
        "the wss connection",
        WrapperClient::connect(&format!("wss://localhost:{port}/rpc"), config.clone()),
    )
    .await
    .unwrap();
    let x: serde_json::Value = rpc
        .request(None, "echo", (serde_json::json!({"over": "tls"}),))
        .await
        .unwrap();
    assert_eq!(x, serde_json::json!({"over": "tls"}));
    let sum: f64 = rpc.request(None, "add", (2, 3)).await.unwrap();
    assert_eq!(sum, 5.0);

    // The server saw the header (by IP address too: the certificate names 127.0.0.1).
    let me = within(
        "the wss connection",
        WrapperClient::connect(&format!("wss://127.0.0.1:{port}/me"), config),
    )
    .await
    .unwrap();
    let who: Option<String> = me.request(None, "whoami", ()).await.unwrap();
    assert_eq!(who.as_deref(), Some("alice"));

    rpc.close().await;
    me.close().await;
    assert_eq!(server.stop().await.aborted, 0);
}

#[tokio::test]
async fn wss_without_the_test_ca_fails_with_a_tls_error() {
    let pki = pki();
    let server = Server::rt(&pki, ServeConfig::default()).await;
    let url = format!("wss://localhost:{}/rpc", server.addr.port());
    // Mozilla's roots (the default) do not include the test CA.
    let err = WrapperClient::connect(&url, ClientConfig::default())
        .await
        .unwrap_err();
    let ConnectError::Tls(e) = &err else {
        panic!("expected a TLS error, got {err:?}");
    };
    let text = err.to_string();
    assert!(text.starts_with("tls handshake: "), "{text}");
    assert!(
        e.to_string()
            .contains("invalid peer certificate: UnknownIssuer"),
        "{text}"
    );
    // A CA file that is not PEM is refused before connecting.
    assert!(matches!(
        ClientConfig::tls_trusting(b"not a certificate"),
        Err(ConnectError::InvalidTls(_))
    ));
    // Plain ws:// to the TLS port is no WebSocket handshake.
    let plain = format!("ws://127.0.0.1:{}/rpc", server.addr.port());
    let config = ClientConfig {
        connect_timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    };
    let err = WrapperClient::connect(&plain, config).await.unwrap_err();
    assert!(matches!(err, ConnectError::Handshake(_)), "{err}");
    assert_eq!(server.stop().await.aborted, 0);
}
