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

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

mod cluster;

const USAGE: &str = "usage: ws-bench [--peers] [--no-server] [--server PATH] [--server-cores LIST] \
[--server-threads N] [--only ROW] \
[--duration SECS] [--idle N] [--in-flight N] [--clients N [--rate MSGS_PER_SEC]] \
[--connect-concurrency N] [--repeat N] [--tungstenite-readers] [--node PATH] [--peers-dir DIR] [--node-modules DIR]
rows: deliveries-1000 deliveries-5000 p99-1000 p99-5000 idle room-100-of-1000 room-100-of-10000
      user-of-1000 user-of-10000 (default: all; --only takes a comma-separated list, `targeted` = the last four)
cluster: ws-bench --redis [redis://HOST:PORT] [--nodes N[,N...]] [--clients N[,N...]] [--rate MSGS_PER_SEC] \
[--in-flight N] [--duration SECS] [--repeat N]
      rt-server alone against N nodes on one Redis (default: a throwaway redis-server, 2 nodes, \
200 and 1000 clients, 100 msg/s)";

const MESSAGE_LEN: usize = 64;
const WARMUP: Duration = Duration::from_millis(500);

// ---------------------------------------------------------------------------
// Arguments and rows.

#[derive(Clone, Copy, PartialEq)]
enum Load {
    /// Keep this many messages in flight.
    InFlight(usize),
    /// Send at this many messages per second.
    Rate(u64),
}

#[derive(Clone, Copy, PartialEq)]
enum RowKind {
    Load {
        clients: usize,
        load: Load,
    },
    Idle {
        connections: usize,
    },
    /// `rt-server`'s `/hub`: `connections` clients, events to `aim` only.
    Targeted {
        connections: usize,
        aim: Aim,
        in_flight: usize,
    },
}

/// Who the events of a targeted row go to.
#[derive(Clone, Copy, PartialEq)]
enum Aim {
    /// `members` connections subscribed to room `public-bench`, the publisher
    /// one of them; it publishes with `say`.
    Room { members: usize },
    /// `connections` connections of user `bench-target`; a publisher of
    /// another user sends them `whisper`s.
    User { connections: usize },
}

impl Aim {
    fn recipients(self) -> usize {
        match self {
            Aim::Room { members } => members,
            Aim::User { connections } => connections,
        }
    }
}

/// The room of the room rows (`public-*`: the guard lets anyone in).
const ROOM: &str = "public-bench";
/// The user of the user rows.
const TARGET_USER: &str = "bench-target";

#[derive(Clone)]
struct Row {
    name: String,
    label: String,
    kind: RowKind,
    duration: Duration,
}

struct Args {
    peers: bool,
    no_server: bool,
    server: Option<PathBuf>,
    /// `--server-cores`: the `taskset -c` list every server runs on.
    server_cores: String,
    /// `--server-threads`: rt-server's `--threads` (default: its own, the
    /// number of cores it may run on).
    server_threads: Option<usize>,
    only: Option<String>,
    duration: Option<f64>,
    idle: usize,
    in_flight: usize,
    clients: Option<usize>,
    rate: Option<u64>,
    concurrency: usize,
    repeat: usize,
    tungstenite_readers: bool,
    node: PathBuf,
    peers_dir: PathBuf,
    node_modules: PathBuf,
    /// `--clients` as given: one count, or several for `--redis`.
    client_counts: Option<Vec<usize>>,
    /// `--redis [URL]`: `Some(None)` starts a throwaway redis-server.
    redis: Option<Option<String>>,
    nodes: Option<Vec<usize>>,
}

fn parse_args() -> Result<Args, String> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    let mut a = Args {
        peers: false,
        no_server: false,
        server: None,
        server_cores: "0".into(),
        server_threads: None,
        only: None,
        duration: None,
        idle: 10_000,
        in_flight: 16,
        clients: None,
        rate: None,
        concurrency: 256,
        repeat: 1,
        tungstenite_readers: false,
        node: PathBuf::from("node"),
        peers_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("../ws_peers"),
        node_modules: cache.join("fn-registry-ws-peers/node_modules"),
        client_counts: None,
        redis: None,
        nodes: None,
    };
    fn num<T: std::str::FromStr>(flag: &str, v: String) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        v.parse().map_err(|e| format!("{flag} {v}: {e}"))
    }
    let mut it = std::env::args().skip(1).peekable();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--redis" => {
                a.redis = Some(it.next_if(|v| !v.starts_with("--")));
            }
            "--nodes" => a.nodes = Some(cluster::parse_nodes(&value()?)?),
            "--peers" => a.peers = true,
            "--no-server" => a.no_server = true,
            "--server-cores" => a.server_cores = parse_cores(&value()?)?,
            "--server-threads" => a.server_threads = Some(num(&flag, value()?)?),
            "--tungstenite-readers" => a.tungstenite_readers = true,
            "--server" => a.server = Some(PathBuf::from(value()?)),
            "--only" => a.only = Some(value()?),
            "--duration" => a.duration = Some(num(&flag, value()?)?),
            "--idle" => a.idle = num(&flag, value()?)?,
            "--in-flight" => a.in_flight = num(&flag, value()?)?,
            "--clients" => {
                let counts = cluster::parse_counts(&flag, &value()?)?;
                a.clients = counts.first().copied();
                a.client_counts = Some(counts);
            }
            "--rate" => a.rate = Some(num(&flag, value()?)?),
            "--connect-concurrency" => a.concurrency = num(&flag, value()?)?,
            "--repeat" => a.repeat = num(&flag, value()?)?,
            "--node" => a.node = PathBuf::from(value()?),
            "--peers-dir" => a.peers_dir = PathBuf::from(value()?),
            "--node-modules" => a.node_modules = PathBuf::from(value()?),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if a.in_flight == 0
        || a.concurrency == 0
        || a.idle == 0
        || a.repeat == 0
        || a.clients == Some(0)
    {
        return Err(
            "--in-flight, --connect-concurrency, --idle, --repeat and --clients must be > 0".into(),
        );
    }
    if a.rate == Some(0) {
        return Err("--rate must be > 0".into());
    }
    if a.server_threads == Some(0) {
        return Err("--server-threads must be > 0".into());
    }
    if a.redis.is_some() {
        if a.peers || a.no_server || a.only.is_some() {
            return Err(
                "--redis runs its own rows on rt-server: no --peers, --no-server or --only".into(),
            );
        }
        if a.server_cores != cluster::SERVER_CORE {
            return Err(format!(
                "--redis pins the servers and Redis to core {}: no --server-cores",
                cluster::SERVER_CORE
            ));
        }
        return Ok(a);
    }
    if a.nodes.is_some() {
        return Err("--nodes needs --redis".into());
    }
    if a.client_counts.as_ref().is_some_and(|c| c.len() > 1) {
        return Err("several --clients counts need --redis".into());
    }
    if a.rate.is_some() && a.clients.is_none() {
        return Err("--rate needs --clients (a custom row)".into());
    }
    if a.no_server && !a.peers {
        return Err("--no-server without --peers leaves nothing to run".into());
    }
    Ok(a)
}

/// A `taskset -c` core list: numbers and ranges, comma-separated (`0`,
/// `0,1`, `0-3`), each core on this machine.
fn parse_cores(v: &str) -> Result<String, String> {
    let online = std::thread::available_parallelism().map_or(1, usize::from);
    let total = std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .ok()
        .and_then(|s| {
            s.trim()
                .rsplit(['-', ','])
                .next()
                .and_then(|n| n.parse::<usize>().ok())
        })
        .map_or(online, |last| last + 1);
    let bad = || format!("--server-cores {v}: a core list such as 0 or 0,1 or 0-3");
    for part in v.split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let (lo, hi): (usize, usize) = (
            lo.trim().parse().map_err(|_| bad())?,
            hi.trim().parse().map_err(|_| bad())?,
        );
        if lo > hi {
            return Err(bad());
        }
        if hi >= total {
            return Err(format!(
                "--server-cores {v}: core {hi} is not on this machine (cores 0-{})",
                total - 1
            ));
        }
    }
    Ok(v.replace(' ', ""))
}

