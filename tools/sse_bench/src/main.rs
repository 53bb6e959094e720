//! `sse-bench`: SSE fan-out throughput and memory per idle stream of `rt-server`.
//!
//! Starts `rt-server` (the sibling binary) pinned to core 0 with `taskset`,
//! and drives it from this process (run it pinned to core 1):
//!
//! 1. **Deliveries.** `--subscribers` SSE clients (default 1,000) on
//!    `GET /events`; 64-byte events published through `POST /publish`,
//!    `--in-flight` of them in flight (default 16; an event is in flight
//!    from its publish until every stream has it), written as pipelined
//!    HTTP/1.1 requests on `--publishers` keep-alive connections (default 1),
//!    as many at once as there is room for (with `--batch N`, up to N
//!    events per `POST /publish/batch` instead): `ws-bench`'s `deliveries-N`
//!    rows, whose one publishing socket writes its messages the same way,
//!    measured the same way (every stream receiving first, a 0.5 s warm-up,
//!    `--duration` seconds measured, default 3; deliveries over the time
//!    from the first measured publish to the last receive), so the two
//!    figures compare. Readers parse the streams in place, without a copy
//!    per line or a read that only finds the socket empty. Prints
//!    deliveries/s, publish-to-receive latency, lost deliveries, and the
//!    server's CPU per delivery and both processes' CPU over the window (a
//!    generator near 100% of its core is the limit, not the server). With
//!    `--rate`, the earlier shape instead: `--events` published over
//!    `--publishers` connections (default 4), one request at a time each,
//!    at that rate.
//! 2. **Memory.** A fresh server, `--idle` idle SSE clients; prints the
//!    server's RSS growth per stream (VmRSS from /proc).
//!
//! `--repeat N` runs both N times, each on a fresh server, and prints the
//! medians.
//!
//! 3. **`--redis [URL] [--nodes N]`** (instead of 1 and 2): rt-server alone,
//!    then as N nodes (default 2) on one Redis (the URL's, or a throwaway
//!    `redis-server` started for the run), same subscribers and loads, SSE
//!    topic `bench`. Every server and a Redis started here run on core 0.
//!    Subscribers go round-robin over the nodes, publishers all to node 0
//!    (`POST /publish?topic=bench`); on Redis every stream, node 0's too,
//!    gets its events from Redis. Before each row the topic's history is
//!    filled (1,024 events, so every measured publish also trims one) and a
//!    probe reaches every stream. For each `--subscribers` count (default 200
//!    and 1,000): as fast as answered (`--batch N`: N events per
//!    `POST /publish/batch`; `--events` scaled to as many
//!    deliveries as `--events` to 1,000) and paced at `--rate` (default 100)
//!    for `--duration` s (default 5), with the Redis commands per event
//!    (`INFO commandstats` before and after, all nodes, without the
//!    benchmark's own `INFO`) and the servers' and Redis's CPU per event; a
//!    summary table sets the medians of `--repeat` runs beside the single
//!    server's against the issue's targets.
//!
//! ```sh
//! cargo build --release -p rt_server -p sse_bench
//! taskset -c 1 ./target/release/sse-bench --repeat 3    # 16 in flight to 1,000 streams; 5,000 idle
//! taskset -c 1 ./target/release/sse-bench --rate 500    # paced: 500 events/s = 500k deliveries/s
//! taskset -c 1 ./target/release/sse-bench --redis --repeat 3  # alone and as 2 nodes on Redis
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bench_support::args::{RedisArgs, positive, usage_error};
use bench_support::cluster::{self, Figures};
use bench_support::redis::{Redis, SERVER_CORE};
use bench_support::server::{self, Server, Spec};
use bench_support::{exit_status, median, median_title, percentile_ms, procfs, run_label};
use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

mod deliveries;

