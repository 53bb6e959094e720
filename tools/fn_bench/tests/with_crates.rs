//! `fn-gen --with-crates` writes a Cargo workspace that `fn check` passes, so
//! `fn index` on it runs every check against the code.

use std::path::Path;

fn check(root: &Path) -> Vec<String> {
    let checked = fn_tool::check::check(root).unwrap();
    checked.problems.iter().map(ToString::to_string).collect()
}

fn first_crate(root: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(root.join("crates"))
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.swap_remove(0)
}

#[test]
fn the_generated_workspace_passes_fn_check() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let stats = fn_bench::generate_with(root, 300, 3, true).unwrap();
    assert_eq!((stats.functions, stats.types), (255, 45));
    assert!(root.join("Cargo.toml").is_file());
    assert_eq!(root.join("crates").read_dir().unwrap().count(), 255);
    let problems = check(root);
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // The checks do read the code: a crate that disagrees is reported.
    let name = first_crate(root);
    let lib = root.join("crates").join(&name).join("src/lib.rs");
    let text = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(&lib, text.replacen("limit: usize", "limit: u32", 1)).unwrap();
    let problems = check(root);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("field `signature`"), "{problems:?}");
}

#[test]
fn the_generated_workspace_is_indexed_then_updated() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fn_bench::generate_with(&root, 200, 5, true).unwrap();
    let db = dir.path().join("registry.db");
    let full = fn_tool::index::update(&root, &db).unwrap();
    assert_eq!((full.entries, full.rechecked), (200, None));
    let name = first_crate(&root);
    let md = root.join("crates").join(&name).join(format!("{name}.md"));
    let text = std::fs::read_to_string(&md).unwrap();
    std::fs::write(&md, text.replacen("output: \"", "output: \"Changed. ", 1)).unwrap();
    let again = fn_tool::index::update(&root, &db).unwrap();
    assert_eq!((again.entries, again.rechecked), (200, Some(1)));
    assert_eq!(again.counts, full.counts);

    // A type entry, defined in a function's crate, is checked alone too.
    let domain = root.join("types/core");
    let mut types: Vec<_> = std::fs::read_dir(&domain)
        .unwrap()
        .map(|d| d.unwrap().path())
        .collect();
    types.sort();
    let text = std::fs::read_to_string(&types[0]).unwrap();
    std::fs::write(
        &types[0],
        text.replacen("\ndescription: \"", "\ndescription: \"Edited. ", 1),
    )
    .unwrap();
    let typed = fn_tool::index::update(&root, &db).unwrap();
    assert_eq!(typed.rechecked, Some(1));
    let fresh = dir.path().join("fresh.db");
    let (_, counts) = fn_tool::index::index(&root, &fresh).unwrap();
    assert_eq!(typed.counts, counts);
}

#[test]
fn the_same_seed_writes_the_same_crates() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    fn_bench::generate_with(a.path(), 40, 9, true).unwrap();
    fn_bench::generate_with(b.path(), 40, 9, true).unwrap();
    let name = first_crate(a.path());
    for f in ["Cargo.toml", "src/lib.rs"] {
        let rel = Path::new("crates").join(&name).join(f);
        assert_eq!(
            std::fs::read(a.path().join(&rel)).unwrap(),
            std::fs::read(b.path().join(&rel)).unwrap()
        );
    }
    assert_eq!(
        std::fs::read(a.path().join("Cargo.toml")).unwrap(),
        std::fs::read(b.path().join("Cargo.toml")).unwrap()
    );
}
