//! `rt-server`: the reference real-time server.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use http_serve::{ServeConfig, http_serve};

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
    let listener = match tokio::net::TcpListener::bind(args.addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("rt-server: cannot listen on {}: {e}", args.addr);
            return std::process::ExitCode::from(2);
        }
    };
    let addr = listener.local_addr().unwrap_or(args.addr);
    let app = rt_server::app(rt_server::Options {
        log: !args.quiet,
        keepalive: Duration::from_secs(args.keepalive_secs.max(1)),
        retry: args.retry_ms.map(Duration::from_millis),
        ..rt_server::Options::default()
    });
    // Whoever started us may have stopped reading stdout: never panic on it.
    say(format_args!("rt-server listening on http://{addr}"));
    let stats = http_serve(
        listener,
        app.handler,
        shutdown_signal(),
        ServeConfig {
            drain_timeout: Duration::from_secs(args.drain_secs),
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
