//! The HTTP vocabulary the registry's HTTP functions share: body, handler, middleware, route and shutdown signal.
//!
//! A types-only crate in the spirit of `http` and `tower-service`: you will not
//! find a server here (that is `http_serve`), only the shapes every HTTP
//! function agrees on, so a router, a middleware and an SSE handler compose
//! without knowing each other.
//!
//! - [`Body`] is a boxed `http_body::Body` of [`Bytes`]; requests and responses
//!   are `http::Request<Body>` and `http::Response<Body>`.
//! - [`Handler`] is a cheap-to-clone async function from request to response.
//!   It is also a `tower_service::Service`, so a handler mounts in axum, hyper
//!   or any tower stack.
//! - [`Middleware`] turns a handler into a handler; [`Route`] pairs a method
//!   and path with a handler.
//! - [`Shutdown`] is the signal a server gives long-lived responses (SSE
//!   streams, WebSockets) so they end when it drains. `http_serve` puts it in
//!   every request's extensions; handlers read it with [`Shutdown::from_request`].
//! - [`query_pairs`] and [`query_values`] read a query string, percent-decoded,
//!   the one way every handler here does.
//! - [`LongLived`] marks a response body that `http_serve` writes straight to
//!   the socket (SSE streams).
//!
//! # Example
//!
//! ```
//! use http_types::{full, Handler, Middleware, Request, Response};
//!
//! let hello = Handler::new(|_req: Request| async { Response::new(full("hello")) });
//! let tagged = Middleware::new(|next: Handler| {
//!     Handler::new(move |req| {
//!         let next = next.clone();
//!         async move {
//!             let mut res = next.call(req).await;
//!             res.headers_mut().insert("x-tag", http::HeaderValue::from_static("1"));
//!             res
//!         }
//!     })
//! });
//! let app = tagged.apply(hello);
//! # let _ = app;
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

pub use bytes::Bytes;
use http_body_util::BodyExt;

/// Any error a body can fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every request and response: boxed, streaming [`Bytes`].
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// An HTTP request with a [`Body`].
pub type Request = http::Request<Body>;

/// An HTTP response with a [`Body`].
pub type Response = http::Response<Body>;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A body holding `bytes`, all at once.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Boxes any body of `Bytes` into a [`Body`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

/// A plain-text response with `status`: `text/plain; charset=utf-8`.
pub fn text(status: http::StatusCode, body: impl Into<Bytes>) -> Response {
    let mut res = Response::new(full(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// A response extension marking its body as a long-lived stream (SSE).
///
/// On HTTP/1.x, `http_serve` lets hyper write the response head, then takes
/// the socket back and writes the body to it directly, without hyper's
/// per-connection buffers (about 16 KiB of an idle stream's memory); the body
/// is close-delimited (`HTTP/1.0` status line, `Connection: close`) and the
/// connection closes when it ends. Over HTTP/2, for `HEAD`, and on servers
/// that do not know it, the marker changes nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LongLived;

/// The credential of `Authorization: Bearer <credential>`, trimmed (the
/// scheme compared without regard to case, RFC 9110 11.1): `Ok(None)`
/// without a Bearer header, [`MalformedBearer`] for an empty credential,
/// several Bearer headers or a value that is not visible ASCII.
pub fn bearer<B>(req: &http::Request<B>) -> Result<Option<&str>, MalformedBearer> {
    let mut found = None;
    for value in req.headers().get_all(http::header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| MalformedBearer)?.trim();
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            continue;
        }
        let credential = rest.trim();
        if credential.is_empty() || found.is_some() {
            return Err(MalformedBearer);
        }
        found = Some(credential);
    }
    Ok(found)
}

/// An `Authorization: Bearer` header that does not hold one credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedBearer;

impl std::fmt::Display for MalformedBearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("expected one `Authorization: Bearer <credential>`")
    }
}

impl std::error::Error for MalformedBearer {}

/// The percent-decoded `(name, value)` pairs of a query string, in order
/// (`+` is a space; invalid escapes are kept as they are; a pair without
/// `=` has an empty value).
pub fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k), percent_decode(v))
    })
}

/// The decoded values of parameter `name` in a query string.
pub fn query_values<'a>(query: &'a str, name: &'a str) -> impl Iterator<Item = String> + 'a {
    query_pairs(query).filter_map(move |(k, v)| (k == name).then_some(v))
}

