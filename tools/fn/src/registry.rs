//! Loading every entry under a root, and the checks that need all of them:
//! duplicate IDs, dangling references, references across languages or kinds,
//! dependency cycles.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::entry::{self, Entry, Kind, RefKind};
use crate::problem::Problem;

/// Every entry under a root, or the problems that kept some from parsing.
#[derive(Debug, Default)]
pub struct Registry {
    /// The root the paths are relative to.
    pub root: PathBuf,
    /// Entries that parsed, in path order.
    pub entries: Vec<Entry>,
    /// Problems: files that did not parse, and registry-wide problems.
    pub problems: Vec<Problem>,
    /// Entry files that did not parse (their problems are in `problems`);
    /// other checks stay quiet about what these files would have defined.
    pub broken: Vec<PathBuf>,
}

impl Registry {
    /// Finds, parses and cross-checks every entry under `root`.
    ///
    /// Entries are `crates/<name>/<name>.md` and `types/<domain>/<TypeName>.md`.
    pub fn load(root: &Path) -> std::io::Result<Registry> {
        let files = entry_files(root)?;
        let mut entries = Vec::with_capacity(files.len());
        let mut problems = Vec::new();
        parse_in_order(root, &files, |chunk| {
            for r in chunk {
                match r {
                    Ok(e) => entries.push(e),
                    Err(ps) => problems.extend(ps),
                }
            }
        });
        Ok(Registry::from_parsed(root, entries, problems))
    }

    /// A registry of already parsed entries and the parse problems; runs the
    /// checks that need every entry.
    pub fn from_parsed(root: &Path, entries: Vec<Entry>, problems: Vec<Problem>) -> Registry {
        let mut broken: Vec<PathBuf> = problems.iter().map(|p| p.path.clone()).collect();
        broken.sort();
        broken.dedup();
        let mut reg = Registry {
            root: root.to_path_buf(),
            entries,
            problems,
            broken,
        };
        reg.cross_check();
        reg.problems.sort();
        reg.problems.dedup();
        reg
    }

    /// Entries by ID (the first one, when an ID is duplicated).
    pub fn by_id(&self) -> HashMap<String, &Entry> {
        let mut map = HashMap::with_capacity(self.entries.len());
        for e in &self.entries {
            map.entry(e.id()).or_insert(e);
        }
        map
    }

    /// Whether `id` may be defined by an entry file that did not parse (one
    /// named after it), so a missing ID is a consequence, not a new problem.
    pub fn maybe_broken(&self, id: &str) -> bool {
        let Some((name, _, _)) = entry::split_id(id) else {
            return false;
        };
        self.broken.iter().any(|p| {
            p.file_stem().is_some_and(|s| s == name)
                || p.parent()
                    .and_then(Path::file_name)
                    .is_some_and(|d| d == name)
        })
    }

    fn cross_check(&mut self) {
        let mut problems = Vec::new();
        let mut seen: HashMap<String, &Entry> = HashMap::with_capacity(self.entries.len());
        for e in &self.entries {
            let id = e.id();
            if let Some(first) = seen.get(&id) {
                problems.push(e.problem(
                    "name",
                    format!(
                        "field `name`: duplicate ID `{id}`, already defined by {}",
                        crate::problem::display_path(&first.path)
                    ),
                ));
            } else {
                seen.insert(id, e);
            }
        }

        for e in &self.entries {
            for (rk, id) in e.references() {
                let line = || e.line_of_item(rk.field(), id);
                let field = rk.field();
                let Some((_, lang, _)) = entry::split_id(id) else {
                    continue; // reported by the entry's own checks
                };
                if lang != e.lang {
                    problems.push(Problem::new(
                        &e.path,
                        line(),
                        format!(
                            "field `{field}`: `{id}` names a {lang} entry, but this is a {} entry; references stay within one language",
                            e.lang
                        ),
                    ));
                    continue;
                }
                let Some(target) = seen.get(id) else {
                    if self.maybe_broken(id) {
                        continue; // its file has problems of its own
                    }
                    problems.push(Problem::new(
                        &e.path,
                        line(),
                        format!(
                            "field `{field}`: `{id}` does not exist in the registry{}",
                            suggest(id, &seen)
                        ),
                    ));
                    continue;
                };
                let want_type = rk != RefKind::UsesFunction;
                if want_type != (target.kind == Kind::Type) {
                    problems.push(Problem::new(
                        &e.path,
                        line(),
                        format!(
                            "field `{field}`: `{id}` is a {}, but `{field}` lists {}",
                            target.kind,
                            if want_type { "types" } else { "functions" }
                        ),
                    ));
                }
            }
        }

        problems.extend(cycles(&self.entries, &seen));
        self.problems.extend(problems);
    }
}

/// A hint for a dangling reference: an existing ID with the same name.
fn suggest(id: &str, seen: &HashMap<String, &Entry>) -> String {
    let Some((name, _, _)) = entry::split_id(id) else {
        return String::new();
    };
    let mut same: Vec<&String> = seen
        .iter()
        .filter(|(_, e)| e.name == name)
        .map(|(k, _)| k)
        .collect();
    same.sort();
    match same.first() {
        Some(s) => format!(" (did you mean `{s}`?)"),
        None => String::new(),
    }
}

