//! `fn serve`: the registry as a small read-only web app.

use std::path::PathBuf;

use clap::Args;
use fn_tool::serve::{ServeOptions, serve};

use super::{RootArg, db_path};
use crate::Failure;

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7070")]
    addr: std::net::SocketAddr,
    #[command(flatten)]
    root: RootArg,
    /// Database to write and read [default: ROOT/registry/registry.db].
    #[arg(long, value_name = "PATH")]
    db: Option<PathBuf>,
}

impl ServeArgs {
    pub(crate) fn run(self) -> Result<(), Failure> {
        let root = self.root.find();
        let db = db_path(self.db, &root);
        let opts = ServeOptions {
            addr: self.addr,
            ..ServeOptions::new(root, db)
        };
        serve(opts).map_err(|e| Failure(e, 2))
    }
}
