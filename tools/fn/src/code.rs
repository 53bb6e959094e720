//! Metadata must be true to the code: the checks of `fn check` that read the
//! crates themselves (Cargo.toml and Rust sources) and compare them with the entries.
//!
//! - every crate under `crates/` has an entry, and folder = package = lib = `name`;
//! - the entry's `description` is the Cargo `description` and opens the crate docs;
//! - `version` is the crate's version;
//! - `uses_functions` are the crate's dependencies on other registry crates
//!   (a dependency on the crate that defines a used type counts as that type's);
//! - `imports` are the crate's other (external) dependencies;
//! - `signature` matches a public item of `file_path`, token for token;
//! - `returns`, `error_type` and `returns_optional` appear in that signature;
//! - `tested` agrees with the test functions that exist, and each line of
//!   `tests` is the name of one ([`test_fn_name`]): in `test_file_path`, else
//!   in another file of the crate, else in the workspace's test crates;
//! - an entry with an `## Example` whose code is in `crates/<c>/` is included
//!   by `crates/<c>/src/lib.rs` (`#[doc = include_str!("...")]` on its
//!   `RegistryExamples`), so `cargo test --doc` compiles the example;
//! - a type entry's `fields` and `variants` are the type's public fields and variants.
//!
//! From the same parse, [`check_and_api`] also reads what each crate's `src/lib.rs`
//! makes public that no entry describes (free functions, re-exports: [`ApiItem`]),
//! which `fn index` stores for the crate view of `fn show`.
//!
//! The checks run crate by crate on every core. [`check_all`] also lists every
//! file and folder it read, with a hash of the content ([`Inputs`]), which `fn
//! index` keeps to see what changed; [`check_partial`] runs them for a few
//! entries and crates against what the index says of the rest.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use proc_macro2::{TokenStream, TokenTree};
use quote::ToTokens;

use crate::entry::{self, Entry, Kind};
use crate::problem::Problem;
use crate::registry::{self, Registry};

/// Runs every code check of the registry's Rust entries and crates; what
/// else "checked" means is [`crate::check`]'s.
pub fn check(reg: &Registry) -> Vec<Problem> {
    run(reg, false).problems
}

/// [`check`], and the public API of every crate that no entry describes
/// ([`CrateApis`]), from the same parse of each crate's `src/lib.rs`.
pub fn check_and_api(reg: &Registry) -> (Vec<Problem>, CrateApis) {
    let c = run(reg, true);
    (c.problems, c.apis)
}

/// The public API of `crates` (crate names under `crates/`) that no entry
/// describes, without the checks: for a root that is not a Cargo workspace.
pub fn api<'a>(reg: &Registry, crates: impl IntoIterator<Item = &'a str>) -> CrateApis {
    crate_apis(&reg.root, crates, &reg.entries, &mut Sources::default())
}

/// Files read by a check, each with the xxh3 hash of what was read:
/// (root-relative path, hash). A directory's hash is of its sorted names
/// ([`dir_hash`]). `fn index` keeps them to tell what changed since.
pub type Inputs = Vec<(String, u64)>;

/// What [`check_all`] found.
#[derive(Debug, Default)]
pub struct Checked {
    /// Problems, sorted.
    pub problems: Vec<Problem>,
    /// The API of each crate that no entry describes.
    pub apis: CrateApis,
    /// The crates, as [`crates`] reads them (only in a full check).
    pub crates: Vec<CrateInfo>,
    /// The `repository` of the workspace, if any.
    pub repository: Option<String>,
    /// Every file and directory read, sorted by path.
    pub inputs: Inputs,
}

/// [`check_and_api`], with the crates and every file read: what `fn index`
/// needs from one pass over the code, on all cores.
pub fn check_all(reg: &Registry) -> Checked {
    run(reg, true)
}

/// The hash of a file's bytes, as [`Inputs`] keeps it.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// The hash of a directory: of its entry names, sorted, one a line.
pub fn dir_hash(dir: &Path) -> std::io::Result<u64> {
    let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(dir)?
        .map(|d| d.map(|d| d.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    let mut text = Vec::with_capacity(names.len() * 16);
    for n in &names {
        text.extend_from_slice(n.as_encoded_bytes());
        text.push(b'\n');
    }
    Ok(hash_bytes(&text))
}

/// Runs `f` on every item on all cores (each thread with its own `state`),
/// results in item order.
pub(crate) fn parallel<T: Sync, S, R: Send>(
    items: &[T],
    state: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, &T) -> R + Sync,
) -> Vec<R> {
    const STEP: usize = 16;
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(8)
        .min(items.len().div_ceil(STEP));
    if threads < 2 {
        let mut st = state();
        return items.iter().map(|t| f(&mut st, t)).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut slots: Vec<Option<R>> = std::iter::repeat_with(|| None).take(items.len()).collect();
    std::thread::scope(|sc| {
        let work = || {
            let mut st = state();
            let mut done = Vec::with_capacity(items.len() / threads + STEP);
            loop {
                let i = next.fetch_add(STEP, std::sync::atomic::Ordering::Relaxed);
                if i >= items.len() {
                    break;
                }
                for (j, t) in items.iter().enumerate().skip(i).take(STEP) {
                    done.push((j, f(&mut st, t)));
                }
            }
            done
        };
        let handles: Vec<_> = (0..threads).map(|_| sc.spawn(work)).collect();
        for h in handles {
            for (j, r) in h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)) {
                slots[j] = Some(r);
            }
        }
    });
    slots.into_iter().flatten().collect()
}

fn run(reg: &Registry, want_api: bool) -> Checked {
    let mut out = Vec::new();
    let mut inputs = Inputs::new();
    let root = &reg.root;
    let workspace = Workspace::load(root, &mut out, &mut inputs);

    let function_crates: BTreeSet<&str> = reg
        .entries
        .iter()
        .filter(|e| e.kind != Kind::Type && e.lang == "rust" && in_crates(e))
        .map(|e| e.name.as_str())
        .collect();
    let homes = registry::by_crate(&reg.entries);

    let dirs = registry::crate_dirs(root).unwrap_or_default();
    let loaded = parallel(
        &dirs,
        || (),
        |(), dir| {
            let name = dir
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let rel = PathBuf::from("crates").join(&name).join("Cargo.toml");
            let mut problems = Vec::new();
            let m = Manifest::load(root, &rel, &mut problems);
            (name, m, problems)
        },
    );
    let mut manifests: HashMap<String, Manifest> = HashMap::with_capacity(loaded.len());
    let mut crates = Vec::with_capacity(loaded.len());
    for (name, m, problems) in loaded {
        out.extend(problems);
        let Some(m) = m else { continue };
        let rel = m.path.clone();
        inputs.push((crate::problem::display_path(&rel), m.hash));
        let own_entry = PathBuf::from("crates")
            .join(&name)
            .join(format!("{name}.md"));
        if !function_crates.contains(name.as_str())
            && !homes.contains_key(name.as_str())
            && !reg.broken.contains(&own_entry)
        {
            out.push(Problem::file(
                &rel,
                format!(
                    "crate `{name}` has no registry entry: add crates/{name}/{name}.md (`cargo fn new {name} --domain <d>` writes one), or a type entry under types/ whose file_path is in this crate"
                ),
            ));
        }
        check_crate(&name, &m, workspace.as_ref(), &mut out);
        crates.push(CrateInfo {
            name: name.clone(),
            version: m.resolved_version(workspace.as_ref()).unwrap_or_default(),
            description: m.description.clone().unwrap_or_default(),
        });
        manifests.insert(name, m);
    }

    let home_of: HashMap<String, &str> = reg
        .entries
        .iter()
        .filter_map(|e| Some((e.id(), e.crate_name()?)))
        .collect();
    let cx = Context {
        root,
        registry_crates: manifests.keys().map(String::as_str).collect(),
        manifests: &manifests,
        home_of: &home_of,
        ws: workspace.as_ref(),
        workspace_tests: std::sync::OnceLock::new(),
    };
    let rust: Vec<&Entry> = reg.entries.iter().filter(|e| e.lang == "rust").collect();
    let api_crates: Vec<&str> = if want_api {
        manifests.keys().map(String::as_str).collect()
    } else {
        Vec::new()
    };
    let described = |c: &str| -> BTreeSet<&str> {
        homes
            .get(c)
            .into_iter()
            .flatten()
            .map(|e| e.name.as_str())
            .collect()
    };
    let (problems, apis, more) = check_units(&cx, &rust, &api_crates, described);
    out.extend(problems);
    inputs.extend(more);
    checked(
        out,
        apis,
        crates,
        workspace.and_then(|w| w.repository),
        inputs,
    )
}

