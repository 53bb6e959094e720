//! `--redis [URL] --nodes N`: the benchmarks against several `rt-server`
//! nodes on one Redis. Shared by `ws-bench` and `sse-bench` (which includes
//! this file with `#[path]`): the Redis to run on (a throwaway
//! `redis-server` from `backplane_redis::testing`, or the one at a given
//! URL), its `INFO commandstats`, the processes' CPU time, and the table of
//! single-node against cluster figures.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backplane_redis::testing::RedisServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The core the servers (the single one, the nodes and a Redis started
/// here) are pinned to; the generator runs on the other one.
pub(crate) const SERVER_CORE: &str = "0";

/// Commands the benchmark itself sends (`INFO` for the counts, `AUTH` when
/// the URL has a password), left out of the per-message counts.
const OWN_COMMANDS: [&str; 2] = ["info", "auth"];

/// Parses `--nodes`: node counts, comma-separated, each at least 1.
pub(crate) fn parse_nodes(v: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for n in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let n: usize = n.parse().map_err(|e| format!("--nodes {v}: {e}"))?;
        if n == 0 {
            return Err("--nodes must be at least 1".into());
        }
        if !out.contains(&n) {
            out.push(n);
        }
    }
    if out.is_empty() {
        return Err(format!("--nodes {v}: no node count"));
    }
    Ok(out)
}

/// Parses a comma-separated list of client counts.
pub(crate) fn parse_counts(flag: &str, v: &str) -> Result<Vec<usize>, String> {
    let mut out = Vec::new();
    for n in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let n: usize = n.parse().map_err(|e| format!("{flag} {v}: {e}"))?;
        if n == 0 {
            return Err(format!("{flag} must be > 0"));
        }
        out.push(n);
    }
    if out.is_empty() {
        return Err(format!("{flag} {v}: no count"));
    }
    Ok(out)
}

/// The Redis of a cluster run; a server started here is killed on drop.
pub(crate) struct Redis {
    url: String,
    addr: String,
    auth: Option<(Option<String>, String)>,
    server: Option<RedisServer>,
    /// One line on where it runs.
    pub(crate) about: String,
}

impl Redis {
    /// The Redis at `url`, or a throwaway `redis-server` pinned to
    /// [`SERVER_CORE`] when `url` is `None`.
    pub(crate) async fn open(url: Option<&str>) -> Result<Redis, String> {
        let (url, server) = match url {
            Some(u) => (u.to_string(), None),
            None => {
                let s = RedisServer::start().map_err(|e| format!("redis-server: {e}"))?;
                (s.url(), Some(s))
            }
        };
        let (addr, auth) = parse_url(&url)?;
        let mut r = Redis {
            url,
            addr,
            auth,
            server,
            about: String::new(),
        };
        let version = r
            .command(&["INFO", "server"])
            .await
            .map(|info| field(&info, "redis_version").unwrap_or_else(|| "?".into()))
            .map_err(|e| format!("Redis at {}: {e}", r.url))?;
        r.about = match r.server.as_ref().and_then(RedisServer::pid) {
            Some(pid) => {
                let pinned = if pin(pid, SERVER_CORE) {
                    format!("pinned to core {SERVER_CORE}")
                } else {
                    "not pinned (no taskset)".into()
                };
                format!(
                    "a throwaway redis-server {version} on {} ({pinned}, no persistence)",
                    r.url
                )
            }
            None => format!(
                "Redis {version} at {} (given: not started or pinned here)",
                r.url
            ),
        };
        Ok(r)
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The process id of a Redis started here.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.server.as_ref().and_then(RedisServer::pid)
    }

    /// Calls per command so far, from `INFO commandstats`.
    pub(crate) async fn commandstats(&self) -> Result<CommandStats, String> {
        let info = self.command(&["INFO", "commandstats"]).await?;
        let mut calls = BTreeMap::new();
        for line in info.lines() {
            let Some(rest) = line.strip_prefix("cmdstat_") else {
                continue;
            };
            let Some((name, fields)) = rest.split_once(':') else {
                continue;
            };
            let n = fields
                .split(',')
                .find_map(|f| f.strip_prefix("calls="))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
            calls.insert(name.to_string(), n);
        }
        Ok(CommandStats(calls))
    }

    /// Deletes the keys under `prefix` (what one run left: stream history,
    /// node counters), so runs do not add up in the Redis.
    pub(crate) async fn forget(&self, prefix: &str) {
        let pattern = format!("{prefix}:*");
        let mut cursor = "0".to_string();
        for _ in 0..1000 {
            let Ok(Reply::Array(Some(parts))) = self
                .call(&["SCAN", &cursor, "MATCH", &pattern, "COUNT", "1000"])
                .await
            else {
                return;
            };
            let mut parts = parts.into_iter();
            let (Some(Reply::Bulk(Some(next))), Some(Reply::Array(Some(keys)))) =
                (parts.next(), parts.next())
            else {
                return;
            };
            let keys: Vec<String> = keys
                .into_iter()
                .filter_map(|k| match k {
                    Reply::Bulk(Some(k)) => String::from_utf8(k).ok(),
                    _ => None,
                })
                .collect();
            if !keys.is_empty() {
                let mut args = vec!["UNLINK"];
                args.extend(keys.iter().map(String::as_str));
                let _ = self.call(&args).await;
            }
            cursor = String::from_utf8_lossy(&next).into_owned();
            if cursor == "0" {
                return;
            }
        }
    }

