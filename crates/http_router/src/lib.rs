//! Routes requests by method and path with `matchit`: `{name}` and `{*rest}` parameters, conflicts refused when built, 404 for unknown paths and 405 with `Allow` for unknown methods.
//!
//! Path matching is [`matchit`] 0.8's (the matcher and version axum 0.8
//! uses, so an app with axum builds one copy), so patterns are written as in
//! axum: `/users/{id}`, `/files/{*path}`. This crate adds
//! what a route table needs around it: one matcher per method, `405` with an
//! `Allow` header when the path exists under other methods, `HEAD` answered by
//! the `GET` route, and the parameters in the request extensions as
//! [`PathParams`].
//!
//! - **Patterns** start with `/`. A segment is a literal, `{name}` (one
//!   segment, possibly after a literal prefix: `/v{version}`; matchit 0.8
//!   has no suffixes) or, at the end, `{*rest}` (one or more segments, not
//!   empty). `{{` and `}}` are literal braces. The `:name` syntax (matchit before 0.8) is refused with
//!   [`RouterError::ColonParam`], so a table written for it fails loudly
//!   instead of matching a literal `:name`.
//! - **Priority** is matchit's, whatever the order given: a literal beats a
//!   parameter, which beats a catch-all (`/users/me` beats `/users/{id}`).
//!   Patterns that would make a path ambiguous (`/{a}` and `/{b}`, `/{x}` and
//!   `/{*rest}`) under one method are a [`RouterError::Conflict`] when the
//!   table is built, never a surprise at request time.
//! - **A trailing slash is ignored**, in patterns and paths alike (`/a/` is
//!   `/a`; `/` stays `/`): both are trimmed before matching, without copying.
//!   Other empty segments are not collapsed: `//a` is not `/a`.
//! - **Parameters are not percent-decoded**: [`PathParams`] holds them as they
//!   appear in the path.
//!
//! # Example
//!
//! ```
//! use http_router::{http_router, PathParams, RouterError};
//! use http_types::{full, Handler, Request, Response, Route};
//!
//! let user = Handler::new(|req: Request| async move {
//!     let id = req.extensions().get::<PathParams>().and_then(|p| p.get("id")).unwrap_or("?").to_string();
//!     Response::new(full(id))
//! });
//! let app = http_router(vec![Route::get("/users/{id}", user.clone())])?;
//! # let _ = app;
//!
//! // The old syntax is refused with a message that says what to write.
//! let old = http_router(vec![Route::get("/users/:id", user)]).unwrap_err();
//! assert!(matches!(old, RouterError::ColonParam { .. }));
//! assert!(old.to_string().contains("write `{id}`"));
//! # Ok::<(), RouterError>(())
//! ```
//!
//! # Errors
//!
//! [`RouterError`] for a pattern that does not start with `/`, uses `:name`,
//! is not valid matchit syntax, or conflicts with another route of the same
//! method.

use std::fmt;
use std::sync::Arc;

use http::{HeaderValue, Method, StatusCode};
use http_types::{Handler, Request, Route, text};

/// Builds the handler that dispatches to `routes`.
pub fn http_router(routes: Vec<Route>) -> Result<Handler, RouterError> {
    let mut table: Vec<(Method, matchit::Router<Handler>)> = Vec::new();
    for Route {
        method,
        path,
        handler,
    } in routes
    {
        if !path.starts_with('/') {
            return Err(RouterError::NotAbsolute { path });
        }
        if let Some(name) = path.split('/').find_map(|s| s.strip_prefix(':')) {
            let name = name.to_string();
            return Err(RouterError::ColonParam { path, name });
        }
        let i = match table.iter().position(|(m, _)| *m == method) {
            Some(i) => i,
            None => {
                table.push((method.clone(), matchit::Router::new()));
                table.len() - 1
            }
        };
        match table[i].1.insert(trim(&path), handler) {
            Ok(()) => {}
            Err(matchit::InsertError::Conflict { with }) => {
                return Err(RouterError::Conflict { method, path, with });
            }
            Err(e) => {
                let reason = e.to_string();
                return Err(RouterError::Invalid { path, reason });
            }
        }
    }
    // Sorted by name, so an `Allow` header lists methods in a stable order.
    table.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    let table = Arc::new(table);
    Ok(Handler::new(move |req| {
        let table = table.clone();
        async move { dispatch(&table, req).await }
    }))
}

