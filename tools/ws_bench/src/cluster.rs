//! `--redis [URL] [--nodes N]`: rt-server's `/ws` alone, then as N nodes on
//! one Redis, in the same run with the same clients and loads; the summary
//! table sets the medians beside the single server's against the targets.

use std::time::Duration;

use bench_support::cluster::{self, Words};
use bench_support::procfs::own_affinity;
use bench_support::redis::Redis;
use bench_support::server;
use bench_support::{exit_status, median_title};

use crate::args::Args;
use crate::client::ensure_fd_limit;
use crate::deliveries::{Measure, load_row};
use crate::peers::targets;
use crate::rows::Load;

/// A row of a `--redis` run: one client count, one load.
struct ClusterRow {
    clients: usize,
    load: Load,
    duration: Duration,
}

impl ClusterRow {
    /// `16 in flight`, `100 msg/s`.
    fn what(&self) -> String {
        match self.load {
            Load::InFlight(k) => format!("{k} in flight"),
            Load::Rate(r) => format!("{r} msg/s"),
        }
    }
}

pub(crate) fn cluster_main(args: &Args) -> std::process::ExitCode {
    let fail = |e: String| {
        eprintln!("ws-bench: {e}");
        std::process::ExitCode::from(2)
    };
    let target = match targets(args) {
        Ok(t) => match t.into_iter().find(|t| t.name == "rt-server") {
            Some(t) => t,
            None => return fail("rt-server not found".into()),
        },
        Err(e) => return fail(e),
    };
    let counts = cluster::client_counts(args.client_counts.as_deref());
    let nodes = args.cluster.node_counts();
    let rate = cluster::paced_rate(args.rate);
    let secs = |default: f64| Duration::from_secs_f64(args.duration.unwrap_or(default));
    let mut rows = Vec::new();
    for &clients in &counts {
        rows.push(ClusterRow {
            clients,
            load: Load::InFlight(args.in_flight),
            duration: secs(3.0),
        });
        rows.push(ClusterRow {
            clients,
            load: Load::Rate(rate),
            duration: secs(5.0),
        });
    }
    // Column 0: the single server, alone; then each node count on Redis.
    let setups = cluster::setups(&nodes);
    ensure_fd_limit(counts.iter().max().copied().unwrap_or(0) as u64 + 256);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let redis = match rt.block_on(Redis::open(args.cluster.url())) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let affinity = own_affinity();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    cluster::print_header(
        "ws-bench",
        "rt-server /ws",
        &nodes,
        &redis,
        &format!("this generator on cores {affinity} ({cores} usable)"),
        "clients round-robin over the nodes; client 0, on node 0, sends every message to /ws (node 0's clients get it locally, the others' through Redis PUBLISH)",
    );
    if affinity != "1" {
        println!("ws-bench: run the generator under `taskset -c 1` so it does not share core 0");
    }
    let (results, failures) = cluster::run(
        &rt,
        &redis,
        &rows,
        &setups,
        args.repeat,
        |row| format!("{} clients, {}", row.clients, row.what()),
        |extra| {
            let mut t = target.clone();
            t.args.extend(extra.iter().cloned());
            server::start(&t)
        },
        |row, servers, redis| {
            let local = tokio::task::LocalSet::new();
            rt.block_on(local.run_until(load_row(
                servers,
                row.clients,
                row.load,
                row.duration,
                args,
                Some(&Measure { redis }),
            )))
        },
    );
    let table_rows: Vec<cluster::Row> = rows
        .iter()
        .map(|r| cluster::Row {
            clients: r.clients,
            paced: match r.load {
                Load::InFlight(_) => None,
                Load::Rate(rate) => Some(rate),
            },
            load: r.what(),
            label: format!("deliveries/s, {} clients, {}", r.clients, r.what()),
        })
        .collect();
    let title = median_title("rt-server /ws, alone and on Redis", args.repeat);
    let words = Words {
        clients: "clients",
        message: "message",
        per_sec: "msg/s",
        unpaced: "in flight",
    };
    cluster::summary(&title, words, &table_rows, &setups, &results);
    exit_status("ws-bench", failures)
}
