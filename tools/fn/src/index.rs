//! Writing `registry.db`: a new file beside the old one, renamed over it when
//! complete, so a failed or interrupted index never leaves a broken database.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};

use crate::entry::Entry;
use crate::registry::{self, Registry};

/// The SQL of the database, committed as `registry/schema.sql`.
pub const SCHEMA_SQL: &str = include_str!("../../../registry/schema.sql");

/// The line of `schema.sql` before the indexes, which are built after the load.
const INDEXES_MARKER: &str = "-- indexes:";

/// The schema version this tool writes and reads (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 3;

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

/// Why `index` wrote nothing.
#[derive(Debug)]
pub enum IndexError {
    /// Entries have problems; the registry as loaded, with them.
    Problems(Registry),
    /// The files or the database could not be read or written.
    Failed(String),
}

/// Parses every entry under `root` and writes `db`, atomically: a temporary
/// file beside `db` is filled while the entries are being parsed, then synced
/// and renamed over `db`, only if no entry has a problem. When `root` is a
/// Cargo workspace (it has a `Cargo.toml`), a problem includes metadata that
/// disagrees with the code ([`crate::code::check`]). On any problem or
/// failure, `db` is left as it was.
pub fn index(root: &Path, db: &Path) -> Result<(Registry, Counts), IndexError> {
    let files = registry::entry_files(root).map_err(|e| IndexError::Failed(e.to_string()))?;
    let dir = db
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| IndexError::Failed(format!("cannot create {}: {e}", dir.display())))?;
    let tmp = temp_path(db);
    let (filled, problems) = std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Entry>>(16);
        let writer = s.spawn(|| fill(rx.into_iter().flatten(), root, &tmp));
        let mut problems = Vec::new();
        let mut writing = true;
        registry::parse_in_order(root, &files, |chunk| {
            let mut entries = Vec::with_capacity(chunk.len());
            for r in chunk {
                match r {
                    Ok(e) => entries.push(e),
                    Err(ps) => problems.extend(ps),
                }
            }
            // A writer that failed stops reading; its error comes from join.
            writing = writing && tx.send(entries).is_ok();
        });
        drop(tx);
        let filled = writer
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (filled, problems)
    });
    let result = filled.map_err(IndexError::Failed).and_then(|filled| {
        let Filled {
            entries,
            counts,
            dangling,
            crates,
            conn,
        } = filled;
        let mut reg = Registry::from_parsed(root, entries, problems);
        // In a Cargo workspace the entries must also be true to the code (the
        // checks of `fn check`); a root of entries only has no code to hold them to.
        // The crates' API comes from the same parse of their `src/lib.rs`.
        let apis = if root.join("Cargo.toml").is_file() {
            let (code, apis) = crate::code::check_and_api(&reg);
            reg.problems.extend(code);
            reg.problems.sort();
            reg.problems.dedup();
            apis
        } else {
            crate::code::api(&reg, crates.iter().map(String::as_str))
        };
        if !reg.problems.is_empty() {
            return Err(IndexError::Problems(reg));
        }
        let dangling = match dangling {
            Some(table) => Some(table),
            None => write_apis(conn, &apis).map_err(IndexError::Failed)?,
        };
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

fn temp_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    db.with_file_name(name)
}

/// What `fill` wrote.
struct Filled {
    /// The entries, given back for the cross-check.
    entries: Vec<Entry>,
    counts: Counts,
    /// A table with a reference to no entry, if any.
    dangling: Option<String>,
    /// The names in the `crates` table.
    crates: Vec<String>,
    /// The new database, committed and still open: [`write_apis`] finishes it.
    conn: Connection,
}

/// Writes the crates' API (known once the code is parsed, after the entries)
/// into the database `fill` left open, and closes it. Returns a table with a
/// dangling reference, if any.
fn write_apis(
    mut conn: Connection,
    apis: &crate::code::CrateApis,
) -> Result<Option<String>, String> {
    let sql = |e: rusqlite::Error| format!("writing the index failed: {e}");
    let tx = conn.transaction().map_err(sql)?;
    {
        let mut ins = tx
            .prepare(
                "INSERT INTO crate_api (crate, position, kind, name, signature, doc)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(sql)?;
        for (krate, items) in apis {
            for (n, it) in items.iter().enumerate() {
                ins.execute(params![
                    krate,
                    n as i64,
                    it.kind.as_str(),
                    it.name,
                    it.signature,
                    it.doc
                ])
                .map_err(sql)?;
            }
        }
    }
    let dangling: Option<String> = tx
        .query_row("PRAGMA foreign_key_check(crate_api)", [], |r| r.get(0))
        .optional()
        .map_err(sql)?;
    tx.commit().map_err(sql)?;
    conn.close().map_err(|(_, e)| sql(e))?;
    Ok(dangling)
}

/// Writes `entries` into a new database at `path`; gives the entries back.
fn fill(entries: impl Iterator<Item = Entry>, root: &Path, path: &Path) -> Result<Filled, String> {
    let _ = std::fs::remove_file(path);
    let mut conn =
        Connection::open(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let sql = |e: rusqlite::Error| format!("writing the index failed: {e}");
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

    let tx = conn.transaction().map_err(sql)?;
    let mut counts = Counts {
        functions: 0,
        types: 0,
        refs: 0,
    };
    let mut kept = Vec::new();
    let mut crate_names = Vec::new();
    {
        let mut ins_entry = tx
            .prepare(
                "INSERT INTO entries (rowid, id, name, kind, lang, domain, version, purity,
                 signature, description, returns_optional, error_type, output, tested,
                 test_file_path, file_path, entry_path, crate, example, notes, extra)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                 ?16, ?17, ?18, ?19, ?20, ?21)",
            )
            .map_err(sql)?;
        let mut ins_fts = tx
            .prepare(
                "INSERT INTO entries_fts (rowid, name, description, tags, signature, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(sql)?;
        let mut ins_tag = tx
            .prepare("INSERT INTO tags (entry_id, tag) VALUES (?1, ?2)")
            .map_err(sql)?;
        let mut ins_param = tx
            .prepare("INSERT INTO params (entry_id, position, name, desc) VALUES (?1, ?2, ?3, ?4)")
            .map_err(sql)?;
        let mut ins_test = tx
            .prepare("INSERT INTO tests (entry_id, position, description) VALUES (?1, ?2, ?3)")
            .map_err(sql)?;
        let mut ins_import = tx
            .prepare("INSERT INTO imports (entry_id, package) VALUES (?1, ?2)")
            .map_err(sql)?;
        let mut ins_member = tx
            .prepare(
                "INSERT INTO members (entry_id, role, position, name, type, desc)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(sql)?;
        let mut ins_ref = tx
            .prepare("INSERT INTO refs (from_id, to_id, rel) VALUES (?1, ?2, ?3)")
            .map_err(sql)?;

        // A duplicate ID is the cross-check's to report; it is written once.
        let mut written = std::collections::HashSet::new();
        for (i, e) in entries.enumerate() {
            let id = e.id();
            if !written.insert(id.clone()) {
                kept.push(e);
                continue;
            }
            let rowid = i64::try_from(i + 1).map_err(|e| e.to_string())?;
            let extra = serde_json::to_string(&e.extra).map_err(|e| e.to_string())?;
            ins_entry
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
            ins_fts
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
                ins_tag.execute(params![id, t]).map_err(sql)?;
            }
            for (n, p) in e.params.iter().enumerate() {
                ins_param
                    .execute(params![id, n as i64, p.name, p.desc])
                    .map_err(sql)?;
            }
            for (n, t) in e.tests.iter().enumerate() {
                ins_test.execute(params![id, n as i64, t]).map_err(sql)?;
            }
            for imp in unique(&e.imports) {
                ins_import.execute(params![id, imp]).map_err(sql)?;
            }
            for (role, list) in [("field", &e.fields), ("variant", &e.variants)] {
                for (n, m) in list.iter().enumerate() {
                    ins_member
                        .execute(params![id, role, n as i64, m.name, m.ty, m.desc])
                        .map_err(sql)?;
                }
            }
            let mut refs: Vec<(&str, &str)> =
                e.references().map(|(rk, to)| (to, rk.rel())).collect();
            refs.sort_unstable();
            refs.dedup();
            for (to, rel) in refs {
                counts.refs += ins_ref.execute(params![id, to, rel]).map_err(sql)?;
            }
            count(&mut counts, &e);
            kept.push(e);
        }

        let (crates, repository) = crate::code::crates(root);
        let mut ins_crate = tx
            .prepare(
                "INSERT INTO crates (name, version, description, path) VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(sql)?;
        for c in &crates {
            crate_names.push(c.name.clone());
            ins_crate
                .execute(params![
                    c.name,
                    c.version,
                    c.description,
                    format!("crates/{}", c.name)
                ])
                .map_err(sql)?;
        }

        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut meta = tx
            .prepare("INSERT INTO meta (key, value) VALUES (?1, ?2)")
            .map_err(sql)?;
        // Absolute, so `fn show` prints path dependencies that work from anywhere.
        let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        for (k, v) in [
            ("schema_version", Some(SCHEMA_VERSION.to_string())),
            ("root", Some(root.display().to_string())),
            ("repository", repository),
            ("indexed_at", Some(now.to_string())),
            ("entries", Some(kept.len().to_string())),
            ("tool_version", Some(env!("CARGO_PKG_VERSION").to_string())),
        ] {
            if let Some(v) = v {
                meta.execute(params![k, v]).map_err(sql)?;
            }
        }
    }
    tx.execute_batch(indexes).map_err(sql)?;
    // Dangling references are the cross-check's to report (with file and
    // line); here they only mean the file must not be used.
    let dangling: Option<String> = tx
        .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
        .optional()
        .map_err(sql)?;
    tx.commit().map_err(sql)?;
    Ok(Filled {
        entries: kept,
        counts,
        dangling,
        crates: crate_names,
        conn,
    })
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
        crate::entry::Kind::Type => c.types += 1,
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
