//! Synthetic registries for the `fn` tool (fn-gen) and the benchmark of `fn index` and `fn search` on them (fn-bench).
//!
//! [`generate`] writes a registry root with function entries
//! (`crates/<name>/<name>.md`) and type entries (`types/<domain>/<Type>.md`)
//! of realistic size (1.5 to 3 KB each, frontmatter, an example and notes)
//! and references: each function uses up to four earlier functions (so the
//! graph is acyclic) and up to three types. The output depends only on the
//! seed.
//!
//! - `fn-gen --out DIR [--entries N] [--seed S]` writes one.
//! - `fn-bench [--entries N] [--searches K] [--fn PATH]` writes one to a
//!   temporary folder, then times `fn index` and `fn search` as whole
//!   processes, as a user runs them.
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

/// Writes a registry of `entries` entries into `out` (created if needed).
pub fn generate(out: &Path, entries: usize, seed: u64) -> io::Result<Stats> {
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
    for (i, (name, domain)) in type_ids.iter().enumerate() {
        let text = type_entry(&mut rng, name, domain, &fn_names, i);
        let dir = out.join("types").join(domain);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("{name}.md")), &text)?;
        bytes += text.len() as u64;
    }
    for (i, (name, domain)) in fn_names.iter().enumerate() {
        let text = function_entry(&mut rng, name, domain, &fn_names[..i], &type_ids);
        let dir = out.join("crates").join(name);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("{name}.md")), &text)?;
        bytes += text.len() as u64;
    }
    Ok(Stats {
        functions,
        types,
        bytes,
    })
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

fn function_entry(
    rng: &mut Rng,
    name: &str,
    domain: &str,
    earlier: &[(String, String)],
    types: &[(String, String)],
) -> String {
    let mut uses_functions: Vec<String> = (0..rng.below(5).min(earlier.len()))
        .map(|_| {
            let (n, d) = &earlier[rng.below(earlier.len())];
            id(n, d)
        })
        .collect();
    uses_functions.sort();
    uses_functions.dedup();
    let mut uses_types: Vec<String> = (0..rng.below(4).min(types.len()))
        .map(|_| {
            let (n, d) = &types[rng.below(types.len())];
            id(n, d)
        })
        .collect();
    uses_types.sort();
    uses_types.dedup();
    let returns: Vec<String> = match (rng.below(3), types.is_empty()) {
        (0, false) => vec![id(
            &types[rng.below(types.len())].0,
            &types[rng.below(types.len())].1,
        )]
        .into_iter()
        .filter(|r| types.iter().any(|(n, d)| id(n, d) == *r))
        .collect(),
        _ => Vec::new(),
    };
    let error_type = if !types.is_empty() && rng.below(4) == 0 {
        let (n, d) = &types[rng.below(types.len())];
        id(n, d)
    } else {
        String::new()
    };
    let tested = rng.below(5) != 0;
    let n_tests = 1 + rng.below(4);
    let purity = if rng.below(3) == 0 { "pure" } else { "impure" };
    let words: Vec<&str> = name.split('_').take(2).collect();
    let mut s = String::with_capacity(2600);
    let _ = write!(
        s,
        "---\nname: {name}\nkind: function\nlang: rust\ndomain: {domain}\nversion: \"{}.{}.{}\"\npurity: {purity}\n",
        rng.below(3),
        rng.below(10),
        rng.below(10)
    );
    let _ = writeln!(
        s,
        "signature: \"pub fn {name}(client: &{}Client, msg: Bytes, limit: usize) -> Result<(), {}Error>\"",
        capital(words[0]),
        capital(words[1])
    );
    let _ = writeln!(
        s,
        "description: \"{} {}\"",
        rng.sentence(3),
        rng.sentence(2)
    );
    let _ = writeln!(s, "tags: [{}, {}, {domain}, realtime]", words[0], words[1]);
    let _ = writeln!(s, "uses_functions: {}", list(&uses_functions));
    let _ = writeln!(s, "uses_types: {}", list(&uses_types));
    let _ = writeln!(s, "returns: {}", list(&returns));
    let _ = writeln!(s, "returns_optional: {}", rng.below(6) == 0);
    let _ = writeln!(s, "error_type: \"{error_type}\"");
    let _ = writeln!(s, "imports: [tokio, bytes]");
    s.push_str("params:\n");
    for p in ["client", "msg", "limit"] {
        let _ = writeln!(s, "  - name: {p}\n    desc: \"{}\"", rng.sentence(2));
    }
    let _ = writeln!(s, "output: \"{}\"", rng.sentence(2));
    if tested {
        s.push_str("tested: true\ntests:\n");
        for _ in 0..n_tests {
            let _ = writeln!(s, "  - \"{}\"", rng.sentence(1));
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
    s
}

fn type_entry(
    rng: &mut Rng,
    name: &str,
    domain: &str,
    fns: &[(String, String)],
    i: usize,
) -> String {
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
    let home = &fns[i % fns.len().max(1)].0;
    let _ = writeln!(s, "file_path: crates/{home}/src/lib.rs");
    s.push_str("fields:\n");
    for f in 0..2 + rng.below(5) {
        let _ = writeln!(
            s,
            "  - name: {}_{f}\n    type: \"Option<{}>\"\n    desc: \"{}\"",
            rng.pick(&WORDS),
            ["u64", "String", "Duration", "Vec<u8>"][rng.below(4)],
            rng.sentence(2)
        );
    }
    let _ = writeln!(
        s,
        "---\n\n## Example\n\n```rust\nlet c = {name}::default();\n```\n\n## Notes\n\n{}\n",
        rng.sentence(5)
    );
    s
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
