//! Reading `registry.db`: search, show and the dependency graph.
//!
//! Every result type serializes to the stable `--json` shape documented in
//! `registry/README.md`.

use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params_from_iter};
use serde::Serialize;

use crate::index::SCHEMA_VERSION;

/// Opens an existing registry read-only and checks its schema version.
pub fn open(db: &Path) -> Result<Connection, String> {
    if !db.is_file() {
        return Err(format!(
            "no registry at {}: run `cargo fn index` first",
            db.display()
        ));
    }
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot open {}: {e}", db.display()))?;
    // Read through the page cache rather than copying pages: graph walks
    // touch pages all over a large database.
    conn.execute_batch("PRAGMA mmap_size = 4294967296; PRAGMA cache_size = -32768;")
        .map_err(|e| format!("cannot open {}: {e}", db.display()))?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| format!("{} is not a registry database: {e}", db.display()))?;
    if version != SCHEMA_VERSION {
        return Err(format!(
            "{} has schema version {version}, this fn reads version {SCHEMA_VERSION}: run `cargo fn index` again",
            db.display()
        ));
    }
    Ok(conn)
}

/// Filters of `fn search`.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// `--kind`
    pub kind: Option<String>,
    /// `--lang`
    pub lang: Option<String>,
    /// `--domain`
    pub domain: Option<String>,
    /// `--tag` (every one must be present)
    pub tags: Vec<String>,
    /// `--purity`
    pub purity: Option<String>,
    /// `--tested`: only tested entries.
    pub tested: bool,
}

/// The fields every answer about an entry starts with.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Entry ID.
    pub id: String,
    /// Entry name.
    pub name: String,
    /// `function`, `type` or `component`.
    pub kind: String,
    /// Language.
    pub lang: String,
    /// Domain.
    pub domain: String,
    /// Version.
    pub version: String,
    /// `pure` or `impure`.
    pub purity: String,
    /// Whether it has tests.
    pub tested: bool,
    /// Signature.
    pub signature: String,
    /// Description.
    pub description: String,
}

/// The `entries` columns of a [`Summary`], in its order, for `e`.
const SUMMARY_COLUMNS: &str = "e.id, e.name, e.kind, e.lang, e.domain, e.version, e.purity, e.tested, e.signature, e.description";

impl Summary {
    /// Reads the [`SUMMARY_COLUMNS`] of a row.
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Summary> {
        Ok(Summary {
            id: r.get(0)?,
            name: r.get(1)?,
            kind: r.get(2)?,
            lang: r.get(3)?,
            domain: r.get(4)?,
            version: r.get(5)?,
            purity: r.get(6)?,
            tested: r.get(7)?,
            signature: r.get(8)?,
            description: r.get(9)?,
        })
    }
}

/// One search hit.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    /// The entry.
    #[serde(flatten)]
    pub entry: Summary,
    /// Relevance, higher is better (negated bm25).
    pub score: f64,
}

/// The answer to `fn search`.
#[derive(Debug, Clone, Serialize)]
pub struct SearchResult {
    /// The query as given.
    pub query: String,
    /// The FTS5 expression that was run.
    pub fts: String,
    /// `all` when every term matched, `any` when no entry had every term and
    /// the search fell back to entries with any of them.
    pub matched: &'static str,
    /// Hits, best first.
    pub results: Vec<Hit>,
}

/// How the query text is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// Words: every word must match (prefixes allowed); punctuation splits
    /// words (`ws_send` is the phrase `ws send`). Never a syntax error.
    Words,
    /// The query is an FTS5 expression, passed through; invalid syntax is an error.
    Fts5,
}

/// Which terms of a plain query also match as prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    /// Only the last term (the one being typed): cheap on common words.
    Last,
    /// Every term.
    All,
}

/// Builds the FTS5 expression for a plain query: one quoted phrase per
/// whitespace-separated term, joined with `op` (`AND` or `OR`). A term that
/// also matches as a prefix is `("w" OR "w"*)`: an exact match counts twice,
/// so `greet` ranks `greet` above `greeting`.
///
/// Returns `None` when the query has no searchable characters.
pub fn fts_expression(query: &str, op: &str, prefix: Prefix) -> Option<String> {
    let phrases: Vec<String> = query
        .split_whitespace()
        .filter_map(|term| {
            let words: Vec<String> = term
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(str::to_lowercase)
                .collect();
            (!words.is_empty()).then(|| words.join(" "))
        })
        .collect();
    let last = phrases.len().checked_sub(1)?;
    let terms: Vec<String> = phrases
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if prefix == Prefix::All || i == last {
                format!("(\"{p}\" OR \"{p}\"*)")
            } else {
                format!("\"{p}\"")
            }
        })
        .collect();
    Some(terms.join(&format!(" {op} ")))
}

