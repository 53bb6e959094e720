//! The registry entry: a Markdown file with YAML frontmatter, parsed strictly.
//!
//! Parsing never stops at the first problem: every field is checked and each
//! problem names the file, the line of the field and the field itself.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;
use serde_norway::Value as Yaml;

use crate::problem::Problem;

/// What an entry describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A function: one crate under `crates/`.
    Function,
    /// A type: an entry under `types/<domain>/`.
    Type,
    /// A UI component (other languages' registries have them).
    Component,
}

impl Kind {
    /// Every kind, in the spelling the frontmatter uses.
    pub const ALL: [&'static str; 3] = ["function", "type", "component"];

    /// The frontmatter spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Function => "function",
            Kind::Type => "type",
            Kind::Component => "component",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        match s {
            "function" => Some(Kind::Function),
            "type" => Some(Kind::Type),
            "component" => Some(Kind::Component),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether calling the function has effects beyond its return value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purity {
    /// Output depends only on input; no I/O, no shared state.
    Pure,
    /// Does I/O, keeps state or spawns tasks.
    Impure,
}

impl Purity {
    /// Every purity, in the spelling the frontmatter uses.
    pub const ALL: [&'static str; 2] = ["pure", "impure"];

    /// The frontmatter spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Purity::Pure => "pure",
            Purity::Impure => "impure",
        }
    }

    fn parse(s: &str) -> Option<Purity> {
        match s {
            "pure" => Some(Purity::Pure),
            "impure" => Some(Purity::Impure),
            _ => None,
        }
    }
}

/// A documented parameter of a function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Parameter name as in the signature.
    pub name: String,
    /// What it is for.
    pub desc: String,
}

/// A field of a struct or a variant of an enum, on a type entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Field or variant name.
    pub name: String,
    /// The field's Rust type (empty for a unit variant).
    pub ty: String,
    /// What it means.
    pub desc: String,
}

/// Which list a reference comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefKind {
    /// `uses_functions`
    UsesFunction,
    /// `uses_types`
    UsesType,
    /// `returns`
    Returns,
    /// `error_type`
    ErrorType,
}

impl RefKind {
    /// The frontmatter field the reference is listed in.
    pub fn field(self) -> &'static str {
        match self {
            RefKind::UsesFunction => "uses_functions",
            RefKind::UsesType => "uses_types",
            RefKind::Returns => "returns",
            RefKind::ErrorType => "error_type",
        }
    }

    /// The `rel` value stored in the `refs` table.
    pub fn rel(self) -> &'static str {
        match self {
            RefKind::UsesFunction => "uses_function",
            RefKind::UsesType => "uses_type",
            RefKind::Returns => "returns",
            RefKind::ErrorType => "error_type",
        }
    }
}

/// One parsed registry entry.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The `.md` file, relative to the registry root.
    pub path: PathBuf,
    /// `name`: the crate name for functions, the type name for types.
    pub name: String,
    /// `kind`.
    pub kind: Kind,
    /// `lang`: `rust` here; other languages' entries may share the registry.
    pub lang: String,
    /// `domain`: `infra`, `core`, ...
    pub domain: String,
    /// `version`: semver, always written as a quoted string.
    pub version: String,
    /// `purity`.
    pub purity: Purity,
    /// `signature`, in the entry's own language.
    pub signature: String,
    /// `description`: one paragraph.
    pub description: String,
    /// `tags`.
    pub tags: Vec<String>,
    /// `uses_functions`: IDs of registry functions it calls.
    pub uses_functions: Vec<String>,
    /// `uses_types`: IDs of registry types it uses.
    pub uses_types: Vec<String>,
    /// `returns`: IDs of registry types it returns.
    pub returns: Vec<String>,
    /// `returns_optional`: the result may be absent.
    pub returns_optional: bool,
    /// `error_type`: ID of its error type, `None` for `""`.
    pub error_type: Option<String>,
    /// `imports`: external packages only.
    pub imports: Vec<String>,
    /// `params`.
    pub params: Vec<Param>,
    /// `output`: what it returns or does.
    pub output: String,
    /// `tested`.
    pub tested: bool,
    /// `tests`: one line per test case.
    pub tests: Vec<String>,
    /// `test_file_path`, `None` for `""`.
    pub test_file_path: Option<String>,
    /// `file_path`: the implementation, relative to the root.
    pub file_path: String,
    /// `fields` of a struct type entry.
    pub fields: Vec<Member>,
    /// `variants` of an enum type entry.
    pub variants: Vec<Member>,
    /// Keys this tool does not know, kept as they were (as JSON).
    pub extra: BTreeMap<String, Json>,
    /// The Markdown after the frontmatter.
    pub body: String,
    /// Text of the `## Example` section as rustdoc shows it: the hidden lines
    /// of its Rust code blocks (`# setup`) left out, `##` read as `#`.
    pub example: String,
    /// The file line of the `## Example` heading, when there is one.
    pub example_line: Option<usize>,
    /// Text of the `## Notes` section.
    pub notes: String,
    /// Line of each top-level frontmatter key, and the lines of the file, for
    /// pointing problems at the right place.
    pub lines: Lines,
    /// The xxh3 hash of the file's bytes: `fn index` keeps it to tell what changed.
    pub hash: u64,
}

