//! `realtime-demo`: a chat with rooms and a live SSE dashboard to watch the registry's functions work.

use std::net::SocketAddr;

use realtime_demo::{DemoConfig, serve};

/// A chat with rooms over WebSocket and a live SSE dashboard of this
/// server's figures, built from the registry's functions.
#[derive(Debug, clap::Parser)]
#[command(name = "realtime-demo", version, about)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, env = "DEMO_ADDR", default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = <Args as clap::Parser>::parse();
    let listener = match tokio::net::TcpListener::bind(args.addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("realtime-demo: cannot listen on {}: {e}", args.addr);
            return std::process::ExitCode::from(2);
        }
    };
    let stop = match shutdown_signal::shutdown_signal() {
        Ok(stop) => stop,
        Err(e) => {
            eprintln!("realtime-demo: cannot install the SIGINT/SIGTERM handlers: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let addr = listener.local_addr().unwrap_or(args.addr);
    if !addr.ip().is_loopback() {
        eprintln!(
            "realtime-demo: listening beyond loopback: anyone who can reach {addr} can chat \
             and watch the dashboard (WebSockets still accept pages of this host only)"
        );
    }
    say(format_args!("listening on http://{addr}"));
    serve(listener, DemoConfig::default(), async move {
        let _ = stop.await;
    })
    .await;
    std::process::ExitCode::SUCCESS
}

/// One line on stdout, flushed; a closed stdout is ignored.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}