/// Percent-decoding of one query component, `+` as space.
fn percent_decode(s: &str) -> String {
    let hex = |c: Option<&u8>| {
        char::from(*c?)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], hex(b.get(i + 1)), hex(b.get(i + 2))) {
            (b'%', Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
            (b'+', ..) => out.push(b' '),
            (c, ..) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An async function from [`Request`] to [`Response`]; cloning is cheap (an `Arc`).
///
/// Errors are responses: a handler answers every request.
#[derive(Clone)]
pub struct Handler(Arc<dyn Fn(Request) -> BoxFuture<Response> + Send + Sync>);

impl Handler {
    /// Wraps an async function.
    pub fn new<F, Fut>(f: F) -> Self
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response> + Send + 'static,
    {
        Handler(Arc::new(move |req| Box::pin(f(req))))
    }

    /// Answers one request.
    pub fn call(&self, req: Request) -> BoxFuture<Response> {
        (self.0)(req)
    }
}

impl fmt::Debug for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Handler")
    }
}

/// A handler is a tower service over any `Bytes` body, so it mounts in axum
/// (`Router::route_service`), hyper (`service_fn`) or a tower stack.
impl<B> tower_service::Service<http::Request<B>> for Handler
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let fut = Handler::call(self, req.map(boxed));
        Box::pin(async move { Ok(fut.await) })
    }
}

/// Turns a handler into another handler (logging, CORS, auth, ...).
#[derive(Clone)]
pub struct Middleware(Arc<dyn Fn(Handler) -> Handler + Send + Sync>);

impl Middleware {
    /// Wraps a function from handler to handler.
    pub fn new(f: impl Fn(Handler) -> Handler + Send + Sync + 'static) -> Self {
        Middleware(Arc::new(f))
    }

    /// Wraps `inner`.
    pub fn apply(&self, inner: Handler) -> Handler {
        (self.0)(inner)
    }
}

impl fmt::Debug for Middleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Middleware")
    }
}

/// A method and path pattern with the handler that answers them.
///
/// Patterns are literal segments and `:name` parameters: `/users/:id/posts`.
#[derive(Debug, Clone)]
pub struct Route {
    /// The method this route answers.
    pub method: http::Method,
    /// The path pattern.
    pub path: String,
    /// The handler.
    pub handler: Handler,
}

impl Route {
    /// A route for `method` and `path`.
    pub fn new(method: http::Method, path: impl Into<String>, handler: Handler) -> Self {
        Route {
            method,
            path: path.into(),
            handler,
        }
    }

    /// A `GET` route.
    pub fn get(path: impl Into<String>, handler: Handler) -> Self {
        Route::new(http::Method::GET, path, handler)
    }

    /// A `POST` route.
    pub fn post(path: impl Into<String>, handler: Handler) -> Self {
        Route::new(http::Method::POST, path, handler)
    }
}

/// A one-shot signal that the server is shutting down, cheap to clone and to wait on.
///
/// Long-lived responses wait on it and end; it never resets.
#[derive(Clone, Default)]
pub struct Shutdown(Arc<ShutdownInner>);

#[derive(Default)]
struct ShutdownInner {
    fired: AtomicBool,
    next_id: AtomicU64,
    /// Registered wakers by wait id: a lookup, so thousands of open streams
    /// cost nothing per poll.
    waiters: Mutex<HashMap<u64, Waker>>,
}

impl Shutdown {
    /// A signal that has not fired.
    pub fn new() -> Self {
        Shutdown::default()
    }

    /// Fires the signal: every waiter wakes, now and later.
    pub fn trigger(&self) {
        self.0.fired.store(true, Ordering::SeqCst);
        let waiters = std::mem::take(&mut *lock(&self.0.waiters));
        for w in waiters.into_values() {
            w.wake();
        }
    }

    /// Whether the signal has fired.
    pub fn is_triggered(&self) -> bool {
        self.0.fired.load(Ordering::SeqCst)
    }

    /// Completes when the signal fires (at once if it has).
    pub fn wait(&self) -> ShutdownWait {
        ShutdownWait {
            inner: self.0.clone(),
            id: self.0.next_id.fetch_add(1, Ordering::Relaxed),
            registered: None,
        }
    }

    /// The signal the server put in the request's extensions, or one that never fires.
    pub fn from_request<B>(req: &http::Request<B>) -> Shutdown {
        req.extensions()
            .get::<Shutdown>()
            .cloned()
            .unwrap_or_default()
    }
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown")
            .field("triggered", &self.is_triggered())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The future of [`Shutdown::wait`]; dropping it unregisters its waker.
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct ShutdownWait {
    inner: Arc<ShutdownInner>,
    id: u64,
    /// The waker last registered, so polling again with the same one takes no lock.
    registered: Option<Waker>,
}

impl fmt::Debug for ShutdownInner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ShutdownInner")
    }
}

