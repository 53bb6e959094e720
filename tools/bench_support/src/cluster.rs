//! `--redis [URL] --nodes N`: the rows of a benchmark run against the single
//! server and against N nodes on one Redis, and the table that sets their
//! medians side by side against the targets.

use crate::redis::{Redis, SERVER_CORE, node_args, run_prefix};
use crate::server::Server;
use crate::table::{TableRow, independence_verdict, print_table, setup_name};
use crate::{median, run_label};

/// What one run of a row measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct Figures {
    pub deliveries_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub lost: u64,
    /// p50 and p99 of the clients of the nodes other than the publisher's
    /// (cross-node), with several nodes.
    pub cross: Option<(f64, f64)>,
    /// Redis commands (all nodes) per message published, on Redis.
    pub commands_per_message: Option<f64>,
    /// CPU µs per message: all servers, and Redis when started here.
    pub server_cpu_us: Option<f64>,
    pub redis_cpu_us: Option<f64>,
}

/// How a tool names its things in the table: `clients`/`subscribers`,
/// `message`/`event`, `msg/s`/`events/s`, and its unpaced load (`in flight`,
/// `as fast as answered`).
#[derive(Clone, Copy, Debug)]
pub struct Words {
    pub clients: &'static str,
    pub message: &'static str,
    pub per_sec: &'static str,
    pub unpaced: &'static str,
}

/// A row of a `--redis` run: one client count, one load.
#[derive(Clone, Debug)]
pub struct Row {
    pub clients: usize,
    /// `Some(rate)`: paced at that many messages per second.
    pub paced: Option<u64>,
    /// The load as the table says it (`16 in flight`, `100 msg/s`).
    pub load: String,
    /// The label of an unpaced row's deliveries line.
    pub label: String,
}

/// The client counts of a run: those given, else 200 and 1,000.
pub fn client_counts(given: Option<&[usize]>) -> Vec<usize> {
    given.map_or_else(|| vec![200, 1000], <[usize]>::to_vec)
}

/// The paced rows' rate: the one given, else 100 messages per second.
pub fn paced_rate(given: Option<u64>) -> u64 {
    given.unwrap_or(100)
}

/// The columns: the single server (`None`), then each node count.
pub fn setups(nodes: &[usize]) -> Vec<Option<usize>> {
    std::iter::once(None)
        .chain(nodes.iter().map(|&n| Some(n)))
        .collect()
}

/// Prints what a `--redis` run of `tool` compares: `server` alone, then
/// as each node count on `redis`; where the servers and the `load` run; and
/// `how` the clients are spread.
pub fn print_header(
    tool: &str,
    server: &str,
    nodes: &[usize],
    redis: &Redis,
    load: &str,
    how: &str,
) {
    let setups: Vec<String> = nodes.iter().map(|&n| setup_name(Some(n))).collect();
    println!(
        "{tool} --redis: {server} alone, then as {} on {}",
        setups.join(", then "),
        redis.about
    );
    println!(
        "{tool}: every rt-server (the single one and each node) on core {SERVER_CORE} (taskset), {load}"
    );
    println!("{tool}: {how}");
}

/// Runs every row `repeat` times on every setup, each on fresh servers
/// (`start` with a node's extra rt-server flags; a run on Redis has its own
/// key prefix, forgotten after it): `results[row][setup]`, and the number of
/// failed runs. Each run's first line is `[setup] ` and `describe(row)`.
#[allow(clippy::too_many_arguments)]
pub fn run<R>(
    rt: &tokio::runtime::Runtime,
    redis: &Redis,
    rows: &[R],
    setups: &[Option<usize>],
    repeat: usize,
    describe: impl Fn(&R) -> String,
    start: impl Fn(&[String]) -> Result<Server, String>,
    mut measure: impl FnMut(&R, &[Server], Option<&Redis>) -> Result<Figures, String>,
) -> (Vec<Vec<Vec<Figures>>>, usize) {
    let mut results = vec![vec![Vec::new(); setups.len()]; rows.len()];
    let mut failures = 0;
    for (ri, row) in rows.iter().enumerate() {
        for rep in 0..repeat {
            for (si, &setup) in setups.iter().enumerate() {
                println!(
                    "[{}] {}{}",
                    setup_name(setup),
                    describe(row),
                    run_label(rep, repeat)
                );
                let prefix = run_prefix();
                let servers: Result<Vec<Server>, String> = match setup {
                    None => start(&[]).map(|s| vec![s]),
                    Some(n) => (0..n)
                        .map(|i| {
                            let mut extra = node_args(redis, &prefix);
                            extra.extend(["--node-id".into(), format!("{prefix}-node{i}")]);
                            start(&extra)
                        })
                        .collect(),
                };
                let servers = match servers {
                    Ok(s) => s,
                    Err(e) => {
                        println!("  failed: {e}");
                        failures += 1;
                        continue;
                    }
                };
                let r = measure(row, &servers, setup.map(|_| redis));
                drop(servers);
                if setup.is_some() {
                    rt.block_on(redis.forget(&prefix));
                }
                match r {
                    Ok(f) => results[ri][si].push(f),
                    Err(e) => {
                        println!("  failed: {e}");
                        failures += 1;
                    }
                }
            }
        }
    }
    (results, failures)
}