impl Entry {
    /// The computed ID: `<name>_<lang>_<domain>`.
    pub fn id(&self) -> String {
        make_id(&self.name, &self.lang, &self.domain)
    }

    /// Every reference of the entry, with the list it is in.
    pub fn references(&self) -> impl Iterator<Item = (RefKind, &str)> {
        let f = self
            .uses_functions
            .iter()
            .map(|s| (RefKind::UsesFunction, s.as_str()));
        let t = self
            .uses_types
            .iter()
            .map(|s| (RefKind::UsesType, s.as_str()));
        let r = self.returns.iter().map(|s| (RefKind::Returns, s.as_str()));
        let e = self
            .error_type
            .iter()
            .map(|s| (RefKind::ErrorType, s.as_str()));
        f.chain(t).chain(r).chain(e)
    }

    /// The line of a top-level field (the first line of the file if absent).
    pub fn line_of(&self, field: &str) -> usize {
        self.lines.key(field)
    }

    /// The line of one item of a list field, falling back to the field's line.
    pub fn line_of_item(&self, field: &str, item: &str) -> usize {
        self.lines.item(field, item)
    }

    /// A problem in this entry, at the line of `field`.
    pub fn problem(&self, field: &str, message: impl Into<String>) -> Problem {
        Problem::new(&self.path, self.line_of(field), message)
    }

    /// The crate that holds the implementation: `x` for `crates/x/...`.
    pub fn crate_name(&self) -> Option<&str> {
        crate_of_path(&self.file_path)
    }
}

/// `crates/<x>/...` -> `x`.
pub fn crate_of_path(path: &str) -> Option<&str> {
    let mut parts = path.split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("crates"), Some(name), Some(_)) if !name.is_empty() => Some(name),
        _ => None,
    }
}

/// `<name>_<lang>_<domain>`.
pub fn make_id(name: &str, lang: &str, domain: &str) -> String {
    format!("{name}_{lang}_{domain}")
}

/// Splits an ID into `(name, lang, domain)`; `None` when it has fewer than three parts.
pub fn split_id(id: &str) -> Option<(&str, &str, &str)> {
    let (rest, domain) = id.rsplit_once('_')?;
    let (name, lang) = rest.rsplit_once('_')?;
    if name.is_empty() || lang.is_empty() || domain.is_empty() {
        return None;
    }
    Some((name, lang, domain))
}

/// The frontmatter text, to find the line of a field or item when a problem
/// is reported (found on demand: most entries have no problem).
#[derive(Debug, Clone, Default)]
pub struct Lines {
    front: String,
    /// File line of the frontmatter's first line.
    first: usize,
}

impl Lines {
    fn new(frontmatter: &str, first_line: usize) -> Lines {
        Lines {
            front: frontmatter.to_string(),
            first: first_line,
        }
    }

    /// Top-level keys with their file lines.
    fn keys(&self) -> impl Iterator<Item = (&str, usize)> {
        self.front.lines().enumerate().filter_map(|(i, line)| {
            let (key, _) = line.split_once(':')?;
            let plain = line.starts_with(|c: char| !c.is_whitespace());
            (plain && !key.starts_with(['-', '#']))
                .then(|| (key.trim().trim_matches(['"', '\'']), self.first + i))
        })
    }

    /// The line of a top-level key, or 1.
    pub fn key(&self, field: &str) -> usize {
        self.keys().find(|(k, _)| *k == field).map_or(1, |(_, n)| n)
    }

    /// The first line at or after `field` that mentions `item`.
    pub fn item(&self, field: &str, item: &str) -> usize {
        let start = self.key(field);
        let end = self
            .keys()
            .map(|(_, n)| n)
            .filter(|&n| n > start)
            .min()
            .unwrap_or(usize::MAX);
        self.front
            .lines()
            .enumerate()
            .map(|(i, l)| (self.first + i, l))
            .filter(|(n, _)| *n >= start && *n < end)
            .find(|(_, l)| l.contains(item))
            .map_or(start, |(n, _)| n)
    }
}

/// The fields of the original registry schema, in order; all but `params` required.
pub const FIELDS: [&str; 21] = [
    "name",
    "kind",
    "lang",
    "domain",
    "version",
    "purity",
    "signature",
    "description",
    "tags",
    "uses_functions",
    "uses_types",
    "returns",
    "returns_optional",
    "error_type",
    "imports",
    "params",
    "output",
    "tested",
    "tests",
    "test_file_path",
    "file_path",
];

/// Fields this tool adds for type entries.
pub const TYPE_FIELDS: [&str; 2] = ["fields", "variants"];

