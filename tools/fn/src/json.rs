//! The `--json` answers of `fn deps` and `fn check`, built once for every front end.
//!
//! `fn search` and `fn show` answer with the [`query`](crate::query) result types,
//! which serialize to their JSON shape by themselves. The two answers here are
//! assembled from parts, so the CLI (`--json`), `fn mcp` and any other server call
//! these functions and print or send the same value. The shapes are documented in
//! `registry/README.md`.

use std::path::Path;

use serde_json::{Value, json};

use crate::problem::display_path;
use crate::query::{Direction, Edge};
use crate::{Problem, Registry, code, readme};

/// The `fn deps --json` answer: `{"id", "direction", "transitive", "deps"}`,
/// `direction` being `uses` or `used_by`.
pub fn deps(id: &str, dir: Direction, transitive: bool, edges: &[Edge]) -> Value {
    json!({
        "id": id,
        "direction": match dir {
            Direction::Uses => "uses",
            Direction::UsedBy => "used_by",
        },
        "transitive": transitive,
        "deps": edges,
    })
}

/// What `fn check` found in a registry root.
#[derive(Debug, Clone)]
pub struct Checked {
    /// How many entries were read.
    pub entries: usize,
    /// Every problem: the entries', their code's and the README crate map's,
    /// sorted and without repeats. Empty when the registry is sound.
    pub problems: Vec<Problem>,
}

/// Runs every check `fn check` runs on the registry at `root`: the entries,
/// the metadata against the code, the README crate map.
///
/// # Errors
///
/// When the root is not a folder or cannot be read.
pub fn check(root: &Path) -> Result<Checked, String> {
    let reg = Registry::load(root).map_err(|e| e.to_string())?;
    let mut problems = reg.problems.clone();
    problems.extend(code::check(&reg));
    problems.extend(readme::check(&reg));
    problems.sort();
    problems.dedup();
    Ok(Checked {
        entries: reg.entries.len(),
        problems,
    })
}

impl Checked {
    /// The `fn check --json` answer: `{"entries": N, "problems": [{"path", "line", "message"}]}`.
    pub fn to_json(&self) -> Value {
        let list: Vec<Value> = self
            .problems
            .iter()
            .map(|p| {
                json!({
                    "path": display_path(&p.path),
                    "line": p.line,
                    "message": p.message,
                })
            })
            .collect();
        json!({
            "entries": self.entries,
            "problems": list,
        })
    }
}
