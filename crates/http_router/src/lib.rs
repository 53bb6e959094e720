//! Routes requests by method and path, with `:name` parameters, 404 for unknown paths and 405 with `Allow` for unknown methods.
//!
//! Patterns are `/`-separated segments, each a literal or a `:name`
//! parameter. When several routes match a path, the one with more literal
//! segments wins, whatever the order given (`/users/me` beats `/users/:id`).
//! A trailing slash is ignored (`/a/` is `/a`). `HEAD` is answered by the
//! `GET` route when there is no `HEAD` route. Parameters are handed to the
//! handler as [`PathParams`] in the request extensions, as they appear in the
//! path (not percent-decoded).
//!
//! # Example
//!
//! ```
//! use http_router::{http_router, PathParams};
//! use http_types::{full, Handler, Request, Response, Route};
//!
//! let user = Handler::new(|req: Request| async move {
//!     let id = req.extensions().get::<PathParams>().and_then(|p| p.get("id")).unwrap_or("?").to_string();
//!     Response::new(full(id))
//! });
//! let app = http_router(vec![Route::get("/users/:id", user)])?;
//! # let _ = app;
//! # Ok::<(), http_router::RouterError>(())
//! ```
//!
//! # Errors
//!
//! [`RouterError`] for a pattern that does not start with `/`, an empty
//! parameter name, or two routes with the same method and pattern.

use std::fmt;
use std::sync::Arc;

use http::{HeaderValue, Method, StatusCode};
use http_types::{Handler, Request, Route, text};

/// Builds the handler that dispatches to `routes`.
pub fn http_router(routes: Vec<Route>) -> Result<Handler, RouterError> {
    let mut compiled: Vec<Compiled> = Vec::with_capacity(routes.len());
    for r in routes {
        let segments = parse(&r.path)?;
        if compiled
            .iter()
            .any(|c| c.method == r.method && same_shape(&c.segments, &segments))
        {
            return Err(RouterError::Duplicate {
                method: r.method,
                path: r.path,
            });
        }
        compiled.push(Compiled {
            method: r.method,
            segments,
            handler: r.handler,
        });
    }
    // More literal segments first; stable, so equal routes keep their order.
    compiled.sort_by_key(|c| std::cmp::Reverse(c.literals()));
    let table = Arc::new(compiled);
    Ok(Handler::new(move |req| {
        let table = table.clone();
        async move { dispatch(&table, req).await }
    }))
}

/// The `:name` parameters of the matched route, in path order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathParams(pub Vec<(String, String)>);

impl PathParams {
    /// The value of parameter `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A route table that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterError {
    /// The pattern does not start with `/`.
    NotAbsolute {
        /// The pattern.
        path: String,
    },
    /// A `:` segment without a name.
    EmptyParam {
        /// The pattern.
        path: String,
    },
    /// Two routes with the same method and pattern.
    Duplicate {
        /// The method.
        method: Method,
        /// The pattern.
        path: String,
    },
}

impl fmt::Display for RouterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouterError::NotAbsolute { path } => {
                write!(f, "route pattern `{path}` must start with `/`")
            }
            RouterError::EmptyParam { path } => {
                write!(
                    f,
                    "route pattern `{path}` has a `:` without a parameter name"
                )
            }
            RouterError::Duplicate { method, path } => {
                write!(f, "two routes for {method} {path}")
            }
        }
    }
}

impl std::error::Error for RouterError {}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

struct Compiled {
    method: Method,
    segments: Vec<Segment>,
    handler: Handler,
}

impl Compiled {
    fn literals(&self) -> usize {
        self.segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count()
    }

    /// The parameters when `parts` matches this pattern.
    fn matches(&self, parts: &[&str]) -> Option<PathParams> {
        if parts.len() != self.segments.len() {
            return None;
        }
        let mut params = Vec::new();
        for (seg, part) in self.segments.iter().zip(parts) {
            match seg {
                Segment::Literal(l) if l == part => {}
                Segment::Literal(_) => return None,
                Segment::Param(name) => params.push((name.clone(), (*part).to_string())),
            }
        }
        Some(PathParams(params))
    }
}

/// Two patterns match the same paths (parameter names aside).
fn same_shape(a: &[Segment], b: &[Segment]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|pair| match pair {
            (Segment::Literal(x), Segment::Literal(y)) => x == y,
            (Segment::Param(_), Segment::Param(_)) => true,
            _ => false,
        })
}

