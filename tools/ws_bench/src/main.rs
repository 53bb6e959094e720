//! `ws-bench`: WebSocket broadcast throughput, latency and memory per idle
//! connection of `rt-server`'s `/ws`, side by side with the peer hubs of
//! `tools/ws_peers/` (Node `ws`, uWebSockets.js, and Go gorilla/websocket when
//! `install.sh` could build it) in the same run.
//!
//! Every server is started by this process, pinned to core 0 with `taskset`
//! (`--server-cores LIST` pins it to those instead, e.g. `0,1`: rt-server then
//! runs as many threads as it has cores, or `--server-threads N`), fresh for
//! each row; run this generator pinned to core 1. The generator is a
//! single-threaded tokio runtime, so it uses one core; each row prints its CPU
//! use (user+sys over wall time) to show whether it was the bottleneck. When
//! the server's cores include the generator's, the header says so: the
//! server's figures then include sharing a core with the load.
//!
//! The server's semantics: every text message from any client on `GET /ws` is
//! sent to every connected client, the sender included. Client 0 publishes
//! 64-byte text messages `SEQ TIMESTAMP xxx...` (nanoseconds since the bench's
//! epoch) and every client (client 0 too) records the send->receive latency.
//!
//! Rows (`--only ROW[,ROW...]` runs those):
//!
//! - `deliveries-1000`, `deliveries-5000`: 16 messages in flight (a message is
//!   done when every client has it); deliveries per second.
//! - `p99-1000`: 100 msg/s to 1,000 clients; `p99-5000`: 10 msg/s to 5,000
//!   clients; latency p50/p99/max.
//! - `idle`: the server's RSS (VmRSS) before and after `--idle` idle
//!   connections; KiB per connection.
//! - Targeted rows, `rt-server`'s `GET /hub` only (the peers have no rooms or
//!   users; they are skipped): every connection has its own user (`Authorization:
//!   Bearer bench-I`) and reads `connection.established` before the row starts.
//!   `room-100-of-1000`, `room-100-of-10000`: 100 of the connections, spread
//!   evenly, `subscribe` to room `public-bench` (and wait for `subscribed`);
//!   connection 0, one of them, publishes `{"type":"say","room":"public-bench",
//!   "data":"#SEQ TIMESTAMP"}` and the 100 members receive the `said` event.
//!   `user-of-1000`, `user-of-10000`: 3 of the connections are user
//!   `bench-target`; connection 0 (another user) publishes `whisper`s to it.
//!   `--in-flight` events in flight (an event is done when every recipient has
//!   it); deliveries/s, latency, and the server's user+sys CPU time
//!   (`/proc/PID/stat`, all threads) over the measured window per event and per
//!   delivery, with its CPU at rest over 1 s before. A delivery to a connection
//!   outside the target counts as stray. The closing table sets each figure at
//!   1,000 and 10,000 connections side by side with their ratio: near 1 when
//!   the cost follows the recipients, not the connections.
//!
//! `--redis [URL] [--nodes N]`: rt-server alone, then as N nodes (default 2)
//! on one Redis (the URL's, or a throwaway `redis-server` started for the
//! run), in the same invocation with the same clients and loads. Every
//! server and a Redis started here run on core 0, the generator on core 1:
//! the server side has the same one core alone and as a cluster. Clients go
//! round-robin over the nodes; client 0, on node 0, publishes to `/ws` (node
//! 0 delivers to its clients at once and forwards through Redis `PUBLISH`,
//! the other nodes deliver what Redis hands them). Rows for each
//! `--clients` count (default 200 and 1,000): `--in-flight` messages in
//! flight (deliveries/s) and `--rate` msg/s (default 100; latency of all
//! clients and of the other nodes' clients, the cross-node figure). Each row
//! also prints the Redis commands per message (`INFO commandstats` before and
//! after the measured window, all nodes, without the benchmark's own `INFO`)
//! and the servers' and Redis's CPU per message; a summary table sets the
//! medians beside the single server's against the issue's targets.
//!
//! Load rows print deliveries/s (measured deliveries over the time from the
//! first measured send to the last receive), latency, and lost deliveries
//! (messages sent x clients - received, after a bounded wait). Each load row
//! first waits until a broadcast reaches every client (all registered), then
//! warms up for 0.5 s, then measures for `--duration` seconds.
//!
//! ```sh
//! cargo build --release -p rt_server -p ws_bench
//! tools/ws_peers/install.sh                      # npm packages, outside the repository
//! taskset -c 1 ./target/release/ws-bench --peers # rt-server, Node ws, uWebSockets.js, Go gorilla
//! taskset -c 1 ./target/release/ws-bench --peers --no-server --only deliveries-1000
//! taskset -c 1 ./target/release/ws-bench --clients 2000 --rate 50   # one custom row
//! taskset -c 1 ./target/release/ws-bench --server-cores 0,1 --only deliveries-5000  # rt-server on 2 threads
//! taskset -c 1 ./target/release/ws-bench --only targeted --repeat 3  # rooms and users
//! taskset -c 1 ./target/release/ws-bench --only room-100-of-1000,room-100-of-10000
//! taskset -c 1 ./target/release/ws-bench --redis --repeat 3  # alone and as 2 nodes on Redis
//! ```