    /// One command on a new connection; its bulk-string reply as text.
    async fn command(&self, args: &[&str]) -> Result<String, String> {
        match self.call(args).await? {
            Reply::Bulk(Some(b)) => Ok(String::from_utf8_lossy(&b).into_owned()),
            Reply::Simple(s) => Ok(s),
            Reply::Error(e) => Err(e),
            _ => Err(format!("unexpected reply to {}", args.join(" "))),
        }
    }

    async fn call(&self, args: &[&str]) -> Result<Reply, String> {
        let io = async {
            let mut s = TcpStream::connect(&self.addr)
                .await
                .map_err(|e| e.to_string())?;
            let mut buf = Vec::new();
            if let Some((user, password)) = &self.auth {
                let mut auth = vec!["AUTH"];
                if let Some(u) = user {
                    auth.push(u);
                }
                auth.push(password);
                if let Reply::Error(e) = roundtrip(&mut s, &mut buf, &auth).await? {
                    return Err(format!("AUTH: {e}"));
                }
            }
            roundtrip(&mut s, &mut buf, args).await
        };
        tokio::time::timeout(Duration::from_secs(5), io)
            .await
            .map_err(|_| "no answer in 5 s".to_string())?
    }
}

/// `host:port` and the credentials of a `redis://` URL.
#[allow(clippy::type_complexity)]
fn parse_url(url: &str) -> Result<(String, Option<(Option<String>, String)>), String> {
    let rest = url
        .strip_prefix("redis://")
        .ok_or_else(|| format!("--redis {url}: only redis:// URLs are supported"))?;
    let rest = rest.split(['/', '?']).next().unwrap_or("");
    let (auth, host) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    let auth = auth
        .and_then(|a| a.split_once(':'))
        .map(|(u, p)| ((!u.is_empty()).then(|| u.to_string()), p.to_string()));
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    let addr = if host.ends_with(']') || !host.contains(':') {
        format!("{host}:6379")
    } else {
        host.to_string()
    };
    Ok((addr, auth))
}

/// A `field:value` line of an `INFO` reply.
fn field(info: &str, name: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
}