/// The `{name}` and `{*rest}` parameters of the matched route, in path order,
/// as they appear in the path (not percent-decoded).
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
    /// A segment starts with `:`, the parameter syntax before matchit; write
    /// `{name}` instead.
    ColonParam {
        /// The pattern.
        path: String,
        /// The name after the `:` (empty for a bare `:`).
        name: String,
    },
    /// The pattern is not valid matchit syntax: an empty or unclosed `{}`,
    /// two parameters in one segment, text after a parameter in its segment,
    /// a `{*rest}` that is not last.
    Invalid {
        /// The pattern.
        path: String,
        /// What matchit found wrong.
        reason: String,
    },
    /// The pattern matches some path another route of the same method also
    /// matches, with no rule to choose (`/{a}` and `/{b}`, or the same pattern
    /// twice, a trailing slash aside).
    Conflict {
        /// The method.
        method: Method,
        /// The pattern refused.
        path: String,
        /// The pattern of the route already in the table (trailing slash trimmed).
        with: String,
    },
}

impl fmt::Display for RouterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouterError::NotAbsolute { path } => {
                write!(f, "route pattern `{path}` must start with `/`")
            }
            RouterError::ColonParam { path, name } => {
                let name = if name.is_empty() { "name" } else { name };
                write!(
                    f,
                    "route pattern `{path}` uses the old `:{name}` parameter syntax; write `{{{name}}}`"
                )
            }
            RouterError::Invalid { path, reason } => {
                write!(f, "route pattern `{path}` is invalid: {reason}")
            }
            RouterError::Conflict { method, path, with } => {
                write!(f, "route {method} {path} conflicts with {method} {with}")
            }
        }
    }
}

impl std::error::Error for RouterError {}

/// `path` without trailing slashes; `/` (and a path of slashes) stays `/`.
fn trim(path: &str) -> &str {
    match path.trim_end_matches('/') {
        "" => "/",
        trimmed => trimmed,
    }
}

type Table = [(Method, matchit::Router<Handler>)];

/// The handler and parameters of `method`'s route for `path`, if any.
fn find(table: &Table, method: &Method, path: &str) -> Option<(Handler, PathParams)> {
    let (_, router) = table.iter().find(|(m, _)| m == method)?;
    let m = router.at(path).ok()?;
    let params = m
        .params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Some((m.value.clone(), PathParams(params)))
}

