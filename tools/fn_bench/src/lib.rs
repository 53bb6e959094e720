//! Synthetic registries for the `fn` tool (fn-gen) and the benchmark of `fn index` and `fn search` on them (fn-bench).
//!
//! [`generate`] writes a registry root with function entries
//! (`crates/<name>/<name>.md`) and type entries (`types/<domain>/<Type>.md`)
//! of realistic size (1.5 to 3 KB each, frontmatter, an example and notes)
//! and references: each function uses up to four earlier functions (so the
//! graph is acyclic) and up to three types. The output depends only on the
//! seed.
//!
//! With crates ([`generate_with`]), each function also gets its crate
//! (`Cargo.toml`, `src/lib.rs`) and the root a workspace `Cargo.toml`, so
//! `fn check` passes and `fn index` runs every check against the code.
//!
//! - `fn-gen --out DIR [--entries N] [--seed S] [--with-crates]` writes one.
//! - `fn-bench [--quick] [--entries N]... [--runs R]` writes them to a
//!   temporary folder, then times `fn index` (full, and after one change),
//!   `fn search`, `fn show` and `fn deps` as whole processes, as a user runs
//!   them, and prints a table.
//!
//! # Example
//!
//! ```
//! let dir = tempfile::tempdir()?;
//! let stats = fn_bench::generate(dir.path(), 50, 7)?;
//! assert_eq!(stats.functions + stats.types, 50);
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fmt::Write as _;
use std::io;
use std::path::Path;

/// What [`generate`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Function entries.
    pub functions: usize,
    /// Type entries.
    pub types: usize,
    /// Bytes written.
    pub bytes: u64,
}

const WORDS: [&str; 24] = [
    "ws",
    "sse",
    "http",
    "router",
    "hub",
    "room",
    "emit",
    "encode",
    "decode",
    "parse",
    "cache",
    "queue",
    "retry",
    "send",
    "broadcast",
    "stream",
    "token",
    "auth",
    "session",
    "limit",
    "codec",
    "frame",
    "event",
    "pool",
];
const DOMAINS: [&str; 5] = ["infra", "core", "net", "data", "auth"];
const PROSE: [&str; 20] = [
    "the queue",
    "never blocks",
    "a slow client",
    "is closed with a code",
    "every subscriber",
    "receives the event once",
    "the buffer",
    "is bounded",
    "when the hub stops",
    "each connection",
    "gets its own task",
    "the caller",
    "decides the policy",
    "on shutdown",
    "pending requests fail",
    "with a clear error",
    "the encoder",
    "writes bytes only",
    "the registry",
    "indexes it",
];

/// A small deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }

    fn sentence(&mut self, words: usize) -> String {
        let mut s = String::new();
        for i in 0..words {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(self.pick(&PROSE));
        }
        let mut c = s.chars();
        match c.next() {
            Some(f) => f.to_uppercase().collect::<String>() + c.as_str() + ".",
            None => s,
        }
    }
}

/// Writes a registry of `entries` entries into `out` (created if needed):
/// the entries only, as [`generate_with`] without crates.
pub fn generate(out: &Path, entries: usize, seed: u64) -> io::Result<Stats> {
    generate_with(out, entries, seed, false)
}

