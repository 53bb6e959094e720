//! Answers CORS preflights and adds CORS headers for allowed origins and methods.
//!
//! - A request without `Origin` reaches the handler and its response gets no
//!   CORS headers (it is not a CORS request), only `Vary`.
//! - A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
//!   is answered here: `204` with the allow headers when the origin and method
//!   are allowed, `403` otherwise; it never reaches the inner handler.
//! - Any other request from an allowed origin reaches the handler and its
//!   response gets `Access-Control-Allow-Origin`; from another origin it passes
//!   through without CORS headers, so the browser withholds the response.
//! - Every response carries `Vary` with the request headers its answer
//!   depends on: `Origin` always (also on answers to requests without one),
//!   `Access-Control-Request-Method` on answers to `OPTIONS`, and
//!   `Access-Control-Request-Headers` when they are echoed. A cache never
//!   gives one origin's answer, or the answer without `Origin`, to another.
//!
//! The returned `Middleware` is also a `tower::Layer`: mount it in axum with
//! `Router::layer(http_cors_middleware(config)?)`, or in a
//! `http_middleware_chain`.
//!
//! The configuration is checked when the middleware is built, and refused
//! with a [`CorsError`]:
//!
//! - `allow_credentials` with the wildcard origin `*`: the Fetch standard
//!   forbids it (a browser would drop the response), and echoing every origin
//!   instead would let any site read a user's credentialed responses. List the
//!   origins.
//! - `allow_credentials` with the `null` origin: sandboxed iframes and local
//!   files send it, and any page can make one, so it is as open as `*`.
//! - An allowed origin that is not an origin as browsers send it: a lowercase
//!   `scheme://host[:port]`, without path, trailing slash, user or query
//!   (`https://app.example:8443`), or `null`. Origins are compared byte for
//!   byte, so `https://App.example/` would never match anything.
//!
//! # Against tower-http
//!
//! Kept hand-written rather than wrapping `tower_http::cors::CorsLayer`
//! because it refuses unsafe configurations with an error when built, where
//! `CorsLayer` panics (or, for `null`, accepts them). `tests/tower_http.rs` sends the
//! same requests through both, configured alike, and asserts the same status
//! and CORS headers but for these deliberate differences:
//!
//! - **Preflights answer with a status that says it**: `204` when allowed
//!   (tower-http: `200`); `403` with only `Vary` when the origin or the
//!   method is not allowed, where tower-http answers `200` without
//!   `Access-Control-Allow-Origin`, or with a method list that lacks the
//!   method, and leaves the refusal to the browser. Requested headers are not
//!   checked here either: a browser refuses a header that
//!   `Access-Control-Allow-Headers` does not list.
//! - **CORS headers go to allowed origins only**: tower-http also sends
//!   `Access-Control-Allow-Credentials: true` to other origins and to
//!   requests without `Origin`, and `Access-Control-Allow-Origin: *` to
//!   requests without `Origin`; browsers ignore both there. So with `*` our
//!   answer still depends on `Origin` and says `Vary: origin`, which
//!   tower-http leaves out.
//! - **`Vary` names `Access-Control-Request-Method` on answers to `OPTIONS`**,
//!   since it decides them (preflight or not, `204` or `403`); tower-http,
//!   whose preflight answer does not read it, leaves it out.
//! - **Only `OPTIONS` with `Origin` and `Access-Control-Request-Method` is a
//!   preflight** (the Fetch standard's definition): tower-http answers every
//!   `OPTIONS` itself, so the app's own `OPTIONS` route (or the router's
//!   `405`) never runs; here it does.
//! - **`*` or `null` with credentials is a [`CorsError`]** when built;
//!   tower-http panics when its layer wraps a service for `*`, and accepts
//!   `null`.
//!
//! # Example
//!
//! ```
//! use http_cors_middleware::{http_cors_middleware, CorsConfig, CorsError};
//! use http_types::{full, Handler, Response};
//!
//! let cors = http_cors_middleware(CorsConfig {
//!     allowed_origins: vec!["https://app.example".into()],
//!     allow_credentials: true,
//!     ..CorsConfig::default()
//! })?;
//! let app = cors.apply(Handler::new(|_| async { Response::new(full("ok")) }));
//! # let _ = app;
//!
//! let refused = http_cors_middleware(CorsConfig {
//!     allowed_origins: vec!["*".into()],
//!     allow_credentials: true,
//!     ..CorsConfig::default()
//! });
//! assert!(matches!(refused, Err(CorsError::WildcardWithCredentials)));
//! # Ok::<(), CorsError>(())
//! ```
//!
//! # Errors
//!
//! [`CorsError`] for credentials with `*` or `null`, or an allowed origin that
//! is not an origin.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use http_types::{Handler, Middleware, Request, Response, empty};