/// Parses one entry file. `path` is what problems will name (relative to the root).
///
/// Returns every problem found in the file, not just the first.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Entry, Vec<Problem>> {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let line = 1 + bytes[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            // Name the field the byte is in, when it is in the frontmatter.
            let lossy = String::from_utf8_lossy(bytes);
            let field = split_frontmatter(path, &lossy)
                .ok()
                .filter(|(front, _, _)| line >= 2 && line - 1 <= front.lines().count())
                .and_then(|(front, _, _)| field_at(front, line - 1))
                .map_or(String::new(), |f| format!(", in field `{f}`"));
            return Err(vec![Problem::new(
                path,
                line,
                format!(
                    "file is not valid UTF-8 (invalid byte at offset {}{field}); entries must be UTF-8 text",
                    e.valid_up_to()
                ),
            )]);
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let (front, body, body_line) = split_frontmatter(path, text).map_err(|p| vec![p])?;

    let yaml: Yaml = serde_norway::from_str(front).map_err(|e| {
        let msg = e.to_string();
        // The field is the one where the construct being parsed began
        // (`while parsing a flow sequence at line N`), else where it failed.
        let began = msg
            .find("while parsing")
            .and_then(|i| first_line_number(&msg[i..]));
        let at = began.or_else(|| e.location().map(|l| l.line()));
        let field = at.and_then(|l| Some((l, field_at(front, l)?)));
        match field {
            Some((l, f)) => vec![Problem::new(
                path,
                key_line(front, l, &f) + 1,
                format!(
                    "field `{f}`: YAML syntax error in frontmatter: {}",
                    shift_lines(&msg, 1)
                ),
            )],
            None => vec![Problem::new(
                path,
                e.location().map_or(2, |l| l.line() + 1),
                format!("YAML syntax error in frontmatter: {}", shift_lines(&msg, 1)),
            )],
        }
    })?;
    let map = match yaml {
        Yaml::Mapping(m) => m,
        Yaml::Null => {
            return Err(vec![Problem::new(path, 2, "frontmatter is empty")]);
        }
        other => {
            return Err(vec![Problem::new(
                path,
                2,
                format!(
                    "frontmatter must be a mapping of fields, found {}",
                    describe(&other)
                ),
            )]);
        }
    };

    let lines = Lines::new(front, 2);
    let mut r = Reader {
        path,
        lines: &lines,
        problems: Vec::new(),
        map: BTreeMap::new(),
    };
    for (k, v) in map {
        match k {
            Yaml::String(k) => {
                r.map.insert(k, v);
            }
            other => r.problems.push(Problem::new(
                path,
                2,
                format!("frontmatter key {} is not a string", describe(&other)),
            )),
        }
    }

    let name = r.string("name", true);
    let kind_s = r.string("kind", true);
    let lang = r.string("lang", true);
    let domain = r.string("domain", true);
    let version = r.string("version", true);
    let purity_s = r.string("purity", true);
    let signature = r.string("signature", true);
    let description = r.string("description", true);
    let tags = r.list("tags");
    let uses_functions = r.list("uses_functions");
    let uses_types = r.list("uses_types");
    let returns = r.list("returns");
    let returns_optional = r.boolean("returns_optional");
    let error_type = r.string("error_type", false);
    let imports = r.list("imports");
    let params = r
        .members("params", false)
        .into_iter()
        .map(|m| Param {
            name: m.name,
            desc: m.desc,
        })
        .collect();
    let output = r.string("output", false);
    let tested = r.boolean("tested");
    let tests = r.list("tests");
    let test_file_path = r.string("test_file_path", false);
    let file_path = r.string("file_path", true);
    let fields = r.members("fields", true);
    let variants = r.members("variants", true);

    let kind = match Kind::parse(&kind_s) {
        Some(k) => k,
        None => {
            if !kind_s.is_empty() {
                r.err(
                    "kind",
                    format!(
                        "field `kind`: unknown value `{kind_s}`; expected one of {}",
                        Kind::ALL.join(", ")
                    ),
                );
            }
            Kind::Function
        }
    };
    let purity = match Purity::parse(&purity_s) {
        Some(p) => p,
        None => {
            if !purity_s.is_empty() {
                r.err(
                    "purity",
                    format!(
                        "field `purity`: unknown value `{purity_s}`; expected one of {}",
                        Purity::ALL.join(", ")
                    ),
                );
            }
            Purity::Impure
        }
    };

    // Keys the tool does not know are kept, as JSON.
    let mut extra = BTreeMap::new();
    for (k, v) in std::mem::take(&mut r.map) {
        match serde_json::to_value(&v) {
            Ok(j) => {
                extra.insert(k, j);
            }
            Err(e) => r.err(&k, format!("field `{k}`: cannot be kept as data: {e}")),
        }
    }

    let Sections {
        example,
        notes,
        example_at,
    } = sections(body);
    let mut problems = r.problems;
    let entry = Entry {
        path: path.to_path_buf(),
        name,
        kind,
        lang,
        domain,
        version,
        purity,
        signature,
        description,
        tags,
        uses_functions,
        uses_types,
        returns,
        returns_optional: returns_optional.unwrap_or(false),
        error_type: non_empty(error_type),
        imports,
        params,
        output,
        tested: tested.unwrap_or(false),
        tests,
        test_file_path: non_empty(test_file_path),
        file_path,
        fields,
        variants,
        extra,
        body: body.to_string(),
        example,
        example_line: example_at.map(|i| body_line + i),
        notes,
        lines,
        hash: xxhash_rust::xxh3::xxh3_64(bytes),
    };
    validate(&entry, body_line, tested.is_some(), &mut problems);
    if problems.is_empty() {
        Ok(entry)
    } else {
        problems.sort();
        problems.dedup();
        Err(problems)
    }
}

