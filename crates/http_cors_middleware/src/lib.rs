//! Answers CORS preflights and adds CORS headers for allowed origins and methods.
//!
//! - A request without `Origin` passes through untouched (not a CORS request).
//! - A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
//!   is answered here: `204` with the allow headers when the origin and method
//!   are allowed, `403` otherwise; it never reaches the inner handler.
//! - Any other request from an allowed origin reaches the handler and its
//!   response gets `Access-Control-Allow-Origin`; from another origin it passes
//!   through without CORS headers, so the browser withholds the response.
//! - Responses always carry `Vary: Origin` when the answer depends on it.
//!
//! # Example
//!
//! ```
//! use http_cors_middleware::{http_cors_middleware, CorsConfig};
//! use http_types::{full, Handler, Response};
//!
//! let cors = http_cors_middleware(CorsConfig {
//!     allowed_origins: vec!["https://app.example".into()],
//!     ..CorsConfig::default()
//! });
//! let app = cors.apply(Handler::new(|_| async { Response::new(full("ok")) }));
//! # let _ = app;
//! ```

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, StatusCode};
use http_types::{Handler, Middleware, Request, Response, empty};

/// What the middleware allows.
#[derive(Debug, Clone)]
pub struct CorsConfig {
    /// Allowed origins, exactly as browsers send them (`https://app.example:8443`);
    /// `"*"` allows any. Default: none (every cross-origin request refused).
    pub allowed_origins: Vec<String>,
    /// Allowed methods. Default: `GET`, `HEAD`, `POST`.
    pub allowed_methods: Vec<Method>,
    /// Allowed request headers; empty echoes what the preflight asks for. Default: empty.
    pub allowed_headers: Vec<HeaderName>,
    /// Whether cookies and credentials may be sent; the origin is then echoed,
    /// never `*`. Default: false.
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

    /// The `Access-Control-Allow-Origin` value for an allowed origin.
    fn allow_origin(&self, origin: &HeaderValue) -> HeaderValue {
        if self.any_origin() && !self.allow_credentials {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }
}

/// The CORS middleware for `config`.
pub fn http_cors_middleware(config: CorsConfig) -> Middleware {
    let config = Arc::new(config);
    Middleware::new(move |next: Handler| {
        let config = config.clone();
        Handler::new(move |req: Request| {
            let next = next.clone();
            let config = config.clone();
            async move { cors(&config, next, req).await }
        })
    })
}

async fn cors(config: &CorsConfig, next: Handler, req: Request) -> Response {
    let Some(origin) = req.headers().get(header::ORIGIN).cloned() else {
        return next.call(req).await;
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
        vary(&mut res);
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
    vary(&mut res);
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

fn vary(res: &mut Response) {
    res.headers_mut()
        .append(header::VARY, HeaderValue::from_static("origin"));
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
        (http_cors_middleware(config).apply(inner), calls)
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

    #[tokio::test]
    async fn no_origin_passes_through() {
        let (app, calls) = app(config());
        let res = app.call(req(Method::GET, &[])).await;
        assert!(res.headers().get("access-control-allow-origin").is_none());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn allowed_origin_gets_headers() {
        let (app, _) = app(config());
        let res = app
            .call(req(Method::GET, &[("origin", "https://a.example")]))
            .await;
        assert_eq!(
            res.headers()["access-control-allow-origin"],
            "https://a.example"
        );
        assert_eq!(res.headers()["vary"], "origin");
    }

    #[tokio::test]
    async fn other_origin_gets_no_headers() {
        let (app, _) = app(config());
        let res = app
            .call(req(Method::GET, &[("origin", "https://evil.example")]))
            .await;
        assert!(res.headers().get("access-control-allow-origin").is_none());
    }

    #[tokio::test]
    async fn preflight_is_answered_here() {
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
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "preflight never reaches the handler"
        );
    }

    #[tokio::test]
    async fn preflight_refused_for_method_or_origin() {
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
        }
    }

    #[tokio::test]
    async fn star_with_and_without_credentials() {
        let (app1, _) = app(CorsConfig {
            allowed_origins: vec!["*".into()],
            ..CorsConfig::default()
        });
        let res = app1
            .call(req(Method::GET, &[("origin", "https://b.example")]))
            .await;
        assert_eq!(res.headers()["access-control-allow-origin"], "*");
        let (app2, _) = app(CorsConfig {
            allowed_origins: vec!["*".into()],
            allow_credentials: true,
            ..CorsConfig::default()
        });
        let res = app2
            .call(req(Method::GET, &[("origin", "https://b.example")]))
            .await;
        assert_eq!(
            res.headers()["access-control-allow-origin"],
            "https://b.example"
        );
        assert_eq!(res.headers()["access-control-allow-credentials"], "true");
    }
}