/// A part of the registry to check again, and what its checks need from the
/// rest: `fn index` updating an index after a few files changed.
#[allow(missing_debug_implementations)]
pub struct Partial<'a> {
    /// The registry root.
    pub root: &'a Path,
    /// The entries to check.
    pub entries: Vec<&'a Entry>,
    /// The crates whose manifest and API to read again.
    pub crates: Vec<&'a str>,
    /// Entry ID -> the crate holding its code, for every ID the entries reference.
    pub home_of: HashMap<String, &'a str>,
    /// Whether a crate of that name is a registry crate (under `crates/`).
    pub is_crate: &'a dyn Fn(&str) -> bool,
    /// Crate -> the names of its entries (left out of its API).
    pub described: HashMap<&'a str, BTreeSet<&'a str>>,
}

/// The checks of `p.entries` and `p.crates` alone ([`check_all`] for a part):
/// the manifests of their crates, their code, the crates' API. The checks
/// that need every crate (a crate without entry, `[workspace.dependencies]`)
/// are left out: they hold while the set of crates and the root manifest
/// stay as they were.
pub fn check_partial(p: &Partial<'_>) -> Checked {
    let mut out = Vec::new();
    let mut inputs = Inputs::new();
    let mut names: BTreeSet<&str> = p.crates.iter().copied().collect();
    names.extend(p.entries.iter().filter_map(|e| e.crate_name()));
    let mut manifests: HashMap<String, Manifest> = HashMap::new();
    for name in &names {
        let rel = PathBuf::from("crates").join(name).join("Cargo.toml");
        if let Some(m) = Manifest::load(p.root, &rel, &mut out) {
            inputs.push((crate::problem::display_path(&rel), m.hash));
            manifests.insert((*name).to_string(), m);
        }
    }
    let workspace = if manifests
        .values()
        .any(|m| matches!(m.version, Version::Workspace))
    {
        Workspace::load(p.root, &mut out, &mut inputs)
    } else {
        None
    };
    let mut crates = Vec::new();
    for (name, m) in &manifests {
        check_crate(name, m, None, &mut out);
        crates.push(CrateInfo {
            name: name.clone(),
            version: m.resolved_version(workspace.as_ref()).unwrap_or_default(),
            description: m.description.clone().unwrap_or_default(),
        });
    }
    let known: Vec<String> = manifests
        .values()
        .flat_map(|m| m.deps.keys())
        .map(|d| norm(d))
        .filter(|d| (p.is_crate)(d))
        .collect();
    let known: HashSet<&str> = known.iter().map(String::as_str).collect();
    let cx = Context {
        root: p.root,
        registry_crates: known,
        manifests: &manifests,
        home_of: &p.home_of,
        ws: workspace.as_ref(),
        workspace_tests: std::sync::OnceLock::new(),
    };
    let rust: Vec<&Entry> = p
        .entries
        .iter()
        .copied()
        .filter(|e| e.lang == "rust")
        .collect();
    let map = &p.described;
    let described = |c: &str| map.get(c).cloned().unwrap_or_default();
    let (problems, apis, more) = check_units(&cx, &rust, &p.crates, described);
    out.extend(problems);
    inputs.extend(more);
    checked(out, apis, crates, None, inputs)
}

/// The outcome of a check, each list sorted and without repeats.
fn checked(
    mut problems: Vec<Problem>,
    apis: CrateApis,
    mut crates: Vec<CrateInfo>,
    repository: Option<String>,
    mut inputs: Inputs,
) -> Checked {
    problems.sort();
    problems.dedup();
    inputs.sort_unstable();
    inputs.dedup();
    crates.sort_by(|a, b| a.name.cmp(&b.name));
    Checked {
        problems,
        apis,
        crates,
        repository,
        inputs,
    }
}

/// The checks of one crate's manifest against its folder and the workspace.
fn check_crate(name: &str, m: &Manifest, workspace: Option<&Workspace>, out: &mut Vec<Problem>) {
    let rel = &m.path;
    if m.package != name {
        out.push(Problem::new(
            rel,
            m.line("name"),
            format!("package name `{}` must equal its folder `crates/{name}/` (folder = package = registry name)", m.package),
        ));
    }
    if let Some(lib) = &m.lib_name
        && *lib != name
    {
        out.push(Problem::new(
            rel,
            m.line_in("lib", "name"),
            format!("[lib] name `{lib}` must equal the package name `{name}`"),
        ));
    }
    if let Some(ws) = workspace
        && !ws.deps.contains(name)
    {
        let version = m
            .resolved_version(Some(ws))
            .map_or(String::new(), |v| format!(", version = \"{v}\""));
        out.push(Problem::new(
            "Cargo.toml",
            ws.deps_line,
            format!("registry crate `{name}` is not declared in [workspace.dependencies]: add `{name} = {{ path = \"crates/{name}\"{version} }}`"),
        ));
    }
}

/// Checks `entries` and reads the API of `api_crates` on all cores, a crate
/// at a time, each file parsed once per crate. `described(c)` names the
/// entries of crate `c` (left out of its API).
fn check_units<'a>(
    cx: &Context<'_>,
    entries: &[&'a Entry],
    api_crates: &[&'a str],
    described: impl Fn(&str) -> BTreeSet<&'a str> + Sync,
) -> (Vec<Problem>, CrateApis, Inputs) {
    // One unit per crate: its entries (by file_path) and whether to read its API.
    let mut units: BTreeMap<&str, (Vec<&Entry>, bool)> = BTreeMap::new();
    for e in entries {
        units
            .entry(e.crate_name().unwrap_or(""))
            .or_default()
            .0
            .push(e);
    }
    for c in api_crates {
        units.entry(c).or_default().1 = true;
    }
    let units: Vec<(&str, (Vec<&Entry>, bool))> = units.into_iter().collect();
    let done = parallel(&units, Sources::default, |sources, (name, (list, api))| {
        let mut out = Vec::new();
        for e in list {
            check_entry(e, cx, sources, &mut out);
        }
        let mut items = Vec::new();
        if *api {
            let rel = format!("crates/{name}/src/lib.rs");
            if let Some(file) = sources.get(cx.root, &rel) {
                collect_api(&file.items, "", &described(name), &mut items);
            }
        }
        // The trees are dropped here, on this thread, crate by crate.
        let read = sources.take_inputs();
        (
            out,
            (!items.is_empty()).then(|| (name.to_string(), items)),
            read,
        )
    });
    let mut problems = Vec::new();
    let mut apis = CrateApis::new();
    let mut inputs = Inputs::new();
    for (p, api, read) in done {
        problems.extend(p);
        apis.extend(api);
        inputs.extend(read);
    }
    (problems, apis, inputs)
}

/// What the per-entry checks read: the root, the crates' manifests, the entries.
struct Context<'a> {
    root: &'a Path,
    manifests: &'a HashMap<String, Manifest>,
    registry_crates: HashSet<&'a str>,
    /// Entry ID -> the crate holding its code.
    home_of: &'a HashMap<String, &'a str>,
    ws: Option<&'a Workspace>,
    /// The test functions of the workspace's test crates and the files read
    /// for them, read once, when an entry's `tests:` first needs them.
    workspace_tests: std::sync::OnceLock<(BTreeSet<String>, Inputs)>,
}

impl Context<'_> {
    /// The names of the test functions in `tests/` and `tools/*/tests/`;
    /// what was read for them is noted in `sources`.
    fn workspace_tests(&self, sources: &mut Sources) -> &BTreeSet<String> {
        let (names, read) = self.workspace_tests.get_or_init(|| {
            let mut own = Sources::default();
            let mut names = BTreeSet::new();
            let mut dirs = vec!["tests".to_string()];
            own.touch_dir(self.root, "tools");
            if let Ok(list) = std::fs::read_dir(self.root.join("tools")) {
                let mut tools: Vec<String> = list
                    .flatten()
                    .map(|d| format!("tools/{}/tests", d.file_name().to_string_lossy()))
                    .collect();
                tools.sort();
                dirs.extend(tools);
            }
            for dir in dirs {
                for rel in rust_files(self.root, &dir, &mut own) {
                    if let Some(file) = own.get(self.root, &rel) {
                        test_names(&file.items, &mut names);
                    }
                }
            }
            (names, own.take_inputs())
        });
        sources.inputs.extend(read.iter().cloned());
        names
    }
}

fn in_crates(e: &Entry) -> bool {
    e.path.starts_with("crates")
}

