//! `fn-gen --out DIR [--entries N] [--seed S] [--with-crates]`: writes a synthetic registry.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

const USAGE: &str = "usage: fn-gen --out DIR [--entries N] [--seed S] [--with-crates]";

fn main() -> ExitCode {
    let mut out: Option<PathBuf> = None;
    let (mut entries, mut seed, mut crates) = (10_000usize, 1u64, false);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--with-crates" {
            crates = true;
            continue;
        }
        let v = args.next();
        let parsed = match (a.as_str(), v) {
            ("--out", Some(v)) => {
                out = Some(v.into());
                Ok(())
            }
            ("--entries", Some(v)) => v.parse().map(|n| entries = n).map_err(|e| e.to_string()),
            ("--seed", Some(v)) => v.parse().map(|n| seed = n).map_err(|e| e.to_string()),
            _ => Err(format!("{USAGE} (bad argument {a})")),
        };
        if let Err(e) = parsed {
            eprintln!("fn-gen: {e}");
            return ExitCode::from(2);
        }
    }
    let Some(out) = out else {
        eprintln!("fn-gen: --out DIR is required");
        return ExitCode::from(2);
    };
    if std::fs::read_dir(&out).is_ok_and(|mut d| d.next().is_some()) {
        eprintln!("fn-gen: {} exists and is not empty", out.display());
        return ExitCode::from(2);
    }
    let started = Instant::now();
    match fn_bench::generate_with(&out, entries, seed, crates) {
        Ok(s) => {
            println!(
                "wrote {} functions and {} types{} ({:.1} MB) to {} in {} ms",
                s.functions,
                s.types,
                if crates { " with their crates" } else { "" },
                s.bytes as f64 / 1e6,
                out.display(),
                started.elapsed().as_millis()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fn-gen: {e}");
            ExitCode::from(1)
        }
    }
}