//!
//! The code, by what it measures: [`deliveries`] (the load rows, also of
//! `--redis`), [`targeted`], [`idle`], over [`broadcast`] (the load's
//! publisher and readers) and [`client`] (the connections); [`peers`] starts
//! the peer hubs, [`cluster`] runs `--redis`, [`summary`] prints the table.
//! Starting and stopping servers, `/proc` figures, histograms and the
//! `--redis` table are `bench_support`'s.

use bench_support::procfs::{core_set, own_affinity};
use bench_support::run_label;
use bench_support::server::{self, Spec};

mod args;
mod broadcast;
mod client;
mod cluster;
mod deliveries;
mod idle;
mod peers;
mod rows;
mod summary;
mod targeted;

use args::Args;
use deliveries::Measure;
use rows::{Row, RowKind};
use summary::Figure;

fn main() -> std::process::ExitCode {
    let args = Args::parse_checked();
    if args.cluster.redis.is_some() {
        return cluster::cluster_main(&args);
    }
    let (rows, targets) = match rows::rows(&args).and_then(|r| Ok((r, peers::targets(&args)?))) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("ws-bench: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if targets.is_empty() {
        eprintln!("ws-bench: no server to run against");
        return std::process::ExitCode::from(2);
    }
    print_header(&args, &rows, &targets);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // results[row][target]: one figure per repetition.
    let mut results: Vec<Vec<Vec<Figure>>> = vec![vec![Vec::new(); targets.len()]; rows.len()];
    let mut unavailable: Vec<Option<String>> = vec![None; targets.len()];
    let mut failures = 0;
    for (ri, row) in rows.iter().enumerate() {
        for (rep, (ti, t)) in
            (0..args.repeat).flat_map(|rep| targets.iter().enumerate().map(move |t| (rep, t)))
        {
            if let Some(why) = &unavailable[ti] {
                println!("[{}] {}: skipped ({why})", t.name, row.name);
                continue;
            }
            if matches!(row.kind, RowKind::Targeted { .. }) && t.name != "rt-server" {
                if rep == 0 {
                    println!(
                        "[{}] {}: skipped (rooms and users are rt-server's /hub only)",
                        t.name, row.name
                    );
                }
                continue;
            }
            let run = run_label(rep, args.repeat);
            println!("[{}] {}: {}{run}", t.name, row.name, row.label);
            match run_row(&rt, &args, row, t) {
                Ok(f) => results[ri][ti].push(f),
                Err(e) => {
                    println!("  failed: {e}");
                    failures += 1;
                    if e.contains("not 101") {
                        unavailable[ti] = Some(e);
                    }
                }
            }
        }
    }
    summary::summary(&rows, &targets, &results, args.repeat);
    if failures > 0 {
        eprintln!("ws-bench: {failures} row(s) failed");
        return std::process::ExitCode::from(1);
    }
    std::process::ExitCode::SUCCESS
}

/// Where the servers and the generator run, and the open-files limit.
fn print_header(args: &Args, rows: &[Row], targets: &[Spec]) {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let affinity = own_affinity();
    let server_cores = &args.server.server_cores;
    println!(
        "ws-bench: servers on cores {server_cores} (taskset), this generator on cores {affinity} ({cores} usable); targets: {}",
        targets
            .iter()
            .map(|t| t.name)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let shared: Vec<usize> = core_set(&affinity)
        .intersection(&core_set(server_cores))
        .copied()
        .collect();
    if !shared.is_empty() {
        println!(
            "ws-bench: the generator shares core(s) {shared:?} with the servers: their figures include the generator's load"
        );
    }
    if let Some(n) = args.server.server_threads {
        println!("ws-bench: rt-server --threads {n}");
    }
    let needed = rows
        .iter()
        .map(|r| match r.kind {
            RowKind::Load { clients, .. } => clients,
            RowKind::Idle { connections } => connections + 1,
            RowKind::Targeted { connections, .. } => connections,
        })
        .max()
        .unwrap_or(0) as u64
        + 256;
    client::ensure_fd_limit(needed);
}

/// One row against a fresh server `t`; its figure.
fn run_row(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    row: &Row,
    t: &Spec,
) -> Result<Figure, String> {
    let mut server = server::start(t)?;
    let local = tokio::task::LocalSet::new();
    let r = rt.block_on(local.run_until(async {
        match row.kind {
            RowKind::Load { clients, load } => deliveries::load_row(
                std::slice::from_ref(&server),
                clients,
                load,
                row.duration,
                args,
                // The server's CPU over the measured window, too.
                Some(&Measure { redis: None }),
            )
            .await
            .map(Figure::Load),
            RowKind::Idle { connections } => idle::idle_row(&server, connections, args)
                .await
                .map(Figure::Idle),
            RowKind::Targeted {
                connections,
                aim,
                in_flight,
            } => targeted::targeted_row(&server, connections, aim, in_flight, row.duration, args)
                .await
                .map(Figure::Targeted),
        }
    }));
    // Close every client before the server goes.
    drop(local);
    let exited = server.exited();
    drop(server);
    r.map_err(|e| match exited {
        Some(status) => format!("{e}\n  the server had exited during the row: {status}"),
        None => e,
    })
}