/// Ranked full-text search.
pub fn search(
    conn: &Connection,
    query: &str,
    syntax: Syntax,
    filters: &Filters,
    limit: usize,
) -> Result<SearchResult, String> {
    let fts_error = |e: rusqlite::Error| match syntax {
        Syntax::Fts5 => {
            format!("invalid FTS5 query {query:?}: {e} (drop --fts to search plain words)")
        }
        Syntax::Words => format!("search failed: {e}"),
    };
    // Plain words: every term (only the last as a prefix), then every term as
    // a prefix, then any term, then any single word of a split term (`ws_send`
    // finds `sse_send`), stopping at the first that finds something.
    let attempts: Vec<(String, &'static str)> = match syntax {
        Syntax::Fts5 => vec![(query.to_string(), "all")],
        Syntax::Words => {
            let first = fts_expression(query, "AND", Prefix::Last).ok_or_else(|| {
                format!("the query {query:?} has no letters or digits to search for")
            })?;
            let mut attempts = vec![(first, "all")];
            let words: String = query
                .chars()
                .map(|c| if c.is_alphanumeric() { c } else { ' ' })
                .collect();
            for (q, op, matched) in [
                (query, "AND", "all"),
                (query, "OR", "any"),
                (words.as_str(), "OR", "any"),
            ] {
                if let Some(fts) = fts_expression(q, op, Prefix::All)
                    && attempts.iter().all(|(f, _)| *f != fts)
                {
                    attempts.push((fts, matched));
                }
            }
            attempts
        }
    };
    let mut last = None;
    for (fts, matched) in attempts {
        let mut results = run_search(conn, &fts, filters, limit).map_err(fts_error)?;
        // An entry named exactly what was asked for comes first, whatever
        // bm25 says (`ws_send` before `ws_send_to`); the rest keep their order.
        let exact = query.trim();
        results.sort_by_key(|h| !h.entry.name.eq_ignore_ascii_case(exact));
        let found = !results.is_empty();
        last = Some(SearchResult {
            query: query.to_string(),
            fts,
            matched,
            results,
        });
        if found {
            break;
        }
    }
    last.ok_or_else(|| format!("the query {query:?} has nothing to search for"))
}

fn run_search(
    conn: &Connection,
    fts: &str,
    f: &Filters,
    limit: usize,
) -> rusqlite::Result<Vec<Hit>> {
    // FTS5 ranks and limits by itself (`ORDER BY rank LIMIT`); filters are a
    // rowid set inside the same query, so only the hits are joined.
    let mut filter = String::new();
    let mut args: Vec<String> = vec![fts.to_string()];
    for (col, v) in [
        ("kind", &f.kind),
        ("lang", &f.lang),
        ("domain", &f.domain),
        ("purity", &f.purity),
    ] {
        if let Some(v) = v {
            filter.push_str(&format!(" AND e.{col} = ?"));
            args.push(v.clone());
        }
    }
    for t in &f.tags {
        filter.push_str(" AND EXISTS (SELECT 1 FROM tags t WHERE t.entry_id = e.id AND t.tag = ?)");
        args.push(t.clone());
    }
    if f.tested {
        filter.push_str(" AND e.tested = 1");
    }
    let restrict = if filter.is_empty() {
        String::new()
    } else {
        format!(" AND rowid IN (SELECT e.rowid FROM entries e WHERE 1{filter})")
    };
    let sql = format!(
        "WITH hits AS (
             SELECT rowid, rank FROM entries_fts
             WHERE entries_fts MATCH ?{restrict}
             ORDER BY rank LIMIT ?
         )
         SELECT {SUMMARY_COLUMNS}, hits.rank
         FROM hits JOIN entries e ON e.rowid = hits.rowid
         ORDER BY hits.rank, e.id"
    );
    args.push(limit.to_string());
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params_from_iter(args.iter()), |r| {
        Ok(Hit {
            entry: Summary::from_row(r)?,
            score: -r.get::<_, f64>(10)?,
        })
    })?;
    rows.collect()
}

