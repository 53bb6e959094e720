//! `fn serve`: the registry as a small read-only web app, composed from the registry's own HTTP and SSE crates.
//!
//! The server is `http_serve` running an `http_router` table of
//! `http_types` handlers; live refresh is an `sse_broker` topic served by
//! `sse_handler` at `/api/events`. Pages are small HTML shells (`pages`)
//! whose script (`assets/serve/app.js`, embedded in the binary) renders the
//! JSON of `/api/...`, so what the browser shows is what `fn search --json`
//! and `fn show --json` print (`api`, backed by [`crate::query`]). The
//! dependency graph is drawn as SVG by the server (`graph`).
//!
//! At start the registry is indexed as `fn index` does it (atomically, the
//! old database kept on any problem). Then a watcher (`watch`) polls the
//! entry files; when one is added, changed or removed it indexes again and
//! publishes an `index` event, or a `problems` event when the new state has
//! problems (the old index stays served). Open pages refetch their data on
//! `index`.
//!
//! Safe defaults: it binds `127.0.0.1:7070`, answers only `GET`/`HEAD`,
//! sends no CORS headers (other origins cannot read it) and a
//! `Content-Security-Policy` that allows only its own scripts and styles.
//!
//! # Routes
//!
//! | route | what |
//! |---|---|
//! | `/` | search page (`?q=` and the filters in the URL) |
//! | `/entry/{name}` | one entry or crate; `404` with near names when unknown |
//! | `/graph` | the whole registry's graph |
//! | `/api/search?q=&kind=&lang=&domain=&tag=&purity=&tested=&limit=&fts=` | `fn search --json`; `400` on a bad query |
//! | `/api/entries/{name}` | `fn show --json`; `404` when unknown |
//! | `/api/deps/{name}?reverse=&transitive=` | `fn deps --json` |
//! | `/api/graph`, `/api/graph/{name}` | nodes and edges (whole, or an entry's neighbourhood) |
//! | `/graph.svg`, `/graph/{name}.svg` | the same as SVG |
//! | `/api/facets` | kinds, langs, domains and tags, for the filters |
//! | `/api/status` | the index served and the problems of the last attempt |
//! | `/api/events` | SSE: `index` and `problems` events |

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http_router::http_router;
use http_serve::{ServeConfig, http_serve};
use http_types::{Handler, Route};
use serde::Serialize;
use sse_broker::{BrokerConfig, SseBroker};
use sse_handler::{SseConfig, sse_handler};

mod api;
mod graph;
mod pages;
mod watch;

/// The SSE topic every page listens to.
const TOPIC: &str = "registry";

/// Settings of `fn serve`; every field but the paths has a default.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Address to listen on. Default: `127.0.0.1:7070`.
    pub addr: SocketAddr,
    /// Registry root.
    pub root: PathBuf,
    /// The database to write and read.
    pub db: PathBuf,
    /// Pause between two scans of the entry files for changes (twenty times
    /// the last scan's duration when that is longer). Default: 500 ms.
    pub poll: Duration,
}

impl ServeOptions {
    /// The defaults for a registry at `root` with its database at `db`.
    pub fn new(root: PathBuf, db: PathBuf) -> Self {
        ServeOptions {
            addr: SocketAddr::from(([127, 0, 0, 1], 7070)),
            root,
            db,
            poll: Duration::from_millis(500),
        }
    }
}

/// A problem of an entry, as JSON (the shape of `fn check --json`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ProblemOut {
    /// Entry file, root-relative.
    pub path: String,
    /// Line, from 1 (0 for the whole file).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl From<&crate::Problem> for ProblemOut {
    fn from(p: &crate::Problem) -> Self {
        ProblemOut {
            path: crate::problem::display_path(&p.path),
            line: p.line,
            message: p.message.clone(),
        }
    }
}

/// What `/api/status` answers: the index being served and how the last
/// attempt to index went.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Status {
    /// Registry root.
    pub root: String,
    /// The database served.
    pub db: String,
    /// How many times the registry was indexed successfully since start.
    pub generation: u64,
    /// Entries in the index served.
    pub entries: usize,
    /// When the index served was written (unix seconds).
    pub indexed_at: u64,
    /// Problems of the last attempt; when not empty, the index served is
    /// older than the entries on disk.
    pub problems: Vec<ProblemOut>,
}

/// What every handler shares.
#[derive(Debug)]
struct State {
    root: PathBuf,
    db: PathBuf,
    broker: SseBroker,
    status: Mutex<Status>,
}

