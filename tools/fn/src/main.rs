//! `fn`: index, search, show, check and scaffold the function registry.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand, ValueEnum};
use fn_tool::problem::display_path;
use fn_tool::query::{self, Direction, Filters, Syntax};
use fn_tool::{Problem, Registry, index, json, readme, scaffold};

/// `fn index` allocates and frees millions of small values on every core.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `println!` that ends the process quietly when stdout is closed
/// (`fn show x | head`) instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            stdout_failed(&e);
        }
    };
}

/// `print!` with the same handling as [`say!`].
macro_rules! say_raw {
    ($($arg:tt)*) => {
        if let Err(e) = write!(std::io::stdout(), $($arg)*) {
            stdout_failed(&e);
        }
    };
}

/// A closed pipe means the reader has what it wanted: exit 0. Any other
/// write error is reported, exit 2.
fn stdout_failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("fn: cannot write to stdout: {e}");
    std::process::exit(2);
}

/// The function registry: every reusable function is a crate with a `<name>.md` entry.
#[derive(Debug, Parser)]
#[command(name = "fn", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Parse every entry under crates/ and types/ and write registry.db (atomically).
    ///
    /// Refuses on any problem, leaving the old registry.db; in a Cargo workspace
    /// (a root with Cargo.toml) that is every problem `fn check` reports but the crate map.
    Index {
        #[command(flatten)]
        root: RootArg,
        /// Database to write [default: ROOT/registry/registry.db].
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
    },
    /// Ranked full-text search over names, descriptions, tags, signatures and bodies.
    Search {
        /// Words to look for; punctuation splits words, so `ws_send` and `web-socket` work.
        #[arg(required = true, num_args = 1..)]
        query: Vec<String>,
        /// Only entries of this kind.
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
        /// Only entries of this language (`rust`, `go`, ...).
        #[arg(long)]
        lang: Option<String>,
        /// Only entries of this domain.
        #[arg(long)]
        domain: Option<String>,
        /// Only entries with this tag (repeat for several; all must match).
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        /// Only pure or impure entries.
        #[arg(long, value_enum)]
        purity: Option<PurityArg>,
        /// Only entries that have tests.
        #[arg(long)]
        tested: bool,
        /// How many results at most.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Treat QUERY as an FTS5 expression (AND, OR, NOT, NEAR, "phrases", prefix*).
        #[arg(long)]
        fts: bool,
        #[command(flatten)]
        out: ReadArgs,
    },
    /// One entry: its fields, direct dependencies and dependents, how to depend on it, its example;
    /// or a crate no entry is named after: its entries, its other public functions and
    /// re-exports, and how to depend on it.
    Show {
        /// Entry name or ID (`ws_send` or `ws_send_rust_infra`), or crate name (`http_types`).
        name: String,
        #[command(flatten)]
        out: ReadArgs,
    },
    /// The composition graph: what an entry uses, or (--reverse) what uses it.
    Deps {
        /// Entry name or ID.
        name: String,
        /// What depends on NAME instead of what NAME depends on.
        #[arg(long)]
        reverse: bool,
        /// Follow the graph all the way, not only direct edges.
        #[arg(long)]
        transitive: bool,
        #[command(flatten)]
        out: ReadArgs,
    },
    /// Validate every entry and that its metadata is true to the code; exit 1 on any problem.
    Check {
        #[command(flatten)]
        root: RootArg,
        /// Print the problems as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Serve the registry to coding agents over the Model Context Protocol, on stdio.
    ///
    /// Tools: search, show, deps, check, compose (answers as with --json);
    /// resources: every entry's Markdown as fn://NAME. Ends when stdin closes.
    Mcp {
        #[command(flatten)]
        root: RootArg,
        /// Database to read [default: ROOT/registry/registry.db].
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
    },
    /// Print the crate map of README.md, or (--write) update it there.
    Map {
        #[command(flatten)]
        root: RootArg,
        /// Rewrite the map between the markers in ROOT/README.md.
        #[arg(long)]
        write: bool,
    },
    /// Scaffold crates/NAME/ with an entry that passes `fn check` as created.
    New {
        /// snake_case name: folder, package and registry name at once.
        name: String,
        /// The entry's domain (`infra`, `core`, ...).
        #[arg(long)]
        domain: String,
        #[command(flatten)]
        root: RootArg,
    },
    /// Serve the registry as a small read-only web app: search, entry pages, the graph, a JSON API.
    ///
    /// Indexes ROOT first (as `fn index`), then re-indexes when an entry file changes
    /// and tells open pages over Server-Sent Events. Prints the address on the first line.
    Serve {
        /// Address to listen on (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:7070")]
        addr: std::net::SocketAddr,
        #[command(flatten)]
        root: RootArg,
        /// Database to write and read [default: ROOT/registry/registry.db].
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct RootArg {
    /// Registry root [default: the nearest folder upwards with registry/schema.sql, else .].
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
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

#[derive(Debug, Clone, Copy, ValueEnum)]
enum KindArg {
    Function,
    Type,
    Component,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PurityArg {
    Pure,
    Impure,
}

/// A failure: the message, and the exit code (1 problems found, 2 cannot run).
struct Failure(String, u8);

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure(s, 2)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(msg, code)) => {
            if !msg.is_empty() {
                eprintln!("fn: {msg}");
            }
            ExitCode::from(code)
        }
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
            stdout_failed(&e);
        }
    }
}

