//! What the registry tells users stays true: a new Cargo project outside the
//! workspace whose `[dependencies]` are exactly the path lines `fn show` prints,
//! a chat over Server-Sent Events and WebSocket built from them, built, run
//! and driven over TCP.
//!
//! The app (`chat`) serves `GET /events` (SSE), `GET /ws` (a WebSocket hub:
//! every text message goes to every client) and `POST /say` (the body goes to
//! the SSE stream and to every WebSocket client). It is built with the
//! workspace's `Cargo.lock` (`--offline`) into the workspace's target folder,
//! so the dependencies the workspace already compiled are not compiled again.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use fn_tool::query::{self, Found};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// The registry crates the app uses: each one's line comes from `fn show`.
/// `http_types` and `sse_event` hold only types: `fn show` answers with the crate.
const CRATES: [&str; 12] = [
    "http_serve",
    "http_router",
    "http_types",
    "http_body_read",
    "sse_handler",
    "sse_broker",
    "sse_event",
    "ws_handler",
    "ws_hub",
    "ws_broadcast",
    "rt_publish",
    "shutdown_signal",
];

/// The one dependency that is not a registry crate: the runtime.
const OTHER_DEPENDENCIES: &str = r#"tokio = { version = "1", features = ["rt-multi-thread", "macros", "net"] }
"#;

/// Every step waits at most this long for the app.
const PATIENCE: Duration = Duration::from_secs(20);

const MAIN_RS: &str = r#"//! A chat: SSE on /events, a WebSocket hub on /ws, POST /say to both.

use std::sync::Arc;

use http_body_read::read_text;
use http_router::http_router;
use http_serve::{ServeConfig, http_serve};
use http_types::http::StatusCode;
use http_types::{Handler, Request, Route, text};
use rt_publish::rt_publish;
use sse_broker::{BrokerConfig, SseBroker};
use sse_event::SseEvent;
use sse_handler::{SseConfig, sse_handler};
use ws_broadcast::ws_broadcast;
use ws_handler::{WsConfig, ws_handler};
use ws_hub::{HubConfig, WsHub};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8080".into());
    let stop = shutdown_signal::shutdown_signal()?;
    let broker = SseBroker::new(BrokerConfig::default());
    let hub = WsHub::new(HubConfig::default());

    let relay = hub.clone();
    let chat = ws_handler(hub.clone(), WsConfig {
        on_message: Some(Arc::new(move |_from, msg| {
            ws_broadcast(&relay, msg);
        })),
        ..WsConfig::default()
    });

    let (say_broker, say_hub) = (broker.clone(), hub.clone());
    let say = Handler::new(move |req: Request| {
        let (broker, hub) = (say_broker.clone(), say_hub.clone());
        async move {
            let said = match read_text(req.into_body(), 64 << 10).await {
                Ok(said) => said,
                Err(refused) => return refused.into_response(),
            };
            // `hub` is the topic /events streams by default (SseConfig::default_topics).
            match rt_publish(&broker, &hub, "hub", SseEvent::data(said)) {
                Ok(done) => text(StatusCode::OK, format!("sent to {} websocket client(s)\n", done.ws.sent)),
                Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
            }
        }
    });

    let app = http_router(vec![
        Route::get("/events", sse_handler(broker.clone(), SseConfig::default())),
        Route::get("/ws", chat),
        Route::post("/say", say),
    ])?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let shutdown = async move {
        let _ = stop.await;
    };
    let stats = http_serve(listener, app, shutdown, ServeConfig::default()).await;
    println!("stopped: {stats:?}");
    Ok(())
}
"#;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The target folder this test was built into (`<target>/debug/deps/<exe>`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its path");
    exe.ancestors()
        .nth(3)
        .expect("the test runs from <target>/<profile>/deps")
        .to_path_buf()
}

/// The `path` line `fn show NAME` prints, from an index of the repository.
fn path_lines(db: &Path) -> Vec<String> {
    let conn = query::open(db).expect("the index opens");
    CRATES
        .iter()
        .map(|name| {
            let found =
                query::lookup(&conn, name).unwrap_or_else(|e| panic!("fn show {name}: {e}"));
            let cargo = match found {
                Found::Entry(s) => s.cargo.unwrap_or_else(|| panic!("{name}: no cargo lines")),
                Found::Crate(c) => c.cargo.clone(),
            };
            cargo.path
        })
        .collect()
}

