//! Validates a WebSocket opening handshake and its origin, and builds the `101 Switching Protocols` answer.
//!
//! A pure function: it reads an `http::Request` (any body type) and returns
//! either a [`Handshake`], whose [`response`](Handshake::response) is the
//! `101` to send, or a [`WsUpgradeError`] naming the one thing that is wrong,
//! whose [`into_response`](WsUpgradeError::into_response) is the `4xx` to send.
//! You will not find a socket here: taking the connection over after the
//! `101` is the caller's job (`ws_handler`, with the server's `OnUpgrade`), and
//! so is refusing with `503` when a connection limit is reached.
//!
//! What it checks, in this order (RFC 6455 §4.2.1), with each failure's status:
//!
//! | check | failure | status |
//! |---|---|---|
//! | method is `GET` | [`MethodNotGet`](WsUpgradeError::MethodNotGet) | 405, with `Allow: GET` |
//! | HTTP/1.1 | [`NotHttp11`](WsUpgradeError::NotHttp11) | 400 |
//! | `Upgrade` has the `websocket` token | [`MissingUpgrade`](WsUpgradeError::MissingUpgrade) | 400 |
//! | `Connection` has the `upgrade` token | [`MissingConnectionUpgrade`](WsUpgradeError::MissingConnectionUpgrade) | 400 |
//! | `Sec-WebSocket-Version` is `13` | [`MissingVersion`](WsUpgradeError::MissingVersion), [`UnsupportedVersion`](WsUpgradeError::UnsupportedVersion) | 426, with `Sec-WebSocket-Version: 13` |
//! | `Sec-WebSocket-Key` is base64 of 16 bytes, sent once | [`MissingKey`](WsUpgradeError::MissingKey), [`InvalidKey`](WsUpgradeError::InvalidKey) | 400 |
//! | `Origin` is allowed | [`MissingOrigin`](WsUpgradeError::MissingOrigin), [`ForbiddenOrigin`](WsUpgradeError::ForbiddenOrigin) | 403 |
//!
//! Design decisions:
//!
//! - **405 for a method other than GET**, with `Allow: GET`, as `http_router`
//!   answers a known path with an unknown method: the resource exists, the
//!   method is wrong.
//! - **Header lists are parsed as lists.** `Connection: keep-alive, Upgrade`,
//!   `Upgrade: WebSocket`, several header lines, spaces and tabs around
//!   tokens: tokens are compared without regard to case (RFC 9110 §7.6.1,
//!   §7.8) and empty list elements are skipped.
//! - **Origin** (the only defence against cross-site WebSocket hijacking,
//!   since browsers send cookies with the handshake): [`OriginPolicy::SameHost`]
//!   by default. Origins are compared parsed, `scheme://host[:port]`, scheme
//!   and host without regard to case, a port equal to the scheme's default
//!   (80 for `http`/`ws`, 443 for `https`/`wss`) the same as none. `Origin:
//!   null` (sandboxed frames, `file:` pages), an unparseable origin or two
//!   `Origin` headers are refused unless the policy is [`OriginPolicy::Any`].
//! - **No `Origin` is allowed by default** ([`UpgradeConfig::allow_missing_origin`]):
//!   browsers always send `Origin` on a WebSocket handshake, so a request
//!   without one is not a browser being tricked by another site; it is a CLI,
//!   a server or a mobile app, which the origin check cannot protect against
//!   anyway (they can send any `Origin` they like).
//! - **Subprotocols**: the first of [`UpgradeConfig::protocols`] (the server's
//!   preference order) that the client offered, compared exactly (names are
//!   case-sensitive). If the client offers some and none match, the handshake
//!   still succeeds, without `Sec-WebSocket-Protocol`: RFC 6455 §4.2.2 leaves
//!   the choice to the client, which closes the connection if it needs one.
//! - **Extensions are never negotiated** (no `Sec-WebSocket-Extensions` in the
//!   answer), so clients send no compressed frames.
//! - **`Sec-WebSocket-Accept`** is tungstenite's
//!   [`derive_accept_key`](tokio_tungstenite::tungstenite::handshake::derive_accept_key)
//!   (SHA-1 and base64 from RustCrypto's `sha1` and `data-encoding`), and the
//!   key is checked with the `base64` crate: no hashing or encoding is
//!   written here.
//!
//! # Example
//!
//! ```
//! use http::{Request, StatusCode};
//! use ws_upgrader::{ws_upgrader, OriginPolicy, UpgradeConfig, WsUpgradeError};
//!
//! let config = UpgradeConfig {
//!     origins: OriginPolicy::AllowList(vec!["https://app.example.com".into()]),
//!     protocols: vec!["chat.v2".into(), "chat".into()],
//!     ..UpgradeConfig::default()
//! };
//! let req = Request::get("/ws")
//!     .header("Host", "api.example.com")
//!     .header("Upgrade", "websocket")
//!     .header("Connection", "keep-alive, Upgrade")
//!     .header("Sec-WebSocket-Version", "13")
//!     .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
//!     .header("Sec-WebSocket-Protocol", "chat, chat.v2")
//!     .header("Origin", "https://APP.example.com:443")
//!     .body(())?;
//!
//! let handshake = ws_upgrader(&req, &config)?;
//! assert_eq!(handshake.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
//! assert_eq!(handshake.protocol.as_ref().unwrap(), "chat.v2");
//! let res = handshake.response();
//! assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
//! assert_eq!(res.headers()["sec-websocket-protocol"], "chat.v2");
//!
//! // Another site's page: refused with 403.
//! let mut evil = req;
//! evil.headers_mut().insert("origin", "https://evil.example".parse()?);
//! let err = ws_upgrader(&evil, &config).unwrap_err();
//! assert_eq!(err, WsUpgradeError::ForbiddenOrigin);
//! assert_eq!(err.into_response().status(), StatusCode::FORBIDDEN);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Errors
//!
//! [`WsUpgradeError`], one variant per failed check in the table above. It is
//! named `WsUpgradeError`, not `UpgradeError`, because the registry's `UpgradeError`
//! (a connection that was not handed over) exists and both live in one registry
//! namespace.

