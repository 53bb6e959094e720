//! The function registry: parse entries, check them against the code, index them into SQLite, query the index.
//!
//! This is the library behind the `fn` command. A registry root holds
//! `crates/<name>/<name>.md` (function entries, one per crate) and
//! `types/<domain>/<TypeName>.md` (type entries); `registry/README.md`
//! describes the entry format and the database.
//!
//! - [`entry`] parses one entry (its example as rustdoc shows it, hidden
//!   `# ` lines left out); [`registry`] loads them all and checks them
//!   against each other;
//! - [`code`] holds the entries to the crates: manifests, signatures, the
//!   test functions each `tests:` line names, the example includes of
//!   `RegistryExamples`;
//! - [`check`] is the one place that composes the checks: `fn check`,
//!   `fn mcp`, `fn index` and `fn serve` all go through it;
//! - [`index`] writes `registry.db` (in full, or what changed), [`query`]
//!   reads it, [`serve`] and [`mcp`] serve it.
//!
//! # Example
//!
//! ```no_run
//! use std::path::Path;
//!
//! let checked = fn_tool::check::check(Path::new("."))?;
//! for p in &checked.problems {
//!     println!("{p}"); // path:line: message
//! }
//! if checked.problems.is_empty() {
//!     fn_tool::index::index(Path::new("."), Path::new("registry/registry.db")).ok();
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod check;
pub mod code;
pub mod entry;
pub mod index;
pub mod json;
pub mod mcp;
pub mod problem;
pub mod query;
pub mod readme;
pub mod registry;
pub mod scaffold;
pub mod serve;

pub use entry::Entry;
pub use problem::Problem;
pub use registry::Registry;
