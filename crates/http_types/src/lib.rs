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

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

pub use bytes::Bytes;
/// The `http` crate whose types every signature here uses (`StatusCode`, `Method`, ...).
pub use http;
use http_body_util::BodyExt;
pub use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

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

/// A JSON response with `status`: `application/json`, `value` serialized by
/// serde_json with a trailing newline. A value serde_json cannot serialize
/// (a map with non-string keys) answers `500` with the reason.
pub fn json<T: serde::Serialize + ?Sized>(status: http::StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(mut body) => {
            body.push(b'\n');
            let mut res = Response::new(full(body));
            *res.status_mut() = status;
            res.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            res
        }
        Err(e) => text(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("response not serializable: {e}\n"),
        ),
    }
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
/// `=` has an empty value; bytes that are not UTF-8 become U+FFFD), as
/// `application/x-www-form-urlencoded` is parsed by the `form_urlencoded`
/// crate of the `url` project.
pub fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned()))
}

/// The decoded values of parameter `name` in a query string.
pub fn query_values<'a>(query: &'a str, name: &'a str) -> impl Iterator<Item = String> + 'a {
    query_pairs(query).filter_map(move |(k, v)| (k == name).then_some(v))
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

    /// Wraps any tower service that answers every request (`Error =
    /// Infallible`), such as an axum `Router` or a tower-http stack.
    pub fn from_service<S, B>(service: S) -> Handler
    where
        S: tower_service::Service<Request, Response = http::Response<B>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        // A mutex, not `S: Sync`: tower services are often `Send` only.
        let service = std::sync::Mutex::new(service);
        Handler::new(move |req| {
            let mut svc = service
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            async move {
                let ready = std::future::poll_fn(|cx| svc.poll_ready(cx)).await;
                let Ok(()) = ready;
                // Boxed to a `dyn Future + Send`: keeps `S::Future` (and its
                // higher-ranked `Send` question) out of this future's state.
                let call: BoxFuture<Result<http::Response<B>, Infallible>> =
                    Box::pin(svc.call(req));
                let Ok(res) = call.await;
                res.map(boxed)
            }
        })
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

    /// A middleware from any tower layer whose service answers every
    /// request, so tower-http's layers join a `http_middleware_chain`.
    pub fn from_layer<L, B>(layer: L) -> Middleware
    where
        L: tower_layer::Layer<Handler> + Send + Sync + 'static,
        L::Service: tower_service::Service<Request, Response = http::Response<B>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        <L::Service as tower_service::Service<Request>>::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Middleware::new(move |inner| Handler::from_service(layer.layer(inner)))
    }
}

/// A middleware is a tower layer: it wraps any service that answers every
/// request (an axum `Router` or `Route`, a [`Handler`]), so
/// `axum::Router::layer(cors)` works as `cors.apply(handler)` does.
impl<S, B> tower_layer::Layer<S> for Middleware
where
    S: tower_service::Service<Request, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Service = Handler;

    fn layer(&self, inner: S) -> Handler {
        self.apply(Handler::from_service(inner))
    }
}

impl fmt::Debug for Middleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Middleware")
    }
}

/// A method and path pattern with the handler that answers them.
///
/// Patterns are `http_router`'s (matchit syntax): literal segments, `{name}`
/// parameters and a final `{*rest}`: `/users/{id}/posts`.
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

/// The signal that the server is shutting down: a typed request extension
/// over [`CancellationToken`], cheap to clone and to wait on.
///
/// Long-lived responses wait on it and end; it never resets. It is a newtype,
/// not a bare token, so the server's signal in the request extensions cannot
/// be confused with another layer's token. Any app's own token becomes the
/// server's signal with `Shutdown::from(token)`; in axum, mount it with
/// `Router::layer(axum::Extension(shutdown))`.
/// Clones share one signal; [`same_signal`](Shutdown::same_signal) tells
/// whether two are the same one (a server watches each signal once).
#[derive(Clone, Default)]
pub struct Shutdown(Arc<CancellationToken>);

impl Shutdown {
    /// A signal that has not fired.
    pub fn new() -> Self {
        Shutdown::default()
    }

    /// Fires the signal: every waiter wakes, now and later.
    pub fn trigger(&self) {
        self.0.cancel();
    }

    /// Whether the signal has fired.
    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Completes when the signal fires (at once if it has). Not `Unpin`:
    /// box it to keep it in a struct.
    pub fn wait(&self) -> WaitForCancellationFutureOwned {
        CancellationToken::clone(&self.0).cancelled_owned()
    }