/// Benchmark of rt-server's SSE fan-out and memory per idle stream, over real TCP.
///
/// rt-server runs on core 0 (taskset); run this generator pinned to core 1.
#[derive(Parser, Debug)]
#[command(
    name = "sse-bench",
    after_help = "Paced instead of in flight: sse-bench --rate EVENTS_PER_SEC [--events N] [--publishers N]\n\
Cluster: sse-bench --redis [redis://HOST:PORT] [--nodes N[,N...]] [--subscribers N[,N...]] [--rate EVENTS_PER_SEC] [--duration SECS] [--events N] [--publishers N] [--repeat N]\n  \
rt-server alone against N nodes on one Redis, SSE topic `bench` (default: a throwaway redis-server, 2 nodes, 200 and 1000 subscribers, 100 events/s)"
)]
struct Args {
    /// SSE clients [default: 1000]; with --redis, counts comma-separated [default: 200,1000]
    #[arg(long = "subscribers", value_name = "N[,N...]", value_delimiter = ',', value_parser = positive::<usize>)]
    subscriber_counts: Option<Vec<usize>>,
    /// Events published by a paced row (--rate), and to 1,000 subscribers by a --redis row as fast as answered
    #[arg(long, value_name = "N", default_value_t = 3000)]
    events: usize,
    /// Publisher connections [default: 1 pipelined in the in-flight row, 4 paced and with --redis]
    #[arg(long, value_name = "N", value_parser = positive::<usize>)]
    publishers: Option<usize>,
    /// Events in flight in the deliveries row
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = positive::<usize>)]
    in_flight: usize,
    /// Events per request in the deliveries row and --redis rows as fast as answered: above 1, `POST /publish/batch` with up to N events
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = positive::<usize>)]
    batch: usize,
    /// Seconds measured [default: 3; 5 with --redis]
    #[arg(long, value_name = "SECS", value_parser = positive::<f64>)]
    duration: Option<f64>,
    /// Idle SSE streams of the memory row
    #[arg(long, value_name = "N", default_value_t = 5000, value_parser = positive::<usize>)]
    idle: usize,
    /// Paced: publish at this many events per second (with --redis: the paced rows' rate [default: 100])
    #[arg(long, value_name = "EVENTS_PER_SEC", value_parser = positive::<u64>)]
    rate: Option<u64>,
    /// Runs every row N times, each on a fresh server, and prints the medians
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = positive::<usize>)]
    repeat: usize,
    /// Runs only the fan-out or only the memory row
    #[arg(long, value_name = "ROW", value_parser = ["fanout", "memory"])]
    only: Option<String>,
    /// The rt-server binary [default: rt-server beside this binary]
    #[arg(long, value_name = "PATH")]
    server: Option<PathBuf>,
    #[command(flatten)]
    cluster: RedisArgs,
}

impl Args {
    /// Checks what clap's attributes cannot; exits with a usage error.
    fn checked(self) -> Args {
        if self.cluster.redis.is_some() {
            if self.only.is_some() {
                usage_error::<Args>("--redis runs its own rows: no --only");
            }
        } else if self.cluster.nodes.is_some() {
            usage_error::<Args>("--nodes needs --redis");
        } else if self.subscriber_counts.as_ref().is_some_and(|c| c.len() > 1) {
            usage_error::<Args>("several --subscribers counts need --redis");
        }
        self
    }

    /// The subscribers of the single-server rows.
    fn subscribers(&self) -> usize {
        self.subscriber_counts.as_ref().map_or(1000, |c| c[0])
    }

    /// `--publishers` of the paced and `--redis` rows.
    fn publishers(&self) -> usize {
        self.publishers.unwrap_or(4)
    }

    /// `--publishers` of the in-flight row.
    fn publishers_in_flight(&self) -> usize {
        self.publishers.unwrap_or(1)
    }
}

/// Starts rt-server on core 0 with `extra` flags.
fn start_server(path: &Path, extra: &[String]) -> Result<Server, String> {
    let mut spec = Spec::rt_server(path.to_path_buf(), SERVER_CORE, None, &["--quiet"]);
    spec.args.extend(extra.iter().cloned());
    server::start(&spec)
}

/// Opens an SSE stream on `path` (`/events`, `/events?topic=T`) and returns
/// the socket positioned after the response head.
async fn subscribe(addr: SocketAddr, path: &str) -> std::io::Result<Subscriber> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: bench\r\n\r\n").as_bytes())
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
            // Into the spare capacity: no zeroing per read.
            body.reserve(16 * 1024);
            return self.r.read_buf(body).await.unwrap_or(0) > 0;
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