/// What the middleware allows.
#[derive(Debug, Clone)]
pub struct CorsConfig {
    /// Allowed origins, exactly as browsers send them (`https://app.example:8443`);
    /// `"*"` allows any (not with credentials). Default: none (every
    /// cross-origin request refused).
    pub allowed_origins: Vec<String>,
    /// Allowed methods. Default: `GET`, `HEAD`, `POST`.
    pub allowed_methods: Vec<Method>,
    /// Allowed request headers; empty echoes what the preflight asks for. Default: empty.
    pub allowed_headers: Vec<HeaderName>,
    /// Whether cookies and credentials may be sent; the allowed origin is then
    /// echoed, and `*` or `null` in `allowed_origins` is an error. Default: false.
    pub allow_credentials: bool,
    /// How long browsers may cache a preflight. Default: 10 minutes.
    pub max_age: Duration,
}

impl Default for CorsConfig {
    fn default() -> Self {
        CorsConfig {
            allowed_origins: Vec::new(),
            allowed_methods: vec![Method::GET, Method::HEAD, Method::POST],
            allowed_headers: Vec::new(),
            allow_credentials: false,
            max_age: Duration::from_secs(600),
        }
    }
}

impl CorsConfig {
    fn any_origin(&self) -> bool {
        self.allowed_origins.iter().any(|o| o == "*")
    }

    fn allows(&self, origin: &str) -> bool {
        self.any_origin() || self.allowed_origins.iter().any(|o| o == origin)
    }

    /// The `Access-Control-Allow-Origin` value for an allowed origin: `*` for
    /// the wildcard (never with credentials, refused when built), else the
    /// origin itself.
    fn allow_origin(&self, origin: &HeaderValue) -> HeaderValue {
        if self.any_origin() {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }
}

/// Why a CORS configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsError {
    /// `allow_credentials` with the wildcard origin `*`.
    WildcardWithCredentials,
    /// `allow_credentials` with the `null` origin, which any page can send.
    NullWithCredentials,
    /// An allowed origin that is not a lowercase `scheme://host[:port]`, `*` or `null`.
    InvalidOrigin {
        /// The origin as configured.
        origin: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl fmt::Display for CorsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorsError::WildcardWithCredentials => f.write_str(
                "allow_credentials cannot be combined with the wildcard origin `*`: list the origins",
            ),
            CorsError::NullWithCredentials => f.write_str(
                "allow_credentials cannot be combined with the origin `null`, which any page can send (sandboxed iframes): list the origins",
            ),
            CorsError::InvalidOrigin { origin, reason } => write!(
                f,
                "allowed origin `{origin}` is not an origin as browsers send it (scheme://host[:port]): {reason}"
            ),
        }
    }
}

impl std::error::Error for CorsError {}