fn run(cmd: Command) -> Result<(), Failure> {
    match cmd {
        Command::Index { root, db } => {
            let started = Instant::now();
            let root = find_root(root.root);
            let db = db_path(db, &root);
            let done = match index::update(&root, &db) {
                Ok(done) => done,
                Err(index::IndexError::Problems(reg)) => {
                    print_problems(&reg.problems);
                    return Err(Failure(
                        format!(
                            "{} problem(s); index not written, {} left as it was",
                            reg.problems.len(),
                            db.display()
                        ),
                        1,
                    ));
                }
                Err(index::IndexError::Failed(e)) => return Err(Failure(e, 2)),
            };
            say!(
                "indexed {} ({}, {}, {}) from {} into {} in {} ms",
                plural(done.entries, "entry", "entries"),
                plural(done.counts.functions, "function", "functions"),
                plural(done.counts.types, "type", "types"),
                plural(done.counts.refs, "reference", "references"),
                root.display(),
                db.display(),
                started.elapsed().as_millis()
            );
            Ok(())
        }
        Command::Search {
            query,
            kind,
            lang,
            domain,
            tags,
            purity,
            tested,
            limit,
            fts,
            out,
        } => {
            let conn = query::open(&db_path(out.db, &find_root(None)))?;
            let filters = Filters {
                kind: kind.map(value_name),
                lang,
                domain,
                tags,
                purity: purity.map(value_name),
                tested,
            };
            let syntax = if fts { Syntax::Fts5 } else { Syntax::Words };
            let q = query.join(" ");
            let res = query::search(&conn, &q, syntax, &filters, limit)?;
            if out.json {
                return print_json(&res);
            }
            if res.results.is_empty() {
                eprintln!("no entry matches {q:?}");
                return Ok(());
            }
            if res.matched == "any" {
                eprintln!("(no entry matches every word; showing entries that match some)");
            }
            let stdout = std::io::stdout();
            let mut w = stdout.lock();
            for h in &res.results {
                let e = &h.entry;
                let tested = if e.tested { "tested" } else { "untested" };
                if let Err(e) = writeln!(w, "{}  [{} {} {}]", e.id, e.kind, e.purity, tested) {
                    stdout_failed(&e);
                }
                if let Err(e) = writeln!(w, "    {}", e.signature) {
                    stdout_failed(&e);
                }
                if let Err(e) = writeln!(w, "    {}", e.description) {
                    stdout_failed(&e);
                }
            }
            Ok(())
        }
        Command::Show { name, out } => {
            let conn = query::open(&db_path(out.db, &find_root(None)))?;
            let found = query::lookup(&conn, &name)?;
            if out.json {
                return print_json(&found);
            }
            match &found {
                query::Found::Entry(s) => print_shown(s),
                query::Found::Crate(c) => print_crate(c),
            }
            Ok(())
        }
        Command::Deps {
            name,
            reverse,
            transitive,
            out,
        } => {
            let conn = query::open(&db_path(out.db, &find_root(None)))?;
            let id = query::resolve(&conn, &name)?;
            let dir = if reverse {
                Direction::UsedBy
            } else {
                Direction::Uses
            };
            let edges = query::deps(&conn, &id, dir, transitive)?;
            if out.json {
                return print_json(&json::deps(&id, dir, transitive, &edges));
            }
            let what = if reverse { "is used by" } else { "uses" };
            let how = if transitive {
                "transitively"
            } else {
                "directly"
            };
            if edges.is_empty() {
                say!("{id} {what} nothing ({how})");
            } else {
                say!("{id} {what} ({how}):");
                for e in &edges {
                    let indent = "  ".repeat(e.depth as usize);
                    say!("{indent}{}  [{} via {}]", e.id, e.kind, e.rel);
                }
            }
            Ok(())
        }
        Command::Check { root, json } => {
            let root = find_root(root.root);
            let checked = fn_tool::json::check(&root)?;
            let (problems, entries) = (&checked.problems, checked.entries);
            if json {
                print_json(&checked.to_json())?;
            } else {
                print_problems(problems);
            }
            if problems.is_empty() {
                if !json {
                    say!("checked {entries} entries: no problems");
                }
                Ok(())
            } else {
                Err(Failure(
                    format!("{} problem(s) in {entries} entries", problems.len()),
                    1,
                ))
            }
        }
        Command::Mcp { root, db } => {
            let root = find_root(root.root);
            let db = db_path(db, &root);
            fn_tool::mcp::serve_stdio(root, db).map_err(Failure::from)
        }
        Command::Map { root, write } => {
            let root = find_root(root.root);
            let reg = load(&root)?;
            if write {
                if readme::write(&reg, &root)? {
                    say!(
                        "updated the crate map in {}",
                        root.join("README.md").display()
                    );
                } else {
                    return Err(Failure(
                        format!(
                            "{} has no crate map markers; add the lines\n{}\n{}",
                            root.join("README.md").display(),
                            readme::START,
                            readme::END
                        ),
                        2,
                    ));
                }
            } else {
                say_raw!("{}", readme::render(&reg));
            }
            Ok(())
        }
        Command::Serve { addr, root, db } => {
            let root = find_root(root.root);
            let db = db_path(db, &root);
            let opts = fn_tool::serve::ServeOptions {
                addr,
                ..fn_tool::serve::ServeOptions::new(root, db)
            };
            fn_tool::serve::serve(opts).map_err(|e| Failure(e, 2))
        }
        Command::New { name, domain, root } => {
            let root = find_root(root.root);
            let created = scaffold::new_crate(&root, &name, &domain)?;
            for f in &created.files {
                say!("created {}", display_path(f));
            }
            if created.workspace_updated {
                say!("added `{name}` to [workspace.dependencies] in Cargo.toml");
            }
            let reg = load(&root)?;
            if readme::write(&reg, &root)? {
                say!("updated the crate map in README.md");
            }
            say!(
                "next: write the function, then update crates/{name}/{name}.md and run `cargo fn check`"
            );
            Ok(())
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

fn print_shown(s: &query::Shown) {
    let e = &s.entry;
    let tested = if e.tested { "tested" } else { "untested" };
    say!(
        "{}  ({} {} {}, v{}, {}, {})",
        e.id,
        e.lang,
        e.kind,
        e.domain,
        e.version,
        e.purity,
        tested
    );
    say!();
    say!("    {}", e.signature);
    say!();
    say!("{}", e.description);
    if !s.params.is_empty() {
        say!("\nparams:");
        for p in &s.params {
            say!("  {}: {}", p.name, p.desc);
        }
    }
    if !s.members.is_empty() {
        say!("\nmembers:");
        for m in &s.members {
            let ty = if m.ty.is_empty() {
                String::new()
            } else {
                format!(": {}", m.ty)
            };
            say!("  {} {}{ty}  {}", m.role, m.name, m.desc);
        }
    }
    if !s.output.is_empty() {
        say!("\noutput: {}", s.output);
    }
    if let Some(e) = &s.error_type {
        say!("error type: {e}");
    }
    if !s.imports.is_empty() {
        say!("imports: {}", s.imports.join(", "));
    }
    let edges = |title: &str, list: &[query::Edge]| {
        if list.is_empty() {
            say!("\n{title}: nothing");
        } else {
            say!("\n{title}:");
            for e in list {
                say!("  {}  [{} via {}]", e.id, e.kind, e.rel);
            }
        }
    };
    edges("uses", &s.uses);
    edges("used by", &s.used_by);
    if let Some(c) = &s.cargo {
        print_cargo(c);
    }
    say!("\nfile: {}", s.file_path);
    say!("entry: {}", s.entry_path);
    if !s.tests.is_empty() {
        say!(
            "tests ({}, in {}):",
            s.tests.len(),
            s.test_file_path.as_deref().unwrap_or("?")
        );
        for t in &s.tests {
            say!("  - {t}");
        }
    }
    if !s.example.is_empty() {
        say!("\n## Example\n\n{}", s.example);
    }
}

fn print_cargo(c: &query::CargoLines) {
    say!("\ndepend on it (Cargo.toml [dependencies], one of):");
    say!("  {}    # in this workspace", c.workspace);
    say!("  {}    # this checkout, from any project", c.path);
    if let Some(git) = &c.git {
        say!("  {git}    # the repository");
    }
    say!("  {}    # crates.io", c.version);
}

fn print_crate(c: &query::CrateShown) {
    say!("crate {}  (v{}, {})", c.name, c.version, c.path);
    say!();
    say!("{}", c.description);
    if c.entries.is_empty() {
        say!("\nentries: none");
    } else {
        say!("\nentries (`fn show NAME` for one):");
        for e in &c.entries {
            say!("  {}  [{}]  {}", e.id, e.kind, e.description);
        }
    }
    let api = |title: &str, list: &[query::ApiOut]| {
        if list.is_empty() {
            return;
        }
        say!("\n{title}:");
        for f in list {
            // A name with a path is in an inline `pub mod`.
            match f.name.rsplit_once("::") {
                Some((module, _)) => say!("  {}  (in mod {module})", f.signature),
                None => say!("  {}", f.signature),
            }
            if !f.doc.is_empty() {
                say!("      {}", f.doc);
            }
        }
    };
    api("functions", &c.functions);
    api("re-exports", &c.re_exports);
    if c.used_by.is_empty() {
        say!("\nused by: nothing");
    } else {
        say!("\nused by (crates): {}", c.used_by.join(", "));
    }
    print_cargo(&c.cargo);
}