/// Resolves a NAME or ID to one entry ID, with a helpful error otherwise.
pub fn resolve(conn: &Connection, name_or_id: &str) -> Result<String, String> {
    let q = |sql: &str| -> rusqlite::Result<Vec<String>> {
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map([name_or_id], |r| r.get(0))?;
        rows.collect()
    };
    let err = |e: rusqlite::Error| e.to_string();
    if let [id] = q("SELECT id FROM entries WHERE id = ?1")
        .map_err(err)?
        .as_slice()
    {
        return Ok(id.clone());
    }
    let by_name = q("SELECT id FROM entries WHERE name = ?1 ORDER BY id").map_err(err)?;
    match by_name.as_slice() {
        [id] => Ok(id.clone()),
        [] => {
            let like = q("SELECT id FROM entries WHERE name LIKE '%' || ?1 || '%' ORDER BY length(name), id LIMIT 5")
                .map_err(err)?;
            if like.is_empty() {
                Err(format!(
                    "no entry named `{name_or_id}`; try `fn search {name_or_id}`"
                ))
            } else {
                Err(format!(
                    "no entry named `{name_or_id}`; similar: {}",
                    like.join(", ")
                ))
            }
        }
        many => Err(format!(
            "`{name_or_id}` names several entries, give the ID: {}",
            many.join(", ")
        )),
    }
}

/// A parameter, as shown.
#[derive(Debug, Clone, Serialize)]
pub struct ParamOut {
    /// Name.
    pub name: String,
    /// Description.
    pub desc: String,
}

/// A field or variant of a type, as shown.
#[derive(Debug, Clone, Serialize)]
pub struct MemberOut {
    /// `field` or `variant`.
    pub role: String,
    /// Name.
    pub name: String,
    /// Rust type (empty for unit variants).
    #[serde(rename = "type")]
    pub ty: String,
    /// Description.
    pub desc: String,
}

/// One edge of the graph, seen from the entry being shown.
#[derive(Debug, Clone, Serialize)]
pub struct Edge {
    /// The entry at the other end.
    pub id: String,
    /// Its kind.
    pub kind: String,
    /// `uses_function`, `uses_type`, `returns` or `error_type`.
    pub rel: String,
    /// 1 for direct edges; the shortest distance for transitive ones.
    pub depth: u32,
}

/// How to depend on a crate: `[dependencies]` lines that work as printed.
#[derive(Debug, Clone, Serialize)]
pub struct CargoLines {
    /// In a member of this workspace: `name.workspace = true`.
    pub workspace: String,
    /// From any other project on this machine, by the absolute path of this
    /// checkout's crate folder: `name = { path = "/abs/crates/name" }`.
    pub path: String,
    /// From the repository: `name = { git = "URL", package = "name" }`;
    /// `None` when the workspace declares no `repository`.
    pub git: Option<String>,
    /// From crates.io, by version: `name = "0.1.0"`.
    pub version: String,
}

