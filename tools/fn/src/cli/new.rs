//! `fn new`: scaffold a crate with an entry that passes `fn check`.

use std::io::Write;

use clap::Args;
use fn_tool::problem::display_path;
use fn_tool::{readme, scaffold};

use super::{RootArg, load};
use crate::Failure;

#[derive(Debug, Args)]
pub(crate) struct NewArgs {
    /// snake_case name: folder, package and registry name at once.
    name: String,
    /// The entry's domain (`infra`, `core`, ...).
    #[arg(long)]
    domain: String,
    #[command(flatten)]
    root: RootArg,
}

impl NewArgs {
    pub(crate) fn run(self) -> Result<(), Failure> {
        let name = self.name;
        let root = self.root.find();
        let created = scaffold::new_crate(&root, &name, &self.domain)?;
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