use std::fmt;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Version};
use http_types::{Response, empty, text};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Which origins may open a WebSocket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum OriginPolicy {
    /// The `Origin`'s host and port must be the request's `Host` (or, without
    /// one, the URI authority). A `Host` without a port matches the origin
    /// scheme's default port. The default.
    #[default]
    SameHost,
    /// Any origin, including `null` and unparseable ones (`*`).
    Any,
    /// Exactly these origins, such as `"https://app.example.com"` or
    /// `"http://localhost:3000"`; scheme and host compare without regard to
    /// case, a default port equals none, one trailing `/` is ignored. `"*"` is
    /// not special here (use [`OriginPolicy::Any`]); an entry that is not
    /// `scheme://host[:port]` matches nothing.
    AllowList(Vec<String>),
}

/// What the handshake accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeConfig {
    /// Which origins may connect. Default: [`OriginPolicy::SameHost`].
    pub origins: OriginPolicy,
    /// Whether a request without an `Origin` header is accepted, whatever
    /// `origins` says. Browsers always send one, so only non-browser clients
    /// (which could forge any origin) are affected. Default: true.
    pub allow_missing_origin: bool,
    /// Subprotocols the server speaks, in preference order; the first one the
    /// client also offered is chosen. Default: empty (none negotiated).
    pub protocols: Vec<String>,
}

impl Default for UpgradeConfig {
    fn default() -> Self {
        UpgradeConfig {
            origins: OriginPolicy::SameHost,
            allow_missing_origin: true,
            protocols: Vec::new(),
        }
    }
}

/// A valid handshake: what the `101 Switching Protocols` answer carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// The `Sec-WebSocket-Accept` value: base64 of the SHA-1 of the client's
    /// key and the RFC 6455 GUID.
    pub accept: HeaderValue,
    /// The chosen subprotocol, for `Sec-WebSocket-Protocol`; `None` when the
    /// server has none in common with the client (or either offered none).
    pub protocol: Option<HeaderValue>,
}

impl Handshake {
    /// The `101 Switching Protocols` response: `Upgrade: websocket`,
    /// `Connection: Upgrade`, `Sec-WebSocket-Accept` and, when one was chosen,
    /// `Sec-WebSocket-Protocol`; empty body.
    pub fn response(&self) -> Response {
        let mut res = Response::new(empty());
        *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = res.headers_mut();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::SEC_WEBSOCKET_ACCEPT, self.accept.clone());
        if let Some(protocol) = &self.protocol {
            h.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol.clone());
        }
        res
    }
}

/// Validates the WebSocket opening handshake `req` against `config`.
///
/// Checks run in the order of the crate docs' table, and the first that fails
/// is the error. Only headers, method and version are read; the body is not.
pub fn ws_upgrader<B>(
    req: &http::Request<B>,
    config: &UpgradeConfig,
) -> Result<Handshake, WsUpgradeError> {
    let headers = req.headers();
    if req.method() != Method::GET {
        return Err(WsUpgradeError::MethodNotGet);
    }
    if req.version() != Version::HTTP_11 {
        return Err(WsUpgradeError::NotHttp11);
    }
    if !has_token(headers, &header::UPGRADE, b"websocket") {
        return Err(WsUpgradeError::MissingUpgrade);
    }
    if !has_token(headers, &header::CONNECTION, b"upgrade") {
        return Err(WsUpgradeError::MissingConnectionUpgrade);
    }
    if !headers.contains_key(header::SEC_WEBSOCKET_VERSION) {
        return Err(WsUpgradeError::MissingVersion);
    }
    if !tokens(headers, &header::SEC_WEBSOCKET_VERSION).any(|t| t == b"13") {
        return Err(WsUpgradeError::UnsupportedVersion);
    }
    let key = single(headers, &header::SEC_WEBSOCKET_KEY)
        .map_err(|()| WsUpgradeError::InvalidKey)?
        .ok_or(WsUpgradeError::MissingKey)?
        .as_bytes()
        .trim_ascii();
    if !is_base64_of_16_bytes(key) {
        return Err(WsUpgradeError::InvalidKey);
    }
    check_origin(req, config)?;

    let accept = HeaderValue::from_str(&derive_accept_key(key))
        .expect("base64 is visible ASCII, a valid header value");
    let protocol = config
        .protocols
        .iter()
        .find(|p| tokens(headers, &header::SEC_WEBSOCKET_PROTOCOL).any(|t| t == p.as_bytes()))
        .and_then(|p| HeaderValue::from_str(p).ok());
    Ok(Handshake { accept, protocol })
}

