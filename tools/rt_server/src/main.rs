//! `rt-server`: the reference real-time server.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use std::sync::Arc;

use backplane_redis::{RedisBackplane, RedisConfig};
use http_serve::{ServeConfig, TlsConfig, http_serve};
use ws_handler::MessageRate;
use ws_identity_jwt::JwtAuth;
use ws_upgrader::OriginPolicy;

mod config;

/// The reference real-time server of the registry's HTTP and SSE functions.
#[derive(Debug, clap::Parser)]
#[command(name = "rt-server", version, about)]
struct Args {
    /// Read the settings from this TOML file too: keys are these flags'
    /// names (`max-connections = 1000`); a flag or its environment variable
    /// wins over the file.
    #[arg(long, env = "RT_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, env = "RT_ADDR", default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Do not log each request (and log only warnings unless RUST_LOG says otherwise).
    #[arg(long, env = "RT_QUIET")]
    quiet: bool,
    /// Log lines as text (spans and fields, for people) or JSON (one object
    /// per line, for machines); which ones is RUST_LOG's (default `info`).
    #[arg(long, env = "RT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// SSE keep-alive interval, in seconds.
    #[arg(long, env = "RT_KEEPALIVE_SECS", default_value_t = 15)]
    keepalive_secs: u64,
    /// Reconnection delay to send browsers, in milliseconds (default: none
    /// sent, the browser's own, about 3 s).
    #[arg(long, env = "RT_RETRY_MS")]
    retry_ms: Option<u64>,
    /// Seconds open connections get to finish at shutdown.
    #[arg(long, env = "RT_DRAIN_SECS", default_value_t = 5)]
    drain_secs: u64,
    /// Threads that run connections (default: the cores this process may
    /// run on, as `taskset` or a cgroup leaves them).
    #[arg(long, env = "RT_THREADS", value_name = "N")]
    threads: Option<NonZeroUsize>,

