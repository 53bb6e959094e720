//! `sse-bench`: SSE fan-out throughput and memory per idle stream of `rt-server`.
//!
//! Starts `rt-server` (the sibling binary) pinned to core 0 with `taskset`,
//! and drives it from this process (run it pinned to core 1):
//!
//! 1. **Fan-out.** `--subscribers` SSE clients on `GET /events`; `--events`
//!    64-byte events published through `POST /publish` over `--publishers`
//!    keep-alive connections as fast as they are answered. Prints deliveries
//!    per second (deliveries over the time from the first publish to the last
//!    delivery), publish-to-receive latency p50/p99/max, and lost deliveries
//!    (published x subscribers - received, after all publishes plus a grace
//!    period; streams the server cut as slow count as lost).
//! 2. **Memory.** A fresh server, `--idle` idle SSE clients; prints the
//!    server's RSS growth per stream (VmRSS from /proc).
//!
//! ```sh
//! cargo build --release -p rt_server -p sse_bench
//! taskset -c 1 ./target/release/sse-bench               # publish as fast as answered
//! taskset -c 1 ./target/release/sse-bench --rate 500    # paced: 500 events/s = 500k deliveries/s
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

struct Args {
    subscribers: usize,
    events: usize,
    publishers: usize,
    idle: usize,
    rate: Option<u64>,
    only: Option<String>,
    server: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        subscribers: 1000,
        events: 3000,
        publishers: 4,
        idle: 5000,
        rate: None,
        only: None,
        server: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--subscribers" => a.subscribers = value()?.parse().map_err(|e| format!("{e}"))?,
            "--events" => a.events = value()?.parse().map_err(|e| format!("{e}"))?,
            "--publishers" => a.publishers = value()?.parse().map_err(|e| format!("{e}"))?,
            "--idle" => a.idle = value()?.parse().map_err(|e| format!("{e}"))?,
            "--server" => a.server = Some(PathBuf::from(value()?)),
            "--rate" => a.rate = Some(value()?.parse().map_err(|e| format!("{e}"))?),
            "--only" => match value()?.as_str() {
                o @ ("fanout" | "memory") => a.only = Some(o.to_string()),
                o => return Err(format!("--only takes fanout or memory, not {o}")),
            },
            "-h" | "--help" => {
                return Err("usage: sse-bench [--subscribers N] [--events N] [--publishers N] [--idle N] [--rate EVENTS_PER_SEC] [--only fanout|memory] [--server PATH]".into());
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

/// The running server; killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    /// SIGTERM (the server drains and exits, as profilers need), SIGKILL after 10 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(path: &PathBuf) -> Result<Server, String> {
    let mut cmd = if std::path::Path::new("/usr/bin/taskset").exists() {
        let mut c = Command::new("/usr/bin/taskset");
        c.arg("-c").arg("0").arg(path);
        c
    } else {
        Command::new(path)
    };
    let mut child = cmd
        .args(["--addr", "127.0.0.1:0", "--quiet"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", path.display()))?;
    let mut line = String::new();
    let stdout = child.stdout.take().ok_or("no stdout")?;
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
        .map_err(|e| e.to_string())?;
    let addr = line
        .trim()
        .rsplit("http://")
        .next()
        .and_then(|a| a.parse().ok())
        .ok_or(format!("unexpected first line from rt-server: {line:?}"))?;
    Ok(Server { child, addr })
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Opens an SSE stream and returns the socket positioned after the response head.
async fn subscribe(addr: SocketAddr) -> std::io::Result<Subscriber> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(b"GET /events HTTP/1.1\r\nhost: bench\r\n\r\n")
        .await?;
    let mut r = BufReader::with_capacity(16 * 1024, s);
    let mut line = String::new();
    let mut chunked = false;
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line.to_ascii_lowercase().starts_with("transfer-encoding:") && line.contains("chunked") {
            chunked = true;
        }
        if line == "\r\n" {
            return Ok(Subscriber { r, chunked });
        }
    }
}

/// An open stream after its response head: chunked (hyper) or close-delimited
/// (what `http_serve` writes for long-lived bodies).
struct Subscriber {
    r: BufReader<TcpStream>,
    chunked: bool,
}

impl Subscriber {
    /// Appends the next piece of the body to `body`; false at its end.
    async fn next(&mut self, body: &mut Vec<u8>) -> bool {
        if !self.chunked {
            let start = body.len();
            body.resize(start + 16 * 1024, 0);
            let n = self.r.read(&mut body[start..]).await.unwrap_or(0);
            body.truncate(start + n);
            return n > 0;
        }
        let mut line = String::new();
        match self.r.read_line(&mut line).await {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
        let Ok(size) = usize::from_str_radix(line.trim_end(), 16) else {
            return false;
        };
        if size == 0 {
            return false;
        }
        let start = body.len();
        body.resize(start + size + 2, 0);
        if self.r.read_exact(&mut body[start..]).await.is_err() {
            return false;
        }
        body.truncate(start + size);
        true
    }
}

/// Reads an SSE body; for each `data: <ts>` records the latency in µs.
async fn receive(
    mut sub: Subscriber,
    epoch: Instant,
    want: u64,
    received: Arc<AtomicU64>,
) -> Vec<u32> {
    let mut lat = Vec::with_capacity(want as usize);
    let mut body: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut got = 0u64;
    while got < want {
        if !sub.next(&mut body).await {
            break;
        }
        // Parse complete lines; keep a partial one for the next chunk.
        let mut consumed = 0;
        while let Some(nl) = body[consumed..].iter().position(|&b| b == b'\n') {
            let l = &body[consumed..consumed + nl];
            if let Some(rest) = l.strip_prefix(b"data: ") {
                let digits: &[u8] = &rest[..rest.iter().take_while(|b| b.is_ascii_digit()).count()];
                if let Some(ts) = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|d| d.parse::<u64>().ok())
                {
                    let now = epoch.elapsed().as_nanos() as u64;
                    lat.push(((now.saturating_sub(ts)) / 1000).min(u64::from(u32::MAX)) as u32);
                    got += 1;
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
            consumed += nl + 1;
        }
        body.drain(..consumed);
    }
    lat
}

/// Publishes `count` events on one keep-alive connection; returns how many were accepted.
async fn publisher(
    addr: SocketAddr,
    epoch: Instant,
    next: Arc<AtomicU64>,
    total: u64,
    pace: Option<(Instant, u64)>,
) -> std::io::Result<u64> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut r = BufReader::new(s);
    let mut ok = 0;
    let mut line = String::new();
    loop {
        let k = next.fetch_add(1, Ordering::Relaxed);
        if k >= total {
            return Ok(ok);
        }
        if let Some((start, rate)) = pace {
            tokio::time::sleep_until(
                (start + Duration::from_nanos(k * 1_000_000_000 / rate)).into(),
            )
            .await;
        }
        let ts = epoch.elapsed().as_nanos() as u64;
        let payload = format!("{ts:020}{}", "x".repeat(44));
        let req = format!(
            "POST /publish HTTP/1.1\r\nhost: bench\r\ncontent-length: {}\r\n\r\n{payload}",
            payload.len()
        );
        r.get_mut().write_all(req.as_bytes()).await?;
        let mut length = 0usize;
        let mut status_ok = false;
        loop {
            line.clear();
            if r.read_line(&mut line).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if line.starts_with("HTTP/1.1 202") {
                status_ok = true;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length];
        r.read_exact(&mut body).await?;
        if status_ok {
            ok += 1;
        }
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

async fn fan_out(server: &Server, args: &Args) -> Result<(), String> {
    let epoch = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::with_capacity(args.subscribers);
    for _ in 0..args.subscribers {
        let r = subscribe(server.addr)
            .await
            .map_err(|e| format!("subscribe: {e}"))?;
        readers.push(tokio::spawn(receive(
            r,
            epoch,
            args.events as u64,
            received.clone(),
        )));
    }
    // Every subscriber registered before the first publish.
    let stats_url = server.addr;
    loop {
        let body = get(stats_url, "/stats").await.map_err(|e| e.to_string())?;
        if body.contains(&format!("\"subscribers\":{}", args.subscribers)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let pubs: Vec<_> = (0..args.publishers.max(1))
        .map(|_| {
            let pace = args.rate.map(|r| (started, r.max(1)));
            tokio::spawn(publisher(
                server.addr,
                epoch,
                next.clone(),
                args.events as u64,
                pace,
            ))
        })
        .collect();
    let mut published = 0;
    for p in pubs {
        published += p
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("publish: {e}"))?;
    }
    let publish_secs = started.elapsed().as_secs_f64();
    let want = published * args.subscribers as u64;
    // Wait for the deliveries, up to a grace period after the last publish.
    let grace = Instant::now() + Duration::from_secs(10);
    let mut last_change = (received.load(Ordering::Relaxed), Instant::now());
    while received.load(Ordering::Relaxed) < want && Instant::now() < grace {
        tokio::time::sleep(Duration::from_millis(2)).await;
        let r = received.load(Ordering::Relaxed);
        if r != last_change.0 {
            last_change = (r, Instant::now());
        } else if last_change.1.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    let elapsed = last_change
        .1
        .duration_since(started)
        .as_secs_f64()
        .max(publish_secs);
    let got = received.load(Ordering::Relaxed);
    let mut lat: Vec<u32> = Vec::with_capacity(got as usize);
    for r in readers {
        r.abort();
        if let Ok(v) = r.await {
            lat.extend(v);
        }
    }
    lat.sort_unstable();
    println!(
        "fan-out: {} subscribers, {published} events of 64 B over {} publishers in {publish_secs:.2} s ({})",
        args.subscribers,
        args.publishers,
        args.rate
            .map_or("as fast as answered".to_string(), |r| format!(
                "paced at {r} events/s"
            ))
    );
    println!(
        "  deliveries: {got} of {want} in {elapsed:.2} s = {:.0} deliveries/s; lost {}",
        got as f64 / elapsed,
        want - got.min(want)
    );
    println!(
        "  latency publish->receive: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0)
    );
    let stats = get(server.addr, "/stats")
        .await
        .map_err(|e| e.to_string())?;
    println!("  server stats: {}", stats.trim());
    Ok(())
}

async fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
}

async fn memory(server: &Server, idle: usize) -> Result<(), String> {
    let pid = server.child.id();
    // One stream first, so lazily allocated runtime structures are counted once, not per stream.
    let warm = subscribe(server.addr).await.map_err(|e| e.to_string())?;
    let before = rss_kib(pid);
    let mut streams = Vec::with_capacity(idle);
    for _ in 0..idle {
        streams.push(
            subscribe(server.addr)
                .await
                .map_err(|e| format!("subscribe: {e}"))?,
        );
    }
    loop {
        let body = get(server.addr, "/stats")
            .await
            .map_err(|e| e.to_string())?;
        if body.contains(&format!("\"subscribers\":{}", idle + 1)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let after = rss_kib(pid);
    println!(
        "memory: {idle} idle SSE streams: server RSS {before} KiB -> {after} KiB = {:.2} KiB per stream",
        (after.saturating_sub(before)) as f64 / idle as f64
    );
    drop((warm, streams));
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sse-bench: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let server_path = args.server.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("rt-server")))
            .unwrap_or_else(|| PathBuf::from("rt-server"))
    });
    if !server_path.exists() {
        eprintln!(
            "sse-bench: {} not found; run `cargo build --release -p rt_server -p sse_bench` first",
            server_path.display()
        );
        return std::process::ExitCode::from(2);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!("sse-bench: rt-server on core 0, load on this process ({cores} cores visible)");
    let result = rt.block_on(async {
        if args.only.as_deref() != Some("memory") {
            let server = start_server(&server_path)?;
            fan_out(&server, &args).await?;
        }
        if args.only.as_deref() != Some("fanout") {
            let server = start_server(&server_path)?;
            memory(&server, args.idle).await?;
        }
        Ok::<(), String>(())
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sse-bench: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
