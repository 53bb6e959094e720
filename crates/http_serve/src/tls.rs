//! TLS for `http_serve`: the server's certificate and key, ALPN, and the
//! stream a connection is served on (plain TCP or TLS over it).
//!
//! Without the `tls` feature (on by default) nothing of rustls is built: a
//! [`TlsConfig`] cannot be made ([`TlsError::Disabled`]) and every [`Io`]
//! is plain TCP.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
#[cfg(feature = "tls")]
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
#[cfg(feature = "tls")]
use tokio_rustls::rustls;
#[cfg(feature = "tls")]
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
#[cfg(feature = "tls")]
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
#[cfg(feature = "tls")]
use tokio_rustls::server::TlsStream;

/// What accepts TLS connections for a [`TlsConfig`] (nothing can, without
/// the `tls` feature).
#[cfg(feature = "tls")]
pub(crate) type Acceptor = tokio_rustls::TlsAcceptor;
#[cfg(not(feature = "tls"))]
pub(crate) type Acceptor = NoTls;

/// No value: what there is of TLS in a build without it.
#[cfg(not(feature = "tls"))]
#[derive(Clone, Debug)]
pub(crate) enum NoTls {}

/// The ALPN protocols [`TlsConfig::from_pem`] offers, in order of preference.
#[cfg(feature = "tls")]
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// TLS settings of [`ServeConfig::tls`](crate::ServeConfig::tls): a rustls
/// server configuration, shared by every connection.
///
/// [`from_pem_files`](TlsConfig::from_pem_files) and
/// [`from_pem`](TlsConfig::from_pem) offer ALPN `h2` and `http/1.1`, so a
/// browser gets HTTP/2 (and leaves HTTP/1.1's six connections per host
/// behind) while WebSocket clients, which ask for `http/1.1`, keep their
/// upgrade. The protocol of a connection is the one ALPN chose; a client
/// that offers none is sniffed as on plain TCP (HTTP/2 preface or
/// HTTP/1.1). rustls with the aws-lc-rs provider, TLS 1.2 and 1.3.
#[cfg(feature = "tls")]
#[derive(Clone)]
pub struct TlsConfig {
    config: Arc<rustls::ServerConfig>,
}

/// TLS settings of [`ServeConfig::tls`](crate::ServeConfig::tls); this
/// build has no TLS (the `tls` feature is off), so none can be made.
#[cfg(not(feature = "tls"))]
#[derive(Clone, Debug)]
pub struct TlsConfig {
    never: NoTls,
}

#[cfg(not(feature = "tls"))]
impl TlsConfig {
    /// Always [`TlsError::Disabled`]: this build has no TLS.
    ///
    /// # Errors
    ///
    /// [`TlsError::Disabled`].
    pub fn from_pem_files(
        _cert_path: impl AsRef<Path>,
        _key_path: impl AsRef<Path>,
    ) -> Result<TlsConfig, TlsError> {
        Err(TlsError::Disabled)
    }

    /// Always [`TlsError::Disabled`]: this build has no TLS.
    ///
    /// # Errors
    ///
    /// [`TlsError::Disabled`].
    pub fn from_pem(_cert_pem: &[u8], _key_pem: &[u8]) -> Result<TlsConfig, TlsError> {
        Err(TlsError::Disabled)
    }

    pub(crate) fn acceptor(&self) -> Acceptor {
        match self.never {}
    }
}

