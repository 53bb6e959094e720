//! The Redis of a `--redis` run (a throwaway `redis-server` from
//! `backplane_redis::testing`, or the one at a given URL), its `INFO
//! commandstats`, and the flags and key prefix of each run's nodes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backplane_redis::testing::RedisServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::procfs::pin;

/// The core the servers (the single one, the nodes and a Redis started
/// here) are pinned to; the generator runs on the other one.
pub const SERVER_CORE: &str = "0";

/// Commands the benchmark itself sends (`INFO` for the counts, `AUTH` when
/// the URL has a password), left out of the per-message counts.
const OWN_COMMANDS: [&str; 2] = ["info", "auth"];

/// The Redis of a cluster run; a server started here is killed on drop.
pub struct Redis {
    url: String,
    addr: String,
    auth: Option<(Option<String>, String)>,
    server: Option<RedisServer>,
    /// One line on where it runs.
    pub about: String,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("url", &self.url)
            .field("pid", &self.pid())
            .finish()
    }
}

impl Redis {
    /// The Redis at `url`, or a throwaway `redis-server` pinned to
    /// [`SERVER_CORE`] when `url` is `None`.
    pub async fn open(url: Option<&str>) -> Result<Redis, String> {
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

    /// Its `redis://` URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The process id of a Redis started here.
    pub fn pid(&self) -> Option<u32> {
        self.server.as_ref().and_then(RedisServer::pid)
    }

    /// Calls per command so far, from `INFO commandstats`.
    pub async fn commandstats(&self) -> Result<CommandStats, String> {
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
    pub async fn forget(&self, prefix: &str) {
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
pub struct CommandStats(BTreeMap<String, u64>);

impl CommandStats {
    /// Calls since `before`, per command, without the benchmark's own.
    pub fn since(&self, before: &CommandStats) -> CommandStats {
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

    /// Calls of every command.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// `Redis commands: 6 for 3 events = 2.00 per event (xadd 1.00, publish 1.00)`
    /// for `messages` of `noun` (`event`, `message`).
    pub fn line(&self, messages: u64, noun: &str) -> String {
        format!(
            "Redis commands: {} for {messages} {noun}s = {:.2} per {noun} ({})",
            self.total(),
            self.total() as f64 / messages.max(1) as f64,
            self.per_message(messages)
        )
    }

    /// `evalsha 1.00, publish 1.00, ...` per message, most first.
    pub fn per_message(&self, messages: u64) -> String {
        let mut v: Vec<(&String, &u64)> = self.0.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        v.iter()
            .map(|&(name, &n)| format!("{name} {:.2}", n as f64 / messages.max(1) as f64))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A fresh key prefix per run (`bench-PID-K`), so runs share nothing in Redis.
pub fn run_prefix() -> String {
    static RUN: AtomicU64 = AtomicU64::new(0);
    format!(
        "bench-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    )
}

/// The rt-server flags of one node of a run.
pub fn node_args(redis: &Redis, prefix: &str) -> Vec<String> {
    vec![
        "--redis".into(),
        redis.url().to_string(),
        "--redis-prefix".into(),
        prefix.to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_replies_and_command_counts() {
        assert_eq!(
            parse_url("redis://u:pw@10.0.0.1:7000/0").unwrap(),
            (
                "10.0.0.1:7000".to_string(),
                Some((Some("u".to_string()), "pw".to_string()))
            )
        );
        assert_eq!(parse_url("redis://").unwrap().0, "127.0.0.1:6379");
        assert!(parse_url("http://x").is_err());
        let Some((Reply::Array(Some(items)), used)) = parse_reply(b"*2\r\n$1\r\n0\r\n*0\r\n")
        else {
            panic!("an array");
        };
        assert_eq!((items.len(), used), (2, 15));
        assert!(parse_reply(b"$5\r\nab").is_none(), "incomplete");
        let before = CommandStats(BTreeMap::from([("publish".into(), 1), ("info".into(), 1)]));
        let after = CommandStats(BTreeMap::from([("publish".into(), 5), ("info".into(), 3)]));
        let d = after.since(&before);
        assert_eq!(d.total(), 4);
        assert_eq!(
            d.line(2, "event"),
            "Redis commands: 4 for 2 events = 2.00 per event (publish 2.00)"
        );
    }
}