fn rows(a: &Args) -> Result<Vec<Row>, String> {
    let secs = |default: f64| Duration::from_secs_f64(a.duration.unwrap_or(default));
    let inflight = |clients: usize| Row {
        name: format!("deliveries-{clients}"),
        label: format!("deliveries/s, {clients} clients, {} in flight", a.in_flight),
        kind: RowKind::Load {
            clients,
            load: Load::InFlight(a.in_flight),
        },
        duration: secs(3.0),
    };
    let rate = |clients: usize, rate: u64| Row {
        name: format!("p99-{clients}"),
        label: format!("p99 ms at {rate} msg/s to {clients} clients"),
        kind: RowKind::Load {
            clients,
            load: Load::Rate(rate),
        },
        duration: secs(5.0),
    };
    if let Some(clients) = a.clients {
        let mut row = match a.rate {
            Some(r) => rate(clients, r),
            None => inflight(clients),
        };
        row.name = "custom".into();
        return Ok(vec![row]);
    }
    let targeted = |connections: usize, aim: Aim| Row {
        name: match aim {
            Aim::Room { members } => format!("room-{members}-of-{connections}"),
            Aim::User { .. } => format!("user-of-{connections}"),
        },
        label: match aim {
            Aim::Room { members } => format!("µs CPU/event, room of {members} in {connections}"),
            Aim::User { connections: c } => {
                format!("µs CPU/event, user ({c} conns) in {connections}")
            }
        },
        kind: RowKind::Targeted {
            connections,
            aim,
            in_flight: a.in_flight,
        },
        duration: secs(3.0),
    };
    let all = vec![
        inflight(1000),
        inflight(5000),
        rate(1000, 100),
        rate(5000, 10),
        Row {
            name: "idle".into(),
            label: format!("KiB RSS per idle connection, {}", a.idle),
            kind: RowKind::Idle {
                connections: a.idle,
            },
            duration: Duration::ZERO,
        },
        targeted(1000, Aim::Room { members: 100 }),
        targeted(10_000, Aim::Room { members: 100 }),
        targeted(1000, Aim::User { connections: 3 }),
        targeted(10_000, Aim::User { connections: 3 }),
    ];
    match &a.only {
        None => Ok(all),
        Some(o) => {
            let names: Vec<_> = all.iter().map(|r| r.name.clone()).collect();
            let mut wanted = Vec::new();
            for w in o.split(',').map(str::trim).filter(|w| !w.is_empty()) {
                if w == "targeted" {
                    wanted.extend(
                        all.iter()
                            .filter(|r| matches!(r.kind, RowKind::Targeted { .. }))
                            .map(|r| r.name.clone()),
                    );
                } else if names.iter().any(|n| n == w) {
                    wanted.push(w.to_string());
                } else {
                    return Err(format!(
                        "--only takes a comma-separated list of {} or targeted, not {w}",
                        names.join(" ")
                    ));
                }
            }
            // In the table's order, each row once.
            let picked: Vec<_> = all
                .into_iter()
                .filter(|r| wanted.contains(&r.name))
                .collect();
            if picked.is_empty() {
                Err(format!("--only {o} names no row"))
            } else {
                Ok(picked)
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Servers.

#[derive(Clone)]
struct Target {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, PathBuf)>,
    /// The `taskset -c` list it runs on.
    cores: String,
}

fn targets(a: &Args) -> Result<Vec<Target>, String> {
    let mut out = Vec::new();
    if !a.no_server {
        let path = a.server.clone().unwrap_or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(|d| d.join("rt-server")))
                .unwrap_or_else(|| PathBuf::from("rt-server"))
        });
        if path.exists() {
            // What a benchmark measures is not a limit: open them by name.
            let mut args: Vec<String> = [
                "--addr",
                "127.0.0.1:0",
                "--quiet",
                "--allow-any-origin",
                "--message-rate",
                "0",
                "--insecure-bearer-names",
            ]
            .map(String::from)
            .to_vec();
            if let Some(n) = a.server_threads {
                args.extend(["--threads".into(), n.to_string()]);
            }
            out.push(Target {
                name: "rt-server",
                program: path,
                args,
                env: vec![],
                cores: a.server_cores.clone(),
            });
        } else if a.peers {
            println!(
                "ws-bench: {} not found, running the peers only (build it with `cargo build --release -p rt_server`)",
                path.display()
            );
        } else {
            return Err(format!(
                "{} not found; run `cargo build --release -p rt_server -p ws_bench` first",
                path.display()
            ));
        }
    }
    if a.peers {
        let modules = &a.node_modules;
        for (pkg, _) in [("ws", ()), ("@trufflesuite/uws-js-unofficial", ())] {
            if !modules.join(pkg).join("package.json").exists() {
                return Err(format!(
                    "{pkg} is not installed in {}; run tools/ws_peers/install.sh",
                    modules.display()
                ));
            }
        }
        // The same check the hubs make: exact versions and uWebSockets.js's native module.
        let check = a.peers_dir.join("check.js");
        let status = Command::new(&a.node)
            .arg(&check)
            .env("NODE_PATH", modules)
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run {} {}: {e}", a.node.display(), check.display()))?;
        if !status.success() {
            return Err(format!(
                "the peer check failed ({} {}); see above, or rerun tools/ws_peers/install.sh",
                a.node.display(),
                check.display()
            ));
        }
        for (name, script) in [("node-ws", "ws_hub.js"), ("uWS.js", "uws_hub.js")] {
            out.push(Target {
                name,
                program: a.node.clone(),
                args: vec![
                    a.peers_dir.join(script).display().to_string(),
                    "--port".into(),
                    "0".into(),
                ],
                env: vec![("NODE_PATH".into(), modules.clone())],
                cores: a.server_cores.clone(),
            });
        }
        // The Go peer, when install.sh could build it (Go and gorilla's source installed).
        let gorilla = modules
            .parent()
            .map(|d| d.join("gorilla_hub"))
            .filter(|p| p.exists());
        match gorilla {
            Some(program) => out.push(Target {
                name: "gorilla",
                program,
                args: vec!["--port".into(), "0".into()],
                env: vec![],
                cores: a.server_cores.clone(),
            }),
            None => println!(
                "ws-bench: no gorilla_hub beside {}: the Go peer is skipped (tools/ws_peers/install.sh builds it when golang-go and golang-github-gorilla-websocket-dev are installed)",
                modules.display()
            ),
        }
    }
    Ok(out)
}

/// The running server; stopped on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    /// SIGTERM, SIGKILL after 10 s.
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

/// Starts the target pinned to its cores (`--server-cores`, default core 0;
/// `taskset` execs, so the pid is the server's) and reads its address from
/// the first `... listening on http://ADDR` line.
fn start_server(t: &Target) -> Result<Server, String> {
    let mut cmd = if Path::new("/usr/bin/taskset").exists() {
        let mut c = Command::new("/usr/bin/taskset");
        c.arg("-c").arg(&t.cores).arg(&t.program);
        c
    } else {
        Command::new(&t.program)
    };
    for (k, v) in &t.env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .args(&t.args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", t.program.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut reader = std::io::BufReader::new(stdout);
    let mut line = String::new();
    let addr = loop {
        line.clear();
        let n = std::io::BufRead::read_line(&mut reader, &mut line).map_err(|e| e.to_string())?;
        if n == 0 {
            let _ = child.wait();
            return Err(format!("{} exited before listening", t.name));
        }
        if let Some(a) = line.trim().split("listening on http://").nth(1) {
            break a
                .parse()
                .map_err(|_| format!("unexpected line from {}: {line:?}", t.name))?;
        }
    };
    // Keep draining stdout so a chatty server never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    Ok(Server { child, addr })
}

// ---------------------------------------------------------------------------
// Process figures.

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// This process's user+sys CPU seconds (utime and stime of /proc/self/stat).
fn cpu_seconds(ticks: f64) -> f64 {
    proc_cpu_seconds("self", ticks)
}

/// User+sys CPU seconds of process `pid` ("self" for this one), all its threads.
fn proc_cpu_seconds(pid: &str, ticks: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (get(11) + get(12)) / ticks
}

struct CpuMeter {
    ticks: f64,
    cpu: f64,
    wall: Instant,
}

impl CpuMeter {
    fn start(ticks: f64) -> Self {
        Self {
            ticks,
            cpu: cpu_seconds(ticks),
            wall: Instant::now(),
        }
    }
    fn line(&self) -> String {
        let cpu = cpu_seconds(self.ticks) - self.cpu;
        let wall = self.wall.elapsed().as_secs_f64();
        let share = 100.0 * cpu / wall.max(1e-9);
        format!(
            "generator CPU: {cpu:.2} s user+sys over {wall:.2} s wall = {share:.0}% of one core{}",
            if share >= 90.0 {
                " (saturated: the generator may be the bottleneck)"
            } else {
                ""
            }
        )
    }
}

/// Raises the soft open-files limit to the hard one when `needed` exceeds it
/// (with `prlimit`, no unsafe code); servers spawned later inherit it.
fn ensure_fd_limit(needed: u64) {
    let read = || -> Option<(u64, u64)> {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        let v: Vec<&str> = line.split_whitespace().collect();
        let n = |s: &str| {
            if s == "unlimited" {
                Some(u64::MAX)
            } else {
                s.parse().ok()
            }
        };
        Some((n(v.get(3)?)?, n(v.get(4)?)?))
    };
    let Some((soft, hard)) = read() else {
        println!("ws-bench: cannot read the open-files limit");
        return;
    };
    if soft >= needed {
        println!("ws-bench: open-files limit {soft} (hard {hard}), need about {needed}");
        return;
    }
    if hard > soft {
        let hard_s = if hard == u64::MAX {
            "unlimited".to_string()
        } else {
            hard.to_string()
        };
        let _ = Command::new("prlimit")
            .arg("--pid")
            .arg(std::process::id().to_string())
            .arg(format!("--nofile={hard_s}:{hard_s}"))
            .status();
    }
    let (soft2, hard2) = read().unwrap_or((soft, hard));
    println!(
        "ws-bench: open-files limit {soft} -> {soft2} (hard {hard2}), need about {needed}{}",
        if soft2 < needed {
            "; too low, connections will fail (raise it with `ulimit -n`)"
        } else {
            ""
        }
    );
}

// ---------------------------------------------------------------------------
// Latency histogram: log-linear, 128 sub-buckets per power of two (< 0.8 % error).

struct Hist {
    buckets: Vec<u64>,
    count: u64,
    max: u64,
}

impl Hist {
    const SUB: u32 = 7;

    fn new() -> Self {
        Self {
            buckets: vec![0; 256 + 56 * 128 + 1],
            count: 0,
            max: 0,
        }
    }
    fn index(v: u64) -> usize {
        if v < 256 {
            return v as usize;
        }
        let e = 63 - v.leading_zeros();
        let m = (v >> (e - Self::SUB)) - 128;
        256 + (e as usize - 8) * 128 + m as usize
    }
    /// The middle of a bucket.
    fn value(i: usize) -> u64 {
        if i < 256 {
            return i as u64;
        }
        let j = i - 256;
        let e = (j / 128 + 8) as u32;
        let m = (j % 128 + 128) as u64;
        let shift = e - Self::SUB;
        (m << shift) + (1u64 << shift) / 2
    }
    fn record(&mut self, v: u64) {
        self.buckets[Self::index(v)] += 1;
        self.count += 1;
        self.max = self.max.max(v);
    }
    fn reset(&mut self) {
        self.buckets.iter_mut().for_each(|b| *b = 0);
        self.count = 0;
        self.max = 0;
    }
    /// In milliseconds.
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = ((self.count as f64 * p).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &b) in self.buckets.iter().enumerate() {
            seen += b;
            if seen >= rank {
                return Hist::value(i).min(self.max) as f64 / 1e6;
            }
        }
        self.max as f64 / 1e6
    }
}