impl Future for ShutdownWait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.inner.fired.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        if this
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        let mut waiters = lock(&this.inner.waiters);
        // Checked again under the lock: `trigger` sets the flag before taking the list.
        if this.inner.fired.load(Ordering::SeqCst) {
            return Poll::Ready(());
        }
        waiters.insert(this.id, cx.waker().clone());
        this.registered = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for ShutdownWait {
    fn drop(&mut self) {
        if self.registered.is_some() {
            lock(&self.inner.waiters).remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn poll_once<F: Future + Unpin>(f: &mut F, flag: &Arc<Flag>) -> Poll<F::Output> {
        let waker = Waker::from(flag.clone());
        Pin::new(f).poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn shutdown_wakes_waiters_and_stays_fired() {
        let s = Shutdown::new();
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let mut w = s.wait();
        assert!(poll_once(&mut w, &flag).is_pending());
        assert_eq!(lock(&s.0.waiters).len(), 1);
        s.trigger();
        assert!(flag.0.load(Ordering::SeqCst), "waker called");
        assert!(poll_once(&mut w, &flag).is_ready());
        assert!(
            poll_once(&mut s.wait(), &flag).is_ready(),
            "later waits complete at once"
        );
    }

    #[test]
    fn dropped_waits_unregister() {
        let s = Shutdown::new();
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        for _ in 0..100 {
            let mut w = s.wait();
            assert!(poll_once(&mut w, &flag).is_pending());
            assert!(poll_once(&mut w, &flag).is_pending());
        }
        assert_eq!(lock(&s.0.waiters).len(), 0);
    }

    #[test]
    fn shutdown_from_request_defaults_to_never() {
        let req = http::Request::new(empty());
        assert!(!Shutdown::from_request(&req).is_triggered());
        let s = Shutdown::new();
        let mut req = http::Request::new(empty());
        req.extensions_mut().insert(s.clone());
        s.trigger();
        assert!(Shutdown::from_request(&req).is_triggered());
    }

    #[test]
    fn query_values_are_percent_decoded() {
        let q = "topic=a%2Fb&x=1&topic=c+d&topic=%zz&lastEventId=7&flag&%74opic=e";
        assert_eq!(
            query_values(q, "topic").collect::<Vec<_>>(),
            ["a/b", "c d", "%zz", "e"]
        );
        assert_eq!(query_values(q, "lastEventId").collect::<Vec<_>>(), ["7"]);
        assert_eq!(query_values(q, "flag").collect::<Vec<_>>(), [""]);
        for (raw, decoded) in [("%", "%"), ("%4", "%4"), ("%41", "A"), ("%c3%bc", "ü")] {
            assert_eq!(percent_decode(raw), decoded);
        }
    }

    /// `s` percent-encoded as a form would: unreserved bytes as they are,
    /// space as `+`, every other byte as `%XX`.
    fn form_encode(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    char::from(b).to_string()
                }
                b' ' => "+".to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    #[test]
    fn encoded_pairs_decode_back_exactly() {
        use proptest::prelude::*;
        let name = prop_oneof![Just("topic".to_string()), "(?s).{0,8}"];
        let pairs = prop::collection::vec((name, "(?s).{0,16}"), 0..6);
        proptest!(ProptestConfig::with_cases(512), |(pairs in pairs)| {
            let query: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
                .collect();
            let query = query.join("&");
            prop_assert_eq!(query_pairs(&query).collect::<Vec<_>>(), pairs.clone(), "{}", query);
            let topics: Vec<&str> =
                pairs.iter().filter(|(k, _)| k == "topic").map(|(_, v)| v.as_str()).collect();
            prop_assert_eq!(query_values(&query, "topic").collect::<Vec<_>>(), topics);
        });
    }

    #[test]
    fn arbitrary_queries_never_panic_and_split_on_ampersands() {
        use proptest::prelude::*;
        let query = prop_oneof!["(?s).{0,60}", "[a-z=&%+0-9A-F]{0,60}"];
        proptest!(ProptestConfig::with_cases(1024), |(query in query)| {
            let pairs: Vec<(String, String)> = query_pairs(&query).collect();
            let segments: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
            prop_assert_eq!(pairs.len(), segments.len());
            for ((k, v), seg) in pairs.iter().zip(&segments) {
                let (rk, rv) = seg.split_once('=').unwrap_or((seg, ""));
                // Text without escapes decodes to itself; a decoded part is
                // never longer than it was.
                for (decoded, raw) in [(k, rk), (v, rv)] {
                    if !raw.contains(['%', '+']) {
                        prop_assert_eq!(decoded, raw);
                    } else if !raw.contains('%') {
                        prop_assert_eq!(decoded, &raw.replace('+', " "));
                    }
                    prop_assert!(decoded.chars().count() <= raw.len());
                }
            }
            if let Some((name, _)) = pairs.first() {
                let want: Vec<&str> =
                    pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect();
                prop_assert_eq!(query_values(&query, name).collect::<Vec<_>>(), want);
            }
        });
    }

    #[test]
    fn text_sets_status_and_type() {
        let res = text(http::StatusCode::NOT_FOUND, "nope");
        assert_eq!(res.status(), 404);
        assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
    }
}