/// Reads an SSE body; for each `data: <ts>` records the latency in µs. The
/// first `data: probe` it sees adds one to `probed`.
async fn receive(
    mut sub: Subscriber,
    epoch: Instant,
    want: u64,
    received: Arc<AtomicU64>,
    probed: Arc<AtomicU64>,
) -> Vec<u32> {
    let mut seen_probe = false;
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
                if !seen_probe && rest.starts_with(b"probe") {
                    seen_probe = true;
                    probed.fetch_add(1, Ordering::Relaxed);
                }
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

/// Publishes `count` events to `path` (`/publish`, `/publish?topic=T`) on one
/// keep-alive connection; returns how many were accepted.
async fn publisher(
    addr: SocketAddr,
    path: Arc<str>,
    epoch: Instant,
    next: Arc<AtomicU64>,
    total: u64,
    pace: Option<(Instant, u64)>,
    batch: u64,
) -> std::io::Result<u64> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut r = BufReader::new(s);
    let mut ok = 0;
    let mut line = String::new();
    let batch = batch.max(1);
    let path = if batch > 1 {
        path.replacen("/publish", "/publish/batch", 1)
    } else {
        path.to_string()
    };
    loop {
        let k = next.fetch_add(batch, Ordering::Relaxed);
        if k >= total {
            return Ok(ok);
        }
        let n = batch.min(total - k);
        if let Some((start, rate)) = pace {
            tokio::time::sleep_until(
                (start + Duration::from_nanos(k * 1_000_000_000 / rate)).into(),
            )
            .await;
        }
        let ts = epoch.elapsed().as_nanos() as u64;
        let event = format!("{ts:020}{}", "x".repeat(44));
        let payload = if batch > 1 {
            format!("[{}]", vec![format!("\"{event}\""); n as usize].join(","))
        } else {
            event
        };
        let req = format!(
            "POST {path} HTTP/1.1\r\nhost: bench\r\ncontent-length: {}\r\n\r\n{payload}",
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
            ok += n;
        }
    }
}

/// Events published before a `--redis` row's subscribers connect.
const HISTORY_FILL: u64 = 1024;

/// One fan-out row.
struct FanOut<'a> {
    subscribers: usize,
    events: usize,
    publishers: usize,
    rate: Option<u64>,
    /// Events per request: above 1, `POST /publish/batch`.
    batch: usize,
    /// `?topic=` of the streams and publishes (`None`: the default, `hub`).
    topic: Option<&'a str>,
    /// `--redis` runs: probe first, then measure per node, CPU and Redis.
    measure: Option<Measure<'a>>,
}

/// What a `--redis` run measures beside the default figures.
struct Measure<'a> {
    /// The Redis the servers are on (`None`: the single server, alone).
    redis: Option<&'a Redis>,
}

