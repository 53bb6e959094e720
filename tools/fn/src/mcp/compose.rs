//! `compose`: the crates a set of functions pulls in, with the lines to depend on them.
//!
//! Crate A uses crate B when an entry of A uses an entry of B (`fn check` holds
//! that equal to the Cargo dependencies), so the closure and its order come from
//! the index alone.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;

use crate::query::{self, CargoLines, Found};

/// The answer of `compose`.
#[derive(Debug, Clone, Serialize)]
pub struct Composed {
    /// The names asked for, in the order given (repeats dropped), each with
    /// its crate and that crate's `Cargo.toml` lines.
    pub requested: Vec<Requested>,
    /// Every registry crate the requested ones pull in, themselves included,
    /// each once, every crate after the crates it uses (ties by name).
    pub crates: Vec<ComposedCrate>,
}

/// One name `compose` was given.
#[derive(Debug, Clone, Serialize)]
pub struct Requested {
    /// The name as given.
    pub name: String,
    /// The entry's ID; `None` when the name is a crate's.
    pub id: Option<String>,
    /// The crate that holds it.
    #[serde(rename = "crate")]
    pub krate: String,
    /// How to depend on that crate.
    pub cargo: CargoLines,
}

/// One crate of a composition.
#[derive(Debug, Clone, Serialize)]
pub struct ComposedCrate {
    /// Package name.
    pub name: String,
    /// Version (empty when the index has no `Cargo.toml` for it).
    pub version: String,
    /// The Cargo `description`.
    pub description: String,
    /// Whether a requested name is in it (else it comes in as a dependency).
    pub requested: bool,
    /// The registry crates it uses directly, sorted.
    pub uses: Vec<String>,
}

/// The crates `names` (entries or crates) need, with the lines to depend on them.
///
/// # Errors
///
/// Names no entry or crate has (all of them, each with `fn show`'s hint), or
/// an entry without a crate (another language's).
pub fn compose(conn: &Connection, names: &[String]) -> Result<Composed, String> {
    if names.is_empty() {
        return Err("`names` is empty: give the functions the app uses".to_string());
    }
    let mut requested: Vec<Requested> = Vec::new();
    let mut unknown: Vec<(&str, String)> = Vec::new();
    for name in names {
        if requested.iter().any(|r| &r.name == name) {
            continue;
        }
        match query::lookup(conn, name) {
            Ok(Found::Entry(s)) => match (s.krate.clone(), s.cargo.clone()) {
                (Some(krate), Some(cargo)) => requested.push(Requested {
                    name: name.clone(),
                    id: Some(s.entry.id.clone()),
                    krate,
                    cargo,
                }),
                _ => unknown.push((
                    name,
                    format!(
                        "`{}` is a {} entry with no crate to depend on",
                        s.entry.id, s.entry.lang
                    ),
                )),
            },
            Ok(Found::Crate(c)) => requested.push(Requested {
                name: name.clone(),
                id: None,
                krate: c.name.clone(),
                cargo: c.cargo.clone(),
            }),
            Err(message) => unknown.push((name, message)),
        }
    }
    if !unknown.is_empty() {
        let list: Vec<&str> = unknown.iter().map(|(n, _)| *n).collect();
        let details: Vec<String> = unknown.iter().map(|(_, m)| format!("- {m}")).collect();
        return Err(format!(
            "cannot compose: unknown {}\n{}",
            list.join(", "),
            details.join("\n")
        ));
    }
    let graph = crate_graph(conn)?;
    // Everything reachable from the requested crates.
    let mut needed: BTreeSet<String> = BTreeSet::new();
    let mut stack: Vec<String> = requested.iter().map(|r| r.krate.clone()).collect();
    while let Some(c) = stack.pop() {
        if needed.insert(c.clone()) {
            stack.extend(graph.get(&c).into_iter().flatten().cloned());
        }
    }
    let wanted: BTreeSet<&str> = requested.iter().map(|r| r.krate.as_str()).collect();
    let mut crates = Vec::with_capacity(needed.len());
    let mut done: BTreeSet<String> = BTreeSet::new();
    while done.len() < needed.len() {
        let uses = |c: &String| graph.get(c).cloned().unwrap_or_default();
        // The first (by name) crate whose dependencies are all placed; a
        // cycle (only in a hand-edited database) takes the first left.
        let next = needed
            .iter()
            .filter(|c| !done.contains(*c))
            .find(|c| uses(c).iter().all(|d| done.contains(d)))
            .or_else(|| needed.iter().find(|c| !done.contains(*c)))
            .cloned()
            .expect("a crate is left while done < needed");
        let (version, description) = crate_row(conn, &next)?;
        crates.push(ComposedCrate {
            requested: wanted.contains(next.as_str()),
            uses: uses(&next).into_iter().collect(),
            name: next.clone(),
            version,
            description,
        });
        done.insert(next);
    }
    Ok(Composed { requested, crates })
}

/// Crate to the registry crates it uses: an entry of one uses an entry of the other.
fn crate_graph(conn: &Connection) -> Result<BTreeMap<String, BTreeSet<String>>, String> {
    let e = |e: rusqlite::Error| e.to_string();
    let mut stmt = conn
        .prepare(
            "SELECT DISTINCT f.crate, t.crate FROM refs r
             JOIN entries f ON f.id = r.from_id
             JOIN entries t ON t.id = r.to_id
             WHERE f.crate IS NOT NULL AND t.crate IS NOT NULL AND f.crate <> t.crate",
        )
        .map_err(e)?;
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .map_err(e)?;
    for row in rows {
        let (from, to) = row.map_err(e)?;
        graph.entry(from).or_default().insert(to);
    }
    Ok(graph)
}

/// A crate's version and description, empty when the index has no row for it.
fn crate_row(conn: &Connection, name: &str) -> Result<(String, String), String> {
    conn.query_row(
        "SELECT version, description FROM crates WHERE name = ?1",
        [name],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
    .map(Option::unwrap_or_default)
    .map_err(|e| e.to_string())
}