// ---------------------------------------------------------------------------
// Clients.

fn ws_config() -> WebSocketConfig {
    // Small buffers: 10,000 idle clients stay cheap; 4 KiB holds many 66-byte frames.
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(4096)
        .max_write_buffer_size(1 << 20)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

type Ws = WebSocketStream<TcpStream>;

enum ConnectError {
    /// The server answered the upgrade with this HTTP status.
    Refused(u16),
    Other(String),
}

async fn connect_one(addr: SocketAddr) -> Result<Ws, ConnectError> {
    connect_path(addr, "/ws", None).await
}

/// Opens a WebSocket on `path`, with `Authorization: Bearer <bearer>` if given.
async fn connect_path(
    addr: SocketAddr,
    path: &str,
    bearer: Option<&str>,
) -> Result<Ws, ConnectError> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    let mut last = String::new();
    for attempt in 0..5 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
        }
        let tcp = match TcpStream::connect(addr).await {
            Ok(t) => t,
            Err(e) => {
                last = format!("connect: {e}");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        // Close with RST: tens of thousands of connections per run leave no TIME_WAIT.
        let _ = tcp.set_zero_linger();
        let mut req = format!("ws://{addr}{path}")
            .into_client_request()
            .map_err(|e| ConnectError::Other(format!("request: {e}")))?;
        if let Some(name) = bearer {
            let v = HeaderValue::from_str(&format!("Bearer {name}"))
                .map_err(|e| ConnectError::Other(format!("bearer {name:?}: {e}")))?;
            req.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::header::AUTHORIZATION,
                v,
            );
        }
        match tokio_tungstenite::client_async_with_config(req, tcp, Some(ws_config())).await {
            Ok((ws, _)) => return Ok(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                return Err(ConnectError::Refused(r.status().as_u16()));
            }
            Err(e) => last = format!("handshake: {e}"),
        }
    }
    Err(ConnectError::Other(last))
}

/// Opens `n` clients, at most `concurrency` handshakes at a time.
async fn connect_all(addr: SocketAddr, n: usize, concurrency: usize) -> Result<Vec<Ws>, String> {
    let socks = connect_spread(&[addr], n, concurrency).await?;
    Ok(socks.into_iter().map(|(_, ws)| ws).collect())
}

