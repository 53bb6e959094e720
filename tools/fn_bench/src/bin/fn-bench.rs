//! `fn-bench [--entries N] [--searches K] [--fn PATH]`: times `fn index` and
//! `fn search` as whole processes on a synthetic registry.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

fn run(cmd: &mut Command) -> Result<(Duration, String), String> {
    let started = Instant::now();
    let out = cmd.output().map_err(|e| e.to_string())?;
    let took = started.elapsed();
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok((took, String::from_utf8_lossy(&out.stdout).into_owned()))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
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

fn bench() -> Result<(), String> {
    let (mut entries, mut searches) = (10_000usize, 50usize);
    let mut fn_path: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().ok_or(format!("{a} needs a value"))?;
        match a.as_str() {
            "--entries" => entries = v.parse().map_err(|e| format!("--entries: {e}"))?,
            "--searches" => searches = v.parse().map_err(|e| format!("--searches: {e}"))?,
            "--fn" => fn_path = Some(v.into()),
            _ => {
                return Err(format!(
                    "usage: fn-bench [--entries N] [--searches K] [--fn PATH] (bad argument {a})"
                ));
            }
        }
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
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root = dir.path();
    let stats = fn_bench::generate(root, entries, 1).map_err(|e| e.to_string())?;
    let db = root.join("registry.db");
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "fn-bench: {} entries ({} functions, {} types, {:.1} MB), {cores} cores",
        entries,
        stats.functions,
        stats.types,
        stats.bytes as f64 / 1e6
    );

    let mut index_times = Vec::new();
    for _ in 0..5 {
        let (t, _) = run(Command::new(&fn_path)
            .arg("index")
            .arg("--root")
            .arg(root)
            .arg("--db")
            .arg(&db))?;
        index_times.push(t);
    }
    let shown: Vec<String> = index_times
        .iter()
        .map(|t| format!("{:.0}", ms(*t)))
        .collect();
    index_times.sort();
    println!(
        "index (whole process, 5 runs): min {:.0} ms, median {:.0} ms  [{} ms]",
        ms(index_times[0]),
        ms(index_times[2]),
        shown.join(", ")
    );

    let name = first_name(root).ok_or("no entry generated")?;
    let queries = [
        "websocket",
        "hub",
        "room emit",
        "encode frame",
        name.as_str(),
        "enco",
        "web-socket",
        "\"unbalanced",
        "slow client policy",
        "NEAR(",
    ];
    let mut times = Vec::new();
    let mut hits = 0usize;
    for i in 0..searches {
        let q = queries[i % queries.len()];
        let (t, out) = run(Command::new(&fn_path)
            .args(["search", q, "--limit", "10", "--json", "--db"])
            .arg(&db))?;
        hits += out.matches("\"id\":").count();
        times.push(t);
    }
    times.sort();
    let pick = |p: f64| ms(times[((times.len() - 1) as f64 * p).round() as usize]);
    println!(
        "search (whole process, {searches} runs, {} queries): median {:.1} ms, p95 {:.1} ms, max {:.1} ms, {:.1} hits per query",
        queries.len(),
        pick(0.5),
        pick(0.95),
        pick(1.0),
        hits as f64 / searches.max(1) as f64
    );
    let (t, _) = run(Command::new(&fn_path)
        .args(["deps", &name, "--reverse", "--transitive", "--json", "--db"])
        .arg(&db))?;
    println!(
        "deps --reverse --transitive (whole process): {:.1} ms",
        ms(t)
    );
    Ok(())
}

/// A real generated name with underscores, to search for.
fn first_name(root: &Path) -> Option<String> {
    let mut dirs: Vec<_> = std::fs::read_dir(root.join("crates"))
        .ok()?
        .filter_map(Result::ok)
        .collect();
    dirs.sort_by_key(|d| d.file_name());
    Some(dirs.first()?.file_name().to_string_lossy().into_owned())
}
