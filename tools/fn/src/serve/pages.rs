//! The HTML pages: small shells the script fills from the JSON API, and the 404 and 400 pages, written here.
//!
//! The server decides each page's status before the script runs: an
//! unknown entry is a `404` page that suggests near names, a search whose
//! query cannot run a `400` page with the message, so both are clear
//! without JavaScript too.

use std::sync::Arc;

use http::StatusCode;
use http_types::{Request, Response, Route, full};

use super::api::{Missing, SearchQuery, handler, lookup, path_name};
use super::graph::{esc, url_segment};
use super::{State, param, with_db};

const APP_JS: &str = include_str!("../../assets/serve/app.js");
const STYLE_CSS: &str = include_str!("../../assets/serve/style.css");

pub(super) fn routes(state: &Arc<State>) -> Vec<Route> {
    vec![
        Route::get("/", handler(state, search_page)),
        Route::get("/entry/{name}", handler(state, entry_page)),
        Route::get("/graph", handler(state, graph_page)),
        Route::get(
            "/assets/app.js",
            handler(state, |_, _| async {
                asset(APP_JS, "text/javascript; charset=utf-8")
            }),
        ),
        Route::get(
            "/assets/style.css",
            handler(state, |_, _| async {
                asset(STYLE_CSS, "text/css; charset=utf-8")
            }),
        ),
    ]
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut res = Response::new(full(body));
    let h = res.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    res
}

/// A whole page: header with navigation and the live status, `main`, footer.
fn page(status: StatusCode, title: &str, kind: &str, main: &str) -> Response {
    let html = format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · fn registry</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/assets/style.css">
<script src="/assets/app.js" defer></script>
</head>
<body data-page="{kind}">
<header>
<a class="brand" href="/">fn registry</a>
<nav><a href="/">search</a> <a href="/graph">graph</a></nav>
<span id="live" class="live" title="live refresh over /api/events">offline</span>
</header>
<div id="problems" class="problems" role="alert" hidden></div>
<main>
{main}
</main>
<footer><span id="indexed"></span> · read-only · <a href="/api/status">status</a></footer>
</body>
</html>
"#,
        title = esc(title),
    );
    let mut res = Response::new(full(html));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    res
}

/// `/`: the search form; with `?q=`, the query is run once here so a query
/// that cannot run answers `400` with the message.
async fn search_page(state: Arc<State>, req: Request) -> Response {
    let query = req.uri().query().unwrap_or("").to_string();
    let q = param(&query, "q").unwrap_or_default();
    let mut status = StatusCode::OK;
    let mut message = String::new();
    if !q.trim().is_empty() {
        let outcome = match SearchQuery::parse(&query) {
            Ok(sq) => with_db(&state, move |conn| sq.run(conn).map(|_| ()))
                .await
                .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e))
                .and_then(|r| r.map_err(|e| (StatusCode::BAD_REQUEST, e))),
            Err(e) => Err((StatusCode::BAD_REQUEST, e)),
        };
        if let Err((s, e)) = outcome {
            status = s;
            message = e;
        }
    }
    let main = format!(
        r#"<h1>Search the registry</h1>
<form id="search" action="/" method="get" role="search" class="search">
<input id="q" name="q" type="search" value="{q}" placeholder="words: ws send, sse encode, broadcast…" autocomplete="off" autofocus aria-label="search words">
<select id="kind" name="kind" aria-label="kind"><option value="">any kind</option><option>function</option><option>type</option><option>component</option></select>
<select id="domain" name="domain" aria-label="domain"><option value="">any domain</option></select>
<input id="tag" name="tag" list="tags" placeholder="tag" aria-label="tag" autocomplete="off"><datalist id="tags"></datalist>
<select id="purity" name="purity" aria-label="purity"><option value="">pure or impure</option><option>pure</option><option>impure</option></select>
<label><input id="tested" name="tested" type="checkbox" value="1"> tested</label>
<label title="AND, OR, NOT, NEAR, &quot;phrases&quot;, prefix*"><input id="fts" name="fts" type="checkbox" value="1"> FTS5 syntax</label>
<button type="submit">search</button>
</form>
<p id="error" class="error" role="alert"{hidden}>{message}</p>
<p id="summary" class="summary"></p>
<ol id="results" class="results"></ol>"#,
        q = esc(&q),
        hidden = if message.is_empty() { " hidden" } else { "" },
        message = esc(&message),
    );
    page(status, "search", "search", &main)
}

/// `/entry/{name}`: the entry's shell, or a `404` page with near names.
async fn entry_page(state: Arc<State>, req: Request) -> Response {
    let name = path_name(&req);
    let n = name.clone();
    let found = with_db(&state, move |conn| lookup(conn, &n).map(|_| ()))
        .await
        .unwrap_or_else(|e| Err(Missing::Failed(e)));
    match found {
        Ok(()) => {
            let main = format!(
                r#"<article id="entry" class="entry" data-name="{name}"><h1>{name}</h1><p class="summary">loading…</p></article>
<section class="graph-section"><h2>Neighbourhood</h2><p class="hint">what it uses on the right, what uses it on the left; <a href="/graph">whole registry</a></p><div id="graph" class="graph-box" data-src="/graph/{seg}.svg"></div></section>"#,
                name = esc(&name),
                seg = esc(&url_segment(&name)),
            );
            page(StatusCode::OK, &name, "entry", &main)
        }
        Err(missing) => missing_page(&name, &missing),
    }
}

fn missing_page(name: &str, missing: &Missing) -> Response {
    let links = |names: &[String]| -> String {
        names
            .iter()
            .map(|n| {
                format!(
                    r#"<li><a href="/entry/{}">{}</a></li>"#,
                    esc(&url_segment(n)),
                    esc(n)
                )
            })
            .collect()
    };
    let main = match missing {
        Missing::NotFound(msg, near) => {
            let near = if near.is_empty() {
                "<p>Nothing has a similar name.</p>".to_string()
            } else {
                format!(
                    r#"<p>Did you mean:</p><ul class="near">{}</ul>"#,
                    links(near)
                )
            };
            format!(
                r#"<h1>Not found</h1><p id="error" class="error">{msg}.</p>{near}<p><a href="/?q={q}">Search for “{name}”</a> instead.</p>"#,
                msg = esc(msg),
                q = esc(&url_segment(name)),
                name = esc(name),
            )
        }
        Missing::Ambiguous(msg, ids) => format!(
            r#"<h1>Several entries</h1><p id="error" class="error">{}.</p><ul class="near">{}</ul>"#,
            esc(msg),
            links(ids)
        ),
        Missing::Failed(msg) => format!(
            r#"<h1>Cannot read the registry</h1><p id="error" class="error">{}</p>"#,
            esc(msg)
        ),
    };
    page(missing.status(), name, "missing", &main)
}

async fn graph_page(_state: Arc<State>, _req: Request) -> Response {
    let main = r#"<h1>The whole registry</h1>
<p class="hint">Each box is an entry (blue: function, green: type); an arrow goes from what uses to what is used (solid: function, dashed: type). Click a box for its page.</p>
<label><input id="functions-only" type="checkbox"> functions only</label>
<div id="graph" class="graph-box" data-src="/graph.svg"></div>"#;
    page(StatusCode::OK, "graph", "graph", main)
}
