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
//!    as many at once as there is room for: `ws-bench`'s `deliveries-N`
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
//!    and 1,000): as fast as answered (`--events` scaled to as many
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
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[path = "../../ws_bench/src/cluster.rs"]
mod cluster;
mod deliveries;

struct Args {
    subscribers: usize,
    events: usize,
    publishers: usize,
    idle: usize,
    rate: Option<u64>,
    only: Option<String>,
    server: Option<PathBuf>,
    /// `--subscribers` as given: one count, or several for `--redis`.
    subscriber_counts: Option<Vec<usize>>,
    /// `--redis [URL]`: `Some(None)` starts a throwaway redis-server.
    redis: Option<Option<String>>,
    nodes: Option<Vec<usize>>,
    repeat: usize,
    duration: Option<f64>,
    in_flight: usize,
    /// `--publishers` as given (the in-flight row's default is 1).
    publishers_in_flight: usize,
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
        subscriber_counts: None,
        redis: None,
        nodes: None,
        repeat: 1,
        duration: None,
        in_flight: 16,
        publishers_in_flight: 1,
    };
    let mut it = std::env::args().skip(1).peekable();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--subscribers" => {
                let counts = cluster::parse_counts(&flag, &value()?)?;
                a.subscribers = counts[0];
                a.subscriber_counts = Some(counts);
            }
            "--redis" => a.redis = Some(it.next_if(|v| !v.starts_with("--"))),
            "--nodes" => a.nodes = Some(cluster::parse_nodes(&value()?)?),
            "--repeat" => a.repeat = value()?.parse().map_err(|e| format!("{e}"))?,
            "--duration" => a.duration = Some(value()?.parse().map_err(|e| format!("{e}"))?),
            "--events" => a.events = value()?.parse().map_err(|e| format!("{e}"))?,
            "--publishers" => {
                a.publishers = value()?.parse().map_err(|e| format!("{e}"))?;
                a.publishers_in_flight = a.publishers;
            }
            "--in-flight" => a.in_flight = value()?.parse().map_err(|e| format!("{e}"))?,
            "--idle" => a.idle = value()?.parse().map_err(|e| format!("{e}"))?,
            "--server" => a.server = Some(PathBuf::from(value()?)),
            "--rate" => a.rate = Some(value()?.parse().map_err(|e| format!("{e}"))?),
            "--only" => match value()?.as_str() {
                o @ ("fanout" | "memory") => a.only = Some(o.to_string()),
                o => return Err(format!("--only takes fanout or memory, not {o}")),
            },
            "-h" | "--help" => {
                return Err("usage: sse-bench [--subscribers N] [--in-flight N] [--publishers N] [--duration SECS] [--idle N] [--repeat N] [--only fanout|memory] [--server PATH]
       sse-bench --rate EVENTS_PER_SEC [--events N] [--publishers N] ...   (paced instead of in flight)
       sse-bench --redis [redis://HOST:PORT] [--nodes N[,N...]] [--subscribers N[,N...]] [--rate EVENTS_PER_SEC] [--duration SECS] [--events N] [--publishers N] [--repeat N]
         rt-server alone against N nodes on one Redis, SSE topic `bench` (default: a throwaway redis-server, 2 nodes, 200 and 1000 subscribers, 100 events/s)".into());
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.repeat == 0
        || a.duration.is_some_and(|d| d <= 0.0)
        || a.rate == Some(0)
        || a.in_flight == 0
    {
        return Err("--repeat, --duration, --rate and --in-flight must be > 0".into());
    }
    if a.redis.is_some() {
        if a.only.is_some() {
            return Err("--redis runs its own rows: no --only".into());
        }
    } else if a.nodes.is_some() {
        return Err("--nodes needs --redis".into());
    } else if a.subscriber_counts.as_ref().is_some_and(|c| c.len() > 1) {
        return Err("several --subscribers counts need --redis".into());
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

fn start_server(path: &PathBuf, extra: &[String]) -> Result<Server, String> {
    let mut cmd = if std::path::Path::new("/usr/bin/taskset").exists() {
        let mut c = Command::new("/usr/bin/taskset");
        c.arg("-c").arg("0").arg(path);
        c
    } else {
        Command::new(path)
    };
    let mut child = cmd
        .args(["--addr", "127.0.0.1:0", "--quiet"])
        .args(extra)
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

/// Events published before a `--redis` row's subscribers connect.
const HISTORY_FILL: u64 = 1024;

/// One fan-out row.
struct FanOut<'a> {
    subscribers: usize,
    events: usize,
    publishers: usize,
    rate: Option<u64>,
    /// `?topic=` of the streams and publishes (`None`: the default, `hub`).
    topic: Option<&'a str>,
    /// `--redis` runs: probe first, then measure per node, CPU and Redis.
    measure: Option<Measure<'a>>,
}

/// What a `--redis` run measures beside the default figures.
struct Measure<'a> {
    /// The Redis the servers are on (`None`: the single server, alone).
    redis: Option<&'a cluster::Redis>,
}

#[derive(Clone, Copy)]
struct FanOutFigures {
    deliveries_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    lost: u64,
    /// Subscribers of the nodes other than the publishers' (several nodes).
    cross: Option<(f64, f64)>,
    /// Redis commands (all nodes) per event published, on Redis.
    commands_per_message: Option<f64>,
    /// CPU µs per event: all servers, and Redis when started here.
    server_cpu_us: Option<f64>,
    redis_cpu_us: Option<f64>,
}

/// Subscriber `i` on server `i % servers.len()` (round-robin); every
/// publisher on the first server.
async fn fan_out(servers: &[Server], spec: &FanOut<'_>) -> Result<FanOutFigures, String> {
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
    let server_pids: Vec<u32> = servers.iter().map(|s| s.child.id()).collect();
    let servers_cpu = spec
        .measure
        .as_ref()
        .map(|_| cluster::CpuWindow::start(&server_pids, redis.and_then(|r| r.pid())));
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
        spec.rate
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
    let mut cross: Vec<u32> = Vec::new();
    if nodes > 1 {
        for (i, v) in per_node.iter_mut().enumerate() {
            v.sort_unstable();
            println!(
                "    subscribers of node {i}{}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} deliveries)",
                if i == 0 { " (the publishers')" } else { "" },
                percentile(v, 0.50),
                percentile(v, 0.99),
                percentile(v, 1.0),
                v.len()
            );
            if i > 0 {
                cross.extend_from_slice(v);
            }
        }
        cross.sort_unstable();
    }
    if let Some(c) = &commands {
        println!(
            "  Redis commands: {} for {published} events = {:.2} per event ({})",
            c.total(),
            c.total() as f64 / published.max(1) as f64,
            c.per_message(published)
        );
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
    Ok(FanOutFigures {
        deliveries_per_sec: got as f64 / elapsed,
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
        lost: want - got.min(want),
        cross: (nodes > 1).then(|| (percentile(&cross, 0.50), percentile(&cross, 0.99))),
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
    let pid = server.child.id();
    // One stream first, so lazily allocated runtime structures are counted once, not per stream.
    let warm = subscribe(server.addr, "/events")
        .await
        .map_err(|e| e.to_string())?;
    let before = rss_kib(pid);
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
    let after = rss_kib(pid);
    let per = (after.saturating_sub(before)) as f64 / idle as f64;
    println!(
        "memory: {idle} idle SSE streams: server RSS {before} KiB -> {after} KiB = {per:.2} KiB per stream"
    );
    drop((warm, streams));
    Ok(per)
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
    if args.redis.is_some() {
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
async fn single(args: &Args, server_path: &PathBuf) -> Result<(), String> {
    let mut rates = Vec::new();
    let mut figures: Vec<deliveries::Figures> = Vec::new();
    let mut kib = Vec::new();
    let mut lost = 0;
    for rep in 0..args.repeat {
        let run = if args.repeat > 1 {
            format!(" (run {} of {})", rep + 1, args.repeat)
        } else {
            String::new()
        };
        if args.only.as_deref() != Some("memory") {
            let server = start_server(server_path, &[])?;
            match args.rate {
                Some(rate) => {
                    println!("[rt-server] fan-out, paced{run}");
                    let spec = FanOut {
                        subscribers: args.subscribers,
                        events: args.events,
                        publishers: args.publishers,
                        rate: Some(rate),
                        topic: None,
                        measure: None,
                    };
                    let f = fan_out(std::slice::from_ref(&server), &spec).await?;
                    lost += f.lost;
                    rates.push(f.deliveries_per_sec);
                }
                None => {
                    println!(
                        "[rt-server] deliveries/s, {} streams, {} in flight on {} pipelined publisher connection(s){run}",
                        args.subscribers, args.in_flight, args.publishers_in_flight
                    );
                    let row = deliveries::Row {
                        subscribers: args.subscribers,
                        in_flight: args.in_flight,
                        publishers: args.publishers_in_flight,
                        duration: Duration::from_secs_f64(args.duration.unwrap_or(3.0)),
                    };
                    let f = deliveries::run(server.addr, server.child.id(), &row).await?;
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
        if let Some(r) = cluster::median(rates.clone()) {
            let what = match args.rate {
                Some(rate) => format!("paced at {rate} events/s"),
                None => format!("{} in flight", args.in_flight),
            };
            println!(
                "deliveries/s, {} streams, {what}: {}  [{}]",
                args.subscribers,
                m(r),
                fmt(&rates, &m)
            );
        }
        if !figures.is_empty() {
            let med = |g: &dyn Fn(&deliveries::Figures) -> f64| {
                cluster::median(figures.iter().map(g).collect()).unwrap_or(0.0)
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
        if let Some(v) = cluster::median(kib.clone()) {
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
    server_path: &PathBuf,
    rt: &tokio::runtime::Runtime,
) -> std::process::ExitCode {
    let counts = args
        .subscriber_counts
        .clone()
        .unwrap_or_else(|| vec![200, 1000]);
    let nodes = args.nodes.clone().unwrap_or_else(|| vec![2]);
    let rate = args.rate.unwrap_or(100);
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
    let setups: Vec<Option<usize>> = std::iter::once(None)
        .chain(nodes.iter().map(|&n| Some(n)))
        .collect();
    let redis = match rt.block_on(cluster::Redis::open(
        args.redis.as_ref().and_then(|u| u.as_deref()),
    )) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sse-bench: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "sse-bench --redis: rt-server alone, then as {} on {}",
        nodes
            .iter()
            .map(|&n| cluster::setup_name(Some(n)))
            .collect::<Vec<_>>()
            .join(", then "),
        redis.about
    );
    println!(
        "sse-bench: every rt-server (the single one and each node) on core {} (taskset), load on this process ({cores} cores visible)",
        cluster::SERVER_CORE
    );
    println!(
        "sse-bench: subscribers of topic `{TOPIC}` round-robin over the nodes; every publisher (POST /publish?topic={TOPIC}) on node 0; on Redis every stream, node 0's too, gets the events from Redis"
    );
    let mut results: Vec<Vec<Vec<FanOutFigures>>> =
        vec![vec![Vec::new(); setups.len()]; rows.len()];
    let mut failures = 0;
    for (ri, row) in rows.iter().enumerate() {
        for rep in 0..args.repeat {
            for (si, &setup) in setups.iter().enumerate() {
                let run = if args.repeat > 1 {
                    format!(" (run {} of {})", rep + 1, args.repeat)
                } else {
                    String::new()
                };
                println!(
                    "[{}] {} subscribers, {}{run}",
                    cluster::setup_name(setup),
                    row.subscribers,
                    row.rate
                        .map_or("as fast as answered".into(), |r| format!("{r} events/s"))
                );
                let prefix = cluster::run_prefix();
                let servers: Result<Vec<Server>, String> = match setup {
                    None => start_server(server_path, &[]).map(|s| vec![s]),
                    Some(n) => (0..n)
                        .map(|i| {
                            let mut extra = cluster::node_args(&redis, &prefix);
                            extra.extend(["--node-id".into(), format!("{prefix}-node{i}")]);
                            start_server(server_path, &extra)
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
                let spec = FanOut {
                    subscribers: row.subscribers,
                    events: row.events,
                    publishers: args.publishers,
                    rate: row.rate,
                    topic: Some(TOPIC),
                    measure: Some(Measure {
                        redis: setup.map(|_| &redis),
                    }),
                };
                let r = rt.block_on(fan_out(&servers, &spec));
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
    cluster_summary(&rows, &setups, &results, args.repeat);
    if failures > 0 {
        eprintln!("sse-bench: {failures} run(s) failed");
        return std::process::ExitCode::from(1);
    }
    std::process::ExitCode::SUCCESS
}

fn cluster_summary(
    rows: &[ClusterRow],
    setups: &[Option<usize>],
    results: &[Vec<Vec<FanOutFigures>>],
    repeat: usize,
) {
    let med = |ri: usize, si: usize, g: &dyn Fn(&FanOutFigures) -> Option<f64>| {
        // A run that lost deliveries measured fewer streams: left out.
        cluster::median(
            results[ri][si]
                .iter()
                .filter(|f| f.lost == 0)
                .filter_map(g)
                .collect(),
        )
    };
    let col = |ri: usize, g: &dyn Fn(&FanOutFigures) -> Option<f64>| -> Vec<Option<f64>> {
        (0..setups.len()).map(|si| med(ri, si, g)).collect()
    };
    let cell = |v: Option<f64>, fmt: &dyn Fn(f64) -> String| v.map_or("-".into(), fmt);
    let cells = |v: &[Option<f64>], fmt: &dyn Fn(f64) -> String| -> Vec<String> {
        v.iter().map(|&x| cell(x, fmt)).collect()
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
    let verdicts = |f: &dyn Fn(usize) -> Option<String>| {
        setups
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some_and(|n| n > 1))
            .filter_map(|(si, s)| f(si).map(|v| format!("{}: {v}", cluster::setup_name(*s))))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let mut table = Vec::new();
    let mut per_message: Vec<(bool, Option<usize>, usize, f64)> = Vec::new();
    for (ri, row) in rows.iter().enumerate() {
        let c = row.subscribers;
        let what = match row.rate {
            None => "as fast as answered".to_string(),
            Some(r) => format!("{r} events/s"),
        };
        match row.rate {
            None => {
                let v = col(ri, &|f| Some(f.deliveries_per_sec));
                table.push(cluster::TableRow {
                    label: format!(
                        "deliveries/s, {c} subscribers, {} events, {what}",
                        row.events
                    ),
                    cells: cells(&v, &rate_fmt),
                    verdict: verdicts(&|si| {
                        let ratio = v[si]? / v[0]?;
                        Some(format!(
                            "{ratio:.2}x of single (target >= 0.70x: {})",
                            if ratio >= 0.70 { "met" } else { "NOT met" }
                        ))
                    }),
                });
                table.push(cluster::TableRow {
                    label: format!("  server CPU per event, {c} subscribers"),
                    cells: cells(&col(ri, &|f| f.server_cpu_us), &us),
                    verdict: String::new(),
                });
                table.push(cluster::TableRow {
                    label: format!("  redis-server CPU per event, {c} subscribers"),
                    cells: cells(&col(ri, &|f| f.redis_cpu_us), &us),
                    verdict: String::new(),
                });
            }
            Some(r) => {
                let p99 = col(ri, &|f| Some(f.p99_ms));
                let mut cross50 = col(ri, &|f| f.cross.map(|c| c.0));
                cross50[0] = None;
                let cross99 = col(ri, &|f| f.cross.map(|c| c.1));
                table.push(cluster::TableRow {
                    label: format!("p50 ms at {r} events/s to {c} subscribers, all"),
                    cells: cells(&col(ri, &|f| Some(f.p50_ms)), &ms),
                    verdict: String::new(),
                });
                table.push(cluster::TableRow {
                    label: format!("p99 ms at {r} events/s to {c} subscribers, all"),
                    cells: cells(&p99, &ms),
                    verdict: String::new(),
                });
                table.push(cluster::TableRow {
                    label: "  p50 ms, other nodes' subscribers (cross-node)".into(),
                    cells: cells(&cross50, &ms),
                    verdict: String::new(),
                });
                table.push(cluster::TableRow {
                    label: "  p99 ms, other nodes' subscribers (cross-node)".into(),
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
                per_message.push((row.rate.is_some(), setups[si], c, *v));
            }
        }
        table.push(cluster::TableRow {
            label: format!("  Redis commands per event, {what}, {c} subscribers"),
            cells: cells(&cmds, &num),
            verdict: String::new(),
        });
    }
    let names: Vec<String> = setups.iter().map(|&s| cluster::setup_name(s)).collect();
    let title = if repeat > 1 {
        format!("rt-server SSE topic `{TOPIC}`, alone and on Redis (median of {repeat} runs)")
    } else {
        format!("rt-server SSE topic `{TOPIC}`, alone and on Redis")
    };
    cluster::print_table(&title, &names, &table);
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
                "Redis commands per event, {}, {}: {}",
                cluster::setup_name(setup),
                if paced {
                    "paced"
                } else {
                    "as fast as answered"
                },
                cluster::independence_verdict(lo, hi, "subscribers")
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
                        "{} at {} subscribers: {n} in {runs} of {of} runs",
                        cluster::setup_name(s),
                        row.subscribers
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
