//! The function registry: parse entries, check them against the code, index them into SQLite, query the index.
//!
//! This is the library behind the `fn` command. A registry root holds
//! `crates/<name>/<name>.md` (function entries, one per crate) and
//! `types/<domain>/<TypeName>.md` (type entries); `registry/README.md`
//! describes the entry format and the database.
//!
//! # Example
//!
//! ```no_run
//! use std::path::Path;
//!
//! let reg = fn_tool::Registry::load(Path::new("."))?;
//! let mut problems = reg.problems.clone();
//! problems.extend(fn_tool::code::check(&reg));
//! for p in &problems {
//!     println!("{p}"); // path:line: message
//! }
//! if problems.is_empty() {
//!     fn_tool::index::index(Path::new("."), Path::new("registry/registry.db")).ok();
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

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