/// Writes a registry of `entries` entries into `out` (created if needed);
/// with `crates`, also each function's crate and a root `Cargo.toml`, so
/// the root is a Cargo workspace on which `fn check` passes.
///
/// Each crate has a `Cargo.toml` whose dependencies are exactly what the
/// entry implies (`uses_functions` and the crates of the types it uses, as
/// `name.workspace = true`, plus its `imports`) and a `src/lib.rs` whose
/// crate docs open with the description, with the function of the entry's
/// signature, the types homed there (their fields as the type entries list
/// them), a `#[test]` function named after each test the entry lists, and
/// the `RegistryExamples` that includes the entries' examples. The code
/// parses but is not meant to build: its parameter types are not defined.
pub fn generate_with(out: &Path, entries: usize, seed: u64, crates: bool) -> io::Result<Stats> {
    let mut rng = Rng(seed);
    let types = entries * 15 / 100;
    let functions = entries - types;
    // Names and IDs first, so references can point anywhere they are allowed to.
    let type_ids: Vec<(String, String)> = (0..types)
        .map(|i| {
            let a = rng.pick(&WORDS);
            let b = rng.pick(&WORDS);
            let name = format!("{}{}Config{i:05}", capital(a), capital(b));
            let domain = DOMAINS[i % DOMAINS.len()].to_string();
            (name, domain)
        })
        .collect();
    let fn_names: Vec<(String, String)> = (0..functions)
        .map(|i| {
            let name = format!("{}_{}_{i:05}", rng.pick(&WORDS), rng.pick(&WORDS));
            (name, DOMAINS[rng.below(DOMAINS.len())].to_string())
        })
        .collect();
    let mut bytes = 0u64;
    // The types each function crate defines: (name, fields as (name, type)).
    let mut homed: Vec<Vec<(usize, Fields)>> = vec![Vec::new(); functions];
    for (i, (name, domain)) in type_ids.iter().enumerate() {
        let (text, fields) = type_entry(&mut rng, name, domain, &fn_names, i);
        let dir = out.join("types").join(domain);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("{name}.md")), &text)?;
        bytes += text.len() as u64;
        if let Some(home) = homed.get_mut(type_home(i, functions)) {
            home.push((i, fields));
        }
    }
    let mut workspace = String::from(
        "[workspace]\nresolver = \"3\"\nmembers = [\"crates/*\"]\n\n[workspace.dependencies]\nbytes = \"1\"\ntokio = \"1\"\n",
    );
    for (i, (name, domain)) in fn_names.iter().enumerate() {
        let f = function_entry(&mut rng, name, domain, &fn_names[..i], &type_ids);
        let dir = out.join("crates").join(name);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("{name}.md")), &f.text)?;
        bytes += f.text.len() as u64;
        if crates {
            let own: Vec<OwnType<'_>> = homed[i]
                .iter()
                .map(|(t, fields)| {
                    let (name, domain) = &type_ids[*t];
                    (name.as_str(), domain.as_str(), fields.as_slice())
                })
                .collect();
            bytes += write_crate(&dir, name, &f, &fn_names, functions, &own)?;
            let _ = writeln!(
                workspace,
                "{name} = {{ path = \"crates/{name}\", version = \"{}\" }}",
                f.version
            );
        }
    }
    if crates {
        std::fs::write(out.join("Cargo.toml"), &workspace)?;
        bytes += workspace.len() as u64;
    }
    Ok(Stats {
        functions,
        types,
        bytes,
    })
}

