//! `fn index`: check the registry and write `registry.db`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use fn_tool::index;

use super::{RootArg, db_path, plural, print_problems};
use crate::Failure;

#[derive(Debug, Args)]
pub(crate) struct IndexArgs {
    #[command(flatten)]
    root: RootArg,
    /// Database to write [default: ROOT/registry/registry.db].
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
}

impl IndexArgs {
    pub(crate) fn run(self) -> Result<(), Failure> {
        let started = Instant::now();
        let root = self.root.find();
        let db = db_path(self.db, &root);
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
}
