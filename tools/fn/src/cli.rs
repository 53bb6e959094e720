//! The subcommands, one module each, and what they share: the `--root` and
//! `--db` arguments, finding the registry root, printing problems and JSON.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use fn_tool::{Problem, Registry};

use crate::Failure;

mod check;
mod deps;
mod index;
mod map;
mod mcp;
mod new;
mod search;
mod serve;
mod show;

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Parse every entry under crates/ and types/ and write registry.db (atomically).
    ///
    /// Refuses on any problem, leaving the old registry.db; in a Cargo workspace
    /// (a root with Cargo.toml) that is every problem `fn check` reports but the crate map.
    Index(index::IndexArgs),
    /// Ranked full-text search over names, descriptions, tags, signatures and bodies.
    Search(search::SearchArgs),
    /// One entry: its fields, direct dependencies and dependents, how to depend on it, its example;
    /// or a crate no entry is named after: its entries, its other public functions and
    /// re-exports, and how to depend on it.
    Show(show::ShowArgs),
    /// The composition graph: what an entry uses, or (--reverse) what uses it.
    Deps(deps::DepsArgs),
    /// Validate every entry and that its metadata is true to the code; exit 1 on any problem.
    Check(check::CheckArgs),
    /// Serve the registry to coding agents over the Model Context Protocol, on stdio.
    ///
    /// Tools: search, show, deps, check, compose (answers as with --json);
    /// resources: every entry's Markdown as fn://NAME. Ends when stdin closes.
    Mcp(mcp::McpArgs),
    /// Print the crate map of README.md, or (--write) update it there.
    Map(map::MapArgs),
    /// Scaffold crates/NAME/ with an entry that passes `fn check` as created.
    New(new::NewArgs),
    /// Serve the registry as a small read-only web app: search, entry pages, the graph, a JSON API.
    ///
    /// Indexes ROOT first (as `fn index`), then re-indexes when an entry file changes
    /// and tells open pages over Server-Sent Events. Prints the address on the first line.
    Serve(serve::ServeArgs),
}

impl Command {
    /// Runs the subcommand.
    pub(crate) fn run(self) -> Result<(), Failure> {
        match self {
            Command::Index(a) => a.run(),
            Command::Search(a) => a.run(),
            Command::Show(a) => a.run(),
            Command::Deps(a) => a.run(),
            Command::Check(a) => a.run(),
            Command::Mcp(a) => a.run(),
            Command::Map(a) => a.run(),
            Command::New(a) => a.run(),
            Command::Serve(a) => a.run(),
        }
    }
}

#[derive(Debug, Args)]
struct RootArg {
    /// Registry root [default: the nearest folder upwards with registry/schema.sql, else .].
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
}

impl RootArg {
    /// The root given, else the nearest folder upwards with
    /// `registry/schema.sql`, else the current folder.
    fn find(self) -> PathBuf {
        find_root(self.root)
    }
}

#[derive(Debug, Args)]
struct ReadArgs {
    /// Database to read [default: ROOT/registry/registry.db].
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
    /// Print JSON (a stable shape, see registry/README.md).
    #[arg(long)]
    json: bool,
}

impl ReadArgs {
    /// The database of the registry found from the current folder.
    fn open(&self) -> Result<rusqlite::Connection, Failure> {
        Ok(fn_tool::query::open(&db_path(
            self.db.clone(),
            &find_root(None),
        ))?)
    }
}

fn find_root(arg: Option<PathBuf>) -> PathBuf {
    if let Some(r) = arg {
        return r;
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    cwd.ancestors()
        .find(|d| d.join("registry/schema.sql").is_file())
        .map_or(cwd.clone(), Path::to_path_buf)
}

fn db_path(db: Option<PathBuf>, root: &Path) -> PathBuf {
    db.unwrap_or_else(|| root.join("registry").join("registry.db"))
}

fn print_json(v: &impl serde::Serialize) -> Result<(), Failure> {
    let s = serde_json::to_string_pretty(v).map_err(|e| e.to_string())?;
    say!("{s}");
    Ok(())
}

fn load(root: &Path) -> Result<Registry, Failure> {
    Registry::load(root).map_err(|e| Failure(e.to_string(), 2))
}

fn print_problems(problems: &[Problem]) {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for p in problems {
        if let Err(e) = writeln!(out, "{p}") {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                // Problems were found even if nobody reads them all.
                std::process::exit(1);
            }
            crate::stdout_failed(&e);
        }
    }
}

/// The spelling of a value on the command line (and in the registry).
fn value_name(v: impl ValueEnum) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn print_cargo(c: &fn_tool::query::CargoLines) {
    say!("\ndepend on it (Cargo.toml [dependencies], one of):");
    say!("  {}    # in this workspace", c.workspace);
    say!("  {}    # this checkout, from any project", c.path);
    if let Some(git) = &c.git {
        say!("  {git}    # the repository");
    }
    say!("  {}    # crates.io", c.version);
}
