//! Writing `registry.db`: a full index into a new file beside the old one,
//! renamed over it when complete, or an update of the few entries whose files
//! changed, in one SQLite transaction; either way a failed or interrupted
//! run never leaves a broken database.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, OptionalExtension, Statement, Transaction, params};

use crate::check::{self, Scope};
use crate::code::{self, Inputs};
use crate::entry::{self, Entry, Kind, RefKind};
use crate::registry::{self, Registry};

/// The SQL of the database, committed as `registry/schema.sql`.
pub const SCHEMA_SQL: &str = include_str!("../../../registry/schema.sql");

/// The line of `schema.sql` before the indexes, which are built after the load.
const INDEXES_MARKER: &str = "-- indexes:";

/// The schema version this tool writes and reads (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 4;

/// Changed files beyond which [`update`] indexes everything again.
const MAX_CHANGED_FILES: usize = 256;

/// What an index run wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Function (and component) entries.
    pub functions: usize,
    /// Type entries.
    pub types: usize,
    /// Reference edges.
    pub refs: usize,
}

/// What [`update`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Updated {
    /// Entries in the database.
    pub entries: usize,
    /// What the database holds.
    pub counts: Counts,
    /// `None` after a full index; else how many entries were checked and
    /// written again (0 when nothing changed).
    pub rechecked: Option<usize>,
}

/// Why `index` wrote nothing.
#[derive(Debug)]
pub enum IndexError {
    /// Entries have problems; the registry as loaded, with them.
    Problems(Registry),
    /// The files or the database could not be read or written.
    Failed(String),
}

/// Brings `db` up to date with the entries under `root`: when `db` was
/// written by this version of `fn` from the same root (a Cargo workspace),
/// only the entries and crates whose files changed since (modification time,
/// then content hash, in table `sources`) are parsed, checked and rewritten,
/// in one transaction; anything else (a file or folder added or removed, the
/// root `Cargo.toml` changed, a changed entry that changes its ID, kind or
/// crate, or any problem) runs [`index`]. The result is the database `index`
/// would write; on any problem or failure `db` is left as it was.
pub fn update(root: &Path, db: &Path) -> Result<Updated, IndexError> {
    // Whatever stops the update (a change it does not handle, an error)
    // leaves the database as it was; the full index then decides.
    if let Ok(Some(done)) = incremental(root, db) {
        return Ok(done);
    }
    let (reg, counts) = index(root, db)?;
    let entries = reg.entries.len();
    // Freeing every entry takes a while at scale; nobody waits for it.
    std::thread::spawn(move || drop(reg));
    Ok(Updated {
        entries,
        counts,
        rechecked: None,
    })
}

