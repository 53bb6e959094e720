//! The invariants of ARCHITECTURE.md, checked.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use fn_tool::entry::Kind;
use fn_tool::{Registry, code, readme};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn read_toml(path: &Path) -> toml::Table {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every workspace member: (folder relative to the root, parsed manifest).
fn members() -> Vec<(String, toml::Table)> {
    let root = root();
    let mut out = Vec::new();
    for group in ["crates", "tools"] {
        let mut dirs: Vec<_> = std::fs::read_dir(root.join(group))
            .unwrap()
            .filter_map(Result::ok)
            .map(|d| d.path())
            .filter(|p| p.join("Cargo.toml").is_file())
            .collect();
        dirs.sort();
        for d in dirs {
            let rel = format!("{group}/{}", d.file_name().unwrap().to_string_lossy());
            out.push((rel, read_toml(&d.join("Cargo.toml"))));
        }
    }
    out.push(("tests".into(), read_toml(&root.join("tests/Cargo.toml"))));
    out
}

/// All dependency tables of a manifest: (table name, dependency name, value).
fn dependencies(m: &toml::Table) -> Vec<(String, String, toml::Value)> {
    let mut out = Vec::new();
    let mut add = |prefix: &str, t: &toml::Table| {
        for kind in ["dependencies", "dev-dependencies", "build-dependencies"] {
            if let Some(deps) = t.get(kind).and_then(|d| d.as_table()) {
                for (k, v) in deps {
                    out.push((format!("{prefix}{kind}"), k.clone(), v.clone()));
                }
            }
        }
    };
    add("", m);
    if let Some(targets) = m.get("target").and_then(|t| t.as_table()) {
        for (cfg, t) in targets {
            if let Some(t) = t.as_table() {
                add(&format!("target.{cfg}."), t);
            }
        }
    }
    out
}

#[test]
fn dependencies_are_declared_once_in_the_workspace() {
    let mut bad = Vec::new();
    for (dir, m) in members() {
        for (table, name, v) in dependencies(&m) {
            let inherits = v.get("workspace").and_then(|w| w.as_bool()) == Some(true);
            let own_source = ["version", "path", "git"]
                .iter()
                .any(|k| v.get(k).is_some());
            if !inherits || own_source || v.is_str() {
                bad.push(format!(
                    "{dir}/Cargo.toml [{table}] {name}: write `{name}.workspace = true` and declare it in the root [workspace.dependencies]"
                ));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn every_member_uses_the_workspace_lints() {
    let bad: Vec<String> = members()
        .into_iter()
        .filter(|(_, m)| {
            m.get("lints")
                .and_then(|l| l.get("workspace"))
                .and_then(|w| w.as_bool())
                != Some(true)
        })
        .map(|(dir, _)| format!("{dir}/Cargo.toml: add `[lints] workspace = true`"))
        .collect();
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn cargo_lock_has_one_version_of_each_crate() {
    // The one allowed exception, build time only: `syn` 2 is what the
    // RustCrypto proc-macros under `jsonwebtoken` (zeroize_derive,
    // curve25519-dalek-derive) are written against; nothing of it is linked.
    const BUILD_ONLY: [(&str, usize); 1] = [("syn", 2)];
    let lock = read_toml(&root().join("Cargo.lock"));
    let mut versions: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for p in lock["package"].as_array().expect("[[package]] list") {
        let name = p["name"].as_str().unwrap().to_string();
        let version = p["version"].as_str().unwrap().to_string();
        versions.entry(name).or_default().insert(version);
    }
    let dups: Vec<String> = versions
        .iter()
        .filter(|(n, v)| {
            let allowed = BUILD_ONLY
                .iter()
                .find(|(name, _)| name == n)
                .map_or(1, |(_, count)| *count);
            v.len() > allowed
        })
        .map(|(n, v)| format!("{n}: {v:?}"))
        .collect();
    assert!(
        dups.is_empty(),
        "duplicate versions in Cargo.lock:\n{}",
        dups.join("\n")
    );
}

#[test]
fn layers_hold() {
    let reg = Registry::load(&root()).expect("registry loads");
    let function_crates: BTreeSet<String> = reg
        .entries
        .iter()
        .filter(|e| e.kind != Kind::Type && e.path.starts_with("crates"))
        .map(|e| e.name.clone())
        .collect();
    const IO: [&str; 6] = [
        "tokio",
        "hyper",
        "hyper-util",
        "tungstenite",
        "tokio-tungstenite",
        "rusqlite",
    ];
    let outside: BTreeSet<String> = members()
        .into_iter()
        .filter(|(dir, _)| !dir.starts_with("crates/"))
        .filter_map(|(_, m)| Some(m["package"].get("name")?.as_str()?.to_string()))
        .collect();
    let mut bad = Vec::new();
    for (dir, m) in members()
        .into_iter()
        .filter(|(d, _)| d.starts_with("crates/"))
    {
        let name = dir.trim_start_matches("crates/").to_string();
        let types_only = !function_crates.contains(&name);
        for (table, dep, _) in dependencies(&m) {
            if outside.contains(&dep) {
                bad.push(format!(
                    "{dir}: [{table}] {dep} is a tool or test crate; crates never depend on leaves"
                ));
            }
            if types_only
                && !table.contains("dev-")
                && (IO.contains(&dep.as_str()) || function_crates.contains(&dep))
            {
                bad.push(format!("{dir}: types-only crate depends on `{dep}`; vocabulary crates do no I/O and use no functions"));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn the_repository_registry_passes_fn_check() {
    let reg = Registry::load(&root()).expect("registry loads");
    assert!(!reg.entries.is_empty(), "the repository has entries");
    let mut problems = reg.problems.clone();
    problems.extend(code::check(&reg));
    problems.extend(readme::check(&reg));
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert!(
        text.is_empty(),
        "fn check on the repository:\n{}",
        text.join("\n")
    );
}
