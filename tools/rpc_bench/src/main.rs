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

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

struct Args {
    seconds: f64,
    in_flight: usize,
    rows: Vec<usize>,
    repeat: usize,
    server: Option<std::path::PathBuf>,
    server_cores: String,
    server_threads: Option<usize>,
}

const USAGE: &str = "usage: rpc-bench [--seconds S] [--in-flight N] [--connections 1,100] \
[--repeat N] [--server PATH] [--server-cores LIST] [--server-threads N]";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        seconds: 3.0,
        in_flight: 1,
        rows: vec![1, 100],
        repeat: 1,
        server: None,
        server_cores: "0".into(),
        server_threads: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => a.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--in-flight" => {
                a.in_flight = value()?.parse().map_err(|e| format!("--in-flight: {e}"))?
            }
            "--connections" => {
                a.rows = value()?
                    .split(',')
                    .map(|n| n.parse().map_err(|e| format!("--connections: {e}")))
                    .collect::<Result<_, _>>()?;
            }
            "--repeat" => a.repeat = value()?.parse().map_err(|e| format!("--repeat: {e}"))?,
            "--server" => a.server = Some(value()?.into()),
            "--server-cores" => {
                let v = value()?;
                let ok = !v.is_empty() && v.split(',').all(|part| {
                    let (lo, hi) = part.split_once('-').unwrap_or((part, part));
                    matches!((lo.parse::<usize>(), hi.parse::<usize>()), (Ok(l), Ok(h)) if l <= h)
                });
                if !ok {
                    return Err(format!(
                        "--server-cores {v}: a core list such as 0 or 0,1 or 0-3"
                    ));
                }
                a.server_cores = v;
            }
            "--server-threads" => {
                a.server_threads = Some(
                    value()?
                        .parse()
                        .map_err(|e| format!("--server-threads: {e}"))?,
                )
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown flag {other}; {USAGE}")),
        }
    }
    if a.repeat == 0 || a.server_threads == Some(0) || a.rows.contains(&0) {
        return Err("--repeat, --server-threads and --connections must be > 0".into());
    }
    a.in_flight = a.in_flight.max(1);
    Ok(a)
}

/// Starts rt-server on `--server-cores`; its address.
fn start_server(a: &Args) -> Result<(Child, String), String> {
    let server = match &a.server {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("rt-server"),
    };
    let threads = a
        .server_threads
        .map(|n| vec!["--threads".to_string(), n.to_string()])
        .unwrap_or_default();
    let mut child = Command::new("taskset")
        .args(["-c", &a.server_cores])
        .arg(&server)
        .args(["--addr", "127.0.0.1:0", "--quiet", "--message-rate", "0"])
        .args(threads)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "{}: {e} (build it with cargo build --release -p rt_server)",
                server.display()
            )
        })?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let addr = line
        .split("http://")
        .nth(1)
        .map(|s| s.trim().to_string())
        .ok_or(format!("unexpected first line: {line}"))?;
    Ok((child, addr))
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
async fn run(mut ws: Ws, in_flight: usize, until: Instant) -> Result<Vec<u32>, String> {
    let mut sent_at = std::collections::HashMap::new();
    let mut next_id = 1u64;
    let mut lat = Vec::new();
    let send = |ws_id: u64| Message::text(format!(r#"{{"a":["echo",{ws_id}],"i":{ws_id}}}"#));
    for _ in 0..in_flight {
        sent_at.insert(next_id, Instant::now());
        ws.send(send(next_id)).await.map_err(|e| e.to_string())?;
        next_id += 1;
    }
    while !sent_at.is_empty() {
        let msg = ws
            .next()
            .await
            .ok_or("the server closed")?
            .map_err(|e| e.to_string())?;
        let Message::Text(t) = msg else { continue };
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
            ws.send(send(next_id)).await.map_err(|e| e.to_string())?;
            next_id += 1;
        }
    }
    let _ = ws.close(None).await;
    Ok(lat)
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("rpc-bench: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let (mut child, addr) = match start_server(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rpc-bench: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "rpc-bench: rt-server on cores {}{}",
        args.server_cores,
        args.server_threads
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
            runs[ri].push((lat.len() as f64 / wall, pct(&lat, 0.5), pct(&lat, 0.99)));
            println!(
                "echo over {n} connection{}, {} in flight each: {} requests in {wall:.2} s = {:.0} requests/s; latency p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
                if n == 1 { "" } else { "s" },
                args.in_flight,
                lat.len(),
                lat.len() as f64 / wall,
                pct(&lat, 0.5),
                pct(&lat, 0.99),
                pct(&lat, 1.0),
            );
        }
        Ok::<(), String>(())
    });
    if args.repeat > 1 && result.is_ok() {
        println!("median of {} runs:", args.repeat);
        for (&n, r) in args.rows.iter().zip(&runs) {
            let med = |f: fn(&(f64, f64, f64)) -> f64| {
                let mut v: Vec<f64> = r.iter().map(f).collect();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
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
    let _ = child.kill();
    let _ = child.wait();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rpc-bench: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
