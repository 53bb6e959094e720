//! The dependency graph: nodes and edges from `refs`, and an SVG drawing of them made here, in layers.
//!
//! Layout: an edge goes from the entry that uses to the entry used, and
//! every node sits one column left of the farthest thing it uses (entries
//! that use nothing on the right), so every edge points right. Within a
//! column, nodes are ordered by kind and name, then a few sweeps move each
//! toward the mean height of its neighbours, which removes most crossings.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use http::StatusCode;
use http_types::{Request, Response, Route, full, json};
use rusqlite::{Connection, params_from_iter};
use serde::Serialize;

use super::api::{Missing, error, handler, lookup, path_name};
use super::{State, id_name, param, with_db};
use crate::query::Found;

pub(super) fn routes(state: &Arc<State>) -> Vec<Route> {
    vec![
        Route::get("/api/graph", handler(state, whole_json)),
        Route::get("/api/graph/{name}", handler(state, around_json)),
        Route::get("/graph.svg", handler(state, whole_svg)),
        Route::get("/graph/{name}", handler(state, around_svg)),
    ]
}

/// A node: an entry.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Node {
    id: String,
    name: String,
    kind: String,
    domain: String,
}

/// An edge: `from` uses `to` as `rel` (`uses_function`, `uses_type`, `returns`, `error_type`).
#[derive(Debug, Clone, Serialize)]
pub(super) struct GraphEdge {
    from: String,
    to: String,
    rel: String,
}

/// A graph: `center` holds the entries it is drawn around (empty for the
/// whole registry).
#[derive(Debug, Clone, Serialize)]
pub(super) struct Graph {
    center: Vec<String>,
    nodes: Vec<Node>,
    edges: Vec<GraphEdge>,
}

