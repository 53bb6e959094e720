//! `fn new`: a crate and its entry that pass `fn check` as created.

use std::path::{Path, PathBuf};

/// What `fn new` wrote.
#[derive(Debug, Clone)]
pub struct Created {
    /// Files written, root-relative.
    pub files: Vec<PathBuf>,
    /// Whether the root Cargo.toml got the crate in `[workspace.dependencies]`.
    pub workspace_updated: bool,
}

/// The marker comment in the root Cargo.toml after which registry crates are listed.
pub const MARKER: &str = "# Registry crates";

/// The version of a new crate (Cargo.toml, the entry and the workspace dependency).
const VERSION: &str = "0.1.0";

/// Scaffolds `crates/<name>/` under `root`.
pub fn new_crate(root: &Path, name: &str, domain: &str) -> Result<Created, String> {
    if !name.starts_with(|c: char| c.is_ascii_lowercase())
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(format!(
            "`{name}` is not a snake_case name (lowercase letters, digits, `_`)"
        ));
    }
    if !domain.starts_with(|c: char| c.is_ascii_lowercase())
        || !domain
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    {
        return Err(format!(
            "`{domain}` is not a domain (one lowercase word, such as `infra`)"
        ));
    }
    let dir = root.join("crates").join(name);
    if dir.exists() {
        return Err(format!("{} already exists", dir.display()));
    }
    let description = format!("Does what `{name}` does, in one sentence.");
    let files = [
        (PathBuf::from("Cargo.toml"), cargo_toml(name, &description)),
        (PathBuf::from("src/lib.rs"), lib_rs(name, &description)),
        (
            PathBuf::from(format!("{name}.md")),
            entry_md(name, domain, &description),
        ),
    ];
    let mut written = Vec::new();
    for (rel, text) in files {
        let path = dir.join(&rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written.push(PathBuf::from("crates").join(name).join(rel));
    }
    let workspace_updated = add_to_workspace(root, name)?;
    Ok(Created {
        files: written,
        workspace_updated,
    })
}

fn cargo_toml(name: &str, description: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "{VERSION}"
description = "{description}"
edition.workspace = true
rust-version.workspace = true
license.workspace = true
repository.workspace = true
readme.workspace = true

[dependencies]

[lints]
workspace = true
"#
    )
}

fn lib_rs(name: &str, description: &str) -> String {
    format!(
        r#"//! {description}
//!
//! # Example
//!
//! ```
//! assert_eq!({name}::{name}(2), 4);
//! ```

/// Doubles `x`. Replace with the function this crate is for.
pub fn {name}(x: u32) -> u32 {{
    x * 2
}}

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../{name}.md")]
pub struct RegistryExamples;

#[cfg(test)]
mod tests {{
    #[test]
    fn doubles_its_input() {{
        assert_eq!(super::{name}(21), 42);
    }}
}}
"#
    )
}

fn entry_md(name: &str, domain: &str, description: &str) -> String {
    format!(
        r#"---
name: {name}
kind: function
lang: rust
domain: {domain}
version: "{VERSION}"
purity: pure
signature: "pub fn {name}(x: u32) -> u32"
description: "{description}"
tags: [{domain}]
uses_functions: []
uses_types: []
returns: []
returns_optional: false
error_type: ""
imports: []
params:
  - name: x
    desc: the input.
output: twice the input.
tested: true
tests:
  - "doubles its input"
test_file_path: crates/{name}/src/lib.rs
file_path: crates/{name}/src/lib.rs
---

## Example

```rust
assert_eq!({name}::{name}(2), 4);
```

## Notes

Say here what a caller must know: limits, costs, what it never does.
"#
    )
}

/// Adds `name = { path = "crates/name", version = "0.1.0" }` to
/// `[workspace.dependencies]`, in order after the marker comment (the version
/// is what `cargo package` needs of a path dependency). Returns false when the
/// root has no workspace.
fn add_to_workspace(root: &Path, name: &str) -> Result<bool, String> {
    let path = root.join("Cargo.toml");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(false);
    };
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let Some(header) = lines
        .iter()
        .position(|l| l.trim() == "[workspace.dependencies]")
    else {
        return Ok(false);
    };
    let line = format!("{name} = {{ path = \"crates/{name}\", version = \"{VERSION}\" }}");
    let start = lines
        .iter()
        .skip(header)
        .position(|l| l.starts_with(MARKER))
        .map_or(header + 1, |i| header + i + 1);
    let mut at = start;
    while at < lines.len() && lines[at].contains("path = \"crates/") && lines[at] < line {
        at += 1;
    }
    lines.insert(at, line);
    let mut out = lines.join("\n");
    out.push('\n');
    std::fs::write(&path, out).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(true)
}