    /// A page origin (`https://app.example`) allowed to open WebSockets and
    /// read responses (CORS), besides pages of this host; repeatable.
    #[arg(
        long = "allow-origin",
        env = "RT_ALLOW_ORIGIN",
        value_delimiter = ',',
        value_name = "ORIGIN",
        conflicts_with = "allow_any_origin"
    )]
    allow_origin: Vec<String>,
    /// Let pages of any origin open WebSockets and read responses (for
    /// benchmarks and tests; exposes users' sockets to every site they visit).
    #[arg(long, env = "RT_ALLOW_ANY_ORIGIN")]
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
    #[arg(long, env = "RT_OPEN_PUBLISH")]
    open_publish: bool,
    /// `/hub` identity: verify HS256 JWTs with this secret (`sub` is the
    /// user, `rooms` the rooms it may join).
    #[arg(long, env = "RT_JWT_SECRET", value_name = "SECRET", hide_env_values = true,
          conflicts_with_all = ["jwt_public_key", "insecure_bearer_names"])]
    jwt_secret: Option<String>,
    /// `/hub` identity: verify RS256 or EdDSA JWTs with this PEM public key.
    #[arg(
        long,
        env = "RT_JWT_PUBLIC_KEY",
        value_name = "FILE",
        conflicts_with = "insecure_bearer_names"
    )]
    jwt_public_key: Option<std::path::PathBuf>,
    /// The audience (`aud`) JWTs must name (default: any).
    #[arg(long, env = "RT_JWT_AUDIENCE", value_name = "AUD")]
    jwt_audience: Option<String>,
    /// `/hub` identity for tests only: `Authorization: Bearer <name>` is
    /// user `<name>`, unchecked.
    #[arg(long, env = "RT_INSECURE_BEARER_NAMES")]
    insecure_bearer_names: bool,
    /// Open WebSocket connections per route (default: computed from the
    /// open-file limit, which rt-server first raises to the hard limit: nine
    /// tenths of it less 64, at least 64).
    #[arg(long, env = "RT_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<usize>,
    /// WebSocket connections per client IP address and route (default: no
    /// limit, as many users may share an address behind NAT).
    #[arg(long, env = "RT_MAX_PER_IP", value_name = "N")]
    max_per_ip: Option<usize>,
    /// Messages per second one WebSocket connection may send (0: no limit).
    #[arg(
        long,
        env = "RT_MESSAGE_RATE",
        default_value_t = 200.0,
        value_name = "N"
    )]
    message_rate: f64,
    /// Messages one WebSocket connection may send at once after a quiet spell.
    #[arg(
        long,
        env = "RT_MESSAGE_BURST",
        default_value_t = 400,
        value_name = "N"
    )]
    message_burst: u32,
    /// Rooms one `/hub` connection may be in.
    #[arg(long, env = "RT_MAX_ROOMS", default_value_t = 100, value_name = "N")]
    max_rooms: usize,
    /// Largest WebSocket message (and frame) a client may send on `/ws`,
    /// `/hub` and `/rpc`, in bytes; larger closes the connection with `1009`.
    #[arg(long, env = "RT_MAX_MESSAGE_BYTES", default_value_t = nonzero(defaults().limits.max_message_size), value_name = "BYTES")]
    max_message_bytes: NonZeroUsize,
    /// Messages queued for one WebSocket connection (`/ws`, `/hub`, `/rpc`)
    /// that reads slower than they come; one more closes it with `1013`.
    #[arg(long, env = "RT_OUTBOX_MESSAGES", default_value_t = nonzero(defaults().limits.outbox_messages), value_name = "N")]
    outbox_messages: NonZeroUsize,
    /// Bytes queued for one WebSocket connection before it is closed as
    /// slow (`1013`); a message larger than this still goes alone.
    #[arg(long, env = "RT_OUTBOX_BYTES", default_value_t = nonzero(defaults().limits.outbox_bytes), value_name = "BYTES")]
    outbox_bytes: NonZeroUsize,
    /// Events queued for one SSE stream that reads slower than they come;
    /// one more ends the stream (its client resumes with `Last-Event-ID`).
    #[arg(long, env = "RT_SSE_QUEUE", default_value_t = nonzero(defaults().queue), value_name = "N")]
    sse_queue: NonZeroUsize,
    /// Events kept per SSE topic for `Last-Event-ID` resume (in Redis with
    /// --redis, else in this process); older ones are trimmed, and a client
    /// that missed them gets a reset event.
    #[arg(long, env = "RT_SSE_HISTORY", default_value_t = nonzero(defaults().replay), value_name = "N")]
    sse_history: NonZeroUsize,
    /// Bytes the SSE resume history of all topics may hold together in this
    /// process (without --redis); past it the oldest events of any topic go
    /// first.
    #[arg(long, env = "RT_SSE_HISTORY_BYTES", default_value_t = nonzero(defaults().replay_bytes), value_name = "BYTES")]
    sse_history_bytes: NonZeroUsize,
    /// With --redis: while SSE events come more often than one per two of
    /// these windows (milliseconds), each node writes them to its streams at
    /// most once per window, together: more events per write, up to a window
    /// (plus 1 ms) more latency under load. 0: each as it comes; at most 1000.
    #[arg(
        long,
        env = "RT_SSE_COALESCE_MS",
        default_value_t = defaults().sse_coalesce.as_millis() as u64,
        value_parser = clap::value_parser!(u64).range(0..=1000),
        value_name = "MS"
    )]
    sse_coalesce_ms: u64,
    /// Topics one SSE stream may subscribe to (more: `400`).
    #[arg(long, env = "RT_SSE_MAX_TOPICS", default_value_t = nonzero(defaults().max_topics), value_name = "N")]
    sse_max_topics: NonZeroUsize,
    /// Most bytes a `POST /publish` or `POST /emit` body may hold (more: `413`).
    #[arg(long, env = "RT_MAX_PUBLISH_BYTES", default_value_t = nonzero(defaults().max_publish), value_name = "BYTES")]
    max_publish_bytes: NonZeroUsize,
    /// Most events a `POST /publish/batch` may carry (more: `400`); at most --sse-queue.
    #[arg(long, env = "RT_MAX_PUBLISH_BATCH", default_value_t = nonzero(defaults().max_batch), value_name = "N")]
    max_publish_batch: NonZeroUsize,
    /// Seconds between the server's pings on every WebSocket route.
    #[arg(
        long,
        env = "RT_WS_PING_SECS",
        default_value_t = defaults().limits.ping_interval.as_secs(),
        value_name = "SECS"
    )]
    ws_ping_secs: u64,
    /// Seconds a WebSocket peer may stay silent (no frame, not even a pong)
    /// before it is closed; more than --ws-ping-secs.
    #[arg(
        long,
        env = "RT_WS_IDLE_SECS",
        default_value_t = defaults().limits.idle_timeout.as_secs(),
        value_name = "SECS"
    )]
    ws_idle_secs: u64,
    /// Seconds each `/hub` identify, authenticate or connect hook may take
    /// (a JWT check; then `401`, or close `1008`).
    #[arg(
        long,
        env = "RT_HOOK_TIMEOUT_SECS",
        default_value_t = defaults().limits.hook_timeout.as_secs(),
        value_name = "SECS"
    )]
    hook_timeout_secs: u64,
    /// Connections that have not sent a complete first request yet; one
    /// more closes the oldest of them.
    #[arg(long, env = "RT_MAX_PENDING_REQUESTS", default_value_t = nonzero(ServeConfig::default().max_pending_requests), value_name = "N")]
    max_pending_requests: NonZeroUsize,
    /// Seconds a write to a peer that stopped reading may make no progress
    /// before the connection is dropped (WebSocket and SSE).
    #[arg(
        long,
        env = "RT_WRITE_TIMEOUT_SECS",
        default_value_t = 10,
        value_name = "SECS"
    )]
    write_timeout_secs: u64,
    /// Seconds a client may take to send a request head.
    #[arg(
        long,
        env = "RT_HEADER_TIMEOUT_SECS",
        default_value_t = 10,
        value_name = "SECS"
    )]
    header_timeout_secs: u64,
    /// Serve HTTPS (and WSS) on every route with this PEM certificate chain
    /// (server certificate first); HTTP/2 or HTTP/1.1 by ALPN. Needs --tls-key.
    #[arg(long, env = "RT_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "RT_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Run as one node of several on this Redis (`redis://HOST:PORT`):
    /// rooms, users, broadcasts, SSE topics with their history, and presence
    /// cross nodes. Without it, this process alone (nothing to install).
    #[arg(long, env = "RT_REDIS_URL", value_name = "URL", hide_env_values = true)]
    redis: Option<String>,
    /// Prefix of this deployment's Redis keys and channels (several
    /// deployments can share one Redis).
    #[arg(
        long,
        env = "RT_REDIS_PREFIX",
        default_value = "rt",
        value_name = "PREFIX"
    )]
    redis_prefix: String,
    /// This node's name in logs (default: the host name and the process id).
    #[arg(long, env = "RT_NODE_ID", value_name = "NAME")]
    node_id: Option<String>,
    /// Seconds a crashed node's room members stay listed in presence (each
    /// node refreshes its own every third of it).
    #[arg(
        long,
        env = "RT_PRESENCE_TTL_SECS",
        default_value_t = 15,
        value_name = "SECS"
    )]
    presence_ttl_secs: u64,
    /// Messages kept per `/hub` room: a connection that subscribes gets the
    /// room's last N first, then the live ones (0: none kept; at most half
    /// of --outbox-messages). Kept in Redis with --redis, else in this
    /// process.
    #[arg(long, env = "RT_ROOM_HISTORY", default_value_t = 0, value_name = "N")]
    room_history: usize,
    /// Bytes the room history of all rooms may hold together in this process
    /// (without --redis); past it the rooms written to longest ago lose theirs
    /// first.
    #[arg(long, env = "RT_ROOM_HISTORY_BYTES", default_value_t = nonzero(defaults().room_history_bytes), value_name = "BYTES")]
    room_history_bytes: NonZeroUsize,
    /// Every WebSocket message goes through its connection's task: a
    /// broadcast never writes to a waiting socket itself. Spreads one hot
    /// room's writes over --threads, at more CPU per message.
    #[arg(long, env = "RT_NO_DIRECT_WRITES")]
    no_direct_writes: bool,
}