/// Whether `key` is standard, padded base64 of exactly 16 bytes: 22 alphabet
/// characters then `==`. Like Go's `base64.StdEncoding`, the 4 unused bits of
/// the last character are not required to be zero.
fn is_base64_of_16_bytes(key: &[u8]) -> bool {
    use base64::Engine;
    use base64::engine::{GeneralPurpose, GeneralPurposeConfig};
    const KEY_ENGINE: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );
    let mut out = [0u8; 18];
    key.len() == 24 && matches!(KEY_ENGINE.decode_slice(key, &mut out), Ok(16))
}

/// Why a request is not a WebSocket handshake this server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsUpgradeError {
    /// The method is not `GET`. 405, with `Allow: GET`.
    MethodNotGet,
    /// The request is not HTTP/1.1 (HTTP/1.0 cannot upgrade; HTTP/2
    /// WebSockets, RFC 8441, are not supported). 400.
    NotHttp11,
    /// No `Upgrade` header with the `websocket` token. 400.
    MissingUpgrade,
    /// No `Connection` header with the `upgrade` token. 400.
    MissingConnectionUpgrade,
    /// No `Sec-WebSocket-Version` header. 426, with `Sec-WebSocket-Version: 13`.
    MissingVersion,
    /// `Sec-WebSocket-Version` is not `13`. 426, with `Sec-WebSocket-Version: 13`.
    UnsupportedVersion,
    /// No `Sec-WebSocket-Key` header. 400.
    MissingKey,
    /// `Sec-WebSocket-Key` is not base64 of 16 bytes, or is sent more than once. 400.
    InvalidKey,
    /// No `Origin` header and [`UpgradeConfig::allow_missing_origin`] is false. 403.
    MissingOrigin,
    /// The `Origin` is not allowed by the policy, is `null`, cannot be parsed,
    /// or is sent more than once. 403.
    ForbiddenOrigin,
}

impl WsUpgradeError {
    /// The status the client is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            WsUpgradeError::MethodNotGet => StatusCode::METHOD_NOT_ALLOWED,
            WsUpgradeError::NotHttp11
            | WsUpgradeError::MissingUpgrade
            | WsUpgradeError::MissingConnectionUpgrade
            | WsUpgradeError::MissingKey
            | WsUpgradeError::InvalidKey => StatusCode::BAD_REQUEST,
            WsUpgradeError::MissingVersion | WsUpgradeError::UnsupportedVersion => {
                StatusCode::UPGRADE_REQUIRED
            }
            WsUpgradeError::MissingOrigin | WsUpgradeError::ForbiddenOrigin => {
                StatusCode::FORBIDDEN
            }
        }
    }

    /// The response for this error: [`status`](Self::status), the message as
    /// a `text/plain` body, `Allow: GET` for 405, and for 426
    /// `Sec-WebSocket-Version: 13` with `Upgrade: websocket` and
    /// `Connection: Upgrade` (RFC 9110 §15.5.22 requires `Upgrade` on a 426).
    pub fn into_response(self) -> Response {
        let mut res = text(self.status(), format!("{self}\n"));
        let h = res.headers_mut();
        match self.status() {
            StatusCode::METHOD_NOT_ALLOWED => {
                h.insert(header::ALLOW, HeaderValue::from_static("GET"));
            }
            StatusCode::UPGRADE_REQUIRED => {
                h.insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                );
                h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            }
            _ => {}
        }
        res
    }
}

impl fmt::Display for WsUpgradeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WsUpgradeError::MethodNotGet => "a WebSocket handshake must be a GET request",
            WsUpgradeError::NotHttp11 => "a WebSocket handshake must be HTTP/1.1",
            WsUpgradeError::MissingUpgrade => "missing `Upgrade: websocket` header",
            WsUpgradeError::MissingConnectionUpgrade => "missing `Connection: Upgrade` header",
            WsUpgradeError::MissingVersion => {
                "missing `Sec-WebSocket-Version` header; this server speaks version 13"
            }
            WsUpgradeError::UnsupportedVersion => {
                "unsupported `Sec-WebSocket-Version`; this server speaks version 13"
            }
            WsUpgradeError::MissingKey => "missing `Sec-WebSocket-Key` header",
            WsUpgradeError::InvalidKey => {
                "`Sec-WebSocket-Key` must be sent once, as base64 of 16 bytes"
            }
            WsUpgradeError::MissingOrigin => "an `Origin` header is required",
            WsUpgradeError::ForbiddenOrigin => "this origin may not open a WebSocket here",
        })
    }
}

