//! `fn check`: every problem of the registry, or none.

use std::io::Write;

use clap::Args;

use super::{RootArg, print_json, print_problems};
use crate::Failure;

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    root: RootArg,
    /// Print the problems as JSON.
    #[arg(long)]
    json: bool,
}

impl CheckArgs {
    pub(crate) fn run(self) -> Result<(), Failure> {
        let root = self.root.find();
        let checked = fn_tool::check::check(&root)?;
        let (problems, entries) = (&checked.problems, checked.entries);
        if self.json {
            print_json(&checked.to_json())?;
        } else {
            print_problems(problems);
        }
        if problems.is_empty() {
            if !self.json {
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
}