fn non_empty(s: String) -> Option<String> {
    if s.is_empty() { None } else { Some(s) }
}

/// Splits `---\n<yaml>\n---\n<body>`; returns the YAML, the body and the body's first line.
fn split_frontmatter<'a>(path: &Path, text: &'a str) -> Result<(&'a str, &'a str, usize), Problem> {
    let first = text.lines().next().unwrap_or("");
    if first.trim_end() != "---" {
        return Err(Problem::file(
            path,
            "no frontmatter: an entry must start with a line `---`, then YAML fields, then a line `---`",
        ));
    }
    let after_first = &text[first.len()..];
    let after_first = after_first
        .strip_prefix("\r\n")
        .or_else(|| after_first.strip_prefix('\n'))
        .unwrap_or(after_first);
    let mut offset = 0;
    for (i, line) in after_first.split_inclusive('\n').enumerate() {
        if line.trim_end() == "---" {
            let front = &after_first[..offset];
            let body = &after_first[offset + line.len()..];
            return Ok((front, body, i + 3));
        }
        offset += line.len();
    }
    Err(Problem::file(
        path,
        "frontmatter is not closed: add a line `---` after the YAML fields",
    ))
}

/// The top-level key at or above 1-based `line` of the frontmatter.
fn field_at(front: &str, line: usize) -> Option<String> {
    front
        .lines()
        .take(line)
        .collect::<Vec<_>>()
        .iter()
        .rev()
        .find_map(|l| top_key(l))
}

/// The 1-based frontmatter line of top-level key `key`, at or above `line`.
fn key_line(front: &str, line: usize, key: &str) -> usize {
    let lines: Vec<&str> = front.lines().take(line).collect();
    lines
        .iter()
        .rposition(|l| top_key(l).as_deref() == Some(key))
        .map_or(line, |i| i + 1)
}

/// `key` of a top-level `key: value` line.
fn top_key(line: &str) -> Option<String> {
    let first = line.chars().next()?;
    if first.is_whitespace() || matches!(first, '-' | '#' | '[' | '{') {
        return None;
    }
    let (key, _) = line.split_once(':')?;
    let key = key
        .trim()
        .trim_matches(|c| c == '"' || c == '\'' || c == char::REPLACEMENT_CHARACTER);
    (!key.is_empty()).then(|| key.to_string())
}

/// The first `line N` number in a YAML error message.
fn first_line_number(msg: &str) -> Option<usize> {
    let rest = &msg[msg.find("line ")? + 5..];
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    rest[..digits].parse().ok()
}

/// Rewrites "line N" in a YAML error message to file lines (the frontmatter starts on line 2).
fn shift_lines(msg: &str, by: usize) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find("line ") {
        out.push_str(&rest[..i + 5]);
        rest = &rest[i + 5..];
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        match rest[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + by).to_string()),
            Err(_) => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

/// The `## Example` and `## Notes` sections of an entry's body.
#[derive(Debug, Default, PartialEq, Eq)]
struct Sections {
    /// The example as rustdoc shows it: the hidden lines of its Rust code
    /// blocks left out ([`visible_line`]).
    example: String,
    /// The notes, as written.
    notes: String,
    /// The 0-based line of the body that opens the example, if any.
    example_at: Option<usize>,
}

/// The text of the `## Example` and `## Notes` sections (Spanish headings of the
/// original registry accepted too). Inside a fenced code block (```` ``` ```` or
/// `~~~`) a line is code, never a heading. The example is compiled as a doctest,
/// so its Rust blocks may hold rustdoc's hidden lines (`# setup`); they are left
/// out of the example as rustdoc leaves them out of the docs.
fn sections(body: &str) -> Sections {
    let mut out = Sections::default();
    let mut current: Option<&mut String> = None;
    // The open fence's marker, and whether its block is Rust.
    let mut fence: Option<(&str, bool)> = None;
    let mut in_example = false;
    for (i, line) in body.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker = ["```", "~~~"].into_iter().find(|m| trimmed.starts_with(m));
        let code = match (fence, marker) {
            (None, Some(m)) => {
                fence = Some((m, is_rust_block(trimmed.trim_start_matches(m))));
                Some(Some(line.to_string()))
            }
            (Some((open, _)), Some(m)) if open == m => {
                fence = None;
                Some(Some(line.to_string()))
            }
            (Some((_, true)), _) if in_example => Some(visible_line(line)),
            (Some(_), _) => Some(Some(line.to_string())),
            (None, None) => None,
        };
        // A line of a fenced block: shown, or hidden (`None`).
        if let Some(shown) = code {
            if let (Some(s), Some(code)) = (current.as_deref_mut(), shown) {
                s.push_str(&code);
                s.push('\n');
            }
            continue;
        }
        if let Some(h) = line.strip_prefix("## ") {
            in_example = false;
            current = match h.trim().to_ascii_lowercase().as_str() {
                "example" | "examples" | "ejemplo" | "ejemplos" => {
                    in_example = true;
                    out.example_at.get_or_insert(i);
                    Some(&mut out.example)
                }
                "notes" | "notas" => Some(&mut out.notes),
                _ => None,
            };
            continue;
        }
        if line.starts_with("# ") {
            current = None;
            in_example = false;
        }
        if let Some(s) = current.as_deref_mut() {
            s.push_str(line);
            s.push('\n');
        }
    }
    out.example = out.example.trim().to_string();
    out.notes = out.notes.trim().to_string();
    out
}

