//! `fn deps`: the composition graph around one entry.

use std::io::Write;

use clap::Args;
use fn_tool::json;
use fn_tool::query::{self, Direction};

use super::{ReadArgs, print_json};
use crate::Failure;

#[derive(Debug, Args)]
pub(crate) struct DepsArgs {
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
}

impl DepsArgs {
    pub(crate) fn run(self) -> Result<(), Failure> {
        let conn = self.out.open()?;
        let id = query::resolve(&conn, &self.name)?;
        let dir = if self.reverse {
            Direction::UsedBy
        } else {
            Direction::Uses
        };
        let edges = query::deps(&conn, &id, dir, self.transitive)?;
        if self.out.json {
            return print_json(&json::deps(&id, dir, self.transitive, &edges));
        }
        let what = if self.reverse { "is used by" } else { "uses" };
        let how = if self.transitive {
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
}
