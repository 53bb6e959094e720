//! `fn-bench [--quick] [--entries N]... [--runs R] [--fn PATH]`: times `fn index`,
//! `fn search`, `fn show` and `fn deps` as whole processes on synthetic registries,
//! and prints a table.
//!
//! For each size (10,000 and 100,000 entries by default; `--entries N`, repeatable,
//! picks others; `--quick` is 10,000 with fewer runs) it writes a workspace with
//! crates (`fn-gen --with-crates`, so `fn index` runs every check against the code)
//! and, at the smallest size, one of entries only for comparison, then measures:
//!
//! - full index: `fn index` into a new database (the median of R runs);
//! - re-index after one change: `fn index` over its own database after one entry
//!   file was edited (a different one each run);
//! - `fn search`, `fn show` and `fn deps --reverse --transitive` on the result
//!   (`deps` for a function generated half way, and for the first one, which
//!   most others use).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

const USAGE: &str =
    "usage: fn-bench [--quick] [--entries N]... [--runs R] [--searches K] [--fn PATH]";

fn run(cmd: &mut Command) -> Result<(Duration, String), String> {
    let started = Instant::now();
    let out = cmd.output().map_err(|e| e.to_string())?;
    let took = started.elapsed();
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok((took, String::from_utf8_lossy(&out.stdout).into_owned()))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// `1234.5` as `1,235 ms`; under 100 ms with one decimal.
fn show_ms(d: Duration) -> String {
    let v = ms(d);
    if v < 100.0 {
        return format!("{v:.1} ms");
    }
    let n = v.round() as u64;
    if n >= 1000 {
        format!("{},{:03} ms", n / 1000, n % 1000)
    } else {
        format!("{n} ms")
    }
}

fn main() -> ExitCode {
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fn-bench: {e}");
            ExitCode::from(1)
        }
    }
}

struct Options {
    sizes: Vec<usize>,
    runs: Option<usize>,
    searches: usize,
    fn_path: PathBuf,
}

fn options() -> Result<Options, String> {
    let mut sizes = Vec::new();
    let (mut quick, mut runs, mut searches) = (false, None, 30usize);
    let mut fn_path: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--quick" {
            quick = true;
            continue;
        }
        let v = args.next().ok_or(format!("{a} needs a value; {USAGE}"))?;
        let num = |v: &str| v.parse::<usize>().map_err(|e| format!("{a}: {e}"));
        match a.as_str() {
            "--entries" => sizes.push(num(&v)?),
            "--runs" => runs = Some(num(&v)?.max(1)),
            "--searches" => searches = num(&v)?,
            "--fn" => fn_path = Some(v.into()),
            _ => return Err(format!("{USAGE} (bad argument {a})")),
        }
    }
    if sizes.is_empty() {
        sizes = if quick {
            vec![10_000]
        } else {
            vec![10_000, 100_000]
        };
    }
    if quick && runs.is_none() {
        runs = Some(3);
    }
    let fn_path = fn_path.unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("fn")))
            .unwrap_or_else(|| PathBuf::from("fn"))
    });
    if !fn_path.is_file() {
        return Err(format!(
            "{} not found: run `cargo build --release -p fn_tool -p fn_bench` first",
            fn_path.display()
        ));
    }
    Ok(Options {
        sizes,
        runs,
        searches,
        fn_path,
    })
}

/// One row of the table.
struct Row {
    entries: usize,
    crates: bool,
    mb: f64,
    full: Duration,
    reindex: Duration,
    search: Duration,
    show: Duration,
    deps: Duration,
    users: usize,
    deps_middle: Duration,
    middle_users: usize,
}

