//! `fn search`: ranked full-text search of the index.

use std::io::Write;

use clap::{Args, ValueEnum};
use fn_tool::query::{self, Filters, Syntax};

use super::{ReadArgs, print_json, value_name};
use crate::Failure;

#[derive(Debug, Args)]
pub(crate) struct SearchArgs {
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

impl SearchArgs {
    pub(crate) fn run(self) -> Result<(), Failure> {
        let conn = self.out.open()?;
        let filters = Filters {
            kind: self.kind.map(value_name),
            lang: self.lang,
            domain: self.domain,
            tags: self.tags,
            purity: self.purity.map(value_name),
            tested: self.tested,
        };
        let syntax = if self.fts {
            Syntax::Fts5
        } else {
            Syntax::Words
        };
        let q = self.query.join(" ");
        let res = query::search(&conn, &q, syntax, &filters, self.limit)?;
        if self.out.json {
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
                crate::stdout_failed(&e);
            }
            if let Err(e) = writeln!(w, "    {}", e.signature) {
                crate::stdout_failed(&e);
            }
            if let Err(e) = writeln!(w, "    {}", e.description) {
                crate::stdout_failed(&e);
            }
        }
        Ok(())
    }
}