impl State {
    fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_status(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

/// Indexes the registry, then serves it until SIGINT or SIGTERM.
///
/// Prints `fn serve listening on http://ADDR` as the first line of stdout
/// once it accepts connections (with the port chosen when `addr` has port 0).
///
/// # Errors
///
/// The message when it cannot start: the registry cannot be indexed and
/// there is no earlier database to serve, or the address cannot be bound.
pub fn serve(opts: ServeOptions) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(run(opts))
}

async fn run(opts: ServeOptions) -> Result<(), String> {
    let state = Arc::new(State {
        status: Mutex::new(Status {
            root: opts.root.display().to_string(),
            db: opts.db.display().to_string(),
            ..Status::default()
        }),
        root: opts.root,
        db: opts.db,
        broker: SseBroker::new(BrokerConfig::default()),
    });
    // The first index: as `fn index`, but an earlier database is served
    // when the entries have problems now.
    let st = state.clone();
    let (seen, first) = tokio::task::spawn_blocking(move || {
        // Scanned before indexing, so a change made meanwhile is seen.
        let seen = watch::scan(&st).ok();
        (seen, watch::reindex(&st))
    })
    .await
    .map_err(|e| format!("indexing failed: {e}"))?;
    if let Err(problems) = first {
        if !state.db.is_file() {
            return Err(format!(
                "cannot index {}:\n{}",
                state.root.display(),
                problems.join("\n")
            ));
        }
        eprintln!(
            "fn serve: {} problem(s); serving the earlier index {}:\n{}",
            problems.len(),
            state.db.display(),
            problems.join("\n")
        );
    }
    let listener = tokio::net::TcpListener::bind(opts.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", opts.addr))?;
    let addr = listener.local_addr().unwrap_or(opts.addr);
    let stop = shutdown_signal::shutdown_signal()
        .map_err(|e| format!("cannot install the SIGINT/SIGTERM handlers: {e}"))?;
    let app = app(&state).map_err(|e| e.to_string())?;
    tokio::spawn(watch::watch(state.clone(), opts.poll, seen));
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        // Whoever started us may have stopped reading stdout: never panic on it.
        let _ = writeln!(out, "fn serve listening on http://{addr}");
        let _ = out.flush();
    }
    http_serve(
        listener,
        app,
        async move {
            stop.await;
        },
        ServeConfig {
            drain_timeout: Duration::from_secs(2),
            ..ServeConfig::default()
        },
    )
    .await;
    Ok(())
}

/// The route table.
fn app(state: &Arc<State>) -> Result<Handler, http_router::RouterError> {
    let events = sse_handler(
        state.broker.clone(),
        SseConfig {
            default_topics: vec![TOPIC.into()],
            // Only the registry's topic: nothing else is published here.
            guard: Some(Arc::new(only_registry)),
            retry: Some(Duration::from_secs(1)),
            ..SseConfig::default()
        },
    );
    let mut routes = vec![Route::get("/api/events", events)];
    routes.extend(pages::routes(state));
    routes.extend(api::routes(state));
    routes.extend(graph::routes(state));
    let router = http_router(routes)?;
    Ok(secure_headers(router))
}

/// The topic guard of `/api/events`: only the registry's topic, since
/// nothing else is published here.
#[allow(clippy::result_large_err)] // the shape of `sse_handler::TopicGuard`
fn only_registry(
    _: &http_types::Request,
    topics: Vec<String>,
) -> Result<Vec<String>, http_types::Response> {
    if topics.iter().all(|t| t == TOPIC) {
        Ok(topics)
    } else {
        Err(http_types::text(
            http::StatusCode::NOT_FOUND,
            format!("the only topic is `{TOPIC}`\n"),
        ))
    }
}

/// Adds the headers every answer carries: no sniffing, no framing by other
/// sites, scripts and styles only from this server. No CORS header is ever
/// sent, so pages of other origins cannot read the answers.
fn secure_headers(inner: Handler) -> Handler {
    use http::HeaderValue;
    use http::header;
    Handler::new(move |req| {
        let inner = inner.clone();
        async move {
            let mut res = inner.call(req).await;
            let h = res.headers_mut();
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
                ),
            );
            h.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
            res
        }
    })
}

/// Runs `f` with a fresh read-only connection to the database, on the
/// blocking pool (SQLite calls block). A connection per request sees the
/// database file the last index renamed into place.
async fn with_db<T: Send + 'static>(
    state: &Arc<State>,
    f: impl FnOnce(&rusqlite::Connection) -> T + Send + 'static,
) -> Result<T, String> {
    let db = state.db.clone();
    tokio::task::spawn_blocking(move || {
        let conn = crate::query::open(&db)?;
        Ok(f(&conn))
    })
    .await
    .map_err(|e| format!("query failed: {e}"))?
}

/// The value of query parameter `name`, percent-decoded.
fn param(query: &str, name: &str) -> Option<String> {
    http_types::query_values(query, name).next()
}

/// A flag parameter: present and not `0`, `false`, `off` or empty.
fn flag(query: &str, name: &str) -> bool {
    param(query, name).is_some_and(|v| !matches!(v.as_str(), "" | "0" | "false" | "off"))
}

/// The name an entry ID is made of (`ws_send_rust_infra` -> `ws_send`).
fn id_name(id: &str) -> &str {
    crate::entry::split_id(id).map_or(id, |(name, _, _)| name)
}
