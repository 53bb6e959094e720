//! `fn show`: one entry, or a crate no entry is named after.

use std::io::Write;

use clap::Args;
use fn_tool::query;

use super::{ReadArgs, print_cargo, print_json};
use crate::Failure;

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// Entry name or ID (`ws_send` or `ws_send_rust_infra`), or crate name (`http_types`).
    name: String,
    #[command(flatten)]
    out: ReadArgs,
}

impl ShowArgs {
    pub(crate) fn run(self) -> Result<(), Failure> {
        let conn = self.out.open()?;
        let found = query::lookup(&conn, &self.name)?;
        if self.out.json {
            return print_json(&found);
        }
        match &found {
            query::Found::Entry(s) => print_shown(s),
            query::Found::Crate(c) => print_crate(c),
        }
        Ok(())
    }
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