async fn dispatch(table: &Table, mut req: Request) -> http_types::Response {
    let method = req.method().clone();
    let path = trim(req.uri().path());
    let found = find(table, &method, path).or_else(|| {
        (method == Method::HEAD)
            .then(|| find(table, &Method::GET, path))
            .flatten()
    });
    if let Some((handler, params)) = found {
        req.extensions_mut().insert(params);
        return handler.call(req).await;
    }
    let mut allowed: Vec<&str> = table
        .iter()
        .filter(|(_, router)| router.at(path).is_ok())
        .map(|(m, _)| m.as_str())
        .collect();
    if allowed.is_empty() {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if allowed.contains(&"GET") {
        allowed.push("HEAD");
    }
    allowed.sort_unstable();
    allowed.dedup();
    let mut res = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
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
            Route::get("/users/{id}", named("user")),
            Route::get("/users/me", named("me")),
            Route::post("/users/{id}/posts/{post}", named("post")),
            Route::new(Method::DELETE, "/users/{user}", named("delete")),
            Route::get("/files/{*path}", named("file")),
            Route::get("/img/img-{name}", named("img")),
            Route::get("/trailing/", named("trailing")),
        ])
        .unwrap()
    }

    fn build_err(routes: &[(Method, &str)]) -> RouterError {
        let routes = routes
            .iter()
            .map(|(m, p)| Route::new(m.clone(), *p, named("x")))
            .collect();
        http_router(routes).unwrap_err()
    }

    #[tokio::test]
    async fn routes_by_method_and_path_parameters_are_not_percent_decoded() {
        let r = router();
        assert_eq!(check(&r, Method::GET, "/").await.1, "root ");
        assert_eq!(check(&r, Method::GET, "/users/42").await.1, "user id=42");
        assert_eq!(
            check(&r, Method::POST, "/users/7/posts/9?x=1").await.1,
            "post id=7,post=9"
        );
        // Another method may name the parameter differently.
        assert_eq!(
            check(&r, Method::DELETE, "/users/7").await.1,
            "delete user=7"
        );
        assert_eq!(
            check(&r, Method::GET, "/files/a/b/c.txt").await.1,
            "file path=a/b/c.txt"
        );
        assert_eq!(
            check(&r, Method::GET, "/img/img-cat").await.1,
            "img name=cat"
        );
        // As they appear in the path: not percent-decoded.
        assert_eq!(
            check(&r, Method::GET, "/users/a%2Fb").await.1,
            "user id=a%2Fb"
        );
    }

    #[tokio::test]
    async fn a_trailing_slash_is_ignored_in_paths_and_patterns() {
        let r = router();
        assert_eq!(check(&r, Method::GET, "/users/42/").await.1, "user id=42");
        assert_eq!(check(&r, Method::GET, "/users/42//").await.1, "user id=42");
        assert_eq!(check(&r, Method::GET, "/trailing").await.1, "trailing ");
        assert_eq!(check(&r, Method::GET, "/trailing/").await.1, "trailing ");
        assert_eq!(
            check(&r, Method::GET, "/files/a/b/").await.1,
            "file path=a/b"
        );
        // Only trailing: inner empty segments are not collapsed.
        assert_eq!(check(&r, Method::GET, "//users/42").await.0, 404);
    }

    #[tokio::test]
    async fn a_literal_segment_beats_a_parameter_whatever_the_order() {
        assert_eq!(check(&router(), Method::GET, "/users/me").await.1, "me ");
        let reversed = http_router(vec![
            Route::get("/users/me", named("me")),
            Route::get("/users/{id}", named("user")),
        ])
        .unwrap();
        assert_eq!(check(&reversed, Method::GET, "/users/me").await.1, "me ");
        assert_eq!(
            check(&reversed, Method::GET, "/users/mel").await.1,
            "user id=mel"
        );
    }

    #[tokio::test]
    async fn unknown_path_is_404() {
        let (status, body, allow) = check(&router(), Method::GET, "/nope").await;
        assert_eq!((status, body.as_str(), allow), (404, "not found\n", None));
        assert_eq!(check(&router(), Method::GET, "/users/1/2").await.0, 404);
        // A catch-all is never empty.
        assert_eq!(check(&router(), Method::GET, "/files/").await.0, 404);
    }

    #[tokio::test]
    async fn unknown_method_is_405_with_allow() {
        let (status, _, allow) = check(&router(), Method::PUT, "/users/42").await;
        assert_eq!(status, 405);
        assert_eq!(allow.as_deref(), Some("DELETE, GET, HEAD"));
        let (status, _, allow) = check(&router(), Method::GET, "/users/1/posts/2").await;
        assert_eq!((status, allow.as_deref()), (405, Some("POST")));
    }

    #[tokio::test]
    async fn head_uses_the_get_route_unless_there_is_a_head_route() {
        assert_eq!(
            check(&router(), Method::HEAD, "/users/42").await.1,
            "user id=42"
        );
        let r = http_router(vec![
            Route::get("/a", named("get")),
            Route::new(Method::HEAD, "/a", named("head")),
        ])
        .unwrap();
        assert_eq!(check(&r, Method::HEAD, "/a").await.1, "head ");
        assert_eq!(
            check(&r, Method::POST, "/a").await.2.as_deref(),
            Some("GET, HEAD")
        );
    }

    #[test]
    fn conflicts_are_refused_when_the_table_is_built() {
        let get = Method::GET;
        let dup = build_err(&[(get.clone(), "/a/{x}"), (get.clone(), "/a/{y}/")]);
        assert_eq!(
            dup,
            RouterError::Conflict {
                method: Method::GET,
                path: "/a/{y}/".into(),
                with: "/a/{x}".into(),
            }
        );
        assert_eq!(
            dup.to_string(),
            "route GET /a/{y}/ conflicts with GET /a/{x}"
        );
        assert!(matches!(
            build_err(&[(get.clone(), "/a"), (get.clone(), "/a/")]),
            RouterError::Conflict { .. }
        ));
        assert!(matches!(
            build_err(&[(get.clone(), "/{x}"), (get.clone(), "/{*rest}")]),
            RouterError::Conflict { .. }
        ));
        // The same pattern under two methods is two routes, not a conflict.
        http_router(vec![
            Route::get("/a/{x}", named("x")),
            Route::post("/a/{y}", named("y")),
        ])
        .unwrap();
    }

    #[test]
    fn the_old_colon_syntax_is_refused_with_what_to_write() {
        let old = build_err(&[(Method::GET, "/users/:id/posts")]);
        assert_eq!(
            old,
            RouterError::ColonParam {
                path: "/users/:id/posts".into(),
                name: "id".into(),
            }
        );
        assert_eq!(
            old.to_string(),
            "route pattern `/users/:id/posts` uses the old `:id` parameter syntax; write `{id}`"
        );
        assert!(
            build_err(&[(Method::GET, "/a/:")])
                .to_string()
                .ends_with("write `{name}`")
        );
    }

    #[test]
    fn bad_patterns_are_errors() {
        assert_eq!(
            build_err(&[(Method::GET, "users")]),
            RouterError::NotAbsolute {
                path: "users".into()
            }
        );
        for bad in ["/a/{}", "/a/{x", "/a/{x}{y}", "/a/{x}.png", "/a/{*rest}/b"] {
            match build_err(&[(Method::GET, bad)]) {
                RouterError::Invalid { path, reason } => {
                    assert_eq!(path, bad);
                    assert!(!reason.is_empty());
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../http_router.md")]
#[doc = include_str!("../../../types/infra/PathParams.md")]
pub struct RegistryExamples;
