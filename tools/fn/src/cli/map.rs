//! `fn map`: the crate map of README.md.

use std::io::Write;

use clap::Args;
use fn_tool::readme;

use super::{RootArg, load};
use crate::Failure;

#[derive(Debug, Args)]
pub(crate) struct MapArgs {
    #[command(flatten)]
    root: RootArg,
    /// Rewrite the map between the markers in ROOT/README.md.
    #[arg(long)]
    write: bool,
}

impl MapArgs {
    pub(crate) fn run(self) -> Result<(), Failure> {
        let root = self.root.find();
        let reg = load(&root)?;
        if !self.write {
            say_raw!("{}", readme::render(&reg));
            return Ok(());
        }
        if readme::write(&reg, &root)? {
            say!(
                "updated the crate map in {}",
                root.join("README.md").display()
            );
            Ok(())
        } else {
            Err(Failure(
                format!(
                    "{} has no crate map markers; add the lines\n{}\n{}",
                    root.join("README.md").display(),
                    readme::START,
                    readme::END
                ),
                2,
            ))
        }
    }
}