/// Parses every entry under `root` and writes `db`, atomically: a temporary
/// file beside `db` is filled while the entries are being parsed, then synced
/// and renamed over `db`, only if no entry has a problem. When `root` is a
/// Cargo workspace (it has a `Cargo.toml`), a problem includes metadata that
/// disagrees with the code ([`check::registry`] with [`Scope::Index`]). On any problem or
/// failure, `db` is left as it was.
pub fn index(root: &Path, db: &Path) -> Result<(Registry, Counts), IndexError> {
    let started = now_ns();
    let files = registry::entry_files(root).map_err(|e| IndexError::Failed(e.to_string()))?;
    let dir = db
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| IndexError::Failed(format!("cannot create {}: {e}", dir.display())))?;
    let tmp = temp_path(db);
    let mut entries = Vec::with_capacity(files.len());
    let mut problems = Vec::new();
    registry::parse_in_order(root, &files, |chunk| {
        for r in chunk {
            match r {
                Ok(e) => entries.push(e),
                Err(ps) => problems.extend(ps),
            }
        }
    });
    let mut reg = Registry::from_parsed(root, entries, problems);
    // The database is written while the code is checked; it is kept only if
    // nothing has a problem.
    let (filled, checked) = std::thread::scope(|s| {
        let writer = (reg.problems.is_empty()).then(|| s.spawn(|| fill(&reg.entries, &tmp)));
        // The checks of `fn check` but the crate map; the crates' API comes
        // from the same parse of their `src/lib.rs`.
        let checked = check::registry(&reg, Scope::Index);
        let filled = writer.map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        (filled, checked)
    });
    let mut checked = checked;
    reg.problems = std::mem::take(&mut checked.problems);
    let result = match filled {
        _ if !reg.problems.is_empty() => Err(IndexError::Problems(reg)),
        None => Err(IndexError::Failed("nothing written".to_string())),
        Some(Err(e)) => Err(IndexError::Failed(e)),
        Some(Ok(filled)) => Ok((reg, filled, checked)),
    };
    let result = result.and_then(|(reg, filled, checked)| {
        let Filled { mut counts, conn } = filled;
        let mut inputs = checked.inputs;
        inputs.extend(entry_inputs(root, &reg.entries, &checked.crates));
        inputs.sort_unstable();
        inputs.dedup_by(|a, b| a.0 == b.0);
        let dangling = finish(
            conn,
            root,
            &Finish {
                crates: &checked.crates,
                repository: checked.repository.as_deref(),
                apis: &checked.apis,
                inputs: &inputs,
                entries: reg.entries.len(),
                started,
            },
            &mut counts,
        )
        .map_err(IndexError::Failed)?;
        if let Some(table) = dangling {
            return Err(IndexError::Failed(format!(
                "a reference in table `{table}` points at no entry, though the entries check out: please report this"
            )));
        }
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .and_then(|()| std::fs::rename(&tmp, db))
            .map_err(|e| {
                IndexError::Failed(format!("cannot move the new index to {}: {e}", db.display()))
            })?;
        Ok((reg, counts))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The entry files and the folders whose listing decides which entries and
/// crates there are: `crates/`, `types/`, each `types/<domain>/`, and each
/// crate folder without an entry file of its own.
fn entry_inputs(root: &Path, entries: &[Entry], crates: &[code::CrateInfo]) -> Inputs {
    let mut out: Inputs = entries
        .iter()
        .map(|e| (crate::problem::display_path(&e.path), e.hash))
        .collect();
    let mut dirs = vec!["crates".to_string(), "types".to_string()];
    if let Ok(list) = std::fs::read_dir(root.join("types")) {
        let mut domains: Vec<String> = list
            .filter_map(Result::ok)
            .filter(|d| d.file_type().is_ok_and(|t| t.is_dir()))
            .map(|d| format!("types/{}", d.file_name().to_string_lossy()))
            .collect();
        domains.sort();
        dirs.extend(domains);
    }
    let with_md: BTreeSet<&str> = entries
        .iter()
        .filter(|e| e.path.starts_with("crates"))
        .filter_map(|e| e.path.file_stem()?.to_str())
        .collect();
    dirs.extend(
        crates
            .iter()
            .filter(|c| !with_md.contains(c.name.as_str()))
            .map(|c| format!("crates/{}", c.name)),
    );
    for d in dirs {
        if let Ok(h) = code::dir_hash(&root.join(&d)) {
            out.push((format!("{d}/"), h));
        }
    }
    out
}

fn temp_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    db.with_file_name(name)
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn sql(e: rusqlite::Error) -> String {
    format!("writing the index failed: {e}")
}

/// What `fill` wrote.
struct Filled {
    counts: Counts,
    /// The new database, committed and still open: [`finish`] completes it.
    conn: Connection,
}

/// What [`finish`] writes besides the entries.
struct Finish<'a> {
    crates: &'a [code::CrateInfo],
    repository: Option<&'a str>,
    apis: &'a code::CrateApis,
    inputs: &'a Inputs,
    entries: usize,
    started: i64,
}

/// Writes the crates, their API, the sources and `meta` (known once the code
/// is checked, after the entries) into the database `fill` left open, and
/// closes it. Returns a table with a dangling reference, if any.
fn finish(
    mut conn: Connection,
    root: &Path,
    f: &Finish<'_>,
    counts: &mut Counts,
) -> Result<Option<String>, String> {
    let tx = conn.transaction().map_err(sql)?;
    {
        let mut ins_crate = tx
            .prepare(
                "INSERT INTO crates (name, version, description, path) VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(sql)?;
        for c in f.crates {
            ins_crate
                .execute(params![
                    c.name,
                    c.version,
                    c.description,
                    format!("crates/{}", c.name)
                ])
                .map_err(sql)?;
        }
        let mut api = ApiWriter::new(&tx)?;
        for (krate, items) in f.apis {
            api.insert(krate, items)?;
        }
        let mut ins_source = tx
            .prepare("INSERT INTO sources (path, hash) VALUES (?1, ?2)")
            .map_err(sql)?;
        for (path, hash) in f.inputs {
            ins_source
                .execute(params![path, *hash as i64])
                .map_err(sql)?;
        }
        // Absolute, so `fn show` prints path dependencies that work from anywhere.
        let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        let mut meta = tx
            .prepare("INSERT INTO meta (key, value) VALUES (?1, ?2)")
            .map_err(sql)?;
        for (k, v) in [
            ("schema_version", Some(SCHEMA_VERSION.to_string())),
            ("root", Some(root.display().to_string())),
            ("repository", f.repository.map(str::to_string)),
            ("tool_version", Some(env!("CARGO_PKG_VERSION").to_string())),
        ] {
            if let Some(v) = v {
                meta.execute(params![k, v]).map_err(sql)?;
            }
        }
        write_times_and_counts(&tx, f.entries, counts, f.started)?;
    }
    // Dangling references are the cross-check's to report (with file and
    // line); here they only mean the file must not be used. Other tables
    // point at rows written with them.
    let dangling: Option<String> = tx
        .query_row("PRAGMA foreign_key_check(refs)", [], |r| r.get(0))
        .optional()
        .map_err(sql)?;
    tx.commit().map_err(sql)?;
    conn.close().map_err(|(_, e)| sql(e))?;
    Ok(dangling)
}

/// The `meta` rows that change on every run.
fn write_times_and_counts(
    tx: &Transaction<'_>,
    entries: usize,
    counts: &Counts,
    started: i64,
) -> Result<(), String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut meta = tx
        .prepare("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")
        .map_err(sql)?;
    for (k, v) in [
        ("indexed_at", now.to_string()),
        ("sources_at", started.to_string()),
        ("entries", entries.to_string()),
        ("functions", counts.functions.to_string()),
        ("types", counts.types.to_string()),
        ("refs", counts.refs.to_string()),
    ] {
        meta.execute(params![k, v]).map_err(sql)?;
    }
    Ok(())
}

/// Inserts the `crate_api` rows of one crate.
struct ApiWriter<'c> {
    ins: Statement<'c>,
}