/// The dependency lines of crate `krate`: its version and folder from the
/// `crates` table (else `version` and `crates/<krate>`), under the indexed root.
fn cargo_lines(conn: &Connection, krate: &str, version: &str) -> Result<CargoLines, String> {
    let e = |e: rusqlite::Error| e.to_string();
    let meta = |key: &str| -> Result<Option<String>, String> {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(e)
    };
    let row: Option<(String, String)> = conn
        .query_row(
            "SELECT version, path FROM crates WHERE name = ?1",
            [krate],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(e)?;
    let (version, rel) = match row {
        Some((v, p)) if !v.is_empty() => (v, p),
        Some((_, p)) => (version.to_string(), p),
        None => (version.to_string(), format!("crates/{krate}")),
    };
    let root = meta("root")?.unwrap_or_default();
    let dir = Path::new(&root).join(rel);
    Ok(CargoLines {
        workspace: format!("{krate}.workspace = true"),
        path: format!(
            "{krate} = {{ path = {} }}",
            toml_string(&dir.to_string_lossy())
        ),
        git: meta("repository")?.map(|url| {
            format!(
                "{krate} = {{ git = {}, package = \"{krate}\" }}",
                toml_string(&url)
            )
        }),
        version: format!("{krate} = \"{version}\""),
    })
}

/// A TOML basic string: quoted, with `\` and `"` escaped.
fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Everything `fn show` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Shown {
    /// The entry.
    #[serde(flatten)]
    pub entry: Summary,
    /// Tags.
    pub tags: Vec<String>,
    /// Parameters.
    pub params: Vec<ParamOut>,
    /// Fields and variants (types).
    pub members: Vec<MemberOut>,
    /// Output.
    pub output: String,
    /// `returns_optional`.
    pub returns_optional: bool,
    /// Error type ID.
    pub error_type: Option<String>,
    /// External packages.
    pub imports: Vec<String>,
    /// Test cases.
    pub tests: Vec<String>,
    /// Implementation file.
    pub file_path: String,
    /// Test file.
    pub test_file_path: Option<String>,
    /// The entry file.
    pub entry_path: String,
    /// The crate that holds the code.
    #[serde(rename = "crate")]
    pub krate: Option<String>,
    /// Cargo.toml lines to depend on it (Rust entries with a crate).
    pub cargo: Option<CargoLines>,
    /// What it uses, directly.
    pub uses: Vec<Edge>,
    /// What uses it, directly.
    pub used_by: Vec<Edge>,
    /// The `## Example` section.
    pub example: String,
    /// The `## Notes` section.
    pub notes: String,
    /// Unknown frontmatter keys, kept.
    pub extra: serde_json::Value,
}

/// Loads one entry with its direct edges.
pub fn show(conn: &Connection, name_or_id: &str) -> Result<Shown, String> {
    let id = resolve(conn, name_or_id)?;
    let e = |e: rusqlite::Error| e.to_string();
    let mut shown = conn
        .query_row(
            &format!(
                "SELECT {SUMMARY_COLUMNS}, e.output, e.returns_optional, e.error_type,
                        e.file_path, e.test_file_path, e.entry_path, e.crate, e.example,
                        e.notes, e.extra
                 FROM entries e WHERE e.id = ?1"
            ),
            [&id],
            |r| {
                let extra: String = r.get(19)?;
                Ok(Shown {
                    entry: Summary::from_row(r)?,
                    output: r.get(10)?,
                    returns_optional: r.get(11)?,
                    error_type: r.get(12)?,
                    file_path: r.get(13)?,
                    test_file_path: r.get(14)?,
                    entry_path: r.get(15)?,
                    krate: r.get(16)?,
                    example: r.get(17)?,
                    notes: r.get(18)?,
                    extra: serde_json::from_str(&extra).unwrap_or_default(),
                    tags: Vec::new(),
                    params: Vec::new(),
                    members: Vec::new(),
                    imports: Vec::new(),
                    tests: Vec::new(),
                    cargo: None,
                    uses: Vec::new(),
                    used_by: Vec::new(),
                })
            },
        )
        .optional()
        .map_err(e)?
        .ok_or_else(|| format!("entry `{id}` vanished while reading"))?;
    let strings = |sql: &str| -> Result<Vec<String>, String> {
        let mut stmt = conn.prepare(sql).map_err(e)?;
        let rows = stmt.query_map([&id], |r| r.get(0)).map_err(e)?;
        rows.collect::<rusqlite::Result<_>>().map_err(e)
    };
    shown.tags = strings("SELECT tag FROM tags WHERE entry_id = ?1 ORDER BY tag")?;
    shown.imports = strings("SELECT package FROM imports WHERE entry_id = ?1 ORDER BY package")?;
    shown.tests = strings("SELECT description FROM tests WHERE entry_id = ?1 ORDER BY position")?;
    {
        let mut stmt = conn
            .prepare("SELECT name, desc FROM params WHERE entry_id = ?1 ORDER BY position")
            .map_err(e)?;
        shown.params = stmt
            .query_map([&id], |r| {
                Ok(ParamOut {
                    name: r.get(0)?,
                    desc: r.get(1)?,
                })
            })
            .map_err(e)?
            .collect::<rusqlite::Result<_>>()
            .map_err(e)?;
        let mut stmt = conn
            .prepare(
                "SELECT role, name, type, desc FROM members WHERE entry_id = ?1
                 ORDER BY role, position",
            )
            .map_err(e)?;
        shown.members = stmt
            .query_map([&id], |r| {
                Ok(MemberOut {
                    role: r.get(0)?,
                    name: r.get(1)?,
                    ty: r.get(2)?,
                    desc: r.get(3)?,
                })
            })
            .map_err(e)?
            .collect::<rusqlite::Result<_>>()
            .map_err(e)?;
    }
    if shown.entry.lang == "rust"
        && let Some(k) = &shown.krate
    {
        shown.cargo = Some(cargo_lines(conn, k, &shown.entry.version)?);
    }
    shown.uses = deps(conn, &id, Direction::Uses, false)?;
    shown.used_by = deps(conn, &id, Direction::UsedBy, false)?;
    Ok(shown)
}

/// A crate as `fn show CRATE` prints it when no entry has that name (a crate
/// that only defines types): what it is, the entries it holds, the rest of its
/// public API (functions and re-exports), how to depend on it.
#[derive(Debug, Clone, Serialize)]
pub struct CrateShown {
    /// Always `crate`, to tell this shape from an entry's.
    pub kind: &'static str,
    /// Package name.
    pub name: String,
    /// Version.
    pub version: String,
    /// The Cargo `description`.
    pub description: String,
    /// The crate folder, absolute.
    pub path: String,
    /// The entries whose code is in the crate: functions first, then by name.
    pub entries: Vec<Summary>,
    /// Its public free functions that are not entries, in file order.
    pub functions: Vec<ApiOut>,
    /// Its `pub use` re-exports (of names that are not its entries), in file order.
    pub re_exports: Vec<ApiOut>,
    /// The other crates whose entries use one of these entries, sorted.
    pub used_by: Vec<String>,
    /// Cargo.toml lines to depend on it.
    pub cargo: CargoLines,
}

/// A public function or re-export of a crate that is not an entry.
#[derive(Debug, Clone, Serialize)]
pub struct ApiOut {
    /// The function's name, or the name the re-export brings in (`Message`).
    pub name: String,
    /// One line: `pub fn text(status: http::StatusCode, body: impl Into<Bytes>) -> Response`,
    /// `pub use http`.
    pub signature: String,
    /// The first sentence of its doc comment; empty without one.
    pub doc: String,
}

/// What `fn show` found.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Found {
    /// An entry (by ID, or by name).
    Entry(Box<Shown>),
    /// A crate no entry is named after.
    Crate(Box<CrateShown>),
}