/// Cycles in `uses_functions`, one problem per cycle, at the entry that closes it.
fn cycles(entries: &[Entry], by_id: &HashMap<String, &Entry>) -> Vec<Problem> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let index: HashMap<String, usize> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| by_id.get(&e.id()).is_some_and(|f| std::ptr::eq(*f, *e)))
        .map(|(i, e)| (e.id(), i))
        .collect();
    let edges: Vec<Vec<usize>> = entries
        .iter()
        .map(|e| {
            e.uses_functions
                .iter()
                .filter_map(|id| index.get(id).copied())
                .collect()
        })
        .collect();
    let mut mark = vec![Mark::New; entries.len()];
    let mut problems = Vec::new();
    let mut stack: Vec<usize> = Vec::new();
    for start in 0..entries.len() {
        if mark[start] != Mark::New {
            continue;
        }
        // Iterative DFS: (node, next edge to look at).
        let mut work = vec![(start, 0usize)];
        mark[start] = Mark::Active;
        stack.push(start);
        while let Some(&mut (node, ref mut next)) = work.last_mut() {
            if let Some(&to) = edges[node].get(*next) {
                *next += 1;
                match mark[to] {
                    Mark::New => {
                        mark[to] = Mark::Active;
                        stack.push(to);
                        work.push((to, 0));
                    }
                    Mark::Active => {
                        let from = stack.iter().position(|&n| n == to).unwrap_or(0);
                        let mut path: Vec<String> =
                            stack[from..].iter().map(|&n| entries[n].id()).collect();
                        path.push(entries[to].id());
                        let e = &entries[node];
                        problems.push(Problem::new(
                            &e.path,
                            e.line_of_item("uses_functions", &entries[to].id()),
                            format!(
                                "field `uses_functions`: dependency cycle: {}",
                                path.join(" -> ")
                            ),
                        ));
                    }
                    Mark::Done => {}
                }
            } else {
                mark[node] = Mark::Done;
                stack.pop();
                work.pop();
            }
        }
    }
    problems
}

/// The entry files under `root`, sorted: `crates/*/<dir>.md` and `types/*/*.md`.
pub fn entry_files(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !root.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("registry root {} is not a directory", root.display()),
        ));
    }
    let candidates: Vec<PathBuf> = sorted_dirs(&root.join("crates"))?
        .iter()
        .map(|dir| {
            let name = dir.file_name().unwrap_or_default().to_string_lossy();
            PathBuf::from("crates")
                .join(&*name)
                .join(format!("{name}.md"))
        })
        .collect();
    // One look-up per crate: on every core.
    let present = crate::code::parallel(&candidates, || (), |(), md| root.join(md).is_file());
    let mut out: Vec<PathBuf> = candidates
        .into_iter()
        .zip(present)
        .filter_map(|(md, ok)| ok.then_some(md))
        .collect();
    for dir in sorted_dirs(&root.join("types"))? {
        let domain = dir.file_name().unwrap_or_default().to_owned();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .filter_map(Result::ok)
            .map(|d| d.path())
            .filter(|p| p.extension().is_some_and(|x| x == "md") && p.is_file())
            .collect();
        files.sort();
        for f in files {
            let file = f.file_name().unwrap_or_default();
            out.push(PathBuf::from("types").join(&domain).join(file));
        }
    }
    Ok(out)
}

/// The crate folders under `root/crates`, sorted.
pub fn crate_dirs(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    sorted_dirs(&root.join("crates"))
}

fn sorted_dirs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|d| d.file_type().is_ok_and(|t| t.is_dir()))
        .map(|d| d.path())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// Files per unit of parallel work.
const CHUNK: usize = 128;

/// Reads and parses `files` on all cores, calling `sink` with the results
/// chunk by chunk, in file order, as soon as each chunk and those before it are done.
pub fn parse_in_order(
    root: &Path,
    files: &[PathBuf],
    mut sink: impl FnMut(Vec<Result<Entry, Vec<Problem>>>),
) {
    let one = |rel: &PathBuf| match std::fs::read(root.join(rel)) {
        Ok(bytes) => entry::parse(rel, &bytes),
        Err(e) => Err(vec![Problem::file(rel, format!("cannot read: {e}"))]),
    };
    let chunks: Vec<&[PathBuf]> = files.chunks(CHUNK).collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(8)
        .min(chunks.len());
    if threads < 2 {
        for c in chunks {
            sink(c.iter().map(one).collect());
        }
        return;
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..threads {
            let tx = tx.clone();
            let (next, chunks, one) = (&next, &chunks, &one);
            s.spawn(move || {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(c) = chunks.get(i) else { break };
                    if tx.send((i, c.iter().map(one).collect::<Vec<_>>())).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        let mut waiting = BTreeMap::new();
        let mut want = 0;
        for (i, results) in rx {
            waiting.insert(i, results);
            while let Some(results) = waiting.remove(&want) {
                sink(results);
                want += 1;
            }
        }
    });
}

/// Entries grouped by the crate that holds their implementation.
pub fn by_crate(entries: &[Entry]) -> BTreeMap<&str, Vec<&Entry>> {
    let mut map: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
    for e in entries {
        if let Some(c) = e.crate_name() {
            map.entry(c).or_default().push(e);
        }
    }
    map
}