fn check_entry(e: &Entry, cx: &Context<'_>, sources: &mut Sources, out: &mut Vec<Problem>) {
    let root = cx.root;
    // Files exist: a file that reads does (read once, for the checks below);
    // only one that does not is looked up.
    let file_ok = sources.get(root, &e.file_path).is_some()
        || file_exists(e, "file_path", &e.file_path, root, out);
    if let Some(t) = &e.test_file_path {
        let read = if e.tested {
            sources.get(root, t).is_some()
        } else {
            sources.touch(root, t)
        };
        if !read {
            file_exists(e, "test_file_path", t, root, out);
        }
    }
    let is_fn = e.kind != Kind::Type && in_crates(e);
    if is_fn && e.crate_name() != Some(e.name.as_str()) {
        out.push(e.problem(
            "file_path",
            format!(
                "field `file_path`: `{}` is outside the entry's crate crates/{}/",
                e.file_path, e.name
            ),
        ));
    }

    let manifest = e.crate_name().and_then(|c| cx.manifests.get(c));
    if is_fn && let Some(m) = manifest {
        check_manifest(e, m, cx, out);
    }
    if !is_fn && let Some(m) = manifest {
        for imp in &e.imports {
            if !m.external().any(|d| norm(d) == norm(imp)) {
                out.push(Problem::new(
                    &e.path,
                    e.line_of_item("imports", imp),
                    format!(
                        "field `imports`: `{imp}` is not a dependency of crate `{}`",
                        m.package
                    ),
                ));
            }
        }
    }

    if !file_ok {
        return;
    }
    let Some(file) = sources.get(root, &e.file_path) else {
        out.push(e.problem(
            "file_path",
            format!(
                "field `file_path`: {} is not valid Rust: {}",
                e.file_path,
                sources.error(&e.file_path)
            ),
        ));
        return;
    };
    let items = public_items(file);
    check_signature(e, &items, out);
    if e.kind == Kind::Type {
        check_members(e, file, out);
    }
    if is_fn && e.file_path.ends_with("src/lib.rs") {
        check_crate_docs(e, file, out);
    }
    check_tested(e, cx, sources, out);
    check_example_included(e, root, sources, out);
}

fn file_exists(e: &Entry, field: &str, rel: &str, root: &Path, out: &mut Vec<Problem>) -> bool {
    if root.join(rel).is_file() {
        return true;
    }
    out.push(e.problem(field, format!("field `{field}`: `{rel}` does not exist")));
    false
}

/// `a-b` and `a_b` name the same crate.
fn norm(s: &str) -> String {
    s.replace('-', "_")
}

fn check_manifest(e: &Entry, m: &Manifest, cx: &Context<'_>, out: &mut Vec<Problem>) {
    let (registry_crates, ws) = (&cx.registry_crates, cx.ws);
    let cargo = &m.path;
    match &m.description {
        None => out.push(Problem::file(
            cargo,
            "package has no `description`: it must equal the entry's `description`",
        )),
        Some(d) if squash(d) != squash(&e.description) => out.push(Problem::new(
            &e.path,
            e.line_of("description"),
            format!(
                "field `description` differs from the `description` in {}:\n    entry: {}\n    Cargo: {}",
                crate::problem::display_path(cargo),
                squash(&e.description),
                squash(d)
            ),
        )),
        Some(_) => {}
    }
    if let Some(v) = m.resolved_version(ws)
        && v != e.version
    {
        out.push(e.problem(
            "version",
            format!(
                "field `version`: `{}` but the crate's version is `{v}`",
                e.version
            ),
        ));
    }

    // Registry dependencies: each is a used function's crate or a used type's home.
    let used_fns: BTreeMap<String, &str> = e
        .uses_functions
        .iter()
        .filter_map(|id| entry::split_id(id).map(|(n, _, _)| (norm(n), id.as_str())))
        .collect();
    let type_homes: BTreeMap<String, &str> = e
        .references()
        .filter(|(rk, _)| *rk != entry::RefKind::UsesFunction)
        .filter_map(|(_, id)| {
            let home = cx.home_of.get(id)?;
            Some((norm(home), id))
        })
        .collect();
    let deps: BTreeSet<String> = m.deps.keys().map(|d| norm(d)).collect();
    let own = norm(&m.package);
    for dep in &deps {
        if !registry_crates.contains(dep.as_str()) {
            continue;
        }
        if !used_fns.contains_key(dep) && !type_homes.contains_key(dep) {
            out.push(Problem::new(
                &e.path,
                e.line_of("uses_functions"),
                format!(
                    "field `uses_functions`: the crate depends on registry crate `{dep}` ({}:{}), but the entry neither lists `{dep}` in uses_functions nor uses a type defined there",
                    crate::problem::display_path(cargo),
                    m.dep_line(dep)
                ),
            ));
        }
    }
    for (name, id) in &used_fns {
        if !deps.contains(name) {
            out.push(Problem::new(
                &e.path,
                e.line_of_item("uses_functions", id),
                format!(
                    "field `uses_functions`: lists `{id}`, but {} has no dependency on crate `{name}`",
                    crate::problem::display_path(cargo)
                ),
            ));
        }
    }
    for (home, id) in &type_homes {
        if *home != own && !deps.contains(home) {
            let field = e
                .references()
                .find(|(_, r)| r == id)
                .map_or("uses_types", |(rk, _)| rk.field());
            out.push(Problem::new(
                &e.path,
                e.line_of_item(field, id),
                format!(
                    "field `{field}`: `{id}` is defined in crate `{home}`, but {} has no dependency on it",
                    crate::problem::display_path(cargo)
                ),
            ));
        }
    }

    // External dependencies are exactly `imports`.
    // Compared normalized (`a-b` = `a_b`), reported as written.
    let external: BTreeMap<String, &str> = m
        .external()
        .filter(|d| !registry_crates.contains(norm(d).as_str()))
        .map(|d| (norm(d), d))
        .collect();
    let imports: BTreeMap<String, &str> = e.imports.iter().map(|i| (norm(i), i.as_str())).collect();
    for (key, missing) in &external {
        if imports.contains_key(key) {
            continue;
        }
        out.push(e.problem(
            "imports",
            format!(
                "field `imports`: the crate depends on `{missing}` ({}:{}), which `imports` does not list",
                crate::problem::display_path(cargo),
                m.dep_line(missing)
            ),
        ));
    }
    for (key, extra) in &imports {
        if external.contains_key(key) {
            continue;
        }
        out.push(Problem::new(
            &e.path,
            e.line_of_item("imports", extra),
            format!(
                "field `imports`: lists `{extra}`, which is not a dependency in {}",
                crate::problem::display_path(cargo)
            ),
        ));
    }
}

/// Type text without whitespace or trailing commas, for comparing types
/// written by hand with types printed from tokens.
fn tight(s: &str) -> String {
    let t: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    t.replace(",}", "}")
        .replace(",)", ")")
        .replace(",>", ">")
        .trim_end_matches(',')
        .to_string()
}

/// Token text as a person would write it: `a: &T<U>` rather than `a : & T < U >`.
fn readable(tokens: &str) -> String {
    let mut s = tokens.to_string();
    for (from, to) in [
        (" :: ", "::"),
        (" : ", ": "),
        (" ,", ","),
        ("( ", "("),
        (" )", ")"),
        (" (", "("),
        (" < ", "<"),
        ("< ", "<"),
        (" >", ">"),
        ("& ", "&"),
        (" ?", "?"),
        (",)", ")"),
        (",>", ">"),
        ("- >", "->"),
        ("->", " -> "),
        ("  ", " "),
    ] {
        s = s.replace(from, to);
    }
    s.replace("fn(", "fn (")
        .replace("fn (", "fn(")
        .trim()
        .trim_end_matches(',')
        .to_string()
}

/// Collapses whitespace runs to one space.
fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Canonical token text: `TokenStream` display, the same for the entry's text and syn's items.
fn canon(tokens: TokenStream) -> String {
    tokens.to_string()
}

/// Public items of a file: (ident, canonical signature text).
fn public_items(file: &syn::File) -> Vec<(String, String)> {
    let mut out = Vec::new();
    collect_items(&file.items, &mut out);
    out
}

fn is_pub(vis: &syn::Visibility) -> bool {
    matches!(vis, syn::Visibility::Public(_))
}