fn bench() -> Result<(), String> {
    let o = options()?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "fn-bench: {} on this machine ({cores} cores), release build, whole processes, medians",
        o.fn_path.display()
    );
    let mut rows = Vec::new();
    let smallest = o.sizes.iter().copied().min().unwrap_or(0);
    for &n in &o.sizes {
        // Entries only, for comparison, at the smallest size.
        let kinds: &[bool] = if n == smallest {
            &[false, true]
        } else {
            &[true]
        };
        for &crates in kinds {
            // Fewer runs where one run takes seconds.
            let runs = o.runs.unwrap_or(if n > 20_000 { 3 } else { 5 });
            rows.push(measure(&o, n, crates, runs)?);
        }
    }
    println!();
    println!(
        "| entries | workspace | full index | re-index, 1 entry changed | search | show | deps --reverse --transitive: an entry half way | the most used entry |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} ({:.0} MB) | {} | {} | {} | {} | {} ({} edges) | {} ({} edges) |",
            thousands(r.entries),
            if r.crates {
                "with crates, code checked"
            } else {
                "entries only"
            },
            r.mb,
            show_ms(r.full),
            show_ms(r.reindex),
            show_ms(r.search),
            show_ms(r.show),
            show_ms(r.deps_middle),
            thousands(r.middle_users),
            show_ms(r.deps),
            thousands(r.users)
        );
    }
    Ok(())
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn measure(o: &Options, n: usize, crates: bool, runs: usize) -> Result<Row, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = dir.path().join("root");
    let started = Instant::now();
    let stats = fn_bench::generate_with(&root, n, 1, crates).map_err(|e| e.to_string())?;
    println!(
        "{} entries ({} functions, {} types){}: {:.1} MB written in {:.1} s",
        n,
        stats.functions,
        stats.types,
        if crates {
            " with crates"
        } else {
            ", entries only"
        },
        stats.bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    let db = dir.path().join("registry.db");
    let index = || {
        run(Command::new(&o.fn_path)
            .arg("index")
            .arg("--root")
            .arg(&root)
            .arg("--db")
            .arg(&db))
    };

    let mut full = Vec::new();
    for _ in 0..runs {
        let _ = std::fs::remove_file(&db);
        full.push(index()?.0);
    }
    print_runs("  full index", &full);

    let names = crate_names(&root, runs);
    let mut reindex = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let md = root.join("crates").join(name).join(format!("{name}.md"));
        let text = std::fs::read_to_string(&md).map_err(|e| e.to_string())?;
        let edited = text.replacen("output: \"", &format!("output: \"Edited {i}. "), 1);
        std::fs::write(&md, edited).map_err(|e| e.to_string())?;
        reindex.push(index()?.0);
    }
    print_runs("  re-index after one change", &reindex);

    // The first function generated: many later ones use it.
    let first = first_function(&root).ok_or("no entry generated")?;
    let queries = [
        "websocket",
        "hub",
        "room emit",
        "encode frame",
        first.as_str(),
        "enco",
        "web-socket",
        "\"unbalanced",
        "slow client policy",
        "NEAR(",
    ];
    let mut search = Vec::new();
    let mut hits = 0usize;
    for i in 0..o.searches.max(1) {
        let q = queries[i % queries.len()];
        let (t, out) = run(Command::new(&o.fn_path)
            .args(["search", q, "--limit", "10", "--json", "--db"])
            .arg(&db))?;
        hits += out.matches("\"id\":").count();
        search.push(t);
    }
    println!(
        "  search: {} runs, {:.1} hits per query",
        search.len(),
        hits as f64 / search.len() as f64
    );
    let mut show = Vec::new();
    let mut deps = Vec::new();
    let mut users = 0;
    // A function generated half way: what an entry in the middle of the graph costs.
    let middle = format!("_{:05}", stats.functions / 2);
    let middle = crate_names(&root, usize::MAX)
        .into_iter()
        .find(|n| n.ends_with(&middle))
        .ok_or("no middle function")?;
    let mut deps_middle = Vec::new();
    let mut middle_users = 0;
    for _ in 0..runs {
        let (t, out) = run(Command::new(&o.fn_path)
            .args([
                "deps",
                &middle,
                "--reverse",
                "--transitive",
                "--json",
                "--db",
            ])
            .arg(&db))?;
        middle_users = out.matches("\"id\":").count();
        deps_middle.push(t);
    }
    println!("  deps --reverse --transitive {middle}: {middle_users} entries");
    for _ in 0..runs {
        show.push(
            run(Command::new(&o.fn_path)
                .args(["show", &first, "--json", "--db"])
                .arg(&db))?
            .0,
        );
        let (t, out) = run(Command::new(&o.fn_path)
            .args([
                "deps",
                &first,
                "--reverse",
                "--transitive",
                "--json",
                "--db",
            ])
            .arg(&db))?;
        users = out.matches("\"id\":").count();
        deps.push(t);
    }
    println!("  deps --reverse --transitive {first}: {users} entries");
    Ok(Row {
        deps_middle: median(deps_middle),
        middle_users,
        users,
        entries: n,
        crates,
        mb: stats.bytes as f64 / 1e6,
        full: median(full),
        reindex: median(reindex),
        search: median(search),
        show: median(show),
        deps: median(deps),
    })
}

fn print_runs(what: &str, runs: &[Duration]) {
    let shown: Vec<String> = runs.iter().map(|t| format!("{:.0}", ms(*t))).collect();
    println!(
        "{what}: median {}  [{} ms]",
        show_ms(median(runs.to_vec())),
        shown.join(", ")
    );
}

/// The crate of the first function generated (`*_00000`).
fn first_function(root: &Path) -> Option<String> {
    std::fs::read_dir(root.join("crates"))
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with("_00000"))
}

/// The first `n` crate names (at least one), sorted.
fn crate_names(root: &Path, n: usize) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("crates"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names.truncate(n.max(1));
    names
}