/// Whether rustdoc compiles a fenced block with this info string as Rust:
/// `rust` among its words, or no words but rustdoc's own attributes
/// (`no_run`, `ignore`, `should_panic`, `edition2021`, ...), or none.
fn is_rust_block(info: &str) -> bool {
    let tokens = || {
        info.split(|c: char| c == ',' || c.is_whitespace())
            .map(|t| t.trim_matches(['{', '}', '.']))
            .filter(|t| !t.is_empty())
    };
    tokens().any(|t| t == "rust") || tokens().all(is_rustdoc_attribute)
}

/// A word of a code block's info string that rustdoc reads as its own:
/// `no_run`, `ignore`, `edition2021`, an error code of `compile_fail`, ...
fn is_rustdoc_attribute(word: &str) -> bool {
    const ATTRIBUTES: [&str; 6] = [
        "no_run",
        "ignore",
        "should_panic",
        "compile_fail",
        "test_harness",
        "standalone_crate",
    ];
    let error_code =
        word.len() > 1 && word.starts_with('E') && word[1..].bytes().all(|b| b.is_ascii_digit());
    ATTRIBUTES.contains(&word)
        || word.starts_with("edition")
        || word.starts_with("ignore-")
        || error_code
}

/// A line of a Rust code block as rustdoc shows it: `None` for a hidden line
/// (`#` alone or `# ` first, after indentation), `##` at its start read as a
/// literal `#`.
fn visible_line(line: &str) -> Option<String> {
    let trimmed = line.trim();
    if trimmed.starts_with("##") {
        Some(line.replacen("##", "#", 1))
    } else if trimmed == "#" || trimmed.starts_with("# ") {
        None
    } else {
        Some(line.to_string())
    }
}