/// Checks `origin` as an allowed origin: `*`, `null`, or a lowercase
/// `scheme://host[:port]`.
fn check_origin(origin: &str) -> Result<(), &'static str> {
    if origin == "*" || origin == "null" {
        return Ok(());
    }
    let Some((scheme, rest)) = origin.split_once("://") else {
        return Err("no `://` after a scheme");
    };
    let mut s = scheme.chars();
    if !s.next().is_some_and(|c| c.is_ascii_lowercase())
        || !s.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.'))
    {
        return Err("the scheme must be lowercase letters, digits, `+`, `-` or `.`");
    }
    if rest.contains(['/', '?', '#']) {
        return Err("an origin has no path, trailing slash, query or fragment");
    }
    if rest.contains('@') {
        return Err("an origin has no user or password");
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return Err("an IPv6 host needs its closing `]`");
        };
        if addr.is_empty()
            || !addr
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, 'a'..='f' | ':' | '.'))
        {
            return Err("an IPv6 host is lowercase hex digits, `:` and `.`");
        }
        match after {
            "" => (addr, None),
            p => match p.strip_prefix(':') {
                Some(p) => (addr, Some(p)),
                None => return Err("only `:port` may follow an IPv6 host"),
            },
        }
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err("the host is empty");
    }
    if !rest.starts_with('[')
        && !host
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'))
    {
        return Err(
            "the host must be lowercase ASCII letters, digits, `-` and `.` (punycode for other names)",
        );
    }
    if let Some(p) = port
        && (p.is_empty()
            || p.len() > 5
            || !p.bytes().all(|b| b.is_ascii_digit())
            || p.parse::<u32>().map_or(true, |n| n > 65_535))
    {
        return Err("the port must be a number from 0 to 65535");
    }
    Ok(())
}

/// The CORS middleware for `config`, or why the configuration is refused.
pub fn http_cors_middleware(config: CorsConfig) -> Result<Middleware, CorsError> {
    for origin in &config.allowed_origins {
        check_origin(origin).map_err(|reason| CorsError::InvalidOrigin {
            origin: origin.clone(),
            reason,
        })?;
        if config.allow_credentials {
            match origin.as_str() {
                "*" => return Err(CorsError::WildcardWithCredentials),
                "null" => return Err(CorsError::NullWithCredentials),
                _ => {}
            }
        }
    }
    let config = Arc::new(config);
    Ok(Middleware::new(move |next: Handler| {
        let config = config.clone();
        Handler::new(move |req: Request| {
            let next = next.clone();
            let config = config.clone();
            async move { cors(&config, next, req).await }
        })
    }))
}

async fn cors(config: &CorsConfig, next: Handler, req: Request) -> Response {
    let vary = vary_for(config, req.method());
    let Some(origin) = req.headers().get(header::ORIGIN).cloned() else {
        // Not a CORS request, but the answer to one would differ: caches
        // must not serve this response to a request with an `Origin`.
        let mut res = next.call(req).await;
        res.headers_mut().append(header::VARY, vary);
        return res;
    };
    let allowed = origin.to_str().is_ok_and(|o| config.allows(o));
    let requested = req
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .cloned();
    if req.method() == Method::OPTIONS
        && let Some(requested) = requested
    {
        let method_ok = Method::from_bytes(requested.as_bytes())
            .is_ok_and(|m| config.allowed_methods.contains(&m));
        let mut res = Response::new(empty());
        res.headers_mut().append(header::VARY, vary);
        if !(allowed && method_ok) {
            *res.status_mut() = StatusCode::FORBIDDEN;
            return res;
        }
        *res.status_mut() = StatusCode::NO_CONTENT;
        let h = res.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            config.allow_origin(&origin),
        );
        let methods: Vec<&str> = config.allowed_methods.iter().map(Method::as_str).collect();
        if let Ok(v) = HeaderValue::from_str(&methods.join(", ")) {
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
        }
        let headers = if config.allowed_headers.is_empty() {
            req.headers()
                .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
                .cloned()
        } else {
            let names: Vec<&str> = config
                .allowed_headers
                .iter()
                .map(HeaderName::as_str)
                .collect();
            HeaderValue::from_str(&names.join(", ")).ok()
        };
        if let Some(v) = headers {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(config.max_age.as_secs()),
        );
        if config.allow_credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        return res;
    }
    let mut res = next.call(req).await;
    res.headers_mut().append(header::VARY, vary);
    if allowed {
        let h = res.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            config.allow_origin(&origin),
        );
        if config.allow_credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
    res
}