/// Every entry (of `kind`, when given) and the edges between them.
fn whole(conn: &Connection, kind: Option<&str>) -> rusqlite::Result<Graph> {
    let mut stmt = conn.prepare(
        "SELECT id, name, kind, domain FROM entries WHERE ?1 IS NULL OR kind = ?1 ORDER BY id",
    )?;
    let nodes = stmt
        .query_map([kind], |r| {
            Ok(Node {
                id: r.get(0)?,
                name: r.get(1)?,
                kind: r.get(2)?,
                domain: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let ids: BTreeSet<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    let mut stmt = conn.prepare("SELECT from_id, to_id, rel FROM refs ORDER BY 1, 2, 3")?;
    let edges = stmt
        .query_map([], edge_row)?
        .filter(|e| {
            e.as_ref().map_or(true, |e| {
                ids.contains(e.from.as_str()) && ids.contains(e.to.as_str())
            })
        })
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Graph {
        center: Vec::new(),
        nodes,
        edges,
    })
}

fn edge_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<GraphEdge> {
    Ok(GraphEdge {
        from: r.get(0)?,
        to: r.get(1)?,
        rel: r.get(2)?,
    })
}

/// The entries `center` and what they directly use and are used by.
fn around(conn: &Connection, center: Vec<String>) -> rusqlite::Result<Graph> {
    let marks = vec!["?"; center.len()].join(", ");
    let mut stmt = conn.prepare(&format!(
        "SELECT from_id, to_id, rel FROM refs
         WHERE from_id IN ({marks}) OR to_id IN ({marks}) ORDER BY 1, 2, 3"
    ))?;
    let args = center.iter().chain(center.iter());
    let edges = stmt
        .query_map(params_from_iter(args), edge_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut ids: BTreeSet<&str> = center.iter().map(String::as_str).collect();
    for e in &edges {
        ids.insert(&e.from);
        ids.insert(&e.to);
    }
    let mut stmt = conn.prepare("SELECT id, name, kind, domain FROM entries WHERE id = ?1")?;
    let mut nodes = Vec::with_capacity(ids.len());
    for id in ids {
        let node = stmt.query_row([id], |r| {
            Ok(Node {
                id: r.get(0)?,
                name: r.get(1)?,
                kind: r.get(2)?,
                domain: r.get(3)?,
            })
        });
        match node {
            Ok(n) => nodes.push(n),
            // A reference to an entry the index does not hold cannot be
            // written by `fn index`; draw it by its ID if a database has one.
            Err(rusqlite::Error::QueryReturnedNoRows) => nodes.push(Node {
                id: id.to_string(),
                name: id_name(id).to_string(),
                kind: String::new(),
                domain: String::new(),
            }),
            Err(e) => return Err(e),
        }
    }
    Ok(Graph {
        center,
        nodes,
        edges,
    })
}

/// The neighbourhood of entry or crate `name`: the entry, or the crate's entries.
fn around_name(conn: &Connection, name: &str) -> Result<Graph, Missing> {
    let center = match lookup(conn, name)? {
        Found::Entry(s) => vec![s.entry.id],
        Found::Crate(c) => c.entries.into_iter().map(|e| e.id).collect(),
    };
    around(conn, center).map_err(|e| Missing::Failed(e.to_string()))
}

/// `?kind=` of the whole graph: empty or absent is every kind.
fn kind_param(req: &Request) -> Option<String> {
    param(req.uri().query().unwrap_or(""), "kind").filter(|k| !k.is_empty())
}

async fn whole_json(state: Arc<State>, req: Request) -> Response {
    let kind = kind_param(&req);
    match with_db(&state, move |conn| whole(conn, kind.as_deref())).await {
        Ok(Ok(g)) => json(StatusCode::OK, &g),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn whole_svg(state: Arc<State>, req: Request) -> Response {
    let kind = kind_param(&req);
    match with_db(&state, move |conn| whole(conn, kind.as_deref())).await {
        Ok(Ok(g)) => svg_response(&g),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn around_json(state: Arc<State>, req: Request) -> Response {
    let name = path_name(&req);
    match with_db(&state, move |conn| around_name(conn, &name)).await {
        Ok(Ok(g)) => json(StatusCode::OK, &g),
        Ok(Err(missing)) => missing.to_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// `/graph/{name}.svg` (the router has no suffixes: the handler takes `.svg` off).
async fn around_svg(state: Arc<State>, req: Request) -> Response {
    let file = path_name(&req);
    let Some(name) = file.strip_suffix(".svg").map(str::to_string) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no such file `{file}`: the graph of an entry is /graph/NAME.svg"),
        );
    };
    match with_db(&state, move |conn| around_name(conn, &name)).await {
        Ok(Ok(g)) => svg_response(&g),
        Ok(Err(missing)) => missing.to_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

fn svg_response(g: &Graph) -> Response {
    let mut res = Response::new(full(svg(g)));
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("image/svg+xml; charset=utf-8"),
    );
    res
}

const NODE_W: usize = 210;
const NODE_H: usize = 26;
const ROW_H: usize = 34;
const GAP_X: usize = 110;
const MARGIN: usize = 16;
/// Characters of a name shown in a box; longer ones end in `…` (the full ID is the title).
const LABEL_CHARS: usize = 27;

/// Each node's column, from the right (0: uses nothing drawn).
fn columns(g: &Graph) -> HashMap<&str, usize> {
    let mut col: HashMap<&str, usize> = g.nodes.iter().map(|n| (n.id.as_str(), 0)).collect();
    // Longest path by relaxation; at most one pass per node, so a cycle
    // (which `fn index` refuses for functions) cannot loop forever.
    for _ in 0..g.nodes.len() {
        let mut changed = false;
        for e in &g.edges {
            if e.from == e.to {
                continue;
            }
            let (Some(&to), Some(&from)) = (col.get(e.to.as_str()), col.get(e.from.as_str()))
            else {
                continue;
            };
            if from < to + 1 {
                col.insert(e.from.as_str(), to + 1);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    col
}

/// Draws the graph: a box per node (a link to its page), a curve per edge.
pub(super) fn svg(g: &Graph) -> String {
    let col = columns(g);
    let ncols = col.values().max().map_or(1, |m| m + 1);
    // Columns left to right: the highest column number first.
    let mut layout: Vec<Vec<&Node>> = vec![Vec::new(); ncols];
    let mut sorted: Vec<&Node> = g.nodes.iter().collect();
    sorted.sort_by(|a, b| (&a.kind, &a.name, &a.id).cmp(&(&b.kind, &b.name, &b.id)));
    for n in sorted {
        layout[ncols - 1 - col[n.id.as_str()]].push(n);
    }
    let tallest = layout.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let y_of = |layout: &[Vec<&Node>]| -> HashMap<String, f64> {
        let mut y = HashMap::new();
        for c in layout {
            let offset = (tallest - c.len()) as f64 / 2.0;
            for (i, n) in c.iter().enumerate() {
                y.insert(n.id.clone(), offset + i as f64);
            }
        }
        y
    };
    let mut neighbours: HashMap<&str, Vec<&str>> = HashMap::new();
    for e in &g.edges {
        neighbours.entry(&e.from).or_default().push(&e.to);
        neighbours.entry(&e.to).or_default().push(&e.from);
    }
    for _ in 0..4 {
        let y = y_of(&layout);
        for c in &mut layout {
            let key = |n: &Node| -> f64 {
                let ns = neighbours.get(n.id.as_str()).map_or(&[][..], Vec::as_slice);
                if ns.is_empty() {
                    y[&n.id]
                } else {
                    ns.iter().map(|m| y[*m]).sum::<f64>() / ns.len() as f64
                }
            };
            c.sort_by(|a, b| key(a).total_cmp(&key(b)));
        }
    }
    let y = y_of(&layout);
    let mut pos: HashMap<&str, (usize, usize)> = HashMap::new();
    for (ci, c) in layout.iter().enumerate() {
        for n in c {
            let x = MARGIN + ci * (NODE_W + GAP_X);
            let yy = MARGIN + (y[&n.id] * ROW_H as f64) as usize;
            pos.insert(n.id.as_str(), (x, yy));
        }
    }
    let width = 2 * MARGIN + ncols * NODE_W + (ncols - 1) * GAP_X;
    let height = 2 * MARGIN + tallest * ROW_H;
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="graph" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="ui-monospace, monospace" font-size="12" role="img" aria-label="dependency graph, {n} entries, {m} edges">"##,
        n = g.nodes.len(),
        m = g.edges.len()
    );
    out.push_str(r##"<defs><marker id="fn-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#64748b"/></marker></defs>"##);
    for e in &g.edges {
        let (Some(&(x1, y1)), Some(&(x2, y2))) = (pos.get(e.from.as_str()), pos.get(e.to.as_str()))
        else {
            continue;
        };
        let (sx, sy) = (x1 + NODE_W, y1 + NODE_H / 2);
        let (tx, ty) = (x2, y2 + NODE_H / 2);
        let bend = GAP_X / 2;
        let dash = match e.rel.as_str() {
            "uses_function" => "",
            "uses_type" => r#" stroke-dasharray="5 3""#,
            "returns" => r#" stroke-dasharray="2 3""#,
            _ => r#" stroke-dasharray="8 3 2 3""#,
        };
        let _ = write!(
            out,
            r##"<path class="edge" data-rel="{rel}" d="M {sx} {sy} C {c1} {sy}, {c2} {ty}, {tx} {ty}" fill="none" stroke="#94a3b8" stroke-width="1.2"{dash} marker-end="url(#fn-arrow)"><title>{from} {rel} {to}</title></path>"##,
            rel = esc(&e.rel),
            c1 = sx + bend,
            c2 = tx.saturating_sub(bend),
            from = esc(&e.from),
            to = esc(&e.to),
        );
    }
    for n in &g.nodes {
        let (x, yy) = pos[n.id.as_str()];
        let center = g.center.contains(&n.id);
        let (fill, stroke) = match n.kind.as_str() {
            "function" => ("#dbeafe", "#2563eb"),
            "type" => ("#dcfce7", "#16a34a"),
            "component" => ("#fef3c7", "#d97706"),
            _ => ("#f1f5f9", "#64748b"),
        };
        let (fill, width) = if center {
            ("#fde68a", 2.5)
        } else {
            (fill, 1.0)
        };
        let label: String = if n.name.chars().count() > LABEL_CHARS {
            let mut s: String = n.name.chars().take(LABEL_CHARS - 1).collect();
            s.push('…');
            s
        } else {
            n.name.clone()
        };
        let _ = write!(
            out,
            r##"<a href="/entry/{href}"><g class="node" data-id="{id}" data-kind="{kind}"><title>{id} ({kind})</title><rect x="{x}" y="{yy}" width="{NODE_W}" height="{NODE_H}" rx="5" fill="{fill}" stroke="{stroke}" stroke-width="{width}"/><text x="{tx}" y="{ty}" fill="#0f172a">{label}</text></g></a>"##,
            href = esc(&url_segment(&n.name)),
            id = esc(&n.id),
            kind = esc(&n.kind),
            tx = x + 8,
            ty = yy + NODE_H / 2 + 4,
            label = esc(&label),
        );
    }
    out.push_str("</svg>\n");
    out
}

/// Escapes text for XML and HTML (content and quoted attributes).
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes everything but unreserved characters, for one path segment.
pub(super) fn url_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, kind: &str) -> Node {
        Node {
            id: id.into(),
            name: id_name(id).into(),
            kind: kind.into(),
            domain: "core".into(),
        }
    }

    fn edge(from: &str, to: &str) -> GraphEdge {
        GraphEdge {
            from: from.into(),
            to: to.into(),
            rel: "uses_function".into(),
        }
    }

    #[test]
    fn users_sit_left_of_what_they_use_even_with_a_cycle() {
        let g = Graph {
            center: vec!["b_rust_core".into()],
            nodes: vec![
                node("a_rust_core", "function"),
                node("b_rust_core", "function"),
                node("T_rust_core", "type"),
            ],
            edges: vec![
                edge("a_rust_core", "b_rust_core"),
                edge("b_rust_core", "T_rust_core"),
            ],
        };
        let col = columns(&g);
        assert_eq!(
            (col["a_rust_core"], col["b_rust_core"], col["T_rust_core"]),
            (2, 1, 0)
        );
        let drawn = svg(&g);
        assert!(drawn.starts_with("<svg"));
        assert_eq!(drawn.matches(r#"class="node""#).count(), 3);
        assert_eq!(drawn.matches(r#"class="edge""#).count(), 2);
        assert!(drawn.contains(r#"href="/entry/a""#));
        let cyclic = Graph {
            edges: vec![
                edge("a_rust_core", "b_rust_core"),
                edge("b_rust_core", "a_rust_core"),
            ],
            ..g
        };
        assert!(svg(&cyclic).ends_with("</svg>\n"));
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(url_segment("a b/ü"), "a%20b%2F%C3%BC");
    }
}