impl<'c> ApiWriter<'c> {
    fn new(tx: &'c Transaction<'_>) -> Result<Self, String> {
        let ins = tx
            .prepare(
                "INSERT INTO crate_api (crate, position, kind, name, signature, doc)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(sql)?;
        Ok(ApiWriter { ins })
    }

    fn insert(&mut self, krate: &str, items: &[code::ApiItem]) -> Result<(), String> {
        for (n, it) in items.iter().enumerate() {
            self.ins
                .execute(params![
                    krate,
                    n as i64,
                    it.kind.as_str(),
                    it.name,
                    it.signature,
                    it.doc
                ])
                .map_err(sql)?;
        }
        Ok(())
    }
}

/// Prepared inserts of every row of one entry.
struct EntryWriter<'c> {
    entry: Statement<'c>,
    fts: Statement<'c>,
    tag: Statement<'c>,
    param: Statement<'c>,
    test: Statement<'c>,
    import: Statement<'c>,
    member: Statement<'c>,
    reference: Statement<'c>,
}

impl<'c> EntryWriter<'c> {
    fn new(tx: &'c Transaction<'_>) -> Result<Self, String> {
        let p = |s: &str| tx.prepare(s).map_err(sql);
        Ok(EntryWriter {
            entry: p(
                "INSERT INTO entries (rowid, id, name, kind, lang, domain, version, purity,
                 signature, description, returns_optional, error_type, output, tested,
                 test_file_path, file_path, entry_path, crate, example, notes, extra)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                 ?16, ?17, ?18, ?19, ?20, ?21)",
            )?,
            fts: p(
                "INSERT INTO entries_fts (rowid, name, description, tags, signature, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?,
            tag: p("INSERT INTO tags (entry_id, tag) VALUES (?1, ?2)")?,
            param: p(
                "INSERT INTO params (entry_id, position, name, desc) VALUES (?1, ?2, ?3, ?4)",
            )?,
            test: p("INSERT INTO tests (entry_id, position, description) VALUES (?1, ?2, ?3)")?,
            import: p("INSERT INTO imports (entry_id, package) VALUES (?1, ?2)")?,
            member: p(
                "INSERT INTO members (entry_id, role, position, name, type, desc)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?,
            reference: p("INSERT INTO refs (from_id, to_id, rel) VALUES (?1, ?2, ?3)")?,
        })
    }

