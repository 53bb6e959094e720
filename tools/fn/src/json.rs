//! The `--json` answer of `fn deps`, built once for every front end.
//!
//! `fn search` and `fn show` answer with the [`query`](crate::query) result types,
//! which serialize to their JSON shape by themselves, and `fn check` with
//! [`Checked::to_json`](crate::check::Checked::to_json). The answer here is
//! assembled from parts, so the CLI (`--json`), `fn mcp` and any other server call
//! this function and print or send the same value. The shapes are documented in
//! `registry/README.md`.

use serde_json::{Value, json};

use crate::query::{Direction, Edge};

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
