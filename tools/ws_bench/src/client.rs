//! The load generator's connections: WebSocket clients of `/ws` (round-robin
//! over the nodes) and of `/hub` (each its own user, room members
//! subscribed), and the open-files limit they need.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::rows::{Aim, ROOM, TARGET_USER};

/// Raises the soft open-files limit to the hard one when `needed` exceeds it
/// (with `prlimit`, no unsafe code); servers spawned later inherit it.
pub(crate) fn ensure_fd_limit(needed: u64) {
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

pub(crate) fn ws_config() -> WebSocketConfig {
    // Small buffers: 10,000 idle clients stay cheap; 4 KiB holds many 66-byte frames.
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(4096)
        .max_write_buffer_size(1 << 20)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

pub(crate) type Ws = WebSocketStream<TcpStream>;

pub(crate) enum ConnectError {
    /// The server answered the upgrade with this HTTP status.
    Refused(u16),
    Other(String),
}

pub(crate) async fn connect_one(addr: SocketAddr) -> Result<Ws, ConnectError> {
    connect_path(addr, "/ws", None).await
}

/// Opens a WebSocket on `path`, with `Authorization: Bearer <bearer>` if given.
pub(crate) async fn connect_path(
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
pub(crate) async fn connect_all(
    addr: SocketAddr,
    n: usize,
    concurrency: usize,
) -> Result<Vec<Ws>, String> {
    let socks = connect_spread(&[addr], n, concurrency).await?;
    Ok(socks.into_iter().map(|(_, ws)| ws).collect())
}

/// Opens `n` clients, client `i` on server `i % addrs.len()` (round-robin),
/// at most `concurrency` handshakes at a time: (server index, stream).
pub(crate) async fn connect_spread(
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
    gather(results, "/ws", "connections")
}

/// The role of connection `i` of a targeted row: its user and whether it receives.
pub(crate) fn hub_role(i: usize, n: usize, aim: Aim) -> (String, bool) {
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
pub(crate) async fn expect_event(ws: &mut Ws, needle: &str) -> Result<(), ConnectError> {
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
pub(crate) async fn hub_client(
    addr: SocketAddr,
    user: &str,
    room: Option<&str>,
) -> Result<Ws, ConnectError> {
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

/// Opens the `n` clients of a targeted row: ((index, receives), stream).
pub(crate) async fn connect_hub(
    addr: SocketAddr,
    n: usize,
    aim: Aim,
    concurrency: usize,
) -> Result<Vec<((usize, bool), Ws)>, String> {
    let results: Vec<_> = futures_util::stream::iter(0..n)
        .map(|i| async move {
            let (user, receives) = hub_role(i, n, aim);
            let room = matches!(aim, Aim::Room { .. }) && receives;
            let r = hub_client(addr, &user, room.then_some(ROOM)).await;
            ((i, receives), r)
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    gather(results, "/hub", "/hub connections")
}

/// The opened connections, each with its `key`; an error when one was
/// refused (`path` answered other than 101) or any failed.
fn gather<K>(
    results: Vec<(K, Result<Ws, ConnectError>)>,
    path: &str,
    what: &str,
) -> Result<Vec<(K, Ws)>, String> {
    let n = results.len();
    let mut out = Vec::with_capacity(n);
    let mut failed = 0;
    let mut first_err = None;
    for (key, r) in results {
        match r {
            Ok(ws) => out.push((key, ws)),
            Err(ConnectError::Refused(status)) => {
                return Err(format!(
                    "GET {path} answered HTTP {status}, not 101 (no {path} here?)"
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
            "{failed} of {n} {what} failed, first: {}",
            first_err.unwrap_or_default()
        ));
    }
    Ok(out)
}