#[cfg(feature = "tls")]
impl TlsConfig {
    /// Reads a PEM certificate chain (the server's certificate first, then
    /// the intermediates) and its PEM private key (PKCS#8, PKCS#1 or SEC1)
    /// from files; ALPN `h2` and `http/1.1`.
    ///
    /// # Errors
    ///
    /// [`TlsError`] naming the file and what is wrong with it: unreadable,
    /// not PEM, no certificate or key in it, or a key that is not the
    /// certificate's.
    pub fn from_pem_files(
        cert_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> Result<TlsConfig, TlsError> {
        let (cert_path, key_path) = (cert_path.as_ref(), key_path.as_ref());
        let read = |path: &Path| {
            std::fs::read(path).map_err(|error| TlsError::Read {
                path: path.to_path_buf(),
                error,
            })
        };
        let chain = certificates(&read(cert_path)?, &cert_path.display().to_string())?;
        let key = private_key(&read(key_path)?, &key_path.display().to_string())?;
        config(chain, key)
    }

    /// The same from PEM text in memory.
    ///
    /// # Errors
    ///
    /// [`TlsError`], as [`TlsConfig::from_pem_files`].
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<TlsConfig, TlsError> {
        let chain = certificates(cert_pem, "certificate PEM")?;
        let key = private_key(key_pem, "key PEM")?;
        config(chain, key)
    }

    /// A rustls configuration used as it is: set its `alpn_protocols`
    /// (`h2`, `http/1.1`) for HTTP/2 to be chosen by ALPN.
    pub fn from_rustls(config: Arc<rustls::ServerConfig>) -> TlsConfig {
        TlsConfig { config }
    }

    /// The rustls configuration.
    pub fn rustls(&self) -> &Arc<rustls::ServerConfig> {
        &self.config
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }
}

#[cfg(feature = "tls")]
impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let alpn: Vec<_> = self
            .config
            .alpn_protocols
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        f.debug_struct("TlsConfig").field("alpn", &alpn).finish()
    }
}

#[cfg(feature = "tls")]
fn config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<TlsConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(TlsError::Refused)?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(TlsConfig {
        config: Arc::new(config),
    })
}

#[cfg(feature = "tls")]
fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate(format!("{what}: {}", pem_error(&e))))?;
    if chain.is_empty() {
        return Err(TlsError::Certificate(format!(
            "{what}: no CERTIFICATE section (PEM, `-----BEGIN CERTIFICATE-----`)"
        )));
    }
    Ok(chain)
}

#[cfg(feature = "tls")]
fn private_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
        TlsError::Key(match e {
            pem::Error::NoItemsFound => format!(
                "{what}: no private key section (PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`)"
            ),
            e => format!("{what}: {}", pem_error(&e)),
        })
    })
}

/// A PEM syntax error in words (rustls-pki-types prints the bytes of a line
/// as a list of numbers).
#[cfg(feature = "tls")]
fn pem_error(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "not valid PEM: no `-----END {}-----` line",
            String::from_utf8_lossy(end_marker).trim()
        ),
        pem::Error::IllegalSectionStart { line } => format!(
            "not valid PEM: bad section start `{}`",
            String::from_utf8_lossy(line).trim()
        ),
        pem::Error::Base64Decode(why) => format!("not valid PEM: bad base64 ({why})"),
        other => format!("not valid PEM: {other}"),
    }
}

/// Why a [`TlsConfig`] could not be made.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// The certificate chain is not valid PEM or holds no certificate.
    Certificate(String),
    /// The private key is not valid PEM, holds no key, or not one rustls reads.
    Key(String),
    /// rustls refused the certificate and key, for example a key that is
    /// not the certificate's.
    #[cfg(feature = "tls")]
    Refused(rustls::Error),
    /// This build of `http_serve` has no TLS: its `tls` feature is off.
    Disabled,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { path, error } => write!(f, "cannot read {}: {error}", path.display()),
            TlsError::Certificate(why) => write!(f, "certificate chain {why}"),
            TlsError::Key(why) => write!(f, "private key {why}"),
            #[cfg(feature = "tls")]
            TlsError::Refused(e) => write!(f, "certificate and key refused: {e}"),
            TlsError::Disabled => {
                f.write_str("TLS is not built in: enable the `tls` feature of http_serve")
            }
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Read { error, .. } => Some(error),
            #[cfg(feature = "tls")]
            TlsError::Refused(e) => Some(e),
            _ => None,
        }
    }
}