/// Writes the project; returns its folder.
fn write_app(dir: &Path, lines: &[String]) -> PathBuf {
    let app = dir.join("chat");
    std::fs::create_dir_all(app.join("src")).unwrap();
    let manifest = format!(
        "[package]\nname = \"chat\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
         [dependencies]\n{}\n{OTHER_DEPENDENCIES}\n\
         # The workspace's setting, so the dependencies it compiled are reused.\n\
         [profile.dev.package.\"*\"]\ndebug = false\n\n\
         # A project of its own, not a member of any workspace above it.\n[workspace]\n",
        lines.join("\n")
    );
    std::fs::write(app.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(app.join("src/main.rs"), MAIN_RS).unwrap();
    std::fs::copy(root().join("Cargo.lock"), app.join("Cargo.lock")).unwrap();
    app
}

fn build(app: &Path) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = target_dir();
    let out = Command::new(cargo)
        .args(["build", "--offline", "--quiet", "--manifest-path"])
        .arg(app.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .stdin(Stdio::null())
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "the generated app does not build:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(
        !warnings.contains("warning"),
        "the generated app builds with warnings:\n{warnings}"
    );
    target.join("debug").join("chat")
}

/// The app, killed when dropped (a failed assertion must not leave it running).
struct App {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(bin: &Path) -> (App, String) {
    let mut child = Command::new(bin)
        .arg("127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the app starts");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut app = App { child, stdout };
    let mut line = String::new();
    app.stdout.read_line(&mut line).expect("the app prints");
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("the app's first line is its address, got {line:?}"))
        .to_string();
    (app, addr)
}

/// Opens `GET /events` and reads up to the first comment, sent once subscribed.
async fn sse_connect(addr: &str) -> tokio::io::BufReader<TcpStream> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET /events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut r = tokio::io::BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(r.read_line(&mut line).await.unwrap() > 0, "closed: {head}");
        head.push_str(&line);
        if line.starts_with(':') {
            break;
        }
    }
    // The stream is close-delimited, so its head says HTTP/1.0 (http_serve).
    assert_eq!(head.split(' ').nth(1), Some("200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{head}"
    );
    r
}

/// The next `data:` line of the stream.
async fn sse_next_data(r: &mut tokio::io::BufReader<TcpStream>) -> String {
    loop {
        let mut line = String::new();
        assert!(
            r.read_line(&mut line).await.unwrap() > 0,
            "the stream ended"
        );
        if let Some(data) = line.strip_prefix("data: ") {
            return data.trim_end().to_string();
        }
    }
}

async fn ws_next_text<S>(ws: &mut S) -> String
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match ws.next().await.expect("open").expect("no error") {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

async fn post_say(addr: &str, body: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST /say HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    resp
}

#[test]
fn an_app_built_from_fn_show_lines_serves_sse_and_websocket() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("registry.db");
    if let Err(e) = fn_tool::index::index(&root(), &db) {
        match e {
            fn_tool::index::IndexError::Problems(reg) => {
                let ps: Vec<String> = reg.problems.iter().map(ToString::to_string).collect();
                panic!("the registry does not index:\n{}", ps.join("\n"));
            }
            fn_tool::index::IndexError::Failed(e) => panic!("fn index: {e}"),
        }
    }
    let lines = path_lines(&db);
    for (name, line) in CRATES.iter().zip(&lines) {
        let abs = root().join("crates").join(name);
        assert_eq!(
            *line,
            format!("{name} = {{ path = \"{}\" }}", abs.display()),
            "an absolute path line"
        );
    }
    let app = write_app(dir.path(), &lines);
    assert!(!app.starts_with(root()), "the app is outside the workspace");
    let bin = build(&app);
    let built = started.elapsed();

    let (mut app, addr) = start(&bin);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(PATIENCE, async {
            let mut sse = sse_connect(&addr).await;
            let stream = TcpStream::connect(&addr).await.unwrap();
            let (mut ws, res) = tokio_tungstenite::client_async(format!("ws://{addr}/ws"), stream)
                .await
                .expect("the WebSocket upgrade");
            assert_eq!(res.status(), 101);
            // A message of its own comes back once the client is in the hub.
            ws.send(Message::text("hi from ws")).await.unwrap();
            assert_eq!(ws_next_text(&mut ws).await, "hi from ws");

            let resp = post_say(&addr, "hello, both").await;
            assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
            assert!(resp.ends_with("sent to 1 websocket client(s)\n"), "{resp}");
            assert_eq!(sse_next_data(&mut sse).await, "hello, both");
            assert_eq!(ws_next_text(&mut ws).await, "hello, both");

            let resp = post_say(&addr, "second").await;
            assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
            assert_eq!(sse_next_data(&mut sse).await, "second");
            assert_eq!(ws_next_text(&mut ws).await, "second");

            let missing =
                format!("GET /nowhere HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            let mut s = TcpStream::connect(&addr).await.unwrap();
            s.write_all(missing.as_bytes()).await.unwrap();
            let mut resp = String::new();
            s.read_to_string(&mut resp).await.unwrap();
            assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
        })
        .await
        .expect("the app answers within the patience");
    });

    // SIGTERM (what a container runtime sends) drains it: it says so and exits cleanly.
    let pid = app.child.id().to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(kill.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut app.stdout, &mut rest).unwrap();
    assert!(rest.starts_with("stopped: "), "{rest}");
    let status = app.child.wait().unwrap();
    assert!(status.success(), "{status}");
    eprintln!(
        "generated app: written and built in {} ms, whole test {} ms",
        built.as_millis(),
        started.elapsed().as_millis()
    );
}
