//! What "checked" means: the one place that composes the checks of the registry.
//!
//! A registry is checked when
//!
//! - every entry parses and is valid on its own and against the others
//!   ([`Registry::load`]: fields, names, references, cycles);
//! - its metadata is true to the code ([`code`]: manifests, signatures,
//!   `tests:` names, example includes, ...);
//! - the crate map of `README.md` is what `fn map` renders ([`readme`]).
//!
//! `fn check`, `fn mcp` (tool `check`) and the tests call [`check`]; `fn index`
//! and `fn serve` call [`registry`] with [`Scope::Index`], which leaves out the
//! crate map (a stale map is no reason to refuse an index).
//!
//! # Example
//!
//! ```no_run
//! let checked = fn_tool::check::check(std::path::Path::new("."))?;
//! for p in &checked.problems {
//!     println!("{p}"); // path:line: message
//! }
//! println!("{} entries, {} problems", checked.entries, checked.problems.len());
//! # Ok::<(), String>(())
//! ```

use std::path::Path;

use serde_json::{Value, json};

use crate::problem::display_path;
use crate::{Problem, Registry, code, readme};

/// Which checks [`registry`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything `fn check` reports: the entries, their code, the crate map.
    Everything,
    /// What `fn index` refuses on: everything but the crate map, and the
    /// code checks only in a Cargo workspace (a root with `Cargo.toml`); a
    /// root of entries alone has no code to hold them to.
    Index,
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

/// Loads the registry at `root` and runs every check ([`Scope::Everything`]).
///
/// # Errors
///
/// When the root is not a folder or cannot be read.
pub fn check(root: &Path) -> Result<Checked, String> {
    let reg = Registry::load(root).map_err(|e| e.to_string())?;
    let found = registry(&reg, Scope::Everything);
    Ok(Checked {
        entries: reg.entries.len(),
        problems: found.problems,
    })
}

/// Runs the checks of `scope` on a loaded registry. The answer's `problems`
/// are all of them, the registry's own ([`Registry::problems`]) included,
/// sorted and without repeats; with [`Scope::Index`] it also holds what the
/// index stores from the same pass over the code (the crates, their API, the
/// files read).
pub fn registry(reg: &Registry, scope: Scope) -> code::Checked {
    let mut found = match scope {
        Scope::Everything => code::Checked {
            problems: code::check(reg),
            ..code::Checked::default()
        },
        Scope::Index if reg.root.join("Cargo.toml").is_file() => code::check_all(reg),
        Scope::Index => {
            let (crates, repository) = code::crates(&reg.root);
            let apis = code::api(reg, crates.iter().map(|c| c.name.as_str()));
            code::Checked {
                apis,
                crates,
                repository,
                ..code::Checked::default()
            }
        }
    };
    found.problems.extend(reg.problems.iter().cloned());
    if scope == Scope::Everything {
        found.problems.extend(readme::check(reg));
    }
    found.problems.sort();
    found.problems.dedup();
    found
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