/// Prints the table of `results[row][setup]` (medians of the runs that lost
/// nothing) under `title`, the commands-per-message verdicts and the lost
/// deliveries.
pub fn summary(
    title: &str,
    words: Words,
    rows: &[Row],
    setups: &[Option<usize>],
    results: &[Vec<Vec<Figures>>],
) {
    let Words {
        clients: who,
        message: msg,
        per_sec,
        unpaced,
    } = words;
    let col = |ri: usize, g: &dyn Fn(&Figures) -> Option<f64>| -> Vec<Option<f64>> {
        (0..setups.len())
            .map(|si| {
                // A run that lost deliveries measured fewer clients: left out.
                median(
                    results[ri][si]
                        .iter()
                        .filter(|f| f.lost == 0)
                        .filter_map(g)
                        .collect(),
                )
            })
            .collect()
    };
    let cells = |v: &[Option<f64>], fmt: &dyn Fn(f64) -> String| -> Vec<String> {
        v.iter().map(|x| x.map_or("-".into(), fmt)).collect()
    };
    let rate_fmt = |v: f64| {
        if v >= 1e6 {
            format!("{:.2} M", v / 1e6)
        } else {
            format!("{:.0} k", v / 1e3)
        }
    };
    let ms = |v: f64| format!("{v:.2} ms");
    let num = |v: f64| format!("{v:.2}");
    let us = |v: f64| format!("{v:.1} µs");
    // Verdicts against the single server (column 0), for 2 nodes or more.
    let verdicts = |f: &dyn Fn(usize) -> Option<String>| {
        setups
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some_and(|n| n > 1))
            .filter_map(|(si, s)| f(si).map(|v| format!("{}: {v}", setup_name(*s))))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let line = |label: String, cells: Vec<String>| TableRow {
        label,
        cells,
        verdict: String::new(),
    };
    let mut table = Vec::new();
    // (paced, setup, clients, commands per message)
    let mut per_message: Vec<(bool, Option<usize>, usize, f64)> = Vec::new();
    for (ri, row) in rows.iter().enumerate() {
        let c = row.clients;
        match row.paced {
            None => {
                let v = col(ri, &|f| Some(f.deliveries_per_sec));
                table.push(TableRow {
                    label: row.label.clone(),
                    cells: cells(&v, &rate_fmt),
                    verdict: verdicts(&|si| {
                        let ratio = v[si]? / v[0]?;
                        Some(format!(
                            "{ratio:.2}x of single (target >= 0.70x: {})",
                            if ratio >= 0.70 { "met" } else { "NOT met" }
                        ))
                    }),
                });
                table.push(line(
                    format!("  server CPU per {msg}, {c} {who}"),
                    cells(&col(ri, &|f| f.server_cpu_us), &us),
                ));
                table.push(line(
                    format!("  redis-server CPU per {msg}, {c} {who}"),
                    cells(&col(ri, &|f| f.redis_cpu_us), &us),
                ));
            }
            Some(r) => {
                let p99 = col(ri, &|f| Some(f.p99_ms));
                // The single server's figures are the reference of the cross-node ones.
                let mut cross50 = col(ri, &|f| f.cross.map(|c| c.0));
                cross50[0] = None;
                let cross99 = col(ri, &|f| f.cross.map(|c| c.1));
                table.push(line(
                    format!("p50 ms at {r} {per_sec} to {c} {who}, all"),
                    cells(&col(ri, &|f| Some(f.p50_ms)), &ms),
                ));
                table.push(line(
                    format!("p99 ms at {r} {per_sec} to {c} {who}, all"),
                    cells(&p99, &ms),
                ));
                table.push(line(
                    format!("  p50 ms, other nodes' {who} (cross-node)"),
                    cells(&cross50, &ms),
                ));
                table.push(TableRow {
                    label: format!("  p99 ms, other nodes' {who} (cross-node)"),
                    cells: cells(&cross99, &ms),
                    verdict: verdicts(&|si| {
                        let d = cross99[si]? - p99[0]?;
                        Some(format!(
                            "{d:+.2} ms vs single p99 (target <= +2 ms: {})",
                            if d <= 2.0 { "met" } else { "NOT met" }
                        ))
                    }),
                });
            }
        }
        let cmds = col(ri, &|f| f.commands_per_message);
        for (si, v) in cmds.iter().enumerate() {
            if let Some(v) = v {
                per_message.push((row.paced.is_some(), setups[si], c, *v));
            }
        }
        table.push(line(
            format!("  Redis commands per {msg}, {}, {c} {who}", row.load),
            cells(&cmds, &num),
        ));
    }
    let names: Vec<String> = setups.iter().map(|&s| setup_name(s)).collect();
    print_table(title, &names, &table);
    // Commands per message at the fewest against the most clients.
    for &setup in setups.iter().filter(|s| s.is_some()) {
        for paced in [false, true] {
            let of: Vec<(usize, f64)> = per_message
                .iter()
                .filter(|p| p.1 == setup && p.0 == paced)
                .map(|p| (p.2, p.3))
                .collect();
            let (Some(lo), Some(hi)) = (
                of.iter().min_by_key(|p| p.0).copied(),
                of.iter().max_by_key(|p| p.0).copied(),
            ) else {
                continue;
            };
            println!(
                "Redis commands per {msg}, {}, {}: {}",
                setup_name(setup),
                if paced { "paced" } else { unpaced },
                independence_verdict(lo, hi, who)
            );
        }
    }
    let lost: Vec<String> = rows
        .iter()
        .enumerate()
        .flat_map(|(ri, row)| {
            setups.iter().enumerate().filter_map(move |(si, &s)| {
                let n: u64 = results[ri][si].iter().map(|f| f.lost).sum();
                let runs = results[ri][si].iter().filter(|f| f.lost > 0).count();
                let of = results[ri][si].len();
                (n > 0).then(|| {
                    format!(
                        "{} at {} {who}: {n} in {runs} of {of} runs",
                        setup_name(s),
                        row.clients
                    )
                })
            })
        })
        .collect();
    if !lost.is_empty() {
        println!(
            "lost deliveries (those runs are left out of the medians): {}",
            lost.join(", ")
        );
    }
}