    /// Writes `e` with `rowid`; returns the references written.
    fn insert(&mut self, rowid: i64, id: &str, e: &Entry) -> Result<usize, String> {
        let extra = serde_json::to_string(&e.extra).map_err(|e| e.to_string())?;
        self.entry
            .execute(params![
                rowid,
                id,
                e.name,
                e.kind.as_str(),
                e.lang,
                e.domain,
                e.version,
                e.purity.as_str(),
                e.signature,
                e.description,
                e.returns_optional,
                e.error_type,
                e.output,
                e.tested,
                e.test_file_path,
                e.file_path,
                crate::problem::display_path(&e.path),
                e.crate_name(),
                e.example,
                e.notes,
                extra,
            ])
            .map_err(sql)?;
        self.fts
            .execute(params![
                rowid,
                searchable_name(&e.name),
                e.description,
                e.tags.join(" "),
                e.signature,
                e.body,
            ])
            .map_err(sql)?;
        for t in unique(&e.tags) {
            self.tag.execute(params![id, t]).map_err(sql)?;
        }
        for (n, p) in e.params.iter().enumerate() {
            self.param
                .execute(params![id, n as i64, p.name, p.desc])
                .map_err(sql)?;
        }
        for (n, t) in e.tests.iter().enumerate() {
            self.test.execute(params![id, n as i64, t]).map_err(sql)?;
        }
        for imp in unique(&e.imports) {
            self.import.execute(params![id, imp]).map_err(sql)?;
        }
        for (role, list) in [("field", &e.fields), ("variant", &e.variants)] {
            for (n, m) in list.iter().enumerate() {
                self.member
                    .execute(params![id, role, n as i64, m.name, m.ty, m.desc])
                    .map_err(sql)?;
            }
        }
        let mut refs: Vec<(&str, &str)> = e.references().map(|(rk, to)| (to, rk.rel())).collect();
        refs.sort_unstable();
        refs.dedup();
        let mut n = 0;
        for (to, rel) in refs {
            n += self.reference.execute(params![id, to, rel]).map_err(sql)?;
        }
        Ok(n)
    }
}

