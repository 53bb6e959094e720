//! `rpc-bench`: ws-wrapper echo requests against rt-server's `/rpc`, requests
//! per second and latency, over 1 and over 100 connections.
//!
//! It starts `rt-server` (next to this binary, or `--server PATH`) pinned to
//! core 0 (`--server-cores LIST`: those cores, rt-server then runs as many
//! threads unless `--server-threads N`); run it pinned to core 1. Each
//! connection keeps `--in-flight` requests `{"a":["echo",N],"i":ID}`
//! outstanding (1: one request, then the next), for `--seconds`, then prints
//! requests per second and p50/p99/max of the request->answer time.
//! `--repeat N` runs each row N times and ends with the medians.
//!
//! ```sh
//! cargo build --release -p rt_server -p rpc_bench
//! taskset -c 1 ./target/release/rpc-bench
//! taskset -c 1 ./target/release/rpc-bench --in-flight 16 --connections 100 --repeat 3
//! ```

use std::time::{Duration, Instant};

use bench_support::args::{ServerArgs, positive};
use bench_support::server::{self, Server, Spec};
use bench_support::{median, percentile_ms};
use clap::Parser;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// Requests per second and latency of ws-wrapper echo requests against rt-server's /rpc.
#[derive(Parser, Debug)]
#[command(name = "rpc-bench")]
struct Args {
    /// Seconds each row runs
    #[arg(long, value_name = "S", default_value_t = 3.0, value_parser = positive::<f64>)]
    seconds: f64,
    /// Requests each connection keeps outstanding (1: one request, then the next)
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = positive::<usize>)]
    in_flight: usize,
    /// The rows: connection counts, comma-separated
    #[arg(long = "connections", value_name = "N[,N...]", value_delimiter = ',', default_value = "1,100", value_parser = positive::<usize>)]
    rows: Vec<usize>,
    /// Runs each row N times and ends with the medians
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = positive::<usize>)]
    repeat: usize,
    #[command(flatten)]
    server: ServerArgs,
}

/// Starts rt-server on `--server-cores`.
fn start_server(a: &Args) -> Result<Server, String> {
    let spec = Spec::rt_server(
        a.server.rt_server(),
        &a.server.server_cores,
        a.server.server_threads,
        &["--quiet", "--message-rate", "0"],
    );
    server::start(&spec)
        .map_err(|e| format!("{e} (build it with cargo build --release -p rt_server)"))
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn connect(addr: &str) -> Result<Ws, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/rpc"), tcp)
        .await
        .map_err(|e| e.to_string())?;
    Ok(ws)
}

/// One connection: keeps `in_flight` requests out until `until`; latencies in µs.
///
/// The answers already read go together: each gets its next request queued,
/// and the requests leave in one write once no answer is left to read, so
/// the generator spends one write per burst, not one per request (a
/// generator slower than the server would measure itself).
async fn run(mut ws: Ws, in_flight: usize, until: Instant) -> Result<Vec<u32>, String> {
    let mut sent_at = std::collections::HashMap::new();
    let mut next_id = 1u64;
    let mut lat = Vec::new();
    let request = |ws_id: u64| Message::text(format!(r#"{{"a":["echo",{ws_id}],"i":{ws_id}}}"#));
    for _ in 0..in_flight {
        sent_at.insert(next_id, Instant::now());
        ws.feed(request(next_id)).await.map_err(|e| e.to_string())?;
        next_id += 1;
    }
    ws.flush().await.map_err(|e| e.to_string())?;
    while !sent_at.is_empty() {
        let first = ws.next().await.ok_or("the server closed")?;
        let mut ready = Some(first);
        let mut queued = false;
        while let Some(msg) = ready {
            if let Message::Text(t) = msg.map_err(|e| e.to_string())? {
                let id = t
                    .split("\"i\":")
                    .nth(1)
                    .and_then(|r| r.split([',', '}']).next())
                    .and_then(|n| n.parse::<u64>().ok())
                    .ok_or(format!("unexpected answer {t}"))?;
                if !t.contains(&format!("\"d\":{id}")) {
                    return Err(format!("wrong answer {t}"));
                }
                if let Some(at) = sent_at.remove(&id) {
                    lat.push(u32::try_from(at.elapsed().as_micros()).unwrap_or(u32::MAX));
                }
                if Instant::now() < until {
                    sent_at.insert(next_id, Instant::now());
                    ws.feed(request(next_id)).await.map_err(|e| e.to_string())?;
                    next_id += 1;
                    queued = true;
                }
            }
            // The next answer if it is already read, without waiting.
            ready = ws.next().now_or_never().flatten();
        }
        if queued {
            ws.flush().await.map_err(|e| e.to_string())?;
        }
    }
    let _ = ws.close(None).await;
    Ok(lat)
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let server = match start_server(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rpc-bench: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let addr = server.addr.to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "rpc-bench: rt-server on cores {}{}",
        args.server.server_cores,
        args.server
            .server_threads
            .map_or(String::new(), |n| format!(", --threads {n}"))
    );
    // Per row: (requests/s, p50, p99) of each run.
    let mut runs: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); args.rows.len()];
    let result = rt.block_on(async {
        for (ri, &n) in args.rows.iter().cycle().take(args.rows.len() * args.repeat).enumerate() {
            let ri = ri % args.rows.len();
            let mut conns = Vec::with_capacity(n);
            for _ in 0..n {
                conns.push(connect(&addr).await?);
            }
            let start = Instant::now();
            let until = start + Duration::from_secs_f64(args.seconds);
            let tasks: Vec<_> = conns
                .into_iter()
                .map(|ws| tokio::spawn(run(ws, args.in_flight, until)))
                .collect();
            let mut lat = Vec::new();
            for t in tasks {
                lat.extend(t.await.map_err(|e| e.to_string())??);
            }
            let wall = start.elapsed().as_secs_f64();
            lat.sort_unstable();
            runs[ri].push((lat.len() as f64 / wall, percentile_ms(&lat, 0.5), percentile_ms(&lat, 0.99)));
            println!(
                "echo over {n} connection{}, {} in flight each: {} requests in {wall:.2} s = {:.0} requests/s; latency p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
                if n == 1 { "" } else { "s" },
                args.in_flight,
                lat.len(),
                lat.len() as f64 / wall,
                percentile_ms(&lat, 0.5),
                percentile_ms(&lat, 0.99),
                percentile_ms(&lat, 1.0),
            );
        }
        Ok::<(), String>(())
    });
    if args.repeat > 1 && result.is_ok() {
        println!("median of {} runs:", args.repeat);
        for (&n, r) in args.rows.iter().zip(&runs) {
            let med =
                |f: fn(&(f64, f64, f64)) -> f64| median(r.iter().map(f).collect()).unwrap_or(0.0);
            println!(
                "  echo over {n} connection{}, {} in flight each: {:.0} requests/s; latency p50 {:.3} ms, p99 {:.3} ms",
                if n == 1 { "" } else { "s" },
                args.in_flight,
                med(|x| x.0),
                med(|x| x.1),
                med(|x| x.2),
            );
        }
    }
    drop(server);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rpc-bench: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