    /// The token underneath, to hand to code that takes a [`CancellationToken`].
    pub fn token(&self) -> &CancellationToken {
        &self.0
    }

    /// Whether `self` and `other` are clones of one signal (made by one
    /// `new`, `default` or `from`).
    pub fn same_signal(&self, other: &Shutdown) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The signal the server put in the request's extensions, or one that never fires.
    pub fn from_request<B>(req: &http::Request<B>) -> Shutdown {
        req.extensions()
            .get::<Shutdown>()
            .cloned()
            .unwrap_or_default()
    }
}

impl From<CancellationToken> for Shutdown {
    fn from(token: CancellationToken) -> Self {
        Shutdown(Arc::new(token))
    }
}

impl fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shutdown")
            .field("triggered", &self.is_triggered())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn trigger_wakes_every_waiter_and_stays_fired() {
        let s = Shutdown::new();
        let waiting = tokio::spawn(s.wait());
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        s.trigger();
        waiting.await.expect("the waiter completes");
        assert!(s.is_triggered());
        s.wait().await; // later waits complete at once
    }

    #[test]
    fn a_token_of_the_app_is_the_signal() {
        let token = CancellationToken::new();
        let s = Shutdown::from(token.clone());
        token.cancel();
        assert!(s.is_triggered());
        assert!(s.token().is_cancelled());
    }

    #[test]
    fn clones_are_the_same_signal_and_others_are_not() {
        let s = Shutdown::new();
        assert!(s.same_signal(&s.clone()));
        assert!(!s.same_signal(&Shutdown::new()));
        assert!(!s.same_signal(&Shutdown::from(s.token().clone())));
    }

    fn tagging(tag: &'static str) -> Middleware {
        Middleware::new(move |next: Handler| {
            Handler::new(move |req| {
                let next = next.clone();
                async move {
                    let mut res = next.call(req).await;
                    res.headers_mut()
                        .append("x-tag", http::HeaderValue::from_static(tag));
                    res
                }
            })
        })
    }

    #[tokio::test]
    async fn a_middleware_is_a_tower_layer_and_a_layer_is_a_middleware() {
        use tower_layer::Layer;
        let hello = Handler::new(|_req: Request| async { Response::new(full("hello")) });
        // As a tower layer over any service that answers every request.
        let layered = tagging("outer").layer(hello.clone());
        let res = layered.call(http::Request::new(empty())).await;
        assert_eq!(res.headers()["x-tag"], "outer");
        // Any tower layer as a middleware (here: a middleware seen as a layer).
        let from = Middleware::from_layer(tagging("inner"));
        let both = tagging("outer").apply(from.apply(hello));
        let res = both.call(http::Request::new(empty())).await;
        let tags: Vec<_> = res.headers().get_all("x-tag").iter().collect();
        assert_eq!(tags, ["inner", "outer"]);
    }

    #[tokio::test]
    async fn a_handler_serves_any_body_as_a_tower_service() {
        use tower_service::Service;
        let mut echo = Handler::new(|req: Request| async move {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            Response::new(full(body))
        });
        let req = http::Request::new(http_body_util::Full::new(Bytes::from_static(b"abc")));
        let res = Service::call(&mut echo, req).await.unwrap();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"abc");
    }

    #[test]
    fn json_answers_with_the_value_and_a_newline() {
        let res = json(http::StatusCode::CREATED, &serde_json::json!({"id": 7}));
        assert_eq!(res.status(), 201);
        assert_eq!(
            res.headers()[http::header::CONTENT_TYPE],
            "application/json"
        );
        let mut map = std::collections::HashMap::new();
        map.insert(vec![1u8], 1);
        assert_eq!(json(http::StatusCode::OK, &map).status(), 500);
    }

    #[test]
    fn a_request_without_a_signal_gets_one_that_never_fires() {
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
        for (raw, decoded) in [
            ("%", "%"),
            ("%4", "%4"),
            ("%41", "A"),
            ("%c3%bc", "ü"),
            ("%2B+", "+ "),
            ("%ff", "\u{FFFD}"),
            ("a=b", "a=b"),
        ] {
            let query = format!("k={raw}");
            assert_eq!(query_values(&query, "k").collect::<Vec<_>>(), [decoded]);
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

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../../../types/infra/Body.md")]
#[doc = include_str!("../../../types/infra/Handler.md")]
#[doc = include_str!("../../../types/infra/LongLived.md")]
#[doc = include_str!("../../../types/infra/Middleware.md")]
#[doc = include_str!("../../../types/infra/Route.md")]
#[doc = include_str!("../../../types/infra/Shutdown.md")]
pub struct RegistryExamples;
