//! `rt-server`: the reference real-time server.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use http_serve::{ServeConfig, http_serve};
use ws_handler::MessageRate;
use ws_identity_jwt::JwtAuth;
use ws_upgrader::OriginPolicy;

/// The reference real-time server of the registry's HTTP and SSE functions.
#[derive(Debug, Parser)]
#[command(name = "rt-server", version, about)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Do not log each request.
    #[arg(long)]
    quiet: bool,
    /// SSE keep-alive interval, in seconds.
    #[arg(long, default_value_t = 15)]
    keepalive_secs: u64,
    /// Reconnection delay to send browsers, in milliseconds (default: the browser's).
    #[arg(long)]
    retry_ms: Option<u64>,
    /// Seconds open connections get to finish at shutdown.
    #[arg(long, default_value_t = 5)]
    drain_secs: u64,

    /// A page origin (`https://app.example`) allowed to open WebSockets and
    /// read responses (CORS), besides pages of this host; repeatable.
    #[arg(
        long = "allow-origin",
        value_name = "ORIGIN",
        conflicts_with = "allow_any_origin"
    )]
    allow_origin: Vec<String>,
    /// Let pages of any origin open WebSockets and read responses (for
    /// benchmarks and tests; exposes users' sockets to every site they visit).
    #[arg(long)]
    allow_any_origin: bool,
    /// The token `POST /publish` and `POST /emit` require as `Authorization: Bearer TOKEN`.
    #[arg(
        long,
        env = "RT_PUBLISH_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    publish_token: Option<String>,
    /// Allow listening beyond loopback without --publish-token (anyone who
    /// can reach the port may then publish).
    #[arg(long)]
    open_publish: bool,
    /// `/hub` identity: verify HS256 JWTs with this secret (`sub` is the
    /// user, `rooms` the rooms it may join).
    #[arg(long, env = "RT_JWT_SECRET", value_name = "SECRET", hide_env_values = true,
          conflicts_with_all = ["jwt_public_key", "insecure_bearer_names"])]
    jwt_secret: Option<String>,
    /// `/hub` identity: verify RS256 or EdDSA JWTs with this PEM public key.
    #[arg(long, value_name = "FILE", conflicts_with = "insecure_bearer_names")]
    jwt_public_key: Option<std::path::PathBuf>,
    /// The audience (`aud`) JWTs must name.
    #[arg(long, value_name = "AUD")]
    jwt_audience: Option<String>,
    /// `/hub` identity for tests only: `Authorization: Bearer <name>` is
    /// user `<name>`, unchecked.
    #[arg(long)]
    insecure_bearer_names: bool,
    /// Open WebSocket connections per route (default: from the open-file limit).
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// WebSocket connections per client IP address and route (default: no
    /// limit, as many users may share an address behind NAT).
    #[arg(long, value_name = "N")]
    max_per_ip: Option<usize>,
    /// Messages per second one WebSocket connection may send (0: no limit).
    #[arg(long, default_value_t = 200.0, value_name = "N")]
    message_rate: f64,
    /// Messages one WebSocket connection may send at once after a quiet spell.
    #[arg(long, default_value_t = 400, value_name = "N")]
    message_burst: u32,
    /// Rooms one `/hub` connection may be in.
    #[arg(long, default_value_t = 100, value_name = "N")]
    max_rooms: usize,
    /// Seconds a write to a peer that stopped reading may make no progress
    /// before the connection is dropped (WebSocket and SSE).
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    write_timeout_secs: u64,
    /// Seconds a client may take to send a request head.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    header_timeout_secs: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if !args.quiet {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
            .init();
    }
    if !args.addr.ip().is_loopback() && args.publish_token.is_none() && !args.open_publish {
        eprintln!(
            "rt-server: refusing to listen on {} without --publish-token: anyone who can reach \
             it could publish. Set --publish-token TOKEN (or RT_PUBLISH_TOKEN), or pass \
             --open-publish to allow it.",
            args.addr
        );
        return std::process::ExitCode::from(2);
    }
    // A server of many sockets: take the open-file limit the system allows
    // (the connection limit's default is derived from it).
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let options = match options(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("rt-server: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let listener = match listen(args.addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("rt-server: cannot listen on {}: {e}", args.addr);
            return std::process::ExitCode::from(2);
        }
    };
    let addr = listener.local_addr().unwrap_or(args.addr);
    let app = rt_server::app(options);
    // Whoever started us may have stopped reading stdout: never panic on it.
    say(format_args!("rt-server listening on http://{addr}"));
    let stats = http_serve(
        listener,
        app.handler,
        shutdown_signal(),
        ServeConfig {
            drain_timeout: Duration::from_secs(args.drain_secs),
            header_read_timeout: Duration::from_secs(args.header_timeout_secs.max(1)),
            write_timeout: Duration::from_secs(args.write_timeout_secs.max(1)),
            ..ServeConfig::default()
        },
    )
    .await;
    say(format_args!(
        "rt-server stopped: {} connections served, {} aborted at the drain timeout",
        stats.connections, stats.aborted
    ));
    std::process::ExitCode::SUCCESS
}