/// `fn show NAME|ID`: the entry of that ID or name, else the crate of that
/// name (every crate under `crates/` is one or the other).
pub fn lookup(conn: &Connection, name_or_id: &str) -> Result<Found, String> {
    let e = |e: rusqlite::Error| e.to_string();
    let named = |sql: &str| -> Result<bool, String> {
        conn.query_row(sql, [name_or_id], |_| Ok(()))
            .optional()
            .map(|r| r.is_some())
            .map_err(e)
    };
    let is_entry = named("SELECT 1 FROM entries WHERE id = ?1 OR name = ?1 LIMIT 1")?;
    if !is_entry && named("SELECT 1 FROM crates WHERE name = ?1")? {
        return show_crate(conn, name_or_id).map(|c| Found::Crate(Box::new(c)));
    }
    show(conn, name_or_id).map(|s| Found::Entry(Box::new(s)))
}

/// The crate view of crate `name`.
pub fn show_crate(conn: &Connection, name: &str) -> Result<CrateShown, String> {
    let e = |e: rusqlite::Error| e.to_string();
    let (version, description, rel): (String, String, String) = conn
        .query_row(
            "SELECT version, description, path FROM crates WHERE name = ?1",
            [name],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()
        .map_err(e)?
        .ok_or_else(|| format!("no crate named `{name}`"))?;
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {SUMMARY_COLUMNS} FROM entries e WHERE e.crate = ?1
             ORDER BY e.kind <> 'function', e.name, e.id"
        ))
        .map_err(e)?;
    let entries = stmt
        .query_map([name], Summary::from_row)
        .map_err(e)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(e)?;
    let api = |kind: &str| -> Result<Vec<ApiOut>, String> {
        let mut stmt = conn
            .prepare(
                "SELECT name, signature, doc FROM crate_api WHERE crate = ?1 AND kind = ?2
                 ORDER BY position",
            )
            .map_err(e)?;
        stmt.query_map([name, kind], |r| {
            Ok(ApiOut {
                name: r.get(0)?,
                signature: r.get(1)?,
                doc: r.get(2)?,
            })
        })
        .map_err(e)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(e)
    };
    let functions = api("function")?;
    let re_exports = api("re-export")?;
    let mut stmt = conn
        .prepare(
            "SELECT DISTINCT f.crate FROM refs r
             JOIN entries t ON t.id = r.to_id
             JOIN entries f ON f.id = r.from_id
             WHERE t.crate = ?1 AND f.crate IS NOT NULL AND f.crate <> ?1
             ORDER BY f.crate",
        )
        .map_err(e)?;
    let used_by = stmt
        .query_map([name], |r| r.get(0))
        .map_err(e)?
        .collect::<rusqlite::Result<Vec<String>>>()
        .map_err(e)?;
    let cargo = cargo_lines(conn, name, &version)?;
    let root: String = conn
        .query_row("SELECT value FROM meta WHERE key = 'root'", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(e)?
        .unwrap_or_default();
    Ok(CrateShown {
        kind: "crate",
        name: name.to_string(),
        path: Path::new(&root).join(rel).to_string_lossy().into_owned(),
        version,
        description,
        entries,
        functions,
        re_exports,
        used_by,
        cargo,
    })
}