/// Subscriber `i` on server `i % servers.len()` (round-robin); every
/// publisher on the first server.
async fn fan_out(servers: &[Server], spec: &FanOut<'_>) -> Result<Figures, String> {
    let (events_path, publish_path) = match spec.topic {
        Some(t) => (format!("/events?topic={t}"), format!("/publish?topic={t}")),
        None => ("/events".to_string(), "/publish".to_string()),
    };
    let publish_path: Arc<str> = publish_path.into();
    let nodes = servers.len();
    let epoch = Instant::now();
    if spec.measure.is_some() {
        // The topic's history full first (the single server's 1,024 events,
        // Redis's 1,000), as on a server that has run for a while: every
        // measured publish also trims the oldest event.
        publisher(
            servers[0].addr,
            publish_path.clone(),
            epoch,
            Arc::new(AtomicU64::new(0)),
            HISTORY_FILL,
            None,
            1,
        )
        .await
        .map_err(|e| format!("filling the history: {e}"))?;
    }
    let received = Arc::new(AtomicU64::new(0));
    let probed = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::with_capacity(spec.subscribers);
    for i in 0..spec.subscribers {
        let node = i % nodes;
        let r = subscribe(servers[node].addr, &events_path)
            .await
            .map_err(|e| format!("subscribe: {e}"))?;
        readers.push((
            node,
            tokio::spawn(receive(
                r,
                epoch,
                spec.events as u64,
                received.clone(),
                probed.clone(),
            )),
        ));
    }
    // Every subscriber registered before the first publish.
    for (node, server) in servers.iter().enumerate() {
        let expect = (0..spec.subscribers).filter(|i| i % nodes == node).count();
        loop {
            let body = get(server.addr, "/stats")
                .await
                .map_err(|e| e.to_string())?;
            if body.contains(&format!("\"subscribers\":{expect}")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    if spec.measure.is_some() {
        // A node hears a topic once its Redis subscription is applied: probe
        // until one event reached every stream.
        let t = Instant::now();
        while probed.load(Ordering::Relaxed) < spec.subscribers as u64 {
            if t.elapsed() > Duration::from_secs(10) {
                return Err(format!(
                    "after 10 s a probe reached {} of {} streams",
                    probed.load(Ordering::Relaxed),
                    spec.subscribers
                ));
            }
            post(servers[0].addr, &publish_path, "probe")
                .await
                .map_err(|e| format!("probe: {e}"))?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let redis = spec.measure.as_ref().and_then(|m| m.redis);
    let commands_before = match redis {
        Some(r) => Some(r.commandstats().await?),
        None => None,
    };
    let server_pids: Vec<u32> = servers.iter().map(|s| s.pid()).collect();
    let servers_cpu = spec
        .measure
        .as_ref()
        .map(|_| procfs::CpuWindow::start(&server_pids, redis.and_then(|r| r.pid())));
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let pubs: Vec<_> = (0..spec.publishers.max(1))
        .map(|_| {
            let pace = spec.rate.map(|r| (started, r.max(1)));
            tokio::spawn(publisher(
                servers[0].addr,
                publish_path.clone(),
                epoch,
                next.clone(),
                spec.events as u64,
                pace,
                spec.batch as u64,
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
    let want = published * spec.subscribers as u64;
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
    let servers_cpu = servers_cpu.map(|w| w.line(published));
    let commands = match (redis, commands_before) {
        (Some(r), Some(before)) => Some(r.commandstats().await?.since(&before)),
        _ => None,
    };
    let got = received.load(Ordering::Relaxed);
    let mut lat: Vec<u32> = Vec::with_capacity(got as usize);
    let mut per_node: Vec<Vec<u32>> = vec![Vec::new(); nodes];
    for (node, r) in readers {
        r.abort();
        if let Ok(v) = r.await {
            if nodes > 1 {
                per_node[node].extend_from_slice(&v);
            }
            lat.extend(v);
        }
    }
    lat.sort_unstable();
    println!(
        "fan-out: {} subscribers, {published} events of 64 B over {} publishers in {publish_secs:.2} s ({})",
        spec.subscribers,
        spec.publishers,
        match spec.rate {
            Some(r) => format!("paced at {r} events/s"),
            None if spec.batch > 1 => format!(
                "as fast as answered, up to {} per POST /publish/batch",
                spec.batch
            ),
            None => "as fast as answered".to_string(),
        }
    );
    println!(
        "  deliveries: {got} of {want} in {elapsed:.2} s = {:.0} deliveries/s; lost {}",
        got as f64 / elapsed,
        want - got.min(want)
    );
    println!(
        "  latency publish->receive: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile_ms(&lat, 0.50),
        percentile_ms(&lat, 0.99),
        percentile_ms(&lat, 1.0)
    );
    let mut cross: Vec<u32> = Vec::new();
    if nodes > 1 {
        for (i, v) in per_node.iter_mut().enumerate() {
            v.sort_unstable();
            println!(
                "    subscribers of node {i}{}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} deliveries)",
                if i == 0 { " (the publishers')" } else { "" },
                percentile_ms(v, 0.50),
                percentile_ms(v, 0.99),
                percentile_ms(v, 1.0),
                v.len()
            );
            if i > 0 {
                cross.extend_from_slice(v);
            }
        }
        cross.sort_unstable();
    }
    if let Some(c) = &commands {
        println!("  {}", c.line(published, "event"));
    }
    if let Some((line, _, _)) = &servers_cpu {
        println!("  {line}");
    }
    for (i, server) in servers.iter().enumerate() {
        let stats = get(server.addr, "/stats")
            .await
            .map_err(|e| e.to_string())?;
        if nodes > 1 {
            println!("  node {i} stats: {}", stats.trim());
        } else {
            println!("  server stats: {}", stats.trim());
        }
    }
    Ok(Figures {
        deliveries_per_sec: got as f64 / elapsed,
        p50_ms: percentile_ms(&lat, 0.50),
        p99_ms: percentile_ms(&lat, 0.99),
        lost: want - got.min(want),
        cross: (nodes > 1).then(|| (percentile_ms(&cross, 0.50), percentile_ms(&cross, 0.99))),
        commands_per_message: commands
            .as_ref()
            .map(|c| c.total() as f64 / published.max(1) as f64),
        server_cpu_us: servers_cpu.as_ref().map(|c| c.1),
        redis_cpu_us: servers_cpu.as_ref().and_then(|c| c.2),
    })
}

/// `POST path` with `body` on a new connection; `Err` unless answered 202.
async fn post(addr: SocketAddr, path: &str, body: &str) -> std::io::Result<()> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(
        format!(
            "POST {path} HTTP/1.1\r\nhost: bench\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    if out.starts_with("HTTP/1.1 202") {
        Ok(())
    } else {
        Err(std::io::Error::other(
            out.lines().next().unwrap_or("no answer").to_string(),
        ))
    }
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

async fn memory(server: &Server, idle: usize) -> Result<f64, String> {
    let pid = server.pid();
    // One stream first, so lazily allocated runtime structures are counted once, not per stream.
    let warm = subscribe(server.addr, "/events")
        .await
        .map_err(|e| e.to_string())?;
    let before = procfs::rss_kib(pid);
    let mut streams = Vec::with_capacity(idle);
    for _ in 0..idle {
        streams.push(
            subscribe(server.addr, "/events")
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
    let after = procfs::rss_kib(pid);
    let per = (after.saturating_sub(before)) as f64 / idle as f64;
    println!(
        "memory: {idle} idle SSE streams: server RSS {before} KiB -> {after} KiB = {per:.2} KiB per stream"
    );
    drop((warm, streams));
    Ok(per)
}

fn main() -> std::process::ExitCode {
    let args = Args::parse().checked();
    let server_path = args
        .server
        .clone()
        .unwrap_or_else(server::default_rt_server);
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
    if args.cluster.redis.is_some() {
        return cluster_main(&args, &server_path, &rt);
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!("sse-bench: rt-server on core 0, load on this process ({cores} cores visible)");
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&rt, single(&args, &server_path));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sse-bench: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

/// The single-server rows, `--repeat` times, then the medians.
async fn single(args: &Args, server_path: &Path) -> Result<(), String> {
    let mut rates = Vec::new();
    let mut figures: Vec<deliveries::Figures> = Vec::new();
    let mut kib = Vec::new();
    let mut lost = 0;
    for rep in 0..args.repeat {
        let run = run_label(rep, args.repeat);
        if args.only.as_deref() != Some("memory") {
            let server = start_server(server_path, &[])?;
            match args.rate {
                Some(rate) => {
                    println!("[rt-server] fan-out, paced{run}");
                    let spec = FanOut {
                        subscribers: args.subscribers(),
                        events: args.events,
                        publishers: args.publishers(),
                        rate: Some(rate),
                        batch: 1,
                        topic: None,
                        measure: None,
                    };
                    let f = fan_out(std::slice::from_ref(&server), &spec).await?;
                    lost += f.lost;
                    rates.push(f.deliveries_per_sec);
                }
                None => {
                    println!(
                        "[rt-server] deliveries/s, {} streams, {} in flight on {} pipelined publisher connection(s){}{run}",
                        args.subscribers(),
                        args.in_flight,
                        args.publishers_in_flight(),
                        if args.batch > 1 {
                            format!(", up to {} events per POST /publish/batch", args.batch)
                        } else {
                            String::new()
                        }
                    );
                    let row = deliveries::Row {
                        subscribers: args.subscribers(),
                        in_flight: args.in_flight,
                        publishers: args.publishers_in_flight(),
                        batch: args.batch,
                        duration: Duration::from_secs_f64(args.duration.unwrap_or(3.0)),
                    };
                    let f = deliveries::run(server.addr, server.pid(), &row).await?;
                    lost += f.lost;
                    rates.push(f.deliveries_per_sec);
                    figures.push(f);
                }
            }
        }
        if args.only.as_deref() != Some("fanout") {
            let server = start_server(server_path, &[])?;
            kib.push(memory(&server, args.idle).await?);
        }
    }
    if args.repeat > 1 {
        let fmt = |v: &[f64], f: &dyn Fn(f64) -> String| {
            v.iter().map(|&x| f(x)).collect::<Vec<_>>().join(", ")
        };
        let m = |x: f64| format!("{:.2} M", x / 1e6);
        let k = |x: f64| format!("{x:.2} KiB");
        println!("\nsummary (median of {} runs)", args.repeat);
        if let Some(r) = median(rates.clone()) {
            let what = match args.rate {
                Some(rate) => format!("paced at {rate} events/s"),
                None => format!("{} in flight", args.in_flight),
            };
            println!(
                "deliveries/s, {} streams, {what}: {}  [{}]",
                args.subscribers(),
                m(r),
                fmt(&rates, &m)
            );
        }
        if !figures.is_empty() {
            let med = |g: &dyn Fn(&deliveries::Figures) -> f64| {
                median(figures.iter().map(g).collect()).unwrap_or(0.0)
            };
            println!(
                "  server CPU per delivery {:.3} µs; latency p50 {:.2} ms, p99 {:.2} ms; CPU over the window: server {:.0}%, generator {:.0}% of one core",
                med(&|f| f.server_us_per_delivery),
                med(&|f| f.p50_ms),
                med(&|f| f.p99_ms),
                med(&|f| f.server_cpu) * 100.0,
                med(&|f| f.generator_cpu) * 100.0
            );
        }
        if let Some(v) = median(kib.clone()) {
            println!(
                "idle RSS per SSE stream, {} streams: {}  [{}]",
                args.idle,
                k(v),
                fmt(&kib, &k)
            );
        }
    }
    if lost > 0 {
        return Err(format!("{lost} deliveries lost"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// `--redis`: rt-server alone against N nodes on one Redis, in the same run.

/// The SSE topic of `--redis` runs (not `hub`, whose publishes also go to
/// `/ws`).
const TOPIC: &str = "bench";

/// A row of a `--redis` run: one subscriber count, paced or not.
struct ClusterRow {
    subscribers: usize,
    events: usize,
    rate: Option<u64>,
}

fn cluster_main(
    args: &Args,
    server_path: &Path,
    rt: &tokio::runtime::Runtime,
) -> std::process::ExitCode {
    let counts = cluster::client_counts(args.subscriber_counts.as_deref());
    let nodes = args.cluster.node_counts();
    let rate = cluster::paced_rate(args.rate);
    let secs = args.duration.unwrap_or(5.0);
    let mut rows = Vec::new();
    for &subscribers in &counts {
        // As many deliveries as --events to 1,000 subscribers.
        rows.push(ClusterRow {
            subscribers,
            events: (args.events * 1000 / subscribers).max(1),
            rate: None,
        });
        rows.push(ClusterRow {
            subscribers,
            events: ((rate as f64 * secs) as usize).max(1),
            rate: Some(rate),
        });
    }
    let setups = cluster::setups(&nodes);
    let redis = match rt.block_on(Redis::open(args.cluster.url())) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sse-bench: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    cluster::print_header(
        "sse-bench",
        "rt-server",
        &nodes,
        &redis,
        &format!("load on this process ({cores} cores visible)"),
        &format!(
            "subscribers of topic `{TOPIC}` round-robin over the nodes; every publisher (POST /publish?topic={TOPIC}) on node 0; on Redis every stream, node 0's too, gets the events from Redis"
        ),
    );
    let (results, failures) = cluster::run(
        rt,
        &redis,
        &rows,
        &setups,
        args.repeat,
        |row| {
            let load = row
                .rate
                .map_or("as fast as answered".into(), |r| format!("{r} events/s"));
            format!("{} subscribers, {load}", row.subscribers)
        },
        |extra| start_server(server_path, extra),
        |row, servers, redis| {
            let spec = FanOut {
                subscribers: row.subscribers,
                events: row.events,
                publishers: args.publishers(),
                rate: row.rate,
                // Paced rows publish one event per request.
                batch: if row.rate.is_some() { 1 } else { args.batch },
                topic: Some(TOPIC),
                measure: Some(Measure { redis }),
            };
            rt.block_on(fan_out(servers, &spec))
        },
    );
    let unpaced = if args.batch > 1 {
        format!("as fast as answered, batches of {}", args.batch)
    } else {
        "as fast as answered".to_string()
    };
    let table_rows: Vec<cluster::Row> = rows
        .iter()
        .map(|r| cluster::Row {
            clients: r.subscribers,
            paced: r.rate,
            load: r.rate.map_or(unpaced.clone(), |r| format!("{r} events/s")),
            label: format!(
                "deliveries/s, {} subscribers, {} events, {unpaced}",
                r.subscribers, r.events
            ),
        })
        .collect();
    let title = median_title(
        &format!("rt-server SSE topic `{TOPIC}`, alone and on Redis"),
        args.repeat,
    );
    let words = cluster::Words {
        clients: "subscribers",
        message: "event",
        per_sec: "events/s",
        unpaced: "as fast as answered",
    };
    cluster::summary(&title, words, &table_rows, &setups, &results);
    exit_status("sse-bench", failures)
}
