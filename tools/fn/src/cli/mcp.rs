//! `fn mcp`: the registry over the Model Context Protocol, on stdio.

use std::path::PathBuf;

use clap::Args;

use super::{RootArg, db_path};
use crate::Failure;

#[derive(Debug, Args)]
pub(crate) struct McpArgs {
    #[command(flatten)]
    root: RootArg,
    /// Database to read [default: ROOT/registry/registry.db].
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
}

impl McpArgs {
    pub(crate) fn run(self) -> Result<(), Failure> {
        let root = self.root.find();
        let db = db_path(self.db, &root);
        fn_tool::mcp::serve_stdio(root, db).map_err(Failure::from)
    }
}
