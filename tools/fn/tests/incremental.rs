//! `fn index` over an index it wrote: only what changed is parsed, checked
//! and written again, the result is row for row the database a full index
//! writes, and a run that fails leaves the old database.

use std::path::{Path, PathBuf};

use fn_tool::index::{self, IndexError};
use rusqlite::{Connection, OpenFlags};

mod common;
use common::{copy_dir, fixture};

/// A copy of the `good` fixture in a temp dir: (dir, root, db path).
fn workspace() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    copy_dir(&fixture(), &root);
    let db = dir.path().join("registry.db");
    (dir, root, db)
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} has no {from:?}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// Every row of every table in key order (the run's times in `meta` left
/// out; rowids of `entries`, which the FTS index points at, kept), then what
/// the FTS index answers: hits and ranks of a few searches, and its sizes.
fn content(db: &Path) -> Vec<(String, Vec<String>)> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table'
             AND name NOT LIKE 'entries_fts%' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(tables.len() >= 11, "{tables:?}");
    let rows = |sql: &str, params: &[&dyn rusqlite::ToSql]| -> Vec<String> {
        let mut st = conn.prepare(sql).unwrap();
        let n = st.column_count();
        let mut out: Vec<String> = st
            .query_map(params, |r| {
                let mut row = Vec::with_capacity(n);
                for i in 0..n {
                    row.push(format!("{:?}", r.get_ref(i)?));
                }
                Ok(row.join(" | "))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        out.sort();
        out
    };
    let mut all = Vec::new();
    for t in &tables {
        let sql = match t.as_str() {
            "entries" => "SELECT rowid, * FROM entries".to_string(),
            "meta" => {
                "SELECT * FROM meta WHERE key NOT IN ('indexed_at', 'sources_at')".to_string()
            }
            _ => format!("SELECT * FROM {t}"),
        };
        all.push((t.clone(), rows(&sql, &[])));
    }
    for q in [
        "greet", "greeting", "loud*", "name", "capitals", "salut*", "hello",
    ] {
        all.push((
            format!("search {q}"),
            rows(
                "SELECT rowid, rank FROM entries_fts WHERE entries_fts MATCH ?1",
                &[&q],
            ),
        ));
    }
    all.push((
        "entries_fts_docsize".to_string(),
        // Sizes per row; the third column, the FTS5 insert counter of
        // `contentless_delete`, counts writes, not content.
        rows("SELECT id, sz FROM entries_fts_docsize", &[]),
    ));
    all
}

/// Indexes `root` from scratch into a new file and compares it with `db`.
fn assert_same_as_full(root: &Path, db: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh.db");
    index::index(root, &fresh).unwrap_or_else(|e| panic!("full index: {e:?}"));
    let (a, b) = (content(db), content(&fresh));
    assert_eq!(
        a.iter().map(|(t, _)| t).collect::<Vec<_>>(),
        b.iter().map(|(t, _)| t).collect::<Vec<_>>()
    );
    for ((table, got), (_, want)) in a.iter().zip(&b) {
        assert_eq!(got, want, "table {table} differs from a full index");
    }
}

fn update(root: &Path, db: &Path) -> index::Updated {
    index::update(root, db).unwrap_or_else(|e| match e {
        IndexError::Problems(reg) => panic!("problems: {:?}", reg.problems),
        IndexError::Failed(m) => panic!("failed: {m}"),
    })
}

#[test]
fn an_update_writes_what_a_full_index_writes() {
    let (_dir, root, db) = workspace();
    let first = update(&root, &db);
    assert_eq!(first.rechecked, None, "no database yet: a full index");
    assert_eq!((first.entries, first.counts.functions), (4, 2));

    let again = update(&root, &db);
    assert_eq!(again.rechecked, Some(0), "nothing changed");
    assert_same_as_full(&root, &db);

    // An entry's text.
    let greet = root.join("crates/greet/greet.md");
    edit(
        &greet,
        "output: the greeting text.",
        "output: the greeting, as text.",
    );
    edit(&greet, "Never fails.", "Never fails; never blocks.");
    let done = update(&root, &db);
    assert_eq!(done.rechecked, Some(1), "only greet is read again");
    assert_same_as_full(&root, &db);

    // Its code: a public function that no entry describes joins the crate's API.
    let lib = root.join("crates/shout/src/lib.rs");
    edit(
        &lib,
        "/// Shouts a greeting",
        "/// Whispers a greeting at `g`.\npub fn whisper(g: &Greeting) -> String {\n    greet::greet(g).to_lowercase()\n}\n\n/// Shouts a greeting",
    );
    let done = update(&root, &db);
    assert_eq!(done.rechecked, Some(1), "only shout is checked again");
    assert_same_as_full(&root, &db);
    let conn = Connection::open(&db).unwrap();
    let api: String = conn
        .query_row(
            "SELECT signature FROM crate_api WHERE crate = 'shout'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(api, "pub fn whisper(g: &Greeting) -> String");
    drop(conn);

    // Entry, manifest and crate docs together: the crates table changes too.
    let said = "Greets someone loudly, in capitals.";
    let now = "Greets someone loudly, in capital letters.";
    edit(&root.join("crates/shout/shout.md"), said, now);
    edit(&root.join("crates/shout/Cargo.toml"), said, now);
    edit(&lib, said, now);
    edit(&root.join("crates/shout/Cargo.toml"), "0.2.0", "0.2.1");
    edit(
        &root.join("crates/shout/shout.md"),
        "\"0.2.0\"",
        "\"0.2.1\"",
    );
    let done = update(&root, &db);
    assert_eq!(done.rechecked, Some(1));
    assert_same_as_full(&root, &db);

    // A type entry, checked against code in another crate.
    edit(
        &root.join("types/core/Greeting.md"),
        "description: ",
        "description: Still ",
    );
    let done = update(&root, &db);
    assert_eq!(done.rechecked, Some(1));
    assert_same_as_full(&root, &db);

    // An entry added: a new crate, declared in the workspace.
    let wave = root.join("crates/wave");
    std::fs::create_dir_all(wave.join("src")).unwrap();
    std::fs::write(
        wave.join("Cargo.toml"),
        "[package]\nname = \"wave\"\nversion = \"0.1.0\"\ndescription = \"Waves at someone.\"\n\n[dependencies]\n",
    )
    .unwrap();
    std::fs::write(
        wave.join("src/lib.rs"),
        "//! Waves at someone.\n\n/// Waves.\npub fn wave(n: u8) -> u8 {\n    n\n}\n\n\
         #[cfg(doctest)]\n#[doc = include_str!(\"../wave.md\")]\npub struct RegistryExamples;\n",
    )
    .unwrap();
    let md = std::fs::read_to_string(root.join("crates/greet/greet.md"))
        .unwrap()
        .replace("name: greet", "name: wave")
        .replace(
            "pub fn greet(g: &Greeting) -> String",
            "pub fn wave(n: u8) -> u8",
        )
        .replace("Greets someone by name.", "Waves at someone.")
        .replace("uses_types: [Greeting_rust_core]", "uses_types: []")
        .replace("tested: true", "tested: false")
        .replace("tests:\n  - \"says hello\"\n", "tests: []\n")
        .replace(
            "test_file_path: crates/greet/src/lib.rs",
            "test_file_path: \"\"",
        )
        .replace("crates/greet/", "crates/wave/")
        .replace(
            "  - name: g\n    desc: who to greet.",
            "  - name: n\n    desc: how often.",
        );
    std::fs::write(wave.join("wave.md"), md).unwrap();
    edit(
        &root.join("Cargo.toml"),
        "shout = ",
        "wave = { path = \"crates/wave\" }\nshout = ",
    );
    let done = update(&root, &db);
    assert_eq!(done.entries, 5);
    assert_same_as_full(&root, &db);

    // And removed again.
    std::fs::remove_dir_all(&wave).unwrap();
    edit(
        &root.join("Cargo.toml"),
        "wave = { path = \"crates/wave\" }\n",
        "",
    );
    let done = update(&root, &db);
    assert_eq!(done.entries, 4);
    assert_same_as_full(&root, &db);
}

#[test]
fn a_failed_update_leaves_the_old_database() {
    let (dir, root, db) = workspace();
    update(&root, &db);
    let before = std::fs::read(&db).unwrap();

    // The entry no longer agrees with its crate's description.
    edit(
        &root.join("crates/greet/greet.md"),
        "description: Greets someone by name.",
        "description: Greets someone by their name.",
    );
    match index::update(&root, &db) {
        Err(IndexError::Problems(reg)) => {
            assert!(
                reg.problems
                    .iter()
                    .any(|p| p.message.contains("field `description` differs")),
                "{:?}",
                reg.problems
            );
        }
        other => panic!("expected problems, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "the database is untouched"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "no temporary file is left: {left:?}");

    // Fixed, the next run picks the change up.
    edit(
        &root.join("crates/greet/Cargo.toml"),
        "Greets someone by name.",
        "Greets someone by their name.",
    );
    edit(
        &root.join("crates/greet/src/lib.rs"),
        "//! Greets someone by name.",
        "//! Greets someone by their name.",
    );
    let done = update(&root, &db);
    assert_eq!(done.rechecked, Some(1));
    assert_same_as_full(&root, &db);
}

#[test]
fn a_type_defined_in_a_function_crate_is_updated_alone() {
    let (_dir, root, db) = workspace();
    let lib = root.join("crates/greet/src/lib.rs");
    let text = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(
        &lib,
        format!(
            "{text}\n/// A wave.\npub struct Wave {{\n    /// How often.\n    pub n: u8,\n}}\n"
        ),
    )
    .unwrap();
    let wave = "---\nname: Wave\nkind: type\nlang: rust\ndomain: core\nversion: \"0.1.0\"\n\
purity: pure\nsignature: \"pub struct Wave\"\ndescription: A wave.\ntags: [type, core]\n\
uses_functions: []\nuses_types: []\nreturns: []\nreturns_optional: false\nerror_type: \"\"\n\
imports: []\noutput: \"\"\ntested: false\ntests: []\ntest_file_path: \"\"\n\
file_path: crates/greet/src/lib.rs\nfields:\n  - name: n\n    type: u8\n    desc: how often.\n---\n\n\
## Notes\n\nWaves.\n";
    let md = root.join("types/core/Wave.md");
    std::fs::write(&md, wave).unwrap();
    assert_eq!(update(&root, &db).rechecked, None);

    edit(
        &md,
        "description: A wave.",
        "description: A wave of the hand.",
    );
    edit(&md, "desc: how often.", "desc: how many times.");
    let done = update(&root, &db);
    assert_eq!(done.rechecked, Some(1), "only Wave is read again");
    assert_same_as_full(&root, &db);

    // Its crate's code changed: the whole crate is checked, Wave with it.
    edit(&lib, "/// A wave.", "/// A wave, of the hand.");
    let done = update(&root, &db);
    assert_eq!(done.rechecked, Some(2), "greet and Wave");
    assert_same_as_full(&root, &db);
}

#[test]
fn an_update_checks_test_names_and_example_includes_again() {
    let (_dir, root, db) = workspace();
    update(&root, &db);
    let lib = root.join("crates/greet/src/lib.rs");
    let problems = |root: &Path, db: &Path| match index::update(root, db) {
        Err(IndexError::Problems(reg)) => reg
            .problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        other => panic!("expected problems, got {other:?}"),
    };

    // The test function is renamed: the entry's `tests:` line names nothing.
    edit(&lib, "fn says_hello()", "fn says_hi()");
    let found = problems(&root, &db);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("crates/greet/greet.md:23:")
                && p.contains("no #[test] fn `says_hello`")
                && p.contains("nearest in crates/greet/src/lib.rs: says_hi")),
        "{found:?}"
    );
    edit(&lib, "fn says_hi()", "fn says_hello()");
    update(&root, &db);
    assert_same_as_full(&root, &db);

    // The include of the entry goes: its example is not compiled.
    edit(&lib, "#[doc = include_str!(\"../greet.md\")]\n", "");
    let found = problems(&root, &db);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("crates/greet/greet.md:28:")
                && p.contains("include_str!(\"../greet.md\")")),
        "{found:?}"
    );
    edit(
        &lib,
        "pub struct RegistryExamples;",
        "#[doc = include_str!(\"../greet.md\")]\npub struct RegistryExamples;",
    );
    update(&root, &db);
    assert_same_as_full(&root, &db);

    // A test in a new file of the crate counts once the index sees the file.
    edit(
        &root.join("crates/greet/greet.md"),
        "  - \"says hello\"\n",
        "  - \"says hello\"\n  - \"greets from another file\"\n",
    );
    assert!(
        problems(&root, &db)
            .iter()
            .any(|p| p.contains("`greets_from_another_file`"))
    );
    std::fs::create_dir_all(root.join("crates/greet/tests")).unwrap();
    std::fs::write(
        root.join("crates/greet/tests/other.rs"),
        "#[test]\nfn greets_from_another_file() {}\n",
    )
    .unwrap();
    update(&root, &db);
    assert_same_as_full(&root, &db);
    // That file is an input now: a rename there is seen.
    edit(
        &root.join("crates/greet/tests/other.rs"),
        "fn greets_from_another_file",
        "fn greets_elsewhere",
    );
    assert!(
        problems(&root, &db)
            .iter()
            .any(|p| p.contains("`greets_from_another_file`"))
    );
}