/// A served connection's byte stream: plain TCP, or TLS over TCP (boxed:
/// rustls' state is large, and a plain connection should not carry its
/// size). Without the `tls` feature, only plain TCP.
#[derive(Debug)]
#[non_exhaustive]
pub enum Io {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS, handshake done.
    #[cfg(feature = "tls")]
    Tls(Box<TlsStream<TcpStream>>),
}

impl Io {
    /// The TCP socket (under TLS, if any).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Io::Tcp(s) => s,
            #[cfg(feature = "tls")]
            Io::Tls(s) => s.get_ref().0,
        }
    }

    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        match self {
            Io::Tcp(_) => false,
            #[cfg(feature = "tls")]
            Io::Tls(_) => true,
        }
    }

    /// The protocol ALPN chose on a TLS connection (`h2`, `http/1.1`).
    pub fn alpn(&self) -> Option<&[u8]> {
        match self {
            Io::Tcp(_) => None,
            #[cfg(feature = "tls")]
            Io::Tls(s) => s.get_ref().1.alpn_protocol(),
        }
    }
}

impl From<TcpStream> for Io {
    fn from(s: TcpStream) -> Io {
        Io::Tcp(s)
    }
}

#[cfg(feature = "tls")]
impl From<TlsStream<TcpStream>> for Io {
    fn from(s: TlsStream<TcpStream>) -> Io {
        Io::Tls(Box::new(s))
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(feature = "tls")]
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(feature = "tls")]
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            #[cfg(feature = "tls")]
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Tcp(s) => s.is_write_vectored(),
            #[cfg(feature = "tls")]
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_flush(cx),
            #[cfg(feature = "tls")]
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(feature = "tls")]
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(all(test, feature = "tls"))]
mod tests {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use http_body_util::BodyExt;
    use http_types::{Bytes, Handler, LongLived, Response, full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio::sync::{mpsc, oneshot};
    use tokio_rustls::client::TlsStream as ClientTls;

    use super::*;
    use crate::{OnUpgrade, ServeConfig, ServeStats, http_serve};

    /// How long any single wait of a test may take before it fails.
    const WAIT: Duration = Duration::from_secs(10);

    /// A CA made here and a certificate it signed for `localhost` and 127.0.0.1.
    struct Pki {
        ca: CertificateDer<'static>,
        cert_pem: String,
        key_pem: String,
    }

    fn pki() -> Pki {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "http_serve test CA");
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        Pki {
            ca: ca.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A TLS client trusting `ca` that offers `alpn`.
    fn connector(ca: &CertificateDer<'static>, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    async fn connect(
        addr: SocketAddr,
        tls: &tokio_rustls::TlsConnector,
    ) -> io::Result<ClientTls<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        tls.connect(name, tcp).await
    }

    struct Server {
        addr: SocketAddr,
        stop: oneshot::Sender<()>,
        task: tokio::task::JoinHandle<ServeStats>,
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
            let (stop, rx) = oneshot::channel::<()>();
            let shutdown = async {
                let _ = rx.await;
            };
            let task = tokio::spawn(http_serve(listener, handler, shutdown, config));
            Server { addr, stop, task }
        }

        async fn stop(self) -> ServeStats {
            self.stop.send(()).unwrap();
            tokio::time::timeout(WAIT, self.task)
                .await
                .expect("http_serve returned in time")
                .unwrap()
        }
    }

    fn version_handler() -> Handler {
        Handler::new(|req: http_types::Request| async move {
            Response::new(full(format!("{:?}", req.version())))
        })
    }

    const GET_CLOSE: &[u8] = b"GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";

    /// Reads to the end, which must be a clean one (TLS close_notify).
    async fn read_all<S: AsyncRead + Unpin>(io: &mut S) -> String {
        let mut out = Vec::new();
        tokio::time::timeout(WAIT, io.read_to_end(&mut out))
            .await
            .expect("closed in time")
            .expect("a clean end (close_notify)");
        String::from_utf8(out).unwrap()
    }