/// Opens `n` clients, client `i` on server `i % addrs.len()` (round-robin),
/// at most `concurrency` handshakes at a time: (server index, stream).
async fn connect_spread(
    addrs: &[SocketAddr],
    n: usize,
    concurrency: usize,
) -> Result<Vec<(usize, Ws)>, String> {
    let results: Vec<_> = futures_util::stream::iter(0..n)
        .map(|i| {
            let node = i % addrs.len();
            async move { (node, connect_one(addrs[node]).await) }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut out = Vec::with_capacity(n);
    let mut failed = 0;
    let mut first_err = None;
    for (node, r) in results {
        match r {
            Ok(ws) => out.push((node, ws)),
            Err(ConnectError::Refused(status)) => {
                return Err(format!(
                    "GET /ws answered HTTP {status}, not 101 (no /ws here?)"
                ));
            }
            Err(ConnectError::Other(e)) => {
                failed += 1;
                first_err.get_or_insert(e);
            }
        }
    }
    if failed > 0 {
        return Err(format!(
            "{failed} of {n} connections failed, first: {}",
            first_err.unwrap_or_default()
        ));
    }
    Ok(out)
}

/// The role of connection `i` of a targeted row: its user and whether it receives.
fn hub_role(i: usize, n: usize, aim: Aim) -> (String, bool) {
    match aim {
        // Members spread evenly over the connections, the publisher (0) the first.
        Aim::Room { members } => (format!("bench-{i}"), i.is_multiple_of((n / members).max(1))),
        // The target user's connections spread evenly too, the publisher (0) not one.
        Aim::User { connections } => {
            let step = n / (connections + 1);
            if i > 0 && i.is_multiple_of(step.max(1)) && i / step.max(1) <= connections {
                (TARGET_USER.to_string(), true)
            } else {
                (format!("bench-{i}"), false)
            }
        }
    }
}

/// Reads text messages until one contains `needle`; anything else is an error.
async fn expect_event(ws: &mut Ws, needle: &str) -> Result<(), ConnectError> {
    let wait = Duration::from_secs(20);
    loop {
        match tokio::time::timeout(wait, ws.next()).await {
            Err(_) => return Err(ConnectError::Other(format!("no {needle} in {wait:?}"))),
            Ok(None) => return Err(ConnectError::Other(format!("closed before {needle}"))),
            Ok(Some(Err(e))) => return Err(ConnectError::Other(format!("before {needle}: {e}"))),
            Ok(Some(Ok(Message::Text(t)))) if t.contains(needle) => return Ok(()),
            Ok(Some(Ok(Message::Text(t)))) => {
                return Err(ConnectError::Other(format!(
                    "expected {needle}, got {}",
                    t.as_str()
                )));
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// One `/hub` client: connected, `connection.established` read, and for a
/// room member `subscribe` answered by `subscribed`. Nothing more comes to it
/// until the first event, so its socket can be taken out of the stream.
async fn hub_client(addr: SocketAddr, user: &str, room: Option<&str>) -> Result<Ws, ConnectError> {
    let mut ws = connect_path(addr, "/hub", Some(user)).await?;
    expect_event(&mut ws, "\"connection.established\"").await?;
    if let Some(room) = room {
        ws.send(Message::text(format!(
            "{{\"type\":\"subscribe\",\"room\":\"{room}\"}}"
        )))
        .await
        .map_err(|e| ConnectError::Other(format!("subscribe: {e}")))?;
        expect_event(&mut ws, "\"subscribed\"").await?;
    }
    Ok(ws)
}

/// Opens the `n` clients of a targeted row: (index, receives, stream).
async fn connect_hub(
    addr: SocketAddr,
    n: usize,
    aim: Aim,
    concurrency: usize,
) -> Result<Vec<(usize, bool, Ws)>, String> {
    let results: Vec<_> = futures_util::stream::iter(0..n)
        .map(|i| async move {
            let (user, receives) = hub_role(i, n, aim);
            let room = matches!(aim, Aim::Room { .. }) && receives;
            let r = hub_client(addr, &user, room.then_some(ROOM)).await;
            (i, receives, r)
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut out = Vec::with_capacity(n);
    let mut failed = 0;
    let mut first_err = None;
    for (i, receives, r) in results {
        match r {
            Ok(ws) => out.push((i, receives, ws)),
            Err(ConnectError::Refused(status)) => {
                return Err(format!(
                    "GET /hub answered HTTP {status}, not 101 (no /hub here?)"
                ));
            }
            Err(ConnectError::Other(e)) => {
                failed += 1;
                first_err.get_or_insert(e);
            }
        }
    }
    if failed > 0 {
        return Err(format!(
            "{failed} of {n} /hub connections failed, first: {}",
            first_err.unwrap_or_default()
        ));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// The broadcast load.

/// State shared by the publisher and every reader (one thread: `Rc`, `Cell`).
struct Shared {
    clients: u32,
    epoch: Instant,
    /// Deliveries per message, indexed by sequence number.
    counts: RefCell<Vec<u32>>,
    /// Messages from `track_from` on, sent but not yet received by every client.
    in_flight: Cell<usize>,
    /// Completions of earlier messages (a probe or warm-up message arriving late)
    /// do not count against `in_flight`.
    track_from: Cell<u64>,
    /// Messages with a sequence number from here on are measured.
    measure_from: Cell<u64>,
    delivered: Cell<u64>,
    last_receive_ns: Cell<u64>,
    hist: RefCell<Hist>,
    /// Messages that reached every client.
    completed: Cell<u64>,
    /// Readers whose connection ended.
    closed: Cell<u64>,
    malformed: Cell<u64>,
    wake: tokio::sync::Notify,
    /// Targeted rows: the JSON around the `#SEQ TIMESTAMP` string the publisher
    /// sends (`say` or `whisper`); the events carry the string, found by its `#`.
    /// `None`: `/ws`'s raw 64-byte messages.
    envelope: Option<(String, String)>,
    /// Deliveries beyond `clients` for one message (an event reached a
    /// connection outside its target).
    stray: Cell<u64>,
    /// `--redis` rows: the measured latencies of each node's clients too.
    per_node: Option<RefCell<Vec<Hist>>>,
}

fn digits(b: &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u64::from(c - b'0');
    }
    Some(v)
}

impl Shared {
    /// A message received by a client of node `node` (0: the publisher's).
    fn on_message(&self, m: &[u8], node: usize) {
        let now = self.epoch.elapsed().as_nanos() as u64;
        let m = if self.envelope.is_some() {
            match m.iter().position(|&b| b == b'#') {
                Some(p) => &m[p + 1..],
                None => &[][..],
            }
        } else {
            m
        };
        let (Some(seq), Some(ts)) = (m.get(..10).and_then(digits), m.get(11..31).and_then(digits))
        else {
            self.malformed.set(self.malformed.get() + 1);
            return;
        };
        let mut counts = self.counts.borrow_mut();
        let Some(c) = counts.get_mut(seq as usize) else {
            self.malformed.set(self.malformed.get() + 1);
            return;
        };
        *c += 1;
        if *c > self.clients {
            self.stray.set(self.stray.get() + 1);
            return;
        }
        if *c == self.clients && seq >= self.track_from.get() {
            self.completed.set(self.completed.get() + 1);
            self.in_flight.set(self.in_flight.get().saturating_sub(1));
            self.wake.notify_one();
        }
        if seq >= self.measure_from.get() {
            self.delivered.set(self.delivered.get() + 1);
            self.last_receive_ns.set(now);
            self.hist.borrow_mut().record(now.saturating_sub(ts));
            if let Some(per_node) = &self.per_node
                && let Some(h) = per_node.borrow_mut().get_mut(node)
            {
                h.record(now.saturating_sub(ts));
            }
        }
    }

    /// The next message: `SEQ TIMESTAMP ` padded with `x` to 64 bytes.
    fn next_message(&self) -> Message {
        let mut counts = self.counts.borrow_mut();
        let seq = counts.len() as u64;
        counts.push(0);
        self.in_flight.set(self.in_flight.get() + 1);
        let ts = self.epoch.elapsed().as_nanos() as u64;
        if let Some((head, tail)) = &self.envelope {
            return Message::text(format!("{head}#{seq:010} {ts:020}{tail}"));
        }
        let mut s = format!("{seq:010} {ts:020} ");
        s.extend(std::iter::repeat_n('x', MESSAGE_LEN - s.len()));
        Message::text(s)
    }

    fn sent(&self) -> u64 {
        self.counts.borrow().len() as u64
    }

    /// Starts a phase: only messages sent from now on count as in flight.
    fn new_phase(&self) -> u64 {
        let from = self.sent();
        self.track_from.set(from);
        self.in_flight.set(0);
        from
    }
}

async fn reader<S>(mut rx: S, sh: Rc<Shared>, node: usize)
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    while let Some(m) = rx.next().await {
        match m {
            Ok(Message::Text(t)) => sh.on_message(t.as_bytes(), node),
            Ok(Message::Binary(b)) => sh.on_message(&b, node),
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    sh.closed.set(sh.closed.get() + 1);
}

/// The lean receive path: after tokio-tungstenite's handshake, reads the socket
/// itself and parses the server's (unmasked) frames in place, without a
/// per-message allocation, and answers pings. Taking the socket out of the
/// `WebSocketStream` loses nothing: servers send nothing before the first
/// broadcast, which comes only after every client has finished its handshake
/// (`/hub` clients read `connection.established` and `subscribed` through the
/// stream first, and nothing else comes before the first event).
async fn raw_reader(tcp: TcpStream, sh: Rc<Shared>, node: usize) {
    let mut buf = vec![0u8; 8192];
    let mut have = 0;
    'read: loop {
        if tcp.readable().await.is_err() {
            break;
        }
        let space = buf.len() - have;
        let n = match tcp.try_read(&mut buf[have..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => break,
        };
        have += n;
        let mut pos = 0;
        while have - pos >= 2 {
            let (b0, b1) = (buf[pos], buf[pos + 1]);
            if b1 & 0x80 != 0 {
                // A masked frame from a server is a protocol error.
                sh.malformed.set(sh.malformed.get() + 1);
                break 'read;
            }
            let (len, head) = match b1 & 0x7f {
                126 if have - pos >= 4 => (
                    usize::from(u16::from_be_bytes([buf[pos + 2], buf[pos + 3]])),
                    4,
                ),
                127 if have - pos >= 10 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&buf[pos + 2..pos + 10]);
                    (u64::from_be_bytes(b) as usize, 10)
                }
                126 | 127 => break,
                l => (usize::from(l), 2),
            };
            if have - pos < head + len {
                if head + len > buf.len() {
                    buf.resize(head + len, 0);
                }
                break;
            }
            let payload = &buf[pos + head..pos + head + len];
            match (b0 & 0x80 != 0, b0 & 0x0f) {
                (true, 1 | 2) => sh.on_message(payload, node),
                (_, 8) => break 'read,
                (_, 9) if len <= 125 => {
                    // Pong with the same payload; a zero mask key leaves it as is.
                    let mut pong = vec![0x8a, 0x80 | len as u8, 0, 0, 0, 0];
                    pong.extend_from_slice(payload);
                    let _ = tcp.try_write(&pong);
                }
                (_, 10) => {}
                _ => sh.malformed.set(sh.malformed.get() + 1),
            }
            pos += head + len;
        }
        buf.copy_within(pos..have, 0);
        have -= pos;
        if n < space {
            // A short read drained the socket: clear tokio's readiness without the
            // extra read that would return WouldBlock. On this one-thread runtime
            // no readiness event can be processed between the read and this.
            let _ = tcp.try_io(tokio::io::Interest::READABLE, || {
                Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
            });
        }
    }
    sh.closed.set(sh.closed.get() + 1);
}

type Sink = SplitSink<Ws, Message>;

async fn publish(tx: &mut Sink, sh: &Shared, load: Load, duration: Duration) -> Result<(), String> {
    let err = |e: tokio_tungstenite::tungstenite::Error| format!("publish: {e}");
    let until = Instant::now() + duration;
    match load {
        Load::InFlight(max) => loop {
            let mut fed = false;
            while sh.in_flight.get() < max {
                tx.feed(sh.next_message()).await.map_err(err)?;
                fed = true;
            }
            if fed {
                tx.flush().await.map_err(err)?;
            }
            tokio::select! {
                () = sh.wake.notified() => {}
                () = tokio::time::sleep_until(until.into()) => return Ok(()),
            }
            if Instant::now() >= until {
                return Ok(());
            }
        },
        Load::Rate(rate) => {
            let start = Instant::now();
            for k in 0.. {
                let at = start + Duration::from_nanos(k * 1_000_000_000 / rate);
                if at >= until {
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
                tx.send(sh.next_message()).await.map_err(err)?;
            }
            Ok(())
        }
    }
}

/// Waits until every sent message reached every client, or no delivery came
/// for 2 s, or 10 s passed.
async fn drain(sh: &Shared) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = (sh.completed.get(), Instant::now());
    loop {
        if sh.in_flight.get() == 0 || Instant::now() >= deadline {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_millis(20), sh.wake.notified()).await;
        let c = sh.completed.get();
        if c != last.0 {
            last = (c, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(2) {
            return;
        }
    }
}

#[derive(Clone, Copy)]
struct LoadFigures {
    deliveries_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    lost: u64,
    /// `--redis` rows (else `None`): p50 and p99 of the clients of the
    /// nodes other than the publisher's (cross-node), with several nodes.
    cross: Option<(f64, f64)>,
    /// Redis commands (all nodes) per message sent, on Redis.
    commands_per_message: Option<f64>,
    /// CPU µs per message sent: all servers, and Redis when started here.
    server_cpu_us: Option<f64>,
    redis_cpu_us: Option<f64>,
}

/// What a `--redis` run measures beside the default figures.
struct Measure<'a> {
    /// The Redis the servers are on (`None`: the single server, alone).
    redis: Option<&'a cluster::Redis>,
}

/// A load row: `clients` on `servers` round-robin (one server by default),
/// client 0 on the first one publishing to `/ws`.
async fn load_row(
    servers: &[Server],
    clients: usize,
    load: Load,
    duration: Duration,
    a: &Args,
    ticks: f64,
    measure: Option<&Measure<'_>>,
) -> Result<LoadFigures, String> {
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let t0 = Instant::now();
    let mut socks = connect_spread(&addrs, clients, a.concurrency).await?;
    let connect_secs = t0.elapsed().as_secs_f64();
    let sh = Rc::new(Shared {
        clients: clients as u32,
        epoch: Instant::now(),
        counts: RefCell::new(Vec::with_capacity(1 << 16)),
        in_flight: Cell::new(0),
        track_from: Cell::new(0),
        measure_from: Cell::new(u64::MAX),
        delivered: Cell::new(0),
        last_receive_ns: Cell::new(0),
        hist: RefCell::new(Hist::new()),
        completed: Cell::new(0),
        closed: Cell::new(0),
        malformed: Cell::new(0),
        wake: tokio::sync::Notify::new(),
        envelope: None,
        stray: Cell::new(0),
        per_node: (servers.len() > 1)
            .then(|| RefCell::new((0..servers.len()).map(|_| Hist::new()).collect())),
    });
    let publisher = socks
        .iter()
        .position(|(node, _)| *node == 0)
        .ok_or("no client on the first server")?;
    let (mut tx, rx0) = socks.swap_remove(publisher).1.split();
    tokio::task::spawn_local(reader(rx0, sh.clone(), 0));
    for (node, ws) in socks {
        if a.tungstenite_readers {
            tokio::task::spawn_local(reader(ws, sh.clone(), node));
        } else {
            tokio::task::spawn_local(raw_reader(ws.into_inner(), sh.clone(), node));
        }
    }
    // Every client registered: one probe message reached all of them.
    let t1 = Instant::now();
    while sh.completed.get() == 0 {
        if t1.elapsed() > Duration::from_secs(10) {
            let best = sh.counts.borrow().iter().copied().max().unwrap_or(0);
            return Err(format!(
                "after 10 s no broadcast reached every client (best {best} of {clients})"
            ));
        }
        tx.send(sh.next_message())
            .await
            .map_err(|e| format!("publish: {e}"))?;
        let _ = tokio::time::timeout(Duration::from_millis(200), sh.wake.notified()).await;
    }
    let sync_secs = t1.elapsed().as_secs_f64();
    // Warm-up (JIT, allocators, TCP windows), then the measured window.
    sh.new_phase();
    publish(&mut tx, &sh, load, WARMUP).await?;
    drain(&sh).await;
    let closed_before = sh.closed.get();
    sh.hist.borrow_mut().reset();
    if let Some(per_node) = &sh.per_node {
        per_node.borrow_mut().iter_mut().for_each(Hist::reset);
    }
    sh.delivered.set(0);
    let redis = measure.and_then(|m| m.redis);
    let commands_before = match redis {
        Some(r) => Some(r.commandstats().await?),
        None => None,
    };
    let server_pids: Vec<u32> = servers.iter().map(|s| s.child.id()).collect();
    let servers_cpu =
        measure.map(|_| cluster::CpuWindow::start(&server_pids, redis.and_then(|r| r.pid())));
    let from = sh.new_phase();
    sh.measure_from.set(from);
    let cpu = CpuMeter::start(ticks);
    let first_send_ns = sh.epoch.elapsed().as_nanos() as u64;
    publish(&mut tx, &sh, load, duration).await?;
    drain(&sh).await;
    let cpu_line = cpu.line();
    let sent = sh.sent() - from;
    let servers_cpu = servers_cpu.map(|w| w.line(sent));
    let commands = match (redis, commands_before) {
        (Some(r), Some(before)) => Some(r.commandstats().await?.since(&before)),
        _ => None,
    };
    let want = sent * clients as u64;
    let got = sh.delivered.get();
    let span = (sh.last_receive_ns.get().saturating_sub(first_send_ns)) as f64 / 1e9;
    let hist = sh.hist.borrow();
    let cross = sh.per_node.as_ref().map(|per_node| {
        // The clients of every node but the publisher's, in one histogram.
        let mut h = Hist::new();
        for other in per_node.borrow().iter().skip(1) {
            for (b, n) in h.buckets.iter_mut().zip(&other.buckets) {
                *b += n;
            }
            h.count += other.count;
            h.max = h.max.max(other.max);
        }
        (h.percentile_ms(0.50), h.percentile_ms(0.99))
    });
    let f = LoadFigures {
        deliveries_per_sec: if span > 0.0 { got as f64 / span } else { 0.0 },
        p50_ms: hist.percentile_ms(0.50),
        p99_ms: hist.percentile_ms(0.99),
        max_ms: hist.max as f64 / 1e6,
        lost: want.saturating_sub(got),
        cross,
        commands_per_message: commands
            .as_ref()
            .map(|c| c.total() as f64 / sent.max(1) as f64),
        server_cpu_us: servers_cpu.as_ref().map(|c| c.1),
        redis_cpu_us: servers_cpu.as_ref().and_then(|c| c.2),
    };
    println!(
        "  connected {clients} in {connect_secs:.2} s; all receiving after {sync_secs:.2} s; warm-up {:.1} s",
        WARMUP.as_secs_f64()
    );
    println!(
        "  sent {sent} messages of {MESSAGE_LEN} B; deliveries {got} of {want} in {span:.2} s = {:.0} deliveries/s; lost {}",
        f.deliveries_per_sec, f.lost
    );
    println!(
        "  latency send->receive: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        f.p50_ms, f.p99_ms, f.max_ms
    );
    if let Some(per_node) = &sh.per_node {
        for (i, h) in per_node.borrow().iter().enumerate() {
            println!(
                "    clients of node {i}{}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} deliveries)",
                if i == 0 {
                    " (the publisher's: local first)"
                } else {
                    " (through Redis)"
                },
                h.percentile_ms(0.50),
                h.percentile_ms(0.99),
                h.max as f64 / 1e6,
                h.count
            );
        }
    }
    if let Some(c) = &commands {
        println!(
            "  Redis commands: {} for {sent} messages = {:.2} per message ({})",
            c.total(),
            c.total() as f64 / sent.max(1) as f64,
            c.per_message(sent)
        );
    }
    if let Some((line, per_message, _)) = &servers_cpu {
        println!(
            "  {line} = {:.3} µs per delivery",
            per_message / clients.max(1) as f64
        );
    }
    let closed = sh.closed.get();
    if closed > 0 || sh.malformed.get() > 0 {
        println!(
            "  connections closed by the server: {closed} ({} before the measured window); malformed messages: {}",
            closed_before,
            sh.malformed.get()
        );
    }
    let rss: u64 = server_pids
        .iter()
        .map(|&pid| proc_status_kib(pid, "VmRSS:"))
        .sum();
    println!("  server RSS {rss} KiB; {cpu_line}");
    Ok(f)
}

#[derive(Clone, Copy)]
struct TargetedFigures {
    deliveries_per_sec: f64,
    events_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    lost: u64,
    stray: u64,
    /// Server user+sys CPU over the measured window (send of the first event
    /// to the last delivery), per event sent.
    cpu_us_per_event: f64,
    /// The same per delivery.
    cpu_us_per_delivery: f64,
}

/// A targeted row on `/hub`: `n` connections (each its own user, but the
/// target user's), events from connection 0 to `aim` only, `in_flight` at a
/// time; the server's CPU time per event from `/proc/PID/stat`.
async fn targeted_row(
    server: &Server,
    n: usize,
    aim: Aim,
    in_flight: usize,
    duration: Duration,
    a: &Args,
    ticks: f64,
) -> Result<TargetedFigures, String> {
    let pid = server.child.id().to_string();
    let recipients = aim.recipients();
    let t0 = Instant::now();
    let socks = connect_hub(server.addr, n, aim, a.concurrency).await?;
    let connect_secs = t0.elapsed().as_secs_f64();
    let (head, tail) = match aim {
        Aim::Room { .. } => (
            format!("{{\"type\":\"say\",\"room\":\"{ROOM}\",\"data\":\""),
            "\"}".to_string(),
        ),
        Aim::User { .. } => (
            format!("{{\"type\":\"whisper\",\"user\":\"{TARGET_USER}\",\"data\":\""),
            "\"}".to_string(),
        ),
    };
    let sh = Rc::new(Shared {
        clients: recipients as u32,
        epoch: Instant::now(),
        counts: RefCell::new(Vec::with_capacity(1 << 16)),
        in_flight: Cell::new(0),
        track_from: Cell::new(0),
        measure_from: Cell::new(u64::MAX),
        delivered: Cell::new(0),
        last_receive_ns: Cell::new(0),
        hist: RefCell::new(Hist::new()),
        completed: Cell::new(0),
        closed: Cell::new(0),
        malformed: Cell::new(0),
        wake: tokio::sync::Notify::new(),
        envelope: Some((head, tail)),
        stray: Cell::new(0),
        per_node: None,
    });
    let mut tx = None;
    let receiving = socks.iter().filter(|s| s.1).count();
    if receiving != recipients {
        return Err(format!(
            "{receiving} receiving connections, not {recipients}"
        ));
    }
    for (i, _, ws) in socks {
        if i == 0 {
            let (t, rx) = ws.split();
            tx = Some(t);
            tokio::task::spawn_local(reader(rx, sh.clone(), 0));
        } else {
            // Every client reads (and answers pings); one outside the target that
            // receives an event counts as a stray delivery.
            tokio::task::spawn_local(raw_reader(ws.into_inner(), sh.clone(), 0));
        }
    }
    let mut tx = tx.ok_or("no publisher")?;
    // The server at rest with every connection open.
    let idle = Duration::from_secs(1);
    let c0 = proc_cpu_seconds(&pid, ticks);
    tokio::time::sleep(idle).await;
    let idle_share = 100.0 * (proc_cpu_seconds(&pid, ticks) - c0) / idle.as_secs_f64();
    // One event reached every recipient.
    let t1 = Instant::now();
    while sh.completed.get() == 0 {
        if t1.elapsed() > Duration::from_secs(10) {
            let best = sh.counts.borrow().iter().copied().max().unwrap_or(0);
            return Err(format!(
                "after 10 s no event reached every recipient (best {best} of {recipients}; malformed {})",
                sh.malformed.get()
            ));
        }
        tx.send(sh.next_message())
            .await
            .map_err(|e| format!("publish: {e}"))?;
        let _ = tokio::time::timeout(Duration::from_millis(200), sh.wake.notified()).await;
    }
    let load = Load::InFlight(in_flight);
    sh.new_phase();
    publish(&mut tx, &sh, load, WARMUP).await?;
    drain(&sh).await;
    let closed_before = sh.closed.get();
    sh.hist.borrow_mut().reset();
    sh.delivered.set(0);
    let stray_before = sh.stray.get();
    let from = sh.new_phase();
    sh.measure_from.set(from);
    let cpu = CpuMeter::start(ticks);
    let server_cpu0 = proc_cpu_seconds(&pid, ticks);
    let first_send_ns = sh.epoch.elapsed().as_nanos() as u64;
    publish(&mut tx, &sh, load, duration).await?;
    drain(&sh).await;
    let server_cpu = proc_cpu_seconds(&pid, ticks) - server_cpu0;
    let cpu_line = cpu.line();
    let sent = sh.sent() - from;
    let want = sent * recipients as u64;
    let got = sh.delivered.get();
    let span = (sh.last_receive_ns.get().saturating_sub(first_send_ns)) as f64 / 1e9;
    let window = (sh.epoch.elapsed().as_nanos() as u64 - first_send_ns) as f64 / 1e9;
    let hist = sh.hist.borrow();
    let per = |count: u64| {
        if count > 0 {
            server_cpu * 1e6 / count as f64
        } else {
            0.0
        }
    };
    let f = TargetedFigures {
        deliveries_per_sec: if span > 0.0 { got as f64 / span } else { 0.0 },
        events_per_sec: if span > 0.0 { sent as f64 / span } else { 0.0 },
        p50_ms: hist.percentile_ms(0.50),
        p99_ms: hist.percentile_ms(0.99),
        max_ms: hist.max as f64 / 1e6,
        lost: want.saturating_sub(got),
        stray: sh.stray.get() - stray_before,
        cpu_us_per_event: per(sent),
        cpu_us_per_delivery: per(got),
    };
    let what = match aim {
        Aim::Room { members } => {
            format!("`say` to room {ROOM} ({members} members, the publisher one of them)")
        }
        Aim::User { connections } => format!(
            "`whisper` to user {TARGET_USER} ({connections} connections; the publisher another user)"
        ),
    };
    println!(
        "  connected {n} to /hub in {connect_secs:.2} s; {what}; {in_flight} in flight; warm-up {:.1} s",
        WARMUP.as_secs_f64()
    );
    println!(
        "  server at rest with {n} connections: {idle_share:.1}% of a core over {:.0} s",
        idle.as_secs_f64()
    );
    println!(
        "  sent {sent} events = {:.0} events/s; deliveries {got} of {want} in {span:.2} s = {:.0} deliveries/s; lost {}; stray {}",
        f.events_per_sec, f.deliveries_per_sec, f.lost, f.stray
    );
    println!(
        "  latency send->receive: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        f.p50_ms, f.p99_ms, f.max_ms
    );
    println!(
        "  server CPU {server_cpu:.2} s over {window:.2} s = {:.0}% of a core; {:.2} µs per event, {:.3} µs per delivery",
        100.0 * server_cpu / window.max(1e-9),
        f.cpu_us_per_event,
        f.cpu_us_per_delivery
    );
    let closed = sh.closed.get();
    if closed > 0 || sh.malformed.get() > 0 {
        println!(
            "  connections closed by the server: {closed} ({closed_before} before the measured window); malformed messages: {}",
            sh.malformed.get()
        );
    }
    println!(
        "  server RSS {} KiB; {cpu_line}",
        proc_status_kib(server.child.id(), "VmRSS:")
    );
    if closed > 0 {
        return Err(format!(
            "{closed} connections ended during the row; its figures are not kept"
        ));
    }
    Ok(f)
}

/// Waits until the server's RSS stops changing (3 equal samples 200 ms apart, at most 5 s).
async fn settled_rss(pid: u32) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = proc_status_kib(pid, "VmRSS:");
    let mut same = 0;
    while same < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = proc_status_kib(pid, "VmRSS:");
        if now == last {
            same += 1;
        } else {
            same = 0;
            last = now;
        }
    }
    last
}

async fn idle_row(server: &Server, n: usize, a: &Args, ticks: f64) -> Result<f64, String> {
    let pid = server.child.id();
    // One connection first, so lazily allocated structures are counted once, not per connection.
    let warm = connect_all(server.addr, 1, 1).await?;
    let before = settled_rss(pid).await;
    let cpu = CpuMeter::start(ticks);
    let t0 = Instant::now();
    let idle = connect_all(server.addr, n, a.concurrency).await?;
    let connect_secs = t0.elapsed().as_secs_f64();
    let cpu_line = cpu.line();
    let after = settled_rss(pid).await;
    let per = after.saturating_sub(before) as f64 / n as f64;
    println!("  connected {n} idle in {connect_secs:.2} s; {cpu_line}");
    println!(
        "  server RSS {before} KiB -> {after} KiB = {per:.2} KiB per idle connection (peak {} KiB)",
        proc_status_kib(pid, "VmHWM:")
    );
    drop((warm, idle));
    Ok(per)
}

// ---------------------------------------------------------------------------
// Main.

#[derive(Clone, Copy)]
enum Figure {
    Load(LoadFigures),
    Idle(f64),
    Targeted(TargetedFigures),
}

fn headline(row: &Row, f: Figure) -> f64 {
    match (row.kind, f) {
        (
            RowKind::Load {
                load: Load::InFlight(_),
                ..
            },
            Figure::Load(l),
        ) => l.deliveries_per_sec,
        (_, Figure::Load(l)) => l.p99_ms,
        (_, Figure::Idle(k)) => k,
        (_, Figure::Targeted(t)) => t.cpu_us_per_event,
    }
}

fn fmt_figure(row: &Row, v: f64) -> String {
    match row.kind {
        RowKind::Load {
            load: Load::InFlight(_),
            ..
        } => {
            if v >= 1e6 {
                format!("{:.2} M", v / 1e6)
            } else {
                format!("{:.0} k", v / 1e3)
            }
        }
        RowKind::Load { .. } => format!("{v:.2} ms"),
        RowKind::Idle { .. } => format!("{v:.2} KiB"),
        RowKind::Targeted { .. } => format!("{v:.2} µs"),
    }
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ws-bench: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if args.redis.is_some() {
        return cluster_main(&args);
    }
    let (rows, targets) = match rows(&args).and_then(|r| Ok((r, targets(&args)?))) {
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
    let ticks = clock_ticks();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let affinity = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Cpus_allowed_list:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())
        })
        .unwrap_or_else(|| "?".into());
    let server_cores = &args.server_cores;
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
    if let Some(n) = args.server_threads {
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
    ensure_fd_limit(needed);

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
            let run = if args.repeat > 1 {
                format!(" (run {} of {})", rep + 1, args.repeat)
            } else {
                String::new()
            };
            println!("[{}] {}: {}{run}", t.name, row.name, row.label);
            let mut server = match start_server(t) {
                Ok(s) => s,
                Err(e) => {
                    println!("  failed: {e}");
                    failures += 1;
                    continue;
                }
            };
            let local = tokio::task::LocalSet::new();
            let r = rt.block_on(local.run_until(async {
                match row.kind {
                    RowKind::Load { clients, load } => load_row(
                        std::slice::from_ref(&server),
                        clients,
                        load,
                        row.duration,
                        &args,
                        ticks,
                        // The server's CPU over the measured window, too.
                        Some(&Measure { redis: None }),
                    )
                    .await
                    .map(Figure::Load),
                    RowKind::Idle { connections } => idle_row(&server, connections, &args, ticks)
                        .await
                        .map(Figure::Idle),
                    RowKind::Targeted {
                        connections,
                        aim,
                        in_flight,
                    } => targeted_row(
                        &server,
                        connections,
                        aim,
                        in_flight,
                        row.duration,
                        &args,
                        ticks,
                    )
                    .await
                    .map(Figure::Targeted),
                }
            }));
            // Close every client before the server goes.
            drop(local);
            let exited = server.child.try_wait().ok().flatten();
            drop(server);
            match r {
                Ok(f) => results[ri][ti].push(f),
                Err(e) => {
                    println!("  failed: {e}");
                    if let Some(status) = exited {
                        println!("  the server had exited during the row: {status}");
                    }
                    failures += 1;
                    if e.contains("not 101") {
                        unavailable[ti] = Some(e);
                    }
                }
            }
        }
    }
    summary(&rows, &targets, &results, args.repeat);
    if failures > 0 {
        eprintln!("ws-bench: {failures} row(s) failed");
        return std::process::ExitCode::from(1);
    }
    std::process::ExitCode::SUCCESS
}

/// The cores of a `taskset -c` / `Cpus_allowed_list` list.
fn core_set(list: &str) -> std::collections::BTreeSet<usize> {
    let mut set = std::collections::BTreeSet::new();
    for part in list.split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(lo), Ok(hi)) = (lo.trim().parse::<usize>(), hi.trim().parse::<usize>()) {
            set.extend(lo..=hi);
        }
    }
    set
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

fn summary(rows: &[Row], targets: &[Target], results: &[Vec<Vec<Figure>>], repeat: usize) {
    let ours = targets.iter().position(|t| t.name == "rt-server");
    let title = if repeat > 1 {
        format!("summary (median of {repeat} runs)")
    } else {
        "summary".to_string()
    };
    let mut header = format!("{title:<44}");
    for t in targets {
        header.push_str(&format!("{:>12}", t.name));
    }
    if ours.is_some() {
        for t in targets.iter().filter(|t| t.name != "rt-server") {
            header.push_str(&format!("{:>12}", format!("vs {}", t.name)));
        }
    }
    println!();
    println!("{header}");
    // A fixed-rate row's p99 line is followed by its p50, an in-flight
    // row's deliveries by the server's CPU per delivery.
    #[derive(Clone, Copy, PartialEq)]
    enum Line {
        Headline,
        P50,
        CpuPerDelivery(usize),
    }
    let lines = rows.iter().enumerate().flat_map(|(ri, row)| {
        let extra = match row.kind {
            RowKind::Load {
                load: Load::Rate(_),
                ..
            } => Some((ri, row.label.replacen("p99", "p50", 1), Line::P50)),
            RowKind::Load {
                load: Load::InFlight(_),
                clients,
            } => Some((
                ri,
                format!("  server CPU µs per delivery, {clients} clients"),
                Line::CpuPerDelivery(clients),
            )),
            _ => None,
        };
        std::iter::once((ri, row.label.clone(), Line::Headline)).chain(extra)
    });
    for (ri, label, kind) in lines {
        let row = &rows[ri];
        let mut line = format!("{label:<44}");
        let figure = |f: Figure| match (kind, f) {
            (Line::P50, Figure::Load(l)) => Some(l.p50_ms),
            (Line::CpuPerDelivery(clients), Figure::Load(l)) => {
                l.server_cpu_us.map(|us| us / clients.max(1) as f64)
            }
            (_, f) => Some(headline(row, f)),
        };
        let vals: Vec<Option<f64>> = results[ri]
            .iter()
            .map(|fs| median(fs.iter().filter_map(|&f| figure(f)).collect()))
            .collect();
        for v in &vals {
            line.push_str(&format!(
                "{:>12}",
                v.map_or("-".to_string(), |v| match kind {
                    Line::CpuPerDelivery(_) => format!("{v:.3} µs"),
                    _ => fmt_figure(row, v),
                })
            ));
        }
        if let Some(o) = ours {
            for (ti, _) in targets.iter().enumerate().filter(|(ti, _)| *ti != o) {
                let ratio = match (vals[o], vals[ti]) {
                    (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
                    _ => "-".into(),
                };
                line.push_str(&format!("{ratio:>12}"));
            }
        }
        println!("{line}");
    }
    if ours.is_some() {
        println!(
            "ratios are rt-server / peer: above 1 is better for deliveries/s, below 1 is better for CPU, p50, p99 and KiB"
        );
    }
    targeted_summary(rows, targets, results, repeat);
    for (ri, row) in rows.iter().enumerate() {
        if let RowKind::Load { .. } = row.kind {
            let lost: Vec<String> = targets
                .iter()
                .zip(&results[ri])
                .filter_map(|(t, fs)| {
                    let lost: u64 = fs
                        .iter()
                        .map(|f| match f {
                            Figure::Load(l) => l.lost,
                            Figure::Idle(_) | Figure::Targeted(_) => 0,
                        })
                        .sum();
                    (lost > 0).then(|| format!("{} {lost}", t.name))
                })
                .collect();
            if !lost.is_empty() {
                println!("lost deliveries in {}: {}", row.name, lost.join(", "));
            }
        }
    }
}

/// The targeted rows side by side: each figure at the fewest and at the most
/// connections of the same aim, and their ratio (about 1 when the cost follows
/// the recipients, not the connections).
fn targeted_summary(rows: &[Row], targets: &[Target], results: &[Vec<Vec<Figure>>], repeat: usize) {
    let Some(o) = targets.iter().position(|t| t.name == "rt-server") else {
        return;
    };
    // (aim, connections, medians of the figures), for the rows that ran.
    let mut ran: Vec<(Aim, usize, [f64; 6], u64)> = Vec::new();
    for (ri, row) in rows.iter().enumerate() {
        let RowKind::Targeted {
            connections, aim, ..
        } = row.kind
        else {
            continue;
        };
        let figs: Vec<TargetedFigures> = results[ri][o]
            .iter()
            .filter_map(|f| match f {
                Figure::Targeted(t) => Some(*t),
                _ => None,
            })
            .collect();
        if figs.is_empty() {
            continue;
        }
        let m =
            |g: fn(&TargetedFigures) -> f64| median(figs.iter().map(g).collect()).unwrap_or(0.0);
        ran.push((
            aim,
            connections,
            [
                m(|t| t.cpu_us_per_event),
                m(|t| t.cpu_us_per_delivery),
                m(|t| t.events_per_sec),
                m(|t| t.deliveries_per_sec),
                m(|t| t.p50_ms),
                m(|t| t.p99_ms),
            ],
            figs.iter().map(|t| t.lost + t.stray).sum(),
        ));
    }
    if ran.is_empty() {
        return;
    }
    let title = if repeat > 1 {
        format!("targeted events, rt-server /hub (median of {repeat} runs)")
    } else {
        "targeted events, rt-server /hub".to_string()
    };
    println!();
    println!("{title}");
    let names = [
        "server CPU µs/event",
        "server CPU µs/delivery",
        "events/s",
        "deliveries/s",
        "latency p50 ms",
        "latency p99 ms",
    ];
    let fmt = |k: usize, v: f64| match k {
        0 => format!("{v:.2}"),
        1 => format!("{v:.3}"),
        2 | 3 => format!("{v:.0}"),
        _ => format!("{v:.2}"),
    };
    let mut aims: Vec<Aim> = Vec::new();
    for r in &ran {
        if !aims.contains(&r.0) {
            aims.push(r.0);
        }
    }
    for aim in aims {
        let mut of: Vec<_> = ran.iter().filter(|r| r.0 == aim).collect();
        of.sort_by_key(|r| r.1);
        let what = match aim {
            Aim::Room { members } => format!("room of {members}"),
            Aim::User { connections } => format!("one user, {connections} connections"),
        };
        let mut header = format!("{what:<36}");
        for r in &of {
            header.push_str(&format!("{:>16}", format!("{} conns", r.1)));
        }
        let (lo, hi) = (of[0], of[of.len() - 1]);
        if of.len() > 1 {
            header.push_str(&format!("{:>16}", format!("{}/{}", hi.1, lo.1)));
        }
        println!("{header}");
        for (k, name) in names.iter().enumerate() {
            let mut line = format!("  {name:<34}");
            for r in &of {
                line.push_str(&format!("{:>16}", fmt(k, r.2[k])));
            }
            if of.len() > 1 {
                let ratio = if lo.2[k] > 0.0 {
                    format!("{:.2}x", hi.2[k] / lo.2[k])
                } else {
                    "-".into()
                };
                line.push_str(&format!("{ratio:>16}"));
            }
            println!("{line}");
        }
        let bad: Vec<String> = of
            .iter()
            .filter(|r| r.3 > 0)
            .map(|r| format!("{} conns {}", r.1, r.3))
            .collect();
        if !bad.is_empty() {
            println!("  lost or stray deliveries: {}", bad.join(", "));
        }
    }
    let (fewest, most) = (
        ran.iter().map(|r| r.1).min().unwrap_or(0),
        ran.iter().map(|r| r.1).max().unwrap_or(0),
    );
    if most > fewest {
        println!(
            "same recipients, {:.0}x the connections: a ratio near 1.00x means the cost follows the recipients, not the connections",
            most as f64 / fewest.max(1) as f64
        );
    }
}

// ---------------------------------------------------------------------------
// `--redis`: rt-server alone against N nodes on one Redis, in the same run.

/// A row of a `--redis` run: one client count, one load.
struct ClusterRow {
    clients: usize,
    load: Load,
    duration: Duration,
}

fn cluster_main(args: &Args) -> std::process::ExitCode {
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
    let counts = args
        .client_counts
        .clone()
        .unwrap_or_else(|| vec![200, 1000]);
    let nodes = args.nodes.clone().unwrap_or_else(|| vec![2]);
    let rate = args.rate.unwrap_or(100);
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
    let setups: Vec<Option<usize>> = std::iter::once(None)
        .chain(nodes.iter().map(|&n| Some(n)))
        .collect();
    let ticks = clock_ticks();
    ensure_fd_limit(counts.iter().max().copied().unwrap_or(0) as u64 + 256);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let redis = match rt.block_on(cluster::Redis::open(
        args.redis.as_ref().and_then(|u| u.as_deref()),
    )) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let affinity = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Cpus_allowed_list:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())
        })
        .unwrap_or_else(|| "?".into());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "ws-bench --redis: rt-server /ws alone, then as {} on {}",
        nodes
            .iter()
            .map(|&n| cluster::setup_name(Some(n)))
            .collect::<Vec<_>>()
            .join(", then "),
        redis.about
    );
    println!(
        "ws-bench: every rt-server (the single one and each node) on core {} (taskset), this generator on cores {affinity} ({cores} usable)",
        cluster::SERVER_CORE
    );
    println!(
        "ws-bench: clients round-robin over the nodes; client 0, on node 0, sends every message to /ws (node 0's clients get it locally, the others' through Redis PUBLISH)"
    );
    if affinity != "1" {
        println!("ws-bench: run the generator under `taskset -c 1` so it does not share core 0");
    }
    let mut results: Vec<Vec<Vec<LoadFigures>>> = vec![vec![Vec::new(); setups.len()]; rows.len()];
    let mut failures = 0;
    for (ri, row) in rows.iter().enumerate() {
        for rep in 0..args.repeat {
            for (si, &setup) in setups.iter().enumerate() {
                let run = if args.repeat > 1 {
                    format!(" (run {} of {})", rep + 1, args.repeat)
                } else {
                    String::new()
                };
                let what = match row.load {
                    Load::InFlight(k) => format!("{k} in flight"),
                    Load::Rate(r) => format!("{r} msg/s"),
                };
                println!(
                    "[{}] {} clients, {what}{run}",
                    cluster::setup_name(setup),
                    row.clients
                );
                let prefix = cluster::run_prefix();
                let servers: Result<Vec<Server>, String> = match setup {
                    None => start_server(&target).map(|s| vec![s]),
                    Some(n) => (0..n)
                        .map(|i| {
                            let mut t = target.clone();
                            t.args.extend(cluster::node_args(&redis, &prefix));
                            t.args
                                .extend(["--node-id".into(), format!("{prefix}-node{i}")]);
                            start_server(&t)
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
                let measure = Measure {
                    redis: setup.map(|_| &redis),
                };
                let local = tokio::task::LocalSet::new();
                let r = rt.block_on(local.run_until(load_row(
                    &servers,
                    row.clients,
                    row.load,
                    row.duration,
                    args,
                    ticks,
                    Some(&measure),
                )));
                drop(local);
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
    cluster_summary(&rows, &setups, &results, args.repeat, rate);
    if failures > 0 {
        eprintln!("ws-bench: {failures} run(s) failed");
        return std::process::ExitCode::from(1);
    }
    std::process::ExitCode::SUCCESS
}

fn cluster_summary(
    rows: &[ClusterRow],
    setups: &[Option<usize>],
    results: &[Vec<Vec<LoadFigures>>],
    repeat: usize,
    rate: u64,
) {
    let med = |ri: usize, si: usize, g: &dyn Fn(&LoadFigures) -> Option<f64>| {
        // A run that lost deliveries measured fewer streams: left out.
        cluster::median(
            results[ri][si]
                .iter()
                .filter(|f| f.lost == 0)
                .filter_map(g)
                .collect(),
        )
    };
    let cell = |v: Option<f64>, fmt: &dyn Fn(f64) -> String| v.map_or("-".into(), fmt);
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
            .filter_map(|(si, s)| f(si).map(|v| format!("{}: {v}", cluster::setup_name(*s))))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let mut table = Vec::new();
    let mut per_message: Vec<(Load, Option<usize>, usize, f64)> = Vec::new();
    for (ri, row) in rows.iter().enumerate() {
        let c = row.clients;
        match row.load {
            Load::InFlight(k) => {
                let v: Vec<Option<f64>> = (0..setups.len())
                    .map(|si| med(ri, si, &|f| Some(f.deliveries_per_sec)))
                    .collect();
                table.push(cluster::TableRow {
                    label: format!("deliveries/s, {c} clients, {k} in flight"),
                    cells: v.iter().map(|&x| cell(x, &rate_fmt)).collect(),
                    verdict: verdicts(&|si| {
                        let (single, ours) = (v[0]?, v[si]?);
                        let ratio = ours / single;
                        Some(format!(
                            "{ratio:.2}x of single (target >= 0.70x: {})",
                            if ratio >= 0.70 { "met" } else { "NOT met" }
                        ))
                    }),
                });
                table.push(cluster::TableRow {
                    label: format!("  server CPU per message, {c} clients"),
                    cells: (0..setups.len())
                        .map(|si| cell(med(ri, si, &|f| f.server_cpu_us), &us))
                        .collect(),
                    verdict: String::new(),
                });
                table.push(cluster::TableRow {
                    label: format!("  redis-server CPU per message, {c} clients"),
                    cells: (0..setups.len())
                        .map(|si| cell(med(ri, si, &|f| f.redis_cpu_us), &us))
                        .collect(),
                    verdict: String::new(),
                });
            }
            Load::Rate(r) => {
                let p = |g: &dyn Fn(&LoadFigures) -> Option<f64>| -> Vec<Option<f64>> {
                    (0..setups.len()).map(|si| med(ri, si, g)).collect()
                };
                let p50 = p(&|f| Some(f.p50_ms));
                let p99 = p(&|f| Some(f.p99_ms));
                let cross50 = p(&|f| f.cross.map(|c| c.0));
                let cross99 = p(&|f| f.cross.map(|c| c.1));
                table.push(cluster::TableRow {
                    label: format!("p50 ms at {r} msg/s to {c} clients, all"),
                    cells: p50.iter().map(|&x| cell(x, &ms)).collect(),
                    verdict: String::new(),
                });
                table.push(cluster::TableRow {
                    label: format!("p99 ms at {r} msg/s to {c} clients, all"),
                    cells: p99.iter().map(|&x| cell(x, &ms)).collect(),
                    verdict: String::new(),
                });
                // The single server's figures are the reference of the cross-node ones.
                let mut c50: Vec<Option<f64>> = cross50.clone();
                c50[0] = None;
                table.push(cluster::TableRow {
                    label: "  p50 ms, other nodes' clients (cross-node)".into(),
                    cells: c50.iter().map(|&x| cell(x, &ms)).collect(),
                    verdict: String::new(),
                });
                table.push(cluster::TableRow {
                    label: "  p99 ms, other nodes' clients (cross-node)".into(),
                    cells: cross99.iter().map(|&x| cell(x, &ms)).collect(),
                    verdict: verdicts(&|si| {
                        let (single, ours) = (p99[0]?, cross99[si]?);
                        let d = ours - single;
                        Some(format!(
                            "{d:+.2} ms vs single p99 (target <= +2 ms: {})",
                            if d <= 2.0 { "met" } else { "NOT met" }
                        ))
                    }),
                });
            }
        }
        let cmds: Vec<Option<f64>> = (0..setups.len())
            .map(|si| med(ri, si, &|f| f.commands_per_message))
            .collect();
        for (si, v) in cmds.iter().enumerate() {
            if let Some(v) = v {
                per_message.push((row.load, setups[si], c, *v));
            }
        }
        let what = match row.load {
            Load::InFlight(k) => format!("{k} in flight"),
            Load::Rate(r) => format!("{r} msg/s"),
        };
        table.push(cluster::TableRow {
            label: format!("  Redis commands per message, {what}, {c} clients"),
            cells: cmds.iter().map(|&x| cell(x, &num)).collect(),
            verdict: String::new(),
        });
    }
    let names: Vec<String> = setups.iter().map(|&s| cluster::setup_name(s)).collect();
    let title = if repeat > 1 {
        format!("rt-server /ws, alone and on Redis (median of {repeat} runs)")
    } else {
        "rt-server /ws, alone and on Redis".to_string()
    };
    cluster::print_table(&title, &names, &table);
    // Commands per message at the fewest against the most clients.
    for &setup in setups.iter().filter(|s| s.is_some()) {
        for load in [Load::InFlight(0), Load::Rate(rate)] {
            let of: Vec<(usize, f64)> = per_message
                .iter()
                .filter(|p| {
                    p.1 == setup && std::mem::discriminant(&p.0) == std::mem::discriminant(&load)
                })
                .map(|p| (p.2, p.3))
                .collect();
            let (Some(lo), Some(hi)) = (
                of.iter().min_by_key(|p| p.0).copied(),
                of.iter().max_by_key(|p| p.0).copied(),
            ) else {
                continue;
            };
            let what = match load {
                Load::InFlight(_) => "in flight",
                Load::Rate(_) => "paced",
            };
            println!(
                "Redis commands per message, {}, {what}: {}",
                cluster::setup_name(setup),
                cluster::independence_verdict(lo, hi, "clients")
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
                        "{} at {} clients: {n} in {runs} of {of} runs",
                        cluster::setup_name(s),
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
