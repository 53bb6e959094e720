//! `rpc-bench`: ws-wrapper echo requests against rt-server's `/rpc`, requests
//! per second and latency, over 1 and over 100 connections.
//!
//! It starts `rt-server` (next to this binary) pinned to core 0; run it
//! pinned to core 1. Each connection keeps `--in-flight` requests
//! `{"a":["echo",N],"i":ID}` outstanding (1: one request, then the next),
//! for `--seconds`, then prints requests per second and p50/p99/max of the
//! request->answer time.
//!
//! ```sh
//! cargo build --release -p rt_server -p rpc_bench
//! taskset -c 1 ./target/release/rpc-bench
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
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        seconds: 3.0,
        in_flight: 1,
        rows: vec![1, 100],
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
            other => {
                return Err(format!(
                    "unknown flag {other}; usage: rpc-bench [--seconds S] [--in-flight N] [--connections 1,100]"
                ));
            }
        }
    }
    a.in_flight = a.in_flight.max(1);
    Ok(a)
}

/// Starts rt-server on core 0; its address.
fn start_server() -> Result<(Child, String), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let server = exe.with_file_name("rt-server");
    let mut child = Command::new("taskset")
        .args(["-c", "0"])
        .arg(&server)
        .args(["--addr", "127.0.0.1:0", "--quiet", "--message-rate", "0"])
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
    let (mut child, addr) = match start_server() {
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
    let result = rt.block_on(async {
        for &n in &args.rows {
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