/// The server's options from the command line.
fn options(args: &Args) -> Result<rt_server::Options, String> {
    let origins = if args.allow_any_origin {
        OriginPolicy::Any
    } else if args.allow_origin.is_empty() {
        OriginPolicy::SameHost
    } else {
        OriginPolicy::AllowList(args.allow_origin.clone())
    };
    if args.publish_token.as_deref() == Some("") {
        return Err("--publish-token must not be empty".into());
    }
    let hub_identify = if args.insecure_bearer_names {
        Some(rt_server::insecure_bearer_names())
    } else {
        jwt_identify(args)?
    };
    let message_rate = (args.message_rate > 0.0).then_some(MessageRate {
        per_second: args.message_rate,
        burst: args.message_burst.max(1),
    });
    Ok(rt_server::Options {
        log: !args.quiet,
        keepalive: Duration::from_secs(args.keepalive_secs.max(1)),
        retry: args.retry_ms.map(Duration::from_millis),
        origins,
        publish_token: args.publish_token.clone(),
        hub_identify,
        limits: rt_server::Limits {
            max_connections: args
                .max_connections
                .unwrap_or_else(ws_handler::default_max_connections),
            max_per_ip: args.max_per_ip,
            message_rate,
            max_rooms: args.max_rooms,
            write_timeout: Duration::from_secs(args.write_timeout_secs.max(1)),
        },
        ..rt_server::Options::default()
    })
}

/// The JWT identify hook of `/hub`, if a key was given: a connection
/// without a token is anonymous (public rooms only), a bad token is `401`.
fn jwt_identify(args: &Args) -> Result<Option<ws_handler::IdentifyHook>, String> {
    let auth = if let Some(secret) = &args.jwt_secret {
        JwtAuth::hs256(secret.as_bytes()).map_err(|e| format!("--jwt-secret: {e}"))?
    } else if let Some(path) = &args.jwt_public_key {
        let pem =
            std::fs::read(path).map_err(|e| format!("--jwt-public-key {}: {e}", path.display()))?;
        JwtAuth::rs256_pem(&pem)
            .or_else(|_| JwtAuth::eddsa_pem(&pem))
            .map_err(|e| {
                format!(
                    "--jwt-public-key {}: not an RSA (RS256) or Ed25519 (EdDSA) public key: {e}",
                    path.display()
                )
            })?
    } else {
        if args.jwt_audience.is_some() {
            return Err("--jwt-audience needs --jwt-secret or --jwt-public-key".into());
        }
        return Ok(None);
    };
    let auth = match &args.jwt_audience {
        Some(aud) => auth.audience(aud.clone()),
        None => auth,
    };
    Ok(Some(auth.allow_anonymous(true).identify_hook()))
}

/// A listener with a backlog for bursts of connections (`bind`'s is 128;
/// the kernel caps it at `net.core.somaxconn`).
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// One line on stdout, flushed; a closed stdout is ignored.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