impl std::error::Error for WsUpgradeError {}

/// The non-empty elements of the comma lists of every `name` header, trimmed.
fn tokens<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a [u8]> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Whether some `name` header lists `token`, compared without regard to case.
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &[u8]) -> bool {
    tokens(headers, name).any(|t| t.eq_ignore_ascii_case(token))
}

/// The one `name` header: `Ok(None)` if absent, `Err` if repeated.
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a HeaderValue>, ()> {
    let mut all = headers.get_all(name).iter();
    match (all.next(), all.next()) {
        (first, None) => Ok(first),
        (Some(_), Some(_)) | (None, Some(_)) => Err(()),
    }
}

/// Whether the `Origin` of `req` (any request, not only a handshake) passes
/// `policy`, compared as the handshake compares it. A request without
/// `Origin` passes: browsers send it on every cross-origin `POST` and every
/// WebSocket handshake, so its absence means no browser page sent it. Use it
/// to refuse cross-site writes (a hostile page's form or `fetch`).
pub fn origin_allowed<B>(req: &Request<B>, policy: &OriginPolicy) -> bool {
    match single(req.headers(), &header::ORIGIN) {
        Ok(None) => true,
        Ok(Some(origin)) => origin_passes(req, origin, policy),
        Err(()) => matches!(policy, OriginPolicy::Any),
    }
}

fn check_origin<B>(req: &Request<B>, config: &UpgradeConfig) -> Result<(), WsUpgradeError> {
    let Some(origin) =
        single(req.headers(), &header::ORIGIN).map_err(|()| WsUpgradeError::ForbiddenOrigin)?
    else {
        return if config.allow_missing_origin {
            Ok(())
        } else {
            Err(WsUpgradeError::MissingOrigin)
        };
    };
    if origin_passes(req, origin, &config.origins) {
        Ok(())
    } else {
        Err(WsUpgradeError::ForbiddenOrigin)
    }
}

fn origin_passes<B>(req: &Request<B>, origin: &HeaderValue, policy: &OriginPolicy) -> bool {
    match policy {
        OriginPolicy::Any => true,
        OriginPolicy::SameHost => origin
            .to_str()
            .ok()
            .and_then(Origin::parse)
            .zip(host(req))
            .is_some_and(|(o, h)| o.same_host(&h)),
        OriginPolicy::AllowList(list) => origin
            .to_str()
            .ok()
            .and_then(Origin::parse)
            .is_some_and(|o| list.iter().filter_map(|e| Origin::parse(e)).any(|e| e == o)),
    }
}

/// The request's `Host` header (exactly one), or the URI's authority.
fn host<B>(req: &Request<B>) -> Option<Authority> {
    match single(req.headers(), &header::HOST) {
        Ok(Some(v)) => Authority::parse(v.to_str().ok()?.trim()),
        Ok(None) => Authority::parse(req.uri().authority()?.as_str()),
        Err(()) => None,
    }
}

/// `host[:port]`, the host lowercased; IPv6 literals keep their brackets.
#[derive(Debug, PartialEq, Eq)]
struct Authority {
    host: String,
    port: Option<u16>,
}