/// The `Vary` of every response: the request headers its answer reads.
/// `Origin` always (even with `*`, a request without one gets no CORS
/// headers); `Access-Control-Request-Method` for `OPTIONS`, which it makes a
/// preflight and whose answer (`204` or `403`) it decides; and
/// `Access-Control-Request-Headers` when it is echoed (no `allowed_headers`).
fn vary_for(config: &CorsConfig, method: &Method) -> HeaderValue {
    let mirrored = config.allowed_headers.is_empty();
    HeaderValue::from_static(match (method == Method::OPTIONS, mirrored) {
        (true, true) => "origin, access-control-request-method, access-control-request-headers",
        (true, false) => "origin, access-control-request-method",
        (false, true) => "origin, access-control-request-headers",
        (false, false) => "origin",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_types::full;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn app(config: CorsConfig) -> (Handler, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = calls.clone();
        let inner = Handler::new(move |_| {
            seen.fetch_add(1, Ordering::SeqCst);
            async { Response::new(full("ok")) }
        });
        let cors = http_cors_middleware(config).expect("a valid configuration");
        (cors.apply(inner), calls)
    }

    fn config() -> CorsConfig {
        CorsConfig {
            allowed_origins: vec!["https://a.example".into()],
            ..CorsConfig::default()
        }
    }

    fn req(method: Method, headers: &[(&str, &str)]) -> Request {
        let mut b = http::Request::builder().method(method).uri("/x");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(empty()).unwrap()
    }

    /// `Vary` of a non-`OPTIONS` answer when headers are echoed.
    const VARY: &str = "origin, access-control-request-headers";

    #[tokio::test]
    async fn a_request_without_origin_passes_through_with_vary() {
        let (app, calls) = app(config());
        let res = app.call(req(Method::GET, &[])).await;
        assert!(res.headers().get("access-control-allow-origin").is_none());
        // A cache must not give this answer to a request with an Origin.
        assert_eq!(res.headers()["vary"], VARY);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_allowed_origin_gets_the_allow_headers() {
        let (app, _) = app(config());
        let res = app
            .call(req(Method::GET, &[("origin", "https://a.example")]))
            .await;
        assert_eq!(
            res.headers()["access-control-allow-origin"],
            "https://a.example"
        );
        assert_eq!(res.headers()["vary"], VARY);
    }

    #[tokio::test]
    async fn another_origin_gets_none() {
        let (app, _) = app(config());
        let res = app
            .call(req(Method::GET, &[("origin", "https://evil.example")]))
            .await;
        assert!(res.headers().get("access-control-allow-origin").is_none());
    }

    #[tokio::test]
    async fn a_preflight_is_answered_here_never_reaching_the_handler() {
        let (app, calls) = app(config());
        let res = app
            .call(req(
                Method::OPTIONS,
                &[
                    ("origin", "https://a.example"),
                    ("access-control-request-method", "POST"),
                    ("access-control-request-headers", "content-type"),
                ],
            ))
            .await;
        assert_eq!(res.status(), 204);
        assert_eq!(
            res.headers()["access-control-allow-methods"],
            "GET, HEAD, POST"
        );
        assert_eq!(
            res.headers()["access-control-allow-headers"],
            "content-type"
        );
        assert_eq!(res.headers()["access-control-max-age"], "600");
        // The answer read the method and headers asked for.
        assert_eq!(
            res.headers()["vary"],
            "origin, access-control-request-method, access-control-request-headers"
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "preflight never reaches the handler"
        );
    }

    #[tokio::test]
    async fn a_preflight_for_a_disallowed_method_or_origin_is_403() {
        let (app, _) = app(config());
        for (origin, method) in [
            ("https://a.example", "DELETE"),
            ("https://evil.example", "GET"),
        ] {
            let res = app
                .call(req(
                    Method::OPTIONS,
                    &[
                        ("origin", origin),
                        ("access-control-request-method", method),
                    ],
                ))
                .await;
            assert_eq!(res.status(), 403, "{origin} {method}");
            assert!(
                res.headers()
                    .keys()
                    .all(|k| !k.as_str().starts_with("access-control-")),
                "{origin} {method}"
            );
            assert!(
                res.headers()["vary"]
                    .to_str()
                    .unwrap()
                    .contains("access-control-request-method")
            );
        }
    }

    #[tokio::test]
    async fn allows_any_origin_without_credentials() {
        let (app, _) = app(CorsConfig {
            allowed_origins: vec!["*".into()],
            ..CorsConfig::default()
        });
        let res = app
            .call(req(Method::GET, &[("origin", "https://b.example")]))
            .await;
        assert_eq!(res.headers()["access-control-allow-origin"], "*");
        assert!(
            res.headers()
                .get("access-control-allow-credentials")
                .is_none()
        );
    }

    #[tokio::test]
    async fn credentials_echo_a_listed_origin() {
        let (app, _) = app(CorsConfig {
            allowed_origins: vec!["https://a.example".into()],
            allow_credentials: true,
            ..CorsConfig::default()
        });
        let res = app
            .call(req(Method::GET, &[("origin", "https://a.example")]))
            .await;
        assert_eq!(
            res.headers()["access-control-allow-origin"],
            "https://a.example"
        );
        assert_eq!(res.headers()["access-control-allow-credentials"], "true");
        let res = app
            .call(req(Method::GET, &[("origin", "https://b.example")]))
            .await;
        assert!(res.headers().get("access-control-allow-origin").is_none());
        assert!(
            res.headers()
                .get("access-control-allow-credentials")
                .is_none()
        );
    }

    #[test]
    fn credentials_with_or_null_are_refused() {
        for (origins, want) in [
            (vec!["*"], CorsError::WildcardWithCredentials),
            (
                vec!["https://a.example", "*"],
                CorsError::WildcardWithCredentials,
            ),
            (vec!["null"], CorsError::NullWithCredentials),
        ] {
            let config = CorsConfig {
                allowed_origins: origins.iter().map(|o| (*o).to_string()).collect(),
                allow_credentials: true,
                ..CorsConfig::default()
            };
            let err = http_cors_middleware(config.clone()).unwrap_err();
            assert_eq!(err, want, "{origins:?}");
            // The same origins without credentials are fine.
            assert!(
                http_cors_middleware(CorsConfig {
                    allow_credentials: false,
                    ..config
                })
                .is_ok()
            );
        }
        assert_eq!(
            CorsError::WildcardWithCredentials.to_string(),
            "allow_credentials cannot be combined with the wildcard origin `*`: list the origins"
        );
    }

    #[test]
    fn origins_that_are_not_origins_are_refused() {
        for good in [
            "https://a.example",
            "http://localhost:8080",
            "https://xn--bcher-kva.example",
            "http://127.0.0.1:3000",
            "http://[::1]:8080",
            "chrome-extension://abcdef",
            "null",
            "*",
        ] {
            assert_eq!(check_origin(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "a.example",
            "https://a.example/",
            "https://a.example/path",
            "https://a.example?x",
            "https://A.example",
            "HTTPS://a.example",
            "https://user@a.example",
            "https://",
            "https://a.example:",
            "https://a.example:99999",
            "https://a.example:8o",
            "https://a b.example",
            "https://a.example\r\n",
            "https://bücher.example",
            "http://[::1",
            "http://[::1]x",
            "http://[::FFFF:1]",
            "1https://a.example",
        ] {
            let config = CorsConfig {
                allowed_origins: vec![bad.into()],
                ..CorsConfig::default()
            };
            match http_cors_middleware(config) {
                Err(CorsError::InvalidOrigin { origin, reason }) => {
                    assert_eq!(origin, bad);
                    assert!(!reason.is_empty());
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        let err = http_cors_middleware(CorsConfig {
            allowed_origins: vec!["https://a.example/".into()],
            ..CorsConfig::default()
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "allowed origin `https://a.example/` is not an origin as browsers send it (scheme://host[:port]): an origin has no path, trailing slash, query or fragment"
        );
    }
}

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../http_cors_middleware.md")]
#[doc = include_str!("../../../types/infra/CorsError.md")]
pub struct RegistryExamples;
