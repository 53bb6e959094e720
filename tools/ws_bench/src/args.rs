//! `ws-bench`'s flags (clap derive) and the combinations it refuses.

use std::path::{Path, PathBuf};

use bench_support::args::{RedisArgs, ServerArgs, positive, usage_error};
use bench_support::redis::SERVER_CORE;
use clap::Parser;

/// Benchmark of WebSocket broadcast (rt-server /ws against Node ws, uWebSockets.js and Go
/// gorilla/websocket): deliveries per second, latency, memory per idle connection.
///
/// Every server runs pinned to --server-cores (default core 0); run this generator pinned
/// to core 1 (`taskset -c 1 ws-bench`).
#[derive(Parser, Debug)]
#[command(
    name = "ws-bench",
    after_help = "rows: deliveries-1000 deliveries-5000 p99-1000 p99-5000 idle room-100-of-1000 room-100-of-10000\n      \
user-of-1000 user-of-10000 (default: all; --only takes a comma-separated list, `targeted` = the last four)\n\
cluster: ws-bench --redis [redis://HOST:PORT] [--nodes N[,N...]] [--clients N[,N...]] [--rate MSGS_PER_SEC] \
[--in-flight N] [--duration SECS] [--repeat N]\n      \
rt-server alone against N nodes on one Redis (default: a throwaway redis-server, 2 nodes, \
200 and 1000 clients, 100 msg/s)"
)]
pub(crate) struct Args {
    /// Also run the peer hubs of tools/ws_peers (Node ws, uWebSockets.js, Go gorilla when built)
    #[arg(long)]
    pub(crate) peers: bool,
    /// With --peers: the peers only, no rt-server
    #[arg(long)]
    pub(crate) no_server: bool,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    /// The rows to run, comma-separated (see below) [default: all]
    #[arg(long, value_name = "ROW[,ROW...]")]
    pub(crate) only: Option<String>,
    /// Seconds each load row measures [default: 3 in flight, 5 paced]
    #[arg(long, value_name = "SECS", value_parser = positive::<f64>)]
    pub(crate) duration: Option<f64>,
    /// Connections of the idle row
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = positive::<usize>)]
    pub(crate) idle: usize,
    /// Messages in flight in the deliveries and targeted rows
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = positive::<usize>)]
    pub(crate) in_flight: usize,
    /// One custom row with N clients (with --redis: counts, comma-separated [default: 200,1000])
    #[arg(long = "clients", value_name = "N[,N...]", value_delimiter = ',', value_parser = positive::<usize>)]
    pub(crate) client_counts: Option<Vec<usize>>,
    /// With --clients: paced at this many messages per second instead of in flight (with --redis: the paced rows' rate [default: 100])
    #[arg(long, value_name = "MSGS_PER_SEC", value_parser = positive::<u64>)]
    pub(crate) rate: Option<u64>,
    /// WebSocket handshakes at a time
    #[arg(long = "connect-concurrency", value_name = "N", default_value_t = 256, value_parser = positive::<usize>)]
    pub(crate) concurrency: usize,
    /// Runs every row N times, each on a fresh server, and prints the medians
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = positive::<usize>)]
    pub(crate) repeat: usize,
    /// Read with tokio-tungstenite instead of the lean frame parser
    #[arg(long)]
    pub(crate) tungstenite_readers: bool,
    /// The node binary of the peers
    #[arg(long, value_name = "PATH", default_value = "node")]
    pub(crate) node: PathBuf,
    /// The peers' scripts
    #[arg(long, value_name = "DIR", default_value_os_t = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ws_peers"))]
    pub(crate) peers_dir: PathBuf,
    /// The peers' npm packages (what tools/ws_peers/install.sh installs)
    #[arg(long, value_name = "DIR", default_value_os_t = default_node_modules())]
    pub(crate) node_modules: PathBuf,
    #[command(flatten)]
    pub(crate) cluster: RedisArgs,
}

fn default_node_modules() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("fn-registry-ws-peers/node_modules")
}

impl Args {
    /// The flags, checked; a combination clap's attributes cannot refuse
    /// ends the process with a usage error.
    pub(crate) fn parse_checked() -> Args {
        let a = Args::parse();
        if a.cluster.redis.is_some() {
            if a.peers || a.no_server || a.only.is_some() {
                usage_error::<Args>(
                    "--redis runs its own rows on rt-server: no --peers, --no-server or --only",
                );
            }
            if a.server.server_cores != SERVER_CORE {
                usage_error::<Args>(format!(
                    "--redis pins the servers and Redis to core {SERVER_CORE}: no --server-cores"
                ));
            }
            return a;
        }
        if a.cluster.nodes.is_some() {
            usage_error::<Args>("--nodes needs --redis");
        }
        if a.client_counts.as_ref().is_some_and(|c| c.len() > 1) {
            usage_error::<Args>("several --clients counts need --redis");
        }
        if a.rate.is_some() && a.clients().is_none() {
            usage_error::<Args>("--rate needs --clients (a custom row)");
        }
        if a.no_server && !a.peers {
            usage_error::<Args>("--no-server without --peers leaves nothing to run");
        }
        a
    }

    /// The client count of the custom row (`--clients N`).
    pub(crate) fn clients(&self) -> Option<usize> {
        self.client_counts.as_ref().map(|c| c[0])
    }
}