fn is_snake(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn is_word(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

fn is_type_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks of one entry on its own (no other entry, no code).
fn validate(e: &Entry, body_line: usize, tested_known: bool, problems: &mut Vec<Problem>) {
    let mut err = |field: &str, msg: String| problems.push(e.problem(field, msg));

    if !e.name.is_empty() {
        match e.kind {
            Kind::Type if !is_type_name(&e.name) => err(
                "name",
                format!(
                    "field `name`: `{}` is not a type name (letters, digits, `_`)",
                    e.name
                ),
            ),
            Kind::Function | Kind::Component if !is_snake(&e.name) => err(
                "name",
                format!("field `name`: `{}` is not snake_case", e.name),
            ),
            _ => {}
        }
    }
    if !e.lang.is_empty() && !is_word(&e.lang) {
        err(
            "lang",
            format!(
                "field `lang`: `{}` must be one lowercase word such as `rust` or `go` (IDs are `<name>_<lang>_<domain>`)",
                e.lang
            ),
        );
    }
    if !e.domain.is_empty() && !is_word(&e.domain) {
        err(
            "domain",
            format!(
                "field `domain`: `{}` must be one lowercase word such as `infra` (IDs are `<name>_<lang>_<domain>`)",
                e.domain
            ),
        );
    }
    if !e.version.is_empty()
        && let Err(x) = semver::Version::parse(&e.version)
    {
        err(
            "version",
            format!(
                "field `version`: `{}` is not semver (MAJOR.MINOR.PATCH): {x}",
                e.version
            ),
        );
    }
    for (rk, id) in e.references() {
        if split_id(id).is_none() {
            problems.push(Problem::new(
                &e.path,
                e.line_of_item(rk.field(), id),
                format!(
                    "field `{}`: `{id}` is not an ID; IDs are `<name>_<lang>_<domain>`, e.g. `ws_send_rust_infra`",
                    rk.field()
                ),
            ));
        }
    }
    let mut err = |field: &str, msg: String| problems.push(e.problem(field, msg));
    if e.tested && e.tests.is_empty() {
        err(
            "tests",
            "field `tests`: `tested` is true but no test is listed".into(),
        );
    }
    if e.tested && e.test_file_path.is_none() {
        err(
            "test_file_path",
            "field `test_file_path`: `tested` is true but no test file is given".into(),
        );
    }
    if tested_known && !e.tested && !e.tests.is_empty() {
        err(
            "tested",
            "field `tested`: false, but `tests` lists test cases".into(),
        );
    }
    if e.kind != Kind::Type && !(e.fields.is_empty() && e.variants.is_empty()) {
        err(
            "fields",
            "field `fields`/`variants`: only type entries describe fields and variants".into(),
        );
    }
    if matches!(e.kind, Kind::Function | Kind::Component) && e.example.is_empty() {
        problems.push(Problem::new(
            &e.path,
            body_line,
            "body: a function entry needs a non-empty `## Example` section",
        ));
    }

    // Where the file is must agree with what it says.
    let parts: Vec<String> = e
        .path
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let stem = e.path.file_stem().map(|s| s.to_string_lossy().into_owned());
    match parts.first().map(String::as_str) {
        Some("crates") if parts.len() == 3 => {
            let dir = &parts[1];
            if e.kind == Kind::Type {
                problems.push(e.problem(
                    "kind",
                    format!("field `kind`: type entries live in types/<domain>/<TypeName>.md, not in crates/{dir}/"),
                ));
            }
            if !e.name.is_empty() && &e.name != dir {
                problems.push(e.problem(
                    "name",
                    format!("field `name`: `{}` does not match its crate folder `crates/{dir}/` (folder = package = name)", e.name),
                ));
            }
        }
        Some("types") if parts.len() == 3 => {
            let dir = &parts[1];
            if e.kind != Kind::Type {
                problems.push(e.problem(
                    "kind",
                    format!(
                        "field `kind`: entries under types/ must be `type`, found `{}`",
                        e.kind
                    ),
                ));
            }
            if !e.domain.is_empty() && &e.domain != dir {
                problems.push(e.problem(
                    "domain",
                    format!(
                        "field `domain`: `{}` does not match its folder `types/{dir}/`",
                        e.domain
                    ),
                ));
            }
            if !e.name.is_empty() && stem.as_deref() != Some(e.name.as_str()) {
                problems.push(e.problem(
                    "name",
                    format!(
                        "field `name`: `{}` does not match the file name `{}.md`",
                        e.name,
                        stem.unwrap_or_default()
                    ),
                ));
            }
        }
        _ => {}
    }
}

/// Describes a YAML value for an error message: `number 1.0`, `a list`, ...
fn describe(v: &Yaml) -> String {
    match v {
        Yaml::Null => "nothing".into(),
        Yaml::Bool(b) => format!("boolean {b}"),
        Yaml::Number(n) => format!("number {n}"),
        Yaml::String(s) => format!("string {s:?}"),
        Yaml::Sequence(_) => "a list".into(),
        Yaml::Mapping(_) => "a mapping".into(),
        Yaml::Tagged(t) => format!("tagged value !{}", t.tag),
    }
}

/// Takes fields out of the frontmatter map one by one, recording problems.
struct Reader<'a> {
    path: &'a Path,
    lines: &'a Lines,
    problems: Vec<Problem>,
    map: BTreeMap<String, Yaml>,
}

impl Reader<'_> {
    fn err(&mut self, field: &str, msg: String) {
        self.problems
            .push(Problem::new(self.path, self.lines.key(field), msg));
    }

    fn missing(&mut self, field: &str) {
        self.problems.push(Problem::new(
            self.path,
            2,
            format!("field `{field}`: missing (required)"),
        ));
    }

    /// A string field. `non_empty`: an empty value is a problem. Numbers and
    /// booleans are refused: `version: 1.0` must be quoted to stay a string.
    fn string(&mut self, field: &str, non_empty: bool) -> String {
        match self.map.remove(field) {
            None => {
                self.missing(field);
                String::new()
            }
            Some(Yaml::String(s)) => {
                let s = s.trim().to_string();
                if non_empty && s.is_empty() {
                    self.err(field, format!("field `{field}`: must not be empty"));
                }
                s
            }
            Some(Yaml::Null) if !non_empty => String::new(),
            Some(v @ (Yaml::Number(_) | Yaml::Bool(_))) => {
                self.err(
                    field,
                    format!(
                        "field `{field}`: expected a string, found {}; quote it (`{field}: \"...\"`)",
                        describe(&v)
                    ),
                );
                String::new()
            }
            Some(v) => {
                self.err(
                    field,
                    format!("field `{field}`: expected a string, found {}", describe(&v)),
                );
                String::new()
            }
        }
    }

    /// A boolean; `None` when missing or not a boolean (already reported).
    fn boolean(&mut self, field: &str) -> Option<bool> {
        match self.map.remove(field) {
            None => {
                self.missing(field);
                None
            }
            Some(Yaml::Bool(b)) => Some(b),
            Some(v) => {
                self.err(
                    field,
                    format!(
                        "field `{field}`: expected `true` or `false`, found {}",
                        describe(&v)
                    ),
                );
                None
            }
        }
    }

    /// A list of strings; bare and quoted items alike; an empty value is an empty list.
    fn list(&mut self, field: &str) -> Vec<String> {
        match self.map.remove(field) {
            None => {
                self.missing(field);
                Vec::new()
            }
            Some(Yaml::Null) => Vec::new(),
            Some(Yaml::Sequence(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.into_iter().enumerate() {
                    match item {
                        Yaml::String(s) => out.push(s.trim().to_string()),
                        Yaml::Number(n) => out.push(n.to_string()),
                        other => {
                            let line = self.lines.key(field);
                            self.problems.push(Problem::new(
                                self.path,
                                line,
                                format!(
                                    "field `{field}`: item {} must be a string, found {}",
                                    i + 1,
                                    describe(&other)
                                ),
                            ));
                        }
                    }
                }
                out
            }
            Some(v) => {
                self.err(
                    field,
                    format!(
                        "field `{field}`: expected a list (`{field}: [a, b]` or `[]`), found {}",
                        describe(&v)
                    ),
                );
                Vec::new()
            }
        }
    }

    /// A list of `{name, desc}` (with `type` for type members). Optional fields
    /// give an empty list when absent.
    fn members(&mut self, field: &str, with_type: bool) -> Vec<Member> {
        let items = match self.map.remove(field) {
            None | Some(Yaml::Null) => return Vec::new(),
            Some(Yaml::Sequence(items)) => items,
            Some(v) => {
                self.err(
                    field,
                    format!(
                        "field `{field}`: expected a list of {{name, desc}} mappings, found {}",
                        describe(&v)
                    ),
                );
                return Vec::new();
            }
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let n = i + 1;
            let Yaml::Mapping(m) = item else {
                self.err(
                    field,
                    format!(
                        "field `{field}`: item {n} must be a mapping with `name` and `desc`, found {}",
                        describe(&item)
                    ),
                );
                continue;
            };
            let get = |k: &str| match m.get(k) {
                Some(Yaml::String(s)) => Some(Ok(s.trim().to_string())),
                None | Some(Yaml::Null) => None,
                Some(other) => Some(Err(describe(other))),
            };
            let mut member = Member {
                name: String::new(),
                ty: String::new(),
                desc: String::new(),
            };
            let mut keys: Vec<(&str, &mut String, bool)> = vec![
                ("name", &mut member.name, true),
                ("desc", &mut member.desc, false),
            ];
            if with_type {
                keys.push(("type", &mut member.ty, false));
            }
            let mut bad = Vec::new();
            for (k, slot, required) in keys {
                match get(k) {
                    Some(Ok(s)) => *slot = s,
                    Some(Err(found)) => bad.push(format!("`{k}` must be a string, found {found}")),
                    None if required => bad.push(format!("`{k}` is missing")),
                    None => {}
                }
            }
            for b in bad {
                let line = self.lines.item(field, &member.name);
                self.problems.push(Problem::new(
                    self.path,
                    line,
                    format!("field `{field}`: item {n}: {b}"),
                ));
            }
            out.push(member);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "---
name: ws_send
kind: function
lang: rust
domain: infra
version: \"0.1.0\"
purity: impure
signature: \"pub fn ws_send(client: &WsClient, msg: Bytes) -> Result<(), SendError>\"
description: Queues one message for one client.
tags: [websocket, \"send\"]
uses_functions: []
uses_types: [WsClient_rust_infra]
returns: []
returns_optional: false
error_type: \"\"
imports: [tokio]
params:
  - name: client
    desc: the target.
output: Ok when queued.
tested: true
tests:
  - queues
test_file_path: crates/ws_send/src/lib.rs
file_path: crates/ws_send/src/lib.rs
source_repo: somewhere
---

## Example

```rust
ws_send(&c, b)?;
```

## Notes

Never blocks.
";

    fn check(text: &str) -> Result<Entry, Vec<String>> {
        parse(Path::new("crates/ws_send/ws_send.md"), text.as_bytes())
            .map_err(|ps| ps.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn parses_a_good_entry() {
        let e = check(GOOD).unwrap();
        assert_eq!(e.id(), "ws_send_rust_infra");
        assert_eq!(e.tags, ["websocket", "send"]);
        assert_eq!(e.error_type, None);
        assert_eq!(e.params[0].name, "client");
        assert_eq!(e.example, "```rust\nws_send(&c, b)?;\n```");
        assert_eq!(e.notes, "Never blocks.");
        assert_eq!(e.extra["source_repo"], Json::from("somewhere"));
        assert_eq!(e.line_of("version"), 6);
        assert_eq!(e.line_of_item("uses_types", "WsClient_rust_infra"), 12);
    }

    #[test]
    fn unquoted_version_is_refused_with_its_line() {
        let errs = check(&GOOD.replace("version: \"0.1.0\"", "version: 1.0")).unwrap_err();
        assert_eq!(
            errs,
            [
                "crates/ws_send/ws_send.md:6: field `version`: expected a string, found number 1.0; quote it (`version: \"...\"`)"
            ]
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let bad = GOOD
            .replace("kind: function", "kind: funktion")
            .replace("tested: true", "tested: \"yes\"")
            .replace("\"0.1.0\"", "\"1.0\"");
        let errs = check(&bad).unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:#?}");
        assert!(errs[0].contains(":3: field `kind`: unknown value `funktion`"));
        assert!(errs[1].contains(":6: field `version`: `1.0` is not semver"));
        assert!(errs[2].contains(":21: field `tested`: expected `true` or `false`"));
    }

    #[test]
    fn missing_field_and_bad_list() {
        let bad = GOOD
            .replace("purity: impure\n", "")
            .replace("tags: [websocket, \"send\"]", "tags: websocket");
        let errs = check(&bad).unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.ends_with("field `purity`: missing (required)")),
            "{errs:#?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.contains("field `tags`: expected a list")),
            "{errs:#?}"
        );
    }

    #[test]
    fn yaml_syntax_error_points_at_the_file_line() {
        let errs =
            check(&GOOD.replace("tags: [websocket, \"send\"]", "tags: [websocket, \"send\""))
                .unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with("crates/ws_send/ws_send.md:10: field `tags`: YAML syntax error"),
            "{errs:?}"
        );
    }

    #[test]
    fn no_frontmatter_and_unclosed() {
        let errs = check("# ws_send\n").unwrap_err();
        assert!(errs[0].contains(":1: no frontmatter"));
        let errs = check("---\nname: x\n").unwrap_err();
        assert!(errs[0].contains("frontmatter is not closed"));
    }

    #[test]
    fn non_utf8_names_the_line() {
        let mut bytes = GOOD.as_bytes().to_vec();
        bytes.splice(4..4, [0xff, 0xfe]);
        let errs = parse(Path::new("x.md"), &bytes).unwrap_err();
        assert_eq!(errs[0].line, 2);
        assert!(errs[0].message.contains("not valid UTF-8"));
        assert!(errs[0].message.contains("in field `name`"), "{errs:?}");
    }

    #[test]
    fn name_must_match_folder() {
        let errs = check(&GOOD.replace("name: ws_send", "name: ws_sender")).unwrap_err();
        assert!(errs[0].contains(":2: field `name`: `ws_sender` does not match its crate folder"));
    }

    #[test]
    fn ids_split_from_the_right() {
        assert_eq!(
            split_id("ws_send_rust_infra"),
            Some(("ws_send", "rust", "infra"))
        );
        assert_eq!(split_id("error_go_core"), Some(("error", "go", "core")));
        assert_eq!(split_id("ws_send"), None);
    }

    #[test]
    fn shift_lines_rewrites_positions() {
        assert_eq!(
            shift_lines("x at line 3 column 1, while y at line 2 column 4", 1),
            "x at line 4 column 1, while y at line 3 column 4"
        );
    }

    #[test]
    fn a_heading_inside_a_fenced_block_is_code() {
        let body = "## Example\n\n```text\n# not hidden\n```\n\n~~~\n## not a heading\n~~~\n\n## Notes\n\nN.\n\n# Other\nnot notes\n";
        let found = sections(body);
        assert_eq!(
            found.example,
            "```text\n# not hidden\n```\n\n~~~\n# not a heading\n~~~"
        );
        assert_eq!(found.example_at, Some(0));
        assert_eq!(
            found.notes, "N.",
            "a `# ` line outside a fence still ends the section"
        );
    }

    #[test]
    fn the_example_leaves_out_rustdoc_hidden_lines() {
        let body = "Intro.\n\n## Example\n\n```rust\n# use std::fmt;\n#\n    # fn indented() {}\nlet x = 1;\n## [derive(Debug)]\n#[derive(Clone)]\n```\n\n```no_run,edition2021\n# hidden\nshown();\n```\n\n```toml\n# a TOML comment\n```\n\n## Notes\n\n```rust\n# notes are as written\n```\n";
        let found = sections(body);
        assert_eq!(
            found.example,
            "```rust\nlet x = 1;\n# [derive(Debug)]\n#[derive(Clone)]\n```\n\n```no_run,edition2021\nshown();\n```\n\n```toml\n# a TOML comment\n```"
        );
        assert_eq!(found.example_at, Some(2));
        assert_eq!(found.notes, "```rust\n# notes are as written\n```");
    }

    #[test]
    fn rustdoc_decides_which_blocks_are_rust() {
        for info in [
            "",
            "rust",
            "no_run",
            "rust,ignore",
            "should_panic",
            "edition2021",
            "{.rust}",
            "rust text",
            "compile_fail,E0277",
        ] {
            assert!(is_rust_block(info), "{info:?}");
        }
        for info in ["text", "toml", "sh", "json", "no_run text"] {
            assert!(!is_rust_block(info), "{info:?}");
        }
        assert_eq!(visible_line("#"), None);
        assert_eq!(visible_line("  # let x = 1;"), None);
        assert_eq!(visible_line("#[test]").as_deref(), Some("#[test]"));
        assert_eq!(visible_line("##x").as_deref(), Some("#x"));
    }
}