/// Which way to walk the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// What the entry uses.
    Uses,
    /// What uses the entry.
    UsedBy,
}

/// The entry's dependencies (or dependents), direct or transitive, nearest first.
pub fn deps(
    conn: &Connection,
    id: &str,
    dir: Direction,
    transitive: bool,
) -> Result<Vec<Edge>, String> {
    let (from, to) = match dir {
        Direction::Uses => ("from_id", "to_id"),
        Direction::UsedBy => ("to_id", "from_id"),
    };
    // Breadth first, each entry expanded once, at its shortest distance: an
    // edge (entry, rel) is kept at the depth it is first reached. Entries a
    // reference names but the database lacks are left out.
    let sql = format!(
        "SELECT r.{to}, r.rel, e.kind FROM refs r JOIN entries e ON e.id = r.{to}
         WHERE r.{from} = ?1"
    );
    let mut stmt = conn.prepare(&sql).map_err(|e| e.to_string())?;
    let mut expanded: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut seen: std::collections::HashSet<(String, String)> = std::collections::HashSet::new();
    expanded.insert(id.to_string());
    let mut frontier = vec![id.to_string()];
    let mut edges = Vec::new();
    let mut depth = 0u32;
    while !frontier.is_empty() && (transitive || depth == 0) {
        depth += 1;
        let mut next = Vec::new();
        for node in &frontier {
            let mut rows = stmt.query([node]).map_err(|e| e.to_string())?;
            while let Some(r) = rows.next().map_err(|e| e.to_string())? {
                let other: String = r.get(0).map_err(|e| e.to_string())?;
                let rel: String = r.get(1).map_err(|e| e.to_string())?;
                if other == id || !seen.insert((other.clone(), rel.clone())) {
                    continue;
                }
                if expanded.insert(other.clone()) {
                    next.push(other.clone());
                }
                edges.push(Edge {
                    id: other,
                    kind: r.get(2).map_err(|e| e.to_string())?,
                    rel,
                    depth,
                });
            }
        }
        frontier = next;
    }
    edges.sort_by(|a, b| (a.depth, &a.id, &a.rel).cmp(&(b.depth, &b.id, &b.rel)));
    Ok(edges)
}

#[cfg(test)]
mod tests {
    use super::{Prefix, fts_expression};

    #[test]
    fn punctuation_becomes_phrases() {
        let both = |p: &str| format!("(\"{p}\" OR \"{p}\"*)");
        let all = |q: &str| fts_expression(q, "AND", Prefix::All).unwrap();
        assert_eq!(all("ws_send"), both("ws send"));
        assert_eq!(all("web-socket"), both("web socket"));
        assert_eq!(all("\"unbalanced"), both("unbalanced"));
        assert_eq!(
            fts_expression("room  emit", "OR", Prefix::All).unwrap(),
            format!("{} OR {}", both("room"), both("emit"))
        );
        assert_eq!(
            fts_expression("NEAR( AND", "AND", Prefix::Last).unwrap(),
            format!("\"near\" AND {}", both("and"))
        );
        assert_eq!(fts_expression("-- \"\" *", "AND", Prefix::All), None);
    }
}