impl Authority {
    fn parse(s: &str) -> Option<Authority> {
        let (host, port) = if s.starts_with('[') {
            let end = s.find(']')? + 1;
            match &s[end..] {
                "" => (&s[..end], None),
                rest => (&s[..end], Some(rest.strip_prefix(':')?)),
            }
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        let bad = |c: char| c.is_ascii_whitespace() || c.is_ascii_control() || "/?#@:".contains(c);
        if host.is_empty() || (!host.starts_with('[') && host.contains(bad)) {
            return None;
        }
        let port = match port {
            None => None,
            Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
                Some(p.parse().ok()?)
            }
            Some(_) => return None,
        };
        Some(Authority {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// A parsed origin: scheme lowercased, and the port made explicit when the
/// scheme has a default.
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Origin {
    fn parse(s: &str) -> Option<Origin> {
        let (scheme, rest) = s.trim().split_once("://")?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
        if !scheme_ok {
            return None;
        }
        let scheme = scheme.to_ascii_lowercase();
        let Authority { host, port } = Authority::parse(rest)?;
        let port = port.or(default_port(&scheme));
        Some(Origin { scheme, host, port })
    }

    /// Whether this origin names the server at `host`: same host, and the
    /// same port, a `Host` without one meaning this scheme's default.
    fn same_host(&self, host: &Authority) -> bool {
        self.host == host.host && self.port == host.port.or(default_port(&self.scheme))
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::task::{Context, Poll, Waker};

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    /// A valid handshake from a page on `http://example.com`.
    fn valid() -> http::request::Builder {
        Request::get("/ws")
            .header("host", "example.com")
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", KEY)
            .header("origin", "http://example.com")
    }

    fn without(name: &str) -> Request<()> {
        let mut req = valid().body(()).unwrap();
        req.headers_mut().remove(name);
        req
    }

    fn with(name: &'static str, values: &[&'static str]) -> Request<()> {
        let mut req = valid().body(()).unwrap();
        req.headers_mut().remove(name);
        for v in values {
            req.headers_mut().append(name, HeaderValue::from_static(v));
        }
        req
    }

    fn check(req: &Request<()>, config: &UpgradeConfig) -> Result<Handshake, WsUpgradeError> {
        ws_upgrader(req, config)
    }

    fn ok(req: &Request<()>) {
        let got = check(req, &UpgradeConfig::default());
        assert!(got.is_ok(), "{got:?} for {:?}", req.headers());
    }

    fn err(req: &Request<()>, config: &UpgradeConfig, want: WsUpgradeError) {
        assert_eq!(check(req, config), Err(want), "{:?}", req.headers());
    }

    fn origin_ok(policy: &OriginPolicy, host: &'static str, origin: &'static str) -> bool {
        let mut req = with("origin", &[origin]);
        req.headers_mut()
            .insert("host", HeaderValue::from_static(host));
        let config = UpgradeConfig {
            origins: policy.clone(),
            ..UpgradeConfig::default()
        };
        match check(&req, &config) {
            Ok(_) => true,
            Err(WsUpgradeError::ForbiddenOrigin) => false,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }

    fn protocol(server: &[&str], client: &[&'static str]) -> Option<String> {
        let req = with("sec-websocket-protocol", client);
        let config = UpgradeConfig {
            protocols: server.iter().map(|s| s.to_string()).collect(),
            ..UpgradeConfig::default()
        };
        check(&req, &config)
            .unwrap()
            .protocol
            .map(|p| p.to_str().unwrap().to_string())
    }

    /// The output of a future that is ready at once (a `Full` body is).
    fn ready<F: Future>(fut: F) -> F::Output {
        let mut cx = Context::from_waker(Waker::noop());
        match std::pin::pin!(fut).poll(&mut cx) {
            Poll::Ready(out) => out,
            Poll::Pending => panic!("not ready"),
        }
    }

    #[test]
    fn the_rfc_6455_sample_key_gives_the_rfcs_accept_value() {
        let hs = check(&valid().body(()).unwrap(), &UpgradeConfig::default()).unwrap();
        assert_eq!(hs.accept, ACCEPT);
        assert_eq!(hs.protocol, None);
        assert_eq!(derive_accept_key(KEY.as_bytes()), ACCEPT);
    }

    #[test]
    fn the_accept_key_matches_tungstenite_and_a_second_independently_computed_vector() {
        // A second key, computed independently (Python: base64(sha1(key+GUID))).
        assert_eq!(
            derive_accept_key(b"x3JJHMbDL1EzLkh9GBhXDw=="),
            "HSmrc0sMlYUkAGmm5OPpG2HaGWk="
        );
        let hs = check(
            &with("sec-websocket-key", &["x3JJHMbDL1EzLkh9GBhXDw=="]),
            &UpgradeConfig::default(),
        )
        .unwrap();
        assert_eq!(hs.accept, "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
    }

    #[test]
    fn the_response_is_101_with_the_upgrade_headers() {
        let hs = check(
            &with("sec-websocket-protocol", &["chat"]),
            &UpgradeConfig {
                protocols: vec!["chat".into()],
                ..UpgradeConfig::default()
            },
        )
        .unwrap();
        let res = hs.response();
        assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
        let h = res.headers();
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "Upgrade");
        assert_eq!(h["sec-websocket-accept"], ACCEPT);
        assert_eq!(h["sec-websocket-protocol"], "chat");
        assert_eq!(h.len(), 4);

        let plain = Handshake {
            protocol: None,
            ..hs
        };
        assert!(
            !plain
                .response()
                .headers()
                .contains_key("sec-websocket-protocol")
        );
    }

    #[test]
    fn a_method_other_than_get_is_405_with_allow_get() {
        for method in [Method::POST, Method::HEAD, Method::CONNECT, Method::OPTIONS] {
            let mut req = valid().body(()).unwrap();
            *req.method_mut() = method;
            err(
                &req,
                &UpgradeConfig::default(),
                WsUpgradeError::MethodNotGet,
            );
        }
        let res = WsUpgradeError::MethodNotGet.into_response();
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(res.headers()["allow"], "GET");
    }

    #[test]
    fn http_other_than_1_1_is_400() {
        for version in [Version::HTTP_09, Version::HTTP_10, Version::HTTP_2] {
            let mut req = valid().body(()).unwrap();
            *req.version_mut() = version;
            err(&req, &UpgradeConfig::default(), WsUpgradeError::NotHttp11);
        }
        assert_eq!(WsUpgradeError::NotHttp11.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_missing_or_wrong_upgrade_is_400() {
        let d = UpgradeConfig::default();
        err(&without("upgrade"), &d, WsUpgradeError::MissingUpgrade);
        err(
            &with("upgrade", &["h2c"]),
            &d,
            WsUpgradeError::MissingUpgrade,
        );
        err(
            &with("upgrade", &["websockets"]),
            &d,
            WsUpgradeError::MissingUpgrade,
        );
        err(&with("upgrade", &[""]), &d, WsUpgradeError::MissingUpgrade);
        assert_eq!(
            WsUpgradeError::MissingUpgrade.status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn a_missing_or_wrong_connection_is_400() {
        let d = UpgradeConfig::default();
        err(
            &without("connection"),
            &d,
            WsUpgradeError::MissingConnectionUpgrade,
        );
        err(
            &with("connection", &["keep-alive"]),
            &d,
            WsUpgradeError::MissingConnectionUpgrade,
        );
        err(
            &with("connection", &["upgraded"]),
            &d,
            WsUpgradeError::MissingConnectionUpgrade,
        );
        assert_eq!(
            WsUpgradeError::MissingConnectionUpgrade.status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn header_lists_any_case_several_lines_comma_lists_whitespace() {
        ok(&with("connection", &["keep-alive, Upgrade"]));
        ok(&with("connection", &["keep-alive,upgrade"]));
        ok(&with("connection", &["UPGRADE"]));
        ok(&with("connection", &["keep-alive", "Upgrade"]));
        ok(&with("connection", &[" \tkeep-alive ,, \t upgrade\t"]));
        ok(&with("upgrade", &["WebSocket"]));
        ok(&with("upgrade", &["h2c, websocket"]));
        ok(&with("upgrade", &["h2c", "WEBSOCKET"]));
        ok(&with("sec-websocket-version", &[" 13 "]));
        ok(&with("sec-websocket-key", &[" dGhlIHNhbXBsZSBub25jZQ==\t"]));
        let hs = check(
            &with("sec-websocket-key", &[" dGhlIHNhbXBsZSBub25jZQ=="]),
            &UpgradeConfig::default(),
        )
        .unwrap();
        assert_eq!(
            hs.accept, ACCEPT,
            "the key is hashed without its whitespace"
        );
    }

    #[test]
    fn a_missing_or_wrong_version_is_426_with_sec_websocket_version_13() {
        let d = UpgradeConfig::default();
        err(
            &without("sec-websocket-version"),
            &d,
            WsUpgradeError::MissingVersion,
        );
        for v in ["8", "12", "14", "", "13.0", "thirteen"] {
            err(
                &with("sec-websocket-version", &[v]),
                &d,
                WsUpgradeError::UnsupportedVersion,
            );
        }
        for e in [
            WsUpgradeError::MissingVersion,
            WsUpgradeError::UnsupportedVersion,
        ] {
            let res = e.into_response();
            assert_eq!(res.status(), StatusCode::UPGRADE_REQUIRED);
            assert_eq!(res.headers()["sec-websocket-version"], "13");
            assert_eq!(res.headers()["upgrade"], "websocket");
        }
    }

    #[test]
    fn a_missing_repeated_or_malformed_key_not_base64_of_16_bytes_is_400() {
        let d = UpgradeConfig::default();
        err(
            &without("sec-websocket-key"),
            &d,
            WsUpgradeError::MissingKey,
        );
        for bad in [
            "",
            "dGhlIHNhbXBsZSBub25jZQ",       // no padding
            "dGhlIHNhbXBsZSBub25jZQ=",      // short padding
            "dGhlIHNhbXBsZSBub25jZQ===",    // too long
            "dGhlIHNhbXBsZSBub25j",         // 15 bytes
            "dGhlIHNhbXBsZSBub25jZXg=",     // 17 bytes
            "dGhlIHNhbXBsZSBub25jZQ==AAAA", // 19 bytes
            "dGhlIHNhbXBsZSBub25j*Q==",     // outside the alphabet
            "dGhlIHNhbXBsZSBub25jZ-==",     // URL-safe alphabet
            "dGhlIHNhbXBs ZSBub25jZQ==",    // inner space
        ] {
            err(
                &with("sec-websocket-key", &[bad]),
                &d,
                WsUpgradeError::InvalidKey,
            );
        }
        err(
            &with("sec-websocket-key", &[KEY, KEY]),
            &d,
            WsUpgradeError::InvalidKey,
        );
        ok(&with("sec-websocket-key", &["AAAAAAAAAAAAAAAAAAAAAA=="]));
        ok(&with("sec-websocket-key", &["/////////////////////w=="]));
        // Non-zero unused bits in the last character, as Go accepts.
        ok(&with("sec-websocket-key", &["dGhlIHNhbXBsZSBub25jZR=="]));
        assert_eq!(WsUpgradeError::MissingKey.status(), StatusCode::BAD_REQUEST);
        assert_eq!(WsUpgradeError::InvalidKey.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn same_host_host_and_port_compared_default_ports_normalised() {
        let p = OriginPolicy::SameHost;
        assert!(origin_ok(&p, "example.com", "http://example.com"));
        assert!(origin_ok(&p, "example.com", "https://example.com"));
        assert!(origin_ok(&p, "Example.COM", "HTTPS://example.com"));
        assert!(origin_ok(&p, "example.com", "http://example.com:80"));
        assert!(origin_ok(&p, "example.com", "https://example.com:443"));
        assert!(origin_ok(&p, "example.com:443", "https://example.com"));
        assert!(origin_ok(&p, "example.com:80", "http://example.com"));
        assert!(origin_ok(&p, "example.com:8080", "http://example.com:8080"));
        assert!(origin_ok(&p, "127.0.0.1:3000", "http://127.0.0.1:3000"));
        assert!(origin_ok(&p, "[::1]:3000", "http://[::1]:3000"));
        assert!(origin_ok(&p, "[::1]", "http://[::1]"));

        assert!(!origin_ok(&p, "example.com", "http://example.com:8080"));
        assert!(!origin_ok(&p, "example.com:8080", "http://example.com"));
        assert!(!origin_ok(
            &p,
            "example.com:8080",
            "http://example.com:8081"
        ));
        assert!(!origin_ok(&p, "example.com:443", "http://example.com"));
        assert!(!origin_ok(&p, "example.com", "http://evil.com"));
        assert!(!origin_ok(&p, "example.com", "http://example.com.evil.com"));
        assert!(!origin_ok(&p, "example.com", "http://sub.example.com"));
        assert!(!origin_ok(&p, "[::1]:3000", "http://[::2]:3000"));
        assert!(!origin_ok(&p, "example.com", "example.com"));
        assert!(!origin_ok(&p, "example.com", "http://example.com/path"));
        assert!(!origin_ok(&p, "example.com", "http://user@example.com"));
        assert!(!origin_ok(&p, "example.com", "http://example.com:99999"));
        assert!(!origin_ok(&p, "example.com", "http://example.com:"));

        // Without `Host`, the URI's authority (HTTP/2 style `:authority`).
        let mut req = without("host");
        *req.uri_mut() = "http://example.com/ws".parse().unwrap();
        ok(&req);
        err(
            &without("host"),
            &UpgradeConfig::default(),
            WsUpgradeError::ForbiddenOrigin,
        );
        err(
            &with("host", &["example.com", "example.com"]),
            &UpgradeConfig::default(),
            WsUpgradeError::ForbiddenOrigin,
        );
    }

    #[test]
    fn allow_list_exact_up_to_case_and_default_port() {
        let p = OriginPolicy::AllowList(vec![
            "https://app.example.com".into(),
            "http://localhost:3000/".into(),
            "*".into(),
            "not an origin".into(),
        ]);
        assert!(origin_ok(&p, "api.example.com", "https://app.example.com"));
        assert!(origin_ok(&p, "api.example.com", "HTTPS://APP.Example.com"));
        assert!(origin_ok(
            &p,
            "api.example.com",
            "https://app.example.com:443"
        ));
        assert!(origin_ok(&p, "api.example.com", "http://localhost:3000"));

        assert!(!origin_ok(&p, "api.example.com", "http://app.example.com"));
        assert!(!origin_ok(
            &p,
            "api.example.com",
            "https://app.example.com:8443"
        ));
        assert!(!origin_ok(&p, "api.example.com", "http://localhost:3001"));
        assert!(!origin_ok(&p, "api.example.com", "http://localhost"));
        assert!(!origin_ok(
            &p,
            "api.example.com",
            "https://evil.example.com"
        ));
        assert!(!origin_ok(&p, "api.example.com", "not an origin"));
        // The same host is not implied by an allow-list.
        assert!(!origin_ok(&p, "api.example.com", "https://api.example.com"));
        assert!(!origin_ok(
            &OriginPolicy::AllowList(vec![]),
            "a.com",
            "http://a.com"
        ));
    }

    #[test]
    fn any_allows_every_origin_even_null() {
        let p = OriginPolicy::Any;
        assert!(origin_ok(&p, "example.com", "https://evil.example"));
        assert!(origin_ok(&p, "example.com", "null"));
        assert!(origin_ok(&p, "example.com", "garbage"));
    }

    #[test]
    fn null_unparseable_non_utf_8_and_repeated_origins_are_403() {
        for p in [
            OriginPolicy::SameHost,
            OriginPolicy::AllowList(vec!["null".into(), "http://example.com".into()]),
        ] {
            assert!(!origin_ok(&p, "example.com", "null"));
            assert!(!origin_ok(&p, "example.com", "NULL"));
            assert!(!origin_ok(&p, "example.com", ""));
            assert!(!origin_ok(&p, "example.com", "://example.com"));
            assert!(!origin_ok(&p, "example.com", "1http://example.com"));
        }
        err(
            &with("origin", &["http://example.com", "http://example.com"]),
            &UpgradeConfig::default(),
            WsUpgradeError::ForbiddenOrigin,
        );
        let mut non_utf8 = valid().body(()).unwrap();
        non_utf8.headers_mut().insert(
            "origin",
            HeaderValue::from_bytes(b"http://ex\xe4mple.com").unwrap(),
        );
        err(
            &non_utf8,
            &UpgradeConfig::default(),
            WsUpgradeError::ForbiddenOrigin,
        );
        assert_eq!(
            WsUpgradeError::ForbiddenOrigin.status(),
            StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn a_missing_origin_follows_allow_missing_origin_under_every_policy() {
        let req = without("origin");
        for origins in [
            OriginPolicy::SameHost,
            OriginPolicy::Any,
            OriginPolicy::AllowList(vec!["https://app.example.com".into()]),
        ] {
            let allow = UpgradeConfig {
                origins: origins.clone(),
                ..UpgradeConfig::default()
            };
            assert!(allow.allow_missing_origin, "the default");
            assert!(check(&req, &allow).is_ok());
            let deny = UpgradeConfig {
                allow_missing_origin: false,
                ..allow
            };
            err(&req, &deny, WsUpgradeError::MissingOrigin);
        }
        assert_eq!(
            WsUpgradeError::MissingOrigin.status(),
            StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn the_protocol_is_the_servers_first_choice_among_those_the_client_offered() {
        assert_eq!(protocol(&["a", "b"], &["b, a"]), Some("a".into()));
        assert_eq!(protocol(&["b", "a"], &["a, b"]), Some("b".into()));
        assert_eq!(
            protocol(&["x", "b"], &["a", "b"]),
            Some("b".into()),
            "several lines"
        );
        assert_eq!(
            protocol(&["chat"], &[" graphql-ws ,\tchat "]),
            Some("chat".into())
        );
    }

    #[test]
    fn no_common_protocol_is_not_an_error_no_sec_websocket_protocol() {
        assert_eq!(protocol(&["a"], &["b, c"]), None);
        assert_eq!(
            protocol(&["Chat"], &["chat"]),
            None,
            "names are case-sensitive"
        );
        assert_eq!(protocol(&[], &["chat"]), None);
        assert_eq!(protocol(&["chat"], &[]), None);
        assert_eq!(protocol(&["chat"], &[""]), None);
    }

    #[test]
    fn checks_run_in_order_method_version_upgrade_connection_version_key_origin() {
        // Everything wrong: the method is reported first.
        let mut req = Request::post("/ws").body(()).unwrap();
        err(
            &req,
            &UpgradeConfig::default(),
            WsUpgradeError::MethodNotGet,
        );
        *req.method_mut() = Method::GET;
        err(
            &req,
            &UpgradeConfig::default(),
            WsUpgradeError::MissingUpgrade,
        );
        // A bad version wins over a bad key, so the client learns to retry with 13.
        let mut req = with("sec-websocket-version", &["8"]);
        req.headers_mut().remove("sec-websocket-key");
        err(
            &req,
            &UpgradeConfig::default(),
            WsUpgradeError::UnsupportedVersion,
        );
        // A malformed handshake is 400 whatever its origin.
        let mut req = with("origin", &["http://evil.com"]);
        req.headers_mut().remove("sec-websocket-key");
        err(&req, &UpgradeConfig::default(), WsUpgradeError::MissingKey);
    }

    #[test]
    fn every_error_response_has_its_status_and_a_short_text_body() {
        use WsUpgradeError::*;
        let all = [
            (MethodNotGet, 405),
            (NotHttp11, 400),
            (MissingUpgrade, 400),
            (MissingConnectionUpgrade, 400),
            (MissingVersion, 426),
            (UnsupportedVersion, 426),
            (MissingKey, 400),
            (InvalidKey, 400),
            (MissingOrigin, 403),
            (ForbiddenOrigin, 403),
        ];
        for (e, status) in all {
            assert_eq!(e.status().as_u16(), status, "{e:?}");
            let res = e.into_response();
            assert_eq!(res.status().as_u16(), status);
            assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
            let body = ready(res.into_body().collect()).unwrap().to_bytes();
            assert_eq!(body, format!("{e}\n").as_bytes());
            assert!(body.len() < 80, "{e:?}: {body:?}");
        }
        assert_eq!(
            InvalidKey.to_string(),
            "`Sec-WebSocket-Key` must be sent once, as base64 of 16 bytes"
        );
    }
}

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../ws_upgrader.md")]
#[doc = include_str!("../../../types/infra/Handshake.md")]
#[doc = include_str!("../../../types/infra/OriginPolicy.md")]
#[doc = include_str!("../../../types/infra/UpgradeConfig.md")]
#[doc = include_str!("../../../types/infra/WsUpgradeError.md")]
pub struct RegistryExamples;