    /// Reads one answer of `version_handler` on a keep-alive connection.
    async fn read_answer<S: AsyncRead + Unpin>(io: &mut S) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"HTTP/1.1") {
            let n = tokio::time::timeout(WAIT, io.read(&mut buf))
                .await
                .expect("answered in time")
                .unwrap();
            assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(got).unwrap()
    }

    #[tokio::test]
    async fn alpn_chooses_http2_or_http11_and_a_client_without_alpn_is_sniffed() {
        let pki = pki();
        let server = Server::start(version_handler(), &pki, ServeConfig::default()).await;

        // ALPN h2: HTTP/2, the way browsers get it.
        let tls = connect(server.addr, &connector(&pki.ca, &[b"h2", b"http/1.1"]))
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        let conn = tokio::spawn(conn);
        for _ in 0..3 {
            let req = http::Request::builder()
                .uri(format!("https://localhost:{}/", server.addr.port()))
                .body(http_body_util::Empty::<Bytes>::new())
                .unwrap();
            let res = sender.send_request(req).await.unwrap();
            assert_eq!(res.version(), http::Version::HTTP_2);
            let body = res.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"HTTP/2.0");
        }
        drop(sender);
        conn.await.unwrap().unwrap();

        // ALPN http/1.1, and no ALPN at all (sniffed as on plain TCP).
        for alpn in [&[&b"http/1.1"[..]][..], &[]] {
            let mut tls = connect(server.addr, &connector(&pki.ca, alpn))
                .await
                .unwrap();
            tls.write_all(GET_CLOSE).await.unwrap();
            let res = read_all(&mut tls).await;
            assert!(res.starts_with("HTTP/1.1 200 OK"), "{alpn:?}: {res}");
            assert!(res.ends_with("HTTP/1.1"), "{alpn:?}: {res}");
        }

        // Without ALPN, HTTP/2 with prior knowledge still works over TLS.
        let tls = connect(server.addr, &connector(&pki.ca, &[]))
            .await
            .unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = http::Request::builder()
            .uri("https://localhost/")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        assert_eq!(res.version(), http::Version::HTTP_2);
        drop((sender, res));

        let stats = server.stop().await;
        assert_eq!((stats.connections, stats.aborted), (4, 0));
    }

    #[tokio::test]
    async fn upgrades_long_lived_bodies_and_shutdown_work_over_tls() {
        let pki = pki();
        let (tx, rx) = mpsc::channel::<&'static str>(4);
        let rx = Arc::new(tokio::sync::Mutex::new(Some(rx)));
        let h = Handler::new(move |mut req: http_types::Request| {
            let rx = rx.clone();
            async move {
                match req.uri().path() {
                    "/up" => upgrade_echo(&mut req),
                    "/sse" => {
                        let rx = rx.lock().await.take().unwrap();
                        let mut res = Response::new(http_types::boxed(Chan(rx)));
                        res.extensions_mut().insert(LongLived);
                        res
                    }
                    _ => Response::new(full(format!("{:?}", req.version()))),
                }
            }
        });
        let server = Server::start(h, &pki, ServeConfig::default()).await;
        // What WebSocket clients offer: http/1.1 only.
        let http11 = connector(&pki.ca, &[b"http/1.1"]);

        let mut up = connect(server.addr, &http11).await.unwrap();
        up.write_all(
            b"GET /up HTTP/1.1\r\nhost: localhost\r\nupgrade: echo\r\nconnection: upgrade\r\n\r\nhello",
        )
        .await
        .unwrap();
        let all = read_all(&mut up).await;
        assert!(all.starts_with("HTTP/1.1 101 Switching Protocols"), "{all}");
        assert!(all.ends_with("\r\n\r\nhello back tls"), "{all}");

        // A long-lived (SSE) body: close-delimited, straight to the TLS stream.
        let mut sse = connect(server.addr, &http11).await.unwrap();
        sse.write_all(b"GET /sse HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await
            .unwrap();
        tx.send("one ").await.unwrap();
        tx.send("two").await.unwrap();
        drop(tx);
        let all = read_all(&mut sse).await;
        let (head, body) = all.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.0 200 OK"), "{head}");
        assert_eq!(body, "one two");

        // An answered keep-alive connection is closed at shutdown with close_notify.
        let mut idle = connect(server.addr, &http11).await.unwrap();
        idle.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await
            .unwrap();
        assert!(read_answer(&mut idle).await.starts_with("HTTP/1.1 200 OK"));
        let stats = server.stop().await;
        assert_eq!(stats.aborted, 0);
        assert_eq!(read_all(&mut idle).await, "");
    }

    /// Answers an upgrade request `101`; the protocol echoes 5 bytes, adds
    /// " back" and "tls" if the stream is TLS, and closes.
    fn upgrade_echo(req: &mut http_types::Request) -> Response {
        let on = OnUpgrade::take(req).expect("an upgrade request");
        on.serve(|mut io| async move {
            let mut got = [0u8; 5];
            io.read_exact(&mut got).await.unwrap();
            io.write_all(&got).await.unwrap();
            io.write_all(b" back").await.unwrap();
            if io.is_tls() {
                io.write_all(b" tls").await.unwrap();
            }
            io.shutdown().await.unwrap();
        });
        let mut res = Response::new(http_types::empty());
        *res.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
        res.headers_mut().insert(
            http::header::UPGRADE,
            http::HeaderValue::from_static("echo"),
        );
        res.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
        res
    }

    #[tokio::test]
    async fn a_stalled_handshake_is_closed_at_the_header_read_timeout_and_failed_ones_disturb_no_one()
     {
        let (pki, other) = (pki(), pki());
        let limit = Duration::from_millis(300);
        let config = ServeConfig {
            header_read_timeout: limit,
            ..ServeConfig::default()
        };
        let server = Server::start(version_handler(), &pki, config).await;
        let good = connector(&pki.ca, &[b"h2", b"http/1.1"]);
        // An HTTP/2 connection in use all along (HTTP/2 has no idle limit here).
        let (mut busy, conn) = hyper::client::conn::http2::handshake(
            TokioExecutor::new(),
            TokioIo::new(connect(server.addr, &good).await.unwrap()),
        )
        .await
        .unwrap();
        let conn = tokio::spawn(conn);
        let get = || {
            http::Request::builder()
                .uri("https://localhost/")
                .body(http_body_util::Empty::<Bytes>::new())
                .unwrap()
        };
        assert_eq!(busy.send_request(get()).await.unwrap().status(), 200);

        let start = Instant::now();
        let mut silent = TcpStream::connect(server.addr).await.unwrap();
        // A ClientHello's first bytes, then nothing.
        let mut stalled = TcpStream::connect(server.addr).await.unwrap();
        stalled
            .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
            .await
            .unwrap();
        // Plain HTTP to the TLS port, and a client that does not trust the CA.
        let mut plain = TcpStream::connect(server.addr).await.unwrap();
        plain.write_all(GET_CLOSE).await.unwrap();
        let untrusting = connect(server.addr, &connector(&other.ca, &[b"h2"])).await;
        let err = untrusting.expect_err("the server's certificate is not trusted");
        assert!(
            err.to_string().contains("invalid peer certificate"),
            "{err}"
        );

        let mut rest = Vec::new();
        let _ = tokio::time::timeout(WAIT, plain.read_to_end(&mut rest))
            .await
            .expect("plain HTTP is closed at once");
        assert!(!rest.starts_with(b"HTTP"), "no HTTP answer: {rest:?}");
        for (name, s) in [("silent", &mut silent), ("stalled handshake", &mut stalled)] {
            let mut sink = Vec::new();
            let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut sink))
                .await
                .unwrap_or_else(|_| panic!("{name}: closed"));
            let after = start.elapsed();
            assert!(after >= limit, "{name}: closed after {after:?}");
        }

        // The others' failures did not disturb this one, nor new ones.
        assert_eq!(busy.send_request(get()).await.unwrap().status(), 200);
        let mut fresh = connect(server.addr, &connector(&pki.ca, &[b"http/1.1"]))
            .await
            .unwrap();
        fresh.write_all(GET_CLOSE).await.unwrap();
        assert!(read_all(&mut fresh).await.starts_with("HTTP/1.1 200 OK"));
        drop(busy);
        assert_eq!(server.stop().await.aborted, 0);
        // GOAWAY, then the end.
        conn.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_long_lived_body_over_tls_to_a_client_that_never_reads_is_dropped_at_the_write_timeout()
     {
        let pki = pki();
        let limit = Duration::from_millis(300);
        let (gone_tx, gone) = oneshot::channel::<()>();
        let gone_tx = Arc::new(std::sync::Mutex::new(Some(gone_tx)));
        let h = Handler::new(move |_| {
            let body = Endless {
                chunk: Bytes::from(vec![b'x'; 64 * 1024]),
                _guard: DropSignal(gone_tx.lock().unwrap().take()),
            };
            async move {
                let mut res = Response::new(http_types::boxed(body));
                res.extensions_mut().insert(LongLived);
                res
            }
        });
        let config = ServeConfig {
            write_timeout: limit,
            ..ServeConfig::default()
        };
        let server = Server::start(h, &pki, config).await;
        let mut s = connect(server.addr, &connector(&pki.ca, &[b"http/1.1"]))
            .await
            .unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await
            .unwrap();
        let start = Instant::now();
        tokio::time::timeout(WAIT, gone)
            .await
            .expect("dropped in time")
            .expect("the body was dropped");
        let after = start.elapsed();
        assert!(after >= limit, "dropped after {after:?}");
        drop(s);
        assert_eq!(server.stop().await.aborted, 0);
    }

    #[test]
    fn pem_errors_name_the_file_and_the_problem() {
        let made = pki();
        let dir = std::env::temp_dir().join(format!("http_serve_tls_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let cert = file("cert.pem", &made.cert_pem);
        let key = file("key.pem", &made.key_pem);
        let junk = file("junk.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n");
        let other_key = file("other.pem", &KeyPair::generate().unwrap().serialize_pem());
        let missing = dir.join("missing.pem");
        let err = |c: &Path, k: &Path| TlsConfig::from_pem_files(c, k).unwrap_err().to_string();

        let ok = TlsConfig::from_pem_files(&cert, &key).unwrap();
        assert_eq!(
            ok.rustls().alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert_eq!(
            format!("{ok:?}"),
            r#"TlsConfig { alpn: ["h2", "http/1.1"] }"#
        );

        let e = err(&missing, &key);
        assert!(
            e.starts_with(&format!("cannot read {}: ", missing.display())),
            "{e}"
        );
        let e = err(&key, &key);
        assert!(e.contains("no CERTIFICATE section"), "{e}");
        assert!(e.contains(&key.display().to_string()), "{e}");
        let e = err(&junk, &key);
        assert!(e.contains("not valid PEM"), "{e}");
        assert!(e.contains("-----END CERTIFICATE-----"), "{e}");
        let e = err(&cert, &cert);
        assert!(e.starts_with("private key"), "{e}");
        assert!(e.contains("no private key section"), "{e}");
        let e = err(&cert, &other_key);
        assert!(e.starts_with("certificate and key refused"), "{e}");

        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A body of the strings a channel receives.
    struct Chan(mpsc::Receiver<&'static str>);

    impl http_body::Body for Chan {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            self.0
                .poll_recv(cx)
                .map(|s| s.map(|s| Ok(http_body::Frame::data(Bytes::from_static(s.as_bytes())))))
        }
    }

    /// A body that repeats one chunk forever, holding a guard.
    struct Endless {
        chunk: Bytes,
        _guard: DropSignal,
    }

    impl http_body::Body for Endless {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
            Poll::Ready(Some(Ok(http_body::Frame::data(self.chunk.clone()))))
        }
    }

    /// Sends on drop.
    struct DropSignal(Option<oneshot::Sender<()>>);

    impl Drop for DropSignal {
        fn drop(&mut self) {
            if let Some(tx) = self.0.take() {
                let _ = tx.send(());
            }
        }
    }
}