/// The library's defaults, which the flags' defaults are (computed once).
fn defaults() -> &'static rt_server::Options {
    static DEFAULTS: std::sync::OnceLock<rt_server::Options> = std::sync::OnceLock::new();
    DEFAULTS.get_or_init(rt_server::Options::default)
}

/// A default that is a count or a size: never 0.
fn nonzero(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).expect("the library's defaults are not 0")
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Lines for people: level, spans with their fields, message, fields.
    Text,
    /// One JSON object per line: `fields`, the current `span` and all `spans`.
    Json,
}

fn main() -> std::process::ExitCode {
    let args = match config::parse_from::<Args>(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(config::ConfigError::Args(e)) => e.exit(),
        Err(config::ConfigError::File(e)) => {
            eprintln!("rt-server: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let threads = args.threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, usize::from),
        usize::from,
    );
    let runtime = match runtime(threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rt-server: cannot start {threads} threads: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    // On a worker, so that N threads run everything (block_on's own thread
    // would be one more); a panic there is a failure, as in any thread.
    let serving = runtime.spawn(serve(args, threads));
    match runtime.block_on(serving) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rt-server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The runtime of `--threads`: tokio's multi-thread scheduler with that many
/// workers, 1 included: on one core the current-thread scheduler measured the
/// same CPU per delivery (docs/performance.md), and the multi-thread one keeps
/// one code path for every N.
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .thread_name("rt-worker")
        .build()
}

async fn serve(args: Args, threads: usize) -> std::process::ExitCode {
    if let Err(e) = logging(&args) {
        eprintln!("rt-server: {e}");
        return std::process::ExitCode::from(2);
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
    let tls = match tls(&args) {
        Ok(t) => t,
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
    tracing::info!(threads, "runtime started");
    let stop = match shutdown_signal::shutdown_signal() {
        Ok(stop) => stop,
        Err(e) => {
            eprintln!("rt-server: cannot install the SIGINT/SIGTERM handlers: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let mut options = options;
    let mut backplanes = Vec::new();
    if let Some(url) = &args.redis {
        match cluster(&args, url).await {
            Ok(c) => {
                backplanes = vec![c.sse.clone(), c.ws.clone(), c.rooms.clone()];
                options.cluster = Some(c);
            }
            Err(e) => {
                eprintln!("rt-server: {e}");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let app = rt_server::app(options);
    // Listening once what other nodes broadcast reaches this one.
    for backplane in &backplanes {
        if let Err(e) = backplane.subscriptions_applied().await {
            tracing::warn!(error = %e, "serving before the cluster's subscriptions are in effect");
        }
    }
    // Whoever started us may have stopped reading stdout: never panic on it.
    let scheme = if tls.is_some() { "https" } else { "http" };
    say(format_args!("rt-server listening on {scheme}://{addr}"));
    let stats = http_serve(
        listener,
        app.handler.clone(),
        async move {
            let signal = stop.await;
            tracing::info!(%signal, "shutting down");
        },
        ServeConfig {
            drain_timeout: Duration::from_secs(args.drain_secs),
            header_read_timeout: Duration::from_secs(args.header_timeout_secs.max(1)),
            write_timeout: Duration::from_secs(args.write_timeout_secs.max(1)),
            max_pending_requests: args.max_pending_requests.get(),
            tls,
            ..ServeConfig::default()
        },
    )
    .await;
    // Presence removals of the connections just closed, and queued forwards.
    app.close().await;
    say(format_args!(
        "rt-server stopped: {} connections served, {} aborted at the drain timeout",
        stats.connections, stats.aborted
    ));
    std::process::ExitCode::SUCCESS
}

/// The Redis backplanes of `--redis`: one connection each for the SSE
/// topics, `/ws` and `/hub`, under `PREFIX:sse`, `PREFIX:ws` and
/// `PREFIX:hub`, so their channels never mix.
async fn cluster(args: &Args, url: &str) -> Result<rt_server::Cluster, String> {
    let node_id = args.node_id.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "host".into());
        format!("{host}-{}", std::process::id())
    });
    let connect = |part: &str| {
        let config = RedisConfig {
            prefix: format!("{}:{part}", args.redis_prefix),
            presence_ttl: Duration::from_secs(args.presence_ttl_secs.max(1)),
            history_max_len: args.sse_history.get(),
            ..RedisConfig::new(url)
        };
        async move {
            RedisBackplane::connect(config)
                .await
                .map(|b| Arc::new(b) as Arc<dyn backplane::Backplane>)
                .map_err(|e| format!("cannot use Redis at --redis: {e}"))
        }
    };
    let cluster = rt_server::Cluster {
        sse: connect("sse").await?,
        ws: connect("ws").await?,
        rooms: connect("hub").await?,
    };
    tracing::info!(
        node = %node_id,
        sse = cluster.sse.node(),
        ws = cluster.ws.node(),
        hub = cluster.rooms.node(),
        "joined the cluster on Redis"
    );
    Ok(cluster)
}

/// Logs to stderr: which events is `RUST_LOG`'s (an `EnvFilter`; default
/// `info`, or `warn` with `--quiet`), how is `--log-format`'s.
fn logging(args: &Args) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let default = if args.quiet { "warn" } else { "info" };
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => {
            EnvFilter::try_new(&directives).map_err(|e| format!("RUST_LOG={directives:?}: {e}"))?
        }
        _ => EnvFilter::new(default),
    };
    let fmt = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match args.log_format {
        LogFormat::Text => fmt.with_ansi(false).init(),
        LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
    Ok(())
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
    // A batch goes to each stream at once: more than its queue holds would
    // end every stream as slow.
    if args.max_publish_batch > args.sse_queue {
        return Err(format!(
            "--max-publish-batch {} is more than an SSE stream's queue (--sse-queue {}): a batch that large would end every stream",
            args.max_publish_batch, args.sse_queue
        ));
    }
    // The history is queued for the joining connection at once, behind
    // what is queued already: more than its outbox holds would close it as slow.
    let outbox = args.outbox_messages.get();
    if args.room_history > outbox / 2 {
        return Err(format!(
            "--room-history {} is more than half of a connection's outbox (--outbox-messages {outbox}): at most {}",
            args.room_history,
            outbox / 2
        ));
    }
    let ping = Duration::from_secs(args.ws_ping_secs.max(1));
    let idle = Duration::from_secs(args.ws_idle_secs);
    if idle <= ping {
        return Err(format!(
            "--ws-idle-secs {} must be more than --ws-ping-secs {}: a quiet client that answers every ping would be closed",
            args.ws_idle_secs,
            ping.as_secs()
        ));
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
            max_message_size: args.max_message_bytes.get(),
            outbox_messages: outbox,
            outbox_bytes: args.outbox_bytes.get(),
            ping_interval: ping,
            idle_timeout: idle,
            hook_timeout: Duration::from_secs(args.hook_timeout_secs.max(1)),
        },
        max_publish: args.max_publish_bytes.get(),
        max_batch: args.max_publish_batch.get(),
        queue: args.sse_queue.get(),
        replay: args.sse_history.get(),
        replay_bytes: args.sse_history_bytes.get(),
        sse_coalesce: Duration::from_millis(args.sse_coalesce_ms),
        max_topics: args.sse_max_topics.get(),
        room_history: args.room_history,
        room_history_bytes: args.room_history_bytes.get(),
        direct_writes: !args.no_direct_writes,
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

/// The TLS settings, if --tls-cert and --tls-key were given (both or neither).
fn tls(args: &Args) -> Result<Option<TlsConfig>, String> {
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => TlsConfig::from_pem_files(cert, key)
            .map(Some)
            .map_err(|e| format!("--tls-cert/--tls-key: {e}")),
        _ => Ok(None),
    }
}

/// One line on stdout, flushed; a closed stdout is ignored.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}