/// Writes `entries` into a new database at `path`.
fn fill(entries: &[Entry], path: &Path) -> Result<Filled, String> {
    let _ = std::fs::remove_file(path);
    let mut conn =
        Connection::open(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    // The file is private until renamed, so no journal is needed. References
    // may point forwards, so foreign keys are checked once at the end.
    conn.execute_batch(
        "PRAGMA page_size = 16384; PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
         PRAGMA foreign_keys = OFF; PRAGMA locking_mode = EXCLUSIVE; PRAGMA cache_size = -131072;
         PRAGMA temp_store = MEMORY;",
    )
    .map_err(sql)?;
    let (tables, indexes) =
        SCHEMA_SQL.split_at(SCHEMA_SQL.find(INDEXES_MARKER).unwrap_or(SCHEMA_SQL.len()));
    conn.execute_batch(tables).map_err(sql)?;
    // The full-text index of a bulk load: terms gathered in memory (the
    // default flushes a segment every megabyte) and merged once at the end,
    // not while loading.
    conn.execute_batch(
        "INSERT INTO entries_fts (entries_fts, rank) VALUES ('hashsize', 67108864);
         INSERT INTO entries_fts (entries_fts, rank) VALUES ('automerge', 0);",
    )
    .map_err(sql)?;

    let tx = conn.transaction().map_err(sql)?;
    let mut counts = Counts {
        functions: 0,
        types: 0,
        refs: 0,
    };
    {
        let mut w = EntryWriter::new(&tx)?;
        for (i, e) in entries.iter().enumerate() {
            let rowid = i64::try_from(i + 1).map_err(|e| e.to_string())?;
            counts.refs += w.insert(rowid, &e.id(), e)?;
            count(&mut counts, e);
        }
    }

    tx.execute_batch(indexes).map_err(sql)?;
    // Updates then merge as usual.
    tx.execute_batch(
        "INSERT INTO entries_fts (entries_fts) VALUES ('optimize');
         INSERT INTO entries_fts (entries_fts, rank) VALUES ('automerge', 4);",
    )
    .map_err(sql)?;
    tx.commit().map_err(sql)?;
    Ok(Filled { counts, conn })
}

/// The items of a list once each, in order (lists are short).
fn unique(items: &[String]) -> impl Iterator<Item = &String> {
    items
        .iter()
        .enumerate()
        .filter(|(i, s)| !items[..*i].contains(s))
        .map(|(_, s)| s)
}

fn count(c: &mut Counts, e: &Entry) {
    match e.kind {
        Kind::Type => c.types += 1,
        _ => c.functions += 1,
    }
}

/// The name as indexed: itself, then its words (`ws_send ws send`,
/// `SseEvent Sse Event`), so both `ws_send` and `sse event` find it.
pub fn searchable_name(name: &str) -> String {
    let mut words = String::with_capacity(name.len() * 2 + 1);
    words.push_str(name);
    let mut prev_lower = false;
    words.push(' ');
    for c in name.chars() {
        if c == '_' || c == '-' {
            words.push(' ');
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower {
            words.push(' ');
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        words.push(c);
    }
    words
}

/// Whether a file or folder may have changed since `since` (unix ns): its
/// modification or status-change time is not older (a rename or a copy over
/// it changes the latter).
fn touched_since(m: &std::fs::Metadata, since: i64) -> bool {
    let ns = |t: std::io::Result<SystemTime>| {
        t.ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(i64::MAX, |d| {
                i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
            })
    };
    #[cfg(unix)]
    let changed = {
        use std::os::unix::fs::MetadataExt;
        m.ctime()
            .saturating_mul(1_000_000_000)
            .saturating_add(m.ctime_nsec())
    };
    #[cfg(not(unix))]
    let changed = i64::MAX;
    ns(m.modified()).max(changed) >= since
}

/// The hash of a source as [`Inputs`] keeps it (a path ending in `/` is a
/// folder); `None` when it cannot be read.
fn source_hash(root: &Path, path: &str) -> Option<u64> {
    match path.strip_suffix('/') {
        Some(dir) => code::dir_hash(&root.join(dir)).ok(),
        None => std::fs::read(root.join(path))
            .ok()
            .map(|b| code::hash_bytes(&b)),
    }
}

/// The crate folder a root-relative path is in: `x` for `crates/x/...`.
fn crate_of(path: &str) -> Option<&str> {
    entry::crate_of_path(path)
}

/// The update of [`update`]: `Ok(None)` when a full index is needed.
fn incremental(root: &Path, db: &Path) -> Result<Option<Updated>, String> {
    let started = now_ns();
    if !root.join("Cargo.toml").is_file() || !db.is_file() {
        return Ok(None);
    }
    let mut conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(sql)?;
    // Rows are replaced (deleted, then written again) while others point at
    // them; the checks above the writes keep every reference valid.
    conn.execute_batch("PRAGMA foreign_keys = OFF")
        .map_err(sql)?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql)?;
    if version != SCHEMA_VERSION {
        return Ok(None);
    }
    let meta: HashMap<String, String> = {
        let mut st = conn.prepare("SELECT key, value FROM meta").map_err(sql)?;
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(sql)?
            .collect::<Result<_, _>>()
            .map_err(sql)?
    };
    let canonical = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let number = |k: &str| meta.get(k).and_then(|v| v.parse::<i64>().ok());
    let (Some(since), Some(entries), Some(functions), Some(types), Some(refs)) = (
        number("sources_at"),
        number("entries"),
        number("functions"),
        number("types"),
        number("refs"),
    ) else {
        return Ok(None);
    };
    if meta.get("tool_version").map(String::as_str) != Some(env!("CARGO_PKG_VERSION"))
        || meta.get("root") != Some(&canonical.display().to_string())
    {
        return Ok(None);
    }

    // 1. The sources touched since the last run, and of those the ones whose
    // content changed. A second of margin covers coarse file clocks.
    let sources = Known::load(&conn, usize::try_from(entries).unwrap_or(0))?;
    let since = since.saturating_sub(1_000_000_000);
    let base = format!("{}/", root.display());
    // Most sources are under `crates/`: looked up from that folder, each
    // costs the kernel fewer path components.
    #[cfg(unix)]
    let crates_dir = std::fs::File::open(root.join("crates")).ok();
    let checked = code::parallel(
        &sources.rows,
        || base.clone(),
        |buf, &(start, end, old)| {
            let path = &sources.text[start as usize..end as usize];
            #[cfg(unix)]
            let fast = match (&crates_dir, path.strip_prefix("crates/")) {
                (Some(dir), Some(rest)) if !rest.is_empty() => Some(
                    rustix::fs::statat(dir, rest, rustix::fs::AtFlags::empty()).map_or(
                        true,
                        |st| {
                            let ns =
                                |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
                            #[allow(clippy::unnecessary_cast)]
                            let (m, c) = (
                                ns(st.st_mtime as i64, st.st_mtime_nsec as i64),
                                ns(st.st_ctime as i64, st.st_ctime_nsec as i64),
                            );
                            m.max(c) >= since
                        },
                    ),
                ),
                _ => None,
            };
            #[cfg(not(unix))]
            let fast: Option<bool> = None;
            let touched = fast.unwrap_or_else(|| {
                buf.truncate(base.len());
                buf.push_str(path);
                std::fs::metadata(&*buf).map_or(true, |m| touched_since(&m, since))
            });
            if !touched {
                return None;
            }
            let new = source_hash(root, path);
            (new != Some(old as u64)).then_some(new)
        },
    );
    let known = |p: &str| sources.hash(p);
    let mut changed_md: BTreeSet<String> = BTreeSet::new();
    let mut dirty_crates: BTreeSet<String> = BTreeSet::new();
    let mut n_changed = 0;
    for (i, new) in checked.iter().enumerate() {
        let Some(new) = new else { continue };
        let path = sources.path(i);
        n_changed += 1;
        // Gone, a listing changed (something added or removed), or the workspace.
        if new.is_none() || path.ends_with('/') || path == "Cargo.toml" {
            return Ok(None);
        }
        if path.ends_with(".md") {
            changed_md.insert(path.to_string());
        } else if let Some(c) = crate_of(path) {
            dirty_crates.insert(c.to_string());
        } else {
            return Ok(None);
        }
    }
    if n_changed > MAX_CHANGED_FILES {
        return Ok(None);
    }

    // 2. The entries to check again: those whose file changed, and those
    // whose code is in a changed crate.
    let mut dirty: BTreeSet<String> = changed_md;
    {
        let mut by_crate = conn
            .prepare(
                "SELECT entry_path FROM entries WHERE crate = ?1
                 UNION SELECT entry_path FROM entries WHERE test_file_path >= ?2 AND test_file_path < ?3",
            )
            .map_err(sql)?;
        for c in &dirty_crates {
            let rows = by_crate
                .query_map(
                    params![c, format!("crates/{c}/"), format!("crates/{c}0")],
                    |r| r.get::<_, String>(0),
                )
                .map_err(sql)?;
            for r in rows {
                dirty.insert(r.map_err(sql)?);
            }
        }
    }
    // Entry path -> (rowid, id, kind, crate) as indexed.
    let mut old: HashMap<String, Indexed> = HashMap::new();
    {
        let mut st = conn
            .prepare(
                "SELECT rowid, id, kind, crate, file_path, test_file_path, tested
                 FROM entries WHERE name = ?1 AND entry_path = ?2",
            )
            .map_err(sql)?;
        for p in &dirty {
            // An entry's name is its file's stem.
            let stem = Path::new(p)
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("");
            let Some(row) = st
                .query_row([stem, p.as_str()], |r| {
                    Ok(Indexed {
                        rowid: r.get(0)?,
                        id: r.get(1)?,
                        kind: r.get(2)?,
                        krate: r.get(3)?,
                        reads: (r.get(4)?, r.get(5)?, r.get(6)?),
                    })
                })
                .optional()
                .map_err(sql)?
            else {
                return Ok(None);
            };
            old.insert(p.clone(), row);
        }
    }
    let mut parsed: Vec<Entry> = Vec::with_capacity(dirty.len());
    for p in &dirty {
        let Ok(bytes) = std::fs::read(root.join(p)) else {
            return Ok(None);
        };
        let Ok(e) = entry::parse(Path::new(p), &bytes) else {
            return Ok(None);
        };
        let was = &old[p];
        // Others' checks rely on its ID, kind and crate: those must stay.
        if e.id() != was.id || e.kind.as_str() != was.kind || e.crate_name() != was.krate.as_deref()
        {
            return Ok(None);
        }
        // Checked alone (its crate's files unchanged), it must read what it read.
        let reads = (e.file_path.clone(), e.test_file_path.clone(), e.tested);
        if !e.crate_name().is_some_and(|c| dirty_crates.contains(c)) && reads != was.reads {
            return Ok(None);
        }
        parsed.push(e);
    }

    // 3. The registry-wide checks, for the changed entries against the rest.
    let by_id: HashMap<String, &Entry> = parsed.iter().map(|e| (e.id(), e)).collect();
    let mut homes: HashMap<String, Option<String>> = HashMap::new();
    let mut edges_changed = 0;
    {
        let mut target = conn
            .prepare_cached("SELECT kind, crate FROM entries WHERE id = ?1")
            .map_err(sql)?;
        let mut uses = conn
            .prepare_cached(
                "SELECT to_id FROM refs WHERE from_id = ?1 AND rel = 'uses_function' ORDER BY to_id",
            )
            .map_err(sql)?;
        for e in &parsed {
            for (rk, id) in e.references() {
                let Some((_, lang, _)) = entry::split_id(id) else {
                    return Ok(None);
                };
                let found: Option<(String, Option<String>)> = match by_id.get(id) {
                    Some(t) => Some((
                        t.kind.as_str().to_string(),
                        t.crate_name().map(str::to_string),
                    )),
                    None => target
                        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()
                        .map_err(sql)?,
                };
                let Some((kind, krate)) = found else {
                    return Ok(None);
                };
                if lang != e.lang || (rk != RefKind::UsesFunction) != (kind == "type") {
                    return Ok(None);
                }
                homes.insert(id.to_string(), krate);
            }
            homes.insert(e.id(), e.crate_name().map(str::to_string));
            let before: Vec<String> = uses
                .query_map([e.id()], |r| r.get(0))
                .map_err(sql)?
                .collect::<Result<_, _>>()
                .map_err(sql)?;
            let mut now: Vec<&str> = e.uses_functions.iter().map(String::as_str).collect();
            now.sort_unstable();
            now.dedup();
            if now != before {
                edges_changed += 1;
                // Two changed entries could close a cycle between them.
                if edges_changed > 1 || reaches(&conn, &now, &e.id())? {
                    return Ok(None);
                }
            }
        }
    }

    // 4. The code checks of those entries and crates.
    let mut unit_crates: BTreeSet<String> = dirty_crates.clone();
    unit_crates.extend(
        parsed
            .iter()
            .filter_map(|e| e.crate_name().map(str::to_string)),
    );
    let mut names: HashMap<String, Vec<String>> = HashMap::new();
    {
        let mut st = conn
            .prepare("SELECT name FROM entries WHERE crate = ?1")
            .map_err(sql)?;
        for c in &dirty_crates {
            let list: Vec<String> = st
                .query_map([c], |r| r.get(0))
                .map_err(sql)?
                .collect::<Result<_, _>>()
                .map_err(sql)?;
            names.insert(c.clone(), list);
        }
    }
    let is_crate = |name: &str| {
        conn.prepare_cached("SELECT 1 FROM crates WHERE name = ?1")
            .and_then(|mut st| st.exists([name]))
            .unwrap_or(false)
    };
    let home_of: HashMap<String, &str> = homes
        .iter()
        .filter_map(|(id, c)| Some((id.clone(), c.as_deref()?)))
        .collect();
    let part = code::Partial {
        root,
        entries: parsed.iter().collect(),
        crates: dirty_crates.iter().map(String::as_str).collect(),
        home_of,
        is_crate: &is_crate,
        described: names
            .iter()
            .map(|(c, list)| (c.as_str(), list.iter().map(String::as_str).collect()))
            .collect(),
    };
    let checked = code::check_partial(&part);
    if !checked.problems.is_empty() {
        return Ok(None);
    }
    // What a full index would now keep in `sources` for these crates must be
    // what it kept: the same files (their hashes may differ).
    let mut inputs = checked.inputs;
    inputs.extend(
        parsed
            .iter()
            .map(|e| (crate::problem::display_path(&e.path), e.hash)),
    );
    for c in &unit_crates {
        let own = format!("crates/{c}/{c}.md");
        if known(&own).is_none() {
            let dir = format!("crates/{c}/");
            let Some(h) = source_hash(root, &dir) else {
                return Ok(None);
            };
            inputs.push((dir, h));
        }
    }
    inputs.sort_unstable();
    inputs.dedup_by(|a, b| a.0 == b.0);
    // A changed crate is checked whole (its entries and its API): it must read
    // the files it read.
    for c in &dirty_crates {
        let prefix = format!("crates/{c}/");
        let before: BTreeSet<&str> = sources.under(&prefix).collect();
        let after: BTreeSet<&str> = inputs
            .iter()
            .map(|(p, _)| p.as_str())
            .filter(|p| p.starts_with(&prefix))
            .collect();
        if before != after {
            return Ok(None);
        }
    }
    if inputs.iter().any(|(p, _)| known(p).is_none()) {
        return Ok(None);
    }

    // 5. Write the changed rows, in one transaction.
    let tx = conn.transaction().map_err(sql)?;
    let mut counts = Counts {
        functions: usize::try_from(functions).unwrap_or(0),
        types: usize::try_from(types).unwrap_or(0),
        refs: usize::try_from(refs).unwrap_or(0),
    };
    {
        let mut w = EntryWriter::new(&tx)?;
        for e in &parsed {
            let id = e.id();
            let rowid = old[&crate::problem::display_path(&e.path)].rowid;
            let gone: usize = tx
                .execute("DELETE FROM refs WHERE from_id = ?1", [&id])
                .map_err(sql)?;
            for table in ["tags", "params", "tests", "imports", "members"] {
                tx.prepare_cached(&format!("DELETE FROM {table} WHERE entry_id = ?1"))
                    .and_then(|mut st| st.execute([&id]))
                    .map_err(sql)?;
            }
            tx.execute("DELETE FROM entries_fts WHERE rowid = ?1", [rowid])
                .map_err(sql)?;
            tx.execute("DELETE FROM entries WHERE rowid = ?1", [rowid])
                .map_err(sql)?;
            counts.refs = counts.refs.saturating_sub(gone) + w.insert(rowid, &id, e)?;
        }
        for c in &checked.crates {
            tx.execute(
                "UPDATE crates SET version = ?2, description = ?3 WHERE name = ?1",
                params![c.name, c.version, c.description],
            )
            .map_err(sql)?;
        }
        let mut api = ApiWriter::new(&tx)?;
        for c in &dirty_crates {
            tx.execute("DELETE FROM crate_api WHERE crate = ?1", [c])
                .map_err(sql)?;
            if let Some(items) = checked.apis.get(c) {
                api.insert(c, items)?;
            }
        }
        let mut set = tx
            .prepare("UPDATE sources SET hash = ?2 WHERE path = ?1")
            .map_err(sql)?;
        for (p, h) in &inputs {
            if known(p) != Some(*h as i64) {
                set.execute(params![p, *h as i64]).map_err(sql)?;
            }
        }
        let entries = usize::try_from(entries).unwrap_or(0);
        write_times_and_counts(&tx, entries, &counts, started)?;
    }
    tx.commit().map_err(sql)?;
    Ok(Some(Updated {
        entries: usize::try_from(entries).unwrap_or(0),
        counts,
        rechecked: Some(parsed.len()),
    }))
}

/// An entry as the database has it: what an update compares.
struct Indexed {
    rowid: i64,
    id: String,
    kind: String,
    krate: Option<String>,
    /// `file_path`, `test_file_path`, `tested`: which files its checks read.
    reads: (String, Option<String>, bool),
}

/// The `sources` table in memory, in path order: the paths in one string.
struct Known {
    text: String,
    /// (start, end) of each path in `text`, and its hash.
    rows: Vec<(u32, u32, i64)>,
}

impl Known {
    /// Reads the table; `entries` sizes the buffers (about three files an
    /// entry), as growing them costs more than the reading.
    fn load(conn: &Connection, entries: usize) -> Result<Known, String> {
        let mut k = Known {
            text: String::with_capacity(entries.saturating_mul(4 * 40)),
            rows: Vec::with_capacity(entries.saturating_mul(4)),
        };
        let mut st = conn
            .prepare("SELECT path, hash FROM sources ORDER BY path")
            .map_err(sql)?;
        let mut rows = st.query([]).map_err(sql)?;
        while let Some(r) = rows.next().map_err(sql)? {
            let path = r.get_ref(0).and_then(|v| Ok(v.as_str()?)).map_err(sql)?;
            let start = u32::try_from(k.text.len()).map_err(|e| e.to_string())?;
            k.text.push_str(path);
            let end = u32::try_from(k.text.len()).map_err(|e| e.to_string())?;
            k.rows.push((start, end, r.get(1).map_err(sql)?));
        }
        Ok(k)
    }

    fn path(&self, i: usize) -> &str {
        let (start, end, _) = self.rows[i];
        &self.text[start as usize..end as usize]
    }

    fn find(&self, p: &str) -> Result<usize, usize> {
        self.rows
            .binary_search_by(|&(s, e, _)| self.text[s as usize..e as usize].cmp(p))
    }

    fn hash(&self, p: &str) -> Option<i64> {
        self.find(p).ok().map(|i| self.rows[i].2)
    }

    /// The paths that start with `prefix`.
    fn under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a str> {
        let start = self.find(prefix).unwrap_or_else(|i| i);
        (start..self.rows.len())
            .map(|i| self.path(i))
            .take_while(move |p| p.starts_with(prefix))
    }
}

/// Whether any of `from` reaches `to` through `uses_function` edges.
fn reaches(conn: &Connection, from: &[&str], to: &str) -> Result<bool, String> {
    let mut st = conn
        .prepare_cached(
            "WITH RECURSIVE r(id) AS (
                 SELECT ?1
                 UNION
                 SELECT refs.to_id FROM refs JOIN r ON refs.from_id = r.id
                 WHERE refs.rel = 'uses_function' AND refs.from_id <> ?2
             )
             SELECT 1 FROM r WHERE id = ?2 LIMIT 1",
        )
        .map_err(sql)?;
    for f in from {
        if st.exists(params![f, to]).map_err(sql)? {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::searchable_name;

    #[test]
    fn names_are_split_into_words() {
        assert_eq!(searchable_name("ws_send"), "ws_send ws send");
        assert_eq!(searchable_name("SseEvent"), "SseEvent Sse Event");
        assert_eq!(searchable_name("WSClient"), "WSClient WSClient");
    }
}