/// A RESP2 reply.
enum Reply {
    Simple(String),
    Error(String),
    Int,
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

async fn roundtrip(s: &mut TcpStream, buf: &mut Vec<u8>, args: &[&str]) -> Result<Reply, String> {
    let mut req = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        req.extend_from_slice(a.as_bytes());
        req.extend_from_slice(b"\r\n");
    }
    s.write_all(&req).await.map_err(|e| e.to_string())?;
    loop {
        if let Some((reply, used)) = parse_reply(buf) {
            buf.drain(..used);
            return Ok(reply);
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// One complete reply at the start of `b` and its length, if `b` holds one.
fn parse_reply(b: &[u8]) -> Option<(Reply, usize)> {
    let end = b.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&b[1..end]).ok()?;
    let next = end + 2;
    match *b.first()? {
        b'+' => Some((Reply::Simple(line.to_string()), next)),
        b'-' => Some((Reply::Error(line.to_string()), next)),
        b':' => Some((Reply::Int, next)),
        b'$' => {
            let len: i64 = line.parse().ok()?;
            if len < 0 {
                return Some((Reply::Bulk(None), next));
            }
            let len = len as usize;
            if b.len() < next + len + 2 {
                return None;
            }
            Some((
                Reply::Bulk(Some(b[next..next + len].to_vec())),
                next + len + 2,
            ))
        }
        b'*' => {
            let n: i64 = line.parse().ok()?;
            if n < 0 {
                return Some((Reply::Array(None), next));
            }
            let mut items = Vec::with_capacity(n as usize);
            let mut at = next;
            for _ in 0..n {
                let (item, used) = parse_reply(&b[at..])?;
                items.push(item);
                at += used;
            }
            Some((Reply::Array(Some(items)), at))
        }
        _ => Some((Reply::Error(format!("unreadable reply {line:?}")), next)),
    }
}

/// Calls per command (`INFO commandstats`).
#[derive(Debug, Clone, Default)]
pub(crate) struct CommandStats(BTreeMap<String, u64>);

impl CommandStats {
    /// Calls since `before`, per command, without the benchmark's own.
    pub(crate) fn since(&self, before: &CommandStats) -> CommandStats {
        let mut out = BTreeMap::new();
        for (name, &n) in &self.0 {
            if OWN_COMMANDS.contains(&name.as_str()) {
                continue;
            }
            let d = n.saturating_sub(before.0.get(name).copied().unwrap_or(0));
            if d > 0 {
                out.insert(name.clone(), d);
            }
        }
        CommandStats(out)
    }

    pub(crate) fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// `evalsha 1.00, publish 1.00, ...` per message, most first.
    pub(crate) fn per_message(&self, messages: u64) -> String {
        let mut v: Vec<(&String, &u64)> = self.0.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        v.iter()
            .map(|&(name, &n)| format!("{name} {:.2}", n as f64 / messages.max(1) as f64))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Pins process `pid` and all its threads to `cores` with `taskset`.
pub(crate) fn pin(pid: u32, cores: &str) -> bool {
    std::path::Path::new("/usr/bin/taskset").exists()
        && Command::new("/usr/bin/taskset")
            .args(["-a", "-p", "-c", cores, &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// User+sys CPU seconds of process `pid`, all its threads.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    let ticks = *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (get(11) + get(12)) / ticks
}

/// A fresh key prefix per run (`bench-PID-K`), so runs share nothing in Redis.
pub(crate) fn run_prefix() -> String {
    static RUN: AtomicU64 = AtomicU64::new(0);
    format!(
        "bench-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    )
}

/// The rt-server flags of one node of a run.
pub(crate) fn node_args(redis: &Redis, prefix: &str) -> Vec<String> {
    vec![
        "--redis".into(),
        redis.url().to_string(),
        "--redis-prefix".into(),
        prefix.to_string(),
    ]
}

/// CPU time of the servers (and of a Redis started here) over a window.
pub(crate) struct CpuWindow {
    pids: Vec<u32>,
    redis: Option<u32>,
    start: Vec<f64>,
    redis_start: f64,
}

impl CpuWindow {
    pub(crate) fn start(pids: &[u32], redis: Option<u32>) -> CpuWindow {
        CpuWindow {
            pids: pids.to_vec(),
            redis,
            start: pids.iter().map(|&p| cpu_seconds(p)).collect(),
            redis_start: redis.map_or(0.0, cpu_seconds),
        }
    }

    /// (seconds per server, seconds of Redis) since the start.
    pub(crate) fn read(&self) -> (Vec<f64>, Option<f64>) {
        let servers = self
            .pids
            .iter()
            .zip(&self.start)
            .map(|(&p, s)| cpu_seconds(p) - s)
            .collect();
        (
            servers,
            self.redis.map(|r| cpu_seconds(r) - self.redis_start),
        )
    }

    /// One line: each server's and Redis's CPU per message, in µs.
    pub(crate) fn line(&self, messages: u64) -> (String, f64, Option<f64>) {
        let (servers, redis) = self.read();
        let per = |s: f64| s * 1e6 / messages.max(1) as f64;
        let total: f64 = servers.iter().sum();
        let mut line = format!("CPU per message: servers {:.1} µs", per(total));
        if servers.len() > 1 {
            let each: Vec<String> = servers.iter().map(|&s| format!("{:.1}", per(s))).collect();
            line.push_str(&format!(" ({} per node)", each.join(" + ")));
        }
        if let Some(r) = redis {
            line.push_str(&format!(", redis-server {:.1} µs", per(r)));
        }
        (line, per(total), redis.map(per))
    }
}

pub(crate) fn median(mut v: Vec<f64>) -> Option<f64> {
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

/// One line of the summary table.
pub(crate) struct TableRow {
    pub(crate) label: String,
    /// One cell per setup (`-` when it does not apply).
    pub(crate) cells: Vec<String>,
    /// The target and whether it is met, if the row has one.
    pub(crate) verdict: String,
}

pub(crate) fn print_table(title: &str, setups: &[String], rows: &[TableRow]) {
    let width = rows
        .iter()
        .map(|r| r.label.chars().count())
        .chain([title.chars().count()])
        .max()
        .unwrap_or(0)
        + 2;
    let mut header = format!("{title:<width$}");
    for s in setups {
        header.push_str(&format!("{s:>14}"));
    }
    println!();
    println!("{header}");
    for r in rows {
        let mut line = format!("{:<width$}", r.label);
        for c in &r.cells {
            line.push_str(&format!("{c:>14}"));
        }
        if !r.verdict.is_empty() {
            line.push_str("   ");
            line.push_str(&r.verdict);
        }
        println!("{line}");
    }
}

/// `single`, `1 node`, `2 nodes`, ...: the column names of the setups.
pub(crate) fn setup_name(nodes: Option<usize>) -> String {
    match nodes {
        None => "single".into(),
        Some(1) => "1 node".into(),
        Some(n) => format!("{n} nodes"),
    }
}

/// Whether commands per message at the most clients are within 10% of
/// those at the fewest (independent of the client count).
pub(crate) fn independence_verdict(fewest: (usize, f64), most: (usize, f64), unit: &str) -> String {
    if most.0 == fewest.0 {
        return format!("(run two counts of {unit} to compare)");
    }
    let ratio = if fewest.1 > 0.0 {
        most.1 / fewest.1
    } else {
        f64::NAN
    };
    let met = (0.9..=1.1).contains(&ratio);
    format!(
        "{} vs {} {unit}: {ratio:.2}x; target independent of the {unit} (within 10%): {}",
        most.0,
        fewest.0,
        if met { "met" } else { "NOT met" }
    )
}