fn split(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

fn parse(path: &str) -> Result<Vec<Segment>, RouterError> {
    if !path.starts_with('/') {
        return Err(RouterError::NotAbsolute { path: path.into() });
    }
    split(path)
        .into_iter()
        .map(|s| match s.strip_prefix(':') {
            Some("") => Err(RouterError::EmptyParam { path: path.into() }),
            Some(name) => Ok(Segment::Param(name.into())),
            None => Ok(Segment::Literal(s.into())),
        })
        .collect()
}

async fn dispatch(table: &[Compiled], mut req: Request) -> http_types::Response {
    let parts = split(req.uri().path());
    let method = req.method().clone();
    let mut allowed: Vec<Method> = Vec::new();
    let mut get_fallback: Option<(&Compiled, PathParams)> = None;
    for route in table {
        let Some(params) = route.matches(&parts) else {
            continue;
        };
        if route.method == method {
            req.extensions_mut().insert(params);
            return route.handler.call(req).await;
        }
        if method == Method::HEAD && route.method == Method::GET && get_fallback.is_none() {
            get_fallback = Some((route, params));
        }
        allowed.push(route.method.clone());
    }
    if let Some((route, params)) = get_fallback {
        req.extensions_mut().insert(params);
        return route.handler.call(req).await;
    }
    if allowed.is_empty() {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if allowed.contains(&Method::GET) {
        allowed.push(Method::HEAD);
    }
    allowed.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    allowed.dedup();
    let list: Vec<&str> = allowed.iter().map(Method::as_str).collect();
    let mut res = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    if let Ok(v) = HeaderValue::from_str(&list.join(", ")) {
        res.headers_mut().insert(http::header::ALLOW, v);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_types::{Response, empty, full};

    fn named(name: &'static str) -> Handler {
        Handler::new(move |req: Request| async move {
            let params = req
                .extensions()
                .get::<PathParams>()
                .cloned()
                .unwrap_or_default();
            let shown: Vec<String> = params.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
            Response::new(full(format!("{name} {}", shown.join(","))))
        })
    }

    async fn check(router: &Handler, method: Method, path: &str) -> (u16, String, Option<String>) {
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .body(empty())
            .unwrap();
        let res = router.call(req).await;
        let status = res.status().as_u16();
        let allow = res
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_string());
        let body = http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap()
            .to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap(), allow)
    }

    fn router() -> Handler {
        http_router(vec![
            Route::get("/", named("root")),
            Route::get("/users/:id", named("user")),
            Route::get("/users/me", named("me")),
            Route::post("/users/:id/posts/:post", named("post")),
            Route::new(Method::DELETE, "/users/:id", named("delete")),
        ])
        .unwrap()
    }

    #[tokio::test]
    async fn routes_by_method_and_path() {
        let r = router();
        assert_eq!(check(&r, Method::GET, "/").await.1, "root ");
        assert_eq!(check(&r, Method::GET, "/users/42").await.1, "user id=42");
        assert_eq!(check(&r, Method::GET, "/users/42/").await.1, "user id=42");
        assert_eq!(
            check(&r, Method::POST, "/users/7/posts/9?x=1").await.1,
            "post id=7,post=9"
        );
        assert_eq!(check(&r, Method::DELETE, "/users/7").await.1, "delete id=7");
    }

    #[tokio::test]
    async fn literal_beats_parameter_whatever_the_order() {
        assert_eq!(check(&router(), Method::GET, "/users/me").await.1, "me ");
    }

    #[tokio::test]
    async fn unknown_path_is_404() {
        let (status, _, allow) = check(&router(), Method::GET, "/nope").await;
        assert_eq!((status, allow), (404, None));
        assert_eq!(check(&router(), Method::GET, "/users/1/2").await.0, 404);
    }

    #[tokio::test]
    async fn unknown_method_is_405_with_allow() {
        let (status, _, allow) = check(&router(), Method::PUT, "/users/42").await;
        assert_eq!(status, 405);
        assert_eq!(allow.as_deref(), Some("DELETE, GET, HEAD"));
    }

    #[tokio::test]
    async fn head_uses_the_get_route() {
        assert_eq!(
            check(&router(), Method::HEAD, "/users/42").await.1,
            "user id=42"
        );
    }

    #[test]
    fn bad_tables_are_errors() {
        let h = named("x");
        assert_eq!(
            http_router(vec![Route::get("users", h.clone())]).unwrap_err(),
            RouterError::NotAbsolute {
                path: "users".into()
            }
        );
        assert_eq!(
            http_router(vec![Route::get("/a/:", h.clone())]).unwrap_err(),
            RouterError::EmptyParam {
                path: "/a/:".into()
            }
        );
        let dup = http_router(vec![
            Route::get("/a/:x", h.clone()),
            Route::get("/a/:y/", h),
        ])
        .unwrap_err();
        assert_eq!(dup.to_string(), "two routes for GET /a/:y/");
    }
}
