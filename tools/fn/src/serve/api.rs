//! The JSON API: search, entries, deps, facets and status, in the shapes of `fn ... --json`.

use std::sync::Arc;

use http::StatusCode;
use http_router::PathParams;
use http_types::{Handler, Request, Response, Route, json};
use rusqlite::{Connection, OptionalExtension};
use serde_json::json;

use super::{State, flag, param, with_db};
use crate::query::{self, Direction, Filters, Found, Syntax};

/// Default and most results of one search.
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 500;

/// Most near names suggested for an unknown one.
const SUGGESTIONS: usize = 5;

pub(super) fn routes(state: &Arc<State>) -> Vec<Route> {
    vec![
        Route::get("/api/search", handler(state, search)),
        Route::get("/api/entries/{name}", handler(state, entry)),
        Route::get("/api/deps/{name}", handler(state, deps)),
        Route::get("/api/facets", handler(state, facets)),
        Route::get("/api/status", handler(state, status)),
    ]
}

/// A handler calling `f` with the shared state.
pub(super) fn handler<F, Fut>(state: &Arc<State>, f: F) -> Handler
where
    F: Fn(Arc<State>, Request) -> Fut + Send + Sync + Copy + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    let state = state.clone();
    Handler::new(move |req| f(state.clone(), req))
}

/// The `{name}` parameter of the route.
pub(super) fn path_name(req: &Request) -> String {
    req.extensions()
        .get::<PathParams>()
        .and_then(|p| p.get("name"))
        .unwrap_or_default()
        .to_string()
}

/// `{"error": message}` with `status`.
pub(super) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json(status, &json!({ "error": message.into() }))
}

/// A search request, read from the query string.
#[derive(Debug, Clone)]
pub(super) struct SearchQuery {
    pub(super) q: String,
    pub(super) filters: Filters,
    pub(super) syntax: Syntax,
    pub(super) limit: usize,
}

impl SearchQuery {
    /// Reads `?q=&kind=&lang=&domain=&tag=&purity=&tested=&limit=&fts=`;
    /// empty values are no filter. `Err` says what is wrong.
    pub(super) fn parse(query: &str) -> Result<SearchQuery, String> {
        let some = |name: &str| param(query, name).filter(|v| !v.trim().is_empty());
        let q = some("q").ok_or("give words to search for: ?q=words")?;
        let kind = some("kind");
        if let Some(k) = &kind
            && !matches!(k.as_str(), "function" | "type" | "component")
        {
            return Err(format!(
                "kind must be function, type or component, not {k:?}"
            ));
        }
        let purity = some("purity");
        if let Some(p) = &purity
            && !matches!(p.as_str(), "pure" | "impure")
        {
            return Err(format!("purity must be pure or impure, not {p:?}"));
        }
        let limit = match some("limit") {
            None => DEFAULT_LIMIT,
            Some(l) => l
                .parse::<usize>()
                .map_err(|_| format!("limit must be a number, not {l:?}"))?
                .clamp(1, MAX_LIMIT),
        };
        Ok(SearchQuery {
            q,
            filters: Filters {
                kind,
                lang: some("lang"),
                domain: some("domain"),
                tags: http_types::query_values(query, "tag")
                    .filter(|t| !t.trim().is_empty())
                    .collect(),
                purity,
                tested: flag(query, "tested"),
            },
            syntax: if flag(query, "fts") {
                Syntax::Fts5
            } else {
                Syntax::Words
            },
            limit,
        })
    }

    /// Runs the search exactly as `fn search` does.
    pub(super) fn run(&self, conn: &Connection) -> Result<query::SearchResult, String> {
        query::search(conn, &self.q, self.syntax, &self.filters, self.limit)
    }
}