/// A type's fields: (name, type).
type Fields = Vec<(String, &'static str)>;

/// A type a function crate defines: its name, domain and fields.
type OwnType<'a> = (&'a str, &'a str, &'a [(String, &'a str)]);

/// The function crate that defines type `i` (of `functions` function crates).
fn type_home(i: usize, functions: usize) -> usize {
    i % functions.max(1)
}

/// Writes `Cargo.toml` and `src/lib.rs` of function `name` into `dir`;
/// returns the bytes written.
fn write_crate(
    dir: &Path,
    name: &str,
    f: &Function,
    fns: &[(String, String)],
    functions: usize,
    own_types: &[OwnType<'_>],
) -> io::Result<u64> {
    // Registry dependencies: the used functions' crates and the used types' homes.
    let mut deps: Vec<&str> = f
        .uses_functions
        .iter()
        .map(|&i| fns[i].0.as_str())
        .chain(
            f.types_used()
                .map(|t| fns[type_home(t, functions)].0.as_str()),
        )
        .filter(|d| *d != name)
        .collect();
    deps.sort_unstable();
    deps.dedup();
    let mut toml = format!(
        "[package]\nname = \"{name}\"\nversion = \"{}\"\nedition = \"2024\"\ndescription = \"{}\"\n\n[dependencies]\nbytes.workspace = true\ntokio.workspace = true\n",
        f.version, f.description
    );
    for d in deps {
        let _ = writeln!(toml, "{d}.workspace = true");
    }
    let mut lib = format!("//! {}\n\nuse bytes::Bytes;\n\n", f.description);
    for (t, _, fields) in own_types {
        let _ = writeln!(
            lib,
            "/// A generated configuration.\n#[derive(Debug, Default)]\npub struct {t} {{"
        );
        for (n, ty) in fields.iter() {
            let _ = writeln!(lib, "    /// A generated field.\n    pub {n}: {ty},");
        }
        lib.push_str("}\n\n");
    }
    let _ = writeln!(
        lib,
        "/// {}\n{} {{\n    let _ = (client, msg, limit);\n    unimplemented!()\n}}",
        f.output, f.signature
    );
    lib.push_str("\n#[cfg(doctest)]\n");
    let _ = writeln!(lib, "#[doc = include_str!(\"../{name}.md\")]");
    for (t, domain, _) in own_types {
        let _ = writeln!(
            lib,
            "#[doc = include_str!(\"../../../types/{domain}/{t}.md\")]"
        );
    }
    lib.push_str("pub struct RegistryExamples;\n");
    if !f.tests.is_empty() {
        lib.push_str("\n#[cfg(test)]\nmod tests {\n");
        for (t, test) in f.tests.iter().enumerate() {
            let _ = writeln!(
                lib,
                "    #[test]\n    fn {test}() {{\n        assert_eq!(1 + {t}, {t} + 1);\n    }}"
            );
        }
        lib.push_str("}\n");
    }
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::write(dir.join("Cargo.toml"), &toml)?;
    std::fs::write(dir.join("src").join("lib.rs"), &lib)?;
    Ok((toml.len() + lib.len()) as u64)
}

fn capital(w: &str) -> String {
    let mut c = w.chars();
    c.next().map_or_else(String::new, |f| {
        f.to_uppercase().collect::<String>() + c.as_str()
    })
}

fn id(name: &str, domain: &str) -> String {
    format!("{name}_rust_{domain}")
}

fn list(items: &[String]) -> String {
    format!("[{}]", items.join(", "))
}

/// A function entry as generated: its text and what its crate needs.
struct Function {
    text: String,
    version: String,
    description: String,
    signature: String,
    output: String,
    /// Indexes into the function names.
    uses_functions: Vec<usize>,
    /// Indexes into the type names: `uses_types`, `returns`, `error_type`.
    uses_types: Vec<usize>,
    returns: Option<usize>,
    error_type: Option<usize>,
    /// The `#[test]` functions its crate needs, by name (none when untested).
    tests: Vec<String>,
}

impl Function {
    fn types_used(&self) -> impl Iterator<Item = usize> + '_ {
        self.uses_types
            .iter()
            .copied()
            .chain(self.returns)
            .chain(self.error_type)
    }
}

fn function_entry(
    rng: &mut Rng,
    name: &str,
    domain: &str,
    earlier: &[(String, String)],
    types: &[(String, String)],
) -> Function {
    let mut uses_fns: Vec<usize> = (0..rng.below(5).min(earlier.len()))
        .map(|_| rng.below(earlier.len()))
        .collect();
    uses_fns.sort_by(|a, b| {
        id(&earlier[*a].0, &earlier[*a].1).cmp(&id(&earlier[*b].0, &earlier[*b].1))
    });
    uses_fns.dedup();
    let uses_functions: Vec<String> = uses_fns
        .iter()
        .map(|&i| id(&earlier[i].0, &earlier[i].1))
        .collect();
    let mut uses_ty: Vec<usize> = (0..rng.below(4).min(types.len()))
        .map(|_| rng.below(types.len()))
        .collect();
    uses_ty.sort_by(|a, b| id(&types[*a].0, &types[*a].1).cmp(&id(&types[*b].0, &types[*b].1)));
    uses_ty.dedup();
    let uses_types: Vec<String> = uses_ty
        .iter()
        .map(|&i| id(&types[i].0, &types[i].1))
        .collect();
    let returns = (!types.is_empty() && rng.below(3) == 0).then(|| rng.below(types.len()));
    let error_type = (!types.is_empty() && rng.below(4) == 0).then(|| rng.below(types.len()));
    let returns_optional = rng.below(6) == 0;
    let tested = rng.below(5) != 0;
    let n_tests = 1 + rng.below(4);
    let purity = if rng.below(3) == 0 { "pure" } else { "impure" };
    let words: Vec<&str> = name.split('_').take(2).collect();
    let version = format!("{}.{}.{}", rng.below(3), rng.below(10), rng.below(10));
    let description = format!("{} {}", rng.sentence(3), rng.sentence(2));
    // `returns` and `error_type` appear in the signature, as `fn check` wants.
    let ok = returns.map_or_else(|| "()".to_string(), |t| types[t].0.clone());
    let ok = if returns_optional {
        format!("Option<{ok}>")
    } else {
        ok
    };
    let err = error_type.map_or_else(
        || format!("{}Error", capital(words[1])),
        |t| types[t].0.clone(),
    );
    let signature = format!(
        "pub fn {name}(client: &{}Client, msg: Bytes, limit: usize) -> Result<{ok}, {err}>",
        capital(words[0])
    );
    let mut s = String::with_capacity(2600);
    let _ = write!(
        s,
        "---\nname: {name}\nkind: function\nlang: rust\ndomain: {domain}\nversion: \"{version}\"\npurity: {purity}\n",
    );
    let _ = writeln!(s, "signature: \"{signature}\"");
    let _ = writeln!(s, "description: \"{description}\"");
    let _ = writeln!(s, "tags: [{}, {}, {domain}, realtime]", words[0], words[1]);
    let _ = writeln!(s, "uses_functions: {}", list(&uses_functions));
    let _ = writeln!(s, "uses_types: {}", list(&uses_types));
    let returns_ids: Vec<String> = returns
        .iter()
        .map(|&t| id(&types[t].0, &types[t].1))
        .collect();
    let _ = writeln!(s, "returns: {}", list(&returns_ids));
    let _ = writeln!(s, "returns_optional: {returns_optional}");
    let error_id = error_type.map_or_else(String::new, |t| id(&types[t].0, &types[t].1));
    let _ = writeln!(s, "error_type: \"{error_id}\"");
    let _ = writeln!(s, "imports: [tokio, bytes]");
    s.push_str("params:\n");
    for p in ["client", "msg", "limit"] {
        let _ = writeln!(s, "  - name: {p}\n    desc: \"{}\"", rng.sentence(2));
    }
    let output = rng.sentence(2);
    let _ = writeln!(s, "output: \"{output}\"");
    let mut tests = Vec::new();
    if tested {
        s.push_str("tested: true\ntests:\n");
        for _ in 0..n_tests {
            let test = rng.sentence(1);
            let _ = writeln!(s, "  - \"{test}\"");
            tests.push(test_fn_name(&test));
        }
        let _ = writeln!(s, "test_file_path: crates/{name}/src/lib.rs");
    } else {
        s.push_str("tested: false\ntests: []\ntest_file_path: \"\"\n");
    }
    let _ = writeln!(
        s,
        "file_path: crates/{name}/src/lib.rs\n---\n\n## Example\n\n```rust"
    );
    for i in 0..5 + rng.below(10) {
        let _ = writeln!(
            s,
            "let v{i} = {name}(&client, Bytes::from_static(b\"{}\"), {})?;",
            rng.pick(&WORDS),
            rng.below(1000)
        );
    }
    s.push_str("```\n\n## Notes\n\n");
    for _ in 0..1 + rng.below(3) {
        let _ = writeln!(
            s,
            "{} {} {}\n",
            rng.sentence(3),
            rng.sentence(4),
            rng.sentence(3)
        );
    }
    Function {
        text: s,
        version,
        description,
        signature,
        output,
        uses_functions: uses_fns,
        uses_types: uses_ty,
        returns,
        error_type,
        tests,
    }
}

/// The test function a line of `tests:` names, as `fn check` reads it:
/// lowercase, every run of other characters than ASCII letters and digits
/// one `_`, none at either end.
fn test_fn_name(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    for c in line.chars().filter(|&c| c != '\'') {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_end_matches('_').to_string()
}

fn type_entry(
    rng: &mut Rng,
    name: &str,
    domain: &str,
    fns: &[(String, String)],
    i: usize,
) -> (String, Fields) {
    let mut s = String::with_capacity(2000);
    let _ = write!(
        s,
        "---\nname: {name}\nkind: type\nlang: rust\ndomain: {domain}\nversion: \"0.{}.0\"\npurity: pure\nsignature: \"pub struct {name}\"\n",
        rng.below(9)
    );
    let _ = writeln!(
        s,
        "description: \"{} {}\"",
        rng.sentence(3),
        rng.sentence(2)
    );
    let _ = writeln!(s, "tags: [type, {domain}, {}]", rng.pick(&WORDS));
    s.push_str("uses_functions: []\nuses_types: []\nreturns: []\nreturns_optional: false\nerror_type: \"\"\nimports: []\noutput: \"\"\n");
    s.push_str("tested: false\ntests: []\ntest_file_path: \"\"\n");
    let home = &fns[type_home(i, fns.len())].0;
    let _ = writeln!(s, "file_path: crates/{home}/src/lib.rs");
    s.push_str("fields:\n");
    let mut fields = Vec::new();
    for f in 0..2 + rng.below(5) {
        let field = format!("{}_{f}", rng.pick(&WORDS));
        let ty = [
            "Option<u64>",
            "Option<String>",
            "Option<std::time::Duration>",
            "Option<Vec<u8>>",
        ][rng.below(4)];
        let _ = writeln!(
            s,
            "  - name: {field}\n    type: \"{ty}\"\n    desc: \"{}\"",
            rng.sentence(2)
        );
        fields.push((field, ty));
    }
    let _ = writeln!(
        s,
        "---\n\n## Example\n\n```rust\nlet c = {name}::default();\n```\n\n## Notes\n\n{}\n",
        rng.sentence(5)
    );
    (s, fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn ids_and_refs(root: &Path) -> (HashSet<String>, Vec<String>) {
        let mut ids = HashSet::new();
        let mut refs = Vec::new();
        for top in ["crates", "types"] {
            for dir in std::fs::read_dir(root.join(top)).unwrap() {
                let dir = dir.unwrap().path();
                for f in std::fs::read_dir(&dir).unwrap() {
                    let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
                    let field = |k: &str| {
                        text.lines()
                            .find_map(|l| l.strip_prefix(k))
                            .unwrap()
                            .trim()
                            .to_string()
                    };
                    ids.insert(format!("{}_rust_{}", field("name:"), field("domain:")));
                    for k in ["uses_functions:", "uses_types:", "returns:"] {
                        let v = field(k);
                        refs.extend(
                            v.trim_matches(['[', ']'])
                                .split(", ")
                                .filter(|s| !s.is_empty())
                                .map(str::to_string),
                        );
                    }
                }
            }
        }
        (ids, refs)
    }

    #[test]
    fn writes_every_entry_and_only_valid_references() {
        let dir = tempfile::tempdir().unwrap();
        let stats = generate(dir.path(), 200, 1).unwrap();
        assert_eq!((stats.functions, stats.types), (170, 30));
        let (ids, refs) = ids_and_refs(dir.path());
        assert_eq!(ids.len(), 200, "names are unique");
        assert!(!refs.is_empty());
        for r in refs {
            assert!(ids.contains(&r), "dangling reference {r}");
        }
        let avg = stats.bytes / 200;
        assert!(
            (1200..3500).contains(&avg),
            "average entry size {avg} bytes"
        );
    }

    #[test]
    fn same_seed_same_output() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        generate(a.path(), 30, 9).unwrap();
        generate(b.path(), 30, 9).unwrap();
        let (ia, _) = ids_and_refs(a.path());
        let (ib, _) = ids_and_refs(b.path());
        assert_eq!(ia, ib);
    }
}
