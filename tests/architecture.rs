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
    out.push((
        "examples".into(),
        read_toml(&root.join("examples/Cargo.toml")),
    ));
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
    // curve25519-dalek-derive) and `tracing-attributes` (on through rmcp's
    // `tracing` with default features, for `fn mcp`) are written against;
    // nothing of it is linked.
    const BUILD_ONLY: [(&str, usize); 1] = [("syn", 2)];
    // Locked, never built: Cargo locks an optional dependency that only a
    // weak feature (`dep?/feature`) names, even when nothing enables it
    // (cargo#10801). rustls-webpki's `ring?/alloc` locks ring (and so its
    // getrandom 0.2 and windows-sys 0.52) although rustls runs on aws-lc-rs
    // here; aws-lc-rs's optional ring-compatible API locks untrusted 0.7;
    // yasna (under rcgen, tests only) locks bit-vec 0.9; rcgen's optional
    // x509-parser locks asn1-rs-derive and its synstructure 0.13 (the 0.14
    // that is built comes with url's ICU derives, under redis). `cargo tree -d`
    // shows what is built: no duplicate but syn. Each is allowed only while
    // the named package is the one that locks it.
    const LOCK_ONLY: [(&str, &str, &str); 5] = [
        ("getrandom", "0.2.", "ring"),
        ("windows-sys", "0.52.", "ring"),
        ("untrusted", "0.7.", "aws-lc-rs"),
        ("bit-vec", "0.9.", "yasna"),
        ("synstructure", "0.13.", "asn1-rs-derive"),
    ];
    let lock = read_toml(&root().join("Cargo.lock"));
    let packages = lock["package"].as_array().expect("[[package]] list");
    let mut versions: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for p in packages {
        let name = p["name"].as_str().unwrap().to_string();
        let version = p["version"].as_str().unwrap().to_string();
        let lock_only = LOCK_ONLY
            .iter()
            .find(|(n, v, _)| *n == name && version.starts_with(v));
        if let Some((_, _, via)) = lock_only {
            // Who locks it: dependency entries are `name` or `name version`.
            let users: Vec<&str> = packages
                .iter()
                .filter(|q| {
                    q.get("dependencies")
                        .and_then(|d| d.as_array())
                        .is_some_and(|deps| {
                            deps.iter()
                                .filter_map(|d| d.as_str())
                                .any(|d| d == name || d == format!("{name} {version}"))
                        })
                })
                .map(|q| q["name"].as_str().unwrap())
                .collect();
            assert!(
                users.iter().all(|u| u == via),
                "{name} {version} is allowed only as {via}'s lock-only dependency, but {users:?} depend on it"
            );
            continue;
        }
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

/// Every crate under `crates/` is placed in ARCHITECTURE.md's layer diagram.
#[test]
fn every_crate_is_in_the_layer_diagram() {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let layers = text
        .split_once("## Layers")
        .and_then(|(_, rest)| rest.split("```").nth(1))
        .expect("a ``` block under ## Layers");
    let named: BTreeSet<&str> = layers
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    let missing: Vec<String> = members()
        .into_iter()
        .filter_map(|(dir, _)| dir.strip_prefix("crates/").map(str::to_string))
        .filter(|name| !named.contains(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "crates missing from ARCHITECTURE.md's layers: {missing:?}"
    );
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

#[test]
fn registry_crates_are_publishable_and_leaves_are_not() {
    let ws = read_toml(&root().join("Cargo.toml"));
    let ws = ws["workspace"].as_table().expect("[workspace]");
    let shared = ws.get("package").and_then(|p| p.as_table());
    let ws_deps = ws["dependencies"]
        .as_table()
        .expect("[workspace.dependencies]");
    // A key is set when the package has it, or inherits it from [workspace.package].
    let value = |pkg: &toml::Table, key: &str| -> Option<toml::Value> {
        match pkg.get(key) {
            Some(v) if v.get("workspace").and_then(|w| w.as_bool()) == Some(true) => {
                shared.and_then(|s| s.get(key)).cloned()
            }
            other => other.cloned(),
        }
    };
    let mut bad = Vec::new();
    for (dir, m) in members() {
        let pkg = m["package"].as_table().expect("[package]");
        let name = pkg["name"].as_str().unwrap_or_default();
        let publish = value(pkg, "publish").and_then(|p| p.as_bool()) != Some(false);
        if !dir.starts_with("crates/") {
            if publish {
                bad.push(format!(
                    "{dir}/Cargo.toml: tools and tests are not published: add `publish.workspace = true`"
                ));
            }
            continue;
        }
        if !publish {
            bad.push(format!(
                "{dir}/Cargo.toml: registry crates are published: remove `publish`"
            ));
        }
        for key in ["description", "license", "repository", "readme"] {
            let set = value(pkg, key).and_then(|v| v.as_str().map(str::to_string));
            if set.is_none_or(|s| s.is_empty()) {
                bad.push(format!(
                    "{dir}/Cargo.toml: no `{key}`: add `{key}.workspace = true` (or the crate's own)"
                ));
            }
        }
        // `cargo package` keeps only the version of a path dependency.
        let version = value(pkg, "version").and_then(|v| v.as_str().map(str::to_string));
        let declared = ws_deps
            .get(name)
            .and_then(|d| d.get("version"))
            .and_then(|v| v.as_str());
        if declared.is_none() || declared.map(str::to_string) != version {
            bad.push(format!(
                "Cargo.toml [workspace.dependencies] {name}: write `{name} = {{ path = \"{dir}\", version = \"{}\" }}`",
                version.as_deref().unwrap_or("?")
            ));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn every_crate_answers_fn_show() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("registry.db");
    if let Err(e) = fn_tool::index::index(&root(), &db) {
        let why = match e {
            fn_tool::index::IndexError::Problems(reg) => reg
                .problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
            fn_tool::index::IndexError::Failed(e) => e,
        };
        panic!("fn index on the repository:\n{why}");
    }
    let conn = fn_tool::query::open(&db).unwrap();
    let mut bad = Vec::new();
    for (dir, _) in members().iter().filter(|(d, _)| d.starts_with("crates/")) {
        let name = dir.trim_start_matches("crates/");
        match fn_tool::query::lookup(&conn, name) {
            Ok(fn_tool::query::Found::Entry(s)) if s.cargo.is_none() => {
                bad.push(format!("fn show {name}: no Cargo.toml lines"));
            }
            Ok(_) => {}
            Err(e) => bad.push(format!("fn show {name}: {e}")),
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
