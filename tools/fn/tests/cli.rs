//! The `fn` binary end to end: the fixture registries under `tests/fixtures/`,
//! a real SQLite file, every command and its exit code.
//!
//! Each broken fixture has an `expected.txt`: the exact stdout of `fn check`
//! on it. After a deliberate change of messages, `FN_BLESS=1 cargo test -p
//! fn_tool --test cli` rewrites them; review the diff.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::copy_dir;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn fn_cmd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fn"))
        .args(args)
        .output()
        .expect("fn runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Indexes the good fixture into a fresh temp dir; returns (dir, db path).
fn good_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("registry.db");
    let out = fn_cmd(&[
        "index",
        "--root",
        path(&fixtures().join("good")),
        "--db",
        path(&db),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("indexed 4 entries (2 functions, 2 types,"),
        "{}",
        text(&out.stdout)
    );
    (dir, db)
}

/// Every fixture root but `good`, sorted.
fn broken_fixtures() -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|d| d.unwrap().path())
        .filter(|p| p.is_dir() && !p.ends_with("good"))
        .collect();
    cases.sort();
    cases
}

fn no_panic(out: &Output) {
    let err = text(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn every_broken_fixture_gives_its_expected_problems() {
    let bless = std::env::var_os("FN_BLESS").is_some();
    let cases = broken_fixtures();
    assert!(
        cases.len() >= 20,
        "the fixture set has one case per failure mode"
    );
    let mut failures = Vec::new();
    for case in &cases {
        let out = fn_cmd(&["check", "--root", path(case)]);
        no_panic(&out);
        let got = text(&out.stdout);
        let expected_file = case.join("expected.txt");
        if bless {
            std::fs::write(&expected_file, &got).unwrap();
        }
        let want = std::fs::read_to_string(&expected_file).unwrap_or_default();
        let name = case.file_name().unwrap().to_string_lossy();
        if out.status.code() != Some(1) {
            failures.push(format!("{name}: exit {:?}, want 1", out.status.code()));
        }
        if got.is_empty() {
            failures.push(format!("{name}: no problem reported"));
        }
        if got != want {
            failures.push(format!(
                "{name}: stdout differs\n--- want\n{want}--- got\n{got}"
            ));
        }
        for line in got.lines() {
            let mut parts = line.splitn(3, ':');
            let (file, line_no, msg) = (parts.next(), parts.next(), parts.next());
            let ok = file.is_some_and(|f| case.join(f).exists() || f == "Cargo.toml")
                && line_no.is_some_and(|n| n.parse::<usize>().is_ok_and(|n| n >= 1))
                && msg.is_some_and(|m| !m.trim().is_empty());
            if !ok && !line.starts_with("    ") {
                failures.push(format!("{name}: not `path:line: message`: {line}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_good_fixture_passes_check() {
    let out = fn_cmd(&["check", "--root", path(&fixtures().join("good"))]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "checked 4 entries: no problems\n");
}

#[test]
fn a_failed_index_leaves_the_previous_database_untouched() {
    let (_dir, db) = good_db();
    let before = std::fs::read(&db).unwrap();
    // Every broken fixture, metadata/code mismatches included: a fixture root
    // is a Cargo workspace, so `fn index` holds it to its code like `fn check`.
    for case in broken_fixtures() {
        let out = fn_cmd(&["index", "--root", path(&case), "--db", path(&db)]);
        let case = case.file_name().unwrap().to_string_lossy().into_owned();
        no_panic(&out);
        assert_eq!(out.status.code(), Some(1), "{case}");
        let want = std::fs::read_to_string(fixtures().join(&case).join("expected.txt")).unwrap();
        assert_eq!(
            text(&out.stdout),
            want,
            "{case}: the problems of `fn check`"
        );
        assert!(
            text(&out.stderr).contains("index not written"),
            "{case}: {}",
            text(&out.stderr)
        );
        assert_eq!(
            std::fs::read(&db).unwrap(),
            before,
            "{case}: the db is unchanged"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(db.parent().unwrap())
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files removed: {leftovers:?}"
    );
    let out = fn_cmd(&["search", "greet", "--db", path(&db)]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("greet_rust_core"));
}

#[test]
fn search_survives_any_query() {
    let (_dir, db) = good_db();
    for q in [
        "greet",
        "Greeting",
        "greet_rust",
        "web-socket",
        "\"unbalanced",
        "NEAR(",
        "***",
        "--",
        "a AND OR NOT",
        "ü✓",
        "loud*",
    ] {
        let out = fn_cmd(&["search", "--db", path(&db), "--", q]);
        no_panic(&out);
        match out.status.code() {
            Some(0) => {}
            Some(2) => {
                let err = text(&out.stderr);
                assert!(
                    err.starts_with("fn: ") && err.lines().count() == 1,
                    "{q}: {err}"
                );
            }
            other => panic!("{q}: exit {other:?}"),
        }
    }
    let out = fn_cmd(&["search", "--db", path(&db), "--fts", "NEAR("]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("FTS5"), "{}", text(&out.stderr));
}

#[test]
fn search_ranks_filters_and_speaks_json() {
    let (_dir, db) = good_db();
    let json = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["search", "--json", "--db", path(&db)];
        all.extend_from_slice(args);
        let out = fn_cmd(&all);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_str(&text(&out.stdout)).unwrap()
    };
    let v = json(&["greet"]);
    assert_eq!(v["query"], "greet");
    assert_eq!(v["matched"], "all");
    let ids: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids[0], "greet_rust_core",
        "the name match ranks first: {ids:?}"
    );
    let first = &v["results"][0];
    for key in [
        "id",
        "name",
        "kind",
        "lang",
        "domain",
        "version",
        "purity",
        "tested",
        "signature",
        "description",
        "score",
    ] {
        assert!(!first[key].is_null(), "missing {key}");
    }
    let types = json(&["greet", "--kind", "type"]);
    assert!(
        types["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["kind"] == "type")
    );
    let loud = json(&["greet", "--tag", "loud"]);
    assert_eq!(loud["results"].as_array().unwrap().len(), 1);
    assert_eq!(loud["results"][0]["id"], "shout_rust_core");
    let tested = json(&["greet", "--tested"]);
    assert!(
        tested["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["tested"] == true)
    );
    assert!(
        !tested["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == "shout_rust_core")
    );
    assert_eq!(
        json(&["greet", "--limit", "1"])["results"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let go = json(&["salutation", "--lang", "go"]);
    assert_eq!(
        go["results"][0]["id"], "Salutation_go_core",
        "one registry holds several languages"
    );
    assert!(
        json(&["shout", "--lang", "go"])["results"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let split = json(&["greet_zzzz"]);
    assert_eq!(
        split["matched"], "any",
        "no phrase `greet zzzz`: falls back to its words"
    );
    assert_eq!(split["results"][0]["id"], "greet_rust_core");
    let any = json(&["greet", "zzzz"]);
    assert_eq!(
        any["matched"], "any",
        "no entry has both words: falls back to any"
    );
    assert!(!any["results"].as_array().unwrap().is_empty());
}

#[test]
fn show_gives_edges_cargo_line_and_example() {
    let (_dir, db) = good_db();
    let by_name = fn_cmd(&["show", "greet", "--db", path(&db)]);
    assert!(by_name.status.success());
    let human = text(&by_name.stdout);
    for want in [
        "greet_rust_core",
        "pub fn greet(g: &Greeting) -> String",
        "shout_rust_core",
        "greet.workspace = true",
        "## Example",
    ] {
        assert!(human.contains(want), "missing {want}:\n{human}");
    }
    // The path line works from anywhere: the absolute folder of the crate.
    let greet_dir = std::fs::canonicalize(fixtures().join("good/crates/greet")).unwrap();
    let path_line = format!("greet = {{ path = \"{}\" }}", path(&greet_dir));
    assert!(human.contains(&path_line), "missing {path_line}:\n{human}");
    assert!(human.contains("greet = \"0.1.0\""), "{human}");
    let out = fn_cmd(&["show", "greet_rust_core", "--json", "--db", path(&db)]);
    let v: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(v["cargo"]["workspace"], "greet.workspace = true");
    assert_eq!(v["cargo"]["path"], path_line.as_str());
    assert_eq!(v["cargo"]["version"], "greet = \"0.1.0\"");
    assert!(
        v["cargo"]["git"].is_null(),
        "the fixture workspace has no repository: {}",
        v["cargo"]
    );
    assert_eq!(v["used_by"][0]["id"], "shout_rust_core");
    assert_eq!(v["uses"][0]["id"], "Greeting_rust_core");
    // The example as rustdoc shows it: the hidden setup line left out.
    assert_eq!(v["example"], "```rust\nlet text = greet(&g);\n```");
    assert!(!human.contains("# let g"), "{human}");
    let shout = fn_cmd(&["show", "shout", "--json", "--db", path(&db)]);
    let v: serde_json::Value = serde_json::from_str(&text(&shout.stdout)).unwrap();
    assert_eq!(
        v["extra"]["source_repo"], "kept-as-extra",
        "unknown keys are kept"
    );
    let missing = fn_cmd(&["show", "gret", "--db", path(&db)]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing.stderr).contains("no entry named `gret`"),
        "{}",
        text(&missing.stderr)
    );
}

#[test]
fn show_answers_for_every_crate_types_only_included() {
    let (_dir, db) = good_db();
    // `greeting` holds only the type `Greeting`: no entry has its name.
    let out = fn_cmd(&["show", "greeting", "--db", path(&db)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let human = text(&out.stdout);
    let dir = std::fs::canonicalize(fixtures().join("good/crates/greeting")).unwrap();
    for want in [
        "crate greeting  (v0.1.0, ".to_string(),
        "The greeting vocabulary.".to_string(),
        "Greeting_rust_core  [type]  A greeting to someone.".to_string(),
        "used by (crates): greet, shout".to_string(),
        "greeting.workspace = true".to_string(),
        format!("greeting = {{ path = \"{}\" }}", path(&dir)),
        "greeting = \"0.1.0\"".to_string(),
    ] {
        assert!(human.contains(&want), "missing {want}:\n{human}");
    }
    let out = fn_cmd(&["show", "greeting", "--json", "--db", path(&db)]);
    let v: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(v["kind"], "crate");
    assert_eq!(v["name"], "greeting");
    assert_eq!(v["path"], path(&dir));
    assert_eq!(v["entries"][0]["id"], "Greeting_rust_core");
    assert_eq!(v["entries"].as_array().unwrap().len(), 1);
    // An entry named like its crate is still the entry.
    let out = fn_cmd(&["show", "greet", "--json", "--db", path(&db)]);
    let v: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(v["kind"], "function");
    // Every crate folder answers.
    for d in std::fs::read_dir(fixtures().join("good/crates")).unwrap() {
        let name = d.unwrap().file_name().into_string().unwrap();
        let out = fn_cmd(&["show", &name, "--db", path(&db)]);
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
    }
}

#[test]
fn show_lists_a_crates_functions_and_re_exports_that_are_not_entries() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("good"), dir.path());
    let crates = dir.path().join("crates");
    // The types-only crate gets an http_types-like API around its type entry.
    let lib = crates.join("greeting/src/lib.rs");
    let mut code = std::fs::read_to_string(&lib).unwrap();
    code.push_str(
        r#"
/// The formatting machinery. Used by `Display` impls.
pub use std::fmt;
pub use std::collections::{BTreeMap, HashMap as Map};
pub(crate) use std::collections::HashSet;

/// A greeting to `name`, at volume 1. Quietly.
pub fn polite(
    name: impl Into<String>,
) -> Greeting {
    Greeting { name: name.into(), volume: 1 }
}

/// Louder, e.g. for a crowd.
pub fn loud<'a, T: AsRef<str> + ?Sized>(name: &'a T) -> Greeting
where
    T: std::fmt::Debug,
{
    Greeting { name: name.as_ref().into(), volume: 9 }
}

#[doc(hidden)]
pub fn hidden() {}

pub(crate) fn internal() {}

fn private() {}

/// Helpers.
pub mod extra {
    pub fn nested() -> u8 {
        1
    }
}
"#,
    );
    std::fs::write(&lib, code).unwrap();
    // A function crate: its entry's function is not listed again, its helper is.
    let lib = crates.join("greet/src/lib.rs");
    let mut code = std::fs::read_to_string(&lib).unwrap();
    code.push_str("\n/// Greets twice.\npub fn greet_twice(g: &Greeting) -> String {\n    greet(g).repeat(2)\n}\n");
    std::fs::write(&lib, code).unwrap();

    let db = dir.path().join("registry.db");
    let out = fn_cmd(&["index", "--root", path(dir.path()), "--db", path(&db)]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    let out = fn_cmd(&["show", "greeting", "--db", path(&db)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let human = text(&out.stdout);
    let want = "
functions:
  pub fn polite(name: impl Into<String>) -> Greeting
      A greeting to `name`, at volume 1.
  pub fn loud<'a, T: AsRef<str> + ?Sized>(name: &'a T) -> Greeting where T: std::fmt::Debug
      Louder, e.g. for a crowd.
  pub fn nested() -> u8  (in mod extra)

re-exports:
  pub use std::fmt
      The formatting machinery.
  pub use std::collections::BTreeMap
  pub use std::collections::HashMap as Map

used by (crates): greet, shout
";
    assert!(human.contains(want), "want\n{want}\nin\n{human}");
    assert!(
        human.find("Greeting_rust_core") < human.find("functions:"),
        "entries come first:\n{human}"
    );

    let out = fn_cmd(&["show", "greeting", "--json", "--db", path(&db)]);
    let v: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    let names = |key: &str| -> Vec<String> {
        v[key]
            .as_array()
            .unwrap_or_else(|| panic!("no list `{key}`: {v}"))
            .iter()
            .map(|f| f["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names("functions"), ["polite", "loud", "extra::nested"]);
    assert_eq!(names("re_exports"), ["fmt", "BTreeMap", "Map"]);
    assert_eq!(
        v["functions"][0]["signature"],
        "pub fn polite(name: impl Into<String>) -> Greeting"
    );
    assert_eq!(
        v["functions"][0]["doc"],
        "A greeting to `name`, at volume 1."
    );
    assert_eq!(v["functions"][2]["doc"], "", "no doc comment");
    assert_eq!(v["re_exports"][0]["signature"], "pub use std::fmt");
    assert_eq!(
        v["re_exports"][2]["signature"],
        "pub use std::collections::HashMap as Map"
    );

    // Stored for every crate, in schema.sql's table.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let rows = |krate: &str| -> Vec<(String, String)> {
        let mut stmt = conn
            .prepare("SELECT kind, name FROM crate_api WHERE crate = ?1 ORDER BY position")
            .unwrap();
        stmt.query_map([krate], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(
        rows("greet"),
        [("function".to_string(), "greet_twice".to_string())],
        "the entry `greet` is not listed again"
    );
    assert_eq!(rows("greeting").len(), 6);
    assert!(rows("shout").is_empty());
    // A function crate shows its entry, not the crate view.
    let out = fn_cmd(&["show", "greet", "--json", "--db", path(&db)]);
    let v: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(v["kind"], "function");
    assert!(v.get("functions").is_none(), "{v}");
}

#[test]
fn show_prints_the_git_line_of_the_workspace_repository() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("good"), dir.path());
    let manifest = dir.path().join("Cargo.toml");
    let with_repo = std::fs::read_to_string(&manifest).unwrap().replace(
        "[workspace.package]\n",
        "[workspace.package]\nrepository = \"https://example.com/greetings.git\"\n",
    );
    std::fs::write(&manifest, with_repo).unwrap();
    let db = dir.path().join("registry.db");
    let out = fn_cmd(&["index", "--root", path(dir.path()), "--db", path(&db)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let git = "greeting = { git = \"https://example.com/greetings.git\", package = \"greeting\" }";
    let out = fn_cmd(&["show", "greeting", "--db", path(&db)]);
    assert!(text(&out.stdout).contains(git), "{}", text(&out.stdout));
    let out = fn_cmd(&["show", "Greeting", "--json", "--db", path(&db)]);
    let v: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(v["cargo"]["git"], git, "a type entry: its crate's lines");
}

#[test]
fn deps_walk_both_ways() {
    let (_dir, db) = good_db();
    let json = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["deps", "--json", "--db", path(&db)];
        all.extend_from_slice(args);
        let out = fn_cmd(&all);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_str(&text(&out.stdout)).unwrap()
    };
    let direct = json(&["shout"]);
    assert_eq!(direct["direction"], "uses");
    let ids: Vec<&str> = direct["deps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["Greeting_rust_core", "greet_rust_core"]);
    let users = json(&["Greeting", "--reverse", "--transitive"]);
    assert_eq!(users["direction"], "used_by");
    let ids: Vec<(&str, u64)> = users["deps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["id"].as_str().unwrap(), d["depth"].as_u64().unwrap()))
        .collect();
    assert!(
        ids.contains(&("greet_rust_core", 1)) && ids.contains(&("shout_rust_core", 1)),
        "{ids:?}"
    );
    let human = fn_cmd(&["deps", "greet", "--reverse", "--db", path(&db)]);
    assert!(text(&human.stdout).contains("shout_rust_core"));
}

#[test]
fn a_closed_stdout_is_not_a_crash() {
    let (_dir, db) = good_db();
    for args in [
        &["show", "greet"][..],
        &["search", "greet"],
        &["deps", "Greeting", "--reverse"],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fn"))
            .args(args)
            .args(["--db", path(&db)])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader is gone, like `fn show greet | head -0`
        let out = child.wait_with_output().unwrap();
        no_panic(&out);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn read_commands_explain_a_missing_database() {
    let dir = tempfile::tempdir().unwrap();
    let out = fn_cmd(&["search", "x", "--db", path(&dir.path().join("none.db"))]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("run `cargo fn index` first"));
}

#[test]
fn new_scaffolds_a_crate_that_passes_check() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("good"), dir.path());
    let root = path(dir.path());
    let out = fn_cmd(&["new", "wave", "--domain", "core", "--root", root]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let manifest = std::fs::read_to_string(dir.path().join("Cargo.toml")).unwrap();
    assert!(manifest.contains("wave = { path = \"crates/wave\", version = \"0.1.0\" }"));
    let check = fn_cmd(&["check", "--root", root]);
    assert!(check.status.success(), "{}", text(&check.stdout));
    let again = fn_cmd(&["new", "wave", "--domain", "core", "--root", root]);
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again.stderr).contains("already exists"));
    let bad = fn_cmd(&["new", "Wave-Two", "--domain", "core", "--root", root]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("not a snake_case name"));
}