fn collect_items(items: &[syn::Item], out: &mut Vec<(String, String)>) {
    use quote::quote;
    for item in items {
        match item {
            syn::Item::Fn(f) if is_pub(&f.vis) => {
                let (vis, sig) = (&f.vis, &f.sig);
                out.push((sig.ident.to_string(), canon(quote!(#vis #sig))));
            }
            syn::Item::Struct(s) if is_pub(&s.vis) => {
                let (vis, ident, generics) = (&s.vis, &s.ident, &s.generics);
                out.push((
                    ident.to_string(),
                    canon(quote!(#vis struct #ident #generics)),
                ));
            }
            syn::Item::Enum(s) if is_pub(&s.vis) => {
                let (vis, ident, generics) = (&s.vis, &s.ident, &s.generics);
                out.push((ident.to_string(), canon(quote!(#vis enum #ident #generics))));
            }
            syn::Item::Trait(t) if is_pub(&t.vis) => {
                let (vis, ident, generics) = (&t.vis, &t.ident, &t.generics);
                out.push((
                    ident.to_string(),
                    canon(quote!(#vis trait #ident #generics)),
                ));
            }
            syn::Item::Type(t) if is_pub(&t.vis) => {
                let (vis, ident, generics, ty) = (&t.vis, &t.ident, &t.generics, &t.ty);
                out.push((
                    ident.to_string(),
                    canon(quote!(#vis type #ident #generics = #ty)),
                ));
            }
            syn::Item::Impl(imp) => {
                for it in &imp.items {
                    if let syn::ImplItem::Fn(f) = it
                        && is_pub(&f.vis)
                    {
                        let (vis, sig) = (&f.vis, &f.sig);
                        out.push((sig.ident.to_string(), canon(quote!(#vis #sig))));
                    }
                }
            }
            syn::Item::Mod(m) if is_pub(&m.vis) => {
                if let Some((_, items)) = &m.content {
                    collect_items(items, out);
                }
            }
            _ => {}
        }
    }
}

fn check_signature(e: &Entry, items: &[(String, String)], out: &mut Vec<Problem>) {
    let tokens = match TokenStream::from_str(&e.signature) {
        Ok(t) => t,
        Err(err) => {
            out.push(e.problem(
                "signature",
                format!("field `signature`: not valid Rust tokens: {err}"),
            ));
            return;
        }
    };
    let want = tight(&canon(tokens.clone()));
    if items.iter().any(|(_, sig)| tight(sig) == want) {
        check_output(e, &tokens, out);
        return;
    }
    let ident = signature_ident(&tokens);
    let near: Vec<&str> = items
        .iter()
        .filter(|(i, _)| Some(i.as_str()) == ident.as_deref())
        .map(|(_, s)| s.as_str())
        .collect();
    let hint = if near.is_empty() {
        match &ident {
            Some(i) => format!("there is no public item named `{i}` in {}", e.file_path),
            None => format!("no public item of {} has this signature", e.file_path),
        }
    } else {
        let near: Vec<String> = near.iter().map(|s| readable(s)).collect();
        format!("the public item there is `{}`", near.join("` or `"))
    };
    out.push(e.problem(
        "signature",
        format!(
            "field `signature`: `{}` matches no public item in {}; {hint}",
            e.signature, e.file_path
        ),
    ));
}

/// The name a signature declares: the ident after `fn`, `struct`, `enum`, `trait` or `type`.
fn signature_ident(tokens: &TokenStream) -> Option<String> {
    let mut prev_kw = false;
    for t in tokens.clone() {
        if let TokenTree::Ident(i) = t {
            let s = i.to_string();
            if prev_kw {
                return Some(s);
            }
            prev_kw = matches!(s.as_str(), "fn" | "struct" | "enum" | "trait" | "type");
        }
    }
    None
}

/// Idents of the whole signature and of the part after `->`.
fn idents(tokens: &TokenStream) -> (BTreeSet<String>, BTreeSet<String>) {
    fn walk(
        ts: TokenStream,
        all: &mut BTreeSet<String>,
        out: &mut BTreeSet<String>,
        after: &mut bool,
        depth: usize,
    ) {
        let mut prev_dash = false;
        for t in ts {
            match t {
                TokenTree::Ident(i) => {
                    let s = i.to_string();
                    if *after {
                        out.insert(s.clone());
                    }
                    all.insert(s);
                    prev_dash = false;
                }
                TokenTree::Punct(p) => {
                    if depth == 0 && prev_dash && p.as_char() == '>' {
                        *after = true;
                    }
                    prev_dash = p.as_char() == '-';
                }
                TokenTree::Group(g) => {
                    walk(g.stream(), all, out, after, depth + 1);
                    prev_dash = false;
                }
                TokenTree::Literal(_) => prev_dash = false,
            }
        }
    }
    let (mut all, mut out, mut after) = (BTreeSet::new(), BTreeSet::new(), false);
    walk(tokens.clone(), &mut all, &mut out, &mut after, 0);
    (all, out)
}

/// `returns`, `error_type` and `returns_optional` must be visible in a function's signature.
fn check_output(e: &Entry, tokens: &TokenStream, out: &mut Vec<Problem>) {
    if e.kind == Kind::Type {
        return;
    }
    let (all, output) = idents(tokens);
    for id in &e.returns {
        if let Some((name, lang, _)) = entry::split_id(id)
            && lang == e.lang
            && !output.contains(name)
        {
            out.push(Problem::new(
                &e.path,
                e.line_of_item("returns", id),
                format!("field `returns`: `{name}` does not appear in the signature's return type"),
            ));
        }
    }
    if let Some(id) = &e.error_type
        && let Some((name, lang, _)) = entry::split_id(id)
        && lang == e.lang
        && !all.contains(name)
    {
        out.push(e.problem(
            "error_type",
            format!("field `error_type`: `{name}` does not appear in the signature"),
        ));
    }
    if e.returns_optional && !output.contains("Option") {
        out.push(e.problem(
            "returns_optional",
            "field `returns_optional`: true, but the signature's return type has no `Option`",
        ));
    }
}

/// The first paragraph of the crate docs must be the entry's description.
fn check_crate_docs(e: &Entry, file: &syn::File, out: &mut Vec<Problem>) {
    let docs = doc_text(&file.attrs);
    let first = docs.split("\n\n").next().unwrap_or("");
    if squash(first) != squash(&e.description) {
        out.push(e.problem(
            "description",
            format!(
                "field `description`: the crate docs of {} must open with it (as one paragraph of `//!`);\n    entry: {}\n    docs:  {}",
                e.file_path,
                squash(&e.description),
                squash(first)
            ),
        ));
    }
}

fn doc_text(attrs: &[syn::Attribute]) -> String {
    let mut s = String::new();
    for a in attrs {
        if !a.path().is_ident("doc") {
            continue;
        }
        if let syn::Meta::NameValue(nv) = &a.meta
            && let syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(l),
                ..
            }) = &nv.value
        {
            s.push_str(l.value().trim());
            s.push('\n');
        }
    }
    s.trim().to_string()
}

fn is_test_attr(a: &syn::Attribute) -> bool {
    a.path().segments.last().is_some_and(|s| s.ident == "test")
}

/// The names of the test functions in `items` (`#[test]`, `#[tokio::test]`,
/// any `#[...::test]`), those of inline modules included.
fn test_names(items: &[syn::Item], out: &mut BTreeSet<String>) {
    for i in items {
        match i {
            syn::Item::Fn(f) if f.attrs.iter().any(is_test_attr) => {
                out.insert(f.sig.ident.to_string());
            }
            syn::Item::Mod(m) => {
                if let Some((_, items)) = &m.content {
                    test_names(items, out);
                }
            }
            _ => {}
        }
    }
}

/// The name of the test function a line of `tests:` describes: lowercase,
/// apostrophes dropped, every run of other characters that are not ASCII
/// letters or digits one `_`, no `_` at either end.
///
/// ```
/// assert_eq!(
///     fn_tool::code::test_fn_name("Don't panic: a 16 MiB frame -> 1009"),
///     "dont_panic_a_16_mib_frame_1009"
/// );
/// ```
pub fn test_fn_name(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    for c in line.chars().filter(|c| !matches!(c, '\'' | '\u{2019}')) {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    out
}

/// The `.rs` files under `dir` (root-relative), sorted; each folder's listing
/// is noted in `sources`. Folders with a `Cargo.toml` of their own (another
/// crate or workspace, such as a fixture) are skipped.
fn rust_files(root: &Path, dir: &str, sources: &mut Sources) -> Vec<String> {
    let base = root.join(dir);
    let mut found = Vec::new();
    let mut walk = walkdir::WalkDir::new(&base).sort_by_file_name().into_iter();
    while let Some(Ok(f)) = walk.next() {
        let p = f.path();
        let rel = p
            .strip_prefix(root)
            .unwrap_or(p)
            .to_string_lossy()
            .replace('\\', "/");
        if f.file_type().is_dir() {
            if f.depth() > 0 && p.join("Cargo.toml").is_file() {
                walk.skip_current_dir();
                continue;
            }
            sources.touch_dir(root, &rel);
            continue;
        }
        if p.extension().is_some_and(|x| x == "rs") {
            found.push(rel);
        }
    }
    found
}

/// The `.rs` files of crate `name` under `src/` and `tests/`; the listings
/// are noted in `sources` (a test file added later changes one of them).
fn crate_rust_files(root: &Path, name: &str, sources: &mut Sources) -> Vec<String> {
    sources.touch_dir(root, &format!("crates/{name}"));
    let mut files = rust_files(root, &format!("crates/{name}/src"), sources);
    files.extend(rust_files(root, &format!("crates/{name}/tests"), sources));
    files
}

fn check_tested(e: &Entry, cx: &Context<'_>, sources: &mut Sources, out: &mut Vec<Problem>) {
    let root = cx.root;
    if e.tested {
        let Some(t) = &e.test_file_path else { return };
        let Some(file) = sources.get(root, t) else {
            if root.join(t).is_file() {
                out.push(e.problem(
                    "test_file_path",
                    format!(
                        "field `test_file_path`: {t} is not valid Rust: {}",
                        sources.error(t)
                    ),
                ));
            }
            return;
        };
        let mut own = BTreeSet::new();
        test_names(&file.items, &mut own);
        if own.is_empty() {
            out.push(e.problem(
                "tested",
                format!("field `tested`: true, but {t} has no #[test] function"),
            ));
        } else {
            check_test_names(e, t, &own, cx, sources, out);
        }
    } else if e.kind != Kind::Type && in_crates(e) {
        let mut found = Vec::new();
        for rel in crate_rust_files(root, &e.name, sources) {
            let mut names = BTreeSet::new();
            if let Some(file) = sources.get(root, &rel) {
                test_names(&file.items, &mut names);
            }
            if !names.is_empty() {
                found.push(rel);
            }
        }
        if !found.is_empty() {
            out.push(e.problem(
                "tested",
                format!(
                    "field `tested`: false, but tests exist in {}; set `tested: true` and list them",
                    found.join(", ")
                ),
            ));
        }
    }
}

/// Each line of `tests:` names a test function ([`test_fn_name`]): in `t`
/// (the `test_file_path`, whose test names are `own`), else in another file
/// of the entry's crate or of `t`'s crate, else in the workspace's test crates.
fn check_test_names(
    e: &Entry,
    t: &str,
    own: &BTreeSet<String>,
    cx: &Context<'_>,
    sources: &mut Sources,
    out: &mut Vec<Problem>,
) {
    let mut crates: Vec<&str> = e
        .crate_name()
        .into_iter()
        .chain(entry::crate_of_path(t))
        .collect();
    crates.dedup();
    let mut in_crates: Option<BTreeSet<String>> = None;
    for line in &e.tests {
        let name = test_fn_name(line);
        if own.contains(&name) {
            continue;
        }
        let near = in_crates.get_or_insert_with(|| {
            let mut names = BTreeSet::new();
            for c in &crates {
                for rel in crate_rust_files(cx.root, c, sources) {
                    if let Some(file) = sources.get(cx.root, &rel) {
                        test_names(&file.items, &mut names);
                    }
                }
            }
            names
        });
        if near.contains(&name) || cx.workspace_tests(sources).contains(&name) {
            continue;
        }
        let elsewhere = if crates.is_empty() {
            String::new()
        } else {
            format!(", another file of crate `{}`", crates.join("` or `"))
        };
        out.push(Problem::new(
            &e.path,
            e.line_of_item("tests", line),
            format!(
                "field `tests`: no #[test] fn `{name}` (`{line}`) in {t}{elsewhere} or the workspace's test crates; nearest in {t}: {} (rename the test or change this line)",
                nearest(&name, own, 3).join(", ")
            ),
        ));
    }
}

/// The `n` names of `names` nearest to `name` (fewest edits first).
fn nearest<'a>(name: &str, names: &'a BTreeSet<String>, n: usize) -> Vec<&'a str> {
    let mut scored: Vec<(usize, &str)> = names
        .iter()
        .map(|c| (strsim::levenshtein(name, c), c.as_str()))
        .collect();
    scored.sort_unstable();
    scored.into_iter().take(n).map(|(_, c)| c).collect()
}

/// An entry with an `## Example` whose code is in `crates/<c>/` is included
/// by `crates/<c>/src/lib.rs` (`#[doc = include_str!("...")]`), so that
/// `cargo test --doc` compiles the example.
fn check_example_included(e: &Entry, root: &Path, sources: &mut Sources, out: &mut Vec<Problem>) {
    let (Some(line), Some(c)) = (e.example_line, e.crate_name()) else {
        return;
    };
    let lib = format!("crates/{c}/src/lib.rs");
    let Some(file) = sources.get(root, &lib) else {
        return;
    };
    let entry_path = crate::problem::display_path(&e.path);
    let src_dir = Path::new("crates").join(c).join("src");
    let mut included = Vec::new();
    doc_includes(&file.attrs, &mut included);
    for item in &file.items {
        if let Some(attrs) = item_attrs(item) {
            doc_includes(attrs, &mut included);
        }
    }
    if included
        .iter()
        .any(|rel| normalize(&src_dir.join(rel)) == entry_path)
    {
        return;
    }
    let rel = match entry_path.strip_prefix(&format!("crates/{c}/")) {
        Some(rest) => format!("../{rest}"),
        None => format!("../../../{entry_path}"),
    };
    out.push(Problem::new(
        &e.path,
        line,
        format!(
            "the example is not compiled: add `#[doc = include_str!(\"{rel}\")]` to `RegistryExamples` in {lib} (`#[cfg(doctest)] pub struct RegistryExamples;`), so `cargo test --doc` runs it"
        ),
    ));
}

/// The attributes of an item that can carry docs.
fn item_attrs(item: &syn::Item) -> Option<&[syn::Attribute]> {
    Some(match item {
        syn::Item::Struct(i) => &i.attrs,
        syn::Item::Enum(i) => &i.attrs,
        syn::Item::Fn(i) => &i.attrs,
        syn::Item::Mod(i) => &i.attrs,
        syn::Item::Const(i) => &i.attrs,
        syn::Item::Static(i) => &i.attrs,
        syn::Item::Type(i) => &i.attrs,
        syn::Item::Trait(i) => &i.attrs,
        syn::Item::Union(i) => &i.attrs,
        _ => return None,
    })
}

/// The paths of `#[doc = include_str!("path")]` among `attrs`.
fn doc_includes(attrs: &[syn::Attribute], out: &mut Vec<String>) {
    for a in attrs {
        if !a.path().is_ident("doc") {
            continue;
        }
        if let syn::Meta::NameValue(nv) = &a.meta
            && let syn::Expr::Macro(m) = &nv.value
            && m.mac.path.is_ident("include_str")
            && let Ok(lit) = m.mac.parse_body::<syn::LitStr>()
        {
            out.push(lit.value());
        }
    }
}

/// A relative path with `.` and `..` resolved, `/`-separated.
fn normalize(path: &Path) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir if parts.last().is_some_and(|p| *p != "..") => {
                parts.pop();
            }
            std::path::Component::ParentDir => parts.push(".."),
            std::path::Component::Normal(s) => parts.push(s.to_str().unwrap_or("")),
            _ => {}
        }
    }
    parts.join("/")
}

/// A type entry's fields and variants are the type's public fields and variants.
fn check_members(e: &Entry, file: &syn::File, out: &mut Vec<Problem>) {
    fn find<'a>(items: &'a [syn::Item], name: &str) -> Option<&'a syn::Item> {
        items.iter().find_map(|i| match i {
            syn::Item::Struct(s) if s.ident == name => Some(i),
            syn::Item::Enum(s) if s.ident == name => Some(i),
            syn::Item::Mod(m) => m.content.as_ref().and_then(|(_, it)| find(it, name)),
            _ => None,
        })
    }
    let Some(item) = find(&file.items, &e.name) else {
        return;
    };
    match item {
        syn::Item::Struct(s) => {
            let code: Vec<(String, String)> = s
                .fields
                .iter()
                .filter(|f| is_pub(&f.vis))
                .filter_map(|f| {
                    let ty = &f.ty;
                    Some((f.ident.as_ref()?.to_string(), canon(ty.to_token_stream())))
                })
                .collect();
            compare_members(e, "fields", &e.fields, &code, out);
            if !e.variants.is_empty() {
                out.push(e.problem(
                    "variants",
                    format!("field `variants`: `{}` is a struct, it has fields", e.name),
                ));
            }
        }
        syn::Item::Enum(en) => {
            let code: Vec<(String, String)> = en
                .variants
                .iter()
                .map(|v| {
                    let ty = |f: &syn::Field| canon(f.ty.to_token_stream());
                    let shape = match &v.fields {
                        syn::Fields::Unit => String::new(),
                        syn::Fields::Unnamed(u) => {
                            let tys: Vec<String> = u.unnamed.iter().map(ty).collect();
                            format!("({})", tys.join(", "))
                        }
                        syn::Fields::Named(n) => {
                            let fs: Vec<String> = n
                                .named
                                .iter()
                                .filter_map(|f| Some(format!("{}: {}", f.ident.as_ref()?, ty(f))))
                                .collect();
                            format!("{{ {} }}", fs.join(", "))
                        }
                    };
                    (v.ident.to_string(), shape)
                })
                .collect();
            compare_members(e, "variants", &e.variants, &code, out);
            if !e.fields.is_empty() {
                out.push(e.problem(
                    "fields",
                    format!("field `fields`: `{}` is an enum, it has variants", e.name),
                ));
            }
        }
        _ => {}
    }
}

fn compare_members(
    e: &Entry,
    field: &str,
    listed: &[entry::Member],
    code: &[(String, String)],
    out: &mut Vec<Problem>,
) {
    for m in listed {
        match code.iter().find(|(n, _)| *n == m.name) {
            None => out.push(Problem::new(
                &e.path,
                e.line_of_item(field, &m.name),
                format!(
                    "field `{field}`: `{}` has no public member `{}`",
                    e.name, m.name
                ),
            )),
            Some((_, ty)) if !m.ty.is_empty() => {
                if tight(&m.ty) != tight(ty) {
                    out.push(Problem::new(
                        &e.path,
                        e.line_of_item(field, &m.name),
                        format!(
                            "field `{field}`: `{}` is `{ty}` in the code, the entry says `{}`",
                            m.name, m.ty
                        ),
                    ));
                }
            }
            Some(_) => {}
        }
    }
    for (n, _) in code {
        if !listed.iter().any(|m| m.name == *n) {
            out.push(e.problem(
                field,
                format!(
                    "field `{field}`: the public member `{n}` of `{}` is not listed",
                    e.name
                ),
            ));
        }
    }
}

/// What a crate's `src/lib.rs` makes public that no entry describes: a free
/// function or a `pub use` re-export. `fn index` stores them for the crate view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiItem {
    /// A function or a re-export.
    pub kind: ApiKind,
    /// The function's name, or the name a re-export brings in (`http`,
    /// `Message`, `*` for a glob); `m::name` inside an inline `pub mod m`.
    pub name: String,
    /// One line, spaced as rustfmt prints it:
    /// `pub fn text(status: http::StatusCode, body: impl Into<Bytes>) -> Response`,
    /// `pub use tokio_tungstenite::tungstenite::Message`.
    pub signature: String,
    /// The first sentence of its doc comment; empty without one.
    pub doc: String,
}

/// The kinds of [`ApiItem`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKind {
    /// A public free function (`pub fn`).
    Function,
    /// A `pub use`, one row per name it brings in.
    ReExport,
}

impl ApiKind {
    /// As stored: `function` or `re-export`.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiKind::Function => "function",
            ApiKind::ReExport => "re-export",
        }
    }
}

/// Crate name -> its [`ApiItem`]s in file order; crates without any are absent.
pub type CrateApis = BTreeMap<String, Vec<ApiItem>>;

/// The API of each crate's `src/lib.rs` (parsed through `sources`, so a file
/// the checks read is parsed once) that is not an entry of that crate.
fn crate_apis<'a>(
    root: &Path,
    crates: impl IntoIterator<Item = &'a str>,
    entries: &[Entry],
    sources: &mut Sources,
) -> CrateApis {
    let mut out = CrateApis::new();
    let mut crates = crates.into_iter().peekable();
    if crates.peek().is_none() {
        return out;
    }
    let homes = registry::by_crate(entries);
    for name in crates {
        let rel = format!("crates/{name}/src/lib.rs");
        let Some(file) = sources.get(root, &rel) else {
            continue;
        };
        let described: BTreeSet<&str> = homes
            .get(name)
            .into_iter()
            .flatten()
            .map(|e| e.name.as_str())
            .collect();
        let mut items = Vec::new();
        collect_api(&file.items, "", &described, &mut items);
        if !items.is_empty() {
            out.insert(name.to_string(), items);
        }
    }
    out
}

fn collect_api(
    items: &[syn::Item],
    module: &str,
    described: &BTreeSet<&str>,
    out: &mut Vec<ApiItem>,
) {
    use quote::quote;
    for item in items {
        match item {
            syn::Item::Fn(f) if is_pub(&f.vis) && in_api(&f.attrs) => {
                let name = f.sig.ident.to_string();
                if described.contains(name.as_str()) {
                    continue;
                }
                let (vis, sig) = (&f.vis, &f.sig);
                out.push(ApiItem {
                    kind: ApiKind::Function,
                    name: format!("{module}{name}"),
                    signature: one_line(quote!(#vis #sig)),
                    doc: first_sentence(&doc_text(&f.attrs)),
                });
            }
            syn::Item::Use(u) if is_pub(&u.vis) && in_api(&u.attrs) => {
                let doc = first_sentence(&doc_text(&u.attrs));
                let lead = if u.leading_colon.is_some() { "::" } else { "" };
                let mut leaves = Vec::new();
                use_leaves(&u.tree, lead.to_string(), &mut leaves);
                for (path, name) in leaves {
                    if described.contains(name.as_str()) {
                        continue;
                    }
                    out.push(ApiItem {
                        kind: ApiKind::ReExport,
                        name: format!("{module}{name}"),
                        signature: format!("pub use {path}"),
                        doc: doc.clone(),
                    });
                }
            }
            syn::Item::Mod(m) if is_pub(&m.vis) && in_api(&m.attrs) => {
                if let Some((_, items)) = &m.content {
                    collect_api(items, &format!("{module}{}::", m.ident), described, out);
                }
            }
            _ => {}
        }
    }
}

/// Not `#[doc(hidden)]` and not `#[cfg(test)]`.
fn in_api(attrs: &[syn::Attribute]) -> bool {
    !attrs.iter().any(|a| {
        let syn::Meta::List(l) = &a.meta else {
            return false;
        };
        let args = l.tokens.to_string();
        (a.path().is_ident("doc") && args == "hidden")
            || (a.path().is_ident("cfg") && args == "test")
    })
}

/// Each name a `use` tree brings in: (path as written, name).
fn use_leaves(tree: &syn::UseTree, prefix: String, out: &mut Vec<(String, String)>) {
    match tree {
        syn::UseTree::Path(p) => use_leaves(&p.tree, format!("{prefix}{}::", p.ident), out),
        // `a::{self}` brings in `a`.
        syn::UseTree::Name(n) if n.ident == "self" && !prefix.is_empty() => {
            let path = prefix.trim_end_matches("::").to_string();
            let name = path.rsplit("::").next().unwrap_or_default().to_string();
            out.push((path, name));
        }
        syn::UseTree::Name(n) => out.push((format!("{prefix}{}", n.ident), n.ident.to_string())),
        syn::UseTree::Rename(r) => out.push((
            format!("{prefix}{} as {}", r.ident, r.rename),
            r.rename.to_string(),
        )),
        syn::UseTree::Glob(_) => out.push((format!("{prefix}*"), "*".to_string())),
        syn::UseTree::Group(g) => {
            for t in &g.items {
                use_leaves(t, prefix.clone(), out);
            }
        }
    }
}

/// The first sentence of a doc comment's first paragraph, on one line: up to
/// the first `.` followed by a space outside `code` (not `e.g.` or `i.e.`).
fn first_sentence(doc: &str) -> String {
    let para = squash(doc.split("\n\n").next().unwrap_or(""));
    let mut in_code = false;
    for (i, c) in para.char_indices() {
        match c {
            '`' => in_code = !in_code,
            '.' if !in_code
                && para[i + 1..].starts_with(' ')
                && !para[..i].ends_with("e.g")
                && !para[..i].ends_with("i.e") =>
            {
                return para[..=i].to_string();
            }
            _ => {}
        }
    }
    para
}

/// A token, a lifetime or an operator of several joined punctuation marks,
/// or a delimited group: what [`one_line`] spaces.
enum Atom {
    Word(String),
    Op(String),
    Group(proc_macro2::Delimiter, Vec<Atom>),
}

fn atoms(tokens: TokenStream) -> Vec<Atom> {
    let mut out = Vec::new();
    let mut op = String::new();
    let mut iter = tokens.into_iter();
    while let Some(t) = iter.next() {
        if !matches!(t, TokenTree::Punct(_)) && !op.is_empty() {
            out.push(Atom::Op(std::mem::take(&mut op)));
        }
        match t {
            TokenTree::Punct(p) if p.as_char() == '\'' && op.is_empty() => match iter.next() {
                Some(TokenTree::Ident(i)) => out.push(Atom::Word(format!("'{i}"))),
                _ => out.push(Atom::Word("'".to_string())),
            },
            TokenTree::Punct(p) => {
                op.push(p.as_char());
                if p.spacing() == proc_macro2::Spacing::Alone {
                    out.push(Atom::Op(std::mem::take(&mut op)));
                }
            }
            TokenTree::Ident(i) => out.push(Atom::Word(i.to_string())),
            TokenTree::Literal(l) => out.push(Atom::Word(l.to_string())),
            TokenTree::Group(g) => out.push(Atom::Group(g.delimiter(), atoms(g.stream()))),
        }
    }
    if !op.is_empty() {
        out.push(Atom::Op(op));
    }
    out
}

/// Tokens on one line, spaced as rustfmt spaces a signature:
/// `pub fn f<'a, T: ?Sized>(x: &'a T, y: impl Into<u8>) -> Option<&'a str> where T: Send`
/// (a `where` clause stays on the line; trailing commas go).
fn one_line(tokens: TokenStream) -> String {
    let mut out = String::new();
    write_atoms(&atoms(tokens), &mut out);
    out.trim_end_matches(',').to_string()
}

fn is_op(a: Option<&Atom>, ops: &[&str]) -> bool {
    matches!(a, Some(Atom::Op(o)) if ops.contains(&o.as_str()))
}

fn write_atoms(list: &[Atom], out: &mut String) {
    use proc_macro2::Delimiter;
    let mut prev: Option<&Atom> = None;
    for a in list {
        let glued = match (prev, a) {
            (None, _) => true,
            (_, Atom::Op(o)) if matches!(o.as_str(), "," | ";" | ":" | ">") => true,
            (Some(Atom::Op(p)), _)
                if matches!(p.as_str(), "::" | "<" | "&" | "&&" | "*" | "?" | "#") =>
            {
                true
            }
            (Some(Atom::Word(_)), Atom::Op(o)) if o == "::" || o == "<" => true,
            (Some(Atom::Op(p)), Atom::Op(o)) if p == ">" && o == "::" => true,
            // A call-like group: `text(`, `Fn(`, `fn(`, `pub(crate)`, `f<T>(`.
            (Some(Atom::Word(w)), Atom::Group(Delimiter::Parenthesis, _)) => !matches!(
                w.as_str(),
                "mut"
                    | "impl"
                    | "dyn"
                    | "as"
                    | "where"
                    | "ref"
                    | "const"
                    | "unsafe"
                    | "async"
                    | "extern"
            ),
            (Some(Atom::Op(p)), Atom::Group(Delimiter::Parenthesis, _)) => p == ">",
            _ => false,
        };
        // `<A, B,>` prints as `<A, B>`.
        if is_op(Some(a), &[">"]) && is_op(prev, &[","]) {
            out.pop();
        }
        if !glued {
            out.push(' ');
        }
        match a {
            Atom::Word(w) | Atom::Op(w) => out.push_str(w),
            Atom::Group(d, inner) => {
                let mut text = String::new();
                write_atoms(inner, &mut text);
                // A trailing comma goes, except the one of a 1-tuple `(T,)`.
                let commas = inner.iter().filter(|x| is_op(Some(x), &[","])).count();
                let args = glued && prev.is_some();
                if text.ends_with(',') && (args || commas > 1 || *d != Delimiter::Parenthesis) {
                    text.pop();
                }
                let (open, close) = match d {
                    Delimiter::Parenthesis => ("(", ")"),
                    Delimiter::Bracket => ("[", "]"),
                    Delimiter::Brace => ("{ ", " }"),
                    Delimiter::None => ("", ""),
                };
                out.push_str(open);
                out.push_str(&text);
                out.push_str(close);
            }
        }
        prev = Some(a);
    }
}

/// Parsed Rust files, each read once, and what was read ([`Inputs`]).
#[derive(Default)]
struct Sources {
    files: HashMap<String, Result<syn::File, String>>,
    inputs: Inputs,
}

impl Sources {
    fn get(&mut self, root: &Path, rel: &str) -> Option<&syn::File> {
        let inputs = &mut self.inputs;
        self.files
            .entry(rel.to_string())
            .or_insert_with(|| {
                let bytes = std::fs::read(root.join(rel)).map_err(|e| e.to_string())?;
                inputs.push((rel.to_string(), hash_bytes(&bytes)));
                let text = String::from_utf8(bytes).map_err(|e| e.to_string())?;
                syn::parse_file(&text).map_err(|e| {
                    let at = e.span().start();
                    format!("line {}: {e}", at.line)
                })
            })
            .as_ref()
            .ok()
    }

    /// Notes a file whose existence a check relies on; whether it reads.
    fn touch(&mut self, root: &Path, rel: &str) -> bool {
        let Ok(bytes) = std::fs::read(root.join(rel)) else {
            return false;
        };
        self.inputs.push((rel.to_string(), hash_bytes(&bytes)));
        true
    }

    /// Notes a directory whose listing a check relies on.
    fn touch_dir(&mut self, root: &Path, rel: &str) {
        if let Ok(h) = dir_hash(&root.join(rel)) {
            self.inputs.push((format!("{rel}/"), h));
        }
    }

    /// What was read so far; forgets the parsed files.
    fn take_inputs(&mut self) -> Inputs {
        self.files.clear();
        std::mem::take(&mut self.inputs)
    }

    fn error(&self, rel: &str) -> String {
        match self.files.get(rel) {
            Some(Err(e)) => e.clone(),
            _ => String::new(),
        }
    }
}

/// A registry crate as its `Cargo.toml` describes it: what `fn index` stores
/// for `fn show` (the crate view and the lines to depend on it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrateInfo {
    /// Package name (= folder under `crates/`).
    pub name: String,
    /// Version, inherited from `[workspace.package]` when the crate says so;
    /// empty when it has none.
    pub version: String,
    /// `description`, empty when it has none.
    pub description: String,
}

/// The crates under `root/crates/` whose `Cargo.toml` reads, sorted by name,
/// and the `repository` of the root's `[workspace.package]`. Manifests that do
/// not read are skipped (`fn check` reports them).
pub fn crates(root: &Path) -> (Vec<CrateInfo>, Option<String>) {
    let mut ignored = Vec::new();
    let ws = Workspace::load(root, &mut ignored, &mut Inputs::new());
    let mut out = Vec::new();
    for dir in registry::crate_dirs(root).unwrap_or_default() {
        let Some(name) = dir.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        let rel = PathBuf::from("crates").join(&name).join("Cargo.toml");
        if !root.join(&rel).is_file() {
            continue;
        }
        let Some(m) = Manifest::load(root, &rel, &mut ignored) else {
            continue;
        };
        out.push(CrateInfo {
            version: m.resolved_version(ws.as_ref()).unwrap_or_default(),
            name,
            description: m.description.unwrap_or_default(),
        });
    }
    (out, ws.and_then(|w| w.repository))
}

/// The root manifest's `[workspace.dependencies]` and `[workspace.package]`
/// version and repository.
struct Workspace {
    deps: BTreeSet<String>,
    deps_line: usize,
    version: Option<String>,
    repository: Option<String>,
}

impl Workspace {
    fn load(root: &Path, out: &mut Vec<Problem>, inputs: &mut Inputs) -> Option<Workspace> {
        let text = std::fs::read_to_string(root.join("Cargo.toml")).ok()?;
        inputs.push(("Cargo.toml".to_string(), hash_bytes(text.as_bytes())));
        let table: toml::Table = match toml::from_str(&text) {
            Ok(t) => t,
            Err(e) => {
                out.push(Problem::new(
                    "Cargo.toml",
                    toml_line(&text, &e),
                    format!("invalid TOML: {}", e.message()),
                ));
                return None;
            }
        };
        let ws = table.get("workspace")?.as_table()?;
        let deps = ws
            .get("dependencies")
            .and_then(|d| d.as_table())
            .map(|d| d.keys().map(|k| norm(k)).collect())
            .unwrap_or_default();
        let package = |key: &str| {
            ws.get("package")
                .and_then(|p| p.get(key))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let deps_line = line_of(&text, |l| l.trim() == "[workspace.dependencies]").unwrap_or(1);
        Some(Workspace {
            deps,
            deps_line,
            version: package("version"),
            repository: package("repository"),
        })
    }
}

fn toml_line(text: &str, e: &toml::de::Error) -> usize {
    e.span().map_or(1, |s| {
        1 + text[..s.start.min(text.len())].matches('\n').count()
    })
}

fn line_of(text: &str, pred: impl Fn(&str) -> bool) -> Option<usize> {
    text.lines().position(pred).map(|i| i + 1)
}

enum Version {
    Own(String),
    Workspace,
    Missing,
}

/// The parts of a crate's Cargo.toml the checks read.
struct Manifest {
    path: PathBuf,
    text: String,
    package: String,
    version: Version,
    description: Option<String>,
    lib_name: Option<String>,
    /// Normal dependencies (all targets): key -> package name.
    deps: BTreeMap<String, String>,
    /// The hash of the file ([`hash_bytes`]).
    hash: u64,
}

impl Manifest {
    fn load(root: &Path, rel: &Path, out: &mut Vec<Problem>) -> Option<Manifest> {
        let text = match std::fs::read_to_string(root.join(rel)) {
            Ok(t) => t,
            Err(e) => {
                out.push(Problem::file(rel, format!("cannot read: {e}")));
                return None;
            }
        };
        let table: toml::Table = match toml::from_str(&text) {
            Ok(t) => t,
            Err(e) => {
                out.push(Problem::new(
                    rel,
                    toml_line(&text, &e),
                    format!("invalid TOML: {}", e.message()),
                ));
                return None;
            }
        };
        let Some(pkg) = table.get("package").and_then(|p| p.as_table()) else {
            out.push(Problem::file(rel, "no [package] table"));
            return None;
        };
        let s = |k: &str| pkg.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let version = match pkg.get("version") {
            Some(toml::Value::String(v)) => Version::Own(v.clone()),
            Some(toml::Value::Table(t))
                if t.get("workspace").and_then(|w| w.as_bool()) == Some(true) =>
            {
                Version::Workspace
            }
            _ => Version::Missing,
        };
        let mut deps = BTreeMap::new();
        let mut add = |t: Option<&toml::Value>| {
            for (k, v) in t.and_then(|t| t.as_table()).into_iter().flatten() {
                let pkg = v
                    .get("package")
                    .and_then(|p| p.as_str())
                    .unwrap_or(k)
                    .to_string();
                deps.insert(k.clone(), pkg);
            }
        };
        add(table.get("dependencies"));
        if let Some(targets) = table.get("target").and_then(|t| t.as_table()) {
            for t in targets.values() {
                add(t.get("dependencies"));
            }
        }
        Some(Manifest {
            path: rel.to_path_buf(),
            package: s("name").unwrap_or_default(),
            description: s("description"),
            lib_name: table
                .get("lib")
                .and_then(|l| l.get("name"))
                .and_then(|n| n.as_str())
                .map(str::to_string),
            version,
            deps: deps.into_iter().map(|(k, p)| (p, k)).collect(),
            hash: hash_bytes(text.as_bytes()),
            text,
        })
    }

    /// Its version, the workspace's when it inherits it.
    fn resolved_version(&self, ws: Option<&Workspace>) -> Option<String> {
        match &self.version {
            Version::Own(v) => Some(v.clone()),
            Version::Workspace => ws.and_then(|w| w.version.clone()),
            Version::Missing => None,
        }
    }

    /// Dependency package names that are not this crate.
    fn external(&self) -> impl Iterator<Item = &str> {
        self.deps.keys().map(String::as_str)
    }

    fn line(&self, key: &str) -> usize {
        line_of(&self.text, |l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with('='))
        })
        .unwrap_or(1)
    }

    /// The line of `key` inside `[table]`.
    fn line_in(&self, table: &str, key: &str) -> usize {
        let header = format!("[{table}]");
        let start = line_of(&self.text, |l| l.trim() == header).unwrap_or(0);
        self.text
            .lines()
            .enumerate()
            .skip(start)
            .find(|(_, l)| {
                l.trim_start()
                    .strip_prefix(key)
                    .is_some_and(|r| r.trim_start().starts_with('='))
            })
            .map_or(start.max(1), |(i, _)| i + 1)
    }

    fn dep_line(&self, dep: &str) -> usize {
        let key = self.deps.get(dep).map_or(dep, String::as_str);
        line_of(&self.text, |l| {
            let l = l.trim_start();
            l.strip_prefix(key).is_some_and(|r| {
                let r = r.trim_start();
                r.starts_with('=') || r.starts_with('.')
            })
        })
        .unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use super::{
        BTreeSet, Path, doc_includes, first_sentence, nearest, normalize, one_line, test_fn_name,
        test_names,
    };
    use quote::quote;

    #[test]
    fn a_tests_line_is_normalized_to_a_function_name() {
        for (line, name) in [
            ("says hello", "says_hello"),
            (
                "a too-old id gets a reset event, then the buffer",
                "a_too_old_id_gets_a_reset_event_then_the_buffer",
            ),
            (
                "a dropped node's presence expires",
                "a_dropped_nodes_presence_expires",
            ),
            (
                "`*` allows any origin (proptest)",
                "allows_any_origin_proptest",
            ),
            (
                "CR, LF and CRLF: 1,000 lines -> 400",
                "cr_lf_and_crlf_1_000_lines_400",
            ),
            ("  UTF-8 \u{e9}t\u{e8}  ", "utf_8_t"),
            ("it\u{2019}s", "its"),
        ] {
            assert_eq!(test_fn_name(line), name, "{line:?}");
        }
    }

    #[test]
    fn test_functions_are_found_in_modules_under_any_test_attribute() {
        let file: syn::File = syn::parse_quote! {
            #[test]
            fn plain() {}
            fn helper() {}
            mod tests {
                #[tokio::test]
                async fn with_tokio() {}
                #[test_log::test]
                #[should_panic]
                fn with_a_path() {}
                mod deeper {
                    #[test]
                    fn nested() {}
                }
            }
        };
        let mut names = BTreeSet::new();
        test_names(&file.items, &mut names);
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(names, ["nested", "plain", "with_a_path", "with_tokio"]);
    }

    #[test]
    fn the_nearest_names_come_first() {
        let names: BTreeSet<String> = ["says_hello", "says_goodbye", "greets_twice", "shouts"]
            .into_iter()
            .map(String::from)
            .collect();
        assert_eq!(
            nearest("says_helo", &names, 2),
            ["says_hello", "says_goodbye"]
        );
        assert_eq!(nearest("x", &BTreeSet::new(), 3), Vec::<&str>::new());
    }

    #[test]
    fn doc_includes_resolve_against_the_source_folder() {
        let file: syn::File = syn::parse_quote! {
            #[cfg(doctest)]
            #[doc = include_str!("../ws_close.md")]
            #[doc = include_str!("../../../types/infra/CloseError.md")]
            #[doc = "plain text"]
            pub struct RegistryExamples;
        };
        let syn::Item::Struct(s) = &file.items[0] else {
            unreachable!("a struct")
        };
        let mut found = Vec::new();
        doc_includes(&s.attrs, &mut found);
        assert_eq!(
            found,
            ["../ws_close.md", "../../../types/infra/CloseError.md"]
        );
        let src = Path::new("crates/ws_close/src");
        assert_eq!(
            normalize(&src.join(&found[0])),
            "crates/ws_close/ws_close.md"
        );
        assert_eq!(normalize(&src.join(&found[1])), "types/infra/CloseError.md");
        assert_eq!(normalize(Path::new("a/../../b")), "../b");
        assert_eq!(normalize(Path::new("../../b/./c")), "../../b/c");
    }

    /// The signature of the first function in `src`, printed by [`one_line`].
    fn sig(src: &str) -> String {
        let f: syn::ItemFn = syn::parse_str(src).unwrap();
        let (vis, sig) = (&f.vis, &f.sig);
        one_line(quote!(#vis #sig))
    }

    #[test]
    fn signatures_print_on_one_line_as_rustfmt_spaces_them() {
        for (src, want) in [
            (
                "pub fn text(status: http::StatusCode, body: impl Into<Bytes>) -> Response {}",
                "pub fn text(status: http::StatusCode, body: impl Into<Bytes>) -> Response",
            ),
            (
                "pub fn json<T: serde::Serialize + ?Sized>(status: StatusCode, value: &T,) -> Response {}",
                "pub fn json<T: serde::Serialize + ?Sized>(status: StatusCode, value: &T) -> Response",
            ),
            (
                "pub fn long(\n    only_one: u8,\n) -> (u8,) {}",
                "pub fn long(only_one: u8) -> (u8,)",
            ),
            (
                "pub fn boxed<B,>(body: B) -> Body\nwhere\n    B: http_body::Body<Data = Bytes> + Send + 'static,\n    B::Error: Into<BoxError>,\n{}",
                "pub fn boxed<B>(body: B) -> Body where B: http_body::Body<Data = Bytes> + Send + 'static, B::Error: Into<BoxError>",
            ),
            (
                "pub fn pairs<'a>(q: &'a str, v: &mut Vec<[u8; 4]>) -> impl Iterator<Item = (String, String)> + 'a {}",
                "pub fn pairs<'a>(q: &'a str, v: &mut Vec<[u8; 4]>) -> impl Iterator<Item = (String, String)> + 'a",
            ),
            (
                "pub(crate) async unsafe fn raw(p: *const u8, f: fn(u8) -> u8, g: &dyn Fn(&str) -> bool, mut n: u8) -> ! {}",
                "pub(crate) async unsafe fn raw(p: *const u8, f: fn(u8) -> u8, g: &dyn Fn(&str) -> bool, mut n: u8) -> !",
            ),
            (
                "pub fn out<T: Iterator>(t: T) -> Option<<T as Iterator>::Item> {}",
                "pub fn out<T: Iterator>(t: T) -> Option<<T as Iterator>::Item>",
            ),
            (
                "pub fn hrtb(f: Box<dyn for<'a> Fn(&'a [u8]) -> &'a str + Send>) {}",
                "pub fn hrtb(f: Box<dyn for<'a> Fn(&'a [u8]) -> &'a str + Send>)",
            ),
        ] {
            assert_eq!(sig(src), want, "from {src}");
        }
    }

    #[test]
    fn the_first_sentence_ends_at_a_period_outside_code() {
        assert_eq!(
            first_sentence("A body. Holding `bytes`.\nMore.\n\nNext paragraph."),
            "A body."
        );
        assert_eq!(
            first_sentence("Calls `a. b` and\nwraps, e.g. twice. Then stops."),
            "Calls `a. b` and wraps, e.g. twice."
        );
        assert_eq!(first_sentence("No period at all"), "No period at all");
        assert_eq!(first_sentence("Ends here.\n\nSecond."), "Ends here.");
        assert_eq!(first_sentence(""), "");
    }
}