async fn search(state: Arc<State>, req: Request) -> Response {
    let sq = match SearchQuery::parse(req.uri().query().unwrap_or("")) {
        Ok(sq) => sq,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match with_db(&state, move |conn| sq.run(conn)).await {
        Ok(Ok(res)) => json(StatusCode::OK, &res),
        // The query's fault (invalid FTS5, nothing to search for).
        Ok(Err(e)) => error(StatusCode::BAD_REQUEST, e),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// Why an entry cannot be shown.
#[derive(Debug, Clone)]
pub(super) enum Missing {
    /// No entry or crate has that name: the message and near names.
    NotFound(String, Vec<String>),
    /// Several entries have that name: the message and their IDs.
    Ambiguous(String, Vec<String>),
    /// The database could not be read.
    Failed(String),
}

impl Missing {
    pub(super) fn status(&self) -> StatusCode {
        match self {
            Missing::NotFound(..) => StatusCode::NOT_FOUND,
            Missing::Ambiguous(..) => StatusCode::MULTIPLE_CHOICES,
            Missing::Failed(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub(super) fn to_response(&self) -> Response {
        match self {
            Missing::NotFound(msg, near) => {
                json(self.status(), &json!({ "error": msg, "suggestions": near }))
            }
            Missing::Ambiguous(msg, ids) => {
                json(self.status(), &json!({ "error": msg, "ids": ids }))
            }
            Missing::Failed(msg) => error(self.status(), msg.clone()),
        }
    }
}

/// `fn show NAME`: the entry of that name or ID, else the crate of that name.
pub(super) fn lookup(conn: &Connection, name: &str) -> Result<Found, Missing> {
    let failed = |e: rusqlite::Error| Missing::Failed(e.to_string());
    let known = conn
        .query_row(
            "SELECT 1 FROM entries WHERE id = ?1 OR name = ?1
             UNION ALL SELECT 1 FROM crates WHERE name = ?1 LIMIT 1",
            [name],
            |_| Ok(()),
        )
        .optional()
        .map_err(failed)?
        .is_some();
    if !known {
        let near = near_names(conn, name).map_err(failed)?;
        let msg = format!("no entry or crate named `{name}`");
        return Err(Missing::NotFound(msg, near));
    }
    let mut stmt = conn
        .prepare("SELECT id FROM entries WHERE name = ?1 ORDER BY id")
        .map_err(failed)?;
    let ids = stmt
        .query_map([name], |r| r.get::<_, String>(0))
        .map_err(failed)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(failed)?;
    if ids.len() > 1 {
        let msg = format!("`{name}` names several entries; pick one by ID");
        return Err(Missing::Ambiguous(msg, ids));
    }
    query::lookup(conn, name).map_err(Missing::Failed)
}

/// Entry and crate names near `name`: those containing it or contained in
/// it, then those within a small edit distance, nearest first.
pub(super) fn near_names(conn: &Connection, name: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt =
        conn.prepare("SELECT name FROM entries UNION SELECT name FROM crates ORDER BY 1")?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    let want = name.to_lowercase();
    let budget = (want.chars().count() / 3).max(2);
    let mut scored: Vec<(usize, String)> = names
        .into_iter()
        .filter_map(|n| {
            let lower = n.to_lowercase();
            let d = if want.is_empty() {
                return None;
            } else if lower.contains(&want) || want.contains(&lower) {
                0
            } else {
                strsim::levenshtein(&lower, &want)
            };
            (d <= budget).then_some((d, n))
        })
        .collect();
    scored.sort();
    Ok(scored
        .into_iter()
        .take(SUGGESTIONS)
        .map(|(_, n)| n)
        .collect())
}

async fn entry(state: Arc<State>, req: Request) -> Response {
    let name = path_name(&req);
    match with_db(&state, move |conn| lookup(conn, &name)).await {
        Ok(Ok(found)) => json(StatusCode::OK, &found),
        Ok(Err(missing)) => missing.to_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn deps(state: Arc<State>, req: Request) -> Response {
    let name = path_name(&req);
    let q = req.uri().query().unwrap_or("");
    let (reverse, transitive) = (flag(q, "reverse"), flag(q, "transitive"));
    let answer = with_db(&state, move |conn| {
        let id = match lookup(conn, &name)? {
            Found::Entry(s) => s.entry.id,
            Found::Crate(c) => {
                return Err(Missing::NotFound(
                    format!("`{}` is a crate, not an entry; deps are entries'", c.name),
                    c.entries.into_iter().map(|e| e.name).collect(),
                ));
            }
        };
        let dir = if reverse {
            Direction::UsedBy
        } else {
            Direction::Uses
        };
        let edges = query::deps(conn, &id, dir, transitive).map_err(Missing::Failed)?;
        Ok(crate::json::deps(&id, dir, transitive, &edges))
    })
    .await;
    match answer {
        Ok(Ok(v)) => json(StatusCode::OK, &v),
        Ok(Err(missing)) => missing.to_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn facets(state: Arc<State>, _req: Request) -> Response {
    let answer = with_db(&state, |conn| -> rusqlite::Result<serde_json::Value> {
        let list = |sql: &str| -> rusqlite::Result<Vec<String>> {
            let mut stmt = conn.prepare(sql)?;
            let rows = stmt.query_map([], |r| r.get(0))?;
            rows.collect()
        };
        Ok(json!({
            "kinds": list("SELECT DISTINCT kind FROM entries ORDER BY 1")?,
            "langs": list("SELECT DISTINCT lang FROM entries ORDER BY 1")?,
            "domains": list("SELECT DISTINCT domain FROM entries ORDER BY 1")?,
            // Most used first.
            "tags": list("SELECT tag FROM tags GROUP BY tag ORDER BY count(*) DESC, tag")?,
        }))
    })
    .await;
    match answer {
        Ok(Ok(v)) => json(StatusCode::OK, &v),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn status(state: Arc<State>, _req: Request) -> Response {
    json(StatusCode::OK, &state.status())
}

#[cfg(test)]
mod tests {
    use super::SearchQuery;

    #[test]
    fn search_parameters_are_checked() {
        let q = SearchQuery::parse("q=ws%20send&kind=&tag=a&tag=&tested=on&limit=9999").unwrap();
        assert_eq!(q.q, "ws send");
        assert_eq!(q.filters.kind, None);
        assert_eq!(q.filters.tags, vec!["a".to_string()]);
        assert!(q.filters.tested);
        assert_eq!(q.limit, super::MAX_LIMIT);
        assert!(SearchQuery::parse("kind=function").is_err());
        assert!(SearchQuery::parse("q=x&kind=crate").is_err());
        assert!(SearchQuery::parse("q=x&purity=maybe").is_err());
        assert!(SearchQuery::parse("q=x&limit=ten").is_err());
    }
}
