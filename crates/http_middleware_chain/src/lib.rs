//! Composes middlewares into one, the first in the list outermost.
//!
//! `http_middleware_chain(vec![a, b, c]).apply(h)` is `a(b(c(h)))`: a request
//! passes `a`, then `b`, then `c`, then reaches `h`; the response goes back
//! the other way. An empty chain returns the handler unchanged. A tower layer
//! (tower-http's) joins a chain as `Middleware::from_layer(layer)`, and the
//! chain itself is a `tower::Layer`.
//!
//! # Example
//!
//! ```
//! use http_middleware_chain::http_middleware_chain;
//! use http_types::{full, Handler, Middleware, Response};
//!
//! let identity = Middleware::new(|h| h);
//! let app = http_middleware_chain(vec![identity.clone(), identity])
//!     .apply(Handler::new(|_| async { Response::new(full("ok")) }));
//! # let _ = app;
//! ```

use http_types::Middleware;

/// One middleware that applies `middlewares` in order, the first outermost.
pub fn http_middleware_chain(middlewares: Vec<Middleware>) -> Middleware {
    Middleware::new(move |handler| {
        middlewares
            .iter()
            .rev()
            .fold(handler, |inner, m| m.apply(inner))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_types::{Handler, Request, Response, empty, full};

    /// Appends `tag` to the `x-trace` header on the way in and on the way out.
    fn tracer(tag: &'static str) -> Middleware {
        Middleware::new(move |next: Handler| {
            Handler::new(move |mut req: Request| {
                let next = next.clone();
                async move {
                    let seen = req
                        .headers()
                        .get("x-trace")
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default();
                    req.headers_mut()
                        .insert("x-trace", format!("{seen}>{tag}").parse().unwrap());
                    let mut res = next.call(req).await;
                    let back = res.headers()["x-trace"].to_str().unwrap().to_string();
                    res.headers_mut()
                        .insert("x-trace", format!("{back}<{tag}").parse().unwrap());
                    res
                }
            })
        })
    }

    fn echo_trace() -> Handler {
        Handler::new(|req: Request| async move {
            let mut res = Response::new(full(""));
            let seen = req
                .headers()
                .get("x-trace")
                .cloned()
                .unwrap_or(http::HeaderValue::from_static(""));
            res.headers_mut().insert("x-trace", seen);
            res
        })
    }

    #[tokio::test]
    async fn the_first_middleware_is_outermost_on_the_way_in_and_out() {
        let app =
            http_middleware_chain(vec![tracer("a"), tracer("b"), tracer("c")]).apply(echo_trace());
        let res = app.call(http::Request::new(empty())).await;
        assert_eq!(res.headers()["x-trace"], ">a>b>c<c<b<a");
    }

    #[tokio::test]
    async fn an_empty_chain_is_the_identity() {
        let app = http_middleware_chain(Vec::new()).apply(echo_trace());
        let res = app.call(http::Request::new(empty())).await;
        assert_eq!(res.headers()["x-trace"], "");
    }
}

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../http_middleware_chain.md")]
pub struct RegistryExamples;
